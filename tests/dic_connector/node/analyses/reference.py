"""A plaintext reference of the disclosure rules, written straight from their statement.

The analyses decide under MPC; this module decides the same in the clear, from the plaintext
column (None = missing), the segments (site, rows) and the rules, without reusing any code
of the implementation:

- **query set** (the rows where the column is present): each contributing dataset version
  (segment) has >= min_subset_size of them, else the release is refused naming the site(s);
  the pooled n >= k (min_cell_count); with the complement rule, the rows outside it,
  N - n, are 0 or >= k. Refusals are checked in that order.
- **frequency**: primary suppression of every cell below k (shown ``"<k"``); if the
  suppressed mass M or the unopened mass (M + missing values) is in 1..k-1, the smallest
  opened cell (the first on ties) is suppressed too (shown ``"suppressed"``).

Besides the aggregates, each function gives the **openings** the rules imply, in order:
``("bits", [...])`` for every bit vector opened to the nodes and ``("values", [...])`` for
every vector of values (the comparison bits of the median's sort are data-independent and
not predicted here). A test compares them with what the spy saw opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from dic_connector.node.analyses.disclosure import Release, Rules
from tests.dic_connector.node.analyses.support import Opened, Segments

Rule = Literal["min_subset_size", "min_cell_count", "complement"]
Kind = Literal["bits", "values"]


@dataclass(frozen=True)
class Refusal:
    """Why a query set is refused, and the sites named (min_subset_size only)."""

    rule: Rule
    sites: tuple[str, ...] = ()


@dataclass
class Expected:
    """What an analysis must release and open."""

    #: The aggregates when released (None when refused).
    aggregates: dict[str, Any] | None
    refusal: Refusal | None = None
    openings: list[tuple[Kind, list[int]]] = field(default_factory=list)


def segment_sizes(values: Sequence[object | None], segments: Segments) -> list[int]:
    """The number of present values in each segment's rows."""
    sizes, start = [], 0
    for _, rows in segments:
        sizes.append(sum(v is not None for v in values[start:start + rows]))
        start += rows
    assert start == len(values)
    return sizes


def query_set(sizes: Sequence[int], segments: Segments, rules: Rules,
              complement: bool) -> Refusal | None:
    """The query-set rules on per-segment sizes."""
    k, m = rules.min_cell_count, rules.min_subset_size
    small = [site for (site, _), size in zip(segments, sizes, strict=True) if size < m]
    if small:
        return Refusal("min_subset_size", tuple(dict.fromkeys(small)))
    n, total = sum(sizes), sum(rows for _, rows in segments)
    if n < k:
        return Refusal("min_cell_count")
    if complement and 1 <= total - n <= k - 1:
        return Refusal("complement")
    return None


def query_set_bits(sizes: Sequence[int], segments: Segments, rules: Rules,
                   complement: bool) -> list[int]:
    """The bits the shared query-set check opens: [size < m] per segment, [n < k], and
    [1 <= N - n <= k - 1] with the complement rule."""
    k, m = rules.min_cell_count, rules.min_subset_size
    n, total = sum(sizes), sum(rows for _, rows in segments)
    bits = [int(size < m) for size in sizes] + [int(n < k)]
    return bits + ([int(1 <= total - n <= k - 1)] if complement else [])


def _gate(values: Sequence[object | None], segments: Segments, rules: Rules,
          indicator: bool, complement: bool) -> tuple[Refusal | None, list[tuple[Kind, list[int]]]]:
    sizes = segment_sizes(values, segments)
    if not indicator:  # sizes are public: nothing is opened
        assert all(v is not None for v in values)
        return query_set(sizes, segments, rules, complement), []
    return (query_set(sizes, segments, rules, complement),
            [("bits", query_set_bits(sizes, segments, rules, complement))])


def count(values: Sequence[object | None] | None, segments: Segments, rules: Rules,
          indicator: bool) -> Expected:
    """count(column), or count() when ``values`` is None."""
    if values is None:
        values, indicator = [0] * sum(rows for _, rows in segments), False
    refusal, openings = _gate(values, segments, rules, indicator, complement=True)
    if refusal is not None:
        return Expected(None, refusal, openings)
    n = sum(v is not None for v in values)
    return Expected({"n": n}, None, openings + ([("values", [n])] if indicator else []))


def decimal_text(value: int, scale: int) -> str:
    """value / 10^scale as a plain decimal with ``scale`` places."""
    digits = str(abs(value)).rjust(scale + 1, "0")
    text = f"{digits[:-scale]}.{digits[-scale:]}" if scale else digits
    return ("-" if value < 0 else "") + text


def mean(values: Sequence[int | None], scale: int, segments: Segments, rules: Rules,
         indicator: bool, range_checked: bool = True) -> Expected:
    """mean(column) of values that lie in the overflow-safe range."""
    refusal, openings = _gate(values, segments, rules, indicator, complement=True)
    if refusal is not None:
        return Expected(None, refusal, openings)
    present = [v for v in values if v is not None]
    n, total = len(present), sum(present)
    openings += [("bits", [1])] if range_checked else []
    openings += [("values", [n]), ("values", [total])]
    return Expected({"n": n, "sum": decimal_text(total, scale),
                     "mean": float(Fraction(total, n * 10**scale))}, None, openings)


def summary(values: Sequence[int | None], scale: int, segments: Segments, rules: Rules,
            indicator: bool, range_checked: bool = True) -> Expected:
    """summary(column) of values that lie in the overflow-safe range (plaintext, exact)."""
    refusal, openings = _gate(values, segments, rules, indicator, complement=True)
    if refusal is not None:
        return Expected(None, refusal, openings)
    present = [v for v in values if v is not None]
    n, total, squares = len(present), sum(present), sum(v * v for v in present)
    openings += [("bits", [1])] if range_checked else []
    openings += [("values", [n]), ("values", [total]), ("values", [squares])]
    variance = None if n < 2 else (Fraction(squares) - Fraction(total * total, n)) / (
        (n - 1) * 10 ** (2 * scale))
    return Expected({"n": n, "sum": decimal_text(total, scale),
                     "sum_of_squares": decimal_text(squares, 2 * scale),
                     "mean": float(Fraction(total, n * 10**scale)),
                     "variance": None if variance is None else float(variance),
                     "sd": None if variance is None else float(variance) ** 0.5},
                    None, openings)


def median(values: Sequence[int | None], scale: int, segments: Segments, rules: Rules,
           indicator: bool, range_checked: bool = True) -> Expected:
    """median(column), R type 7: the mean of the order statistics floor((n-1)/2), floor(n/2)."""
    refusal, openings = _gate(values, segments, rules, indicator, complement=True)
    if refusal is not None:
        return Expected(None, refusal, openings)
    present = sorted(v for v in values if v is not None)
    n = len(present)
    twice = present[(n - 1) // 2] + present[n // 2]
    openings += [("bits", [1])] if range_checked else []
    openings += [("values", [n]), ("values", [twice])]
    return Expected({"n": n, "median": float(Fraction(twice, 2 * 10**scale))}, None,
                    openings)


def frequency(values: Sequence[str | None], levels: Sequence[str], segments: Segments,
              rules: Rules, indicator: bool) -> Expected:
    """frequency(column): primary and secondary suppression."""
    k = rules.min_cell_count
    refusal, openings = _gate(values, segments, rules, indicator, complement=False)
    if refusal is not None:
        return Expected(None, refusal, openings)
    if not levels:
        return Expected({"levels": {}, "min_cell_count": k}, None, openings)
    counts = [sum(v == level for v in values) for level in levels]
    rows = len(values)
    passes = [c >= k for c in counts]
    openings.append(("bits", [int(not p) for p in passes]))
    secondary: int | None = None
    if any(passes):
        mass = sum(c for c, p in zip(counts, passes, strict=True) if not p)
        unopened = rows - sum(c for c, p in zip(counts, passes, strict=True) if p)
        leaks = [int(1 <= r <= k - 1) for r in (mass, unopened)]
        openings.append(("bits", leaks))
        if any(leaks):
            allowed = [j for j, p in enumerate(passes) if p]
            low = min(counts[j] for j in allowed)
            secondary = next(j for j in allowed if counts[j] == low)
            if len(allowed) > 1:
                openings.append(("bits", [int(counts[j] == low) for j in allowed]))
    shown: dict[str, int | str] = {}
    opened = []
    for j, (level, c) in enumerate(zip(levels, counts, strict=True)):
        if not passes[j]:
            shown[level] = f"<{k}"
        elif j == secondary:
            shown[level] = "suppressed"
        else:
            shown[level] = c
            opened.append(c)
    if opened:
        openings.append(("values", opened))
    return Expected({"levels": shown, "min_cell_count": k}, None, openings)


def reason_matches(reason: str, refusal: Refusal, segments: Segments, rules: Rules) -> bool:
    """Whether a refusal's text names the rule (and exactly the small sites)."""
    k, m = rules.min_cell_count, rules.min_subset_size
    if refusal.rule == "min_subset_size":
        named = {site for site, _ in segments if f"'{site}'" in reason}
        return (named == set(refusal.sites) and "min_subset_size" in reason
                and f"fewer than {m} rows" in reason)
    if refusal.rule == "min_cell_count":
        return f"fewer than {k} rows (min_cell_count)" in reason
    return "complement rule" in reason and f"between 1 and {k - 1} rows" in reason


def assert_release(got: Release, seen: Opened, expected: Expected, segments: Segments,
                   rules: Rules) -> None:
    """The release and what the spy saw opened are what the reference says."""
    if expected.refusal is not None:
        assert set(got.aggregates) == {"suppressed", "reason"}, got.aggregates
        assert got.aggregates["suppressed"] is True
        assert reason_matches(got.aggregates["reason"], expected.refusal, segments, rules), (
            got.aggregates["reason"], expected.refusal)
    else:
        assert got.aggregates == expected.aggregates
    opened = [(o.kind, list(o.values or ())) for o in seen.openings
              if not o.where.startswith("mpc.protocols.sort.")]
    assert opened == expected.openings
    assert got.rules == rules


def filtered_gate(values: Sequence[object | None], passes: Sequence[bool], segments: Segments,
                  rules: Rules, indicator: bool, complement: bool = True
                  ) -> tuple[Refusal | None, list[tuple[Kind, list[int]]]]:
    """The query set of a filtered request: the rows where the column is present and the
    filter holds (``passes``: the filter per row). Its sizes are secret, so the bits are
    always opened: [size < m] per segment, [n < k], with the complement rule
    [1 <= N - n <= k - 1] and, with a missing-value indicator, the two complements a
    release without the filter (or without the column) would give away: the present rows
    that fail the filter, and the rows that pass it but are missing, each in 1..k-1."""
    k, m = rules.min_cell_count, rules.min_subset_size
    inside = [v is not None and p for v, p in zip(values, passes, strict=True)]
    sizes = segment_sizes([1 if i else None for i in inside], segments)
    n, total = sum(inside), len(values)
    present = sum(v is not None for v in values)
    passing = sum(passes)
    leaks = [1 <= total - n <= k - 1] if complement else []
    if complement and indicator:
        leaks += [1 <= present - n <= k - 1, 1 <= passing - n <= k - 1]
    bits = [int(size < m) for size in sizes] + [int(n < k)] + [int(b) for b in leaks]
    small = [site for (site, _), size in zip(segments, sizes, strict=True) if size < m]
    refusal = (Refusal("min_subset_size", tuple(dict.fromkeys(small))) if small
               else Refusal("min_cell_count") if n < k
               else Refusal("complement") if any(leaks) else None)
    return refusal, [("bits", bits)]
