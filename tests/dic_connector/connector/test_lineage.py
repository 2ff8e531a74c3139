"""Row-digest lineage: the declared differences equal multiset differences of the shared
rows, against every earlier version (property test), survive storage, and the key file is
created private and checked."""

from __future__ import annotations

import stat
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.connector.lineage import (
    KEY_BYTES,
    LineageState,
    RowDigests,
    load_or_create_key,
    row_keys,
)
from dic_connector.errors import ConfigError, StoreError

KEY = bytes(range(KEY_BYTES))
COLUMNS = ["age", "ecog"]

rows = st.lists(st.tuples(st.integers(-3, 3), st.integers(0, 2)), max_size=12)


def keys(table: list[tuple[int, int]]) -> np.ndarray:
    return row_keys(KEY, np.array(table, dtype=np.int64).reshape(-1, 2), COLUMNS)


@settings(max_examples=150, deadline=None)
@given(st.lists(rows, min_size=1, max_size=6), st.booleans())
def test_differences_are_multiset_differences_to_every_earlier_version(
        versions: list[list[tuple[int, int]]], reload: bool) -> None:
    state = LineageState()
    ids = [uuid.UUID(int=i + 1) for i in range(len(versions))]
    for seq, table in enumerate(versions):
        declared = state.declaration(keys(table))["previous"]
        new = Counter(table)
        assert [d["version_id"] for d in declared] == [str(v) for v in ids[:seq]]
        for earlier, d in zip(versions[:seq], declared, strict=True):
            old = Counter(earlier)
            assert d["removed"] == sum((old - new).values())
            assert d["added"] == sum((new - old).values())
        state = state.committed(ids[seq], keys(table))
        if reload:
            state = LineageState.from_bytes(state.to_bytes())


def test_digests_depend_on_the_key_and_the_columns_and_keep_no_value() -> None:
    table = np.array([[73, 1], [73, 1], [41, 0]], dtype=np.int64)
    mine = row_keys(KEY, table, COLUMNS)
    assert mine.shape == (3, 3) and sorted(mine[:, 2].tolist()) == [0, 0, 1]
    assert not np.array_equal(row_keys(bytes(KEY_BYTES), table, COLUMNS)[:, :2], mine[:, :2])
    assert not np.array_equal(row_keys(KEY, table, ["age", "dose"])[:, :2], mine[:, :2])
    blob = LineageState().committed(uuid.UUID(int=1), mine).to_bytes()
    assert b"73" not in blob.replace(b"\x00", b"")  # digests, not values


def test_the_first_version_declares_nothing_before_it() -> None:
    assert LineageState().declaration(keys([(1, 1)])) == {"previous": []}
    assert LineageState.from_bytes(None).versions == ()


def test_a_damaged_blob_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="lineage cannot be read"):
        LineageState.from_bytes(b"not an npz")


def test_the_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "lineage.key"
    key = load_or_create_key(path)
    assert len(key) == KEY_BYTES and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="holds 5 bytes; expected 32"):
        load_or_create_key(path)


def test_a_replaced_key_declares_nothing_and_starts_again() -> None:
    table = [(1, 1), (2, 0), (3, 1)]
    state, comparable = LineageState().made_with(KEY)
    assert comparable and state.key_fingerprint
    state = state.committed(uuid.UUID(int=1), keys(table))
    again, comparable = LineageState.from_bytes(state.to_bytes()).made_with(KEY)
    assert comparable and again.versions == (uuid.UUID(int=1),)
    other = bytes(KEY_BYTES)
    fresh, comparable = again.made_with(other)
    # digests under another key match nothing: every row would look new, so the
    # difference to the earlier version (0 rows here) would be declared as 3 and 3
    assert not comparable and fresh.versions == () and fresh.key_fingerprint != \
        again.key_fingerprint
    assert fresh.declaration(row_keys(other, np.array(table, dtype=np.int64), COLUMNS)) == {
        "previous": []}


def test_column_by_column_equals_the_matrix_and_checks_its_input() -> None:
    table = np.array([[5, -1, 2**62], [5, -1, 2**62], [0, 0, -(2**63)]], dtype=np.int64)
    digests = RowDigests(KEY, ["a", "b", "c"], 3)
    for j in range(3):
        digests.add(table[:, j].copy())
    assert np.array_equal(digests.keys(), row_keys(KEY, table, ["a", "b", "c"]))
    with pytest.raises(ValueError, match="all 3 columns"):
        digests.add(table[:, 0])
    short = RowDigests(KEY, ["a", "b"], 3)
    with pytest.raises(ValueError, match="shape"):
        short.add(np.zeros(2, dtype=np.int64))
    short.add(table[:, 0])
    with pytest.raises(ValueError, match="1 of 2 columns"):
        short.keys()
    # the column order matters, as the values' meaning does
    assert not np.array_equal(row_keys(KEY, table[:, ::-1].copy(), ["a", "b", "c"]),
                              row_keys(KEY, table, ["a", "b", "c"]))
    assert row_keys(KEY, np.zeros((0, 3), dtype=np.int64), ["a", "b", "c"]).shape == (0, 3)
