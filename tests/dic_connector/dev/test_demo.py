"""The demo's workspace: a fresh directory or an empty one the user names, removed (or
emptied) afterwards unless ``--keep``, whether the demo succeeded or failed; the checks
against PILOT.md and the JSON report, from results as the nodes return them. The whole demo
runs in ``tests/e2e/test_demo.py``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from dic_connector.dev.demo import (
    QUESTIONS,
    Answer,
    DemoResult,
    Question,
    answer_json,
    format_result,
    format_timing,
    matches,
    report_json,
    workspace_dir,
    write_plots,
)
from dic_connector.dev.report import Timing, json_line
from dic_connector.errors import DemoError


def test_a_temporary_workspace_is_removed_unless_kept() -> None:
    with workspace_dir(None, keep=False) as work:
        (work / "nodes").mkdir()
        (work / "nodes" / "node-0.db").write_bytes(b"x")
    assert not work.exists()
    with workspace_dir(None, keep=True) as kept:
        (kept / "f").write_text("x")
    assert (kept / "f").read_text() == "x"


@pytest.mark.parametrize("existing", [True, False])
def test_a_named_workspace_is_emptied_or_removed_even_when_the_demo_fails(
    tmp_path: Path, existing: bool
) -> None:
    named = tmp_path / "demo"
    if existing:
        named.mkdir()
    with pytest.raises(RuntimeError, match="step failed"), workspace_dir(named, keep=False) as work:
        (work / "logs").mkdir()
        (work / "logs" / "node-0.log").write_text("x")
        (work / "deployment.yaml").write_text("x")
        raise RuntimeError("step failed")
    # a directory the user made stays (empty); one the demo made is gone
    assert named.exists() is existing
    if existing:
        assert list(named.iterdir()) == []


def test_a_non_empty_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("mine")
    with (
        pytest.raises(DemoError, match="must be an empty directory"),
        workspace_dir(tmp_path, keep=False),
    ):
        pass  # pragma: no cover - never entered
    assert (tmp_path / "something").read_text() == "mine"


# -- the report, built from results as the nodes return them (no processes) -------------


def question(label: str) -> Question:
    return next(q for q in QUESTIONS if q.label == label)


LOGRANK = "logrank(ecog) [tm+tr]"
REFUSED = {
    "suppressed": True,
    "reason": "group 'ECOG 2': site(s) 'tr' contribute fewer than "
    "5 rows (min_subset_size) to the query set",
}


def test_quantiles_are_checked_value_by_value() -> None:
    q = question("quantiles(age) [tm]")
    right = {
        "n": 24,
        "probabilities": ["0", "0.25", "0.5", "0.75", "1"],
        "quantiles": [38.0, 62.5, 66.0, 72.25, 91.0],
    }
    assert matches(q, right, 5, 24) == (True, "same")
    assert format_result(q, right) == "38, 62.5, 66, 72.25, 91 years (n = 24)"
    wrong = {**right, "quantiles": [38.0, 62.5, 66.0, 72.0, 91.0]}
    assert matches(q, wrong, 5, 24) == (False, "DIFFERENT")


def test_the_log_rank_is_withheld_by_min_subset_size_and_checked_when_opened() -> None:
    q = question(LOGRANK)
    agrees, verdict = matches(q, REFUSED, 5, 48)
    assert agrees is None and verdict.startswith("withheld") and "min_subset_size" in verdict
    # any other refusal is a difference: the cohort is built so that only that rule applies
    other = {"suppressed": True, "reason": "fewer than 5 rows (min_cell_count)"}
    assert matches(q, other, 5, 48)[0] is False
    opened = {
        "chi2": 1.8041,
        "p": 0.1792,
        "df": 1,
        "groups": [{"group": "ECOG 0-1", "n": 40}, {"group": "ECOG 2", "n": 8}],
    }
    assert matches(q, opened, 5, 48) == (True, "same")
    assert format_result(q, opened) == "chi2 = 1.80, p = 0.179 (ECOG 0-1 n = 40, ECOG 2 n = 8)"
    assert matches(q, {**opened, "chi2": 2.4, "p": 0.12}, 5, 48)[0] is False
    assert matches(q, {**opened, "chi2": None, "p": None}, 5, 48)[0] is False


def test_a_survival_by_groups_shows_each_curve_and_each_refusal_by_name() -> None:
    q = question("survival(ecog) [tm+tr]")
    assert [g["label"] for g in q.parameters["groups"]] == ["ECOG 0-1", "ECOG 2"]
    aggregates = {
        "groups": [
            {
                "group": "ECOG 0-1",
                "n": 40,
                "times": [12.0, 24.0],
                "survival": [0.7408, None],
                "median": 25.3,
            },
            {"group": "ECOG 2", **REFUSED},
        ]
    }
    assert format_result(q, aggregates) == (
        "ECOG 0-1: median 25.3 months, S(12) = 0.741, S(24) = withheld (n = 40); "
        f"ECOG 2: refused: {REFUSED['reason']}"
    )
    assert matches(q, aggregates, 5, 48) == (None, "")  # PILOT.md publishes no such curve
    pooled = question("survival(follow_up) [tm+tr]")
    one = {
        "groups": [
            {
                "group": None,
                "n": 48,
                "times": [12.0, 24.0],
                "survival": [0.733, 0.481],
                "median": 19.0,
            }
        ]
    }
    assert format_result(pooled, one) == "median 19 months, S(12) = 0.733, S(24) = 0.481 (n = 48)"
    assert matches(pooled, one, 5, 48) == (True, "same")


def answer(label: str, aggregates: dict[str, Any], timing: Timing | None = None) -> Answer:
    q = question(label)
    rows = 48 if len(q.sites) == 2 else 24
    agrees, verdict = matches(q, aggregates, 5, rows)
    return Answer(q, f"id-{label}", aggregates, agrees, verdict, timing)


def test_an_answer_in_the_report_carries_its_check_published_value_and_timings() -> None:
    median = answer(
        "median(age) [tm+tr]",
        {"n": 48, "median": 66.0},
        Timing(submitted=1.0, running=3.0, completed=3.4),
    )
    entry = answer_json(median)
    assert entry["analysis"] == "median" and entry["sites"] == ["tm", "tr"]
    assert entry["parameters"] == {"column": "age"} and entry["result"] == "66 years (n = 48)"
    assert entry["published"]["value"] == 66.0 and "quantile" in entry["published"]["source"]
    assert (entry["check"], entry["matched"]) == ("same", True)
    assert entry["timing"] == {
        "submitted_to_completed_s": 2.4,
        "running_to_completed_s": 0.4,
        "sharemind_function": "median",
        "sharemind_s": 0.85,
    }
    assert format_timing(median) == (
        "0.40 s computing (Sharemind's median: 0.85 s), 2.4 s after submission"
    )
    instant = answer("median(age) [tm]", {"n": 24, "median": 66.0}, Timing(1.0, 2.0, 2.0))
    assert format_timing(instant).startswith("< 0.05 s computing (Sharemind's median: 0.68 s)")
    assert format_timing(answer("median(age) [tm]", {"n": 24, "median": 66.0})) == ""
    logrank = answer_json(answer(LOGRANK, REFUSED))
    assert logrank["published"]["value"] == {"chi2": 1.8, "p": 0.18}
    assert (logrank["check"], logrank["matched"]) == ("withheld", None)
    assert logrank["result"].startswith("refused: group 'ECOG 2'")
    assert (
        answer_json(answer("mean(bed10) [tm+tr]", {"n": 48, "sum": 3424.3, "mean": 71.34}))[
            "published"
        ]
        is None
    )


def test_the_report_sums_up_and_is_one_line_of_json(tmp_path: Path) -> None:
    result = DemoResult(tmp_path, keep=True, exit_codes=[0, 0, 0])
    result.answers = [
        answer("median(age) [tm+tr]", {"n": 48, "median": 66.0}),
        answer("median(age) [tm]", {"n": 24, "median": 65.0}),
        answer(LOGRANK, REFUSED),
        answer("mean(bed10) [tm+tr]", {"n": 48, "sum": 3424.3, "mean": 71.34}),
    ]
    report = report_json(result)
    assert report["ok"] is False  # median(age) [tm] differs
    assert report["summary"] == {"same": 1, "different": 1, "withheld": 1, "not published": 1}
    assert report["node_exit_codes"] == [0, 0, 0]
    assert report["audit_intact"] is False  # never verified
    assert report["workspace"] == str(tmp_path) and report["kept"] is True
    assert "not computed by the demo" in report["plaintext_check"]
    assert json.loads(json_line(report)) == report


def test_plots_are_drawn_for_the_results_that_have_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``dic demo --plots DIR``: the KM by ECOG (its refused group named in the legend) and
    the frequency bars as PNG, named by their place in the report; a count has no plot, a
    refused frequency is named and skipped; without matplotlib a one-line notice only."""
    by_ecog = answer("survival(ecog) [tm+tr]", {"time": "follow_up", "event": "death",
                                                "groups": [
        {"group": "ECOG 0-1", "n": 40, "times": [12.0, 24.0], "survival": [0.741, None],
         "median": 25.3, "median_ci": None},
        {"group": "ECOG 2", "suppressed": True, "reason": "min_subset_size"}]})
    answers = [answer("median(age) [tm+tr]", {"n": 48, "median": 66.0}), by_ecog,
               answer("frequency(ecog) [tm+tr]", {"levels": {"0": 18, "1": 22, "2": 8,
                                                             "3": "<5", "4": "<5"}}),
               answer("frequency(gender) [tm+tr]", {"suppressed": True, "reason": "k"})]
    said: list[str] = []
    written = write_plots(answers, tmp_path / "plots", said.append)
    assert [p.name for p in written] == ["01-survival-ecog-tm-tr.png",
                                         "02-frequency-ecog-tm-tr.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert said[0].startswith("no plot of frequency(gender) [tm+tr]: the frequency result "
                              "was refused")
    assert said[-1] == (f"2 plot(s) written to {tmp_path / 'plots'}: "
                        "01-survival-ecog-tm-tr.png, 02-frequency-ecog-tm-tr.png")

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    said.clear()
    assert write_plots(answers, tmp_path / "none", said.append) == []
    assert said == ["plots skipped: matplotlib is not installed "
                    "(pip install 'dic-connector[plots]')"]
    assert not (tmp_path / "none").exists()
