"""Agreement among the three nodes before any computation, and the nodes' background tasks.

Node 0 coordinates (every computation needs all three nodes, so a fixed coordinator costs no
availability). For each request it holds as approved it

1. proposes a :class:`~.verify.Plan` (the latest committed version of each dataset, its k),
   refusing at once while its own audit chain is broken or a peer's log is flagged;
2. asks both peers at once to ``prepare``: each checks the plan on its own database and answers
   ready (with the k it requires and its audit head) or not ready with a reason;
3. when both are ready, checks the agreed plan itself (:func:`~.verify.check_plan`) and marks
   the request ``running`` in the same transaction (:meth:`Coordination.begin`), asks both
   to ``start`` with the agreed k, a fresh session id and the three audit heads (each node
   writes all three heads into its ``compute.start`` entry: the cross-node record of where
   each log stood), and computes with them (:mod:`.computation`).

Each node checks a plan twice at most: a peer at ``prepare`` and at ``start``, the
coordinator once, right before it marks the request running (issue 17: each check is a
dozen statements; the coordinator's check at the proposal and a peer's second check in
the background start repeated the one made moments before, and were dropped). A peer
with a free compute slot checks a ``start`` and marks it running in one transaction, and
computes in the background; one with no slot free checks it, answers, and checks again
once a slot is free.

Anything short of three ready nodes sets ``waiting_for_nodes`` with the reasons (a node
unreachable, a version not yet committed there, an approval not yet replicated, ...); a
request still waiting after ``coordination_timeout_s`` fails. Nodes 1 and 2 follow: for a
request they hold as approved they ask the coordinator how it stands and show that (or
"coordinator unreachable"), and adopt only a failure or cancellation from it, never a start:
a start reaches them only through ``start``, which they verify. They ask about one request at
most every :data:`FOLLOW_INTERVAL_S` (or tick, if longer), so a short tick does not turn into
a stream of calls competing with the checks of the very request they follow, less often
the longer it waits (the interval doubles up to :data:`FOLLOW_MAX_INTERVAL_S`), and not at
all in its first interval: a request that starts at once needs no follow, and a follower
that asked at once found the coordinator, still busy receiving the request, without it,
and wrote and audited ``waiting_for_nodes`` for nothing (issue 17: two peer calls and two
write transactions per request, in the request's critical path). A follower's loop ticks
on its own clock, not when a change wakes the coordinator's (it has nothing to start). A tick that
finds nothing startable lets the loop sleep until it is woken (at most :data:`IDLE_TICK_S`):
an idle node does not read its requests every tick.

**Concurrent computations** (issue 17, part 3). The coordinator starts each request in a
task of its own, up to :attr:`Coordination.limit` at once: its ``max_concurrent_computations``
or a peer's, if smaller (each ready answer carries the peer's). The tick waits for the
starts' hand-offs (peers started, or the request waiting), never for a computation. It
tries the startable requests round robin over their studies (:func:`fair_order`), so one
study's long queue does not hold up another's request. Every
node holds ``compute_lock``, a semaphore of its own limit: a node with no free slot answers
``prepare`` not ready ("running its limit of n computations"), so the request waits rather
than fails, and a ``start`` queues for a slot (``dic_lock_wait_seconds{lock="compute"}``).
Each computation has its own MPC session id and connections (:mod:`.computation`).

**Memory admission.** Each request's recipe estimates the memory a node needs for it
(:meth:`~dic_connector.node.analyses.base.Analysis.memory_estimate`: bytes per pooled
row, a sort about 512 B, sums and comparisons about 400 B, Cox 5 KiB per time bin). The
coordinator reserves it when it claims the request's scope and frees it when the
computation ends; a request whose estimate does not fit beside the running ones' within
``memory_budget_mib`` (its own or a peer's, if smaller; each ready answer carries the
peer's) is left for later, as a request behind a busy scope is, and woken when one ends.
Two Cox regressions of 2 x 10^4 rows on 20 bins (~2 GiB each) thus run one after the
other on a node with a 3 GiB budget. A request that alone exceeds the budget still runs,
alone.

**The ledger under concurrency.** A release is checked under MPC against the ledger as it
was loaded and recorded only when it ends, so two concurrent releases over linked query
sets would each pass a differencing check that the other's release makes wrong (over
{tm, tr, x}: one opens tm, the other tr, and together they give x). Concurrency is
therefore per ledger **scope** (:meth:`~dic_connector.node.store.ledger.LedgerRepository.
scope`): the request's datasets and every dataset linked to them through earlier entries.
The coordinator claims a request's scope synchronously after proposing it and leaves a
request whose scope meets a running one's for later (it is woken when that one ends): two
releases whose entries could combine always run one after the other, in the same order on
the three nodes. Releases in disjoint scopes cannot combine (the check itself only uses
the linked component, :func:`dic_connector.node.analyses.ledger._component`), and neither
changes the other's scope, so the plan's ledger head and the entries loaded are those of
the scope alone; a node still finishing the previous computation of a scope answers not
ready (its scoped head is behind) until it has recorded it. Serialising the check and the
record instead would need them in one step at release time, which the check under MPC,
early in the program, is not.

Beside the tick loop and the replicator, every node runs the periodic audit head exchange
with both peers (:mod:`.exchange`, every ``audit_exchange_interval_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from dic_connector.errors import (
    ConflictError,
    NotFoundError,
    NotReady,
    PeerRefused,
    PeerUnavailable,
)
from dic_connector.node.analyses.catalog import get_analysis
from dic_connector.node.config import NodeConfig
from dic_connector.node.coordination.computation import compute
from dic_connector.node.coordination.exchange import AuditExchange
from dic_connector.node.coordination.peers import PeerClient
from dic_connector.node.coordination.replication import Replicator
from dic_connector.node.coordination.verify import (
    STARTABLE,
    Plan,
    check_own_audit,
    check_peer_audits,
    check_plan,
    propose,
    reason_of,
)
from dic_connector.node.store.unit_of_work import Store, UnitOfWork, WaitObserver
from dic_connector.vocabulary import REQUEST_TRANSITIONS, RequestStatus
from mpc.mux import ChannelPool

COORDINATOR = 0
log = logging.getLogger("dic_connector.node.coordination")


#: The coordinator's first waits after a tick that left a request waiting for the nodes
#: (seconds; then ``coordination_interval_s``): a peer that was not ready yet is most
#: often one replication message behind (an approval on its way), ready a few ms later.
RETRY_SOON_S = (0.02, 0.05, 0.1, 0.2, 0.4)
#: The shortest time between two calls of a follower to the coordinator about one request
#: (seconds). A follow only shows the coordinator's status and adopts a failure or
#: cancellation (a start arrives through ``start``), so a short coordination tick need not
#: mean a call per tick: at 0.05 s the followers' polls were ~20 calls/s, each costing TLS,
#: authentication and a database read on both nodes, beside the request being prepared.
FOLLOW_INTERVAL_S = 0.5
#: The interval doubles after each follow of one request, up to this (seconds): a request
#: queued behind others (16 submitted at once) was asked about every 0.5 s by both
#: followers, 10-17 calls per request at the coordinator (issue 17).
FOLLOW_MAX_INTERVAL_S = 4.0
#: The longest the coordinator leaves a request for its own replication messages about it
#: to reach the peers before asking them to prepare anyway (seconds; see
#: :meth:`Coordination._replicating`)
REPLICATION_GRACE_S = 1.0
#: The longest the loop sleeps after a tick that found no startable request, unless woken
#: (seconds; or the coordination interval, if longer). Whatever makes a request startable
#: here (a request, an approval or a policy arriving) wakes the loop, so an idle node need
#: not read its requests every tick; this bounds the delay of a change made by another
#: process.
IDLE_TICK_S = 1.0
#: The status reason of a request queued behind a computation whose ledger scope its
#: own meets (the researcher may not see that request, so it is not named).
SCOPE_BUSY = ("waiting: a computation on datasets linked to this request's through the "
              "release ledger is running; it starts when that one has been recorded")
#: The status reason of a request whose memory estimate does not fit beside the running
#: computations' (``memory_budget_mib``).
MEMORY_BUSY = ("waiting: the computations running now reserve the memory this one needs "
               "(memory_budget_mib); it starts when one of them ends")


def fair_order(startable: Sequence[tuple[uuid.UUID, uuid.UUID]],
               running: Iterable[uuid.UUID],
               served: Mapping[uuid.UUID, int] | None = None) -> list[uuid.UUID]:
    """The order in which the coordinator tries the startable requests, given as
    (request, study) oldest first, with the studies of the requests it is starting or
    computing in ``running`` and, per study, when it last had a request started
    (``served``, any increasing count): round robin over the studies. A request's turn
    is the number of its study's requests running or ahead of it in the queue; within a
    turn the study served longest ago (or never) goes first, then the oldest request. A
    study that queued a hundred requests takes turns with another's one request instead
    of going ahead of it (issue 17, part 3: fairness between studies); with every request
    in a study of its own, this is submission order."""
    load = Counter(running)
    last = served or {}
    keyed = []
    for age, (request_id, study_id) in enumerate(startable):
        keyed.append((load[study_id], last.get(study_id, -1), age, request_id))
        load[study_id] += 1
    return [request_id for *_, request_id in sorted(keyed)]


async def memory_estimate(uow: UnitOfWork, plan: Plan) -> int:
    """The memory (bytes) computing ``plan`` needs on a node, by its recipe's
    :meth:`~dic_connector.node.analyses.base.Analysis.memory_estimate` over the pinned
    versions' rows."""
    req = await uow.requests.get(plan.request_id)
    rows = 0
    for version_id in plan.versions.values():
        rows += (await uow.versions.get(version_id)).row_count
    return get_analysis(req.analysis, req.analysis_version).memory_estimate(
        dict(req.parameters), rows)


class RetrySoon:
    """How long the coordination loop sleeps (unless woken) after a tick.

    While the same requests stay waiting it steps through ``soon`` and then waits the
    full ``interval``; a request that starts waiting begins the steps again, and with none
    waiting it is ``interval``. Waking (a request, an approval or a version arrived) is
    separate and always immediate.
    """

    def __init__(self, interval: float, soon: tuple[float, ...] = RETRY_SOON_S) -> None:
        self.interval = interval
        self.soon = soon
        self._waiting: frozenset[uuid.UUID] = frozenset()
        self._step = 0

    def delay(self, waiting: frozenset[uuid.UUID]) -> float:
        if waiting - self._waiting:
            self._step = 0
        self._waiting = waiting
        if not waiting or self._step >= len(self.soon):
            return self.interval
        self._step += 1
        return min(self.soon[self._step - 1], self.interval)


class Coordination:
    """The node's coordination state: peer client, replicator, coordinator loop, compute
    semaphore, the MPC channel pool.

    A standalone node (no ``peers`` configured) has one too; it then never computes.
    """

    def __init__(self, store: Store, config: NodeConfig,
                 pool: ChannelPool | None = None) -> None:
        self.store = store
        self.config = config
        #: the node's MPC connections, shared by every session (None: standalone)
        self.pool = pool
        #: one slot per computation this node runs at once (``max_concurrent_computations``)
        self.compute_lock = asyncio.Semaphore(config.max_concurrent_computations)
        #: told how long each start queued for ``compute_lock`` (the node's
        #: ``dic_lock_wait_seconds{lock="compute"}``); None: not observed
        self.on_compute_wait: WaitObserver | None = None
        self._stopping = asyncio.Event()
        self._client: PeerClient | None = PeerClient(config) if config.coordinated else None
        self._replicator = (Replicator(store, config, self._client, self._stopping)
                            if self._client else None)
        if self._replicator is not None:  # a delivery may make a deferred request ready
            self._replicator.on_delivered = self._delivered
        #: the periodic exchange of audit heads with the peers (None: standalone)
        self.audit_exchange = (AuditExchange(store, config, self._client, self._stopping)
                               if self._client else None)
        self._wake = asyncio.Event()
        self._waiting_since: dict[uuid.UUID, float] = {}
        #: when (monotonic) this follower last asked the coordinator about each request
        #: (or first found it startable), and the interval until it asks next
        self._followed: dict[uuid.UUID, tuple[float, float]] = {}
        #: whether the last tick found a startable request
        self._startable = True
        #: when (monotonic) the coordinator first left each request for its replication
        #: to settle (see :meth:`_replicating`)
        self._replication_waits: dict[uuid.UUID, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: the coordinator's requests being started or computed, and their ledger scopes
        #: (the datasets linked to theirs through the ledger; empty until proposed)
        self._starting: dict[uuid.UUID, frozenset[str]] = {}
        #: requests left for later because their scope met a running one's, and that scope
        #: (the tick passes over them while it still does: no head-of-line blocking)
        self._queued: dict[uuid.UUID, frozenset[str]] = {}
        #: each peer's ``max_concurrent_computations``, as its last ready answer said
        self._peer_limits: dict[int, int] = {}
        #: each peer's ``memory_budget_mib``, as its last ready answer said
        self._peer_budgets: dict[int, int] = {}
        #: the memory estimate (bytes) of each request being started or computed
        self._reserved: dict[uuid.UUID, int] = {}
        #: requests left for later because their estimate did not fit beside the running
        #: ones', and that estimate
        self._memory_queued: dict[uuid.UUID, int] = {}
        #: the study of each request startable or being started (for :func:`fair_order`)
        self._study_of: dict[uuid.UUID, uuid.UUID] = {}
        #: per study, the count of starts at its last one (for :func:`fair_order`; a try
        #: that left the request waiting is no turn)
        self._served: dict[uuid.UUID, int] = {}
        self._launches = 0
        #: why the coordinator holds back each request it leaves for later, as last shown
        #: in its status (shown once per reason, not every tick)
        self._shown: dict[uuid.UUID, str] = {}

    @property
    def limit(self) -> int:
        """How many computations the coordinator runs at once: its own limit, or a peer's
        if smaller (a peer beyond its limit answers not ready; this keeps it from having
        to); one until both peers have said theirs in a ready answer."""
        if len(self._peer_limits) < len(self.client.others):
            return 1
        return min([self.config.max_concurrent_computations, *self._peer_limits.values()])

    @property
    def memory_budget(self) -> int:
        """The memory (bytes) the coordinator lets computations reserve at once: its own
        ``memory_budget_mib`` or a peer's, if smaller (all three hold shares of the same
        rows, so a computation needs about the same on each)."""
        return min([self.config.memory_budget_mib, *self._peer_budgets.values()]) << 20

    def _fits(self, request_id: uuid.UUID, estimate: int) -> bool:
        """Whether ``estimate`` fits beside the other running computations' reservations;
        a computation alone always runs (its estimate may exceed the whole budget: it is
        then the only one)."""
        others = [v for r, v in self._reserved.items() if r != request_id]
        return not others or sum(others) + estimate <= self.memory_budget

    def busy(self) -> str | None:
        """Why this node cannot take another computation now (None: it can)."""
        if not self.compute_lock.locked():
            return None
        return (f"{self.config.node_id} is running its limit of "
                f"{self.config.max_concurrent_computations} computation(s) "
                "(max_concurrent_computations)")

    @property
    def client(self) -> PeerClient:
        if self._client is None:
            raise NotReady(f"{self.config.node_id} is standalone: no peers configured")
        return self._client

    def _delivered(self) -> None:
        if self._replication_waits:
            self._wake.set()

    def _replicating(self, request_id: uuid.UUID, behind: set[int]) -> bool:
        """Whether to leave ``request_id`` until this node's own messages about it (the
        request, its approvals, a policy) reached ``behind``: a peer asked to prepare
        before then answers "not received yet" or "awaiting approval", a check for
        nothing, and the retry comes :data:`RETRY_SOON_S` later. The replicator's next
        delivery wakes the loop; after :data:`REPLICATION_GRACE_S` (a peer down, a message
        retried) the prepare goes ahead and shows the peers' own reasons."""
        if not behind:
            self._replication_waits.pop(request_id, None)
            return False
        first = self._replication_waits.setdefault(request_id, time.monotonic())
        return time.monotonic() - first < REPLICATION_GRACE_S

    def wake(self) -> None:
        """Something changed (a request, an approval, a version): look again now. (The
        replicator is not woken here: a commit that enqueued peer messages wakes it itself,
        ``Store.on_outbox``; waking it on every change cost each peer loop a read of the
        empty outbox, about ten read transactions per request over the three nodes.) Only
        the coordinator's loop is woken: a follower's tick only follows, on a clock of its
        own (:meth:`_follow_due`), so a wake gave it a read of its requests for nothing."""
        if self.config.node_index == COORDINATOR:
            self._wake.set()

    async def run(self) -> None:
        """The background work of a coordinated node, until :meth:`stop`."""
        if self._client is None or self._replicator is None or self.audit_exchange is None:
            return
        await self.fail_interrupted()
        async with self._client:
            await asyncio.gather(self._replicator.run(), self._loop(),
                                 self.audit_exchange.run())

    async def fail_interrupted(self) -> None:
        """A request still ``running`` when the node starts was interrupted by a crash or
        restart: its MPC session is gone, so it fails (the researcher may resubmit)."""
        async with self.store.unit_of_work() as uow:
            for req in await uow.requests.all(status=RequestStatus.RUNNING):
                await uow.requests.set_status(req.id, RequestStatus.FAILED,
                                              f"{self.config.node_id} restarted during the "
                                              "computation")
                await uow.audit.append(f"node:{self.config.node_id}", "compute.fail",
                                       f"request:{req.id}", {"reason": "node restarted"})

    def stop(self) -> None:
        """Ask the loops to finish their current step and return (graceful shutdown: a
        task cancelled inside a database transaction can leave its connection behind)."""
        self._stopping.set()
        self.wake()

    async def close(self, grace_s: float = 10.0) -> None:
        """Let started computations finish for ``grace_s``, then cancel them."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        retry = RetrySoon(self.config.coordination_interval_s,
                          RETRY_SOON_S if self.config.node_index == COORDINATOR else ())
        while not self._stopping.is_set():
            try:
                await self.tick()
            except Exception:  # keep coordinating; the log says why
                log.exception("coordination tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.next_delay(retry))
            self._wake.clear()

    def next_delay(self, retry: RetrySoon) -> float:
        """How long the loop sleeps after the tick just run, unless woken: ``retry``'s
        delay while requests are startable, else up to :data:`IDLE_TICK_S`."""
        delay = retry.delay(frozenset(self._waiting_since))
        return delay if self._startable else max(delay, IDLE_TICK_S)

    async def tick(self) -> None:
        async with self.store.reading() as uow:
            held = await uow.requests.all(statuses=STARTABLE)
        self._study_of.update((r.id, r.study_id) for r in held)
        startable = fair_order([(r.id, r.study_id) for r in held],
                               [self._study_of[r] for r in self._starting
                                if r in self._study_of], self._served)
        launched: list[tuple[asyncio.Task[None], asyncio.Event]] = []
        blocked = 0  # startable, but behind the limit or a running scope
        held_back: dict[uuid.UUID, str] = {}  # and why, to show in their status
        for request_id in startable:
            if self.config.node_index == COORDINATOR:
                queued = self._queued.get(request_id)
                needs = self._memory_queued.get(request_id)
                if request_id in self._starting:
                    blocked += 1
                    continue
                if queued is not None and any(queued & s for s in self._starting.values()):
                    blocked += 1
                    held_back[request_id] = SCOPE_BUSY
                    continue
                if len(self._starting) >= self.limit:
                    blocked += 1
                    held_back[request_id] = self._limit_reached()
                    continue
                if needs is not None and not self._fits(request_id, needs):
                    blocked += 1
                    held_back[request_id] = MEMORY_BUSY
                    continue
                self._starting[request_id] = frozenset()
                handed_off = asyncio.Event()
                launched.append((self._spawn(self._start_one(request_id, handed_off)),
                                 handed_off))
            elif self._follow_due(request_id):
                await self._follow(request_id)
        # a tick that can only find blocked requests sleeps until woken (a computation
        # ending wakes it), as an idle one does
        self._startable = len(startable) > blocked
        # the starts go on concurrently; the tick waits for their hand-offs (the peers
        # started, or the request waiting), never for a computation
        await asyncio.gather(*(self._handed_off(task, event) for task, event in launched))
        for request_id, reason in held_back.items():
            await self._show_held_back(request_id, reason)
        for request_id in set(self._shown) - set(startable):
            del self._shown[request_id]
        for request_id in set(self._waiting_since) - set(startable):
            del self._waiting_since[request_id]
        for request_id in set(self._followed) - set(startable):
            del self._followed[request_id]
        for request_id in set(self._queued) - set(startable):
            del self._queued[request_id]
        for request_id in set(self._memory_queued) - set(startable):
            del self._memory_queued[request_id]
        for request_id in set(self._replication_waits) - set(startable) - set(self._starting):
            del self._replication_waits[request_id]
        for request_id in set(self._study_of) - set(startable) - set(self._starting):
            del self._study_of[request_id]

    # -- coordinator ------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _handed_off(task: asyncio.Task[None], event: asyncio.Event) -> None:
        waiter = asyncio.create_task(event.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    async def _start_one(self, request_id: uuid.UUID, handed_off: asyncio.Event) -> None:
        """One request's start and computation, in a task of its own; a computation that
        ran frees its slot and may change its scope's ledger: the loop looks again."""
        computed = False

        def started() -> None:  # the peers started it: its study had its turn
            self._launches += 1
            if request_id in self._study_of:
                self._served[self._study_of[request_id]] = self._launches
            handed_off.set()

        try:
            computed = await self._try_start(request_id, started)
        except Exception:  # the request's own paths record failures; never lose the slot
            log.exception("starting request %s failed", request_id)
        finally:
            del self._starting[request_id]
            self._reserved.pop(request_id, None)
            handed_off.set()
            if computed:
                self._wake.set()

    async def _try_start(self, request_id: uuid.UUID,
                         on_started: Callable[[], None] | None = None) -> bool:
        """Propose, prepare and start ``request_id``; whether it was computed."""
        try:
            async with self.store.unit_of_work() as uow:
                plan = await propose(uow, self.config, request_id)
                # the node-wide refusals before asking the peers (a broken or flagged
                # log would otherwise have them prepare, and audit it, on every retry);
                # the full check runs once, in the transaction that marks it running
                await check_own_audit(uow, self.config.node_id)
                await check_peer_audits(uow, self.config.node_id)
                scope = await uow.ledger.scope(str(d) for d in plan.versions)
                estimate = await memory_estimate(uow, plan)
                behind = await uow.outbox.pending_about(
                    f"/v1/peer/requests/{request_id}", "/v1/peer/policies")
                head = await uow.audit.head()
                heads = {self.config.node_id: {"seq": head.seq, "hash": head.hash}}
        except NotReady as exc:
            await self._wait(request_id, str(exc))
            return False
        except Exception as exc:  # a check that broke must show, not stall silently
            log.exception("checking request %s failed", request_id)
            await self._wait(request_id, f"{self.config.node_id}: {reason_of(exc)}")
            return False
        if self._replicating(request_id, behind):
            return False  # the replicator's delivery wakes the loop
        # no await between this check and the claim: two starts never share a scope
        if any(scope & other for other_id, other in self._starting.items()
               if other_id != request_id):
            self._queued[request_id] = scope
            # queued behind a computation on linked datasets (which wakes us when it ends)
            await self._show_held_back(request_id, SCOPE_BUSY)
            return False
        if not self._fits(request_id, estimate):
            self._memory_queued[request_id] = estimate
            # queued until running computations free memory (they wake us when they end)
            await self._show_held_back(request_id, MEMORY_BUSY)
            return False
        self._queued.pop(request_id, None)
        self._memory_queued.pop(request_id, None)
        self._starting[request_id] = scope
        self._reserved[request_id] = estimate
        reasons, k, m = [], plan.min_cell_count, plan.rules.min_subset_size
        levels, check_ledger = plan.max_levels, plan.check_ledger
        peers = self.client.others
        answers = await asyncio.gather(*(self._prepare(peer, plan) for peer in peers))
        for peer, answer in zip(peers, answers, strict=True):
            if isinstance(answer, str):
                reasons.append(answer)
            else:
                if "max_concurrent_computations" in answer:
                    self._peer_limits[peer] = max(1, int(answer["max_concurrent_computations"]))
                if "memory_budget_mib" in answer:
                    self._peer_budgets[peer] = max(1, int(answer["memory_budget_mib"]))
                k = max(k, int(answer["min_cell_count"]))
                m = max(m, int(answer.get("min_subset_size", 0)))
                if answer.get("max_levels") is not None:
                    theirs = int(answer["max_levels"])
                    levels = theirs if levels is None else min(levels, theirs)
                check_ledger = check_ledger or bool(answer.get("check_ledger", True))
                heads[self.client.name(peer)] = answer["audit_head"]
        if reasons:
            await self._wait(request_id, "; ".join(reasons))
            return False
        try:
            return await self.start(replace(plan, min_cell_count=k, min_subset_size=max(m, k),
                                            max_levels=levels, check_ledger=check_ledger),
                                    os.urandom(16), heads, start_peers=True,
                                    on_started=on_started)
        except NotReady as exc:  # its own check (or changed since: a version erased)
            await self._wait(request_id, str(exc))
            return False
        except Exception as exc:  # a check that broke must show, not stall silently
            log.exception("checking request %s failed", request_id)
            await self._wait(request_id, f"{self.config.node_id}: {reason_of(exc)}")
            return False

    async def _prepare(self, peer: int, plan: Plan) -> dict[str, Any] | str:
        """``peer``'s ready answer to ``plan``, or why it is not ready (unreachable, refused
        or not ready on its own checks). Both peers are asked at once; each answer stands
        on its own, so one peer's refusal never hides or cancels the other's."""
        try:
            answer = await self.client.call(
                peer, "POST", f"/v1/peer/requests/{plan.request_id}/prepare", plan.as_json())
        except (PeerUnavailable, PeerRefused) as exc:
            return str(exc)
        if not answer.get("ready"):
            return str(answer.get("reason", f"{self.client.name(peer)} not ready"))
        return answer

    async def start(self, plan: Plan, session_id: bytes, heads: dict[str, Any],
                    start_peers: bool = False,
                    on_started: Callable[[], None] | None = None) -> bool:
        """Mark ``running`` after a last check, then compute; on the coordinator, start the
        peers first (a peer that cannot start fails the request everywhere). Whether it
        was computed (ended completed or failed by the computation); ``on_started`` is
        called once the peers are started, before the computation."""
        queued = time.perf_counter()
        async with self.compute_lock:
            if self.on_compute_wait is not None:
                self.on_compute_wait(time.perf_counter() - queued)
            async with self.store.unit_of_work() as uow:
                await self.begin(uow, plan, session_id, heads)
            return await self._begun(plan, session_id, heads, start_peers, on_started)

    async def begin(self, uow: UnitOfWork, plan: Plan, session_id: bytes,
                    heads: dict[str, Any]) -> None:
        """The last check of ``plan`` and its start, in the caller's transaction: the
        request ``running``, its versions pinned, ``compute.start`` audited with the three
        heads. The caller holds a slot of :attr:`compute_lock`."""
        await check_plan(uow, self.config, plan)
        await uow.requests.set_status(plan.request_id, RequestStatus.RUNNING,
                                      "computing on all three nodes")
        await uow.requests.pin_versions(plan.request_id, plan.versions)
        await uow.audit.append(
            f"node:{self.config.node_id}", "compute.start", f"request:{plan.request_id}",
            {**plan.as_json(), "session": session_id.hex(), "audit_heads": heads})

    async def _begun(self, plan: Plan, session_id: bytes, heads: dict[str, Any],
                     start_peers: bool, on_started: Callable[[], None] | None) -> bool:
        """After :meth:`begin` committed: start the peers (coordinator), then compute."""
        self._waiting_since.pop(plan.request_id, None)
        if start_peers:
            body = {**plan.as_json(), "session_id": session_id.hex(), "audit_heads": heads}
            results = await asyncio.gather(*(
                self.client.call(peer, "POST", f"/v1/peer/requests/{plan.request_id}/start",
                                 body) for peer in self.client.others),
                return_exceptions=True)
            failures = [reason_of(r) for r in results if isinstance(r, BaseException)]
            if failures:
                await self._fail(plan.request_id, "a node could not start: "
                                 + "; ".join(failures))
                return True
        if on_started is not None:
            on_started()
        await compute(self.store, self.config, plan, session_id, self.pool)
        return True

    async def take_slot(self) -> bool:
        """Hold a slot of :attr:`compute_lock` if one is free now (never waits): a peer's
        ``start`` then checks and starts in its own transaction (:meth:`begin`) and
        computes in the background (:meth:`compute_begun`), which frees the slot."""
        if self.compute_lock.locked():
            return False
        await self.compute_lock.acquire()  # free: returns without suspending
        if self.on_compute_wait is not None:
            self.on_compute_wait(0.0)
        return True

    def compute_begun(self, plan: Plan, session_id: bytes, heads: dict[str, Any]) -> None:
        """A peer's side of a ``start`` that :meth:`begin` committed in a slot taken with
        :meth:`take_slot`: compute without holding up the coordinator's call."""
        self._spawn(self._run_begun(plan, session_id, heads))

    async def _run_begun(self, plan: Plan, session_id: bytes, heads: dict[str, Any]) -> None:
        try:
            await self._begun(plan, session_id, heads, False, None)
        except Exception as exc:  # the request must end, and the operator see why
            log.exception("computing request %s failed", plan.request_id)
            await self._fail(plan.request_id, f"{self.config.node_id}: {reason_of(exc)}")
        finally:
            self.compute_lock.release()

    def start_in_background(self, plan: Plan, session_id: bytes, heads: dict[str, Any]) -> None:
        """A peer's side of ``start`` while no slot is free: queue for one, check again and
        compute, without holding up the coordinator's call."""
        self._spawn(self._run_started(plan, session_id, heads))

    async def _run_started(self, plan: Plan, session_id: bytes, heads: dict[str, Any]) -> None:
        try:
            await self.start(plan, session_id, heads)
        except NotReady as exc:
            await self._fail(plan.request_id, str(exc))
        except Exception as exc:  # the request must end, and the operator see why
            log.exception("starting request %s failed", plan.request_id)
            await self._fail(plan.request_id, f"{self.config.node_id}: {reason_of(exc)}")

    # -- followers ----------------------------------------------------------------------

    def _follow_due(self, request_id: uuid.UUID) -> bool:
        """Whether a follower asks the coordinator about ``request_id`` in this tick: one
        :data:`FOLLOW_INTERVAL_S` (or the coordination interval, if longer) after it first
        found it startable, then after twice the last interval, up to
        :data:`FOLLOW_MAX_INTERVAL_S`, however often the loop is woken or ticks (see the
        module docstring)."""
        now = time.monotonic()
        first = max(FOLLOW_INTERVAL_S, self.config.coordination_interval_s)
        last, interval = self._followed.setdefault(request_id, (now, first))
        if now - last < interval:
            return False
        self._followed[request_id] = (now, max(first, min(2 * interval,
                                                          FOLLOW_MAX_INTERVAL_S)))
        return True

    async def _follow(self, request_id: uuid.UUID) -> None:
        leader = self.client.name(COORDINATOR)
        try:
            answer = await self.client.call(COORDINATOR, "GET",
                                            f"/v1/peer/requests/{request_id}")
        except PeerUnavailable:
            await self._wait(request_id, f"{leader} (coordinator) unreachable")
            return
        except PeerRefused as exc:
            await self._wait(request_id, str(exc))
            return
        status, reason = answer.get("status"), str(answer.get("status_reason") or "")
        if status in (RequestStatus.FAILED, RequestStatus.REJECTED):
            await self._fail(request_id, f"{leader}: {reason}")
        elif status == RequestStatus.CANCELLED:
            await self._set(request_id, RequestStatus.CANCELLED, f"{leader}: {reason}")
        elif status == RequestStatus.WAITING_FOR_NODES:
            await self._wait(request_id, f"{leader}: {reason}")

    # -- status helpers -----------------------------------------------------------------

    def _limit_reached(self) -> str:
        return (f"waiting: {len(self._starting)} computation(s) already running, the most "
                "the nodes run at once (max_concurrent_computations); it starts when one "
                "ends")

    async def _show_held_back(self, request_id: uuid.UUID, reason: str) -> None:
        """Show why the coordinator leaves a request for later (``waiting_for_nodes``
        with ``reason``), once per reason: the researcher sees a queue, not a request
        approved and silent. It does not start the coordination timeout (the request
        waits its turn; nothing is wrong)."""
        if self._shown.get(request_id) == reason:
            return
        self._shown[request_id] = reason
        await self._set(request_id, RequestStatus.WAITING_FOR_NODES, reason)

    async def _wait(self, request_id: uuid.UUID, reason: str) -> None:
        self._shown.pop(request_id, None)  # another reason shows now
        first = self._waiting_since.setdefault(request_id, time.monotonic())
        if time.monotonic() - first > self.config.coordination_timeout_s:
            await self._fail(request_id, f"could not start within "
                             f"{self.config.coordination_timeout_s} s: {reason}")
            return
        await self._set(request_id, RequestStatus.WAITING_FOR_NODES, reason)

    async def _fail(self, request_id: uuid.UUID, reason: str) -> None:
        log.warning("request %s failed: %s", request_id, reason[:500])
        self._waiting_since.pop(request_id, None)
        await self._set(request_id, RequestStatus.FAILED, reason)

    async def _set(self, request_id: uuid.UUID, status: RequestStatus, reason: str) -> None:
        """Show ``status`` unless the request moved on meanwhile.

        The loops race with the peer API: a ``start`` can mark a request ``running`` between
        the tick that read it as waiting and this call. A transition the state machine
        forbids from the status found now (``running`` -> ``waiting_for_nodes``) lost that
        race: a no-op, logged at DEBUG, never an error."""
        reason = reason[:500]
        try:
            async with self.store.unit_of_work() as uow:
                req = await uow.requests.get(request_id)
                if (req.status, req.status_reason) == (status, reason):
                    return
                if req.status not in STARTABLE and req.status is not RequestStatus.RUNNING:
                    return  # finished meanwhile
                if status is not req.status and status not in REQUEST_TRANSITIONS[req.status]:
                    log.debug("request %s is %s now; not moving it to %s (lost a race)",
                              request_id, req.status.value, status.value)
                    return
                await uow.requests.set_status(request_id, status, reason)
                await uow.audit.append(f"node:{self.config.node_id}",
                                       f"request.{status.value}", f"request:{request_id}",
                                       {"reason": reason})
        except NotFoundError:
            return
        except ConflictError as exc:  # moved between our read and the locked re-read
            log.debug("request %s: %s (lost a race)", request_id, exc)
