"""Records are read-only snapshots: a caller's dict changing later does not change them."""

from __future__ import annotations

import datetime as dt

import pytest

from dic_connector.connector.state.records import RunCounts, RunRecord, RunStatus


def test_counts_copy_and_freeze_their_rejections() -> None:
    rejected = {"age/out_of_range/range": 2}
    counts = RunCounts(rows_rejected=2, rejected=rejected)
    rejected["age/out_of_range/range"] = 5
    assert counts.rejected == {"age/out_of_range/range": 2}
    with pytest.raises(TypeError):
        counts.rejected["x"] = 1  # type: ignore[index]
    assert RunCounts() == RunCounts(rejected={})


def test_record_freezes_stage_seconds_and_status_is_text() -> None:
    stages = {"source": 1.0}
    record = RunRecord(id=1, dataset="a", trigger="manual", status=RunStatus.SUCCEEDED,
                       started_at=dt.datetime.now(dt.UTC), finished_at=None, counts=RunCounts(),
                       version_id=None, error=None, stage_seconds=stages)
    stages["upload"] = 2.0
    assert record.stage_seconds == {"source": 1.0}
    assert record.status == "succeeded" and str(RunStatus.INTERRUPTED) == "interrupted"
