"""Synthetic resources as NDJSON files with a FHIR Bulk Data style manifest.

The layout is what a Bulk Data ``$export`` (https://hl7.org/fhir/uv/bulkdata/) leaves behind:
one ``<ResourceType>.ndjson`` file per type, one resource per line, and a manifest listing
them (``transactionTime``, ``request``, ``requiresAccessToken``, ``output[]`` with ``type``,
``url`` and ``count``, ``error[]``). ``url`` is the file name relative to the manifest, so a
directory can be moved; the NDJSON source resolves it against the manifest's directory.
Resources are streamed: memory does not grow with the number of resources.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

MANIFEST_NAME = "manifest.json"


def ndjson_lines(resources: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """One compact JSON line (with its newline) per resource."""
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    for resource in resources:
        yield dumps(resource) + "\n"


def write_bulk(directory: str | Path, resources: Iterable[Mapping[str, Any]],
               transaction_time: str = "2024-01-01T00:00:00Z",
               request: str = "synthetic://dic-connector/$export") -> dict[str, Any]:
    """Write ``<Type>.ndjson`` files and ``manifest.json`` into ``directory``; the manifest."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    with ExitStack() as stack:
        files: dict[str, IO[str]] = {}
        for resource in resources:
            kind = str(resource["resourceType"])
            handle = files.get(kind)
            if handle is None:
                handle = stack.enter_context((out / f"{kind}.ndjson").open("w", encoding="utf-8"))
                files[kind] = handle
                counts[kind] = 0
            handle.write(dumps(resource) + "\n")
            counts[kind] += 1
    manifest = {
        "transactionTime": transaction_time, "request": request, "requiresAccessToken": False,
        "output": [{"type": kind, "url": f"{kind}.ndjson", "count": n}
                   for kind, n in sorted(counts.items())],
        "error": [],
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def read_bulk(directory: str | Path) -> Iterator[dict[str, Any]]:
    """Resources of a directory written by :func:`write_bulk`, in manifest order."""
    base = Path(directory)
    manifest = json.loads((base / MANIFEST_NAME).read_text(encoding="utf-8"))
    for entry in manifest["output"]:
        with (base / entry["url"]).open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)
