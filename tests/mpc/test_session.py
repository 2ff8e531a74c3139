"""``Party`` and ``Session`` (:mod:`mpc.session`) on three in-process loopback parties.

What the session itself is responsible for, as opposed to the channels under it (replay
detection, timeouts, lost peers and closed sessions are the mailbox's job and are tested in
``test_channels.py``):

- key agreement at session open: the pairwise streams of the two holders of each key agree,
  the three pairs' streams differ, all three share the common stream, and every session
  (even one with a session id used before on other channels) gets fresh keys;
  zero-sharings then sum to zero;
- step allocation: every round helper takes exactly one step on every party, so the
  (session id, step) a message carries matches what its receiver waits for, and a party
  that falls out of step is detected as a missing message rather than a wrong one;
- payload checks on receipt: a ring message of the wrong size, bytes where ring elements
  were expected and a malformed key-agreement message are refused as the peer's fault;
- the session context: randomness is only there after setup, and the session is closed on
  the way out, also when the program fails, so its id cannot be opened again on the same
  channels (old messages could otherwise be replayed into the new session);
- reveals: every opening primitive (``arith.open_``, ``arith.open_to``,
  ``boolean.open_bool``) announces the sharing, shape and recipients to the session's
  observers before it takes a step or sends a byte; an observer that raises refuses the
  opening on all three parties alike (they stay in step), and unwatching stops the calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc.channels import FRAME, LoopbackChannels, LoopbackNetwork
from mpc.errors import PeerError, ProtocolError
from mpc.prg import KEY_BYTES
from mpc.protocols import arith, boolean
from mpc.ring import RingArray, as_ring, to_signed
from mpc.session import (
    ALL_PARTIES,
    SESSION_ID_BYTES,
    Party,
    Reveal,
    Session,
    new_session_id,
    run_local,
)
from mpc.sharing import AShare, share

SID = b"0123456789abcdef"
DRAW = 8  # ring elements drawn from each stream


def run(program: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> list[Any]:
    return asyncio.run(run_local(program, *args, **kwargs))


async def _draws(s: Session) -> dict[str, RingArray]:
    """One draw from each of the party's three streams, right after setup."""
    return {"prev": s.rand.prev.ring(DRAW), "next": s.rand.next.ring(DRAW),
            "common": s.rand.common.ring(DRAW)}


def _pair_streams(draws: list[dict[str, RingArray]]) -> list[RingArray]:
    """The draws of pairs (0,1), (1,2), (2,0), after checking both holders agree."""
    streams = []
    for i in range(3):
        j = (i + 1) % 3
        assert np.array_equal(draws[i]["next"], draws[j]["prev"]), f"pair ({i},{j})"
        streams.append(draws[i]["next"])
    return streams


# --- key agreement ---------------------------------------------------------------------


def test_pairwise_streams_agree_between_holders_and_differ_between_pairs() -> None:
    draws = run(_draws)
    streams = _pair_streams(draws)
    for p, q in ((0, 1), (1, 2), (0, 2)):
        assert len(np.intersect1d(streams[p], streams[q])) == 0
    assert np.array_equal(draws[0]["common"], draws[1]["common"])
    assert np.array_equal(draws[1]["common"], draws[2]["common"])
    for d in draws:  # the common stream is none of the pairwise ones
        assert len(np.intersect1d(d["common"], np.concatenate(streams))) == 0


def _all_streams(draws: list[dict[str, RingArray]]) -> RingArray:
    return np.concatenate([*_pair_streams(draws), draws[0]["common"]])


def test_every_session_agrees_fresh_keys() -> None:
    """Two sessions on one network share no stream: keys are agreed per session."""
    network = LoopbackNetwork()
    first = run(_draws, network=network, session_id=SID)
    second = run(_draws, network=network, session_id=new_session_id())
    assert len(np.intersect1d(_all_streams(first), _all_streams(second))) == 0


def test_the_same_session_id_on_new_channels_still_gets_fresh_keys() -> None:
    """Keys come from ephemeral X25519 keys and fresh contributions, not from the id alone."""
    first = run(_draws, session_id=SID)
    second = run(_draws, session_id=SID)
    assert len(np.intersect1d(_all_streams(first), _all_streams(second))) == 0


def test_a_closed_session_id_cannot_be_reopened_on_the_same_channels() -> None:
    """Reopening would let old messages of that session be replayed into the new one."""
    network = LoopbackNetwork()
    run(_draws, network=network, session_id=SID)
    with pytest.raises(PeerError, match="message for closed session 30313233 \\(step 1\\)"):
        run(_draws, network=network, session_id=SID, timeout_s=0.5)


@settings(max_examples=25, deadline=None)
@given(st.one_of(st.sampled_from([(), 0, 1, 2, 3, (0, 4), 1023, 1024, 1025]),
                 st.integers(min_value=0, max_value=200)))
def test_zero_sharings_after_setup_sum_to_zero(shape: int | tuple[int, ...]) -> None:
    async def program(s: Session) -> list[RingArray]:
        return [s.rand.zero_share(shape), s.rand.zero_share(shape)]

    results = run(program)
    for k in range(2):
        alphas = [r[k] for r in results]
        assert not np.asarray(alphas[0] + alphas[1] + alphas[2]).any()
        if np.size(alphas[0]):
            assert all(a.any() for a in alphas)
    if np.size(results[0][0]):
        assert not np.array_equal(results[0][0], results[0][1])


# --- steps -----------------------------------------------------------------------------


async def _every_round_helper(s: Session) -> list[int]:
    """Each helper once, with each party in a different role; the step after each."""
    x = as_ring([s.party, 10 + s.party])
    steps = [s.steps]  # after setup
    got = await s.sendrecv_round(s.next, x, s.prev)
    assert np.array_equal(got, as_ring([s.prev, 10 + s.prev]))
    steps.append(s.steps)
    if s.party == 0:
        await s.send_round(1, x)
    elif s.party == 1:
        assert np.array_equal(await s.recv_round(0, (2,)), as_ring([0, 10]))
    else:
        s.idle_round()
    steps.append(s.steps)
    # exchange: 0 -> 1 -> 2, party 0 receives nothing, party 2 sends nothing
    to = s.next if s.party < 2 else None
    frm = s.prev if s.party > 0 else None
    out = await s.exchange(to, x if to is not None else None, frm, (2,))
    assert (out is None) == (frm is None)
    if out is not None:
        assert np.array_equal(out, as_ring([s.prev, 10 + s.prev]))
    steps.append(s.steps)
    return steps


def test_each_round_helper_takes_one_step_on_every_party() -> None:
    assert run(_every_round_helper) == [[1, 2, 3, 4]] * 3


def test_steps_count_allocations() -> None:
    network = LoopbackNetwork()
    s = Session(network.parties[0], SID, 1.0)
    assert s.steps == 0
    assert [s.next_step() for _ in range(3)] == [1, 2, 3]
    s.idle_round()
    assert s.steps == 4
    assert (s.prev, s.next) == (2, 1)


def test_a_party_out_of_step_is_a_missing_message() -> None:
    """Party 0 takes one step too many before sending: party 1 waits for step 2 and gets
    only step 3. The message is not taken for the expected one; the wait fails instead."""
    async def program(s: Session) -> RingArray | None:
        if s.party == 0:
            s.idle_round()
            await s.send_round(1, as_ring([7]))
        elif s.party == 1:
            return await s.recv_round(0, (1,))
        return None

    with pytest.raises(PeerError,
                       match=r"^party 0: no message for session 30313233 step 2 within 0.3 s"):
        run(program, session_id=SID, timeout_s=0.3)


def test_messages_of_another_session_are_not_delivered() -> None:
    """Same parties, same step, another session id: the receiver does not take it."""
    async def main() -> None:
        network = LoopbackNetwork()
        mine = Session(network.parties[0], SID, 0.2)
        other = Session(network.parties[1], b"x" * SESSION_ID_BYTES, 0.2)
        await other.send(0, as_ring([1]), 1)
        with pytest.raises(PeerError, match="step 1 within"):
            await mine.recv_ring(1, 1, (1,))

    asyncio.run(main())


# --- payload checks --------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "got"), [(as_ring([1, 2, 3]), "got 3"),
                                              (b"\x00" * 16, "got 16 bytes")])
def test_wrong_payload_is_the_senders_fault(payload: RingArray | bytes, got: str) -> None:
    async def main() -> None:
        network = LoopbackNetwork()
        receiver = Session(network.parties[0], SID, 1.0)
        await Session(network.parties[2], SID, 1.0).send(0, payload, 1)
        with pytest.raises(PeerError, match=rf"party 2: step 1: expected 2 ring elements, {got}"):
            await receiver.recv_ring(2, 1, (2,))

    asyncio.run(main())


def test_received_ring_elements_take_the_expected_shape() -> None:
    async def main() -> RingArray:
        network = LoopbackNetwork()
        await Session(network.parties[1], SID, 1.0).send(0, as_ring(np.arange(6)), 1)
        return await Session(network.parties[0], SID, 1.0).recv_ring(1, 1, (2, 3))

    assert np.array_equal(asyncio.run(main()), as_ring(np.arange(6).reshape(2, 3)))


@pytest.mark.parametrize("message", [b"\x01" * (32 + KEY_BYTES - 1), as_ring(np.arange(8))],
                         ids=["short bytes", "ring elements"])
def test_malformed_key_agreement_message_is_refused(message: RingArray | bytes) -> None:
    """Party 0 opens a session; party 1 answers with a malformed key-agreement message."""
    async def main() -> None:
        network = LoopbackNetwork()
        s = Session(network.parties[0], SID, 1.0)
        await network.parties[1].send(0, SID, 1, message)
        with pytest.raises(PeerError, match="party 1: malformed key-agreement message"):
            await s.setup()

    asyncio.run(main())


# --- session objects -------------------------------------------------------------------


def test_randomness_only_after_setup() -> None:
    s = Session(LoopbackNetwork().parties[0], SID, 1.0)
    with pytest.raises(ProtocolError, match="not set up"):
        _ = s.rand


@pytest.mark.parametrize("length", [0, 15, 17])
def test_session_id_must_be_16_bytes(length: int) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Session(LoopbackNetwork().parties[0], b"s" * length, 1.0)


def test_new_session_ids_are_16_random_bytes() -> None:
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100 and {len(i) for i in ids} == {SESSION_ID_BYTES}


@pytest.mark.parametrize("index", [-1, 3])
def test_party_index_must_be_0_1_or_2(index: int) -> None:
    network = LoopbackNetwork()
    with pytest.raises(ValueError, match="0, 1 or 2"):
        Party(LoopbackChannels(index, network))


def test_session_is_closed_after_the_program_also_when_it_fails() -> None:
    """After ``Party.session`` exits, a late message for it is refused by the receiver."""
    async def main() -> None:
        network = LoopbackNetwork()

        async def one(i: int) -> None:
            async with Party(network.parties[i], 1.0).session(SID):
                if i == 0:
                    raise RuntimeError("program failed")

        results = await asyncio.gather(*(one(i) for i in range(3)), return_exceptions=True)
        assert isinstance(results[0], RuntimeError) and results[1:] == [None, None]
        for receiver in range(3):
            with pytest.raises(PeerError, match="closed session"):
                await network.parties[(receiver + 1) % 3].send(receiver, SID, 2, b"late")

    asyncio.run(main())


def test_session_timeout_overrides_the_partys() -> None:
    async def main() -> None:
        network = LoopbackNetwork()
        party = Party(network.parties[0], timeout_s=30.0)
        async with party.session(SID, timeout_s=0.1) as s:  # peers never answer
            raise AssertionError(f"setup cannot finish alone, got {s}")

    with pytest.raises(PeerError, match=r"within 0.1 s"):
        asyncio.run(asyncio.wait_for(main(), 5.0))


def test_party_counts_the_key_agreement_bytes() -> None:
    """Setup sends one message (X25519 public key + common contribution) to each peer."""
    async def main() -> list[int]:
        network = LoopbackNetwork()
        parties = [Party(network.parties[i]) for i in range(3)]

        async def one(p: Party) -> None:
            async with p.session(SID):
                pass

        await asyncio.gather(*(one(p) for p in parties))
        return [p.bytes_sent for p in parties]

    assert asyncio.run(main()) == [2 * (FRAME.size + 32 + KEY_BYTES)] * 3


# --- reveals ---------------------------------------------------------------------------

Opener = Callable[[Session, AShare, boolean.BShare], Awaitable[Any]]
OPENERS: dict[str, tuple[Opener, Reveal]] = {
    "open_": (lambda s, x, _: arith.open_(s, x), Reveal("arithmetic", (2, 3), ALL_PARTIES)),
    "open_to": (lambda s, x, _: arith.open_to(s, x, 1), Reveal("arithmetic", (2, 3), (1,))),
    "open_bool": (lambda s, _, b: boolean.open_bool(s, b), Reveal("boolean", (4,), ALL_PARTIES)),
}
VALUES = np.arange(-3, 3, dtype=np.int64).reshape(2, 3)
WORDS = as_ring([1, 0, 5, 2**63])


def _sharings() -> tuple[tuple[AShare, AShare, AShare], tuple[boolean.BShare, ...]]:
    return share(as_ring(VALUES)), boolean.share_bool(WORDS)


@pytest.mark.parametrize("primitive", sorted(OPENERS))
def test_observers_see_each_opening_before_it_takes_a_step(primitive: str) -> None:
    opener, expected = OPENERS[primitive]

    async def program(s: Session, x: AShare, b: boolean.BShare) -> tuple[Any, list[Any]]:
        seen: list[Any] = []
        s.watch_reveals(lambda r: seen.append((r, s.steps, sum(s.channels.bytes_sent.values()))))
        before = s.steps, sum(s.channels.bytes_sent.values())
        out = await opener(s, x, b)
        assert s.steps == before[0] + 1
        assert seen == [(expected, *before)]  # announced before the step and the send
        return out, seen

    arithmetic, words = _sharings()
    results = run(program, arithmetic, words)
    for party, (out, _) in enumerate(results):
        if expected.sharing == "boolean":
            assert np.array_equal(out, WORDS)
        elif party in expected.to:
            assert np.array_equal(to_signed(out), VALUES)
        else:
            assert out is None


@pytest.mark.parametrize("primitive", sorted(OPENERS))
def test_an_observer_that_raises_refuses_the_opening_on_every_party(primitive: str) -> None:
    opener, expected = OPENERS[primitive]

    def refuse(reveal: Reveal) -> None:
        raise ProtocolError(f"refused {reveal.sharing} {reveal.shape} to {reveal.to}")

    async def program(s: Session, x: AShare, b: boolean.BShare) -> RingArray:
        stop = s.watch_reveals(refuse)
        before = s.steps, dict(s.channels.bytes_sent)
        with pytest.raises(ProtocolError, match=f"refused {expected.sharing}"):
            await opener(s, x, b)
        assert (s.steps, dict(s.channels.bytes_sent)) == before  # nothing sent, no step
        stop()
        # all three refused alike: they are still in step, and an opening now succeeds
        return await arith.open_(s, x)

    arithmetic, words = _sharings()
    for out in run(program, arithmetic, words, timeout_s=2.0):
        assert np.array_equal(to_signed(out), VALUES)


def test_unwatching_stops_the_calls() -> None:
    async def program(s: Session, x: AShare) -> list[str]:
        calls: list[str] = []
        stop_first = s.watch_reveals(lambda r: calls.append("first"))
        s.watch_reveals(lambda r: calls.append("second"))

        def once(reveal: Reveal) -> None:
            calls.append("once")
            stop_once()  # unwatching from inside a call is safe

        stop_once = s.watch_reveals(once)
        await arith.open_(s, x)
        stop_first()
        await arith.open_(s, x)
        return calls

    for calls in run(program, share(as_ring([7]))):
        assert calls == ["first", "second", "once", "second"]


def test_a_session_without_observers_opens_and_reveal_counts_elements() -> None:
    async def program(s: Session, x: AShare) -> RingArray:
        s.reveal("arithmetic", (5,))  # no observer: nothing happens
        return await arith.open_(s, x)

    for out in run(program, share(as_ring([7, 8]))):
        assert to_signed(out).tolist() == [7, 8]
    assert [Reveal("boolean", shape, (0,)).elements for shape in ((), (0,), (2, 3), (7,))] == [
        1, 0, 6, 7]
