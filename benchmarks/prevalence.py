"""What ``prevalence`` costs at the PHAME scale: diabetes by zip code x sex x age group.

Three parties in one process over loopback channels (no TLS: the MPC and the disclosure
bookkeeping, not the network; the three parties share this process's cores, so a node of
a real deployment does about a third of the work measured here). Synthetic rows over
``--sites`` sites: a zip code of ``--zips`` levels (skewed, so some cells are small), sex
(2 levels), an age group of ``--ages`` levels and a boolean case flag whose prevalence
grows with age. The inputs hold only the columns the recipe reads (the level codes and the
flag), as a node loads them. Checks the opened cells against numpy and reports

* ``seconds``: wall time of one run (population gate, packed group-by, unpacking, primary
  and secondary suppression, openings);
* ``cpu_seconds``: CPU time of the process in that run (all three parties run in this one
  thread, so on a loaded machine wall time exceeds it; a third of it is one node's share);
* ``peak_rss_mb``: the process's peak resident memory (three parties' shares included);
* ``cells``, ``opened``: cells of the table and how many opened; ``exact``: whether every
  opened denominator and numerator equals numpy's (with ``--perturbation D,V``, the
  cell-key method: whether each is within D of numpy's).

Prints progress lines and one JSON object on the last line. Usage:
``.venv/bin/python benchmarks/prevalence.py [--rows 2200000] [--zips 100] [--ages 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import time
from typing import Any

import _harness  # noqa: F401  (this checkout's dic_connector, not the virtualenv's)
import numpy as np

from dic_connector.node.analyses.base import Inputs
from dic_connector.node.analyses.disclosure import Release, Rules
from dic_connector.node.analyses.manifest import parse_manifest
from dic_connector.node.analyses.perturbation import PairSecrets, record_keys
from dic_connector.node.analyses.prevalence import Prevalence
from dic_connector.node.analyses.ptable import CellKeyParams
from mpc.ring import as_ring
from mpc.session import Session, run_local
from mpc.sharing import share


def synthetic(rows: int, zips: int, ages: int, seed: int) -> dict[str, np.ndarray]:
    """Level codes of zip, sex and age group, and the case flag (0/1)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, zips + 1)
    zip_code = rng.choice(zips, rows, p=weights / weights.sum())
    sex = rng.integers(0, 2, rows)
    age = rng.integers(0, ages, rows)
    case = rng.random(rows) < 0.02 + 0.2 * age / max(1, ages - 1)
    return {"zip": zip_code, "sex": sex, "age": age, "dm": case.astype(np.int64)}


def manifest(zips: int, ages: int) -> list[dict[str, Any]]:
    return [
        {"name": "zip", "kind": "categorical", "column": "zip",
         "levels": [f"{i:05d}" for i in range(zips)]},
        {"name": "sex", "kind": "categorical", "column": "sex", "levels": ["female", "male"]},
        {"name": "age", "kind": "categorical", "column": "age",
         "levels": [f"{10 * i}-{10 * i + 9}" for i in range(ages)]},
        {"name": "dm", "kind": "boolean", "column": "dm"},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_200_000)
    parser.add_argument("--zips", type=int, default=100)
    parser.add_argument("--ages", type=int, default=10)
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--k", type=int, default=11)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--perturbation", metavar="D,V", default=None,
                        help="cell-key perturbation with max noise D and variance V "
                             "(record keys from random pair secrets; 'exact' then checks "
                             "the true counts are within D of the opened ones)")
    args = parser.parse_args()
    columns = synthetic(args.rows, args.zips, args.ages, args.seed)
    base, extra = divmod(args.rows, args.sites)
    segments = tuple((f"site-{i}", base + (1 if i < extra else 0)) for i in range(args.sites))
    entries = manifest(args.zips, args.ages)
    parsed = parse_manifest(entries)
    views = {name: share(as_ring(values.astype(np.int64))) for name, values in columns.items()}
    inputs = [Inputs({name: v[i] for name, v in views.items()}, parsed, segments)
              for i in range(3)]
    params: CellKeyParams | None = None
    if args.perturbation is not None:
        d, v = args.perturbation.split(",")
        params = CellKeyParams(int(d), float(v))
        pairs = [os.urandom(32) for _ in range(3)]
        contributors = tuple(f"{name}/v1" for name, _ in segments)
        rows = tuple(count for _, count in segments)
        inputs = [dataclasses.replace(x, record_keys=record_keys(
            PairSecrets(p, pairs[p], pairs[(p + 1) % 3]), contributors, rows))
            for p, x in enumerate(inputs)]
    parameters = {"numerator": "dm", "by": ["zip", "sex", "age"]}
    rules = Rules.of(args.k, perturbation=params)
    analysis = Prevalence()
    print(f"prevalence of {args.rows} rows over {args.sites} site(s), "
          f"{args.zips} x 2 x {args.ages} cells, k = {args.k}", flush=True)

    async def program(s: Session, mine: Inputs) -> Release:
        return await analysis.run(s, mine, parameters, rules)

    start, cpu = time.perf_counter(), time.process_time()
    releases = asyncio.run(run_local(program, inputs))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    cells = releases[0].aggregates["cells"]
    shape = (args.zips, 2, args.ages)
    flat = np.ravel_multi_index((columns["zip"], columns["sex"], columns["age"]), shape)
    den = np.bincount(flat, minlength=len(cells))
    num = np.bincount(flat, weights=columns["dm"], minlength=len(cells)).astype(np.int64)
    opened = [i for i, c in enumerate(cells) if c["denominator"] is not None]
    noise = 0 if params is None else params.max_noise
    exact = all(abs(cells[i]["denominator"] - den[i]) <= noise
                and abs(cells[i]["numerator"] - num[i]) <= noise for i in opened)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{seconds:.1f} s, {len(opened)} of {len(cells)} cells opened, "
          f"peak RSS {peak:.0f} MB", flush=True)
    print(json.dumps({"rows": args.rows, "sites": args.sites, "cells": len(cells),
                      "opened": len(opened), "k": args.k, "seconds": round(seconds, 2),
                      "cpu_seconds": round(cpu, 2),
                      "peak_rss_mb": round(peak), "exact": exact,
                      "perturbation": None if params is None else params.as_json(),
                      "openings": len(releases[0].transcript)}))


if __name__ == "__main__":
    main()
