"""End-to-end throughput of the connector: an NDJSON export to committed shares on 3 nodes.

A PHAME-like site (``dic_connector.dev.synthetic.phame``, written as Bulk-export NDJSON by a
child process, not timed) is run through ``share_cohort`` with ``mappings/phame.yaml``
(streamed in ``--chunk-size`` resources) in this process, to three real node processes
(``dic node serve``, SQLite, mutual TLS on 127.0.0.1, ``dic_connector.dev.deployment``).
Reported: patients/s end to end and per stage (``PipelineReport.stage_seconds``: pull =
reading and parsing NDJSON, map = views over every chunk + join, validate, encode, upload =
sharing and the two-phase commit), and the peak RSS of this process, the connector
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``; the nodes are other processes), beside its
RSS before the run (interpreter, imports, aiohttp) and the peak before the upload stage
(pull, map, validate and encode; the uploader then shares and sends a column at a time,
holding the three share pairs of a few columns only).

``--source rest`` instead loads the same resources into a sekmet-fhir server (``.venv-fhir``,
made by ``make test``; loading is not timed) and pulls them by FHIR REST search (Patient,
Coverage, Condition, ``_count=1000``): pull is then paging over HTTP. ``cpu_seconds`` is this
process's user + system time during the run, a check on wall times taken on a busy machine
(``load_average_1min``); ``worker_cpu_seconds`` that of the worker processes which parse
and map NDJSON beyond the first ``PARALLEL_AFTER`` lines
(``dic_connector.connector.parallel``; ``--workers 0``: none, everything in this process).

``--updates`` measures an update instead (issue 13 part 4): two datasets over the same
export through the connector's own :class:`~dic_connector.connector.runs.Runner` (state
database, lineage, consent step), one ``updates: full``, one ``updates: delta``; both are
run once, then ``--changed`` of the patients (default 1 %) change sex in the export (and
back, ``--repeats`` times), and each run after a change is measured: median seconds (whole
run, and its upload stage), share bytes sent per node, and the bytes and seconds saved by
the delta.

Usage: ``.venv/bin/python benchmarks/pipeline.py [--patients 10000] [--chunk-size 5000]
[--source ndjson|rest] [--updates [--changed 0.01]]`` (``--patients 1000000`` takes minutes). Issue 12 targets: >= 20,000
patients/s and a peak RSS below 1 GiB at 10^6 patients. The last line of output is one JSON
object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _harness  # noqa: F401  (this checkout's dic_connector, not the virtualenv's)
import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.connector import pipeline
from dic_connector.connector.pipeline import share_cohort
from dic_connector.connector.upload import NodeEndpoint, Uploader
from dic_connector.dev.deployment import LocalNodes, register_people, write_local_deployment
from dic_connector.mapping import load_mapping
from dic_connector.sources import (
    BearerAuth,
    FhirRestConfig,
    FhirRestSource,
    NdjsonConfig,
    SearchSpec,
    make_source,
)
from dic_connector.sources.base import Source
from dic_connector.vocabulary import Role

ROOT = Path(__file__).resolve().parents[1]
SITE = "s1"
PEOPLE = {"owner_s1": (Role.DATA_OWNER, SITE)}  # registers the site on every node
TARGET_PATIENTS_PER_S = 20_000
TARGET_PEAK_RSS_MIB = 1024
#: what mappings/phame.yaml reads
RESOURCE_TYPES = ("Patient", "Coverage", "Condition")


def rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(directory: Path, patients: int) -> tuple[float, int]:
    """Write the site's NDJSON export in a child process; its seconds and resources."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "dic_connector.dev.synthetic", "phame",
                          "--patients", str(patients), "--site", SITE, str(directory)],
                         check=True, capture_output=True, text=True, env=env)
    resources = sum(entry["count"] for entry in json.loads(out.stdout.splitlines()[-1]))
    return time.perf_counter() - started, resources


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU time of this process (or its ended children) so far."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def rest_server(work: Path, patients: int) -> Iterator[tuple[str, str]]:
    """A sekmet-fhir server loaded with the site's resources: (base URL, bearer token)."""
    from dic_connector.dev.sekmet import start_sekmet, stop_sekmet
    from dic_connector.dev.synthetic import phame_resources

    started = time.perf_counter()
    (work / "sekmet").mkdir()
    server = start_sekmet(work / "sekmet")
    try:
        batch: list[dict[str, Any]] = []
        loaded = 0
        for item in phame_resources(patients, site=SITE):
            batch.append(item)
            if len(batch) == 1000:
                server.put(batch)
                loaded += len(batch)
                batch.clear()
        if batch:
            server.put(batch)
            loaded += len(batch)
        print(f"sekmet: {loaded} resources loaded in {time.perf_counter() - started:.1f} s",
              flush=True)
        yield server.base_url, server.static_token
    finally:
        stop_sekmet(server)


def make_bench_source(kind: str, work: Path, stack: contextlib.ExitStack, patients: int
                      ) -> Source:
    if kind == "rest":
        url, token = stack.enter_context(rest_server(work, patients))
        return FhirRestSource(FhirRestConfig(url, tuple(SearchSpec(t) for t in RESOURCE_TYPES),
                                             auth=BearerAuth(token), page_size=1000))
    generated_s, resources = generate(work / "fhir", patients)
    print(f"generated {patients} patients, {resources} resources in {generated_s:.1f} s",
          flush=True)
    return make_source(NdjsonConfig(work / "fhir"))


async def run(patients: int, chunk_size: int, work: Path, kind: str) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        source = make_bench_source(kind, work, stack, patients)
        out = await run_source(source, chunk_size, work)
    return {**out, "source": kind}


async def run_source(source: Source, chunk_size: int, work: Path) -> dict[str, Any]:
    deployment = write_local_deployment(work / "deployment", sites=(SITE,))
    keys = {name: Ed25519PrivateKey.generate() for name in PEOPLE}
    tokens = await register_people(deployment, PEOPLE, keys)
    mapping = load_mapping(ROOT / "mappings" / "phame.yaml")
    async with aiohttp.ClientSession() as http:
        nodes = LocalNodes(deployment, http, tokens)
        async with nodes.running(work / "logs"):
            endpoints = [NodeEndpoint(url, f"node-{i}") for i, url in enumerate(nodes.urls)]
            uploader = Uploader(endpoints, deployment.pki[f"connector.{SITE}"], SITE,
                                timeout_s=1800)
            rss_before = rss_mib()
            cpu_before = cpu_seconds()
            children_before = cpu_seconds(resource.RUSAGE_CHILDREN)
            peaks: dict[str, float] = {}

            def on_stage(stage: str) -> None:
                peaks[stage] = rss_mib()  # the peak so far, when the stage starts
                print(f"stage {stage} (peak RSS so far {peaks[stage]:.0f} MiB)", flush=True)

            async with source:
                report = await share_cohort(source, mapping, uploader, "phame",
                                            chunk_size=chunk_size, on_stage=on_stage)
            rss_peak = rss_mib()
            cpu = cpu_seconds() - cpu_before
            worker_cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - children_before
    print(report.summary(), flush=True)
    stages = {name: round(seconds, 3) for name, seconds in report.stage_seconds.items()}
    return {
        "benchmark": "pipeline", "mapping": "phame", "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "patients": report.patients, "resources": report.resources_read,
        "rows_shared": report.rows_shared, "columns": report.columns,
        "chunk_size": chunk_size, "bytes_per_node": report.bytes_per_node,
        "seconds": round(report.seconds, 3), "cpu_seconds": round(cpu, 3),
        "worker_cpu_seconds": round(worker_cpu, 3), "workers": pipeline.WORKERS,
        "patients_per_s": round(report.patients / report.seconds),
        "stage_seconds": stages,
        "stage_patients_per_s": {name: round(report.patients / s) if s > 0 else None
                                 for name, s in stages.items()},
        "peak_rss_mib": round(rss_peak, 1), "rss_before_run_mib": round(rss_before, 1),
        "peak_rss_before_upload_mib": round(peaks["upload"], 1),
        "target_patients_per_s": TARGET_PATIENTS_PER_S,
        "target_peak_rss_mib": TARGET_PEAK_RSS_MIB,
    }


def change_patients(directory: Path, fraction: float) -> int:
    """Flip the sex of every ``1/fraction``-th Patient of the NDJSON export in place; how
    many changed."""
    every = max(1, round(1 / fraction))
    changed = 0
    for path in sorted(directory.glob("*Patient*.ndjson")):
        lines = path.read_text().splitlines()
        out = []
        for i, line in enumerate(lines):
            resource = json.loads(line)
            if i % every == every - 1 and resource.get("gender") in ("male", "female"):
                resource["gender"] = "female" if resource["gender"] == "male" else "male"
                changed += 1
            out.append(json.dumps(resource))
        path.write_text("\n".join(out) + "\n")
    return changed


async def run_updates(patients: int, fraction: float, work: Path, repeats: int
                      ) -> dict[str, Any]:
    """The ``--updates`` comparison (module docstring): a full and a delta dataset, each
    update measured ``repeats`` times (medians reported)."""
    from dic_connector.connector.config import parse_connector_config
    from dic_connector.connector.runs import Runner
    from dic_connector.connector.state import StateStore

    generated_s, _ = generate(work / "fhir", patients)
    print(f"generated {patients} patients in {generated_s:.1f} s", flush=True)
    deployment = write_local_deployment(work / "deployment", sites=(SITE,))
    keys = {name: Ed25519PrivateKey.generate() for name in PEOPLE}
    tokens = await register_people(deployment, PEOPLE, keys)
    tls = deployment.pki[f"connector.{SITE}"]
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        nodes = LocalNodes(deployment, http, tokens)
        async with nodes.running(work / "logs"):
            dataset = {"mapping": str(ROOT / "mappings" / "phame.yaml"),
                       "source": {"kind": "ndjson", "directory": str(work / "fhir")},
                       "trigger": "manual"}
            config = parse_connector_config({
                "site": SITE,
                "tls": {"ca_cert": str(tls.ca_cert), "cert": str(tls.cert),
                        "key": str(tls.key)},
                "nodes": [{"url": url, "name": f"node-{i}"} for i, url in enumerate(nodes.urls)],
                "state_database_url": f"sqlite:///{work / 'state.db'}",
                "upload_timeout_s": 1800,
                "datasets": {"full": dataset | {"updates": "full"},
                             "delta": dataset | {"updates": "delta"}}}, work, {})
            state = StateStore(f"sqlite:///{work / 'state.db'}")
            await state.migrate()
            try:
                runner = Runner(config, state)
                for name in ("full", "delta"):
                    assert (await runner.run(name, "pull")).ok
                seconds: dict[str, list[float]] = {"full": [], "delta": []}
                uploads: dict[str, list[float]] = {"full": [], "delta": []}
                for _ in range(repeats):  # the same patients change back and forth
                    changed = change_patients(work / "fhir", fraction)
                    for name in ("full", "delta"):
                        started = time.perf_counter()
                        outcome = await runner.run(name, "pull")
                        seconds[name].append(time.perf_counter() - started)
                        assert outcome.ok, outcome.error
                        uploads[name].append(outcome.record.stage_seconds.get("upload", 0.0))
                        counts = outcome.record.counts
                        out[name] = {"rows_shared": counts.rows_shared,
                                     "bytes_per_node": counts.bytes_per_node}
                for name in ("full", "delta"):
                    out[name] |= {
                        "seconds": round(statistics.median(seconds[name]), 3),
                        "upload_seconds": round(statistics.median(uploads[name]), 3),
                        "seconds_each": [round(x, 3) for x in seconds[name]]}
            finally:
                await state.close()
    full, delta = out["full"], out["delta"]
    return {
        "benchmark": "pipeline-updates", "mapping": "phame", "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2), "patients": patients,
        "changed_patients": changed, "repeats": repeats, "full": full, "delta": delta,
        "bytes_ratio": round(delta["bytes_per_node"] / full["bytes_per_node"], 4),
        "seconds_saved": round(full["seconds"] - delta["seconds"], 3),
        "upload_seconds_saved": round(full["upload_seconds"] - delta["upload_seconds"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--chunk-size", type=int, default=5000)
    parser.add_argument("--source", choices=("ndjson", "rest"), default="ndjson")
    parser.add_argument("--workers", type=int, default=pipeline.WORKERS)
    parser.add_argument("--updates", action="store_true",
                        help="compare delta and full versions of an update")
    parser.add_argument("--changed", type=float, default=0.01,
                        help="fraction of patients changed for --updates")
    parser.add_argument("--repeats", type=int, default=5,
                        help="updates measured for --updates (medians reported)")
    args = parser.parse_args()
    pipeline.WORKERS = args.workers
    with tempfile.TemporaryDirectory(prefix="dic-bench-pipeline-") as directory:
        if args.updates:
            out = asyncio.run(run_updates(args.patients, args.changed, Path(directory),
                                          args.repeats))
        else:
            out = asyncio.run(run(args.patients, args.chunk_size, Path(directory),
                                  args.source))
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
