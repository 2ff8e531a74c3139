"""The append-only, hash-chained audit log of one node.

Every request, approval, upload, deletion, computation and opening is recorded as an entry
``(seq, timestamp, actor, action, object, details)``, and entries are chained:

    hash_0 = 32 zero bytes (genesis)
    hash_n = SHA-256(hash_{n-1} || canonical_json(entry_n))

where ``||`` concatenates the raw 32-byte previous hash and the UTF-8 canonical JSON
(:mod:`dic_connector.trust.canonical`, RFC 8785) of
``{"seq", "timestamp", "actor", "action", "object", "details"}`` with the timestamp as
``YYYY-MM-DDTHH:MM:SS.ffffffZ``. Changing, deleting, inserting or reordering any entry breaks
every hash from that entry on, which :meth:`AuditLog.verify_chain` reports as the first
broken ``seq`` and a reason (the construction of Haber & Stornetta, J. Cryptology 1991,
and of Schneier & Kelsey's secure audit logs, USENIX Security 1998).

What the chain alone cannot show is truncation of the newest entries, or a consistent
rewrite of the whole chain by someone holding the database. That is what :meth:`head` is
for: nodes exchange heads ``(seq, hash)`` (e.g. when they agree to run a request) and each
records the others'; :meth:`verify_chain` with ``expected=`` then proves the local chain still
contains a head a peer saw earlier, and :meth:`AuditLog.holds` proves the same at the cost of
the entries written since (what the periodic exchange of
:mod:`dic_connector.node.coordination.exchange` asks every minute).

Appends are serialised so the chain cannot fork: on PostgreSQL with a transaction-level
advisory lock (``pg_advisory_xact_lock``, held until the caller's transaction ends); on SQLite
by the database write lock, which :func:`~dic_connector.database.engine.create_engine` takes at
``BEGIN IMMEDIATE``. The primary key on ``seq`` is the last line of defence: two writers that
somehow read the same head collide instead of forking. The PostgreSQL lock is held until the
caller's transaction ends, so it must be the last lock a transaction takes: a unit of work
writes its entries at commit (:class:`DeferredAuditLog`), after its row changes, which
keeps writers from waiting long and rules out lock-order deadlocks with row locks.

**Details never hold row-level data**: identifiers (request, dataset, version, site),
column names, counts of rows, analysis names, decisions, reasons. Never a value of a row, a
share, a key or a token. The size cap (:data:`MAX_DETAILS_BYTES`) is a guard against
accidentally logging a payload, not the rule itself; callers are responsible.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from dic_connector.errors import CanonicalJSONError, StoreError
from dic_connector.node.store.base import utcnow
from dic_connector.node.store.conflicts import insert
from dic_connector.node.store.models import AuditEntry
from dic_connector.trust.canonical import canonical_bytes, canonical_json

GENESIS_HASH = "0" * 64
MAX_DETAILS_BYTES = 8_192
#: Key of the PostgreSQL advisory lock: first 8 bytes of SHA-256("dic_connector.audit_log").
ADVISORY_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"dic_connector.audit_log").digest()[:8], "big", signed=True
)
VERIFY_BATCH_ROWS = 1_000
#: Entries :meth:`AuditLog.holds` verifies for one peer's question at most (~1.5 s here).
HOLDS_MAX_ENTRIES = 10_000
_CHAIN_COLUMNS = (AuditEntry.seq, AuditEntry.created_at, AuditEntry.actor, AuditEntry.action,
                  AuditEntry.object, AuditEntry.details, AuditEntry.prev_hash, AuditEntry.hash)


def timestamp_text(at: dt.datetime) -> str:
    """The hashed form of a timestamp: UTC, microseconds, ``Z``."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(prev_hash: str, seq: int, at: dt.datetime, actor: str, action: str,
               obj: str, details: Any) -> str:
    """``SHA-256(prev_hash || canonical_json(entry))`` as 64 hex digits."""
    entry = {"action": action, "actor": actor, "details": details, "object": obj,
             "seq": seq, "timestamp": timestamp_text(at)}
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_bytes(entry)).hexdigest()


class _Link(NamedTuple):
    seq: int
    created_at: dt.datetime
    actor: str
    action: str
    object: str
    details: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainHead:
    """The newest entry: ``seq`` 0 and the genesis hash for an empty log."""

    seq: int
    hash: str


@dataclass
class VerifiedPrefix:
    """How far this process has verified the node's own chain (the start of the next check:
    :meth:`AuditLog.verify_chain`'s ``start``)."""

    head: ChainHead = ChainHead(0, GENESIS_HASH)


@dataclass(frozen=True)
class Verification:
    """Result of :meth:`AuditLog.verify_chain`; ``broken_seq`` is None when the chain is intact."""

    entries: int
    head: ChainHead
    broken_seq: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_seq is None


@dataclass(frozen=True)
class Holding:
    """Whether the chain still holds a head a peer recorded earlier (:meth:`AuditLog.holds`).

    ``hash_at`` is the hash the chain has at the recorded ``seq`` now (None: no entry there,
    the log is shorter); ``verification`` covers the entries from the recorded head on."""

    head: ChainHead
    recorded: ChainHead
    hash_at: str | None
    verification: Verification | None

    @property
    def ok(self) -> bool:
        return self.hash_at == self.recorded.hash and self.verification is not None \
            and self.verification.ok

    @property
    def reason(self) -> str:
        if self.hash_at is None:
            return (f"no entry {self.recorded.seq} any more (head is {self.head.seq}): "
                    "log truncated")
        if self.hash_at != self.recorded.hash:
            return f"entry {self.recorded.seq} has another hash: log rewritten"
        if self.verification is not None and not self.verification.ok:
            return (f"chain broken at entry {self.verification.broken_seq} "
                    f"({self.verification.reason})")
        return ""


def loggable(action: str, details: dict[str, Any]) -> str:
    """The canonical text of ``details``, or StoreError if they cannot be logged."""
    try:
        details_text = canonical_json(details)
    except CanonicalJSONError as exc:
        raise StoreError(f"audit details for action '{action}' are not loggable: {exc}") from exc
    if len(details_text.encode("utf-8")) > MAX_DETAILS_BYTES:
        raise StoreError(
            f"audit details for action '{action}' exceed {MAX_DETAILS_BYTES} bytes; "
            "log identifiers and counts, never data"
        )
    return details_text


class AuditLog:
    """Append and verify the audit chain inside the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        #: the head after this transaction's last append: while the transaction holds the
        #: chain's lock (below) nobody else appends, so the next entry follows it without
        #: reading the head again
        self._appended: ChainHead | None = None

    async def _lock(self) -> None:
        if self._appended is not None:  # taken by this transaction's first append
            return
        if self._session.get_bind().dialect.name == "postgresql":
            await self._session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )

    async def latest(self, action: str, obj: str) -> AuditEntry | None:
        """The newest entry recording ``action`` on ``obj`` (e.g. a request's start)."""
        return await self._session.scalar(
            select(AuditEntry).where(AuditEntry.action == action, AuditEntry.object == obj)
            .order_by(AuditEntry.seq.desc()).limit(1))

    async def head(self) -> ChainHead:
        row = (await self._session.execute(
            select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
        )).first()
        return ChainHead(0, GENESIS_HASH) if row is None else ChainHead(row[0], row[1])

    async def append(self, actor: str, action: str, obj: str,
                     details: dict[str, Any] | None = None) -> AuditEntry:
        """Add one entry after the current head; it commits with the caller's transaction."""
        payload = details or {}
        details_text = loggable(action, payload)
        await self._lock()
        head = self._appended or await self.head()
        seq = head.seq + 1
        at = utcnow()
        entry = AuditEntry(
            seq=seq, created_at=at, actor=actor, action=action, object=obj,
            details=details_text, prev_hash=head.hash,
            hash=entry_hash(head.hash, seq, at, actor, action, obj, payload),
        )
        # PK: never a fork; a second entry of this number means another writer, and the
        # whole transaction must fail rather than go on (no savepoint)
        await insert(self._session, f"audit entry {seq}", entry, savepoint=False)
        self._appended = ChainHead(seq, entry.hash)
        return entry

    async def entries(self, *, after_seq: int = 0, obj: str | None = None,
                      limit: int = 100) -> list[AuditEntry]:
        query = select(AuditEntry).where(AuditEntry.seq > after_seq)
        if obj is not None:
            query = query.where(AuditEntry.object == obj)
        return list(await self._session.scalars(query.order_by(AuditEntry.seq).limit(limit)))

    async def hash_at(self, seq: int) -> str | None:
        """The stored hash of entry ``seq`` (the genesis hash for 0), None if there is none."""
        if seq == 0:
            return GENESIS_HASH
        stored = await self._session.scalar(select(AuditEntry.hash).where(AuditEntry.seq == seq))
        return None if stored is None else str(stored)

    async def holds(self, recorded: ChainHead,
                    max_entries: int = HOLDS_MAX_ENTRIES) -> Holding:
        """Does the chain still hold ``recorded`` (a head a peer saw earlier), intact from it on?

        Costs one lookup and the entries written since ``recorded`` (the chain is verified
        from there, as with ``verify_chain(start=...)``), never the whole log, so a peer may
        ask every minute: the entries before ``recorded`` are covered by its hash, which
        commits to all of them, and by this node's own checks (:meth:`verify_chain`). At
        most ``max_entries`` are verified per question; when more were written since (a
        peer's first question, from genesis, on a long log), the head answered is the last
        entry verified, and the peer's next question goes on from there."""
        current = await self.head()
        hash_at = await self.hash_at(recorded.seq)
        if hash_at != recorded.hash:
            return Holding(current, recorded, hash_at, None)
        verification = await self.verify_chain(start=recorded, max_entries=max_entries)
        head = verification.head if verification.ok else current
        return Holding(head, recorded, hash_at, verification)

    async def verify_chain(self, expected: ChainHead | None = None,
                           start: ChainHead | None = None, *,
                           max_entries: int | None = None) -> Verification:
        """Recompute the chain from genesis; report the first entry that does not verify.

        ``expected`` is a head recorded earlier (e.g. by a peer node); the chain must still
        contain it, which also detects truncation below that point. ``start`` (used only
        without ``expected``) is a head this process verified before: the chain is
        recomputed from there on (the entry at ``start`` must still be there, unchanged), so
        checking before every computation costs the entries written since, not the whole log.
        ``max_entries`` (only without ``expected``) stops after that many entries: the
        result's head is then the last entry verified, not the newest.
        """
        if max_entries is not None and (expected is not None or max_entries < 1):
            raise ValueError("max_entries needs no 'expected' and at least 1 entry")
        prev_hash, prev_seq, count = GENESIS_HASH, 0, 0
        # a head verified before: its entry is read with the first batch (it must still be
        # there, unchanged), and a batch shorter than asked for is the last (two statements
        # fewer per check than a lookup of the anchor and a final empty batch)
        anchor = start if start is not None and start.seq > 0 and expected is None else None
        if anchor is not None:
            prev_hash, prev_seq, count = anchor.hash, anchor.seq, anchor.seq
        seen_expected = expected is None or expected.seq == 0
        stop_at = None if max_entries is None else prev_seq + max_entries
        while stop_at is None or prev_seq < stop_at:
            rows = VERIFY_BATCH_ROWS if stop_at is None else min(VERIFY_BATCH_ROWS,
                                                                 stop_at - prev_seq)
            with_anchor = anchor is not None
            batch = (await self._session.execute(
                select(*_CHAIN_COLUMNS)
                .where(AuditEntry.seq >= prev_seq if with_anchor else AuditEntry.seq > prev_seq)
                .order_by(AuditEntry.seq).limit(rows + with_anchor)
            )).all()
            if anchor is not None:
                first = _Link(*batch[0]) if batch else None
                if first is None or first.seq != anchor.seq or first.hash != anchor.hash:
                    return Verification(0, anchor, anchor.seq,
                                        "an entry verified earlier is gone or changed")
                batch, anchor = batch[1:], None
            if not batch:
                break
            for row in (_Link(*r) for r in batch):
                problem = _check(row, prev_seq, prev_hash)
                if problem is not None:
                    return Verification(count, ChainHead(prev_seq, prev_hash), *problem)
                prev_seq, prev_hash, count = row.seq, row.hash, count + 1
                if expected is not None and row.seq == expected.seq:
                    if row.hash != expected.hash:
                        return Verification(count, ChainHead(prev_seq, prev_hash), row.seq,
                                            "hash differs from the head recorded earlier")
                    seen_expected = True
            if len(batch) < rows:  # the chain ends here
                break
        head = ChainHead(prev_seq, prev_hash)
        if not seen_expected:
            assert expected is not None
            return Verification(count, head, expected.seq,
                                "entry recorded earlier is missing (log truncated)")
        return Verification(count, head)


def _check(row: _Link, prev_seq: int, prev_hash: str) -> tuple[int, str] | None:
    expected_seq = prev_seq + 1
    if row.seq != expected_seq:
        return expected_seq, f"entry missing (next stored entry is {row.seq})"
    if row.prev_hash != prev_hash:
        return row.seq, "prev_hash does not link to the previous entry"
    try:
        details = json.loads(row.details)
        if canonical_json(details) != row.details:
            return row.seq, "details are not in canonical form"
    except (ValueError, CanonicalJSONError):
        return row.seq, "details are not canonical JSON"
    recomputed = entry_hash(prev_hash, row.seq, row.created_at, row.actor, row.action,
                            row.object, details)
    if recomputed != row.hash:
        return row.seq, "hash does not match the entry's content"
    return None


class DeferredAuditLog:
    """The audit log as a unit of work uses it: entries are checked at once, written last.

    ``append`` validates the details immediately (so a bad entry fails the action at once)
    but writes the entry only at :meth:`flush`, which the unit of work calls just before it
    commits, after every other change. The chain lock (a PostgreSQL advisory lock) is then
    always the *last* lock a transaction takes, so a transaction holding it never waits for
    a row lock held by another that waits for the chain: the lock-order deadlock an early
    append caused between a request's status update and an approval. Reads flush first, so
    a transaction sees its own entries.
    """

    def __init__(self, log: AuditLog) -> None:
        self._log = log
        self._pending: list[tuple[str, str, str, dict[str, Any]]] = []

    async def append(self, actor: str, action: str, obj: str,
                     details: dict[str, Any] | None = None) -> None:
        payload = details or {}
        loggable(action, payload)
        self._pending.append((actor, action, obj, payload))

    @property
    def pending(self) -> int:
        """How many entries wait for :meth:`flush`."""
        return len(self._pending)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        for actor, action, obj, details in pending:
            await self._log.append(actor, action, obj, details)

    async def head(self) -> ChainHead:
        await self.flush()
        return await self._log.head()

    async def latest(self, action: str, obj: str) -> AuditEntry | None:
        await self.flush()
        return await self._log.latest(action, obj)

    async def verify_chain(self, expected: ChainHead | None = None,
                           start: ChainHead | None = None, *,
                           max_entries: int | None = None) -> Verification:
        await self.flush()
        return await self._log.verify_chain(expected, start, max_entries=max_entries)

    async def holds(self, recorded: ChainHead,
                    max_entries: int = HOLDS_MAX_ENTRIES) -> Holding:
        await self.flush()
        return await self._log.holds(recorded, max_entries)

    async def entries(self, *, after_seq: int = 0, obj: str | None = None,
                      limit: int = 100) -> list[AuditEntry]:
        await self.flush()
        return await self._log.entries(after_seq=after_seq, obj=obj, limit=limit)
