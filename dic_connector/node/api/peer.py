"""The peer API: what the other two compute nodes may ask of this one.

Callers are authenticated by their TLS client certificate alone (the security middleware
calls :func:`peer_name` before any handler runs): it must chain to the
deployment CA and name one of the two *other* nodes configured in ``peers``
(subjectAltName ``node-<j>``). No token, no role, no person. Every call is checked against
this node's own database and keys (:mod:`dic_connector.node.coordination.verify`), so a peer
can relay signed objects but never make this node accept what their signers did not sign:

- ``PUT  /v1/peer/requests/{id}``             a researcher-signed request (+ its study)
- ``GET  /v1/peer/requests/{id}``             its status here (for the coordinator's peers)
- ``POST /v1/peer/requests/{id}/approvals``   a data owner's signed approval
- ``POST /v1/peer/requests/{id}/cancel``      the researcher cancelled at another node
- ``POST /v1/peer/requests/{id}/prepare``     would this node compute this plan?
- ``POST /v1/peer/requests/{id}/start``       compute it now, with this session id
- ``POST /v1/peer/requests/{id}/attest``      is your chain intact since we agreed, and
                                              which result did you open?
- ``POST /v1/peer/audit/head``                the head of yours I recorded: your head now,
                                              your hash at that seq, intact from there?
                                              (:mod:`~dic_connector.node.coordination.exchange`)
- ``POST /v1/peer/policies``                  a data owner's signed standing policy
- ``POST /v1/peer/policies/revoke``           that policy was revoked
- ``POST /v1/peer/datasets/{id}/erase``       the owner deleted the dataset at another node
- ``GET  /v1/peer/versions/{id}``             an upload version's state here, for a peer
                                              whose vote on it is in doubt
                                              (:mod:`~dic_connector.node.coordination.recovery`)

Calls that only *stop* things (cancel, revoke, erase) are taken on the peer's word: a
dishonest node can make the others refuse work or forget data, never disclose more. All
calls are idempotent (delivered at least once by the peer's outbox) and audited with the
peer as actor.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from aiohttp import web

from dic_connector.errors import (
    AuthenticationError,
    AuthorizationError,
    ConflictError,
    NotFoundError,
    NotReady,
    SignatureError,
)
from dic_connector.node.api.endpoint import Endpoint
from dic_connector.node.api.keys import CONFIG, COORDINATION, STORE
from dic_connector.node.api.requests import path_uuid
from dic_connector.node.api.schemas import BASE64, NAME, SIGNED, UUID, obj
from dic_connector.node.coordination.coordinator import COORDINATOR
from dic_connector.node.coordination.exchange import HEAD_PATH
from dic_connector.node.coordination.recovery import ABSENT, PEER_STATES
from dic_connector.node.coordination.verify import (
    Plan,
    StudyInfo,
    accept_request,
    attest,
    check_plan,
    check_plan_rules,
    reevaluate,
)
from dic_connector.node.store.audit import ChainHead
from dic_connector.node.store.models import AnalysisRequest
from dic_connector.node.store.unit_of_work import UnitOfWork
from dic_connector.vocabulary import RequestStatus, Role

SIGNED_BY = obj({**SIGNED["properties"], "signer": NAME})
PEER_REQUEST = obj({**SIGNED["properties"], "study": obj({
    "id": UUID, "title": {"type": "string", "minLength": 1, "maxLength": 300},
    "description": {"type": "string", "maxLength": 5000}})})
STATUS = obj({"id": UUID, "status": {"type": "string"},
              "status_reason": {"type": ["string", "null"]}})
PLAN = obj({"versions": {"type": "object", "maxProperties": 50,
                         "additionalProperties": UUID, "propertyNames": {"format": "uuid"}},
            "min_cell_count": {"type": "integer", "minimum": 1, "maximum": 10_000},
            "min_subset_size": {"type": "integer", "minimum": 1, "maximum": 10_000},
            "max_levels": {"type": "integer", "minimum": 2, "maximum": 1_000_000},
            "check_ledger": {"type": "boolean"},
            "ledger": obj({"entries": {"type": "integer", "minimum": 0},
                           "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}),
            # cell-key perturbation (absent: off); checked in full by Plan.from_json
            "perturbation": obj({"method": {"const": "cellkey"}, "D": {"type": "integer"},
                                 "V": {"type": "string", "maxLength": 32},
                                 "js": {"type": "integer"},
                                 "allow_exact": {"type": "boolean"}})},
           required=["versions", "min_cell_count", "min_subset_size", "ledger"])
HEAD = obj({"seq": {"type": "integer"}, "hash": {"type": "string"}})
PREPARED = obj({"ready": {"type": "boolean"}, "reason": {"type": "string"},
                "min_cell_count": {"type": "integer"}, "min_subset_size": {"type": "integer"},
                "max_levels": {"type": ["integer", "null"]}, "check_ledger": {"type": "boolean"},
                "max_concurrent_computations": {"type": "integer", "minimum": 1},
                "memory_budget_mib": {"type": "integer", "minimum": 1},
                "audit_head": HEAD},
               required=["ready"])
START = obj({**PLAN["properties"], "session_id": {"type": "string",
                                                  "pattern": "^[0-9a-f]{32}$"},
             "audit_heads": {"type": "object", "additionalProperties": HEAD,
                             "minProperties": 3, "maxProperties": 3}},
            required=[*PLAN["required"], "session_id", "audit_heads"])
REASON = obj({"reason": {"type": "string", "maxLength": 500}})
ERASE = obj({"site": {"type": "string", "maxLength": 64}, "by": NAME})
REVOKE = obj({"signature": BASE64})
ATTESTATION = obj({"chain_ok": {"type": "boolean"}, "reason": {"type": "string"},
                   "status": {"type": "string"},
                   "result_sha256": {"type": ["string", "null"]}})
HEX64: dict[str, Any] = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
RECORDED_HEAD = obj({"seq": {"type": "integer", "minimum": 0, "maximum": 2**62},
                     "hash": HEX64})
HOLDING = obj({"node": {"type": "string"}, "head": RECORDED_HEAD,
               "hash_at_seq": {"oneOf": [{"type": "null"}, HEX64]},
               "chain_ok": {"type": "boolean"}, "reason": {"type": "string"}})
DONE = obj({"ok": {"type": "boolean"}, "detail": {"type": "string"}}, required=["ok"])
VERSION_STATE = obj({"version_id": UUID,
                     "state": {"type": "string", "enum": sorted(PEER_STATES)}})


def peer_name(request: web.Request) -> str:
    """The configured name of the peer node whose certificate the caller presented, or 401."""
    config = request.app[CONFIG]
    transport = request.transport
    peercert = transport.get_extra_info("peercert") if transport is not None else None
    names = {v for k, v in (peercert or {}).get("subjectAltName", ()) if k == "DNS"}
    peers = {p.name for i, p in enumerate(config.peers) if i != config.node_index}
    matched = names & peers
    if len(matched) != 1:
        raise AuthenticationError("this operation needs a peer node's TLS client certificate")
    return str(matched.pop())


def _actor(request: web.Request) -> str:
    return f"node:{peer_name(request)}"


def _view(req: AnalysisRequest) -> web.Response:
    return web.json_response({"id": str(req.id), "status": req.status.value,
                              "status_reason": req.status_reason})


async def receive_request(request: web.Request) -> web.Response:
    body, actor = await request.json(), _actor(request)
    request_id = path_uuid(request, "request_id")
    study = body["study"]
    async with request.app[STORE].unit_of_work() as uow:
        req, _ = await accept_request(
            uow, body["payload"], base64.b64decode(body["signature"]),
            StudyInfo(uuid.UUID(study["id"]), study["title"], study.get("description", "")),
            actor)
        if req.id != request_id:
            raise SignatureError("analysis request: the signed id differs from the path")
        req = await reevaluate(uow, req.id, actor)
        response = _view(req)
    request.app[COORDINATION].wake()
    return response


async def request_status(request: web.Request) -> web.Response:
    async with request.app[STORE].reading() as uow:
        return _view(await uow.requests.get(path_uuid(request, "request_id")))


async def _signer(uow: Any, name: str, kind: str) -> Any:
    signer = await uow.principals.by_name(name)
    if signer is None or signer.role is not Role.DATA_OWNER:
        raise SignatureError(f"{kind}: '{name}' is not a data owner registered on this node")
    return signer


async def receive_approval(request: web.Request) -> web.Response:
    body, actor = await request.json(), _actor(request)
    async with request.app[STORE].unit_of_work() as uow:
        req = await uow.requests.get(path_uuid(request, "request_id"))
        signer = await _signer(uow, body["signer"], "approval")
        approval = await uow.approvals.add(req.id, signer, body["payload"],
                                           base64.b64decode(body["signature"]))
        await uow.audit.append(actor, f"approval.{approval.decision.value}",
                               f"request:{req.id}", {"site": approval.site_id,
                                                     "signer": signer.name})
        req = await reevaluate(uow, req.id, actor)
        response = _view(req)
    request.app[COORDINATION].wake()
    return response


async def receive_cancel(request: web.Request) -> web.Response:
    body, actor = await request.json(), _actor(request)
    async with request.app[STORE].unit_of_work() as uow:
        req = await uow.requests.get(path_uuid(request, "request_id"))
        if req.status in (RequestStatus.SUBMITTED, RequestStatus.AWAITING_APPROVAL,
                          RequestStatus.APPROVED, RequestStatus.WAITING_FOR_NODES):
            req = await uow.requests.set_status(req.id, RequestStatus.CANCELLED,
                                                body["reason"])
            await uow.audit.append(actor, "request.cancel", f"request:{req.id}")
        return _view(req)


async def prepare(request: web.Request) -> web.Response:
    body, actor = await request.json(), _actor(request)
    config = request.app[CONFIG]
    plan = Plan.from_json(path_uuid(request, "request_id"), body)
    busy = request.app[COORDINATION].busy()
    if busy is not None:  # the request waits until a computation here ends
        return web.json_response({"ready": False, "reason": busy})
    async with request.app[STORE].unit_of_work() as uow:
        head = await uow.audit.head()
        try:
            _, required = await check_plan_rules(uow, config, plan,
                                                 enforce_min_cell_count=False)
        except NotReady as exc:
            return web.json_response({"ready": False, "reason": str(exc)})
        # the strictest of the plan's rules and this node's (the coordinator takes them)
        rules = plan.rules.tightened(required)
        await uow.audit.append(actor, "compute.prepare", f"request:{plan.request_id}",
                               plan.as_json())
    return web.json_response({"ready": True, "reason": "",
                              "min_cell_count": rules.min_cell_count,
                              "min_subset_size": rules.min_subset_size,
                              "max_levels": rules.max_levels, "check_ledger": rules.ledger,
                              "max_concurrent_computations":
                                  config.max_concurrent_computations,
                              "memory_budget_mib": config.memory_budget_mib,
                              "audit_head": {"seq": head.seq, "hash": head.hash}})


async def start(request: web.Request) -> web.Response:
    """Start this node's side of a computation the coordinator agreed with it.

    Only the coordinator may start one (another peer is refused, 403), and only for a plan
    this node prepared: the same versions and ledger it answered ``prepare`` for (the
    coordinator may tighten the rules: raise k and the subset size, lower max_levels, turn
    the ledger check on; never change what is computed on);
    otherwise 409, and no session is opened. With a compute slot free it checks the plan
    and marks the request running in one transaction before it answers
    (:meth:`~dic_connector.node.coordination.coordinator.Coordination.begin`), then
    computes in the background; with none, it checks, answers, and checks again once a
    slot is free.
    """
    body = await request.json()
    config = request.app[CONFIG]
    sender = peer_name(request)
    coordinator = config.peers[COORDINATOR].name
    if sender != coordinator:
        raise AuthorizationError(f"only the coordinator ({coordinator}) starts a "
                                 f"computation; {sender} may not")
    plan = Plan.from_json(path_uuid(request, "request_id"), body)
    coordination = request.app[COORDINATION]
    session_id, heads = bytes.fromhex(body["session_id"]), body["audit_heads"]
    # a free compute slot: check and mark running in one transaction, then compute;
    # none: check now, queue for a slot and check again then (Coordination.start)
    slot = await coordination.take_slot()
    try:
        async with request.app[STORE].unit_of_work() as uow:
            if not await _prepared(uow, plan):
                raise ConflictError(f"request {plan.request_id}: this node prepared no plan "
                                    "with these versions and this ledger")
            if slot:  # NotReady -> 503 before anything starts
                await coordination.begin(uow, plan, session_id, heads)
            else:
                await check_plan(uow, config, plan)
    except BaseException:
        if slot:
            coordination.compute_lock.release()
        raise
    if slot:
        coordination.compute_begun(plan, session_id, heads)
    else:
        coordination.start_in_background(plan, session_id, heads)
    return web.json_response({"ok": True, "detail": "computation started"}, status=202)


async def _prepared(uow: UnitOfWork, plan: Plan) -> bool:
    """Whether this node answered ``prepare`` for ``plan``'s versions and ledger."""
    wanted = plan.as_json()
    for entry in await uow.audit.entries(obj=f"request:{plan.request_id}", limit=1000):
        if entry.action != "compute.prepare":
            continue
        prepared = json.loads(entry.details)
        if (prepared.get("versions"), prepared.get("ledger")) == (wanted["versions"],
                                                                  wanted["ledger"]):
            return True
    return False


async def attestation(request: web.Request) -> web.Response:
    body = await request.json()
    async with request.app[STORE].reading() as uow:
        answer = await attest(uow, path_uuid(request, "request_id"), body["seq"], body["hash"])
    return web.json_response(answer.as_json())


async def audit_head(request: web.Request) -> web.Response:
    """Does this node's chain still hold the head the calling peer recorded for it?

    Answers with the head now, the hash at the recorded ``seq`` and whether the chain
    verifies from there (:meth:`~dic_connector.node.store.audit.AuditLog.holds`: the cost is
    the entries written since, not the log). The asking peer judges the numbers itself; a
    read changes nothing, so it is not audited here."""
    body = await request.json()
    peer_name(request)
    recorded = ChainHead(int(body["seq"]), str(body["hash"]))
    async with request.app[STORE].reading() as uow:
        holding = await uow.audit.holds(recorded)
    return web.json_response({
        "node": request.app[CONFIG].node_id,
        "head": {"seq": holding.head.seq, "hash": holding.head.hash},
        "hash_at_seq": holding.hash_at, "chain_ok": holding.ok, "reason": holding.reason})


async def receive_policy(request: web.Request) -> web.Response:
    body, actor = await request.json(), _actor(request)
    async with request.app[STORE].unit_of_work() as uow:
        signer = await _signer(uow, body["signer"], "policy")
        policy = await uow.policies.add(signer, body["payload"],
                                        base64.b64decode(body["signature"]))
        await uow.audit.append(actor, "policy.add", f"policy:{policy.id}",
                               {"site": policy.site_id, "signer": signer.name})
    request.app[COORDINATION].wake()
    return web.json_response({"ok": True, "detail": "policy stored"})


async def revoke_policy(request: web.Request) -> web.Response:
    body, actor = await request.json(), _actor(request)
    async with request.app[STORE].unit_of_work() as uow:
        policy = await uow.policies.by_signature(base64.b64decode(body["signature"]))
        if policy is None:
            raise NotFoundError("no such policy on this node")
        await uow.policies.revoke(policy.id)
        await uow.audit.append(actor, "policy.revoke", f"policy:{policy.id}")
    return web.json_response({"ok": True, "detail": "policy revoked"})


async def erase_dataset(request: web.Request) -> web.Response:
    body, actor = await request.json(), _actor(request)
    dataset_id = path_uuid(request, "dataset_id")
    async with request.app[STORE].unit_of_work() as uow:
        try:
            dataset = await uow.datasets.get(dataset_id)
        except NotFoundError:
            return web.json_response({"ok": True, "detail": "already erased"})
        if dataset.site_id != body["site"]:
            raise NotFoundError(f"dataset {dataset_id} not found")
        erased = await uow.versions.delete_dataset(dataset_id)
        await uow.audit.append(actor, "dataset.delete", f"dataset:{dataset_id}",
                               {"site": dataset.site_id, "by": body["by"],
                                "versions_erased": len(erased)})
    return web.json_response({"ok": True, "detail": f"{len(erased)} version(s) erased"})


async def version_state(request: web.Request) -> web.Response:
    """An upload version's state on this node (``absent`` if it never reached it), for a peer
    that voted ready on it and never learnt the outcome. States only, never data; the
    question changes nothing, so any peer may ask."""
    version_id = path_uuid(request, "version_id")
    async with request.app[STORE].reading() as uow:
        try:
            state = (await uow.versions.get(version_id)).state.value
        except NotFoundError:
            state = ABSENT
    return web.json_response({"version_id": str(version_id), "state": state})


def _peer(method: str, path: str, handler: Any, operation_id: str, summary: str,
          request_schema: dict[str, Any] | None, response_schema: dict[str, Any],
          status: int = 200, uuid_params: tuple[str, ...] = ("request_id",)) -> Endpoint:
    return Endpoint(method, path, handler, operation_id, summary, frozenset(),
                    request_schema=request_schema, response_schema=response_schema,
                    status=status, uuid_params=uuid_params, peer=True, tag="peer")


_R = "/v1/peer/requests/{request_id}"
ENDPOINTS = (
    _peer("PUT", _R, receive_request, "peerReceiveRequest",
          "A researcher-signed request relayed by a peer node", PEER_REQUEST, STATUS),
    _peer("GET", _R, request_status, "peerRequestStatus", "The request's status on this node",
          None, STATUS),
    _peer("POST", _R + "/approvals", receive_approval, "peerReceiveApproval",
          "A data owner's signed approval relayed by a peer node", SIGNED_BY, STATUS),
    _peer("POST", _R + "/cancel", receive_cancel, "peerCancel",
          "The researcher cancelled the request at a peer node", REASON, STATUS),
    _peer("POST", _R + "/prepare", prepare, "peerPrepare",
          "Would this node compute this plan? (its own checks)", PLAN, PREPARED),
    _peer("POST", _R + "/start", start, "peerStart",
          "Compute the agreed plan now with the coordinator's session id", START, DONE,
          status=202),
    _peer("POST", _R + "/attest", attestation, "peerAttest",
          "This node's chain check against the head it reported, and its result digest",
          HEAD, ATTESTATION),
    _peer("POST", HEAD_PATH, audit_head, "peerAuditHead",
          "This node's audit head now, and whether its chain still holds the head the peer "
          "recorded", RECORDED_HEAD, HOLDING, uuid_params=()),
    _peer("POST", "/v1/peer/policies", receive_policy, "peerReceivePolicy",
          "A data owner's signed standing policy relayed by a peer node", SIGNED_BY, DONE,
          uuid_params=()),
    _peer("POST", "/v1/peer/policies/revoke", revoke_policy, "peerRevokePolicy",
          "A standing policy was revoked at a peer node", REVOKE, DONE, uuid_params=()),
    _peer("POST", "/v1/peer/datasets/{dataset_id}/erase", erase_dataset, "peerEraseDataset",
          "The owner deleted the dataset at a peer node: erase it here", ERASE, DONE,
          uuid_params=("dataset_id",)),
    _peer("GET", "/v1/peer/versions/{version_id}", version_state, "peerVersionState",
          "An upload version's state on this node, for a peer in doubt about it", None,
          VERSION_STATE, uuid_params=("version_id",)),
)
