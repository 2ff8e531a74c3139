"""The ``dic`` command: ``cli.main(argv)`` in this process (what the console script calls), and
a real subprocess where it matters (``serve``, signals, what a shell sees)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector import cli
from dic_connector.errors import ConfigError, DicError
from dic_connector.node.config import load_config
from dic_connector.trust.keyring import load_keyring
from dic_connector.trust.signing import public_key_bytes
from mpc.local import free_port


def dic(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``dic ARGS`` run by ``cli.main`` in this process, its exit code and output captured as
    a subprocess's would be (argparse's exit is an exit code too). In process, each call
    saves the ~1 s of imports a fresh interpreter pays; the serve tests below use real
    processes."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    result = subprocess.CompletedProcess(["dic", *args], code, out.getvalue(), err.getvalue())
    if check:
        result.check_returncode()
    return result


def test_init_migrate_add_principal_verify_and_tamper(tmp_path: Path) -> None:
    config = Path(dic("node", "init", "--dir", str(tmp_path), "--index", "1",
                      "--standalone").stdout.strip())
    keyring = tmp_path / "node-1.keyring.json"
    assert keyring.stat().st_mode & 0o777 == 0o600
    assert load_keyring(keyring).node_id == "node-1"
    assert config.stat().st_mode & 0o777 == 0o600  # a database_url may hold a password
    assert "schema at" in dic("node", "migrate", "--config", str(config)).stdout
    assert (tmp_path / "node-1.db").stat().st_mode & 0o777 == 0o600
    keys = dic("keys", "new", "--out", str(tmp_path / "owner.pem")).stdout
    raw = keys.split("--signing-key`): ")[1].split()[0]
    out = dic("admin", "add-principal", "--config", str(config), "--name", "owner_tm",
              "--role", "data_owner", "--site", "tm", "--signing-key", raw).stdout
    assert "token (shown once): dic_" in out
    pem = tmp_path / "alice.pub"
    dic("keys", "new", "--out", str(tmp_path / "alice.pem"))
    pem.write_text(dic("keys", "public", "--key", str(tmp_path / "alice.pem")).stdout
                   .split("\n", 1)[1])  # the PEM form, as a file
    dic("admin", "add-principal", "--config", str(config), "--name", "alice", "--role",
        "researcher", "--signing-key", str(pem))
    unsigned = dic("admin", "add-principal", "--config", str(config), "--name", "bob",
                   "--role", "researcher", check=False)
    assert unsigned.returncode == 2 and "give their public signing key" in unsigned.stderr
    ok = dic("audit", "verify", "--config", str(config))
    assert "audit chain intact, 2 entries" in ok.stdout
    with sqlite3.connect(tmp_path / "node-1.db") as db:
        db.execute("UPDATE audit_log SET actor = 'someone else' WHERE seq = 1")
    broken = dic("audit", "verify", "--config", str(config), check=False)
    assert broken.returncode == 1 and "BROKEN at seq 1" in broken.stdout
    again = dic("node", "init", "--dir", str(tmp_path), "--index", "1", "--standalone",
                check=False)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


def test_keyring_with_loose_permissions_is_refused(tmp_path: Path) -> None:
    dic("node", "init", "--dir", str(tmp_path), "--index", "0", "--standalone")
    keyring = tmp_path / "node-0.keyring.json"
    keyring.chmod(0o644)
    with pytest.raises(ConfigError, match="mode 0600"):
        load_keyring(keyring)


def test_serve_runs_the_api(tmp_path: Path) -> None:
    config = Path(dic("node", "init", "--dir", str(tmp_path), "--index", "2",
                      "--standalone").stdout.strip())
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


def test_serve_over_tls_accepts_connector_uploads(tmp_path: Path) -> None:
    """`dic node serve` with `tls:` speaks HTTPS and knows the connector's certificate."""
    import asyncio
    import os

    import numpy as np
    import yaml

    from dic_connector.connector.upload import NodeEndpoint, Uploader
    from dic_connector.errors import UploadError
    from mpc.tls import write_dev_pki

    pki = write_dev_pki(tmp_path / "pki", ["node-0", "connector.tm"])
    config = Path(dic("node", "init", "--dir", str(tmp_path), "--index", "0",
                      "--standalone").stdout.strip())
    data = yaml.safe_load(config.read_text())
    node = pki["node-0"]
    data["tls"] = {"ca_cert": str(node.ca_cert), "cert": str(node.cert), "key": str(node.key)}
    config.write_text(yaml.safe_dump(data))
    dic("node", "migrate", "--config", str(config))
    owner_key = base64.b64encode(public_key_bytes(Ed25519PrivateKey.generate())).decode()
    dic("admin", "add-principal", "--config", str(config), "--name", "owner", "--role",
        "data_owner", "--site", "tm", "--signing-key", owner_key)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dic_connector.cli", "node", "serve",
                             "--config", str(config)], text=True, stdout=subprocess.PIPE,
                            env={**os.environ, "DIC_LISTEN_PORT": str(port)})
    try:
        assert proc.stdout is not None and "https://" in proc.stdout.readline()
        endpoint = NodeEndpoint(f"https://127.0.0.1:{port}", "node-0")
        # one real node: begin/columns/prepare succeed there; the two absent nodes abort it
        uploader = Uploader([endpoint, NodeEndpoint("https://127.0.0.1:1", "node-1"),
                             NodeEndpoint("https://127.0.0.1:1", "node-2")],
                            pki["connector.tm"], "tm", timeout_s=10)
        with pytest.raises(UploadError, match=r"node-1|node-2"):
            asyncio.run(uploader.upload("cohort", np.ones((3, 1), dtype=np.int64),
                                        {"columns": [{"name": "x"}]}))
        with sqlite3.connect(tmp_path / "node-0.db") as db:
            states = db.execute("SELECT state FROM dataset_versions").fetchall()
        assert states == [("deleted",)]  # it reached node-0 over TLS and was aborted there
    finally:
        proc.terminate()
        proc.wait(10)


def test_pki_and_keys_commands(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    out = dic("pki", "init", "--dir", str(pki)).stdout
    assert "keep" in out and (pki / "ca.key").stat().st_mode & 0o777 == 0o600
    out = dic("pki", "issue", "node", "--dir", str(pki), "--index", "1", "--host",
              "node1.dic.example", "--host", "127.0.0.1").stdout
    assert "names node-1, node1.dic.example, 127.0.0.1" in out
    assert "names connector.tm" in dic("pki", "issue", "connector", "--dir", str(pki),
                                       "--site", "tm").stdout
    again = dic("pki", "issue", "connector", "--dir", str(pki), "--site", "tm", check=False)
    assert again.returncode == 2 and "pass --force" in again.stderr
    assert dic("pki", "issue", "connector", "--dir", str(pki), "--site", "tm",
               "--force").returncode == 0
    missing = dic("pki", "issue", "node", "--dir", str(tmp_path / "nothing"), "--index", "0",
                  check=False)
    assert missing.returncode == 2 and "run `dic pki init` first" in missing.stderr
    dic("keys", "new", "--out", str(tmp_path / "k.pem"))
    twice = dic("keys", "new", "--out", str(tmp_path / "k.pem"), check=False)
    assert twice.returncode == 2 and "never overwritten" in twice.stderr
    for command in (("pki", "issue", "node"), ("keys", "new")):
        assert "example: dic" in dic(*command, "--help").stdout


def test_init_writes_nodes_that_compute_and_serve_refuses_those_that_never_could(
        tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    dic("pki", "init", "--dir", str(pki))
    peers = tmp_path / "peers.yaml"
    peers.write_text(yaml.safe_dump([
        {"api_url": f"https://127.0.0.1:{9440 + i}", "mpc_host": "127.0.0.1",
         "mpc_port": 9450 + i, "name": f"node-{i}"} for i in range(3)]))
    lonely = dic("node", "init", "--dir", str(tmp_path / "a"), "--index", "0", check=False)
    assert lonely.returncode == 2 and "could never compute" in lonely.stderr
    assert not (tmp_path / "a").exists()  # nothing written
    half = dic("node", "init", "--dir", str(tmp_path / "a"), "--index", "0", "--peers",
               str(peers), check=False)
    assert half.returncode == 2 and "go together" in half.stderr
    no_cert = dic("node", "init", "--dir", str(tmp_path / "a"), "--index", "0", "--peers",
                  str(peers), "--pki", str(pki), check=False)
    assert no_cert.returncode == 2 and "node-0.pem" in no_cert.stderr

    dic("pki", "issue", "node", "--dir", str(pki), "--index", "0")
    path = Path(dic("node", "init", "--dir", str(tmp_path / "a"), "--index", "0", "--peers",
                    str(peers), "--pki", str(pki)).stdout.strip())
    config = load_config(path)
    assert config.coordinated and config.listen_port == 9440 and config.tls is not None

    # a certificate that is not node-0's is refused at start, naming the file
    dic("pki", "issue", "node", "--dir", str(pki), "--index", "1")
    data = yaml.safe_load(path.read_text())
    data["tls"]["cert"], data["tls"]["key"] = str(pki / "node-1.pem"), str(pki / "node-1.key")
    path.write_text(yaml.safe_dump(data))
    dic("node", "migrate", "--config", str(path))
    served = dic("node", "serve", "--config", str(path), check=False)
    assert served.returncode == 2
    assert "node-1.pem names node-1; expected 'node-0'" in served.stderr


def test_admin_outbox_lists_replays_and_drops_parked_messages(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dic_connector.node.admin import node_keyring
    from dic_connector.node.store.unit_of_work import Store

    assert cli.main(["node", "init", "--dir", str(tmp_path), "--index", "0",
                     "--standalone"]) == 0
    config_path = str(tmp_path / "node-0.yaml")
    assert cli.main(["node", "migrate", "--config", config_path]) == 0
    config = load_config(Path(config_path))

    async def park(paths: list[str]) -> None:  # as the replicator leaves refused messages
        store = Store.open(config.database_url, node_keyring(config))
        try:
            async with store.unit_of_work() as uow:
                await uow.outbox.enqueue([1], "cancel", "POST", paths[0], {})
                await uow.outbox.enqueue([2], "approval", "POST", paths[1], {})
                for message_id in (1, 2):
                    await uow.outbox.park(message_id, "refused", "refused by node-x: 409 Conflict",
                                          "409 detail", 409, "Conflict")
        finally:
            await store.close()

    asyncio.run(park(["/v1/peer/a", "/v1/peer/b"]))
    capsys.readouterr()
    assert cli.main(["admin", "outbox", "list", "--config", config_path]) == 0
    out = capsys.readouterr().out
    assert "1\tnode-1\tcancel\tPOST /v1/peer/a\tattempts 1\tstatus 409 Conflict" in out
    assert "node-0: 2 parked message(s)" in out
    assert cli.main(["admin", "outbox", "list", "--config", config_path, "--peer", "2"]) == 0
    assert "node-0: 1 parked message(s)" in capsys.readouterr().out
    assert cli.main(["admin", "outbox", "replay", "--config", config_path, "1"]) == 0
    assert "replayed 1 message(s)" in capsys.readouterr().out
    assert cli.main(["admin", "outbox", "drop", "--config", config_path, "--all"]) == 0
    assert "dropped 1 message(s)" in capsys.readouterr().out
    assert cli.main(["admin", "outbox", "drop", "--config", config_path]) == 2
    assert "give message ids or --all" in capsys.readouterr().err
    assert cli.main(["admin", "outbox", "drop", "--config", config_path, "1"]) == 2
    assert "is pending, not parked" in capsys.readouterr().err


def test_policy_perturbation_option() -> None:
    assert cli.perturbation_option(None) is None
    assert cli.perturbation_option("3,2.0") == {"max_noise": 3, "variance": 2.0}
    assert cli.perturbation_option("3, 2.5, 1") == {"max_noise": 3, "variance": 2.5, "js": 1}
    for bad in ("3", "x,2", "3,2,1,0"):
        with pytest.raises(DicError, match="--perturbation"):
            cli.perturbation_option(bad)
    args = cli.build_parser().parse_args(["policy", "create", "--analyses", "count",
                                      "--perturbation", "3,2.0"])
    assert args.perturbation == "3,2.0"
    assert (args.min_subset_size, args.max_levels, args.ledger) == (None, None, None)
    args = cli.build_parser().parse_args(["policy", "create", "--analyses", "count",
                                          "--min-subset-size", "8", "--max-levels", "12",
                                          "--ledger"])
    assert (args.min_subset_size, args.max_levels, args.ledger) == (8, 12, True)


def test_admin_audit_peers_lists_flagged_peers_and_acknowledge_clears_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dic_connector.dev.deployment import write_local_deployment
    from dic_connector.node.admin import node_keyring
    from dic_connector.node.store.audit import ChainHead
    from dic_connector.node.store.unit_of_work import Store

    deployment = write_local_deployment(tmp_path / "deployment")
    config_path = str(deployment.config_files[0])
    assert cli.main(["node", "migrate", "--config", config_path]) == 0
    config = deployment.config(0)

    async def observe() -> None:  # as the audit head exchange leaves it
        store = Store.open(config.database_url, node_keyring(config))
        try:
            async with store.unit_of_work() as uow:
                await uow.peer_audit.record("node-1", ChainHead(7, "a" * 64))
                await uow.peer_audit.record("node-1", ChainHead(5, "b" * 64))
                await uow.peer_audit.flag("node-1", ChainHead(7, "a" * 64),
                                          ChainHead(5, "b" * 64), None, "log truncated")
        finally:
            await store.close()

    asyncio.run(observe())
    capsys.readouterr()
    assert cli.main(["admin", "audit", "peers", "--config", config_path]) == 1
    out = capsys.readouterr().out
    assert f"node-1\tFLAGGED\thead 5:{'b' * 64}" in out
    assert "recorded 7:aaaaaaaaaaaaaaaa, reported 5:bbbbbbbbbbbbbbbb: log truncated" in out
    assert "node-2\tok\tnever observed" in out
    assert cli.main(["admin", "audit", "acknowledge", "--config", config_path, "node-3"]) == 2
    assert "not a peer of node-0" in capsys.readouterr().err
    assert cli.main(["admin", "audit", "acknowledge", "--config", config_path, "node-1"]) == 0
    assert "acknowledged 1 mismatch(es) of node-1" in capsys.readouterr().out
    assert cli.main(["admin", "audit", "peers", "--config", config_path]) == 0
    assert "node-1\tok" in capsys.readouterr().out
    verified = dic("audit", "verify", "--config", config_path)
    assert "audit chain intact, 1 entries" in verified.stdout  # the acknowledgement
