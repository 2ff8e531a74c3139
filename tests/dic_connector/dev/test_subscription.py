"""The demo's FHIR Subscription step without processes: skipped with one line naming
``make fhir-venv`` when ``.venv-fhir`` is missing (and the demo's report stays ok); its check,
line and JSON from readings as the nodes return them. The step itself runs in
``tests/e2e/test_demo.py``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from dic_connector.dev import sekmet
from dic_connector.dev.demo import DemoResult, report_json
from dic_connector.dev.subscription import (
    LIVE_QUESTIONS,
    NEWCOMER,
    Reading,
    SubscriptionTour,
    label,
    live_feed,
    newcomer_resources,
    run_subscription_step,
)

COUNT, MEAN = (label(a, p) for a, p in LIVE_QUESTIONS)
LINEAGE = {"suppressed": True, "reason": "'age' was released before on version v1 ... "
                                         "(version lineage; min_subset_size)"}


async def test_without_the_fhir_venv_the_step_is_skipped_with_how_to_get_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sekmet, "FHIR_VENV", tmp_path / "no-venv")
    said: list[str] = []
    async with live_feed(None, tmp_path, tmp_path / "mapping.yaml",  # type: ignore[arg-type]
                         said.append) as feed:
        tour = await run_subscription_step(feed, {}, said.append, "researcher", 1, 1)
    assert tour.skipped is not None and said == []
    assert tour.line().startswith("FHIR Subscription step skipped: sekmet-fhir is not installed")
    assert "make fhir-venv" in tour.line() and "\n" not in tour.line()
    assert not (tmp_path / "sekmet").exists()
    result = DemoResult(tmp_path, subscription=tour)
    report = report_json(result)
    assert report["ok"] is True and report["subscription"] == {"skipped": tour.skipped}


def reading(version: int, n: int | None, patients: int, mean: dict[str, Any]) -> Reading:
    count = {"n": n} if n is not None else {"suppressed": True, "reason": "refused"}
    return Reading(version, f"v{version}", n or 0, patients, {COUNT: "r1", MEAN: "r2"},
                   {COUNT: count, MEAN: mean})


def tour(after_n: int | None = 25, after_patients: int = 25) -> SubscriptionTour:
    return SubscriptionTour(
        subscription="s1", added_at=dt.datetime(2026, 1, 2, 12, 0, 1, 234000, tzinfo=dt.UTC),
        notified_s=0.061, committed_s=3.94, run={"trigger": "subscription"},
        before=reading(2, 24, 24, {"n": 24, "sum": "1593", "mean": 66.375}),
        after=reading(3, after_n, after_patients, LINEAGE), seconds=11.3, setup_s=20.0)


def test_the_step_reads_as_one_line_and_one_json_object(tmp_path: Path) -> None:
    done = tour()
    assert done.check() is True
    assert done.line() == (
        "FHIR Subscription: patient added at 12:00:01.2, notified +61 ms, version 3 committed "
        "+3.9 s, count 24 -> 25; mean(age) 66.38 years (n = 24) -> refused (version lineage)")
    report = done.as_json()
    assert report["versions"] == [2, 3] and report["source_check"] is True
    assert report["added_at_utc"] == "12:00:01.234"  # a time, no date
    assert (report["notified_ms"], report["committed_s"]) == (61.0, 3.94)
    assert report["before"]["results"][MEAN]["mean"] == 66.375
    assert report["after"]["results"][MEAN] == LINEAGE
    assert "tests/e2e/test_demo.py" in report["plaintext_check"]
    result = DemoResult(tmp_path, subscription=done)
    assert report_json(result)["ok"] is True
    assert json.loads(json.dumps(report)) == report


@pytest.mark.parametrize(("after_n", "after_patients"),
                         [(24, 25), (26, 26), (25, 26), (None, 25)])
def test_a_count_that_is_not_the_servers_patients_plus_one_fails_the_check(
        tmp_path: Path, after_n: int | None, after_patients: int) -> None:
    wrong = tour(after_n, after_patients)
    assert wrong.check() is False
    assert wrong.as_json()["source_check"] is False
    assert report_json(DemoResult(tmp_path, subscription=wrong))["ok"] is False


def test_the_newcomer_has_what_the_mapping_needs_and_ids_of_its_own() -> None:
    resources = newcomer_resources()
    types = {r["resourceType"] for r in resources}
    assert {"Patient", "Condition", "Procedure", "Observation"} <= types
    assert all(r["id"].startswith(f"live-{NEWCOMER.site}-025") for r in resources)
