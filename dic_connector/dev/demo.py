"""The embedded demo: the whole system on one machine, in one command (``dic demo``).

It plays every role of DESIGN.md section 1 on 127.0.0.1, offline, with nobody touching a
row:

1. **Two hospitals' FHIR data.** The synthetic LMU/Gemelli pilot cohort
   (:mod:`dic_connector.dev.synthetic`: 24 patients in Munich "tm", 24 in Rome "tr",
   ``../shared/PILOT.md``) is written as Bulk-export NDJSON directories, one per site.
2. **Three compute nodes.** :func:`~dic_connector.dev.deployment.write_local_deployment` makes a
   deployment CA, node and connector certificates, keyrings and configs; each node's SQLite
   database is migrated and the people are registered on all three nodes, as an operator
   would with ``dic node migrate`` and ``dic admin add-principal``: a researcher, one data
   owner per site (each with an Ed25519 signing key that exists only in this process) and an
   admin. The nodes then run as real OS processes (``dic node serve``), talking mutual TLS.
3. **Two connectors.** Each site's connector runs the pipeline
   (:func:`~dic_connector.connector.pipeline.share_cohort`) with ``mappings/pilot_adrenal.yaml``:
   NDJSON -> cohort table -> validation -> fixed-point encoding -> three share pairs,
   committed on all three nodes; the plaintext is wiped.
4. **A researcher and two data owners.** The researcher submits signed analysis requests
   (:data:`QUESTIONS`: counts, medians, R's quantiles, a mean, frequency tables, the
   survival (median OS, 1- and 2-year OS; and by ECOG 0-1 vs 2), a Fisher test and the
   log-rank test of ECOG 0-1 vs 2; pooled and per site; the group ECOG 2 and hence the
   log-rank the nodes refuse, because Rome has fewer than min_subset_size ECOG-2
   patients) at
   node-1; each data owner signs an approval, owner_tm at node-1 and owner_tr at node-2, so
   node-0, the coordinator, learns of both only by replication. The three nodes verify
   everything themselves, agree, compute under MPC and open only what each analysis
   declares (its ``discloses``).
5. **The report.** For every request: what was asked, what was opened, the result (read
   from all three nodes, which must agree), and the figure ``PILOT.md`` publishes, where it
   publishes one. Counts below the deployment's ``min_cell_count`` (5) are never opened and
   show as ``<5``, also where the paper printed them. Each request's time, from the first
   poll that saw it running to the first that saw it completed on all three nodes, stands
   next to Sharemind's published time (:mod:`dic_connector.dev.report`).
6. **A live update** (:mod:`dic_connector.dev.subscription`, set up while the analyses above
   run): a FHIR server holds Munich's patients, the connector service subscribes to it, one
   new patient there becomes a new version on the three nodes, and the researcher's count
   goes from n to n + 1 (the mean age is refused by the version lineage rule); skipped with
   a line naming ``make fhir-venv`` when ``.venv-fhir`` is missing.
7. **With ``--json``** all of that goes to stderr and :func:`report_json` is the last line
   of stdout. **With ``--keep``** each person's signing key and client profile are written
   to ``people/`` in the workspace, and the nodes' web pages are named, so that a person can
   start the nodes again and go on with the CLI or a browser. **With ``--plots DIR``** the
   results that have a figure (the Kaplan-Meier curves, pooled and by ECOG, the frequency
   bars, the quantiles) are drawn as PNG files in DIR by :mod:`dic_connector.client.plots`
   (skipped with a one-line notice when matplotlib, the ``plots`` extra, is absent).

Nothing row-level is printed or logged: the connectors report counts only, the nodes hold
shares only, and the researcher reads aggregates. The nodes are stopped with SIGTERM (a
clean shutdown) and killed only after a grace period; the workspace is removed unless
``--keep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.client import (
    Admin,
    AnalysisRequest,
    AuditVerification,
    DataOwner,
    Researcher,
    plots,
)
from dic_connector.connector.pipeline import PipelineReport, share_cohort
from dic_connector.connector.upload import NodeEndpoint, Uploader
from dic_connector.dev.deployment import (
    NODE_NAMES,
    PACKAGE_ROOT,
    LocalNodes,
    register_people,
    write_local_deployment,
)
from dic_connector.dev.report import (
    Person,
    Timing,
    chromium_command,
    json_line,
    timing_json,
    write_access,
)
from dic_connector.dev.subscription import SITE as LIVE_SITE
from dic_connector.dev.subscription import SubscriptionTour, live_feed, run_subscription_step
from dic_connector.dev.synthetic import pilot_patients, pilot_resources, write_bulk
from dic_connector.errors import DemoError, DicError, PlotError
from dic_connector.mapping import load_mapping
from dic_connector.node.analyses.catalog import get_analysis
from dic_connector.sources import NdjsonConfig, make_source
from dic_connector.vocabulary import RequestStatus, Role

#: The two pilot sites (Ballhausen et al., npj Digit Med 7:280, 2024).
SITES: dict[str, str] = {"tm": "LMU Munich", "tr": "Gemelli Rome"}
DATASET = "pilot_adrenal"
MAPPING_FILE = "pilot_adrenal.yaml"
MIN_CELL_COUNT = 5  #: the nodes' default; the demo does not change it

RESEARCHER = "researcher"
#: principal -> (role, site)
PEOPLE: dict[str, tuple[Role, str | None]] = {
    RESEARCHER: (Role.RESEARCHER, None),
    **{f"owner_{site}": (Role.DATA_OWNER, site) for site in SITES},
    "admin": (Role.ADMIN, None),
}
SUBMIT_AT = 1  #: the node the researcher talks to
#: where each owner approves: owner_tm at the submission node, owner_tr elsewhere
APPROVE_AT: dict[str, int] = {"tm": 1, "tr": 2}

COMPUTE_TIMEOUT_S = 90.0
POLL_S = 0.1
WATCH_S = 0.05  #: how often the three nodes are polled for the timings
#: node config for a snappy demo (the defaults suit production)
NODE_SETTINGS: dict[str, Any] = {"coordination_interval_s": 0.1, "mpc_timeout_s": 30}


# -- what the researcher asks, and what the paper publishes ------------------------------


@dataclass(frozen=True)
class Question:
    """One analysis request of the demo and the published figure to check it against.

    ``published`` is, by analysis: ``count`` the int n, ``median`` the float, ``survival``
    the median survival, ``frequency`` a level -> count dict (only the levels the paper
    reports), ``fisher`` the p-value to the decimals published, ``quantiles`` the values at
    the requested probabilities, ``logrank`` (chi2, p) to the decimals published, or None
    when PILOT.md has no such figure. ``options`` are the request's parameters when they are not
    ``{"column": column}`` (``column`` then only names the question).
    """

    analysis: str
    column: str | None
    sites: tuple[str, ...]
    published: int | float | dict[str, int] | tuple[float, ...] | None = None
    source: str = ""  #: where PILOT.md publishes it
    unit: str = ""
    options: Mapping[str, Any] | None = None

    @property
    def parameters(self) -> dict[str, Any]:
        if self.options is not None:
            return dict(self.options)
        return {} if self.column is None else {"column": self.column}

    @property
    def label(self) -> str:
        """What was asked, e.g. ``median(age) [tm+tr]``."""
        return f"{self.analysis}({self.column or ''}) [{'+'.join(self.sites)}]"


BOTH = ("tm", "tr")
#: CR by BED10 < 80 vs >= 80 Gy over the patients whose local control is known; the 2 "n/a"
#: follow from the table's total, which the owners allow by approving the request
CR_BY_BED10: dict[str, Any] = {
    "row": {
        "filter": {"op": "<", "column": "bed10", "value": 80},
        "labels": ["BED10 < 80 Gy", "BED10 >= 80 Gy"],
    },
    "col": {
        "filter": {"op": "==", "column": "local_control", "value": "CR"},
        "labels": ["CR", "no CR"],
    },
    "disclose_excluded": True,
}
#: R's quantile(): probabilities 0, 0.25, 0.5, 0.75, 1; the minimum and the maximum are each
#: one patient's value, which the owners allow by approving the request (as the pilot's did)
QUARTILES: dict[str, Any] = {
    "column": "age",
    "probabilities": ["0", "0.25", "0.5", "0.75", "1"],
    "extremes": True,
}
#: ECOG 0-1 against 2; Rome has 3 ECOG-2 patients, fewer than min_subset_size (= k), so
#: the nodes refuse the group "ECOG 2" (each site must contribute >= k rows to each group):
#: the Kaplan-Meier shows ECOG 0-1 only, and the log-rank test, which needs both, is refused
ECOG_GROUPS: dict[str, Any] = {
    "time": "follow_up",
    "event": "event_death",
    "groups": [
        {"label": "ECOG 0-1", "filter": {"op": "in", "column": "ecog", "values": ["0", "1"]}},
        {"label": "ECOG 2", "filter": {"op": "==", "column": "ecog", "value": "2"}},
    ],
}
QUESTIONS: tuple[Question, ...] = (
    Question("count", None, BOTH, 48, "pooled cohort, n = 48"),
    Question("count", None, ("tm",), 24, "Fig. 5: length(tm$age)"),
    Question("count", None, ("tr",), 24, "Fig. 5: length(tr$age)"),
    Question("count", "local_control", BOTH, 46, "pooled cohort: local control n/a 2 of 48"),
    Question("median", "age", BOTH, 66.0, "Fig. 5: quantile(c(tm$age, tr$age))", "years"),
    Question("median", "age", ("tm",), 66.0, "Fig. 5: quantile(tm$age)", "years"),
    Question("median", "age", ("tr",), None, "", "years"),
    Question(
        "quantiles",
        "age",
        ("tm",),
        (38.0, 62.5, 66.0, 72.25, 91.0),
        "Fig. 5: quantile(tm$age)",
        "years",
        options=QUARTILES,
    ),
    Question(
        "quantiles",
        "age",
        BOTH,
        (38.0, 60.75, 66.0, 73.0, 91.0),
        "Fig. 5: quantile(c(tm$age, tr$age))",
        "years",
        options=QUARTILES,
    ),
    Question("median", "bed10", BOTH, 72.0, "pooled cohort: BED10 median", "Gy"),
    Question("median", "follow_up", BOTH, 8.5, "pooled cohort: follow-up median", "months"),
    Question(
        "survival",
        "follow_up",
        BOTH,
        19.0,
        "pooled cohort: median OS 19.0, 1-year OS 73 %, 2-year 48 %",
        "months",
        options={"time": "follow_up", "event": "event_death", "times": [12, 24], "median": True},
    ),
    Question(
        "survival",
        "ecog",
        BOTH,
        None,
        "",
        "months",
        options={**ECOG_GROUPS, "times": [12, 24], "median": True},
    ),
    Question("mean", "bed10", BOTH, None, "", "Gy"),
    Question("mean", "total_dose", BOTH, None, "", "Gy"),
    Question(
        "frequency",
        "gender",
        BOTH,
        {"male": 29, "female": 19},
        "Fig. 5: freq(c(tm$gender, tr$gender))",
    ),
    Question("frequency", "gender", ("tm",), {"male": 16, "female": 8}, "Fig. 5: freq(tm$gender)"),
    Question("frequency", "ecog", BOTH, {"0": 18, "1": 22, "2": 8}, "pooled cohort: ECOG"),
    Question(
        "frequency",
        "timing",
        BOTH,
        {"metachronous": 23, "oligoprogressive": 13, "synchronous": 8, "other": 4},
        "pooled cohort: timing",
    ),
    Question(
        "frequency",
        "local_control",
        BOTH,
        {"CR": 10, "PR": 13, "SD": 19, "PD": 4},
        "pooled cohort: local control",
    ),
    Question(
        "fisher",
        "local_control",
        BOTH,
        0.027,
        "pooled cohort: CR by BED10 < 80 vs >= 80 Gy, 5 of 36 and 5 of 10, two-sided",
        options=CR_BY_BED10,
    ),
    Question(
        "logrank",
        "ecog",
        BOTH,
        (1.8, 0.18),
        "pooled cohort: log-rank ECOG 0-1 vs 2, chi2 = 1.8, p = 0.18",
        options=ECOG_GROUPS,
    ),
)


def _number(value: float) -> str:
    return f"{value:g}"


def _curve(group: Mapping[str, Any], unit: str) -> str:
    """One group of a survival result, labelled when the request has groups."""
    label = "" if group.get("group") is None else f"{group['group']}: "
    if group.get("suppressed"):
        return f"{label}refused: {group['reason']}"
    median = "not reached" if group["median"] is None else _number(group["median"])
    at = ", ".join(
        f"S({_number(t)}) = {'withheld' if v is None else f'{v:.3f}'}"
        for t, v in zip(group["times"], group["survival"], strict=True)
    )
    return f"{label}median {median}{unit}, {at} (n = {group['n']})"


def format_result(question: Question, aggregates: Mapping[str, Any]) -> str:
    """The opened aggregates as one short text, e.g. ``66 years (n = 48)``."""
    unit = f" {question.unit}" if question.unit else ""
    if aggregates.get("suppressed"):
        return f"refused: {aggregates['reason']}"
    if question.analysis == "count":
        return f"n = {aggregates['n']}"
    if question.analysis == "median":
        return f"{_number(float(aggregates['median']))}{unit} (n = {aggregates['n']})"
    if question.analysis == "survival":
        return "; ".join(_curve(group, unit) for group in aggregates["groups"])
    if question.analysis == "mean":
        return (
            f"{float(aggregates['mean']):.2f}{unit} (n = {aggregates['n']}, "
            f"sum = {aggregates['sum']})"
        )
    if question.analysis == "quantiles":
        values = ", ".join(_number(float(v)) for v in aggregates["quantiles"])
        return f"{values}{unit} (n = {aggregates['n']})"
    if question.analysis == "logrank":
        groups = ", ".join(f"{g['group']} n = {g['n']}" for g in aggregates["groups"])
        if aggregates["chi2"] is None:
            return f"chi2 undefined (V = 0; {groups})"
        return f"chi2 = {aggregates['chi2']:.2f}, p = {aggregates['p']:.3f} ({groups})"
    if question.analysis == "fisher":
        table = aggregates["table"]
        cells = "; ".join(
            f"{row}: "
            + ", ".join(
                f"{col} {n}" for col, n in zip(table["columns"]["levels"], line, strict=True)
            )
            for row, line in zip(table["rows"]["levels"], table["cells"], strict=True)
        )
        return f"p = {float(aggregates['p_value']):.4f} ({cells})"
    levels = aggregates["levels"]
    return ", ".join(f"{level}={count}" for level, count in levels.items())


def format_published(question: Question) -> str:
    published = question.published
    if published is None:
        return "not published"
    if isinstance(published, dict):
        text = ", ".join(f"{level}={count}" for level, count in published.items())
    elif question.analysis == "logrank" and isinstance(published, tuple):
        text = f"chi2 = {_number(published[0])}, p = {_number(published[1])}"
    elif isinstance(published, tuple):
        text = ", ".join(_number(v) for v in published) + (
            f" {question.unit}" if question.unit else ""
        )
    elif question.analysis == "count":
        text = f"n = {published}"
    elif question.analysis == "fisher":
        text = f"p = {_number(float(published))}"
    else:
        text = _number(float(published)) + (f" {question.unit}" if question.unit else "")
    return f"{text} ({question.source})" if question.source else text


WITHHELD = "withheld"


def _decimals(value: float) -> int:
    """The decimals a published figure was printed with (0.027: 3)."""
    text = repr(float(value))
    return len(text.split(".")[1]) if "." in text else 0


def matches(
    question: Question, aggregates: Mapping[str, Any], k: int, rows: int
) -> tuple[bool | None, str]:
    """Whether the result agrees with the published figure (None: nothing published), and
    a short verdict for the report; ``rows`` is the number of patients the question covers.

    What disclosure control withholds agrees with a published figure when the figure shows
    that the rule had to withhold it: a cell shown as ``<k`` a published count below k; a
    refused count the complement rule refused (between 1 and k - 1 patients outside it); a
    cell shown as ``suppressed`` (secondary suppression) a published count of at least k.
    A log-rank test the nodes refuse because a site has fewer than min_subset_size patients
    in a group is *withheld* (None, a verdict starting ``withheld``): the rule holds, so the
    published figure cannot be checked.
    """
    published = question.published
    if published is None:
        return None, ""
    if aggregates.get("suppressed"):
        reason = str(aggregates.get("reason", ""))
        if question.analysis == "logrank" and "min_subset_size" in reason:
            return None, (
                f"{WITHHELD}: a site contributes fewer than {k} patients to a group "
                "(min_subset_size), so PILOT.md's figure cannot be checked"
            )
        if question.analysis == "count" and isinstance(published, int):
            if "complement rule" in reason and 0 < rows - published < k:
                return True, (
                    f"not opened: {rows - published} of {rows} outside it < {k} (complement rule)"
                )
            if "min_cell_count" in reason and published < k:
                return True, f"not opened: {published} < {k}"
        return False, f"DIFFERENT: refused ({reason})"
    if question.analysis == "count":
        ok = aggregates["n"] == published
    elif question.analysis == "median" and isinstance(published, float | int):
        ok = float(aggregates["median"]) == float(published)
    elif question.analysis == "survival" and isinstance(published, float | int):
        (group,) = aggregates["groups"]
        ok = group.get("median") is not None and float(group["median"]) == float(published)
    elif question.analysis == "fisher" and isinstance(published, float):
        ok = round(float(aggregates["p_value"]), _decimals(published)) == published
    elif question.analysis == "quantiles" and isinstance(published, tuple):
        ok = [float(v) for v in aggregates["quantiles"]] == list(published)
    elif question.analysis == "logrank" and isinstance(published, tuple):
        chi2, p = aggregates["chi2"], aggregates["p"]
        ok = (
            chi2 is not None
            and round(float(chi2), _decimals(published[0])) == published[0]
            and round(float(p), _decimals(published[1])) == published[1]
        )
    elif isinstance(published, dict):
        levels = aggregates.get("levels", {})
        withheld = []
        for level, count in published.items():
            shown = levels.get(level)
            if shown == f"<{k}" and count < k:
                withheld.append(f"{level} {count} < {k}")
            elif shown == "suppressed" and count >= k:
                withheld.append(f"{level} {count} withheld as well (secondary suppression)")
            elif shown != count:
                return False, "DIFFERENT"
        return True, "same" + (f"; {', '.join(withheld)}" if withheld else "")
    else:
        return None, ""
    return bool(ok), "same" if ok else "DIFFERENT"


# -- the run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A completed request: the question, its id and the aggregates all three nodes hold."""

    question: Question
    request_id: str
    aggregates: dict[str, Any]
    agrees: bool | None  #: None: PILOT.md publishes no such figure, or the rules withhold it
    verdict: str = ""
    timing: Timing | None = None

    @property
    def check(self) -> str:
        """``same``, ``different``, ``withheld`` (by a disclosure rule) or ``not published``."""
        if self.agrees is not None:
            return "same" if self.agrees else "different"
        return WITHHELD if self.verdict.startswith(WITHHELD) else "not published"


@dataclass
class DemoResult:
    """What :func:`run_demo` did (counts, ids and aggregates only)."""

    workspace: Path
    keep: bool = False
    connectors: list[PipelineReport] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    audit: list[AuditVerification] = field(default_factory=list)
    exit_codes: list[int | None] = field(default_factory=list)
    #: with --keep: each node's web page, by node name
    web_pages: dict[str, str] = field(default_factory=dict)
    #: with --keep: a Chromium command line that trusts the node certificates
    browser: str = ""
    #: with --keep: each person's profile and signing key files
    access: dict[str, dict[str, str | None]] = field(default_factory=dict)
    #: with --keep: the deployment's node config files, to start the nodes again
    node_configs: list[str] = field(default_factory=list)
    #: with --plots: the PNG files drawn
    plots: list[str] = field(default_factory=list)
    #: the last step (:mod:`dic_connector.dev.subscription`); None if it was not reached
    subscription: SubscriptionTour | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        live = self.subscription
        return all(a.agrees is not False for a in self.answers) and (
            live is None or live.skipped is not None or live.check())


Say = Callable[[str], None]


def find_mapping(name: str = MAPPING_FILE) -> Path:
    """``mappings/<name>`` of the repository this package runs from (or of the current
    directory); :class:`DemoError` naming where it looked."""
    candidates = [PACKAGE_ROOT / "mappings" / name, Path.cwd() / "mappings" / name]
    for path in candidates:
        if path.is_file():
            return path
    raise DemoError(
        f"mapping {name} not found; looked in "
        f"{', '.join(str(p.parent) for p in candidates)} (run from a checkout)"
    )


async def _run_connectors(
    cluster: LocalNodes, data: Mapping[str, Path], mapping_path: Path, say: Say
) -> list[PipelineReport]:
    mapping = load_mapping(mapping_path)
    endpoints = [
        NodeEndpoint(url, name) for url, name in zip(cluster.urls, NODE_NAMES, strict=True)
    ]
    reports = []
    for site, directory in data.items():
        uploader = Uploader(
            endpoints, cluster.deployment.pki[f"connector.{site}"], site, timeout_s=30
        )
        async with make_source(NdjsonConfig(directory)) as source:
            report = await share_cohort(source, mapping, uploader, DATASET)
        say(f"connector {report.summary()}")
        reports.append(report)
    return reports


async def _watch(
    researcher: Researcher, submitted: Mapping[str, float], timeout_s: float
) -> dict[str, Timing]:
    """Poll the three nodes' listings until every request has ended on all three (or
    ``timeout_s``); when each was first seen running and completed everywhere."""
    running: dict[str, float] = {}
    completed: dict[str, float] = {}
    ended: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(ended) < len(submitted) and loop.time() < deadline:
        listings = await asyncio.gather(*(node.requests() for node in researcher.clients()))
        now = time.monotonic()
        seen: dict[str, list[AnalysisRequest]] = {}
        for listing in listings:
            for request in listing:
                if request.id in submitted:
                    seen.setdefault(request.id, []).append(request)
        for request_id, states in seen.items():
            if any(r.status in (RequestStatus.RUNNING, RequestStatus.COMPLETED) for r in states):
                running.setdefault(request_id, now)
            if len(states) == len(NODE_NAMES) and all(
                r.status is RequestStatus.COMPLETED for r in states
            ):
                completed.setdefault(request_id, now)
                ended.add(request_id)
            if any(r.ended and r.status is not RequestStatus.COMPLETED for r in states):
                ended.add(request_id)  # the wait that follows names the failure
        await asyncio.sleep(WATCH_S)
    return {i: Timing(t, running.get(i), completed.get(i)) for i, t in submitted.items()}


async def _ask(
    cluster: LocalNodes, keys: Mapping[str, Ed25519PrivateKey], say: Say
) -> list[Answer]:
    """Submit, approve, wait for and read every question of :data:`QUESTIONS`, as the
    researcher and the two data owners would with :mod:`dic_connector.client`."""
    researcher = Researcher(
        RESEARCHER, keys[RESEARCHER], cluster.clients(RESEARCHER), at=SUBMIT_AT, poll_s=POLL_S
    )
    datasets = {
        d.site: d.id
        for d in await researcher.datasets()
        if d.name == DATASET and d.latest_version is not None
    }
    missing = set(SITES) - set(datasets)
    if missing:
        raise DemoError(
            f"no committed dataset for site(s) {sorted(missing)} on {NODE_NAMES[SUBMIT_AT]}"
        )
    study = await researcher.create_study("Adrenal metastases, MR-guided RT (pilot rerun)")

    async def submit(question: Question) -> tuple[str, float]:
        request_id = await researcher.submit(
            study, question.analysis, [datasets[s] for s in question.sites], question.parameters
        )
        return request_id, time.monotonic()

    submitted = dict(await asyncio.gather(*(submit(q) for q in QUESTIONS)))
    ids = list(submitted)
    watch = asyncio.create_task(_watch(researcher, submitted, COMPUTE_TIMEOUT_S))
    say(f"researcher: {len(ids)} signed requests submitted at {NODE_NAMES[SUBMIT_AT]}")

    async def approve_all(site: str) -> int:
        owner = f"owner_{site}"
        mine = [i for i, q in zip(ids, QUESTIONS, strict=True) if site in q.sites]
        await DataOwner(owner, site, keys[owner], cluster.clients(owner), poll_s=POLL_S).approve(
            mine, at=APPROVE_AT[site], timeout_s=COMPUTE_TIMEOUT_S
        )
        return len(mine)

    try:
        approved = await asyncio.gather(*(approve_all(site) for site in SITES))
        say(
            "data owners: "
            + ", ".join(
                f"owner_{site} signed {n} approvals at {NODE_NAMES[APPROVE_AT[site]]}"
                for site, n in zip(SITES, approved, strict=True)
            )
            + f"; {NODE_NAMES[0]} (the coordinator) got them by replication"
        )
        timings = await watch
    finally:
        watch.cancel()
    await researcher.wait(ids, until=RequestStatus.COMPLETED, timeout_s=COMPUTE_TIMEOUT_S)
    answers = []
    for question, request_id in zip(QUESTIONS, ids, strict=True):
        aggregates = (await researcher.result(request_id)).aggregates  # equal on all three
        rows = sum(1 for patient in pilot_patients() if patient.site in question.sites)
        agrees, verdict = matches(question, aggregates, MIN_CELL_COUNT, rows)
        answers.append(
            Answer(question, request_id, aggregates, agrees, verdict, timings[request_id])
        )
    say(
        f"all {len(ids)} requests completed on all three nodes; each result identical on "
        f"{', '.join(NODE_NAMES)}"
    )
    return answers


async def _verify_audit(cluster: LocalNodes, say: Say) -> list[AuditVerification]:
    """As the admin: every node recomputes its hash-chained audit log."""
    verified = await Admin("admin", cluster.clients("admin")).verify_audit()
    for report in verified:
        if not report.ok:
            raise DemoError(f"{report.node}: audit chain broken: {report}")
    say(
        "admin: audit chains intact on all three nodes "
        f"({' / '.join(str(report.entries) for report in verified)} entries)"
    )
    return verified


def report_lines(answers: Sequence[Answer], width: int = 96) -> Iterator[str]:
    """The readable results: per analysis what it opens, then each question and result."""
    yield ""
    yield (
        f"Results (min_cell_count k = {MIN_CELL_COUNT}: a count below {MIN_CELL_COUNT} "
        f"is never opened and shows as <{MIN_CELL_COUNT}; each site must contribute at "
        f"least {MIN_CELL_COUNT} rows; what a complement or a total would give away is "
        "refused, or hidden as 'suppressed')"
    )
    label_width = max(len(a.question.label) for a in answers) + 2
    for name in dict.fromkeys(a.question.analysis for a in answers):
        analysis = get_analysis(name)
        yield ""
        yield f"{analysis.name} v{analysis.version}: {analysis.summary}"
        yield from textwrap.wrap(
            analysis.discloses, width, initial_indent="  opens: ", subsequent_indent="         "
        )
        for answer in (a for a in answers if a.question.analysis == name):
            q = answer.question
            yield f"  {q.label:<{label_width}}-> {format_result(q, answer.aggregates)}"
            yield (
                f"  {'':<{label_width}}   PILOT.md: {format_published(q)}"
                + (f"  [{answer.verdict}]" if answer.verdict else "")
            )
            timed = format_timing(answer)
            if timed:
                yield f"  {'':<{label_width}}   time: {timed}"


def format_timing(answer: Answer) -> str:
    """``0.41 s computing (Sharemind's freq: 0.38 s), 2.3 s after submission``; "" untimed;
    ``< 0.05 s`` where one poll saw it both start and end."""
    timing = timing_json(answer.timing, answer.question.analysis, len(answer.question.sites))
    parts = []
    computing = timing["running_to_completed_s"]
    if computing is not None:
        parts.append(
            (f"< {WATCH_S} s" if computing < WATCH_S else f"{computing:.2f} s")
            + " computing"
            + (
                f" (Sharemind's {timing['sharemind_function']}: {timing['sharemind_s']:.2f} s)"
                if timing["sharemind_s"]
                else ""
            )
        )
    if timing["submitted_to_completed_s"] is not None:
        parts.append(f"{timing['submitted_to_completed_s']:.1f} s after submission")
    return ", ".join(parts)


@contextlib.contextmanager
def workspace_dir(directory: Path | None, keep: bool) -> Iterator[Path]:
    """A fresh temporary directory, or ``directory`` (absent or empty); removed on exit
    unless ``keep``."""
    created = directory is None or not directory.exists()
    if directory is None:
        path = Path(tempfile.mkdtemp(prefix="dic-demo-"))
    else:
        path = directory.resolve()
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise DemoError(f"--dir {directory}: must be an empty directory or not exist")
        path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        if not keep:
            if created:
                shutil.rmtree(path, ignore_errors=True)
            else:
                for child in path.iterdir():
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)


def answer_json(answer: Answer) -> dict[str, Any]:
    """One question of the JSON report: what was asked, the result, PILOT.md, timings."""
    q = answer.question
    published: Any = q.published
    if isinstance(published, tuple):
        published = (
            dict(zip(("chi2", "p"), published, strict=True))
            if q.analysis == "logrank"
            else list(published)
        )
    return {
        "label": q.label,
        "analysis": q.analysis,
        "parameters": q.parameters,
        "sites": list(q.sites),
        "request_id": answer.request_id,
        "aggregates": answer.aggregates,
        "result": format_result(q, answer.aggregates),
        "published": None if published is None else {"value": published, "source": q.source},
        "check": answer.check,
        "matched": answer.agrees,
        "verdict": answer.verdict,
        "timing": timing_json(answer.timing, q.analysis, len(q.sites)),
    }


#: Why the report carries no plaintext reference of its own.
PLAINTEXT_CHECK = (
    "not computed by the demo: its researcher reads aggregates only, and the rows exist "
    "only in the connectors; tests/e2e/test_demo.py computes every result from the same "
    "synthetic rows in plaintext (numpy, scipy, lifelines) and compares it with this report"
)


def report_json(result: DemoResult) -> dict[str, Any]:
    """The whole demo as one JSON-able object (``dic demo --json``)."""
    answers = result.answers
    return {
        "ok": result.ok,
        "workspace": str(result.workspace),
        "kept": result.keep,
        "min_cell_count": MIN_CELL_COUNT,
        "sites": SITES,
        "connectors": [{"site": r.site, "summary": r.summary()} for r in result.connectors],
        "questions": [answer_json(a) for a in answers],
        "summary": {
            check: sum(1 for a in answers if a.check == check)
            for check in ("same", "different", WITHHELD, "not published")
        },
        "plaintext_check": PLAINTEXT_CHECK,
        "timing_note": (
            "submitted_to_completed_s: from the submission's return to the first poll that saw "
            "the request completed on all three nodes (includes the approvals and the requests "
            "computed before it: the nodes compute one at a time); running_to_completed_s: from "
            f"the first poll that saw it running, polling every {WATCH_S} s; sharemind_s: "
            "PILOT.md's 'Timings to beat' (three physical servers) for the same function"
        ),
        "node_exit_codes": result.exit_codes,
        "audit": [{"node": v.node, "intact": v.ok, "entries": v.entries} for v in result.audit],
        "audit_intact": bool(result.audit) and all(v.ok for v in result.audit),
        "web_pages": result.web_pages,
        "browser": result.browser or None,
        "access": result.access,
        "node_configs": result.node_configs,
        "plots": result.plots,
        "subscription": None if result.subscription is None else result.subscription.as_json(),
        "seconds": round(result.seconds, 1),
    }


def plot_name(index: int, question: Question) -> str:
    """``07-survival-ecog-tm-tr.png``: the question's place in the report and its label."""
    label = re.sub(r"[^a-z0-9]+", "-", question.label.lower()).strip("-")
    return f"{index:02d}-{label}.png"


def write_plots(answers: Sequence[Answer], directory: Path, say: Say) -> list[Path]:
    """Each answer that has a figure (:func:`dic_connector.client.plots.plottable`) as a PNG
    in ``directory``; one that releases nothing to draw is named and skipped, and nothing is
    drawn, with a one-line notice, when matplotlib is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        say(f"plots skipped: matplotlib is not installed ({plots.INSTALL_HINT})")
        return []
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for index, answer in enumerate(answers):
        question = answer.question
        if question.analysis not in plots.plottable():
            continue
        path = directory / plot_name(index, question)
        try:
            plots.save(plots.draw(question.analysis, answer.aggregates, question.parameters),
                       path)
        except PlotError as exc:
            say(f"no plot of {question.label}: {exc}")
            continue
        written.append(path)
    say(f"{len(written)} plot(s) written to {directory}: "
        + ", ".join(path.name for path in written))
    return written


def _keep_access(
    result: DemoResult,
    cluster: LocalNodes,
    keys: Mapping[str, Ed25519PrivateKey],
    tokens: Sequence[Mapping[str, str]],
) -> list[str]:
    """Write each person's key and profile into the kept workspace; the lines that say how
    to go on."""
    people = [Person(name, role, site) for name, (role, site) in PEOPLE.items()]
    at = {RESEARCHER: SUBMIT_AT, **{f"owner_{s}": i for s, i in APPROVE_AT.items()}}
    ca_cert = cluster.deployment.pki[NODE_NAMES[0]].ca_cert.resolve()
    result.access = write_access(
        result.workspace / "people", people, keys, cluster.urls, NODE_NAMES, tokens, ca_cert, at
    )
    result.web_pages = {
        name: f"{url}/ui/" for name, url in zip(NODE_NAMES, cluster.urls, strict=True)
    }
    result.node_configs = [str(f.resolve()) for f in cluster.deployment.config_files]
    certs = [cluster.deployment.pki[name].cert.resolve() for name in NODE_NAMES]
    result.browser = chromium_command(certs, result.web_pages[NODE_NAMES[SUBMIT_AT]])
    profile = result.access[RESEARCHER]["profile"]
    return [
        "",
        "Kept: to go on, start the three nodes again (one terminal each):",
        *(f"  dic node serve --config {config}" for config in result.node_configs),
        "web pages (sign in with a token from a profile below):",
        *(f"  {name}: {url}" for name, url in result.web_pages.items()),
        "  the certificates name node-0..2, not 127.0.0.1: a browser must trust exactly them, e.g.",
        f"  {result.browser}",
        "signing keys and profiles (0600; the tokens are valid for a day):",
        *(
            f"  {name}: profile {files['profile']}"
            + (f", key {files['key']}" if files["key"] else "")
            for name, files in result.access.items()
        ),
        f"e.g. dic analyze median --column age --datasets tm,tr --study demo --profile {profile}",
    ]


async def run_demo(
    directory: Path | None = None,
    keep: bool = False,
    say: Say | None = None,
    report: Callable[[DemoResult], None] | None = None,
    plots_dir: Path | None = None,
) -> DemoResult:
    """Run the whole demo; progress and results go to ``say`` (default: stdout), the
    figures to ``plots_dir`` (PNG, if given), and the finished :class:`DemoResult` to
    ``report`` (before a differing figure is raised).

    Raises :class:`DemoError` (or another :class:`~dic_connector.errors.DicError`) naming
    the failed step; the nodes are stopped and the workspace removed (unless ``keep``)
    whatever happens.
    """
    started = time.monotonic()
    out = say or _print

    def progress(text: str) -> None:
        out(f"[{time.monotonic() - started:5.1f} s] {text}")

    mapping_path = find_mapping()
    with workspace_dir(directory, keep) as work, _hint_unless(keep):
        result = DemoResult(work, keep)
        progress(f"workspace {work}{' (kept)' if keep else ''}")
        data: dict[str, Path] = {}
        for site, title in SITES.items():
            manifest = write_bulk(work / "fhir" / site, pilot_resources(site))
            resources = sum(int(entry["count"]) for entry in manifest["output"])
            patients = sum(1 for p in pilot_patients() if p.site == site)
            data[site] = work / "fhir" / site
            progress(
                f"FHIR export of {site} ({title}): {patients} synthetic patients, "
                f"{resources} resources as NDJSON"
            )
        deployment = write_local_deployment(
            work / "deployment", sites=tuple(SITES), extra=NODE_SETTINGS
        )
        progress(
            f"deployment: CA, certificates for {', '.join(NODE_NAMES)} and "
            f"{', '.join(f'connector.{s}' for s in SITES)}, keyrings, configs "
            "(127.0.0.1 only)"
        )
        keys = {name: Ed25519PrivateKey.generate() for name in PEOPLE}
        tokens = await register_people(deployment, PEOPLE, keys)
        progress(
            "node databases migrated (SQLite); on each node registered "
            + ", ".join(
                f"{name} ({role.value}{f' of {site}' if site else ''})"
                for name, (role, site) in PEOPLE.items()
            )
        )
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            cluster = LocalNodes(deployment, http, tokens)
            try:
                async with cluster.running(work / "logs"):
                    progress(
                        "nodes serving: "
                        + ", ".join(
                            f"{n.name} {cluster.urls[n.index]} (pid {n.process.pid})"
                            for n in cluster.nodes
                        )
                    )
                    result.connectors = await _run_connectors(cluster, data, mapping_path, progress)
                    async with live_feed(cluster, work, mapping_path, progress) as feed:
                        result.answers = await _ask(cluster, keys, progress)
                        result.subscription = await run_subscription_step(
                            feed, keys, progress, RESEARCHER, APPROVE_AT[LIVE_SITE], SUBMIT_AT
                        )
                    result.audit = await _verify_audit(cluster, progress)
            finally:
                if cluster.nodes:
                    result.exit_codes = list(cluster.exit_codes)
                    progress(f"nodes stopped (SIGTERM; exit codes {cluster.exit_codes})")
        for line in report_lines(result.answers):
            out(line)
        if result.subscription is not None:
            out("")
            out(result.subscription.line())
        if plots_dir is not None:
            result.plots = [str(p) for p in write_plots(result.answers, plots_dir, out)]
        if keep:
            for line in _keep_access(result, cluster, keys, tokens):
                out(line)
        result.seconds = time.monotonic() - started
        if report is not None:
            report(result)
        differing = [a.question.label for a in result.answers if a.agrees is False]
        out("")
        if differing:
            raise DemoError(
                f"{len(differing)} result(s) differ from PILOT.md: {', '.join(differing)}"
            )
        if not result.ok:
            raise DemoError(
                "FHIR Subscription step: the counts are not the FHIR server's patients "
                "before and after the new patient"
            )
        published = sum(1 for a in result.answers if a.agrees)
        withheld = sum(1 for a in result.answers if a.check == WITHHELD)
        out(
            f"dic demo: {len(result.answers)} analyses on {len(SITES)} sites, "
            f"{published} agree with PILOT.md, {withheld} published figure(s) withheld by the "
            "disclosure rules, the rest are not published there; "
            f"{result.seconds:.1f} s in all" + ("" if keep else "; workspace removed")
        )
    return result


@contextlib.contextmanager
def _hint_unless(keep: bool) -> Iterator[None]:
    """Failures after the workspace exists point to ``--keep`` (for the nodes' logs)."""
    try:
        yield
    except DicError as exc:
        if keep:
            raise
        raise DemoError(
            f"{exc}\n(rerun with --keep to keep the workspace and the nodes' logs)"
        ) from exc


def _print(text: str) -> None:
    print(text, flush=True)


def main(
    directory: Path | None = None,
    keep: bool = False,
    stream: IO[str] | None = None,
    as_json: bool = False,
    stdout: IO[str] | None = None,
    plots_dir: Path | None = None,
) -> int:
    """``dic demo``: run the demo; 0 on success, 1 with a one-line reason otherwise.

    ``as_json``: everything readable goes to ``stream`` (stderr) and the report, as one line
    of JSON, is the last line on ``stdout`` (also when a published figure differs).
    """
    err = stream or sys.stderr
    out = stdout or sys.stdout

    def to_err(text: str) -> None:
        print(text, file=err, flush=True)

    def print_report(result: DemoResult) -> None:
        print(json_line(report_json(result)), file=out, flush=True)

    async def run() -> DemoResult:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:  # SIGTERM: stop the nodes and clean up, as on Ctrl-C
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signal.SIGTERM, task.cancel)
        if as_json:
            return await run_demo(directory, keep, to_err, print_report, plots_dir)
        return await run_demo(directory, keep, plots_dir=plots_dir)

    try:
        asyncio.run(run())
    except DicError as exc:
        print(f"dic demo failed: {exc}", file=err, flush=True)
        return 1
    except (OSError, aiohttp.ClientError, TimeoutError, subprocess.SubprocessError) as exc:
        print(f"dic demo failed: {type(exc).__name__}: {exc}", file=err, flush=True)
        return 1
    except asyncio.CancelledError:
        print("dic demo: stopped", file=err, flush=True)
        return 143
    return 0


__all__ = [
    "QUESTIONS",
    "SITES",
    "Answer",
    "DemoError",
    "DemoResult",
    "Question",
    "answer_json",
    "find_mapping",
    "main",
    "report_json",
    "run_demo",
]
