"""The demo's last step: one new patient on a FHIR server reaches the next analysis through
a FHIR Subscription.

DESIGN.md's connector is triggered by the hospital's FHIR server: a Subscription tells it
that something changed, and it shares a new version of its dataset. This step shows that on
one site (Munich, ``tm``) with real parts:

1. **A FHIR server.** sekmet-fhir (:mod:`dic_connector.dev.sekmet`, from ``.venv-fhir``) on
   127.0.0.1, loaded with the site's synthetic pilot patients
   (:func:`~dic_connector.dev.synthetic.pilot_resources`).
2. **The connector service** (:func:`dic_connector.connector.service.create_app`, in this
   process on 127.0.0.1, as ``benchmarks/subscriptions.py`` runs it) with a subscription
   trigger for the dataset :data:`DATASET`: a Subscriptions R5 Backport IG topic-based
   Subscription (http://hl7.org/fhir/uv/subscriptions-backport/; topic ``patient-change``,
   payload ``empty``, heartbeats), which sekmet supports best (its classic R4 ``criteria``
   rest-hooks send empty pings only; ``tests/dic_connector/connector/subscriptions/
   test_sekmet.py`` tests both). The service pulls in full at start and once more when it
   has created the subscription (a change in between is not lost): versions 1 and 2.
3. **Before.** The researcher asks :data:`LIVE_QUESTIONS` (the row count and the mean age)
   on the latest version; the site's data owner approves.
4. **One new patient.** :data:`NEWCOMER` (a 25th Munich patient with every resource the
   mapping needs to put them in the cohort) is written to the FHIR server in one batch; the
   server notifies the connector, whose debouncer starts one run (issue 13): a new version,
   committed on all three nodes by the two-phase commit. Times are taken from the server's
   answer to the write: until the connector received the event notification, and until the
   run's version was committed.
5. **After.** The same questions on the new version: the count is n + 1; the mean age is
   refused by the nodes' version lineage rule (:mod:`dic_connector.node.analyses.lineage`),
   since the two versions differ in one row, fewer than ``min_subset_size``, and the two means
   would give away the newcomer's age.

Steps 1 and 2 run in the background while the demo's other analyses compute
(:func:`live_feed`); steps 3 to 5 are what the step adds to the demo's time. Without
``.venv-fhir`` the step is skipped with one line naming ``make fhir-venv``. The
demo computes no plaintext reference (:data:`dic_connector.dev.demo.PLAINTEXT_CHECK`):
``tests/e2e/test_demo.py`` computes both readings from the same synthetic resources in
plaintext; the step itself checks each count against the number of patients the FHIR server
holds (``Patient?_summary=count``, what the hospital can see).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.client import DataOwner, Researcher
from dic_connector.connector.config import parse_connector_config
from dic_connector.connector.service import create_app
from dic_connector.connector.state import RunRecord, RunStatus, StateStore
from dic_connector.connector.subscriptions.receiver import WATCHERS
from dic_connector.connector.subscriptions.watcher import SubscriptionWatcher
from dic_connector.dev.deployment import NODE_NAMES, LocalNodes
from dic_connector.dev.sekmet import SekmetServer, sekmet_executable, start_sekmet, stop_sekmet
from dic_connector.dev.synthetic import PilotPatient, patient_resources, pilot_resources
from dic_connector.errors import DemoError, FhirServerMissing
from dic_connector.vocabulary import RequestStatus
from mpc.local import free_port

SITE = "tm"
#: the site's live dataset (the NDJSON export of the earlier steps is ``pilot_adrenal``)
DATASET = "pilot_adrenal_live"
TOPIC = "http://sekmet.dev/fhir/SubscriptionTopic/patient-change"
#: the notification secret shared by the Subscription and the connector's receiver
SECRET = "demo-notify-secret-0123456789abcdef"
DEBOUNCE = "0.3s"
HEARTBEAT = "1s"
#: (analysis, parameters) asked before and after the update
LIVE_QUESTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("count", {}),
    ("mean", {"column": "age"}),
)
#: the patient the demo adds: a 25th Munich patient (number 48 of the pooled cohort)
NEWCOMER = PilotPatient(
    site=SITE, index=25, age=59, gender="female", ecog=1, laterality="left",
    timing="metachronous", fractions=8, dose_per_fraction_gy=5.0, local_control="SD",
    toxicity_grade=1, follow_up_months=6.0, death=False, primary_icd10="C34.1",
)
NEWCOMER_NUMBER = 48
WAIT_S = 60.0
POLL_S = 0.02

Say = Callable[[str], None]
T = TypeVar("T")


def newcomer_resources() -> list[dict[str, Any]]:
    """:data:`NEWCOMER`'s resources (Patient, Conditions, Procedure, Observations)."""
    return patient_resources(NEWCOMER, NEWCOMER_NUMBER, prefix="live-")


def label(analysis: str, parameters: Mapping[str, Any]) -> str:
    """``mean(age) [tm]``, as the demo labels its questions."""
    return f"{analysis}({parameters.get('column', '')}) [{SITE}]"


@dataclass(frozen=True)
class Reading:
    """The live questions' results on one committed version."""

    version: int
    version_id: str
    rows: int  #: the version's row count (public)
    source_patients: int  #: the Patients the FHIR server held (``_summary=count``)
    request_ids: dict[str, str]
    aggregates: dict[str, dict[str, Any]]  #: by label

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "version_id": self.version_id, "rows": self.rows,
                "source_patients": self.source_patients, "request_ids": self.request_ids,
                "results": self.aggregates}


@dataclass
class SubscriptionTour:
    """What the step did; ``skipped`` says why it did not run."""

    skipped: str | None = None
    subscription: str | None = None  #: the id of the Subscription on the FHIR server
    added_at: dt.datetime | None = None  #: when the server answered the write (UTC)
    notified_s: float | None = None
    committed_s: float | None = None
    run: dict[str, Any] = field(default_factory=dict)
    before: Reading | None = None
    after: Reading | None = None
    seconds: float = 0.0  #: what the step added to the demo
    setup_s: float = 0.0  #: its setup, while the demo's other analyses ran

    def check(self) -> bool:
        """Each count equals the server's Patients, and the after count is one more."""
        if self.before is None or self.after is None:
            return False
        first, second = _count(self.before), _count(self.after)
        return (first, second) == (self.before.source_patients, self.after.source_patients) \
            and first is not None and second == first + 1

    def line(self) -> str:
        """``FHIR Subscription: patient added at 12:00:01.2, notified +61 ms, version 3
        committed +3.9 s, count 24 -> 25; mean(age) 66.38 years (n = 24) -> refused (version
        lineage)``, or why the step was skipped."""
        if self.skipped is not None:
            return f"FHIR Subscription step skipped: {self.skipped}"
        assert self.before and self.after and self.added_at
        assert self.notified_s is not None and self.committed_s is not None
        mean = label(*LIVE_QUESTIONS[1])
        return (
            f"FHIR Subscription: patient added at {self.added_at:%H:%M:%S}."
            f"{self.added_at.microsecond // 100_000}, notified +{self.notified_s * 1000:.0f} ms,"
            f" version {self.after.version} committed +{self.committed_s:.1f} s, count "
            f"{_count(self.before)} -> {_count(self.after)}; mean(age) "
            f"{_mean_text(self.before.aggregates[mean])} -> "
            f"{_mean_text(self.after.aggregates[mean])}"
        )

    def as_json(self) -> dict[str, Any]:
        if self.skipped is not None:
            return {"skipped": self.skipped}
        return {
            "skipped": None, "site": SITE, "dataset": DATASET,
            "trigger": f"backport topic {TOPIC.rsplit('/', 1)[-1]}, payload empty, debounce "
                       f"{DEBOUNCE}, heartbeat {HEARTBEAT}",
            "subscription": self.subscription,
            "added_at_utc": None if self.added_at is None
            else self.added_at.strftime("%H:%M:%S.%f")[:-3],
            "notified_ms": None if self.notified_s is None else round(self.notified_s * 1000, 1),
            "committed_s": None if self.committed_s is None else round(self.committed_s, 3),
            "run": self.run,
            "versions": [r.version for r in (self.before, self.after) if r is not None],
            "before": None if self.before is None else self.before.as_json(),
            "after": None if self.after is None else self.after.as_json(),
            "source_check": self.check(),
            "plaintext_check": (
                "tests/e2e/test_demo.py computes both readings from the same synthetic "
                "resources in plaintext (the newcomer included) and compares them with this "
                "report; source_check: each count equals the Patients on the FHIR server and "
                "the second is one more"),
            "seconds": round(self.seconds, 1),
            "setup_s": round(self.setup_s, 1),
        }


def _count(reading: Reading) -> int | None:
    """The opened count (None if the nodes refused it)."""
    n = reading.aggregates[label(*LIVE_QUESTIONS[0])].get("n")
    return None if n is None else int(n)


def _mean_text(aggregates: Mapping[str, Any]) -> str:
    if aggregates.get("suppressed"):
        reason = str(aggregates.get("reason", ""))
        return "refused (version lineage)" if "version lineage" in reason else "refused"
    return f"{float(aggregates['mean']):.2f} years (n = {aggregates['n']})"


def result_text(aggregates: Mapping[str, Any]) -> str:
    """One live result as the report prints it."""
    if aggregates.get("suppressed"):
        return f"refused: {aggregates.get('reason', '')}"
    if "mean" in aggregates:
        return _mean_text(aggregates)
    return f"n = {aggregates['n']}"


async def _until(check: Callable[[], Awaitable[T]], what: str, timeout_s: float = WAIT_S
                 ) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(POLL_S)
    raise DemoError(f"FHIR Subscription step: timed out after {timeout_s:.0f} s waiting for "
                    f"{what}")


def _notifications(watcher: SubscriptionWatcher) -> float:
    counter = watcher.metrics.notifications.labels(DATASET, "event-notification")
    return float(counter._value.get())


def _source_patients(server: SekmetServer) -> int:
    return int(server.call("GET", "Patient?_summary=count")["total"])


class LiveFeed:
    """The FHIR server and the connector service of the step, set up in the background
    (:meth:`start`, while the demo's other analyses run) and torn down by :meth:`close`."""

    def __init__(self, cluster: LocalNodes, work: Path, mapping_path: Path, say: Say) -> None:
        self.cluster, self.work, self.mapping_path, self.say = cluster, work, mapping_path, say
        self.skipped: str | None = None
        self.server: SekmetServer | None = None
        self.state: StateStore | None = None
        self.app: web.Application | None = None
        self.runner: web.AppRunner | None = None
        self.setup_s = 0.0
        self._starting: asyncio.Future[None] | None = None
        self._setup: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._setup = asyncio.create_task(self._set_up(), name="demo:live-feed")

    async def _set_up(self) -> None:
        started = time.monotonic()
        try:
            sekmet_executable()
        except FhirServerMissing as exc:
            self.skipped = str(exc)
            return
        directory = self.work / "sekmet"
        directory.mkdir(parents=True, exist_ok=True)

        def start_server() -> None:  # in a thread; close() waits for it even if cancelled
            self.server = start_sekmet(directory)
            self.server.put(list(pilot_resources(SITE)))

        self._starting = asyncio.get_running_loop().run_in_executor(None, start_server)
        await self._starting
        assert self.server is not None
        self.say(f"FHIR server sekmet-fhir at {self.server.base_url}: {SITE}'s synthetic "
                 "patients loaded")
        await self._start_connector(self.server)
        self.setup_s = time.monotonic() - started

    async def _start_connector(self, server: SekmetServer) -> None:
        port = free_port()
        tls = self.cluster.deployment.pki[f"connector.{SITE}"]
        state_url = f"sqlite:///{self.work / 'connector-state.db'}"
        config = parse_connector_config({
            "site": SITE,
            "tls": {"ca_cert": str(tls.ca_cert), "cert": str(tls.cert), "key": str(tls.key)},
            "nodes": [{"url": url, "name": name}
                      for url, name in zip(self.cluster.urls, NODE_NAMES, strict=True)],
            "state_database_url": state_url,
            "upload_timeout_s": 60,
            "datasets": {DATASET: {
                "mapping": str(self.mapping_path),
                "source": {"kind": "fhir-rest", "base_url": server.base_url,
                           "auth": {"kind": "bearer", "token": server.static_token}},
                "trigger": {"subscription": {
                    "kind": "backport", "topic": TOPIC, "content": "empty", "secret": SECRET,
                    "debounce": DEBOUNCE, "heartbeat": HEARTBEAT, "reconcile": "24h",
                    "endpoint": f"http://127.0.0.1:{port}/fhir-notify/{DATASET}"}}}},
        }, self.work, {})
        self.state = StateStore(state_url)
        await self.state.migrate()  # as `dic connector migrate` does
        self.app = create_app(config)
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        watcher = self.watcher
        state = self.state

        async def first_versions() -> list[RunRecord]:
            busy = watcher.debouncer.running or watcher.debouncer.pending
            done = [r for r in await state.runs(DATASET) if r.status is RunStatus.SUCCEEDED]
            return done if done and watcher.subscription is not None and not busy else []

        runs = await _until(first_versions, "the connector's first full pulls")
        self.say(f"connector service of {SITE} at http://127.0.0.1:{port}: Subscription/"
                 f"{watcher.subscription} (backport topic {TOPIC.rsplit('/', 1)[-1]}) "
                 f"active on the FHIR server; {len(runs)} full pull(s) of {DATASET} committed "
                 "(at start, and once the subscription exists)")

    @property
    def watcher(self) -> SubscriptionWatcher:
        assert self.app is not None
        return self.app[WATCHERS][DATASET]

    async def ready(self) -> bool:
        """Wait for the setup; False when the step is skipped."""
        assert self._setup is not None
        await self._setup
        return self.skipped is None

    async def close(self) -> None:
        if self._setup is not None and not self._setup.done():
            self._setup.cancel()
        if self._setup is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._setup  # its failure, if any, was raised by ready()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.state is not None:
            await self.state.close()
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._starting)
        if self.server is not None:
            await asyncio.to_thread(stop_sekmet, self.server)


@contextlib.asynccontextmanager
async def live_feed(cluster: LocalNodes, work: Path, mapping_path: Path, say: Say
                    ) -> AsyncIterator[LiveFeed]:
    """A :class:`LiveFeed` setting itself up in the background; closed on exit."""
    feed = LiveFeed(cluster, work, mapping_path, say)
    feed.start()
    try:
        yield feed
    finally:
        await feed.close()


async def run_subscription_step(
    feed: LiveFeed,
    keys: Mapping[str, Ed25519PrivateKey],
    say: Say,
    researcher_name: str,
    approve_at: int,
    submit_at: int,
) -> SubscriptionTour:
    """The step of the module doc on a :class:`LiveFeed`; skipped (with a reason) when
    sekmet-fhir is not installed. ``seconds`` is what the step adds to the demo: from the
    call (the feed's setup ran meanwhile) to the second reading."""
    started = time.monotonic()
    if not await feed.ready():
        assert feed.skipped is not None
        return SubscriptionTour(skipped=feed.skipped)
    tour = await _tour(feed, keys, say, researcher_name, approve_at, submit_at)
    tour.seconds = time.monotonic() - started
    tour.setup_s = feed.setup_s
    return tour


async def _tour(
    feed: LiveFeed, keys: Mapping[str, Ed25519PrivateKey], say: Say, researcher_name: str,
    approve_at: int, submit_at: int,
) -> SubscriptionTour:
    assert feed.server is not None and feed.state is not None
    server, state, watcher, cluster = feed.server, feed.state, feed.watcher, feed.cluster
    tour = SubscriptionTour(subscription=watcher.subscription)
    researcher = Researcher(researcher_name, keys[researcher_name],
                            cluster.clients(researcher_name), at=submit_at, poll_s=0.05)
    owner_name = f"owner_{SITE}"
    owner = DataOwner(owner_name, SITE, keys[owner_name], cluster.clients(owner_name),
                      poll_s=0.05)
    study = await researcher.create_study("Adrenal metastases: the live Munich feed")

    async def reading() -> Reading:
        [dataset] = [d for d in await researcher.datasets()
                     if d.name == DATASET and d.site == SITE]
        version = dataset.latest_version
        if version is None:
            raise DemoError(f"no committed version of {DATASET} on {NODE_NAMES[submit_at]}")
        ids = {label(a, p): await researcher.submit(study, a, [dataset.id], p)
               for a, p in LIVE_QUESTIONS}
        await owner.approve(list(ids.values()), at=approve_at, timeout_s=WAIT_S)
        await researcher.wait(list(ids.values()), until=RequestStatus.COMPLETED,
                              timeout_s=WAIT_S)
        results = {name: (await researcher.result(i)).aggregates for name, i in ids.items()}
        patients = await asyncio.to_thread(_source_patients, server)
        return Reading(version.number, version.id, version.row_count, patients, ids, results)

    tour.before = await reading()
    say(f"researcher on version {tour.before.version} of {DATASET}: " + "; ".join(
        f"{name} -> {result_text(a)}" for name, a in tour.before.aggregates.items()))
    known = {r.id for r in await state.runs(DATASET, limit=1000)}
    before = _notifications(watcher)
    # the clock starts when the write is sent: sekmet may notify before it answers it
    # (under load the notification was counted before the PUT returned: "+0 ms")
    t0 = time.monotonic()
    tour.added_at = dt.datetime.now(dt.UTC)
    await asyncio.to_thread(server.put, newcomer_resources())

    async def notified() -> bool:
        return _notifications(watcher) > before

    async def committed() -> list[RunRecord]:
        return [r for r in await state.runs(DATASET) if r.id not in known
                and r.trigger.startswith("subscription") and r.status is RunStatus.SUCCEEDED]

    await _until(notified, "the event notification")
    tour.notified_s = time.monotonic() - t0
    [run] = await _until(committed, "the version the notification triggers")
    tour.committed_s = time.monotonic() - t0
    tour.run = {"trigger": run.trigger, "patients": run.counts.patients,
                "seconds": None if run.finished_at is None
                else round((run.finished_at - run.started_at).total_seconds(), 3)}
    say(f"a new patient on the FHIR server; notified after {tour.notified_s * 1000:.0f} ms, "
        f"the debounced run committed a new version after {tour.committed_s:.1f} s")

    async def on_all_nodes() -> bool:
        listings = await asyncio.gather(*(researcher.datasets(at=i)
                                          for i in range(len(NODE_NAMES))))
        return all(d.latest_version is not None and d.latest_version.id == str(run.version_id)
                   for listing in listings for d in listing if d.name == DATASET)

    await _until(on_all_nodes, "the new version on all three nodes")
    tour.after = await reading()
    say(f"researcher on version {tour.after.version} of {DATASET}: " + "; ".join(
        f"{name} -> {result_text(a)}" for name, a in tour.after.aggregates.items()))
    return tour


__all__ = ["DATASET", "LIVE_QUESTIONS", "NEWCOMER", "SITE", "LiveFeed", "Reading",
           "SubscriptionTour", "label", "live_feed", "newcomer_resources",
           "run_subscription_step"]
