"""Three real node processes on PostgreSQL witness each other's audit log: someone with
database access deletes node-1's newest audit entry, no request follows, and within a few
exchange intervals node-0 and node-2 report it (``/ready`` degraded, ``/metrics``,
``dic admin audit peers`` exiting 1) until an operator acknowledges it with ``dic admin
audit acknowledge``."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.dev.deployment import LocalNodes, register_people, write_local_deployment
from dic_connector.vocabulary import Role
from tests.conftest import create_database

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PEOPLE = {"admin": (Role.ADMIN, None)}
INTERVAL_S = 0.2


@dataclass
class Witnesses:
    local: LocalNodes
    dsns: list[str]



@pytest.fixture
async def witnesses(tmp_path: Path, postgres_dsn: str) -> AsyncIterator[Witnesses]:
    dsns = [await create_database(postgres_dsn, "e2e") for _ in range(3)]
    deployment = write_local_deployment(tmp_path, database_urls=dsns, extra={
        "coordination_interval_s": 0.5, "audit_exchange_interval_s": INTERVAL_S})
    keys = {name: Ed25519PrivateKey.generate() for name in PEOPLE}
    async with aiohttp.ClientSession() as http:
        local = LocalNodes(deployment, http, await register_people(deployment, PEOPLE, keys))
        async with local.running(tmp_path / "logs"):
            yield Witnesses(local, dsns)


async def _fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def _eventually(check: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s: {what}")


async def _dic(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dic_connector.cli", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_a_truncated_log_is_reported_by_both_other_processes(
        witnesses: Witnesses) -> None:
    local, dsns = witnesses.local, witnesses.dsns
    [head] = await _fetch(dsns[1], "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    assert head["seq"] >= 1  # the admin's principal.create

    async def recorded_by_both() -> bool:
        for dsn in (dsns[0], dsns[2]):
            rows = await _fetch(dsn, "SELECT seq, hash FROM peer_audit_heads WHERE peer = "
                                "'node-1' ORDER BY id DESC LIMIT 1")
            if not rows or (rows[0]["seq"], rows[0]["hash"]) != (head["seq"], head["hash"]):
                return False
        return True

    await _eventually(recorded_by_both, "node-0 and node-2 record node-1's head")
    await _fetch(dsns[1], "DELETE FROM audit_log WHERE seq = $1", head["seq"])

    async def degraded_at_both() -> bool:
        states = [await local.deployment.client(i, local.http).ready() for i in (0, 2)]
        return all(s["status"] == "degraded" and "node-1" in s["checks"]["peer_audit"]
                   for s in states)

    await _eventually(degraded_at_both, "node-0 and node-2 report node-1's log")
    assert (await local.deployment.client(1, local.http).ready())["status"] == "ok"
    async with local.http.get(f"{local.urls[0]}/metrics", ssl=local.deployment.ca_context,
                              server_hostname="node-0") as answer:
        metrics = await answer.text()
    assert 'dic_peer_audit_mismatches_total{peer="node-1"} 1.0' in metrics
    assert 'dic_peer_audit_flagged{peer="node-1"} 1.0' in metrics

    config = str(local.deployment.config_files[0])
    code, out = await _dic("admin", "audit", "peers", "--config", config)
    assert code == 1 and "node-1\tFLAGGED" in out and "truncated" in out, out
    code, out = await _dic("admin", "audit", "acknowledge", "--config", config, "node-1")
    assert code == 0 and "acknowledged 1 mismatch(es) of node-1" in out, out
    assert (await local.deployment.client(0, local.http).ready())["status"] == "ok"
    [entry] = await _fetch(dsns[0], "SELECT actor, details FROM audit_log WHERE action = "
                           "'audit.peer_mismatch'")
    assert entry["actor"] == "node:node-0" and '"reported_seq":' in entry["details"]
