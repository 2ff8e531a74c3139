"""Replicated sharing: round trips at ring edges, local operations, and privacy of one view."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from mpc.errors import ShareError
from mpc.prg import Prg
from mpc.ring import as_ring, to_signed
from mpc.sharing import AShare, concat, public_ring, reconstruct, share

ring_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
EDGES = [0, 1, 2**63, 2**64 - 1, -1, -(2**63), 2**63 - 1]
#: Fixed dealer key for the statistical tests, which are then deterministic.
DEALER_KEY = bytes(range(32))


def test_round_trip_at_edges() -> None:
    x = as_ring(EDGES)
    views = share(x)
    assert np.array_equal(reconstruct(*views), x)
    for i, j in ((0, 1), (1, 2), (0, 2)):
        assert np.array_equal(reconstruct(views[i], views[j]), x)


def test_each_party_holds_its_pair() -> None:
    views = share(as_ring([5, 6]))
    for i in range(3):
        assert views[i].party == i
        assert np.array_equal(views[i].b, views[(i + 1) % 3].a)


@given(st.lists(ring_ints, min_size=1, max_size=40), st.lists(ring_ints, min_size=1, max_size=40),
       st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_local_operations_match_plaintext(xs: list[int], ys: list[int], c: int) -> None:
    n = min(len(xs), len(ys))
    x, y = as_ring(xs[:n]), as_ring(ys[:n])
    sx, sy = share(x), share(y)
    cases = {
        "add": ([a + b for a, b in zip(sx, sy, strict=True)], x + y),
        "sub": ([a - b for a, b in zip(sx, sy, strict=True)], x - y),
        "neg": ([-a for a in sx], np.uint64(0) - x),
        "mul_public": ([a * c for a in sx], x * np.uint64(c % 2**64)),
        "add_public": ([a + c for a in sx], x + np.uint64(c % 2**64)),
        "sub_public": ([a - c for a in sx], x - np.uint64(c % 2**64)),
        "rsub_public": ([c - a for a in sx], np.uint64(c % 2**64) - x),
        "add_public_array": ([a + y for a in sx], x + y),
    }
    for name, (views, expected) in cases.items():
        assert np.array_equal(reconstruct(*views), expected), name
    assert int(reconstruct(*(a.sum() for a in sx))) == sum(xs[:n]) % 2**64


def test_mismatched_and_tampered_views_are_refused() -> None:
    a, b = share(as_ring([1, 2])), share(as_ring([1, 2]))
    with pytest.raises(ShareError):
        _ = a[0] + a[1]
    with pytest.raises(ShareError, match="inconsistent"):
        reconstruct(a[0], b[1], a[2])
    tampered = AShare(1, a[1].a + np.uint64(1), a[1].b)
    with pytest.raises(ShareError, match="inconsistent"):
        reconstruct(a[0], tampered)
    with pytest.raises(ShareError):
        reconstruct(a[0])
    with pytest.raises(ShareError, match="twice"):
        reconstruct(a[0], a[0])


def test_concat_and_slicing() -> None:
    x, y = as_ring([1, 2, 3]), as_ring([4, 5])
    sx, sy = share(x), share(y)
    joined = [concat([p, q]) for p, q in zip(sx, sy, strict=True)]
    assert list(reconstruct(*joined)) == [1, 2, 3, 4, 5]
    assert list(reconstruct(*(v[1:] for v in joined))) == [2, 3, 4, 5]


@pytest.mark.parametrize("secret", [0, 2**64 - 1, 2**63])
def test_single_share_component_is_uniform_bytes(secret: int) -> None:
    """Chi-square on the bytes of each component a party holds, for a constant secret.

    The dealer's PRG has a fixed key, so the test is deterministic: it cannot fail by
    chance, and fails for a sharing whose components are not uniform bytes.
    """
    n = 50_000
    views = share(as_ring(np.full(n, secret, dtype=np.uint64)), prg=Prg(DEALER_KEY))
    for view in views:
        for component in (view.a, view.b):
            counts = np.bincount(component.view(np.uint8), minlength=256)
            assert stats.chisquare(counts).pvalue > 1e-4


def test_single_view_is_independent_of_the_secret() -> None:
    """A party's view for secret 0 and for secret 2^63 has the same distribution (KS test
    on the top 32 bits of each component), and is uncorrelated with the secret.

    2^63 differs from 0 in the top bit, which the KS test looks at (0 and 2^64-1 differ by
    one and look alike there even when the masks are too small). Secrets and sharings come
    from fixed seeds and keys: deterministic, so it cannot fail by chance.
    """
    n = 20_000
    rng = np.random.default_rng(7)
    secrets = as_ring(rng.integers(-(2**62), 2**62, n))
    views0 = share(np.zeros(n, dtype=np.uint64), prg=Prg(DEALER_KEY))
    views1 = share(np.full(n, 2**63, dtype=np.uint64), prg=Prg(bytes([1]) * 32))
    viewsr = share(secrets, prg=Prg(bytes([2]) * 32))
    for i in range(3):
        for comp in ("a", "b"):
            top0 = getattr(views0[i], comp) >> np.uint64(32)
            top1 = getattr(views1[i], comp) >> np.uint64(32)
            assert stats.ks_2samp(top0, top1).pvalue > 1e-4
            topr = to_signed(getattr(viewsr[i], comp)).astype(float)
            assert abs(np.corrcoef(topr, to_signed(secrets).astype(float))[0, 1]) < 0.05


def test_prg_streams_are_deterministic_and_never_overlap() -> None:
    key = bytes(range(32))
    p, q = Prg(key), Prg(key)
    first, second = p.ring(1000), p.ring(1000)
    assert np.array_equal(first, q.ring(1000)) and np.array_equal(second, q.ring(1000))
    assert len(np.intersect1d(first, second)) == 0
    assert not np.array_equal(Prg(bytes(32)).ring(10), first[:10])
    perm = Prg(key).permutation(1000)
    assert sorted(perm.tolist()) == list(range(1000))
    with pytest.raises(ValueError):
        Prg(b"short")


def test_share_pair_bytes_round_trip() -> None:
    x = as_ring([0, 1, 2**64 - 1, 2**63])
    for view in share(x):
        data = view.to_bytes()
        assert len(data) == 16 * 4
        back = AShare.from_bytes(view.party, data, 4)
        assert np.array_equal(back.a, view.a) and np.array_equal(back.b, view.b)
    with pytest.raises(ShareError, match="64 bytes, got 63"):
        AShare.from_bytes(0, bytes(63), 4)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**64 - 1), min_size=0, max_size=8), st.data())
def test_add_public_absorbs_c_once_and_keeps_the_other_components(values: list[int],
                                                                  data: st.DataObject) -> None:
    """x + c: parties 0 (a) and 2 (b) add c to x_0; every other component is the same
    array, not a copy. A c broadcasting x to a larger shape gives all parties that shape."""
    x = as_ring(values)
    views = share(x)
    c = data.draw(st.integers(-(2**63), 2**64 - 1) | st.just(x.copy()))
    out = [v.add_public(c) for v in views]
    assert np.array_equal(reconstruct(*out), x + public_ring(c))
    assert out[1].a is views[1].a and out[1].b is views[1].b
    assert out[0].b is views[0].b and out[2].a is views[2].a
    wide = [v.add_public(np.zeros((2, len(values)), dtype=np.uint64) + np.uint64(3))
            for v in views]
    assert all(w.shape == (2, len(values)) for w in wide)
    assert np.array_equal(reconstruct(*wide), np.broadcast_to(x + np.uint64(3), (2, len(x))))
