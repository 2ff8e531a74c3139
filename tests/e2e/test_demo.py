"""``dic demo`` as a user runs it: one command, three node processes, two connectors, a
researcher and two data owners; the printed results must be the aggregates of the synthetic
pilot data computed here in plaintext (and hence PILOT.md's figures)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from dic_connector.dev.demo import QUESTIONS, Question
from dic_connector.dev.synthetic import pilot_patients, pilot_resources
from dic_connector.encoding import EncodedTable, encode_table, validate_rows
from dic_connector.mapping import build_cohort, load_mapping

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
K = 5  #: the nodes' default min_cell_count
RESULT = re.compile(r"^  (?P<label>\w+\(\w*\) \[[a-z+]+\])\s+-> (?P<result>.+)$")


def demo(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "dic_connector.cli", "demo", *args],
                          capture_output=True, text=True, timeout=timeout_s, cwd=ROOT, env=env)


def plaintext_tables() -> dict[str, EncodedTable]:
    """Each site's encoded cohort, in the clear (what the connectors secret-share)."""
    mapping = load_mapping(ROOT / "mappings" / "pilot_adrenal.yaml")
    out = {}
    for site in ("tm", "tr"):
        clean, _, _ = validate_rows(build_cohort(mapping, pilot_resources(site)).rows, mapping)
        out[site] = encode_table(clean, mapping)
    return out


def expected(question: Question, tables: dict[str, EncodedTable]) -> str:
    """The result line the demo must print, from plaintext numpy."""
    chosen = [tables[s] for s in question.sites]
    info = {c.name: c for c in chosen[0].columns}

    def column(name: str) -> np.ndarray:
        return np.concatenate([t.column(name) for t in chosen])

    present = np.ones(sum(len(t.values) for t in chosen), dtype=bool)
    if question.column is not None and f"{question.column}__present" in info:
        present = column(f"{question.column}__present") == 1
    unit = f" {question.unit}" if question.unit else ""
    if question.analysis == "count":
        return f"n = {int(present.sum())}"
    if question.analysis == "frequency":
        levels = info[question.column or ""].levels
        counts = [int(column(f"{question.column}={lv}")[present].sum()) for lv in levels]
        return ", ".join(f"{lv}={c if c >= K else f'<{K}'}"
                         for lv, c in zip(levels, counts, strict=True))
    values = column(question.column or "")[present]
    scale = info[question.column or ""].scale
    if question.analysis == "median":
        median = Fraction(int(np.sort(values)[(len(values) - 1) // 2])
                          + int(np.sort(values)[len(values) // 2]), 2 * 10**scale)
        return f"{float(median):g}{unit} (n = {len(values)})"
    total = int(values.sum())
    text = format(Decimal(total).scaleb(-scale), "f")  # exact, with `scale` places
    return (f"{float(Fraction(total, len(values) * 10**scale)):.2f}{unit} "
            f"(n = {len(values)}, sum = {text})")


def printed_results(stdout: str) -> dict[str, str]:
    return {m["label"]: m["result"] for m in map(RESULT.match, stdout.splitlines()) if m}


def test_demo_prints_the_pooled_and_per_site_aggregates() -> None:
    done = demo()
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    tables = plaintext_tables()
    assert printed_results(out) == {q.label: expected(q, tables) for q in QUESTIONS}
    # PILOT.md's figures, spelled out for the reader of this test
    results = printed_results(out)
    assert results["median(age) [tm+tr]"] == "66 years (n = 48)"
    assert results["frequency(gender) [tm+tr]"] == "male=29, female=19"
    assert results["frequency(ecog) [tm+tr]"] == "0=18, 1=22, 2=8, 3=<5, 4=<5"
    assert results["median(bed10) [tm+tr]"] == "72 Gy (n = 48)"
    assert "DIFFERENT" not in out and "13 agree with PILOT.md" in out
    assert "each result identical on node-0, node-1, node-2" in out
    assert "nodes stopped (SIGTERM; exit codes [0, 0, 0])" in out
    assert "audit chains intact on all three nodes" in out
    # nothing row-level: no patient id, identifier or birth date reaches the output
    for patient in pilot_patients():
        pid = f"{patient.site}-{patient.index:03d}"
        assert pid not in out and f"{patient.site.upper()}{100000 + patient.index}" not in out
    assert not re.search(r"\b\d{4}-\d{2}-\d{2}\b", out)  # no date of any patient
    workspace = Path(re.search(r"workspace (\S+)", out)[1])  # type: ignore[index]
    assert not workspace.exists()


def test_demo_keeps_its_workspace_and_nodes_shut_down_cleanly(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    done = demo("--dir", str(work), "--keep")
    assert done.returncode == 0, done.stdout + done.stderr
    for i in range(3):  # SIGTERM ended each node's wait, so its cleanup ran
        log = (work / "logs" / f"node-{i}.log").read_text()
        assert log.splitlines()[-1] == f"node-{i}: stopped", log
        config = work / "deployment" / f"node-{i}.yaml"
        verify = subprocess.run([sys.executable, "-m", "dic_connector.cli", "audit", "verify",
                                 "--config", str(config)], capture_output=True, text=True,
                                timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert verify.returncode == 0 and "audit chain intact" in verify.stdout, verify
    assert sorted(p.name for p in (work / "fhir").iterdir()) == ["tm", "tr"]


def test_demo_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("mine")
    done = demo("--dir", str(tmp_path), timeout_s=60)
    assert done.returncode == 1
    assert "must be an empty directory" in done.stderr
    assert (tmp_path / "something").read_text() == "mine"
