"""Helpers for the analyses tests: plaintext tables, shares, loopback runs, an opening spy."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from dic_connector.node.analyses.base import Analysis, Inputs, parse_manifest
from mpc.protocols import arith, boolean, sort
from mpc.ring import as_ring, to_signed
from mpc.session import Session, run_local
from mpc.sharing import AShare, share


@dataclass
class Table:
    """A plaintext encoded table: manifest entries and one int64 vector per matrix column."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    values: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(next(iter(self.values.values()))) if self.values else 0

    def _add(self, entry: dict[str, Any], values: Sequence[int]) -> None:
        self.entries.append(entry)
        self.values[entry["name"]] = np.asarray(values, dtype=np.int64)

    def numeric(self, name: str, values: Sequence[int | None], scale: int = 0,
                kind: str = "numeric", present: bool | None = None,
                minimum: float | None = None, maximum: float | None = None) -> Table:
        """Encoded integers (value * 10^scale); None is missing (encoded 0, flag 0)."""
        entry: dict[str, Any] = {"name": name, "kind": kind, "column": name, "scale": scale,
                                 "unit": "1" if kind == "numeric" else "days"}
        if minimum is not None:
            entry["minimum"] = minimum
        if maximum is not None:
            entry["maximum"] = maximum
        self._add(entry, [0 if v is None else v for v in values])
        self._present(name, values, present)
        return self

    def categorical(self, name: str, levels: Sequence[str], values: Sequence[str | None],
                    present: bool | None = None) -> Table:
        self._add({"name": name, "kind": "categorical", "column": name, "scale": 0,
                   "levels": list(levels)},
                  [0 if v is None else list(levels).index(v) for v in values])
        for level in levels:
            self._add({"name": f"{name}={level}", "kind": "one_hot", "column": name,
                       "scale": 0, "level": level}, [int(v == level) for v in values])
        self._present(name, values, present)
        return self

    def _present(self, name: str, values: Sequence[Any], present: bool | None) -> None:
        if present is None:
            present = any(v is None for v in values)
        if present:
            self._add({"name": f"{name}__present", "kind": "present", "column": name,
                       "scale": 0}, [int(v is not None) for v in values])

    def inputs(self, segments: tuple[tuple[str, int], ...] | None = None) -> list[Inputs]:
        """The three parties' Inputs (every column shared)."""
        manifest = parse_manifest(self.entries)
        segments = segments if segments is not None else (("site", self.rows),)
        views: dict[str, tuple[AShare, AShare, AShare]] = {
            name: share(as_ring(v)) for name, v in self.values.items()}
        return [Inputs({name: v[i] for name, v in views.items()}, manifest, segments)
                for i in range(3)]


def run(analysis: Analysis, table: Table, parameters: dict[str, Any], k: int,
        segments: tuple[tuple[str, int], ...] | None = None) -> dict[str, Any]:
    """Run on three loopback parties; assert the three results are equal; return one."""

    async def program(s: Session, inputs: Inputs) -> dict[str, Any]:
        return await analysis.run(s, inputs, parameters, k)

    results: list[dict[str, Any]] = asyncio.run(run_local(program, table.inputs(segments)))
    assert results[0] == results[1] == results[2]
    return results[0]


@dataclass
class Opened:
    """What party 0 saw opened, by mechanism: arithmetic values, threshold/range bits
    opened by the analyses, comparison bits opened inside the sort."""

    arith: list[list[int]] = field(default_factory=list)
    bits: list[list[int]] = field(default_factory=list)
    sort_bits: int = 0

    @property
    def arith_values(self) -> list[int]:
        return [v for batch in self.arith for v in batch]


def spy_openings(monkeypatch: pytest.MonkeyPatch) -> Opened:
    """Record every opening (party 0's view; all parties open the same values). The only
    opening primitives are arith.open_, boolean.open_bool (also imported by sort) and
    arith.open_to, which the analyses must never use."""
    seen = Opened()
    real_open, real_bool = arith.open_, boolean.open_bool

    async def open_(s: Session, x: AShare) -> Any:
        out = await real_open(s, x)
        if s.party == 0:
            seen.arith.append([int(v) for v in to_signed(out).ravel()])
        return out

    async def open_bool(s: Session, x: Any) -> Any:
        out = await real_bool(s, x)
        if s.party == 0:
            seen.bits.append([int(v) for v in (out & np.uint64(1)).ravel()])
        return out

    async def sort_open_bool(s: Session, x: Any) -> Any:
        out = await real_bool(s, x)
        if s.party == 0:
            seen.sort_bits += int(out.size)
        return out

    async def open_to(*_: Any) -> Any:
        raise AssertionError("analyses must not open to a single party")

    monkeypatch.setattr(arith, "open_", open_)
    monkeypatch.setattr(arith, "open_to", open_to)
    monkeypatch.setattr(boolean, "open_bool", open_bool)
    monkeypatch.setattr(sort, "open_bool", sort_open_bool)
    return seen
