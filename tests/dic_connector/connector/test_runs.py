"""A connector run against three real node apps (mutual TLS, SQLite) and a real state
database: what is shared equals the plaintext cohort, the run is recorded in counts with its
version, the version it supersedes is erased on every node (or owed and retried), excluded
patients never reach a node, and a failed run shares nothing and moves no watermark."""

from __future__ import annotations

import uuid
from pathlib import Path

import aiohttp
from prometheus_client import generate_latest

from dic_connector.connector.commands import EXIT_MAPPING, EXIT_SOURCE, exit_code
from dic_connector.connector.metrics import ConnectorMetrics
from dic_connector.connector.runs import Runner
from dic_connector.connector.state import RunStatus, StateStore
from dic_connector.dev.synthetic import pilot_resources, read_bulk, write_bulk
from dic_connector.encoding import validate_rows
from dic_connector.errors import SourceError
from dic_connector.mapping import build_cohort, load_mapping
from dic_connector.node.store.enums import VersionState
from mpc.ring import to_signed
from mpc.sharing import AShare, reconstruct

from .conftest import (
    DATASET,
    MAPPING_FILE,
    MISTYPED_REJECTED,
    MISTYPED_VALUES,
    NAMES,
    Cluster,
    Traffic,
    connector_config,
)


def expected(export: Path) -> tuple[int, int, list[str]]:
    """Patients assembled, rows passing validation, and the cohort's patient keys."""
    mapping = load_mapping(MAPPING_FILE)
    rows = build_cohort(mapping, read_bulk(export)).rows
    keys = [str(r[mapping.patient_key.name]) for r in rows]
    clean, _, _ = validate_rows(rows, mapping)
    return len(keys), len(clean), keys


async def states(cluster: Cluster, version: uuid.UUID) -> list[VersionState]:
    return [v.state for v in await cluster.versions(version)]


async def test_a_run_shares_the_cohort_and_records_counts(
        cluster: Cluster, tmp_path: Path, export: Path, state: StateStore) -> None:
    config = connector_config(cluster, tmp_path, export)
    metrics = ConnectorMetrics()
    stages: list[str] = []
    outcome = await Runner(config, state, metrics).run(DATASET, "pull", on_stage=stages.append)
    patients, clean, _ = expected(export)
    assert outcome.ok and outcome.error is None
    record = outcome.record
    assert record.status is RunStatus.SUCCEEDED and record.trigger == "pull"
    assert (record.counts.patients, record.counts.rows_shared) == (patients, clean)
    assert record.counts.rows_rejected == patients - clean
    assert record.counts.patients_excluded == 0
    assert record.version_id is not None
    assert await states(cluster, record.version_id) == [VersionState.COMMITTED] * 3
    assert stages[0] == "pull" and "consent" in stages and stages[-1] == "upload"
    assert set(record.stage_seconds) >= {"pull", "map", "validate", "encode", "upload"}
    assert (await state.last_run(DATASET)) == record
    assert metrics.registry.get_sample_value(
        "dic_connector_rows_shared_total", {"dataset": DATASET}) == clean
    assert metrics.registry.get_sample_value(
        "dic_connector_runs_total", {"dataset": DATASET, "status": "succeeded"}) == 1
    for name in NAMES:
        assert metrics.registry.get_sample_value(
            "dic_connector_share_bytes_total", {"dataset": DATASET, "node": name}
        ) == record.counts.bytes_per_node > 0


async def test_values_of_the_wrong_type_are_counted_per_column_and_rule(
        cluster: Cluster, tmp_path: Path, mistyped_export: Path, state: StateStore) -> None:
    """Text where a number is expected (raw and inside a view's arithmetic), an impossible
    date, an object where a code is expected: each rejects its row, like a range error, and
    is counted in the run's counts, the state database's run history and /metrics under
    (column, value class, rule ``type: ...``); the rest of the site's cohort is shared."""
    metrics = ConnectorMetrics()
    outcome = await Runner(connector_config(cluster, tmp_path, mistyped_export), state,
                           metrics).run(DATASET, "pull")
    record = outcome.record
    assert outcome.ok and record.status is RunStatus.SUCCEEDED
    assert (record.counts.patients, record.counts.rows_rejected,
            record.counts.rows_shared) == (24, 3, 21)
    expected = {"/".join(key): n for key, n in MISTYPED_REJECTED.items()}
    assert dict(record.counts.rejected) == expected
    stored = await state.last_run(DATASET)
    assert stored is not None and dict(stored.counts.rejected) == expected
    for (column, value_class, rule), n in MISTYPED_REJECTED.items():
        assert metrics.registry.get_sample_value("dic_connector_rows_rejected_total", {
            "dataset": DATASET, "column": column, "value_class": value_class, "rule": rule,
        }) == n
    assert record.version_id is not None
    versions = await cluster.versions(record.version_id)
    assert [v.row_count for v in versions] == [21] * 3
    shown = generate_latest(metrics.registry).decode() + repr(record)
    assert not any(value in shown for value in MISTYPED_VALUES)


async def test_the_next_run_erases_the_version_it_supersedes(
        cluster: Cluster, tmp_path: Path, export: Path, state: StateStore) -> None:
    runner = Runner(connector_config(cluster, tmp_path, export), state)
    first = (await runner.run(DATASET, "pull")).record
    second = (await runner.run(DATASET, "schedule")).record
    assert first.version_id and second.version_id and first.version_id != second.version_id
    assert await states(cluster, first.version_id) == [VersionState.DELETED] * 3
    assert await states(cluster, second.version_id) == [VersionState.COMMITTED] * 3
    assert await state.pending_erasures() == []
    assert [r.id for r in await state.runs(DATASET)] == [second.id, first.id]


async def test_opted_out_patients_never_reach_a_node(
        cluster: Cluster, tmp_path: Path, export: Path, state: StateStore) -> None:
    patients, clean, keys = expected(export)
    objections = tmp_path / "objections.txt"
    objections.write_text(f"# objections received by the DIC\n{keys[0]}\n{keys[1]}\n"
                          "not-in-this-cohort\n")
    config = connector_config(cluster, tmp_path, export,
                              consent={"opt_out_files": [str(objections)]})
    record = (await Runner(config, state).run(DATASET, "pull")).record
    assert record.status is RunStatus.SUCCEEDED
    assert record.counts.patients == patients
    assert record.counts.patients_excluded == 2
    assert record.counts.rejected["consent/opt_out_file/excluded"] == 2
    # the excluded rows are dropped before validation: at most two fewer rows are shared
    assert clean - 2 <= record.counts.rows_shared <= clean
    assert record.counts.rows_shared + record.counts.rows_rejected == patients - 2


async def test_an_unreadable_opt_out_list_fails_the_run_and_shares_nothing(
        cluster: Cluster, tmp_path: Path, export: Path, state: StateStore) -> None:
    config = connector_config(cluster, tmp_path, export,
                              consent={"opt_out_files": [str(tmp_path / "missing.txt")]})
    before = await state.watermarks(DATASET)
    traffic = Traffic(cluster)
    session = aiohttp.ClientSession(middlewares=(traffic,))
    try:
        runner = Runner(config, state, uploader=lambda: cluster.uploader(session=session))
        outcome = await runner.run(DATASET, "pull")
    finally:
        await session.close()
    assert not outcome.ok and isinstance(outcome.error, SourceError)
    assert exit_code(outcome.error) == EXIT_SOURCE
    assert outcome.record.status is RunStatus.FAILED
    assert outcome.record.version_id is None
    assert outcome.record.error is not None and "missing.txt" in outcome.record.error
    assert traffic.sent == []  # no node was contacted
    assert await state.watermarks(DATASET) == before


async def test_a_mapping_failure_is_recorded_with_its_exit_code(
        cluster: Cluster, tmp_path: Path, state: StateStore) -> None:
    unborn = [dict(r, birthDate="2990-01-01") if r["resourceType"] == "Patient" else r
              for r in pilot_resources("tm")]
    write_bulk(tmp_path / "unborn", unborn)  # every age out of range: no row is valid
    config = connector_config(cluster, tmp_path, tmp_path / "unborn")
    outcome = await Runner(config, state).run(DATASET, "pull")
    assert outcome.record.status is RunStatus.FAILED
    assert exit_code(outcome.error) == EXIT_MAPPING
    assert outcome.record.error is not None and outcome.record.error.startswith("PipelineError")


async def test_an_unconfirmed_erasure_is_owed_and_retried(
        cluster: Cluster, tmp_path: Path, export: Path, state: StateStore) -> None:
    refuse = {"on": False}

    def interfere(node: int, request: aiohttp.ClientRequest) -> None:
        if refuse["on"] and node == 2 and request.url.path.endswith("/supersede"):
            raise aiohttp.ClientConnectionError("node-2 unreachable")

    traffic = Traffic(cluster, interfere)
    session = aiohttp.ClientSession(middlewares=(traffic,))
    metrics = ConnectorMetrics()
    try:
        runner = Runner(connector_config(cluster, tmp_path, export), state, metrics,
                        uploader=lambda: cluster.uploader(session=session))
        first = (await runner.run(DATASET, "pull")).record
        refuse["on"] = True
        second = (await runner.run(DATASET, "pull")).record
        assert second.status is RunStatus.SUCCEEDED  # the new version is committed
        assert first.version_id and second.version_id
        assert await state.pending_erasures() == [(DATASET, second.version_id)]
        assert metrics.registry.get_sample_value("dic_connector_pending_erasures") == 1
        assert await states(cluster, first.version_id) == [
            VersionState.DELETED, VersionState.DELETED, VersionState.COMMITTED]
        assert await runner.retry_pending_erasures() == 1  # still refused
        refuse["on"] = False
        assert await runner.retry_pending_erasures() == 0
    finally:
        await session.close()
    assert await states(cluster, first.version_id) == [VersionState.DELETED] * 3
    assert metrics.registry.get_sample_value("dic_connector_pending_erasures") == 0


async def test_each_version_declares_how_it_differs_from_the_earlier_ones(
        cluster: Cluster, tmp_path: Path, export: Path, state: StateStore) -> None:
    mapping = load_mapping(MAPPING_FILE)
    clean, _, _ = validate_rows(build_cohort(mapping, read_bulk(export)).rows, mapping)
    shared_key = str(clean[3][mapping.patient_key.name])  # a patient whose row is shared
    runner = Runner(connector_config(cluster, tmp_path, export), state)
    first = (await runner.run(DATASET, "pull")).record
    again = (await runner.run(DATASET, "pull")).record  # nothing changed at the source
    objections = tmp_path / "objections.txt"
    objections.write_text(f"{shared_key}\n")
    withdrawn = Runner(connector_config(cluster, tmp_path, export,
                                        consent={"opt_out_files": [str(objections)]}), state)
    third = (await withdrawn.run(DATASET, "pull")).record
    assert third.counts.patients_excluded == 1
    manifests = []
    for record in (first, again, third):
        assert record.version_id is not None
        [version, *_] = await cluster.versions(record.version_id)
        manifests.append(version.manifest["lineage"]["previous"])
    assert manifests[0] == []
    assert manifests[1] == [{"version_id": str(first.version_id), "removed": 0, "added": 0}]
    assert third.counts.rows_shared == again.counts.rows_shared - 1
    assert manifests[2] == [
        {"version_id": str(first.version_id), "removed": 1, "added": 0},
        {"version_id": str(again.version_id), "removed": 1, "added": 0}]
    assert (tmp_path / "lineage.key").stat().st_mode & 0o777 == 0o600
    blob = await state.lineage(DATASET)
    assert blob is not None and len(blob) > 0


async def test_a_lost_lineage_key_declares_nothing_for_the_next_version(
        cluster: Cluster, tmp_path: Path, export: Path, state: StateStore) -> None:
    runner = Runner(connector_config(cluster, tmp_path, export), state)
    await runner.run(DATASET, "pull")
    (tmp_path / "lineage.key").unlink()  # a restore without the key file
    second = (await runner.run(DATASET, "pull")).record
    third = (await runner.run(DATASET, "pull")).record
    assert second.version_id and third.version_id
    [v2, *_] = await cluster.versions(second.version_id)
    [v3, *_] = await cluster.versions(third.version_id)
    assert "lineage" not in v2.manifest  # the nodes will not difference it with the first
    assert v3.manifest["lineage"] == {"previous": [
        {"version_id": str(second.version_id), "removed": 0, "added": 0}]}


async def opened_rows(cluster: Cluster, version_id: uuid.UUID) -> list[tuple[int, ...]]:
    """The version's rows as the three nodes' shares reconstruct them, sorted."""
    [version, *_] = await cluster.versions(version_id)
    columns = []
    for column in (c["name"] for c in version.manifest["columns"]):
        views = []
        for i, store in enumerate(cluster.stores):
            async with store.unit_of_work() as uow:
                views.append(AShare.from_bytes(i, await uow.versions.read_blob(
                    version_id, column), version.row_count))
        columns.append([int(v) for v in to_signed(reconstruct(*views))])
    return sorted(zip(*columns, strict=True))


async def test_a_delta_version_holds_what_a_full_rebuild_holds(
        cluster: Cluster, tmp_path: Path, export: Path, state: StateStore) -> None:
    """``updates: delta``: an addition, an update and a deletion at the source reach the
    nodes as the changed rows only, and the version they compose holds the same rows (so the
    same count and sums) as the full rebuild that follows it."""
    mapping = load_mapping(MAPPING_FILE)
    clean, _, _ = validate_rows(build_cohort(mapping, read_bulk(export)).rows, mapping)
    keys = [str(row[mapping.patient_key.name]) for row in clean]
    optout = tmp_path / "optout.txt"
    optout.write_text(f"{keys[0]}\n")  # not in the first version: "added" in the second
    first = (await Runner(connector_config(cluster, tmp_path, export, updates="delta",
                                           consent={"opt_out_files": [str(optout)]}),
                          state).run(DATASET, "pull")).record
    resources = list(pilot_resources("tm"))
    patient = next(r for r in resources if r["resourceType"] == "Patient"
                   and keys[5].endswith(r["id"]))
    year = int(patient["birthDate"][:4])
    patient["birthDate"] = f"{year - 1}{patient['birthDate'][4:]}"  # an update: a year older
    changed = tmp_path / "changed"
    write_bulk(changed, resources)
    optout.write_text(f"{keys[9]}\n")  # withdrawn: "removed" in the second
    config = connector_config(cluster, tmp_path, changed, updates="delta",
                              consent={"opt_out_files": [str(optout)]})
    second = (await Runner(config, state).run(DATASET, "pull")).record
    assert second.version_id
    delta_rows = await opened_rows(cluster, second.version_id)  # before the next erases it
    full_config = connector_config(cluster, tmp_path, changed, updates="full",
                                   consent={"opt_out_files": [str(optout)]})
    third = (await Runner(full_config, state).run(DATASET, "pull")).record
    assert first.version_id and second.version_id and third.version_id
    [v2, *_] = await cluster.versions(second.version_id)
    assert v2.manifest["delta"]["base"] == str(first.version_id)
    kept = sum(b - a for a, b in v2.manifest["delta"]["keep"])
    assert kept == first.counts.rows_shared - 2  # the updated and the withdrawn patient
    assert second.counts.rows_shared == kept + 2  # the update's new row and the added one
    assert second.counts.bytes_per_node * first.counts.rows_shared == \
        first.counts.bytes_per_node * 2  # shares of 2 rows sent, not of every row
    assert v2.manifest["lineage"]["previous"] == [
        {"version_id": str(first.version_id), "removed": 2, "added": 2}]
    full_rows = await opened_rows(cluster, third.version_id)
    assert delta_rows == full_rows
    assert len(delta_rows) == third.counts.rows_shared  # the same count ...
    assert [sum(c) for c in zip(*delta_rows, strict=True)] == \
        [sum(c) for c in zip(*full_rows, strict=True)]  # ... and the same sums
    [v3, *_] = await cluster.versions(third.version_id)
    assert "delta" not in v3.manifest
    assert v3.manifest["lineage"]["previous"][1] == {
        "version_id": str(second.version_id), "removed": 0, "added": 0}


async def test_a_delta_the_nodes_refuse_is_sent_in_full_by_the_same_run(
        cluster: Cluster, tmp_path: Path, export: Path, state: StateStore) -> None:
    """The base gone from one node (the nodes disagree): that node refuses the delta's begin,
    the run sends the version in full, and the next run builds a delta on that one."""
    runner = Runner(connector_config(cluster, tmp_path, export, updates="delta"), state)
    first = (await runner.run(DATASET, "pull")).record
    assert first.version_id
    async with cluster.stores[2].unit_of_work() as uow:
        await uow.versions.delete(first.version_id)
    second = (await runner.run(DATASET, "pull")).record
    assert second.status is RunStatus.SUCCEEDED and second.version_id
    [v2, *_] = await cluster.versions(second.version_id)
    assert "delta" not in v2.manifest
    assert second.counts.bytes_per_node == first.counts.bytes_per_node  # every row again
    rows = await opened_rows(cluster, second.version_id)
    third = (await runner.run(DATASET, "pull")).record
    assert third.version_id
    [v3, *_] = await cluster.versions(third.version_id)
    assert v3.manifest["delta"] == {"base": str(second.version_id),
                                    "keep": [[0, second.counts.rows_shared]]}
    assert third.counts.bytes_per_node == 0  # nothing changed: nothing sent
    assert await opened_rows(cluster, third.version_id) == rows
