"""How a new version of a dataset differs from every earlier one, counted without keeping rows.

The nodes refuse to release a statistic on a version when the same statistic was released
on an earlier version of the dataset that differs from it in 1 to m - 1 rows
(:mod:`dic_connector.node.analyses.lineage`): otherwise the difference of the two releases
is those few rows, e.g. the patient who withdrew consent. The nodes hold only shares, so
the connector, which has the rows, declares the differences in each new version's
manifest::

    "lineage": {"previous": [{"version_id": "<earlier version>", "removed": r, "added": a}]}

``removed`` counts the rows of the earlier version that the new one does not hold,
``added`` the rows of the new one the earlier one did not hold, as multisets of whole
encoded rows (exactly what is shared): a patient whose values changed counts on both sides,
a re-pull without changes declares 0 and 0.

The connector keeps no row to compare with. It keeps a **row digest** per shared row, a
16-byte MAC of the encoded row under a key derived from the lineage key and the table's
column names (:class:`RowDigests`), with an ordinal among equal rows; and for every digest the runs of
versions during which it was present (``born`` .. ``died``, as sequence numbers of the
dataset's committed versions). From those intervals the number of rows only in version u
and only in the new version follows for every earlier u at once (a sweep over the
intervals), however many versions ago u was. The key (:func:`load_or_create_key`, a file
readable by the connector only) never leaves the connector: without it a digest cannot be
tested against guessed values, and it is not kept in the state database that stores the
digests.

A :class:`LineageState` is loaded from and saved to the connector's state database as one
blob per dataset (NumPy ``.npz`` without pickles) in the transaction that records the run,
so a version that committed but was never recorded (the connector died between the two) is
one nobody declared differences to: the nodes then refuse to difference it, the safe side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dic_connector.errors import ConfigError, StoreError

#: Bytes of the lineage key and of a row digest.
KEY_BYTES, DIGEST_BYTES = 32, 16
#: Marks "still present" in :attr:`LineageState.died`.
ALIVE = -1

Keys = npt.NDArray[np.uint64]  # shape (n, 3): digest (two words), ordinal among equal rows
Pseudonyms = npt.NDArray[np.uint64]  # shape (n, 2): a keyed pseudonym of a patient key


def load_or_create_key(path: Path) -> bytes:
    """The lineage key at ``path``; a new random one (file mode 0600) if there is none."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(KEY_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key)
        return key
    except OSError as exc:
        raise ConfigError(f"lineage key {path}: cannot be read ({type(exc).__name__})") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"lineage key {path}: holds {len(key)} bytes; expected {KEY_BYTES}")
    return key


def fingerprint(key: bytes) -> bytes:
    """What the stored lineage remembers of its key: a keyed digest of a constant."""
    return hashlib.blake2b(b"dic-connector lineage key", key=key, digest_size=16).digest()


class RowDigests:
    """Keyed digests of the rows of a table given column by column (bounded memory).

    The digest of a row is AES-256 CBC-MAC over its values, one block per column (the
    value as little-endian int64, then the column's position): a PRF for messages of one
    fixed length (Bellare, Kilian, Rogaway, "The security of the cipher block chaining
    message authentication code", JCSS 2000), which they are, since the MAC key is derived
    from the lineage key *and* the table's column names (another table layout, another
    key). Vectorised: one AES-ECB call per column over every row's running state, so a
    column costs one pass over 16 bytes per row and no per-row Python. Written here
    because no library offers a batched row MAC; the primitive is ``cryptography``'s AES.
    """

    def __init__(self, key: bytes, columns: Sequence[str], rows: int) -> None:
        mac_key = hashlib.blake2b("\x1f".join(columns).encode(), key=key,
                                  digest_size=32, person=b"dic-row-mac").digest()
        self._cipher = Cipher(algorithms.AES(mac_key), modes.ECB())
        self._columns = len(columns)
        self._rows = rows
        self._added = 0
        self._state = np.zeros((rows, 2), dtype="<u8")

    def add(self, values: npt.NDArray[np.int64]) -> None:
        """Fold the next column (one value per row, in row order) into every row's digest."""
        if self._added >= self._columns:
            raise ValueError(f"all {self._columns} columns have been added")
        column = np.asarray(values).astype("<i8", copy=False)
        if column.shape != (self._rows,):
            raise ValueError(f"a column of shape {column.shape} for {self._rows} rows")
        self._state[:, 0] ^= column.view("<u8")
        self._state[:, 1] ^= np.uint64(self._added)
        encryptor = self._cipher.encryptor()
        out = encryptor.update(self._state.tobytes()) + encryptor.finalize()
        self._state = np.frombuffer(out, dtype="<u8").reshape(self._rows, 2).copy()
        self._added += 1

    def keys(self) -> Keys:
        """Every row's digest and ordinal among equal rows, shape (rows, 3), sorted."""
        return sorted_keys(self.row_keys())

    def row_keys(self) -> Keys:
        """Every row's digest and ordinal among equal rows, shape (rows, 3), in row order:
        the k-th of several equal rows (in row order) has ordinal k, so each key is unique
        and a multiset of rows is a set of keys (:mod:`.delta` matches rows by them)."""
        if self._added != self._columns:
            raise ValueError(f"{self._added} of {self._columns} columns were added")
        return with_ordinals(self._state.astype(np.uint64))


def with_ordinals(digests: npt.NDArray[np.uint64]) -> Keys:
    """Row keys of rows with these digests (shape (rows, 2), in row order): each digest
    with its ordinal among the equal ones before it (:meth:`RowDigests.row_keys`)."""
    digests = np.asarray(digests, dtype=np.uint64).reshape(-1, 2)
    rows = digests.shape[0]
    order = np.lexsort((digests[:, 1], digests[:, 0]))  # stable: equal rows in row order
    ordered = digests[order]
    ordinal = np.zeros(rows, dtype=np.uint64)
    if rows > 1:
        same = np.all(ordered[1:] == ordered[:-1], axis=1)
        # ordinal = position within its run of equal digests
        starts = np.flatnonzero(np.concatenate([[True], ~same]))
        run = np.repeat(starts, np.diff(np.concatenate([starts, [rows]])))
        ordinal[order] = (np.arange(rows) - run).astype(np.uint64)
    return np.column_stack([digests, ordinal]).astype(np.uint64)


def sorted_keys(keys: Keys) -> Keys:
    """``keys`` in the order :meth:`RowDigests.keys` gives them (digest, then ordinal)."""
    keys = np.asarray(keys, dtype=np.uint64).reshape(-1, 3)
    if keys.shape[0]:
        keys = keys[np.lexsort((keys[:, 2], keys[:, 1], keys[:, 0]))]
    return keys


def row_keys(key: bytes, values: npt.NDArray[np.int64], columns: Sequence[str]) -> Keys:
    """:class:`RowDigests` of an encoded matrix (``values[:, j]`` is column ``columns[j]``)."""
    digests = RowDigests(key, columns, values.shape[0])
    for j in range(values.shape[1]):
        digests.add(values[:, j])
    return digests.keys()


def as_void(rows: npt.NDArray[np.uint64]) -> npt.NDArray[Any]:
    """Each row of words (row keys, pseudonyms) as one opaque value, to compare rows whole
    (``np.isin``, ``np.unique``)."""
    rows = np.ascontiguousarray(rows, dtype=np.uint64)
    width = rows.shape[-1] if rows.ndim == 2 else 3
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * width))).ravel()


@dataclass(frozen=True)
class Difference:
    """Rows only in the earlier version ``version_id``, and only in the new one."""

    version_id: uuid.UUID
    removed: int
    added: int

    def as_json(self) -> dict[str, Any]:
        return {"version_id": str(self.version_id), "removed": self.removed,
                "added": self.added}


@dataclass(frozen=True, eq=False)
class LineageState:
    """One dataset's committed versions (in order) and its row keys' presence intervals."""

    versions: tuple[uuid.UUID, ...] = ()
    #: :func:`fingerprint` of the key the digests were made with (empty: no version yet)
    key_fingerprint: bytes = b""
    keys: Keys = field(default_factory=lambda: np.zeros((0, 3), dtype=np.uint64))
    born: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    died: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    #: the newest version's row keys by row position (what :mod:`.delta` keeps rows of);
    #: empty when unknown (a state saved before delta versions, or a version whose order
    #: was not recorded), which makes the next version a full one
    order: Keys = field(default_factory=lambda: np.zeros((0, 3), dtype=np.uint64))
    #: the newest version's patient pseudonyms by row position, aligned with :attr:`order`
    #: (:mod:`.incremental`; kept for ``updates: delta`` datasets of a FHIR REST source only,
    #: empty otherwise)
    patients: Pseudonyms = field(default_factory=lambda: np.zeros((0, 2), dtype=np.uint64))
    #: :func:`~.incremental.mapping_fingerprint` of the mapping and searches the newest
    #: version was pulled with (empty: unknown)
    mapping: bytes = b""

    # -- storage -----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        np.savez(out, versions=np.array([str(v) for v in self.versions], dtype="<U36"),
                 fingerprint=np.frombuffer(self.key_fingerprint, dtype=np.uint8),
                 keys=self.keys, born=self.born, died=self.died, order=self.order,
                 patients=self.patients, mapping=np.frombuffer(self.mapping, dtype=np.uint8))
        return out.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes | None) -> LineageState:
        if not blob:
            return cls()
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as data:
                state = cls(tuple(uuid.UUID(str(v)) for v in data["versions"]),
                            data["fingerprint"].astype(np.uint8).tobytes(),
                            data["keys"].astype(np.uint64), data["born"].astype(np.int32),
                            data["died"].astype(np.int32),
                            data["order"].astype(np.uint64).reshape(-1, 3)
                            if "order" in data.files else np.zeros((0, 3), dtype=np.uint64),
                            data["patients"].astype(np.uint64).reshape(-1, 2)
                            if "patients" in data.files else np.zeros((0, 2), dtype=np.uint64),
                            data["mapping"].astype(np.uint8).tobytes()
                            if "mapping" in data.files else b"")
        except (ValueError, KeyError, OSError) as exc:
            raise StoreError(f"the stored lineage cannot be read ({type(exc).__name__})"
                             ) from None
        n = state.keys.shape[0]
        if state.keys.shape != (n, 3) or state.born.shape != (n,) or state.died.shape != (n,):
            raise StoreError("the stored lineage has arrays of different lengths")
        return state

    def made_with(self, key: bytes) -> tuple[LineageState, bool]:
        """This state for digests made with ``key``, and whether it can be compared with.

        A lost or replaced key makes every stored digest unmatchable: compared with them,
        each new row would look new, and the declared differences would be as large as the
        versions, which would let the nodes release on versions that differ in one row.
        So for another key this returns an empty state and False: the caller declares
        nothing for the next version (the nodes then refuse to difference it with any
        earlier one) and the lineage starts again from it.
        """
        mark = fingerprint(key)
        if self.key_fingerprint == mark:
            return self, True
        if not self.key_fingerprint and not self.versions:
            return dataclasses.replace(self, key_fingerprint=mark), True
        return LineageState(key_fingerprint=mark), False

    # -- what a new version declares and what it leaves behind ----------------------------

    def differences(self, new: Keys) -> list[Difference]:
        """How a version holding the rows ``new`` differs from each earlier version."""
        seq = len(self.versions)  # the new version's sequence number
        if seq == 0:
            return []
        present = np.isin(as_void(self.keys), as_void(new)) if new.shape[0] else \
            np.zeros(self.keys.shape[0], dtype=np.bool_)
        end = np.where(self.died == ALIVE, seq, self.died)
        alive = np.zeros(seq + 1, dtype=np.int64)
        kept = np.zeros(seq + 1, dtype=np.int64)
        np.add.at(alive, self.born, 1)
        np.add.at(alive, end, -1)
        np.add.at(kept, self.born[present], 1)
        np.add.at(kept, end[present], -1)
        alive, kept = np.cumsum(alive)[:seq], np.cumsum(kept)[:seq]
        return [Difference(version, int(alive[u] - kept[u]), int(new.shape[0] - kept[u]))
                for u, version in enumerate(self.versions)]

    def declaration(self, new: Keys) -> dict[str, Any]:
        """The manifest's ``lineage`` section for a version holding ``new``."""
        return {"previous": [d.as_json() for d in self.differences(new)]}

    def committed(self, version_id: uuid.UUID, new: Keys, order: Keys | None = None,
                  patients: Pseudonyms | None = None, mapping: bytes = b""
                  ) -> LineageState:
        """The state once the version holding ``new`` has committed; ``order``: the same
        keys by the version's row positions, if known (:attr:`order`); ``patients``: the
        patient pseudonyms by the same positions, if kept (:attr:`patients`); ``mapping``:
        what it was pulled with (:attr:`mapping`)."""
        seq = len(self.versions)
        current = self.died == ALIVE
        still = np.isin(as_void(self.keys), as_void(new)) & current if new.shape[0] else \
            np.zeros(self.keys.shape[0], dtype=np.bool_)
        died = self.died.copy()
        died[current & ~still] = seq
        known = as_void(self.keys[still]) if still.any() else as_void(
            np.zeros((0, 3), dtype=np.uint64))
        arriving = new[~np.isin(as_void(new), known)] if new.shape[0] else new
        return LineageState(
            (*self.versions, version_id), self.key_fingerprint, np.concatenate([self.keys, arriving]),
            np.concatenate([self.born, np.full(arriving.shape[0], seq, dtype=np.int32)]),
            np.concatenate([died, np.full(arriving.shape[0], ALIVE, dtype=np.int32)]),
            np.zeros((0, 3), dtype=np.uint64) if order is None
            else np.asarray(order, dtype=np.uint64).reshape(-1, 3),
            np.zeros((0, 2), dtype=np.uint64) if patients is None or order is None
            else np.asarray(patients, dtype=np.uint64).reshape(-1, 2), mapping)
