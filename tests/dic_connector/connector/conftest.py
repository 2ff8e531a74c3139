"""Three real node apps on 127.0.0.1 with mutual TLS, each over its own migrated SQLite file,
and connector certificates for sites ``tm`` and ``tr``; :class:`Traffic`, a client middleware
for sessions injected into the :class:`Uploader`, to watch and disturb its requests; Munich's
synthetic pilot export, a migrated connector state database and a connector configuration
for them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dic_connector.connector.config import ConnectorConfig, parse_connector_config
from dic_connector.connector.state import StateStore
from dic_connector.connector.upload import NodeEndpoint, Uploader
from dic_connector.dev.synthetic import pilot_resources, write_bulk
from dic_connector.node.api import create_app
from dic_connector.node.config import parse_config
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.keyring import NodeKeyring
from mpc.local import free_port
from mpc.tls import NodeTls, write_dev_pki
from tests.conftest import migrated_sqlite

NAMES = ["node-0", "node-1", "node-2"]
MAPPING_FILE = Path(__file__).resolve().parents[3] / "mappings" / "pilot_adrenal.yaml"
DATASET = "pilot_adrenal"
MANIFEST = {"columns": [{"name": "age"}, {"name": "gender=male"}, {"name": "bed10"}]}


@dataclass
class Cluster:
    stores: list[Store]
    runners: list[web.AppRunner]
    endpoints: list[NodeEndpoint]
    pki: dict[str, NodeTls]
    urls: list[str]
    ports: list[int]

    def uploader(self, site: str = "tm", cert: str | None = None,
                 session: aiohttp.ClientSession | None = None) -> Uploader:
        return Uploader(self.endpoints, self.pki[cert or f"connector.{site}"], site,
                        timeout_s=10, commit_retries=2, retry_delay_s=0.05, session=session)

    async def versions(self, version_id: uuid.UUID) -> list[Any]:
        out = []
        for store in self.stores:
            async with store.unit_of_work() as uow:
                out.append(await uow.versions.get(version_id))
        return out

    async def serve(self, i: int, **config_keys: Any) -> web.AppRunner:
        """Serve node ``i`` on its port, over its store, with more ``config_keys`` if given;
        the runner."""
        config = parse_config({"node_index": i, "database_url": self.urls[i], **config_keys})
        runner = web.AppRunner(create_app(config, store=self.stores[i]))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.ports[i], ssl_context=self.pki[
            NAMES[i]].server_context(require_client_cert=False)).start()
        return runner

    async def start(self, i: int, **config_keys: Any) -> None:
        """Bring node ``i`` back after :meth:`stop`."""
        self.runners[i] = await self.serve(i, **config_keys)

    async def stop(self, i: int) -> None:
        """Take node ``i`` down; its store stays open for inspection and a restart."""
        await self.runners[i].cleanup()


#: Called with the node index and the request before it is sent: may change the request
#: (it is what goes on the wire) or raise (as the transport would).
Interfere = Callable[[int, aiohttp.ClientRequest], None]


class Traffic:
    """A client middleware recording ``(node, method, path)`` of every request, in the order
    they are sent, and handing each to ``interfere`` first.

    Injected into an :class:`Uploader` through ``ClientSession(middlewares=(traffic,))``, it
    sees exactly what the uploader puts on the wire to the real nodes, so fault tests need no
    patching of the uploader's private methods.
    """

    def __init__(self, cluster: Cluster, interfere: Interfere | None = None) -> None:
        self._nodes = {port: i for i, port in enumerate(cluster.ports)}
        self._interfere = interfere
        self.sent: list[tuple[int, str, str]] = []

    async def __call__(self, request: aiohttp.ClientRequest,
                       handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        node = self._nodes[request.url.port or 443]
        self.sent.append((node, request.method, request.url.path))
        if self._interfere is not None:
            self._interfere(node, request)
        return await handler(request)

    def to(self, node: int) -> list[tuple[str, str]]:
        """``(method, path)`` of the requests sent to ``node``, in order."""
        return [(method, path) for n, method, path in self.sent if n == node]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    pki = write_dev_pki(tmp_path / "pki", [*NAMES, "connector.tm", "connector.tr"])
    stores, urls, ports = [], [], []
    for name in NAMES:
        url = await migrated_sqlite(tmp_path / f"{name}.db")
        store = Store.open(url, NodeKeyring.generate(name))
        async with store.unit_of_work() as uow:
            await uow.sites.add("tm", "LMU Munich")
            await uow.sites.add("tr", "Gemelli Rome")
        stores.append(store)
        urls.append(url)
        ports.append(free_port())
    endpoints = [NodeEndpoint(f"https://127.0.0.1:{port}", name)
                 for port, name in zip(ports, NAMES, strict=True)]
    cluster = Cluster(stores, [], endpoints, pki, urls, ports)
    try:
        for i in range(len(NAMES)):
            cluster.runners.append(await cluster.serve(i))
        yield cluster
    finally:
        for runner in cluster.runners:
            await runner.cleanup()
        for store in stores:
            await store.close()


def connector_config(cluster: Cluster, tmp: Path, export: Path,
                     **dataset: Any) -> ConnectorConfig:
    tls = cluster.pki["connector.tm"]
    data = {
        "site": "tm",
        "tls": {"ca_cert": str(tls.ca_cert), "cert": str(tls.cert), "key": str(tls.key)},
        "nodes": [{"url": e.url, "name": e.name} for e in cluster.endpoints],
        "state_database_url": f"sqlite:///{tmp / 'state.db'}",
        "upload_timeout_s": 10,
        "datasets": {DATASET: {"mapping": str(MAPPING_FILE),
                               "source": {"kind": "ndjson", "directory": str(export)},
                               "trigger": "manual", **dataset}},
    }
    return parse_connector_config(data, tmp, {})


@pytest.fixture
def export(tmp_path: Path) -> Path:
    write_bulk(tmp_path / "tm", pilot_resources("tm"))
    return tmp_path / "tm"


#: what :func:`mistyped_pilot` breaks, as (column, value class, rule) -> rows
MISTYPED_REJECTED = {
    ("total_dose", "not a number", "type: number"): 1,
    ("dose_per_fraction", "not computable", "type: number operand (FHIRPath)"): 1,
    ("bed10", "not computable", "type: number operand (FHIRPath)"): 1,
    ("birth_date", "not a date", "type: date (YYYY-MM-DD)"): 1,
    ("age", "missing", "missing: reject_row"): 1,  # its origin is gone
    ("event_death", "not a code", "type: code (text)"): 1,
}
#: the values :func:`mistyped_pilot` writes: no message, count or label may show them
MISTYPED_VALUES = ("12,5", "2020-13-45", "unknown-status")


def mistyped_pilot() -> list[dict[str, Any]]:
    """Munich's pilot with values of the wrong type for three patients: text with a decimal
    comma for the first one's total dose (which two view columns compute with), an
    impossible birth date for the second, an object for the third's vital status code."""
    resources = list(pilot_resources("tm"))
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    first, second, third = (f"Patient/{p['id']}" for p in patients[:3])
    course = next(r for r in resources if r["resourceType"] == "Procedure"
                  and r["subject"]["reference"] == first)
    course["extension"][0]["extension"][0]["valueQuantity"]["value"] = "12,5"
    patients[1]["birthDate"] = "2020-13-45"
    vital = next(r for r in resources if r["resourceType"] == "Observation"
                 and r["subject"]["reference"] == third
                 and r["code"]["coding"][0]["code"] == "67162-8")
    vital["valueCodeableConcept"]["coding"][0]["code"] = {"text": "unknown-status"}
    assert second != third
    return resources


@pytest.fixture
def mistyped_export(tmp_path: Path) -> Path:
    """:func:`mistyped_pilot` as a Bulk-export NDJSON directory."""
    write_bulk(tmp_path / "tm", mistyped_pilot())
    return tmp_path / "tm"


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[StateStore]:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


def table(rows: int = 24, seed: int = 5) -> np.ndarray:
    """A small encoded cohort: age, a 0/1 indicator and a signed fixed-point column."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(38, 92, rows), rng.integers(0, 2, rows),
                     rng.integers(-500, 1124, rows)], axis=1).astype(np.int64)


#: A service under test, as aiohttp's test client.
Client = TestClient  # type: ignore[type-arg]

#: The smallest FHIR mapping: each Patient's key and gender.
GENDERS_MAPPING = """\
format: dic-cohort/1
name: genders
views:
  - name: patient
    key: id
    view:
      resource: Patient
      select:
        - column:
            - {name: id, path: getResourceKey()}
            - {name: gender, path: gender}
columns:
  - {name: patient_key, kind: patient_key, source: patient.id}
  - {name: gender, kind: categorical, source: patient.gender, levels: [male, female]}
"""


async def until(check: Callable[[], Any], timeout_s: float = 60) -> Any:
    """Poll ``check`` (a coroutine function) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.1)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[ConnectorConfig], Any]]:
    """Start the connector service for a config (aiohttp test server on 127.0.0.1)."""
    clients: list[Client] = []

    async def start(config: ConnectorConfig) -> Client:
        from dic_connector.connector.service import create_app

        client = TestClient(TestServer(create_app(config), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    try:
        yield start
    finally:
        for client in clients:
            await client.close()
