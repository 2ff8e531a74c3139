"""A live node API on 127.0.0.1 over a migrated SQLite store, with seeded principals."""

from __future__ import annotations

import base64
import datetime as dt
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.node.api import create_app
from dic_connector.node.config import parse_config
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust import payloads, signing
from dic_connector.trust.canonical import canonical_json
from dic_connector.trust.keyring import NodeKeyring
from dic_connector.vocabulary import Role
from mpc.local import free_port
from mpc.tls import NodeTls, write_dev_pki
from tests.conftest import migrated_sqlite

#: A failed-authentication budget no test exhausts by accident.
UNTHROTTLED = {"failure_burst": 1_000_000}

#: Share bytes uploaded to the seeded dataset; no response may ever contain them.
SHARE_MARKER = b"\x8f\x01SHARE-BYTES-THAT-MUST-NEVER-LEAVE\x02\x7f" * 4


@dataclass
class Node:
    client: TestClient  # type: ignore[type-arg]
    store: Store
    url: str
    tokens: dict[str, str]
    owner_key: Ed25519PrivateKey
    other_owner_key: Ed25519PrivateKey
    researcher_keys: dict[str, Ed25519PrivateKey]
    dataset_id: uuid.UUID
    other_dataset_id: uuid.UUID
    version_id: uuid.UUID

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def signed(self, payload: dict[str, Any], key: Ed25519PrivateKey | None = None
               ) -> dict[str, str]:
        text = canonical_json(payload)
        signature = (key or self.owner_key).sign(text.encode())
        return {"payload": text, "signature": base64.b64encode(signature).decode()}

    def request_body(self, study: str, datasets: list[uuid.UUID] | None = None,
                     analysis: str = "median", parameters: dict[str, Any] | None = None,
                     researcher: str = "alice", key: Ed25519PrivateKey | None = None
                     ) -> dict[str, str]:
        """A researcher-signed analysis request (the submit body)."""
        payload = payloads.analysis_request(
            study, researcher, analysis, datasets or [self.dataset_id],
            {"column": "age"} if parameters is None else parameters)
        return signing.signed(payload, key or self.researcher_keys[researcher])

    def policy(self, site: str = "tm", analyses: list[str] | None = None,
               columns: list[str] | None = None, days: int = 30) -> dict[str, Any]:
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        return {"type": "policy", "site": site, "analyses": analyses or ["median"],
                "columns": columns or ["age"], "min_cell_count": 5, "expires_at": expires}


#: The manifest of the seeded datasets, as ``mapping.encode`` writes it.
MANIFEST: dict[str, Any] = {"columns": [
    {"name": "age", "kind": "numeric", "column": "age", "scale": 0, "unit": "a"},
    {"name": "gender", "kind": "categorical", "column": "gender", "scale": 0,
     "levels": ["female", "male"]},
    {"name": "gender=female", "kind": "one_hot", "column": "gender", "scale": 0,
     "level": "female"},
    {"name": "gender=male", "kind": "one_hot", "column": "gender", "scale": 0,
     "level": "male"}]}


async def seed(store: Store, owner_key: Ed25519PrivateKey, other_key: Ed25519PrivateKey,
               researcher_keys: dict[str, Ed25519PrivateKey]
               ) -> tuple[dict[str, str], uuid.UUID, uuid.UUID, uuid.UUID]:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    def raw(key: Ed25519PrivateKey) -> bytes:
        return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    tokens: dict[str, str] = {}
    async with store.unit_of_work() as uow:
        await uow.sites.add("tm", "LMU Munich")
        await uow.sites.add("tr", "Gemelli Rome")
        people = {
            "admin": await uow.principals.create("admin", Role.ADMIN),
            "alice": await uow.principals.create("alice", Role.RESEARCHER, None,
                                                 raw(researcher_keys["alice"])),
            "mallory": await uow.principals.create("mallory", Role.RESEARCHER, None,
                                                   raw(researcher_keys["mallory"])),
            "owner_tm": await uow.principals.create("owner_tm", Role.DATA_OWNER, "tm",
                                                    raw(owner_key)),
            "owner_tr": await uow.principals.create("owner_tr", Role.DATA_OWNER, "tr",
                                                    raw(other_key)),
            "node1": await uow.principals.create("node-1", Role.NODE),
        }
        for name, principal in people.items():
            tokens[name] = (await uow.tokens.issue(principal.id, "tests")).token
        datasets = []
        for site in ("tm", "tr"):
            dataset = await uow.datasets.create(site, "pilot_adrenal")
            version = await uow.versions.create(dataset.id, MANIFEST, 24)
            for column in (c["name"] for c in MANIFEST["columns"]):
                await uow.versions.add_blob(version.id, column, SHARE_MARKER)
            await uow.versions.commit(version.id)
            datasets.append((dataset.id, version.id))
    return tokens, datasets[0][0], datasets[1][0], datasets[0][1]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    url = await migrated_sqlite(tmp_path / "node.db")
    store = Store.open(url, NodeKeyring.generate("node-0"))
    owner_key, other_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    researcher_keys = {name: Ed25519PrivateKey.generate() for name in ("alice", "mallory")}
    tokens, dataset_id, other_id, version_id = await seed(store, owner_key, other_key,
                                                          researcher_keys)
    # every test here fails authentication from 127.0.0.1 at will: no 429s (test_throttle)
    config = parse_config({"node_index": 0, "database_url": url, "auth": UNTHROTTLED})
    server = TestServer(create_app(config, store=store), host="127.0.0.1")
    client = TestClient(server)
    await client.start_server()
    try:
        yield Node(client, store, str(server.make_url("")), tokens, owner_key, other_key,
                   researcher_keys, dataset_id, other_id, version_id)
    finally:
        await client.close()
        await store.close()


@dataclass
class TlsNode:
    """The seeded node served over TLS (connector calls need a client certificate)."""

    node: Node
    url: str
    pki: dict[str, NodeTls]

    async def call(self, method: str, path: str, cert: str | None,
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        """``method path`` with ``cert``'s client certificate (or none); status and body."""
        if cert is None:
            ctx = ssl.create_default_context(cafile=str(self.pki["node-0"].ca_cert))
        else:
            ctx = self.pki[cert].client_context()
        async with aiohttp.ClientSession() as session, session.request(
                method, self.url + path, ssl=ctx, server_hostname="node-0",
                headers=headers or {}) as response:
            return response.status, dict(await response.json(content_type=None))


@pytest.fixture
async def tls_node(node: Node, tmp_path: Path) -> AsyncIterator[TlsNode]:
    pki = write_dev_pki(tmp_path / "pki", ["node-0", "connector.tm", "connector.tr"])
    config = parse_config({"node_index": 0, "auth": UNTHROTTLED,
                           "database_url": f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"})
    runner = web.AppRunner(create_app(config, store=node.store))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=pki["node-0"].server_context(
        require_client_cert=False)).start()
    try:
        yield TlsNode(node, f"https://127.0.0.1:{port}", pki)
    finally:
        await runner.cleanup()


async def make_version(store: Store, dataset_id: uuid.UUID, *, commit: bool = True) -> uuid.UUID:
    async with store.unit_of_work() as uow:
        version = await uow.versions.create(dataset_id, MANIFEST, 24)
        for column in (c["name"] for c in MANIFEST["columns"]):
            await uow.versions.add_blob(version.id, column, SHARE_MARKER)
        if commit:
            await uow.versions.commit(version.id)
        return version.id
