"""Data sources: where a hospital's cohort comes from, as one async stream with progress.

Modules in dependency order (each imports only those above it):

- ``base``        the :class:`~.base.Source` interface, :class:`~.base.Progress`,
                  :class:`~.base.LineBatch` (unparsed NDJSON lines, picklable)
- ``validation``  optional strict validation against the ``fhir.resources`` R4B models
- ``auth``        none / Basic / static bearer / SMART Backend Services (JWT assertion, RS384/ES384)
- ``http``        pooled aiohttp client per server: TLS, concurrency limit, retries with backoff
                  and ``Retry-After``, OperationOutcome diagnostics in :class:`SourceError`
- ``ndjson``      NDJSON line streaming; a directory of Bulk-export files (plain or gzip)
- ``fhir_rest``   FHIR search with paging, ``_lastUpdated`` increments, includes, POST ``_search``
- ``fhir_bulk``   Bulk Data ``$export``: kick-off, polling, manifest, streamed downloads
- ``sql``         a parameterised query on PostgreSQL (asyncpg) or SQLite (aiosqlite), streamed

Specifications: FHIR R4 search http://hl7.org/fhir/R4/search.html, Bulk Data Access
https://hl7.org/fhir/uv/bulkdata/, SMART Backend Services
https://hl7.org/fhir/smart-app-launch/backend-services.html.
"""

from __future__ import annotations

from dic_connector.sources.auth import AuthConfig, BasicAuth, BearerAuth, NoAuth, SmartBackendAuth
from dic_connector.sources.base import Item, Progress, ProgressCallback, Source
from dic_connector.sources.fhir_bulk import BulkExportConfig, BulkExportSource
from dic_connector.sources.fhir_rest import FhirRestConfig, FhirRestSource, SearchSpec
from dic_connector.sources.http import HttpClient, HttpConfig, RetryPolicy
from dic_connector.sources.ndjson import NdjsonConfig, NdjsonDirectorySource
from dic_connector.sources.sql import SqlConfig, SqlSource

SourceConfig = FhirRestConfig | BulkExportConfig | NdjsonConfig | SqlConfig


def make_source(config: SourceConfig, on_progress: ProgressCallback | None = None) -> Source:
    """The source for a configuration (one implementation per kind)."""
    if isinstance(config, FhirRestConfig):
        return FhirRestSource(config, on_progress=on_progress)
    if isinstance(config, BulkExportConfig):
        return BulkExportSource(config, on_progress=on_progress)
    if isinstance(config, NdjsonConfig):
        return NdjsonDirectorySource(config, on_progress=on_progress)
    return SqlSource(config, on_progress=on_progress)


__all__ = [
    "AuthConfig", "BasicAuth", "BearerAuth", "BulkExportConfig", "BulkExportSource",
    "FhirRestConfig", "FhirRestSource", "HttpClient", "HttpConfig", "Item", "NdjsonConfig",
    "NdjsonDirectorySource", "NoAuth", "Progress", "ProgressCallback", "RetryPolicy",
    "SearchSpec", "SmartBackendAuth", "Source", "SourceConfig", "SqlConfig", "SqlSource",
    "make_source",
]
