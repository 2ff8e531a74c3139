"""The audit chain over HTTP: its head (for cross-node comparison) and a full verification."""

from __future__ import annotations

from aiohttp import web

from ..store.enums import Role
from .endpoint import Endpoint
from .keys import CONFIG, STORE
from .schemas import AUDIT_HEAD, AUDIT_VERIFY


async def head(request: web.Request) -> web.Response:
    async with request.app[STORE].unit_of_work() as uow:
        current = await uow.audit.head()
    return web.json_response({"node": request.app[CONFIG].node_id, "seq": current.seq,
                              "hash": current.hash})


async def verify(request: web.Request) -> web.Response:
    node = request.app[CONFIG].node_id
    async with request.app[STORE].unit_of_work() as uow:
        result = await uow.audit.verify_chain()
    return web.json_response({
        "node": node, "ok": result.broken_seq is None, "entries": result.entries,
        "head": {"node": node, "seq": result.head.seq, "hash": result.head.hash},
        "broken_seq": result.broken_seq, "reason": result.reason})


ENDPOINTS = (
    Endpoint("GET", "/v1/audit/head", head, "auditHead", "Newest audit entry (seq, hash)",
             frozenset({Role.ADMIN, Role.NODE}), response_schema=AUDIT_HEAD, tag="audit"),
    Endpoint("GET", "/v1/audit/verify", verify, "auditVerify",
             "Recompute the audit hash chain and report the first broken entry",
             frozenset({Role.ADMIN}), response_schema=AUDIT_VERIFY, tag="audit"),
)
