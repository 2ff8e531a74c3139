"""The HTTP layer shared by the FHIR sources: pooling, TLS, retries, auth, error surfacing.

One :class:`HttpClient` per FHIR server holds one pooled ``aiohttp`` session and a semaphore
bounding the requests in flight to that server (``max_concurrency``). Every request goes
through the same retry loop:

* 429, 408 and 5xx answers, timeouts and broken connections are retried up to
  ``max_attempts`` times with exponential backoff and jitter ("equal jitter": half the
  capped exponential delay plus a uniform random half), and a server's ``Retry-After``
  (seconds or HTTP date, RFC 9110 §10.2.3) replaces the computed delay;
* a 2xx body that does not parse as JSON (a page cut short by a proxy) is retried likewise;
* a 401 is answered once by renewing the token (SMART), then surfaced as
  :class:`~dic_connector.errors.SourceAuthError`;
* any other 4xx/5xx becomes a :class:`~dic_connector.errors.SourceError` naming the server,
  method, URL path (never the query, which may carry identifiers) and status, with the
  diagnostics of the server's OperationOutcome (http://hl7.org/fhir/R4/operationoutcome.html)
  or OAuth error.

TLS verification is on by default; ``ca_bundle`` adds a private CA (hospital PKI). Responses
are requested gzip-compressed and decompressed transparently.

Transport seam (the same shape as ``connector.upload.Uploader`` and
``node.coordination.peers.PeerClient``): ``HttpClient(..., session=s)`` sends every request,
token requests and streams included, through the caller's ``aiohttp.ClientSession``. The
caller owns it: :meth:`HttpClient.close` and ``async with`` exit never close it. Without
``session`` the client creates its own pooled session on first use and closes it as before.
Everything that makes a request correct is passed per request rather than configured on the
session, so an injected session (a test's fault-injecting or counting middleware, a shared
application pool) cannot weaken it: the TLS context (``ssl=``, so ``verify_tls`` and
``ca_bundle`` still apply), the timeouts, ``User-Agent`` and ``Accept-Encoding``, and the
concurrency limit (a semaphore of the client, not the connector's pool size).
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import email.utils
import json
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from dic_connector.errors import SourceAuthError, SourceError, SourceTimeoutError
from dic_connector.sources.auth import AuthConfig, Authenticator, NoAuth, make_authenticator

Sleep = Callable[[float], Awaitable[None]]
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a request again."""

    max_attempts: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    #: a server's Retry-After is honoured up to this many seconds
    retry_after_max_s: float = 300.0
    statuses: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Delay before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        cap = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (attempt - 1))
        return cap / 2 + rng.uniform(0.0, cap / 2)


@dataclass(frozen=True)
class HttpConfig:
    """Connection settings for one FHIR server."""

    connect_timeout_s: float = 10.0
    #: longest silence while waiting for (the next part of) an answer
    read_timeout_s: float = 60.0
    max_concurrency: int = 4
    verify_tls: bool = True
    ca_bundle: Path | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    user_agent: str = "dic-connector/0.1"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: str


def where(method: str, url: str | URL) -> str:
    """``host:port METHOD /path`` for messages: no query string, no credentials."""
    u = URL(url) if isinstance(url, str) else url
    return f"{u.host}:{u.port} {method} {u.path}"


def diagnostics(body: bytes) -> str:
    """The server's own explanation from an OperationOutcome or OAuth error body."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return f"non-JSON body of {len(body)} bytes" if body else "empty body"
    if isinstance(doc, dict) and doc.get("resourceType") == "OperationOutcome":
        parts = []
        for issue in doc.get("issue", [])[:5]:
            text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
            parts.append(f"{issue.get('severity', '?')}/{issue.get('code', '?')}: {text}".strip())
        return "; ".join(parts)[:1000] or "OperationOutcome without issues"
    if isinstance(doc, dict) and "error" in doc:
        return f"{doc['error']}: {doc.get('error_description', '')}"[:1000]
    return "JSON body without OperationOutcome"


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds requested by a ``Retry-After`` header (delta-seconds or HTTP date)."""
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HttpClient:
    """Pooled, retrying, authenticated JSON/stream client for one FHIR server."""

    def __init__(self, base_url: str, auth: AuthConfig | None = None,
                 config: HttpConfig | None = None, *, sleep: Sleep = asyncio.sleep,
                 seed: int | None = None, session: aiohttp.ClientSession | None = None
                 ) -> None:
        self.base_url = base_url.rstrip("/")
        self.config = config or HttpConfig()
        self.authenticator: Authenticator = make_authenticator(auth or NoAuth(), self.base_url)
        self._sleep = sleep
        self._rng = random.Random(seed)
        #: the caller's session (never closed here), or None: we create and close our own
        self._injected = session
        self._session: aiohttp.ClientSession | None = session
        self._semaphore: asyncio.Semaphore | None = None
        self._ssl_context: ssl.SSLContext | bool | None = None
        self._timeout = aiohttp.ClientTimeout(total=None,
                                              sock_connect=self.config.connect_timeout_s,
                                              sock_read=self.config.read_timeout_s)
        #: retries made so far, and delays waited (observable in tests and metrics)
        self.retries = 0
        self.delays: list[float] = []

    # ------------------------------------------------------------------ session

    def _ssl(self) -> ssl.SSLContext | bool:
        """The ``ssl=`` of every request, built on first use and then kept: a context with a
        CA bundle reads the file, and one object per client lets aiohttp reuse connections
        (its pool is keyed by it)."""
        if self._ssl_context is None:
            if not self.config.verify_tls:
                self._ssl_context = False
            elif self.config.ca_bundle is not None:
                self._ssl_context = ssl.create_default_context(cafile=str(self.config.ca_bundle))
            else:
                self._ssl_context = True
        return self._ssl_context

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session requests go through: the injected one, or ours (created on first use).

        TLS, timeouts and identifying headers are passed per request, so our own session
        needs nothing but a pool sized to the concurrency limit.
        """
        n = self.config.max_concurrency
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=n + 2, limit_per_host=n + 2),
                timeout=self._timeout)
            self._semaphore = None  # a new session of ours gets a new limit, as it always did
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(n)
        return self._session

    async def close(self) -> None:
        """Close the session we created; an injected session stays open (its owner closes it)."""
        if self._session is not None and self._session is not self._injected:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ requests

    async def _headers(self, headers: Mapping[str, str] | None, authenticate: bool
                       ) -> dict[str, str]:
        out = {"User-Agent": self.config.user_agent, "Accept-Encoding": "gzip, deflate",
               "Accept": FHIR_JSON, **(headers or {})}
        if authenticate:
            value = await self.authenticator.header(self)
            if value:
                out["Authorization"] = value
        return out

    async def sleep(self, seconds: float) -> None:
        """Wait (through the injectable ``sleep``, so tests record instead of waiting)."""
        await self._sleep(seconds)

    async def wait_before_retry(self, attempt: int,
                                response_headers: Mapping[str, str] | None) -> None:
        """Back off before retry ``attempt + 1``; a ``Retry-After`` header takes precedence."""
        policy = self.config.retry
        delay = policy.backoff_s(attempt, self._rng)
        asked = retry_after_s(response_headers) if response_headers is not None else None
        if asked is not None:
            delay = min(asked, policy.retry_after_max_s)
        self.retries += 1
        self.delays.append(delay)
        await self._sleep(delay)

    async def request(self, method: str, url: str, *, params: Any = None,
                      data: Any = None, headers: Mapping[str, str] | None = None,
                      authenticate: bool = True, ok: Collection[int] = (200,),
                      retry_statuses: Collection[int] | None = None,
                      want_json: bool = False) -> tuple[HttpResponse, Any]:
        """Send with retries; returns the response and, if ``want_json``, its parsed body."""
        session = self.session
        assert self._semaphore is not None
        statuses = self.config.retry.statuses if retry_statuses is None else retry_statuses
        renewed = False
        attempt = 0
        last = "no attempt made"
        timed_out = False
        while True:
            attempt += 1
            response_headers: Mapping[str, str] | None = None
            send_headers = await self._headers(headers, authenticate)
            try:
                async with self._semaphore, session.request(
                        method, url, params=params, data=data, headers=send_headers,
                        allow_redirects=True, ssl=self._ssl(),
                        timeout=self._timeout) as resp:
                    body = await resp.read()
                    result = HttpResponse(resp.status, resp.headers, body, str(resp.url))
            except aiohttp.ClientSSLError as exc:
                raise SourceError(f"{where(method, url)}: TLS verification failed "
                                  f"({type(exc).__name__})") from None
            except (TimeoutError, aiohttp.ClientError) as exc:
                timed_out = isinstance(exc, TimeoutError)
                last = "timed out" if timed_out else f"connection failed ({type(exc).__name__})"
            else:
                timed_out = False
                response_headers = result.headers
                if result.status == 401 and authenticate and self.authenticator.renewable \
                        and not renewed:
                    self.authenticator.invalidate()
                    renewed = True
                    attempt -= 1
                    continue
                if result.status in ok:
                    if not want_json:
                        return result, None
                    try:
                        # FHIR decimals keep their written precision (see mapping)
                        return result, (json.loads(result.body, parse_float=decimal.Decimal)
                                        if result.body else None)
                    except ValueError:
                        last = f"HTTP {result.status} with a body that is not complete JSON"
                elif result.status in (401, 403):
                    raise SourceAuthError(f"{where(method, url)}: HTTP {result.status}: "
                                          f"{diagnostics(result.body)}")
                elif result.status in statuses:
                    last = f"HTTP {result.status}: {diagnostics(result.body)}"
                else:
                    raise SourceError(f"{where(method, url)}: HTTP {result.status}: "
                                      f"{diagnostics(result.body)}")
            if attempt >= self.config.retry.max_attempts:
                error = SourceTimeoutError if timed_out else SourceError
                raise error(f"{where(method, url)}: gave up after {attempt} attempts: {last}")
            await self.wait_before_retry(attempt, response_headers)

    async def fetch_json(self, method: str, url: str, *, data: Mapping[str, str] | None = None,
                         authenticate: bool = True) -> Any:
        """JSON body of a successful request (used by token discovery and exchange)."""
        headers = {"Accept": "application/json"}
        _, doc = await self.request(method, url, data=data, headers=headers,
                                    authenticate=authenticate, want_json=True)
        return doc

    @contextlib.asynccontextmanager
    async def open_stream(self, url: str, *, authenticate: bool = True,
                          headers: Mapping[str, str] | None = None
                          ) -> AsyncIterator[aiohttp.ClientResponse]:
        """An open 200 response whose body the caller reads incrementally.

        Establishing the response is retried like :meth:`request`; failures while reading the
        body are the caller's to handle (see ``fhir_bulk``), since only it knows how far it got.
        """
        session = self.session
        assert self._semaphore is not None
        attempt = 0
        renewed = False
        while True:
            attempt += 1
            send_headers = await self._headers(headers, authenticate)
            await self._semaphore.acquire()
            resp: aiohttp.ClientResponse | None = None
            problem: str
            timed_out = False
            try:
                resp = await session.get(url, headers=send_headers, ssl=self._ssl(),
                                         timeout=self._timeout)
            except aiohttp.ClientSSLError as exc:
                self._semaphore.release()
                raise SourceError(f"{where('GET', url)}: TLS verification failed "
                                  f"({type(exc).__name__})") from None
            except (TimeoutError, aiohttp.ClientError) as exc:
                self._semaphore.release()
                timed_out = isinstance(exc, TimeoutError)
                problem = "timed out" if timed_out else f"connection failed ({type(exc).__name__})"
                response_headers = None
            else:
                if resp.status == 200:
                    try:
                        yield resp
                    finally:
                        resp.release()
                        self._semaphore.release()
                    return
                body = await resp.read()
                resp.release()
                self._semaphore.release()
                response_headers = resp.headers
                problem = f"HTTP {resp.status}: {diagnostics(body)}"
                if resp.status == 401 and authenticate and self.authenticator.renewable \
                        and not renewed:
                    self.authenticator.invalidate()
                    renewed, attempt = True, attempt - 1
                    continue
                if resp.status in (401, 403):
                    raise SourceAuthError(f"{where('GET', url)}: {problem}")
                if resp.status not in self.config.retry.statuses:
                    raise SourceError(f"{where('GET', url)}: {problem}")
            if attempt >= self.config.retry.max_attempts:
                error = SourceTimeoutError if timed_out else SourceError
                raise error(f"{where('GET', url)}: gave up after {attempt} attempts: {problem}")
            await self.wait_before_retry(attempt, response_headers)
