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
   (:data:`QUESTIONS`: counts, medians, a mean, frequency tables, the survival (median
   OS, 1- and 2-year OS) and a Fisher test, pooled and per site) at
   node-1; each data owner signs an approval, owner_tm at node-1 and owner_tr at node-2, so
   node-0, the coordinator, learns of both only by replication. The three nodes verify
   everything themselves, agree, compute under MPC and open only what each analysis
   declares (its ``discloses``).
5. **The report.** For every request: what was asked, what was opened, the result (read
   from all three nodes, which must agree), and the figure ``PILOT.md`` publishes, where it
   publishes one. Counts below the deployment's ``min_cell_count`` (5) are never opened and
   show as ``<5``, also where the paper printed them.

Nothing row-level is printed or logged: the connectors report counts only, the nodes hold
shares only, and the researcher reads aggregates. The nodes are stopped with SIGTERM (a
clean shutdown) and killed only after a grace period; the workspace is removed unless
``--keep``.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from dic_connector.client import Admin, DataOwner, Researcher
from dic_connector.connector.pipeline import PipelineReport, share_cohort
from dic_connector.connector.upload import NodeEndpoint, Uploader
from dic_connector.dev.deployment import (
    NODE_NAMES,
    PACKAGE_ROOT,
    LocalNodes,
    register_people,
    write_local_deployment,
)
from dic_connector.dev.synthetic import pilot_patients, pilot_resources, write_bulk
from dic_connector.errors import DemoError, DicError
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
#: node config for a snappy demo (the defaults suit production)
NODE_SETTINGS: dict[str, Any] = {"coordination_interval_s": 0.1, "mpc_timeout_s": 30}



# -- what the researcher asks, and what the paper publishes ------------------------------


@dataclass(frozen=True)
class Question:
    """One analysis request of the demo and the published figure to check it against.

    ``published`` is, by analysis: ``count`` the int n, ``median`` the float, ``survival``
    the median survival, ``frequency`` a level -> count dict (only the levels the paper
    reports), ``fisher`` the p-value to the decimals published, or None when PILOT.md has no
    such figure. ``options`` are the request's parameters when they are not
    ``{"column": column}`` (``column`` then only names the question).
    """

    analysis: str
    column: str | None
    sites: tuple[str, ...]
    published: int | float | dict[str, int] | None = None
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
    "row": {"filter": {"op": "<", "column": "bed10", "value": 80},
            "labels": ["BED10 < 80 Gy", "BED10 >= 80 Gy"]},
    "col": {"filter": {"op": "==", "column": "local_control", "value": "CR"},
            "labels": ["CR", "no CR"]},
    "disclose_excluded": True,
}
QUESTIONS: tuple[Question, ...] = (
    Question("count", None, BOTH, 48, "pooled cohort, n = 48"),
    Question("count", None, ("tm",), 24, "Fig. 5: length(tm$age)"),
    Question("count", None, ("tr",), 24, "Fig. 5: length(tr$age)"),
    Question("count", "local_control", BOTH, 46, "pooled cohort: local control n/a 2 of 48"),
    Question("median", "age", BOTH, 66.0, "Fig. 5: quantile(c(tm$age, tr$age))", "years"),
    Question("median", "age", ("tm",), 66.0, "Fig. 5: quantile(tm$age)", "years"),
    Question("median", "age", ("tr",), None, "", "years"),
    Question("median", "bed10", BOTH, 72.0, "pooled cohort: BED10 median", "Gy"),
    Question("median", "follow_up", BOTH, 8.5, "pooled cohort: follow-up median", "months"),
    Question("survival", "follow_up", BOTH, 19.0,
             "pooled cohort: median OS 19.0, 1-year OS 73 %, 2-year 48 %", "months",
             options={"time": "follow_up", "event": "event_death", "times": [12, 24],
                      "median": True}),
    Question("mean", "bed10", BOTH, None, "", "Gy"),
    Question("mean", "total_dose", BOTH, None, "", "Gy"),
    Question("frequency", "gender", BOTH, {"male": 29, "female": 19},
             "Fig. 5: freq(c(tm$gender, tr$gender))"),
    Question("frequency", "gender", ("tm",), {"male": 16, "female": 8},
             "Fig. 5: freq(tm$gender)"),
    Question("frequency", "ecog", BOTH, {"0": 18, "1": 22, "2": 8}, "pooled cohort: ECOG"),
    Question("frequency", "timing", BOTH,
             {"metachronous": 23, "oligoprogressive": 13, "synchronous": 8, "other": 4},
             "pooled cohort: timing"),
    Question("frequency", "local_control", BOTH, {"CR": 10, "PR": 13, "SD": 19, "PD": 4},
             "pooled cohort: local control"),
    Question("fisher", "local_control", BOTH, 0.027,
             "pooled cohort: CR by BED10 < 80 vs >= 80 Gy, 5 of 36 and 5 of 10, two-sided",
             options=CR_BY_BED10),
)


def _number(value: float) -> str:
    return f"{value:g}"


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
        (group,) = aggregates["groups"]
        if group.get("suppressed"):
            return f"refused: {group['reason']}"
        median = "not reached" if group["median"] is None else _number(group["median"])
        at = ", ".join(f"S({_number(t)}) = {'withheld' if v is None else f'{v:.3f}'}"
                       for t, v in zip(group["times"], group["survival"], strict=True))
        return f"median {median}{unit}, {at} (n = {group['n']})"
    if question.analysis == "mean":
        return (f"{float(aggregates['mean']):.2f}{unit} (n = {aggregates['n']}, "
                f"sum = {aggregates['sum']})")
    if question.analysis == "fisher":
        table = aggregates["table"]
        cells = "; ".join(
            f"{row}: " + ", ".join(f"{col} {n}" for col, n in
                                   zip(table["columns"]["levels"], line, strict=True))
            for row, line in zip(table["rows"]["levels"], table["cells"], strict=True))
        return f"p = {float(aggregates['p_value']):.4f} ({cells})"
    levels = aggregates["levels"]
    return ", ".join(f"{level}={count}" for level, count in levels.items())


def format_published(question: Question) -> str:
    published = question.published
    if published is None:
        return "not published"
    if isinstance(published, dict):
        text = ", ".join(f"{level}={count}" for level, count in published.items())
    elif question.analysis == "count":
        text = f"n = {published}"
    elif question.analysis == "fisher":
        text = f"p = {_number(float(published))}"
    else:
        text = _number(float(published)) + (f" {question.unit}" if question.unit else "")
    return f"{text} ({question.source})" if question.source else text


def matches(question: Question, aggregates: Mapping[str, Any], k: int, rows: int
            ) -> tuple[bool | None, str]:
    """Whether the result agrees with the published figure (None: nothing published), and
    a short verdict for the report; ``rows`` is the number of patients the question covers.

    What disclosure control withholds agrees with a published figure when the figure shows
    that the rule had to withhold it: a cell shown as ``<k`` a published count below k; a
    refused count the complement rule refused (between 1 and k - 1 patients outside it); a
    cell shown as ``suppressed`` (secondary suppression) a published count of at least k.
    """
    published = question.published
    if published is None:
        return None, ""
    if aggregates.get("suppressed"):
        reason = str(aggregates.get("reason", ""))
        if question.analysis == "count" and isinstance(published, int):
            if "complement rule" in reason and 0 < rows - published < k:
                return True, (f"not opened: {rows - published} of {rows} outside it < {k} "
                              "(complement rule)")
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
        decimals = len(repr(published).split(".")[1])
        ok = round(float(aggregates["p_value"]), decimals) == published
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
    agrees: bool | None  #: None: PILOT.md publishes no such figure
    verdict: str = ""


@dataclass
class DemoResult:
    """What :func:`run_demo` did (counts, ids and aggregates only)."""

    workspace: Path
    connectors: list[PipelineReport] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(a.agrees is not False for a in self.answers)


Say = Callable[[str], None]


def find_mapping(name: str = MAPPING_FILE) -> Path:
    """``mappings/<name>`` of the repository this package runs from (or of the current
    directory); :class:`DemoError` naming where it looked."""
    candidates = [PACKAGE_ROOT / "mappings" / name, Path.cwd() / "mappings" / name]
    for path in candidates:
        if path.is_file():
            return path
    raise DemoError(f"mapping {name} not found; looked in "
                    f"{', '.join(str(p.parent) for p in candidates)} (run from a checkout)")


async def _run_connectors(cluster: LocalNodes, data: Mapping[str, Path], mapping_path: Path,
                          say: Say) -> list[PipelineReport]:
    mapping = load_mapping(mapping_path)
    endpoints = [NodeEndpoint(url, name) for url, name in zip(cluster.urls, NODE_NAMES,
                                                               strict=True)]
    reports = []
    for site, directory in data.items():
        uploader = Uploader(endpoints, cluster.deployment.pki[f"connector.{site}"], site,
                            timeout_s=30)
        async with make_source(NdjsonConfig(directory)) as source:
            report = await share_cohort(source, mapping, uploader, DATASET)
        say(f"connector {report.summary()}")
        reports.append(report)
    return reports


async def _ask(cluster: LocalNodes, keys: Mapping[str, Ed25519PrivateKey], say: Say
               ) -> list[Answer]:
    """Submit, approve, wait for and read every question of :data:`QUESTIONS`, as the
    researcher and the two data owners would with :mod:`dic_connector.client`."""
    researcher = Researcher(RESEARCHER, keys[RESEARCHER], cluster.clients(RESEARCHER),
                            at=SUBMIT_AT, poll_s=POLL_S)
    datasets = {d.site: d.id for d in await researcher.datasets()
                if d.name == DATASET and d.latest_version is not None}
    missing = set(SITES) - set(datasets)
    if missing:
        raise DemoError(f"no committed dataset for site(s) {sorted(missing)} on "
                        f"{NODE_NAMES[SUBMIT_AT]}")
    study = await researcher.create_study("Adrenal metastases, MR-guided RT (pilot rerun)")
    ids = list(await asyncio.gather(*(
        researcher.submit(study, q.analysis, [datasets[s] for s in q.sites], q.parameters)
        for q in QUESTIONS)))
    say(f"researcher: {len(ids)} signed requests submitted at {NODE_NAMES[SUBMIT_AT]}")

    async def approve_all(site: str) -> int:
        owner = f"owner_{site}"
        mine = [i for i, q in zip(ids, QUESTIONS, strict=True) if site in q.sites]
        await DataOwner(owner, site, keys[owner], cluster.clients(owner), poll_s=POLL_S
                        ).approve(mine, at=APPROVE_AT[site], timeout_s=COMPUTE_TIMEOUT_S)
        return len(mine)

    approved = await asyncio.gather(*(approve_all(site) for site in SITES))
    say("data owners: " + ", ".join(
        f"owner_{site} signed {n} approvals at {NODE_NAMES[APPROVE_AT[site]]}"
        for site, n in zip(SITES, approved, strict=True))
        + f"; {NODE_NAMES[0]} (the coordinator) got them by replication")
    await researcher.wait(ids, until=RequestStatus.COMPLETED, timeout_s=COMPUTE_TIMEOUT_S)
    answers = []
    for question, request_id in zip(QUESTIONS, ids, strict=True):
        aggregates = (await researcher.result(request_id)).aggregates  # equal on all three
        rows = sum(1 for patient in pilot_patients() if patient.site in question.sites)
        agrees, verdict = matches(question, aggregates, MIN_CELL_COUNT, rows)
        answers.append(Answer(question, request_id, aggregates, agrees, verdict))
    say(f"all {len(ids)} requests completed on all three nodes; each result identical on "
        f"{', '.join(NODE_NAMES)}")
    return answers


async def _verify_audit(cluster: LocalNodes, say: Say) -> None:
    """As the admin: every node recomputes its hash-chained audit log."""
    verified = await Admin("admin", cluster.clients("admin")).verify_audit()
    for report in verified:
        if not report.ok:
            raise DemoError(f"{report.node}: audit chain broken: {report}")
    say("admin: audit chains intact on all three nodes "
        f"({' / '.join(str(report.entries) for report in verified)} entries)")


def report_lines(answers: Sequence[Answer], width: int = 96) -> Iterator[str]:
    """The readable results: per analysis what it opens, then each question and result."""
    yield ""
    yield (f"Results (min_cell_count k = {MIN_CELL_COUNT}: a count below {MIN_CELL_COUNT} "
           f"is never opened and shows as <{MIN_CELL_COUNT}; each site must contribute at "
           f"least {MIN_CELL_COUNT} rows; what a complement or a total would give away is "
           "refused, or hidden as 'suppressed')")
    label_width = max(len(a.question.label) for a in answers) + 2
    for name in dict.fromkeys(a.question.analysis for a in answers):
        analysis = get_analysis(name)
        yield ""
        yield f"{analysis.name} v{analysis.version}: {analysis.summary}"
        yield from textwrap.wrap(analysis.discloses, width, initial_indent="  opens: ",
                                 subsequent_indent="         ")
        for answer in (a for a in answers if a.question.analysis == name):
            q = answer.question
            yield f"  {q.label:<{label_width}}-> {format_result(q, answer.aggregates)}"
            yield (f"  {'':<{label_width}}   PILOT.md: {format_published(q)}"
                   + (f"  [{answer.verdict}]" if answer.verdict else ""))


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


async def run_demo(directory: Path | None = None, keep: bool = False,
                   say: Say | None = None) -> DemoResult:
    """Run the whole demo; progress and results go to ``say`` (default: stdout).

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
        result = DemoResult(work)
        progress(f"workspace {work}{' (kept)' if keep else ''}")
        data: dict[str, Path] = {}
        for site, title in SITES.items():
            manifest = write_bulk(work / "fhir" / site, pilot_resources(site))
            resources = sum(int(entry["count"]) for entry in manifest["output"])
            patients = sum(1 for p in pilot_patients() if p.site == site)
            data[site] = work / "fhir" / site
            progress(f"FHIR export of {site} ({title}): {patients} synthetic patients, "
                     f"{resources} resources as NDJSON")
        deployment = write_local_deployment(work / "deployment", sites=tuple(SITES),
                                            extra=NODE_SETTINGS)
        progress(f"deployment: CA, certificates for {', '.join(NODE_NAMES)} and "
                 f"{', '.join(f'connector.{s}' for s in SITES)}, keyrings, configs "
                 "(127.0.0.1 only)")
        keys = {name: Ed25519PrivateKey.generate() for name in PEOPLE}
        tokens = await register_people(deployment, PEOPLE, keys)
        progress("node databases migrated (SQLite); on each node registered "
                 + ", ".join(f"{name} ({role.value}{f' of {site}' if site else ''})"
                             for name, (role, site) in PEOPLE.items()))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            cluster = LocalNodes(deployment, http, tokens)
            try:
                async with cluster.running(work / "logs"):
                    progress("nodes serving: " + ", ".join(
                        f"{n.name} {cluster.urls[n.index]} (pid {n.process.pid})"
                        for n in cluster.nodes))
                    result.connectors = await _run_connectors(cluster, data, mapping_path,
                                                              progress)
                    result.answers = await _ask(cluster, keys, progress)
                    await _verify_audit(cluster, progress)
            finally:
                if cluster.nodes:
                    progress(f"nodes stopped (SIGTERM; exit codes {cluster.exit_codes})")
        for line in report_lines(result.answers):
            out(line)
        result.seconds = time.monotonic() - started
        differing = [a.question.label for a in result.answers if a.agrees is False]
        out("")
        if differing:
            raise DemoError(f"{len(differing)} result(s) differ from PILOT.md: "
                            f"{', '.join(differing)}")
        published = sum(1 for a in result.answers if a.agrees)
        out(f"dic demo: {len(result.answers)} analyses on {len(SITES)} sites, "
            f"{published} agree with PILOT.md, the rest are not published there; "
            f"{result.seconds:.1f} s in all"
            + ("" if keep else "; workspace removed"))
    return result


@contextlib.contextmanager
def _hint_unless(keep: bool) -> Iterator[None]:
    """Failures after the workspace exists point to ``--keep`` (for the nodes' logs)."""
    try:
        yield
    except DicError as exc:
        if keep:
            raise
        raise DemoError(f"{exc}\n(rerun with --keep to keep the workspace and the nodes' "
                        "logs)") from exc


def _print(text: str) -> None:
    print(text, flush=True)


def main(directory: Path | None = None, keep: bool = False,
         stream: IO[str] | None = None) -> int:
    """``dic demo``: run the demo; 0 on success, 1 with a one-line reason otherwise."""
    err = stream or sys.stderr

    async def run() -> DemoResult:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:  # SIGTERM: stop the nodes and clean up, as on Ctrl-C
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await run_demo(directory, keep)

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


__all__ = ["QUESTIONS", "SITES", "Answer", "DemoError", "DemoResult", "Question",
           "find_mapping", "main", "run_demo"]
