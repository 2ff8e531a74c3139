"""The verified-token cache of :class:`dic_connector.node.api.auth.Authenticator`.

A node token verified once is trusted for ``ttl_s`` without a transaction; a revocation, a
disabled principal or a changed role committed by this process ends that at once; one
committed by another process (``dic admin``: here a second :class:`Store` on the same
database file) within ``ttl_s``; a token's own ``expires_at`` is never outlived; failures
are never remembered.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import event

from dic_connector.errors import AuthenticationError
from dic_connector.node.api.auth import Authenticator
from dic_connector.node.store.principals import token_id_of
from dic_connector.node.store.unit_of_work import Store
from dic_connector.vocabulary import Role

from .conftest import Node


class FakeRequest:
    def __init__(self, token: str) -> None:
        self.headers = {"Authorization": f"Bearer {token}"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def statements(store: Store) -> list[str]:
    """Every SQL statement the store's engine executes from now on."""
    seen: list[str] = []
    event.listen(store.engine.sync_engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *args: seen.append(statement))
    return seen


async def identify(auth: Authenticator, token: str) -> tuple[str, str]:
    who = await auth.identify(FakeRequest(token))  # type: ignore[arg-type]
    return who.name, who.role.value


async def test_a_verified_token_is_trusted_for_the_ttl_without_reading_it(node: Node) -> None:
    clock = Clock()
    auth = Authenticator(node.store, None, ttl_s=2.0, clock=clock)
    token = node.tokens["alice"]
    assert await identify(auth, token) == ("alice", "researcher")
    seen = statements(node.store)
    clock.now += 1.9
    assert await identify(auth, token) == ("alice", "researcher")
    assert seen == []  # no transaction, no statement
    clock.now += 0.2  # past the ttl: read again
    assert await identify(auth, token) == ("alice", "researcher")
    assert any("api_tokens" in s for s in seen), seen


async def test_a_revocation_by_this_process_takes_effect_at_once(node: Node) -> None:
    auth = Authenticator(node.store, None, ttl_s=3600.0, clock=Clock())
    token = node.tokens["alice"]
    await identify(auth, token)
    token_id = token_id_of(token)
    assert token_id is not None
    async with node.store.unit_of_work() as uow:
        await uow.tokens.revoke(token_id)
    with pytest.raises(AuthenticationError):
        await identify(auth, token)


async def test_a_disabled_principal_and_a_new_role_by_this_process_at_once(node: Node) -> None:
    auth = Authenticator(node.store, None, ttl_s=3600.0, clock=Clock())
    await identify(auth, node.tokens["alice"])
    async with node.store.unit_of_work() as uow:
        alice = await uow.principals.by_name("alice")
        assert alice is not None
        await uow.principals.disable(alice.id)
    with pytest.raises(AuthenticationError):
        await identify(auth, node.tokens["alice"])


async def test_a_revocation_by_another_process_takes_effect_within_the_ttl(node: Node) -> None:
    clock = Clock()
    auth = Authenticator(node.store, None, ttl_s=2.0, clock=clock)
    token = node.tokens["alice"]
    await identify(auth, token)
    token_id = token_id_of(token)
    assert token_id is not None
    other = Store.open(node.store.engine.url, node.store.keyring)
    try:
        async with other.unit_of_work() as uow:  # as `dic admin token revoke` does
            await uow.tokens.revoke(token_id)
    finally:
        await other.close()
    assert await identify(auth, token) == ("alice", "researcher")  # still trusted
    clock.now += 2.0
    with pytest.raises(AuthenticationError):
        await identify(auth, token)


async def test_expiry_failures_and_other_tokens_are_not_remembered(node: Node) -> None:
    clock = Clock()
    auth = Authenticator(node.store, None, ttl_s=3600.0, clock=clock)
    async with node.store.unit_of_work() as uow:
        bob = await uow.principals.create("bob", Role.RESEARCHER)
        issued = await uow.tokens.issue(bob.id, "short", expires_in=dt.timedelta(seconds=1))
    short = issued.token
    assert await identify(auth, short) == ("bob", "researcher")
    # trusted for at most the second it had left, whatever the ttl
    [(_, _, until)] = [v for v in auth._verified.values() if v[0].name == "bob"]
    assert until <= clock.now + 1.0
    # a wrong secret for a known id is refused, also after the right one was verified
    forged = short[:-4] + ("AAAA" if not short.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            await identify(auth, forged)
