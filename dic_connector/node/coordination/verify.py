"""What every node checks for itself before it stores, approves or computes anything.

Nothing here trusts another node. A request arriving from a peer is accepted only if the
researcher's Ed25519 signature verifies against the key registered *on this node*; an
approval only if the data owner's signature does; and before computing, a node re-verifies
every stored signature, checks that every site whose data is touched approved (by a signed
approval of this request or a signed, unexpired standing policy covering the analysis and
columns), that each pinned dataset version is committed here, that the analysis exists and
its parameters fit the data, and that the plan's disclosure rules are at least as strict as
this node's settings and every relied-upon policy require (:func:`required_rules`: the
largest k and min_subset_size, the smallest max_levels, the release ledger checked if any
asks, the strictest perturbation; DESIGN.md sections 5 and 6). :func:`policy_loosens`
says what a new policy would loosen (the node refuses it at creation).
It also refuses while its own audit chain is broken, or while a peer's log is flagged for a
truncation or rewrite (:mod:`.exchange`).

A failed check is a :class:`NotReady` with a reason naming the site, dataset, version or
rule (never a value); the coordinator shows it as the request's status reason.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from dic_connector.errors import (
    AnalysisError,
    AuthorizationError,
    ConfigError,
    ConflictError,
    DicError,
    NotFoundError,
    NotReady,
    SignatureError,
)
from dic_connector.node.analyses.catalog import get_analysis
from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.analyses.filters import referenced_columns
from dic_connector.node.analyses.manifest import ColumnInfo, parse_manifest
from dic_connector.node.analyses.ptable import CellKeyParams
from dic_connector.node.config import NodeConfig
from dic_connector.node.store.audit import ChainHead
from dic_connector.node.store.enums import VersionState
from dic_connector.node.store.ledger import LedgerHead
from dic_connector.node.store.models import (
    AnalysisRequest,
    Approval,
    DatasetVersion,
    StandingPolicy,
)
from dic_connector.node.store.unit_of_work import UnitOfWork
from dic_connector.trust.payloads import verify_approval, verify_policy, verify_request_signature
from dic_connector.vocabulary import Decision, RequestStatus, Role

#: Statuses in which a request may still be planned and started.
STARTABLE = frozenset({RequestStatus.APPROVED, RequestStatus.WAITING_FOR_NODES})
#: Parameter keys that name typed columns (what a standing policy's ``columns`` lists).
COLUMN_KEYS = ("column", "columns", "group_by", "by", "time", "event", "row", "col", "y", "x",
               "numerator")
#: Parameter keys whose value may be a filter AST itself (prevalence's case definition).
FILTER_KEYS = ("filter", "numerator")



@dataclass(frozen=True)
class StudyInfo:
    """A study as forwarded with a request (studies are folders, not trusted objects)."""

    id: uuid.UUID
    title: str
    description: str


@dataclass(frozen=True)
class Plan:
    """What the three nodes agree to compute: one committed version per dataset, one k, one
    per-contributor minimum m, and the release ledger (its size and digest) the release is
    checked against."""

    request_id: uuid.UUID
    versions: dict[uuid.UUID, uuid.UUID]
    min_cell_count: int
    ledger: LedgerHead
    #: min_subset_size (0: the plan's k)
    min_subset_size: int = 0
    #: cell-key perturbation of opened counts (None: off)
    perturbation: CellKeyParams | None = None
    #: most levels of a table or grouping (None: no limit)
    max_levels: int | None = None
    #: whether the release is checked against the release ledger (it is recorded anyway)
    check_ledger: bool = True

    @property
    def rules(self) -> Rules:
        """The disclosure rules the release is held to."""
        return Rules.of(self.min_cell_count, self.min_subset_size or None, self.perturbation,
                        self.max_levels, self.check_ledger)

    def as_json(self) -> dict[str, Any]:
        out = {"versions": {str(d): str(v) for d, v in sorted(self.versions.items())},
               "min_cell_count": self.min_cell_count,
               "min_subset_size": self.rules.min_subset_size, "ledger": self.ledger.as_json(),
               "check_ledger": self.check_ledger}
        if self.perturbation is not None:
            out["perturbation"] = self.perturbation.as_canonical()
        if self.max_levels is not None:
            out["max_levels"] = self.max_levels
        return out

    @classmethod
    def from_json(cls, request_id: uuid.UUID, body: dict[str, Any]) -> Plan:
        try:
            versions = {uuid.UUID(d): uuid.UUID(v) for d, v in body["versions"].items()}
            k = int(body["min_cell_count"])
            m = int(body.get("min_subset_size", k))
            ledger = LedgerHead(int(body["ledger"]["entries"]), str(body["ledger"]["sha256"]))
            perturbation = (None if body.get("perturbation") is None
                            else CellKeyParams.from_json(body["perturbation"]))
            levels = None if body.get("max_levels") is None else int(body["max_levels"])
            check = body.get("check_ledger", True)
            if not isinstance(check, bool):
                raise TypeError("check_ledger")
            plan = cls(request_id, versions, k, ledger, m, perturbation, levels, check)
            plan.rules  # noqa: B018 (checks k, m and max_levels)
        except (KeyError, ValueError, TypeError, AttributeError, ConfigError) as exc:
            raise NotReady("malformed plan: 'versions', 'min_cell_count' and 'ledger' "
                           "expected, and a valid 'perturbation', 'max_levels' and "
                           "'check_ledger' if any") from exc
        return plan

    @property
    def contributors(self) -> tuple[str, ...]:
        """The ledger's ids of the pinned versions, in the order their rows are pooled."""
        return tuple(f"{d}/{self.versions[d]}" for d in sorted(self.versions))


def policy_columns(parameters: dict[str, Any]) -> list[str]:
    """The typed columns a request reads, as a standing policy names them."""
    out: set[str] = set()
    for key in COLUMN_KEYS:
        value = parameters.get(key)
        if isinstance(value, str):
            out.add(value)
        elif isinstance(value, list):
            out.update(v for v in value if isinstance(v, str))
        elif isinstance(value, dict) and "filter" in value:  # a derived binary of a table
            out.update(referenced_columns(value["filter"]))
    # a filter reads its columns too (a count of rows with bed10 >= 80 reads bed10), and so
    # do a case definition given as a filter and every labelled group of
    # survival/logrank/t_test
    for key in FILTER_KEYS:
        if isinstance(parameters.get(key), dict):
            out.update(referenced_columns(parameters[key]))
    groups = parameters.get("groups")
    for group in groups if isinstance(groups, list) else []:
        if isinstance(group, dict):
            out.update(referenced_columns(group.get("filter")))
    return sorted(out)


def check_analysis(analysis: str, version: str, parameters: dict[str, Any],
                   manifests: list[dict[str, Any]]) -> None:
    """The analysis exists, and its parameters fit its schema and every dataset's manifest."""
    recipe = get_analysis(analysis, version)
    recipe.check_parameters(parameters)
    for manifest in manifests:
        recipe.validate(parameters, manifest_info(manifest))


def manifest_info(manifest: dict[str, Any]) -> dict[str, ColumnInfo]:
    """A stored version's manifest, parsed and checked (``analyses.base.parse_manifest``)."""
    return parse_manifest(manifest.get("columns", []))


async def accept_request(uow: UnitOfWork, canonical_payload: str, signature: bytes,
                         study: StudyInfo | None, actor: str) -> tuple[AnalysisRequest, bool]:
    """Verify a researcher's signed request and store it (``submitted``); idempotent.

    ``study`` is given when the request was forwarded by a peer (the study is created here
    if missing, owned by the signing researcher); when None, the study must exist here.
    Returns the request and whether it was new.
    """
    try:
        claimed = json.loads(canonical_payload)
        researcher_name = claimed["researcher"]
        request_id = uuid.UUID(claimed["id"])
        study_id = uuid.UUID(claimed["study_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError("analysis request: payload lacks 'researcher', 'id' or "
                             "'study_id'") from exc
    researcher = await uow.principals.by_name(str(researcher_name))
    if researcher is None or researcher.role is not Role.RESEARCHER:
        raise SignatureError(f"analysis request: '{researcher_name}' is not a researcher "
                             "registered on this node")
    payload = verify_request_signature(canonical_payload, signature, researcher)
    existing = await uow.requests.find(request_id)
    if existing is not None:
        if existing.canonical_payload != canonical_payload:
            raise ConflictError(f"analysis request {request_id} exists with another payload")
        return existing, False
    found = await uow.studies.find(study_id)
    if found is None:
        if study is None or study.id != study_id:
            raise NotFoundError(f"study {study_id} not found")
        found = await uow.studies.create(study.title, researcher.id, study.description,
                                         study_id=study_id)
    if found.created_by != researcher.id:
        raise NotFoundError(f"study {study_id} not found")
    try:
        datasets = [uuid.UUID(d) for d in payload["datasets"]]
        analysis, version = str(payload["analysis"]), str(payload["analysis_version"])
        parameters = payload["parameters"]
        if not isinstance(parameters, dict) or not datasets:
            raise ValueError
    except (KeyError, ValueError, TypeError) as exc:
        raise SignatureError("analysis request: payload lacks 'datasets', 'analysis', "
                             "'analysis_version' or 'parameters'") from exc
    manifests = []
    for dataset_id in datasets:
        await uow.datasets.get(dataset_id)  # NotFound when unknown or deleted here
        latest = await uow.versions.latest_committed(dataset_id)
        if latest is not None:
            manifests.append(latest.manifest)
    check_analysis(analysis, version, parameters, manifests)
    req = await uow.requests.create(study_id, researcher.id, analysis, version, parameters,
                                    datasets, canonical_payload, signature=signature,
                                    request_id=request_id)
    await uow.audit.append(actor, "request.submit", f"request:{req.id}",
                           {"analysis": analysis, "researcher": researcher.name,
                            "datasets": sorted(str(d) for d in datasets)})
    return req, True


async def covering_policies(uow: UnitOfWork, site: str, req: AnalysisRequest
                            ) -> list[StandingPolicy]:
    scope = get_analysis(req.analysis, req.analysis_version).policy_scope(req.parameters)
    return await uow.policies.matching(site, scope, policy_columns(req.parameters))


async def reevaluate(uow: UnitOfWork, request_id: uuid.UUID, actor: str) -> AnalysisRequest:
    """Move a request to approved / rejected / awaiting_approval from its approvals and the
    sites' standing policies (audited when the status or its reason changes)."""
    req = await uow.requests.get(request_id, lock=True)
    if req.status not in (RequestStatus.SUBMITTED, RequestStatus.AWAITING_APPROVAL):
        return req
    before = (req.status, req.status_reason)
    decisions: dict[str, set[Decision]] = {}
    for approval in await uow.approvals.for_request(request_id):
        decisions.setdefault(approval.site_id, set()).add(approval.decision)
    denied = sorted(site for site, d in decisions.items() if Decision.DENY in d)
    if denied:
        req = await uow.requests.set_status(request_id, RequestStatus.REJECTED,
                                            f"denied by site(s) {', '.join(denied)}")
    else:
        pending = [site for site in await uow.requests.sites(request_id)
                   if Decision.APPROVE not in decisions.get(site, set())
                   and not await covering_policies(uow, site, req)]
        if pending:
            req = await uow.requests.set_status(
                request_id, RequestStatus.AWAITING_APPROVAL,
                f"waiting for site(s) {', '.join(pending)}")
        else:
            req = await uow.requests.set_status(request_id, RequestStatus.APPROVED,
                                                "every site involved approved")
    if (req.status, req.status_reason) != before:
        await uow.audit.append(actor, f"request.{req.status.value}", f"request:{request_id}",
                               {"reason": req.status_reason or ""})
    return req


@dataclass(frozen=True)
class Reliance:
    """What a request relies on at this node, read once per check: its approvals, the sites
    its data comes from, and for each site that did not approve it the standing policies
    covering it. The signature checks, k, m and the perturbation are all derived from this
    one reading (each had read approvals, sites and policies again: a dozen statements per
    check, and a request is checked eight times across the nodes)."""

    approvals: list[Approval]
    sites: list[str]
    #: site -> its covering policies, for each site without an explicit approval
    policies: dict[str, list[StandingPolicy]]

    @classmethod
    async def read(cls, uow: UnitOfWork, req: AnalysisRequest) -> Reliance:
        approvals = await uow.approvals.for_request(req.id)
        approved = {a.site_id for a in approvals if a.decision is Decision.APPROVE}
        sites = await uow.requests.sites(req.id)
        policies = {site: await covering_policies(uow, site, req)
                    for site in sites if site not in approved}
        return cls(approvals, sites, policies)


def required_min_subset_size(config: NodeConfig, k: int) -> int:
    """The smallest per-contributor query set this node accepts, when k is in force."""
    return max(k, config.min_subset_size or k)


def deployment_rules(config: NodeConfig) -> Rules:
    """The rules this node's own settings ask for."""
    return Rules.of(config.min_cell_count,
                    required_min_subset_size(config, config.min_cell_count),
                    deployment_perturbation(config), config.max_levels, config.ledger)


def policy_rules(payload: dict[str, Any], key: str = "policy") -> Rules:
    """The rules a policy's payload asks for (its k; min_subset_size, max_levels, the
    ledger forced on, the perturbation when it names them); :class:`ConfigError` naming
    the setting when one cannot be used."""
    body = payload.get("perturbation")
    perturbation = (None if body is None
                    else CellKeyParams.from_json(body, f"{key}.perturbation"))
    return Rules.of(payload["min_cell_count"], payload.get("min_subset_size"), perturbation,
                    payload.get("max_levels"), payload.get("ledger") is True)


async def required_rules(uow: UnitOfWork, config: NodeConfig, req: AnalysisRequest,
                         relied: Reliance | None = None) -> Rules:
    """The rules this node requires for ``req``: its own settings, tightened by those of
    every standing policy relied upon (an explicit approval relies on no policy), the
    strictest of each (:meth:`Rules.tightened`); ``relied``: what :meth:`Reliance.read`
    read in this unit of work (else read here)."""
    relied = relied or await Reliance.read(uow, req)
    rules = deployment_rules(config)
    for site, policies in relied.policies.items():
        for policy in policies:
            try:
                rules = rules.tightened(policy_rules(json.loads(policy.canonical_payload)))
            except ConfigError as exc:
                raise NotReady(f"{config.node_id}: the standing policy of site '{site}' asks "
                               f"for a setting that cannot be used: {exc}") from exc
    return rules


def policy_loosens(config: NodeConfig, payload: dict[str, Any]) -> list[str]:
    """What a new standing policy would loosen against this node's settings (empty: it
    only tightens them), each named by its setting. A policy can raise k and
    min_subset_size, lower max_levels, force the ledger on and ask for perturbation (at
    least the deployment's variance, exact statistics only if the deployment allows them);
    a looser setting would be overridden by the strictest-wins rule anyway, so it is
    refused at creation rather than silently ignored."""
    own = deployment_rules(config)
    try:
        asked = policy_rules(payload)
    except ConfigError as exc:
        return [str(exc)]
    out = []
    if payload["min_cell_count"] < own.min_cell_count:
        out.append(f"min_cell_count {payload['min_cell_count']} is below the deployment's "
                   f"{own.min_cell_count}")
    subset = payload.get("min_subset_size")
    if subset is not None and subset < own.min_subset_size:
        out.append(f"min_subset_size {subset} is below the deployment's "
                   f"{own.min_subset_size}")
    if asked.max_levels is not None and own.max_levels is not None \
            and asked.max_levels > own.max_levels:
        out.append(f"max_levels {asked.max_levels} is above the deployment's "
                   f"{own.max_levels}")
    if payload.get("ledger") is False and own.ledger:
        out.append("ledger false would turn the release ledger off; a policy can only "
                   "force it on")
    mine, theirs = own.perturbation, asked.perturbation
    if mine is not None and theirs is not None:
        if (theirs.variance, theirs.max_noise) < (mine.variance, mine.max_noise):
            out.append(f"perturbation {theirs.as_canonical()} is weaker than the "
                       f"deployment's {mine.as_canonical()}")
        if theirs.allow_exact and not mine.allow_exact:
            out.append("perturbation.allow_exact true would let exact statistics run "
                       "where the deployment refuses them")
    return out


async def required_min_cell_count(uow: UnitOfWork, config: NodeConfig,
                                  req: AnalysisRequest, relied: Reliance | None = None
                                  ) -> int:
    """The smallest k this node accepts for ``req`` (:func:`required_rules`)."""
    return (await required_rules(uow, config, req, relied)).min_cell_count


async def propose(uow: UnitOfWork, config: NodeConfig, request_id: uuid.UUID) -> Plan:
    """This node's proposal: the latest committed version of each dataset, its own k."""
    req = await uow.requests.get(request_id)
    versions: dict[uuid.UUID, uuid.UUID] = {}
    for dataset_id in await uow.requests.dataset_ids(request_id):
        latest = await uow.versions.latest_committed(dataset_id)
        if latest is None:
            raise NotReady(f"dataset {dataset_id} has no committed version on "
                           f"{config.node_id}")
        versions[dataset_id] = latest.id
    rules = await required_rules(uow, config, req)
    scope = await uow.ledger.scope(str(d) for d in versions)
    return Plan(request_id, versions, rules.min_cell_count, await uow.ledger.head(scope),
                rules.min_subset_size, rules.perturbation, rules.max_levels, rules.ledger)


def deployment_perturbation(config: NodeConfig) -> CellKeyParams | None:
    """The perturbation this node's setting asks for (None: off)."""
    p = config.perturbation
    return None if p is None else CellKeyParams(p.max_noise, p.variance, p.js, p.allow_exact)


async def required_perturbation(uow: UnitOfWork, config: NodeConfig,
                                req: AnalysisRequest, relied: Reliance | None = None
                                ) -> CellKeyParams | None:
    """The perturbation ``req`` must be computed with: this node's setting, tightened by
    the ``perturbation`` of every standing policy relied upon (a data owner's choice for
    its dataset), the strictest of them (:func:`required_rules`)."""
    return (await required_rules(uow, config, req, relied)).perturbation


async def check_plan(uow: UnitOfWork, config: NodeConfig, plan: Plan,
                     enforce_min_cell_count: bool = True) -> AnalysisRequest:
    """Verify, on this node alone, that ``plan`` may be computed; :class:`NotReady` if not.

    ``enforce_min_cell_count=False`` is for ``prepare``, where a node answers with the k it
    requires instead; ``start`` always enforces it."""
    return (await check_plan_rules(uow, config, plan, enforce_min_cell_count))[0]


async def check_plan_rules(uow: UnitOfWork, config: NodeConfig, plan: Plan,
                           enforce_min_cell_count: bool = True
                           ) -> tuple[AnalysisRequest, Rules]:
    """:func:`check_plan`, and the rules this node requires (:func:`required_rules`, from
    the same reading of approvals and policies: ``prepare`` answers with them)."""
    me = config.node_id
    req = await uow.requests.find(plan.request_id)
    if req is None:
        raise NotReady(f"{me} has not received the request yet")
    req = await reevaluate(uow, req.id, f"node:{me}")
    if req.status not in STARTABLE:
        raise NotReady(f"{me}: request is {req.status.value}"
                       + (f" ({req.status_reason})" if req.status_reason else ""))
    relied = await Reliance.read(uow, req)
    try:
        researcher = await uow.principals.get(req.submitted_by)
        verify_request_signature(req.canonical_payload, req.signature, researcher)
        _verify_approvals(relied)
    except (SignatureError, AuthorizationError) as exc:
        raise NotReady(f"{me}: {exc}") from exc
    if set(plan.versions) != set(await uow.requests.dataset_ids(req.id)):
        raise NotReady(f"{me}: the plan names other datasets than the request")
    manifests = []
    for dataset_id, version_id in sorted(plan.versions.items()):
        version = await _committed(uow, me, dataset_id, version_id)
        manifests.append(version.manifest)
    if len({_canonical_manifest(m) for m in manifests}) > 1:
        raise NotReady(f"{me}: the datasets' column manifests differ; they cannot be pooled")
    try:
        check_analysis(req.analysis, req.analysis_version, req.parameters, manifests)
    except AnalysisError as exc:
        raise NotReady(f"{me}: {exc}") from exc
    await check_own_audit(uow, me)
    await check_peer_audits(uow, me)
    ledger = await uow.ledger.head(await uow.ledger.scope(str(d) for d in plan.versions))
    if ledger != plan.ledger:
        raise NotReady(f"{me}: its release ledger ({ledger.entries} entries) is not the "
                       f"plan's ({plan.ledger.entries} entries) yet")
    rules = await required_rules(uow, config, req, relied)
    required = rules.min_cell_count
    if enforce_min_cell_count and plan.min_cell_count < required:
        raise NotReady(f"{me}: minimum cell count {plan.min_cell_count} is below the "
                       f"{required} this node requires")
    own = rules.perturbation
    if own is not None and plan.perturbation != own:
        raise NotReady(f"{me}: the plan's perturbation "
                       f"{plan.perturbation.as_canonical() if plan.perturbation else 'none'} "
                       f"is not the cell-key perturbation {own.as_canonical()} this node "
                       "requires")
    subset = rules.min_subset_size
    if enforce_min_cell_count and plan.rules.min_subset_size < subset:
        raise NotReady(f"{me}: minimum subset size {plan.rules.min_subset_size} is below the "
                       f"{subset} this node requires")
    if enforce_min_cell_count and rules.max_levels is not None and (
            plan.max_levels is None or plan.max_levels > rules.max_levels):
        raise NotReady(f"{me}: max_levels {plan.max_levels or 'unlimited'} is above the "
                       f"{rules.max_levels} this node requires")
    if enforce_min_cell_count and rules.ledger and not plan.check_ledger:
        raise NotReady(f"{me}: the plan does not check the release ledger, which this node "
                       "requires")
    return req, rules


async def check_own_audit(uow: UnitOfWork, me: str) -> None:
    """Refuse to take part in a computation while this node's own audit chain is broken.

    The chain is verified from where this process last verified it (the entries written
    since, and that entry still unchanged), so the check costs little per plan; a broken
    chain keeps every plan refused (:class:`NotReady`, naming the entry) until an operator
    has looked (``dic audit verify``).
    """
    prefix = uow.verified_audit
    result = await uow.audit.verify_chain(start=prefix.head)
    if result.broken_seq is not None:
        raise NotReady(f"{me}: its audit chain is broken at entry {result.broken_seq} "
                       f"({result.reason}); it computes nothing until an operator repairs it")
    prefix.head = result.head


async def check_peer_audits(uow: UnitOfWork, me: str) -> None:
    """Refuse every plan while a peer's audit log is flagged: its chain no longer held the
    head this node recorded (truncated or rewritten, :mod:`.exchange`). Every plan involves
    all three nodes, so the refusal lasts until an operator acknowledges the mismatch
    (``dic admin audit acknowledge <peer>``)."""
    flagged = await uow.peer_audit.flagged()
    if flagged:
        raise NotReady(f"{me}: the audit log of {', '.join(flagged)} no longer holds the head "
                       "recorded here (truncated or rewritten); it agrees to no plan until "
                       "an operator acknowledges it (`dic admin audit peers`)")


def _verify_approvals(relied: Reliance) -> None:
    """Every stored signature re-verified; every site approved or covered by a policy."""
    approved: set[str] = set()
    for approval in relied.approvals:
        verify_approval(approval)
        if approval.decision is Decision.DENY:
            raise SignatureError(f"site '{approval.site_id}' denied the request")
        approved.add(approval.site_id)
    for site in relied.sites:
        if site in approved:
            continue
        policies = relied.policies.get(site, [])
        for policy in policies:
            verify_policy(policy)
        if not policies:
            raise SignatureError(f"no valid approval or policy of site '{site}'")


async def _committed(uow: UnitOfWork, me: str, dataset_id: uuid.UUID,
                     version_id: uuid.UUID) -> DatasetVersion:
    try:
        version = await uow.versions.get(version_id)
    except NotFoundError:
        raise NotReady(f"version {version_id} is not on {me}") from None
    if version.dataset_id != dataset_id:
        raise NotReady(f"{me}: version {version_id} is not of dataset {dataset_id}")
    if version.state is not VersionState.COMMITTED:
        raise NotReady(f"{me}: version {version_id} is {version.state.value}, not committed")
    return version


def _canonical_manifest(manifest: dict[str, Any]) -> str:
    """A comparable form of a manifest's columns (sorted JSON: manifests may hold floats,
    e.g. declared bounds, which the signed canonical form refuses)."""
    return json.dumps(manifest.get("columns", []), sort_keys=True, separators=(",", ":"))


def reason_of(exc: BaseException) -> str:
    """A status reason for an error, as researchers see it: our own message for ours, only
    the type for anything else (a foreign exception's text may quote a driver's SQL, a
    file path or a value; the node's log has it, with the traceback)."""
    if isinstance(exc, DicError):
        return str(exc)[:500]
    return f"{type(exc).__name__} (internal error; the node's log has the details)"


@dataclass(frozen=True)
class Attestation:
    """What one node says about a request it computed: is its audit chain intact and still
    holding the head it reported when the three agreed, and which result did it open."""

    chain_ok: bool
    reason: str
    status: str
    result_sha256: str | None

    def as_json(self) -> dict[str, Any]:
        return {"chain_ok": self.chain_ok, "reason": self.reason, "status": self.status,
                "result_sha256": self.result_sha256}


async def attest(uow: UnitOfWork, request_id: uuid.UUID, head_seq: int,
                 head_hash: str) -> Attestation:
    """This node's attestation for ``request_id`` against the head recorded at agreement."""
    req = await uow.requests.get(request_id)
    verification = await uow.audit.verify_chain(expected=ChainHead(head_seq, head_hash))
    opened = await uow.audit.latest("result.open", f"request:{request_id}")
    digest = json.loads(opened.details).get("result_sha256") if opened is not None else None
    return Attestation(verification.broken_seq is None, verification.reason or "",
                       req.status.value, digest)
