"""The tables of the connector's state database, on a declarative base of their own.

:class:`StateBase` is not the node's ``Base``: the two schemas have separate metadata and
separate Alembic histories, and every table here is prefixed ``connector_`` so that both fit
in one PostgreSQL database. Columns hold counts, names, times and version ids; a run's
``error`` is the project's value-free error text, cut to :data:`ERROR_LENGTH`; a dataset's
lineage holds keyed digests of its shared rows (useless without the key, which is not here).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dic_connector.connector.state.records import RunStatus
from dic_connector.database.columns import NAMING_CONVENTION, EnumText, UTCDateTime, utcnow

NAME_LENGTH = 200
TRIGGER_LENGTH = 32
WATERMARK_KEY_LENGTH = 100
WATERMARK_VALUE_LENGTH = 100
ERROR_LENGTH = 1000
SUBSCRIPTION_LENGTH = 64


class StateBase(DeclarativeBase):
    """Declarative base of every table of the connector's state database."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _count() -> Mapped[int]:
    return mapped_column(BigInteger, default=0)


class Run(StateBase):
    """One run of one dataset: when, why, how it ended, and what it counted."""

    __tablename__ = "connector_runs"
    __table_args__ = (Index(None, "dataset", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(String(NAME_LENGTH))
    trigger: Mapped[str] = mapped_column(String(TRIGGER_LENGTH))
    status: Mapped[RunStatus] = mapped_column(EnumText(RunStatus, 16), index=True)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    resources_read: Mapped[int] = _count()
    patients: Mapped[int] = _count()
    patients_excluded: Mapped[int] = _count()
    rows_rejected: Mapped[int] = _count()
    rows_shared: Mapped[int] = _count()
    columns: Mapped[int] = _count()
    bytes_per_node: Mapped[int] = _count()
    rejected: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    stage_seconds: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    version_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))


class Watermark(StateBase):
    """Where the next incremental read of a dataset's source resumes, per key."""

    __tablename__ = "connector_watermarks"

    dataset: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    key: Mapped[str] = mapped_column(String(WATERMARK_KEY_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(String(WATERMARK_VALUE_LENGTH))
    run_id: Mapped[int] = mapped_column(ForeignKey("connector_runs.id"), index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PendingErasure(StateBase):
    """A superseded version of a dataset whose shares some node has not yet erased."""

    __tablename__ = "connector_pending_erasures"

    dataset: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    version_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Lineage(StateBase):
    """A dataset's row-digest lineage (:class:`~dic_connector.connector.lineage.LineageState`
    as one blob): keyed digests of the rows it shared, never a value."""

    __tablename__ = "connector_lineage"

    dataset: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    #: how many committed versions it knows (for status pages; the blob is authoritative)
    versions: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[int] = mapped_column(ForeignKey("connector_runs.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SubscriptionEvents(StateBase):
    """What the connector has seen of one FHIR Subscription's numbered events (Backport IG
    ``events-since-subscription-start``): the highest number, and the numbers below it not
    yet received (a later arrival is late, not new). Numbers only; never a resource."""

    __tablename__ = "connector_subscription_events"

    dataset: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    #: the Subscription's logical id on the FHIR server
    subscription: Mapped[str] = mapped_column(String(SUBSCRIPTION_LENGTH), primary_key=True)
    highest: Mapped[int] = mapped_column(BigInteger)
    missing: Mapped[list[int]] = mapped_column(JSON, default=list)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
