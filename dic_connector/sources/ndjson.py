"""NDJSON streaming: line splitting for Bulk downloads, and a directory of exported files.

Bulk Data exports (https://hl7.org/fhir/uv/bulkdata/export.html) are newline-delimited JSON:
one resource per line, one file (or several) per resource type, described by a *manifest*
(``transactionTime``, ``output[] = {type, url, count}``). :class:`NdjsonDirectorySource` reads
such an export from disk — files saved from a server, or handed over by a hospital's
integration engine — plain or gzip-compressed, in chunks, so memory stays bounded by the
longest line and not the file size. :class:`LineSplitter` is the shared incremental splitter
also used by ``fhir_bulk`` for downloads.

Both sources also deliver their lines *unparsed*, as :class:`LineBatch` es
(:meth:`~dic_connector.sources.base.Source.line_batches`): the lines of one read block with
everything needed to parse and check them elsewhere (:func:`iter_batch`, e.g. in a worker
process of the pipeline), with exactly the errors :meth:`Source.stream` raises for them.
"""

from __future__ import annotations

import asyncio
import decimal
import json
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from dic_connector.errors import SourceError
from dic_connector.sources.base import Item, LineBatch, ProgressCallback, Source
from dic_connector.sources.validation import validate_resource

CHUNK_BYTES = 1 << 20


class LineSplitter:
    """Feed bytes in arbitrary chunks; get back complete lines (without the newline)."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        data = self._rest + chunk
        *lines, self._rest = data.split(b"\n")
        for line in lines:
            if line.strip():
                yield line

    def finish(self) -> Iterator[bytes]:
        """The last line, if the data did not end with a newline."""
        rest, self._rest = self._rest, b""
        if rest.strip():
            yield rest


#: FHIR decimals keep their written precision (significant in FHIR; lowBoundary()). One
#: decoder for every line: ``json.loads(line, parse_float=...)`` builds a new decoder, and
#: detects the encoding, per call, a third of the parsing time of a small resource.
_DECODER = json.JSONDecoder(parse_float=decimal.Decimal)
#: the UTF-8 byte order mark
_BOM = b"\xef\xbb\xbf"
#: JSON's whitespace (RFC 8259), allowed around the value
_JSON_SPACE = " \t\n\r"


def parse_line(line: bytes, origin: str, number: int) -> dict[str, Any]:
    """One NDJSON line as a resource; the error names file and line number, not content.

    Accepts exactly what ``json.loads(line, parse_float=Decimal)`` accepts of UTF-8 text
    (NDJSON is UTF-8; a leading byte order mark is skipped, as ``json.loads`` skips it in
    bytes).
    """
    try:
        if line.startswith(_BOM):  # as "utf-8-sig" does, without its Python-level codec
            line = line[len(_BOM):]
        text = line.decode().strip(_JSON_SPACE)
        resource, end = _DECODER.raw_decode(text)
        if end != len(text):
            raise ValueError("extra data")
    except ValueError:
        raise SourceError(f"{origin}: line {number} is not valid JSON") from None
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise SourceError(f"{origin}: line {number} is not a FHIR resource")
    return resource


def iter_batch(batch: LineBatch) -> Iterator[dict[str, Any]]:
    """The resources of ``batch``, parsed and checked line by line, in order."""
    origin, expected, wanted = batch.origin, batch.expected_type, batch.wanted
    validate, label = batch.validate, batch.validate_label
    for n, line in enumerate(batch.lines, batch.first):
        resource = parse_line(line, origin, n)
        rtype = resource["resourceType"]
        if expected is not None and rtype != expected:
            raise SourceError(f"{origin}: line {n} is a {rtype}, "
                              f"the manifest says {expected}")
        if wanted and rtype not in wanted:
            continue
        if validate:
            validate_resource(resource, f"{origin} line {n}" if label is None else label)
        yield resource


@dataclass(frozen=True)
class NdjsonConfig:
    """A directory holding a Bulk export: ``manifest.json`` and ``*.ndjson[.gz]`` files."""

    directory: Path
    manifest_name: str = "manifest.json"
    #: read ``*.ndjson`` / ``*.ndjson.gz`` in name order when there is no manifest
    require_manifest: bool = True
    #: only these resource types (all when empty)
    types: tuple[str, ...] = ()
    validate: bool = False


@dataclass(frozen=True)
class _File:
    path: Path
    type: str | None
    count: int | None


class NdjsonDirectorySource(Source):
    """Streams the resources of an exported NDJSON directory, file by file."""

    kind: ClassVar[str] = "ndjson"
    delivers_lines: ClassVar[bool] = True

    def __init__(self, config: NdjsonConfig, *, on_progress: ProgressCallback | None = None
                 ) -> None:
        super().__init__(on_progress)
        self.config = config
        #: the manifest's ``transactionTime``: the ``_since`` of the next export
        self.transaction_time: str | None = None

    def _files(self) -> list[_File]:
        directory = self.config.directory
        manifest = directory / self.config.manifest_name
        if not manifest.is_file():
            if self.config.require_manifest:
                raise SourceError(f"NDJSON directory {directory}: no {self.config.manifest_name}")
            paths = sorted([*directory.glob("*.ndjson"), *directory.glob("*.ndjson.gz")])
            return [_File(p, None, None) for p in paths]
        try:
            doc = json.loads(manifest.read_bytes())
        except ValueError:
            raise SourceError(f"{manifest}: manifest is not valid JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("output"), list):
            raise SourceError(f"{manifest}: manifest has no output list")
        self.transaction_time = doc.get("transactionTime")
        files = []
        for i, entry in enumerate(doc["output"]):
            url = entry.get("url") if isinstance(entry, dict) else None
            if not isinstance(url, str):
                raise SourceError(f"{manifest}: output[{i}] has no url")
            name = url.rstrip("/").rsplit("/", 1)[-1]
            candidates = [directory / name, directory / f"{name}.gz"]
            path = next((p for p in candidates if p.is_file()), None)
            if path is None or path.resolve().parent != directory.resolve():
                raise SourceError(f"{manifest}: output[{i}] file {name} is missing")
            count = entry.get("count")
            files.append(_File(path, entry.get("type"), count if isinstance(count, int) else None))
        return files

    async def stream(self) -> AsyncIterator[Item]:
        async for batch in self.line_batches():
            for resource in iter_batch(batch):
                self._tracker.item(resource["resourceType"])
                yield resource

    async def line_batches(self) -> AsyncIterator[LineBatch]:
        wanted = frozenset(self.config.types)
        for file in self._files():
            if wanted and file.type is not None and file.type not in wanted:
                continue
            n = 0
            async for lines in _read_lines(file.path):
                yield LineBatch(file.path.name, n + 1, lines, file.type, wanted,
                                self.config.validate)
                n += len(lines)
            if file.count is not None and n != file.count:
                raise SourceError(f"{file.path.name}: manifest announces {file.count} resources, "
                                  f"the file holds {n}")
            self._tracker.update(units=1, nbytes=file.path.stat().st_size)


async def _read_lines(path: Path) -> AsyncIterator[list[bytes]]:
    """Lines of a plain or gzip file, read in chunks off the event loop: the complete lines
    of each chunk as one list (one step of this generator per chunk, not per line)."""
    gz = zlib.decompressobj(wbits=47) if path.suffix == ".gz" else None  # 47: gzip or zlib
    splitter = LineSplitter()
    handle: BinaryIO = await asyncio.to_thread(path.open, "rb")
    try:
        while True:
            raw = await asyncio.to_thread(handle.read, CHUNK_BYTES)
            if not raw:
                break
            chunk = raw
            if gz is not None:
                try:
                    chunk = gz.decompress(raw)
                    while gz.unused_data:  # concatenated gzip members
                        rest, gz = gz.unused_data, zlib.decompressobj(wbits=47)
                        chunk += gz.decompress(rest)
                except zlib.error:
                    raise SourceError(f"{path.name}: corrupt gzip data") from None
            lines = list(splitter.feed(chunk))
            if lines:
                yield lines
        if gz is not None and not gz.eof:
            raise SourceError(f"{path.name}: gzip stream ends early (truncated file)")
        last = list(splitter.finish())
        if last:
            yield last
    finally:
        await asyncio.to_thread(handle.close)
