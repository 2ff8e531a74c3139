"""Notification-to-committed-version latency: one changed patient in a large cohort.

Issue 13's benchmark. A sekmet-fhir server (:mod:`dic_connector.dev.sekmet`, ``.venv-fhir``,
made by ``make fhir-venv``) holds
``--patients`` pilot patients (``dic_connector.dev.synthetic.pilot_resources``, Munich's 24
patients repeated with new ids; loading is not timed). The connector service runs in this
process (``dic_connector.connector.service.create_app`` on 127.0.0.1) with a subscription
trigger (backport topic ``patient-change``, ``content: empty``, heartbeats every second,
``--debounce`` window), sharing ``mappings/pilot_adrenal.yaml`` to three real node
processes (``dic node serve``, SQLite, mutual TLS, ``dic_connector.dev.deployment``).

After the first full pull has committed, each of ``--changes`` rounds updates one patient
(a new ``birthDate``, one FHIR ``PUT``) and measures, from the moment the ``PUT`` is
sent:

* ``notified_ms``: until the connector has received the event notification (its
  ``dic_connector_subscription_notifications_total{kind="event-notification"}``);
* ``committed_ms``: until a new run triggered by the subscription has succeeded, which is
  when its version is committed on all three nodes (the run's two-phase commit);
* ``run_s`` and ``stage_seconds``: that run's duration and stages (pull, map, validate,
  encode, upload), from the run history.

``committed_ms`` = notification delivery + the debounce window + the update: with
``--updates full`` (the baseline of issue 13 part 4) the connector pulls, maps and shares
the whole cohort again; with ``--updates delta`` the run (triggered by the subscription)
is an incremental pull (``docs/connector.md``, "Incremental pulls"): it discovers the
changed patients from the server's ``_history``, pulls, maps and shares only theirs, and the
nodes compose the version from the previous one (``incremental`` in each sample: the run
had a ``discover`` stage; ``rows``: the version's rows). ``bytes_per_node`` is what the run
sent each node. ``--per-round K`` changes K patients per round (one batch Bundle of PUTs;
100 is 1 % of 10^4). Medians over the rounds, and every sample.

Usage: ``.venv/bin/python benchmarks/subscriptions.py [--patients 10000] [--changes 3]
[--per-round 1] [--debounce 0.5s] [--updates full|delta]``. The last line of output is one
JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness  # noqa: F401  (this checkout's dic_connector, not the virtualenv's)
import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.connector.config import parse_connector_config
from dic_connector.connector.service import create_app
from dic_connector.connector.state import RunRecord, RunStatus, StateStore
from dic_connector.connector.subscriptions.receiver import WATCHERS
from dic_connector.dev.deployment import LocalNodes, register_people, write_local_deployment
from dic_connector.dev.sekmet import SekmetServer, start_sekmet, stop_sekmet
from dic_connector.dev.synthetic import pilot_resources
from dic_connector.vocabulary import Role
from mpc.local import free_port

ROOT = Path(__file__).resolve().parents[1]
SITE = "tm"
DATASET = "pilot_adrenal"
TOPIC = "http://sekmet.dev/fhir/SubscriptionTopic/patient-change"
SECRET = "benchmark-notify-secret-0123456789"
PEOPLE = {"owner_tm": (Role.DATA_OWNER, SITE)}  # registers the site on every node
PER_COPY = 24  # Munich's pilot patients


def load_server(work: Path, patients: int) -> SekmetServer:
    """A sekmet-fhir server holding ``patients`` pilot patients (rounded up to 24s)."""
    (work / "sekmet").mkdir()
    server = start_sekmet(work / "sekmet")
    started = time.perf_counter()
    copies = max(1, -(-patients // PER_COPY))
    batch: list[dict[str, Any]] = []
    loaded = 0
    for item in pilot_resources(SITE, copies=copies):
        batch.append(item)
        if len(batch) == 1000:
            server.put(batch)
            loaded += len(batch)
            batch = []
    if batch:
        server.put(batch)
        loaded += len(batch)
    print(f"sekmet: {loaded} resources ({copies * PER_COPY} patients) loaded in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    return server



def succeeded(runs: list[RunRecord], trigger: str, known: set[int]) -> list[RunRecord]:
    return [r for r in runs if r.trigger == trigger and r.status is RunStatus.SUCCEEDED
            and r.id not in known]


async def poll(check: Any, what: str, timeout_s: float = 1800.0, every_s: float = 0.02
               ) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(every_s)
    raise TimeoutError(f"timed out waiting for {what}")


def notifications(watcher: Any) -> float:
    return float(watcher.metrics.notifications.labels(DATASET, "event-notification")
                 ._value.get())


async def run(patients: int, changes: int, debounce: str, work: Path,
              updates: str = "full", per_round: int = 1) -> dict[str, Any]:
    server = await asyncio.to_thread(load_server, work, patients)
    try:
        return await measure(server, changes, debounce, work, updates, per_round)
    finally:
        stop_sekmet(server)


async def measure(server: Any, changes: int, debounce: str, work: Path,
                  updates: str, per_round: int = 1) -> dict[str, Any]:
    deployment = write_local_deployment(work / "deployment", sites=(SITE,))
    keys = {name: Ed25519PrivateKey.generate() for name in PEOPLE}
    tokens = await register_people(deployment, PEOPLE, keys)
    port = free_port()
    async with aiohttp.ClientSession() as http:
        nodes = LocalNodes(deployment, http, tokens)
        async with nodes.running(work / "logs"):
            tls = deployment.pki[f"connector.{SITE}"]
            config = parse_connector_config({
                "site": SITE,
                "tls": {"ca_cert": str(tls.ca_cert), "cert": str(tls.cert), "key": str(tls.key)},
                "nodes": [{"url": url, "name": f"node-{i}"} for i, url in enumerate(nodes.urls)],
                "state_database_url": f"sqlite:///{work / 'state.db'}",
                "upload_timeout_s": 600,
                "datasets": {DATASET: {
                    "mapping": str(ROOT / "mappings" / "pilot_adrenal.yaml"),
                    "updates": updates,
                    "source": {"kind": "fhir-rest", "base_url": server.base_url,
                               "auth": {"kind": "bearer", "token": server.static_token}},
                    "trigger": {"subscription": {
                        "kind": "backport", "topic": TOPIC, "content": "empty",
                        "secret": SECRET, "debounce": debounce, "heartbeat": "1s",
                        "reconcile": "24h",
                        "endpoint": f"http://127.0.0.1:{port}/fhir-notify/{DATASET}"}}}},
            }, work, {})
            state = StateStore(f"sqlite:///{work / 'state.db'}")
            await state.migrate()  # as `dic connector migrate` does
            app = create_app(config)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            try:
                return await rounds(app, state, server, changes, debounce, updates, per_round)
            finally:
                await state.close()
                await runner.cleanup()


async def rounds(app: web.Application, state: StateStore, server: Any, changes: int,
                 debounce: str, updates: str, per_round: int = 1) -> dict[str, Any]:
    watcher = app[WATCHERS][DATASET]

    async def first_version() -> list[RunRecord]:
        runs = await state.runs(DATASET)
        busy = watcher.debouncer.running or watcher.debouncer.pending
        done = [r for r in runs if r.status is RunStatus.SUCCEEDED]
        return done if done and watcher.subscription is not None and not busy else []

    started = time.perf_counter()
    [initial, *_] = await poll(first_version, "the first full pull")
    print(f"first version committed ({initial.counts.patients} patients) after "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    patients = [entry["resource"] for entry in (await asyncio.to_thread(
        server.call, "GET", "Patient?_count=" + str(changes * per_round)))["entry"]]
    samples: list[dict[str, Any]] = []
    for i in range(changes):
        known = {r.id for r in await state.runs(DATASET, limit=1000)}
        before = notifications(watcher)
        changed = [{**p, "birthDate": f"19{40 + i:02d}-01-0{1 + i % 9}"}
                   for p in patients[i * per_round:(i + 1) * per_round]]
        t0 = time.perf_counter()  # sekmet may notify before it answers the PUT
        if per_round == 1:
            await asyncio.to_thread(server.call, "PUT", f"Patient/{changed[0]['id']}",
                                    changed[0])
        else:  # one batch Bundle of PUTs
            await asyncio.to_thread(server.put, changed)

        async def notified(before: float = before) -> bool:
            return notifications(watcher) > before

        async def committed(known: set[int] = known) -> list[RunRecord]:
            return succeeded(await state.runs(DATASET), "subscription", known)

        await poll(notified, "the notification")
        t_notified = time.perf_counter() - t0
        [new] = await poll(committed, "the new version")
        t_committed = time.perf_counter() - t0
        assert new.finished_at is not None
        sample = {"notified_ms": round(t_notified * 1000, 1),
                  "committed_ms": round(t_committed * 1000, 1),
                  "run_s": round((new.finished_at - new.started_at).total_seconds(), 3),
                  "stage_seconds": {k: round(v, 3) for k, v in new.stage_seconds.items()},
                  "patients": new.counts.patients, "rows": new.counts.rows_shared,
                  "incremental": "discover" in new.stage_seconds,
                  "bytes_per_node": new.counts.bytes_per_node}
        print(json.dumps(sample), flush=True)
        samples.append(sample)
        await poll(lambda: _idle(watcher), "the debouncer to settle")
    return {
        "benchmark": "subscriptions", "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "patients": initial.counts.patients, "changes": changes,
        "changed_per_round": per_round, "debounce": debounce,
        "trigger": "backport topic patient-change, content empty",
        "updates": updates,
        "notified_ms_median": statistics.median(s["notified_ms"] for s in samples),
        "committed_ms_median": statistics.median(s["committed_ms"] for s in samples),
        "run_s_median": statistics.median(s["run_s"] for s in samples),
        "initial_full_pull_s": round((initial.finished_at - initial.started_at)
                                     .total_seconds(), 3) if initial.finished_at else None,
        "samples": samples,
    }


async def _idle(watcher: Any) -> bool:
    return not (watcher.debouncer.running or watcher.debouncer.pending)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=3)
    parser.add_argument("--debounce", default="0.5s")
    parser.add_argument("--updates", choices=("full", "delta"), default="full",
                        help="the dataset's updates option: share every row, or the changed")
    parser.add_argument("--per-round", type=int, default=1,
                        help="patients changed per round (one batch PUT)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dic-bench-subscriptions-") as directory:
        out = asyncio.run(run(args.patients, args.changes, args.debounce, Path(directory),
                              args.updates, args.per_round))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
