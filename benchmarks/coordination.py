"""End-to-end latency of the node service: upload, replication, agreement and computation.

Three real node processes (``dic node serve``, SQLite, mutual TLS on 127.0.0.1, written by
``dic_connector.dev.deployment``; :mod:`_deployment`, shared with ``analyses.py``), two
sites. For each table size it measures

* ``upload_rows_per_s``: a connector sharing a table (age, a 3-level categorical and its
  one-hot columns) to the three nodes, two-phase commit included;
* ``replication_ms``: a signed request submitted at node 1 until it is visible at nodes 0
  and 2 (the peer outbox);
* ``frequency_one_site_ledger_ms`` / ``frequency_one_site_again_ms``: one site's frequency
  table after the pooled one (the release ledger checks the other site's cells, which the
  two would expose) and the same request again (nothing new to check): their difference is
  the cost of the ledger check;
* ``<analysis>_ms``: a signed request, approved in advance by both owners' standing policies,
  from submission at node 1 until it is ``completed`` on all three nodes (replication,
  agreement, loading and decrypting shares, the MPC session, storing the result); with
  ``--repeat N`` each request is submitted N times and the median is reported (the samples
  in ``<analysis>_ms_all``);
* ``count_legs_ms``: where a count's time goes, from the three nodes' audit logs (one clock:
  one machine): for each audited step (``node-0 compute.start``, ...) its median offset from
  the submission's audit entry at node 1, and ``observed`` (the researcher's client seeing
  ``completed`` on all three, with status reads that wait on each node for a change);
* ``http_calls_per_request``: the HTTP calls each node served per request, by route (its
  ``/metrics``), and their total, and ``node_cpu_ms_per_request``, the three node
  processes' CPU time per request: the control plane's cost, steadier than wall time on a
  busy machine.

With ``--concurrent N`` it measures instead ``concurrent``: N count requests submitted at
once, spread over ``--datasets`` small datasets per site (24 rows each; a request reads one:
requests over disjoint ledger scopes, which the nodes may run at the same time), from the
submissions until all N are ``completed`` on all three nodes (``total_ms``, from the nodes'
audit logs; ``observed_ms``: one client polling all N), ``per_request_ms``, the requests'
``p50_ms`` / ``p95_ms``, ``node_cpu_ms_per_request`` (the three node processes' CPU time
meanwhile, per request: steadier than wall time on a busy machine), the HTTP calls per
request as above, and ``peak_overlap``:
the most computations node-0's audit shows open at once; at ``max_concurrent_computations`` 1 and at the nodes' default (or
``--limits``).

Prints progress lines and one JSON object on the last line. Usage:
``.venv/bin/python benchmarks/coordination.py [--rows 10000 100000] [--repeat 5]``
(``--rows 24`` is the pilot's size: 48 rows pooled over two sites).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness  # noqa: F401  (this checkout's dic_connector, not the virtualenv's)
import numpy as np
from _deployment import (
    WAIT_S,
    BenchNodes,
    audit_times,
    bench_nodes,
    calls_between,
    environment,
    ms,
    timeline,
)

from dic_connector.client import VISIBLE
from dic_connector.vocabulary import RequestStatus

MANIFEST = {"columns": [
    {"name": "age", "kind": "numeric", "column": "age", "scale": 0, "minimum": 0,
     "maximum": 120},
    {"name": "ecog", "kind": "categorical", "column": "ecog", "levels": ["0", "1", "2"]},
    *({"name": f"ecog={v}", "kind": "one_hot", "column": "ecog", "level": v}
      for v in ("0", "1", "2"))]}
ANALYSES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("count", {}), ("mean", {"column": "age"}), ("frequency", {"column": "ecog"}),
    ("median", {"column": "age"}))


def table(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ecog = rng.choice(3, rows, p=[0.5, 0.4, 0.1])
    return np.column_stack([rng.integers(18, 100, rows), ecog,
                            np.eye(3, dtype=np.int64)[ecog]]).astype(np.int64)


async def run(rows_list: list[int], directory: Path, repeat: int,
              profile_dir: Path | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"benchmark": "coordination", **environment(), "repeat": repeat,
                           "sizes": {}}
    async with bench_nodes(directory, {"coordination_interval_s": 0.05},
                           profile_dir=profile_dir) as bench:
        for rows in rows_list:
            out["sizes"][str(rows)] = await measure(bench, rows, repeat)
            print(f"{rows} rows per site: {out['sizes'][str(rows)]}", flush=True)
    return out


async def measure(bench: BenchNodes, rows: int, repeat: int) -> dict[str, Any]:
    alice = bench.alice
    result: dict[str, Any] = {}
    started = time.perf_counter()
    datasets = await bench.upload(f"bench_{rows}", [table(rows, i) for i in range(2)],
                                  MANIFEST)
    result["upload_rows_per_s"] = round(2 * rows / (time.perf_counter() - started))
    study = await alice.create_study("benchmark")
    samples: dict[str, list[float]] = {}
    legs: list[dict[str, float]] = []
    calls_before, cpu_before = await bench.http_calls(), bench.cpu_s()
    for _ in range(repeat):
        for analysis, parameters in ANALYSES:
            t0 = time.perf_counter()
            request_id = await alice.submit(study, analysis, datasets, parameters)
            if analysis == "count":
                await alice.wait(request_id, until=VISIBLE, nodes=(0, 2), timeout_s=WAIT_S)
                samples.setdefault("replication_ms", []).append(ms(t0))
            await alice.wait(request_id, until=RequestStatus.COMPLETED, timeout_s=WAIT_S)
            samples.setdefault(f"{analysis}_ms", []).append(ms(t0))
            if analysis == "count":
                legs.append(timeline(bench.directory, request_id, ms(t0)))
    cpu_after = bench.cpu_s()
    result["http_calls_per_request"] = calls_between(calls_before, await bench.http_calls(),
                                                     repeat * len(ANALYSES))
    result["node_cpu_ms_per_request"] = round(1000 * sum(
        (cpu_after[n] or 0.0) - (cpu_before[n] or 0.0) for n in cpu_after)
        / (repeat * len(ANALYSES)), 1)
    # the release ledger: one site's table after the pooled one makes the other site's
    # cells derivable, so they are checked; the same request again makes nothing new
    # derivable (same MPC otherwise): the difference is the ledger check
    for label in ("frequency_one_site_ledger_ms", "frequency_one_site_again_ms"):
        t0 = time.perf_counter()
        request_id = await alice.submit(study, "frequency", datasets[:1], {"column": "ecog"})
        await alice.wait(request_id, until=RequestStatus.COMPLETED, timeout_s=WAIT_S)
        result[label] = ms(t0)
    for key, values in samples.items():
        result[key] = round(statistics.median(values), 1)
        if len(values) > 1:
            result[f"{key}_all"] = values
    steps = sorted({step for leg in legs for step in leg},
                   key=lambda s: statistics.median(leg[s] for leg in legs if s in leg))
    result["count_legs_ms"] = {s: round(statistics.median(leg[s] for leg in legs if s in leg),
                                        1) for s in steps}
    return result


async def run_concurrent(requests: int, datasets: int, limits: list[int | None],
                         directory: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"benchmark": "coordination_concurrent", **environment(),
                           "requests": requests, "datasets_per_site": datasets, "runs": {}}
    for limit in limits:
        extra: dict[str, Any] = {"coordination_interval_s": 0.05}
        if limit is not None:
            extra["max_concurrent_computations"] = limit
        label = f"max_concurrent_computations={limit if limit is not None else 'default'}"
        async with bench_nodes(directory / label, extra) as bench:
            out["runs"][label] = await measure_concurrent(bench, requests, datasets)
        print(f"{label}: {out['runs'][label]}", flush=True)
    return out


async def measure_concurrent(bench: BenchNodes, requests: int, datasets: int
                             ) -> dict[str, Any]:
    alice = bench.alice
    pools: list[str] = []
    for d in range(datasets):
        pools += await bench.upload(f"pool_{d}", [table(24, 2 * d + i) for i in range(2)],
                                    MANIFEST)
    study = await alice.create_study("benchmark")
    warm = await alice.submit(study, "count", pools[:1], {})  # the peers' limits, warm nodes
    await alice.wait(warm, until=RequestStatus.COMPLETED, timeout_s=WAIT_S)

    cpu_before = bench.cpu_s()
    calls_before = await bench.http_calls()
    submitted = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    ids = list(await asyncio.gather(*(alice.submit(study, "count", [pools[i % len(pools)]], {})
                                      for i in range(requests))))
    # one waiter polling all of them: a waiter per request, every 10 ms, would be the load
    await alice.wait(ids, until=RequestStatus.COMPLETED, timeout_s=WAIT_S)
    observed = ms(t0)
    cpu_after = bench.cpu_s()
    calls = calls_between(calls_before, await bench.http_calls(), requests)
    node_cpu_ms = round(1000 * sum((cpu_after[n] or 0.0) - (cpu_before[n] or 0.0)
                                   for n in cpu_after), 1)
    # each request's end: the last node's result.open, from the audit logs (one clock)
    ends = [max(at for step, at in audit_times(bench.directory, r).items()
                if step.endswith(" result.open")) for r in ids]
    latencies = sorted(round((end - submitted).total_seconds() * 1000, 1) for end in ends)
    return {"total_ms": latencies[-1], "observed_ms": observed,
            "per_request_ms": round(latencies[-1] / requests, 1),
            "p50_ms": round(statistics.median(latencies), 1),
            "p95_ms": latencies[max(0, round(0.95 * len(latencies)) - 1)],
            "node_cpu_ms_per_request": round(node_cpu_ms / requests, 1),
            "peak_overlap": peak_overlap(bench.directory, ids),
            "http_calls_per_request": calls}


def peak_overlap(directory: Path, request_ids: list[str]) -> int:
    """The most of ``request_ids`` node-0's audit shows between ``compute.start`` and
    ``result.open`` at once."""
    events = []
    for request_id in request_ids:
        at = audit_times(directory, request_id)
        if "node-0 compute.start" in at and "node-0 result.open" in at:
            events += [(at["node-0 compute.start"], 1), (at["node-0 result.open"], -1)]
    peak = running = 0
    for _, step in sorted(events):
        running += step
        peak = max(peak, running)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=1,
                        help="submit each request this many times; report the median")
    parser.add_argument("--concurrent", type=int, default=None, metavar="N",
                        help="submit N count requests at once instead (see the docstring)")
    parser.add_argument("--datasets", type=int, default=4,
                        help="with --concurrent: datasets per site the requests spread over")
    parser.add_argument("--limits", type=int, nargs="+", default=None,
                        help="with --concurrent: max_concurrent_computations to compare "
                             "(default: 1 and the nodes' default)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="run the nodes under cProfile, writing DIR/node-<i>.prof "
                             "(latency runs only; times are then inflated)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dic-bench-") as directory:
        if args.concurrent is not None:
            limits: list[int | None] = list(args.limits) if args.limits else [1, None]
            out = asyncio.run(run_concurrent(args.concurrent, args.datasets, limits,
                                             Path(directory)))
        else:
            out = asyncio.run(run(args.rows, Path(directory), args.repeat, args.profile))
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
