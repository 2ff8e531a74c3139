"""``POST /v1/uploads/{version}/supersede`` over mutual TLS: the owning site's connector erases
the dataset's older versions on this node, audited; other sites' connectors and people are
refused and nothing is erased. ``prepare`` is a durable vote (``prepared``), and the abort
erases a prepared version."""

from __future__ import annotations

import json
import uuid
from typing import Any

from dic_connector.node.store.enums import VersionState
from dic_connector.node.store.unit_of_work import Store

from .conftest import MANIFEST, TlsNode, make_version


async def _states(store: Store, *versions: uuid.UUID) -> list[VersionState]:
    async with store.unit_of_work() as uow:
        return [(await uow.versions.get(v)).state for v in versions]


async def _supersessions(store: Store) -> list[tuple[str, str, dict[str, Any]]]:
    async with store.unit_of_work() as uow:
        return [(e.actor, e.object, json.loads(e.details)) for e in await uow.audit.entries()
                if e.action == "version.supersede"]


async def test_the_sites_connector_erases_older_versions_audited_once(
        tls_node: TlsNode) -> None:
    node = tls_node.node
    first, current = node.version_id, await make_version(node.store, node.dataset_id)
    stale = await make_version(node.store, node.dataset_id, commit=False)  # numbered after current

    status, body = await tls_node.call("POST", f"/v1/uploads/{current}/supersede",
                                       "connector.tm")
    assert (status, body) == (200, {"version_id": str(current), "versions_erased": 1})
    assert await _states(node.store, first, current, stale) == [
        VersionState.DELETED, VersionState.COMMITTED, VersionState.RECEIVING]
    assert await _supersessions(node.store) == [
        ("connector:tm", f"version:{current}",
         {"dataset": str(node.dataset_id), "versions_erased": 1, "erased": [str(first)]})]

    # a retry confirms with nothing more to erase, and audits nothing new
    status, body = await tls_node.call("POST", f"/v1/uploads/{current}/supersede",
                                       "connector.tm")
    assert (status, body) == (200, {"version_id": str(current), "versions_erased": 0})
    assert len(await _supersessions(node.store)) == 1


async def test_other_sites_connector_people_and_uncommitted_versions_are_refused(
        tls_node: TlsNode) -> None:
    node = tls_node.node
    first, current = node.version_id, await make_version(node.store, node.dataset_id)
    path = f"/v1/uploads/{current}/supersede"

    status, body = await tls_node.call("POST", path, "connector.tr")
    assert (status, body["detail"]) == (404, f"upload {current} not found")
    for who in ("alice", "owner_tm", "admin"):  # a person's token is not a certificate
        status, body = await tls_node.call("POST", path, None, node.auth(who))
        assert status == 401, who
        assert body["detail"] == "this operation needs a connector's TLS client certificate"

    receiving = await make_version(node.store, node.dataset_id, commit=False)
    status, body = await tls_node.call("POST", f"/v1/uploads/{receiving}/supersede",
                                       "connector.tm")
    assert status == 409
    assert body["detail"] == (f"dataset version {receiving} is receiving; only a committed "
                              "version supersedes older ones")
    status, _ = await tls_node.call("POST", f"/v1/uploads/{uuid.uuid4()}/supersede",
                                    "connector.tm")
    assert status == 404

    assert await _states(node.store, first, current, receiving) == [
        VersionState.COMMITTED, VersionState.COMMITTED, VersionState.RECEIVING]
    assert await _supersessions(node.store) == []


async def test_prepare_is_a_durable_vote_audited_once_and_abort_erases_a_prepared_version(
        tls_node: TlsNode) -> None:
    """``prepare`` makes the version ``prepared`` (frozen: no column more), a retried vote
    answers ready again and audits nothing new; the connector's abort erases it."""
    node = tls_node.node
    version = await make_version(node.store, node.dataset_id, commit=False)
    for _ in range(2):
        status, body = await tls_node.call("POST", f"/v1/uploads/{version}/prepare",
                                           "connector.tm")
        assert (status, body["state"], body["missing_columns"]) == (200, "prepared", [])
    async with node.store.reading() as uow:
        votes = [e for e in await uow.audit.entries() if e.action == "upload.prepare"]
        assert [(e.actor, e.object) for e in votes] == [("connector:tm", f"version:{version}")]
        assert (await uow.versions.get(version)).prepared_at is not None
    column = MANIFEST["columns"][0]["name"]
    status, body = await tls_node.call("PUT", f"/v1/uploads/{version}/columns/{column}",
                                       "connector.tm")
    assert (status, body["detail"]) == (409, f"upload {version} is prepared, not receiving "
                                             "columns")
    status, body = await tls_node.call("DELETE", f"/v1/uploads/{version}", "connector.tm")
    assert (status, body["state"]) == (200, "deleted")
    status, body = await tls_node.call("POST", f"/v1/uploads/{version}/prepare",
                                       "connector.tm")
    assert status == 409 and "state deleted" in body["detail"]
