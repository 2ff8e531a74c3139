"""Stopping the connector service while an operator waits for a forced run
(``POST /v1/datasets/{name}/runs?wait=true``): the run is cancelled and recorded
``interrupted`` by the stopping service, and the waiting request is answered, instead of
aiohttp's graceful shutdown waiting (up to its 60 s timeout, longer than a Kubernetes grace
period) for the run to end."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dic_connector.config import database_url
from dic_connector.connector import commands, runs
from dic_connector.connector.config import ConnectorConfig, DatasetConfig, Trigger
from dic_connector.connector.service import create_app
from dic_connector.connector.state import RunStatus, StateStore
from dic_connector.connector.upload import NodeEndpoint
from dic_connector.errors import DicError
from dic_connector.mapping import loads_mapping
from dic_connector.sources import NdjsonConfig
from mpc.local import free_port
from mpc.tls import write_dev_pki
from tests.dic_connector.connector.conftest import GENDERS_MAPPING


def config(tmp_path: Path, digest: str) -> ConnectorConfig:
    dataset = DatasetConfig("pilot", loads_mapping(GENDERS_MAPPING, "ages.yaml"),
                            NdjsonConfig(tmp_path), Trigger())
    return ConnectorConfig(
        site="tm", nodes=tuple(NodeEndpoint(f"https://127.0.0.1:{9000 + i}", f"node-{i}")
                               for i in range(3)),
        tls=write_dev_pki(tmp_path / "pki", ["connector.tm"])["connector.tm"],
        datasets=(dataset,),
        state_database_url=database_url(f"sqlite:///{tmp_path / 'connector-state.db'}"),
        operator_token_sha256=digest, lineage_key_file=tmp_path / "lineage.key")


async def test_shutdown_interrupts_a_forced_run_and_answers_who_waits_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulling = asyncio.Event()

    async def hang(*args: Any, **kwargs: Any) -> Any:  # a source that never answers
        pulling.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(runs, "share_cohort", hang)
    token, digest = commands.new_token()
    connector = config(tmp_path, digest)
    await commands.migrate(connector)
    runner = web.AppRunner(create_app(connector))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession() as http:
        waiting = asyncio.create_task(http.post(
            f"http://127.0.0.1:{port}/v1/datasets/pilot/runs?wait=true",
            headers={"Authorization": f"Bearer {token}"}))
        await asyncio.wait_for(pulling.wait(), 10)
        # what SIGTERM does in `dic connector serve`; without the on_shutdown handler this
        # waited for the request in flight, i.e. for the run, until aiohttp's timeout
        await asyncio.wait_for(runner.cleanup(), 10)
        response = await asyncio.wait_for(waiting, 10)
        assert response.status == 503
        assert "interrupted" in (await response.json())["detail"]
    state = StateStore(connector.state_database_url)
    try:
        [run] = await state.runs("pilot")
    finally:
        await state.close()
    assert (run.status, run.trigger) == (RunStatus.INTERRUPTED, "manual")
    assert run.error == "the service stopped during the run"


async def test_a_forced_run_outlives_the_request_that_asked_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``?wait=true`` only waits: the caller going away does not cancel the run."""
    release = asyncio.Event()
    pulling = asyncio.Event()

    async def slow(*args: Any, **kwargs: Any) -> Any:
        pulling.set()
        await release.wait()
        raise DicError("the source is gone")  # ends the run as failed, quickly

    monkeypatch.setattr(runs, "share_cohort", slow)
    token, digest = commands.new_token()
    connector = config(tmp_path, digest)
    await commands.migrate(connector)
    runner = web.AppRunner(create_app(connector))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(asyncio.TimeoutError):
                await http.post(f"http://127.0.0.1:{port}/v1/datasets/pilot/runs?wait=true",
                                headers={"Authorization": f"Bearer {token}"},
                                timeout=aiohttp.ClientTimeout(total=0.5))
            assert pulling.is_set()
            release.set()
            for _ in range(100):
                async with http.get(f"http://127.0.0.1:{port}/v1/runs",
                                    headers={"Authorization": f"Bearer {token}"}) as answer:
                    [run] = (await answer.json())["runs"]
                if run["status"] != "running":
                    break
                await asyncio.sleep(0.05)
        assert run["status"] == "failed" and run["error"] == "DicError: the source is gone"
    finally:
        await runner.cleanup()
