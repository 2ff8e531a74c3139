"""The node's web page in headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium; ``make chromium`` installs them).

1. The page's own pieces against their Python references: the canonical JSON of a tricky
   payload (unicode, member order by UTF-16 code units, nesting, integers) equals
   :func:`~dic_connector.trust.canonical.canonical_json`, refusals included; a WebCrypto
   Ed25519 signature made in the page from a PEM key verifies with ``cryptography``;
   Kaplan-Meier results (with and without the intervals and numbers at risk ``survival``
   is to carry, a withheld S(t), unsorted times, a refused group) and a frequency result
   are drawn as the SVG they describe, read back through the charts' data-* axes.
2. Three real node processes over mutual TLS: a researcher signs in at node-1 and submits a
   frequency table and a Kaplan-Meier survival request (months, dead, four times, the
   median) through the page (signing them in the browser); the data owner signs in at
   node-0 and approves both in the page's dialog (signing in the browser), then signs and
   revokes a standing policy; the researcher sees the requests completed on all three
   nodes, the results (counts equal to the plaintext, S(t) and the median to lifelines,
   the first time withheld) and their charts: the bars, and the KM curve whose drawn steps
   map back to the result's S(t).

Screenshots go to ``.ci-artifacts/web/`` in the repository root (git-ignored, kept by CI).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from lifelines import KaplanMeierFitter
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from dic_connector.client import DataOwner, Researcher
from dic_connector.connector.upload import NodeEndpoint, Uploader
from dic_connector.dev.deployment import (
    NODE_NAMES,
    LocalNodes,
    register_people,
    write_local_deployment,
)
from dic_connector.node.analyses.catalog import ANALYSES, get_analysis
from dic_connector.node.api import ui
from dic_connector.trust import payloads, signing
from dic_connector.trust.canonical import canonical_json
from dic_connector.vocabulary import Role

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".ci-artifacts" / "web"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 30.0

#: Member names whose UTF-16 order differs from their code point order (U+1F600 is the
#: surrogate pair D83D DE00, below U+FB01), digits sorted as text, escapes, deep nesting.
TRICKY: dict[str, Any] = {
    "\ufb01": "ligature",
    "\U0001f600": "grinning",
    "é": "e acute",
    "e": 1,
    "10": 10,
    "9": 9,
    "": "empty name",
    "ctl\u0000\u001f": '\b\f\n\r\t"\\/\u007f\u2028',
    "nested": {
        "z": [True, False, None, [], {}],
        "a": {"b": {"c": [-9007199254740991, 0, 9007199254740991]}},
    },
    "unicode": "Grüße, 東京, \U0001d11e",
}
KM_RESULT: dict[str, Any] = {
    "groups": [
        {
            "group": "ECOG 0",
            "n": 18,
            "times": [3, 7, 12, 20],
            "survival": [0.944, 0.833, 0.722, 0.5],
            "median": 20,
            "median_ci": [12, None],
        },
        {
            "group": "ECOG 1-2",
            "n": 30,
            "times": [2, 4, 5, 9, 15],
            "survival": [0.9, 0.7, 0.6, 0.4, 0.2],
            "median": 9,
            "median_ci": [5, 15],
        },
    ],
    "disclosure": {"min_cell_count": 5},
}
#: What ``survival`` will carry once its intervals are computed: a pointwise CI and the
#: numbers at risk per time (null where S(t) is withheld), the median's CI, times in the
#: order asked (unsorted), and a refused group.
KM_WITH_CI: dict[str, Any] = {
    "time": "months",
    "groups": [
        {
            "group": "0",
            "n": 20,
            "times": [24, 6, 12, 18],
            "survival": [0.45, 0.9, None, 0.6],
            "survival_ci": [[0.25, 0.63], [0.66, 0.97], None, [0.36, 0.78]],
            "at_risk": [7, 18, None, 11],
            "median": 21,
            "median_ci": [15, None],
        },
        {"group": "2", "suppressed": True, "reason": "fewer than k rows in the group"},
    ],
    "disclosure": {"min_cell_count": 5},
}
FREQUENCY_RESULT: dict[str, Any] = {"levels": {"0": 18, "1": 22, "2": "<5"}, "min_cell_count": 5}


def _spki_hash(cert: Path) -> str:
    public = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def _chromium(trusted_certs: Sequence[Path] = ()) -> WebDriver:
    """Headless Chromium trusting exactly ``trusted_certs`` (by their public keys) besides
    its own roots: the nodes' certificates come from the deployment CA."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Debian's chromium and chromium-driver are missing: run `make chromium`")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1500",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    if trusted_certs:
        hashes = ",".join(_spki_hash(cert) for cert in trusted_certs)
        options.add_argument(f"--ignore-certificate-errors-spki-list={hashes}")
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Callable[[WebDriver, str], Path]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def shoot(driver: WebDriver, name: str) -> Path:
        path = ARTIFACTS / f"{request.node.name}-{name}.png"
        driver.save_screenshot(str(path))
        print(f"screenshot: {path}")
        return path

    return shoot


def _until(
    driver: WebDriver, condition: Callable[[WebDriver], Any], what: str, timeout_s: float = WAIT_S
) -> Any:
    def check(d: WebDriver) -> Any:
        try:
            return condition(d)
        except StaleElementReferenceException:  # the page re-rendered while we looked
            return False

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(check)
    except TimeoutException:
        shown = driver.find_elements(By.ID, "message")
        message = shown[0].text if shown else ""
        raise TimeoutException(f"{what} (the page says: {message!r})") from None


def _until_on_every_node(driver: WebDriver, request_id: str, statuses: list[str],
                         what: str) -> None:
    """Until the page's per-node status cell of ``request_id`` reads ``statuses``."""
    cell = f'tr[data-request-id="{request_id}"] td.nodes'
    _until(driver, lambda d: d.find_element(By.CSS_SELECTOR, cell).text.splitlines() == statuses,
           what)


def _click(driver: WebDriver, css: str) -> None:
    """Click ``css`` once it is there (the page re-renders its lists as it polls)."""

    def clicked(d: WebDriver) -> bool:
        d.find_element(By.CSS_SELECTOR, css).click()
        return True

    _until(driver, clicked, f"click {css}")


def _text(driver: WebDriver, css: str) -> str:
    """The text of ``css`` (read again if the page re-rendered it meanwhile)."""
    return str(_until(driver, lambda d: d.find_element(By.CSS_SELECTOR, css).text or " ",
                      f"text of {css}")).strip()


def _run_script(driver: WebDriver, body: str, *args: Any) -> Any:
    """Run async ``body`` in the page (its last argument is the callback) and return what it
    passes on; a thrown error comes back as ``{"error": message}``."""
    script = (
        "const done = arguments[arguments.length - 1];"
        f"(async () => {{ {body} }})().then(done, (e) => done({{error: String(e)}}));"
    )
    return driver.execute_async_script(script, *args)


# -- 1. canonical JSON, signing and plots against their references -------------------------


@pytest.fixture
async def page_only() -> AsyncIterator[str]:
    """Only the web page's files, served on 127.0.0.1 (a secure context for WebCrypto)."""
    app = web.Application()
    for endpoint in ui.endpoints():
        app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/ui/"))
    finally:
        await server.close()


def _page_checks(url: str, key_pem: str, shoot: Callable[[WebDriver, str], Path]) -> dict[str, Any]:
    driver = _chromium()
    try:
        driver.set_script_timeout(WAIT_S)
        driver.get(url)
        _until(driver, lambda d: d.find_element(By.ID, "token").is_displayed(), "page loaded")
        out: dict[str, Any] = {}
        out["canonical"] = _run_script(
            driver,
            "const m = await import('/ui/canonical.js'); return m.canonicalJson(arguments[0]);",
            TRICKY,
        )
        out["refusals"] = _run_script(
            driver,
            """
            const m = await import('/ui/canonical.js');
            const tries = [{a: 0.5}, {a: 2 ** 53}, {a: "\\ud800"}, {"\\udc00x": 1}, [undefined]];
            return tries.map((v) => { try { m.canonicalJson(v); return "accepted"; }
                                      catch (e) { return e.constructor.name; } });""",
        )
        out["signed"] = _run_script(
            driver,
            """
            const s = await import('/ui/signing.js');
            const {key, publicKey} = await s.importSigningKey(arguments[0]);
            return {publicKey, body: await s.signed(arguments[1], key)};""",
            key_pem,
            TRICKY,
        )
        out["km"] = _run_script(driver, KM_READ, KM_RESULT)
        driver.execute_script("document.getElementById('result').scrollIntoView()")
        shoot(driver, "km-plot")
        out["km_ci"] = _run_script(driver, KM_READ, KM_WITH_CI)
        driver.execute_script("document.getElementById('result').scrollIntoView()")
        shoot(driver, "km-plot-ci")
        out["bars"] = _run_script(
            driver,
            """
            const app = await import('/ui/results.js');
            app.renderResult(arguments[0], "frequency(ecog) (fixture)");
            const svg = document.querySelector('#chart svg.bars');
            return {bars: [...svg.querySelectorAll('rect.bar')].map(
                        (r) => [r.dataset.level, Number(r.dataset.count),
                                Number(r.getAttribute('height'))]),
                    withheld: [...svg.querySelectorAll('text.withheld')].map(
                        (t) => [t.dataset.level, t.textContent])};""",
            FREQUENCY_RESULT,
        )
        out["forms"] = _run_script(
            driver,
            """
            const f = await import('/ui/forms.js');
            const box = document.createElement('div');
            document.body.appendChild(box);
            const read = {};
            for (const a of arguments[0]) {
                f.renderForm(box, a.parameters_schema, ['age', 'ecog']);
                const fields = [...box.querySelectorAll('[name]')].map((e) => e.name);
                const set = (name, value) => { const e = box.querySelector(`[name=${name}]`);
                                               if (e) e.value = value; };
                set('column', 'age');
                set('probabilities', '0.25, 0.5,1');
                set('filter', '{"column": "age", "op": ">=", "value": 50}');
                const extremes = box.querySelector('[name=extremes]');
                if (extremes) extremes.checked = true;
                read[`${a.name} v${a.version}`] = {fields, parameters: f.readForm(box)};
            }
            box.remove();
            return read;""",
            [cls().describe() for cls in ANALYSES],
        )
        return out
    finally:
        driver.quit()


#: Render a survival result in the page and read its chart back: the plot area and axis
#: ranges, each curve's path, the released points, the bands, the numbers at risk, the
#: legend and the tables.
KM_CHART = """
    const svg = document.querySelector('#chart svg.survival');
    const all = (css, read) => [...svg.querySelectorAll(css)].map(read);
    return {plot: svg.dataset.plot, xMax: Number(svg.dataset.xMax),
            yMax: Number(svg.dataset.yMax),
            curves: all('path.curve', (p) => [p.dataset.group, p.getAttribute('d')]),
            points: all('circle.point', (c) => [c.dataset.group, Number(c.dataset.time),
                Number(c.dataset.survival), Number(c.getAttribute('cx')),
                Number(c.getAttribute('cy'))]),
            bands: all('path.band', (p) => [p.dataset.group, p.getAttribute('d')]),
            atRisk: all('text.at-risk', (t) => [t.dataset.group, Number(t.dataset.time),
                t.textContent, Number(t.getAttribute('x'))]),
            legend: all('text.legend', (t) => t.textContent),
            medians: all('line.median', (l) => [l.dataset.group, Number(l.getAttribute('x1')),
                Number(l.getAttribute('y2'))]),
            medianCis: all('line.median-ci', (l) => [l.dataset.group,
                Number(l.getAttribute('x1')), Number(l.getAttribute('x2'))]),
            table: document.querySelector('#result-table').innerText};"""
KM_READ = """
    const app = await import('/ui/results.js');
    app.renderResult(arguments[0], "Kaplan-Meier");""" + KM_CHART


def _vertices(d: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"[ML](-?[\d.]+),(-?[\d.]+)", d)]


def _pieces(d: str) -> list[list[tuple[float, float]]]:
    """The subpaths of an SVG path (each from an M)."""
    return [_vertices(f"M{piece}") for piece in d.split("M")[1:]]


class Chart:
    """Page coordinates of a chart back to data, by the plot area and axis ranges its
    data-* attributes record."""

    def __init__(self, read: dict[str, Any]) -> None:
        self.left, self.top, self.width, self.height = (
            float(v) for v in read["plot"].split(","))
        self.x_max, self.y_max = float(read["xMax"]), float(read.get("yMax", 1))

    def data(self, x: float, y: float) -> tuple[float, float]:
        return ((x - self.left) / self.width * self.x_max,
                (self.top + self.height - y) / self.height * self.y_max)

    def close(self, drawn: Sequence[tuple[float, float]],
              expected: Sequence[tuple[float, float]]) -> bool:
        """Equal to a tenth of a pixel."""
        got = [self.data(x, y) for x, y in drawn]
        return len(got) == len(expected) and np.allclose(
            np.asarray(got), np.asarray(expected, float),
            atol=0.1 * max(self.x_max / self.width, 1 / self.height))


def km_pieces(group: dict[str, Any]) -> list[list[tuple[float, float]]]:
    """The step curve a group's released S(t) describe: from (0, 1), at each time (in
    ascending order) the level held so far, then S(t); a withheld S(t) ends the piece, and
    the next released time starts the next one at its own S(t)."""
    pieces: list[list[tuple[float, float]]] = []
    piece: list[tuple[float, float]] = [(0.0, 1.0)]
    level: float | None = 1.0
    steps = sorted(zip(group["times"], group["survival"], strict=True),
                   key=lambda p: float(p[0]))
    for t, s in steps:
        if level is not None:
            piece.append((float(t), level))
        if s is None:
            pieces.append(piece)
            piece, level = [], None
        else:
            piece.append((float(t), float(s)))
            level = float(s)
    return [p for p in [*pieces, piece] if p]


def _name(group: dict[str, Any]) -> str:
    """A group as the page names it: its label, ``all`` for the pooled curve."""
    return "all" if group.get("group") is None else str(group["group"])


def check_km_chart(read: dict[str, Any], result: dict[str, Any]) -> None:
    """The chart shows the result: each released group's curve (gaps where withheld), its
    released points, its band where it carries ``survival_ci`` (each interval from its
    time to the next, none where withheld) and its numbers at risk where it carries
    ``at_risk``; refused groups only in the legend."""
    chart = Chart(read)
    released = [g for g in result["groups"] if not g.get("suppressed")]
    assert [name for name, _ in read["curves"]] == [_name(g) for g in released]
    for (_, d), group in zip(read["curves"], released, strict=True):
        drawn, expected = _pieces(d), km_pieces(group)
        assert len(drawn) == len(expected) and all(
            chart.close(a, b) for a, b in zip(drawn, expected, strict=True)), (drawn, expected)
        points = [(t, s, chart.data(x, y)) for name, t, s, x, y in read["points"]
                  if name == _name(group)]
        opened = sorted((float(t), float(s)) for t, s in
                        zip(group["times"], group["survival"], strict=True) if s is not None)
        assert [(t, s) for t, s, _ in points] == opened
        for t, s, (xt, ys) in points:
            assert abs(xt - t) < 0.01 * chart.x_max and abs(ys - s) < 0.01
        bands = [d for name, d in read["bands"] if name == _name(group)]
        ci = group.get("survival_ci")
        if ci is None:
            assert bands == []
        else:
            steps = sorted(zip(group["times"], ci, strict=True), key=lambda p: float(p[0]))
            expected_boxes = [(float(t), float(steps[j + 1][0]), float(bounds[0]),
                               float(bounds[1]))
                              for j, (t, bounds) in enumerate(steps[:-1]) if bounds is not None]
            [band] = bands
            boxes = []
            for piece in _pieces(band):
                xy = np.asarray([chart.data(x, y) for x, y in piece])
                boxes.append((xy[:, 0].min(), xy[:, 0].max(), xy[:, 1].min(), xy[:, 1].max()))
            assert np.allclose(sorted(boxes), sorted(expected_boxes), atol=0.01), boxes
        at_risk = sorted((t, text) for name, t, text, _ in read["atRisk"]
                         if name == _name(group))
        counts = group.get("at_risk")
        assert at_risk == ([] if counts is None else sorted(
            (float(t), "–" if c is None else str(c))
            for t, c in zip(group["times"], counts, strict=True)))
        medians = [chart.data(x, y) for name, x, y in read["medians"] if name == _name(group)]
        median = group.get("median")
        assert medians == [] if median is None else np.allclose(medians, [(median, 0.5)],
                                                                atol=0.01 * chart.x_max)
        spans = [(chart.data(a, 0)[0], chart.data(b, 0)[0])
                 for name, a, b in read["medianCis"] if name == _name(group)]
        interval = group.get("median_ci")
        if median is None or interval is None or interval == [None, None]:
            assert spans == []
        else:
            last = max(float(t) for t in [median, *group["times"]])
            span = (interval[0] if interval[0] is not None else median,
                    interval[1] if interval[1] is not None else last)
            assert np.allclose(spans, [span], atol=0.01 * chart.x_max), spans
    for group in result["groups"]:
        if group.get("suppressed"):
            assert f"{_name(group)}: not released" in read["legend"]


async def test_canonical_json_signatures_and_plots_match_their_references(
    page_only: str, artifacts: Callable[[WebDriver, str], Path], tmp_path: Path
) -> None:
    key = signing.write_private_key(tmp_path / "owner.pem")
    out = await asyncio.to_thread(
        _page_checks, page_only, (tmp_path / "owner.pem").read_text(), artifacts
    )

    assert out["canonical"] == canonical_json(TRICKY)
    assert out["refusals"] == ["CanonicalJSONError"] * 4 + ["CanonicalJSONError"]
    signed = out["signed"]
    assert "error" not in signed, signed
    assert signed["publicKey"] == base64.b64encode(signing.public_key_bytes(key)).decode()
    assert signed["body"]["payload"] == canonical_json(TRICKY)
    signing.verify_ed25519(
        signing.public_key_bytes(key),
        canonical_json(TRICKY).encode(),
        base64.b64decode(signed["body"]["signature"]),
        "page signature",
    )

    km = out["km"]
    assert "error" not in km, km
    left, top, width, height = (float(v) for v in km["plot"].split(","))
    assert [name for name, _ in km["curves"]] == ["ECOG 0", "ECOG 1-2"]
    for (_, d), group in zip(km["curves"], KM_RESULT["groups"], strict=True):
        expected = [(0.0, 1.0)]
        for t, s in zip(group["times"], group["survival"], strict=True):
            expected += [(float(t), expected[-1][1]), (float(t), s)]
        drawn = [
            ((x - left) / width * km["xMax"], (top + height - y) / height) for x, y in _vertices(d)
        ]
        assert np.allclose(drawn, expected, atol=0.02), (drawn, expected)
    assert "ECOG 0" in km["table"] and "20" in km["table"]
    check_km_chart(km, KM_RESULT)  # the same, read back by the shared check

    km_ci = out["km_ci"]
    assert "error" not in km_ci, km_ci
    check_km_chart(km_ci, KM_WITH_CI)
    assert len(_pieces(km_ci["curves"][0][1])) == 2  # the gap at t = 12
    assert "0 (n = 20, median 21, CI 15–not reached)" in km_ci["legend"]
    assert "2: not released" in km_ci["legend"]
    assert "at risk" not in km["table"] and "S(t) CI" not in km["table"]  # none carried
    assert km["bands"] == km["atRisk"] == []
    for line in ("0 6 0.9 0.66 – 0.97 18", "0 12 withheld  withheld",
                 "0 24 0.45 0.25 – 0.63 7"):
        assert line in km_ci["table"].replace("\t", " "), km_ci["table"]
    assert "not released (fewer than k rows in the group)" in km_ci["table"]

    forms = out["forms"]
    assert "error" not in forms, forms
    for cls in ANALYSES:
        described = cls().describe()
        form = forms[f"{cls.name} v{cls.version}"]
        # (WebDriver hands objects over with their members sorted)
        assert sorted(form["fields"]) == sorted(described["parameters_schema"]["properties"])
        properties = described["parameters_schema"]["properties"]
        if "column" in properties:  # survival names its column "time", tables "row"/"col"
            assert form["parameters"]["column"] == "age"
        if "filter" in properties:
            assert form["parameters"]["filter"] == {"column": "age", "op": ">=", "value": 50}
    quantiles = forms["quantiles v1"]["parameters"]
    # decimals stay strings (canonical JSON has no floats), integers are numbers; the
    # fixed "type" is not sent
    assert quantiles["probabilities"] == ["0.25", "0.5", 1] and quantiles["extremes"] is True
    assert "type" not in quantiles

    bars = out["bars"]
    assert [(level, count) for level, count, _ in bars["bars"]] == [("0", 18), ("1", 22)]
    assert bars["bars"][1][2] / bars["bars"][0][2] == pytest.approx(22 / 18, rel=1e-3)
    assert bars["withheld"] == [["2", "<5"]]  # not opened: a label, never a bar


# -- 2. three nodes: submit, approve and read the result in the page ------------------------

SITE = "tm"
PEOPLE = {
    "alice": (Role.RESEARCHER, None),
    "owner_tm": (Role.DATA_OWNER, SITE),
    "admin": (Role.ADMIN, None),
}
MANIFEST = {
    "columns": [
        {"name": "age", "kind": "numeric", "column": "age", "scale": 0, "unit": "a"},
        {
            "name": "ecog",
            "kind": "categorical",
            "column": "ecog",
            "scale": 0,
            "levels": ["0", "1", "2"],
        },
        {"name": "ecog=0", "kind": "one_hot", "column": "ecog", "scale": 0, "level": "0"},
        {"name": "ecog=1", "kind": "one_hot", "column": "ecog", "scale": 0, "level": "1"},
        {"name": "ecog=2", "kind": "one_hot", "column": "ecog", "scale": 0, "level": "2"},
        {"name": "months", "kind": "numeric", "column": "months", "scale": 0, "unit": "mo",
         "minimum": 0, "maximum": 120},
        {"name": "dead", "kind": "boolean", "column": "dead", "scale": 0},
    ]
}
SUBMIT_AT, APPROVE_AT = 1, 0
#: The times the researcher asks S(t) at in the page: the table of seed 7 has 3 deaths by
#: month 6 (fewer than k = 5: withheld, a gap in the curve), enough after.
KM_TIMES = ("6", "12", "24", "36")
K = 5


def _table(seed: int) -> np.ndarray:
    """age, ecog (level and one-hot), months of follow-up, dead (the manifest's columns)."""
    rng = np.random.default_rng(seed)
    ecog = rng.permutation(np.repeat([0, 1, 2], [15, 12, 9]))
    age = rng.integers(38, 92, ecog.size)
    months = rng.integers(1, 49, ecog.size)
    dead = (rng.random(ecog.size) < 0.8).astype(np.int64)
    return np.column_stack([age, ecog, np.eye(3, dtype=np.int64)[ecog], months, dead]
                           ).astype(np.int64)


def _withheld(months: np.ndarray, dead: np.ndarray, at: Sequence[float]) -> list[bool]:
    """Per requested time (ascending), whether S(t) is withheld: the deaths since the last
    released time are between 1 and k - 1 (:mod:`dic_connector.node.analyses.survival`)."""
    out, last = [], -np.inf
    for t in at:
        deaths = int(((months > last) & (months <= t) & (dead == 1)).sum())
        out.append(0 < deaths < K)
        last = last if out[-1] else t
    return out


def _submit(driver: WebDriver, analysis: str, fields: dict[str, str],
            checks: Sequence[str] = (), after: str | None = None) -> str:
    """Submit ``analysis`` from the form on the chosen study and dataset; its id."""
    Select(driver.find_element(By.ID, "analysis-select")).select_by_visible_text(analysis)
    dataset = driver.find_element(By.CSS_SELECTOR, "input[name=dataset]")
    if not dataset.is_selected():
        dataset.click()
    for name, value in fields.items():
        field = driver.find_element(By.ID, f"param-{name}")
        field.clear()
        field.send_keys(value)
    for name in checks:
        box = driver.find_element(By.ID, f"param-{name}")
        if not box.is_selected():
            box.click()
    driver.find_element(By.ID, "submit-request").click()
    submitted = r"Request ([0-9a-f-]{36}) submitted"

    def new_id(d: WebDriver) -> str | None:
        found = re.search(submitted, d.find_element(By.ID, "message").text)
        return found.group(1) if found and found.group(1) != after else None

    return str(_until(driver, new_id, f"{analysis} submitted"))


def _approve(driver: WebDriver, request_id: str, shoot: Callable[[WebDriver, str], Path],
             name: str) -> tuple[str, str]:
    """Approve a pending request in the dialog, signed in the page; the payload and what
    the dialog says it opens."""
    _click(driver, f'#pending article[data-request-id="{request_id}"] button.approve')
    _until(driver, lambda d: d.find_element(By.ID, "confirm").is_displayed(), "dialog")
    payload = driver.find_element(By.ID, "confirm-payload").text
    discloses = driver.find_element(By.ID, "confirm-discloses").text
    shoot(driver, name)
    driver.find_element(By.ID, "confirm-sign").click()
    _until(
        driver,
        lambda d: f"Signed: approve of {request_id}" in d.find_element(By.ID, "message").text,
        "approval sent",
    )
    return payload, discloses


def _sign_in(driver: WebDriver, url: str, token: str, key: Path | None) -> None:
    driver.get(url)
    _until(driver, lambda d: d.find_element(By.ID, "token").is_displayed(), "sign-in form")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "sign-in-button").click()
    _until(driver, lambda d: d.find_element(By.ID, "who").is_displayed(), "signed in")
    if key is not None:
        driver.find_element(By.ID, "key-file").send_keys(str(key))
        _until(
            driver, lambda d: "key loaded" in d.find_element(By.ID, "key-status").text, "key loaded"
        )


def _row_status(driver: WebDriver, request_id: str) -> str:
    rows = driver.find_elements(By.CSS_SELECTOR, f'tr[data-request-id="{request_id}"] td.status')
    return rows[0].text if rows else ""


def _browse(
    urls: list[str],
    tokens: list[dict[str, str]],
    keys: dict[str, Path],
    certs: list[Path],
    to_deny: str,
    shoot: Callable[[WebDriver, str], Path],
) -> dict[str, Any]:
    driver = _chromium(certs)
    try:
        # the researcher at node-1: a study, then a signed frequency request from the form
        _sign_in(driver, f"{urls[SUBMIT_AT]}/ui/", tokens[SUBMIT_AT]["alice"], keys["alice"])
        assert driver.find_element(By.ID, "who-text").text == "alice (researcher)"
        driver.find_element(By.ID, "study-title").send_keys("Adrenal SBRT (web)")
        driver.find_element(By.ID, "create-study").click()
        _until(
            driver, lambda d: Select(d.find_element(By.ID, "study-select")).options, "study created"
        )
        Select(driver.find_element(By.ID, "analysis-select")).select_by_visible_text("frequency v1")
        discloses = driver.find_element(By.ID, "analysis-discloses").text
        request_id = _submit(driver, "frequency v1", {"column": "ecog"})
        # and a Kaplan-Meier curve with its median, from the survival form
        km_id = _submit(driver, "survival v1", {"time": "months", "event": "dead",
                                                "times": ", ".join(KM_TIMES)},
                        checks=("median",), after=request_id)
        _until(
            driver, lambda d: _row_status(d, request_id) == "awaiting_approval", "awaiting approval"
        )
        _until(
            driver,
            lambda d: (
                len(
                    d.find_element(
                        By.CSS_SELECTOR, f'tr[data-request-id="{request_id}"] td.nodes'
                    ).text.splitlines()
                )
                == len(NODE_NAMES)
            ),
            "the three nodes' status",
        )
        driver.execute_script("document.getElementById('requests').scrollIntoView()")
        shoot(driver, "1-researcher-submitted")

        # the data owner at node-0: the request arrives by replication; approve, signed here
        _sign_in(
            driver, f"{urls[APPROVE_AT]}/ui/", tokens[APPROVE_AT]["owner_tm"], keys["owner_tm"]
        )
        card = f'#pending article[data-request-id="{request_id}"]'

        def arrived(d: WebDriver) -> bool:
            if d.find_elements(By.CSS_SELECTOR, card):
                return True
            d.find_element(By.ID, "refresh").click()
            return False

        _until(driver, arrived, "request replicated to node-0")
        km_card = f'#pending article[data-request-id="{km_id}"]'
        _until(driver, lambda d: arrived(d) and d.find_elements(By.CSS_SELECTOR, km_card),
               "survival request replicated to node-0")
        shown = _text(driver, f"{card} .discloses")
        km_shown = _text(driver, f"{km_card} .discloses")
        shoot(driver, "2-owner-pending")
        payload, dialog_discloses = _approve(driver, request_id, shoot, "3-approval-dialog")
        km_payload, km_dialog = _approve(driver, km_id, shoot, "3-approval-dialog-survival")
        # a request the researcher submitted with the Python client: denied, signed here
        _click(driver, f'#pending article[data-request-id="{to_deny}"] button.deny')
        _until(driver, lambda d: d.find_element(By.ID, "confirm").is_displayed(), "dialog")
        denial = driver.find_element(By.ID, "confirm-payload").text
        driver.find_element(By.ID, "confirm-sign").click()
        _until(driver, lambda d: "Signed: deny" in d.find_element(By.ID, "message").text, "denied")

        # a standing policy, signed in the page, listed, then revoked
        for field, value in (("policy-analyses", "count,mean"), ("policy-columns", "age")):
            driver.find_element(By.ID, field).send_keys(value)
        driver.find_element(By.ID, "create-policy").click()
        policy_row = "#policy-table tbody tr"
        _until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, policy_row), "policy listed")
        policy = _text(driver, policy_row)
        _click(driver, f"{policy_row} button.revoke")
        _until(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, policy_row), "revoked")

        # the researcher again at node-1 (its token is still in that origin's session)
        driver.get(f"{urls[SUBMIT_AT]}/ui/")
        _until(driver, lambda d: _row_status(d, request_id) == "completed", "completed")
        everywhere = [f"{name}: completed" for name in NODE_NAMES]
        _until_on_every_node(driver, request_id, everywhere, "completed on all three nodes")
        _click(driver, f'tr[data-request-id="{request_id}"] button.show-result')
        _until(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, "#chart svg.bars rect.bar"),
            "bar chart",
        )
        bars = [
            (r.get_attribute("data-level"), int(r.get_attribute("data-count") or -1))
            for r in driver.find_elements(By.CSS_SELECTOR, "#chart rect.bar")
        ]
        table = driver.find_element(By.ID, "result-table").text
        shoot(driver, "4-researcher-result")

        # the Kaplan-Meier curve of the survival request, once all three nodes computed it
        _until_on_every_node(driver, km_id, everywhere,
                             "survival completed on all three nodes")
        _click(driver, f'tr[data-request-id="{km_id}"] button.show-result')
        _until(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, "#chart svg.survival path.curve"),
            "Kaplan-Meier chart",
        )
        km = _run_script(driver, KM_CHART)  # as the page drew it
        driver.execute_script("document.getElementById('result').scrollIntoView()")
        shoot(driver, "5-researcher-km-plot")
        token_kept = driver.execute_script("return sessionStorage.getItem('dic.token')")
        local = driver.execute_script("return localStorage.length")
        return {
            "request_id": request_id,
            "km_id": km_id,
            "km": km,
            "km_shown": km_shown,
            "km_payload": km_payload,
            "km_dialog": km_dialog,
            "discloses": discloses,
            "shown": shown,
            "payload": payload,
            "dialog_discloses": dialog_discloses,
            "bars": bars,
            "table": table,
            "token_kept": token_kept,
            "policy": policy,
            "denial": denial,
            "local_storage": local,
        }
    finally:
        driver.quit()


async def test_owner_approves_in_the_page_and_the_researcher_sees_the_plot(
    tmp_path: Path, artifacts: Callable[[WebDriver, str], Path]
) -> None:
    deployment = write_local_deployment(
        tmp_path / "deployment",
        sites=(SITE,),
        extra={"coordination_interval_s": 0.1, "mpc_timeout_s": 10},
    )
    keys = {name: Ed25519PrivateKey.generate() for name in PEOPLE}
    key_files = {name: tmp_path / f"{name}.pem" for name in ("alice", "owner_tm")}
    for name, path in key_files.items():
        signing.write_private_key(path, keys[name])
    table = _table(7)
    async with aiohttp.ClientSession() as http:
        tokens = await register_people(deployment, PEOPLE, keys)
        local = LocalNodes(deployment, http, tokens)
        async with local.running(tmp_path / "logs"):
            endpoints = [
                NodeEndpoint(url, name) for url, name in zip(local.urls, NODE_NAMES, strict=True)
            ]
            await Uploader(
                endpoints, deployment.pki[f"connector.{SITE}"], SITE, timeout_s=30
            ).upload("pilot_adrenal", table.copy(), MANIFEST)
            researcher = Researcher("alice", keys["alice"], local.clients("alice"))
            [dataset] = [d.id for d in await researcher.datasets(at=APPROVE_AT)]
            study = await researcher.create_study("To be denied", at=APPROVE_AT)
            to_deny = await researcher.submit(
                study, "count", [dataset], {"column": "age"}, at=APPROVE_AT
            )
            certs = [deployment.pki[name].cert for name in NODE_NAMES]
            seen = await asyncio.to_thread(
                _browse, local.urls, tokens, key_files, certs, to_deny, artifacts
            )
            owner = DataOwner("owner_tm", SITE, keys["owner_tm"], local.clients("owner_tm"))
            policies = await owner.policies(at=APPROVE_AT)
            await researcher.wait(to_deny, until="rejected")  # on all three nodes
            result = await researcher.result(seen["request_id"])  # equal on all three nodes
            km_result = await researcher.result(seen["km_id"])
            km_request = await researcher.status(seen["km_id"])

    discloses = get_analysis("frequency").discloses
    assert seen["shown"] == f"Opens: {discloses}"
    assert seen["discloses"] == seen["dialog_discloses"] == discloses
    assert seen["payload"] == canonical_json(payloads.approval(seen["request_id"], SITE))
    assert seen["denial"] == canonical_json(payloads.approval(to_deny, SITE, "deny"))
    assert seen["policy"].startswith("count, mean age 5 ")  # signed in the page, accepted
    assert policies == []  # and revoked
    counts = np.bincount(table[:, 1], minlength=3)
    expected = {str(level): int(count) for level, count in enumerate(counts)}
    assert result.aggregates["levels"] == expected
    assert dict(seen["bars"]) == expected
    for level, count in expected.items():
        assert f"{level} {count}" in seen["table"]
    assert seen["token_kept"] == tokens[SUBMIT_AT]["alice"] and seen["local_storage"] == 0

    # the survival request: asked in the form, shown and signed in the owner's dialog,
    # computed equal to lifelines at the released times, and drawn as its result says
    assert km_request is not None and km_request.parameters == {
        "time": "months", "event": "dead", "times": list(KM_TIMES), "median": True}
    survival = get_analysis("survival").discloses
    assert seen["km_shown"] == f"Opens: {survival}" and seen["km_dialog"] == survival
    assert seen["km_payload"] == canonical_json(payloads.approval(seen["km_id"], SITE))
    months, dead = table[:, 5], table[:, 6]
    [group] = km_result.aggregates["groups"]
    at = [float(t) for t in KM_TIMES]
    assert group["n"] == len(months) and group["times"] == at
    kmf = KaplanMeierFitter().fit(months, dead)
    hidden = _withheld(months, dead, at)
    assert hidden[0] and not any(hidden[1:])  # the gap the table is built to have
    for t, s, withheld in zip(at, group["survival"], hidden, strict=True):
        assert (s is None) if withheld else s == pytest.approx(float(kmf.predict(t)), rel=1e-9)
    assert group["median"] == kmf.median_survival_time_
    km = seen["km"]
    assert "error" not in km, km
    check_km_chart(km, km_result.aggregates)  # curves, points, bands and at-risk rows
    assert len(km["points"]) == 3 and len(_pieces(km["curves"][0][1])) == 2
    assert km["legend"] == [f"all (n = {len(months)}, median {group['median']:g})"]
