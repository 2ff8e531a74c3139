"""Bulk Data $export against the real sekmet-fhir server, directly and through the fault proxy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from dic_connector.errors import SourceError
from dic_connector.sources.auth import AuthConfig, BearerAuth, SmartBackendAuth
from dic_connector.sources.base import Progress
from dic_connector.sources.fhir_bulk import BulkExportConfig, BulkExportSource
from dic_connector.sources.fhir_rest import FhirRestConfig, FhirRestSource, SearchSpec
from dic_connector.sources.http import HttpClient, HttpConfig, RetryPolicy

if TYPE_CHECKING:
    from conftest import FaultProxy, SekmetServer

pytestmark = pytest.mark.fhir_server
Recorder = tuple[list[float], Callable[[float], Awaitable[None]]]
FAST = HttpConfig(read_timeout_s=5, retry=RetryPolicy(max_attempts=4, backoff_base_s=0.01,
                                                      backoff_max_s=0.05))


def bulk(base_url: str, sleep: Callable[[float], Awaitable[None]] | None = None,
         auth: AuthConfig | None = None, on_progress: Callable[[Progress], None] | None = None,
         **kw: Any) -> BulkExportSource:
    kw.setdefault("types", ("Patient", "Observation", "Condition"))
    config = BulkExportConfig(base_url, auth=auth or BearerAuth("static-test-token"), http=FAST,
                              poll_interval_s=0.05, **kw)
    client = HttpClient(base_url, config.auth, FAST, sleep=sleep or asyncio.sleep)
    return BulkExportSource(config, client=client, on_progress=on_progress)


async def collect(source: BulkExportSource) -> list[dict[str, Any]]:
    try:
        return [r async for r in source.stream()]
    finally:
        await source.client.close()


def by_type(resources: list[dict[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in resources:
        out.setdefault(r["resourceType"], set()).add(r["id"])
    return out


def assert_exact(resources: list[dict[str, Any]], expected: dict[str, set[str]]) -> None:
    keys = [(r["resourceType"], r["id"]) for r in resources]
    assert len(keys) == len(set(keys)) == sum(len(v) for v in expected.values())
    assert by_type(resources) == expected


async def test_export_and_paging_give_the_same_resource_set(sekmet: SekmetServer) -> None:
    phases: list[str] = []
    source = bulk(sekmet.base_url, on_progress=lambda p: phases.append(p.phase))
    exported = await collect(source)
    assert len(exported) >= 2000
    assert_exact(exported, sekmet.resources)
    rest = FhirRestSource(FhirRestConfig(
        sekmet.base_url, tuple(SearchSpec(t) for t in sekmet.types),
        auth=BearerAuth(sekmet.static_token), http=FAST, page_size=1000))
    async with rest:
        paged = [r async for r in rest.stream()]
    assert {(r["resourceType"], r["id"]) for r in paged} == \
        {(r["resourceType"], r["id"]) for r in exported}
    assert source.manifest is not None and source.manifest.requires_access_token
    assert source.next_since == source.manifest.transaction_time
    assert source.progress.expected == source.progress.items == len(exported)
    assert "downloading" in phases
    assert source.status_url is None  # DELETEd when done


async def test_type_filter_and_patient_level(sekmet: SekmetServer) -> None:
    heights = await collect(bulk(sekmet.base_url, types=("Observation",),
                                 type_filters=("Observation?code=http://loinc.org|8302-2",)))
    assert by_type(heights) == {"Observation": {i for i in sekmet.resources["Observation"]
                                                if i.endswith("-0")}}
    patient_level = await collect(bulk(sekmet.base_url, level="patient",
                                       types=("Patient", "Condition")))
    assert_exact(patient_level, {t: sekmet.resources[t] for t in ("Patient", "Condition")})


async def test_post_kick_off_with_parameters(sekmet: SekmetServer) -> None:
    got = await collect(bulk(sekmet.base_url, use_post=True, types=("Observation",),
                             type_filters=("Observation?code=http://loinc.org|8867-4",)))
    assert by_type(got) == {"Observation": {i for i in sekmet.resources["Observation"]
                                            if i.endswith("-2")}}


async def test_group_level_export(sekmet: SekmetServer) -> None:
    members = ["p00010", "p00011", "p00012"]
    sekmet.put([{
        "resourceType": "Group", "id": "cohort-a", "type": "person", "actual": True,
        "member": [{"entity": {"reference": f"Patient/{m}"}} for m in members]}])
    got = await collect(bulk(sekmet.base_url, level="group", group_id="cohort-a"))
    assert_exact(got, {"Patient": set(members),
                       "Observation": {f"o{m[1:]}-{j}" for m in members for j in range(3)},
                       "Condition": {f"c{m[1:]}" for m in members}})
    with pytest.raises(SourceError, match=r"HTTP 404: error/not-found: Group/nope not found"):
        await collect(bulk(sekmet.base_url, level="group", group_id="nope"))


async def test_cancel_deletes_the_export(sekmet: SekmetServer) -> None:
    source = bulk(sekmet.base_url)
    try:
        status_url = await source.kick_off()
        await source.cancel()
        assert source.status_url is None
        source.status_url = status_url
        with pytest.raises(SourceError, match=r"HTTP 404: error/not-found: No export"):
            await source.wait()
    finally:
        await source.client.close()


async def test_polling_honours_retry_after_x_progress_and_429(
        sekmet: SekmetServer, fault_proxy: FaultProxy, sleep_recorder: Recorder) -> None:
    async def running(request: web.Request) -> web.StreamResponse:
        return web.Response(status=202, headers={"X-Progress": "42% written",
                                                 "Retry-After": "3"})

    fault_proxy.status(429, retry_after="4", match="$export")  # kick-off throttled
    fault_proxy.add_fault(running, match="bulk-status", nth=(0, 1))
    fault_proxy.status(429, retry_after="5", match="bulk-status", nth=(2,))  # polled too often
    fault_proxy.status(503, match="bulk-status", nth=(3,))
    phases: list[str] = []
    got = await collect(bulk(fault_proxy.base_url, sleep_recorder[1],
                             on_progress=lambda p: phases.append(p.phase)))
    assert_exact(got, sekmet.resources)
    assert sleep_recorder[0][:4] == [4.0, 3.0, 3.0, 5.0]
    assert 0.005 <= sleep_recorder[0][4] <= 0.01  # backoff after the 503
    assert "42% written" in phases and "throttled" in phases


async def test_download_cut_midway_resumes_without_loss_or_duplicates(
        sekmet: SekmetServer, fault_proxy: FaultProxy, sleep_recorder: Recorder) -> None:
    fault_proxy.cut_connection(0.3, match="Observation.ndjson", nth=(0,))
    fault_proxy.cut_connection(0.7, match="Observation.ndjson", nth=(1,))
    fault_proxy.status(503, match="Patient.ndjson")
    got = await collect(bulk(fault_proxy.base_url, sleep_recorder[1]))
    assert_exact(got, sekmet.resources)
    assert sum("Observation.ndjson" in s for s in fault_proxy.seen) == 3


async def test_short_file_is_reported(fault_proxy: FaultProxy, sleep_recorder: Recorder) -> None:
    async def short_file(request: web.Request) -> web.StreamResponse:
        full = await fault_proxy.forward(request)
        lines = (full.body if isinstance(full.body, bytes) else b"").splitlines()
        return web.Response(body=b"\n".join(lines[:-2]) + b"\n", content_type="application/json")

    fault_proxy.add_fault(short_file, match="Condition.ndjson")
    with pytest.raises(SourceError, match=r"Condition file .*announces 450 resources, "
                                          r"the file holds 448"):
        await collect(bulk(fault_proxy.base_url, sleep_recorder[1]))


async def test_requires_access_token_is_honoured(
        sekmet: SekmetServer, fault_proxy: FaultProxy, sleep_recorder: Recorder) -> None:
    """With ``requiresAccessToken: false`` file requests carry no Authorization header."""
    sent_auth: list[bool] = []

    async def open_manifest(request: web.Request) -> web.StreamResponse:
        full = await fault_proxy.forward(request)
        if full.status != 200:
            return full
        doc = json.loads(full.body if isinstance(full.body, bytes) else b"{}")
        doc["requiresAccessToken"] = False
        return web.json_response(doc)

    async def public_files(request: web.Request) -> web.StreamResponse:
        sent_auth.append("Authorization" in request.headers)
        headers = dict(request.headers)
        headers["Authorization"] = f"Bearer {sekmet.static_token}"  # the "storage" grants access
        return await fault_proxy.forward(request.clone(headers=headers))

    fault_proxy.add_fault(open_manifest, match="bulk-status", nth=None)
    fault_proxy.add_fault(public_files, match="bulk-files", nth=None)
    got = await collect(bulk(fault_proxy.base_url, sleep_recorder[1],
                             delete_when_done=False, types=("Condition",)))
    assert by_type(got) == {"Condition": sekmet.resources["Condition"]}
    assert sent_auth == [False]


async def test_expired_token_during_download_is_renewed(
        sekmet: SekmetServer, fault_proxy: FaultProxy, sleep_recorder: Recorder) -> None:
    pem = sekmet.es_key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
    fault_proxy.expired_token(match="Patient.ndjson")
    source = bulk(fault_proxy.base_url, sleep_recorder[1],
                  auth=SmartBackendAuth(sekmet.es_client, pem, alg="ES384"))
    got = await collect(source)
    assert_exact(got, sekmet.resources)
    assert source.client.authenticator.tokens_issued == 2  # type: ignore[attr-defined]
    # sekmet treats DELETE of the status URL as a resource delete needing a write scope; the
    # clean-up is best effort, so the pull succeeds and the refusal is kept for the operator
    assert source.cleanup_error is not None and "HTTP 403" in source.cleanup_error


async def test_error_files_are_read_into_outcomes(
        sekmet: SekmetServer, fault_proxy: FaultProxy, sleep_recorder: Recorder) -> None:
    """sekmet reports an ignored kick-off parameter in the manifest's ``error`` files."""

    async def add_unsupported_parameter(request: web.Request) -> web.StreamResponse:
        changed = request.clone(rel_url=request.rel_url.update_query({"_elements": "id"}))
        return await fault_proxy.forward(changed)

    fault_proxy.add_fault(add_unsupported_parameter, match="$export")
    source = bulk(fault_proxy.base_url, sleep_recorder[1], types=("Condition",))
    got = await collect(source)
    assert by_type(got) == {"Condition": sekmet.resources["Condition"]}
    assert source.outcomes == [
        "warning/not-supported: Ignored unsupported parameters: ['_elements']"]


async def test_export_lines_mapped_by_workers_give_the_in_process_table(
        sekmet: SekmetServer) -> None:
    """The Bulk source's raw lines through the pipeline's worker processes (pilot mapping:
    Patient, Condition, Observation views) give the table of its parsed stream."""
    import multiprocessing
    from pathlib import Path

    from dic_connector.connector.pipeline import StageClock, pull_and_map
    from dic_connector.mapping import load_mapping

    mapping = load_mapping(Path(__file__).resolve().parents[3] / "mappings"
                           / "pilot_adrenal.yaml")
    tables = []
    for workers in (0, 2):
        source = bulk(sekmet.base_url)
        try:
            tables.append(await pull_and_map(source, mapping, StageClock(None), 500,
                                             workers=workers, parallel_after=0))
        finally:
            await source.client.close()
        assert source.progress.items == sum(len(ids) for ids in sekmet.resources.values())
    local, remote = tables
    assert local.count == len(sekmet.resources["Patient"]) > 0
    assert (remote.count, remote.resources, remote.orphan_rows) == \
        (local.count, local.resources, local.orphan_rows)
    assert remote.columns == local.columns
    assert not multiprocessing.active_children()
