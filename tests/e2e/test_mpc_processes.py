"""Three real party processes over mutual TLS: a peer that dies or hangs mid-protocol makes
the others fail with PeerError within the configured timeout, never hang."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpc.local import LocalDeployment

pytestmark = pytest.mark.e2e
SCRIPT = Path(__file__).with_name("party_process.py")
TIMEOUT_S = 3.0


def _start(directory: Path) -> list[subprocess.Popen[str]]:
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), str(directory), str(i), str(TIMEOUT_S)],
                              stdout=subprocess.PIPE, text=True) for i in range(3)]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # let a few rounds run
    return procs


def _outcome(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, _ = proc.communicate(timeout=TIMEOUT_S + 20)
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("victim", [0, 2])
def test_killed_peer_fails_the_others_promptly(tmp_path: Path, victim: int) -> None:
    LocalDeployment.create(tmp_path)
    procs = _start(tmp_path)
    procs[victim].send_signal(signal.SIGKILL)
    procs[victim].wait()
    for i, p in enumerate(procs):
        if i == victim:
            continue
        result = _outcome(p)
        assert result["error"] == "PeerError"
        assert float(result["after_s"]) < TIMEOUT_S + 1  # disconnect is seen, not waited out
        assert p.returncode == 0


def test_hung_peer_fails_the_others_within_the_timeout(tmp_path: Path) -> None:
    LocalDeployment.create(tmp_path)
    procs = _start(tmp_path)
    os.kill(procs[1].pid, signal.SIGSTOP)
    try:
        for i in (0, 2):
            result = _outcome(procs[i])
            assert result["error"] == "PeerError"
            assert "within 3 s" in str(result["message"]) or "connection lost" in str(
                result["message"])
            assert float(result["after_s"]) < TIMEOUT_S + 2
    finally:
        procs[1].kill()
        procs[1].wait()
