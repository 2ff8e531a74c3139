"""Request bodies read with a limit on the bytes that actually arrive.

``Content-Length`` is a claim: a chunked request declares none, and a client may send more
than it declared. JSON routes are read by the security middleware with ``request.read()``
under the app's ``client_max_size`` (1 MiB), which aiohttp counts as the bytes arrive. Share
uploads are larger and raw: their handler reads them through :func:`read_exactly`, which
knows the one size a column of the version may have, refuses another declared length before
reading, and :func:`read_limited`, which counts the bytes as they arrive and answers 413 as
soon as the limit is passed, so no body larger than it is ever held in memory.
"""

from __future__ import annotations

import json

from aiohttp import web

from dic_connector.errors import ConflictError
from dic_connector.node.api.problems import PROBLEM_MEDIA_TYPE

#: Bytes read per step.
CHUNK_BYTES = 64 * 1024


def too_large(limit: int, size: int) -> web.HTTPRequestEntityTooLarge:
    """413 as a problem document (RFC 9457)."""
    body = {"type": "about:blank", "title": "Request Entity Too Large", "status": 413,
            "detail": f"body larger than {limit} bytes"}
    return web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size,
                                         text=json.dumps(body),
                                         content_type=PROBLEM_MEDIA_TYPE)


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The whole body, refused with 413 the moment it exceeds ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit, request.content_length)
    parts: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            raise too_large(limit, size)
        parts.append(chunk)
    return b"".join(parts)


async def read_exactly(request: web.Request, size: int, what: str) -> bytes:
    """A body that must be exactly ``size`` bytes: refused (409) before reading when it
    declares another length, and as soon as more arrives than ``size``."""
    declared = request.content_length
    if declared is not None and declared != size:
        raise ConflictError(f"{what} is {size} bytes, the request declares {declared}")
    body = await read_limited(request, size)
    if len(body) != size:
        raise ConflictError(f"{what} is {size} bytes, got {len(body)}")
    return body
