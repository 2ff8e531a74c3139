"""What the people's ``dic`` commands do, over :mod:`.profile` and the client classes.

Researchers: ``dic study create|list``, ``dic analyze`` (sign, submit at one node, wait until
all three report, check that their results agree, print them), ``dic requests
list|show|cancel``, ``dic result`` (``analyze`` and ``result`` draw the result into a PNG or
SVG file with ``--plot``, :mod:`.plots`). Data owners: ``dic approve|deny`` (shows what the
analysis opens, from the catalogue, before signing), ``dic policy create|list|revoke``,
``dic datasets delete``. Everyone: ``dic datasets list``, ``dic analyses``, ``dic whoami``.

Each function takes the connected person and writes to ``out``; results come as an aligned
table, ``json`` (one object) or ``csv``. A function refuses what the person's role cannot do
with a :class:`~dic_connector.errors.ConfigError` saying which role can.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from dic_connector.client import plots
from dic_connector.client.admin import Admin
from dic_connector.client.data_owner import DataOwner
from dic_connector.client.principal import Principal
from dic_connector.client.researcher import Researcher
from dic_connector.client.views import AnalysisInfo, AnalysisRequest, Dataset, Policy, Study
from dic_connector.errors import ConfigError
from dic_connector.vocabulary import Decision, RequestStatus

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = ("table", "json", "csv")


def _as(person: Principal, kind: type[Any], what: str) -> Any:
    if not isinstance(person, kind):
        raise ConfigError(f"{what} is for a {kind.__name__.lower().replace('owner', ' owner')}"
                          f"; this profile is a {type(person).__name__}")
    return person


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Rows as aligned text columns under ``header``."""
    cells = [[str(c) for c in header]] + [[("" if c is None else str(c)) for c in r]
                                          for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def result_rows(aggregates: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A result as (name, value) rows: its scalars, then one row per level of a table;
    the disclosure rules are left to :func:`render_result`'s footer."""
    rows: list[tuple[str, Any]] = []
    for key, value in aggregates.items():
        if key == "disclosure":
            continue
        if isinstance(value, Mapping):
            rows += [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            rows.append((key, value))
    return rows


def render_result(aggregates: Mapping[str, Any], fmt: str) -> str:
    """A result as ``table``, ``json`` or ``csv``."""
    if fmt == "json":
        return json.dumps(aggregates, sort_keys=True)
    rows = result_rows(aggregates)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["name", "value"])
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    text = table(rows, ["", "value"])
    rules = aggregates.get("disclosure")
    if isinstance(rules, Mapping):
        text += "\ndisclosure control: " + ", ".join(f"{k}={v}" for k, v in rules.items())
    return text


# -- everyone ----------------------------------------------------------------------------


async def list_datasets(person: Principal, out: IO[str], fmt: str = "table") -> None:
    datasets = await person.datasets()
    if fmt == "json":
        print(json.dumps([_dataset_json(d) for d in datasets]), file=out)
        return
    rows = [(d.id, d.site, d.name, d.latest_version.number if d.latest_version else "",
             d.latest_version.row_count if d.latest_version else "",
             ", ".join(d.latest_version.columns) if d.latest_version else "")
            for d in datasets]
    print(table(rows, ["id", "site", "name", "version", "rows", "columns"]), file=out)


def _dataset_json(d: Dataset) -> dict[str, Any]:
    v = d.latest_version
    return {"id": d.id, "site": d.site, "name": d.name,
            "version": None if v is None else {"id": v.id, "number": v.number,
                                               "rows": v.row_count, "columns": list(v.columns)}}


async def list_analyses(person: Principal, out: IO[str]) -> None:
    for info in await person.node().analyses():
        print(f"{info.name} v{info.version}: {info.summary}\n  opens: {info.discloses}\n"
              f"  parameters: {', '.join(info.parameters_schema.get('properties', {})) or '-'}",
              file=out)


def _request_rows(requests: Sequence[AnalysisRequest]) -> list[tuple[Any, ...]]:
    return [(r.id, r.analysis, json.dumps(r.parameters, sort_keys=True), ",".join(r.sites),
             r.status.value, r.status_reason or "") for r in requests]


async def list_requests(person: Principal, out: IO[str]) -> None:
    requests = sorted(await person.requests(), key=lambda r: r.created_at)
    print(table(_request_rows(requests),
                ["id", "analysis", "parameters", "sites", "status", "reason"]), file=out)


async def show_request(person: Principal, request_id: str, out: IO[str]) -> None:
    """The request as each node sees it (they may differ while it replicates)."""
    rows = []
    for i, client in enumerate(person.clients()):
        state = await person.status(request_id, at=i)
        rows.append((client.node, "not there yet" if state is None else state.status.value,
                     "" if state is None else state.status_reason or "",
                     "" if state is None else ", ".join(
                         f"{a.site}: {a.decision.value}" for a in state.approvals)))
    print(table(rows, ["node", "status", "reason", "approvals"]), file=out)


# -- researchers -------------------------------------------------------------------------


async def create_study(person: Principal, title: str, description: str,
                       out: IO[str]) -> Study:
    researcher: Researcher = _as(person, Researcher, "creating a study")
    study = await researcher.create_study(title, description)
    print(f"study {study.id}: {study.title}", file=out)
    return study


async def list_studies(person: Principal, out: IO[str]) -> None:
    researcher: Researcher = _as(person, Researcher, "listing studies")
    rows = [(s.id, s.title, f"{s.created_at:%Y-%m-%d %H:%M}") for s in
            await researcher.studies()]
    print(table(rows, ["id", "title", "created"]), file=out)


def resolve_datasets(given: Sequence[str], datasets: Sequence[Dataset]) -> list[str]:
    """Dataset ids from what a person types: an id, a site (its one dataset), or site/name."""
    out = []
    for text in given:
        matches = [d for d in datasets if text in (d.id, f"{d.site}/{d.name}")]
        if not matches:
            matches = [d for d in datasets if d.site == text]
        if len(matches) != 1:
            known = ", ".join(sorted(f"{d.site}/{d.name}" for d in datasets)) or "none"
            raise ConfigError(f"--datasets {text!r} names {len(matches)} datasets; give an id "
                              f"or site/name (visible: {known})")
        out.append(matches[0].id)
    return out


async def _study(researcher: Researcher, study: str) -> str:
    for known in await researcher.studies():
        if study in (known.id, known.title):
            return known.id
    return (await researcher.create_study(study)).id


async def analyze(person: Principal, analysis: str, datasets: Sequence[str],
                  parameters: Mapping[str, Any], study: str, out: IO[str], *,
                  wait: bool = True, fmt: str = "table", timeout_s: float = 600,
                  version: str | None = None, plot: Path | None = None
                  ) -> dict[str, Any] | None:
    """Sign and submit; with ``wait``, wait for all three nodes and print the result they
    agree on (None without waiting), and draw it into ``plot`` if given (refused before
    anything is signed when it could not be drawn)."""
    researcher: Researcher = _as(person, Researcher, "submitting an analysis")
    if plot is not None:
        if not wait:
            raise ConfigError("--plot draws the result, so it needs the wait: drop --no-wait "
                              "(or plot later with `dic result ID --plot FILE`)")
        plots.check(analysis, plot)
    ids = resolve_datasets(datasets, await researcher.datasets())
    request_id = await researcher.submit(await _study(researcher, study), analysis, ids,
                                         parameters, version)
    if not wait:
        print(f"request {request_id} submitted; `dic result {request_id}` once completed",
              file=out)
        return None
    await researcher.wait(request_id, RequestStatus.COMPLETED, timeout_s=timeout_s)
    result = await researcher.result(request_id)  # every node's, compared
    print(render_result(result.aggregates, fmt), file=out)
    if plot is not None:
        _write_plot(plots.draw(analysis, result.aggregates, parameters), plot, fmt, out)
    return result.aggregates


async def show_result(person: Principal, request_id: str, out: IO[str],
                      fmt: str = "table", plot: Path | None = None) -> None:
    """Print the result every node agrees on; draw it into ``plot`` if given."""
    researcher: Researcher = _as(person, Researcher, "reading a result")
    request = None
    if plot is not None:
        request = await researcher.node().request(request_id)
        plots.check(request.analysis, plot)
    result = await researcher.result(request_id)
    print(render_result(result.aggregates, fmt), file=out)
    if request is not None and plot is not None:
        _write_plot(plots.draw(request.analysis, result.aggregates, request.parameters),
                    plot, fmt, out)


def _write_plot(figure: Figure, path: Path, fmt: str, out: IO[str]) -> None:
    """Save the figure; say so under a table (JSON and CSV output stay one document)."""
    plots.save(figure, path)
    if fmt == "table":
        print(f"plot written to {path}", file=out)


async def cancel_request(person: Principal, request_id: str, out: IO[str]) -> None:
    researcher: Researcher = _as(person, Researcher, "cancelling a request")
    state = await researcher.cancel(request_id)
    print(f"request {request_id}: {state.status.value}", file=out)


# -- data owners -------------------------------------------------------------------------


def describe_request(request: AnalysisRequest, catalogue: Sequence[AnalysisInfo]) -> str:
    """What an owner reads before signing: the analysis, its parameters, what it opens."""
    info = next((a for a in catalogue if a.name == request.analysis
                 and a.version == request.analysis_version), None)
    opens = info.discloses if info else "UNKNOWN: this node's catalogue lacks the analysis"
    return (f"request {request.id}: {request.analysis} v{request.analysis_version} "
            f"{json.dumps(request.parameters, sort_keys=True)} on the data of "
            f"{', '.join(request.sites)} (status {request.status.value})\n  opens: {opens}")


async def decide(person: Principal, request_ids: Sequence[str], decision: Decision,
                 out: IO[str], confirm: Callable[[str], bool]) -> list[AnalysisRequest]:
    """Show each request and what it opens, ask ``confirm``, then sign ``decision``."""
    owner: DataOwner = _as(person, DataOwner, "approving")
    catalogue = await owner.node().analyses()
    await owner.wait(list(request_ids), until={RequestStatus.AWAITING_APPROVAL,
                                               RequestStatus.SUBMITTED}, nodes=(owner.at,))
    chosen = []
    for request_id in request_ids:
        state = await owner.node().request(request_id)
        print(describe_request(state, catalogue), file=out)
        if confirm(f"{decision.value} request {request_id} for site {owner.site}?"):
            chosen.append(request_id)
        else:
            print(f"request {request_id}: left undecided", file=out)
    answers = await owner.approve(chosen, decision=decision) if chosen else []
    for answer in answers:
        print(f"request {answer.id}: {decision.value}d by {owner.site}; now "
              f"{answer.status.value}", file=out)
    return answers


async def create_policy(person: Principal, analyses: Sequence[str], columns: Sequence[str],
                        min_cell_count: int, days: int, out: IO[str],
                        perturbation: dict[str, Any] | None = None,
                        min_subset_size: int | None = None, max_levels: int | None = None,
                        ledger: bool | None = None) -> None:
    owner: DataOwner = _as(person, DataOwner, "a standing policy")
    policy = await owner.add_policy(analyses, columns, min_cell_count, dt.timedelta(days=days),
                                    perturbation=perturbation, min_subset_size=min_subset_size,
                                    max_levels=max_levels, ledger=ledger)
    print(f"policy {policy.id}: {', '.join(policy.analyses)} on {', '.join(policy.columns)} "
          f"with cells >= {policy.min_cell_count}{tightened(policy)}, until "
          f"{policy.expires_at:%Y-%m-%d}", file=out)


def tightened(policy: Policy) -> str:
    """What a policy tightens beyond its k, as ``create`` prints it (", ..." or "")."""
    parts = []
    if policy.min_subset_size is not None:
        parts.append(f"each site >= {policy.min_subset_size} rows")
    if policy.max_levels is not None:
        parts.append(f"at most {policy.max_levels} levels")
    if policy.ledger:
        parts.append("release ledger checked")
    if policy.perturbation is not None:
        parts.append(f"counts perturbed (cell key, {perturbation_text(policy.perturbation)})")
    return "".join(f", {p}" for p in parts)


def perturbation_text(perturbation: dict[str, Any]) -> str:
    """``D=3 V=2 js=1`` from a policy's signed perturbation (V is a decimal text there)."""
    out = f"D={perturbation.get('max_noise')} V={float(perturbation.get('variance', 0)):g}"
    if perturbation.get("js"):
        out += f" js={perturbation['js']}"
    return out


async def list_policies(person: Principal, out: IO[str]) -> None:
    owner: DataOwner = _as(person, DataOwner, "listing policies")

    def shown(value: object) -> str:
        return "-" if value is None else str(value)

    rows = [(p.id, ",".join(p.analyses), ",".join(p.columns), p.min_cell_count,
             shown(p.min_subset_size), shown(p.max_levels), "on" if p.ledger else "-",
             "-" if p.perturbation is None else perturbation_text(p.perturbation),
             f"{p.expires_at:%Y-%m-%d}") for p in await owner.policies()]
    print(table(rows, ["id", "analyses", "columns", "min_cell_count", "min_subset_size",
                       "max_levels", "ledger", "perturbation", "expires"]), file=out)


async def revoke_policy(person: Principal, policy_id: str, out: IO[str]) -> None:
    owner: DataOwner = _as(person, DataOwner, "revoking a policy")
    policy = await owner.revoke_policy(policy_id)
    print(f"policy {policy.id} revoked", file=out)


async def delete_dataset(person: Principal, dataset_id: str, out: IO[str]) -> None:
    owner: DataOwner = _as(person, DataOwner, "deleting a dataset")
    erased = await owner.delete_dataset(dataset_id)
    print(f"dataset {dataset_id}: {erased} version(s) erased here; the other nodes are told",
          file=out)


# -- admins ------------------------------------------------------------------------------


async def verify_audit(person: Principal, out: IO[str]) -> bool:
    admin: Admin = _as(person, Admin, "verifying the audit chains")
    reports = await admin.verify_audit()
    for report in reports:
        state = "intact" if report.ok else f"BROKEN at seq {report.broken_seq}: {report.reason}"
        print(f"{report.node}: audit chain {state}, {report.entries} entries", file=out)
    return all(r.ok for r in reports)


async def audit_peers(person: Principal, out: IO[str]) -> bool:
    """Each node's record of its peers' audit heads; False if a node flagged one."""
    admin: Admin = _as(person, Admin, "reading the peers' audit records")
    reports = await admin.audit_peers()
    for report in reports:
        if not report.peers:
            print(f"{report.node}: no peers (standalone)", file=out)
        for peer in report.peers.values():
            head = "no head recorded yet" if peer.head is None else \
                f"head seq {peer.head.seq} {peer.head.hash[:12]}"
            state = "; ".join(f"FLAGGED: {m.reason} (recorded seq {m.recorded.seq}, reported "
                              f"{m.reported.seq})" for m in peer.mismatches) or "ok"
            error = f", last error: {peer.last_error}" if peer.last_error else ""
            print(f"{report.node} sees {peer.peer}: {head}, {peer.exchanges} exchange(s), "
                  f"{peer.unreachable} unreachable{error}; {state}", file=out)
    return not any(report.flagged for report in reports)
