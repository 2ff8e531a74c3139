"""Incremental pulls (:mod:`dic_connector.connector.incremental`).

* The plan of an incremental version, against the plan a full pull of the same data gives
  (hypothesis, over tables with many equal rows, deleted, changed, unchanged and new
  patients, several versions in a row): the version holds the same multiset of rows,
  declares the same lineage, sends only rows of changed patients, and its row positions
  name the right patients for the next version.
* Discovery against a real FHIR server (sekmet on 127.0.0.1): creates, updates, deletions,
  an Observation moved to another patient (both patients changed), the next watermark, the
  limit that makes a run pull everything, and a changed resource naming no patient.
* The runner: a subscription run on an ``updates: delta`` dataset pulls only the changed
  patients, and its version's MPC count and sum are what a full pull gives; a run without
  a base falls back, counted by reason.
"""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.connector.delta import plan_upload
from dic_connector.connector.incremental import (
    Fallback,
    FallbackReason,
    discover,
    patient_pseudonyms,
    patient_references,
    plan_incremental,
    restricted,
    server_time,
)
from dic_connector.connector.lineage import LineageState, sorted_keys, with_ordinals
from dic_connector.connector.runs import Runner
from dic_connector.connector.state import RunStatus, StateStore
from dic_connector.dev.sekmet import SekmetServer, start_sekmet, stop_sekmet, temporary_sekmet
from dic_connector.dev.synthetic import pilot_resources
from dic_connector.errors import SourceError
from dic_connector.sources import FhirRestConfig, HttpClient
from dic_connector.sources.auth import BearerAuth
from dic_connector.sources.fhir_rest import SearchSpec
from tests.dic_connector.connector.conftest import DATASET, Cluster, connector_config
from tests.dic_connector.connector.subscriptions.test_sekmet import mpc_count_and_sum

KEY = bytes(range(32))


# -- the plan ------------------------------------------------------------------------------


def digest(value: int) -> tuple[int, int]:
    """A row digest standing for the encoded row ``value`` (equal values: equal rows)."""
    return (value * 0x9E3779B97F4A7C15) % 2**64, value


def state_of(rows: dict[str, int], rng: np.random.Generator) -> LineageState:
    """A committed version holding ``rows`` (patient -> row value) in a random order."""
    patients = list(rows)
    rng.shuffle(patients)
    digests = np.array([digest(rows[p]) for p in patients], dtype=np.uint64).reshape(-1, 2)
    keys = with_ordinals(digests)
    return LineageState().made_with(KEY)[0].committed(
        uuid.uuid4(), sorted_keys(keys), keys, patient_pseudonyms(KEY, patients))


def composed(state: LineageState, plan: Any, pulled: np.ndarray) -> Counter[tuple[int, int]]:
    """The rows (as digests) the nodes compose: the base's kept rows, then the fresh ones."""
    delta = plan.upload.delta
    kept = [tuple(int(x) for x in row) for row in state.order[delta.keep, :2]]
    fresh = [tuple(int(x) for x in row) for row in pulled[delta.fresh]]
    return Counter(kept + fresh)


@st.composite
def histories(draw: st.DrawFn) -> tuple[dict[str, int], list[dict[str, int | None]]]:
    """A base (patient -> row value, few distinct values: many equal rows) and a few rounds
    of changes (patient -> new value, None: deleted)."""
    n = draw(st.integers(1, 40))
    values = st.integers(0, draw(st.integers(0, 6)))
    base = {f"p{i}": draw(values) for i in range(n)}
    rounds = []
    alive = dict(base)
    for r in range(draw(st.integers(1, 3))):
        known = sorted(alive)
        touched = draw(st.lists(st.sampled_from(known), unique=True, max_size=len(known) - 1)
                       ) if len(known) > 1 else []
        change: dict[str, int | None] = {}
        for p in touched:
            change[p] = draw(st.one_of(st.none(), values))
        for j in range(draw(st.integers(0, 3))):
            change[f"n{r}-{j}"] = draw(values)
        rounds.append(change)
        for p, v in change.items():
            if v is None:
                alive.pop(p, None)
            else:
                alive[p] = v
    return base, rounds


@settings(max_examples=150, deadline=None)
@given(histories(), st.integers(0, 2**32 - 1))
def test_an_incremental_plan_holds_what_a_full_pull_holds(
        history: tuple[dict[str, int], list[dict[str, int | None]]], seed: int) -> None:
    base, rounds = history
    rng = np.random.default_rng(seed)
    state, table = state_of(base, rng), dict(base)
    for change in rounds:
        for p, v in change.items():
            if v is None:
                table.pop(p, None)
            else:
                table[p] = v
        # the restricted pull: the changed patients that still exist, in some order
        pulled_ids = [p for p in change if p in table]
        rng.shuffle(pulled_ids)
        pulled = np.array([digest(table[p]) for p in pulled_ids],
                          dtype=np.uint64).reshape(-1, 2)
        full = with_ordinals(np.array([digest(v) for v in table.values()],
                                      dtype=np.uint64).reshape(-1, 2))
        try:
            plan = plan_incremental(state, patient_pseudonyms(KEY, change), pulled,
                                    patient_pseudonyms(KEY, pulled_ids), rng=rng)
        except Fallback as exc:  # only when a full pull could not be a delta either
            assert exc.reason is FallbackReason.BASE
            assert plan_upload(state, full).delta is None
            return
        # the same rows as a full pull, the same declared lineage
        assert composed(state, plan, pulled) == Counter(digest(v) for v in table.values())
        assert plan.rows == len(table)
        assert state.declaration(sorted_keys(plan.row_keys)) == \
            state.declaration(sorted_keys(full))
        # only changed patients' rows are sent, and no more than a full pull's delta sends
        assert set(plan.upload.delta.fresh.tolist()) <= set(range(len(pulled_ids)))
        full_plan = plan_upload(state, full)
        assert full_plan.delta is not None
        assert plan.upload.delta.fresh.shape[0] == full_plan.delta.fresh.shape[0]
        assert not plan.upload.full_fallback
        # each position names a patient whose row it holds (equal rows may trade places)
        by_pseudonym = {bytes(patient_pseudonyms(KEY, [p])): digest(v) for p, v in table.items()}
        named = [by_pseudonym[bytes(np.ascontiguousarray(row))] for row in plan.patients]
        assert named == [tuple(int(x) for x in row) for row in plan.order[:, :2]]
        assert sorted(bytes(np.ascontiguousarray(r)) for r in plan.patients) == \
            sorted(by_pseudonym)
        state = state.committed(uuid.uuid4(), sorted_keys(plan.row_keys), plan.order,
                                plan.patients)


def test_pseudonyms_are_keyed_and_stable() -> None:
    one = patient_pseudonyms(KEY, ["a", "b", "a"])
    assert one.shape == (3, 2) and (one[0] == one[2]).all() and not (one[0] == one[1]).all()
    assert not (patient_pseudonyms(bytes(32), ["a"])[0] == one[0]).all()
    assert patient_pseudonyms(KEY, []).shape == (0, 2)


def test_the_lineage_state_keeps_pseudonyms_and_the_mapping() -> None:
    state = state_of({"a": 1, "b": 2}, np.random.default_rng(1))
    state = LineageState(state.versions, state.key_fingerprint, state.keys, state.born,
                         state.died, state.order, state.patients, b"\x01" * 16)
    again = LineageState.from_bytes(state.to_bytes())
    assert (again.patients == state.patients).all() and again.mapping == b"\x01" * 16
    assert (again.order == state.order).all()


def test_patient_references_are_found_anywhere_in_a_resource() -> None:
    resource = {"resourceType": "Observation", "subject": {"reference": "Patient/a"},
                "performer": [{"reference": "Practitioner/x"}],
                "hasMember": [{"reference": "http://h/fhir/Patient/b/_history/3"}],
                "extension": [{"valueReference": {"reference": "Patient/c"}}],
                "note": [{"text": "Patient/d"}]}
    assert patient_references(resource) == {"a", "b", "c"}
    assert patient_references(None) == set()


def test_a_restricted_source_keeps_each_search_for_batches_of_ids() -> None:
    source = FhirRestConfig("http://h/fhir", (SearchSpec("Patient"), SearchSpec(
        "Observation", (("code", "x"),), include=("Observation:subject",))), since="t")
    out = restricted(source, [f"p{i:03d}" for i in range(150)])
    assert out.since is None
    assert [(s.resource_type, s.params[:-1], s.params[-1][0], len(s.params[-1][1].split(",")))
            for s in out.searches] == [
        ("Patient", (), "_id", 100), ("Patient", (), "_id", 50),
        ("Observation", (("code", "x"),), "patient", 100),
        ("Observation", (("code", "x"),), "patient", 50)]
    assert out.searches[2].include == ("Observation:subject",)
    assert out.searches[2].params[-1][1].startswith("Patient/p000,Patient/p001")


# -- discovery against sekmet -------------------------------------------------------------


@pytest.fixture(scope="module")
def fhir() -> Iterator[SekmetServer]:
    with temporary_sekmet("dic-incr-sekmet-") as server:
        yield server


def delete(server: SekmetServer, path: str) -> None:
    request = urllib.request.Request(f"{server.base_url}/{path}", method="DELETE", headers={
        "Authorization": f"Bearer {server.static_token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 202, 204), response.status


def patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female"}


def weight(pid: str, subject: str, kg: float) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"w-{pid}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"reference": f"Patient/{subject}"},
            "valueQuantity": {"value": kg, "unit": "kg"}}


@pytest.mark.fhir_server
async def test_discovery_finds_every_patient_a_change_touched(fhir: SekmetServer) -> None:
    ids = [f"d{uuid.uuid4().hex[:6]}{c}" for c in "abcde"]
    a, b, c, d, e = ids
    await asyncio.to_thread(fhir.put, [r for p in (a, b, c, d) for r in (
        patient(p), weight(p, p, 70.0))])
    client = HttpClient(fhir.base_url, BearerAuth(fhir.static_token))
    try:
        since = await server_time(client)
        await asyncio.sleep(0.01)
        # a's weight changes, b's Observation moves to c, d's is deleted, e is new
        await asyncio.to_thread(fhir.put, [weight(a, a, 71.0), weight(b, c, 70.0),
                                           patient(e)])
        await asyncio.to_thread(delete, fhir, f"Observation/w-{d}")
        changes = await discover(client, ["Patient", "Observation"], since, 50)
        assert changes.patients == {a, b, c, d, e}
        assert changes.entries == 4 and changes.next_since >= since
        # from the next watermark: nothing, and then only what changed after it
        assert (await discover(client, ["Patient", "Observation"], changes.next_since,
                               50)).patients == set()
        with pytest.raises(Fallback) as raised:
            await discover(client, ["Patient", "Observation"], since, 2)
        assert raised.value.reason is FallbackReason.CHANGES
        # a changed resource that names no patient: whom it concerns is not in its history
        later = changes.next_since
        await asyncio.to_thread(fhir.put, [{
            "resourceType": "Medication", "id": f"m-{a}",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "387207008"}]}}])
        assert (await discover(client, ["Patient", "Observation"], later, 50)).patients \
            == set()  # not a type the mapping reads
        with pytest.raises(Fallback) as raised:
            await discover(client, ["Patient", "Medication"], later, 50)
        assert raised.value.reason is FallbackReason.UNLINKED
    finally:
        await client.close()


# -- the runner ---------------------------------------------------------------------------


def incremental_count(runner: Runner) -> float:
    return float(runner.metrics.incremental_runs.labels(DATASET)._value.get())


def fallbacks(runner: Runner, reason: str) -> float:
    return float(runner.metrics.incremental_fallbacks.labels(DATASET, reason)._value.get())


@pytest.fixture
def own_fhir(tmp_path: Path) -> Iterator[SekmetServer]:
    """A sekmet of the test's own, holding Munich's pilot patients twice (48)."""
    (tmp_path / "sekmet").mkdir()
    server = start_sekmet(tmp_path / "sekmet")
    try:
        server.put(list(pilot_resources("tm", copies=2)))
        yield server
    finally:
        stop_sekmet(server)


@pytest.mark.fhir_server
async def test_a_subscription_run_pulls_only_the_changed_patients(
        own_fhir: SekmetServer, cluster: Cluster, tmp_path: Path, export: Path,
        state: StateStore) -> None:
    fhir = own_fhir
    patients = [r for r in pilot_resources("tm", copies=2) if r["resourceType"] == "Patient"]
    config = connector_config(cluster, tmp_path, export, updates="delta", source={
        "kind": "fhir-rest", "base_url": fhir.base_url,
        "auth": {"kind": "bearer", "token": fhir.static_token}})
    runner = Runner(config, state)
    # no base yet: a subscription's run pulls everything (and says why)
    first = await runner.run(DATASET, "subscription")
    assert first.ok, first.error
    assert fallbacks(runner, "base") == 1 and incremental_count(runner) == 0
    assert first.record.counts.rows_shared == len(patients)

    # one patient changes gender, another is deleted: the next run pulls those two only
    flip = {"male": "female", "female": "male"}
    changed = {**patients[0], "gender": flip[patients[0]["gender"]]}
    await asyncio.to_thread(fhir.put, [changed])
    await asyncio.to_thread(delete, fhir, f"Patient/{patients[1]['id']}")
    second = await runner.run(DATASET, "subscription:gap")
    assert second.ok, second.error
    assert incremental_count(runner) == 1
    record = second.record
    assert record.status is RunStatus.SUCCEEDED and "discover" in record.stage_seconds
    assert record.counts.patients == 1  # the deleted one is no longer there to pull
    assert record.counts.rows_shared == len(patients) - 1
    # what a full pull gives: a forced (manual) run is one
    assert record.version_id is not None
    incremental = await mpc_count_and_sum(cluster, record.version_id, "gender=male")
    full = await runner.run(DATASET, "manual")
    assert full.ok and full.record.version_id is not None
    assert "discover" not in full.record.stage_seconds
    assert await mpc_count_and_sum(cluster, full.record.version_id, "gender=male") == incremental
    men = sum(p["gender"] == "male" for p in patients[2:]) + (changed["gender"] == "male")
    assert incremental == (len(patients) - 1, men)

    # nothing changed since: an unchanged run, no version
    third = await runner.run(DATASET, "subscription")
    assert third.record.status is RunStatus.UNCHANGED and third.record.version_id is None


class _FailingVread:
    """An HttpClient whose history names one updated Observation and whose vread fails
    with a SourceError naming its path (as HttpClient's errors do)."""

    base_url = "http://127.0.0.1:1/fhir"

    async def request(self, method: str, url: str, **_: Any) -> tuple[Any, Any]:
        class Answer:
            status, url = 200, ""
        if url.endswith("/Patient"):
            return Answer(), {"resourceType": "Bundle", "meta": {"lastUpdated": "t1"}}
        if url.endswith("/Observation/_history"):
            return Answer(), {"resourceType": "Bundle", "type": "history", "entry": [{
                "resource": {"resourceType": "Observation", "id": "w-secret-id",
                             "subject": {"reference": "Patient/secret-id"}},
                "response": {"etag": 'W/"2"'}}]}
        raise SourceError(f"127.0.0.1:1 GET {url.split('fhir', 1)[1]}: HTTP 500: boom")


async def test_a_failed_vread_falls_back_without_naming_the_resource() -> None:
    with pytest.raises(Fallback) as raised:
        await discover(_FailingVread(), ["Observation"], "t0", 50)  # type: ignore[arg-type]
    assert raised.value.reason is FallbackReason.SERVER
    assert "secret-id" not in str(raised.value) and "Observation" in str(raised.value)
