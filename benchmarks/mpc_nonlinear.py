"""Benchmark of the non-linear protocols: three real party processes on 127.0.0.1, mutual TLS.

- less-than and equality (64-bit, arithmetic 0/1 results) at n in (48, 10^4, 10^6);
- oblivious shuffle of 10^5 rows x 3 columns;
- median and quartiles (R type 7, shuffle + quickselect) at n in (48, 10^4, 10^5);
- 10-level frequency table at n in (10^5, 2.2 * 10^6).

Inputs are secret-shared by party 0 (``input_from``); every result is opened and checked
against plaintext numpy. Times are the slowest party's, median over repetitions for small n;
``*_cpu_s`` are each party's CPU seconds (user + system) for the same operation, which the
load of other processes does not inflate, and ``peak_rss_mib`` each party's peak resident
memory over the whole run. The parties run with the image's allocator settings
(``--default-malloc``: glibc's). Prints one JSON object on its last line.

    .venv/bin/python benchmarks/mpc_nonlinear.py --json [--quick]
    .venv/bin/python benchmarks/mpc_nonlinear.py --json --only quantiles \
        --quantile-sizes 48,100000,1000000,2200000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from _harness import party_env, timed  # benchmarks/ is on sys.path when run as a script

from mpc.local import LocalDeployment
from mpc.protocols import arith, compare, groupby, shuffle, sort
from mpc.ring import FixedPoint, as_ring, to_signed
from mpc.session import Party, Session
from mpc.sharing import AShare

COMPARE_SIZES = (48, 10_000, 1_000_000)
SHUFFLE_ROWS, SHUFFLE_COLUMNS = 100_000, 3
QUANTILE_SIZES = (48, 10_000, 100_000)
FREQUENCY_SIZES = (100_000, 2_200_000)
LEVELS = list(range(10))
#: Ages-like fixed-point data: 16 fractional bits, |x| < 2^10, so 27-bit keys.
FP = FixedPoint(16, -1000, 1000)
KEY_BITS = 27
WEIGHT_BITS = 16


SECTIONS = ("compare", "shuffle", "quantiles", "frequency")


def _reps(n: int) -> int:
    return 10 if n <= 1000 else 3 if n <= 1_000_000 else 1


async def _timed_cpu(reps: int, op: Callable[[], Awaitable[Any]]
                     ) -> tuple[float, float, Any]:
    """Median wall and CPU seconds of ``reps`` awaits of ``op()``, and the last result."""
    walls, cpus, result = [], [], None
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        result = await op()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), result


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


async def _input(s: Session, values: np.ndarray) -> AShare:
    return await arith.input_from(s, 0, as_ring(values) if s.party == 0 else None,
                                  tuple(values.shape))


async def _compare(s: Session, n: int) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    x = rng.integers(-(2**40), 2**40, n)
    y = np.where(rng.random(n) < 0.2, x, rng.integers(-(2**40), 2**40, n))
    xs, ys = await _input(s, x), await _input(s, y)
    reps = _reps(n)
    steps = s.steps
    lt_s, lt = await timed(reps, lambda: compare.less_than(s, xs, ys))
    lt_rounds = (s.steps - steps) // reps
    steps = s.steps
    eq_s, eq = await timed(reps, lambda: compare.equals(s, xs, ys))
    eq_rounds = (s.steps - steps) // reps
    ok = (np.array_equal(to_signed(await arith.open_(s, lt)), (x < y).astype(np.int64))
          and np.array_equal(to_signed(await arith.open_(s, eq)), (x == y).astype(np.int64)))
    return {"n": n, "less_than_s": lt_s, "less_than_rounds": lt_rounds,
            "equals_s": eq_s, "equals_rounds": eq_rounds, "correct": bool(ok)}


async def _shuffle(s: Session) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    table = rng.integers(-(2**40), 2**40, (SHUFFLE_ROWS, SHUFFLE_COLUMNS))
    xs = await _input(s, table)
    t, shuffled = await timed(3, lambda: shuffle.shuffle(s, xs))
    out = to_signed(await arith.open_(s, shuffled))
    ok = (np.array_equal(np.unique(out, axis=0), np.unique(table, axis=0))
          and not np.array_equal(out, table))
    return {"rows": SHUFFLE_ROWS, "columns": SHUFFLE_COLUMNS, "shuffle_s": t,
            "correct": bool(ok)}


async def _quantiles(s: Session, n: int) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    values = np.round(rng.normal(60, 15, n).clip(-999, 999), 2)
    encoded = FP.encode(values)
    exact = FP.decode(encoded)
    xs = await _input(s, encoded)
    del values
    reps = _reps(n)
    med_s, med_cpu, med = await _timed_cpu(
        reps, lambda: sort.median(s, xs, KEY_BITS, WEIGHT_BITS))
    quart_s, quart_cpu, quart = await _timed_cpu(
        reps, lambda: sort.quantiles(s, xs, [0.25, 0.5, 0.75], KEY_BITS, WEIGHT_BITS))
    out = FixedPoint(16 + WEIGHT_BITS, -(2.0**30), 2.0**30).decode(
        await arith.open_(s, arith_concat(med, quart)))
    expected = np.quantile(exact, [0.5, 0.25, 0.5, 0.75], method="linear")
    tolerance = np.ptp(exact) * 2.0**-(WEIGHT_BITS + 1) + 1e-9
    return {"n": n, "median_s": med_s, "quartiles_s": quart_s, "median_cpu_s": med_cpu,
            "quartiles_cpu_s": quart_cpu, "peak_rss_mib": _peak_rss_mib(),
            "correct": bool(np.all(np.abs(out - expected) <= tolerance))}


def arith_concat(a: AShare, b: AShare) -> AShare:
    return AShare(a.party, np.concatenate([a.a, b.a]), np.concatenate([a.b, b.b]))


async def _frequency(s: Session, n: int) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    codes = rng.integers(0, len(LEVELS), n)
    xs = await _input(s, codes)
    t, counts = await timed(_reps(n), lambda: groupby.count_by(s, xs, LEVELS))
    opened = await arith.open_(s, counts)
    ok = np.array_equal(opened, np.bincount(codes, minlength=len(LEVELS)).astype(np.uint64))
    return {"n": n, "levels": len(LEVELS), "frequency_s": t, "correct": bool(ok)}


async def _session(party: Party, name: str, op: Callable[[Session], Awaitable[Any]]) -> Any:
    sid = hashlib.sha256(name.encode()).digest()[:16]
    async with party.session(sid) as s:
        return await op(s)


async def _party_main(index: int, directory: Path, quick: bool, only: set[str],
                      quantile_sizes: list[int]) -> dict[str, Any]:
    party = await LocalDeployment.load(directory).connect(index, timeout_s=300.0)
    compare_sizes = COMPARE_SIZES[:2] if quick else COMPARE_SIZES
    frequency_sizes = FREQUENCY_SIZES[:1] if quick else FREQUENCY_SIZES
    out: dict[str, Any] = {"party": index}
    try:
        await _session(party, "warm-up", partial(_compare, n=48))
        if "compare" in only:
            out["compare"] = [await _session(party, f"cmp-{n}", partial(_compare, n=n))
                              for n in compare_sizes]
        if "shuffle" in only:
            out["shuffle"] = await _session(party, "shuffle", _shuffle)
        if "quantiles" in only:
            out["quantiles"] = [await _session(party, f"q-{n}", partial(_quantiles, n=n))
                                for n in quantile_sizes]
        if "frequency" in only:
            out["frequency"] = [await _session(party, f"f-{n}", partial(_frequency, n=n))
                                for n in frequency_sizes]
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
        out["peak_rss_mib"] = _peak_rss_mib()
        # Hand the results to the parent, and close only once every party is done: a peer
        # that closes right after its last send can otherwise fail a slower party's last
        # receive with "connection lost" even though the message had arrived.
        print(json.dumps(out), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    finally:
        await party.close()
    return out


def _slowest(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Wall times: the slowest party's; CPU times and memory: every party's, in order."""
    merged: dict[str, Any] = {}
    for key, value in rows[0].items():
        if key == "correct":
            merged[key] = all(r[key] for r in rows)
        elif key.endswith("_cpu_s") or key == "peak_rss_mib":
            merged[key] = [round(r[key], 3) for r in rows]
        elif key.endswith("_s"):
            merged[key] = round(max(r[key] for r in rows), 4)
        else:
            merged[key] = value
    return merged


def _combine(outputs: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "mpc_nonlinear",
        "parties": 3,
        "transport": "TLS 1.3, mutual auth, 127.0.0.1, one process per party",
        "cpus": os.cpu_count(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    for section in ("compare", "quantiles", "frequency"):
        if section in outputs[0]:
            result[section] = [_slowest([o[section][k] for o in outputs])
                               for k in range(len(outputs[0][section]))]
    if "shuffle" in outputs[0]:
        result["shuffle"] = _slowest([o["shuffle"] for o in outputs])
    for entry in result.get("compare", []):
        entry["less_than_per_s"] = round(entry["n"] / entry["less_than_s"])
        entry["equals_per_s"] = round(entry["n"] / entry["equals_s"])
    result["cpu_s_per_party"] = [o["cpu_s"] for o in outputs]
    result["peak_rss_mib_per_party"] = [o["peak_rss_mib"] for o in outputs]
    result["wall_s"] = round(wall_s, 2)
    result["correct"] = (all(e["correct"] for sec in ("compare", "quantiles", "frequency")
                             for e in result.get(sec, []))
                         and result.get("shuffle", {"correct": True})["correct"])
    return result


def _result_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=60)
        raise SystemExit(f"party process failed with exit code {proc.returncode}")
    return dict(json.loads(line))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print only the JSON result line")
    parser.add_argument("--quick", action="store_true", help="skip the largest sizes")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of {', '.join(SECTIONS)}")
    parser.add_argument("--quantile-sizes", default=",".join(map(str, QUANTILE_SIZES)),
                        help="comma-separated n for median and quartiles")
    parser.add_argument("--default-malloc", action="store_true",
                        help="run the parties with glibc's allocator defaults, not the image's")
    parser.add_argument("--party", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    only = set(args.only.split(","))
    if not only <= set(SECTIONS):
        parser.error(f"--only takes sections of {', '.join(SECTIONS)}, got {args.only!r}")
    if args.party is not None:
        sizes = [int(v) for v in args.quantile_sizes.split(",")]
        asyncio.run(_party_main(args.party, args.dir, args.quick, only, sizes))
        return 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dic-bench-") as tmp:
        LocalDeployment.create(Path(tmp))
        extra = ["--quick"] if args.quick else []
        extra += ["--only", args.only, "--quantile-sizes", args.quantile_sizes]
        procs = [subprocess.Popen([sys.executable, __file__, "--party", str(i), "--dir", tmp,
                                   *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, env=party_env(args.default_malloc))
                 for i in range(3)]
        outputs = [_result_line(p) for p in procs]
        for p in procs:
            p.communicate("done\n", timeout=60)
    result = _combine(outputs, time.perf_counter() - t0)
    result["allocator"] = "glibc defaults" if args.default_malloc else "image (Dockerfile)"
    if not args.json:
        for e in result.get("compare", []):
            print(f"n={e['n']:>9}: less_than {e['less_than_s'] * 1e3:9.2f} ms, "
                  f"equals {e['equals_s'] * 1e3:9.2f} ms")
        if "shuffle" in result:
            print(f"shuffle {SHUFFLE_ROWS} x {SHUFFLE_COLUMNS}: "
                  f"{result['shuffle']['shuffle_s']} s")
        for e in result.get("quantiles", []):
            print(f"n={e['n']:>9}: median {e['median_s'] * 1e3:9.2f} ms, "
                  f"quartiles {e['quartiles_s'] * 1e3:9.2f} ms")
        for e in result.get("frequency", []):
            print(f"n={e['n']:>9}: 10-level frequency table {e['frequency_s']:.3f} s")
    print(json.dumps(result))
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
