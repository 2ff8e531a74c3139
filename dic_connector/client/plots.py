"""Results as figures: Kaplan-Meier curves, histograms, frequency and contingency bars,
quantiles, written as PNG or SVG with matplotlib.

A plot shows what the nodes released and nothing else. A cell that disclosure control kept
back (``"<k"``, ``"suppressed"``, a null bin) is drawn as a hatched grey placeholder column
labelled as the result labels it, never as a bar of some height: the count is unknown, and
a bar would invent one. A withheld S(t) (its events since the previous released time were
between 1 and k - 1, see :mod:`dic_connector.node.analyses.survival`) is a gap in the curve,
not a drop to zero.

**The Kaplan-Meier curve** (Kaplan and Meier, JASA 53, 1958) is known only at the requested
times: no event time is opened. It is drawn from S(0) = 1 through the released points as a
step function held until the next requested time (the true curve lies between two steps),
with the median survival time marked when released, confidence bands where the result
carries them (``median_ci``: ``[lower | null, upper | null]``, drawn on the S = 1/2 line and
written in the legend, an upper bound not reached running to the last time; per time
``survival_ci``: ``[[lower, upper] | null, ...]``, held like the curve) and a numbers-at-risk
table under the axes only when the result carries ``at_risk`` per time (``-`` where
withheld); ``survival`` v1 carries each group's n, shown in the legend.

**Deterministic files.** The figure is built from :class:`matplotlib.figure.Figure` (no
pyplot state, no display; the Agg canvas renders PNG) under matplotlib's default style plus
:data:`STYLE` whatever the user's ``matplotlibrc`` says, at a fixed size and dpi; SVG keeps
text as text (``svg.fonttype: none``), uses a fixed ``svg.hashsalt`` and no date, so the same
result gives the same bytes and tests can read the labels.

matplotlib is an optional dependency (``pip install 'dic-connector[plots]'``): it is imported
only when a figure is made, so the client, the CLI and everything else import without it.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dic_connector.errors import PlotError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Figure size in inches and resolution: PNGs are 800 x 500 pixels.
FIGSIZE_IN = (8.0, 5.0)
DPI = 100
#: The suffixes :func:`save` writes, and the matplotlib format of each.
FORMATS = {".png": "png", ".svg": "svg"}
#: matplotlib settings on top of its default style.
STYLE: dict[str, Any] = {
    "font.family": "DejaVu Sans",  # shipped with matplotlib: no system font lookup
    "font.size": 10.0,
    "svg.fonttype": "none",
    "svg.hashsalt": "dic-connector",
    "axes.spines.top": False,
    "axes.spines.right": False,
}
INSTALL_HINT = "pip install 'dic-connector[plots]'"
#: How placeholders of suppressed cells look.
HATCH = "///"
PLACEHOLDER_COLOUR = "0.6"

Json = Mapping[str, Any]


@contextlib.contextmanager
def _style() -> Iterator[None]:
    try:
        import matplotlib.style
    except ImportError:
        raise PlotError(f"plots need matplotlib, which is not installed: {INSTALL_HINT}"
                        ) from None
    with matplotlib.style.context(["default", STYLE]):
        yield


def _figure(rows: int = 1, ratios: Sequence[float] | None = None) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, 1, squeeze=False, sharex=True,
                           gridspec_kw={"height_ratios": ratios} if ratios else None)
    return figure, [row[0] for row in axes]


def save(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` to ``path`` as PNG or SVG, chosen by its suffix; the path."""
    path = Path(path)
    fmt = _format(path)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    try:
        with _style():
            figure.savefig(path, format=fmt, dpi=DPI, metadata=metadata)
    except OSError as exc:
        raise PlotError(f"cannot write the plot to {path}: {exc.strerror or exc}") from None
    return path


def check(analysis: str, path: str | Path) -> None:
    """Refuse, before anything is submitted or waited for, a plot that could not be made:
    an analysis without one, a file that is neither PNG nor SVG or in no directory,
    matplotlib absent."""
    _plot_of(analysis)
    _format(Path(path))
    if not Path(path).parent.is_dir():
        raise PlotError(f"cannot write the plot to {path}: {Path(path).parent} is not a "
                        "directory")
    with _style():
        pass


def _format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise PlotError(f"cannot write a plot to {path.name}: the file name must end in "
                        f"{' or '.join(FORMATS)}")
    return fmt


def _plot_of(analysis: str) -> Callable[[Json, Json], Figure]:
    plot = _PLOTS.get(analysis)
    if plot is None:
        raise PlotError(f"a result of '{analysis}' has no plot; plots exist for "
                        f"{', '.join(plottable())}")
    return plot


def plottable() -> tuple[str, ...]:
    """The analyses whose results can be drawn."""
    return tuple(_PLOTS)


def draw(analysis: str, aggregates: Json, parameters: Json | None = None) -> Figure:
    """The figure of a result of ``analysis`` (its aggregates as the API returns them; the
    request's ``parameters`` name the column in titles where the result does not)."""
    plot = _plot_of(analysis)
    if aggregates.get("suppressed") is True:
        raise PlotError(f"the {analysis} result was refused "
                        f"({aggregates.get('reason', 'no reason given')}): nothing to plot")
    with _style():
        return plot(aggregates, parameters or {})


def _k(aggregates: Json) -> int | None:
    k = aggregates.get("min_cell_count")
    rules = aggregates.get("disclosure")
    if k is None and isinstance(rules, Mapping):
        k = rules.get("min_cell_count")
    return None if k is None else int(k)


def _hidden_label(value: Any, k: int | None) -> str:
    """How a suppressed cell is labelled: the result's own text, or ``<k`` for a null."""
    if isinstance(value, str):
        return value
    return "suppressed" if k is None else f"<{k}"


def _height(values: Sequence[Any]) -> float:
    """The top of the count axis: room above the highest opened count."""
    return max(max((v for v in values if _opened(v)), default=0) * 1.12, 1.0)


def _bars(ax: Axes, lefts: Sequence[float], widths: Sequence[float],
          values: Sequence[Any], k: int | None, height: float, colour: str = "C0",
          align: Literal["center", "edge"] = "center", gid: str = "") -> None:
    """Bars for the opened counts (labelled with the count) and placeholder columns up to
    ``height`` (the top of the axes) for the others, hatched and labelled ``<k`` or
    ``suppressed``."""
    ax.set_ylim(0, height)
    for i, (x, width, value) in enumerate(zip(lefts, widths, values, strict=True)):
        if _opened(value):
            (bar,) = ax.bar(x, value, width, align=align, color=colour)
            bar.set_gid(f"{gid}bar-{i}")
            ax.annotate(str(value), (bar.get_x() + bar.get_width() / 2, value),
                        ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                        textcoords="offset points")
            continue
        (bar,) = ax.bar(x, height, width, align=align, fill=False, hatch=HATCH,
                        edgecolor=PLACEHOLDER_COLOUR, linewidth=0.5)
        bar.set_gid(f"{gid}suppressed-{i}")
        text = _hidden_label(value, k)
        ax.text(bar.get_x() + bar.get_width() / 2, height * 0.02, text, ha="center",
                va="bottom", rotation=90 if len(text) > 3 else 0, fontsize=8, color="0.3",
                gid=f"{gid}label-{i}")


def _placeholder_handle() -> Any:
    """The legend entry of the placeholders."""
    from matplotlib.patches import Patch

    return Patch(fill=False, hatch=HATCH, edgecolor=PLACEHOLDER_COLOUR, linewidth=0.5,
                 label="not released (disclosure control)")


def _opened(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _opened_any(values: Sequence[Any]) -> bool:
    return any(_opened(v) for v in values)


# -- the plots -----------------------------------------------------------------------------


def survival(aggregates: Json, parameters: Json) -> Figure:
    """Kaplan-Meier S(t) per group at the released times (see the module doc)."""
    groups = [g for g in aggregates.get("groups", []) if isinstance(g, Mapping)]
    curves = [g for g in groups if not g.get("suppressed")]
    if not any(g.get("median") is not None or any(s is not None for s in g.get("survival", []))
               for g in curves):
        raise PlotError("the survival result releases no S(t) and no median in any group: "
                        "nothing to plot (see each group's reason)")
    at_risk = any(_carries_at_risk(g) for g in curves)
    fig, axes = _figure(2, (4.0, 1.0)) if at_risk else _figure()
    ax = axes[0]
    for i, group in enumerate(curves):
        colour = f"C{i % 10}"
        times = [float(t) for t in group.get("times", [])]
        values = [None if s is None else float(s) for s in group.get("survival", [])]
        order = sorted(range(len(times)), key=times.__getitem__)
        xs, ys = [0.0], [1.0]
        for j in order:
            value = values[j]
            xs.append(times[j])
            ys.append(math.nan if value is None else value)
        withheld = [f"{times[j]:g}" for j in order if values[j] is None]
        label = f"{_group_name(group)} (n = {group.get('n')})"
        if withheld:
            label += f"; withheld at t = {', '.join(withheld)}"
        ax.plot(xs, ys, drawstyle="steps-post", color=colour, marker="o", markersize=3,
                label=label, gid=f"curve-{i}")
        ci = group.get("survival_ci")
        if isinstance(ci, Sequence) and len(ci) == len(times) and \
                any(c is not None for c in ci):
            _band(ax, [times[j] for j in order], [ci[j] for j in order], colour, f"band-{i}")
        median = group.get("median")
        if median is not None:
            interval = _median_ci(group)
            ax.plot([float(median)], [0.5], marker="v", color=colour, markersize=7,
                    linestyle="none", gid=f"median-{i}",
                    label=f"{_group_name(group)}: median {float(median):g}"
                          + ("" if interval is None else f" ({_interval_text(interval)})"))
            ax.vlines(float(median), 0, 0.5, colors=colour, linestyles="dotted", linewidth=1)
            if interval is not None:
                # an upper bound not reached: the interval runs to the last time shown
                lower, upper = interval
                end = upper if upper is not None else max([float(median), *times])
                ax.hlines(0.5, float(median) if lower is None else lower, end,
                          colors=colour, linewidth=3, alpha=0.4, gid=f"median-ci-{i}")
        elif parameters.get("median"):
            ax.plot([], [], linestyle="none", label=f"{_group_name(group)}: median not reached")
    for group in groups:
        if group.get("suppressed"):
            ax.plot([], [], linestyle="none", label=f"{_group_name(group)}: not released")
    ax.axhline(0.5, color="0.8", linewidth=0.5, zorder=0)
    ax.set_ylim(0, 1.05)
    ax.set_xlim(left=0)
    ax.set_ylabel("S(t)")
    axes[-1].set_xlabel(str(aggregates.get("time") or parameters.get("time") or "time"))
    by = parameters.get("by")
    ax.legend(loc="best", fontsize=8, frameon=False,
              title=by if isinstance(by, str) else None, title_fontsize=8)
    if at_risk:
        _at_risk_table(axes[1], curves)
    ax.set_title(f"survival (Kaplan-Meier): time {aggregates.get('time')}, "
                 f"event {aggregates.get('event')}")
    return fig


def _band(ax: Axes, times: Sequence[float], ci: Sequence[Any], colour: str, gid: str) -> None:
    """The pointwise confidence band as steps: [lower, upper] at each requested time held
    until the next one, like the curve; nothing where the interval is withheld."""
    xs: list[float] = []
    lower: list[float] = []
    upper: list[float] = []
    for (t, bounds), t_next in zip(zip(times, ci, strict=True), times[1:], strict=False):
        if bounds is None:
            continue
        xs += [t, t_next, math.nan]
        lower += [float(bounds[0])] * 2 + [math.nan]
        upper += [float(bounds[1])] * 2 + [math.nan]
    if xs:
        ax.fill_between(xs, lower, upper, color=colour, alpha=0.2, linewidth=0, gid=gid)


def _median_ci(group: Json) -> tuple[float | None, float | None] | None:
    """The median's interval ``[lower | null, upper | null]``; None when the result has
    none (``median_ci`` null or absent, or both bounds null)."""
    interval = group.get("median_ci")
    if not isinstance(interval, Sequence) or len(interval) != 2 or \
            all(bound is None for bound in interval):
        return None
    lower, upper = (None if bound is None else float(bound) for bound in interval)
    return lower, upper


def _interval_text(interval: tuple[float | None, float | None]) -> str:
    """``"18-30"``; an unknown bound is ``not reached`` (upper) or ``?`` (lower)."""
    lower, upper = interval
    return (f"CI {'?' if lower is None else f'{lower:g}'}-"
            f"{'not reached' if upper is None else f'{upper:g}'}")


def _carries_at_risk(group: Json) -> bool:
    """The group carries numbers at risk, one per requested time."""
    at_risk, times = group.get("at_risk"), group.get("times")
    return isinstance(at_risk, Sequence) and isinstance(times, Sequence) and \
        len(at_risk) == len(times) > 0


def _group_name(group: Json) -> str:
    label = group.get("group")
    return "all" if label is None else str(label)


def _at_risk_table(ax: Axes, curves: Sequence[Json]) -> None:
    """Numbers at risk at the requested times, one row per group that carries them."""
    rows = [(i, group) for i, group in enumerate(curves) if _carries_at_risk(group)]
    for row, (i, group) in enumerate(rows):
        for t, count in zip(group["times"], group["at_risk"], strict=True):
            ax.text(float(t), -row, "-" if count is None else str(count), ha="center",
                    va="center", fontsize=8, color=f"C{i % 10}", gid=f"at-risk-{i}")
    ax.set_ylim(-len(rows) + 0.5, 0.5)
    ax.set_yticks([-row for row in range(len(rows))],
                  [_group_name(group) for _, group in rows], fontsize=8)
    ax.set_title("number at risk", fontsize=8, loc="left")
    ax.tick_params(left=False)
    for spine in ("left", "top", "right"):
        ax.spines[spine].set_visible(False)


def frequency(aggregates: Json, parameters: Json) -> Figure:
    """One bar per level, in declared order; suppressed levels as placeholders."""
    levels = aggregates.get("levels")
    if not isinstance(levels, Mapping) or not _opened_any(list(levels.values())):
        raise PlotError("the frequency result opens no count: nothing to plot")
    fig, (ax,) = _figure()
    names = [str(level) for level in levels]
    values = list(levels.values())
    _bars(ax, list(range(len(names))), [0.8] * len(names), values, _k(aggregates),
          _height(values))
    ax.set_xticks(list(range(len(names))), names, rotation=45 if len(names) > 8 else 0,
                  ha="right" if len(names) > 8 else "center")
    ax.set_ylabel("count")
    if not all(_opened(v) for v in values):
        ax.legend(handles=[_placeholder_handle()], fontsize=8, frameon=False,
                  loc="upper left", bbox_to_anchor=(0, 1.0))
    column = parameters.get("column")
    ax.set_title(f"frequency of {column}" if column else "frequency")
    return fig


def histogram(aggregates: Json, parameters: Json) -> Figure:
    """Bars between consecutive breaks; null (suppressed) bins as placeholders, and the
    counts below the first and above the last break noted beside the axes."""
    breaks = [float(b) for b in aggregates.get("breaks", [])]
    counts = list(aggregates.get("counts", []))
    if len(breaks) < 2 or len(counts) != len(breaks) - 1:
        raise PlotError(f"the histogram result has {len(counts)} counts for {len(breaks)} "
                        "breaks (expected one fewer counts than breaks)")
    if not _opened_any(counts):
        raise PlotError("the histogram result opens no bin: nothing to plot")
    k = _k(aggregates)
    fig, (ax,) = _figure()
    widths = [b - a for a, b in itertools.pairwise(breaks)]
    _bars(ax, breaks[:-1], widths, counts, k, _height(counts), align="edge")
    ax.set_xticks(breaks)
    column = aggregates.get("column") or parameters.get("column") or ""
    ax.set_xlabel(str(column))
    ax.set_ylabel("count")
    outside = []
    for name in ("below", "above"):
        if name in aggregates:
            value = aggregates[name]
            edge = breaks[0] if name == "below" else breaks[-1]
            shown = str(value) if isinstance(value, int) else _hidden_label(value, k)
            outside.append(f"{name} {edge:g}: {shown}")
    if outside:
        ax.set_title(", ".join(outside), loc="right", fontsize=8)
    if not all(_opened(v) for v in counts):
        ax.legend(handles=[_placeholder_handle()], fontsize=8, frameon=False,
                  loc="upper left")
    n = aggregates.get("n")
    ax.set_title(f"histogram of {column} (n = {n if n is not None else _hidden_label(n, k)})",
                 loc="left")
    return fig


def contingency(aggregates: Json, parameters: Json) -> Figure:
    """Grouped bars: one group per row level, one bar per column level."""
    rows, columns = aggregates.get("rows", {}), aggregates.get("columns", {})
    cells = aggregates.get("cells", [])
    if not any(_opened_any(line) for line in cells):
        raise PlotError("the contingency result opens no cell: nothing to plot")
    k = _k(aggregates)
    row_levels = [str(v) for v in rows.get("levels", [])]
    col_levels = [str(v) for v in columns.get("levels", [])]
    fig, (ax,) = _figure()
    width = 0.8 / max(len(col_levels), 1)
    height = _height([v for line in cells for v in line])
    for j in range(len(col_levels)):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(row_levels))]
        _bars(ax, xs, [width] * len(xs), [line[j] for line in cells], k, height,
              colour=f"C{j % 10}", gid=f"c{j}-")
    ax.set_xticks(list(range(len(row_levels))), row_levels)
    ax.set_xlabel(_variable_name(rows))
    ax.set_ylabel("count")
    from matplotlib.patches import Patch

    handles = [Patch(color=f"C{j % 10}", label=level) for j, level in enumerate(col_levels)]
    if not all(_opened(v) for line in cells for v in line):
        handles.append(_placeholder_handle())
    ax.legend(handles=handles, title=_variable_name(columns), fontsize=8, frameon=False,
              loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"{_variable_name(rows)} by {_variable_name(columns)}")
    return fig


def _variable_name(variable: Json) -> str:
    name = variable.get("variable")
    return name if isinstance(name, str) else "derived"


def quantiles(aggregates: Json, parameters: Json) -> Figure:
    """The quantiles against their probabilities, each point labelled with its value."""
    probabilities = [float(p) for p in aggregates.get("probabilities", [])]
    values = aggregates.get("quantiles", [])
    if not probabilities or len(values) != len(probabilities):
        raise PlotError("the quantiles result holds no quantile: nothing to plot")
    fig, (ax,) = _figure()
    ax.plot(probabilities, [float(v) for v in values], marker="o", linestyle="none",
            gid="quantiles")
    for p, v in zip(probabilities, values, strict=True):
        ax.annotate(f"{float(v):g}", (p, float(v)), xytext=(4, 4), textcoords="offset points",
                    fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    column = parameters.get("column") or ""
    ax.set_ylabel(str(column))
    ax.set_title(f"quantiles of {column} (n = {aggregates.get('n')})")
    return fig


_PLOTS: dict[str, Callable[[Json, Json], Figure]] = {
    "survival": survival, "frequency": frequency, "histogram": histogram,
    "contingency": contingency, "quantiles": quantiles}
