"""FHIR Bulk Data Access ``$export`` as a source (https://hl7.org/fhir/uv/bulkdata/export.html).

The asynchronous request pattern, step by step:

1. **Kick-off** ``GET [base]/$export`` (system), ``[base]/Patient/$export`` or
   ``[base]/Group/[id]/$export`` with ``Prefer: respond-async`` and ``_type``, ``_since``,
   ``_typeFilter`` (or ``POST`` with the same as a Parameters resource); the server answers ``202 Accepted`` and a ``Content-Location`` status URL.
   (A 429 at kick-off is retried by the HTTP layer, honouring ``Retry-After``.)
2. **Polling** the status URL: ``202`` while running (``X-Progress`` shown as the progress
   phase, ``Retry-After`` honoured up to ``max_poll_interval_s``); ``429`` means "too often",
   so wait and poll again; ``200`` carries the **manifest**; 4xx/5xx with an OperationOutcome
   means the export failed.
3. **Download** each ``output`` file, streamed in chunks and split into lines, so memory is
   bounded by one line, never by a file. ``Authorization`` is sent to file URLs only when the
   manifest says ``requiresAccessToken``. A download cut short is re-requested and the lines
   already yielded are skipped, so nothing is lost or repeated; the line count must match the
   manifest's ``count`` when given. ``error`` files (OperationOutcomes) are read into
   :attr:`BulkExportSource.outcomes`.
4. **Clean-up**: ``DELETE`` the status URL when done (or to cancel a running export).

The manifest's ``transactionTime`` is kept as :attr:`BulkExportSource.next_since`: passing it
as ``_since`` next time pulls exactly what changed after this export.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import aiohttp

from dic_connector.errors import SourceError, SourceTimeoutError
from dic_connector.sources.auth import AuthConfig, NoAuth
from dic_connector.sources.base import Item, LineBatch, ProgressCallback, Source
from dic_connector.sources.http import FHIR_JSON, HttpClient, HttpConfig, retry_after_s, where
from dic_connector.sources.ndjson import CHUNK_BYTES, LineSplitter, iter_batch

NDJSON = "application/fhir+ndjson"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BulkExportConfig:
    """One ``$export`` request: level, filters and polling behaviour."""

    base_url: str
    level: Literal["system", "patient", "group"] = "system"
    group_id: str | None = None
    types: tuple[str, ...] = ()
    #: FHIR instant: only resources changed after it (the previous ``transactionTime``)
    since: str | None = None
    type_filters: tuple[str, ...] = ()
    #: kick off with ``POST`` and a Parameters body (long ``_typeFilter`` lists)
    use_post: bool = False
    auth: AuthConfig = field(default_factory=NoAuth)
    http: HttpConfig = field(default_factory=HttpConfig)
    #: poll interval when the server sends no Retry-After, and the cap on a Retry-After
    poll_interval_s: float = 2.0
    max_poll_interval_s: float = 60.0
    #: give up (and cancel the export) after this long
    max_wait_s: float = 6 * 3600.0
    delete_when_done: bool = True
    validate: bool = False


@dataclass(frozen=True)
class OutputFile:
    type: str
    url: str
    count: int | None


@dataclass(frozen=True)
class Manifest:
    transaction_time: str
    requires_access_token: bool
    output: tuple[OutputFile, ...]
    error: tuple[OutputFile, ...]

    @classmethod
    def parse(cls, doc: Any, origin: str) -> Manifest:
        if not isinstance(doc, dict) or not isinstance(doc.get("transactionTime"), str):
            raise SourceError(f"{origin}: manifest without transactionTime")

        def files(key: str) -> tuple[OutputFile, ...]:
            out = []
            for i, e in enumerate(doc.get(key) or []):
                if not isinstance(e, dict) or not isinstance(e.get("url"), str):
                    raise SourceError(f"{origin}: manifest {key}[{i}] has no url")
                count = e.get("count")
                out.append(OutputFile(str(e.get("type", "")), e["url"],
                                      count if isinstance(count, int) else None))
            return tuple(out)

        return cls(doc["transactionTime"], bool(doc.get("requiresAccessToken", False)),
                   files("output"), files("error"))


class BulkExportSource(Source):
    """Kicks off an export, waits for it, and streams every resource of every output file."""

    kind: ClassVar[str] = "fhir-bulk"
    delivers_lines: ClassVar[bool] = True

    def __init__(self, config: BulkExportConfig, *, client: HttpClient | None = None,
                 on_progress: ProgressCallback | None = None) -> None:
        super().__init__(on_progress)
        self.config = config
        self._own_client = client is None
        self.client = client or HttpClient(config.base_url, config.auth, config.http)
        self.status_url: str | None = None
        self.manifest: Manifest | None = None
        #: diagnostics of the OperationOutcomes in the manifest's ``error`` files
        self.outcomes: list[str] = []
        #: why the final DELETE of the status URL failed, if it did
        self.cleanup_error: str | None = None

    @property
    def next_since(self) -> str | None:
        """The manifest's ``transactionTime``: ``_since`` for the next incremental export."""
        return self.manifest.transaction_time if self.manifest else None

    async def aclose(self) -> None:
        """Release the export on the server if the stream was abandoned, then the client."""
        try:
            if self.status_url is not None and self.config.delete_when_done:
                with contextlib.suppress(SourceError):
                    await self.cancel()
        finally:
            if self._own_client:
                await self.client.close()

    # ------------------------------------------------------------------ kick-off and polling

    def _kickoff_url(self) -> str:
        base = self.client.base_url
        if self.config.level == "system":
            return f"{base}/$export"
        if self.config.level == "patient":
            return f"{base}/Patient/$export"
        if not self.config.group_id:
            raise SourceError("Group-level $export needs group_id")
        return f"{base}/Group/{self.config.group_id}/$export"

    async def kick_off(self) -> str:
        """Start the export; returns the status URL."""
        params: list[tuple[str, str]] = []
        if self.config.types:
            params.append(("_type", ",".join(self.config.types)))
        if self.config.since:
            params.append(("_since", self.config.since))
        params += [("_typeFilter", f) for f in self.config.type_filters]
        url = self._kickoff_url()
        headers = {"Prefer": "respond-async", "Accept": FHIR_JSON}
        method, data = "GET", None
        if self.config.use_post:  # a Parameters resource (Bulk Data IG, "POST kick-off")
            method, headers["Content-Type"] = "POST", FHIR_JSON
            data = json.dumps({"resourceType": "Parameters", "parameter": [
                {"name": k, "valueInstant" if k == "_since" else "valueString": v}
                for k, v in params]})
            params = []
        response, _ = await self.client.request(method, url, params=params, data=data, ok=(202,),
                                                headers=headers)
        location = response.headers.get("Content-Location")
        if not location:
            raise SourceError(f"{where(method, url)}: 202 without Content-Location")
        self.status_url = location
        return location

    async def wait(self) -> Manifest:
        """Poll the status URL until the manifest is ready."""
        assert self.status_url is not None, "kick_off() first"
        deadline = time.monotonic() + self.config.max_wait_s
        while True:
            response, _ = await self.client.request(
                "GET", self.status_url, ok=(200, 202, 429), want_json=False,
                retry_statuses={502, 503, 504})
            if response.status == 200:
                try:
                    body = json.loads(response.body)
                except ValueError:
                    raise SourceError(f"{where('GET', self.status_url)}: manifest is not "
                                      "JSON") from None
                self.manifest = Manifest.parse(body, where("GET", self.status_url))
                expected = sum(f.count or 0 for f in self.manifest.output)
                self._tracker.update(expected=expected or None, phase="downloading")
                return self.manifest
            progress = response.headers.get("X-Progress", "in progress")
            self._tracker.update(phase=progress[:100] if response.status == 202 else "throttled")
            if time.monotonic() >= deadline:
                await self.cancel()
                raise SourceTimeoutError(f"{where('GET', self.status_url)}: export not ready "
                                         f"after {self.config.max_wait_s:.0f} s; cancelled")
            asked = retry_after_s(response.headers)
            delay = self.config.poll_interval_s if asked is None else asked
            await self.client.sleep(min(delay, self.config.max_poll_interval_s))

    async def cancel(self) -> None:
        """Cancel a running export (or release a finished one) with DELETE."""
        if self.status_url is None:
            return
        url, self.status_url = self.status_url, None
        await self.client.request("DELETE", url, ok=(200, 202, 204, 404))

    # ------------------------------------------------------------------ download

    async def stream(self) -> AsyncIterator[Item]:
        async for batch in self.line_batches():
            for resource in iter_batch(batch):
                self._tracker.item(resource["resourceType"])
                yield resource

    async def line_batches(self) -> AsyncIterator[LineBatch]:
        if self.status_url is None:
            await self.kick_off()
        manifest = self.manifest or await self.wait()
        for file in manifest.error:
            async for batch in self._download(file, manifest):
                for outcome in iter_batch(batch):
                    for issue in outcome.get("issue", []):
                        self.outcomes.append(f"{issue.get('severity')}/{issue.get('code')}: "
                                             f"{issue.get('diagnostics', '')}")
        wanted = frozenset(self.config.types)
        for file in manifest.output:
            async for batch in self._download(file, manifest):
                yield replace(batch, wanted=wanted, validate=self.config.validate,
                              validate_label=f"{file.type} export file")
        if self.config.delete_when_done:
            try:
                await self.cancel()
            except SourceError as exc:  # the data is complete; clean-up is best effort
                self.cleanup_error = str(exc)
                log.warning("bulk export clean-up failed: %s", exc)

    async def _download(self, file: OutputFile, manifest: Manifest
                        ) -> AsyncIterator[LineBatch]:
        """Lines of one output file, a network chunk at a time; a broken download resumes
        after the lines already yielded."""
        origin = f"{file.type or 'export'} file {where('GET', file.url)}"
        done = 0
        policy = self.client.config.retry
        attempt = 0
        while True:
            attempt += 1
            skip, n, nbytes = done, 0, 0
            splitter = LineSplitter()
            try:
                async with self.client.open_stream(
                        file.url, authenticate=manifest.requires_access_token,
                        headers={"Accept": NDJSON}) as resp:
                    async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                        nbytes += len(chunk)
                        lines = list(splitter.feed(chunk))
                        before, n = n, n + len(lines)
                        if n > skip and lines:
                            done = n
                            yield LineBatch(origin, max(skip, before) + 1,
                                            lines[max(skip - before, 0):])
                lines = list(splitter.finish())
                before, n = n, n + len(lines)
                if n > skip and lines:
                    done = n
                    yield LineBatch(origin, max(skip, before) + 1, lines[max(skip - before, 0):])
            except (TimeoutError, aiohttp.ClientError) as exc:
                if attempt >= policy.max_attempts:
                    raise SourceError(f"{origin}: download failed {attempt} times after line "
                                      f"{done} ({type(exc).__name__})") from None
                await self.client.wait_before_retry(attempt, None)
                continue
            if file.count is not None and n != file.count:
                raise SourceError(f"{origin}: manifest announces {file.count} resources, "
                                  f"the file holds {n}")
            self._tracker.update(units=1, nbytes=nbytes)
            return
