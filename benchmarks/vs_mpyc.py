"""Median and a 10-level frequency table: this engine against MPyC 0.11, three local parties.

Both run as three OS processes on 127.0.0.1 with the same data (input by party 0; input
time excluded; the time includes opening the result):

- **MPyC** (Schoenmakers, https://github.com/lschoe/mpyc, the ``bench`` extra): Shamir
  sharing over a prime field, plain TCP (no ``--ssl``), median by
  ``mpyc.statistics.median`` on ``SecFxp`` values, frequency table by its numpy-vectorised
  secure arrays: ``np_sum(codes[:, None] == levels, axis=0)`` on ``SecInt(32)``.
- **this engine**: replicated sharing over Z_2^64, mutual TLS 1.3, ``sort.median`` (shuffle +
  quickselect) and ``groupby.count_by``.

A MPyC run that exceeds ``--mpyc-cap-s`` is stopped; its entry then says ``"capped": true``
and its time is a lower bound (so is the ratio). Prints one JSON object on its last line.

    .venv/bin/python benchmarks/vs_mpyc.py --json [--sizes 48,1000,10000] [--mpyc-cap-s 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SIZES = (48, 1_000, 10_000)
LEVELS = 10
FRAC_BITS = 16
KEY_BITS = 27  # |x| < 2^10 with 16 fractional bits
WEIGHT_BITS = 16


def data(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Ages-like values (2 decimals) and category codes, the same in every process."""
    rng = np.random.default_rng(n)
    return np.round(rng.normal(60, 15, n).clip(0, 120), 2), rng.integers(0, LEVELS, n)


# ---------------------------------------------------------------- MPyC side (one process each)

def _started() -> None:
    """Tell the parent when the timed part begins (a capped run is timed from here)."""
    print(json.dumps({"started": time.time()}), flush=True)


def mpyc_worker(op: str, n: int) -> None:
    """One MPyC party; MPyC reads -M/-I/-B from sys.argv when imported."""
    from mpyc import statistics as mpyc_statistics
    from mpyc.runtime import mpc

    values, codes = data(n)

    async def main() -> None:
        await mpc.start()
        if op == "median":
            secfxp = mpc.SecFxp()
            mine = [secfxp(float(v)) for v in values] if mpc.pid == 0 else [secfxp(None)] * n
            xs = mpc.input(mine, senders=0)
            await mpc.barrier()
            _started()
            t0 = time.perf_counter()
            result = await mpc.output(mpyc_statistics.median(xs))
            seconds = time.perf_counter() - t0
            correct = abs(float(result) - float(np.median(values))) < 1e-3
        else:
            secint = mpc.SecInt(32)
            plain = codes if mpc.pid == 0 else np.zeros(n, dtype=np.int64)
            xs = mpc.input(secint.array(plain), senders=0)
            await mpc.barrier()
            _started()
            t0 = time.perf_counter()
            table = mpc.np_sum(xs.reshape(n, 1) == np.arange(LEVELS), axis=0)
            result = await mpc.output(table)
            seconds = time.perf_counter() - t0
            correct = [int(v) for v in result] == np.bincount(codes, minlength=LEVELS).tolist()
        await mpc.shutdown()
        print(json.dumps({"op": op, "n": n, "seconds": seconds, "correct": bool(correct)}),
              flush=True)

    mpc.run(main())


def _free_base_port() -> int:
    """A base port b with b, b+1, b+2 free on 127.0.0.1 (MPyC party i listens on b + i)."""
    for _ in range(100):
        with contextlib.closing(socket.socket()) as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base > 65000:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for k in range(3):
                    sock = stack.enter_context(contextlib.closing(socket.socket()))
                    sock.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
    raise RuntimeError("no three consecutive free ports")


def run_mpyc(op: str, n: int, cap_s: float) -> dict[str, Any]:
    base = _free_base_port()
    procs = [subprocess.Popen(
        [sys.executable, __file__, "--mpyc-worker", op, str(n), "-M3", "-I", str(i),
         "-B", str(base), "--no-log"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for i in range(3)]
    assert procs[0].stdout is not None
    first = procs[0].stdout.readline()  # inputs shared, timed part starting
    started = json.loads(first)["started"] if first.startswith("{") else time.time()
    outputs: list[str] = []
    try:
        for p in procs:
            remaining = max(0.1, cap_s - (time.time() - started))
            out, _ = p.communicate(timeout=remaining)
            outputs.append(out)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        return {"seconds": round(time.time() - started, 3), "capped": True, "correct": None}
    if any(p.returncode != 0 for p in procs):
        raise SystemExit(f"MPyC {op} at n={n} failed")
    rows = [json.loads(o.strip().splitlines()[-1]) for o in outputs]
    return {"seconds": round(max(r["seconds"] for r in rows), 4), "capped": False,
            "correct": all(r["correct"] for r in rows)}


# ---------------------------------------------------------------- our engine (one process each)

async def engine_party(index: int, directory: Path, sizes: list[int]) -> None:
    from mpc.local import LocalDeployment
    from mpc.protocols import arith, groupby, sort
    from mpc.ring import FixedPoint, as_ring

    fp = FixedPoint(FRAC_BITS, -1000, 1000)
    out_fp = FixedPoint(FRAC_BITS + WEIGHT_BITS, -(2.0**30), 2.0**30)
    party = await LocalDeployment.load(directory).connect(index, timeout_s=300.0)
    results = []
    try:
        for n in sizes:
            values, codes = data(n)
            sid = hashlib.sha256(f"vs-mpyc-{n}".encode()).digest()[:16]
            async with party.session(sid) as s:
                mine = index == 0
                xs = await arith.input_from(s, 0, fp.encode(values) if mine else None, (n,))
                cs = await arith.input_from(s, 0, as_ring(codes) if mine else None, (n,))
                best: dict[str, float] = {}
                ok = True
                for _ in range(3 if n <= 1000 else 1):
                    t0 = time.perf_counter()
                    med = await arith.open_(s, await sort.median(s, xs, KEY_BITS, WEIGHT_BITS))
                    best["median"] = min(best.get("median", 1e9), time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    table = await arith.open_(s, await groupby.count_by(s, cs, range(LEVELS)))
                    best["frequency"] = min(best.get("frequency", 1e9),
                                            time.perf_counter() - t0)
                    ok = ok and abs(float(out_fp.decode(med)[0]) - float(np.median(values))) \
                        < 1e-3
                    ok = ok and table.tolist() == np.bincount(codes, minlength=LEVELS).tolist()
                results.append({"n": n, **best, "correct": ok})
        print(json.dumps(results), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    finally:
        await party.close()


def run_engine(sizes: list[int]) -> list[dict[str, Any]]:
    from mpc.local import LocalDeployment

    with tempfile.TemporaryDirectory(prefix="dic-vs-mpyc-") as tmp:
        LocalDeployment.create(Path(tmp))
        procs = [subprocess.Popen(
            [sys.executable, __file__, "--engine-party", str(i), "--dir", tmp,
             "--sizes", ",".join(map(str, sizes))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(3)]
        lines = []
        for p in procs:
            assert p.stdout is not None
            lines.append(p.stdout.readline())
        for p in procs:  # every party has its results: now they may close their channels
            p.communicate("done\n", timeout=60)
        if any(not line for line in lines) or any(p.returncode != 0 for p in procs):
            raise SystemExit("an engine party failed")
    per_party = [json.loads(line) for line in lines]
    merged = []
    for k, n in enumerate(sizes):
        rows = [pp[k] for pp in per_party]
        merged.append({"n": n,
                       "median_s": round(max(r["median"] for r in rows), 5),
                       "frequency_s": round(max(r["frequency"] for r in rows), 5),
                       "correct": all(r["correct"] for r in rows)})
    return merged


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--mpyc-worker":
        op, n = sys.argv[2], int(sys.argv[3])
        sys.argv = [sys.argv[0], *sys.argv[4:]]  # leave MPyC its own options
        mpyc_worker(op, n)
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print only the JSON result line")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--mpyc-cap-s", type=float, default=60.0,
                        help="stop a MPyC run after this many seconds")
    parser.add_argument("--engine-party", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]
    if args.engine_party is not None:
        asyncio.run(engine_party(args.engine_party, args.dir, sizes))
        return 0
    t0 = time.perf_counter()
    ours = run_engine(sizes)
    rows = []
    for mine in ours:
        n = mine["n"]
        row: dict[str, Any] = {"n": n}
        for op, key in (("median", "median_s"), ("frequency", "frequency_s")):
            theirs = run_mpyc(op, n, args.mpyc_cap_s)
            row[op] = {
                "engine_s": mine[key],
                "mpyc_s": theirs["seconds"],
                "mpyc_capped": theirs["capped"],
                "speedup": round(theirs["seconds"] / mine[key], 1),
                "speedup_is_lower_bound": theirs["capped"],
                "engine_correct": mine["correct"],
                "mpyc_correct": theirs["correct"],
            }
            if not args.json:
                print(f"n={n:>6} {op:>9}: engine {mine[key]:8.4f} s, MPyC "
                      f"{'>=' if theirs['capped'] else ''}{theirs['seconds']:8.3f} s, "
                      f"x{row[op]['speedup']}", flush=True)
        rows.append(row)
    result = {
        "benchmark": "vs_mpyc",
        "mpyc_version": "0.11",
        "engine_transport": "TLS 1.3, mutual auth, 127.0.0.1, one process per party",
        "mpyc_transport": "plain TCP, 127.0.0.1, one process per party (-M3 -I i)",
        "mpyc_cap_s": args.mpyc_cap_s,
        "cpus": os.cpu_count(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "results": rows,
        "wall_s": round(time.perf_counter() - t0, 1),
        "correct": all(r[op]["engine_correct"] and r[op]["mpyc_correct"] is not False
                       for r in rows for op in ("median", "frequency")),
    }
    print(json.dumps(result))
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
