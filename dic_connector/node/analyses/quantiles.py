"""``quantiles`` v1: R type 7 quantiles of a numeric or date column at given probabilities, exact.

R's default quantile (Hyndman and Fan 1996, type 7) at probability p over n sorted values
x_(0) <= ... <= x_(n-1) is x_(lo) + g (x_(lo+1) - x_(lo)) with h = (n - 1) p, lo = floor h and
g = h - lo (x_(lo+1) read as x_(lo) when lo = n - 1). The pilot's researchers used it
(``quantile(tm$age)``, ``../shared/PILOT.md``).

Protocol: disclosure control first, exactly as for ``median``
(:mod:`dic_connector.node.analyses.median`: the query set of present rows per contributing
dataset version, pooled and by its complement; missing rows sorted last; the key range
declared or checked under MPC, only the all-in-range bit opened). Then n is opened to the
three nodes (the ranks are public functions of n and p), one shuffle-then-quickselect of
:func:`mpc.protocols.sort.select_ranks` (oblivious 3-party shuffle, distinct composite keys;
Hamada et al. ICISC 2012, Asharov et al. CCS 2022) picks every order statistic that any p
needs, and **one value per probability** is opened.

**Exact, not rounded.** A probability is read as the decimal the request wrote (at most six
decimal places: p = P / 10^d), so g = ((n - 1) P mod 10^d) / 10^d = a / b exactly (reduced).
The program opens the integer b x_(lo) + a (x_(lo+1) - x_(lo)) and divides by b 10^scale in
the clear; :func:`mpc.protocols.sort.quantiles` instead rounds g to 16 bits. The opened value
lies in [b low, b high] for the key range [low, high], so the key range is narrowed to
|key| < 2^62 / b (checked under MPC unless the declared range already fits).

**Extremes.** Quantile 0 is the minimum and quantile 1 the maximum: each is one patient's
value, and more generally every p with h < 1 or h > n - 2 is determined by the smallest or
the largest value together with its neighbour. Such probabilities are refused unless the
request says ``"extremes": true``; standing policies do not cover such a request unless they
name the scope ``quantiles:extremes`` explicitly (a ``*`` policy does not), so a data owner
either approves it request by request, seeing the probabilities, or has said in a policy that
minima and maxima may be released (as the pilot's owners did for the age range). Which p are
extreme depends on n, which only the three nodes learn before the check: the refusal names
the probability and the rule, never n.

Result: ``{"n": int, "probabilities": [str, ...], "quantiles": [float, ...]}`` (probabilities
as the decimals used); refused: ``{"suppressed": true, "reason": ...}``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, ClassVar

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.base import (
    FILTER_DISCLOSES,
    NUMERIC_KINDS,
    QUERY_SET_GATE,
    SORT_MEMORY_PER_ROW,
    Analysis,
    Inputs,
)
from dic_connector.node.analyses.disclosure import Disclosure, QuerySet
from dic_connector.node.analyses.manifest import ColumnInfo
from dic_connector.node.analyses.median import checked_keys, key_range
from mpc.protocols import sort

#: Most probabilities one request may ask for.
MAX_PROBABILITIES = 20
#: Most decimal places of a probability (keeps b = 10^d small against the ring).
MAX_DECIMALS = 6
#: A probability written as a decimal string (signed requests carry no floats).
DECIMAL = re.compile(r"^[0-9]{1,2}(\.[0-9]{1,12})?$")
#: The policy scope a standing policy must name to cover a request for extreme quantiles.
EXTREMES_SCOPE = "quantiles:extremes"
#: What a release of the interpolated value may not exceed, in absolute value.
OPENED_BOUND = 1 << 62


def decimal_probability(value: object, index: int) -> Decimal:
    """The probability as the decimal the request wrote; :class:`AnalysisError` otherwise."""
    where = f"quantiles: parameter 'probabilities/{index}'"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise AnalysisError(f"{where}: expected a number in [0, 1]")
    if isinstance(value, str) and not DECIMAL.fullmatch(value):
        raise AnalysisError(f"{where}: {value!r} is not a decimal number")
    try:
        p = Decimal(value if isinstance(value, str) else repr(value)).normalize()
    except InvalidOperation as exc:  # pragma: no cover - repr of a float always parses
        raise AnalysisError(f"{where}: expected a number in [0, 1]") from exc
    if not p.is_finite() or not 0 <= p <= 1:
        raise AnalysisError(f"{where}: {value!r} is not in [0, 1]")
    exponent = p.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > MAX_DECIMALS:
        raise AnalysisError(f"{where}: {value!r} has more than {MAX_DECIMALS} decimal places")
    return p


def type7_terms(n: int, p: Decimal) -> tuple[int, int, int, int]:
    """(lo, hi, a, b) with h = (n - 1) p = lo + a / b exactly, hi = min(lo + 1, n - 1)."""
    h = Fraction(n - 1) * Fraction(p)
    lo = h.numerator // h.denominator
    a, b = h.numerator - lo * h.denominator, h.denominator
    return lo, min(lo + 1, n - 1), a, b


def is_extreme(n: int, p: Decimal) -> bool:
    """Whether the type 7 quantile at ``p`` over ``n`` values depends on the smallest or
    the largest of them (h < 1 or h > n - 2)."""
    h = Fraction(n - 1) * Fraction(p)
    return h < 1 or h > n - 2


def rows_for_interior(p: Decimal) -> int:
    """The smallest n at which the quantile at ``p`` (0 < p < 1) depends on neither the
    smallest nor the largest value: (n - 1) p >= 1 and (n - 1) (1 - p) >= 1."""
    q = Fraction(p)
    return 1 + max(_ceil(1 / q), _ceil(1 / (1 - q)))


def _ceil(x: Fraction) -> int:
    return -((-x.numerator) // x.denominator)


def opened_value(lo_value: int, hi_value: int, a: int, b: int) -> int:
    """The integer the program opens for one probability (plaintext mirror for tests)."""
    return b * lo_value + a * (hi_value - lo_value)


class Quantiles(Analysis):
    memory_per_row: ClassVar[int] = SORT_MEMORY_PER_ROW
    name: ClassVar[str] = "quantiles"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = ("Quantiles (R type 7, exact) of a numeric or date column at "
                              "given probabilities, pooled over the pinned datasets, over the "
                              "rows where it is present. The minimum, the maximum and other "
                              "quantiles fixed by them need \"extremes\": true and the data "
                              "owners' explicit consent.")
    discloses: ClassVar[str] = QUERY_SET_GATE + (
        "Otherwise, if the manifest declares no range that fits the sort and the "
        "interpolation: one bit, whether every value lies in the key range (if not, the "
        "analysis fails and nothing else is opened). Then n, to the three nodes; the "
        "comparison bits of a sort of the obliviously shuffled rows, to the three nodes "
        "(data-independent); one value per probability, b x_(lo) + a (x_(lo+1) - x_(lo)) for "
        "the public g = a / b, to the three nodes. The researcher gets n and the quantiles. A "
        "probability whose quantile depends on the smallest or largest value is refused "
        "unless the request asks for extremes.") + FILTER_DISCLOSES
    parameters_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "column": {"type": "string", "minLength": 1,
                       "description": "a numeric or date typed column"},
            "probabilities": {
                "type": "array", "minItems": 1, "maxItems": MAX_PROBABILITIES,
                "uniqueItems": True,
                # the range and the decimals are checked by decimal_probability, whose
                # messages name the value
                "items": {"type": ["number", "string"]},
                "description": "probabilities in [0, 1], at most six decimal places each, as "
                               "decimal strings in a signed request (\"0.25\"); default 0, "
                               "0.25, 0.5, 0.75, 1 (R's quantile())",
            },
            "type": {"const": 7, "description": "Hyndman-Fan type (7, R's default)"},
            "extremes": {"type": "boolean",
                         "description": "allow quantiles fixed by the minimum or maximum "
                                        f"(standing policies must name {EXTREMES_SCOPE})"},
        },
        "required": ["column"],
        "additionalProperties": False,
    }
    column_kinds: ClassVar[frozenset[str]] = NUMERIC_KINDS
    filterable: ClassVar[bool] = True

    @staticmethod
    def probabilities(parameters: dict[str, Any]) -> list[Decimal]:
        """The requested probabilities as decimals (R's five by default)."""
        raw = parameters.get("probabilities", [0, 0.25, 0.5, 0.75, 1])
        return [decimal_probability(v, i) for i, v in enumerate(raw)]

    def validate(self, parameters: dict[str, Any], manifest: Any) -> None:
        super().validate(parameters, manifest)
        probs = self.probabilities(parameters)
        if len(set(probs)) != len(probs):
            raise AnalysisError("quantiles: parameter 'probabilities': values must be "
                                "distinct")
        if not parameters.get("extremes", False):
            for i, p in enumerate(probs):
                if p in (0, 1):
                    raise AnalysisError(
                        f"quantiles: parameter 'probabilities/{i}': {p} is the "
                        f"{'minimum' if p == 0 else 'maximum'}, one patient's value; ask "
                        "with \"extremes\": true (the data owners must consent explicitly)")

    def policy_scope(self, parameters: dict[str, Any]) -> str:
        return EXTREMES_SCOPE if parameters.get("extremes", False) else self.name

    async def gate(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any]
                   ) -> QuerySet:
        """The query set of present rows (as every analysis); then, unless extremes are
        asked for, one more bit: whether n is large enough that no requested quantile
        depends on the smallest or largest value."""
        query = await super().gate(d, inputs, parameters)
        if query.refusal is not None or parameters.get("extremes", False):
            return query
        probs = self.probabilities(parameters)
        needed = max(rows_for_interior(p) for p in probs)
        if needed <= d.rules.min_cell_count:
            return query  # the query-set gate already guarantees n >= k
        info = self.typed_column(parameters, inputs.manifest)
        enough = await d.at_least("n (interior quantiles)", self.rows_in(d, inputs, query),
                                  needed)
        if enough.all():
            return query
        widest = max(probs, key=rows_for_interior)
        return QuerySet(
            refusal=f"quantiles: probability {widest} needs at least {needed} rows where "
                    f"'{info.name}' is present, or its quantile is fixed by the smallest or "
                    "largest value; ask with \"extremes\": true (the data owners must "
                    "consent explicitly)",
            gate=None)

    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any]:
        info = self.typed_column(parameters, inputs.manifest)
        probs = self.probabilities(parameters)
        # every b divides the denominator of its p (h = (n - 1) P / 10^d)
        denominator = max(Fraction(p).denominator for p in probs)
        low, high, trusted = self._key_range(info, inputs.row_count, denominator)
        n_share = self.rows_in(d, inputs, query)
        keys = await checked_keys(d, inputs, info, query, (low, high, trusted), self.name)
        gate = query.gate_required()
        n = await d.open_one("n", n_share, gate)
        terms = [type7_terms(n, p) for p in probs]
        ranks = sorted({r for lo, hi, _, _ in terms for r in (lo, hi)})
        position = {r: i for i, r in enumerate(ranks)}
        with d.protocol("sort comparison bits of obliviously shuffled rows",
                        "data-independent: distinct keys in a random order"):
            picked = await sort.select_ranks(d.session, keys, ranks, sort.key_bits_for(low, high))
        values: list[float] = []
        for p, (lo, hi, a, b) in zip(probs, terms, strict=True):
            x_lo, x_hi = picked[position[lo]], picked[position[hi]]
            combined = (x_lo * b + (x_hi - x_lo) * a).reshape(1)
            opened = await d.open_one(f"quantile at {p} times {b}", combined, gate)
            values.append(float(Fraction(opened, b * 10**info.scale)))
        return {"n": n, "probabilities": [str(p) for p in probs], "quantiles": values}

    @staticmethod
    def _key_range(info: ColumnInfo, rows: int, denominator: int) -> tuple[int, int, bool]:
        """The median's key range, narrowed so that b * key stays inside the ring."""
        low, high, trusted = key_range(info, rows, "quantiles")
        bound = OPENED_BOUND // denominator - 1
        if -bound <= low and high <= bound:
            return low, high, trusted
        return max(low, -bound), min(high, bound), False
