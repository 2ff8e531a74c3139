"""FHIR REST search as a source: paged searchsets, incremental pulls, includes.

Implements the parts of FHIR R4 search (http://hl7.org/fhir/R4/search.html) a cohort pull
needs:

* ``_count`` paging that follows each Bundle's ``next`` link (§3.1.1.6.3 *Paging*), resolved
  against the current page's URL so relative and absolute links both work. A ``next`` link to
  another origin is refused, since it would carry our credentials elsewhere.
* incremental pulls: ``since`` adds ``_lastUpdated=ge<instant>`` (§3.1.1.5.11), the same
  "changed at or after" as Bulk ``_since``. The next ``since``
  (:attr:`FhirRestSource.next_since`) is the server's own time of the *first* page of the
  earliest search (``Bundle.meta.lastUpdated``): the REST analogue of a Bulk
  ``transactionTime``. A resource written while the pull pages on is then pulled again next
  time rather than missed, and no client clock is involved. Servers that do not stamp their
  Bundles fall back to the latest ``meta.lastUpdated`` seen, where ``ge`` repeats that one
  boundary resource (harmless: pulls are upserts).
* ``_include`` / ``_revinclude`` (§3.1.1.5.12); included resources repeated on several pages
  are yielded once.
* ``POST [type]/_search`` with a form body (§3.1.1.2) when the query string would be long.
* ``Prefer: handling=strict`` by default, so that a server refuses a parameter it does not
  understand instead of silently widening the cohort.

Pages are fetched one ahead of the consumer (while the consumer works on page *k*, page *k+1*
is in flight), and several searches may run side by side (``parallel_searches``), all within
the server's concurrency limit. No page is lost or repeated: retries happen per page before anything of it is
yielded, duplicate matches (a server re-ordering under concurrent writes) are dropped, and when
the server announced ``Bundle.total`` the number of distinct matches must equal it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlencode, urljoin

from yarl import URL

from dic_connector.errors import SourceError
from dic_connector.sources.auth import AuthConfig, NoAuth
from dic_connector.sources.base import Item, ProgressCallback, Source, merge_streams
from dic_connector.sources.http import HttpClient, HttpConfig, where
from dic_connector.sources.validation import validate_resource

FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class SearchSpec:
    """One type-level search: ``GET [base]/[resource_type]?[params]``."""

    resource_type: str
    params: tuple[tuple[str, str], ...] = ()
    include: tuple[str, ...] = ()
    revinclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class FhirRestConfig:
    """A FHIR REST source: server, credentials and the searches that make up the cohort."""

    base_url: str
    searches: tuple[SearchSpec, ...]
    auth: AuthConfig = field(default_factory=NoAuth)
    http: HttpConfig = field(default_factory=HttpConfig)
    page_size: int = 500
    #: FHIR instant; only resources updated after it are pulled
    since: str | None = None
    #: ``None``: POST ``_search`` when the query string exceeds ``post_threshold_chars``
    use_post: bool | None = None
    post_threshold_chars: int = 1800
    strict_handling: bool = True
    #: searches run side by side (still bounded by the client's ``max_concurrency``)
    parallel_searches: int = 1
    verify_total: bool = True
    validate: bool = False


@dataclass
class _Page:
    url: str
    bundle: dict[str, Any]
    nbytes: int
    first: bool = False


class FhirRestSource(Source):
    """Streams the resources matched (and included) by the configured searches."""

    kind: ClassVar[str] = "fhir-rest"

    def __init__(self, config: FhirRestConfig, *, client: HttpClient | None = None,
                 on_progress: ProgressCallback | None = None) -> None:
        super().__init__(on_progress)
        self.config = config
        self._own_client = client is None
        self.client = client or HttpClient(config.base_url, config.auth, config.http)
        self._origin = URL(self.client.base_url).origin()
        #: latest ``meta.lastUpdated`` among the resources yielded
        self.high_water_mark: str | None = None
        #: earliest server time (``Bundle.meta.lastUpdated``) of a first search page
        self.search_time: str | None = None
        self._expected = 0

    async def aclose(self) -> None:
        if self._own_client:
            await self.client.close()

    @property
    def next_since(self) -> str | None:
        """``since`` for the next incremental pull (after this one has completed)."""
        return self.search_time or self.high_water_mark or self.config.since

    def _first_request(self, spec: SearchSpec) -> tuple[str, list[tuple[str, str]]]:
        params = list(spec.params)
        params.append(("_count", str(self.config.page_size)))
        if self.config.since:
            params.append(("_lastUpdated", f"ge{self.config.since}"))
        params += [("_include", v) for v in spec.include]
        params += [("_revinclude", v) for v in spec.revinclude]
        return f"{self.client.base_url}/{spec.resource_type}", params

    def _headers(self) -> dict[str, str]:
        return {"Prefer": "handling=strict"} if self.config.strict_handling else {}

    async def _fetch(self, method: str, url: str, params: list[tuple[str, str]] | None,
                     first: bool = False) -> _Page:
        headers = self._headers()
        data = None
        if method == "POST":
            headers["Content-Type"] = FORM
            data, params = urlencode(params or []), None
        response, bundle = await self.client.request(method, url, params=params, data=data,
                                                     headers=headers, want_json=True)
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise SourceError(f"{where(method, url)}: answer is not a Bundle")
        return _Page(response.url, bundle, len(response.body), first)

    def _next_url(self, page: _Page) -> str | None:
        for link in page.bundle.get("link", []) or []:
            if link.get("relation") == "next" and link.get("url"):
                target = urljoin(page.url, str(link["url"]))
                if URL(target).origin() != self._origin:
                    raise SourceError(f"{where('GET', page.url)}: next link leaves the server "
                                      f"({URL(target).host}); refused")
                return target
        return None

    async def stream(self) -> AsyncIterator[Item]:
        searches = self.config.searches
        if self.config.parallel_searches > 1 and len(searches) > 1:
            merged = merge_streams([self._search(s) for s in searches],
                                   self.config.parallel_searches)
            async for item in merged:
                yield item
            return
        for spec in searches:
            async for item in self._search(spec):
                yield item

    async def _search(self, spec: SearchSpec) -> AsyncIterator[Item]:
        url, params = self._first_request(spec)
        method = "GET"
        if self.config.use_post or (self.config.use_post is None
                                    and len(urlencode(params)) > self.config.post_threshold_chars):
            method, url = "POST", f"{url}/_search"
        seen_matches: set[str] = set()
        seen_included: set[str] = set()
        total: int | None = None
        pending: asyncio.Task[_Page] | None = asyncio.ensure_future(
            self._fetch(method, url, params, first=True))
        try:
            while pending is not None:
                page = await pending
                pending = None
                next_url = self._next_url(page)
                if next_url is not None:
                    pending = asyncio.ensure_future(self._fetch("GET", next_url, None))
                if page.first:
                    stamp = (page.bundle.get("meta") or {}).get("lastUpdated")
                    if isinstance(stamp, str) and (self.search_time is None
                                                   or stamp < self.search_time):
                        self.search_time = stamp
                if total is None and isinstance(page.bundle.get("total"), int):
                    total = page.bundle["total"]
                    self._expected += total
                for entry in page.bundle.get("entry", []) or []:
                    item = self._accept(entry, spec, page, seen_matches, seen_included)
                    if item is not None:
                        yield item
                self._tracker.update(units=1, nbytes=page.nbytes, expected=self._expected)
        finally:
            if pending is not None:
                pending.cancel()
                # collects the prefetch's end (cancelled, or its own error) without
                # swallowing a cancellation of this task
                await asyncio.gather(pending, return_exceptions=True)
        if self.config.verify_total and total is not None and len(seen_matches) != total:
            raise SourceError(
                f"{where(method, url)}: server announced {total} matches but paging delivered "
                f"{len(seen_matches)}; a page was lost or the data changed during the pull")

    def _accept(self, entry: dict[str, Any], spec: SearchSpec, page: _Page,
                seen_matches: set[str], seen_included: set[str]) -> Item | None:
        resource = entry.get("resource")
        mode = (entry.get("search") or {}).get("mode", "match")
        if not isinstance(resource, dict):
            return None
        rtype = resource.get("resourceType")
        if mode == "outcome" or (rtype == "OperationOutcome" and rtype != spec.resource_type):
            self._check_outcome(resource, page.url)
            return None
        key = f"{rtype}/{resource.get('id')}"
        seen = seen_matches if mode == "match" else seen_included
        if key in seen or (mode != "match" and key in seen_matches):
            return None
        seen.add(key)
        if self.config.validate:
            validate_resource(resource, URL(page.url).path)
        updated = (resource.get("meta") or {}).get("lastUpdated")
        if isinstance(updated, str) and (self.high_water_mark is None
                                         or updated > self.high_water_mark):
            self.high_water_mark = updated
        self._tracker.item(str(rtype))
        return resource

    @staticmethod
    def _check_outcome(outcome: dict[str, Any], url: str) -> None:
        errors = [i for i in outcome.get("issue", []) if i.get("severity") in ("error", "fatal")]
        if errors:
            text = "; ".join(str(i.get("diagnostics") or i.get("code")) for i in errors[:5])
            raise SourceError(f"{where('GET', url)}: search returned errors: {text}")
