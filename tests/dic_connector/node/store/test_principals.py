"""Principals and API tokens: tokens are stored hashed and every failure looks the same."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from sqlalchemy import text

from dic_connector.errors import AuthorizationError, ConflictError
from dic_connector.node.store.principals import TOUCH_INTERVAL
from dic_connector.node.store.unit_of_work import Store
from dic_connector.vocabulary import Role


async def test_token_is_stored_as_sha256_of_its_secret_only(store: Store) -> None:
    async with store.unit_of_work() as uow:
        alice = await uow.principals.create("alice", Role.RESEARCHER)
        issued = await uow.tokens.issue(alice.id, "laptop")
    prefix, token_id, secret = issued.token[:4], issued.token[4:36], issued.token[37:]
    assert (prefix, token_id, len(secret)) == ("dic_", issued.record.id.hex, 43)
    async with store.unit_of_work() as uow:
        rows = (await uow.session.execute(text("SELECT * FROM api_tokens"))).mappings().all()
    assert len(rows) == 1
    stored = dict(rows[0])
    assert bytes(stored["secret_sha256"]) == hashlib.sha256(secret.encode()).digest()
    for value in stored.values():
        assert secret not in str(value) and issued.token not in str(value)
    assert issued.token not in repr(issued)


async def test_authenticate_returns_the_principal(store: Store) -> None:
    async with store.unit_of_work() as uow:
        site = await uow.sites.add("lmu", "LMU")
        owner = await uow.principals.create("olga", Role.DATA_OWNER, site_id=site.id)
        issued = await uow.tokens.issue(owner.id, "ci")
    async with store.unit_of_work() as uow:
        principal = await uow.tokens.authenticate(issued.token)
        assert (principal.id, principal.role, principal.site_id) == (
            owner.id, Role.DATA_OWNER, "lmu")
        record = (await uow.tokens.list_for(owner.id))[0]
        assert record.last_used_at is not None


async def test_checking_a_token_reads_only_and_its_use_is_recorded_once_a_minute(
        store: Store) -> None:
    now = dt.datetime.now(dt.UTC)
    async with store.unit_of_work() as uow:
        bob = await uow.principals.create("bob", Role.RESEARCHER)
        issued = await uow.tokens.issue(bob.id, "ci")
    async with store.reading() as uow:  # a read-only transaction suffices to authenticate
        first = await uow.tokens.check(issued.token, now)
    assert first.principal.name == "bob" and first.touch_due
    async with store.unit_of_work() as uow:
        await uow.tokens.touch(first.token_id, now)
    for later, due in ((now + TOUCH_INTERVAL / 2, False), (now + TOUCH_INTERVAL, True)):
        async with store.reading() as uow:
            assert (await uow.tokens.check(issued.token, later)).touch_due is due
    async with store.unit_of_work() as uow:  # authenticate = check + touch when due
        await uow.tokens.authenticate(issued.token, now + TOUCH_INTERVAL)
        record = (await uow.tokens.list_for(bob.id))[0]
    assert record.last_used_at == now + TOUCH_INTERVAL


async def test_every_token_failure_is_the_same_error(store: Store) -> None:
    now = dt.datetime.now(dt.UTC)
    async with store.unit_of_work() as uow:
        bob = await uow.principals.create("bob", Role.RESEARCHER)
        good = await uow.tokens.issue(bob.id, "good")
        expiring = await uow.tokens.issue(bob.id, "short", expires_in=dt.timedelta(minutes=5),
                                          now=now)
        revoked = await uow.tokens.issue(bob.id, "revoked")
        await uow.tokens.revoke(revoked.record.id)
        carol = await uow.principals.create("carol", Role.ADMIN)
        disabled = await uow.tokens.issue(carol.id, "x")
        await uow.principals.disable(carol.id)
    tampered = good.token[:-1] + ("A" if good.token[-1] != "A" else "B")
    unknown = "dic_" + "0" * 32 + good.token[36:]
    cases = [("", None), ("garbage", None), (tampered, None), (unknown, None),
             (revoked.token, None), (disabled.token, None),
             (expiring.token, now + dt.timedelta(minutes=6))]
    for token, at in cases:
        async with store.unit_of_work() as uow:
            with pytest.raises(AuthorizationError) as info:
                await uow.tokens.authenticate(token, now=at)
        assert str(info.value) == "invalid or expired token"
        assert not token or token not in str(info.value)
    async with store.unit_of_work() as uow:
        assert (await uow.tokens.authenticate(expiring.token, now=now)).name == "bob"


async def test_data_owners_and_only_they_have_a_site(store: Store) -> None:
    async with store.unit_of_work() as uow:
        await uow.sites.add("lmu", "LMU")
        with pytest.raises(ConflictError, match="site is required"):
            await uow.principals.create("x", Role.DATA_OWNER)
        with pytest.raises(ConflictError, match="site is required"):
            await uow.principals.create("y", Role.RESEARCHER, site_id="lmu")
        with pytest.raises(ConflictError, match="32 bytes"):
            await uow.principals.create("z", Role.RESEARCHER, signing_public_key=b"short")


async def test_database_enforces_the_site_rule_too(store: Store) -> None:
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        async with store.unit_of_work() as uow:
            await uow.session.execute(text(
                "INSERT INTO principals (id, name, role, created_at) "
                "VALUES (:id, 'mallory', 'data_owner', :at)"),
                {"id": "0" * 32 if store.engine.dialect.name == "sqlite"
                 else "00000000-0000-0000-0000-000000000000",
                 "at": dt.datetime.now(dt.UTC)})
