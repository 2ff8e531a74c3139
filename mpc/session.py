"""``Party`` and ``Session``: the small API protocols are written against.

A :class:`Party` is one node's long-lived identity in the deployment (index 0, 1 or 2) with
its peer channels. A :class:`Session` is one computation among the three parties: a 16-byte
session id shared by all three, a step counter, and correlated randomness whose keys are
agreed afresh when the session opens (:mod:`mpc.randomness`).

All three parties run the same deterministic program, so they allocate the same step numbers
in the same order; every message carries (session id, step), which is how a lost, replayed
or mis-routed message is detected. Parallelism comes from batching whole arrays into one
message, not from running protocols concurrently inside one session, which would make step
allocation order depend on timing.

The same objects serve three OS processes on three hosts (:class:`~mpc.channels.TlsChannels`)
and three tasks in one event loop (:class:`~mpc.channels.LoopbackNetwork`), for tests.

**Reveals.** Every primitive that opens a sharing (``arith.open_``, ``arith.open_to``,
``boolean.open_bool``) announces it with :meth:`Session.reveal` *before* any share leaves the
party: which sharing, its shape and to which parties. Observers registered with
:meth:`Session.watch_reveals` see every opening of the session, and one that raises refuses
it, on every party alike (all three run the same program), so nothing is sent. This is how a
caller above the engine keeps a transcript of what a computation opened and refuses openings
it did not authorise; the engine itself never decides what may be opened.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mpc.channels import Channels, LoopbackNetwork, Payload
from mpc.errors import PeerError, ProtocolError
from mpc.prg import KEY_BYTES
from mpc.randomness import Correlated, KeyAgreement, common_key
from mpc.ring import RingArray
from mpc.sharing import N_PARTIES, next_party, prev_party

SESSION_ID_BYTES = 16
#: Default time a party waits for any one message before declaring the peer failed.
DEFAULT_TIMEOUT_S = 30.0


#: Every party, as the recipients of an opening to all.
ALL_PARTIES: tuple[int, ...] = tuple(range(N_PARTIES))


def new_session_id() -> bytes:
    return os.urandom(SESSION_ID_BYTES)


@dataclass(frozen=True)
class Reveal:
    """One opening about to happen: the kind of sharing, its shape, the receiving parties."""

    sharing: Literal["arithmetic", "boolean"]
    shape: tuple[int, ...]
    to: tuple[int, ...]

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


RevealObserver = Callable[[Reveal], None]


class Session:
    """One computation: session id, step counter, channels and correlated randomness."""

    def __init__(self, channels: Channels, session_id: bytes, timeout_s: float) -> None:
        if len(session_id) != SESSION_ID_BYTES:
            raise ValueError(f"session id must be {SESSION_ID_BYTES} bytes")
        self.party = channels.party
        self.id = session_id
        self.channels = channels
        self.timeout_s = timeout_s
        self._step = 0
        self._rand: Correlated | None = None
        self._observers: list[RevealObserver] = []

    @property
    def next(self) -> int:
        """Index of the next party (i + 1 mod 3)."""
        return next_party(self.party)

    @property
    def prev(self) -> int:
        """Index of the previous party (i - 1 mod 3)."""
        return prev_party(self.party)

    @property
    def rand(self) -> Correlated:
        if self._rand is None:
            raise ProtocolError("session randomness not set up: use Party.session()")
        return self._rand

    @property
    def steps(self) -> int:
        """Steps allocated so far (an upper bound on communication rounds)."""
        return self._step

    def next_step(self) -> int:
        self._step += 1
        return self._step

    def watch_reveals(self, observer: RevealObserver) -> Callable[[], None]:
        """Call ``observer`` before every opening of this session (it may raise to refuse
        the opening); returns the function that stops watching."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def reveal(self, sharing: Literal["arithmetic", "boolean"], shape: tuple[int, ...],
               to: tuple[int, ...] = ALL_PARTIES) -> None:
        """Announce an opening (called by the opening primitives, before they send)."""
        event = Reveal(sharing, tuple(shape), to)
        for observer in list(self._observers):
            observer(event)

    async def send(self, to: int, payload: Payload, step: int) -> None:
        await self.channels.send(to, self.id, step, payload)

    async def recv(self, frm: int, step: int) -> Payload:
        return await self.channels.recv(frm, self.id, step, self.timeout_s)

    async def recv_ring(self, frm: int, step: int, shape: tuple[int, ...]) -> RingArray:
        data = await self.recv(frm, step)
        expected = int(np.prod(shape))
        if not isinstance(data, np.ndarray) or data.size != expected:
            got = data.size if isinstance(data, np.ndarray) else f"{len(data)} bytes"
            raise PeerError(f"step {step}: expected {expected} ring elements, got {got}", frm)
        return data.reshape(shape)

    async def exchange(self, to: int | None, payload: RingArray | None, frm: int | None,
                       shape: tuple[int, ...] = ()) -> RingArray | None:
        """One round: send ``payload`` to ``to`` and receive ``shape`` elements from ``frm``.

        Either side may be None (a party that only sends or only receives in this round).
        """
        step = self.next_step()
        if to is not None and payload is not None:
            await self.send(to, payload, step)
        if frm is None:
            return None
        return await self.recv_ring(frm, step, shape)

    async def send_round(self, to: int, payload: RingArray) -> None:
        """A round in which this party only sends."""
        await self.send(to, payload, self.next_step())

    async def recv_round(self, frm: int, shape: tuple[int, ...]) -> RingArray:
        """A round in which this party only receives."""
        return await self.recv_ring(frm, self.next_step(), shape)

    async def sendrecv_round(self, to: int, payload: RingArray, frm: int) -> RingArray:
        """A round in which this party sends ``payload`` and receives as many elements."""
        step = self.next_step()
        await self.send(to, payload, step)
        return await self.recv_ring(frm, step, payload.shape)

    def idle_round(self) -> None:
        """A round in which this party neither sends nor receives (keeps steps aligned)."""
        self.next_step()

    async def setup(self) -> None:
        """Agree PRG keys (one round): X25519 with each neighbour, plus a common key from
        one random contribution per party."""
        agreement = KeyAgreement()
        contribution = os.urandom(KEY_BYTES)
        step = self.next_step()
        for peer in (self.next, self.prev):
            await self.send(peer, agreement.public_bytes + contribution, step)
        keys: dict[int, bytes] = {}
        contributions = {self.party: contribution}
        for peer in (self.next, self.prev):
            message = await self.recv(peer, step)
            if isinstance(message, np.ndarray) or len(message) != 32 + KEY_BYTES:
                raise PeerError("malformed key-agreement message", peer)
            keys[peer] = agreement.pair_key(message[:32], self.id, self.party, peer)
            contributions[peer] = message[32:]
        self._rand = Correlated.from_keys(
            self.party, keys[self.prev], keys[self.next],
            common_key([contributions[i] for i in range(N_PARTIES)], self.id))

    def close(self) -> None:
        self.channels.close_session(self.id)


class Party:
    """A node's identity (0, 1 or 2) and its channels to the two other nodes."""

    def __init__(self, channels: Channels, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not 0 <= channels.party < N_PARTIES:
            raise ValueError(f"party index must be 0, 1 or 2, got {channels.party}")
        self.index = channels.party
        self.channels = channels
        self.timeout_s = timeout_s

    @asynccontextmanager
    async def session(self, session_id: bytes,
                      timeout_s: float | None = None) -> AsyncIterator[Session]:
        """Open a session (key agreement included) and close it afterwards."""
        s = Session(self.channels, session_id, timeout_s or self.timeout_s)
        try:
            await s.setup()
            yield s
        finally:
            s.close()

    @property
    def bytes_sent(self) -> int:
        return sum(self.channels.bytes_sent.values())

    async def close(self) -> None:
        await self.channels.close()


async def run_local(program: Any, *args: Sequence[Any], session_id: bytes | None = None,
                    timeout_s: float = 10.0, network: LoopbackNetwork | None = None) -> list[Any]:
    """Run ``await program(session, *args_for_party)`` on three loopback parties.

    ``args`` are per-party argument lists: ``args[k][i]`` is the k-th argument for party i.
    Returns the three results in party order. For tests and single-process simulations.
    """
    network = network or LoopbackNetwork()
    sid = session_id or new_session_id()

    async def one(i: int) -> Any:
        party = Party(network.parties[i], timeout_s)
        async with party.session(sid) as s:
            return await program(s, *(a[i] for a in args))

    return list(await asyncio.gather(*(one(i) for i in range(N_PARTIES))))
