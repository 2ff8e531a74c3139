"""Source throughput: SQL streaming of 10^6 rows in bounded memory, FHIR REST and Bulk rates.

Run ``.venv/bin/python benchmarks/sources.py`` (``--rows`` and ``--patients`` to scale).
Starts a throwaway PostgreSQL cluster (initdb on a temp dir, 127.0.0.1, random port) and a
sekmet-fhir server (``.venv-fhir``, made by ``make test``), both removed afterwards. Prints
progress lines, then one JSON object on the last line:

* ``sql_rows``, ``sql_rows_per_s``; ``rss_before_mib`` (after the table is built, before
  streaming) and ``sql_peak_rss_mib`` (process high-water mark while streaming), whose small
  difference shows memory bounded by one batch, not by the result;
* ``fhir_resources``, ``rest_resources_per_s`` (search paging, ``_count=1000``) and
  ``bulk_resources_per_s`` (``$export`` kick-off to last NDJSON line, including polling).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import importlib.util
import json
import os
import pwd
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from dic_connector.sources import (
    BearerAuth,
    BulkExportConfig,
    BulkExportSource,
    FhirRestConfig,
    FhirRestSource,
    SearchSpec,
    SqlConfig,
    SqlSource,
)

REPO = Path(__file__).resolve().parent.parent


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def start_postgres(base: Path) -> tuple[str, list[str], Path]:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    found = shutil.which("initdb") or (candidates[-1] if candidates else None)
    if not found:
        raise SystemExit("PostgreSQL binaries not found: run `make test`, which installs them")
    bindir = Path(os.path.realpath(found)).parent
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        user = pwd.getpwnam("postgres")
        os.chmod(base, 0o755)
        os.chown(base, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = base / "data"
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "dic",
                    "--no-sync", "--locale=C", "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"),
                    "-w", "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {base} "
                    "-c fsync=off -c synchronous_commit=off", "start"],
                   check=True, capture_output=True)
    stop = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
    return f"postgresql://dic@127.0.0.1:{port}/postgres", stop, base


async def bench_sql(rows: int) -> dict[str, Any]:
    import asyncpg

    t0 = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="dic-bench-pg-"))
    dsn, stop, _ = start_postgres(base)
    try:
        conn = await asyncpg.connect(dsn)
        await conn.execute(f"""
            CREATE TABLE person AS
            SELECT i AS person_id, 1930 + i % 80 AS year_of_birth,
                   CASE WHEN i % 2 = 0 THEN 'F' ELSE 'M' END AS gender,
                   (40 + (i % 700) / 10.0)::numeric(5,1) AS weight_kg,
                   DATE '2010-01-01' + (i % 4000) AS first_visit
            FROM generate_series(1, {int(rows)}) AS i""")
        await conn.close()
        print(f"postgres: {rows} rows loaded ({time.perf_counter() - t0:.1f} s)", flush=True)
        url = "postgresql+asyncpg://" + dsn.split("://", 1)[1]
        config = SqlConfig(url, "SELECT * FROM person WHERE year_of_birth >= :y", {"y": 0},
                           batch_size=5000)
        before = rss_mib()
        count = 0
        start = time.perf_counter()
        async with SqlSource(config) as source:
            async for _row in source.stream():
                count += 1
        seconds = time.perf_counter() - start
        assert count == rows, (count, rows)
        return {"sql_rows": count, "sql_seconds": round(seconds, 2),
                "sql_rows_per_s": round(count / seconds), "rss_before_mib": round(before, 1),
                "sql_peak_rss_mib": round(peak_rss_mib(), 1)}
    finally:
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def load_helpers() -> ModuleType:
    """The sekmet helpers of the source tests (start, generate, load)."""
    path = REPO / "tests" / "dic_connector" / "sources" / "conftest.py"
    spec = importlib.util.spec_from_file_location("sekmet_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


async def bench_fhir(patients: int) -> dict[str, Any]:
    helpers = load_helpers()
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="dic-bench-sekmet-"))
    server = helpers.start_sekmet(tmp)
    print(f"sekmet: started ({time.perf_counter() - t0:.1f} s)", flush=True)
    try:
        resources = helpers.generate_resources(patients)
        helpers.load_resources(server.base_url, resources)
        print(f"sekmet: {len(resources)} resources loaded ({time.perf_counter() - t0:.1f} s)",
              flush=True)
        auth = BearerAuth(server.static_token)
        types = ("Patient", "Observation", "Condition")
        rest = FhirRestSource(FhirRestConfig(server.base_url, tuple(SearchSpec(t) for t in types),
                                             auth=auth, page_size=1000))
        start = time.perf_counter()
        async with rest:
            n_rest = sum([1 async for _ in rest.stream()])
        rest_s = time.perf_counter() - start
        bulk = BulkExportSource(BulkExportConfig(server.base_url, types=types, auth=auth,
                                                 poll_interval_s=0.1, max_poll_interval_s=0.2))
        start = time.perf_counter()
        async with bulk:
            n_bulk = sum([1 async for _ in bulk.stream()])
        bulk_s = time.perf_counter() - start
        assert n_rest == n_bulk == len(resources), (n_rest, n_bulk, len(resources))
        return {"fhir_resources": n_rest, "rest_seconds": round(rest_s, 2),
                "rest_resources_per_s": round(n_rest / rest_s),
                "bulk_seconds": round(bulk_s, 2), "bulk_resources_per_s": round(n_bulk / bulk_s)}
    finally:
        helpers.stop_sekmet(server)
        shutil.rmtree(tmp, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--patients", type=int, default=800)
    args = parser.parse_args()
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "sources"}
    result.update(await bench_fhir(args.patients))
    result.update(await bench_sql(args.rows))
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
