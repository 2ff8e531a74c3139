"""Sites, datasets, dataset versions and their encrypted share blobs.

A dataset's id is the same on all three nodes: :func:`dataset_uuid` derives it (UUID
version 5, RFC 9562) from the site and the dataset name under the fixed project namespace
:data:`DATASET_NAMESPACE`, so an analysis request naming dataset ids means the same data on
every node it is forwarded to. A deleted dataset stays as a tombstone row (``deleted_at``
set) under that id; creating it again revives the row: same id, ``deleted_at`` cleared, and
version numbers continue after the erased ones, which stay erased.

A dataset version moves through a small state machine (``enums.VersionState``)::

    receiving --prepare()--> prepared --commit()--> committed
        │                        │                        │
        └────────────────────────┴────────────────────────┴──> deleted

``commit()`` also takes a receiving version with every column stored (a connector that
skips the vote); ``delete()`` and ``erase_older()`` erase from any state,
``cleanup_stale_receiving()`` from ``receiving`` only.

- Blobs are added only while ``receiving`` (re-sending a column replaces it, so an upload can
  be retried). ``commit`` requires every manifest column and is idempotent, so the
  coordinator of the three-node two-phase commit may retry it.
- ``prepare`` is this node's vote in phase one (Gray 1978; Bernstein, Hadzilacos, Goodman,
  "Concurrency Control and Recovery in Database Systems", 1987, ch. 7): with every column
  stored, the version becomes ``prepared`` with ``prepared_at`` set, and is frozen (no blob
  added or replaced). A node that voted ready must wait for the outcome, so
  :meth:`DatasetVersionRepository.cleanup_stale_receiving` never erases a prepared version;
  only the connector's commit or abort, or the outcome learnt from the peers
  (:mod:`dic_connector.node.coordination.recovery`), moves it on.
  :meth:`DatasetVersionRepository.in_doubt` lists them.
- Nothing reads a ``receiving`` or ``prepared`` version:
  :meth:`DatasetVersionRepository.latest_committed`,
  :meth:`DatasetVersionRepository.committed` and :meth:`DatasetVersionRepository.read_blob`
  see committed versions only. A version
  abandoned mid-upload (a node or the connector crashed) is therefore never visible, and
  :meth:`DatasetVersionRepository.cleanup_stale_receiving` erases it later.
- ``delete`` removes the blob rows *and* destroys the wrapped version key (crypto-shredding,
  see :mod:`dic_connector.trust.keyring`); the version row stays as a tombstone so that the
  audit log and retries keep referring to a known id.
- A new version *supersedes* the older ones: once it is committed on all three nodes the
  connector asks each node to erase every version of the dataset with a smaller number
  (:meth:`DatasetVersionRepository.erase_older`), committed, prepared or still receiving, so
  that data a patient withdrew consent for does not outlive the version that left it out.

Mutating methods lock the version row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite
serialises writers anyway), so a blob cannot slip in while another transaction commits or
deletes the version. Repositories never commit: the caller's transaction does.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dic_connector.errors import ConflictError, NotFoundError
from dic_connector.node.store.base import utcnow
from dic_connector.node.store.conflicts import insert
from dic_connector.node.store.delta import PAIR_BYTES, compose, delta_section, keep_positions
from dic_connector.node.store.enums import VersionState
from dic_connector.node.store.models import Dataset, DatasetVersion, ShareBlob, Site
from dic_connector.trust.dataset_ids import dataset_uuid
from dic_connector.trust.keyring import NodeKeyring, SealedBlob, WrappedKey


def manifest_columns(manifest: dict[str, Any]) -> list[str]:
    """Column names of a manifest ``{"columns": [{"name": ...}, ...]}``, validated."""
    columns = manifest.get("columns")
    if not isinstance(columns, list) or not columns:
        raise ConflictError("dataset manifest: 'columns' must be a non-empty list")
    names: list[str] = []
    for i, column in enumerate(columns):
        name = column.get("name") if isinstance(column, dict) else None
        if not isinstance(name, str) or not name:
            raise ConflictError(f"dataset manifest: columns[{i}].name must be a non-empty string")
        if name in names:
            raise ConflictError(f"dataset manifest: column '{name}' is declared twice")
        names.append(name)
    return names


class SiteRepository:
    """Hospital sites, keyed by their configured slug."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, site_id: str, name: str) -> Site:
        site = Site(id=site_id, name=name)
        await insert(self._session, f"site '{site_id}'", site)
        return site

    async def get(self, site_id: str) -> Site:
        site = await self._session.get(Site, site_id)
        if site is None:
            raise NotFoundError(f"site '{site_id}' not found")
        return site

    async def all(self) -> list[Site]:
        return list(await self._session.scalars(select(Site).order_by(Site.id)))


class DatasetRepository:
    """Named datasets of a site (the content lives in versions)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(self, site_id: str, name: str) -> Dataset:
        """Dataset ``name`` of ``site_id`` under its :func:`dataset_uuid`; ConflictError if it exists.

        A deleted dataset of that site and name (a tombstone) is revived instead: the row
        keeps its id, ``deleted_at`` is cleared, its erased versions stay erased. Auditing is
        the caller's job. (A tombstone from before ids were derived keeps its random id.)
        """
        what = f"dataset '{name}' of site '{site_id}'"
        existing = await self._session.scalar(  # locked: a concurrent delete or revival waits
            select(Dataset).where(Dataset.site_id == site_id, Dataset.name == name)
            .with_for_update().execution_options(populate_existing=True)
        )
        if existing is not None:
            if existing.deleted_at is None:
                raise ConflictError(f"{what} already exists")
            existing.deleted_at = None
            await self._session.flush()
            return existing
        dataset = Dataset(id=dataset_uuid(site_id, name), site_id=site_id, name=name)
        await insert(self._session, what, dataset)
        return dataset

    async def get(self, dataset_id: uuid.UUID) -> Dataset:
        dataset = await self._session.get(Dataset, dataset_id)
        if dataset is None or dataset.deleted_at is not None:
            raise NotFoundError(f"dataset {dataset_id} not found")
        return dataset

    async def find(self, dataset_id: uuid.UUID, *, lock: bool = False) -> Dataset | None:
        """The dataset row, a deleted one (tombstone) included; None if this node has none.

        ``lock`` takes the row lock that :meth:`DatasetVersionRepository.delete_dataset` and
        version creation take, so what the caller checks still holds when it acts.
        """
        query = select(Dataset).where(Dataset.id == dataset_id)
        if lock:
            query = query.with_for_update().execution_options(populate_existing=True)
        return await self._session.scalar(query)

    async def by_name(self, site_id: str, name: str, *,
                      include_deleted: bool = False) -> Dataset | None:
        """The site's dataset of that name; a deleted one only with ``include_deleted``."""
        query = select(Dataset).where(Dataset.site_id == site_id, Dataset.name == name)
        if not include_deleted:
            query = query.where(Dataset.deleted_at.is_(None))
        return await self._session.scalar(query)

    async def all(self, site_id: str | None = None) -> list[Dataset]:
        query = select(Dataset).where(Dataset.deleted_at.is_(None))
        if site_id is not None:
            query = query.where(Dataset.site_id == site_id)
        return list(await self._session.scalars(query.order_by(Dataset.site_id, Dataset.name)))


class DatasetVersionRepository:
    """Dataset versions and their share blobs on this node, encrypted with ``keyring``."""

    def __init__(self, session: AsyncSession, keyring: NodeKeyring) -> None:
        self._session = session
        self._keyring = keyring

    async def create(self, dataset_id: uuid.UUID, manifest: dict[str, Any], row_count: int,
                     version_id: uuid.UUID | None = None) -> DatasetVersion:
        """A new ``receiving`` version; ``version_id`` is shared by all three nodes."""
        manifest_columns(manifest)
        if row_count < 0:
            raise ConflictError("dataset version: row_count must be >= 0")
        dataset = await self._session.scalar(  # the row lock serialises version numbering
            select(Dataset).where(Dataset.id == dataset_id).with_for_update()
            .execution_options(populate_existing=True)
        )
        if dataset is None or dataset.deleted_at is not None:
            raise NotFoundError(f"dataset {dataset_id} not found")
        version_id = version_id or uuid.uuid4()
        if await self._session.get(DatasetVersion, version_id) is not None:
            raise ConflictError(f"dataset version {version_id} already exists")
        number = (await self._session.scalar(
            select(func.max(DatasetVersion.number)).where(DatasetVersion.dataset_id == dataset_id)
        ) or 0) + 1
        _, wrapped = self._keyring.new_version_key(version_id)
        version = DatasetVersion(
            id=version_id, dataset_id=dataset_id, number=number, state=VersionState.RECEIVING,
            manifest=manifest, row_count=row_count, key_id=wrapped.key_id,
            wrapped_key=wrapped.blob,
        )
        await insert(self._session, f"dataset version {version_id}", version)
        return version

    async def get(self, version_id: uuid.UUID) -> DatasetVersion:
        version = await self._session.get(DatasetVersion, version_id)
        if version is None:
            raise NotFoundError(f"dataset version {version_id} not found")
        return version

    async def locked(self, version_id: uuid.UUID) -> DatasetVersion:
        """The version, its row locked until the caller's transaction ends (a decision on
        its state, e.g. a recovery's, holds when it acts)."""
        return await self._locked(version_id)

    async def _locked(self, version_id: uuid.UUID) -> DatasetVersion:
        version = await self._session.scalar(
            select(DatasetVersion).where(DatasetVersion.id == version_id)
            .with_for_update().execution_options(populate_existing=True)
        )
        if version is None:
            raise NotFoundError(f"dataset version {version_id} not found")
        return version

    def _version_key(self, version: DatasetVersion) -> bytes:
        if version.key_id is None or version.wrapped_key is None:
            raise ConflictError(f"dataset version {version.id} has no key (it was deleted)")
        return self._keyring.unwrap(WrappedKey(version.key_id, version.wrapped_key), version.id)

    async def add_blob(self, version_id: uuid.UUID, column: str, data: bytes) -> None:
        """Store this node's shares of ``column``, sealed; only while ``receiving``."""
        version = await self._receiving(version_id)
        self._check_column(version, column)
        await self._store_blob(version, self._version_key(version), column, data)
        await self._session.flush()

    async def _receiving(self, version_id: uuid.UUID) -> DatasetVersion:
        version = await self._locked(version_id)
        if version.state is not VersionState.RECEIVING:
            raise ConflictError(
                f"dataset version {version_id} is {version.state.value}; "
                "blobs can be added only while it is receiving"
            )
        return version

    @staticmethod
    def _check_column(version: DatasetVersion, column: str) -> None:
        if column not in manifest_columns(version.manifest):
            raise ConflictError(f"dataset version {version.id} has no column '{column}'")

    async def _store_blob(self, version: DatasetVersion, key: bytes, column: str,
                          data: bytes) -> None:
        sealed = self._keyring.seal(key, version.id, column, data)
        await self._session.execute(
            delete(ShareBlob).where(ShareBlob.version_id == version.id,
                                    ShareBlob.column == column)
        )
        self._session.add(ShareBlob(version_id=version.id, column=column, nonce=sealed.nonce,
                                    ciphertext=sealed.ciphertext))

    async def add_delta_blobs(self, version_id: uuid.UUID,
                              columns: Sequence[tuple[str, bytes]]) -> None:
        """Store columns of a delta version (:mod:`.delta`), each given as ``(name, fresh)``:
        this node's pair of the base's kept rows followed by ``fresh``, the fresh rows'
        pair; only while ``receiving``, and only while the base is committed here
        (NotFoundError if it was erased meanwhile: the upload then fails and is aborted).
        The version and its base are looked up once for all ``columns``."""
        version = await self._receiving(version_id)
        section = delta_section(version.manifest)
        if section is None:
            raise ConflictError(f"dataset version {version_id} is not a delta version")
        base = await self.committed(uuid.UUID(section["base"]))
        keep = keep_positions(section["keep"], base.row_count)
        base_key, key = self._version_key(base), self._version_key(version)
        for column, fresh in columns:
            self._check_column(version, column)
            blob = await self._session.get(ShareBlob, (base.id, column))
            if blob is None:
                raise NotFoundError(f"dataset version {base.id} has no column '{column}'")
            kept = self._keyring.open(base_key, base.id, column,
                                      SealedBlob(blob.nonce, blob.ciphertext))
            composed = compose(kept, base.row_count, keep, fresh)
            if len(composed) != PAIR_BYTES * version.row_count:
                raise ConflictError(
                    f"dataset version {version_id}: column '{column}' composes "
                    f"{len(composed) // PAIR_BYTES} rows, not {version.row_count}")
            await self._store_blob(version, key, column, composed)
        await self._session.flush()

    async def stored_columns(self, version_id: uuid.UUID) -> list[str]:
        return list(await self._session.scalars(
            select(ShareBlob.column).where(ShareBlob.version_id == version_id)
            .order_by(ShareBlob.column)
        ))

    async def missing_columns(self, version_id: uuid.UUID) -> list[str]:
        """Manifest columns without a blob yet (the two-phase-commit "prepare" check)."""
        version = await self.get(version_id)
        stored = set(await self.stored_columns(version_id))
        return [c for c in manifest_columns(version.manifest) if c not in stored]

    async def prepare(self, version_id: uuid.UUID, now: dt.datetime | None = None
                      ) -> DatasetVersion:
        """Vote ready: ``receiving`` -> ``prepared`` (``prepared_at`` = ``now``) once every
        column is stored. Idempotent: a prepared or committed version is returned as it is
        (a retried vote keeps the first vote's time). ConflictError for a deleted version or
        one with columns missing."""
        version = await self._locked(version_id)
        if version.state in (VersionState.PREPARED, VersionState.COMMITTED):
            return version
        await self._check_complete(version, "is not ready", "prepared")
        version.state = VersionState.PREPARED
        version.prepared_at = now or utcnow()
        await self._session.flush()
        return version

    async def _check_complete(self, version: DatasetVersion, incomplete: str,
                              step: str) -> None:
        """ConflictError unless ``version`` is live and has every column's shares (the
        condition of both the vote and the commit)."""
        if version.state is VersionState.DELETED:
            raise ConflictError(f"dataset version {version.id} is deleted and cannot be {step}")
        missing = await self.missing_columns(version.id)
        if missing:
            raise ConflictError(f"dataset version {version.id} {incomplete}: columns without "
                                "shares: " + ", ".join(missing))

    async def in_doubt(self) -> list[DatasetVersion]:
        """Versions this node voted ready on whose outcome it has not learnt (``prepared``),
        oldest vote first."""
        return list(await self._session.scalars(
            select(DatasetVersion).where(DatasetVersion.state == VersionState.PREPARED)
            .order_by(DatasetVersion.prepared_at, DatasetVersion.id)
        ))

    async def commit(self, version_id: uuid.UUID) -> DatasetVersion:
        """``receiving`` or ``prepared`` -> ``committed`` once every column is stored;
        idempotent."""
        version = await self._locked(version_id)
        if version.state is VersionState.COMMITTED:
            return version
        await self._check_complete(version, "cannot be committed", "committed")
        version.state = VersionState.COMMITTED
        version.committed_at = utcnow()
        await self._session.flush()
        return version

    async def latest_committed(self, dataset_id: uuid.UUID) -> DatasetVersion | None:
        """The newest committed version; receiving and deleted versions are never returned."""
        return await self._session.scalar(
            select(DatasetVersion)
            .where(DatasetVersion.dataset_id == dataset_id,
                   DatasetVersion.state == VersionState.COMMITTED)
            .order_by(DatasetVersion.number.desc()).limit(1)
        )

    async def all(self, dataset_id: uuid.UUID) -> list[DatasetVersion]:
        return list(await self._session.scalars(
            select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id)
            .order_by(DatasetVersion.number)
        ))

    async def committed(self, version_id: uuid.UUID) -> DatasetVersion:
        """The version if it is committed; NotFoundError if it is receiving or deleted.

        What a computation reads a version through: a deleted version's row keeps its row
        count and manifest, and an analysis that reads no column (a count) must not be
        computed on it either.
        """
        version = await self.get(version_id)
        if version.state is not VersionState.COMMITTED:
            raise NotFoundError(f"dataset version {version_id} is not committed")
        return version

    async def read_blob(self, version_id: uuid.UUID, column: str) -> bytes:
        """This node's decrypted shares of ``column``; committed versions only."""
        version = await self.committed(version_id)
        blob = await self._session.get(ShareBlob, (version_id, column))
        if blob is None:
            raise NotFoundError(f"dataset version {version_id} has no column '{column}'")
        return self._keyring.open(self._version_key(version), version_id, column,
                                  SealedBlob(blob.nonce, blob.ciphertext))

    async def delete(self, version_id: uuid.UUID) -> DatasetVersion:
        """Erase the blobs and the version key; the version becomes a ``deleted`` tombstone."""
        return await self._erase(await self._locked(version_id))

    async def _erase(self, version: DatasetVersion) -> DatasetVersion:
        await self._session.execute(
            delete(ShareBlob).where(ShareBlob.version_id == version.id)
            .execution_options(synchronize_session=False)
        )
        if version.state is not VersionState.DELETED:
            version.state = VersionState.DELETED
            version.deleted_at = utcnow()
        version.key_id = None
        version.wrapped_key = None
        await self._session.flush()
        return version

    async def delete_dataset(self, dataset_id: uuid.UUID) -> list[uuid.UUID]:
        """Erase every version of a dataset and mark the dataset deleted; the erased ids.

        Idempotent: on a deleted dataset it erases nothing and returns ``[]``. The dataset row
        is locked first, as :meth:`create` (of a version) locks it, so no version can be
        added meanwhile.
        """
        dataset = await self._session.scalar(
            select(Dataset).where(Dataset.id == dataset_id)
            .with_for_update().execution_options(populate_existing=True)
        )
        if dataset is None:
            raise NotFoundError(f"dataset {dataset_id} not found")
        erased = []
        for version in await self.all(dataset_id):
            if version.state is not VersionState.DELETED:
                erased.append((await self.delete(version.id)).id)
        if dataset.deleted_at is None:
            dataset.deleted_at = utcnow()
        await self._session.flush()
        return erased

    async def erase_older(self, version_id: uuid.UUID) -> list[uuid.UUID]:
        """Erase every version of ``version_id``'s dataset older than it; the erased ids.

        "Older" is a smaller version number; committed, prepared and (stale) receiving
        versions alike are erased as :meth:`delete` erases, newer ones are kept. ``version_id`` must itself
        be committed (ConflictError otherwise): a dataset is never left without the version
        that supersedes the erased ones. The dataset row is locked first, as
        :meth:`delete_dataset` and :meth:`create` lock it, so no version is numbered or the
        dataset deleted meanwhile. Idempotent: a second call erases nothing and returns
        ``[]``.
        """
        dataset_id = (await self.get(version_id)).dataset_id
        await self._session.scalar(
            select(Dataset).where(Dataset.id == dataset_id)
            .with_for_update().execution_options(populate_existing=True)
        )
        version = await self._locked(version_id)
        if version.state is not VersionState.COMMITTED:
            raise ConflictError(f"dataset version {version_id} is {version.state.value}; only a "
                                "committed version supersedes older ones")
        older = list(await self._session.scalars(
            select(DatasetVersion.id)
            .where(DatasetVersion.dataset_id == dataset_id,
                   DatasetVersion.number < version.number,
                   DatasetVersion.state != VersionState.DELETED)
            .order_by(DatasetVersion.number)
        ))
        return [(await self.delete(older_id)).id for older_id in older]

    async def cleanup_stale_receiving(self, older_than: dt.timedelta,
                                      now: dt.datetime | None = None) -> list[uuid.UUID]:
        """Erase versions still ``receiving`` that were created before ``now - older_than``.

        Only versions that never voted: a ``prepared`` one waits for its outcome however
        old it is (its commit may have reached the other nodes)."""
        cutoff = (now or utcnow()) - older_than
        stale = list(await self._session.scalars(
            select(DatasetVersion.id).where(DatasetVersion.state == VersionState.RECEIVING,
                                            DatasetVersion.created_at < cutoff)
        ))
        erased = []
        for version_id in stale:
            version = await self._locked(version_id)
            if version.state is VersionState.RECEIVING:  # it may have voted meanwhile
                erased.append((await self._erase(version)).id)
        return erased

    async def rotate_keys(self) -> int:
        """Rewrap every live version key under the keyring's active key; the number rewrapped."""
        versions = await self._session.scalars(
            select(DatasetVersion).where(DatasetVersion.state != VersionState.DELETED,
                                         DatasetVersion.key_id != self._keyring.active_key_id)
        )
        count = 0
        for version in versions:
            wrapped = self._keyring.wrap(self._version_key(version), version.id)
            version.key_id, version.wrapped_key = wrapped.key_id, wrapped.blob
            count += 1
        await self._session.flush()
        return count
