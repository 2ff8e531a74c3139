"""One run of a dataset: pull, consent, share, erase what it supersedes, record, in that order.

A run is what the service does on a schedule, on an operator's request, or after a FHIR
Subscription notification (:mod:`.subscriptions`; trigger ``subscription``, and
``reconcile`` for its periodic full pull); ``dic connector pull`` does one in the
foreground.

1. **Record the start** in the state database (a ``running`` row).
2. **Pull and map** the source (:func:`~.pipeline.share_cohort`).
3. **Consent and opt-out** (:mod:`.consent`): which of the assembled cohort's patients this
   version must not contain (under opt-in: everyone without a permitting consent). Consent
   information that cannot be read fails the run before anything is shared: it must never
   widen the cohort.
4. **Validate, encode, share** the remaining rows: a new version committed on all three
   nodes, or on none.
   The new version's manifest declares how it differs from every earlier version of the
   dataset (:mod:`.lineage`: rows only in the earlier one, only in the new one), so that
   the nodes refuse releases that would difference two versions.
5. **Erase the versions it supersedes** on every node (:meth:`~.upload.Uploader.erase_older`):
   after a withdrawal, the old version still holds the patient. The erasure is recorded as
   *pending* in the state database before the nodes are asked and cleared when all three
   have confirmed; one that some node did not confirm, or that a dying process left
   unfinished, is retried after every run and when the service starts, until all three do
   (per dataset only the newest pending version is asked for: it covers the older ones).
6. **Record the outcome** in one transaction with the dataset's watermarks and lineage
   (:meth:`~.state.StateStore.finish_run`): counts and keyed row digests, never a value.

A run is a **full pull**: the new version is built from everything the source holds now,
so deleted patients and resources, and changed consents, disappear from it without a
merge with the previous version (the connector keeps no plaintext to merge with). The
exception is a run a subscription triggered on an ``updates: delta`` FHIR REST dataset
(:mod:`.incremental`): it pulls only the patients the server's history shows changed and
composes the version from the base's other rows (falling back to a full pull, counted by
reason, where that is not possible). The
watermark recorded (the server's time of the pull, ``Bundle.meta.lastUpdated`` or the Bulk
``transactionTime``) is what incremental triggers (issue 13) start from. Under
``updates: delta`` (:mod:`.delta`) the full pull is still what the version holds, but only
its rows that the previous version lacks are shared; the nodes keep the others' shares
(the lineage state, saved in step 6, keeps the version's row keys by position for the next).

Killed at any point, a run leaves the previous committed version in place: before the
commit nothing is visible (the nodes erase a stale ``receiving`` upload), after it the new
version is complete and the erasure of what it supersedes is pending, asked again when the
service starts (only a death in the instant between the commit and that one write to the
state database leaves the old version to the next run's erasure); the state row stays
``running`` and is marked ``interrupted`` when the service starts again
(:meth:`~.state.StateStore.mark_interrupted`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from dic_connector.connector.config import ConnectorConfig, DatasetConfig, Updates
from dic_connector.connector.consent import Exclusions, exclusions
from dic_connector.connector.delta import UploadPlan, plan_upload
from dic_connector.connector.incremental import (
    Fallback,
    FallbackReason,
    IncrementalPlan,
    discover,
    mapping_fingerprint,
    max_changed,
    patient_pseudonyms,
    plan_incremental,
    restricted,
)
from dic_connector.connector.lineage import (
    Keys,
    LineageState,
    Pseudonyms,
    RowDigests,
    load_or_create_key,
    sorted_keys,
)
from dic_connector.connector.metrics import ConnectorMetrics
from dic_connector.connector.pipeline import PipelineReport, share_cohort
from dic_connector.connector.state import RunCounts, RunRecord, RunStatus, StateStore
from dic_connector.connector.upload import Uploader
from dic_connector.errors import CoordinationError, DeltaRefused, DicError, SourceError
from dic_connector.sources import (
    BulkExportConfig,
    FhirRestConfig,
    HttpClient,
    Progress,
    Source,
    make_source,
)

#: the longest error text kept per run (messages are value-free; this bounds their size)
ERROR_CHARS = 2000

StageCallback = Callable[[str], None]
ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class RunOutcome:
    """A finished run: its record, and the error that failed it (``None`` on success)."""

    record: RunRecord
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.record.status in (RunStatus.SUCCEEDED, RunStatus.UNCHANGED)


class Runner:
    """Runs datasets of one connector; one run per dataset at a time."""

    def __init__(self, config: ConnectorConfig, state: StateStore,
                 metrics: ConnectorMetrics | None = None, *,
                 logger: logging.Logger | None = None,
                 clock: Callable[[], dt.datetime] | None = None,
                 uploader: Callable[[], Uploader] | None = None) -> None:
        """``uploader`` makes the :class:`Uploader` of each operation (default: one from
        ``config``'s nodes, certificate, site and upload timeout)."""
        self.config = config
        self.state = state
        self.metrics = metrics or ConnectorMetrics()
        self._log = logger or logging.getLogger("dic_connector.connector")
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._locks = {d.name: asyncio.Lock() for d in config.datasets}
        self._slots = asyncio.Semaphore(config.max_parallel_runs)
        self._uploader = uploader

    def uploader(self) -> Uploader:
        if self._uploader is not None:
            return self._uploader()
        return Uploader(self.config.nodes, self.config.tls, self.config.site,
                        timeout_s=self.config.upload_timeout_s,
                        commit_retries=self.config.node_attempts,
                        retry_delay_s=self.config.retry_delay_s)

    def running(self, name: str) -> bool:
        return self._locks[name].locked()

    async def run(self, name: str, trigger: str, *, on_stage: StageCallback | None = None,
                  on_progress: ProgressCallback | None = None) -> RunOutcome:
        """Run dataset ``name`` now (after a run of it already in progress)."""
        dataset = self.config.dataset(name)
        async with self._locks[name], self._slots:
            outcome = await self._run(dataset, trigger, on_stage, on_progress)
            version = outcome.record.version_id
            try:  # not the erasure this run has just asked for
                await self.retry_pending_erasures(
                    asked=None if version is None else (name, version))
            except Exception:  # the run is recorded; the next run or start asks again
                self._log.exception("retrying pending erasures failed", extra={
                    "event": "erase.retry_failed", "dataset": name})
            return outcome

    async def _run(self, dataset: DatasetConfig, trigger: str, on_stage: StageCallback | None,
                   on_progress: ProgressCallback | None) -> RunOutcome:
        name = dataset.name
        run_id = await self.state.start_run(name, trigger)
        started = time.perf_counter()
        self._log.info("run started", extra={"event": "run.start", "dataset": name,
                                             "trigger": trigger, "run": run_id})
        decided: list[Exclusions] = []

        async def exclude(keys: frozenset[str]) -> frozenset[str]:
            if on_stage is not None:
                on_stage("consent")
            found = await self._exclusions(dataset, keys)
            decided.append(found)
            return found.keys

        shared: list[Keys] = []  # the version's row keys in table row order
        plans: list[UploadPlan] = []

        def declare(columns: Iterable[npt.NDArray[np.int64]], names: Sequence[str],
                    rows: int) -> dict[str, Any] | None:
            shared.append(_digested(key, columns, names, rows))
            return lineage.declaration(sorted_keys(shared[0])) if comparable else None

        def plan() -> UploadPlan | None:
            if dataset.updates is not Updates.DELTA or not shared:
                return None
            plans.append(plan_upload(lineage, shared[0]))
            return plans[0]

        pseudonyms: list[Pseudonyms] = []  # the version's patients in table row order

        def on_patients(keys: Sequence[Any]) -> None:
            pseudonyms.append(patient_pseudonyms(key, keys))

        try:
            key = load_or_create_key(self.config.lineage_key_file)
            lineage, comparable = LineageState.from_bytes(
                await self.state.lineage(name)).made_with(key)
            if not comparable:
                self._log.warning(
                    "the lineage key changed: this version declares no difference to earlier "
                    "ones (the nodes will not difference them)",
                    extra={"event": "lineage.restart", "dataset": name, "run": run_id})
            # what a later incremental pull needs (a delta dataset on a FHIR REST source)
            incremental_later = dataset.updates is Updates.DELTA \
                and isinstance(dataset.source, FhirRestConfig)
            fingerprint = b"" if not isinstance(dataset.source, FhirRestConfig) else \
                mapping_fingerprint(dataset.mapping, dataset.source.searches)
            increment = None
            if dataset.updates is Updates.DELTA and is_subscription(trigger):
                try:
                    increment = await self._incremental(dataset, key, lineage, comparable,
                                                        fingerprint, on_stage, on_progress)
                except Fallback as exc:
                    self.metrics.incremental_fallbacks.labels(name, exc.reason.value).inc()
                    self._log.info("pulling everything: no incremental pull",
                                   extra={"event": "incremental.fallback", "dataset": name,
                                          "run": run_id, "reason": exc.reason.value,
                                          "error": str(exc)})
            if isinstance(increment, Unchanged):
                record = await self.state.finish_run(
                    run_id, RunStatus.UNCHANGED, stage_seconds=increment.stage_seconds,
                    watermarks={"source_time": increment.next_since})
                self._observe(record, time.perf_counter() - started)
                self._log.info("run unchanged: no patient changed", extra={
                    "event": "run.unchanged", "dataset": name, "run": run_id})
                return RunOutcome(record)
            after: LineageState | None
            if increment is not None:
                report, after, watermarks = increment
                self.metrics.incremental_runs.labels(name).inc()
            else:
                source = make_source(dataset.source, on_progress=on_progress)
                async with source:
                    report = await share_cohort(
                        source, dataset.mapping, self.uploader(), name, excluded=exclude,
                        declare=declare, plan=plan, on_stage=on_stage,
                        on_patients=on_patients if incremental_later else None)
                    watermarks = _watermarks(source)
                # the version's lineage, if it declared one (share_cohort calls declare
                # before it uploads; a version that declared none is never differenced)
                as_delta = report.delta_base is not None
                after = None if not shared else lineage.committed(
                    report.version_id, sorted_keys(shared[0]), None if not plans else
                    plans[0].positions(shared[0], lineage.order, as_delta=as_delta),
                    None if not plans or not pseudonyms else pseudonyms[0][
                        plans[0].table_rows(shared[0], lineage.order, as_delta=as_delta)],
                    fingerprint)
            excluded = decided[0] if decided else Exclusions(frozenset(), {})
            if report.delta_refused:
                self._log.warning("the nodes refused a delta version; it was sent in full",
                                  extra={"event": "delta.refused", "dataset": name,
                                         "run": run_id, "error": report.delta_refused})
            await self._erase_older(name, report.version_id)
        except asyncio.CancelledError:
            record = await asyncio.shield(self.state.finish_run(
                run_id, RunStatus.INTERRUPTED, error="the service stopped during the run"))
            self._observe(record, time.perf_counter() - started)
            raise
        except Exception as exc:
            record = await self.state.finish_run(run_id, RunStatus.FAILED,
                                                 error=_describe(exc)[:ERROR_CHARS])
            self._observe(record, time.perf_counter() - started)
            # an unexpected error is logged with its frames (the JSON formatter drops messages)
            self._log.warning("run failed", exc_info=None if isinstance(exc, DicError) else exc,
                              extra={"event": "run.failed", "dataset": name, "run": run_id,
                                     "error": type(exc).__name__})
            return RunOutcome(record, exc)
        record = await self.state.finish_run(
            run_id, RunStatus.SUCCEEDED, counts=_counts(report, excluded),
            version_id=report.version_id, stage_seconds=dict(report.stage_seconds),
            watermarks=watermarks,
            lineage=None if after is None else (after.to_bytes(), len(after.versions)))
        self._observe(record, time.perf_counter() - started, report)
        self._log.info("run succeeded", extra={
            "event": "run.succeeded", "dataset": name, "run": run_id,
            "version": str(report.version_id), "rows_shared": report.rows_shared,
            "rows_rejected": report.rows_rejected, "excluded": report.patients_excluded,
            "rows_sent": report.rows_sent,
            "delta_base": None if report.delta_base is None else str(report.delta_base)})
        return RunOutcome(record)

    async def _exclusions(self, dataset: DatasetConfig, keys: frozenset[str]) -> Exclusions:
        """Who of the cohort's ``keys`` the next version must not contain (consent, opt-out)."""
        policy = dataset.consent
        if not policy.excludes_anyone:
            return Exclusions(frozenset(), {})
        source = dataset.source
        client = None
        if isinstance(source, FhirRestConfig | BulkExportConfig):
            client = HttpClient(source.base_url, source.auth, source.http)
        try:
            return await exclusions(policy, client=client, at=self._clock(), patient_keys=keys)
        finally:
            if client is not None:
                await client.close()

    async def _incremental(self, dataset: DatasetConfig, key: bytes, lineage: LineageState,
                           comparable: bool, fingerprint: bytes,
                           on_stage: StageCallback | None,
                           on_progress: ProgressCallback | None
                           ) -> tuple[PipelineReport, LineageState, dict[str, str]] | Unchanged:
        """Pull only the patients changed since the newest version and share them as a
        delta on it (:mod:`.incremental`): the report, the lineage once committed and the
        watermarks; :class:`Unchanged` if no patient changed. :class:`Fallback` if this
        run must pull everything."""
        source = dataset.source
        if not isinstance(source, FhirRestConfig):
            raise Fallback(FallbackReason.SOURCE, f"a {dataset.source_kind} source")
        if dataset.consent.excludes_anyone:
            raise Fallback(FallbackReason.CONSENT, "consent or opt-out rules apply")
        since = (await self.state.watermarks(dataset.name)).get("source_time")
        base = lineage.order.shape[0]
        if not comparable or not since or not lineage.versions or base == 0 \
                or lineage.patients.shape[0] != base:
            raise Fallback(FallbackReason.BASE, "no committed version with patient "
                           "pseudonyms and a watermark")
        if lineage.mapping != fingerprint:
            raise Fallback(FallbackReason.MAPPING, "the mapping or searches changed")
        if on_stage is not None:
            on_stage("discover")
        discovering = time.perf_counter()
        client = HttpClient(source.base_url, source.auth, source.http)
        try:
            changes = await discover(client, list(dict.fromkeys(
                s.resource_type for s in source.searches)), since, max_changed(base))
        finally:
            await client.close()
        discovered = time.perf_counter() - discovering
        if not changes.patients:
            return Unchanged(changes.next_since, {"discover": discovered})
        changed = patient_pseudonyms(key, changes.patients)
        pulled: list[Pseudonyms] = []
        plans: list[IncrementalPlan] = []

        def on_patients(keys: Sequence[Any]) -> None:
            pulled.append(patient_pseudonyms(key, keys))

        def declare(columns: Iterable[npt.NDArray[np.int64]], names: Sequence[str],
                    rows: int) -> dict[str, Any] | None:
            pulled_keys = _digested(key, columns, names, rows)
            plans.append(plan_incremental(lineage, changed, pulled_keys[:, :2], pulled[0]))
            return lineage.declaration(sorted_keys(plans[0].row_keys))

        pull = make_source(restricted(source, changes.patients), on_progress=on_progress)
        try:
            async with pull:
                report = await share_cohort(pull, dataset.mapping, self.uploader(),
                                            dataset.name, declare=declare,
                                            plan=lambda: plans[0].upload, on_stage=on_stage,
                                            on_patients=on_patients, allow_empty=True)
        except DeltaRefused as exc:
            raise Fallback(FallbackReason.REFUSED, str(exc)) from exc
        except SourceError:  # the server's answer may echo the ids searched for: not logged
            raise Fallback(FallbackReason.SERVER, "the searches restricted to the changed "
                           "patients failed (the server's answer is not logged: it may "
                           "name them)") from None
        done = plans[0]
        after = lineage.committed(report.version_id, sorted_keys(done.row_keys), done.order,
                                  done.patients, fingerprint)
        report = dataclasses.replace(report, rows_shared=done.rows, stage_seconds={
            "discover": discovered, **report.stage_seconds})
        return report, after, {"source_time": changes.next_since}

    async def _erase_older(self, name: str, version: uuid.UUID) -> None:
        """Erase what the committed ``version`` supersedes on every node.

        The erasure is recorded as pending *before* the nodes are asked and cleared only once
        all three confirmed, so a process that dies while asking (or while a node is retried
        with backoff) leaves it to :meth:`retry_pending_erasures` at the next start.
        """
        await self.state.add_pending_erasure(name, version)
        try:
            await self.uploader().erase_older(version)
        except CoordinationError as exc:
            self._log.warning("older versions not yet erased everywhere", extra={
                "event": "erase.pending", "dataset": name, "version": str(version),
                "error": str(exc)})
        else:
            await self._settled(name, version)
        await self._count_pending()

    async def retry_pending_erasures(self, *, asked: tuple[str, uuid.UUID] | None = None
                                     ) -> int:
        """Ask the nodes again to erase superseded versions; how many are still pending.

        Per dataset only the newest pending version is asked for: erasing everything older
        than it covers the older entries, whose versions it may itself have erased on some
        node already (a node refuses to supersede with a version that is no longer
        committed, so asking for those would never succeed). ``asked`` (dataset, version)
        was asked for a moment ago and is skipped.
        """
        uploader = self.uploader()
        newest: dict[str, uuid.UUID] = {}
        for name, version in await self.state.pending_erasures():  # oldest first
            newest[name] = version
        for name, version in newest.items():
            if (name, version) == asked:
                continue
            try:
                await uploader.erase_older(version)
            except CoordinationError:
                continue
            await self._settled(name, version)
        return await self._count_pending()

    async def _settled(self, name: str, version: uuid.UUID) -> None:
        """Every node erased what ``version`` supersedes: forget its pending erasure and
        those of older versions of the dataset (recorded before it, so covered by it)."""
        pending = [v for n, v in await self.state.pending_erasures() if n == name]
        if version in pending:
            for older in pending[: pending.index(version) + 1]:
                await self.state.clear_pending_erasure(name, older)

    async def _count_pending(self) -> int:
        pending = len(await self.state.pending_erasures())
        self.metrics.pending_erasures.set(pending)
        return pending

    def _observe(self, record: RunRecord, seconds: float,
                 report: PipelineReport | None = None) -> None:
        m, name = self.metrics, record.dataset
        m.runs.labels(name, record.status.value).inc()
        m.duration.labels(name, record.status.value).observe(seconds)
        if report is None:
            return
        m.resources_read.labels(name).inc(report.resources_read)
        m.patients.labels(name).inc(report.patients)
        m.excluded.labels(name).inc(report.patients_excluded)
        m.shared.labels(name).inc(report.rows_shared)
        for (column, value_class, rule), n in report.rejected.items():
            m.rejected.labels(name, column, value_class, rule).inc(n)
        for node in self.config.nodes:
            m.share_bytes.labels(name, node.name).inc(report.bytes_per_node)
        m.last_success.labels(name).set(time.time())


def _digested(key: bytes, columns: Iterable[npt.NDArray[np.int64]], names: Sequence[str],
              rows: int) -> Keys:
    """The row keys (:class:`RowDigests`) of a table given as matrix columns, each a copy
    made for the digest: plaintext, wiped as soon as it is folded in."""
    digests = RowDigests(key, names, rows)
    for column in columns:
        digests.add(column)
        column.fill(0)
    return digests.row_keys()


@dataclass(frozen=True)
class Unchanged:
    """An incremental run that found no changed patient: no new version."""

    next_since: str
    stage_seconds: dict[str, float]


def is_subscription(trigger: str) -> bool:
    """Whether a run's trigger is a subscription's (a notification or a recovery)."""
    return trigger == "subscription" or trigger.startswith("subscription:")


def _watermarks(source: Source) -> dict[str, str]:
    since = getattr(source, "next_since", None)
    return {"source_time": since} if isinstance(since, str) else {}


def _counts(report: PipelineReport, excluded: Exclusions) -> RunCounts:
    rejected = {f"{column}/{value_class}/{rule}": n
                for (column, value_class, rule), n in sorted(report.rejected.items())}
    rejected |= {f"consent/{reason}/excluded": n for reason, n in sorted(excluded.counts.items())}
    return RunCounts(
        resources_read=report.resources_read, patients=report.patients,
        patients_excluded=report.patients_excluded, rows_rejected=report.rows_rejected,
        rows_shared=report.rows_shared, columns=report.columns,
        bytes_per_node=report.bytes_per_node, rejected=rejected)


def _describe(exc: BaseException) -> str:
    """``Kind: message`` of an error (our errors carry no values; others are named only)."""
    if isinstance(exc, DicError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__} (unexpected; see the service log)"


def counts_summary(counts: RunCounts) -> Mapping[str, int]:
    """The counts of a run as a flat mapping (for JSON answers and progress lines)."""
    return {"resources_read": counts.resources_read, "patients": counts.patients,
            "patients_excluded": counts.patients_excluded,
            "rows_rejected": counts.rows_rejected, "rows_shared": counts.rows_shared,
            "columns": counts.columns, "bytes_per_node": counts.bytes_per_node}
