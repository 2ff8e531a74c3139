"""Connector uploads of share pairs, with a two-phase commit across the three nodes.

The connector of site S (identified by its TLS client certificate from the deployment CA,
subjectAltName ``connector.S``; never by a token a person could hold) drives, for one new
dataset version with an id it chose:

1. ``PUT /v1/uploads/{version}`` on every node: a ``receiving`` version (manifest, row count;
   the manifest may declare how the version differs from earlier ones, ``LINEAGE``);
2. ``PUT /v1/uploads/{version}/columns/{column}``: this node's share pair of each column
   (``x_i || x_(i+1)``, little-endian uint64, 16 bytes per row), sealed at rest at once;
   for a *delta version* (the manifest's ``delta`` section: a committed base version of
   the dataset and the runs of its row positions to keep; checked at ``begin``), the pair
   of the fresh rows only, which the node appends to its own pair of the base's kept rows
   (:mod:`~dic_connector.node.store.delta`), sent instead as
   ``PUT .../fresh/{first}/{count}``: the fresh pairs of several consecutive columns in one
   body and one transaction;
3. ``POST /v1/uploads/{version}/prepare`` on every node: the node votes ready only when every
   declared column is stored (phase one), and the version becomes ``prepared``: frozen,
   still invisible, and never expired by the stale-upload cleanup;
4. ``POST /v1/uploads/{version}/commit`` on every node (phase two), or
   ``DELETE /v1/uploads/{version}`` everywhere when any node voted no or failed;
5. later, once the version is committed on all three, ``POST /v1/uploads/{version}/supersede``
   on every node: each erases the dataset's older versions and audits ``version.supersede``
   (:func:`supersede`, which also says what becomes of an analysis on an erased version).

A receiving or prepared version is invisible to analyses; a version abandoned half-way,
before this node voted (a connector or node that died), is erased by the node's stale-upload
cleanup. A version this node voted ready on is *in doubt* until it learns the outcome: the
connector's commit or abort, or, when the connector's call never arrived (this node was
down), the outcome its peers know (:mod:`~dic_connector.node.coordination.recovery`, run by
the same cleanup loop: committed on a peer -> committed here). Analyses pin a version id
that all three nodes must hold committed, so a version committed on only some nodes (the
connector died between commits) is never computed on; the connector retries the commit,
which is idempotent. Bodies hold shares only: one node's pair reveals nothing of the data.

The connector also withdraws a dataset of its site (consent withdrawn, data recalled by the
hospital) without a person touching shares: ``DELETE /v1/uploads/datasets/{dataset_id}`` on
every node, with the id every node derives from site and name
(:func:`~dic_connector.node.store.datasets.dataset_uuid`). Each node erases every version's blobs
and keys and audits ``dataset.delete`` by ``connector:<site>``. The call is idempotent so the
connector can retry until all three nodes confirm: a dataset already deleted, or unknown on
this node (e.g. its first upload never reached it), answers 200 with ``versions_erased: 0``
and is audited only when something was deleted. Another site's dataset is refused (403, as a
``begin`` for another site is) and left untouched. A later upload under the same name revives
the dataset under the same id (audited ``dataset.revive``); the erased versions stay erased.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dic_connector.errors import (
    AuthenticationError,
    AuthorizationError,
    ConflictError,
    NotFoundError,
)
from dic_connector.node.api.bodies import read_exactly
from dic_connector.node.api.endpoint import Endpoint
from dic_connector.node.api.keys import STORE
from dic_connector.node.api.schemas import DELETED, NAME, SUPERSEDED, obj
from dic_connector.node.store.delta import check_delta, delta_section, kept_rows
from dic_connector.node.store.enums import VersionState
from dic_connector.node.store.models import DatasetVersion
from dic_connector.node.store.unit_of_work import UnitOfWork

CONNECTOR_NAME = re.compile(r"^connector\.([a-z0-9][a-z0-9-]{0,62})$")
#: Largest column upload: 2^27 rows x 16 bytes.
MAX_COLUMN_BYTES = 1 << 31

#: How the version differs from earlier versions of its dataset, as the connector counted
#: (rows only in the earlier one, only in this one; :mod:`~dic_connector.node.analyses.lineage`).
LINEAGE = obj({"previous": {"type": "array", "maxItems": 100_000, "items": obj({
    "version_id": {"type": "string", "format": "uuid"},
    "removed": {"type": "integer", "minimum": 0, "maximum": 1 << 27},
    "added": {"type": "integer", "minimum": 0, "maximum": 1 << 27}})}})

#: A delta version (:mod:`~dic_connector.node.store.delta`): the base version and the runs
#: ``[start, stop)`` of its row positions kept (the fresh rows follow them).
DELTA = obj({"base": {"type": "string", "format": "uuid"},
             "keep": {"type": "array", "maxItems": 10_000, "items": {
                 "type": "array", "minItems": 2, "maxItems": 2,
                 "items": {"type": "integer", "minimum": 0, "maximum": 1 << 27}}}})

UPLOAD_CREATE = obj({
    "dataset": NAME, "site": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"},
    "row_count": {"type": "integer", "minimum": 0, "maximum": 1 << 27},
    "manifest": {"type": "object", "required": ["columns"],
                 "properties": {"columns": {"type": "array", "minItems": 1, "maxItems": 5000,
                                            "items": {"type": "object", "required": ["name"]}},
                                "lineage": LINEAGE, "delta": DELTA}},
})
UPLOAD = obj({"version_id": {"type": "string", "format": "uuid"},
              "dataset_id": {"type": "string", "format": "uuid"},
              "state": {"type": "string"}, "missing_columns": {"type": "array",
                                                               "items": {"type": "string"}}})


@dataclass(frozen=True)
class ConnectorIdentity:
    site_id: str

    @property
    def actor(self) -> str:
        return f"connector:{self.site_id}"


def connector_identity(request: web.Request) -> ConnectorIdentity:
    """The site whose connector certificate the TLS peer presented, or 401."""
    transport = request.transport
    peercert = transport.get_extra_info("peercert") if transport is not None else None
    names = [v for k, v in (peercert or {}).get("subjectAltName", ()) if k == "DNS"]
    sites = {m.group(1) for m in map(CONNECTOR_NAME.match, names) if m}
    if len(sites) != 1:
        raise AuthenticationError("this operation needs a connector's TLS client certificate")
    return ConnectorIdentity(sites.pop())


async def _owned_version(request: web.Request, uow: UnitOfWork) -> DatasetVersion:
    who = connector_identity(request)
    version = await uow.versions.get(uuid.UUID(request.match_info["version_id"]))
    dataset = await uow.datasets.get(version.dataset_id)
    if dataset.site_id != who.site_id:
        raise NotFoundError(f"upload {version.id} not found")
    return version


async def _view(uow: UnitOfWork, version: DatasetVersion) -> dict[str, Any]:
    missing = await uow.versions.missing_columns(version.id) \
        if version.state is VersionState.RECEIVING else []
    return {"version_id": str(version.id), "dataset_id": str(version.dataset_id),
            "state": version.state.value, "missing_columns": missing}


async def begin(request: web.Request) -> web.Response:
    who, body = connector_identity(request), await request.json()
    version_id = uuid.UUID(request.match_info["version_id"])
    if body["site"] != who.site_id:
        raise AuthorizationError("a connector may upload only its own site's data")
    async with request.app[STORE].unit_of_work() as uow:
        try:
            await uow.sites.get(who.site_id)
        except NotFoundError:
            raise AuthorizationError(f"site '{who.site_id}' is not registered on this node; "
                                      "an admin registers sites") from None
        try:
            existing = await uow.versions.get(version_id)
        except NotFoundError:
            existing = None
        if existing is not None:  # a retried begin: same version, same dataset
            dataset = await uow.datasets.get(existing.dataset_id)
            if dataset.site_id != who.site_id or dataset.name != body["dataset"]:
                raise ConflictError(f"upload {version_id} exists for another dataset")
            return web.json_response(await _view(uow, existing))
        found = await uow.datasets.by_name(who.site_id, body["dataset"], include_deleted=True)
        if found is not None and found.deleted_at is None:
            dataset = found
        else:  # new, or deleted before: revived under the same id
            action = "dataset.create" if found is None else "dataset.revive"
            dataset = await uow.datasets.create(who.site_id, body["dataset"])
            await uow.audit.append(who.actor, action, f"dataset:{dataset.id}",
                                   {"site": who.site_id})
        details: dict[str, Any] = {"dataset": str(dataset.id), "rows": body["row_count"]}
        section = delta_section(body["manifest"])
        if section is not None:  # refused unless the base is committed here, as it was sent
            base = await uow.versions.get(uuid.UUID(section["base"]))
            check_delta(body["manifest"], body["row_count"], dataset.id, base)
            details |= {"base": section["base"], "kept": kept_rows(body["manifest"])}
        version = await uow.versions.create(dataset.id, body["manifest"], body["row_count"],
                                            version_id=version_id)
        await uow.audit.append(who.actor, "upload.begin", f"version:{version_id}", details)
        return web.json_response(await _view(uow, version), status=201)


async def put_column(request: web.Request) -> web.Response:
    """Store this node's share pair of one column. The connector, the version and the size
    the body must have are checked before a byte of it is read, and it is read counting."""
    column = request.match_info["column"]
    async with request.app[STORE].reading() as uow:
        version = await _owned_version(request, uow)
        if version.state is not VersionState.RECEIVING:
            raise ConflictError(f"upload {version.id} is {version.state.value}, not "
                                "receiving columns")
        if delta_section(version.manifest) is not None:
            raise ConflictError(f"upload {version.id} is a delta version: its fresh rows go "
                                "to PUT .../fresh/{first}/{count}")
        rows = version.row_count
    data = await read_exactly(request, 16 * rows,
                              f"column '{column}': a share pair of {rows} rows")
    async with request.app[STORE].unit_of_work() as uow:
        version = await _owned_version(request, uow)
        await uow.versions.add_blob(version.id, column, data)
        return web.json_response(await _view(uow, version))


async def put_fresh(request: web.Request) -> web.Response:
    """Store columns ``first`` .. ``first + count - 1`` (manifest order) of a delta version
    in one transaction: the body is their fresh rows' share pairs one column after another
    (16 bytes per fresh row and column), each composed with the base's kept rows
    (:meth:`~dic_connector.node.store.datasets.DatasetVersionRepository.add_delta_blobs`).
    One request and one commit for many narrow columns, where a column each would cost a
    round trip and a commit per column for a few rows."""
    try:
        first, count = int(request.match_info["first"]), int(request.match_info["count"])
    except ValueError:
        raise ConflictError("fresh columns: 'first' and 'count' are integers") from None
    async with request.app[STORE].reading() as uow:
        version = await _owned_version(request, uow)
        if version.state is not VersionState.RECEIVING or delta_section(
                version.manifest) is None:
            raise ConflictError(f"upload {version.id} is not a delta version receiving "
                                "columns")
        names = [c["name"] for c in version.manifest["columns"]]
        if first < 0 or count < 1 or first + count > len(names):
            raise ConflictError(f"fresh columns {first}..{first + count - 1}: the manifest "
                                f"has columns 0..{len(names) - 1}")
        fresh = version.row_count - kept_rows(version.manifest)
    size = 16 * fresh
    data = await read_exactly(request, size * count,
                              f"columns {first}..{first + count - 1}: share pairs of "
                              f"{fresh} fresh rows each")
    async with request.app[STORE].unit_of_work() as uow:
        version = await _owned_version(request, uow)
        await uow.versions.add_delta_blobs(version.id, [
            (names[first + j], data[j * size:(j + 1) * size]) for j in range(count)])
        return web.json_response(await _view(uow, version))


async def prepare(request: web.Request) -> web.Response:
    """Vote ready: with every column stored the version becomes ``prepared`` (durably, with
    the time of the vote), which the stale-upload cleanup never erases. Idempotent: a
    prepared or committed version votes ready again (audited once, at the first vote)."""
    async with request.app[STORE].unit_of_work() as uow:
        version = await _owned_version(request, uow)
        view = await _view(uow, version)
        if version.state is VersionState.DELETED or view["missing_columns"]:
            raise ConflictError(f"upload {version.id} is not ready: state {version.state.value}, "
                                f"missing {view['missing_columns']}")
        if version.state is VersionState.RECEIVING:
            version = await uow.versions.prepare(version.id)
            await uow.audit.append(connector_identity(request).actor, "upload.prepare",
                                   f"version:{version.id}")
        return web.json_response(await _view(uow, version))


async def commit(request: web.Request) -> web.Response:
    async with request.app[STORE].unit_of_work() as uow:
        version = await _owned_version(request, uow)
        version = await uow.versions.commit(version.id)
        await uow.audit.append(connector_identity(request).actor, "upload.commit",
                               f"version:{version.id}")
        return web.json_response(await _view(uow, version))


async def abort(request: web.Request) -> web.Response:
    async with request.app[STORE].unit_of_work() as uow:
        version = await _owned_version(request, uow)
        if version.state in (VersionState.RECEIVING, VersionState.PREPARED):
            version = await uow.versions.delete(version.id)
            await uow.audit.append(connector_identity(request).actor, "upload.abort",
                                   f"version:{version.id}")
        elif version.state is VersionState.COMMITTED:
            raise ConflictError(f"upload {version.id} is committed; delete the dataset instead")
        return web.json_response(await _view(uow, version))


async def supersede(request: web.Request) -> web.Response:
    """Erase, on this node, every version of the dataset older than this committed one.

    The connector calls it on every node once the new version is committed on all three
    (e.g. a patient withdrew consent and the new version leaves their rows out), and retries
    until each confirms: older versions, committed or stale receiving, lose their blobs and
    key (:meth:`~dic_connector.node.store.datasets.DatasetVersionRepository.erase_older`),
    and ``version.supersede`` is audited with the erased ids (ids, never data). Idempotent:
    a retry erases nothing more, answers ``versions_erased: 0`` and audits nothing. Only the
    connector of the dataset's site may call it (another site's is answered 404, as for
    ``commit``); a version that is not committed here is refused (409) and nothing erased.

    Analyses and an erased version. Every node computes only on the version ids pinned in
    the agreed plan, and checks at ``prepare`` and again at ``start`` that each is committed
    on it (:func:`~dic_connector.node.coordination.verify.check_plan`), so an erasure races
    an analysis in one of three ways, none of which computes on erased or half-erased shares
    or answers 500:

    - not started yet: the plan pinning the old version is refused as not ready ("version
      ... is deleted, not committed"); the coordinator proposes again with the latest
      committed version, i.e. the new one, and the analysis runs on that;
    - started on a node that has not yet run its start check: that node refuses the plan
      and the request fails on all three nodes with that reason;
    - computing: a node loads its shares of the pinned version in one transaction, and the
      erasure removes every blob of a version at once, so a node either holds the whole
      version in memory before the erasure commits (and finishes computing the aggregate
      it was approved for) or fails to load ("dataset version ... is not committed" or
      "... has no column ...") and the request fails with that reason; a node whose peers
      failed fails its MPC session in turn.

    The researcher sees ``failed`` with the reason and may submit again, which computes on
    the new version.
    """
    who = connector_identity(request)
    async with request.app[STORE].unit_of_work() as uow:
        version = await _owned_version(request, uow)
        erased = await uow.versions.erase_older(version.id)
        if erased:
            await uow.audit.append(who.actor, "version.supersede", f"version:{version.id}",
                                   {"dataset": str(version.dataset_id),
                                    "versions_erased": len(erased),
                                    "erased": [str(e) for e in erased]})
        return web.json_response({"version_id": str(version.id),
                                  "versions_erased": len(erased)})


async def delete_dataset(request: web.Request) -> web.Response:
    """Erase every version of one of the connector's datasets on this node (idempotent)."""
    who = connector_identity(request)
    dataset_id = uuid.UUID(request.match_info["dataset_id"])
    async with request.app[STORE].unit_of_work() as uow:
        dataset = await uow.datasets.find(dataset_id, lock=True)
        if dataset is None:  # never stored here: nothing to erase
            return web.json_response({"dataset_id": str(dataset_id), "versions_erased": 0})
        if dataset.site_id != who.site_id:
            raise AuthorizationError("a connector may delete only its own site's datasets")
        was_live = dataset.deleted_at is None
        erased = await uow.versions.delete_dataset(dataset_id)
        if was_live or erased:
            await uow.audit.append(who.actor, "dataset.delete", f"dataset:{dataset_id}",
                                   {"site": dataset.site_id, "versions_erased": len(erased)})
        return web.json_response({"dataset_id": str(dataset_id), "versions_erased": len(erased)})


_P = ("version_id",)
ENDPOINTS = (
    Endpoint("PUT", "/v1/uploads/{version_id}", begin, "beginUpload",
             "Start receiving a new dataset version (connector of the site)", frozenset(),
             request_schema=UPLOAD_CREATE, response_schema=UPLOAD, status=201, uuid_params=_P,
             connector=True, tag="upload"),
    Endpoint("PUT", "/v1/uploads/{version_id}/columns/{column}", put_column, "putColumn",
             "This node's share pair of one column", frozenset(), response_schema=UPLOAD,
             uuid_params=_P, connector=True, tag="upload",
             body_media_type="application/octet-stream"),
    Endpoint("PUT", "/v1/uploads/{version_id}/fresh/{first}/{count}", put_fresh,
             "putFreshColumns",
             "This node's share pairs of a delta version's fresh rows, columns first.. "
             "first+count-1 in one body", frozenset(), response_schema=UPLOAD,
             uuid_params=_P, connector=True, tag="upload",
             body_media_type="application/octet-stream"),
    Endpoint("POST", "/v1/uploads/{version_id}/prepare", prepare, "prepareUpload",
             "Phase one: vote ready when every column is stored", frozenset(),
             response_schema=UPLOAD, uuid_params=_P, connector=True, tag="upload"),
    Endpoint("POST", "/v1/uploads/{version_id}/commit", commit, "commitUpload",
             "Phase two: make the version visible on this node (idempotent)", frozenset(),
             response_schema=UPLOAD, uuid_params=_P, connector=True, tag="upload"),
    Endpoint("POST", "/v1/uploads/{version_id}/supersede", supersede, "supersedeVersions",
             "Erase the dataset's versions older than this committed one on this node "
             "(idempotent)", frozenset(), response_schema=SUPERSEDED, uuid_params=_P,
             connector=True, tag="upload"),
    Endpoint("DELETE", "/v1/uploads/{version_id}", abort, "abortUpload",
             "Abort: erase a receiving or prepared version", frozenset(), response_schema=UPLOAD,
             uuid_params=_P, connector=True, tag="upload"),
    Endpoint("DELETE", "/v1/uploads/datasets/{dataset_id}", delete_dataset,
             "deleteUploadedDataset",
             "Withdraw a dataset of the connector's site: erase every version on this node "
             "(idempotent)", frozenset(), response_schema=DELETED,
             uuid_params=("dataset_id",), connector=True, tag="upload"),
)
