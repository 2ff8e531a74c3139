"""Issue 12's acceptance test: the hospital's connector as a service, with real parts only.

A real FHIR server (sekmet-fhir, one per test), three real node processes on PostgreSQL
(``dic node serve``, mutual TLS), a PostgreSQL clinical database, and the connector itself
as an OS process (``dic connector serve --config connector.yaml``), driven only through its
HTTP endpoints. What the nodes hold is read the way a researcher reads it: an analysis
(``mean``: n and the exact sum of a numeric column) submitted by a researcher, approved by
the data owner with :mod:`dic_connector.client` and computed under MPC; its result must equal
the count and sum the test computes from the data it put into the source.

1. Scheduled runs of a FHIR REST, a Bulk ``$export`` and an SQL dataset follow additions,
   updates and deletions at the source.
2. A connector killed mid-upload (SIGKILL) leaves the previous version in use and nothing
   visible of the new one; its next process marks the run ``interrupted`` and runs again.
   A node killed mid-upload fails the run, and the previous version stays in use.
3. A consent withdrawal (a deny provision, then an ``inactive`` consent) and a forced run:
   the patient is gone from the new version, the run counts the exclusion by reason, and the
   old version's shares are erased on all three nodes (REST and Bulk sources alike).
4. Unique plaintext values put into the sources are found nowhere the connector writes
   (state database, logs, temporary files, its HTTP answers) nor in the nodes' databases
   and logs.
5. SIGTERM mid-upload is a clean stop that records the run ``interrupted`` itself; an
   erasure a node does not confirm is remembered and asked again when the service starts.
6. A connector SIGKILLed while a node has not yet confirmed an erasure: the next process
   still asks for it (this found the bug fixed in :mod:`dic_connector.connector.runs`).
7. ``dic connector pull``: due datasets once, in the foreground, and its exit codes.
8. Issue 13's acceptance on these processes: a backport subscription on sekmet, notified
   through :class:`~tests.dic_connector.connector.subscriptions.relays.FaultyRelay` (drops,
   delays, reorders, duplicates, and a heartbeat that stops); bursts of creates, updates and
   deletes under ``updates: delta`` end in a version whose MPC count and sum are the
   source's, with versions bounded by bursts plus the recoveries ``/metrics`` counts.

Node-2 is reached through :class:`GatedRelay`, a TCP relay the test can hold (so a run is
caught between ``begin`` on node-0/node-1 and node-2) or make refuse new connections (so
node-2 takes an upload but cannot be asked to erase).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from dic_connector.client import DataOwner, Researcher
from dic_connector.connector.commands import new_token
from dic_connector.dev.deployment import (
    NODE_NAMES,
    DeploymentFiles,
    LocalNodes,
    register_people,
    write_local_deployment,
)
from dic_connector.dev.sekmet import (
    STATIC_TOKEN,
    SekmetServer,
    put_bundle,
    start_sekmet,
    stop_sekmet,
)
from dic_connector.errors import UnexpectedStatus
from dic_connector.vocabulary import Role
from mpc.local import free_port
from tests.conftest import _pg_bindir, create_database
from tests.dic_connector.connector.consent.mii import broad, withdrawal
from tests.dic_connector.connector.subscriptions.relays import FaultyRelay
from tests.dic_connector.sources.conftest import FaultProxy, run_proxy

pytestmark = [pytest.mark.e2e, pytest.mark.fhir_server, pytest.mark.postgres,
              pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
SITE = "tm"
PEOPLE = {"alice": (Role.RESEARCHER, None), f"owner_{SITE}": (Role.DATA_OWNER, SITE)}
WEIGHT = "29463-7"  # LOINC body weight
SCALE = 6  # decimal places of the weight column
#: generous bounds for anything that waits on processes (2 cores, MPC, Bulk polling)
WAIT_S = 90.0
POLL_S = 0.2

FHIR_MAPPING = f"""\
format: dic-cohort/1
name: e2e_weight
title: Body weight and gender, one row per patient (connector service e2e test)
views:
  - name: patient
    key: id
    view:
      resource: Patient
      select:
        - column:
            - {{name: id, path: getResourceKey()}}
            - {{name: gender, path: gender}}
  - name: weight
    key: patient
    view:
      resource: Observation
      where:
        - path: "code.coding.where(system = 'http://loinc.org' and code = '{WEIGHT}').exists()"
      select:
        - column:
            - {{name: patient, path: subject.getReferenceKey(Patient)}}
            - {{name: value, path: value.ofType(Quantity).value}}
columns:
  - {{name: patient_key, kind: patient_key, source: patient.id}}
  - {{name: gender, kind: categorical, source: patient.gender, levels: [male, female]}}
  - {{name: weight, kind: numeric, source: weight.value, unit: kg, scale: {SCALE}, min: 1,
     max: 500}}
"""

SQL_MAPPING = f"""\
format: dic-cohort/1
name: e2e_weight_sql
title: Body weight and sex from a clinical database (connector service e2e test)
query:
  sql: "SELECT pid, sex, weight_kg FROM cohort ORDER BY pid"
  key: pid
columns:
  - {{name: patient_key, kind: patient_key, source: pid}}
  - {{name: gender, kind: categorical, source: sex, levels: [male, female]}}
  - {{name: weight, kind: numeric, source: weight_kg, unit: kg, scale: {SCALE}, min: 1,
     max: 500}}
"""


# -- the plaintext the test puts into the sources ------------------------------------------


@dataclass
class Person:
    """One patient as the test knows them: id, gender, body weight (kg, exact), name."""

    pid: str
    gender: str
    weight: Decimal
    name: str = "Doe"


def people(prefix: str, n: int, seed: int) -> dict[str, Person]:
    rng = random.Random(seed)
    out = {}
    for i in range(n):
        pid = f"{prefix}{i:03d}"
        weight = Decimal(rng.randint(45_000_000, 120_000_000)).scaleb(-SCALE)
        out[pid] = Person(pid, rng.choice(["male", "female"]), weight)
    return out


def fhir_resources(person: Person) -> list[dict[str, Any]]:
    """The Patient and its body-weight Observation."""
    return [
        {"resourceType": "Patient", "id": person.pid, "gender": person.gender,
         "name": [{"family": person.name, "given": ["Test"]}],
         "identifier": [{"system": "urn:e2e:mrn", "value": f"MRN-{person.pid}"}]},
        {"resourceType": "Observation", "id": f"w-{person.pid}", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": WEIGHT}]},
         "subject": {"reference": f"Patient/{person.pid}"},
         "effectiveDateTime": "2024-05-01",
         # a JSON number: the repr of a float with at most 9 significant digits is those
         # digits, and the sources parse FHIR decimals as Decimal
         "valueQuantity": {"value": float(person.weight), "unit": "kg",
                           "system": "http://unitsofmeasure.org", "code": "kg"}},
    ]


def expected(cohort: Mapping[str, Person]) -> tuple[int, str]:
    """n and the exact sum of the weights, as the ``mean`` analysis opens them."""
    total = sum((p.weight for p in cohort.values()), Decimal(0))
    return len(cohort), format(total.quantize(Decimal(1).scaleb(-SCALE)), "f")


async def fhir_put(server: SekmetServer, resources: list[dict[str, Any]]) -> None:
    await asyncio.to_thread(put_bundle, server.base_url, resources)


def _delete(url: str) -> None:
    request = urllib.request.Request(url, method="DELETE",
                                     headers={"Authorization": f"Bearer {STATIC_TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 202, 204), response.status


async def fhir_delete(server: SekmetServer, person: Person) -> None:
    for path in (f"Observation/w-{person.pid}", f"Patient/{person.pid}"):
        await asyncio.to_thread(_delete, f"{server.base_url}/{path}")


@contextlib.contextmanager
def sekmet_server(directory: Path) -> Iterator[SekmetServer]:
    directory.mkdir(parents=True)
    server = start_sekmet(directory)
    try:
        yield server
    finally:
        stop_sekmet(server)


async def clinical_database(admin_dsn: str, cohort: Mapping[str, Person]) -> str:
    """A new PostgreSQL database with table ``cohort`` holding ``cohort``; its DSN."""
    name = f"clinic_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE cohort (pid text PRIMARY KEY, sex text NOT NULL, "
                           "weight_kg numeric(12, 6) NOT NULL, name text)")
        await conn.executemany("INSERT INTO cohort VALUES ($1, $2, $3, $4)",
                               [(p.pid, p.gender, p.weight, p.name) for p in cohort.values()])
    finally:
        await conn.close()
    return dsn


# -- the deployment: PostgreSQL, three node processes, a researcher and the data owner -----


@dataclass
class World:
    """What every test shares: the node processes and the people calling them."""

    directory: Path
    admin_dsn: str
    node_dsns: list[str]
    deployment: DeploymentFiles
    nodes: LocalNodes
    logs: Path
    alice: Researcher
    owner: DataOwner
    http: aiohttp.ClientSession

    def node_url(self, index: int) -> str:
        return self.nodes.urls[index]

    async def dataset_id(self, name: str) -> str:
        for dataset in await self.alice.datasets(at=0):
            if dataset.site == SITE and dataset.name == name:
                return dataset.id
        raise AssertionError(f"no dataset {name} of {SITE} on node-0")

    async def latest_versions(self, name: str) -> list[str | None]:
        """The id of the dataset's latest committed version, as each node lists it."""
        out: list[str | None] = []
        for node in range(len(NODE_NAMES)):
            found = [d for d in await self.alice.datasets(at=node)
                     if d.site == SITE and d.name == name]
            out.append(found[0].latest_version.id if found and found[0].latest_version
                       else None)
        return out

    async def mean(self, name: str, column: str = "weight") -> tuple[int, str]:
        """n and sum of ``column`` of dataset ``name``'s latest committed version, under MPC:
        submitted by the researcher at node 1, approved by the owner at node 2, the result
        identical on all three nodes.

        A request is retried (at most twice) only if it failed because a newer version
        superseded the one its plan pinned: the documented race of a scheduled run with an
        analysis (:func:`dic_connector.node.api.uploads.supersede`)."""
        dataset = await self.dataset_id(name)
        for attempt in range(3):
            study = await self.alice.create_study(f"e2e {name}", at=1)
            request = await self.alice.submit(study, "mean", [dataset], {"column": column},
                                              at=1)
            await self.owner.approve(request, at=2, timeout_s=WAIT_S)
            try:
                await self.alice.wait(request, until={"completed"}, timeout_s=WAIT_S)
            except UnexpectedStatus as exc:
                superseded = ("not committed", "deleted", "has no column")
                if attempt < 2 and any(words in str(exc) for words in superseded):
                    continue
                raise
            results = [(await self.alice.result(request, nodes=(node,))).aggregates
                       for node in range(len(NODE_NAMES))]
            assert results[0] == results[1] == results[2], results
            assert not results[0].get("suppressed"), results[0]
            return int(results[0]["n"]), str(results[0]["sum"])
        raise AssertionError("unreachable")

    async def versions(self, name: str) -> list[list[dict[str, Any]]]:
        """Per node, the dataset's versions as its database holds them: number, state,
        whether a wrapped key remains, how many share rows, and the declared lineage."""
        out = []
        for dsn in self.node_dsns:
            conn = await asyncpg.connect(dsn)
            try:
                rows = await conn.fetch(
                    "SELECT v.id, v.number, v.state, v.wrapped_key IS NOT NULL AS keyed, "
                    "v.manifest, "
                    "(SELECT count(*) FROM share_blobs b WHERE b.version_id = v.id) AS blobs "
                    "FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id "
                    "WHERE d.site_id = $1 AND d.name = $2 ORDER BY v.number", SITE, name)
            finally:
                await conn.close()
            out.append([{"id": str(r["id"]), "number": r["number"], "state": r["state"],
                         "keyed": r["keyed"], "blobs": int(r["blobs"]),
                         "lineage": json.loads(r["manifest"]).get("lineage"),
                         "delta": json.loads(r["manifest"]).get("delta")} for r in rows])
        return out



@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory,
                postgres_dsn: str) -> AsyncIterator[World]:
    directory = tmp_path_factory.mktemp("connector-service")
    dsns = [await create_database(postgres_dsn, f"node{i}") for i in range(len(NODE_NAMES))]
    # k = 1: these tests read every version of a dataset through the same statistic to
    # compare it with the source, which is exactly the version differencing the lineage
    # rule refuses at k = 5 when a version differs in 1..4 rows (a patient withdrew). The
    # connector still declares every version's lineage and the nodes check it; the rule
    # itself is tested in tests/dic_connector/node/coordination/test_version_lineage.py.
    deployment = write_local_deployment(directory / "deployment", sites=(SITE,),
                                        database_urls=dsns, extra={
                                            "coordination_interval_s": 0.2,
                                            "mpc_timeout_s": 20, "min_cell_count": 1})
    keys = {name: Ed25519PrivateKey.generate() for name in PEOPLE}
    logs = directory / "node-logs"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        nodes = LocalNodes(deployment, http, await register_people(deployment, PEOPLE, keys))
        async with nodes.running(logs):
            yield World(directory, postgres_dsn, dsns, deployment, nodes, logs,
                        Researcher("alice", keys["alice"], nodes.clients("alice"),
                                   poll_s=POLL_S),
                        DataOwner(f"owner_{SITE}", SITE, keys[f"owner_{SITE}"],
                                  nodes.clients(f"owner_{SITE}"), poll_s=POLL_S),
                        http)


# -- the connector as an OS process -------------------------------------------------------


@dataclass
class Connector:
    """``dic connector serve`` in a directory of its own: its connector.yaml, SQLite state
    database, stdout/stderr logs and ``TMPDIR``."""

    directory: Path
    http: aiohttp.ClientSession
    port: int
    token: str
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def write(cls, directory: Path, world: World, datasets: Mapping[str, Any], *,
              node_urls: list[str] | None = None, upload_timeout_s: int = 60,
              retry_delay_s: float = 0.5, port: int | None = None) -> Connector:
        directory.mkdir(parents=True)
        (directory / "tmp").mkdir()
        token, digest = new_token()
        port = port or free_port()
        tls = world.deployment.pki[f"connector.{SITE}"]
        urls = node_urls or [world.node_url(i) for i in range(len(NODE_NAMES))]
        config = {
            "site": SITE,
            "tls": {"ca_cert": str(tls.ca_cert.resolve()), "cert": str(tls.cert.resolve()),
                    "key": str(tls.key.resolve())},
            "nodes": [{"url": url, "name": name} for url, name in zip(urls, NODE_NAMES,
                                                                        strict=True)],
            "listen": {"host": "127.0.0.1", "port": port},
            "operator_token_sha256": digest,
            "upload_timeout_s": upload_timeout_s,
            "retry_delay_s": retry_delay_s,
            "datasets": dict(datasets),
        }
        (directory / "fhir.yaml").write_text(FHIR_MAPPING)
        (directory / "sql.yaml").write_text(SQL_MAPPING)
        (directory / "connector.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        return cls(directory, world.http, port, token)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tmpdir(self) -> Path:
        return self.directory / "tmp"

    @property
    def state_files(self) -> list[Path]:
        return sorted(self.directory.glob("connector-state.db*"))

    @property
    def log_files(self) -> list[Path]:
        return [self.directory / "stdout.log", self.directory / "stderr.log"]

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIC_")}
        env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", TMPDIR=str(self.tmpdir))
        with (self.directory / "stdout.log").open("ab") as out, \
                (self.directory / "stderr.log").open("ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dic_connector.cli", "connector", "serve", "--config",
                 str(self.directory / "connector.yaml")], stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, env=env, cwd=self.directory)

    def tail(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.log_files
                         if p.exists())

    async def ready(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"connector exited with {self.process.returncode}:\n"
                                     f"{self.tail()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with self.http.get(f"{self.base}/ready") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(POLL_S)
        raise AssertionError(f"connector not ready:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    async def stop(self) -> int | None:
        """SIGTERM and wait (SIGKILL after 20 s); the exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait(10)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def get(self, path: str) -> Any:
        async with self.http.get(self.base + path, headers=self._auth()) as response:
            assert response.status == 200, (path, response.status, await response.text())
            return await response.json()

    async def datasets(self) -> dict[str, dict[str, Any]]:
        return {d["name"]: d for d in (await self.get("/v1/datasets"))["datasets"]}

    async def runs(self, dataset: str) -> list[dict[str, Any]]:
        return list((await self.get(f"/v1/runs?dataset={dataset}&limit=500"))["runs"])

    async def force(self, dataset: str) -> dict[str, Any]:
        """``POST /v1/datasets/{dataset}/runs?wait=true``: the finished run (must succeed)."""
        async with self.http.post(f"{self.base}/v1/datasets/{dataset}/runs?wait=true",
                                  headers=self._auth(),
                                  timeout=aiohttp.ClientTimeout(total=WAIT_S)) as response:
            body = await response.json()
        assert response.status == 200 and body["run"]["status"] == "succeeded", body
        return dict(body["run"])

    async def queue(self, dataset: str) -> None:
        """``POST /v1/datasets/{dataset}/runs``: 202, the run goes on in the background."""
        async with self.http.post(f"{self.base}/v1/datasets/{dataset}/runs",
                                  headers=self._auth()) as response:
            assert response.status == 202, await response.text()

    async def wait_run(self, dataset: str, done: Callable[[dict[str, Any]], bool],
                       timeout_s: float = WAIT_S) -> dict[str, Any]:
        """The newest run of ``dataset`` for which ``done`` holds, polling /v1/runs."""
        deadline = time.monotonic() + timeout_s
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            seen = await self.runs(dataset)
            for run in seen:
                if done(run):
                    return run
            assert self.process is not None and self.process.poll() is None, self.tail()
            await asyncio.sleep(POLL_S)
        raise AssertionError(f"no such run of {dataset}; runs: {seen}\n{self.tail()}")

    async def last_id(self, dataset: str) -> int:
        runs = await self.runs(dataset)
        return max((r["id"] for r in runs), default=0)


async def succeeded_after(connector: Connector, dataset: str, after: int,
                          timeout_s: float = WAIT_S) -> dict[str, Any]:
    """The first run of ``dataset`` newer than run ``after`` to succeed; fails on a failed
    one (its error in the message)."""
    def done(run: dict[str, Any]) -> bool:
        if run["id"] <= after:
            return False
        assert run["status"] not in ("failed", "interrupted"), run
        return bool(run["status"] == "succeeded")

    return await connector.wait_run(dataset, done, timeout_s)


@contextlib.asynccontextmanager
async def serving(connector: Connector) -> AsyncIterator[Connector]:
    connector.start()
    try:
        await connector.ready()
        yield connector
    finally:
        await connector.stop()


def rest(server: SekmetServer | FaultProxy, **extra: Any) -> dict[str, Any]:
    return {"mapping": "fhir.yaml", "source": {
        "kind": "fhir-rest", "base_url": server.base_url,
        "auth": {"kind": "bearer", "token": STATIC_TOKEN}, "page_size": 50}, **extra}


def bulk(server: SekmetServer, **extra: Any) -> dict[str, Any]:
    return {"mapping": "fhir.yaml", "source": {
        "kind": "fhir-bulk", "base_url": server.base_url,
        "auth": {"kind": "bearer", "token": STATIC_TOKEN}}, **extra}


def sql(dsn: str, **extra: Any) -> dict[str, Any]:
    return {"mapping": "sql.yaml", "source": {"kind": "sql", "url": dsn}, **extra}


EVERY_10S = {"schedule": {"every": "10s"}}


# -- 1. scheduled runs follow the source ----------------------------------------------------


async def test_scheduled_runs_follow_additions_updates_and_deletions(
        world: World, tmp_path: Path) -> None:
    cohort = people("s1p", 10, seed=1)
    sql_cohort = people("s1q", 9, seed=2)
    with sekmet_server(tmp_path / "fhir") as server:
        await fhir_put(server, [r for p in cohort.values() for r in fhir_resources(p)])
        dsn = await clinical_database(world.admin_dsn, sql_cohort)
        # s1_delta: the REST dataset again, under ``updates: delta`` (only changed rows sent)
        names = {"s1_rest": cohort, "s1_bulk": cohort, "s1_sql": sql_cohort,
                 "s1_delta": cohort}
        connector = Connector.write(tmp_path / "connector", world, {
            "s1_rest": rest(server, trigger=EVERY_10S),
            "s1_delta": rest(server, trigger=EVERY_10S, updates="delta"),
            "s1_bulk": bulk(server, trigger=EVERY_10S),
            "s1_sql": sql(dsn, trigger=EVERY_10S)})
        async with serving(connector):
            listed = await connector.datasets()
            assert {n: (d["source"], d["trigger"]) for n, d in listed.items()} == {
                "s1_rest": ("fhir-rest", "every 10 s"), "s1_bulk": ("fhir-bulk", "every 10 s"),
                "s1_sql": ("sql", "every 10 s"), "s1_delta": ("fhir-rest", "every 10 s")}
            async with world.http.get(f"{connector.base}/live") as response:
                assert response.status == 200 and (await response.json())["site"] == SITE
            for headers in ({}, {"Authorization": "Bearer not-the-token"}):
                async with world.http.get(f"{connector.base}/v1/runs",
                                          headers=headers) as response:
                    assert response.status == 401
            first = {name: await succeeded_after(connector, name, 0) for name in names}
            for name, run in first.items():
                assert run["trigger"] == "schedule"
                assert run["counts"]["rows_shared"] == len(names[name]), run
            assert [await world.mean(n) for n in names] == [expected(c) for c in names.values()]

            # the hospital's data change: a new patient, a corrected weight, a deletion
            added = Person("s1p900", "female", Decimal("77.123456"))
            changed = cohort["s1p003"]
            changed.weight = Decimal("101.654321")
            removed = cohort.pop("s1p007")
            await fhir_put(server, fhir_resources(added) + fhir_resources(changed))
            await fhir_delete(server, removed)
            cohort[added.pid] = added
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("INSERT INTO cohort VALUES ('s1q900', 'male', 88.5, 'Doe')")
                await conn.execute("UPDATE cohort SET weight_kg = 66.000001 WHERE pid = 's1q002'")
                await conn.execute("DELETE FROM cohort WHERE pid = 's1q005'")
            finally:
                await conn.close()
            sql_cohort["s1q900"] = Person("s1q900", "male", Decimal("88.5"))
            sql_cohort["s1q002"].weight = Decimal("66.000001")
            del sql_cohort["s1q005"]

            # the next scheduled run of each (started after the change) picks it all up
            marks = {name: await connector.last_id(name) for name in names}
            newest = {name: await succeeded_after(connector, name, marks[name])
                      for name in names}
            for name, run in newest.items():
                assert run["trigger"] == "schedule"
                assert run["counts"]["rows_shared"] == len(names[name]), run
            results = [await world.mean(n) for n in names]
            assert results == [expected(c) for c in names.values()]
            # the delta version's n and sum under MPC are the full rebuild's (s1_rest), and
            # it was sent as shares of the changed rows only, on the version before it
            assert results[3] == results[0]
            assert newest["s1_delta"]["counts"]["bytes_per_node"] < \
                newest["s1_rest"]["counts"]["bytes_per_node"]
            for held in await world.versions("s1_delta"):
                [mine] = [v for v in held if v["id"] == newest["s1_delta"]["version_id"]]
                assert mine["delta"] is not None and mine["delta"]["base"] in {
                    v["id"] for v in held if v["number"] < mine["number"]}, held
            assert expected(cohort)[0] == 10 and expected(sql_cohort)[0] == 9
            # each node holds the newest version's lineage as the connector declared it:
            # against the first version, 2 rows only there (the corrected, the deleted
            # patient) and 2 only here (the corrected, the new one)
            for name in names:
                for held in await world.versions(name):
                    [mine] = [v for v in held if v["id"] == newest[name]["version_id"]]
                    declared = {d["version_id"]: (d["removed"], d["added"])
                                for d in mine["lineage"]["previous"]}
                    assert declared[first[name]["version_id"]] == (2, 2), (name, declared)
        # stopped: every superseded version is erased on all three nodes and only the newest
        # committed one has shares. The SIGTERM may have cut a scheduled run short: before its
        # commit, it leaves a newer uncommitted upload (never seen by analyses; receiving, or
        # prepared if the nodes had voted; erased by the nodes or by the next version); after
        # it, the erasure of what it supersedes is pending in the state database, to be asked
        # for again at the next start.
        with contextlib.closing(sqlite3.connect(connector.state_files[0])) as db:
            pending = {(dataset, str(uuid.UUID(version))) for dataset, version in db.execute(
                "SELECT dataset, version_id FROM connector_pending_erasures").fetchall()}
        for name in names:
            for held in await world.versions(name):
                newest = max((v for v in held if v["state"] == "committed"),
                             key=lambda v: v["number"])
                assert newest["blobs"] > 0, held
                for version in held:
                    if version["number"] > newest["number"]:  # cut short before its commit
                        assert version["state"] in ("receiving", "prepared"), held
                    elif version is not newest and (name, newest["id"]) not in pending:
                        assert (version["state"], version["blobs"], version["keyed"]) == (
                            "deleted", 0, False), (held, pending)
        # each FHIR dataset's watermark (the server's time of its pull) moved with its newest
        # succeeded run, in the same transaction; an SQL query has none
        with contextlib.closing(sqlite3.connect(connector.state_files[0])) as db:
            marks = db.execute("SELECT dataset, key, run_id FROM connector_watermarks "
                               "ORDER BY dataset").fetchall()
            last = dict(db.execute("SELECT dataset, max(id) FROM connector_runs WHERE "
                                   "status = 'succeeded' GROUP BY dataset").fetchall())
        assert marks == [("s1_bulk", "source_time", last["s1_bulk"]),
                         ("s1_delta", "source_time", last["s1_delta"]),
                         ("s1_rest", "source_time", last["s1_rest"])]


# -- 2. a killed connector, a killed node ----------------------------------------------------


class GatedRelay:
    """A TCP relay on 127.0.0.1 in front of a node's port, for the connector's TLS to pass
    through unchanged; while :attr:`gate` is clear, nothing the connector sends is forwarded
    (it waits, as on a congested link), so a run can be caught in the middle of its upload."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("https://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.gate = asyncio.Event()
        self.gate.set()
        self.port = 0
        self.connections = 0
        #: when set, new connections are closed at once (the node looks unreachable)
        self.refuse = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def __aenter__(self) -> GatedRelay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        if self.refuse:
            writer.close()
            self._tasks.discard(task)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(self._pump(reader, up_writer, gated=True),
                                 self._pump(up_reader, writer, gated=False))
        finally:
            self._tasks.discard(task)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    gated: bool) -> None:
        try:
            while data := await source.read(65536):
                if gated:
                    await self.gate.wait()
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()


def by_state(held: list[dict[str, Any]], state: str) -> list[dict[str, Any]]:
    return [v for v in held if v["state"] == state]


async def until(check: Callable[[], Awaitable[bool]], what: str,
                timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Held:
    """What tells the next upload of a dataset apart: the receiving versions node-0 and
    node-1 already hold (an abandoned upload may linger), and the relay's connections."""

    dataset: str
    receiving: list[set[str]]
    connections: int


async def hold(world: World, name: str, relay: GatedRelay) -> Held:
    """Close the relay's gate before the next upload of ``name`` starts."""
    relay.gate.clear()
    held = await world.versions(name)
    return Held(name, [{v["id"] for v in by_state(h, "receiving")} for h in held],
                relay.connections)


async def held_at_node_2(world: World, relay: GatedRelay, before: Held) -> None:
    """Until the upload begun after :func:`hold` is receiving on node-0 and node-1 and its
    connection to node-2 waits at the relay's gate."""
    async def begun() -> bool:
        held = await world.versions(before.dataset)
        new = [{v["id"] for v in by_state(h, "receiving")} - before.receiving[i]
               for i, h in enumerate(held)]
        return relay.connections > before.connections and bool(new[0]) and bool(new[1])

    await until(begun, "the upload to begin on node-0 and node-1 and wait for node-2")


async def test_killed_connector_or_node_mid_upload_leaves_the_committed_version(
        world: World, tmp_path: Path) -> None:
    cohort = people("s2p", 8, seed=3)
    name = "s2_rest"
    with sekmet_server(tmp_path / "fhir") as server:
        await fhir_put(server, [r for p in cohort.values() for r in fhir_resources(p)])
        async with GatedRelay(world.node_url(2)) as relay:
            urls = [world.node_url(0), world.node_url(1), relay.url]
            connector = Connector.write(tmp_path / "connector", world, {name: rest(server)},
                                        node_urls=urls)
            async with serving(connector):
                first = await connector.force(name)
                assert await world.mean(name) == expected(cohort)

                # the connector dies in the middle of its upload: node-0 and node-1 have
                # begun the new version, node-2 has not heard of it yet
                await fhir_put(server, fhir_resources(Person("s2p900", "male",
                                                             Decimal("90.000009"))))
                before = await hold(world, name, relay)
                await connector.queue(name)
                await held_at_node_2(world, relay, before)
                assert (await connector.datasets())[name]["running"] is True
                killed = (await connector.runs(name))[0]
                assert killed["status"] == "running"
                connector.kill()
            relay.gate.set()

            # the committed version is still the one analyses use; the begun one is invisible
            assert await world.latest_versions(name) == [first["version_id"]] * 3
            assert await world.mean(name) == expected(cohort)
            held = await world.versions(name)
            assert [len(by_state(h, "committed")) for h in held] == [1, 1, 1]
            assert [by_state(h, "committed")[0]["id"] for h in held] == \
                [first["version_id"]] * 3
            assert not by_state(held[2], "receiving")

            # the next process marks the run interrupted, and its next run succeeds
            cohort["s2p900"] = Person("s2p900", "male", Decimal("90.000009"))
            async with serving(connector):
                runs = {r["id"]: r for r in await connector.runs(name)}
                assert runs[killed["id"]]["status"] == "interrupted", runs[killed["id"]]
                assert runs[killed["id"]]["version_id"] is None
                second = await connector.force(name)
                assert second["counts"]["rows_shared"] == 9
                assert await world.latest_versions(name) == [second["version_id"]] * 3
                assert await world.mean(name) == expected(cohort)
                # the superseding erased the old version and the abandoned upload alike
                for held_now in await world.versions(name):
                    assert [(v["state"], v["blobs"]) for v in held_now[:-1]] == \
                        [("deleted", 0)] * (len(held_now) - 1), held_now
                    assert held_now[-1]["id"] == second["version_id"]
                    assert held_now[-1]["state"] == "committed" and held_now[-1]["blobs"] > 0

                # node-2 dies in the middle of an upload: the run fails, nothing changes
                await fhir_delete(server, cohort["s2p001"])
                before = await hold(world, name, relay)
                mark = await connector.last_id(name)
                await connector.queue(name)
                await held_at_node_2(world, relay, before)
                world.nodes.kill(2)
                relay.gate.set()
                failed = await connector.wait_run(
                    name, lambda r: r["id"] > mark and r["status"] != "running")
                assert failed["status"] == "failed" and failed["version_id"] is None, failed
                assert "node-2" in (failed["error"] or ""), failed
                world.nodes.start_node(2, world.logs)
                await world.nodes.wait_ready(indices=[2])
                assert await world.latest_versions(name) == [second["version_id"]] * 3
                assert await world.mean(name) == expected(cohort)
                for held_now in await world.versions(name):
                    assert not by_state(held_now, "receiving"), held_now  # aborted
                    assert [v["id"] for v in by_state(held_now, "committed")] == \
                        [second["version_id"]]
                # and with node-2 back, the next run succeeds
                del cohort["s2p001"]
                third = await connector.force(name)
                assert third["counts"]["rows_shared"] == 8
                assert await world.mean(name) == expected(cohort)


# -- 3. consent withdrawal ------------------------------------------------------------------


async def test_a_withdrawn_consent_and_a_forced_run_erase_the_old_version(
        world: World, tmp_path: Path) -> None:
    cohort = people("s3p", 9, seed=4)
    name, from_bulk = "s3_consent", "s3_consent_bulk"
    consents = [broad(f"bc-{p.pid}", p.pid) for p in cohort.values()]
    with sekmet_server(tmp_path / "fhir") as server:
        await fhir_put(server, [r for p in cohort.values() for r in fhir_resources(p)]
                       + consents)
        async with contextlib.AsyncExitStack() as stack:
            # the REST dataset reads the server through a proxy that can refuse Consent
            # searches (the fault proxy of the source tests)
            proxy = await stack.enter_async_context(run_proxy(server.root_url))
            connector = Connector.write(tmp_path / "connector", world, {
                name: rest(proxy, consent={"mode": "opt-out"}),
                from_bulk: bulk(server, consent={"mode": "opt-out"})})
            await stack.enter_async_context(serving(connector))
            first = await connector.force(name)
            assert first["counts"]["patients_excluded"] == 0
            assert await world.mean(name) == expected(cohort)
            bulk_first = await connector.force(from_bulk)
            assert bulk_first["counts"]["patients_excluded"] == 0

            # the patient withdraws (a Widerruf denying the MDAT policies from today on)
            leaving = cohort.pop("s3p004")
            now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
            await fhir_put(server, [withdrawal(f"wd-{leaving.pid}", leaving.pid,
                                               now.isoformat(timespec="seconds"))])
            second = await connector.force(name)
            assert second["trigger"] == "manual"
            assert second["counts"]["patients"] == 9
            assert second["counts"]["patients_excluded"] == 1
            assert second["counts"]["rows_shared"] == 8
            assert second["rejected"] == {"consent/consent_denied/excluded": 1}
            assert await world.latest_versions(name) == [second["version_id"]] * 3
            assert await world.mean(name) == expected(cohort)

            # the version that still held the patient is erased on every node
            for held in await world.versions(name):
                old = next(v for v in held if v["id"] == first["version_id"])
                new = next(v for v in held if v["id"] == second["version_id"])
                assert (old["state"], old["blobs"], old["keyed"]) == ("deleted", 0, False)
                assert new["state"] == "committed" and new["blobs"] > 0
                assert len(held) == 2

            # another patient's broad consent is set inactive (withdrawn) at the source
            gone = cohort.pop("s3p007")
            await fhir_put(server, [broad(f"bc-{gone.pid}", gone.pid, status="inactive")])
            third = await connector.force(name)
            assert (third["counts"]["patients_excluded"], third["counts"]["rows_shared"]) == \
                (2, 7)
            assert third["rejected"] == {"consent/consent_denied/excluded": 1,
                                         "consent/consent_withdrawn/excluded": 1}
            assert await world.mean(name) == expected(cohort)
            for held in await world.versions(name):
                assert [(v["id"], v["state"], v["blobs"]) for v in held[:2]] == [
                    (first["version_id"], "deleted", 0), (second["version_id"], "deleted", 0)]
                assert held[2]["id"] == third["version_id"] and held[2]["blobs"] > 0

            # a Bulk $export dataset of the same server reads the same consents
            bulk_second = await connector.force(from_bulk)
            assert (bulk_second["counts"]["patients_excluded"],
                    bulk_second["counts"]["rows_shared"]) == (2, 7)
            assert bulk_second["rejected"] == third["rejected"]
            assert await world.mean(from_bulk) == expected(cohort)
            for held in await world.versions(from_bulk):
                assert [(v["id"], v["state"], v["blobs"] > 0) for v in held] == [
                    (bulk_first["version_id"], "deleted", False),
                    (bulk_second["version_id"], "committed", True)]

            # consent information that cannot be read fails the run: nothing is uploaded and
            # the version without the two patients stays the one in use
            proxy.status(403, match="/fhir/Consent", nth=None)
            async with world.http.post(f"{connector.base}/v1/datasets/{name}/runs?wait=true",
                                       headers=connector._auth()) as response:
                failed = await response.json()
            assert response.status == 502 and failed["run"]["status"] == "failed", failed
            assert "GET /fhir/Consent: HTTP 403" in failed["run"]["error"], failed
            assert any("/fhir/Consent" in seen for seen in proxy.seen)
            assert await world.latest_versions(name) == [third["version_id"]] * 3
            for held in await world.versions(name):
                assert [v["id"] for v in held] == [first["version_id"], second["version_id"],
                                                   third["version_id"]]  # none begun


# -- 4. no plaintext anywhere but in the source ---------------------------------------------

#: a SQL mapping whose query fails on a value (the database's error quotes it)
SQL_CAST_MAPPING = f"""\
format: dic-cohort/1
name: e2e_weight_sql_cast
query:
  sql: "SELECT pid, sex, name::numeric AS weight_kg FROM cohort ORDER BY pid"
  key: pid
columns:
  - {{name: patient_key, kind: patient_key, source: pid}}
  - {{name: gender, kind: categorical, source: sex, levels: [male, female]}}
  - {{name: weight, kind: numeric, source: weight_kg, unit: kg, scale: {SCALE}, min: 1,
     max: 500}}
"""


def pg_dump(dsn: str) -> bytes:
    """The whole database (schema and data) as pg_dump's plain SQL."""
    bindir = _pg_bindir()
    assert bindir is not None
    done = subprocess.run([str(bindir / "pg_dump"), "--no-owner", "-d", dsn],
                          capture_output=True, timeout=120, check=True)
    return done.stdout


def files_under(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in ([root] if root.is_file() else root.rglob("*"))
                  if p.is_file())


def found_in(needles: list[str], blobs: Mapping[str, bytes]) -> dict[str, list[str]]:
    """needle -> the names of the blobs containing it (as UTF-8 bytes)."""
    hits = {n: [where for where, blob in blobs.items() if n.encode() in blob] for n in needles}
    return {n: where for n, where in hits.items() if where}


async def test_no_plaintext_value_or_id_reaches_state_logs_temp_files_or_nodes(
        world: World, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:12]
    cohort = people("s4p", 8, seed=5)
    # kept: its id (the patient key), name and identifier are never shared; its weight is,
    # but only as shares
    kept = Person(f"SENTINEL-{tag}-kept", "female", Decimal("123.456789"),
                  name=f"SENTINEL-{tag}-name")
    # rejected by the mapping (above the maximum of 500 kg): counted, never shared
    rejected = Person(f"SENTINEL-{tag}-rejected", "male", Decimal("487.654321") + 500,
                      name=f"SENTINEL-{tag}-name2")
    # withdrawn consent: excluded before validation
    withdrawn = Person(f"SENTINEL-{tag}-withdrawn", "male", Decimal("111.222333"),
                       name=f"SENTINEL-{tag}-name3")
    sql_kept = Person(f"SENTINEL-{tag}-sqlkept", "male", Decimal("234.567891"),
                      name=f"SENTINEL-{tag}-sqlname")
    sql_rejected = Person(f"SENTINEL-{tag}-sqlrejected", "female", Decimal("876.543219"),
                          name=f"SENTINEL-{tag}-sqlname2")
    needles = [f"SENTINEL-{tag}", *(f"MRN-{p.pid}" for p in (kept, rejected, withdrawn))]
    needles += [format(p.weight, "f") for p in (kept, rejected, withdrawn, sql_kept,
                                                  sql_rejected)]
    # and the weights as the connector encodes them (fixed point, scale 6) before sharing
    encoded = [needle.replace(".", "") for needle in needles if needle[0].isdigit()]
    shared = {**cohort, kept.pid: kept}
    sql_cohort = {**people("s4q", 8, seed=6), sql_kept.pid: sql_kept}

    with sekmet_server(tmp_path / "fhir") as server:
        await fhir_put(server, [r for p in (*cohort.values(), kept, rejected, withdrawn)
                                for r in fhir_resources(p)]
                       + [withdrawal(f"wd-{tag}", withdrawn.pid, "2025-01-01T10:00:00+01:00")])
        dsn = await clinical_database(world.admin_dsn,
                                      {**sql_cohort, sql_rejected.pid: sql_rejected})
        # secrets are sentinels too: a database password (the test cluster trusts local
        # connections, so it is sent nowhere but must be written nowhere either) and the
        # operator's token
        password = f"SENTINEL-{tag}-password"
        secret_dsn = dsn.replace("://dic@", f"://dic:{password}@")
        connector = Connector.write(tmp_path / "connector", world, {
            "s4_rest": rest(server, consent={"mode": "opt-out"}),
            "s4_bulk": bulk(server),
            "s4_sql": sql(secret_dsn),
            "s4_sql_cast": {"mapping": "sql_cast.yaml",
                            "source": {"kind": "sql", "url": secret_dsn}}})
        secrets = [connector.token, STATIC_TOKEN]
        (connector.directory / "sql_cast.yaml").write_text(SQL_CAST_MAPPING)
        answers: dict[str, bytes] = {}
        async with serving(connector):
            runs = {n: await connector.force(n) for n in ("s4_rest", "s4_bulk", "s4_sql")}
            assert runs["s4_rest"]["counts"] | {"bytes_per_node": 0} == {
                "resources_read": 22, "patients": 11, "patients_excluded": 1,
                "rows_rejected": 1, "rows_shared": 9, "columns": 4, "bytes_per_node": 0}
            assert runs["s4_rest"]["rejected"] == {
                "weight/above maximum/max 500": 1, "consent/consent_denied/excluded": 1}, runs
            assert runs["s4_bulk"]["counts"]["rows_shared"] == 10  # no consent policy there
            assert runs["s4_sql"]["counts"]["rows_shared"] == 9
            async with world.http.post(f"{connector.base}/v1/datasets/s4_sql_cast/runs?wait=true",
                                       headers=connector._auth()) as response:
                failed = await response.json()
            assert response.status == 502 and failed["run"]["status"] == "failed", failed
            assert "SQLSTATE 22P02" in failed["run"]["error"], failed
            for path in ("/v1/datasets", "/v1/runs?limit=500", "/metrics"):
                async with world.http.get(connector.base + path,
                                          headers=connector._auth()) as response:
                    answers[f"GET {path}"] = await response.read()
        assert connector.process is not None and connector.process.returncode == 0

        for name, cohort_of in (("s4_rest", shared), ("s4_sql", sql_cohort)):
            assert await world.mean(name) == expected(cohort_of)
        assert await world.mean("s4_bulk") == expected({**shared, withdrawn.pid: withdrawn})

        # the scan works: the sources do hold the sentinels
        sources = {str(p): p.read_bytes() for p in files_under(server.workdir / "data")}
        sources["clinical database"] = await asyncio.to_thread(pg_dump, dsn)
        assert set(found_in(needles, sources)) == set(needles)

    written = {str(p): p.read_bytes() for p in files_under(
        *connector.state_files, *connector.log_files, connector.tmpdir, world.logs)}
    assert connector.state_files and all(p.exists() for p in connector.log_files)
    assert any(b"run.succeeded" in written[str(p)] for p in connector.log_files)
    for i, node_dsn in enumerate(world.node_dsns):
        written[f"node-{i} database"] = await asyncio.to_thread(pg_dump, node_dsn)
    assert all(b"share_blobs" in written[f"node-{i} database"] for i in range(3))
    assert found_in(needles + encoded + secrets, written | answers) == {}


async def metric(connector: Connector, name: str) -> float:
    async with connector.http.get(f"{connector.base}/metrics") as response:
        text = await response.text()
    values = [float(line.split()[-1]) for line in text.splitlines()
              if line.split(" ", 1)[0] == name]
    assert len(values) == 1, text
    return values[0]


async def test_sigterm_mid_upload_and_an_erasure_a_node_does_not_confirm(
        world: World, tmp_path: Path) -> None:
    cohort = people("s5p", 8, seed=7)
    name = "s5_rest"
    with sekmet_server(tmp_path / "fhir") as server:
        await fhir_put(server, [r for p in cohort.values() for r in fhir_resources(p)])
        async with GatedRelay(world.node_url(2)) as relay:
            other = "s5_other"
            connector = Connector.write(tmp_path / "connector", world, {
                name: rest(server), other: rest(server)},
                node_urls=[world.node_url(0), world.node_url(1), relay.url],
                retry_delay_s=0.05)  # an unreachable node-2 is named after 0.75 s, not 7.5 s

            async def unconfirmed_erasure() -> dict[str, Any]:
                """A run of ``name`` whose upload reaches node-2 but whose erasure does not."""
                before = await hold(world, name, relay)
                mark = await connector.last_id(name)
                await connector.queue(name)
                await held_at_node_2(world, relay, before)
                relay.refuse = True  # the upload's connection goes on; new ones fail
                relay.gate.set()
                run = await connector.wait_run(
                    name, lambda r: r["id"] > mark and r["status"] != "running")
                relay.refuse = False
                assert run["status"] == "succeeded", run
                assert await metric(connector, "dic_connector_pending_erasures") == 1
                return run

            def on_node_2(held: list[list[dict[str, Any]]], version: dict[str, Any]
                          ) -> dict[str, Any]:
                return next(v for v in held[2] if v["id"] == version["version_id"])

            async with serving(connector):
                first = await connector.force(name)
                # SIGTERM while the upload waits on node-2 and the operator waits for the run
                # (?wait=true): a clean stop, the run recorded interrupted by the stopping
                # process itself, the waiting request answered
                before = await hold(world, name, relay)
                waiting = asyncio.create_task(world.http.post(
                    f"{connector.base}/v1/datasets/{name}/runs?wait=true",
                    headers=connector._auth(), timeout=aiohttp.ClientTimeout(total=WAIT_S)))
                await held_at_node_2(world, relay, before)
                stopping = (await connector.runs(name))[0]
                assert await connector.stop() == 0, connector.tail()
                answer = await waiting
                assert answer.status == 503, await answer.text()
            relay.gate.set()
            assert "stopped" in (connector.directory / "stdout.log").read_text()
            assert await world.latest_versions(name) == [first["version_id"]] * 3

            async with serving(connector):
                runs = {r["id"]: r for r in await connector.runs(name)}
                assert runs[stopping["id"]]["status"] == "interrupted"
                assert runs[stopping["id"]]["error"] == "the service stopped during the run"

                # node-2 takes the new version but cannot be reached to erase the old one:
                # the run succeeds and the erasure is remembered
                second = await unconfirmed_erasure()
                held = await world.versions(name)
                old = [next(v for v in h if v["id"] == first["version_id"]) for h in held]
                assert [(v["state"], v["blobs"] > 0) for v in old] == [
                    ("deleted", False), ("deleted", False), ("committed", True)]
                assert await world.latest_versions(name) == [second["version_id"]] * 3
                assert await world.mean(name) == expected(cohort)

                # asked again after every run, here after a run of another dataset (at
                # every start too: test_a_connector_killed_before_every_node_confirmed...)
                await connector.force(other)
                assert await metric(connector, "dic_connector_pending_erasures") == 0
                for h in await world.versions(name):
                    old_version = next(v for v in h if v["id"] == first["version_id"])
                    assert (old_version["state"], old_version["blobs"]) == ("deleted", 0), h
                    assert [v["id"] for v in by_state(h, "committed")] == [second["version_id"]]
                    assert not by_state(h, "receiving"), h

                # an erasure left pending is settled by the next run of its dataset, whose own
                # erasure covers every older version
                third = await unconfirmed_erasure()
                assert on_node_2(await world.versions(name), second)["state"] == "committed"
                fourth = await connector.force(name)
                assert await metric(connector, "dic_connector_pending_erasures") == 0
                for h in await world.versions(name):
                    assert [v["id"] for v in by_state(h, "committed")] == [fourth["version_id"]]
                    assert all(v["blobs"] == 0 for v in h if v["id"] != fourth["version_id"])
                assert third["version_id"] != fourth["version_id"]

            # ... and stays settled in the next process
            async with serving(connector):
                assert await metric(connector, "dic_connector_pending_erasures") == 0


async def test_a_connector_killed_before_every_node_confirmed_the_erasure(
        world: World, tmp_path: Path) -> None:
    """The new version is committed, node-0 and node-1 erased the old one, node-2 has not
    confirmed yet (unreachable, retried with backoff) when the connector is SIGKILLed: the
    obligation must survive the process, or the old version (with, say, a withdrawn
    patient) stays on node-2 until some later run happens to supersede it."""
    cohort = people("s6p", 8, seed=8)
    name = "s6_rest"
    with sekmet_server(tmp_path / "fhir") as server:
        await fhir_put(server, [r for p in cohort.values() for r in fhir_resources(p)])
        async with GatedRelay(world.node_url(2)) as relay:
            connector = Connector.write(tmp_path / "connector", world, {name: rest(server)},
                                        node_urls=[world.node_url(0), world.node_url(1),
                                                   relay.url])

            async with serving(connector):
                first = await connector.force(name)
                cohort.pop("s6p002")
                await fhir_delete(server, Person("s6p002", "male", Decimal(1)))
                before = await hold(world, name, relay)
                await connector.queue(name)
                await held_at_node_2(world, relay, before)
                relay.refuse = True  # the upload's connection goes on; the erasure's fail
                relay.gate.set()

                async def half_erased() -> bool:
                    held = await world.versions(name)
                    states = [next(v["state"] for v in h if v["id"] == first["version_id"])
                              for h in held]
                    return states == ["deleted", "deleted", "committed"]

                await until(half_erased, "node-0 and node-1 to erase the old version")
                running = (await connector.runs(name))[0]
                assert running["status"] == "running"  # still asking node-2
                connector.kill()
            relay.refuse = False

            # restarted, the connector asks node-2 again without a new run
            async with serving(connector):
                async def erased_everywhere() -> bool:
                    held = await world.versions(name)
                    return all(next(v for v in h if v["id"] == first["version_id"])["blobs"]
                               == 0 for h in held)

                await until(erased_everywhere, "node-2 to erase the superseded version")
                runs = await connector.runs(name)
                assert [r["status"] for r in runs] == ["interrupted", "succeeded"]
                assert await metric(connector, "dic_connector_pending_erasures") == 0
                for h in await world.versions(name):
                    old = next(v for v in h if v["id"] == first["version_id"])
                    assert (old["state"], old["blobs"], old["keyed"]) == ("deleted", 0, False)
                    [new] = by_state(h, "committed")
                    assert new["blobs"] > 0 and new["number"] == old["number"] + 1
                assert await world.mean(name) == expected(cohort)


# -- `dic connector pull`: one run in the foreground, and its exit codes ------------------------


def pull(connector: Connector, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIC_")}
    env.update(PYTHONPATH=str(ROOT), TMPDIR=str(connector.tmpdir))
    return subprocess.run(
        [sys.executable, "-m", "dic_connector.cli", "connector", "pull", "--config",
         str(connector.directory / "connector.yaml"), *args],
        capture_output=True, text=True, timeout=WAIT_S, cwd=connector.directory, env=env)


async def test_pull_runs_due_datasets_once_and_exits_with_what_failed(
        world: World, tmp_path: Path) -> None:
    cohort = people("s7q", 8, seed=9)
    dsn = await clinical_database(world.admin_dsn, cohort)
    connector = Connector.write(tmp_path / "connector", world, {
        "s7_sql": sql(dsn, trigger={"schedule": {"every": "1h"}}),
        "s7_cast": {"mapping": "sql_cast.yaml", "source": {"kind": "sql", "url": dsn}}})
    (connector.directory / "sql_cast.yaml").write_text(SQL_CAST_MAPPING)

    done = await asyncio.to_thread(pull, connector, "--dataset", "s7_sql")
    assert done.returncode == 0, done.stdout + done.stderr
    [summary] = [line for line in done.stdout.splitlines()
                 if line.startswith("s7_sql: succeeded")]
    assert "8 patients, 0 excluded, 0 rejected, 8 rows x 4 columns shared as version" in summary
    version = summary.rsplit(" ", 1)[1]
    assert await world.latest_versions("s7_sql") == [version] * 3
    assert await world.mean("s7_sql") == expected(cohort)

    # due again only in an hour; the manual dataset always runs, and fails on the source
    done = await asyncio.to_thread(pull, connector)
    assert done.returncode == 3, done.stdout + done.stderr  # a source failed
    assert "s7_sql: not due (every 3600 s)" in done.stdout
    assert "s7_cast: failed: SourceError" in done.stdout and "SQLSTATE 22P02" in done.stdout
    assert await world.latest_versions("s7_sql") == [version] * 3

    # --now runs it anyway; an unknown dataset is a configuration error (exit 2)
    cohort.pop("s7q003")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM cohort WHERE pid = 's7q003'")
    finally:
        await conn.close()
    done = await asyncio.to_thread(pull, connector, "--dataset", "s7_sql", "--now")
    assert done.returncode == 0 and "7 rows x 4 columns" in done.stdout, done.stdout
    assert await world.mean("s7_sql") == expected(cohort)
    done = await asyncio.to_thread(pull, connector, "--dataset", "nope")
    assert done.returncode == 2 and "no dataset 'nope'" in done.stderr, done


# -- 8. subscriptions over a lossy channel ------------------------------------------------

TOPIC = "http://sekmet.dev/fhir/SubscriptionTopic/patient-change"
NOTIFY_SECRET = "e2e-notify-secret-0123456789"


async def scrape(connector: Connector, dataset: str) -> dict[tuple[str, str], float]:
    """The connector's ``/metrics`` for ``dataset``, as a Prometheus server scrapes it:
    (sample name, its other label values joined by ``,``) to value."""
    async with connector.http.get(f"{connector.base}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {(s.name, ",".join(v for k, v in sorted(s.labels.items()) if k != "dataset")):
            s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.labels.get("dataset") == dataset}


def moved(before: Mapping[tuple[str, str], float], after: Mapping[tuple[str, str], float],
          name: str) -> dict[str, float]:
    """How much each labelled sample of counter ``name`` grew from ``before`` to ``after``."""
    return {labels: value - before.get((n, labels), 0.0) for (n, labels), value in
            after.items() if n == name and value > before.get((n, labels), 0.0)}


async def test_subscription_bursts_over_a_lossy_relay_end_in_what_the_source_holds(
        world: World, tmp_path: Path) -> None:
    """50 patients on sekmet, the connector process subscribed (backport ``patient-change``,
    ``content: empty``, heartbeats every second, 1 s debounce, ``updates: delta``) through a
    relay that drops, delays, reorders and duplicates notifications; three bursts (24
    creates; 10 patients' gender and weight changed; 4 deleted and 6 more changed while the
    relay passes nothing, so the heartbeat stops). Once quiet, the ``mean`` analysis on the
    three node processes gives the source's n and exact sum of weights; the new versions
    number between the bursts and the bursts plus the recoveries in ``/metrics``; the faults
    show there; every new version was pulled incrementally (only the changed patients, from
    the server's history) and composed as a delta on every node."""
    cohort = people("s8p", 50, seed=13)
    name = "s8_subs"
    with sekmet_server(tmp_path / "fhir") as server:
        await fhir_put(server, [r for p in cohort.values() for r in fhir_resources(p)])
        port = free_port()
        relay = FaultyRelay(port)
        relay_base = await relay.start()
        connector = Connector.write(tmp_path / "connector", world, {name: rest(
            server, updates="delta", trigger={"subscription": {
                "kind": "backport", "topic": TOPIC, "content": "empty",
                "endpoint": f"{relay_base}/fhir-notify/{name}", "secret": NOTIFY_SECRET,
                "debounce": "1s", "heartbeat": "1s", "reconcile": "1h"}})}, port=port)
        try:
            async with serving(connector):
                async def beats() -> float:
                    return (await scrape(connector, name)).get(
                        ("dic_connector_subscription_notifications_total", "heartbeat"), 0.0)

                async def quiet() -> list[dict[str, Any]]:
                    """Wait until, over two heartbeats, nothing was held back in the relay,
                    no run ran and none began; the runs then."""
                    deadline = time.monotonic() + WAIT_S
                    while time.monotonic() < deadline:
                        runs, start = await connector.runs(name), await beats()
                        while await beats() < start + 2:
                            assert time.monotonic() < deadline, connector.tail()
                            await asyncio.sleep(POLL_S)
                        if relay.idle() and runs == await connector.runs(name) and all(
                                r["status"] != "running" for r in runs):
                            return runs
                    raise AssertionError(f"never quiet:\n{connector.tail()}")

                first = await succeeded_after(connector, name, 0)
                assert first["counts"]["rows_shared"] == len(cohort), first
                before = await quiet()
                assert await world.mean(name) == expected(cohort)
                start = await scrape(connector, name)

                # burst 1: 24 new patients
                added = people("s8n", 24, seed=14)
                await fhir_put(server, [r for p in added.values() for r in fhir_resources(p)])
                cohort.update(added)
                await quiet()
                # burst 2: 10 of them change gender and weight (Patient and Observation)
                flip = {"male": "female", "female": "male"}
                for pid in list(added)[:10]:
                    person = cohort[pid]
                    person.gender = flip[person.gender]
                    person.weight += Decimal("1.000001")
                await fhir_put(server, [r for pid in list(added)[:10]
                                        for r in fhir_resources(cohort[pid])])
                await quiet()
                # burst 3, nothing passed on (no heartbeat either): 4 deleted, 6 changed
                relay.silent = True
                missed = start.get(("dic_connector_subscription_heartbeats_missed_total", ""),
                                   0.0)
                for pid in list(added)[10:14]:
                    await fhir_delete(server, cohort.pop(pid))
                for pid in list(added)[14:20]:
                    cohort[pid].weight -= Decimal("2.5")
                await fhir_put(server, [r for pid in list(added)[14:20]
                                        for r in fhir_resources(cohort[pid])])
                deadline = time.monotonic() + WAIT_S
                while (await scrape(connector, name)).get(
                        ("dic_connector_subscription_heartbeats_missed_total", ""),
                        0.0) <= missed:
                    assert time.monotonic() < deadline, connector.tail()
                    await asyncio.sleep(POLL_S)
                relay.silent = False
                runs = await quiet()

                # (a) the newest committed version is what the source holds
                assert await world.mean(name) == expected(cohort)
                # (b) new versions bounded by the bursts and the recoveries
                after = await scrape(connector, name)
                recovered = moved(start, after, "dic_connector_subscription_recoveries_total")
                # a run whose discovery found no changed patient (a recovery after the
                # changes were pulled) ends unchanged, with no version
                assert all(r["status"] in ("succeeded", "unchanged")
                           for r in runs if r not in before), runs
                new = [r for r in runs if r not in before and r["version_id"] is not None]
                bursts = 3
                assert bursts <= len(new) <= bursts + sum(recovered.values()), (new, recovered)
                assert {r["trigger"] for r in new} <= {
                    "subscription", *(f"subscription:{reason}" for reason in recovered)}, new
                # every new version pulled only the changed patients (issue 13 part 4:
                # discovered from the server's history; the deletions too)
                incremental = [r for r in new if "discover" in r["stage_seconds"]]
                assert incremental == new, [(r["trigger"], r["counts"]) for r in new]
                assert moved(start, after, "dic_connector_incremental_runs_total") == \
                    {"": float(len(new))}, after
                assert not moved(start, after, "dic_connector_incremental_fallbacks_total")
                assert max(r["counts"]["patients"] for r in new) <= len(added), new
                by_id = sorted(new, key=lambda r: r["id"])
                assert (by_id[0]["counts"]["rows_shared"], by_id[-1]["counts"]["rows_shared"]) \
                    == (50 + 24, len(cohort)), by_id
                # (c) the faults happened and show in /metrics
                assert relay.dropped and relay.duplicated and relay.silenced
                for counter in ("gaps", "duplicate_events", "heartbeats_missed"):
                    assert moved(start, after, f"dic_connector_subscription_{counter}_total"), \
                        (counter, after)
                # (d) every new version was composed from its base on all three nodes
                versions = await world.versions(name)
                for node in versions:
                    assert [v["state"] for v in node][-1] == "committed"
                    assert all(v["delta"] for v in node[1:]), node
                    assert [v["id"] for v in node[-len(new):]] == \
                        [r["version_id"] for r in sorted(new, key=lambda r: r["id"])]
        finally:
            await relay.close()
