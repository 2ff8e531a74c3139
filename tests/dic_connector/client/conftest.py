"""A live node API on 127.0.0.1 (the seeded node of the API tests), and the people who call
it through :mod:`dic_connector.client` over one session the test owns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.client import DataOwner, NodeClient, Researcher
from dic_connector.node.api import create_app
from dic_connector.node.config import parse_config
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.keyring import NodeKeyring
from tests.conftest import migrated_sqlite
from tests.dic_connector.node.api.conftest import seed

# the `cluster` fixture (three computing nodes), shared with the coordination tests
from tests.dic_connector.node.coordination.conftest import cluster  # noqa: F401


@dataclass
class Node:
    """One node serving its API, its store (to play what the API cannot make happen, such
    as a computation failing), and the seeded people's tokens and keys."""

    url: str
    store: Store
    http: aiohttp.ClientSession
    tokens: dict[str, str]
    keys: dict[str, Ed25519PrivateKey]
    dataset_id: str

    def client(self, who: str) -> NodeClient:
        return NodeClient(base_url=self.url, session=self.http, token=self.tokens[who],
                          name="node-0", principal=who)

    def researcher(self, who: str = "alice") -> Researcher:
        return Researcher(who, self.keys[who], [self.client(who)], poll_s=0.02)

    def owner(self, site: str = "tm") -> DataOwner:
        who = f"owner_{site}"
        return DataOwner(who, site, self.keys[who], [self.client(who)], poll_s=0.02)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    url = await migrated_sqlite(tmp_path / "node.db")
    store = Store.open(url, NodeKeyring.generate("node-0"))
    keys = {name: Ed25519PrivateKey.generate()
            for name in ("alice", "mallory", "owner_tm", "owner_tr")}
    tokens, dataset_id, _, _ = await seed(store, keys["owner_tm"], keys["owner_tr"],
                                          {"alice": keys["alice"], "mallory": keys["mallory"]})
    server = TestServer(create_app(parse_config({"node_index": 0, "database_url": url}),
                                   store=store), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            yield Node(str(server.make_url("")), store, http, tokens, keys, str(dataset_id))
    finally:
        await server.close()
        await store.close()

