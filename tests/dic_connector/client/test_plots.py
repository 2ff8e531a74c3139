"""Plots of results: each plot from result dicts as the API returns them (suppressed cells,
withheld S(t), refused groups, several groups), read back from the Figure and from the SVG
text; PNG size and signature; identical bytes for the same input; the errors for what cannot
be drawn; matplotlib never imported by the client or the CLI until a plot is made; and
``dic analyze --plot`` end to end against three computing nodes (``dic result --plot`` and
``Researcher.plot`` in process), the bars checked against numpy."""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from dic_connector.cli import build_parser
from dic_connector.client import commands, plots
from dic_connector.errors import DicError, PlotError
from tests.commands import dic
from tests.dic_connector.client.test_commands import write_profile
from tests.dic_connector.node.coordination.conftest import (
    Cluster,
    cohort,
)

SVG = "{http://www.w3.org/2000/svg}"
DISCLOSURE = {"min_cell_count": 5, "min_subset_size": 5}

SURVIVAL: dict[str, Any] = {
    "time": "months", "event": "death", "disclosure": DISCLOSURE, "groups": [
        {"group": "0", "n": 24, "times": [6.0, 12.0, 18.0, 24.0],
         "survival": [0.9, None, 0.6, 0.45], "median": 22.0, "median_ci": None},
        {"group": "1", "n": 30, "times": [24.0, 6.0, 12.0, 18.0],  # as asked, unsorted
         "survival": [None, 0.95, 0.8, 0.7], "median": None, "median_ci": None},
        {"group": "2", "suppressed": True, "reason": "fewer than k rows in the group"}]}
FREQUENCY = {"levels": {"0": 12, "1": "<5", "2": 30, "3": "suppressed"},
             "min_cell_count": 5, "disclosure": DISCLOSURE}
HISTOGRAM = {"column": "age", "breaks": [40.0, 50.0, 60.0, 70.0, 80.0, 90.0],
             "counts": [6, None, 20, 14, None], "below": 7, "above": None, "n": 52,
             "min_cell_count": 5}
CONTINGENCY = {"rows": {"variable": "sex", "levels": ["f", "m"]},
               "columns": {"variable": "ecog", "levels": ["0", "1", "2"]},
               "cells": [[10, "<5", 8], [12, 7, "suppressed"]], "row_totals": [None, None],
               "column_totals": [22, None, None], "total": None, "min_cell_count": 5}
QUANTILES = {"n": 48, "probabilities": ["0.25", "0.5", "0.75"],
             "quantiles": [52.0, 61.5, 70.25], "disclosure": DISCLOSURE}


def svg(figure: Figure, tmp_path: Path, name: str = "plot.svg") -> ET.Element:
    return ET.fromstring(plots.save(figure, tmp_path / name).read_bytes())


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")]


def ids(root: ET.Element, prefix: str) -> list[str]:
    return sorted(g.get("id", "") for g in root.iter(f"{SVG}g")
                  if g.get("id", "").startswith(prefix))


def by_gid(figure: Figure, gid: str) -> Any:
    found = [a for a in figure.findobj() if a.get_gid() == gid]
    assert len(found) == 1, gid
    return found[0]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# -- each plot -------------------------------------------------------------------------------


def test_survival_curves_per_group_with_gaps_medians_and_refused_groups(
        tmp_path: Path) -> None:
    figure = plots.draw("survival", SURVIVAL, {"median": True})
    first = by_gid(figure, "curve-0")
    assert isinstance(first, Line2D) and first.get_drawstyle() == "steps-post"
    xs, ys = np.asarray(first.get_xdata(), float), np.asarray(first.get_ydata(), float)
    assert list(xs) == [0.0, 6.0, 12.0, 18.0, 24.0]  # S(0) = 1 first
    assert ys[0] == 1.0 and np.isnan(ys[2]) and list(ys[[1, 3, 4]]) == [0.9, 0.6, 0.45]
    second = by_gid(figure, "curve-1")
    assert list(np.asarray(second.get_xdata(), float)) == [0.0, 6.0, 12.0, 18.0, 24.0]
    assert np.isnan(np.asarray(second.get_ydata(), float)[-1])  # withheld: never 0
    median = by_gid(figure, "median-0")
    assert list(median.get_xdata()) == [22.0] and list(median.get_ydata()) == [0.5]

    root = svg(figure, tmp_path)
    assert ids(root, "curve-") == ["curve-0", "curve-1"]  # the refused group has none
    assert ids(root, "median-") == ["median-0"]
    assert ids(root, "band-") == [] and ids(root, "median-ci-") == []  # no CI released
    shown = texts(root)
    assert "0 (n = 24); withheld at t = 12" in shown and "1 (n = 30); withheld at t = 24" in shown
    assert "0: median 22" in shown and "1: median not reached" in shown
    assert "2: not released" in shown
    assert "survival (Kaplan-Meier): time months, event death" in shown
    # the gap: the first curve's path is two pieces, the second one piece
    paths = {g.get("id"): g.findall(f"{SVG}path")[0].get("d", "")  # the line; then markers
             for g in root.iter(f"{SVG}g") if g.get("id", "").startswith("curve-")}
    assert paths["curve-0"].count("M") == 2 and paths["curve-1"].count("M") == 1


def test_survival_draws_bands_and_numbers_at_risk_only_when_the_result_has_them(
        tmp_path: Path) -> None:
    group = {**SURVIVAL["groups"][0], "median_ci": [18.0, 30.0],
             "survival_ci": [[0.8, 0.97], None, [0.4, 0.75], [0.3, 0.6]],
             "at_risk": [21, 17, 12, 8]}
    figure = plots.draw("survival", {**SURVIVAL, "groups": [SURVIVAL["groups"][1], group]},
                        {"by": "ecog"})
    assert len(figure.axes) == 2  # the curve, and the numbers at risk under it
    root = svg(figure, tmp_path)
    assert ids(root, "band-") == ["band-1"] and ids(root, "median-ci-") == ["median-ci-1"]
    # steps like the curve: each interval held until the next time, none where withheld
    band = [p.vertices for p in by_gid(figure, "band-1").get_paths()]
    assert sorted((v[:, 0].min(), v[:, 0].max(), v[:, 1].min(), v[:, 1].max())
                  for v in band) == [(6.0, 12.0, 0.8, 0.97), (18.0, 24.0, 0.4, 0.75)]
    at_risk = [t.get_text() for t in figure.axes[1].texts if t.get_gid() == "at-risk-1"]
    assert at_risk == ["21", "17", "12", "8"]
    assert not [t for t in figure.axes[1].texts if t.get_gid() == "at-risk-0"]  # has none
    shown = texts(root)
    assert "number at risk" in shown and "ecog" in shown  # the legend's title: the groups'
    assert [t.get_text() for t in figure.axes[1].get_yticklabels()] == ["0"]
    assert "0: median 22 (CI 18-30)" in shown
    assert list(by_gid(figure, "median-ci-1").get_segments()[0][:, 0]) == [18.0, 30.0]
    assert len(plots.draw("survival", SURVIVAL).axes) == 1


def test_bands_and_numbers_at_risk_follow_the_times_in_any_order() -> None:
    """The second group's times come unsorted (as asked): its band and its numbers at risk
    stay with their times; a withheld S(t) has no interval and no count; the upper bound
    of the median's interval not reached runs to the last time; ``at_risk`` and
    ``survival_ci`` null (a result without them) draw neither."""
    unsorted = {**SURVIVAL["groups"][1], "median": 16.0, "median_ci": [12.0, None],
                "survival_ci": [None, [0.85, 1.0], [0.6, 0.9], [0.5, 0.85]],
                "at_risk": [None, 28, 22, 15]}
    figure = plots.draw("survival", {**SURVIVAL, "groups": [unsorted]})
    band = [p.vertices for p in by_gid(figure, "band-0").get_paths()]
    assert sorted((v[:, 0].min(), v[:, 0].max(), v[:, 1].min(), v[:, 1].max())
                  for v in band) == [(6.0, 12.0, 0.85, 1.0), (12.0, 18.0, 0.6, 0.9),
                                     (18.0, 24.0, 0.5, 0.85)]
    at_risk = {float(t.get_position()[0]): t.get_text() for t in figure.axes[1].texts
               if t.get_gid() == "at-risk-0"}
    assert at_risk == {24.0: "-", 6.0: "28", 12.0: "22", 18.0: "15"}
    assert list(by_gid(figure, "median-ci-0").get_segments()[0][:, 0]) == [12.0, 24.0]
    legend = figure.axes[0].get_legend()
    assert legend is not None
    assert "1: median 16 (CI 12-not reached)" in [t.get_text() for t in legend.get_texts()]
    without = {**unsorted, "survival_ci": None, "at_risk": None, "median_ci": None}
    figure = plots.draw("survival", {**SURVIVAL, "groups": [without]})
    assert len(figure.axes) == 1
    assert not [a for a in figure.findobj() if str(a.get_gid()).startswith(("band-",
                                                                            "median-ci-"))]


def test_a_survival_result_of_medians_only_shows_the_medians() -> None:
    result = {"time": "months", "event": "death", "groups": [
        {"group": None, "n": 48, "times": [], "survival": [], "median": 17.5,
         "median_ci": None}]}
    figure = plots.draw("survival", result, {"median": True})
    assert list(by_gid(figure, "median-0").get_xdata()) == [17.5]
    assert list(by_gid(figure, "curve-0").get_ydata()) == [1.0]  # S(0) only
    legend = figure.axes[0].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["all (n = 48)", "all: median 17.5"]


def test_frequency_bars_and_labelled_placeholders(tmp_path: Path) -> None:
    figure = plots.draw("frequency", FREQUENCY, {"column": "ecog"})
    heights = {gid: by_gid(figure, gid).get_height() for gid in ("bar-0", "bar-2")}
    assert heights == {"bar-0": 12, "bar-2": 30}
    placeholders = [by_gid(figure, f"suppressed-{i}") for i in (1, 3)]
    ax = figure.axes[0]
    # hatched, unfilled, the axes' full height: a mark, not a count
    assert all(isinstance(p, Rectangle) and p.get_hatch() and not p.get_fill()
               and p.get_height() == ax.get_ylim()[1] for p in placeholders)
    root = svg(figure, tmp_path)
    assert ids(root, "bar-") == ["bar-0", "bar-2"]
    assert ids(root, "suppressed-") == ["suppressed-1", "suppressed-3"]
    shown = texts(root)
    assert shown.count("<5") == 1 and shown.count("suppressed") == 1
    assert {"12", "30", "frequency of ecog", "not released (disclosure control)"} <= set(shown)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3"]


def test_histogram_bars_at_the_breaks(tmp_path: Path) -> None:
    figure = plots.draw("histogram", HISTOGRAM)
    bars = [by_gid(figure, f"bar-{i}") for i in (0, 2, 3)]
    assert [(b.get_x(), b.get_width(), b.get_height()) for b in bars] == [
        (40.0, 10.0, 6), (60.0, 10.0, 20), (70.0, 10.0, 14)]
    assert [by_gid(figure, f"suppressed-{i}").get_x() for i in (1, 4)] == [50.0, 80.0]
    root = svg(figure, tmp_path)
    assert len(ids(root, "bar-")) == 3 and len(ids(root, "suppressed-")) == 2
    shown = texts(root)
    assert shown.count("<5") == 2  # the null bins, labelled with k
    assert "below 40: 7, above 90: <5" in shown and "histogram of age (n = 52)" in shown


def test_contingency_grouped_bars(tmp_path: Path) -> None:
    figure = plots.draw("contingency", CONTINGENCY)
    root = svg(figure, tmp_path)
    assert ids(root, "c0-bar-") == ["c0-bar-0", "c0-bar-1"]
    assert ids(root, "c1-suppressed-") == ["c1-suppressed-0"]
    assert ids(root, "c2-suppressed-") == ["c2-suppressed-1"]
    assert by_gid(figure, "c1-bar-1").get_height() == 7
    shown = texts(root)
    assert "<5" in shown and "suppressed" in shown and "sex by ecog" in shown
    assert {"f", "m", "0", "1", "2", "ecog"} <= set(shown)


def test_quantiles_as_points(tmp_path: Path) -> None:
    figure = plots.draw("quantiles", QUANTILES, {"column": "age"})
    points = by_gid(figure, "quantiles")
    assert list(points.get_xdata()) == [0.25, 0.5, 0.75]
    assert list(points.get_ydata()) == [52.0, 61.5, 70.25]
    shown = texts(svg(figure, tmp_path))
    assert {"52", "61.5", "70.25", "quantiles of age (n = 48)"} <= set(shown)


# -- files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("analysis, result", [
    ("survival", SURVIVAL), ("frequency", FREQUENCY), ("histogram", HISTOGRAM),
    ("contingency", CONTINGENCY), ("quantiles", QUANTILES)])
def test_same_result_same_bytes_at_a_fixed_size(
        tmp_path: Path, analysis: str, result: dict[str, Any]) -> None:
    for suffix in (".png", ".svg"):
        first = plots.save(plots.draw(analysis, result), tmp_path / f"a{suffix}").read_bytes()
        again = plots.save(plots.draw(analysis, result), tmp_path / f"b{suffix}").read_bytes()
        assert first == again
        if suffix == ".png":
            assert png_size(first) == (800, 500)
        else:
            root = ET.fromstring(first)
            assert (root.get("width"), root.get("height")) == ("576pt", "360pt")
            assert b"<dc:date>" not in first


def test_the_users_matplotlibrc_does_not_change_the_file(tmp_path: Path) -> None:
    import matplotlib
    from cycler import cycler

    before = plots.save(plots.draw("frequency", FREQUENCY), tmp_path / "a.svg").read_bytes()
    with matplotlib.rc_context({"svg.hashsalt": None, "font.size": 20,
                                "figure.figsize": (3, 3), "axes.prop_cycle":
                                cycler(color=["red"])}):
        after = plots.save(plots.draw("frequency", FREQUENCY), tmp_path / "b.svg").read_bytes()
    assert before == after


# -- what cannot be drawn ---------------------------------------------------------------------


def test_the_file_must_be_png_or_svg(tmp_path: Path) -> None:
    figure = plots.draw("frequency", FREQUENCY)
    with pytest.raises(PlotError, match=r"km\.pdf: the file name must end in \.png or \.svg"):
        plots.save(figure, tmp_path / "km.pdf")
    assert not (tmp_path / "km.pdf").exists()
    plots.save(figure, tmp_path / "KM.PNG")  # the suffix in any case
    nowhere = tmp_path / "missing" / "km.png"
    with pytest.raises(PlotError, match=r"cannot write the plot to .*km\.png"):
        plots.save(figure, nowhere)
    with pytest.raises(PlotError, match="missing is not a directory"):
        plots.check("frequency", nowhere)
    plots.check("frequency", tmp_path / "km.svg")


@pytest.mark.parametrize("analysis, result, message", [
    ("mean", {"n": 30, "sum": "1800", "mean": 60.0},
     "'mean' has no plot; plots exist for survival, frequency, histogram, contingency, "
     "quantiles"),
    ("frequency", {"suppressed": True, "reason": "fewer than 5 rows at site tm"},
     r"refused \(fewer than 5 rows at site tm\): nothing to plot"),
    ("frequency", {"levels": {"a": "<5", "b": "suppressed"}, "min_cell_count": 5},
     "opens no count"),
    ("survival", {"time": "t", "event": "e", "groups": [
        {"group": "a", "suppressed": True, "reason": "r"},
        {"group": "b", "n": 9, "times": [1.0], "survival": [None], "median": None}]},
     "releases no S\\(t\\) and no median in any group"),
    ("histogram", {**HISTOGRAM, "counts": [None] * 5}, "opens no bin"),
    ("histogram", {**HISTOGRAM, "counts": [1, 2]}, "2 counts for 6 breaks"),
    ("contingency", {**CONTINGENCY, "cells": [["<5"] * 3] * 2}, "opens no cell"),
    ("quantiles", {"n": 3, "probabilities": [], "quantiles": []}, "holds no quantile"),
])
def test_what_cannot_be_drawn_is_refused_naming_why(
        analysis: str, result: dict[str, Any], message: str) -> None:
    with pytest.raises(PlotError, match=message):
        plots.draw(analysis, result)


def test_without_matplotlib_the_error_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.style", None)  # import fails
    for call in (lambda: plots.draw("frequency", FREQUENCY),
                 lambda: plots.check("frequency", tmp_path / "f.png")):
        with pytest.raises(PlotError, match=r"pip install 'dic-connector\[plots\]'"):
            call()


def test_the_client_and_the_cli_import_without_matplotlib() -> None:
    code = ("import sys; import dic_connector.cli, dic_connector.client, "
            "dic_connector.client.commands, dic_connector.client.plots; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[3]).stdout
    assert out.strip() == "[]"


# -- end to end ------------------------------------------------------------------------------




async def test_dic_analyze_and_result_plot_what_the_nodes_released(
        cluster: Cluster, tmp_path: Path) -> None:
    table = cohort(30, seed=11)  # ecog 2 is rare: below k, a placeholder
    await cluster.upload("tm", table)
    alice = str(write_profile(cluster, tmp_path, "alice", "researcher"))
    await cluster.owners["tm"].add_policy(["frequency", "mean"], ["ecog", "age"], 5,
                                          dt.timedelta(days=7))

    svg_path = tmp_path / "ecog.svg"
    code, out, err = await dic("analyze", "frequency", "--column", "ecog", "--datasets", "tm",
                               "--study", "S", "--json", "--plot", str(svg_path),
                               "--profile", alice)
    assert code == 0, err
    levels = json.loads(out)["levels"]  # JSON output stays one document
    expected = {str(v): int((table[:, 1] == v).sum()) for v in range(3)}
    opened = {level: count for level, count in levels.items() if isinstance(count, int)}
    assert opened and all(expected[level] == count >= 5 for level, count in opened.items())
    assert any(not isinstance(count, int) for count in levels.values())
    root = ET.fromstring(svg_path.read_bytes())
    order = list(levels)
    assert ids(root, "bar-") == sorted(f"bar-{order.index(level)}" for level in opened)
    hidden = [count for count in levels.values() if not isinstance(count, int)]
    assert len(ids(root, "suppressed-")) == len(hidden)
    shown = texts(root)
    assert all(str(count) in shown for count in opened.values())
    assert all(label in shown for label in hidden) and "frequency of ecog" in shown

    # the same result read again by id (what `dic result ID --plot FILE` runs), into a
    # PNG; and through the client facade
    requests = [r for r in await cluster.alice.requests() if r.analysis == "frequency"]
    png_path = tmp_path / "ecog.png"
    args = build_parser().parse_args(["result", requests[0].id, "--plot", str(png_path)])
    assert args.plot == png_path
    printed = io.StringIO()
    await commands.show_result(cluster.alice, args.id, printed, args.fmt, args.plot)
    assert f"plot written to {png_path}" in printed.getvalue()
    assert png_size(png_path.read_bytes()) == (800, 500)
    facade = await cluster.alice.plot(requests[0].id, tmp_path / "facade.svg")
    assert facade.read_bytes() == svg_path.read_bytes()

    # refused before anything is signed or read: an analysis without a plot, a wrong file
    # type, a plot without the wait
    before = len(await cluster.alice.requests())
    for analysis, path, wait, message in [
            ("mean", "m.png", True, "'mean' has no plot"),
            ("frequency", "f.pdf", True, r"must end in \.png or \.svg"),
            ("frequency", "f.png", False, "drop --no-wait")]:
        with pytest.raises(DicError, match=message):
            await commands.analyze(cluster.alice, analysis, ["tm"], {"column": "age"}, "S",
                                   io.StringIO(), wait=wait, plot=tmp_path / path)
    with pytest.raises(PlotError, match="must end in"):
        await commands.show_result(cluster.alice, requests[0].id, io.StringIO(),
                                   plot=tmp_path / "x.pdf")
    assert len(await cluster.alice.requests()) == before
    assert not list(tmp_path.glob("[mfx].*"))
