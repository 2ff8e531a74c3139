"""Benchmark of the MPC engine core: three real party processes on 127.0.0.1, mutual TLS.

For each n: input sharing by one party (share + distribute), one multiplication round,
a dot product, an opening to all parties, bytes sent per party; every result is checked
against plaintext. ``mul_cpu_s_per_party`` is each party's CPU time (user + system, mean
over the repetitions) per multiplication, which other processes' load does not inflate.
The parties run with the image's allocator settings (``--default-malloc``: glibc's).
``--channels pool`` (the default; what the nodes use) runs each size as a session on one
:class:`mpc.mux.ChannelPool` per party (one connection per peer pair, frames chunked);
``--channels session`` on the per-session connections of :class:`mpc.channels.TlsChannels`.
Prints one JSON object on its last line.

    .venv/bin/python benchmarks/mpc_ops.py --json [--sizes 48,10000,1000000] [--channels session]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _harness import party_env, timed  # benchmarks/ is on sys.path when run as a script

from mpc.local import LocalDeployment
from mpc.mux import ChannelPool
from mpc.protocols import arith
from mpc.ring import as_ring, to_signed
from mpc.session import Party, Session
from mpc.sharing import share

DEFAULT_SIZES = (48, 10_000, 1_000_000)


def _reps(n: int) -> int:
    return 50 if n <= 1000 else 10 if n <= 100_000 else 5


async def _measure(s: Session, n: int) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    x = rng.integers(-(2**20), 2**20, n)
    y = rng.integers(-(2**20), 2**20, n)
    sent0 = sum(s.channels.bytes_sent.values())
    t0 = time.perf_counter()
    if s.party == 0:
        share(as_ring(x))  # the dealer's local cost (the connector's side)
    dealer_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    xs = await arith.input_from(s, 0, as_ring(x) if s.party == 0 else None, (n,))
    ys = await arith.input_from(s, 0, as_ring(y) if s.party == 0 else None, (n,))
    distribute_s = (time.perf_counter() - t0) / 2
    reps = _reps(n)
    await arith.mul(s, xs, ys)  # warm-up
    cpu0 = time.process_time()
    mul_s, product = await timed(reps, lambda: arith.mul(s, xs, ys))
    mul_cpu_s = (time.process_time() - cpu0) / reps
    dot_s, dotted = await timed(reps, lambda: arith.dot(s, xs, ys))
    open_s, opened = await timed(reps, lambda: arith.open_(s, product))
    opened_dot = await arith.open_(s, dotted)
    correct = bool(np.array_equal(to_signed(opened), x * y)
                   and int(to_signed(opened_dot)) == int(np.dot(x, y)))
    return {
        "n": n,
        "share_s": dealer_s,
        "share_distribute_s": distribute_s + dealer_s,
        "mul_round_s": mul_s,
        "mul_elements_per_s": n / mul_s,
        "mul_cpu_s": mul_cpu_s,
        "dot_s": dot_s,
        "reveal_s": open_s,
        "bytes_sent": sum(s.channels.bytes_sent.values()) - sent0,
        "correct": correct,
    }


async def _pooled_main(index: int, directory: Path, sizes: list[int]) -> dict[str, Any]:
    deployment = LocalDeployment.load(directory)
    pool = ChannelPool(index, deployment.peers, deployment.tls(index))
    await pool.start()
    results = []
    try:
        for n in sizes:
            sid = hashlib.sha256(f"bench-{n}".encode()).digest()[:16]
            party = Party(await pool.open(sid, 60.0), 120.0)
            async with party.session(sid) as s:
                results.append(await _measure(s, n))
            await party.close()
    finally:
        await pool.close()
    return {"party": index, "results": results}


async def _party_main(index: int, directory: Path, sizes: list[int]) -> dict[str, Any]:
    party = await LocalDeployment.load(directory).connect(index, timeout_s=120.0)
    results = []
    try:
        for n in sizes:
            sid = hashlib.sha256(f"bench-{n}".encode()).digest()[:16]
            async with party.session(sid) as s:
                results.append(await _measure(s, n))
    finally:
        await party.close()
    return {"party": index, "results": results}


def _combine(outputs: list[dict[str, Any]], sizes: list[int], wall_s: float,
             channels: str) -> dict[str, Any]:
    per_n = []
    for k, n in enumerate(sizes):
        rows = [o["results"][k] for o in outputs]
        entry: dict[str, Any] = {"n": n}
        for key in ("share_s", "share_distribute_s", "mul_round_s", "dot_s", "reveal_s"):
            entry[key] = round(max(r[key] for r in rows), 6)
        entry["mul_elements_per_s"] = round(n / entry["mul_round_s"])
        entry["mul_cpu_s_per_party"] = [round(r["mul_cpu_s"], 6) for r in rows]
        entry["bytes_sent_per_party"] = [r["bytes_sent"] for r in rows]
        entry["correct"] = all(r["correct"] for r in rows)
        per_n.append(entry)
    return {
        "benchmark": "mpc_ops",
        "parties": 3,
        "transport": "TLS 1.3, mutual auth, 127.0.0.1, one process per party",
        "channels": channels,
        "results": per_n,
        "wall_s": round(wall_s, 2),
        "correct": all(e["correct"] for e in per_n),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print only the JSON result line")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--default-malloc", action="store_true",
                        help="run the parties with glibc's allocator defaults, not the image's")
    parser.add_argument("--channels", choices=("pool", "session"), default="pool",
                        help="one pooled connection per peer pair, or connections per session")
    parser.add_argument("--party", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]
    if args.party is not None:
        run = _pooled_main if args.channels == "pool" else _party_main
        print(json.dumps(asyncio.run(run(args.party, args.dir, sizes))))
        return 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dic-bench-") as tmp:
        directory = Path(tmp)
        LocalDeployment.create(directory)
        procs = [subprocess.Popen([sys.executable, __file__, "--party", str(i), "--dir", tmp,
                                   "--sizes", args.sizes, "--channels", args.channels],
                                  stdout=subprocess.PIPE, text=True,
                                  env=party_env(args.default_malloc))
                 for i in range(3)]
        outputs = []
        for p in procs:
            out, _ = p.communicate(timeout=600)
            if p.returncode != 0:
                raise SystemExit(f"party process failed with exit code {p.returncode}")
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    result = _combine(outputs, sizes, time.perf_counter() - t0, args.channels)
    result["allocator"] = "glibc defaults" if args.default_malloc else "image (Dockerfile)"
    if not args.json:
        for e in result["results"]:
            print(f"n={e['n']:>9}: mul {e['mul_round_s'] * 1e3:8.2f} ms "
                  f"({e['mul_elements_per_s'] / 1e6:6.2f} M/s), correct={e['correct']}")
    print(json.dumps(result))
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
