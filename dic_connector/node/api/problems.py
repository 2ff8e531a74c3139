"""Errors as RFC 9457 problem documents; the one place DicError maps to HTTP status codes.

A problem body is ``{"type", "title", "status", "detail"}`` with media type
``application/problem+json`` (https://www.rfc-editor.org/rfc/rfc9457). ``detail`` is the
exception's message, which by the project's rule names places and rules, never row-level
values. Unexpected exceptions become a 500 with a generic detail and are logged with their
traceback on the node, not sent to the caller.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from dic_connector.errors import (
    AnalysisError,
    AuthenticationError,
    AuthorizationError,
    ConfigError,
    ConflictError,
    CoordinationError,
    DataValidationError,
    DicError,
    MappingError,
    NotFoundError,
    PolicyError,
    SourceError,
    StoreError,
)
from dic_connector.node.api.endpoint import Handler

PROBLEM_MEDIA_TYPE = "application/problem+json"

#: DicError subclass -> HTTP status; the first matching class (most specific first) wins.
STATUS_BY_ERROR: tuple[tuple[type[DicError], int], ...] = (
    (AuthenticationError, 401),
    (AuthorizationError, 403),  # includes SignatureError
    (PolicyError, 403),
    (NotFoundError, 404),
    (MappingError, 422),
    (AnalysisError, 422),
    (DataValidationError, 422),
    (ConflictError, 409),  # a state conflict: e.g. blobs for a committed version
    (SourceError, 502),
    (CoordinationError, 503),
    (ConfigError, 500),
    (StoreError, 500),  # the operator's problem: the node's log has the traceback
)


def status_for(error: DicError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 500


def problem(status: int, detail: str, title: str | None = None) -> web.Response:
    body = {
        "type": "about:blank",
        "title": title or _reason(status),
        "status": status,
        "detail": detail,
    }
    response = web.Response(status=status, text=json.dumps(body),
                            content_type=PROBLEM_MEDIA_TYPE)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="dic-connector"'
    return response


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


@web.middleware
async def problem_middleware(request: web.Request,
                             handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DicError as exc:
        status = status_for(exc)
        if status >= 500:
            logging.getLogger("dic_connector.node.api").error(
                "%s in %s %s", type(exc).__name__, request.method, request.path, exc_info=exc)
        return problem(status, str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != PROBLEM_MEDIA_TYPE:
            response = problem(exc.status, exc.reason)
            if exc.status == 405:
                response.headers["Allow"] = exc.headers.get("Allow", "")
            return response
        raise
    except Exception:
        logging.getLogger("dic_connector.node.api").exception(
            "unexpected error in %s %s", request.method, request.path)
        return problem(500, "internal error; the node's log has the details")
