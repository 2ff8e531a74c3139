"""FHIR REST source against the real sekmet-fhir server (paging, includes, POST, errors)."""

from __future__ import annotations

import gzip
import json
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from dic_connector.errors import SourceAuthError, SourceError
from dic_connector.sources.auth import BasicAuth, BearerAuth
from dic_connector.sources.base import Progress
from dic_connector.sources.fhir_rest import FhirRestConfig, FhirRestSource, SearchSpec
from dic_connector.sources.http import HttpConfig, RetryPolicy

if TYPE_CHECKING:
    from conftest import FaultProxy, SekmetServer

pytestmark = pytest.mark.fhir_server
FAST = HttpConfig(retry=RetryPolicy(max_attempts=4, backoff_base_s=0.01, backoff_max_s=0.05),
                  read_timeout_s=5)


def rest(base_url: str, *searches: SearchSpec, **kw: Any) -> FhirRestSource:
    kw.setdefault("auth", BearerAuth("static-test-token"))
    kw.setdefault("http", FAST)
    return FhirRestSource(FhirRestConfig(base_url, tuple(searches), **kw))


async def collect(source: FhirRestSource) -> list[dict[str, Any]]:
    async with source:
        return [r async for r in source.stream()]


def by_type(resources: list[dict[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in resources:
        out.setdefault(r["resourceType"], set()).add(r["id"])
    return out


async def test_paging_pulls_every_resource_once(sekmet: SekmetServer) -> None:
    seen: list[Progress] = []
    source = FhirRestSource(
        FhirRestConfig(sekmet.base_url, tuple(SearchSpec(t) for t in sekmet.types),
                       auth=BearerAuth(sekmet.static_token), http=FAST, page_size=97),
        on_progress=seen.append)
    resources = await collect(source)
    assert len(resources) == sum(len(ids) for ids in sekmet.resources.values()) >= 2000
    assert len({(r["resourceType"], r["id"]) for r in resources}) == len(resources)
    assert by_type(resources) == sekmet.resources
    final = source.progress
    assert final.items == len(resources) and final.expected == len(resources)
    assert final.units == len(seen) > 2000 // 97
    assert final.count("Observation") == len(sekmet.resources["Observation"])
    assert source.high_water_mark is not None


async def test_relative_next_links_and_gzip(sekmet: SekmetServer, fault_proxy: FaultProxy
                                            ) -> None:
    """The proxy turns ``next`` links into relative ones and gzips every page."""

    async def relative_gzip(request: web.Request) -> web.StreamResponse:
        upstream = await fault_proxy.forward(request)
        assert upstream.body is not None and isinstance(upstream.body, bytes)
        bundle = json.loads(upstream.body)
        for link in bundle.get("link", []):
            link["url"] = "Condition?" + link["url"].split("?", 1)[1]
        return web.Response(body=gzip.compress(json.dumps(bundle).encode()), headers={
            "Content-Type": "application/fhir+json", "Content-Encoding": "gzip"})

    fault_proxy.add_fault(relative_gzip, nth=None)
    resources = await collect(rest(fault_proxy.base_url, SearchSpec("Condition"), page_size=50))
    assert by_type(resources) == {"Condition": sekmet.resources["Condition"]}
    assert sum("_offset=" in s for s in fault_proxy.seen) == len(fault_proxy.seen) - 1


async def test_post_search_with_form_body(sekmet: SekmetServer) -> None:
    spec = SearchSpec("Observation", params=(("code", "http://loinc.org|8302-2"),))
    posted = await collect(rest(sekmet.base_url, spec, use_post=True, page_size=200))
    got = await collect(rest(sekmet.base_url, spec, use_post=False, page_size=200))
    expected = {i for i in sekmet.resources["Observation"] if i.endswith("-0")}
    assert by_type(posted)["Observation"] == by_type(got)["Observation"] == expected


async def test_long_query_switches_to_post(sekmet: SekmetServer) -> None:
    ids = sorted(sekmet.resources["Patient"])[:300]
    spec = SearchSpec("Patient", params=(("_id", ",".join(ids)),))
    resources = await collect(rest(sekmet.base_url, spec, post_threshold_chars=500,
                                   page_size=100))
    assert sorted(r["id"] for r in resources) == ids


async def test_include_and_revinclude(sekmet: SekmetServer) -> None:
    ids = sorted(sekmet.resources["Patient"])[:30]
    obs = SearchSpec("Observation", params=(("subject", ",".join(f"Patient/{i}" for i in ids)),),
                     include=("Observation:subject",))
    got = by_type(await collect(rest(sekmet.base_url, obs, page_size=7)))
    assert got["Patient"] == set(ids)  # included once although repeated on several pages
    assert len(got["Observation"]) == 90
    pats = SearchSpec("Patient", params=(("_id", ",".join(ids)),),
                      revinclude=("Condition:subject",))
    got = by_type(await collect(rest(sekmet.base_url, pats, page_size=10)))
    assert got == {"Patient": set(ids), "Condition": {f"c{i[1:]}" for i in ids}}


async def test_strict_validation_passes_on_valid_resources(sekmet: SekmetServer) -> None:
    resources = await collect(rest(sekmet.base_url, SearchSpec("Patient"), validate=True))
    assert len(resources) == len(sekmet.resources["Patient"])


async def test_unknown_parameter_is_refused_not_ignored(sekmet: SekmetServer) -> None:
    spec = SearchSpec("Observation", params=(("no-such-param", "x"),))
    with pytest.raises(SourceError) as info:
        await collect(rest(sekmet.base_url, spec))
    message = str(info.value)
    assert "HTTP 400" in message and "/fhir/Observation" in message
    assert "Unknown search parameter 'no-such-param'" in message  # the server's diagnostics
    assert "no-such-param=x" not in message  # query strings are not echoed


async def test_operation_outcome_of_unknown_type_is_surfaced(sekmet: SekmetServer) -> None:
    with pytest.raises(SourceError, match=r"HTTP 404: error/not-supported: Unknown resource"):
        await collect(rest(sekmet.base_url, SearchSpec("NoSuchType")))


async def test_basic_auth_and_refused_credentials(sekmet: SekmetServer) -> None:
    ok = await collect(rest(sekmet.base_url, SearchSpec("Patient", params=(("_id", "p00001"),)),
                            auth=BasicAuth(sekmet.basic_user, sekmet.basic_password)))
    assert [r["id"] for r in ok] == ["p00001"]
    with pytest.raises(SourceAuthError, match=r"HTTP 401: error/login: Invalid Basic"):
        await collect(rest(sekmet.base_url, SearchSpec("Patient"),
                           auth=BasicAuth(sekmet.basic_user, "wrong")))
    with pytest.raises(SourceAuthError, match="HTTP 401"):
        await collect(rest(sekmet.base_url, SearchSpec("Patient"), auth=BearerAuth("bad")))


async def test_next_link_to_another_server_is_refused(fault_proxy: FaultProxy) -> None:
    async def foreign_next(request: web.Request) -> web.StreamResponse:
        upstream = await fault_proxy.forward(request)
        bundle = json.loads(upstream.body if isinstance(upstream.body, bytes) else b"{}")
        for link in bundle.get("link", []):
            link["url"] = link["url"].replace("127.0.0.1", "elsewhere.invalid")
        return web.json_response(bundle, content_type="application/fhir+json")

    fault_proxy.add_fault(foreign_next)
    with pytest.raises(SourceError, match=r"next link leaves the server \(elsewhere\.invalid\)"):
        await collect(rest(fault_proxy.base_url, SearchSpec("Patient"), page_size=100))
    assert len(fault_proxy.seen) == 1


async def test_error_outcome_inside_a_searchset_is_raised(fault_proxy: FaultProxy) -> None:
    async def with_outcome(request: web.Request) -> web.StreamResponse:
        upstream = await fault_proxy.forward(request)
        bundle = json.loads(upstream.body if isinstance(upstream.body, bytes) else b"{}")
        bundle["entry"].append({"search": {"mode": "outcome"}, "resource": {
            "resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "too-costly", "diagnostics": "index offline"}]}})
        return web.json_response(bundle, content_type="application/fhir+json")

    fault_proxy.add_fault(with_outcome, match="_offset=100")
    with pytest.raises(SourceError, match="search returned errors: index offline"):
        await collect(rest(fault_proxy.base_url, SearchSpec("Patient"), page_size=100))


async def test_parallel_searches_give_the_same_set(sekmet: SekmetServer) -> None:
    specs = tuple(SearchSpec(t) for t in sekmet.types)
    resources = await collect(rest(sekmet.base_url, *specs, parallel_searches=3, page_size=200))
    assert len(resources) == sum(len(v) for v in sekmet.resources.values())
    assert by_type(resources) == sekmet.resources
    failing = (*specs, SearchSpec("NoSuchType"))
    with pytest.raises(SourceError, match="HTTP 404"):
        await collect(rest(sekmet.base_url, *failing, parallel_searches=4))
