"""One node's control API as one principal: :class:`NodeClient`.

A client holds what a call needs and nothing it would have to clean up: the node's base
URL, the caller's bearer token, the TLS context trusting the deployment CA (and the name the
node's certificate carries, when the URL's host is an address), and an
``aiohttp.ClientSession`` that the *caller* owns and closes. Sharing one session between
the clients of several people and nodes shares its connection pool, and nothing here ever
closes it, so a client can be made and dropped freely.

Every typed method is one endpoint of the API (``dic_connector/node/api``); :meth:`NodeClient.watch`
is the status read that waits on the node for a change (``?wait=`` and ``If-None-Match``),
its wait kept inside the session's timeout. What a node refuses becomes an :class:`~dic_connector.errors.ApiError` with its HTTP status and the
``detail`` of its RFC 9457 problem document, and a node that does not answer an ApiError
with ``status`` None. Messages name the caller, the node, the method and the path, never
the token.
"""

from __future__ import annotations

import json
import math
import ssl
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp

from dic_connector.client.views import (
    AnalysisInfo,
    AnalysisRequest,
    AuditComparison,
    AuditHead,
    AuditVerification,
    Dataset,
    PeerAudits,
    Policy,
    Result,
    Study,
)
from dic_connector.errors import ApiError
from dic_connector.vocabulary import RequestStatus

T = TypeVar("T")
#: The signed API body: ``{"payload": canonical JSON, "signature": base64}``.
Signed = Mapping[str, str]
#: How much of a body that is not a problem document a message quotes.
QUOTED_CHARS = 200
#: The part of the session's timeout a waiting status read may spend waiting on the node
#: (the rest is for the answer to travel).
WAIT_SHARE_OF_TIMEOUT = 0.75


@dataclass(frozen=True)
class StatusRead:
    """What a (waiting) status read answered: the request and its ``ETag`` when the node
    sent it, or ``changed`` False when it is as last seen (304) or still not there (404)."""

    #: The request; None when the node does not show it (404) or it is unchanged (304).
    request: AnalysisRequest | None
    #: The tag to send back in ``If-None-Match``; None from a node that sent none.
    etag: str | None
    #: False: unchanged from the tag given, or still not on the node.
    changed: bool


def _segment(value: object) -> str:
    """A path parameter, quoted so that an id can never change the path it stands in
    (the node answers 404 for an id that is not a UUID)."""
    return quote(str(value), safe="")


@dataclass(frozen=True, kw_only=True)
class NodeClient:
    """The control API of one node, called as one principal."""

    #: The node's control API, e.g. ``https://127.0.0.1:8443`` (no trailing path).
    base_url: str
    #: The caller's session; never closed here.
    session: aiohttp.ClientSession = field(repr=False)
    #: The caller's bearer token (node-issued or an OIDC JWT); None for public endpoints.
    token: str | None = field(default=None, repr=False)
    #: Context verifying the node's certificate (the deployment CA); None: system defaults.
    ssl: ssl.SSLContext | None = field(default=None, repr=False)
    #: The name the node's certificate carries when the URL's host differs (``node-1``).
    server_hostname: str | None = None
    #: How messages name the node; defaults to ``server_hostname`` or the URL's host.
    name: str = ""
    #: How messages name the caller (their principal name).
    principal: str = "anonymous"

    @property
    def node(self) -> str:
        """The node's name in messages."""
        return self.name or self.server_hostname or urlsplit(self.base_url).netloc

    # -- the one way a call is made ---------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """``method path`` with ``body`` as JSON; the JSON answer of a 2xx response.

        ApiError otherwise: the node's status and problem detail, or status None when the
        node could not be reached or sent something that is not JSON.
        """
        return (await self._exchange(method, path, body))[1]

    async def _exchange(self, method: str, path: str, body: Any = None,
                        extra_headers: Mapping[str, str] | None = None,
                        unchanged: bool = False) -> tuple[int, Any, str | None]:
        """Status, JSON answer and ``ETag`` of a 2xx response (or of a 304 when
        ``unchanged`` is expected); ApiError otherwise, as :meth:`call`."""
        where = f"{self.principal} -> {self.node} {method} {path}"
        headers = {"Accept": "application/json", **(extra_headers or {})}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            async with self.session.request(
                    method, self.base_url.rstrip("/") + path, json=body, headers=headers,
                    ssl=self.ssl if self.ssl is not None else True,
                    server_hostname=self.server_hostname) as response:
                status, text = response.status, await response.text()
                etag = response.headers.get("ETag")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # the exception's text names host and port at most; the token is in no message
            raise ApiError(f"{where}: not reachable ({type(exc).__name__}: {exc})") from exc
        if unchanged and status == 304:
            return status, None, etag
        try:
            answer = json.loads(text) if text else None
        except ValueError:
            answer = None
            if 200 <= status < 300:
                raise ApiError(f"{where}: answered {status} with a body that is not JSON",
                               status) from None
        if 200 <= status < 300:
            return status, answer, etag
        detail = str(answer["detail"]) if isinstance(answer, dict) and "detail" in answer \
            else text.strip()[:QUOTED_CHARS] or None
        raise ApiError(f"{where}: answered {status}: {detail or 'no detail'}", status, detail)

    @property
    def longest_wait_s(self) -> float:
        """The longest a status read may ask the node to wait: a share of the session's
        timeout (total or per read), so the answer arrives before the session gives up."""
        timeout = self.session.timeout
        bounds = [b for b in (timeout.total, timeout.sock_read) if b]
        return WAIT_SHARE_OF_TIMEOUT * min(bounds) if bounds else math.inf

    async def _read(self, parse: Callable[[Any], T], method: str, path: str,
                    body: Any = None) -> T:
        """The answer of :meth:`call` read by ``parse``; a body that does not fit the
        response schema is the node's fault, reported as such."""
        answer = await self.call(method, path, body)
        try:
            return parse(answer)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ApiError(f"{self.principal} -> {self.node} {method} {path}: the answer does "
                           f"not fit its schema ({type(exc).__name__}: {exc})") from exc

    async def _list(self, parse: Callable[[Any], T], path: str) -> list[T]:
        return await self._read(lambda items: [parse(item) for item in items], "GET", path)

    # -- health -----------------------------------------------------------------------------

    async def ready(self) -> dict[str, Any]:
        """``GET /ready`` (public): the node and its database serve requests; ApiError with
        status 503 while they do not."""
        return await self._read(dict, "GET", "/ready")

    # -- studies, datasets and the analyses catalogue -----------------------------------------

    async def analyses(self) -> list[AnalysisInfo]:
        """The analyses catalogue: name, version, summary, what each opens, its parameters."""
        return await self._list(AnalysisInfo.from_json, "/v1/analyses")

    async def create_study(self, title: str, description: str = "") -> Study:
        return await self._read(Study.from_json, "POST", "/v1/studies",
                                {"title": title, "description": description})

    async def studies(self) -> list[Study]:
        return await self._list(Study.from_json, "/v1/studies")

    async def datasets(self) -> list[Dataset]:
        """Datasets the caller may see: metadata only (site, name, row count, columns)."""
        return await self._list(Dataset.from_json, "/v1/datasets")

    async def delete_dataset(self, dataset_id: str) -> int:
        """Erase a dataset of the caller's site on this node (the node tells the others);
        the number of versions erased."""
        answer = await self._read(dict, "DELETE", f"/v1/datasets/{_segment(dataset_id)}")
        return int(answer["versions_erased"])

    # -- analysis requests ------------------------------------------------------------------

    async def submit(self, study_id: str, signed: Signed) -> AnalysisRequest:
        """Submit a researcher-signed request payload (idempotent by the payload's id)."""
        return await self._read(AnalysisRequest.from_json, "POST",
                                f"/v1/studies/{_segment(study_id)}/requests", dict(signed))

    async def request(self, request_id: str) -> AnalysisRequest:
        """One request; ApiError 404 while it has not reached this node (or is not the
        caller's to see)."""
        return await self._read(AnalysisRequest.from_json, "GET",
                                f"/v1/requests/{_segment(request_id)}")

    async def watch(self, request_id: str, etag: str | None = None,
                    wait_s: float = 0.0,
                    until: Collection[RequestStatus] | None = None) -> StatusRead:
        """One request once it differs from ``etag`` (the tag of the status last seen; None:
        any status), the node waiting up to ``wait_s`` (cut to :attr:`longest_wait_s` and
        to the node's maximum) for a change, or for its arrival while it is not there;
        with ``until``, for a change to one of those statuses (or an ended one): the node
        does not answer the ones in between (a node that does not know ``until`` does)."""
        path = f"/v1/requests/{_segment(request_id)}"
        wait = min(wait_s, self.longest_wait_s)
        query = f"?wait={wait:.3f}" if wait > 0 else ""
        if query and until:
            query += "&until=" + ",".join(sorted(RequestStatus(s).value for s in until))
        headers = {} if etag is None else {"If-None-Match": etag}
        try:
            status, answer, tag = await self._exchange("GET", path + query, None, headers,
                                                       unchanged=etag is not None)
        except ApiError as exc:
            if exc.status == 404:
                return StatusRead(None, None, False)
            raise
        if status == 304:
            return StatusRead(None, tag or etag, False)
        try:
            request = AnalysisRequest.from_json(answer)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ApiError(f"{self.principal} -> {self.node} GET {path}: the answer does "
                           f"not fit its schema ({type(exc).__name__}: {exc})") from exc
        return StatusRead(request, tag, True)

    async def requests(self) -> list[AnalysisRequest]:
        """Every request the caller may see on this node."""
        return await self._list(AnalysisRequest.from_json, "/v1/requests")

    async def result(self, request_id: str) -> Result:
        """The aggregates of a completed request; ApiError 404 before it completes."""
        return await self._read(Result.from_json, "GET",
                                f"/v1/requests/{_segment(request_id)}/result")

    async def cancel(self, request_id: str) -> AnalysisRequest:
        return await self._read(AnalysisRequest.from_json, "POST",
                                f"/v1/requests/{_segment(request_id)}/cancel")

    # -- a data owner's signed decisions ----------------------------------------------------

    async def approve(self, request_id: str, signed: Signed) -> AnalysisRequest:
        """Post an owner-signed approval (or denial) payload of the request."""
        return await self._read(AnalysisRequest.from_json, "POST",
                                f"/v1/requests/{_segment(request_id)}/approvals",
                                dict(signed))

    async def add_policy(self, signed: Signed) -> Policy:
        return await self._read(Policy.from_json, "POST", "/v1/policies", dict(signed))

    async def policies(self) -> list[Policy]:
        """The active standing policies of the caller's site."""
        return await self._list(Policy.from_json, "/v1/policies")

    async def revoke_policy(self, policy_id: str) -> Policy:
        return await self._read(Policy.from_json, "POST",
                                f"/v1/policies/{_segment(policy_id)}/revoke")

    # -- audit ------------------------------------------------------------------------------

    async def audit_head(self) -> AuditHead:
        return await self._read(AuditHead.from_json, "GET", "/v1/audit/head")

    async def verify_audit(self) -> AuditVerification:
        """The node recomputes its whole hash chain (admin)."""
        return await self._read(AuditVerification.from_json, "GET", "/v1/audit/verify")

    async def compare_audit(self, request_id: str) -> AuditComparison:
        """Every node's chain check and result digest for one computed request (admin)."""
        return await self._read(AuditComparison.from_json, "GET",
                                f"/v1/audit/requests/{_segment(request_id)}")

    async def audit_peers(self) -> PeerAudits:
        """The peers' audit heads this node recorded in the periodic exchange, and their
        open mismatches (admin)."""
        return await self._read(PeerAudits.from_json, "GET", "/v1/audit/peers")
