"""Schemathesis against a live node: no 5xx, responses conform to the OpenAPI document.

The node runs in its own thread and event loop on 127.0.0.1; schemathesis (the real CLI, in
a subprocess) generates requests from ``/openapi.json`` for every operation, authenticated
as each kind of principal in turn.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.node.api import create_app
from dic_connector.node.config import parse_config
from dic_connector.node.store import migrate
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.keyring import NodeKeyring
from mpc.local import free_port

from .conftest import seed


@pytest.fixture(scope="module")
def live_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("live-node")
    url = f"sqlite+aiosqlite:///{tmp / 'node.db'}"
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def start() -> None:
        await migrate.upgrade(url)
        store = Store.open(url, NodeKeyring.generate("node-0"))
        tokens, *_ = await seed(store, Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(),
                            {n: Ed25519PrivateKey.generate() for n in ("alice", "mallory")})
        # status reads wait at most 10 ms: the fuzzer tries every 'wait' it can think of
        runner = web.AppRunner(create_app(parse_config({"node_index": 0, "database_url": url,
                                                        "status_wait_max_s": 0.01}),
                                          store=store))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        holder.update(runner=runner, store=store, tokens=tokens)
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()),
                                              loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield f"http://127.0.0.1:{port}", holder["tokens"]  # type: ignore[misc]

    async def stop() -> None:
        await holder["runner"].cleanup()  # type: ignore[attr-defined]
        await holder["store"].close()  # type: ignore[attr-defined]

    asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.mark.parametrize("who", ["alice", "owner_tm", "admin"])
def test_schemathesis_finds_no_server_errors_or_schema_violations(
        live_node: tuple[str, dict[str, str]], who: str, tmp_path: Path) -> None:
    base, tokens = live_node
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis CLI not installed: run `make test`"
    result = subprocess.run(
        [st, "run", f"{base}/openapi.json", "--checks",
         "not_a_server_error,status_code_conformance,content_type_conformance,"
         "response_schema_conformance,response_headers_conformance",
         "--max-examples", "12", "--seed", "1", "--workers", "1",
         "--phases", "examples,coverage,fuzzing",
         "-H", f"Authorization: Bearer {tokens[who]}",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    summary = re.search(r"(\d+) passed", result.stdout)
    assert summary is not None and int(summary.group(1)) >= 15, result.stdout[-3000:]
