"""The connector service over HTTP (aiohttp test server on 127.0.0.1) with three real node
apps: liveness and readiness, Prometheus metrics, the operator token on ``/v1``, forced and
scheduled runs recorded in counts only, runs of a dead process marked interrupted at start,
and no answer carrying a patient key."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from dic_connector.connector.config import ConnectorConfig
from dic_connector.connector.state import RunStatus, StateStore
from dic_connector.dev.synthetic import read_bulk
from dic_connector.mapping import build_cohort, load_mapping

from .conftest import DATASET, MAPPING_FILE, Cluster, connector_config, until

TOKEN = "operator-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def configured(cluster: Cluster, tmp: Path, export: Path, **dataset: Any) -> ConnectorConfig:
    config = connector_config(cluster, tmp, export, **dataset)
    return dataclasses.replace(config, operator_token_sha256=hashlib.sha256(
        TOKEN.encode()).hexdigest())


async def test_ready_only_with_the_schema_this_code_expects(
        cluster: Cluster, tmp_path: Path, export: Path, serve: Any) -> None:
    client = await serve(configured(cluster, tmp_path, export))  # state.db not migrated
    assert (await client.get("/live")).status == 200
    unready = await client.get("/ready")
    assert unready.status == 503
    assert "dic connector migrate" in (await unready.json())["checks"]["state_database"]
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    await store.migrate()
    await store.close()
    ready = await client.get("/ready")
    assert ready.status == 200 and (await ready.json())["checks"] == {"state_database": "ok"}


async def test_v1_needs_the_operator_token(
        cluster: Cluster, tmp_path: Path, export: Path, state: StateStore, serve: Any) -> None:
    config = configured(cluster, tmp_path, export)
    client = await serve(config)
    assert (await client.get("/v1/datasets")).status == 401
    wrong = await client.get("/v1/runs", headers={"Authorization": "Bearer guess"})
    assert wrong.status == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    assert (await client.post(f"/v1/datasets/{DATASET}/runs",
                              headers={"Authorization": TOKEN})).status == 401
    assert (await client.get("/v1/datasets", headers=AUTH)).status == 200
    closed = await serve(dataclasses.replace(config, operator_token_sha256=None))
    assert (await closed.get("/v1/datasets", headers=AUTH)).status == 403
    assert (await closed.get("/metrics")).status == 200  # scraped without the token


async def test_a_forced_run_is_recorded_and_counted(
        cluster: Cluster, tmp_path: Path, export: Path, state: StateStore, serve: Any) -> None:
    client = await serve(configured(cluster, tmp_path, export))
    assert (await client.post("/v1/datasets/nope/runs", headers=AUTH)).status == 404
    answer = await client.post(f"/v1/datasets/{DATASET}/runs?wait=true", headers=AUTH)
    assert answer.status == 200
    run = (await answer.json())["run"]
    assert run["status"] == "succeeded" and run["trigger"] == "manual"
    assert run["version_id"] is not None and run["counts"]["rows_shared"] > 0

    listed = await (await client.get(f"/v1/runs?dataset={DATASET}", headers=AUTH)).json()
    assert [r["id"] for r in listed["runs"]] == [run["id"]]
    datasets = await (await client.get("/v1/datasets", headers=AUTH)).json()
    [entry] = datasets["datasets"]
    assert entry["name"] == DATASET and entry["source"] == "ndjson"
    assert entry["trigger"] == "manual" and entry["next_due"] is None
    assert entry["running"] is False and entry["last_run"]["id"] == run["id"]

    queued = await client.post(f"/v1/datasets/{DATASET}/runs", headers=AUTH)
    assert queued.status == 202 and (await queued.json()) == {"dataset": DATASET,
                                                              "queued": True}

    async def second() -> bool:
        return len(await state.runs(DATASET)) == 2 and all(
            r.status is RunStatus.SUCCEEDED for r in await state.runs(DATASET))

    await until(second)
    metrics = await (await client.get("/metrics")).text()
    assert f'dic_connector_runs_total{{dataset="{DATASET}",status="succeeded"}} 2.0' in metrics
    assert "dic_connector_run_duration_seconds_bucket" in metrics

    # nothing the operator sees names a patient
    keys = {str(r[load_mapping(MAPPING_FILE).patient_key.name])
            for r in build_cohort(load_mapping(MAPPING_FILE), read_bulk(export)).rows}
    seen = json.dumps([listed, datasets]) + metrics
    assert not [k for k in keys if f'"{k}"' in seen or f"={k}" in seen]
    assert (await client.get("/v1/runs?limit=x", headers=AUTH)).status == 400


async def test_scheduled_datasets_run_and_dead_runs_are_marked_interrupted(
        cluster: Cluster, tmp_path: Path, export: Path, state: StateStore, serve: Any) -> None:
    dead = await state.start_run(DATASET, "schedule")  # a process that died mid-run
    client = await serve(configured(cluster, tmp_path, export,
                                    trigger={"schedule": {"every": "1h"}}))

    async def scheduled() -> list[Any]:
        return [r for r in await state.runs(DATASET)
                if r.id != dead and r.status is RunStatus.SUCCEEDED]

    [run] = await until(scheduled)
    assert run.trigger == "schedule"
    [old] = [r for r in await state.runs(DATASET) if r.id == dead]
    assert old.status is RunStatus.INTERRUPTED
    datasets = await (await client.get("/v1/datasets", headers=AUTH)).json()
    [entry] = datasets["datasets"]
    assert entry["trigger"] == "every 3600 s"

    async def next_due() -> Any:
        entry = (await (await client.get("/v1/datasets", headers=AUTH)).json())["datasets"][0]
        return entry["next_due"] if not entry["running"] else None

    # due an hour after the run started (anchored on the last start, not the end)
    due = await until(next_due)
    expected = run.started_at.timestamp() + 3600
    assert abs(dt.datetime.fromisoformat(due).timestamp() - expected) < 1
