"""The connector pipeline against three real node apps (mutual TLS, SQLite): source ->
mapping -> validation -> encoding -> shares; the shares reconstruct exactly the table
computed in plaintext, rejected rows are counted, and a failure before sharing uploads
nothing. Every test runs twice: NDJSON parsed and mapped in this process, and by worker
processes from the first line on (``PARALLEL_AFTER = 0``)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dic_connector.connector import pipeline
from dic_connector.connector.pipeline import PipelineReport, share_cohort, upload_manifest
from dic_connector.dev.synthetic import pilot_patients, read_bulk, write_bulk
from dic_connector.dev.synthetic.pilot_design import AGES
from dic_connector.encoding import (
    EncodedColumns,
    EncodedTable,
    encode_columns,
    encode_table,
    validate_columns,
    validate_rows,
)
from dic_connector.errors import (
    DataValidationError,
    MappingError,
    PipelineError,
    SourceError,
    UploadError,
)
from dic_connector.mapping import CohortMapping, build_cohort, load_mapping, loads_mapping
from dic_connector.node.store.enums import VersionState
from dic_connector.sources import NdjsonConfig, SqlConfig, SqlSource, make_source
from mpc.ring import to_signed
from mpc.sharing import AShare, reconstruct

from .conftest import MISTYPED_REJECTED, MISTYPED_VALUES, Cluster

MAPPING_FILE = Path(__file__).resolve().parents[3] / "mappings" / "pilot_adrenal.yaml"
DATASET = "pilot_adrenal"
AGE_RULE = "    min: 18\n    max: 110\n"


@pytest.fixture(autouse=True)
def mapped_where(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Map in this process, or (:data:`BOTH_MAPPERS`) in two worker processes from the first
    line on."""
    where = getattr(request, "param", "in-process")
    if where == "workers":
        monkeypatch.setattr(pipeline, "PARALLEL_AFTER", 0)
        monkeypatch.setattr(pipeline, "WORKERS", 2)
    else:
        monkeypatch.setattr(pipeline, "WORKERS", 0)
    return str(where)


#: The tests whose outcome goes through the mapping workers (results, errors coming back,
#: wiping) also run with them; a worker process costs a fresh interpreter, so the others
#: (SQL sources, upload failures, exclusions of everyone) run in this process only.
BOTH_MAPPERS = pytest.mark.parametrize("mapped_where", ["in-process", "workers"],
                                       indirect=True)


@pytest.fixture(scope="module")
def mapping() -> CohortMapping:
    return load_mapping(MAPPING_FILE)


def variant(old: str, new: str) -> CohortMapping:
    """The pilot mapping with one piece of text replaced."""
    text = MAPPING_FILE.read_text()
    assert old in text
    return loads_mapping(text.replace(old, new, 1), "variant.yaml")


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """Munich's synthetic pilot data as a Bulk-export NDJSON directory."""
    from dic_connector.dev.synthetic import pilot_resources

    write_bulk(tmp_path / "tm", pilot_resources("tm"))
    return tmp_path / "tm"


def plaintext(mapping: CohortMapping, export: Path) -> EncodedTable:
    """What the connector must share, computed here in the clear."""
    clean, _, _ = validate_rows(build_cohort(mapping, read_bulk(export)).rows, mapping)
    return encode_table(clean, mapping)


async def run(cluster: Cluster, mapping: CohortMapping, export: Path) -> PipelineReport:
    async with make_source(NdjsonConfig(export)) as source:
        return await share_cohort(source, mapping, cluster.uploader("tm"), DATASET)


async def reconstructed(cluster: Cluster, version_id: uuid.UUID, column: str,
                        rows: int) -> list[int]:
    views = []
    for i, store in enumerate(cluster.stores):
        async with store.unit_of_work() as uow:
            views.append(AShare.from_bytes(i, await uow.versions.read_blob(version_id, column),
                                           rows))
    return [int(v) for v in to_signed(reconstruct(*views))]


async def assert_nothing_uploaded(cluster: Cluster) -> None:
    for store in cluster.stores:
        async with store.unit_of_work() as uow:
            assert await uow.datasets.by_name("tm", DATASET) is None


@dataclass
class Encoded:
    """What the pipeline encoded: the arrays prepared per typed column, and the matrix
    columns handed to the uploader (all plaintext, so all must end up zeroed)."""

    table: EncodedColumns
    prepared: list[np.ndarray]
    handed: list[np.ndarray] = field(default_factory=list)

    def wiped(self) -> bool:
        return self.table.cleared and not any(a.any() for a in self.prepared + self.handed)


def spy_on_encoding(monkeypatch: pytest.MonkeyPatch) -> list[Encoded]:
    """Capture what the pipeline encodes (to check it is wiped)."""
    seen: list[Encoded] = []

    def encode(columns: Any, rows: int, schema: Any) -> EncodedColumns:
        table = encode_columns(columns, rows, schema)
        record = Encoded(table, [a for block in table._blocks  # the prepared plaintext
                                 for a in (block.values, block.present) if a is not None])
        produce = table.matrix_columns

        def matrix_columns() -> Iterator[np.ndarray]:
            for column in produce():
                record.handed.append(column)
                yield column

        monkeypatch.setattr(table, "matrix_columns", matrix_columns)
        seen.append(record)
        return table

    monkeypatch.setattr(pipeline, "encode_columns", encode)
    return seen


@BOTH_MAPPERS
async def test_shares_reconstruct_the_plaintext_encoding(
        cluster: Cluster, mapping: CohortMapping, export: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    expected = plaintext(mapping, export)
    resources = sum(1 for _ in read_bulk(export))
    seen = spy_on_encoding(monkeypatch)
    report = await run(cluster, mapping, export)

    assert (report.site, report.dataset, report.mapping) == ("tm", DATASET, "pilot_adrenal")
    assert (report.resources_read, report.patients, report.rows_rejected) == (resources, 24, 0)
    assert (report.rows_shared, report.columns) == (24, len(expected.columns))
    assert report.orphan_rows == 0 and report.rejected == {}
    assert report.missing_kept == {"local_control": 1}  # one Munich patient "n/a"
    versions = await cluster.versions(report.version_id)
    assert [v.state for v in versions] == [VersionState.COMMITTED] * 3
    assert all(v.row_count == 24 for v in versions)
    assert all(v.manifest == upload_manifest(expected, mapping) for v in versions)
    for j, name in enumerate(expected.names):
        assert await reconstructed(cluster, report.version_id, name, 24) == \
            expected.values[:, j].tolist(), name
    assert len(seen) == 1 and seen[0].wiped()  # the plaintext was wiped
    assert len(seen[0].handed) == len(expected.columns)  # produced one at a time


def test_manifest_carries_declared_ranges_as_whole_numbers(mapping: CohortMapping,
                                                           export: Path) -> None:
    manifest = {c["name"]: c for c in upload_manifest(plaintext(mapping, export),
                                                      mapping)["columns"]}
    assert (manifest["age"]["minimum"], manifest["age"]["maximum"]) == (18, 110)
    assert (manifest["follow_up"]["minimum"], manifest["follow_up"]["maximum"]) == (0, 600)
    assert all(isinstance(manifest["bed10"][k], int) for k in ("minimum", "maximum"))
    assert "minimum" not in manifest["gender"] and "maximum" not in manifest["gender=male"]
    widened = variant("    unit: Gy\n    scale: 2\n    min: 0\n    max: 30\n",
                      "    unit: Gy\n    scale: 2\n    min: 0.5\n    max: 29.5\n")
    table = plaintext(widened, export)
    entry = next(c for c in upload_manifest(table, widened)["columns"]
                 if c["name"] == "dose_per_fraction")
    assert (entry["minimum"], entry["maximum"]) == (0, 30)


async def test_rejected_rows_are_counted_and_the_rest_shared(cluster: Cluster,
                                                             export: Path) -> None:
    strict = variant(AGE_RULE, "    min: 18\n    max: 60\n")
    expected = plaintext(strict, export)
    report = await run(cluster, strict, export)
    over = sum(1 for age in AGES["tm"] if age > 60)
    assert (report.patients, report.rows_rejected, report.rows_shared) == (24, over, 24 - over)
    assert report.rejected == {("age", "above maximum", "max 60"): over}
    assert f"age: above maximum (max 60) x{over}" in report.summary()
    versions = await cluster.versions(report.version_id)
    assert [v.row_count for v in versions] == [24 - over] * 3
    ages = await reconstructed(cluster, report.version_id, "age", 24 - over)
    assert ages == expected.column("age").tolist() and max(ages) <= 60


@pytest.mark.parametrize(("old", "new", "error"), [
    # a fail_dataset rule broken by some rows: the whole run stops
    (AGE_RULE, "    min: 18\n    max: 60\n    on_invalid: fail_dataset\n",
     DataValidationError),
    # every row rejected: there is nothing to share
    (AGE_RULE, "    min: 18\n    max: 20\n", PipelineError),
    # a where that is not a single boolean on the data (several values where a column
    # holds one spoil that cell only, see test_view_types)
    ("      resource: Patient\n      select:",
     "      resource: Patient\n      where:\n"
     "        - path: \"(gender = 'female') | (gender = 'male')\"\n      select:",
     MappingError),
])
@BOTH_MAPPERS
async def test_mapping_or_validation_failure_uploads_nothing(
        cluster: Cluster, export: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str,
        error: type[Exception]) -> None:
    seen = spy_on_encoding(monkeypatch)
    with pytest.raises(error) as raised:
        await run(cluster, variant(old, new), export)
    for age in set(AGES["tm"]):  # errors name rows and columns, never values
        assert f" {age} " not in f" {raised.value} "
    await assert_nothing_uploaded(cluster)
    assert all(encoded.wiped() for encoded in seen)


@BOTH_MAPPERS
async def test_values_of_the_wrong_type_are_handled_by_the_column_policy(
        cluster: Cluster, mapping: CohortMapping, mistyped_export: Path,
        monkeypatch: pytest.MonkeyPatch, mapped_where: str) -> None:
    """Text where a number is expected (also inside a view's arithmetic), an impossible
    date, an object where a code is expected: under ``reject_row`` each rejects its row and
    is counted per column and rule ``type: ...`` while the rest is shared (also when worker
    processes map, the cells coming back pickled); under ``fail_dataset`` the run fails
    naming row, column and what was expected, never the value, and uploads nothing."""
    report = await run(cluster, mapping, mistyped_export)
    assert report.rejected == MISTYPED_REJECTED
    assert (report.patients, report.rows_rejected, report.rows_shared) == (24, 3, 21)
    expected = plaintext(mapping, mistyped_export)
    assert await reconstructed(cluster, report.version_id, "bed10", 21) == \
        expected.column("bed10").tolist()
    assert not any(value in report.summary() for value in MISTYPED_VALUES)
    if mapped_where == "workers":
        return  # the policy is applied in this process either way

    strict = variant("    unit: Gy\n    scale: 1\n    min: 0\n    max: 100\n",
                     "    unit: Gy\n    scale: 1\n    min: 0\n    max: 100\n"
                     "    on_invalid: fail_dataset\n")
    seen = spy_on_encoding(monkeypatch)
    with pytest.raises(DataValidationError) as raised:
        await run(cluster, strict, mistyped_export)
    assert str(raised.value) == ("row 0, column 'total_dose': not a number (type: number); "
                                 "policy on_invalid: fail_dataset")
    assert seen == []  # refused before anything was encoded
    for store in cluster.stores:  # only the first run's version exists
        async with store.unit_of_work() as uow:
            dataset = await uow.datasets.by_name("tm", DATASET)
            assert dataset is not None
            latest = await uow.versions.latest_committed(dataset.id)
            assert latest is not None and latest.id == report.version_id


@BOTH_MAPPERS
async def test_broken_export_uploads_nothing(cluster: Cluster, mapping: CohortMapping,
                                             export: Path) -> None:
    with (export / "Patient.ndjson").open("a") as handle:
        handle.write('{"resourceType": "Patient", "id": "extra"}\n')  # not in the manifest
    with pytest.raises(SourceError, match="manifest announces 24 resources"):
        await run(cluster, mapping, export)
    await assert_nothing_uploaded(cluster)


async def test_failed_upload_still_wipes_the_matrix(
        cluster: Cluster, mapping: CohortMapping, export: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = spy_on_encoding(monkeypatch)
    await cluster.stop(1)
    with pytest.raises(UploadError, match="node-1"):
        await run(cluster, mapping, export)
    assert len(seen) == 1 and seen[0].wiped()
    for i in (0, 2):
        async with cluster.stores[i].unit_of_work() as uow:
            dataset = await uow.datasets.by_name("tm", DATASET)
            assert dataset is None or await uow.versions.latest_committed(dataset.id) is None
    await cluster.start(1)


async def test_sql_source_through_a_query_mapping(cluster: Cluster, tmp_path: Path) -> None:
    """The same pipeline over a clinical database: rows of a SQL query, not resources."""
    database = tmp_path / "clinic.db"
    patients = [p for p in pilot_patients() if p.site == "tm"]
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE cohort (pid TEXT, site TEXT, age INTEGER, sex TEXT, "
                     "bed10 REAL)")
        conn.executemany("INSERT INTO cohort VALUES (?, ?, ?, ?, ?)",
                         [(f"p{p.index}", p.site, p.age, p.gender, p.bed10) for p in patients])
    mapping = loads_mapping("""\
format: dic-cohort/1
name: pilot_sql
query:
  sql: "SELECT pid, age, sex, bed10 FROM cohort WHERE site = :site ORDER BY pid"
  key: pid
  parameters: {site: tm}
columns:
  - {name: patient_key, kind: patient_key, source: pid}
  - {name: age, kind: numeric, source: age, unit: a, min: 18, max: 110}
  - {name: gender, kind: categorical, source: sex, levels: [male, female]}
  - {name: bed10, kind: numeric, source: bed10, unit: Gy, scale: 1, min: 0, max: 300}
""", "sql.yaml")
    assert mapping.query is not None
    config = SqlConfig(f"sqlite+aiosqlite:///{database}", mapping.query.sql,
                       mapping.query.parameters)
    async with SqlSource(config) as source:
        report = await share_cohort(source, mapping, cluster.uploader("tm"), "pilot_sql")
    assert (report.resources_read, report.patients, report.rows_shared) == (24, 24, 24)
    ordered = sorted(patients, key=lambda p: f"p{p.index}")
    assert await reconstructed(cluster, report.version_id, "age", 24) == [
        p.age for p in ordered]
    assert await reconstructed(cluster, report.version_id, "gender=male", 24) == [
        int(p.gender == "male") for p in ordered]
    bed = await reconstructed(cluster, report.version_id, "bed10", 24)
    assert np.allclose(np.array(bed) / 10, [p.bed10 for p in ordered], atol=0.05)


@BOTH_MAPPERS
async def test_excluded_patients_never_reach_validation_or_the_nodes(
        cluster: Cluster, mapping: CohortMapping, export: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    everyone = build_cohort(mapping, read_bulk(export)).rows
    keys = [row["patient_key"] for row in everyone]
    withdrawn = set(keys[::5])
    validated: list[int] = []

    def validate(columns: Any, rows: int, schema: Any) -> Any:
        assert not set(columns["patient_key"]) & withdrawn
        assert all(len(values) == rows for values in columns.values())
        validated.append(rows)
        return validate_columns(columns, rows, schema)

    monkeypatch.setattr(pipeline, "validate_columns", validate)
    async with make_source(NdjsonConfig(export)) as source:
        report = await share_cohort(source, mapping, cluster.uploader("tm"), DATASET,
                                    excluded=withdrawn)
    kept = [row for row in everyone if row["patient_key"] not in withdrawn]
    assert (report.patients, report.patients_excluded) == (24, len(withdrawn))
    assert report.rows_shared == 24 - len(withdrawn) - report.rows_rejected
    assert validated == [len(kept)] and f"{len(withdrawn)} excluded" in report.summary()
    clean, _, _ = validate_rows(kept, mapping)
    expected = encode_table(clean, mapping)
    assert await reconstructed(cluster, report.version_id, "age", report.rows_shared) == \
        expected.column("age").tolist()


async def test_excluding_everyone_uploads_nothing(cluster: Cluster, mapping: CohortMapping,
                                                  export: Path) -> None:
    keys = [row["patient_key"] for row in build_cohort(mapping, read_bulk(export)).rows]
    async with make_source(NdjsonConfig(export)) as source:
        with pytest.raises(PipelineError, match="24 excluded"):
            await share_cohort(source, mapping, cluster.uploader("tm"), DATASET,
                               excluded=keys)
    await assert_nothing_uploaded(cluster)


@pytest.mark.parametrize(("chunk_size", "mapped_where"), [
    (1, "in-process"), (10, "in-process"), (5000, "in-process"), (1, "workers")],
    indirect=["mapped_where"])
async def test_stages_are_announced_timed_and_bytes_counted(
        cluster: Cluster, mapping: CohortMapping, export: Path, chunk_size: int,
        mapped_where: str) -> None:
    stages: list[str] = []
    async with make_source(NdjsonConfig(export)) as source:
        report = await share_cohort(source, mapping, cluster.uploader("tm"), DATASET,
                                    on_stage=stages.append, chunk_size=chunk_size)
    assert stages == list(pipeline.STAGES) == ["pull", "map", "validate", "encode", "upload"]
    assert set(report.stage_seconds) == set(stages)
    assert all(seconds >= 0 for seconds in report.stage_seconds.values())
    assert sum(report.stage_seconds.values()) <= report.seconds
    assert report.bytes_per_node == 16 * report.rows_shared * report.columns
    expected = plaintext(mapping, export)  # streamed in any chunk size: the batch result
    assert report.rows_shared == expected.values.shape[0] == 24
    for name in ("age", "follow_up", "gender=male"):
        assert await reconstructed(cluster, report.version_id, name, 24) == \
            expected.column(name).tolist(), name
    for store in cluster.stores:  # what the nodes hold is what bytes_per_node counts
        async with store.unit_of_work() as uow:
            sizes = [len(await uow.versions.read_blob(report.version_id, name))
                     for name in expected.names]
        assert sum(sizes) == report.bytes_per_node


async def test_sql_rows_excluded_by_their_key(cluster: Cluster, tmp_path: Path) -> None:
    database = tmp_path / "clinic.db"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE cohort (pid TEXT, age INTEGER)")
        conn.executemany("INSERT INTO cohort VALUES (?, ?)",
                         [(f"p{i}", 40 + i) for i in range(6)])
    mapping = loads_mapping("""\
format: dic-cohort/1
name: ages
query:
  sql: "SELECT pid, age FROM cohort ORDER BY pid"
  key: pid
columns:
  - {name: patient_key, kind: patient_key, source: pid}
  - {name: age, kind: numeric, source: age, unit: a, min: 18, max: 110}
""", "ages.yaml")
    assert mapping.query is not None
    config = SqlConfig(f"sqlite+aiosqlite:///{database}", mapping.query.sql)
    async with SqlSource(config) as source:
        report = await share_cohort(source, mapping, cluster.uploader("tm"), "ages",
                                    excluded=["p1", "p4", "nobody"], chunk_size=2)
    assert (report.resources_read, report.patients, report.patients_excluded,
            report.rows_shared) == (6, 6, 2, 4)
    assert await reconstructed(cluster, report.version_id, "age", 4) == [40, 42, 43, 45]
