"""Incremental pulls against the real server return exactly the resources changed since."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from dic_connector.sources.auth import BearerAuth
from dic_connector.sources.fhir_bulk import BulkExportConfig, BulkExportSource
from dic_connector.sources.fhir_rest import FhirRestConfig, FhirRestSource, SearchSpec
from dic_connector.sources.http import HttpConfig, RetryPolicy

if TYPE_CHECKING:
    from conftest import SekmetServer

pytestmark = pytest.mark.fhir_server
FAST = HttpConfig(retry=RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.02))
TYPES = ("Patient", "Observation", "Condition", "Encounter")


async def rest_pull(sekmet: SekmetServer, since: str | None) -> tuple[set[str], str | None]:
    config = FhirRestConfig(sekmet.base_url, tuple(SearchSpec(t) for t in TYPES),
                            auth=BearerAuth(sekmet.static_token), http=FAST, page_size=1000,
                            since=since)
    async with FhirRestSource(config) as source:
        keys = {f"{r['resourceType']}/{r['id']}" async for r in source.stream()}
        return keys, source.next_since


async def bulk_pull(sekmet: SekmetServer, since: str | None) -> tuple[set[str], str | None]:
    config = BulkExportConfig(sekmet.base_url, types=TYPES, since=since, http=FAST,
                              auth=BearerAuth(sekmet.static_token), poll_interval_s=0.05)
    async with BulkExportSource(config) as source:
        keys = {f"{r['resourceType']}/{r['id']}" async for r in source.stream()}
        return keys, source.next_since


def changes(sekmet: SekmetServer) -> tuple[list[dict[str, Any]], set[str]]:
    observations = [{"resourceType": "Observation", "id": f"o{i:05d}-1", "status": "amended",
                     "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                     "subject": {"reference": f"Patient/p{i:05d}"},
                     "valueQuantity": {"value": 70, "unit": "kg"}} for i in (3, 50, 51, 200, 449)]
    patients = [{"resourceType": "Patient", "id": f"p{i:05d}", "gender": "other",
                 "birthDate": "1970-01-01"} for i in (7, 300)]
    encounters = [{"resourceType": "Encounter", "id": f"e-new-{i}", "status": "finished",
                   "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                             "code": "AMB"},
                   "subject": {"reference": f"Patient/p{i:05d}"}} for i in (1, 2)]
    changed: list[dict[str, Any]] = [*observations, *patients, *encounters]
    return changed, {f"{r['resourceType']}/{r['id']}" for r in changed}


async def test_since_pulls_return_exactly_the_changed_resources(sekmet: SekmetServer) -> None:
    everything_rest, rest_mark = await rest_pull(sekmet, None)
    everything_bulk, bulk_mark = await bulk_pull(sekmet, None)
    assert everything_rest == everything_bulk
    assert len(everything_rest) >= sum(len(v) for v in sekmet.resources.values())
    assert rest_mark is not None and bulk_mark is not None

    resources, expected = changes(sekmet)
    sekmet.put(resources)

    changed_rest, rest_mark2 = await rest_pull(sekmet, rest_mark)
    changed_bulk, bulk_mark2 = await bulk_pull(sekmet, bulk_mark)
    assert changed_rest == expected
    assert changed_bulk == expected

    # nothing changed since: both come back empty, and the marks are kept or advance
    assert (await rest_pull(sekmet, rest_mark2))[0] == set()
    assert (await bulk_pull(sekmet, bulk_mark2))[0] == set()
