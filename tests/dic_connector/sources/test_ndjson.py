"""NDJSON directory source: manifests, plain and gzip files, counts, bad lines."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dic_connector.errors import SourceError
from dic_connector.sources.ndjson import LineSplitter, NdjsonConfig, NdjsonDirectorySource


def write_export(directory: Path, files: dict[str, list[dict[str, Any]]], *,
                 gz: tuple[str, ...] = (), counts: bool = True) -> None:
    output = []
    for rtype, resources in files.items():
        data = "".join(json.dumps(r) + "\n" for r in resources).encode()
        name = f"{rtype}.ndjson"
        if rtype in gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
        entry: dict[str, Any] = {"type": rtype, "url": f"https://fhir.example/files/{name}"}
        if counts:
            entry["count"] = len(resources)
        output.append(entry)
    (directory / "manifest.json").write_text(json.dumps({
        "transactionTime": "2026-01-01T00:00:00.000Z", "requiresAccessToken": True,
        "output": output, "error": []}))


def patients(n: int) -> list[dict[str, Any]]:
    return [{"resourceType": "Patient", "id": f"p{i}", "gender": "female"} for i in range(n)]


def observations(n: int) -> list[dict[str, Any]]:
    return [{"resourceType": "Observation", "id": f"o{i}", "status": "final",
             "code": {"text": "x" * 5000}} for i in range(n)]


async def collect(config: NdjsonConfig) -> tuple[list[dict[str, Any]], NdjsonDirectorySource]:
    async with NdjsonDirectorySource(config) as source:
        return [r async for r in source.stream()], source


async def test_plain_and_gzip_files_with_manifest(tmp_path: Path) -> None:
    write_export(tmp_path, {"Patient": patients(700), "Observation": observations(400)},
                 gz=("Observation",))
    resources, source = await collect(NdjsonConfig(tmp_path, validate=True))
    assert [r["id"] for r in resources] == [f"p{i}" for i in range(700)] + \
        [f"o{i}" for i in range(400)]
    assert source.transaction_time == "2026-01-01T00:00:00.000Z"
    assert source.progress.units == 2 and source.progress.count("Observation") == 400
    only, _ = await collect(NdjsonConfig(tmp_path, types=("Observation",)))
    assert len(only) == 400


async def test_without_manifest(tmp_path: Path) -> None:
    write_export(tmp_path, {"Patient": patients(3)})
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(SourceError, match=r"no manifest\.json"):
        await collect(NdjsonConfig(tmp_path))
    resources, _ = await collect(NdjsonConfig(tmp_path, require_manifest=False))
    assert len(resources) == 3


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: (d / "Patient.ndjson").write_text('{"resourceType":"Patient","id":"a"}\n{bad\n'),
     r"Patient\.ndjson: line 2 is not valid JSON"),
    (lambda d: (d / "Patient.ndjson").write_text('{"resourceType":"Patient","id":"a"}\n'),
     r"manifest announces 5 resources, the file holds 1"),
    (lambda d: (d / "Patient.ndjson").write_text('{"resourceType":"Condition","id":"a"}\n'),
     r"line 1 is a Condition, the manifest says Patient"),
    (lambda d: (d / "Patient.ndjson").unlink(), r"file Patient\.ndjson is missing"),
    (lambda d: (d / "Patient.ndjson").write_text('{"resourceType":"Patient","gender":7}\n' * 5),
     r"Patient/\? \(from Patient\.ndjson line 1\) fails R4B validation: element Patient\.gender"),
])
async def test_damaged_exports_are_reported(tmp_path: Path, damage: Any, message: str) -> None:
    write_export(tmp_path, {"Patient": patients(5)})
    damage(tmp_path)
    with pytest.raises(SourceError, match=message):
        await collect(NdjsonConfig(tmp_path, validate=True))


async def test_truncated_gzip_is_reported(tmp_path: Path) -> None:
    write_export(tmp_path, {"Observation": observations(50)}, gz=("Observation",))
    path = tmp_path / "Observation.ndjson.gz"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(SourceError, match="truncated file"):
        await collect(NdjsonConfig(tmp_path))


@given(st.lists(st.binary(min_size=1, max_size=30).filter(
    lambda b: b"\n" not in b and b.strip() != b""), max_size=20), st.data())
def test_line_splitter_any_chunking(lines: list[bytes], data: st.DataObject) -> None:
    blob = b"\n".join(lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=8)))
    splitter, out, start = LineSplitter(), [], 0
    for cut in [*cuts, len(blob)]:
        out += list(splitter.feed(blob[start:cut]))
        start = cut
    out += list(splitter.finish())
    assert out == lines


def test_decimals_keep_their_written_precision() -> None:
    from decimal import Decimal

    from dic_connector.sources.ndjson import parse_line

    line = b'{"resourceType": "Observation", "valueQuantity": {"value": 1.50}, "n": 2}'
    resource = parse_line(line, "obs.ndjson", 1)
    value = resource["valueQuantity"]["value"]
    assert isinstance(value, Decimal) and str(value) == "1.50"
    assert resource["n"] == 2 and isinstance(resource["n"], int)


@pytest.mark.parametrize("line", [
    b'{"resourceType":"Patient","a":1.50}', b'  {"resourceType":"Patient"} \r',
    b'\xef\xbb\xbf{"resourceType":"Patient"}', b'{"resourceType":"Patient"} x', b'', b' ',
    b'{', b'\xff{}', b'\x0c{"resourceType":"Patient"}', b'{"resourceType":"Patient"}{}',
    b'{"resourceType":"Patient","x":NaN}', b'[1]', b'"Patient"', b'{"resourceType":7}',
    '{"resourceType":"Patient","name":"Jos\u00e9"}'.encode(),
])
def test_lines_parse_exactly_as_json_loads_parses_them(line: bytes) -> None:
    from decimal import Decimal

    from dic_connector.sources.ndjson import parse_line

    try:
        parsed = json.loads(line, parse_float=Decimal)
        resource = isinstance(parsed, dict) and isinstance(parsed.get("resourceType"), str)
        expected: Any = ("ok", parsed) if resource else ("error", "not a FHIR resource")
    except ValueError:
        expected = ("error", "not valid JSON")
    try:
        got: Any = ("ok", parse_line(line, "x.ndjson", 3))
    except SourceError as exc:
        assert str(exc).startswith("x.ndjson: line 3 is ")
        got = ("error", str(exc).removeprefix("x.ndjson: line 3 is "))
    assert repr(got) == repr(expected)  # repr: NaN != NaN
