"""The disclosure layer itself: its checks against plaintext, its openings, its record.

Each check (``at_least``, ``query_set``, ``safe_residuals``, ``smallest``, ``all_within``) is
run on three loopback parties inside a :class:`Disclosure` and compared with the plaintext
rule (``reference``); its transcript is compared with the independent spy, and the bits it
opened with what the rule says it opens. Then the guarantees of the layer: openings not made
through it are refused before anything is sent, gates cannot be built or widened, and the
rules, releases and transcripts are JSON-safe.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.errors import ConfigError
from dic_connector.node.analyses import disclosure
from dic_connector.node.analyses.disclosure import (
    Disclosure,
    Gate,
    Opening,
    QuerySet,
    Release,
    Rules,
)
from mpc.errors import ProtocolError
from mpc.protocols import arith, boolean
from mpc.ring import as_ring, to_signed
from mpc.session import Session, run_local
from mpc.sharing import AShare, reconstruct, share
from tests.dic_connector.node.analyses import reference
from tests.dic_connector.node.analyses.support import (
    Opened,
    Segments,
    assert_transcript_matches,
    spying,
)

INT64 = st.integers(-(2**63), 2**63 - 1)
Program = Callable[..., Awaitable[Any]]


def disclosed(program: Program, *args: Any, rules: Rules | None = None
              ) -> tuple[Any, tuple[Opening, ...], Opened]:
    """Run ``program(d, *args_for_party)`` in a Disclosure on three loopback parties; assert
    the three results and transcripts are equal and the transcript is what the spy saw."""
    applied = rules or Rules.of(5)

    async def main(s: Session, *mine: Any) -> tuple[Any, tuple[Opening, ...], int]:
        with Disclosure(s, applied) as d:
            out = await program(d, *mine)
        return out, d.transcript, s.steps

    with spying() as seen:
        results = asyncio.run(run_local(main, *args))
    for out, transcript, steps in results[1:]:
        assert _comparable(out) == _comparable(results[0][0])
        assert transcript == results[0][1] and steps == results[0][2]
    assert_transcript_matches(results[0][1], seen)
    return results[0][0], results[0][1], seen


def _comparable(value: Any) -> Any:
    if isinstance(value, Gate):
        return ("gate", value.name, value.allowed.tolist())
    if isinstance(value, QuerySet):
        return ("query set", value.refusal, _comparable(value.gate))
    if isinstance(value, tuple | list):
        return [_comparable(v) for v in value]
    return value


def shares(values: list[int]) -> tuple[AShare, AShare, AShare]:
    return share(as_ring(np.asarray(values, dtype=np.int64)))


# -- at_least --------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 2**40), max_size=20), st.integers(1, 2**40))
def test_at_least_matches_plaintext(counts: list[int], k: int) -> None:
    counts = [*counts, k - 1, k, k + 1]

    async def program(d: Disclosure, x: AShare) -> Gate:
        return await d.at_least("cells", x, k)

    gate, transcript, seen = disclosed(program, shares(counts))
    assert gate.allowed.tolist() == [c >= k for c in counts]
    assert seen.bits == [[int(c < k) for c in counts]]
    assert [(o.name, o.kind, o.rule, o.elements) for o in transcript] == [
        (f"cells >= {k}", "bits", "min_cell_count", len(counts))]


def test_at_least_defaults_to_the_rules_k_and_opens_nothing_for_no_counts() -> None:
    async def program(d: Disclosure, x: AShare) -> list[Gate]:
        return [await d.at_least("c", x), await d.at_least("none", x[:0])]

    (gate, empty), transcript, _ = disclosed(program, shares([2, 3, 4]), rules=Rules.of(3))
    assert gate.allowed.tolist() == [False, True, True] and len(empty) == 0
    assert len(transcript) == 1


# -- query_set -------------------------------------------------------------------------


def _query_set(sizes: list[int], rows: int, rules: Rules, complement: bool,
               public: bool) -> tuple[QuerySet, tuple[Opening, ...], Opened]:
    sites = [f"s{i}" for i in range(len(sizes))]

    async def program(d: Disclosure, x: AShare | None) -> QuerySet:
        return await d.query_set(sizes if x is None else x, sites, rows, complement)

    args = [None] * 3 if public else shares(sizes)
    return disclosed(program, args, rules=rules)


def _segments(sizes: list[int], rows: int) -> Segments:
    """Segments whose sizes sum to ``rows`` (the extra rows in the first)."""
    extra = rows - sum(sizes)
    return tuple((f"s{i}", size + (extra if i == 0 else 0)) for i, size in enumerate(sizes))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=4), st.integers(0, 9),
       st.integers(1, 7), st.integers(1, 9), st.booleans())
def test_query_set_with_shared_sizes_matches_the_rules(
        sizes: list[int], outside: int, k: int, m: int, complement: bool) -> None:
    rules, rows = Rules(k, m), sum(sizes) + outside
    got, transcript, seen = _query_set(sizes, rows, rules, complement, public=False)
    segments = _segments(sizes, rows)
    expected = reference.query_set(sizes, segments, rules, complement)
    assert seen.bits == [reference.query_set_bits(sizes, segments, rules, complement)]
    assert seen.arith == [] and len(transcript) == 1
    _assert_decision(got, expected, segments, rules)


@pytest.mark.parametrize("sizes, outside, k, m, complement", [
    ([5, 5], 0, 5, 5, True), ([4, 6], 0, 5, 5, True), ([5, 5], 4, 5, 5, True),
    ([5, 5], 4, 5, 5, False), ([5, 5], 5, 5, 5, True), ([5, 5], 1, 5, 5, True),
    ([1, 24], 0, 5, 5, True), ([0, 3], 0, 5, 1, True), ([2], 0, 3, 1, True),
    ([3], 0, 3, 1, True), ([0], 0, 1, 1, True), ([7], 2, 1, 1, True),
])
def test_query_set_public_and_shared_sizes_agree(sizes: list[int], outside: int, k: int,
                                                 m: int, complement: bool) -> None:
    """Public sizes open nothing; shared ones open exactly the rule's bits; both decide
    alike: per contributor >= m (naming the sites), pooled >= k, complement 0 or >= k."""
    rules, rows = Rules(k, m), sum(sizes) + outside
    segments = _segments(sizes, rows)
    expected = reference.query_set(sizes, segments, rules, complement)
    public, transcript, seen = _query_set(sizes, rows, rules, complement, public=True)
    assert transcript == () and seen.openings == []
    _assert_decision(public, expected, segments, rules)
    shared, _, seen = _query_set(sizes, rows, rules, complement, public=False)
    assert seen.bits == [reference.query_set_bits(sizes, segments, rules, complement)]
    _assert_decision(shared, expected, segments, rules)
    assert shared.refusal == public.refusal


def _assert_decision(got: QuerySet, expected: reference.Refusal | None, segments: Segments,
                     rules: Rules) -> None:
    if expected is None:
        assert got.refusal is None and got.gate is not None
        assert got.gate.allowed.tolist() == [True] and got.gate_required() is got.gate
    else:
        assert got.gate is None and got.refusal is not None
        assert reference.reason_matches(got.refusal, expected, segments, rules), got.refusal
        with pytest.raises(ProtocolError, match="refused"):
            got.gate_required()


def test_query_set_names_each_small_site_once() -> None:
    """Two versions of one site, both small: the site is named once."""
    async def program(d: Disclosure) -> QuerySet:
        return await d.query_set([1, 9, 2], ["lmu", "gemelli", "lmu"], 12)

    got, _, _ = disclosed(program)
    assert got.refusal is not None and got.refusal.count("'lmu'") == 1
    assert "'gemelli'" not in got.refusal


def test_query_set_needs_one_size_per_site() -> None:
    async def program(d: Disclosure, x: AShare) -> QuerySet:
        return await d.query_set(x, ["a", "b"], 20)

    async def public(d: Disclosure) -> QuerySet:
        return await d.query_set([5, 5, 5], ["a", "b"], 20)

    with pytest.raises(ProtocolError, match=r"\(3,\) sizes for 2 sites"):
        disclosed(program, shares([5, 5, 5]))
    with pytest.raises(ValueError):  # public sizes: zip(strict=True)
        disclosed(public)


# -- safe_residuals --------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 5])
def test_safe_residuals_at_0_1_k_minus_1_and_k(k: int) -> None:
    residuals = sorted({0, 1, k - 1, k, k + 1, 2**40})

    async def program(d: Disclosure, x: AShare) -> list[Gate]:
        return [await d.safe_residuals("masses", x), await d.safe_residuals("none", x[:0])]

    (gate, empty), transcript, seen = disclosed(program, shares(residuals), rules=Rules.of(k))
    assert gate.allowed.tolist() == [r == 0 or r >= k for r in residuals]
    assert seen.bits == [[int(1 <= r <= k - 1) for r in residuals]]
    assert len(empty) == 0 and [(o.name, o.rule) for o in transcript] == [
        (f"masses: 0 or >= {k}", "complements")]


# -- smallest --------------------------------------------------------------------------


@pytest.mark.parametrize("counts, k, expected", [
    ([7, 5, 9, 5], 5, 1),   # a tie: the first
    ([5, 9, 5, 5], 5, 0),
    ([7, 5, 9, 6], 6, 3),   # 5 is not allowed: the smallest allowed is 6
    ([3, 3, 3, 8], 5, 3),   # only one allowed: no comparison, nothing opened
    ([12, 30, 12], 1, 0),
])
def test_smallest_with_ties(counts: list[int], k: int, expected: int) -> None:
    async def program(d: Disclosure, x: AShare) -> int:
        among = await d.at_least("c", x, k)
        return await d.smallest("cells", x, among, max(counts).bit_length())

    got, transcript, seen = disclosed(program, shares(counts))
    assert got == expected
    allowed = [c for c in counts if c >= k]
    equal = [int(c == min(allowed)) for c in allowed]
    assert seen.bits[1:] == ([equal] if len(allowed) > 1 else [])
    assert len(transcript) == (2 if len(allowed) > 1 else 1)


def test_smallest_of_nothing_is_refused() -> None:
    async def program(d: Disclosure, x: AShare) -> int:
        return await d.smallest("cells", x, await d.at_least("c", x, 10), 4)

    with pytest.raises(ProtocolError, match="no count is allowed"):
        disclosed(program, shares([1, 2]))


# -- all_within ------------------------------------------------------------------------


@st.composite
def ranges(draw: st.DrawFn) -> tuple[list[int], int, int]:
    low = draw(st.integers(-(2**62), 2**62))
    width = draw(st.integers(1, 2**63) | st.just(2**63))
    high = min(low + width - 1, 2**63 - 1)
    edges = st.sampled_from([low, high, low - 1, high + 1, 0, -(2**63), 2**63 - 1,
                             low - 2**63, high + 2**63])
    values = draw(st.lists(INT64 | edges, min_size=1, max_size=12))
    return [((v + 2**63) % 2**64) - 2**63 for v in values], low, high


def _all_within(values: list[int], low: int, high: int) -> tuple[bool, Opened]:
    async def program(d: Disclosure, x: AShare) -> bool:
        return await d.all_within("v", x, low, high)

    got, transcript, seen = disclosed(program, shares(values))
    assert [(o.name, o.elements, o.rule) for o in transcript] == (
        [(f"every v in [{low}, {high}]", 1, "range check")] if values else [])
    return got, seen


@settings(max_examples=40, deadline=None)
@given(ranges())
def test_all_within_is_exact_for_every_int64(case: tuple[list[int], int, int]) -> None:
    values, low, high = case
    got, seen = _all_within(values, low, high)
    assert got == all(low <= v <= high for v in values)
    assert seen.bits == [[int(got)]]  # the one bit: how many are outside stays secret


@pytest.mark.parametrize("low, high", [
    (-(2**63), -1), (0, 2**63 - 1), (-(2**62), 2**62 - 1),   # width 2^63
    (-10, -3), (-5, 5), (7, 7), (-(2**63), -(2**63)), (2**63 - 1, 2**63 - 1),
])
def test_all_within_at_the_range_edges(low: int, high: int) -> None:
    def wrap(v: int) -> int:
        return ((v + 2**63) % 2**64) - 2**63

    assert _all_within([low, high], low, high)[0] is True
    if low > -(2**63):
        assert _all_within([low, wrap(low - 1), high], low, high)[0] is False
    if high < 2**63 - 1:
        assert _all_within([low, high, wrap(high + 1)], low, high)[0] is False
    # the values that wrap onto the range modulo 2^64 are not in it
    if high - low + 1 < 2**63:
        assert _all_within([wrap(low + 2**63)], low, high)[0] is False


def test_all_within_empty_and_bad_ranges() -> None:
    got, seen = _all_within([], 0, 10)
    assert got is True and seen.openings == []

    async def program(d: Disclosure, x: AShare, low: int, high: int) -> bool:
        return await d.all_within("v", x, low, high)

    for low, high in ((5, 4), (0, 2**63), (-(2**63), 2**63 - 1)):
        with pytest.raises(ValueError, match="empty or wider than 2\\^63"):
            disclosed(program, shares([1]), [low] * 3, [high] * 3)


# -- openings --------------------------------------------------------------------------


def test_open_opens_only_what_the_gate_allows_and_nothing_when_none() -> None:
    values = [3, -4, 10, 2**62]

    async def program(d: Disclosure, x: AShare) -> tuple[list[Any], int, list[Any], int]:
        gate = await d.at_least("c", x, 5)  # 3 and -4 are below 5
        before = d.session.steps
        out = await d.open("values", x, gate)
        middle = d.session.steps
        none = await d.open("nothing", x, gate.narrowed("all", [False] * 4))
        return out, middle - before, none, d.session.steps - middle

    (out, steps, none, no_steps), transcript, seen = disclosed(program, shares(values))
    assert out == [None, None, 10, 2**62] and steps == 1
    assert none == [None] * 4 and no_steps == 0  # no message at all
    assert seen.arith == [[10, 2**62]]
    assert [(o.name, o.kind, o.rule) for o in transcript][1:] == [
        ("values", "values", "c >= 5")]


def test_open_checks_the_gate() -> None:
    async def mismatch(d: Disclosure, x: AShare) -> Any:
        return await d.open("v", x, await d.at_least("c", x[:1], 1))

    with pytest.raises(ProtocolError, match="has 1 bits for 2 values"):
        disclosed(mismatch, shares([1, 2]))

    async def closed(d: Disclosure, x: AShare) -> Any:
        return await d.open_one("v", x, await d.at_least("c", x, 5))

    with pytest.raises(ProtocolError, match="does not allow opening v"):
        disclosed(closed, shares([1]))


def test_an_opening_outside_the_layer_is_refused_before_sending() -> None:
    async def program(s: Session, x: AShare) -> list[int]:
        with Disclosure(s, Rules.of(1)) as d:
            before = s.steps, dict(s.channels.bytes_sent)
            with pytest.raises(ProtocolError, match="opening of 1 arithmetic element\\(s\\) "
                               "outside the disclosure layer was refused"):
                await arith.open_(s, x)
            assert (s.steps, dict(s.channels.bytes_sent)) == before  # nothing was sent
            with d.protocol("p", "test"), pytest.raises(ProtocolError, match="inside 'p'"):
                await d.open_one("v", x, await d.at_least("c", x))  # no nested labels
            assert d.transcript == ()
        # unwatched on exit: the session opens freely again
        opened: list[int] = to_signed(await arith.open_(s, x)).tolist()
        return opened

    assert asyncio.run(run_local(program, shares([4]))) == [[4]] * 3


def test_a_protocol_label_opens_bits_only() -> None:
    """A protocol label says its openings are bits: arithmetic values opened inside it are
    refused (else the transcript would record values as "bits"), before anything is sent."""
    async def program(d: Disclosure, x: AShare) -> Any:
        with d.protocol("comparison bits", "test"):
            before = d.session.steps
            try:
                return await arith.open_(d.session, x)
            finally:
                assert d.session.steps == before

    with pytest.raises(ProtocolError, match="opens bits; an opening of 1 arithmetic"):
        disclosed(program, shares([4]))


def test_a_protocol_label_covers_several_rounds() -> None:
    async def program(d: Disclosure, x: AShare) -> None:
        bits = boolean.BShare(x.party, x.a & np.uint64(1), x.b & np.uint64(1))
        with d.protocol("rounds", "test"):
            await boolean.open_bool(d.session, bits)
            await boolean.open_bool(d.session, bits[:1])
        with d.protocol("idle", "test"):
            pass  # opens nothing: no entry

    _, transcript, _ = disclosed(program, shares([1, 2, 3]))
    assert [(o.name, o.kind, o.elements, o.reveals) for o in transcript] == [
        ("rounds", "bits", 4, 2)]


# -- gates -----------------------------------------------------------------------------


def test_a_gate_cannot_be_built_by_hand() -> None:
    for key in (None, object(), "key"):
        with pytest.raises(TypeError, match="cannot be built"):
            Gate(key, "forged", np.ones(3, dtype=np.bool_))
    with pytest.raises(TypeError):
        Gate()  # type: ignore[call-arg]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=8).flatmap(
    lambda bits: st.tuples(st.just(bits), st.lists(st.booleans(), min_size=len(bits),
                                                   max_size=len(bits)))))
def test_narrowed_never_widens(case: tuple[list[bool], list[bool]]) -> None:
    bits, keep = case
    counts = [5 if b else 0 for b in bits]

    async def program(d: Disclosure, x: AShare) -> list[Gate]:
        gate = await d.at_least("c", x)
        return [gate, gate.narrowed("r", keep), gate.narrowed("r", [True] * len(bits))]

    (gate, narrow, same), _, _ = disclosed(program, shares(counts))
    assert gate.allowed.tolist() == bits
    assert narrow.allowed.tolist() == [b and k for b, k in zip(bits, keep, strict=True)]
    assert same.allowed.tolist() == bits  # keep everything: still no more than the gate
    assert narrow.name == "c >= 5, then r" and len(narrow) == len(gate)
    assert narrow.all() == all(narrow.allowed) and narrow[0] == bool(narrow.allowed[0])
    with pytest.raises(ValueError):
        gate.allowed[0] = True  # read-only
    with pytest.raises(ValueError):
        gate.allowed.setflags(write=True)  # and cannot be made writable again


def test_narrowed_cannot_broadcast_a_gate_wider() -> None:
    """A 1-bit gate (a query set's) narrowed with a longer mask stays 1 bit: broadcasting
    would turn it into a gate that opens a whole column."""
    async def program(d: Disclosure, x: AShare) -> list[str]:
        gate = await d.at_least("n", x[:1])
        errors = []
        for keep in ([True] * 6, [True, True], True, [[True]]):
            with pytest.raises(ProtocolError, match="cannot narrow it") as info:
                gate.narrowed("wider", keep)
            errors.append(str(info.value))
        return errors

    errors, _, _ = disclosed(program, shares([5, 6, 7, 8, 9, 10]))
    assert errors[0] == "gate 'n >= 5' has 1 bits; cannot narrow it with 6"


# -- rules, releases, helpers ----------------------------------------------------------


def test_rules() -> None:
    assert Rules.of(5) == Rules(5, 5)
    assert Rules.of(5, 3) == Rules(5, 5)  # never less than k per contributor
    assert Rules.of(5, 8) == Rules(5, 8)
    assert Rules(5, 2).min_subset_size == 2  # explicit rules may say less
    for k, m in ((0, 1), (1, 0), (True, 1), (2**62, 1), (5, -1)):
        with pytest.raises(ConfigError, match="min_cell_count"):
            Rules(k, m)
    rules = Rules.of(np.int64(5))  # type: ignore[arg-type]
    assert type(rules.min_cell_count) is int and type(rules.min_subset_size) is int
    assert json.dumps(rules.as_json()) == (
        '{"min_cell_count": 5, "min_subset_size": 5, "complements": true, '
        '"secondary_suppression": true}')


def test_release_and_transcript_are_json_safe() -> None:
    opening = Opening("n", "values", "query set", elements=1, reveals=1)
    release = Release({"n": 7}, (opening,), Rules(5, 6))
    assert release.as_result() == {"n": 7, "disclosure": Rules(5, 6).as_json()}
    assert opening.as_json() == {"name": "n", "kind": "values", "elements": 1, "reveals": 1,
                                 "to": ["node-0", "node-1", "node-2"], "rule": "query set"}
    json.dumps([release.as_result(), opening.as_json()], allow_nan=False)


def test_public_share_and_helpers() -> None:
    views = [disclosure.public_share(i, [7, -2]) for i in range(3)]
    assert to_signed(reconstruct(*views)).tolist() == [7, -2]
    assert disclosure.suppressed(5) == "<5"
    assert disclosure.overflow_bound(1) == 2**62
    assert disclosure.overflow_bound(10**6) == 2**43
    for bad in (0, -1, True, 2.0, 2**62):
        with pytest.raises(ConfigError, match="min_cell_count"):
            disclosure.check_min_cell_count(bad)  # type: ignore[arg-type]
    assert disclosure.check_min_cell_count(np.int64(5)) == 5  # type: ignore[arg-type]
