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
        hidden = sum(not p for p in passes)
        pinned = False
        if not any(leaks) and hidden >= 2:  # below k each: M <= (h - 1)(k - 1)
            bound = (hidden - 1) * (k - 1)
            openings.append(("bits", [int(mass < bound + 1)]))
            pinned = mass >= bound + 1
        if any(leaks) or pinned:
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
    else:  # no count open: no marks, which the total could pin
        shown = dict.fromkeys(levels, "hidden")
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


@dataclass
class Table2:
    """The plaintext reference of a two-way table (``contingency``): what it shows."""

    #: ``None`` when the query set is refused (then ``refusal`` says why).
    cells: list[list[int | str]] | None
    refusal: Refusal | None = None
    #: The true counts (also of the cells not shown).
    counts: list[list[int]] = field(default_factory=list)


def contingency(rows: Sequence[object | None], cols: Sequence[object | None],
                row_levels: Sequence[object], col_levels: Sequence[object],
                passes: Sequence[bool] | None, segments: Segments, rules: Rules,
                excluded_ok: bool = False) -> Table2:
    """contingency(row, col), from the rules' statement: the table counts the rows where both
    variables are present (and the filter passes); every cell below k is hidden ('<k');
    with a filter, a cell whose rows failing the filter are 1..k-1 is hidden; then, in
    rounds, each line (rows, columns, then the whole table) with an opened cell whose h
    hidden cells (not counting those known, below) sum to M outside k..(h - 1)(k - 1)
    when all are below k, or below s k + 1 when s of them are >= k, or that has one
    hidden cell (for the whole table: the hidden mass, or N minus the opened cells
    unless ``excluded_ok``, in 1..k-1), hides one more cell; a line without opened cells
    where those fail (a margin below k passing a line of cells below k) makes its hidden
    cells known for the other lines, unless
    one of its cells was hidden earlier in the round: among its opened cells whose other
    lines (the column of a row's cell, the row of a column's cell, both for the table)
    hold the most lines with a hidden cell, the smallest (the first on ties)."""
    k = rules.min_cell_count
    n_rows = len(rows)
    passing = [True] * n_rows if passes is None else list(passes)
    inside = [a is not None and b is not None and p
              for a, b, p in zip(rows, cols, passing, strict=True)]
    sizes = segment_sizes([1 if i else None for i in inside], segments)
    refusal = query_set(sizes, segments, rules, complement=False)
    if refusal is not None:
        return Table2(None, refusal)
    r, c = len(row_levels), len(col_levels)

    def count(i: int, j: int, filtered: bool) -> int:
        return sum(a == row_levels[i] and b == col_levels[j] and (p or not filtered)
                   for a, b, p in zip(rows, cols, passing, strict=True))

    counts = [[count(i, j, True) for j in range(c)] for i in range(r)]
    flat = [counts[i][j] for i in range(r) for j in range(c)]
    primary = [v >= k for v in flat]
    hidden = [not p for p in primary]
    if passes is not None:
        for x in range(r * c):
            fails = count(x // c, x % c, False) - flat[x]
            hidden[x] = hidden[x] or 1 <= fails <= k - 1
    lines = ([[i * c + j for j in range(c)] for i in range(r)]
             + [[i * c + j for i in range(r)] for j in range(c)] + [list(range(r * c))])
    known: set[int] = set()
    while True:
        needs = []
        exposed: set[int] = set()
        for at, line in enumerate(lines):
            every_shut = [x for x in line if hidden[x]]
            shut = [x for x in every_shut if x not in known]
            open_ = [x for x in line if not hidden[x]]
            if at == len(lines) - 1:
                if not open_:
                    continue
                masses = [sum(flat[x] for x in every_shut)]
                if not excluded_ok:
                    masses.append(n_rows - sum(flat[x] for x in open_))
                if any(1 <= mass <= k - 1 for mass in masses):
                    needs.append((at, line))
                continue
            if not shut:
                continue
            mass, large = sum(flat[x] for x in shut), sum(primary[x] for x in shut)
            margin, bound = sum(flat[x] for x in line), (len(shut) - 1) * (k - 1)
            if large:
                fits = len(shut) > 1 and mass >= large * k + 1
            elif not open_:
                fits = margin < k or mass <= bound
            else:
                fits = k <= mass <= bound
            if fits:
                continue
            if open_:
                needs.append((at, line))
            else:
                exposed.update(shut)
        grew = bool(exposed - known)
        known |= exposed
        if not needs:
            if grew:
                continue
            break
        touched: set[int] = set()
        for at, line in needs:
            if touched & set(line):
                continue
            kind = "row" if at < r else "col" if at < r + c else "table"

            def crossing(x: int, kind: str = kind) -> int:
                row_hidden = any(hidden[(x // c) * c + j] for j in range(c))
                col_hidden = any(hidden[i * c + x % c] for i in range(r))
                return int(kind != "row" and row_hidden) + int(kind != "col" and col_hidden)

            open_ = [x for x in line if not hidden[x]]
            best = max(crossing(x) for x in open_)
            candidates = [x for x in open_ if crossing(x) == best]
            low = min(flat[x] for x in candidates)
            chosen = next(x for x in candidates if flat[x] == low)
            hidden[chosen] = True
            touched.add(chosen)
    shown: list[list[int | str]] = [
        [("suppressed" if primary[i * c + j] else f"<{k}") if hidden[i * c + j]
         else counts[i][j] for j in range(c)] for i in range(r)]
    return Table2(shown, None, counts)
