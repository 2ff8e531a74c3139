"""The web page at ``/ui/``: served with a strict CSP, only its own files, no inline code,
and it calls only the control routes people call (none returns rows or shares)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from dic_connector.node.api.app import all_endpoints
from dic_connector.node.api.ui import WEB_DIR

from .conftest import SHARE_MARKER, Node

UI_FILES = (
    "/ui/",
    "/ui/api.js",
    "/ui/app.js",
    "/ui/canonical.js",
    "/ui/forms.js",
    "/ui/plots.js",
    "/ui/results.js",
    "/ui/signing.js",
    "/ui/style.css",
)


class _Page(HTMLParser):
    """What index.html loads and whether anything in it is inline code."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script":
            self._in_script = True
            if named.get("src") is None:
                self.inline.append("script without src")
        for name in ("src", "href"):
            if tag in {"script", "link"} and named.get(name):
                self.loads.append(str(named[name]))
        self.inline += [
            f"{tag}[{name}]" for name, _ in attrs if name == "style" or name.startswith("on")
        ]
        if tag == "style":
            self.inline.append("style element")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("script body")


async def test_every_file_is_served_with_the_security_headers(node: Node) -> None:
    served = sorted(e.path for e in all_endpoints() if e.path.startswith("/ui/"))
    assert served == sorted(UI_FILES)
    for path in UI_FILES:
        response = await node.client.get(path)
        assert response.status == 200, path
        csp = response.headers["Content-Security-Policy"]
        assert csp.startswith("default-src 'self'"), path
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        body = await response.read()
        name = "index.html" if path == "/ui/" else path.removeprefix("/ui/")
        assert body == (WEB_DIR / name).read_bytes()
        assert SHARE_MARKER not in body
    assert (await node.client.get("/ui/")).content_type == "text/html"
    assert (await node.client.get("/ui/app.js")).content_type == "text/javascript"


async def test_nothing_else_is_served_under_ui(node: Node) -> None:
    for path in (
        "/ui",
        "/ui/index",
        "/ui/../node/api/ui.py",
        "/ui/%2e%2e/api/ui.py",
        "/ui/README.md",
        "/ui/app.js/",
        "/ui/..",
    ):
        assert (await node.client.get(path)).status == 404, path


def test_the_page_has_no_inline_code_and_loads_only_its_own_files() -> None:
    page = _Page()
    page.feed((WEB_DIR / "index.html").read_text())
    assert page.inline == []
    assert page.loads and all(url in UI_FILES for url in page.loads), page.loads
    for path in WEB_DIR.iterdir():
        text = path.read_text()
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert urls == set(), (path.name, urls)  # no CDN, no external font or script
        assert "eval(" not in text and "innerHTML" not in text, path.name
    imports = re.findall(
        r'from "\./([a-z]+\.js)"', "".join(p.read_text() for p in WEB_DIR.glob("*.js"))
    )
    assert imports and all(f"/ui/{name}" in UI_FILES for name in imports)


def _template(path: str) -> str:
    return re.sub(r"\$\{[^}]+\}", "{}", path)


def test_the_page_calls_only_routes_people_call() -> None:
    """Every API call in the page is a declared operation for researchers, owners or
    admins: never a connector's upload or a peer node's route (the only ones that carry
    shares), so no view of the page can show a share or a row."""
    source = "".join(p.read_text() for p in WEB_DIR.glob("*.js"))
    calls = set(re.findall(r'call\("([A-Z]+)", [`"]([^`"]+)[`"]', source))
    assert len(calls) >= 10, calls
    declared = {(e.method, re.sub(r"{[a-z_]+}", "{}", e.path)): e for e in all_endpoints()}
    for method, path in calls:
        endpoint = declared.get((method, _template(path)))
        assert endpoint is not None, (method, path)
        assert endpoint.roles and not endpoint.by_certificate, endpoint.path
        assert not endpoint.path.startswith(("/v1/uploads", "/v1/peer")), endpoint.path


async def test_me_names_the_caller_and_the_nodes(node: Node) -> None:
    me = await (await node.client.get("/v1/me", headers=node.auth("owner_tm"))).json()
    assert me == {
        "name": "owner_tm",
        "role": "data_owner",
        "site": "tm",
        "node": "node-0",
        "nodes": [],
    }
    alice = await (await node.client.get("/v1/me", headers=node.auth("alice"))).json()
    assert (alice["name"], alice["role"], alice["site"]) == ("alice", "researcher", None)
    assert (await node.client.get("/v1/me")).status == 401
