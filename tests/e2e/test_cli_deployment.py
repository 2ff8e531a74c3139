"""Issue 15's acceptance: the README's multi-node setup with the ``dic`` command alone.

Every step is a ``dic`` subprocess, as a newcomer following README.md would type it: the
deployment CA and certificates (``dic pki``), signing keys (``dic keys new``), three nodes
(``dic node init/migrate``, ``dic admin add-principal``, ``dic node serve`` as three
processes, SQLite, mutual TLS), the synthetic pilot export
(``python -m dic_connector.dev.synthetic pilot``), one connector run
(``dic connector pull``), then a researcher's ``dic analyze`` that waits while the data
owner reads the pending request (``dic requests list``) and signs it (``dic approve
--yes``), and ``dic result``. The files a person writes by hand are the ones README.md and
``docs/connector.md`` show: ``peers.yaml``, ``connector.yaml`` and each person's profile.

The result is checked against the same statistic in plaintext: the pilot mapping and encoding
run over the same patients in this process (:func:`dic_connector.mapping.build_cohort`,
:func:`dic_connector.encoding.encode_table`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dic_connector.dev.synthetic import pilot_resources
from dic_connector.encoding import encode_table, validate_rows
from dic_connector.mapping import build_cohort, load_mapping
from mpc.local import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MAPPING = ROOT / "mappings" / "pilot_adrenal.yaml"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "DIC_PROFILE": ""}


def run_dic(*args: str | Path, cwd: Path, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dic_connector.cli", *map(str, args)],
                          cwd=cwd, env=_env(), text=True, capture_output=True, timeout=timeout)


def dic(*args: str | Path, cwd: Path, timeout: float = 120) -> str:
    """``dic ARGS`` in ``cwd``; its stdout (a non-zero exit fails with its stderr)."""
    done = run_dic(*args, cwd=cwd, timeout=timeout)
    assert done.returncode == 0, f"dic {' '.join(map(str, args))}: {done.stderr}"
    return done.stdout


def public_key(out: str) -> str:
    """The public line ``dic keys new`` prints for the admin."""
    return out.split("--signing-key`): ")[1].split()[0]


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    try:
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def until_every_node_answers(profile: Path, cwd: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    done = None
    while time.monotonic() < deadline:
        done = run_dic("whoami", "--profile", profile, cwd=cwd)
        if done.returncode == 0:  # exit 2 names a node that does not answer (yet)
            return
        time.sleep(0.5)
    raise AssertionError(f"the nodes did not all answer: {done}")


def test_a_deployment_set_up_with_the_cli_alone_computes_an_approved_analysis(
        tmp_path: Path, servers: list[subprocess.Popen[str]]) -> None:
    work = tmp_path
    # -- keys and certificates (README "Keys and certificates") ---------------------------
    dic("pki", "init", "--dir", "pki", cwd=work)
    for i in range(3):
        dic("pki", "issue", "node", "--dir", "pki", "--index", str(i), "--host", "127.0.0.1",
            cwd=work)
    dic("pki", "issue", "connector", "--dir", "pki", "--site", "tm", cwd=work)
    owner_key = public_key(dic("keys", "new", "--out", "owner_tm.pem", cwd=work))
    alice_key = public_key(dic("keys", "new", "--out", "alice.pem", cwd=work))

    # -- three nodes (README "A compute node") --------------------------------------------
    api = [free_port() for _ in range(3)]
    (work / "peers.yaml").write_text(yaml.safe_dump([
        {"api_url": f"https://127.0.0.1:{api[i]}", "mpc_host": "127.0.0.1",
         "mpc_port": free_port(), "name": f"node-{i}"} for i in range(3)]))
    tokens: dict[str, list[str]] = {"owner_tm": [], "alice": []}
    for i in range(3):
        config = Path(dic("node", "init", "--dir", "etc", "--index", str(i), "--peers",
                          "peers.yaml", "--pki", "pki", cwd=work).strip())
        assert config.name == f"node-{i}.yaml"
        dic("node", "migrate", "--config", config, cwd=work)
        for name, role, key, site in (("owner_tm", "data_owner", owner_key, ["--site", "tm"]),
                                      ("alice", "researcher", alice_key, [])):
            out = dic("admin", "add-principal", "--config", config, "--name", name, "--role",
                      role, *site, "--signing-key", key, cwd=work)
            tokens[name].append(out.split("token (shown once): ")[1].split()[0])
        log = (work / f"node-{i}.log").open("w")
        servers.append(subprocess.Popen(
            [sys.executable, "-m", "dic_connector.cli", "node", "serve", "--config",
             str(config)], cwd=work, env=_env(), text=True, stdout=log,
            stderr=subprocess.STDOUT))

    # -- each person's profile (dic_connector/client/profile.py) --------------------------
    def profile(name: str, role: str, **extra: Any) -> Path:
        path = work / f"{name}.profile.yaml"
        path.write_text(yaml.safe_dump({
            "name": name, "role": role, "key": f"{name}.pem", "ca_cert": "pki/ca.pem",
            "at": 1, **extra,
            "nodes": [{"url": f"https://127.0.0.1:{api[i]}", "name": f"node-{i}",
                       "token": tokens[name][i]} for i in range(3)]}))
        return path

    alice = profile("alice", "researcher")
    owner = profile("owner_tm", "data_owner", site="tm")
    until_every_node_answers(alice, work)

    # -- the hospital's connector (docs/connector.md) -------------------------------------
    subprocess.run([sys.executable, "-m", "dic_connector.dev.synthetic", "pilot", "--site",
                    "tm", "export"], cwd=work, env=_env(), check=True, capture_output=True)
    (work / "connector.yaml").write_text(yaml.safe_dump({
        "site": "tm",
        "tls": {"ca_cert": "pki/ca.pem", "cert": "pki/connector.tm.pem",
                "key": "pki/connector.tm.key"},
        "nodes": [{"url": f"https://127.0.0.1:{api[i]}", "name": f"node-{i}"}
                  for i in range(3)],
        "state_database_url": "sqlite:///connector-state.db",
        "datasets": {"pilot_adrenal": {"mapping": str(MAPPING),
                                       "source": {"kind": "ndjson", "directory": "export"},
                                       "trigger": "manual"}}}))
    dic("connector", "pull", "--config", "connector.yaml", "--dataset", "pilot_adrenal",
        cwd=work, timeout=300)
    listed = json.loads(dic("datasets", "list", "--json", "--profile", alice, cwd=work))
    [dataset] = listed
    assert (dataset["site"], dataset["name"], dataset["version"]["rows"]) == (
        "tm", "pilot_adrenal", 24)

    # -- a researcher asks, the owner approves, both through the CLI ----------------------
    analyze = subprocess.Popen(
        [sys.executable, "-m", "dic_connector.cli", "analyze", "mean", "--column", "age",
         "--datasets", "tm", "--study", "Adrenal SBRT", "--json", "--timeout", "240",
         "--profile", str(alice)], cwd=work, env=_env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        request_id = None
        deadline = time.monotonic() + 120
        while request_id is None and time.monotonic() < deadline:
            pending = [line for line in dic("requests", "list", "--profile", owner,
                                            cwd=work).splitlines() if " mean " in f" {line} "]
            found = UUID.search(pending[0]) if pending else None
            request_id = found.group(0) if found else None
            if request_id is None:
                time.sleep(0.5)
        assert request_id is not None, "the owner never saw the request"
        approved = dic("approve", request_id, "--yes", "--profile", owner, cwd=work)
        assert f"request {request_id}: approved by tm" in approved
        out, err = analyze.communicate(timeout=240)
    finally:
        if analyze.poll() is None:
            analyze.kill()
    assert analyze.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    again = json.loads(dic("result", request_id, "--json", "--profile", alice, cwd=work)
                       .strip().splitlines()[-1])
    assert again == result

    # -- the same statistic in plaintext, through the same mapping and encoding -----------
    mapping = load_mapping(MAPPING)
    clean, _, _ = validate_rows(build_cohort(mapping, pilot_resources("tm")).rows, mapping)
    table = encode_table(clean, mapping)
    ages = table.column("age")
    if "age__present" in table.names:
        ages = ages[table.column("age__present") == 1]
    assert result["n"] == len(ages) == 24
    assert float(result["mean"]) == pytest.approx(float(ages.mean()), abs=1e-9)
