"""Studies, analysis requests and results: what a researcher may do.

A researcher creates a study, submits analysis requests in it naming datasets, watches
their status and reads the aggregate result. A data owner sees the requests that touch
their site (to approve them). Nobody reads rows or shares here: a result holds only the
aggregates that disclosure control allowed to be opened.

A request is *signed* by the researcher: the body is ``{"payload", "signature"}`` where
``payload`` is the canonical JSON (RFC 8785 subset) of ``{"type": "analysis_request", "id",
"study_id", "analysis", "analysis_version", "parameters", "datasets", "researcher"}`` and
``signature`` the base64 Ed25519 signature (RFC 8032) with the key registered for the
researcher on every node. The id is chosen by the client, so a retried submission is
idempotent. The node verifies it, stores it and announces it to the two other nodes, which
verify the signature themselves (:mod:`dic_connector.node.coordination`).

Status flow (``store.enums.REQUEST_TRANSITIONS``): submitted -> awaiting_approval ->
approved (every site involved approved, by a signed approval or a matching signed standing
policy) or rejected (a site denied) -> waiting_for_nodes / running -> completed or failed.
Running and completion are driven by the nodes' coordination, not by this API.

A status read may wait for a change instead of being polled (:func:`get_request`): the
answer carries an ``ETag`` (a digest of the body), and ``GET /v1/requests/{id}?wait=25``
with that tag in ``If-None-Match`` answers as soon as the request differs from it (200, the
same body as without ``wait``), or ``304 Not Modified`` when it has not changed within the
wait (cut to the node's ``status_wait_max_s``). Without ``If-None-Match`` a waiting read of
a request not visible here yet (replication under way) answers once it arrives, or 404 at
the wait's end. The wait adds no disclosure: the caller and visibility are checked on every
read, and a request the caller may not see never ends a wait early. It is woken by the
commits that change the request on this node, not by reading the database in a loop
(:mod:`.changes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import math
import uuid
from typing import Any

from aiohttp import web

from dic_connector.errors import AnalysisError, AuthorizationError, NotFoundError, SignatureError
from dic_connector.node.api.auth import Identity
from dic_connector.node.api.endpoint import Endpoint
from dic_connector.node.api.keys import CONFIG, COORDINATION, REQUEST_CHANGES, STORE, identity
from dic_connector.node.api.problems import problem
from dic_connector.node.api.schemas import (
    REQUEST,
    REQUEST_PAYLOAD,
    RESULT,
    SIGNED,
    STUDY,
    STUDY_CREATE,
    array,
    decode_signature,
    schema_error,
)
from dic_connector.node.coordination.replication import announce
from dic_connector.node.coordination.verify import accept_request, reevaluate
from dic_connector.node.store.models import AnalysisRequest
from dic_connector.node.store.unit_of_work import UnitOfWork
from dic_connector.trust.payloads import parse_signed_payload
from dic_connector.vocabulary import ENDED_STATUSES, RequestStatus, Role

RESEARCHER = frozenset({Role.RESEARCHER})
READERS = frozenset({Role.RESEARCHER, Role.DATA_OWNER, Role.ADMIN})

#: The status read's optional wait and condition (OpenAPI parameter objects).
STATUS_WAIT_PARAMETERS: tuple[dict[str, Any], ...] = (
    {"name": "wait", "in": "query", "required": False,
     "description": "Seconds to wait for the request to differ from If-None-Match (or, "
                    "without it, to arrive here) before answering; cut to the node's "
                    "status_wait_max_s",
     "schema": {"type": "number", "minimum": 0}},
    {"name": "until", "in": "query", "required": False,
     "description": "With wait: answer only once the status is one of these (comma-"
                    "separated) or one a request never leaves, or when the wait is over; "
                    "the statuses in between are not sent",
     "schema": {"type": "string"}},
    {"name": "If-None-Match", "in": "header", "required": False,
     "description": "The ETag of the status last seen: 304 while it is unchanged",
     "schema": {"type": "string"}},
)


def path_uuid(request: web.Request, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise NotFoundError(f"{name} is not a valid id") from None


def _iso(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def request_view(uow: UnitOfWork, req: AnalysisRequest) -> dict[str, Any]:
    approvals = await uow.approvals.for_request(req.id)
    datasets, sites = await uow.requests.datasets_and_sites(req.id)
    return {
        "id": str(req.id), "study_id": str(req.study_id), "analysis": req.analysis,
        "analysis_version": req.analysis_version, "parameters": req.parameters,
        "datasets": [str(d) for d in datasets],
        "sites": sites, "status": req.status.value,
        "status_reason": req.status_reason,
        "approvals": [{"site": a.site_id, "decision": a.decision.value,
                       "created_at": _iso(a.created_at)} for a in approvals],
        "created_at": _iso(req.created_at), "updated_at": _iso(req.updated_at),
    }


async def may_see(uow: UnitOfWork, who: Identity, req: AnalysisRequest) -> bool:
    """Admins see every request, researchers their own, data owners those touching their site."""
    if who.role is Role.ADMIN:
        return True
    if who.role is Role.RESEARCHER:
        return req.submitted_by == who.principal_id
    return who.role is Role.DATA_OWNER and who.site_id in await uow.requests.sites(req.id)


async def visible_request(uow: UnitOfWork, who: Identity, request_id: uuid.UUID) -> AnalysisRequest:
    """The request if ``who`` may see it; NotFound otherwise (existence is not disclosed)."""
    req = await uow.requests.get(request_id)
    if not await may_see(uow, who, req):
        raise NotFoundError(f"analysis request {request_id} not found")
    return req


async def create_study(request: web.Request) -> web.Response:
    who, body = identity(request), await request.json()
    async with request.app[STORE].unit_of_work() as uow:
        study = await uow.studies.create(body["title"], who.principal_id,
                                         body.get("description", ""))
        await uow.audit.append(who.actor, "study.create", f"study:{study.id}")
        return web.json_response(_study(study), status=201)


def _study(study: Any) -> dict[str, Any]:
    return {"id": str(study.id), "title": study.title, "description": study.description,
            "created_at": _iso(study.created_at)}


async def list_studies(request: web.Request) -> web.Response:
    who = identity(request)
    async with request.app[STORE].reading() as uow:
        mine = None if who.role is Role.ADMIN else who.principal_id
        return web.json_response([_study(s) for s in await uow.studies.all(created_by=mine)])


async def submit_request(request: web.Request) -> web.Response:
    """Accept a researcher's signed request, verify it here, and announce it to the peers."""
    who, body = identity(request), await request.json()
    study_id = path_uuid(request, "study_id")
    config = request.app[CONFIG]
    text, signature = body["payload"], decode_signature(body["signature"])
    payload = parse_signed_payload(text, "analysis_request")
    error = schema_error(REQUEST_PAYLOAD, payload)
    if error is not None:
        raise AnalysisError(f"payload {error}"[:300])
    if payload["researcher"] != who.name:
        raise SignatureError("analysis request: the payload names another researcher")
    if payload["study_id"] != str(study_id):
        raise AnalysisError("payload at study_id: differs from the study in the path")
    async with request.app[STORE].unit_of_work() as uow:
        study = await uow.studies.get(study_id)
        if study.created_by != who.principal_id:
            raise NotFoundError(f"study {study_id} not found")
        req, created = await accept_request(uow, text, signature, None, who.actor)
        if created:
            await announce(uow, config, "request", "PUT", f"/v1/peer/requests/{req.id}", {
                "payload": text, "signature": body["signature"],
                "study": {"id": str(study.id), "title": study.title,
                          "description": study.description}})
        req = await reevaluate(uow, req.id, who.actor)
        view = await request_view(uow, req)
    request.app[COORDINATION].wake()
    return web.json_response(view, status=201 if created else 200)


async def list_requests(request: web.Request) -> web.Response:
    who = identity(request)
    async with request.app[STORE].reading() as uow:
        views = [await request_view(uow, req) for req in await uow.requests.all()
                 if await may_see(uow, who, req)]
        return web.json_response(views)


def view_etag(view: dict[str, Any]) -> str:
    """The entity tag of a status body: a digest of its JSON, so any change (status,
    reason, an approval) gives another tag."""
    text = json.dumps(view, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def wait_seconds(request: web.Request, limit_s: float) -> float | web.Response:
    """The ``wait`` query parameter in seconds, cut to ``limit_s``; 0 without it; a 400
    problem for one that is not a finite number >= 0."""
    text = request.query.get("wait")
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        return problem(400, "query parameter 'wait' must be a number of seconds >= 0, "
                            f"not {text[:40]!r}")
    return min(value, limit_s)


def until_statuses(request: web.Request) -> frozenset[RequestStatus] | web.Response | None:
    """The ``until`` query parameter (comma-separated statuses); None without it; a 400
    problem naming an unknown status."""
    text = request.query.get("until")
    if text is None:
        return None
    wanted = set()
    for name in text.split(","):
        try:
            wanted.add(RequestStatus(name.strip()))
        except ValueError:
            known = ", ".join(s.value for s in RequestStatus)
            return problem(400, f"query parameter 'until' names an unknown status "
                                f"{name.strip()[:40]!r}; known: {known}")
    return frozenset(wanted)


def _seen(request: web.Request, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, RFC 9110 §13.1.2)."""
    tags = request.if_none_match
    return tags is not None and any(t.value in (etag, "*") for t in tags)


async def get_request(request: web.Request) -> web.StreamResponse:
    """The request's status; with ``wait``, once it differs from ``If-None-Match`` (and,
    with ``until``, is one of those statuses or ended: a researcher waiting for the result
    is not sent every status in between, issue 17)."""
    who, request_id = identity(request), path_uuid(request, "request_id")
    wait_s = wait_seconds(request, request.app[CONFIG].status_wait_max_s)
    if isinstance(wait_s, web.Response):
        return wait_s
    until = until_statuses(request)
    if isinstance(until, web.Response):
        return until
    changes, loop = request.app[REQUEST_CHANGES], asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        with changes.watch(request_id) as changed:  # before the read: no lost wake-up
            async with request.app[STORE].reading() as uow:
                try:
                    req = await visible_request(uow, who, request_id)
                except NotFoundError:
                    if loop.time() >= deadline or changes.closed:
                        raise
                    view = None
                else:
                    view = await request_view(uow, req)
            if view is not None:
                etag = view_etag(view)
                over = loop.time() >= deadline or changes.closed
                wanted = until is None or req.status in until or req.status in ENDED_STATUSES
                if not _seen(request, etag) and (wanted or over):
                    response = web.json_response(view)
                    response.etag = etag
                    return response
                if over:
                    return web.Response(status=304, headers={"ETag": f'"{etag}"'})
            with contextlib.suppress(TimeoutError):  # then one more read: the final answer
                await asyncio.wait_for(changed.wait(), max(0.0, deadline - loop.time()))


async def cancel_request(request: web.Request) -> web.Response:
    who = identity(request)
    async with request.app[STORE].unit_of_work() as uow:
        req = await visible_request(uow, who, path_uuid(request, "request_id"))
        if req.submitted_by != who.principal_id:
            raise AuthorizationError("only the researcher who submitted it may cancel a request")
        req = await uow.requests.set_status(req.id, RequestStatus.CANCELLED,
                                            "cancelled by the researcher")
        await uow.audit.append(who.actor, "request.cancel", f"request:{req.id}")
        await announce(uow, request.app[CONFIG], "cancel", "POST",
                       f"/v1/peer/requests/{req.id}/cancel", {"reason": "cancelled by the "
                                                              f"researcher ({who.name})"})
        view = await request_view(uow, req)
    request.app[COORDINATION].wake()
    return web.json_response(view)


async def get_result(request: web.Request) -> web.Response:
    who = identity(request)
    async with request.app[STORE].unit_of_work() as uow:
        req = await visible_request(uow, who, path_uuid(request, "request_id"))
        if req.status is not RequestStatus.COMPLETED:
            raise NotFoundError(f"analysis request {req.id} has no result (status "
                                f"{req.status.value})")
        result = await uow.results.for_request(req.id)
        await uow.audit.append(who.actor, "result.read", f"request:{req.id}")
        return web.json_response({"request_id": str(req.id), "aggregates": result.aggregates,
                                  "created_at": _iso(result.created_at)})


ENDPOINTS = (
    Endpoint("POST", "/v1/studies", create_study, "createStudy", "Create a study", RESEARCHER,
             request_schema=STUDY_CREATE, response_schema=STUDY, status=201),
    Endpoint("GET", "/v1/studies", list_studies, "listStudies", "Studies of the caller",
             frozenset({Role.RESEARCHER, Role.ADMIN}), response_schema=array(STUDY)),
    Endpoint("POST", "/v1/studies/{study_id}/requests", submit_request, "submitRequest",
             "Submit a signed analysis request on datasets", RESEARCHER,
             request_schema=SIGNED, response_schema=REQUEST, status=201,
             uuid_params=("study_id",)),
    Endpoint("GET", "/v1/requests", list_requests, "listRequests",
             "Requests the caller may see", READERS, response_schema=array(REQUEST)),
    Endpoint("GET", "/v1/requests/{request_id}", get_request, "getRequest",
             "Status of one request", READERS, response_schema=REQUEST,
             uuid_params=("request_id",), parameters=STATUS_WAIT_PARAMETERS,
             conditional=True),
    Endpoint("POST", "/v1/requests/{request_id}/cancel", cancel_request, "cancelRequest",
             "Withdraw a request before it completes", RESEARCHER, response_schema=REQUEST,
             uuid_params=("request_id",)),
    Endpoint("GET", "/v1/requests/{request_id}/result", get_result, "getResult",
             "The aggregate result of a completed request", READERS, response_schema=RESULT,
             uuid_params=("request_id",)),
)
