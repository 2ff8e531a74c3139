"""``dic demo --json --keep`` as a user runs it: one command, three node processes, two
connectors, a researcher and two data owners; the printed results and the JSON report must
be the aggregates of the synthetic pilot data computed here in plaintext (and hence
PILOT.md's figures), with timings, and with ``--keep`` the web pages and the profiles."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test
from scipy.stats import fisher_exact

from dic_connector.client.profile import load_profile
from dic_connector.dev.demo import QUESTIONS, Question, format_result
from dic_connector.dev.report import SHAREMIND_FUNCTIONS
from dic_connector.dev.sekmet import FHIR_VENV
from dic_connector.dev.subscription import LIVE_QUESTIONS, label, newcomer_resources
from dic_connector.dev.synthetic import pilot_patients, pilot_resources
from dic_connector.encoding import EncodedTable, encode_table, validate_rows
from dic_connector.mapping import build_cohort, load_mapping
from dic_connector.node.analyses.disclosure import Rules
from tests.dic_connector.node.analyses import reference

pytestmark = [pytest.mark.e2e, pytest.mark.fhir_server]
ROOT = Path(__file__).resolve().parents[2]
K = 5  #: the nodes' default min_cell_count
#: The words by which a refusal's reason names its rule.
REFUSALS = {
    "min_subset_size": "(min_subset_size)",
    "min_cell_count": "(min_cell_count)",
    "complement": "(complement rule)",
}
RESULT = re.compile(r"^  (?P<label>\w+\(\w*\) \[[a-z+]+\])\s+-> (?P<result>.+)$")


def demo(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "dic_connector.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
        env=env,
    )


def plaintext_tables() -> dict[str, EncodedTable]:
    """Each site's encoded cohort, in the clear (what the connectors secret-share)."""
    mapping = load_mapping(ROOT / "mappings" / "pilot_adrenal.yaml")
    out = {}
    for site in ("tm", "tr"):
        clean, _, _ = validate_rows(build_cohort(mapping, pilot_resources(site)).rows, mapping)
        out[site] = encode_table(clean, mapping)
    return out


def expected(question: Question, tables: dict[str, EncodedTable]) -> str:
    """The result line the demo must print: the disclosure rules applied in plaintext
    (:mod:`tests.dic_connector.node.analyses.reference`) to the encoded tables."""
    chosen = [tables[s] for s in question.sites]
    info = {c.name: c for c in chosen[0].columns}
    segments = tuple((s, len(tables[s].values)) for s in question.sites)
    rules = Rules.of(K)

    def column(name: str) -> np.ndarray:
        return np.concatenate([t.column(name) for t in chosen])

    name = question.column or ""
    present = np.ones(sum(len(t.values) for t in chosen), dtype=bool)
    indicator = f"{name}__present" in info
    if question.column is not None and indicator:
        present = column(f"{name}__present") == 1
    if question.analysis == "survival":
        return survival_line(question, tables)
    if question.analysis == "fisher":
        return fisher_line(question, column)
    if question.analysis == "logrank":
        return logrank_line(question, tables)
    if question.analysis == "quantiles":
        return quantiles_line(
            question,
            column(name) / 10 ** info[name].scale,
            [len(tables[s].values) for s in question.sites],
        )
    if question.analysis == "count" and question.column is None:
        release = reference.count(None, segments, rules, indicator=False)
    elif question.analysis == "frequency":
        levels = list(info[name].levels)
        codes = column(name)
        values = [levels[int(c)] if ok else None for c, ok in zip(codes, present, strict=True)]
        release = reference.frequency(values, levels, segments, rules, indicator)
    else:
        raw = column(name)
        numbers = [int(v) if ok else None for v, ok in zip(raw, present, strict=True)]
        scale = info[name].scale
        release = (
            reference.count(numbers, segments, rules, indicator)
            if question.analysis == "count"
            else reference.median(numbers, scale, segments, rules, indicator)
            if question.analysis == "median"
            else reference.mean(numbers, scale, segments, rules, indicator)
        )
    if release.aggregates is None:
        assert release.refusal is not None
        return f"refused: {release.refusal.rule}"
    return format_result(question, release.aggregates)


def group_rows(group: dict[str, Any], table: EncodedTable) -> np.ndarray:
    """The rows of a group given as the demo's ECOG filters (one-hot columns)."""
    spec = group["filter"]
    assert spec["column"] == "ecog" and spec["op"] in ("in", "==")
    levels = spec["values"] if spec["op"] == "in" else [spec["value"]]
    rows: np.ndarray = np.logical_or.reduce(
        [table.column(f"ecog={level}") == 1 for level in levels]
    )
    return rows


def survival_line(question: Question, tables: dict[str, EncodedTable]) -> str:
    """lifelines' Kaplan-Meier on the plaintext, per group: a group is refused when a site
    puts fewer than k rows into it (min_subset_size), it has fewer than k rows
    (min_cell_count) or between 1 and k - 1 rows lie outside it (complement rule); S(t) is
    withheld unless the deaths since the last released time are 0 or >= k."""
    options = question.parameters
    sites = question.sites
    scale = {c.name: c for c in tables[sites[0]].columns}[options["time"]].scale
    months = np.concatenate([tables[s].column(options["time"]) / 10**scale for s in sites])
    death = np.concatenate([tables[s].column(options["event"]) == 1 for s in sites])
    groups = options.get("groups") or [None]
    curves: list[dict[str, Any]] = []
    for group in groups:
        label = None if group is None else group["label"]
        if group is None:
            rows = np.ones(len(months), dtype=bool)
        else:
            per_site = [group_rows(group, tables[s]) for s in sites]
            inside = sum(int(r.sum()) for r in per_site)
            outside = len(months) - inside
            refusal = (
                "(min_subset_size)"
                if min(int(r.sum()) for r in per_site) < K
                else "(min_cell_count)"
                if inside < K
                else "(complement rule)"
                if 0 < outside < K
                else None
            )
            if refusal is not None:
                curves.append({"group": label, "suppressed": True, "reason": refusal})
                continue
            rows = np.concatenate(per_site)
        t, d = months[rows], death[rows]
        km = KaplanMeierFitter().fit(t, d)
        times = [float(x) for x in options["times"]]
        survival: list[float | None] = []
        last = -np.inf
        for time_ in times:
            between = int((d & (t > last) & (t <= time_)).sum())
            if between == 0 or between >= K:
                survival.append(float(km.predict(time_)))
                last = time_
            else:
                survival.append(None)
        curves.append(
            {
                "group": label,
                "n": int(rows.sum()),
                "times": times,
                "survival": survival,
                "median": float(km.median_survival_time_),
            }
        )
    return normalized(format_result(question, {"groups": curves}))


def fisher_line(question: Question, column: Callable[[str], np.ndarray]) -> str:
    """The pilot's CR by BED10 < 80 vs >= 80 Gy: the table over the rows where local control
    is present, every cell >= k (the 2 "n/a" allowed by ``disclose_excluded``), scipy's p."""
    options = question.parameters
    assert options["disclose_excluded"] is True
    bed = column("bed10") / 10
    known = column("local_control__present") == 1
    cr = column("local_control=CR") == 1
    low = bed < 80
    cells = [
        [int((known & low & cr).sum()), int((known & low & ~cr).sum())],
        [int((known & ~low & cr).sum()), int((known & ~low & ~cr).sum())],
    ]
    assert min(min(line) for line in cells) >= K and 1 <= int((~known).sum()) < K
    table = {
        "rows": {"levels": options["row"]["labels"]},
        "columns": {"levels": options["col"]["labels"]},
        "cells": cells,
    }
    return format_result(question, {"table": table, "p_value": float(fisher_exact(cells).pvalue)})


def quantiles_line(question: Question, values: np.ndarray, per_site: list[int]) -> str:
    """numpy's default quantile is R's type 7; every site >= k rows, no value missing, the
    extremes asked for."""
    options = question.parameters
    assert options["extremes"] is True and min(per_site) >= K
    probabilities = [float(p) for p in options["probabilities"]]
    quantiles = [float(q) for q in np.quantile(values, probabilities)]
    return format_result(question, {"n": len(values), "quantiles": quantiles})


def logrank_line(question: Question, tables: dict[str, EncodedTable]) -> str:
    """The two groups by ECOG; each site must put >= k rows into each group
    (min_subset_size = k), else it is refused; otherwise lifelines' log-rank test."""
    options = question.parameters
    first, second = (g["filter"] for g in options["groups"])
    assert first == {"op": "in", "column": "ecog", "values": ["0", "1"]}
    assert second == {"op": "==", "column": "ecog", "value": "2"}
    ecog2 = {s: tables[s].column("ecog=2") == 1 for s in question.sites}
    if any(min(int(g.sum()), int((~g).sum())) < K for g in ecog2.values()):
        return "refused: min_subset_size"
    scale = {c.name: c for c in tables[question.sites[0]].columns}["follow_up"].scale
    months = np.concatenate([tables[s].column("follow_up") / 10**scale for s in question.sites])
    death = np.concatenate([tables[s].column("event_death") == 1 for s in question.sites])
    group = np.concatenate(list(ecog2.values()))
    test = logrank_test(months[~group], months[group], death[~group], death[group])
    return format_result(
        question,
        {
            "chi2": float(test.test_statistic),
            "p": float(test.p_value),
            "groups": [
                {"group": "ECOG 0-1", "n": int((~group).sum())},
                {"group": "ECOG 2", "n": int(group.sum())},
            ],
        },
    )


def normalized(result: str) -> str:
    """A result with each refusal (its reason up to the rule it names and on to the next
    ``;``) as ``refused: <rule>``."""
    rules = {words.strip("()"): rule for rule, words in REFUSALS.items()}
    pattern = r"refused: .*?\((" + "|".join(map(re.escape, rules)) + r")\)[^;]*"
    return re.sub(pattern, lambda m: f"refused: {rules[m[1]]}", result)


def printed_results(stdout: str) -> dict[str, str]:
    """label -> result line; a refusal as ``refused: <rule>`` (the rule its reason names)."""
    out = {}
    for match in map(RESULT.match, stdout.splitlines()):
        if match is not None:
            out[match["label"]] = normalized(match["result"])
    return out


def test_demo_prints_the_aggregates_and_shuts_its_nodes_down_cleanly(tmp_path: Path) -> None:
    """One run (the demo takes about a minute): ``--json`` for the report, ``--keep`` so that
    the nodes' logs, audit chains and the people's profiles can be checked afterwards;
    removing the workspace without ``--keep`` is ``tests/dic_connector/dev/test_demo.py``'s."""
    work = tmp_path / "demo"
    done = demo("--dir", str(work), "--keep", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stderr  # with --json, what a person reads goes to stderr
    tables = plaintext_tables()
    want = {q.label: expected(q, tables) for q in QUESTIONS}
    assert printed_results(out) == want
    # PILOT.md's figures, spelled out for the reader of this test
    results = printed_results(out)
    assert results["median(age) [tm+tr]"] == "66 years (n = 48)"
    assert results["quantiles(age) [tm]"] == "38, 62.5, 66, 72.25, 91 years (n = 24)"
    assert results["quantiles(age) [tm+tr]"] == "38, 60.75, 66, 73, 91 years (n = 48)"
    assert results["frequency(gender) [tm+tr]"] == "male=29, female=19"
    assert results["frequency(ecog) [tm+tr]"] == "0=18, 1=22, 2=8, 3=<5, 4=<5"
    assert results["median(bed10) [tm+tr]"] == "72 Gy (n = 48)"
    # what the rules refuse: 2 of 48 missing would follow from count() - count(column), and
    # PD = 4 from 46 minus the opened cells, unless CR is suppressed as well
    assert results["count(local_control) [tm+tr]"] == "refused: complement"
    assert results["frequency(local_control) [tm+tr]"] == "CR=suppressed, PR=13, SD=19, PD=<5"
    assert results["survival(follow_up) [tm+tr]"] == (
        "median 19 months, S(12) = 0.733, S(24) = 0.481 (n = 48)"
    )
    assert results["fisher(local_control) [tm+tr]"] == (
        "p = 0.0266 (BED10 < 80 Gy: CR 5, no CR 31; BED10 >= 80 Gy: CR 5, no CR 5)"
    )
    # Rome has 3 ECOG-2 patients: the log-rank is refused, by name of the group and the rule
    assert results["survival(ecog) [tm+tr]"] == (
        "ECOG 0-1: median 25.3 months, S(12) = 0.741, S(24) = withheld (n = 40); "
        "ECOG 2: refused: min_subset_size"
    )
    assert results["logrank(ecog) [tm+tr]"] == "refused: min_subset_size"
    assert "group 'ECOG 2': site(s) 'tr' contribute fewer than 5 rows" in out
    assert "DIFFERENT" not in out and "17 agree with PILOT.md, 1 published" in out
    assert "each result identical on node-0, node-1, node-2" in out
    assert "nodes stopped (SIGTERM; exit codes [0, 0, 0])" in out
    assert "audit chains intact on all three nodes" in out
    report = json.loads(done.stdout.splitlines()[-1])
    check_report(report, work, want)
    check_subscription(report["subscription"], out)
    # nothing row-level: no patient id, identifier or birth date reaches the output
    for text in (out, done.stdout):
        for patient in pilot_patients():
            pid = f"{patient.site}-{patient.index:03d}"
            assert pid not in text and f"{patient.site.upper()}{100000 + patient.index}" not in text
        newcomer = newcomer_resources()[0]
        assert newcomer["id"] not in text and newcomer["identifier"][0]["value"] not in text
        assert not re.search(r"\b\d{4}-\d{2}-\d{2}\b", text)  # no date of any patient
    assert f"workspace {work.resolve()} (kept)" in out
    for i in range(3):  # SIGTERM ended each node's wait, so its cleanup ran
        log = (work / "logs" / f"node-{i}.log").read_text()
        assert log.splitlines()[-1] == f"node-{i}: stopped", log
        config = work / "deployment" / f"node-{i}.yaml"
        verify = subprocess.run(
            [sys.executable, "-m", "dic_connector.cli", "audit", "verify", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert verify.returncode == 0 and "audit chain intact" in verify.stdout, verify
    assert sorted(p.name for p in (work / "fhir").iterdir()) == ["tm", "tr"]


def check_report(report: dict[str, Any], work: Path, want: dict[str, str]) -> None:
    """The JSON report: every question with the plaintext result, every published figure
    the demo checks matched (the log-rank withheld), timings next to Sharemind's, the nodes'
    exit codes and audit chains, and with --keep the web pages and usable profiles."""
    assert report["ok"] is True and report["workspace"] == str(work.resolve())
    questions = {q["label"]: q for q in report["questions"]}
    assert list(questions) == [q.label for q in QUESTIONS]
    for question in QUESTIONS:
        entry = questions[question.label]
        assert (entry["analysis"], entry["sites"]) == (question.analysis, list(question.sites))
        assert entry["parameters"] == question.parameters
        assert entry["result"] == format_result(question, entry["aggregates"])
        assert normalized(entry["result"]) == want[question.label]  # the plaintext check
        if question.published is None:
            assert entry["published"] is None and entry["check"] == "not published"
        elif question.analysis == "logrank":
            assert entry["published"]["value"] == {"chi2": 1.8, "p": 0.18}
            assert entry["check"] == "withheld" and entry["matched"] is None
        else:
            assert entry["check"] == "same" and entry["matched"] is True, entry
        timing = entry["timing"]
        assert timing["submitted_to_completed_s"] > 0
        assert timing["running_to_completed_s"] is not None
        assert timing["running_to_completed_s"] <= timing["submitted_to_completed_s"]
        function = SHAREMIND_FUNCTIONS.get(question.analysis)
        assert timing["sharemind_function"] == function
        assert (timing["sharemind_s"] is None) is (function is None)
    assert report["summary"] == {"same": 17, "different": 0, "withheld": 1, "not published": 4}
    assert {
        q["published"]["value"]["male"]
        for q in report["questions"]
        if q["analysis"] == "frequency" and q["parameters"]["column"] == "gender"
    } == {29, 16}
    assert report["node_exit_codes"] == [0, 0, 0] and report["audit_intact"] is True
    assert [a["node"] for a in report["audit"]] == ["node-0", "node-1", "node-2"]
    pages = report["web_pages"]
    assert list(pages) == ["node-0", "node-1", "node-2"]
    assert all(re.fullmatch(r"https://127\.0\.0\.1:\d+/ui/", url) for url in pages.values())
    assert report["browser"].startswith("chromium --ignore-certificate-errors-spki-list=")
    assert report["browser"].endswith(pages["node-1"])
    assert report["node_configs"] == [
        str((work / "deployment" / f"node-{i}.yaml").resolve()) for i in range(3)
    ]
    for name, files in report["access"].items():
        profile = load_profile(Path(files["profile"]), env={})
        assert profile.name == name
        assert [f"{n.url}/ui/" for n in profile.nodes] == list(pages.values())
        assert (profile.key_file is None) is (name == "admin")
        assert all(n.token for n in profile.nodes)


def live_plaintext(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """Munich's live cohort in the clear: its row count and mean age (numpy)."""
    mapping = load_mapping(ROOT / "mappings" / "pilot_adrenal.yaml")
    clean, _, _ = validate_rows(build_cohort(mapping, resources).rows, mapping)
    table = encode_table(clean, mapping)
    scale = {c.name: c for c in table.columns}["age"].scale
    ages = table.column("age") / 10**scale
    return {"n": len(table.values), "mean": float(np.mean(ages))}


def check_subscription(live: dict[str, Any], out: str) -> None:
    """The last step: version 1 of the live feed read, one patient added on the FHIR server,
    notified, one new version committed, and the same questions on it: the count n + 1 and
    the mean age refused by the version lineage rule (1 row differs, fewer than k); each
    reading against the plaintext of the same resources."""
    assert FHIR_VENV.exists(), "the e2e tests run with .venv-fhir (make test)"
    assert live["skipped"] is None and live["source_check"] is True, live
    count, mean = (label(a, p) for a, p in LIVE_QUESTIONS)
    before = live_plaintext(list(pilot_resources("tm")))
    after = live_plaintext([*pilot_resources("tm"), *newcomer_resources()])
    assert after["n"] == before["n"] + 1 == 25
    first, second = live["before"], live["after"]
    assert live["versions"] == [first["version"], second["version"]]
    assert second["version"] == first["version"] + 1  # one debounced run for the update
    assert first["results"][count]["n"] == first["rows"] == first["source_patients"] == 24
    assert second["results"][count]["n"] == second["rows"] == second["source_patients"] == 25
    assert first["results"][mean]["n"] == before["n"]
    assert first["results"][mean]["mean"] == pytest.approx(before["mean"], abs=1e-9)
    refused = second["results"][mean]
    assert refused["suppressed"] is True and "version lineage" in refused["reason"]
    assert live["run"]["trigger"] == "subscription" and live["run"]["patients"] == 25
    assert 0 < live["notified_ms"] < 1000 * live["committed_s"]
    assert re.search(
        r"^FHIR Subscription: patient added at \d\d:\d\d:\d\d\.\d, notified \+\d+ ms, version "
        rf"{second['version']} committed \+[\d.]+ s, count 24 -> 25; mean\(age\) "
        rf"{before['mean']:.2f} years \(n = 24\) -> refused \(version lineage\)$",
        out, re.MULTILINE), out
