"""Conversions between arithmetic and boolean sharings: A2B, MSB, bit injection, B2A.

Notation: party i holds (x_i, x_(i+1)) of x = x_0 + x_1 + x_2 (mod 2^64). Party 0 knows
u = x_0 + x_1 and parties 1 and 2 both know v = x_2, so x = u + v: a two-operand addition
with one operand known to one party and the other known to the remaining two (the "local
split" of ABY3 §5.3, which there feeds a full adder; here it feeds the adder directly).
Reducing u and v mod 2^k gives x mod 2^k for free (reduction is a ring homomorphism), so a
comparison whose inputs are known to fit k bits runs a k-bit circuit on packed words
(:func:`~mpc.protocols.boolean.pack`).

- **Generate/propagate in one round** (:func:`generate_propagate`): replicated boolean
  shares of G = u & v and P = u ^ v. P needs only that party 0 sends u ^ r (r from the
  PRG it shares with party 1) to party 2. G uses a three-party OT in which the helper knows
  the choice bits (as in ABY3's semi-honest 3-party OT, sender / receiver / helper): the
  choice v is known to *both* parties 1 and 2, so each acts as the other's helper, party 0
  sends each of them u under a fresh mask, and the component g_2 reaches both of its
  holders in the same round.
- **Carries**: Kogge-Stone parallel prefix (Kogge, Stone, IEEE Trans. Comput. 1973) on the
  (G, P) words, G <- G ^ (P & (G << s)), P <- P & (P << s), s = 1, 2, 4, ...; both ANDs of
  a level in one round, ceil(log2(k - 1)) rounds for k bits (6 for 64). XOR replaces OR
  because group generate and propagate are mutually exclusive.
- **A2B** (:func:`a2b`): 1 + 6 = 7 rounds for 64 bits; sum = P ^ (G << 1).
- **MSB** (:func:`msb`): bit k-1 of x mod 2^k, boolean, 1 + ceil(log2(k-1)) rounds
  (7 for k = 64); the sign bit of x when x mod 2^k, read as a signed k-bit integer, is x.
  Only one carry is needed, so the groups are combined as a tree (not a prefix) and every
  level interleaves two words' remaining bits into one: about 4 words ANDed per value
  instead of 11 for the prefix adder, same rounds.
- **Bit injection** (:func:`inject`): a shared bit b = d ^ c, d = b_0 ^ b_1 known to party 0,
  c = b_2 known to parties 1 and 2, becomes arithmetic shares of b in **1 round** with the
  same helper-knows-the-choice OT, arithmetic this time: b = d + c (1 - 2d), x_0 and x_1
  come from party 0's pairwise PRGs and parties 1 and 2 both learn x_2 = b - x_0 - x_1.
- **B2A** of whole words (:func:`b2a`): 64 bit injections in the same round, summed with
  weights 2^j (1 round, 64x the data of a bit).
- **Exact truncation** (:func:`trunc_exact`): floor(x / 2^d) by A2B, a local shift and B2A
  of the remaining bits, 8 rounds, never off by one nor wrapping.
- **Sum of bits** (:func:`b2a_sum`): the arithmetic sum of many shared bits (counts) in 2
  rounds and one word per bit: sum b = sum d + sum c - 2 (sum alpha c + sum beta c), where
  party 0 splits d = alpha + beta with alpha from the PRG shared with party 2 and sends
  beta to party 1; the three partial sums are re-randomised and reshared (round 2).

Nothing is opened: every message is masked by PRG output unknown to its receiver.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mpc.errors import ProtocolError
from mpc.protocols.boolean import BShare, and_many, field_mask, field_width, pack, unpack_bit_share
from mpc.ring import RingArray
from mpc.session import Session
from mpc.sharing import AShare

ONE = np.uint64(1)
#: Most bits one B2A round of :func:`trunc_exact` injects (8 MiB per array of them).
TRUNC_CHUNK_BITS = 1 << 20


def split_sum(x: AShare, bits: int = 64) -> tuple[RingArray | None, RingArray | None]:
    """(u, v) with x = u + v mod 2^bits: u = x_0 + x_1 on party 0, v = x_2 on parties 1, 2."""
    mask = np.uint64((1 << bits) - 1)
    if x.party == 0:
        return np.asarray((x.a + x.b) & mask, dtype=np.uint64), None
    v = x.b if x.party == 1 else x.a
    return None, np.asarray(v & mask, dtype=np.uint64)


async def input_xor(s: Session, u: RingArray | None, v: RingArray | None,
                    shape: tuple[int, ...]) -> BShare:
    """Boolean shares of u ^ v, u known to party 0 and v to parties 1 and 2 (1 round).

    Components (u ^ r, r, v) with r from the PRG of parties 0 and 1; party 0 sends u ^ r to
    party 2. Party 2 sees u masked by r.
    """
    step = s.next_step()
    if s.party == 0:
        assert u is not None
        r = s.rand.next.ring(shape)
        p0 = u ^ r
        await s.send(2, p0, step)
        return BShare(0, p0, r)
    assert v is not None
    if s.party == 1:
        r = s.rand.prev.ring(shape)
        return BShare(1, r, v)
    p0 = await s.recv_ring(0, step, shape)
    return BShare(2, v, p0)


async def generate_propagate(s: Session, u: RingArray | None, v: RingArray | None,
                             shape: tuple[int, ...]) -> tuple[BShare, BShare]:
    """Boolean shares of (u & v, u ^ v); u known to party 0, v to parties 1 and 2 (1 round).

    G's components: g_0 (PRG of parties 0 and 2), g_1 (PRG of 0 and 1) and
    g_2 = (u & v) ^ g_0 ^ g_1, which parties 1 and 2 both obtain by a 3-party OT in which
    the helper knows the choice v: party 0 sends u ^ w to party 1 (w from PRG 0-2) and
    party 2 sends it (w & v) ^ g_0, so party 1 computes ((u ^ w) & v) ^ (w & v) ^ g_0 ^ g_1;
    symmetrically with z (PRG 0-1) and g_1 for party 2. Every received word carries its own
    fresh mask (w, z, g_0, g_1, r), so each receiver sees uniform values.
    Party 0 sends 1 word per value to party 1 and 2 to party 2; parties 1, 2 send 1 each.
    """
    step = s.next_step()
    if s.party == 0:
        assert u is not None
        g1, z, r = s.rand.next.ring((3, *shape))
        g0, w = s.rand.prev.ring((2, *shape))
        p0 = u ^ r
        await s.send(1, u ^ w, step)
        await s.send(2, np.stack([u ^ z, p0]), step)
        return BShare(0, g0, g1), BShare(0, p0, r)
    assert v is not None
    if s.party == 1:
        g1, z, r = s.rand.prev.ring((3, *shape))
        await s.send(2, (z & v) ^ g1, step)
        masked = await s.recv_ring(0, step, shape)
        helper = await s.recv_ring(2, step, shape)
        g2 = (masked & v) ^ helper ^ g1
        return BShare(1, g1, g2), BShare(1, r, v)
    g0, w = s.rand.next.ring((2, *shape))
    await s.send(1, (w & v) ^ g0, step)
    masked2 = await s.recv_ring(0, step, (2, *shape))
    helper = await s.recv_ring(1, step, shape)
    g2 = (masked2[0] & v) ^ helper ^ g0
    return BShare(2, g2, g0), BShare(2, v, masked2[1])


def carry_rounds(bits: int) -> int:
    """Kogge-Stone levels needed for the carries into bits 1..bits-1: ceil(log2(bits-1))."""
    return max(0, (bits - 2).bit_length())


async def prefix_carries(s: Session, g: BShare, p: BShare, bits: int,
                         width: int = 64) -> BShare:
    """Group generate of bits [0, j] at every bit j < bits - 1 of each ``width``-bit field.

    ceil(log2(bits - 1)) rounds; shifted-in bits from the neighbouring field are masked off.
    """
    span = 1
    while span < bits - 1:
        keep = field_mask(width, span, width)
        g_shift = g.shift_and(span, keep)
        if 2 * span < bits - 1:
            p_shift = p.shift_and(span, keep)
            pg, pp = await and_many(s, [(p, g_shift), (p, p_shift)])
            g, p = g ^ pg, pp
        else:
            (pg,) = await and_many(s, [(p, g_shift)])
            g = g ^ pg
        span *= 2
    return g


async def a2b(s: Session, x: AShare) -> BShare:
    """Boolean shares of the 64-bit words x (7 rounds; ABY3 §5.3 with a Kogge-Stone adder)."""
    u, v = split_sum(x)
    g, p = await generate_propagate(s, u, v, x.shape)
    carries = await prefix_carries(s, g, p, 64)
    return p ^ (carries << 1)


def _bit_mask(j: int) -> np.uint64:
    """Positions whose index has bit j set (the upper half of every 2^(j+1)-bit block)."""
    return np.uint64(sum(1 << q for q in range(64) if (q >> j) & 1))


def _final_positions(n: int, per: int, width: int, block: int, levels: int,
                     words: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]]:
    """Word and bit position of each value's carry after the compacting tree.

    Each of the levels - 1 halvings moves the upper half of the words onto the lower half,
    shifted by 2^j bits: with w0 = words / 2^(levels-1) (an integer: words are padded to
    it), value e ends in word (e // per) mod w0, shifted by the bit-reversal of
    (e // per) // w0 in levels - 1 bits."""
    e = np.arange(n, dtype=np.int64)
    word, field = e // per, e % per
    halvings = max(0, levels - 1)
    w0 = words >> halvings
    q = np.arange(1 << halvings, dtype=np.int64)
    reversed_q = np.zeros_like(q)
    for j in range(halvings):
        reversed_q |= ((q >> (halvings - 1 - j)) & 1) << j
    offset = reversed_q[word // w0] if halvings else np.zeros(n, dtype=np.int64)
    return word % w0, (field * width + block - 1 - offset).astype(np.uint64)


async def msb(s: Session, x: AShare, bits: int = 64) -> BShare:
    """Boolean shares (0/1 words) of bit bits-1 of x mod 2^bits, 1 + ceil(log2(bits-1)) rounds
    (7 for 64 bits).

    Values are packed 64 // K per word (K = next power of two >= bits). Only the carry into
    bit bits-1 is needed, so instead of a full prefix adder the (G, P) groups of bits
    [0, B), B = 2^L >= bits-1 (bits bits-1..B-1 made neutral: G = 0, P = 1), are combined
    as a binary tree: level j joins adjacent 2^j-bit groups, which leaves only every other
    group meaningful, and the next level runs on half the words by interleaving two words'
    meaningful bits ((A & M) ^ ((B & M) >> 2^j), a local XOR-linear step). The AND volume
    is 2 + 1 + 1/2 + ... words per value instead of 2 per level.
    """
    width = field_width(bits)
    levels = carry_rounds(bits)
    block = 1 << levels
    per = 64 // width
    flat = x.reshape(-1)
    total = flat.shape[0]
    chunk = per << max(0, levels - 1)  # words must halve levels - 1 times
    padded = -(-total // chunk) * chunk
    u, v = split_sum(flat, bits)
    if u is not None:
        u = pack(np.concatenate([u, np.zeros(padded - total, dtype=np.uint64)]), width)
    if v is not None:
        v = pack(np.concatenate([v, np.zeros(padded - total, dtype=np.uint64)]), width)
    words = padded // per
    g, p = await generate_propagate(s, u, v, (words,))
    top = unpack_bit_share(p, width, bits - 1, total)
    neutral = field_mask(width, bits - 1, block) if bits - 1 < block else np.uint64(0)
    g = g & ~neutral
    p = (p & ~neutral) ^ neutral
    for j in range(levels):
        shift = 1 << j
        if j == levels - 1:
            (pg,) = await and_many(s, [(p, g << shift)])
            g = g ^ pg
            break
        pg, pp = await and_many(s, [(p, g << shift), (p, p << shift)])
        g, p = g ^ pg, pp
        mask, half = _bit_mask(j), g.shape[0] // 2
        g = (g[:half] & mask) ^ ((g[half:] & mask) >> shift)
        p = (p[:half] & mask) ^ ((p[half:] & mask) >> shift)
    word, position = _final_positions(total, per, width, block, levels, words)
    one = np.uint64(1)
    carry = BShare(g.party, (g.a[word] >> position) & one, (g.b[word] >> position) & one)
    out = top ^ carry
    return BShare(out.party, out.a.reshape(x.shape), out.b.reshape(x.shape))


async def inject(s: Session, b: BShare) -> AShare:
    """Arithmetic shares of bit 0 of each shared word (1 round; see module doc).

    With d (party 0) and c (parties 1, 2), b = d ^ c, x_0 (PRG 0-2) and x_1 (PRG 0-1), the
    third component is x_2 = b - x_0 - x_1 = (1 - 2c) a + h - x_1 for party 1, where
    a = d - x_0 + w comes from party 0 (w from PRG 0-2) and h = c (1 - 2 x_0 + 2 w) - w from
    party 2, who knows c, x_0 and w; symmetrically for party 2 with x_1 and z (PRG 0-1).
    (x_0, w) -> (a, h) is invertible mod 2^64 for either c, so party 1 sees two uniform
    words. Party 0 sends 1 word per bit to each of parties 1 and 2; they send 1 to each other.
    """
    shape = b.shape
    step = s.next_step()
    if s.party == 0:
        d = (b.a ^ b.b) & ONE
        x1, z = s.rand.next.ring((2, *shape))
        x0, w = s.rand.prev.ring((2, *shape))
        await s.send(1, d - x0 + w, step)
        await s.send(2, d - x1 + z, step)
        return AShare(0, x0, x1)
    if s.party == 1:
        c = b.b & ONE
        x1, z = s.rand.prev.ring((2, *shape))
        await s.send(2, c * (ONE - (x1 << ONE) + (z << ONE)) - z, step)
        a = await s.recv_ring(0, step, shape)
        h = await s.recv_ring(2, step, shape)
        return AShare(1, x1, np.where(c == ONE, np.uint64(0) - a, a) + h - x1)
    c = b.a & ONE
    x0, w = s.rand.next.ring((2, *shape))
    await s.send(1, c * (ONE - (x0 << ONE) + (w << ONE)) - w, step)
    a = await s.recv_ring(0, step, shape)
    h = await s.recv_ring(1, step, shape)
    return AShare(2, np.where(c == ONE, np.uint64(0) - a, a) + h - x0, x0)


async def b2a(s: Session, x: BShare, width: int = 64) -> AShare:
    """Arithmetic shares of the low ``width`` bits of shared 64-bit words (1 round:
    ``width`` bit injections at once)."""
    if not 1 <= width <= 64:
        raise ProtocolError(f"b2a of {width} bits is not defined; need 1 <= width <= 64")
    shifts = np.arange(width, dtype=np.uint64)
    bits = BShare(x.party, (x.a[..., None] >> shifts) & ONE, (x.b[..., None] >> shifts) & ONE)
    injected = await inject(s, bits)
    weights = ONE << shifts
    return AShare(x.party, np.sum(injected.a * weights, axis=-1, dtype=np.uint64),
                  np.sum(injected.b * weights, axis=-1, dtype=np.uint64))


async def b2a_sum(s: Session, b: BShare, axis: int = 0) -> AShare:
    """Arithmetic shares of the sum of bit 0 of the shared words along ``axis`` (2 rounds).

    One word per bit from party 0 to party 1, then one word per output in the reshare.
    """
    step = s.next_step()
    if s.party == 0:
        d = (b.a ^ b.b) & ONE
        alpha = s.rand.prev.ring(b.shape)
        await s.send(1, d - alpha, step)
        terms = d
    elif s.party == 1:
        c = b.b & ONE
        beta = await s.recv_ring(0, step, b.shape)
        terms = c - np.uint64(2) * beta * c
    else:
        c = b.a & ONE
        alpha = s.rand.next.ring(b.shape)
        terms = np.uint64(0) - np.uint64(2) * alpha * c
    t = np.asarray(np.sum(terms, axis=axis, dtype=np.uint64), dtype=np.uint64)
    z = np.add(t, s.rand.zero_share(t.shape), dtype=np.uint64)
    received = await s.sendrecv_round(s.prev, np.asarray(z), s.next)
    return AShare(s.party, np.asarray(z), received)


async def trunc_exact(s: Session, x: AShare, d: int, magnitude_bits: int) -> AShare:
    """Shares of floor(x / 2^d) *exactly*, for signed x with |x| < 2^magnitude_bits
    (8 rounds: A2B, a local shift, B2A of the magnitude_bits + 1 - d bits that remain; one
    more round per further TRUNC_CHUNK_BITS bits injected, which bounds the memory).

    y = x + 2^magnitude_bits lies in [0, 2^(magnitude_bits + 1)), so its boolean shares
    shifted right by d are shares of floor(y / 2^d) = floor(x / 2^d) + 2^(magnitude_bits - d)
    (a shift distributes over XOR). Unlike the one-round :func:`~mpc.protocols.arith.trunc`
    (ABY3 §5.1.1), which is off by one or wraps with probability |x| / 2^64, it never errs:
    for long chains of fixed-point products on many elements.
    """
    if not 0 < d <= magnitude_bits <= 62:
        raise ProtocolError(f"exact truncation by 2^{d} of values below 2^{magnitude_bits} "
                            "is not defined; need 0 < d <= magnitude_bits <= 62")
    offset = 1 << magnitude_bits
    words = await a2b(s, x + offset)
    a = (words.a >> np.uint64(d)).reshape(-1)
    b = (words.b >> np.uint64(d)).reshape(-1)
    width = magnitude_bits + 1 - d
    per = max(1, TRUNC_CHUNK_BITS // width)
    parts = [await b2a(s, BShare(words.party, a[i : i + per], b[i : i + per]), width)
             for i in range(0, max(a.size, 1), per)]
    out = AShare(words.party, np.concatenate([p.a for p in parts]).reshape(x.shape),
                 np.concatenate([p.b for p in parts]).reshape(x.shape))
    return out - (offset >> d)
