"""Cost of starting an MPC session: pooled channels (:class:`mpc.mux.ChannelPool`, what the
nodes use) against connections per session (:class:`mpc.channels.TlsChannels` through a
long-lived :class:`mpc.channels.SessionListener`).

Three parties in one process and event loop, mutual TLS on 127.0.0.1. For each mode and
session, alternating: the time from the three parties asking for the session's channels
until all three have agreed its keys (``Party.session`` set up: one round) and multiplied 48
elements (checked against plaintext), and the part of it spent getting the channels
(``open_ms``). Parties start their side in a shuffled order, a few hundred microseconds
apart, as three nodes do. Prints one JSON object (medians, p95, samples) on its last line.

    .venv/bin/python benchmarks/mpc_sessions.py [--sessions 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness  # noqa: F401  (this checkout's mpc, not the virtualenv's)
import numpy as np

from mpc.channels import Channels, SessionListener, TlsChannels
from mpc.local import LocalDeployment
from mpc.mux import ChannelPool
from mpc.protocols import arith
from mpc.ring import as_ring
from mpc.session import Party, new_session_id
from mpc.sharing import reconstruct, share


async def _one(open_channels: Any, rng: random.Random) -> tuple[float, float]:
    session = new_session_id()
    x = as_ring(np.arange(48) - 20)
    xs = share(x)
    order = list(range(3))
    rng.shuffle(order)
    opened: list[float] = []
    t0 = time.perf_counter()

    async def party(i: int) -> Any:
        await asyncio.sleep(0.0003 * order.index(i))
        channels: Channels = await open_channels(i, session)
        opened.append(time.perf_counter())
        p = Party(channels, 30.0)
        try:
            async with p.session(session) as s:
                return await arith.mul(s, xs[i], xs[i])
        finally:
            await p.close()

    products = await asyncio.gather(*(party(i) for i in range(3)))
    total = time.perf_counter() - t0
    if not np.array_equal(reconstruct(*products), x * x):
        raise SystemExit("wrong product")
    return total * 1e3, (max(opened) - t0) * 1e3


def _summary(samples: list[tuple[float, float]]) -> dict[str, Any]:
    totals, opens = sorted(s[0] for s in samples), sorted(s[1] for s in samples)
    return {"median_ms": round(statistics.median(totals), 2),
            "p95_ms": round(totals[int(0.95 * (len(totals) - 1))], 2),
            "open_median_ms": round(statistics.median(opens), 2),
            "samples_ms": [round(t, 2) for t in totals]}


async def run(sessions: int, directory: Path) -> dict[str, Any]:
    deployment = LocalDeployment.create(directory / "pool")
    other = LocalDeployment.create(directory / "per-session")  # ports of its own
    tls = [deployment.tls(i) for i in range(3)]
    pools = [ChannelPool(i, deployment.peers, tls[i]) for i in range(3)]
    listeners = [SessionListener(i, other.peers, other.tls(i)) for i in range(2)]
    for pool in pools:
        await pool.start()
    for listener in listeners:
        await listener.start()

    async def pooled(i: int, session: bytes) -> Channels:
        return await pools[i].open(session, 30.0)

    async def per_session(i: int, session: bytes) -> Channels:
        return await TlsChannels.connect(i, other.peers, other.tls(i), 30.0, session,
                                         listeners[i] if i < 2 else None)

    rng = random.Random(17)
    out: dict[str, list[tuple[float, float]]] = {"pool": [], "per_session": []}
    try:
        for _ in range(sessions):
            out["pool"].append(await _one(pooled, rng))
            out["per_session"].append(await _one(per_session, rng))
    finally:
        for listener in listeners:
            listener.close()
        for pool in pools:
            await pool.close()
    return {"benchmark": "mpc_sessions", "sessions": sessions,
            "load_average_1min": round(os.getloadavg()[0], 2),
            "pool": _summary(out["pool"]), "per_session": _summary(out["per_session"]),
            "pool_connections": pools[0].connections}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dic-bench-") as directory:
        print(json.dumps(asyncio.run(run(args.sessions, Path(directory)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
