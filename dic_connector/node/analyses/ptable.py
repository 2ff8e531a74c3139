"""Perturbation tables of the cell-key method for counts: parameters, generator, lookup.

The **cell-key method** (Thompson, Broadfoot, Elazar, "Methodology for the automatic
confidentialisation of statistical outputs from remote servers at the Australian Bureau of
Statistics", UNECE work session on statistical data confidentiality 2013; Giessing, "Computational
issues in the design of transition probabilities and disclosure risk estimation for additive
noise", PSD 2016, doi:10.1007/978-3-319-45381-1_18, as implemented by Destatis' R package
``ptable``) adds to each count c a noise v drawn from a public distribution p_c(v) that
depends on c, by looking up the cell's **cell key** u in [0, 1) in the cumulative
distribution: v is the value whose interval [F(v-), F(v)) holds u. A cell's key is a function
of the rows in it (the sum of their record keys, mod 1; :mod:`.perturbation`), so the same
cell gets the same noise in every release: averaging repeated queries does not remove it.

**The table** (``ptable``'s ``create_cnt_ptable(D, V, js)``): row i holds p_i over the targets
j = i + v with |v| <= D (the maximum noise), j >= 0 (no negative count) and j not in 1..js
(``js``: small positive counts are never produced), except that **0 stays 0** (a cell with
no row is never shown as populated). Each row i >= 1 is the **maximum-entropy** distribution
on its targets with mean noise 0 (unbiased) and variance V_i:
p_i(v) proportional to exp(a v + b v^2), (a, b) found by Newton's method on the convex dual
log sum exp(a v + b (v^2 - V_i)) (its gradient is (E v, E v^2 - V_i)). For counts
i >= D + js + 1 every target i - D..i + D is allowed, so all those rows are the same
distribution with V_i = V: the table's last row serves every count from there on.

Small counts cannot always have the variance V: with mean 0 on targets >= 0 the variance is
at most i * D (all mass on -i and +D), and with ``js`` it is at least i * (js + 1 - i) for
i <= js (0 is then the only target below i). A row whose feasible interval (lo, hi) does not
hold V with a margin gets V_i = V clipped to [lo + (hi - lo) / 4, hi - (hi - lo) / 4] (lo = 0
needs no margin: any V_i > 0 is then feasible), the
documented simpler rule that keeps every row strictly inside its feasible set (so the
maximum-entropy solution exists and puts positive mass on every target). V must be below
3 D^2 / 4, so that the shared row has exactly V.

**Lookup.** The cumulative probabilities are quantised to 63-bit integers (the cell key is a
63-bit fraction u / 2^63, :data:`KEY_BITS`): row i's thresholds T_1 < ... < T_m = 2^63, and
the noise of (i, u) is v_t for the first t with u < T_t. Quantisation changes the
probabilities by a few units of 2^-53 (the float rounding of their sum), so the bias stays
below 10^-13 D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from dic_connector.errors import ConfigError

#: Bits of the cell key as a fraction (u / 2^KEY_BITS in [0, 1)).
KEY_BITS = 63
#: Largest maximum noise D accepted (the MPC lookup compares one threshold per target).
MAX_NOISE = 20
#: The method's name in settings and results.
METHOD = "cellkey"

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CellKeyParams:
    """The parameters of a count perturbation table (``ptable``'s D, V, js)."""

    #: D: the largest absolute noise.
    max_noise: int
    #: V: the variance of the noise (of counts >= D + js + 1; smaller counts may have less).
    variance: float
    #: js: perturbed counts are never in 1..js.
    js: int = 0
    #: Whether recipes that do not perturb yet (their n and sums are exact: ``mean``,
    #: ``summary``, ...) may still run; False: they are refused while counts are perturbed,
    #: since their exact n would undo the noise of a count of the same rows.
    allow_exact: bool = False

    def __post_init__(self) -> None:
        d, v, js = self.max_noise, self.variance, self.js
        if not isinstance(self.allow_exact, bool):
            raise ConfigError(f"Config 'perturbation.allow_exact' has value "
                              f"{self.allow_exact!r}. Expected true or false.")
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_NOISE:
            raise ConfigError(f"Config 'perturbation.max_noise' has value {d!r}. Expected an "
                              f"integer D in [1, {MAX_NOISE}].")
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                or not 0 < v < 0.75 * d * d:
            raise ConfigError(f"Config 'perturbation.variance' has value {v!r}. Expected a "
                              f"variance V with 0 < V < 3 D^2 / 4 = {0.75 * d * d}.")
        if isinstance(js, bool) or not isinstance(js, int) or not 0 <= js < d:
            raise ConfigError(f"Config 'perturbation.js' has value {js!r}. Expected an "
                              f"integer in [0, D - 1] = [0, {d - 1}].")
        object.__setattr__(self, "variance", float(v))

    @property
    def shared_row(self) -> int:
        """The first count whose row serves every larger count too: D + js + 1."""
        return self.max_noise + self.js + 1

    def as_json(self) -> dict[str, Any]:
        return {"method": METHOD, "D": self.max_noise, "V": self.variance, "js": self.js}

    @classmethod
    def from_json(cls, data: Any, key: str = "perturbation") -> CellKeyParams:
        """Parse ``{"method": "cellkey", "D"|"max_noise": .., "V"|"variance": .., "js": ..}``;
        :class:`ConfigError` naming ``key``."""
        if not isinstance(data, dict):
            raise ConfigError(f"Config '{key}' must be a mapping.")
        known = {"method", "D", "V", "js", "max_noise", "variance", "allow_exact"}
        if set(data) - known or data.get("method", METHOD) != METHOD:
            raise ConfigError(f"Config '{key}' has value {data!r}. Expected "
                              "{method: cellkey, max_noise: D, variance: V, js: 0}.")
        d = data.get("max_noise", data.get("D"))
        v = data.get("variance", data.get("V"))
        if d is None or v is None:
            raise ConfigError(f"Config '{key}' needs 'max_noise' (D) and 'variance' (V).")
        if isinstance(v, str):  # as canonical JSON carries it (no floats): repr, exact
            try:
                v = float(v)
            except ValueError:
                raise ConfigError(f"Config '{key}.variance' has value {v!r}. Not a "
                                  "number.") from None
        return cls(d, v, data.get("js", 0), data.get("allow_exact", False))

    def as_canonical(self) -> dict[str, Any]:
        """The whole setting as the plan carries it: :meth:`as_json`, ``allow_exact``, and
        V as its exact decimal text (canonical JSON, which signed and audited payloads use,
        has no floats)."""
        return {**self.as_json(), "V": repr(self.variance), "allow_exact": self.allow_exact}


@dataclass(frozen=True)
class Row:
    """The noise distribution of one count class: values, probabilities, thresholds."""

    #: The count this row is for (the last row: this count and every larger one).
    count: int
    #: The possible noise values v, ascending.
    noise: tuple[int, ...]
    #: Their probabilities (sum 1).
    probability: tuple[float, ...]
    #: T_1 < ... < T_m = 2^KEY_BITS: noise[t] where T_(t-1) <= u < T_t (T_0 = 0); equal
    #: neighbours (an interval quantised away) are possible.
    thresholds: tuple[int, ...]

    @property
    def mean(self) -> float:
        return float(np.dot(self.noise, self.probability))

    @property
    def variance(self) -> float:
        v = np.asarray(self.noise, dtype=np.float64)
        return float(np.dot(v * v, self.probability) - self.mean ** 2)


@dataclass(frozen=True)
class PTable:
    """A count perturbation table: one :class:`Row` per count 0..D + js + 1."""

    params: CellKeyParams
    rows: tuple[Row, ...]

    def row(self, count: int) -> Row:
        return self.rows[min(count, len(self.rows) - 1)]

    def noise(self, count: int, key: int) -> int:
        """The plaintext reference lookup: the noise of a cell with this count and cell key
        ``key`` in [0, 2^KEY_BITS)."""
        if not 0 <= key < 1 << KEY_BITS:
            raise ValueError(f"cell key {key} outside [0, 2^{KEY_BITS})")
        if count < 0:
            raise ValueError(f"count {count} is negative")
        row = self.row(count)
        t = int(np.searchsorted(np.asarray(row.thresholds, dtype=np.uint64), np.uint64(key),
                                side="right"))
        return row.noise[t]


def _target_noise(i: int, params: CellKeyParams) -> list[int]:
    d, js = params.max_noise, params.js
    return [j - i for j in range(max(0, i - d), i + d + 1) if j == 0 or j > js]


def row_variance(v: list[int], target: float) -> float:
    """V_i: ``target`` if it lies well inside the variances a mean-0 distribution on ``v``
    can have, else clipped to the middle half of that interval (module docstring)."""
    low_neg, high_pos = -min(v), max(v)
    hi = low_neg * high_pos
    nearest_neg = -max(x for x in v if x < 0)
    positives = [x for x in v if x > 0]
    if 0 in v:  # any variance in (0, hi) is feasible
        return float(min(target, hi - hi / 4))
    lo = float(nearest_neg * min(positives))
    margin = (hi - lo) / 4
    return float(min(max(target, lo + margin), hi - margin))


def max_entropy(v: list[int], variance: float, tol: float = 1e-13) -> FloatArray:
    """The maximum-entropy distribution on the integers ``v`` with mean 0 and the given
    variance (which must be strictly feasible): Newton's method on the convex dual with a
    backtracking line search."""
    x = np.asarray(v, dtype=np.float64)
    feats = np.stack([x, x * x - variance])  # (2, m)
    theta = np.zeros(2)

    def dual(t: FloatArray) -> tuple[float, FloatArray]:
        z = t @ feats
        top = float(z.max())
        w = np.exp(z - top)
        return top + math.log(float(w.sum())), w / w.sum()

    f, p = dual(theta)
    for _ in range(200):
        grad = feats @ p
        if float(np.abs(grad).max()) < tol:
            return np.asarray(p, dtype=np.float64)
        centred = feats - grad[:, None]
        hess = (centred * p) @ centred.T
        step = np.linalg.solve(hess + 1e-15 * np.eye(2), grad)
        scale = 1.0
        while True:
            candidate = theta - scale * step
            f_new, p_new = dual(candidate)
            # (+1e-12: near the optimum the decrease is below the rounding of f)
            if f_new <= f - 1e-4 * scale * float(grad @ step) + 1e-12 or scale < 1e-12:
                break
            scale /= 2
        theta, f, p = candidate, f_new, p_new
    raise ConfigError(f"no maximum-entropy perturbation row for noise {v} with variance "
                      f"{variance}: the solver did not converge")


def _thresholds(p: FloatArray) -> tuple[int, ...]:
    """Integer thresholds T_1 <= ... <= T_m = 2^KEY_BITS whose intervals are the
    probabilities: floor(p_t 2^KEY_BITS), the remainder (the float rounding of the sum of
    p, a few units of 2^-53) given to the largest."""
    full = 1 << KEY_BITS
    widths = [math.floor(float(q) * full) for q in p]
    widths[int(np.argmax(p))] += full - sum(widths)
    out, total = [], 0
    for w in widths:
        total += w
        out.append(total)
    return tuple(out)


def count_ptable(params: CellKeyParams) -> PTable:
    """The perturbation table of ``params`` (see the module docstring)."""
    rows = [Row(0, (0,), (1.0,), (1 << KEY_BITS,))]
    for i in range(1, params.shared_row + 1):
        v = _target_noise(i, params)
        p = max_entropy(v, row_variance(v, params.variance))
        rows.append(Row(i, tuple(v), tuple(float(q) for q in p), _thresholds(p)))
    return PTable(params, tuple(rows))
