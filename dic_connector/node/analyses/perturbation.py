"""Consistent perturbation by the cell-key method under MPC (a deployment setting or a data
owner's policy, off by default).

The cell-key method (Thompson, Broadfoot, Elazar, UNECE 2013, the ABS TableBuilder; Destatis
for the 2022 census; tables from :mod:`.ptable`) releases c + v instead of a count c, where
the noise v is looked up in a public perturbation table by the count and the cell's **cell
key**. Three parts, all on shares:

**Record keys.** Every row r of a dataset version has a uniform 64-bit key k_r, the same in
every analysis of that version. The nodes make it without the connector: in replicated
sharing (Araki et al. CCS 2016, §2.2) component x_j of k is held by parties j and j - 1, so
it is drawn from an AES-CTR stream (:class:`mpc.prg.Prg`) seeded with
HKDF-SHA256(secret of the pair (j - 1, j), "<dataset id>/<version id>"). Each pair's secret is
long-lived (:class:`PairSecrets`; on a node the static ECDH of the two nodes' TLS keys,
:mod:`dic_connector.node.coordination.cellkeys`), so the keys are re-derived in every
session, with no communication and nothing stored. **What each party learns:** a single node
holds two of the three components of every key, the third is pseudo-random to it, so k_r
and every cell key are uniform to it; the researcher and the data owners see no key. Two
colluding nodes learn the keys (as they learn any data). Keys are per version: the same
patient in a new version of the dataset gets a new key (stable keys across versions need a
patient pseudonym, which delta versions will bring), so releases on two versions of a dataset
are two draws of noise; the version-lineage rule (:mod:`.lineage`) already refuses releases
on versions that differ in a few rows. Rotating a node's TLS key changes the keys as well.

**Cell keys.** The cell key of a cell is sum_(r in cell) k_r mod 2^64, i.e. the dot product
of the cell's 0/1 indicator with the keys (1 round). Its low 63 bits, read as u / 2^63, are
the cell key in [0, 1) of the method (:data:`.ptable.KEY_BITS`): uniform because each k_r
is, and independent between two cells whose row sets differ. It is never opened.

**Oblivious lookup** (:func:`noise`). Row i of the table has noise values v_1 < ... < v_m and
thresholds T_1 <= ... <= T_m = 2^63; with u the cell key and c the count,
noise_i(u) = v_m - sum_(t < m) [u < T_t] (v_(t+1) - v_t), and the noise is
sum_i [class(c) = i] noise_i(u), class(c) = min(c, I) for the shared row I = D + js + 1.
Every comparison goes into one batch of sign bits (:func:`mpc.protocols.compare.sign_bits`,
7 rounds): [u < T] for a 63-bit u from the 64-bit word w = u + 2^63 b is
msb(w - T) XOR msb(w) (the term 2^63 b flips bit 63 of both), and [c < i] is msb(c - i).
The bits are injected (1 round), the class indicators are differences of adjacent [c < i],
and the products [class = i] * noise_i(u) take 1 multiplication round: **9 rounds** for any
number of cells, about (2D + 1)(D + js + 1) + D + js + 2 comparisons per cell. Only c + v
of the cells the gates allow is opened (:func:`open_perturbed`); the noise and the key are not.

**Settings.** The node setting ``perturbation`` turns it on for the deployment; a data owner's
standing policy may ask for it (``"perturbation"`` in the signed payload) for the requests it
approves; the agreed plan carries the strictest one asked for
(:func:`dic_connector.node.coordination.verify.required_perturbation`) and the rules hand it
to the analysis.

**Rules.** Perturbation comes *in addition to* every rule of :mod:`.disclosure`: the gates
(min_cell_count, query-set sizes, complements, secondary suppression, the ledger) are checked
on the true counts under MPC, exactly as without it, and only then is c + v opened in place
of c. The ABS applies the cell key instead of small-cell suppression; here it only ever
tightens. The release ledger records a perturbed cell as opened, as if it were exact (a
perturbed value is c + v with |v| <= D, so treating it as exact is the conservative
choice: every sum the ledger protects stays protected even if the noise were removed).
A recipe that does not perturb (its n and sums would be exact, and the exact n of a query
set undoes the noise of the count of the same rows) is refused while perturbation is on,
before it opens anything, unless the setting says ``allow_exact``
(:meth:`~dic_connector.node.analyses.base.Analysis.run`, ``Analysis.perturbs``).

**Sums (magnitude tables).** The cell-key method for magnitudes (Thompson, Broadfoot,
Elazar 2013, section 4: the noise of a total is proportional to the cell's largest
contributions, so that it hides any one contributor, and it is looked up by the cell key,
so the same cell gets the same noise; Giessing and Tent, "Concepts for generalising
tools implementing the cell key method to the case of continuous variables", UNECE 2019,
as Destatis' ``cellKey`` package implements it: noise = v * x_delta, x_delta the largest
contribution, v from a perturbation table). Here (:meth:`Perturbation.open_moments`), for a
sum S = sum_(r in cell) x_r:

- the **dominant contribution** x_max = max_(r in cell) |x_r| is computed under MPC (a
  tournament maximum of (y, -y), y the values weighed by the cell's 0/1 rows: ceil(log2 2n)
  levels of 9 rounds) and never opened;
- the noise value v, |v| <= D, mean 0, variance V, is the count table's shared row (the
  row of every count >= D + js + 1: no constraint near 0 applies to a sum) looked up
  (:func:`noise`) by the cell's **magnitude key**, its cell key times the odd constant
  :data:`MAGNITUDE_KEY` mod 2^64 (a bijection, so uniform too; it decorrelates the noise of
  the sum from that of the cell's count, which uses the cell key itself);
- the opened value is 2^f S + v x_max (f = :data:`MAGNITUDE_SHIFT`; 1 multiplication
  round), i.e. **S' = S + v x_max / 2^f**, shown as an exact decimal. The overflow check of
  the sum (``mean.checked_sum``) leaves f bits of headroom for it.

**Guarantee:** |S' - S| <= D x_max / 2^f (at D = 3: 3/16 of the largest contribution);
the same rows give the same S' in every release (the keys are those of the rows); two
cells that differ in one row r have independent keys, so their difference is x_r plus two
independent noises, each up to D x_max / 2^f, and does not give x_r exactly. Opened: S'
alone; S, v, x_max and the keys stay secret. A mean is S' / n' with n' the perturbed n of
the same rows (the value ``count`` shows for them), or the public n when every row counts.
A sum of squares Q (``summary``) is perturbed the same way with x_max^2 as the scale and
the magnitude key times MAGNITUDE_KEY again (a third draw): |Q' - Q| <= D x_max^2 / 2^f.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dic_connector.errors import ConfigError
from dic_connector.node.analyses.disclosure import Disclosure, Gate
from dic_connector.node.analyses.ptable import KEY_BITS, PTable, count_ptable
from mpc.errors import ProtocolError
from mpc.prg import KEY_BYTES, Prg
from mpc.protocols import arith, bits, boolean, compare
from mpc.session import Session
from mpc.sharing import AShare, concat

_HKDF_INFO = b"dic-connector cell key v1 "
#: A sum's noise is v * x_max / 2^MAGNITUDE_SHIFT (module docstring).
MAGNITUDE_SHIFT = 4
#: The magnitude key of a cell is its cell key times this odd constant mod 2^64 (the
#: golden-ratio constant of Fibonacci hashing, Knuth TAOCP vol. 3, 6.4).
MAGNITUDE_KEY = 0x9E3779B97F4A7C15
#: What perturbation of a sum adds to a ``discloses`` text.
MAGNITUDE_DISCLOSES = (
    " With cell-key perturbation, n is opened as n + v (as count opens it; exact when it "
    "is the public row count) and the sum S as S + v' x_max / 16, where x_max, the "
    "largest absolute value in the query set, is computed under MPC and v', |v'| <= D, "
    "is looked up by the cell's magnitude key; x_max, v', v and the keys are not opened.")
#: What perturbation adds to a ``discloses`` text.
PERTURBATION_DISCLOSES = (
    " With cell-key perturbation (a deployment setting or a data owner's policy), every "
    "count above is "
    "opened as c + v instead of c, where v, with |v| <= D, is looked up under MPC in the "
    "public perturbation table by c and the cell key (the sum of the cell's rows' secret "
    "record keys); neither v, nor c, nor the cell key is opened, and the checks above are "
    "made on the true counts.")


@dataclass(frozen=True, repr=False)
class PairSecrets:
    """One party's two long-lived secrets: the one it shares with the previous party
    (seeding component x_party of the record keys) and with the next one (x_(party+1))."""

    party: int
    prev: bytes
    next: bytes

    def __post_init__(self) -> None:
        if len(self.prev) < 16 or len(self.next) < 16:
            raise ConfigError("cell-key pair secrets must have at least 16 bytes")

    def __repr__(self) -> str:  # never print a secret
        return f"PairSecrets(party={self.party})"


def _stream(secret: bytes, contributor: str) -> Prg:
    seed = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                info=_HKDF_INFO + contributor.encode()).derive(secret)
    return Prg(seed)


def record_keys(secrets: PairSecrets, contributors: tuple[str, ...],
                rows: tuple[int, ...]) -> AShare:
    """This party's shares of the record keys of the pooled rows: per contributing version
    (``"<dataset id>/<version id>"``, ``rows[i]`` rows each, in row order) a uniform key per
    row that no single party knows (module docstring); no communication."""
    if len(contributors) != len(rows):
        raise ConfigError(f"{len(contributors)} contributors for {len(rows)} row counts")
    a = [_stream(secrets.prev, c).ring(n) for c, n in zip(contributors, rows, strict=True)]
    b = [_stream(secrets.next, c).ring(n) for c, n in zip(contributors, rows, strict=True)]
    empty = np.zeros(0, dtype=np.uint64)
    return AShare(secrets.party, np.concatenate([empty, *a]), np.concatenate([empty, *b]))


async def cell_keys(s: Session, indicators: AShare, keys: AShare) -> AShare:
    """Shares of the cell keys sum_r indicators[..., r] keys[r] (mod 2^64), one per cell
    along the leading axes of the 0/1 ``indicators`` (1 round)."""
    wide = AShare(s.party, np.broadcast_to(keys.a, indicators.shape),
                  np.broadcast_to(keys.b, indicators.shape))
    return await arith.dot(s, indicators, wide)


class Perturbation:
    """The perturbation of one release: the table of the rules' parameters and the record
    keys of the pooled rows."""

    def __init__(self, table: PTable, keys: AShare) -> None:
        self.table = table
        self.keys = keys

    @classmethod
    def of(cls, d: Disclosure, keys: AShare | None) -> Perturbation | None:
        """The perturbation the rules ask for (None: off); :class:`ConfigError` when they
        ask for it and no record keys were derived."""
        params = d.rules.perturbation
        if params is None:
            return None
        if keys is None:
            raise ConfigError("the rules perturb counts (cell-key method) but this node "
                              "derived no record keys")
        return cls(count_ptable(params), keys)

    def as_json(self) -> dict[str, Any]:
        """What a result says about it (``"perturbed"``)."""
        return self.table.params.as_json()

    async def row_keys(self, s: Session, rows: AShare | None) -> AShare:
        """The record keys weighed by the 0/1 ``rows`` (k_r where a row is in, else 0; None:
        all rows): 1 round, none without ``rows``. Any sum of them over a cell's rows is
        that cell's key."""
        return self.keys if rows is None else await arith.mul(s, rows, self.keys)

    async def keys_of(self, s: Session, indicators: AShare, rows: AShare | None) -> AShare:
        """The cell keys of cells given by 0/1 ``indicators`` (shape (cells, rows)) within
        the rows ``rows`` (0/1 per row; None: all): 2 rounds, 1 without ``rows``."""
        return await cell_keys(s, indicators, await self.row_keys(s, rows))

    async def table_keys(self, s: Session, rows_of: AShare, cols_of: AShare,
                         rows: AShare | None, batch_elements: int = 1 << 23) -> AShare:
        """The cell keys of a two-way table, cell (i, j) at i c + j: the keys of the rows
        ``rows`` (0/1; None: all) where row level i (``rows_of``, shape (r, n)) and column
        level j (``cols_of``, shape (c, n)) hold. 3 rounds (2 without ``rows``): the keys
        weighed by the query set, then by each row level, then one dot product per cell,
        batched by columns as the cell counts are."""
        keys = self.keys if rows is None else await arith.mul(s, rows, self.keys)
        wide = AShare(s.party, np.broadcast_to(keys.a, rows_of.shape),
                      np.broadcast_to(keys.b, rows_of.shape))
        weighed = await arith.mul(s, rows_of, wide)  # (r, n)
        r, c, n = rows_of.shape[0], cols_of.shape[0], rows_of.shape[1]
        step = max(1, batch_elements // max(1, r * n))
        parts: list[AShare] = []
        for start in range(0, c, step):
            count = min(c, start + step) - start
            x = AShare(s.party, np.tile(weighed.a, (count, 1)), np.tile(weighed.b, (count, 1)))
            y = AShare(s.party, np.repeat(cols_of.a[start:start + count], r, axis=0),
                       np.repeat(cols_of.b[start:start + count], r, axis=0))
            parts.append(await arith.dot(s, x, y))  # index j r + i
        joined = concat(parts)
        order = np.array([j * r + i for i in range(r) for j in range(c)], dtype=np.int64)
        return joined[order]

    async def open_count(self, d: Disclosure, name: str, n: AShare, rows: AShare,
                         gate: Gate) -> int:
        """Open n + v for a query-set size n (shape (1,)) of the 0/1 ``rows``; its cell key
        is the sum of the keys of those rows (1 round)."""
        keys = await cell_keys(d.session, rows.reshape(1, rows.shape[0]), self.keys)
        (opened,) = await self.open(d, name, n, keys, gate)
        if opened is None:
            raise ProtocolError(f"gate '{gate.name}' does not allow opening {name}")
        return opened

    async def cell_key(self, s: Session, rows: AShare | None) -> AShare:
        """The cell key of the rows ``rows`` (0/1; None: every row), shape (1,): 1 round,
        none without ``rows``."""
        if rows is None:
            return self.keys.sum().reshape(1)
        return await cell_keys(s, rows.reshape(1, rows.shape[0]), self.keys)

    async def open_moments(self, d: Disclosure, n: AShare | None,
                           sums: Sequence[tuple[str, AShare, int]], y: AShare,
                           rows: AShare | None, gate: Gate) -> tuple[int | None, list[Fraction]]:
        """Open, for the cell of the 0/1 ``rows`` (None: every row), its size ``n`` as
        n + v (as :meth:`open_count` would; None: not opened here) and each of ``sums``
        (name, shares of shape (1,), power p: a sum of x^p) as S + v_p x_max^p /
        2^MAGNITUDE_SHIFT (module docstring), ``y`` being the values already weighed by
        the rows. One cell key, one tournament maximum, one noise lookup for all (9
        rounds), one product round per power above 1 and one for the scaled noise; the
        caller's overflow check left MAGNITUDE_SHIFT bits of headroom. Returns n + v and
        each S' in the encoded unit, exactly."""
        s, params = d.session, self.table.params
        key = await self.cell_key(s, rows)
        largest = (await compare.max_(s, concat([y, -y]))).reshape(1)
        scales = {1: largest}
        for power in range(2, max((p for _, _, p in sums), default=1) + 1):
            scales[power] = await arith.mul(s, scales[power - 1], largest)
        counts = [public_like(s.party, 1, params.shared_row) for _ in sums]
        keys = [key * pow(MAGNITUDE_KEY, p, 1 << 64) for _, _, p in sums]
        if n is not None:
            counts, keys = [n, *counts], [key, *keys]
        v = await noise(s, concat(counts), concat(keys), self.table)
        first = int(n is not None)
        noise_of_sums = await arith.mul(s, concat([scales[p] for _, _, p in sums]), v[first:])
        opened_n = None
        keep = gate.narrowed("cell-key perturbation", np.ones(len(gate), dtype=np.bool_))
        if n is not None:
            opened_n = await d.open_one(f"n, perturbed (cell key, D={params.max_noise}, "
                                        f"V={params.variance:g}, js={params.js})",
                                        n + v[:1], keep)
        out = []
        for i, (name, total, power) in enumerate(sums):
            what = "max|x|" if power == 1 else f"max|x|^{power}"
            opened = await d.open_one(
                f"{name}, perturbed (cell key for magnitudes, D={params.max_noise}, "
                f"V={params.variance:g}, noise v * {what} / {1 << MAGNITUDE_SHIFT})",
                total * (1 << MAGNITUDE_SHIFT) + noise_of_sums[i:i + 1], keep)
            out.append(Fraction(opened, 1 << MAGNITUDE_SHIFT))
        return opened_n, out

    def sum_json(self) -> dict[str, Any]:
        """What a result says about a perturbed sum (``"perturbed"``)."""
        return {**self.as_json(), "sum_noise": f"v * max|x| / {1 << MAGNITUDE_SHIFT}, "
                f"|v| <= {self.table.params.max_noise}"}

    async def open(self, d: Disclosure, name: str, counts: AShare, keys: AShare,
                   gate: Gate) -> list[int | None]:
        """Open c + v for the counts ``gate`` allows (None for the others), v the noise of
        each count's cell key in ``keys``."""
        return await open_perturbed(d, name, counts, keys, gate, self.table)


async def noise(s: Session, counts: AShare, keys: AShare, table: PTable) -> AShare:
    """Shares of the noise of each cell (one-dimensional ``counts`` >= 0, below 2^62, and
    their 64-bit cell keys; the cell key is the low 63 bits); 9 rounds (module docstring)."""
    if counts.shape != keys.shape or len(counts.shape) != 1:
        raise ProtocolError(f"noise(): {counts.shape} counts for {keys.shape} cell keys")
    n = counts.shape[0]
    if n == 0:
        return counts
    rows = table.rows[1:]  # row 0 adds no noise
    inner = [t for row in rows for t in row.thresholds[:-1]]
    classes = len(rows)
    parts = [keys] + [keys - int(t) for t in inner] + [counts - i for i in range(1, classes + 1)]
    # bit KEY_BITS of (w - T) mod 2^(KEY_BITS + 1) is [u < T] ^ bit KEY_BITS of w; the counts
    # (below 2^62) compare in the same width
    signs = await compare.sign_bits(s, concat(parts), KEY_BITS + 1)
    top = boolean.BShare(s.party, signs.a[:n], signs.b[:n])
    q = len(inner)
    below = signs[n:n + q * n]
    flip = boolean.BShare(s.party, np.tile(top.a, q), np.tile(top.b, q))
    injected = await bits.inject(s, concat_bits([below ^ flip, signs[n + q * n:]]))
    less_key = injected[:q * n].reshape(q, n)          # [u < T] per inner threshold
    less_count = injected[q * n:].reshape(classes, n)  # [c < i] for i = 1..I
    pieces, at = [], 0
    for row in rows:
        v = row.noise
        value = public_like(s.party, n, v[-1])
        for t in range(len(v) - 1):
            value = value - less_key[at + t] * (v[t + 1] - v[t])
        at += len(v) - 1
        pieces.append(value)
    indicator = []
    for i in range(1, classes + 1):  # [class = i] = [c < i + 1] - [c < i]; the last: 1 - [c < I]
        upper = less_count[i] if i < classes else None
        indicator.append((upper if upper is not None else public_like(s.party, n, 1))
                         - less_count[i - 1])
    product = await arith.mul(s, _stack(indicator), _stack(pieces))
    return product.sum(axis=0)


def public_like(party: int, n: int, value: int) -> AShare:
    """A sharing of ``value`` repeated n times (no communication)."""
    zero = np.zeros(n, dtype=np.uint64)
    return AShare(party, zero, zero).add_public(value)


def _stack(shares: list[AShare]) -> AShare:
    return AShare(shares[0].party, np.stack([x.a for x in shares]),
                  np.stack([x.b for x in shares]))


def concat_bits(parts: list[boolean.BShare]) -> boolean.BShare:
    return boolean.BShare(parts[0].party, np.concatenate([p.a for p in parts]),
                          np.concatenate([p.b for p in parts]))


async def open_perturbed(d: Disclosure, name: str, counts: AShare, keys: AShare, gate: Gate,
                         table: PTable) -> list[int | None]:
    """c + noise(c, key) for the counts ``gate`` allows (None for the others), opened
    through ``d`` in one round; the transcript names the values as perturbed and the table.
    The noise of a suppressed cell is computed with the others (one batch) and never
    opened, like its count."""
    if not gate.allowed.any():
        return [None] * counts.shape[0]
    perturbed = counts + await noise(d.session, counts, keys, table)
    params = table.params
    return await d.open(f"{name}, perturbed (cell key, D={params.max_noise}, "
                        f"V={params.variance:g}, js={params.js})", perturbed,
                        gate.narrowed("cell-key perturbation",
                                      np.ones(len(gate), dtype=np.bool_)))
