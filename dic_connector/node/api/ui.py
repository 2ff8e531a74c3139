"""The web page each node serves at ``/ui/``: static files shipped in the package.

``dic_connector/node/web/`` holds plain HTML, ES modules and CSS (no build step, nothing
from elsewhere). The page calls this node's JSON API with the bearer token the user pastes
in (kept in ``sessionStorage``), and signs requests, approvals and policies in the browser
with WebCrypto Ed25519 from a key file the user picks; the key never leaves the browser.

Every file is its own public route, fixed when the app is made (``/ui/`` is
``index.html``): there is no path parameter, hence no traversal and no listing, and the
files hold no data. Each response carries a strict Content-Security-Policy (W3C CSP Level 3:
``default-src 'self'``, no inline script or style, no framing, no form posts elsewhere),
``X-Frame-Options: DENY`` (RFC 7034), ``X-Content-Type-Options: nosniff``, and
``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from dic_connector.node.api.endpoint import PUBLIC, Endpoint, Handler

#: Where the page's files are, in the installed package.
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
INDEX = "index.html"
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def _serve(body: bytes, media_type: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=body, content_type=media_type, charset="utf-8", headers=SECURITY_HEADERS
        )

    return handler


def endpoints(directory: Path = WEB_DIR) -> tuple[Endpoint, ...]:
    """One public GET per file of ``directory`` with a known media type, read now."""
    out = []
    for path in sorted(directory.iterdir()):
        media_type = MEDIA_TYPES.get(path.suffix)
        if media_type is None or not path.is_file():
            continue
        route = "/ui/" if path.name == INDEX else f"/ui/{path.name}"
        stem = "".join(part.capitalize() for part in path.stem.split("-"))
        out.append(
            Endpoint(
                "GET",
                route,
                _serve(path.read_bytes(), media_type),
                f"ui{stem}{path.suffix[1:].capitalize()}",
                f"The web page: {path.name}",
                PUBLIC,
                media_type=media_type,
                tag="ui",
            )
        )
    return tuple(out)
