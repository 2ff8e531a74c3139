"""The ``dic`` command, run as a real subprocess where it matters."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dic_connector import cli
from dic_connector.errors import ConfigError
from dic_connector.keyring import load_keyring
from mpc.local import free_port


def dic(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dic_connector.cli", *args], text=True,
                          capture_output=True, timeout=120, check=check)


def test_init_migrate_add_principal_verify_and_tamper(tmp_path: Path) -> None:
    config = Path(dic("node", "init", "--dir", str(tmp_path), "--index", "1").stdout.strip())
    keyring = tmp_path / "node-1.keyring.json"
    assert keyring.stat().st_mode & 0o777 == 0o600
    assert load_keyring(keyring).node_id == "node-1"
    assert "schema at" in dic("node", "migrate", "--config", str(config)).stdout
    out = dic("admin", "add-principal", "--config", str(config), "--name", "owner_tm",
              "--role", "data_owner", "--site", "tm").stdout
    assert "token (shown once): dic_" in out
    dic("admin", "add-principal", "--config", str(config), "--name", "alice", "--role",
        "researcher")
    ok = dic("audit", "verify", "--config", str(config))
    assert "audit chain intact, 2 entries" in ok.stdout
    with sqlite3.connect(tmp_path / "node-1.db") as db:
        db.execute("UPDATE audit_log SET actor = 'someone else' WHERE seq = 1")
    broken = dic("audit", "verify", "--config", str(config), check=False)
    assert broken.returncode == 1 and "BROKEN at seq 1" in broken.stdout
    again = dic("node", "init", "--dir", str(tmp_path), "--index", "1", check=False)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


def test_keyring_with_loose_permissions_is_refused(tmp_path: Path) -> None:
    dic("node", "init", "--dir", str(tmp_path), "--index", "0")
    keyring = tmp_path / "node-0.keyring.json"
    keyring.chmod(0o644)
    with pytest.raises(ConfigError, match="mode 0600"):
        load_keyring(keyring)


def test_serve_runs_the_api(tmp_path: Path) -> None:
    config = Path(dic("node", "init", "--dir", str(tmp_path), "--index", "2").stdout.strip())
    dic("node", "migrate", "--config", str(config))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dic_connector.cli", "node", "serve",
                             "--config", str(config)], text=True, stdout=subprocess.PIPE,
                            env={**__import__("os").environ, "DIC_LISTEN_PORT": str(port)})
    try:
        assert proc.stdout is not None and "control API" in proc.stdout.readline()
        for _ in range(50):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                    assert json.load(r) == {"status": "ok", "node": "node-2",
                                            "checks": {"database": "ok"}}
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("node did not become ready")
    finally:
        proc.terminate()
        proc.wait(10)


def test_config_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("node_index: 7\ndatabase_url: sqlite://\n")
    assert cli.main(["audit", "verify", "--config", str(bad)]) == 2
    assert "Config 'node_index' has value 7" in capsys.readouterr().err
