"""Correlated randomness (:mod:`mpc.randomness`), checked without any network.

Everything replicated sharing gets "for free" rests on these properties, so each is checked
directly rather than only through the protocols built on it:

- the X25519 + HKDF pair key is the same for both holders, and is bound to the session id
  and to the unordered pair of party indices (so two pairs, or two sessions, never share a
  key even when the Diffie-Hellman secret is the same);
- the common key depends on every contribution, on their order and on the session id;
- zero-sharings sum to 0 mod 2^64 for every shape (including 0-d, empty and sizes that end
  mid AES block), and are not all zero;
- the two holders of a pairwise key draw the same values in step, fresh on every call, and
  the three pairwise streams differ from each other.

The three parties' :class:`~mpc.randomness.Correlated` objects are built here from keys the
test chooses (see :func:`dealt`), so values are reproducible and hypothesis can vary them.
"""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from mpc.prg import KEY_BYTES, PIECE_BYTES, Prg, argsort_stable
from mpc.randomness import Correlated, KeyAgreement, common_key
from mpc.ring import RingArray

SID = b"0123456789abcdef"
OTHER_SID = b"fedcba9876543210"

keys = st.binary(min_size=KEY_BYTES, max_size=KEY_BYTES)
#: Shapes of draws: 0-d, empty, one element, sizes that end mid AES block (two ring elements
#: per 16-byte block) and sizes either side of 1024, and small 2-d shapes.
shapes = st.one_of(
    st.sampled_from([(), 0, 1, 2, 3, (0,), (0, 5), 1023, 1024, 1025]),
    st.integers(min_value=0, max_value=300),
    st.tuples(st.integers(0, 9), st.integers(0, 9)),
)


def dealt(k01: bytes, k12: bytes, k20: bytes, k_common: bytes) -> list[Correlated]:
    """The three parties' randomness from pairwise keys k_(0,1), k_(1,2), k_(2,0)."""
    prev_keys = (k20, k01, k12)  # party i shares k_(i-1,i) with its predecessor
    next_keys = (k01, k12, k20)  # and k_(i,i+1) with its successor
    return [Correlated.from_keys(i, prev_keys[i], next_keys[i], k_common) for i in range(3)]


def distinct_keys() -> list[Correlated]:
    return dealt(bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32, bytes([4]) * 32)


def total(parts: list[RingArray]) -> RingArray:
    return np.asarray(parts[0] + parts[1] + parts[2], dtype=np.uint64)


# --- key agreement ---------------------------------------------------------------------


def test_both_holders_derive_the_same_pair_key() -> None:
    a, b = KeyAgreement(), KeyAgreement()
    key_ab = a.pair_key(b.public_bytes, SID, 0, 1)
    assert len(a.public_bytes) == 32
    assert len(key_ab) == KEY_BYTES
    assert key_ab == b.pair_key(a.public_bytes, SID, 1, 0)


def test_pair_key_is_bound_to_the_pair_of_indices() -> None:
    """The same DH secret under another pair of indices gives another key; the order of
    the two indices does not matter."""
    a, b = KeyAgreement(), KeyAgreement()
    derived = {pair: a.pair_key(b.public_bytes, SID, *pair)
               for pair in ((0, 1), (1, 0), (1, 2), (0, 2))}
    assert derived[(0, 1)] == derived[(1, 0)]
    assert len({derived[(0, 1)], derived[(1, 2)], derived[(0, 2)]}) == 3


def test_pair_key_is_bound_to_the_session_id() -> None:
    a, b = KeyAgreement(), KeyAgreement()
    assert a.pair_key(b.public_bytes, SID, 0, 1) != a.pair_key(b.public_bytes, OTHER_SID, 0, 1)


def test_each_key_agreement_is_fresh() -> None:
    """Ephemeral keys: a new agreement with the same peer and session id gives a new key."""
    peer = KeyAgreement()
    first, second = KeyAgreement(), KeyAgreement()
    assert first.public_bytes != second.public_bytes
    assert first.pair_key(peer.public_bytes, SID, 0, 1) != \
        second.pair_key(peer.public_bytes, SID, 0, 1)


def test_three_parties_agree_three_distinct_pair_keys() -> None:
    agreements = [KeyAgreement() for _ in range(3)]
    pair_keys = {}
    for i, j in ((0, 1), (1, 2), (2, 0)):
        from_i = agreements[i].pair_key(agreements[j].public_bytes, SID, i, j)
        from_j = agreements[j].pair_key(agreements[i].public_bytes, SID, j, i)
        assert from_i == from_j
        pair_keys[(i, j)] = from_i
    assert len(set(pair_keys.values())) == 3


@given(st.lists(st.binary(min_size=KEY_BYTES, max_size=KEY_BYTES), min_size=3, max_size=3,
                unique=True))
def test_common_key_depends_on_every_contribution_order_and_session(
        contributions: list[bytes]) -> None:
    key = common_key(contributions, SID)
    assert len(key) == KEY_BYTES
    assert key == common_key(list(contributions), SID)
    assert key != common_key(contributions, OTHER_SID)
    assert key != common_key(contributions[::-1], SID)
    for k in range(3):
        changed = list(contributions)
        changed[k] = bytes(b ^ 1 for b in changed[k])
        assert key != common_key(changed, SID)


# --- zero-sharings ---------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(keys, keys, keys, keys, shapes)
@example(bytes(32), bytes(32), bytes(32), bytes(32), 1)  # all keys equal, one element
def test_zero_shares_sum_to_zero(k01: bytes, k12: bytes, k20: bytes, kc: bytes,
                                 shape: int | tuple[int, ...]) -> None:
    alphas = [c.zero_share(shape) for c in dealt(k01, k12, k20, kc)]
    expected_shape = (shape,) if isinstance(shape, int) else shape
    for alpha in alphas:
        assert isinstance(alpha, np.ndarray)  # 0-d too: numpy scalars warn on wrap
        assert alpha.dtype == np.uint64 and alpha.shape == expected_shape
    assert not total(alphas).any()


@settings(max_examples=30, deadline=None)
@given(keys, keys, keys, st.integers(min_value=1, max_value=300))
def test_zero_shares_are_not_zero(k01: bytes, k12: bytes, k20: bytes, n: int) -> None:
    """With distinct pairwise keys each alpha_i is a difference of two independent streams
    (all-zero with probability 2^-64n): a zero-sharing that did not mask would fail here."""
    assume(len({k01, k12, k20}) == 3)
    for alpha in (c.zero_share(n) for c in dealt(k01, k12, k20, bytes(32))):
        assert alpha.any()


def test_consecutive_zero_sharings_differ_and_each_sums_to_zero() -> None:
    parties = distinct_keys()
    first = [c.zero_share(64) for c in parties]
    second = [c.zero_share(64) for c in parties]
    assert not total(first).any() and not total(second).any()
    for a, b in zip(first, second, strict=True):
        assert not np.array_equal(a, b)


# --- pairwise and common draws ----------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.lists(shapes, min_size=1, max_size=5))
def test_holders_of_a_pair_key_draw_the_same_values_in_step(
        draws: list[int | tuple[int, ...]]) -> None:
    """A sequence of draws of any shapes: party i's ``next`` stream is party i+1's ``prev``
    stream, value for value, and ``pair_prg`` names the same streams."""
    parties = distinct_keys()
    for i in range(3):
        j = (i + 1) % 3
        for shape in draws:
            assert np.array_equal(parties[i].next.ring(shape), parties[j].prev.ring(shape))
            assert np.array_equal(parties[i].pair_prg(j).ring(shape),
                                  parties[j].pair_prg(i).ring(shape))
        assert parties[i].next.calls == parties[j].prev.calls == 2 * len(draws)


def test_pair_draws_differ_across_calls_and_across_pairs() -> None:
    parties = distinct_keys()
    first = [c.next.ring(32) for c in parties]  # pairs (0,1), (1,2), (2,0)
    again = [c.next.ring(32) for c in parties]
    for a, b in zip(first, again, strict=True):
        assert len(np.intersect1d(a, b)) == 0
    for p, q in ((0, 1), (1, 2), (0, 2)):
        assert len(np.intersect1d(first[p], first[q])) == 0


def test_all_three_parties_draw_the_same_common_values() -> None:
    parties = distinct_keys()
    draws = [c.common.ring(16) for c in parties]
    assert np.array_equal(draws[0], draws[1]) and np.array_equal(draws[1], draws[2])
    assert not np.array_equal(parties[0].common.ring(16), draws[0])


@pytest.mark.parametrize("party", [0, 1, 2])
def test_pair_prg_refuses_a_party_that_shares_no_key(party: int) -> None:
    with pytest.raises(ValueError, match=f"party {party} shares no key with party {party}"):
        distinct_keys()[party].pair_prg(party)


@settings(max_examples=20, deadline=None)
@given(st.binary(min_size=KEY_BYTES, max_size=KEY_BYTES),
       st.lists(st.integers(0, 5000), min_size=1, max_size=4))
def test_prg_is_the_aes_ctr_keystream(key: bytes, sizes: list[int]) -> None:
    """Call j draws AES-256-CTR under counter block j || 0 (the keystream of zeros), read
    as little-endian uint64."""
    prg = Prg(key)
    for call, size in enumerate(sizes):
        got = prg.ring(size)
        nonce = call.to_bytes(8, "big") + bytes(8)
        encryptor = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
        want = np.frombuffer(encryptor.update(bytes(8 * size)), dtype="<u8")
        assert got.dtype == np.uint64 and got.shape == (size,)
        assert np.array_equal(got, want)
    assert prg.calls == len(sizes)


@settings(max_examples=30, deadline=None)
@given(keys, st.lists(st.sampled_from([0, 1, 3, PIECE_BYTES // 8 - 1, PIECE_BYTES // 8,
                                       PIECE_BYTES // 8 + 1, 2 * PIECE_BYTES // 8 + 5]),
                      min_size=1, max_size=4))
def test_keystream_pieces_are_the_draws_of_ring(key: bytes, sizes: list[int]) -> None:
    """Pieces of one reused buffer, concatenated, are what ``ring`` draws for the same call
    (the pieces overwrite each other, so each is copied before the next is taken), and
    large draws of ``ring`` are the AES-CTR keystream across piece boundaries."""
    pieces_prg, ring_prg = Prg(key), Prg(key)
    for call, size in enumerate(sizes):
        pieces = [p.copy() for p in pieces_prg.keystream(size)]
        got = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint64)
        assert all(p.shape[0] <= PIECE_BYTES // 8 for p in pieces)
        want = ring_prg.ring(size)
        assert np.array_equal(got, want)
        nonce = call.to_bytes(8, "big") + bytes(8)
        encryptor = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
        assert np.array_equal(want, np.frombuffer(encryptor.update(bytes(8 * size)), "<u8"))
    assert pieces_prg.calls == ring_prg.calls == len(sizes)


@settings(max_examples=40, deadline=None)
@given(keys, keys, keys, shapes, st.booleans(), st.booleans())
def test_zero_sharings_folded_in_place_sum_to_zero(k01: bytes, k12: bytes, k20: bytes,
                                                   shape: int | tuple[int, ...], xor: bool,
                                                   transposed: bool) -> None:
    """add_zero_share / xor_zero_share fold the draws of zero_share into an array (in place
    if it is writable and C-contiguous, else into a copy) and keep the parties in step."""
    parties, fresh = dealt(k01, k12, k20, bytes(32)), dealt(k01, k12, k20, bytes(32))
    values = [np.asarray(np.arange(int(np.prod(shape)), dtype=np.uint64).reshape(shape)
                         * np.uint64(i + 7)) for i in range(3)]
    inputs = [v.copy().T if transposed else v.copy() for v in values]
    before = [v.copy() for v in inputs]
    out = [c.xor_zero_share(v) if xor else c.add_zero_share(v)
           for c, v in zip(parties, inputs, strict=True)]
    for c, o, v, b in zip(fresh, out, inputs, before, strict=True):
        assert o.shape == v.shape and o.dtype == np.uint64
        assert (o is v) == v.flags.c_contiguous
        size = int(np.prod(o.shape))
        if xor:  # F(k_(i,i+1)) ^ F(k_(i-1,i)), in the folded array's memory order
            alpha = (c.next.ring(size) ^ c.prev.ring(size)).reshape(o.shape)
            assert np.array_equal(o ^ b, alpha)
        else:
            assert np.array_equal(o - b, c.zero_share(size).reshape(o.shape))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 2**63, 2**64 - 1]),
                max_size=300),
       st.integers(0, 63), st.integers(0, 6))
def test_argsort_stable_is_numpys_stable_argsort(values: list[int], shift: int,
                                                 spread: int) -> None:
    """Exactly ``np.argsort(kind="stable")``, also when keys tie in full or only in the high
    bits the packed sort keeps (keys from a few values, shifted so that they differ only
    in the low bits that the row index replaces, or only above them)."""
    keys = np.array(values, dtype=np.uint64)
    few = (keys % np.uint64(1 + spread)) << np.uint64(shift)
    for k in (keys, few, few | (keys & np.uint64(0xFF))):
        assert np.array_equal(argsort_stable(k), np.argsort(k, kind="stable"))
