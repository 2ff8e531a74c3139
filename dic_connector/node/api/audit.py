"""The audit chain over HTTP: its head, a full verification, and the cross-node comparison
for one request.

When the three nodes agree to compute a request, each writes the three chain heads of that
moment into its ``compute.start`` entry. ``GET /v1/audit/requests/{id}`` later asks every
node (this one directly, the peers over mutual TLS) to verify its whole chain *and* that it
still holds the head it reported then (so a node cannot rewrite or truncate its log past the
agreement unnoticed), and compares the SHA-256 of the result each one opened.

``GET /v1/audit/peers`` shows the other side of the periodic exchange
(:mod:`dic_connector.node.coordination.exchange`): each peer's head as this node recorded it,
its open mismatches (a truncated or rewritten log: no plan is agreed until acknowledged with
``dic admin audit acknowledge``) and how the exchanges with it went since this process
started.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from dic_connector.errors import CoordinationError, NotFoundError
from dic_connector.node.api.endpoint import Endpoint
from dic_connector.node.api.keys import CONFIG, COORDINATION, STORE
from dic_connector.node.api.requests import path_uuid
from dic_connector.node.api.schemas import (
    AUDIT_COMPARE,
    AUDIT_HEAD,
    AUDIT_PEERS,
    AUDIT_VERIFY,
)
from dic_connector.node.coordination.verify import attest
from dic_connector.vocabulary import Role


async def head(request: web.Request) -> web.Response:
    async with request.app[STORE].reading() as uow:
        current = await uow.audit.head()
    return web.json_response({"node": request.app[CONFIG].node_id, "seq": current.seq,
                              "hash": current.hash})


async def verify(request: web.Request) -> web.Response:
    node = request.app[CONFIG].node_id
    async with request.app[STORE].reading() as uow:
        result = await uow.audit.verify_chain()
    return web.json_response({
        "node": node, "ok": result.broken_seq is None, "entries": result.entries,
        "head": {"node": node, "seq": result.head.seq, "hash": result.head.hash},
        "broken_seq": result.broken_seq, "reason": result.reason})


async def compare_request(request: web.Request) -> web.Response:
    request_id = path_uuid(request, "request_id")
    config = request.app[CONFIG]
    async with request.app[STORE].reading() as uow:
        await uow.requests.get(request_id)
        started = await uow.audit.latest("compute.start", f"request:{request_id}")
        if started is None:
            raise NotFoundError(f"analysis request {request_id} was not computed on "
                                f"{config.node_id}")
        heads: dict[str, dict[str, Any]] = json.loads(started.details)["audit_heads"]
        mine = heads[config.node_id]
        nodes = {config.node_id: (await attest(uow, request_id, mine["seq"], mine["hash"])
                                  ).as_json()}
    client = request.app[COORDINATION].client
    for peer in client.others:
        name, head_at_start = client.name(peer), heads.get(client.name(peer))
        if head_at_start is None:
            nodes[name] = {"chain_ok": False, "reason": "no head recorded at agreement",
                           "status": "unknown", "result_sha256": None}
            continue
        try:
            nodes[name] = await client.call(peer, "POST",
                                            f"/v1/peer/requests/{request_id}/attest",
                                            head_at_start)
        except CoordinationError as exc:
            nodes[name] = {"chain_ok": False, "reason": str(exc)[:300], "status": "unknown",
                           "result_sha256": None}
    for name, entry in nodes.items():
        entry["head_at_start"] = heads.get(name)
    digests = {n["result_sha256"] for n in nodes.values()}
    consistent = all(n["chain_ok"] for n in nodes.values()) and len(digests) == 1 \
        and None not in digests
    return web.json_response({"request_id": str(request_id), "consistent": consistent,
                              "nodes": nodes})


async def peers(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    exchange = request.app[COORDINATION].audit_exchange  # None: standalone, no peers
    out: dict[str, Any] = {}
    async with request.app[STORE].reading() as uow:
        for name, state in sorted(exchange.peers.items() if exchange is not None else ()):
            observed = await uow.peer_audit.recorded(name)
            out[name] = {
                "head": None if observed is None else {
                    "seq": observed.head.seq, "hash": observed.head.hash,
                    "observed_at": observed.observed_at.isoformat()},
                "mismatches": [{"recorded_seq": m.recorded_seq, "recorded_hash": m.recorded_hash,
                                "reported_seq": m.reported_seq, "reported_hash": m.reported_hash,
                                "reason": m.reason, "detected_at": m.detected_at.isoformat()}
                               for m in await uow.peer_audit.open_mismatches(name)],
                "exchanges": state.exchanges, "unreachable": state.unreachable,
                "last_error": state.last_error}
    return web.json_response({"node": config.node_id, "peers": out})


ENDPOINTS = (
    Endpoint("GET", "/v1/audit/head", head, "auditHead", "Newest audit entry (seq, hash)",
             frozenset({Role.ADMIN, Role.NODE}), response_schema=AUDIT_HEAD, tag="audit"),
    Endpoint("GET", "/v1/audit/verify", verify, "auditVerify",
             "Recompute the audit hash chain and report the first broken entry",
             frozenset({Role.ADMIN}), response_schema=AUDIT_VERIFY, tag="audit"),
    Endpoint("GET", "/v1/audit/requests/{request_id}", compare_request, "auditCompareRequest",
             "Every node's chain check and result digest for one computed request",
             frozenset({Role.ADMIN}), response_schema=AUDIT_COMPARE, tag="audit",
             uuid_params=("request_id",)),
    Endpoint("GET", "/v1/audit/peers", peers, "auditPeers",
             "Each peer's audit head as recorded here, and its unacknowledged mismatches",
             frozenset({Role.ADMIN}), response_schema=AUDIT_PEERS, tag="audit"),
)
