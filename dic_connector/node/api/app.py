"""``create_app(config)``: the node's aiohttp application.

Middlewares, outermost first: the access log (:mod:`.access`), metrics (count and time by
route template), problems (errors to RFC 9457 documents), security (authenticate, with
failed authentications counted and limited by :mod:`.throttle`; check the endpoint's roles;
validate the body against its schema). Resources are opened and closed in
``cleanup_ctx``; state lives in typed ``web.AppKey`` s, never in module globals.

The app refuses to start if any route lacks an :class:`~.endpoint.Endpoint` declaration.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable

from aiohttp import web

from dic_connector import __version__
from dic_connector.errors import AuthenticationError
from dic_connector.node.api import (
    analyses,
    approvals,
    audit,
    caller,
    datasets,
    health,
    peer,
    progress,
    requests,
    ui,
    uploads,
)
from dic_connector.node.api.access import access_log_middleware, route_template
from dic_connector.node.api.auth import Authenticator, JwtVerifier, require_role
from dic_connector.node.api.changes import RequestChanges
from dic_connector.node.api.endpoint import Endpoint, Handler
from dic_connector.node.api.keys import (
    AUTH_THROTTLE,
    AUTHENTICATOR,
    CONFIG,
    COORDINATION,
    IDENTITY,
    METRICS,
    PRINCIPAL,
    REQUEST_CHANGES,
    ROUTE_ENDPOINTS,
    STORE,
    Metrics,
)
from dic_connector.node.api.openapi import build_document
from dic_connector.node.api.problems import problem, problem_middleware
from dic_connector.node.api.schemas import schema_error
from dic_connector.node.api.throttle import FailedAuthThrottle
from dic_connector.node.config import NodeConfig
from dic_connector.node.coordination.computation import mpc_addresses
from dic_connector.node.coordination.coordinator import Coordination
from dic_connector.node.coordination.recovery import recover_in_doubt
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.canonical import strict_loads
from dic_connector.trust.keyring import NodeKeyring
from mpc.mux import ChannelPool

MAX_BODY_BYTES = 1 << 20
#: How long shutdown waits for background work to finish its current step.
SHUTDOWN_GRACE_S = 10.0


def all_endpoints() -> tuple[Endpoint, ...]:
    return (*health.ENDPOINTS, *caller.ENDPOINTS, *requests.ENDPOINTS, *progress.ENDPOINTS,
            *approvals.ENDPOINTS, *datasets.ENDPOINTS, *analyses.ENDPOINTS, *audit.ENDPOINTS,
            *uploads.ENDPOINTS, *peer.ENDPOINTS, *ui.endpoints())


@web.middleware
async def metrics_middleware(request: web.Request,
                             handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    template = route_template(request)
    response = await handler(request)
    instruments = request.app[METRICS]
    instruments.requests.labels(request.method, template, str(response.status)).inc()
    instruments.latency.labels(request.method, template).observe(time.perf_counter() - started)
    return response


@web.middleware
async def security_middleware(request: web.Request,
                              handler: Handler) -> web.StreamResponse:
    endpoint = request.app[ROUTE_ENDPOINTS].get(request.match_info.route)
    if endpoint is None:  # the router's own 404/405: nothing to protect
        return await handler(request)
    try:
        if endpoint.connector:  # 401 unless a connector certificate
            request[PRINCIPAL] = f"connector.{uploads.connector_identity(request).site_id}"
        elif endpoint.peer:  # 401 unless a peer node's certificate
            request[PRINCIPAL] = peer.peer_name(request)
        elif not endpoint.is_public:
            who = await request.app[AUTHENTICATOR].identify(request)
            request[IDENTITY], request[PRINCIPAL] = who, str(who.principal_id)
    except AuthenticationError as exc:
        return failed_authentication(request, endpoint, str(exc))
    if IDENTITY in request:
        require_role(request[IDENTITY], endpoint.roles)
    for name in endpoint.uuid_params:
        try:
            uuid.UUID(request.match_info[name])
        except ValueError:
            return problem(404, f"{name} is not a valid id")
    if endpoint.body_media_type is not None:  # raw bodies: the handler reads and limits them
        return await handler(request)
    # Every other route: at most MAX_BODY_BYTES (the app's client_max_size, which
    # aiohttp counts as the bytes arrive, chunked bodies included), parsed strictly.
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return problem(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return problem(413, f"body larger than {MAX_BODY_BYTES} bytes")
    if endpoint.request_validator is not None:
        try:
            body = strict_loads(raw or b"null")
        except ValueError as exc:
            return problem(400, f"body is not valid JSON: {exc}")
        error = schema_error(endpoint.request_validator, body)
        if error is not None:
            return problem(400, f"body {error}"[:500])
    return await handler(request)


def failed_authentication(request: web.Request, endpoint: Endpoint,
                          detail: str) -> web.Response:
    """Count a failed authentication by its kind and charge it to the caller's address and
    token id: 401, or 429 with ``Retry-After`` once a bucket is dry (:mod:`.throttle`)."""
    if endpoint.connector or endpoint.peer:
        reason, token_id = "certificate", None
    else:
        reason, token_id = request.app[AUTHENTICATOR].failure_class(request)
    instruments = request.app[METRICS]
    instruments.auth_failures.labels(reason).inc()
    throttled = request.app[AUTH_THROTTLE].failed(request.remote, token_id)
    if throttled is None:
        return problem(401, detail)
    instruments.auth_throttled.labels(throttled.bucket).inc()
    response = problem(429, f"too many failed authentications from this {throttled.bucket}; "
                       f"retry after {throttled.retry_after_s} s")
    response.headers["Retry-After"] = str(throttled.retry_after_s)
    return response


async def _clean_stale_uploads(app: web.Application, stopping: asyncio.Event) -> None:
    """Erase uploads abandoned half-way (a connector or node died) before this node voted:
    they were never visible, and their blobs must not linger. Then resolve the versions this
    node voted ready on and never learnt the outcome of, by asking the peers
    (:func:`~dic_connector.node.coordination.recovery.recover_in_doubt`). Runs on startup
    and every ``cleanup_interval_s`` until ``stopping``."""
    config = app[CONFIG]
    log = logging.getLogger("dic_connector.node.api")
    while not stopping.is_set():
        try:
            async with app[STORE].unit_of_work() as uow:
                erased = await uow.versions.cleanup_stale_receiving(
                    dt.timedelta(seconds=config.stale_upload_after_s))
                for version_id in erased:
                    await uow.audit.append("node:cleanup", "upload.expire",
                                           f"version:{version_id}")
            if erased:
                log.info("erased %d abandoned upload(s)", len(erased))
        except Exception:  # keep cleaning on the next tick; the log says why
            log.exception("stale upload cleanup failed")
        try:
            await recover_in_doubt(app[STORE], config)
        except Exception:  # ask again on the next tick
            log.exception("recovery of uploads in doubt failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), config.cleanup_interval_s)


def _register(app: web.Application, endpoints: Iterable[Endpoint]) -> None:
    table: dict[web.AbstractRoute, Endpoint] = {}
    for endpoint in endpoints:
        table[app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)] = endpoint
    app[ROUTE_ENDPOINTS] = table


def create_app(config: NodeConfig, keyring: NodeKeyring | None = None,
               store: Store | None = None) -> web.Application:
    """The node API. ``store`` may be given (tests); otherwise it is opened from the config
    with ``keyring`` and closed on shutdown."""
    app = web.Application(middlewares=[access_log_middleware, metrics_middleware,
                                       problem_middleware, security_middleware],
                          client_max_size=MAX_BODY_BYTES)
    app[CONFIG] = config
    app[METRICS] = Metrics.create()
    app[REQUEST_CHANGES] = RequestChanges()
    app[AUTH_THROTTLE] = FailedAuthThrottle(config.auth.failure_burst,
                                            config.auth.failure_refill_per_s)
    endpoints = all_endpoints()
    document = build_document(endpoints, __version__)

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(document)

    openapi = Endpoint("GET", "/openapi.json", openapi_json, "openapi",
                       "This API's OpenAPI 3.1 document", frozenset(), tag="health")
    document["paths"]["/openapi.json"] = {"get": {
        "operationId": "openapi", "summary": openapi.summary, "tags": ["health"],
        "security": [], "responses": {"200": {"description": openapi.summary,
                                              "content": {"application/json": {
                                                  "schema": {"type": "object"}}}}}}}
    _register(app, (*endpoints, openapi))

    async def storage(app: web.Application) -> AsyncIterator[None]:
        owned = store is None
        if store is None:
            if keyring is None:
                raise RuntimeError("create_app needs a keyring or a store")
            app[STORE] = Store.open(config.database_url, keyring)
        else:
            app[STORE] = store
        app[STORE].on_writer_wait = app[METRICS].lock_wait.labels("database_writers").observe
        verifier = JwtVerifier(config.auth) if config.auth.jwks_file is not None else None
        app[AUTHENTICATOR] = Authenticator(app[STORE], verifier)
        app[STORE].request_observers.append(app[REQUEST_CHANGES].notify)
        yield
        app[STORE].request_observers.remove(app[REQUEST_CHANGES].notify)
        if owned:
            await app[STORE].close()

    async def release_waiters(app: web.Application) -> None:
        app[REQUEST_CHANGES].close()  # before the server waits for its open requests

    async def stale_upload_cleanup(app: web.Application) -> AsyncIterator[None]:
        stopping = asyncio.Event()
        task = asyncio.create_task(_clean_stale_uploads(app, stopping))
        yield
        stopping.set()  # finish the current sweep rather than cancel it mid-transaction
        try:
            await asyncio.wait_for(asyncio.shield(task), SHUTDOWN_GRACE_S)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def coordination(app: web.Application) -> AsyncIterator[None]:
        # the node's MPC connections to its peers, one per pair, shared by every session
        # (node 0 and 1 listen; node 2 only dials)
        pool = (ChannelPool(config.node_index, mpc_addresses(config), config.tls)
                if config.coordinated and config.tls is not None else None)
        if pool is not None:
            await pool.start()
        app[COORDINATION] = Coordination(app[STORE], config, pool)
        app[COORDINATION].on_compute_wait = app[METRICS].lock_wait.labels("compute").observe
        task = asyncio.create_task(app[COORDINATION].run())
        yield
        app[COORDINATION].stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), SHUTDOWN_GRACE_S)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await app[COORDINATION].close(SHUTDOWN_GRACE_S)
        if pool is not None:
            await pool.close()

    app.cleanup_ctx.append(storage)
    app.on_shutdown.append(release_waiters)
    app.cleanup_ctx.append(stale_upload_cleanup)
    app.cleanup_ctx.append(coordination)
    app.cleanup_ctx.append(progress.peer_status_client)
    unprotected = [r for r in app.router.routes() if r not in app[ROUTE_ENDPOINTS]]
    if unprotected:
        raise RuntimeError(f"routes without an endpoint declaration: {unprotected}")
    return app
