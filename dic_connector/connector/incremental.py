"""Incremental pulls: after a notification, pull only the patients whose data changed.

A delta version (:mod:`.delta`) sends only the rows the base version lacks, but the full
pull behind it still reads, maps and digests the whole cohort: at 10^4 patients that is most
of a run, for one changed patient. An incremental pull reads only what changed:

1. **Discover** what changed since the base was pulled: ``GET [type]/_history?_since=W``
   for each resource type the mapping reads (FHIR R4 RESTful API, "history",
   https://hl7.org/fhir/R4/http.html#history; type-level history includes deletions, which
   a ``_lastUpdated`` search cannot show). ``W`` is the dataset's watermark: the server's own
   time of the previous pull's first search page (``Bundle.meta.lastUpdated``,
   :attr:`~dic_connector.sources.fhir_rest.FhirRestSource.next_since`), so no client clock
   is involved; the next watermark is the server's time of a search answered before the
   history was read, so a change written meanwhile is seen (again) next time, never lost.
   A changed Patient names itself; any other resource names the patients it refers to
   (every ``reference`` to ``Patient/<id>`` in it) *and* those its version before the
   window referred to (one ``vread`` of that version: an Observation moved to another
   patient, or deleted, leaves its old patient changed too).
2. **Pull** those patients only: each configured search again, restricted by ``_id`` (the
   Patient search) or ``patient`` (every other type: the R4 search parameter of the Patient
   compartment), in batches of :data:`ID_BATCH` ids, and map, validate and encode them as a
   full pull does.
3. **Plan** the version on the base (:func:`plan_incremental`): the base's rows of the
   changed patients are removed, their fresh rows (if they still exist and pass) added.
   Rows are found by a **keyed pseudonym of the patient key**, 16 bytes of BLAKE2b keyed
   with a key derived from the connector's lineage key (a PRF, used as the issue's "HMAC
   with a site secret"; BLAKE2's keyed mode is a MAC by design, RFC 7693 section 2.5),
   kept in the connector's lineage state by the base's row positions. The pseudonyms never
   leave the connector (the nodes see row positions only, as for any delta), and without
   the key file, which is not in the state database, a stored pseudonym cannot be tested
   against a guessed patient id. A changed patient whose row is unchanged keeps its base
   row (rows are matched by their row keys, as :func:`~.delta.plan_upload` does), so the
   declared lineage is exactly that of a full pull of the same data.

What the nodes learn is what a delta version tells them (:mod:`.delta`): how many rows
left and arrived, and which base positions survive. The lineage declaration and the
disclosure ledger work on the same counts as for a full pull.

An incremental pull is tried only for a run a subscription triggered, on an
``updates: delta`` dataset with a FHIR REST source and no consent or opt-out rules (a
consent can stop permitting at a date with no resource changing, and opt-out files and
Lists change outside the server's history); scheduled, manual and reconciliation runs are
full pulls, the last line of defence. It falls back to a full pull, counted in
``dic_connector_incremental_fallbacks_total{reason}``, when there is no base to build on
(``base``: no committed version with pseudonyms and a watermark), the mapping or searches
changed (``mapping``), more than :data:`MAX_CHANGED_FRACTION` of the base's patients
changed (``changes``: a full pull is then about as cheap), a changed resource refers to no
patient (``unlinked``: e.g. a Medication that MedicationStatements refer to), the server
cannot answer the history or the restricted searches (``server``), or the nodes refuse the
delta (``refused``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urljoin

import numpy as np
import numpy.typing as npt

from dic_connector.connector.delta import DeltaPlan, Positions, UploadPlan, plan_upload
from dic_connector.connector.lineage import (
    Keys,
    LineageState,
    Pseudonyms,
    as_void,
    with_ordinals,
)
from dic_connector.errors import DicError, SourceError
from dic_connector.mapping import CohortMapping
from dic_connector.sources import FhirRestConfig, HttpClient
from dic_connector.sources.fhir_rest import SearchSpec
from dic_connector.sources.http import where

#: ids per restricted search (a query string of about 100 ids stays far below URL limits;
#: longer ones go as POST ``_search`` anyway)
ID_BATCH = 100
#: history entries per page asked for
HISTORY_PAGE = 500
#: more changed patients than this fraction of the base: a full pull instead
MAX_CHANGED_FRACTION = 0.25
#: the fewest changed patients that never make a full pull necessary (small cohorts)
MIN_CHANGED_LIMIT = 50


class FallbackReason(StrEnum):
    """Why a run a subscription triggered pulls everything (``reason`` label)."""

    BASE = "base"
    MAPPING = "mapping"
    CONSENT = "consent"
    SOURCE = "source"
    CHANGES = "changes"
    UNLINKED = "unlinked"
    SERVER = "server"
    REFUSED = "refused"


class Fallback(DicError):
    """An incremental pull is not possible; the run pulls everything instead."""

    def __init__(self, reason: FallbackReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


def patient_pseudonyms(key: bytes, patient_keys: Iterable[Any]) -> Pseudonyms:
    """Keyed pseudonyms (two words each) of patient keys, in order (module docstring)."""
    psd_key = hashlib.blake2b(b"dic-connector patient pseudonym", key=key,
                              digest_size=32).digest()
    out = bytearray()
    for value in patient_keys:
        out += hashlib.blake2b(str(value).encode(), key=psd_key, digest_size=16).digest()
    return np.frombuffer(bytes(out), dtype="<u8").astype(np.uint64).reshape(-1, 2)


def mapping_fingerprint(mapping: CohortMapping, searches: Sequence[SearchSpec]) -> bytes:
    """What a version was pulled with, as 16 bytes: the mapping's views and columns and
    the source's searches. Another fingerprint: the base's rows mean something else."""
    text = json.dumps({"views": [[v.name, v.key, v.definition] for v in mapping.views],
                       "columns": [repr(c) for c in mapping.columns],
                       "searches": [repr(s) for s in searches]},
                      sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


# -- 1. discovery ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Changes:
    """The patients changed since a watermark, and the next watermark."""

    patients: frozenset[str]
    next_since: str
    #: history entries read (creates, updates and deletions of every type)
    entries: int


def patient_references(resource: Any) -> set[str]:
    """The ids of every ``Patient/<id>`` a resource refers to (relative or absolute)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str):
                parts = ref.split("/_history/")[0].rstrip("/").split("/")
                if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
                    found.add(parts[-1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(resource)
    return found


def _version(entry: dict[str, Any]) -> int | None:
    etag = str((entry.get("response") or {}).get("etag") or "")
    digits = etag.removeprefix("W/").strip('"')
    if digits.isdigit():
        return int(digits)
    version = ((entry.get("resource") or {}).get("meta") or {}).get("versionId")
    return int(version) if isinstance(version, str) and version.isdigit() else None


def _entry_id(entry: dict[str, Any]) -> tuple[str, str] | None:
    resource = entry.get("resource")
    if isinstance(resource, dict) and resource.get("id"):
        return str(resource.get("resourceType")), str(resource["id"])
    url = str((entry.get("request") or {}).get("url") or entry.get("fullUrl") or "")
    parts = url.split("?")[0].rstrip("/").split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 else None


async def server_time(client: HttpClient) -> str:
    """The server's time now, as it stamps a search (``Bundle.meta.lastUpdated``): of a
    search by an id no resource has, which any server answers from its index at once."""
    url = f"{client.base_url}/Patient"
    _, bundle = await client.request(
        "GET", url, params=[("_id", f"dic-clock-{secrets.token_hex(8)}")], want_json=True)
    stamp = ((bundle or {}).get("meta") or {}).get("lastUpdated") \
        if isinstance(bundle, dict) else None
    if not isinstance(stamp, str):
        raise Fallback(FallbackReason.SERVER, f"{where('GET', url)}: the searchset carries no "
                       "meta.lastUpdated (the server's time) to resume from")
    return stamp


async def _history(client: HttpClient, resource_type: str, since: str, limit: int
                   ) -> list[dict[str, Any]]:
    """Every entry of ``[type]/_history?_since=``, following ``next`` links."""
    url: str | None = f"{client.base_url}/{resource_type}/_history"
    params: list[tuple[str, str]] | None = [("_since", since), ("_count", str(HISTORY_PAGE))]
    entries: list[dict[str, Any]] = []
    while url is not None:
        response, bundle = await client.request("GET", url, params=params, want_json=True)
        if not isinstance(bundle, dict) or bundle.get("type") != "history":
            raise SourceError(f"{where('GET', url)}: answer is not a history Bundle")
        entries += [e for e in bundle.get("entry", []) or [] if isinstance(e, dict)]
        if len(entries) > limit:
            raise Fallback(FallbackReason.CHANGES, f"more than {limit} {resource_type} "
                           f"changes since {since}")
        url, params = next((urljoin(response.url, str(link["url"]))
                            for link in bundle.get("link", []) or []
                            if link.get("relation") == "next" and link.get("url")), None), None
    return entries


async def discover(client: HttpClient, resource_types: Sequence[str], since: str,
                   max_patients: int) -> Changes:
    """The patients whose resources of ``resource_types`` changed at or after ``since``.

    Raises :class:`Fallback` (``changes``) beyond ``max_patients`` changed patients (or
    that many history entries of one type), and (``server``) when the server cannot
    answer the history."""
    try:
        next_since = await server_time(client)
        patients: set[str] = set()
        entries = 0
        for resource_type in resource_types:
            earliest: dict[str, int] = {}  # resource id -> its earliest version in the window
            named: dict[str, set[str]] = {}  # resource id -> the patients its versions name
            for entry in await _history(client, resource_type, since, 4 * max_patients):
                entries += 1
                ident = _entry_id(entry)
                if ident is None or ident[0] != resource_type:
                    continue
                if resource_type == "Patient":
                    patients.add(ident[1])
                    continue
                named.setdefault(ident[1], set()).update(
                    patient_references(entry.get("resource")))
                version = _version(entry)
                if version is None:
                    raise Fallback(FallbackReason.SERVER, f"{resource_type}/_history: an entry "
                                   "without a version (etag or meta.versionId)")
                earliest[ident[1]] = min(version, earliest.get(ident[1], version))
            for rid, version in earliest.items():  # what the base saw of it: the version before
                if version > 1:
                    named[rid] |= await _references_of(client, resource_type, rid, version - 1)
                if not named[rid]:  # e.g. a Medication: who refers to it is not in its history
                    raise Fallback(FallbackReason.UNLINKED, f"a changed {resource_type} refers "
                                   "to no patient; the patients it concerns cannot be found")
                patients |= named[rid]
            if len(patients) > max_patients:
                raise Fallback(FallbackReason.CHANGES, f"more than {max_patients} patients "
                               f"changed since {since}")
    except SourceError as exc:
        raise Fallback(FallbackReason.SERVER, str(exc)) from exc
    return Changes(frozenset(patients), next_since, entries)


async def _references_of(client: HttpClient, resource_type: str, rid: str,
                         version: int) -> set[str]:
    url = f"{client.base_url}/{resource_type}/{rid}/_history/{version}"
    try:
        response, body = await client.request("GET", url, ok=(200, 404, 410), want_json=True)
    except SourceError:  # its text names the path, i.e. the resource's id: not logged
        raise SourceError(f"the vread of a changed {resource_type}'s version {version} "
                          "failed (the server's answer names the resource: not logged)"
                          ) from None
    if response.status != 200 or not isinstance(body, dict):
        return set()  # that version was a deletion (or is gone): it named nobody
    return patient_references(body)


# -- 2. the restricted pull -------------------------------------------------------------------


def restricted(source: FhirRestConfig, patients: Iterable[str]) -> FhirRestConfig:
    """``source`` with each search restricted to ``patients`` (``_id`` for Patient,
    ``patient`` for every other type), :data:`ID_BATCH` ids per search; no ``since``."""
    ids = sorted(patients)
    batches = [ids[i:i + ID_BATCH] for i in range(0, len(ids), ID_BATCH)]
    searches = []
    for spec in source.searches:
        for batch in batches:
            param = ("_id", ",".join(batch)) if spec.resource_type == "Patient" else (
                "patient", ",".join(f"Patient/{i}" for i in batch))
            searches.append(dataclasses.replace(spec, params=(*spec.params, param)))
    return dataclasses.replace(source, searches=tuple(searches), since=None)


# -- 3. the plan ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class IncrementalPlan:
    """The new version: the base's rows of unchanged patients, then the changed ones'."""

    upload: UploadPlan
    #: the version's row keys in the order of its *table*: the base rows kept for unchanged
    #: patients (by base position), then the pulled rows (what the lineage declares)
    row_keys: Keys
    #: the version's row keys and patient pseudonyms by row position, as sent
    order: Keys
    patients: Pseudonyms

    @property
    def rows(self) -> int:
        return int(self.order.shape[0])


def plan_incremental(state: LineageState, changed: Pseudonyms, pulled: npt.NDArray[np.uint64],
                     pulled_patients: Pseudonyms, *,
                     rng: np.random.Generator | None = None) -> IncrementalPlan:
    """The delta version on ``state``'s newest version after an incremental pull.

    ``changed``: the pseudonyms of the patients discovered; ``pulled``: the row digests
    (two words each) of the pulled table, in its row order, and ``pulled_patients`` their
    pseudonyms. The base rows of unchanged patients stay; the pulled rows are matched
    against the base by row key (a changed patient with an equal row keeps its base row),
    the others are fresh. Raises :class:`Fallback` (``base``) if nothing of the base could
    be kept in few enough runs (:func:`~.delta.plan_upload`'s limits)."""
    base_patients = state.patients
    unchanged: Positions = np.flatnonzero(~np.isin(
        as_void(base_patients.reshape(-1, 2)), as_void(np.asarray(changed).reshape(-1, 2)))
    ).astype(np.int64)
    digests = np.concatenate([state.order[unchanged, :2],
                              np.asarray(pulled, dtype=np.uint64).reshape(-1, 2)])
    # ordinals over this table, the unchanged base rows first: each of those keys is then
    # one of the base's (a digest's first ordinals), so only pulled rows can be fresh
    row_keys = with_ordinals(digests)
    plan = plan_upload(state, row_keys, rng=rng)
    if plan.delta is None:
        raise Fallback(FallbackReason.BASE, "no delta on the base is possible (nothing kept, "
                       "or the kept rows are too scattered)")
    kept = unchanged.shape[0]
    if (plan.delta.fresh < kept).any():  # cannot happen (see above); never send base rows
        raise Fallback(FallbackReason.BASE, "a base row would be sent again")
    table_patients = np.concatenate([base_patients[unchanged],
                                     np.asarray(pulled_patients, dtype=np.uint64).reshape(-1, 2)])
    rows = plan.table_rows(row_keys, state.order, as_delta=True)
    delta = DeltaPlan(plan.delta.base, plan.delta.keep, plan.delta.fresh - kept)
    upload = UploadPlan(np.zeros(0, dtype=np.int64), delta, full_fallback=False)
    return IncrementalPlan(upload, row_keys, row_keys[rows], table_patients[rows])


def max_changed(base_rows: int) -> int:
    """The most changed patients an incremental pull takes on a base of ``base_rows``."""
    return max(MIN_CHANGED_LIMIT, int(MAX_CHANGED_FRACTION * base_rows))
