"""The hash-chained audit log: append, verify, tamper detection, concurrent appends."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import json

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from dic_connector.errors import StoreError
from dic_connector.node.store.audit import GENESIS_HASH, AuditLog, ChainHead, entry_hash


async def _append(sessions: async_sessionmaker[AsyncSession], n: int) -> None:
    async with sessions() as session, session.begin():
        log = AuditLog(session)
        for i in range(n):
            await log.append("researcher:alice", "request.submit", f"request:{i}",
                             {"analysis": "median", "columns": ["age"], "i": i})


async def _verify(sessions: async_sessionmaker[AsyncSession],
                  expected: ChainHead | None = None) -> tuple[int | None, str | None, int]:
    async with sessions() as session, session.begin():
        result = await AuditLog(session).verify_chain(expected)
        return result.broken_seq, result.reason, result.entries


async def _sql(engine: AsyncEngine, *statements: str) -> None:
    async with engine.begin() as conn:
        for statement in statements:
            await conn.exec_driver_sql(statement)


def test_entry_hash_is_sha256_of_prev_hash_and_canonical_entry() -> None:
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    details = {"b": 1, "a": ["x", "ü"]}
    entry = {"seq": 1, "timestamp": "2026-01-02T03:04:05.000006Z", "actor": "a",
             "action": "act", "object": "obj", "details": details}
    canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hashlib.sha256(bytes(32) + canonical.encode("utf-8")).hexdigest()
    assert entry_hash(GENESIS_HASH, 1, at, "a", "act", "obj", details) == expected


async def test_empty_log_verifies_and_has_genesis_head(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session, session.begin():
        assert await AuditLog(session).head() == ChainHead(0, GENESIS_HASH)
    assert await _verify(sessions) == (None, None, 0)


async def test_append_links_entries_and_verifies(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    await _append(sessions, 3)
    await _append(sessions, 2)
    async with sessions() as session, session.begin():
        log = AuditLog(session)
        entries = await log.entries()
        head = await log.head()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert head == ChainHead(5, entries[-1].hash)
    assert await _verify(sessions) == (None, None, 5)


async def test_rolled_back_append_leaves_no_trace(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    await _append(sessions, 2)
    with pytest.raises(RuntimeError):
        async with sessions() as session, session.begin():
            await AuditLog(session).append("admin", "x", "y")
            raise RuntimeError("the action failed")
    await _append(sessions, 1)
    assert await _verify(sessions) == (None, None, 3)


async def test_changed_details_are_detected(
        sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine) -> None:
    await _append(sessions, 5)
    await _sql(engine, """UPDATE audit_log SET details = '{"analysis":"mean"}' WHERE seq = 3""")
    broken, reason, entries = await _verify(sessions)
    assert (broken, entries) == (3, 2)
    assert reason is not None and "hash" in reason


async def test_changed_actor_is_detected(
        sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine) -> None:
    await _append(sessions, 4)
    await _sql(engine, "UPDATE audit_log SET actor = 'admin' WHERE seq = 4")
    assert (await _verify(sessions))[0] == 4


async def test_deleted_entry_is_detected(
        sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine) -> None:
    await _append(sessions, 5)
    await _sql(engine, "DELETE FROM audit_log WHERE seq = 3")
    broken, reason, _ = await _verify(sessions)
    assert broken == 3
    assert reason is not None and "missing" in reason


async def test_reordered_entries_are_detected(
        sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine) -> None:
    await _append(sessions, 5)
    await _sql(engine,
               "UPDATE audit_log SET seq = -1 WHERE seq = 2",
               "UPDATE audit_log SET seq = 2 WHERE seq = 3",
               "UPDATE audit_log SET seq = 3 WHERE seq = -1")
    broken, reason, _ = await _verify(sessions)
    assert broken == 2
    assert reason is not None


async def test_rehashed_forgery_is_caught_by_a_recorded_head(
        sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine) -> None:
    """Truncating the newest entries keeps the chain consistent; a peer's head catches it."""
    await _append(sessions, 5)
    async with sessions() as session, session.begin():
        recorded = await AuditLog(session).head()
    assert await _verify(sessions, recorded) == (None, None, 5)
    await _sql(engine, "DELETE FROM audit_log WHERE seq >= 4")
    assert (await _verify(sessions))[0] is None  # locally consistent...
    broken, reason, _ = await _verify(sessions, recorded)  # ...but not what the peer saw
    assert broken == 5
    assert reason is not None and "truncated" in reason


async def test_details_that_are_not_loggable_are_refused(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session, session.begin():
        log = AuditLog(session)
        with pytest.raises(StoreError, match="not loggable"):
            await log.append("a", "b", "c", {"mean": 1.5})
        with pytest.raises(StoreError, match="exceed"):
            await log.append("a", "b", "c", {"blob": "x" * 10_000})
    assert await _verify(sessions) == (None, None, 0)


async def test_concurrent_appends_keep_one_chain(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    async def one(i: int) -> int:
        async with sessions() as session, session.begin():
            entry = await AuditLog(session).append(f"node:{i % 3}", "compute.step", f"req:{i}")
            return entry.seq

    seqs = await asyncio.gather(*(one(i) for i in range(50)))
    assert sorted(seqs) == list(range(1, 51))
    assert await _verify(sessions) == (None, None, 50)


async def test_a_unit_of_work_writes_its_entries_last_and_sees_them(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    """Entries are validated at once but written at commit (the chain lock is then the last
    lock a transaction takes); reads inside the transaction still see them."""
    from dic_connector.node.store.audit import DeferredAuditLog

    async with sessions() as session, session.begin():
        deferred = DeferredAuditLog(AuditLog(session))
        await deferred.append("admin", "a", "x")
        with pytest.raises(StoreError, match="not loggable"):
            await deferred.append("admin", "b", "y", {"mean": 1.5})
        assert (await AuditLog(session).head()).seq == 0  # not written yet
        assert (await deferred.head()).seq == 1  # a read flushes first
        await deferred.append("admin", "c", "z")
        await deferred.flush()
    assert await _verify(sessions) == (None, None, 2)
