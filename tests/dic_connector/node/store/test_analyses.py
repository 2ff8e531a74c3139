"""Studies, requests (status machine), signed approvals and policies, results."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dic_connector.errors import AuthorizationError, ConflictError, SignatureError
from dic_connector.node.store.models import Principal
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.canonical import canonical_json
from dic_connector.trust.payloads import verify_approval, verify_policy
from dic_connector.vocabulary import Decision, RequestStatus, Role


@dataclass
class World:
    request_id: uuid.UUID
    owner: Principal
    owner_key: Ed25519PrivateKey
    other_owner: Principal
    other_key: Ed25519PrivateKey


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


async def _world(store: Store) -> World:
    owner_key, other_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with store.unit_of_work() as uow:
        await uow.sites.add("lmu", "LMU")
        await uow.sites.add("gemelli", "Gemelli")
        owner = await uow.principals.create("olga", Role.DATA_OWNER, "lmu", _raw(owner_key))
        other = await uow.principals.create("gino", Role.DATA_OWNER, "gemelli", _raw(other_key))
        researcher = await uow.principals.create("rita", Role.RESEARCHER)
        dataset = await uow.datasets.create("lmu", "cohort")
        study = await uow.studies.create("Age at diagnosis", researcher.id)
        parameters = {"column": "age"}
        request = await uow.requests.create(
            study.id, researcher.id, "median", "1", parameters, [dataset.id],
            canonical_json({"analysis": "median", "parameters": parameters}))
    return World(request.id, owner, owner_key, other, other_key)


def _approval(world: World, decision: str = "approve", **override: str) -> str:
    payload = {"type": "approval", "request_id": str(world.request_id), "site": "lmu",
               "decision": decision, **override}
    return canonical_json(payload)


async def test_signed_approval_is_stored_with_its_payload_and_reverifies(store: Store) -> None:
    world = await _world(store)
    payload = _approval(world)
    signature = world.owner_key.sign(payload.encode())
    async with store.unit_of_work() as uow:
        await uow.approvals.add(world.request_id, world.owner, payload, signature)
    async with store.unit_of_work() as uow:
        (approval,) = await uow.approvals.for_request(world.request_id)
        assert approval.decision is Decision.APPROVE
        assert approval.canonical_payload == payload and approval.signature == signature
        verify_approval(approval)
        approval.decision = Decision.DENY  # a row edited after the fact
        with pytest.raises(SignatureError, match="differ"):
            verify_approval(approval)
        await uow.session.rollback()


async def test_bad_approvals_are_refused(store: Store) -> None:
    world = await _world(store)
    good = _approval(world)
    cases = [
        (good, world.other_key.sign(good.encode()), world.owner, SignatureError),  # wrong key
        (good + " ", world.owner_key.sign((good + " ").encode()), world.owner, SignatureError),
        (_approval(world, site="gemelli"), None, world.owner, SignatureError),
        (_approval(world, decision="maybe"), None, world.owner, SignatureError),
        (_approval(world, type="policy"), None, world.owner, SignatureError),
        (_approval(world, site="gemelli"), None, world.other_owner, AuthorizationError),
    ]
    for payload, signature, signer, error in cases:
        key = world.owner_key if signer is world.owner else world.other_key
        async with store.unit_of_work() as uow:
            with pytest.raises(error):
                await uow.approvals.add(world.request_id, signer, payload,
                                        signature or key.sign(payload.encode()))
    async with store.unit_of_work() as uow:
        assert await uow.approvals.for_request(world.request_id) == []


async def test_sites_of_a_request_must_each_approve(store: Store) -> None:
    world = await _world(store)
    async with store.unit_of_work() as uow:
        assert await uow.requests.sites(world.request_id) == ["lmu"]
        assert len(await uow.requests.dataset_ids(world.request_id)) == 1
        assert await uow.requests.datasets_and_sites(world.request_id) == (
            await uow.requests.dataset_ids(world.request_id), ["lmu"])


async def test_request_status_machine(store: Store) -> None:
    world = await _world(store)
    async with store.unit_of_work() as uow:
        request = await uow.requests.get(world.request_id)
        assert request.status is RequestStatus.SUBMITTED
        for status in (RequestStatus.AWAITING_APPROVAL, RequestStatus.APPROVED,
                       RequestStatus.WAITING_FOR_NODES, RequestStatus.RUNNING):
            await uow.requests.set_status(world.request_id, status)
        with pytest.raises(ConflictError, match="cannot go from running to cancelled"):
            await uow.requests.set_status(world.request_id, RequestStatus.CANCELLED)
        await uow.requests.set_status(world.request_id, RequestStatus.COMPLETED)
        await uow.results.store(world.request_id, {"median": 61.5, "n": 48})
    async with store.unit_of_work() as uow:
        assert [r.id for r in await uow.requests.all(status=RequestStatus.COMPLETED)] == [
            world.request_id]
        assert (await uow.results.for_request(world.request_id)).aggregates == {
            "median": 61.5, "n": 48}
        with pytest.raises(ConflictError):
            await uow.requests.set_status(world.request_id, RequestStatus.RUNNING)


async def test_standing_policy_matches_until_expiry_or_revocation(store: Store) -> None:
    world = await _world(store)
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    payload = canonical_json({
        "type": "policy", "site": "lmu", "analyses": ["median", "count"],
        "columns": ["age", "sex"], "min_cell_count": 11, "expires_at": "2026-12-31T00:00:00Z"})
    async with store.unit_of_work() as uow:
        policy = await uow.policies.add(world.owner, payload, world.owner_key.sign(payload.encode()))
        assert (policy.min_cell_count, policy.expires_at) == (
            11, dt.datetime(2026, 12, 31, tzinfo=dt.UTC))
    async with store.unit_of_work() as uow:
        (stored,) = await uow.policies.matching("lmu", "median", ["age"], now=now)
        verify_policy(stored)
        assert await uow.policies.matching("lmu", "kaplan_meier", ["age"], now=now) == []
        assert await uow.policies.matching("lmu", "median", ["zip"], now=now) == []
        assert await uow.policies.matching("lmu", "median", ["age"],
                                           now=dt.datetime(2027, 1, 1, tzinfo=dt.UTC)) == []
        await uow.policies.revoke(stored.id)
        assert await uow.policies.matching("lmu", "median", ["age"], now=now) == []


async def test_a_qualified_scope_is_covered_only_by_a_policy_naming_it(store: Store) -> None:
    """``quantiles:extremes`` (minima and maxima) and ``fisher:excluded`` are consents of
    their own: a ``*`` policy covers plain quantiles, never them."""
    world = await _world(store)
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)

    async def add(analyses: list[str]) -> None:
        payload = canonical_json({
            "type": "policy", "site": "lmu", "analyses": analyses, "columns": ["*"],
            "min_cell_count": 5, "expires_at": "2026-12-31T00:00:00Z"})
        async with store.unit_of_work() as uow:
            await uow.policies.add(world.owner, payload, world.owner_key.sign(payload.encode()))

    await add(["*"])
    async with store.unit_of_work() as uow:
        assert len(await uow.policies.matching("lmu", "quantiles", ["age"], now=now)) == 1
        for qualified in ("quantiles:extremes", "fisher:excluded"):
            assert await uow.policies.matching("lmu", qualified, ["age"], now=now) == []
    await add(["quantiles:extremes"])
    async with store.unit_of_work() as uow:
        (named,) = await uow.policies.matching("lmu", "quantiles:extremes", ["age"], now=now)
        assert named.analyses == ["quantiles:extremes"]
        assert await uow.policies.matching("lmu", "fisher:excluded", ["age"], now=now) == []


async def test_policy_for_another_site_is_refused(store: Store) -> None:
    world = await _world(store)
    payload = canonical_json({
        "type": "policy", "site": "gemelli", "analyses": ["*"], "columns": ["*"],
        "min_cell_count": 5, "expires_at": "2030-01-01T00:00:00Z"})
    async with store.unit_of_work() as uow:
        with pytest.raises(SignatureError, match="another site"):
            await uow.policies.add(world.owner, payload, world.owner_key.sign(payload.encode()))
