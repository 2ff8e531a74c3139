"""The access log: method, route template, status, principal, duration; never a token,
a body, a concrete identifier or a query value."""

from __future__ import annotations

import logging
import uuid

import pytest

from dic_connector.node.api.access import ACCESS_LOGGER

from .conftest import Node


async def test_one_line_per_request_without_secrets(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    async with node.store.unit_of_work() as uow:
        alice = await uow.principals.by_name("alice")
    assert alice is not None
    request_id = uuid.uuid4()
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    await node.client.get(
        f"/v1/requests/{request_id}?token=QUERY-SECRET", headers=node.auth("alice")
    )
    await node.client.post(
        "/v1/studies", headers=node.auth("alice"), json={"title": "BODY-SECRET-TITLE"}
    )
    await node.client.get("/v1/studies", headers={"Authorization": "Bearer dic_guess"})
    await node.client.get("/no/such/route")

    records = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    seen = [
        (r.levelno, r.method, r.route, r.status, r.principal)  # type: ignore[attr-defined]
        for r in records
    ]
    assert seen == [
        (logging.INFO, "GET", "/v1/requests/{request_id}", 404, str(alice.id)),
        (logging.INFO, "POST", "/v1/studies", 201, str(alice.id)),
        (logging.INFO, "GET", "/v1/studies", 401, "-"),
        (logging.INFO, "GET", "unmatched", 404, "-"),
    ]
    assert all(r.duration_ms >= 0 for r in records)  # type: ignore[attr-defined]
    text = "\n".join(r.getMessage() for r in records)
    assert text.splitlines()[0].startswith(f"GET /v1/requests/{{request_id}} 404 {alice.id} ")
    for secret in (
        node.tokens["alice"],
        "dic_guess",
        "QUERY-SECRET",
        "BODY-SECRET",
        str(request_id),
    ):
        assert secret not in text
