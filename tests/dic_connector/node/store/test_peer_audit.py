"""The peers' audit heads as recorded here, detected mismatches, and ``AuditLog.holds`` (the
answer a peer gets about the head it recorded): on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import text

from dic_connector.node.store import peer_audit
from dic_connector.node.store.audit import GENESIS_HASH, ChainHead, entry_hash
from dic_connector.node.store.unit_of_work import Store


def _head(seq: int) -> ChainHead:
    return ChainHead(seq, f"{seq:064x}")


async def test_record_keeps_the_newest_head_and_a_bounded_history(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer_audit, "HEAD_HISTORY", 3)
    async with store.unit_of_work() as uow:
        assert await uow.peer_audit.recorded("node-1") is None
        for seq in range(1, 6):
            await uow.peer_audit.record("node-1", _head(seq))
        await uow.peer_audit.record("node-2", _head(9))
    async with store.reading() as uow:
        newest = await uow.peer_audit.recorded("node-1")
        assert newest is not None and newest.head == _head(5)
        assert [h.head.seq for h in await uow.peer_audit.history("node-1")] == [5, 4, 3]
        other = await uow.peer_audit.recorded("node-2")
        assert other is not None and other.head == _head(9)


async def test_the_same_head_again_moves_only_its_observed_time(store: Store) -> None:
    first_at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    later = first_at + dt.timedelta(minutes=5)
    async with store.unit_of_work() as uow:
        await uow.peer_audit.record("node-1", _head(4), at=first_at)
        again = await uow.peer_audit.record("node-1", _head(4), at=later)
    assert (again.first_seen_at, again.observed_at) == (first_at, later)
    async with store.reading() as uow:
        assert len(await uow.peer_audit.history("node-1")) == 1


async def test_a_mismatch_stays_open_until_acknowledged_and_is_counted_for_ever(
        store: Store) -> None:
    async with store.unit_of_work() as uow:
        assert await uow.peer_audit.flagged() == []
        await uow.peer_audit.flag("node-1", _head(7), _head(5), None, "log truncated")
        await uow.peer_audit.flag("node-1", _head(9), _head(9), "f" * 64, "log rewritten")
        await uow.peer_audit.flag("node-2", _head(3), _head(3), "e" * 64, "log rewritten")
    async with store.unit_of_work() as uow:
        assert await uow.peer_audit.flagged() == ["node-1", "node-2"]
        [first, second] = await uow.peer_audit.open_mismatches("node-1")
        assert (first.recorded_seq, first.reported_seq, first.hash_at_recorded) == (7, 5, None)
        assert second.hash_at_recorded == "f" * 64
        closed = await uow.peer_audit.acknowledge("node-1", "admin:cli")
        assert [m.id for m in closed] == [first.id, second.id]
    async with store.reading() as uow:
        assert await uow.peer_audit.flagged() == ["node-2"]
        assert await uow.peer_audit.open_mismatches("node-1") == []
        assert await uow.peer_audit.mismatch_counts() == {"node-1": 2, "node-2": 1}
        assert await uow.peer_audit.acknowledge("node-1", "admin:cli") == []


async def _log(store: Store, n: int) -> list[ChainHead]:
    heads = []
    for i in range(n):
        async with store.unit_of_work() as uow:
            await uow.audit.append("node:node-0", "probe", f"x:{i}", {"i": i})
            heads.append(await uow.audit.head())
    return heads


async def test_holds_an_intact_chain_and_reports_its_head(store: Store) -> None:
    heads = await _log(store, 4)
    async with store.reading() as uow:
        for recorded in (ChainHead(0, GENESIS_HASH), heads[1], heads[3]):
            holding = await uow.audit.holds(recorded)
            assert holding.ok and holding.reason == "", recorded
            assert holding.head == heads[3] and holding.hash_at == recorded.hash


async def test_holds_reports_truncation_rewrite_and_a_break_after_the_recorded_head(
        store: Store) -> None:
    heads = await _log(store, 5)
    async with store.engine.begin() as conn:  # the newest two deleted
        await conn.execute(text("DELETE FROM audit_log WHERE seq > 3"))
    async with store.reading() as uow:
        truncated = await uow.audit.holds(heads[4])
    assert not truncated.ok and truncated.hash_at is None and truncated.head == heads[2]
    assert "log truncated" in truncated.reason

    async with store.reading() as uow:
        assert (await uow.audit.holds(ChainHead(2, "a" * 64))).hash_at == heads[1].hash
    await _rewrite(store, 3, heads[1].hash, {"i": 99})
    async with store.reading() as uow:
        assert (await uow.audit.verify_chain()).ok  # invisible to the node itself
        other = await uow.audit.holds(heads[2])
    assert not other.ok and other.hash_at not in (None, heads[2].hash)
    assert "rewritten" in other.reason

    async with store.engine.begin() as conn:  # an entry after the recorded head changed
        await conn.execute(text("UPDATE audit_log SET actor = 'x' WHERE seq = 3"))
    async with store.reading() as uow:
        broken = await uow.audit.holds(heads[1])
    assert broken.hash_at == heads[1].hash and not broken.ok
    assert "chain broken at entry 3" in broken.reason


async def _rewrite(store: Store, seq: int, prev_hash: str, details: dict[str, int]) -> None:
    """Entry ``seq`` given other details and re-hashed, as someone with the database would."""
    async with store.reading() as uow:
        [entry] = await uow.audit.entries(after_seq=seq - 1, limit=1)
    new_hash = entry_hash(prev_hash, seq, entry.created_at, entry.actor, entry.action,
                          entry.object, details)
    async with store.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_log SET details = :d, hash = :h WHERE seq = :s"),
                           {"d": json.dumps(details, separators=(",", ":")), "h": new_hash,
                            "s": seq})


async def test_holds_costs_the_entries_since_the_recorded_head_not_the_log(
        store: Store) -> None:
    """An entry below the recorded head is not re-read: it is covered by the recorded hash
    (and by the node's own checks), so a peer's minute-by-minute question stays cheap."""
    heads = await _log(store, 6)
    async with store.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_log SET actor = 'x' WHERE seq = 2"))
    async with store.reading() as uow:
        assert (await uow.audit.holds(heads[3])).ok
        assert not (await uow.audit.holds(heads[0])).ok  # from below it, the break shows


async def test_holds_walks_a_long_log_in_bounded_steps(store: Store) -> None:
    """A first question (from genesis) on a long log is answered with the last entry of a
    bounded step; asking on from there reaches the newest entry."""
    heads = await _log(store, 5)
    recorded, answered = ChainHead(0, GENESIS_HASH), []
    async with store.reading() as uow:
        for _ in range(3):
            holding = await uow.audit.holds(recorded, max_entries=2)
            assert holding.ok
            recorded = holding.head
            answered.append(recorded)
        with pytest.raises(ValueError, match="max_entries"):
            await uow.audit.verify_chain(expected=heads[0], max_entries=2)
    assert answered == [heads[1], heads[3], heads[4]]
