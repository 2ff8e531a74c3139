"""Data owners' signed decisions: approvals of one request, and standing policies.

A data owner signs, with their Ed25519 key (RFC 8032), the canonical JSON (RFC 8785 subset,
:mod:`dic_connector.trust.canonical`) of

- an approval ``{"type": "approval", "request_id", "site", "decision": "approve"|"deny"}``, or
- a policy ``{"type": "policy", "site", "analyses", "columns", "min_cell_count",
  "expires_at"}`` that approves in advance every request of the listed analyses on the
  listed columns (``"*"`` for any) until it expires or is revoked; it may also tighten the
  disclosure settings for the requests it approves (``min_subset_size``, ``max_levels``,
  ``ledger``: true, ``perturbation``); a policy that would loosen one of this node's
  settings is refused (403, naming the setting),

and posts ``{"payload": <that text>, "signature": <base64 of the 64-byte signature>}``. The
node verifies the signature against the key registered for the caller before storing it, and
keeps payload and signature so every node (and an auditor) can re-verify later.
"""

from __future__ import annotations

import base64
import json

from aiohttp import web

from dic_connector.errors import NotFoundError, PolicyError
from dic_connector.node.api.endpoint import Endpoint
from dic_connector.node.api.keys import CONFIG, COORDINATION, STORE, identity
from dic_connector.node.api.requests import _iso, path_uuid, request_view, visible_request
from dic_connector.node.api.schemas import POLICY, REQUEST, SIGNED, array, decode_signature
from dic_connector.node.coordination.replication import announce
from dic_connector.node.coordination.verify import policy_loosens, reevaluate
from dic_connector.node.store.models import StandingPolicy
from dic_connector.vocabulary import Role

OWNER = frozenset({Role.DATA_OWNER})


async def approve(request: web.Request) -> web.Response:
    who, body = identity(request), await request.json()
    async with request.app[STORE].unit_of_work() as uow:
        req = await visible_request(uow, who, path_uuid(request, "request_id"))
        signer = await uow.principals.get(who.principal_id)
        approval = await uow.approvals.add(req.id, signer, body["payload"],
                                           decode_signature(body["signature"]))
        await uow.audit.append(who.actor, f"approval.{approval.decision.value}",
                               f"request:{req.id}", {"site": approval.site_id})
        await announce(uow, request.app[CONFIG], "approval", "POST",
                       f"/v1/peer/requests/{req.id}/approvals", {**body, "signer": who.name})
        req = await reevaluate(uow, req.id, who.actor)
        view = await request_view(uow, req)
    request.app[COORDINATION].wake()
    return web.json_response(view, status=201)


def _policy(policy: StandingPolicy) -> dict[str, object]:
    signed = json.loads(policy.canonical_payload)
    return {"id": str(policy.id), "site": policy.site_id, "analyses": policy.analyses,
            "columns": policy.columns, "min_cell_count": policy.min_cell_count,
            "expires_at": _iso(policy.expires_at), "created_at": _iso(policy.created_at),
            # as signed (what it tightens for what it approves; None: the deployment's)
            "perturbation": signed.get("perturbation"),
            "min_subset_size": signed.get("min_subset_size"),
            "max_levels": signed.get("max_levels"), "ledger": signed.get("ledger")}


async def add_policy(request: web.Request) -> web.Response:
    who, body = identity(request), await request.json()
    async with request.app[STORE].unit_of_work() as uow:
        signer = await uow.principals.get(who.principal_id)
        policy = await uow.policies.add(signer, body["payload"],
                                        decode_signature(body["signature"]))
        loosens = policy_loosens(request.app[CONFIG], json.loads(policy.canonical_payload))
        if loosens:  # rolled back with the unit of work: nothing stored or announced
            raise PolicyError("a standing policy may only tighten the deployment's "
                              f"disclosure settings: {'; '.join(loosens)}")
        await uow.audit.append(who.actor, "policy.add", f"policy:{policy.id}",
                               {"site": policy.site_id, "analyses": policy.analyses})
        await announce(uow, request.app[CONFIG], "policy", "POST", "/v1/peer/policies",
                       {**body, "signer": who.name})
        view = _policy(policy)
    request.app[COORDINATION].wake()
    return web.json_response(view, status=201)


async def list_policies(request: web.Request) -> web.Response:
    who = identity(request)
    assert who.site_id is not None
    async with request.app[STORE].reading() as uow:
        return web.json_response([_policy(p) for p in await uow.policies.active(who.site_id)])


async def revoke_policy(request: web.Request) -> web.Response:
    who = identity(request)
    policy_id = path_uuid(request, "policy_id")
    async with request.app[STORE].unit_of_work() as uow:
        policy = await uow.session.get(StandingPolicy, policy_id)
        if policy is None or policy.site_id != who.site_id:
            raise NotFoundError(f"policy {policy_id} not found")
        await uow.policies.revoke(policy_id)
        await uow.audit.append(who.actor, "policy.revoke", f"policy:{policy_id}")
        await announce(uow, request.app[CONFIG], "policy_revoke", "POST",
                       "/v1/peer/policies/revoke",
                       {"signature": base64.b64encode(policy.signature).decode()})
        return web.json_response(_policy(policy))


ENDPOINTS = (
    Endpoint("POST", "/v1/requests/{request_id}/approvals", approve, "approveRequest",
             "A data owner's signed approval or denial of one request", OWNER,
             request_schema=SIGNED, response_schema=REQUEST, status=201,
             uuid_params=("request_id",)),
    Endpoint("POST", "/v1/policies", add_policy, "addPolicy",
             "A data owner's signed standing policy", OWNER, request_schema=SIGNED,
             response_schema=POLICY, status=201),
    Endpoint("GET", "/v1/policies", list_policies, "listPolicies",
             "Active standing policies of the caller's site", OWNER,
             response_schema=array(POLICY)),
    Endpoint("POST", "/v1/policies/{policy_id}/revoke", revoke_policy, "revokePolicy",
             "Revoke a standing policy of the caller's site", OWNER, response_schema=POLICY,
             uuid_params=("policy_id",)),
)
