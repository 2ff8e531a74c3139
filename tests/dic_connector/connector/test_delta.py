"""The connector's delta computation: which base positions a new pull keeps and which of its
rows are fresh, checked against the plaintext rows (the version composed from the plan must
hold exactly the new pull's rows, as a multiset), for additions, updates, deletions,
duplicate rows, an empty delta and a pull where everything changed."""

from __future__ import annotations

import uuid
from collections import Counter

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.connector.delta import MAX_KEEP_RUNS, UploadPlan, keep_runs, plan_upload
from dic_connector.connector.lineage import LineageState, RowDigests, sorted_keys

KEY = bytes(range(32))
NAMES = ("age", "sex=male", "weight")
BASE = uuid.UUID(int=1)


def row_keys(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    digests = RowDigests(KEY, NAMES, rows.shape[0])
    for j in range(rows.shape[1]):
        digests.add(rows[:, j].copy())
    return digests.row_keys()


def committed(base_rows: npt.NDArray[np.int64]) -> LineageState:
    """The lineage after a (full) base version holding ``base_rows`` in this order."""
    keys = row_keys(base_rows)
    return LineageState().made_with(KEY)[0].committed(BASE, sorted_keys(keys), keys)


def composed(base_rows: npt.NDArray[np.int64], new_rows: npt.NDArray[np.int64],
             plan: UploadPlan) -> npt.NDArray[np.int64]:
    """What the nodes hold after the plan's delta: base[keep] then the fresh rows."""
    assert plan.delta is not None
    return np.concatenate([base_rows[plan.delta.keep], new_rows[plan.delta.fresh]])


def multiset(rows: npt.NDArray[np.int64]) -> Counter[tuple[int, ...]]:
    return Counter(tuple(int(v) for v in row) for row in rows)


def table(*rows: tuple[int, int, int]) -> npt.NDArray[np.int64]:
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


BASE_ROWS = table((61, 1, 70), (45, 0, 58), (72, 1, 81), (38, 0, 66), (55, 1, 90))


def plan_for(new: npt.NDArray[np.int64]) -> UploadPlan:
    return plan_upload(committed(BASE_ROWS), row_keys(new),
                       rng=np.random.default_rng(7))


def test_an_added_patient_is_the_only_fresh_row() -> None:
    new = np.concatenate([BASE_ROWS, table((50, 0, 77))])
    plan = plan_for(new)
    assert plan.delta is not None and plan.delta.base == BASE
    assert plan.delta.keep.tolist() == [0, 1, 2, 3, 4] and plan.delta.fresh.tolist() == [5]
    assert plan.delta.section() == {"base": str(BASE), "keep": [[0, 5]]}


def test_an_update_drops_the_old_row_and_sends_the_new_one() -> None:
    new = BASE_ROWS.copy()
    new[2, 2] = 79  # a corrected weight
    plan = plan_for(new)
    assert plan.delta is not None
    assert plan.delta.keep.tolist() == [0, 1, 3, 4] and plan.delta.fresh.tolist() == [2]
    assert plan.delta.runs() == [[0, 2], [3, 5]]
    assert multiset(composed(BASE_ROWS, new, plan)) == multiset(new)


def test_a_deletion_keeps_the_others_and_sends_nothing() -> None:
    new = np.delete(BASE_ROWS, 3, axis=0)
    plan = plan_for(new)
    assert plan.delta is not None
    assert plan.delta.keep.tolist() == [0, 1, 2, 4] and plan.delta.fresh.tolist() == []
    assert multiset(composed(BASE_ROWS, new, plan)) == multiset(new)


def test_duplicate_rows_are_matched_one_to_one() -> None:
    base = table((40, 1, 60), (40, 1, 60), (40, 1, 60), (33, 0, 50))
    state = committed(base)
    fewer = table((33, 0, 50), (40, 1, 60), (40, 1, 60))  # one copy gone
    plan = plan_upload(state, row_keys(fewer))
    assert plan.delta is not None
    assert len(plan.delta.keep) == 3 and plan.delta.fresh.tolist() == []
    assert multiset(composed(base, fewer, plan)) == multiset(fewer)
    more = np.concatenate([base, table((40, 1, 60))])  # one copy more
    plan = plan_upload(state, row_keys(more))
    assert plan.delta is not None
    assert plan.delta.keep.tolist() == [0, 1, 2, 3] and len(plan.delta.fresh) == 1
    assert multiset(composed(base, more, plan)) == multiset(more)


def test_an_unchanged_pull_is_an_empty_delta() -> None:
    reordered = BASE_ROWS[[4, 2, 0, 1, 3]]  # the source's order is not the row identity
    plan = plan_for(reordered)
    assert plan.delta is not None
    assert plan.delta.keep.tolist() == [0, 1, 2, 3, 4] and plan.delta.fresh.tolist() == []


def test_everything_changed_is_a_full_upload_in_a_random_order() -> None:
    new = BASE_ROWS + 1
    plan = plan_for(new)
    assert plan.delta is None
    assert sorted(plan.order.tolist()) == list(range(5))
    assert plan.order.tolist() != list(range(5))  # shuffled (seeded)


def test_without_a_recorded_row_order_the_version_is_full() -> None:
    keys = row_keys(BASE_ROWS)
    no_order = LineageState().made_with(KEY)[0].committed(BASE, sorted_keys(keys))
    assert plan_upload(no_order, keys).delta is None
    assert plan_upload(LineageState(), keys).delta is None  # the first version


def test_too_many_kept_runs_make_a_full_upload() -> None:
    n = 2 * MAX_KEEP_RUNS + 2
    base = np.arange(3 * n, dtype=np.int64).reshape(n, 3)
    every_other = base[::2]  # each kept position its own run
    assert plan_upload(committed(base), row_keys(every_other)).delta is None
    assert plan_upload(committed(base), row_keys(base[: n // 2])).delta is not None


def test_positions_follow_the_version_as_sent_and_survive_storage() -> None:
    state = committed(BASE_ROWS)
    new = np.concatenate([np.delete(BASE_ROWS, 0, axis=0), table((50, 0, 77))])
    keys = row_keys(new)
    plan = plan_upload(state, keys)
    assert plan.delta is not None
    positions = plan.positions(keys, state.order, as_delta=True)
    assert positions.tolist() == row_keys(composed(BASE_ROWS, new, plan)).tolist()
    assert plan.positions(keys, state.order, as_delta=False).tolist() == \
        keys[plan.order].tolist()
    after = state.committed(uuid.UUID(int=2), sorted_keys(keys), positions)
    again = LineageState.from_bytes(after.to_bytes())
    assert again.order.tolist() == positions.tolist()
    assert again.differences(sorted_keys(keys))[1].removed == 0


def test_a_state_stored_before_row_orders_loads_without_one() -> None:
    keys = row_keys(BASE_ROWS)
    old = LineageState().made_with(KEY)[0].committed(BASE, sorted_keys(keys))
    assert LineageState.from_bytes(old.to_bytes()).order.shape == (0, 3)


def test_row_keys_are_the_sorted_keys_in_row_order() -> None:
    rows = table((1, 1, 1), (2, 2, 2), (1, 1, 1), (1, 1, 1))
    keys = row_keys(rows)
    assert keys[[0, 2, 3], 2].tolist() == [0, 1, 2]  # ordinals of equal rows in row order
    digests = RowDigests(KEY, NAMES, 4)
    for j in range(3):
        digests.add(rows[:, j].copy())
    assert digests.keys().tolist() == sorted_keys(keys).tolist()


def test_keep_runs() -> None:
    assert keep_runs(np.array([], dtype=np.int64)) == []
    assert keep_runs(np.array([0, 1, 2, 5, 7, 8], dtype=np.int64)) == [[0, 3], [5, 6], [7, 9]]


rows_strategy = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1), st.integers(0, 2)),
                         max_size=30)


@settings(max_examples=60, deadline=None)
@given(base=rows_strategy, new=rows_strategy)
def test_the_composed_version_holds_the_new_rows(base: list[tuple[int, int, int]],
                                                 new: list[tuple[int, int, int]]) -> None:
    """Property: for any base and new pull (few distinct values, so many duplicates), the
    plan's composed version is the new pull as a multiset, with the fewest rows sent."""
    base_rows, new_rows = table(*base), table(*new)
    plan = plan_upload(committed(base_rows), row_keys(new_rows))
    common = sum((multiset(base_rows) & multiset(new_rows)).values())
    if plan.delta is None:
        assert common == 0 or not base or not new
        assert sorted(plan.order.tolist()) == list(range(len(new)))
        return
    assert multiset(composed(base_rows, new_rows, plan)) == multiset(new_rows)
    assert len(plan.delta.keep) == common
    assert len(plan.delta.fresh) == len(new) - common
    assert plan.delta.keep.tolist() == sorted(set(plan.delta.keep.tolist()))


@pytest.mark.parametrize("changed", [0, 1, 3])
def test_declared_lineage_agrees_with_the_delta(changed: int) -> None:
    """The nodes check the lineage against the base with the delta's counts."""
    state = committed(BASE_ROWS)
    new = BASE_ROWS.copy()
    new[:changed, 0] += 100
    keys = row_keys(new)
    plan = plan_upload(state, keys)
    assert plan.delta is not None
    [against_base] = state.differences(sorted_keys(keys))
    assert (against_base.removed, against_base.added) == (
        len(BASE_ROWS) - len(plan.delta.keep), len(plan.delta.fresh))
