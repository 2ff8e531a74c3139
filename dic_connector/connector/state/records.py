"""The values the state store hands out: a run's status, its counts, the whole record.

Everything here is a count, a name or a time. ``RunCounts.rejected`` counts rejected rows per
``"column/value_class/rule"`` (the column of the mapping, the class of value that broke the
rule, e.g. ``missing`` or ``out_of_range``, and the rule's name): where rows were lost,
never which rows or what they held.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

V = TypeVar("V")


class RunStatus(StrEnum):
    """Where a connector run is, or how it ended."""

    #: started and not finished (or its process died: see ``StateStore.mark_interrupted``)
    RUNNING = "running"
    #: a new dataset version was committed on all three nodes
    SUCCEEDED = "succeeded"
    #: the source had nothing new; no version was uploaded
    UNCHANGED = "unchanged"
    #: the run stopped on an error; watermarks did not move
    FAILED = "failed"
    #: the process ended (crash, kill, restart) before the run finished
    INTERRUPTED = "interrupted"


def _frozen(mapping: Mapping[str, V]) -> Mapping[str, V]:
    """A read-only copy: a record does not change when the caller's dict does."""
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class RunCounts:
    """What one run read, kept, rejected and shared: counts only."""

    resources_read: int = 0
    patients: int = 0
    patients_excluded: int = 0
    rows_rejected: int = 0
    rows_shared: int = 0
    columns: int = 0
    bytes_per_node: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)  # "column/value_class/rule" -> rows

    def __post_init__(self) -> None:
        object.__setattr__(self, "rejected", _frozen(self.rejected))


@dataclass(frozen=True)
class RunRecord:
    """One row of the run history."""

    id: int
    dataset: str
    trigger: str
    status: RunStatus
    started_at: dt.datetime
    finished_at: dt.datetime | None
    counts: RunCounts
    version_id: uuid.UUID | None
    error: str | None
    stage_seconds: Mapping[str, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage_seconds", _frozen(self.stage_seconds))
