"""Bodies the node reads: limits on the bytes that actually arrive (chunked bodies declare
no length), strict JSON (depth, lone surrogates, NaN), and share uploads checked for their
connector, version and size before a byte is read."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from dic_connector.node.api.app import MAX_BODY_BYTES
from dic_connector.trust.canonical import strict_loads

from .conftest import Node, TlsNode


async def chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        part = min(size, total - sent)
        sent += part
        yield b" " * part


async def test_a_chunked_body_is_cut_off_at_the_limit(node: Node) -> None:
    # no Content-Length: only counting the bytes as they arrive can refuse it
    response = await node.client.post("/v1/studies", data=chunks(4 * MAX_BODY_BYTES),
                                      headers={**node.auth("alice"),
                                               "Content-Type": "application/json"})
    assert response.status == 413
    assert response.content_type == "application/problem+json"
    declared = await node.client.post("/v1/studies", data=b" " * (MAX_BODY_BYTES + 1),
                                      headers=node.auth("alice"))
    assert declared.status == 413


@pytest.mark.parametrize("body, message", [
    (b"[" * 2000 + b"]" * 2000, "nested deeper"),
    (b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper than 32"),
    (b'{"title": "\\ud800", "description": ""}', "lone surrogate"),
    (b'{"title": NaN, "description": ""}', "NaN is not JSON"),
    (b'{"title": "\xff", "description": ""}', "not UTF-8"),
])
async def test_json_that_cannot_be_stored_is_a_400(node: Node, body: bytes,
                                                   message: str) -> None:
    response = await node.client.post("/v1/studies", data=body, headers={
        **node.auth("alice"), "Content-Type": "application/json"})
    assert response.status == 400
    assert message in (await response.json())["detail"]


def test_strict_loads_accepts_ordinary_json() -> None:
    assert strict_loads(b'{"a": [1, {"b": "\\u00e9"}], "c": null}') == {
        "a": [1, {"b": "é"}], "c": None}
    assert strict_loads("[" * 32 + "]" * 32) is not None
    with pytest.raises(ValueError, match="nested deeper than 32"):
        strict_loads("[" * 33 + "]" * 33)


async def put(tls: TlsNode, version: uuid.UUID, data: bytes | AsyncIterator[bytes],
              cert: str = "connector.tm") -> tuple[int, str]:
    ctx = tls.pki[cert].client_context()
    async with aiohttp.ClientSession() as session, session.put(
            f"{tls.url}/v1/uploads/{version}/columns/age", data=data, ssl=ctx,
            server_hostname="node-0",
            headers={"Content-Type": "application/octet-stream"}) as response:
        return response.status, await response.text()


async def test_a_share_upload_is_checked_before_its_body_is_read(tls_node: TlsNode) -> None:
    store = tls_node.node.store
    async with store.unit_of_work() as uow:  # a fresh receiving version without columns
        fresh = await uow.versions.create(tls_node.node.dataset_id,
                                          {"columns": [{"name": "age"}]}, 24)
    # an unknown version: refused without reading what is sent
    status, _ = await put(tls_node, uuid.uuid4(), chunks(64 * MAX_BODY_BYTES))
    assert status == 404
    # the wrong declared length: refused before reading
    status, text = await put(tls_node, fresh.id, b"\0" * (16 * 24 + 1))
    assert status == 409 and "384 bytes" in text
    # more than the column's size, chunked: cut off at 384 bytes
    status, _ = await put(tls_node, fresh.id, chunks(10 * MAX_BODY_BYTES))
    assert status == 413
    # another site's connector never gets as far
    status, _ = await put(tls_node, fresh.id, b"\0" * 384, cert="connector.tr")
    assert status == 404
    # the right size is stored
    status, _ = await put(tls_node, fresh.id, b"\1" * 384)
    assert status == 200
    async with store.unit_of_work() as uow:
        assert await uow.versions.stored_columns(fresh.id) == ["age"]
