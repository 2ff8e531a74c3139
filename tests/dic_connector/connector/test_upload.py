"""Connector -> three nodes over mutual TLS, two-phase commit: all or nothing."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from dic_connector.connector import upload
from dic_connector.connector.upload import QUEUED_COLUMNS, SENDS_PER_NODE, Uploader
from dic_connector.errors import CoordinationError, DeltaRefused, UploadError
from dic_connector.node.api import create_app
from dic_connector.node.config import parse_config
from dic_connector.node.store import migrate
from dic_connector.node.store.enums import VersionState
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.dataset_ids import dataset_uuid
from dic_connector.trust.keyring import NodeKeyring
from mpc.ring import to_signed
from mpc.sharing import AShare, reconstruct
from mpc.tls import NodeTls, issue_cert

from .conftest import MANIFEST, Cluster, Traffic, table


async def test_upload_commits_on_all_nodes_and_shares_reconstruct(cluster: Cluster) -> None:
    plain = table()
    handed = plain.copy()
    version_id = await cluster.uploader().upload("pilot_adrenal", handed, MANIFEST)
    assert not handed.any()  # the plaintext was wiped after sharing
    versions = await cluster.versions(version_id)
    assert [v.state for v in versions] == [VersionState.COMMITTED] * 3
    for j, column in enumerate(c["name"] for c in MANIFEST["columns"]):
        views = []
        for i, store in enumerate(cluster.stores):
            async with store.unit_of_work() as uow:
                data = await uow.versions.read_blob(version_id, column)
            views.append(AShare.from_bytes(i, data, len(plain)))
        assert list(to_signed(reconstruct(*views))) == list(plain[:, j])
        assert not np.array_equal(to_signed(views[0].a), plain[:, j])


async def test_columns_are_shared_as_they_are_sent_not_all_at_once(cluster: Cluster) -> None:
    """When a node is sent column k, columns before k are zeroed (shared) and columns more
    than SENDS_PER_NODE + QUEUED_COLUMNS ahead are still plaintext: the uploader never holds every
    column's pairs at once. The shares still reconstruct every column."""
    width = 12
    manifest = {"columns": [{"name": f"c{j}"} for j in range(width)]}
    plain = np.random.default_rng(3).integers(1, 1000, (24, width)).astype(np.int64)
    handed = plain.copy()
    seen: list[tuple[int, list[bool]]] = []

    def watch(node: int, request: aiohttp.ClientRequest) -> None:
        if "/columns/" in request.url.path:
            k = int(request.url.path.rsplit("/c", 1)[1])
            seen.append((k, [bool(handed[:, j].any()) for j in range(width)]))

    async with aiohttp.ClientSession(middlewares=(Traffic(cluster, watch),)) as session:
        version_id = await cluster.uploader(session=session).upload("wide", handed, manifest)
    assert not handed.any()
    assert sorted(k for k, _ in seen) == sorted(list(range(width)) * 3)
    for k, plaintext in seen:
        assert not any(plaintext[:k + 1])  # shared (and zeroed) before it is sent
        assert all(plaintext[k + SENDS_PER_NODE + QUEUED_COLUMNS + 1:])  # not shared yet
    for j in range(width):
        views = []
        for i, store in enumerate(cluster.stores):
            async with store.unit_of_work() as uow:
                views.append(AShare.from_bytes(i, await uow.versions.read_blob(
                    version_id, f"c{j}"), len(plain)))
        assert list(to_signed(reconstruct(*views))) == list(plain[:, j])


def test_share_column_zeroes_the_column_and_gives_each_node_its_pair() -> None:
    values = np.array([[5, -7], [1 << 40, 0], [-1, 3]], dtype=np.int64)
    bodies = Uploader.share_column(values[:, 1])
    assert values[:, 1].tolist() == [0, 0, 0] and values[:, 0].tolist() == [5, 1 << 40, -1]
    views = [AShare.from_bytes(i, bytes(body), 3) for i, body in enumerate(bodies)]
    assert to_signed(reconstruct(*views)).tolist() == [-7, 0, 3]
    assert [len(body) for body in bodies] == [16 * 3] * 3


async def test_columns_given_one_by_one_are_consumed_as_they_are_sent(
        cluster: Cluster) -> None:
    """upload_columns takes the columns from an iterator only as it sends them, zeroes each,
    and the shares reconstruct them."""
    plain = table()
    taken: list[int] = []

    def columns() -> Iterator[np.ndarray]:
        for j in range(plain.shape[1]):
            taken.append(j)
            yield plain[:, j].copy()

    handed = columns()
    version_id = await cluster.uploader().upload_columns("pilot_adrenal", len(plain), handed,
                                                         MANIFEST)
    assert taken == [0, 1, 2]
    for j, column in enumerate(c["name"] for c in MANIFEST["columns"]):
        views = []
        for i, store in enumerate(cluster.stores):
            async with store.unit_of_work() as uow:
                views.append(AShare.from_bytes(i, await uow.versions.read_blob(
                    version_id, column), len(plain)))
        assert list(to_signed(reconstruct(*views))) == list(plain[:, j])


@pytest.mark.parametrize("given", [2, 4])
async def test_another_number_of_columns_than_declared_aborts(cluster: Cluster,
                                                              given: int) -> None:
    handed = [np.arange(24, dtype=np.int64) + 1 for _ in range(given)]
    version_id = uuid.uuid4()
    with pytest.raises(ValueError, match="columns"):
        await cluster.uploader().upload_columns("pilot_adrenal", 24, iter(handed), MANIFEST,
                                                version_id=version_id)
    assert not any(column.any() for column in handed)  # every column taken was zeroed
    assert [v.state for v in await cluster.versions(version_id)] == [VersionState.DELETED] * 3


async def test_injected_session_carries_every_call_and_stays_open(cluster: Cluster) -> None:
    """The session carries no certificate: the nodes accept the calls only because the
    uploader passes its client certificate per request."""
    columns = [c["name"] for c in MANIFEST["columns"]]
    traffic = Traffic(cluster)
    async with aiohttp.ClientSession(middlewares=(traffic,)) as session:
        uploader = cluster.uploader(session=session)
        version_id = await uploader.upload("pilot_adrenal", table(), MANIFEST)
        assert not session.closed
        assert [v.state for v in await cluster.versions(version_id)] == \
            [VersionState.COMMITTED] * 3
        base = f"/v1/uploads/{version_id}"
        for node in range(3):
            assert traffic.to(node) == [("PUT", base),
                                        *[("PUT", f"{base}/columns/{c}") for c in columns],
                                        ("POST", f"{base}/prepare"), ("POST", f"{base}/commit")]
        traffic.sent.clear()
        await uploader.delete_dataset("pilot_adrenal")  # the same session, still usable
        assert not session.closed
        path = f"/v1/uploads/datasets/{dataset_uuid('tm', 'pilot_adrenal')}"
        assert sorted(traffic.sent) == [(i, "DELETE", path) for i in range(3)]
        assert [v.state for v in await cluster.versions(version_id)] == \
            [VersionState.DELETED] * 3


async def test_column_lost_on_one_node_fails_its_prepare_vote_and_aborts_everywhere(
        cluster: Cluster) -> None:
    """Node 2 acknowledges 'bed10' without storing it (the write lands on another column on
    the way): the connector cannot tell, node 2's prepare vote can."""
    def misroute(node: int, request: aiohttp.ClientRequest) -> None:
        if node == 2 and request.url.path.endswith("/columns/bed10"):
            request.url = request.url.with_path(
                request.url.path.replace("/columns/bed10", "/columns/age"))

    traffic = Traffic(cluster, misroute)
    version_id = uuid.uuid4()
    base = f"/v1/uploads/{version_id}"
    async with aiohttp.ClientSession(middlewares=(traffic,)) as session:
        with pytest.raises(UploadError, match=r"node-2: POST /v1/uploads/.*/prepare answered "
                                              r"409: .*missing \['bed10'\]"):
            await cluster.uploader(session=session).upload("pilot_adrenal", table(), MANIFEST,
                                                           version_id=version_id)
    assert ("PUT", f"{base}/columns/bed10") in traffic.to(2)  # sent, and misrouted
    for node in range(3):
        assert traffic.to(node)[-1] == ("DELETE", base)  # aborted everywhere
    versions = await cluster.versions(version_id)
    assert [v.state for v in versions] == [VersionState.DELETED] * 3
    for store in cluster.stores:
        async with store.unit_of_work() as uow:
            assert await uow.versions.stored_columns(version_id) == []


async def test_failing_column_send_aborts_everywhere_before_prepare(cluster: Cluster) -> None:
    """A column send the transport cannot deliver is not retried (only idempotent commit and
    deletion are): the upload is aborted on every node, and no node is asked to prepare."""
    def reset(node: int, request: aiohttp.ClientRequest) -> None:
        if node == 2 and request.url.path.endswith("/columns/bed10"):
            raise aiohttp.ClientConnectionResetError("connection reset (injected)")

    traffic = Traffic(cluster, reset)
    version_id = uuid.uuid4()
    base = f"/v1/uploads/{version_id}"
    async with aiohttp.ClientSession(middlewares=(traffic,)) as session:
        with pytest.raises(UploadError, match="node-2: PUT failed: ClientConnectionResetError"):
            await cluster.uploader(session=session).upload("pilot_adrenal", table(), MANIFEST,
                                                           version_id=version_id)
    assert traffic.to(2).count(("PUT", f"{base}/columns/bed10")) == 1
    assert not [sent for sent in traffic.sent if sent[1] == "POST"]
    for node in range(3):
        assert traffic.to(node)[-1] == ("DELETE", base)
    versions = await cluster.versions(version_id)
    assert [v.state for v in versions] == [VersionState.DELETED] * 3
    for store in cluster.stores:
        async with store.unit_of_work() as uow:
            assert await uow.versions.stored_columns(version_id) == []


async def test_a_node_down_between_its_vote_and_the_commit_keeps_the_version_for_the_retry(
        cluster: Cluster) -> None:
    """Issue 16, "commit in doubt": node 0 votes ready, is down when the commit is sent and
    comes back after the stale-upload timeout. Its cleanup erases an upload abandoned before
    its vote, never the version it voted ready on, so the connector's commit retry commits
    it (it used to be erased and the retry answered 409)."""
    def down_at_commit(node: int, request: aiohttp.ClientRequest) -> None:
        if node == 0 and request.url.path.endswith("/commit"):
            raise aiohttp.ClientConnectionError("node-0 is down (injected)")

    plain = table()
    uploader = cluster.uploader()
    async with aiohttp.ClientSession(middlewares=(Traffic(cluster, down_at_commit),)) as s:
        with pytest.raises(CoordinationError, match=r"in doubt: committed except on "
                                                    r"\['node-0'\]"):
            await cluster.uploader(session=s).upload("pilot_adrenal", plain.copy(), MANIFEST,
                                                     version_id=(version_id := uuid.uuid4()))
    assert [v.state for v in await cluster.versions(version_id)] == [
        VersionState.PREPARED, VersionState.COMMITTED, VersionState.COMMITTED]

    await cluster.stop(0)
    async with cluster.stores[0].unit_of_work() as uow:  # abandoned before node 0's vote
        dataset = await uow.datasets.by_name("tm", "pilot_adrenal")
        assert dataset is not None
        abandoned = (await uow.versions.create(dataset.id, MANIFEST, 24)).id
    await cluster.start(0, stale_upload_after_s=0, cleanup_interval_s=1)
    for _ in range(200):  # until the startup sweep has run
        async with cluster.stores[0].reading() as uow:
            if (await uow.versions.get(abandoned)).state is VersionState.DELETED:
                break
        await asyncio.sleep(0.02)
    async with cluster.stores[0].reading() as uow:
        assert (await uow.versions.get(abandoned)).state is VersionState.DELETED
        assert (await uow.versions.get(version_id)).state is VersionState.PREPARED
        assert await uow.versions.stored_columns(version_id) == sorted(
            c["name"] for c in MANIFEST["columns"])

    await uploader.commit(version_id)
    assert [v.state for v in await cluster.versions(version_id)] == [VersionState.COMMITTED] * 3
    for j, column in enumerate(c["name"] for c in MANIFEST["columns"]):
        views = []
        for i, store in enumerate(cluster.stores):
            async with store.reading() as uow:
                views.append(AShare.from_bytes(i, await uow.versions.read_blob(
                    version_id, column), len(plain)))
        assert list(to_signed(reconstruct(*views))) == list(plain[:, j])
    await uploader.commit(version_id)  # idempotent


async def test_dead_node_aborts_and_leaves_nothing_visible(cluster: Cluster) -> None:
    await cluster.runners[1].cleanup()
    version_id = uuid.uuid4()
    with pytest.raises(UploadError, match="node-1"):
        await cluster.uploader().upload("pilot_adrenal", table(), MANIFEST,
                                        version_id=version_id)
    for i in (0, 2):
        async with cluster.stores[i].unit_of_work() as uow:
            dataset = await uow.datasets.by_name("tm", "pilot_adrenal")
            assert dataset is not None
            assert await uow.versions.latest_committed(dataset.id) is None
            assert (await uow.versions.get(version_id)).state is VersionState.DELETED


async def test_unregistered_site_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    ca = cluster.pki["node-0"].ca_cert
    cert, key = issue_cert(ca.read_bytes(), (ca.parent / "ca.key").read_bytes(), "connector.xx")
    (tmp_path / "xx.pem").write_bytes(cert)
    (tmp_path / "xx.key").write_bytes(key)
    uploader = Uploader(cluster.endpoints, NodeTls(ca, tmp_path / "xx.pem", tmp_path / "xx.key"),
                        "xx", timeout_s=10)
    with pytest.raises(UploadError, match="site 'xx' is not registered"):
        await uploader.upload("cohort", table(), MANIFEST)


async def test_connector_of_another_site_and_people_are_refused(cluster: Cluster) -> None:
    with pytest.raises(UploadError, match="a connector may upload only its own site"):
        await Uploader(cluster.endpoints, cluster.pki["connector.tr"], "tm",
                       timeout_s=10).upload("pilot_adrenal", table(), MANIFEST)
    # a node certificate is not a connector certificate; no certificate at all is refused too
    for cert in ("node-1", None):
        ctx = ssl.create_default_context(cafile=str(cluster.pki["node-0"].ca_cert))
        if cert:
            ctx.load_cert_chain(str(cluster.pki[cert].cert), str(cluster.pki[cert].key))
        async with aiohttp.ClientSession() as session, session.put(
                f"{cluster.endpoints[0].url}/v1/uploads/{uuid.uuid4()}", ssl=ctx,
                server_hostname="node-0", json={}) as response:
            assert response.status == 401


async def test_abandoned_upload_is_erased_by_the_node(tmp_path: Path) -> None:
    """A connector that dies after sending half a version: the node erases it on its own."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
    await migrate.upgrade(url)
    store = Store.open(url, NodeKeyring.generate("node-0"))
    async with store.unit_of_work() as uow:
        await uow.sites.add("tm", "LMU Munich")
        dataset = await uow.datasets.create("tm", "pilot_adrenal")
        version = await uow.versions.create(dataset.id, MANIFEST, 24)
        await uow.versions.add_blob(version.id, "age", bytes(16 * 24))
    config = parse_config({"node_index": 0, "database_url": url, "stale_upload_after_s": 0,
                           "cleanup_interval_s": 1})
    runner = web.AppRunner(create_app(config, store=store))
    await runner.setup()  # starts the cleanup task
    try:
        for _ in range(100):
            async with store.unit_of_work() as uow:
                state = (await uow.versions.get(version.id)).state
            if state is VersionState.DELETED:
                break
            await asyncio.sleep(0.05)
        assert state is VersionState.DELETED
        async with store.unit_of_work() as uow:
            assert await uow.versions.stored_columns(version.id) == []
            entries = await uow.audit.entries()
            assert any(e.action == "upload.expire" for e in entries)
    finally:
        await runner.cleanup()
        await store.close()


async def opened_columns(cluster: Cluster, version_id: uuid.UUID, rows: int) -> np.ndarray:
    """The version's columns reconstructed from the three nodes' stored pairs."""
    out = []
    for column in (c["name"] for c in MANIFEST["columns"]):
        views = []
        for i, store in enumerate(cluster.stores):
            async with store.unit_of_work() as uow:
                views.append(AShare.from_bytes(
                    i, await uow.versions.read_blob(version_id, column), rows))
        out.append(to_signed(reconstruct(*views)))
    return np.stack(out, axis=1)


def delta_manifest(base: uuid.UUID, keep: list[list[int]]) -> dict[str, Any]:
    return MANIFEST | {"delta": {"base": str(base), "keep": keep}}


async def test_a_delta_version_is_the_kept_base_rows_then_the_fresh_ones(
        cluster: Cluster) -> None:
    plain, fresh = table(), table(rows=3, seed=9)
    uploader = cluster.uploader()
    base = await uploader.upload("pilot_adrenal", plain.copy(), MANIFEST)
    sent = fresh.copy()
    traffic = Traffic(cluster)
    async with aiohttp.ClientSession(middlewares=(traffic,)) as session:
        version = await cluster.uploader(session=session).upload_delta(
            "pilot_adrenal", 21 + 3, 3, (sent[:, j] for j in range(3)),
            delta_manifest(base, [[0, 5], [7, 20], [21, 24]]))
    assert not sent.any()  # the fresh rows were wiped once shared
    kept = np.concatenate([plain[0:5], plain[7:20], plain[21:24]])
    assert (await opened_columns(cluster, version, 24)).tolist() == \
        np.concatenate([kept, fresh]).tolist()
    assert [v.state for v in await cluster.versions(version)] == [VersionState.COMMITTED] * 3
    assert [v.state for v in await cluster.versions(base)] == [VersionState.COMMITTED] * 3
    puts = [p for m, p in traffic.to(0) if m == "PUT" and p != f"/v1/uploads/{version}"]
    assert puts == [f"/v1/uploads/{version}/fresh/0/3"]  # every column's fresh rows at once
    await uploader.erase_older(version)  # the base goes; the delta version stands alone
    assert (await opened_columns(cluster, version, 24)).tolist() == \
        np.concatenate([kept, fresh]).tolist()


async def test_a_delta_on_a_base_gone_from_one_node_is_refused_before_any_column(
        cluster: Cluster) -> None:
    uploader = cluster.uploader()
    base = await uploader.upload("pilot_adrenal", table(), MANIFEST)
    async with cluster.stores[2].unit_of_work() as uow:  # node 2 lost it (erased there)
        await uow.versions.delete(base)
    taken: list[int] = []

    def columns() -> Iterator[np.ndarray]:
        for j in range(3):
            taken.append(j)
            yield table(rows=1)[:, j]

    version = uuid.uuid4()
    with pytest.raises(DeltaRefused, match=r"node-2.*deleted here, not committed"):
        await uploader.upload_delta("pilot_adrenal", 25, 1, columns(),
                                    delta_manifest(base, [[0, 24]]), version)
    assert taken == []  # nothing of the new rows was shared
    for store in cluster.stores[:2]:  # aborted where it had begun
        async with store.unit_of_work() as uow:
            assert (await uow.versions.get(version)).state is VersionState.DELETED
            assert (await uow.versions.latest_committed(dataset_uuid("tm", "pilot_adrenal"))
                    ).id == base


async def test_a_delta_whose_lineage_disagrees_with_it_is_refused(cluster: Cluster) -> None:
    uploader = cluster.uploader()
    base = await uploader.upload("pilot_adrenal", table(), MANIFEST)
    manifest = delta_manifest(base, [[0, 20]]) | {"lineage": {"previous": [
        {"version_id": str(base), "removed": 0, "added": 1}]}}  # really 4 removed
    with pytest.raises(DeltaRefused, match="is not the delta's"):
        await uploader.upload_delta("pilot_adrenal", 21, 1, iter([table(rows=1)[:, 0]] * 3),
                                    manifest)


async def test_fresh_rows_go_in_batches_and_an_empty_delta_copies_the_base(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    plain, fresh = table(), table(rows=2, seed=3)
    uploader = cluster.uploader()
    base = await uploader.upload("pilot_adrenal", plain.copy(), MANIFEST)
    monkeypatch.setattr(upload, "FRESH_BATCH_BYTES", 2 * 2 * 16)  # two columns of 2 rows
    traffic = Traffic(cluster)
    async with aiohttp.ClientSession(middlewares=(traffic,)) as session:
        batched = await cluster.uploader(session=session).upload_delta(
            "pilot_adrenal", 26, 2, (fresh[:, j].copy() for j in range(3)),
            delta_manifest(base, [[0, 24]]))
    assert [p.rsplit("/fresh/", 1)[1] for m, p in traffic.to(1) if "/fresh/" in p] == \
        ["0/2", "2/1"]
    assert (await opened_columns(cluster, batched, 26)).tolist() == \
        np.concatenate([plain, fresh]).tolist()
    empty = await uploader.upload_delta("pilot_adrenal", 20, 0,
                                        (np.zeros(0, dtype=np.int64) for _ in range(3)),
                                        delta_manifest(batched, [[2, 22]]))
    assert (await opened_columns(cluster, empty, 20)).tolist() == plain[2:22].tolist()


async def test_a_delta_version_takes_its_rows_only_as_fresh_columns_of_its_size(
        cluster: Cluster) -> None:
    base = await cluster.uploader().upload("pilot_adrenal", table(), MANIFEST)
    version = uuid.uuid4()
    endpoint, tls = cluster.endpoints[0], cluster.pki["connector.tm"].client_context()
    url = f"{endpoint.url}/v1/uploads/{version}"
    async with aiohttp.ClientSession() as session:

        async def call(method: str, path: str, **kwargs: Any) -> tuple[int, str]:
            async with session.request(method, url + path, ssl=tls,
                                       server_hostname=endpoint.name, **kwargs) as response:
                return response.status, (await response.json()).get("detail", "")

        assert (await call("PUT", "", json={
            "dataset": "pilot_adrenal", "site": "tm", "row_count": 25,
            "manifest": delta_manifest(base, [[0, 24]])}))[0] == 201
        status, detail = await call("PUT", "/columns/age", data=bytes(16 * 25))
        assert status == 409 and "is a delta version" in detail
        status, detail = await call("PUT", "/fresh/2/5", data=bytes(16 * 5))
        assert status == 409 and "the manifest has columns 0..2" in detail
        status, detail = await call("PUT", "/fresh/0/3", data=bytes(16 * 25 * 3))
        assert status == 409 and "share pairs of 1 fresh rows each" in detail
        assert (await call("PUT", "/fresh/0/3", data=bytes(16 * 3)))[0] == 200
        assert (await call("DELETE", ""))[0] == 200


async def test_a_delta_begin_a_node_cannot_answer_fails_as_a_full_upload_would(
        cluster: Cluster) -> None:
    """No answer is not a refusal: the run fails (a full upload would too), it does not
    fall back to one."""
    base = await cluster.uploader().upload("pilot_adrenal", table(), MANIFEST)
    await cluster.stop(1)
    with pytest.raises(UploadError) as info:
        await cluster.uploader().upload_delta("pilot_adrenal", 24, 0,
                                              (np.zeros(0, dtype=np.int64) for _ in range(3)),
                                              delta_manifest(base, [[0, 24]]))
    assert not isinstance(info.value, DeltaRefused) and info.value.transient
