"""What disclosure control costs inside one analysis: gates, complements, the release ledger.

Three parties in one process over loopback channels (no TLS, so this is the MPC and the
bookkeeping, not the network), the pilot's shape: two sites of ``--rows`` rows each, a
categorical with 4 levels and 2 missing values. For ``frequency`` it measures

* ``frequency_ms``: the pooled table with an empty ledger;
* ``frequency_one_site_ledger_ms``: one site's table with the pooled release on the ledger,
  so the other site's cells are derivable and checked;
* ``frequency_one_site_ms``: the same without the ledger (interleaved with the previous);
* ``ledger_check_ms``: the median of the paired differences (the ledger check itself);
* ``count_ms``, ``median_ms``: the per-contributor, pooled and complement gates and the rest.

Prints progress lines and one JSON object on the last line. Usage:
``.venv/bin/python benchmarks/disclosure.py [--rows 24] [--reps 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import _harness  # noqa: F401  (this checkout's dic_connector, not the virtualenv's)
from _harness import timed

from dic_connector.node.analyses.base import Analysis, Inputs
from dic_connector.node.analyses.catalog import get_analysis
from dic_connector.node.analyses.disclosure import Release, Rules
from dic_connector.node.analyses.ledger import Ledger, Released
from mpc.session import Session, run_local

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.dic_connector.node.analyses.support import Table

LEVELS = ["CR", "PR", "SD", "PD"]


def pilot_table(rows: int) -> tuple[Table, tuple[tuple[str, int], ...]]:
    pattern = ["CR"] * 5 + ["PR"] * 7 + ["SD"] * 10 + ["PD"] * 2
    values: list[str | None] = [pattern[i % len(pattern)] for i in range(2 * rows)]
    values[0] = values[rows] = None  # one missing value per site
    table = Table().categorical("lc", LEVELS, values)
    table.numeric("age", [38 + i % 54 for i in range(2 * rows)], minimum=0, maximum=120)
    return table, (("tm", rows), ("tr", rows))


async def _run(analysis: Analysis, inputs: list[Inputs], parameters: dict[str, Any],
               ledgers: list[Ledger]) -> list[Release]:
    async def program(s: Session, mine: Inputs) -> Release:
        return await analysis.run(s, mine, parameters, Rules.of(5), ledgers[s.party])

    return list(await run_local(program, inputs))


def _with(inputs: list[Inputs], contributors: tuple[str, ...]) -> list[Inputs]:
    return [Inputs(i.columns, i.manifest, i.segments, contributors) for i in inputs]


async def measure(rows: int, reps: int) -> dict[str, Any]:
    table, sites = pilot_table(rows)
    pooled = _with(table.inputs(sites), ("tm/v1", "tr/v1"))
    empty = [Ledger()] * 3
    frequency = get_analysis("frequency")
    out: dict[str, Any] = {}
    seconds, releases = await timed(reps, lambda: _run(frequency, pooled, {"column": "lc"},
                                                       empty))
    out["frequency_ms"] = round(seconds * 1000, 2)
    ledgers = []
    for release in releases:
        assert release.recorded is not None
        ledgers.append(Ledger((Released("pooled", release.recorded.cells,
                                        release.recorded.opened, ("tm/v1", "tr/v1"),
                                        release.recorded.counts),)))
    tm_alone = _with(Table().categorical("lc", LEVELS, _site_values(table, rows)).inputs(
        (("tm", rows),)), ("tm/v1",))
    with_ledger, without = [], []
    for _ in range(reps):  # interleaved, so that drift of the machine hits both alike
        with_ledger.append((await timed(1, lambda: _run(frequency, tm_alone,
                                                        {"column": "lc"}, ledgers)))[0])
        without.append((await timed(1, lambda: _run(frequency, tm_alone,
                                                    {"column": "lc"}, empty)))[0])
    out["frequency_one_site_ledger_ms"] = round(statistics.median(with_ledger) * 1000, 2)
    out["frequency_one_site_ms"] = round(statistics.median(without) * 1000, 2)
    out["ledger_check_ms"] = round(statistics.median(
        [(a - b) * 1000 for a, b in zip(with_ledger, without, strict=True)]), 2)
    for name, parameters in (("count", {"column": "lc"}), ("median", {"column": "age"})):
        analysis = get_analysis(name)
        seconds, _ = await timed(reps, lambda a=analysis, p=parameters: _run(
            a, pooled, p, empty))
        out[f"{name}_ms"] = round(seconds * 1000, 2)
    return out


def _site_values(table: Table, rows: int) -> list[str | None]:
    codes, present = table.values["lc"][:rows], table.values["lc__present"][:rows]
    return [LEVELS[int(c)] if p else None for c, p in zip(codes, present, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=24, help="rows per site")
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    result = asyncio.run(measure(args.rows, args.reps))
    print(f"{2 * args.rows} rows: {result}", flush=True)
    print(json.dumps({"benchmark": "disclosure", "rows_per_site": args.rows,
                      "cpus": os.cpu_count(), "load_average_1min":
                      round(os.getloadavg()[0], 2), **result}, sort_keys=True))


if __name__ == "__main__":
    main()
