"""NDJSON parsed and mapped by worker processes: the same table as in this process, the
same errors, and no worker left running after success, failure or cancellation."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from dic_connector.connector import parallel
from dic_connector.connector.pipeline import StageClock, pull_and_map
from dic_connector.dev.synthetic import phame_resources, write_bulk
from dic_connector.errors import MappingError, SourceError
from dic_connector.mapping import CohortMapping, load_mapping, loads_mapping
from dic_connector.mapping.assemble import AssembledTable
from dic_connector.sources import NdjsonConfig, NdjsonDirectorySource
from dic_connector.sources.base import LineBatch

MAPPING_FILE = Path(__file__).resolve().parents[3] / "mappings" / "phame.yaml"
PATIENTS = 3000


@pytest.fixture(scope="module")
def mapping() -> CohortMapping:
    return load_mapping(MAPPING_FILE)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PHAME-like export of a few thousand patients (several read blocks per file)."""
    directory = tmp_path_factory.mktemp("phame")
    write_bulk(directory, phame_resources(PATIENTS, site="s1"))
    return directory


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> list[BaseProcess]:
    """Every worker process started while the test runs (to check they all ended)."""
    seen: list[BaseProcess] = []
    submit = parallel.MapPool.submit

    def spy(pool: parallel.MapPool, batch: LineBatch) -> asyncio.Future[Any]:
        future = submit(pool, batch)
        seen.extend(p for p in multiprocessing.active_children() if p not in seen)
        return future

    monkeypatch.setattr(parallel.MapPool, "submit", spy)
    return seen


def assert_all_ended(workers: list[BaseProcess]) -> None:
    assert workers, "no worker process was started"
    assert not [(p, p.is_alive()) for p in workers if p.is_alive()], workers
    assert not multiprocessing.active_children()


async def mapped(source: NdjsonDirectorySource, mapping: CohortMapping, workers: int,
                 parallel_after: int = 0, chunk_size: int = 500) -> AssembledTable:
    async with source:
        return await pull_and_map(source, mapping, StageClock(None), chunk_size,
                                  workers=workers, parallel_after=parallel_after)


def same_table(a: AssembledTable, b: AssembledTable) -> None:
    assert (a.count, a.orphan_rows, a.resources) == (b.count, b.orphan_rows, b.resources)
    assert list(a.columns) == list(b.columns)
    for name in a.columns:
        assert a.columns[name] == b.columns[name], name
        assert [type(v) for v in a.columns[name]] == [type(v) for v in b.columns[name]], name


@pytest.mark.parametrize(("workers_n", "parallel_after"), [(1, 0), (2, 0), (2, 4000)])
async def test_workers_give_the_in_process_table(
        mapping: CohortMapping, export: Path, workers: list[BaseProcess], workers_n: int,
        parallel_after: int) -> None:
    local_source = NdjsonDirectorySource(NdjsonConfig(export))
    expected = await mapped(local_source, mapping, workers=0)
    source = NdjsonDirectorySource(NdjsonConfig(export))
    table = await mapped(source, mapping, workers_n, parallel_after)
    assert expected.count == PATIENTS
    same_table(table, expected)
    assert source.progress.by_type == local_source.progress.by_type
    assert source.progress.items == local_source.progress.items == expected.resources
    assert_all_ended(workers)
    assert len(workers) <= workers_n


async def test_a_mapping_error_in_a_worker_is_the_same_error(
        export: Path, workers: list[BaseProcess]) -> None:
    text = MAPPING_FILE.read_text()
    old = "      resource: Patient\n      select:"
    assert old in text
    where = "        - path: \"(gender = 'female') | (gender = 'male')\"\n"  # never one boolean
    broken = loads_mapping(text.replace(old, f"      resource: Patient\n      where:\n{where}"
                                             "      select:"), "broken.yaml")
    with pytest.raises(MappingError) as local:
        await mapped(NdjsonDirectorySource(NdjsonConfig(export)), broken, workers=0)
    with pytest.raises(MappingError) as remote:
        await mapped(NdjsonDirectorySource(NdjsonConfig(export)), broken, workers=2)
    assert type(remote.value) is type(local.value)
    assert remote.value.args == local.value.args and str(remote.value) == str(local.value)
    assert vars(remote.value) == vars(local.value)
    assert remote.value.__cause__ is None  # no worker traceback attached
    assert_all_ended(workers)


@pytest.mark.parametrize("damage", ["bad json", "count"])
async def test_a_source_error_is_the_same_error(
        mapping: CohortMapping, export: Path, tmp_path: Path, workers: list[BaseProcess],
        damage: str) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in export.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    lines = (broken / "Patient.ndjson").read_bytes().splitlines(keepends=True)
    if damage == "bad json":  # a line in the middle (and the count is off: that comes later)
        lines[len(lines) // 2] = b'{"resourceType": "Patient", "id": \n'
    lines.append(b'{"resourceType": "Patient", "id": "extra"}\n')
    (broken / "Patient.ndjson").write_bytes(b"".join(lines))
    with pytest.raises(SourceError) as local:
        await mapped(NdjsonDirectorySource(NdjsonConfig(broken)), mapping, workers=0)
    with pytest.raises(SourceError) as remote:
        await mapped(NdjsonDirectorySource(NdjsonConfig(broken)), mapping, workers=2)
    assert type(remote.value) is type(local.value) and str(remote.value) == str(local.value)
    assert "Patient.ndjson" in str(remote.value)
    assert ("not valid JSON" if damage == "bad json" else "manifest announces") in str(
        remote.value)
    assert_all_ended(workers)


class StallingSource(NdjsonDirectorySource):
    """Delivers some batches, then waits forever (until cancelled)."""

    def __init__(self, config: NdjsonConfig, batches: int) -> None:
        super().__init__(config)
        self.batches = batches
        self.stalled = asyncio.Event()

    async def line_batches(self) -> AsyncIterator[LineBatch]:
        n = 0
        async for batch in super().line_batches():
            yield batch
            n += 1
            if n == self.batches:
                self.stalled.set()
                await asyncio.Event().wait()


async def test_cancellation_terminates_the_workers(
        mapping: CohortMapping, export: Path, workers: list[BaseProcess]) -> None:
    source = StallingSource(NdjsonConfig(export), batches=3)
    task = asyncio.ensure_future(mapped(source, mapping, workers=2))
    await asyncio.wait_for(source.stalled.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_all_ended(workers)


async def test_sql_or_rest_sources_stay_in_process(mapping: CohortMapping,
                                                   export: Path) -> None:
    class Streamed(NdjsonDirectorySource):
        delivers_lines = False  # as a REST or SQL source

    table = await mapped(Streamed(NdjsonConfig(export)), mapping, workers=2)
    assert table.count == PATIENTS
    assert not multiprocessing.active_children()


def test_only_dic_errors_are_carried_as_failures() -> None:
    failure = (SourceError, ("x.ndjson: line 3 is not valid JSON",), {})
    with pytest.raises(SourceError, match="line 3") as raised:
        parallel.result(failure)
    assert raised.value.__cause__ is None
    rows: dict[str, list[tuple[Any, ...]]] = {"patient": [("p1",)]}
    assert parallel.result((rows, {"Patient": 1})) == (rows, {"Patient": 1})
