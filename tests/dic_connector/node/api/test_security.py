"""Every route is declared; only health, metrics and the web page's files are public; roles are enforced; no
response carries share bytes."""

from __future__ import annotations

import re
import uuid

from dic_connector.node.api.app import all_endpoints, create_app
from dic_connector.node.config import parse_config

from .conftest import SHARE_MARKER, Node

PUBLIC_PATHS = {"/live", "/ready", "/metrics", "/openapi.json"}


def _concrete(path: str) -> str:
    return re.sub(r"{[a-z_]+}", str(uuid.uuid4()), path)


def test_every_route_is_declared_and_only_health_is_public() -> None:
    app = create_app(parse_config({"node_index": 1, "database_url": "sqlite:///:memory:"}))
    from dic_connector.node.api.keys import ROUTE_ENDPOINTS

    table = app[ROUTE_ENDPOINTS]
    routes = list(app.router.routes())
    assert routes and all(route in table for route in routes)
    public = {table[r].path for r in routes if table[r].is_public}
    page = {path for path in public if path.startswith("/ui/")}
    assert "/ui/" in page and all("{" not in path for path in page)  # static files only
    assert public - page == PUBLIC_PATHS
    for route in routes:
        endpoint = table[route]
        assert endpoint.is_public or endpoint.roles or endpoint.by_certificate, endpoint.path
        assert not (endpoint.by_certificate and endpoint.roles), endpoint.path
        assert not (endpoint.connector and endpoint.peer), endpoint.path
        assert endpoint.peer == endpoint.path.startswith("/v1/peer/"), endpoint.path


async def test_every_protected_route_refuses_anonymous_and_bad_tokens(node: Node) -> None:
    bad_headers = [{}, {"Authorization": "Bearer dic_" + "0" * 32 + "_" + "A" * 43},
                   {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
                   {"Authorization": "Bearer not-a-jwt"}]
    for endpoint in all_endpoints():
        if endpoint.is_public:
            continue
        for headers in bad_headers:
            response = await node.client.request(endpoint.method, _concrete(endpoint.path),
                                                 headers=headers, json={})
            assert response.status == 401, (endpoint.path, headers)
            assert response.headers["Content-Type"].startswith("application/problem+json")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            body = await response.json()
            expected = ("this operation needs a connector's TLS client certificate"
                        if endpoint.connector else
                        "this operation needs a peer node's TLS client certificate"
                        if endpoint.peer else "missing, invalid or expired credentials")
            assert body["detail"] == expected


async def test_roles_are_enforced(node: Node) -> None:
    checks = [
        ("researcher approves", "POST", f"/v1/requests/{uuid.uuid4()}/approvals", "alice"),
        ("owner submits", "POST", f"/v1/studies/{uuid.uuid4()}/requests", "owner_tm"),
        ("researcher verifies audit", "GET", "/v1/audit/verify", "alice"),
        ("node creates study", "POST", "/v1/studies", "node1"),
        ("researcher deletes data", "DELETE", f"/v1/datasets/{node.dataset_id}", "alice"),
    ]
    for label, method, path, who in checks:
        response = await node.client.request(method, path, headers=node.auth(who), json={})
        assert response.status == 403, label
        assert "needs one of the roles" in (await response.json())["detail"]


async def test_health_metrics_and_document_are_public(node: Node) -> None:
    assert (await node.client.get("/live")).status == 200
    ready = await node.client.get("/ready")
    assert ready.status == 200 and (await ready.json())["checks"] == {"database": "ok"}
    await node.client.get("/v1/studies", headers=node.auth("alice"))
    metrics = await (await node.client.get("/metrics")).text()
    assert 'dic_http_requests_total{method="GET",route="/v1/studies",status="200"}' in metrics
    document = await (await node.client.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    assert "/v1/requests/{request_id}/approvals" in document["paths"]


async def test_no_response_ever_contains_share_bytes(node: Node) -> None:
    """Walk every GET as every principal and scan the bodies for the uploaded share bytes."""
    markers = [SHARE_MARKER, SHARE_MARKER.hex().encode()]
    import base64

    markers.append(base64.b64encode(SHARE_MARKER)[:40])
    for endpoint in all_endpoints():
        if endpoint.method != "GET":
            continue
        path = endpoint.path.replace("{request_id}", str(uuid.uuid4()))
        for who in node.tokens:
            body = await (await node.client.get(path, headers=node.auth(who))).read()
            assert not any(m in body for m in markers), (path, who)
