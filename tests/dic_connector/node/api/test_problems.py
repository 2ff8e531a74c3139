"""Errors as RFC 9457 problems: one status per kind of error, and no foreign text leaks."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dic_connector import errors
from dic_connector.node.api.problems import PROBLEM_MEDIA_TYPE, problem_middleware, status_for


@pytest.mark.parametrize("error,status", [
    (errors.AuthenticationError("x"), 401),
    (errors.AuthorizationError("x"), 403),
    (errors.SignatureError("x"), 403),
    (errors.NotFoundError("x"), 404),
    (errors.ConflictError("x"), 409),
    (errors.AnalysisError("x"), 422),
    (errors.CoordinationError("x"), 503),
    (errors.StoreError("x"), 500),
    (errors.EncryptionError("x"), 500),
])
def test_each_kind_of_error_has_its_status(error: errors.DicError, status: int) -> None:
    assert status_for(error) == status


async def _client(raising: BaseException) -> TestClient:  # type: ignore[type-arg]
    async def handler(request: web.Request) -> web.Response:
        raise raising

    app = web.Application(middlewares=[problem_middleware])
    app.router.add_get("/x", handler)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def test_a_conflict_is_409_with_our_message() -> None:
    client = await _client(errors.ConflictError("upload u is committed"))
    try:
        response = await client.get("/x")
        assert response.status == 409
        assert response.content_type == PROBLEM_MEDIA_TYPE
        assert (await response.json())["detail"] == "upload u is committed"
    finally:
        await client.close()


async def test_a_storage_failure_is_500_and_logged_with_its_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    client = await _client(errors.StoreError("audit chain head missing"))
    try:
        with caplog.at_level(logging.ERROR, logger="dic_connector.node.api"):
            response = await client.get("/x")
        assert response.status == 500
        assert any(r.exc_info and "StoreError" in r.getMessage() for r in caplog.records)
    finally:
        await client.close()


async def test_a_foreign_exception_text_never_reaches_the_caller(
        caplog: pytest.LogCaptureFixture) -> None:
    client = await _client(ValueError("SELECT secret FROM patients"))
    try:
        with caplog.at_level(logging.ERROR, logger="dic_connector.node.api"):
            response = await client.get("/x")
        assert response.status == 500
        assert "secret" not in await response.text()
        assert any(r.exc_info for r in caplog.records)
    finally:
        await client.close()
