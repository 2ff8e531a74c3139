"""Dataset metadata for researchers, and deletion by the owning site.

Researchers see which datasets exist, their sites, row counts and column names (the
manifest) — what they need to phrase a request — never a value. A data owner deletes their
site's dataset: every version's blobs are erased and its keys destroyed on this node, and the
deletion is audited, and announced to the two other nodes (the peer outbox), which erase
their shares too. (A connector can also delete its site's dataset on all three nodes.)
"""

from __future__ import annotations

from aiohttp import web

from dic_connector.errors import NotFoundError
from dic_connector.node.api.endpoint import Endpoint
from dic_connector.node.api.keys import CONFIG, COORDINATION, STORE, identity
from dic_connector.node.api.requests import _iso, path_uuid
from dic_connector.node.api.schemas import DATASET, DELETED, array
from dic_connector.node.coordination.replication import announce
from dic_connector.node.store.datasets import manifest_columns
from dic_connector.vocabulary import Role


async def list_datasets(request: web.Request) -> web.Response:
    who = identity(request)
    site = who.site_id if who.role is Role.DATA_OWNER else None
    async with request.app[STORE].reading() as uow:
        out = []
        for dataset in await uow.datasets.all(site_id=site):
            if dataset.deleted_at is not None:
                continue
            latest = await uow.versions.latest_committed(dataset.id)
            out.append({
                "id": str(dataset.id), "site": dataset.site_id, "name": dataset.name,
                "latest_version": None if latest is None or latest.committed_at is None else {
                    "id": str(latest.id), "number": latest.number,
                    "row_count": latest.row_count,
                    "columns": manifest_columns(latest.manifest),
                    "committed_at": _iso(latest.committed_at)},
            })
        return web.json_response(out)


async def delete_dataset(request: web.Request) -> web.Response:
    who = identity(request)
    dataset_id = path_uuid(request, "dataset_id")
    async with request.app[STORE].unit_of_work() as uow:
        dataset = await uow.datasets.get(dataset_id)
        if dataset.site_id != who.site_id or dataset.deleted_at is not None:
            raise NotFoundError(f"dataset {dataset_id} not found")
        erased = await uow.versions.delete_dataset(dataset_id)
        await uow.audit.append(who.actor, "dataset.delete", f"dataset:{dataset_id}",
                               {"site": dataset.site_id, "versions_erased": len(erased)})
        await announce(uow, request.app[CONFIG], "dataset_erase", "POST",
                       f"/v1/peer/datasets/{dataset_id}/erase",
                       {"site": dataset.site_id, "by": who.name})
        request.app[COORDINATION].wake()
        return web.json_response({"dataset_id": str(dataset_id), "versions_erased": len(erased)})


ENDPOINTS = (
    Endpoint("GET", "/v1/datasets", list_datasets, "listDatasets",
             "Datasets (metadata only: site, name, row count, column names)",
             frozenset({Role.RESEARCHER, Role.DATA_OWNER, Role.ADMIN}),
             response_schema=array(DATASET)),
    Endpoint("DELETE", "/v1/datasets/{dataset_id}", delete_dataset, "deleteDataset",
             "Erase a dataset of the caller's site (all versions)",
             frozenset({Role.DATA_OWNER}), response_schema=DELETED,
             uuid_params=("dataset_id",)),
)
