"""Per-file pass/fail counts of the SQL-on-FHIR conformance suite, in the terminal summary.

``test_conformance.py`` names its cases ``test_case[<file>::<title>]``. At the end of the
session ``pytest_terminal_summary`` reads the reporter's own statistics and prints
``N passed, N failed`` per suite file, whatever ``-q``/``-s`` say.
"""

from __future__ import annotations

from collections import Counter

import pytest

_CASE = "test_conformance.py::test_case["


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counts: dict[str, Counter[str]] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if _CASE not in nodeid:
                continue
            if outcome == "passed" and getattr(report, "when", "call") != "call":
                continue
            suite_file = nodeid.split(_CASE, 1)[1].split("::", 1)[0]
            counts.setdefault(suite_file, Counter())[
                "failed" if outcome == "error" else outcome] += 1
    if not counts:
        return
    terminalreporter.section("SQL-on-FHIR conformance, per file")
    total: Counter[str] = Counter()
    for suite_file in sorted(counts):
        c = counts[suite_file]
        total.update(c)
        skipped = f", {c['skipped']} skipped" if c["skipped"] else ""
        terminalreporter.write_line(
            f"{suite_file:<24} {c['passed']} passed, {c['failed']} failed{skipped}")
    terminalreporter.write_line(
        f"{'all files':<24} {total['passed']} passed, {total['failed']} failed")
