"""What a node says about a failure in a request's status: ours in our words, foreign
errors by type only (their text may hold SQL, paths or values); the columns a standing
policy must list."""

from __future__ import annotations

from dic_connector.errors import NotReady
from dic_connector.node.analyses.catalog import get_analysis
from dic_connector.node.coordination.verify import policy_columns, reason_of


def test_our_errors_keep_their_message() -> None:
    assert reason_of(NotReady("version v not committed on node-1")) == \
        "version v not committed on node-1"
    assert len(reason_of(NotReady("x" * 2000))) == 500


def test_foreign_errors_show_only_their_type() -> None:
    reason = reason_of(KeyError("SELECT age FROM patients WHERE id = 'p17'"))
    assert reason.startswith("KeyError") and "p17" not in reason and "SELECT" not in reason


def test_a_table_needs_a_policy_on_both_variables() -> None:
    """A contingency table reads its row and col columns (a derived binary's too)."""
    assert policy_columns({"row": "local_control", "col": {
        "filter": {"op": "&", "args": [{"op": "<", "column": "bed10", "value": 80},
                                       {"op": "is_present", "column": "ecog"}]},
        "labels": ["low", "high"]}}) == ["bed10", "ecog", "local_control"]


def test_a_filter_and_labelled_groups_need_a_policy_on_their_columns() -> None:
    """A standing policy on mean(age) must not cover mean(age) over the rows with a given
    ECOG: the filter reads ecog (and survival's groups read theirs)."""
    assert policy_columns({"column": "age", "filter": {
        "op": "==", "column": "ecog", "value": "2"}}) == ["age", "ecog"]
    assert policy_columns({"time": "follow_up", "event": "event_death", "groups": [
        {"label": "low", "filter": {"op": "<", "column": "bed10", "value": 80}},
        {"label": "old", "filter": {"op": "!", "arg": {
            "op": "<", "column": "age", "value": 70}}}]}) == [
        "age", "bed10", "event_death", "follow_up"]


def test_a_t_test_and_a_correlation_need_a_policy_on_every_column_they_read() -> None:
    """t_test reads its column, its groups' (``by`` or the filters') and the filter's;
    correlation both of its ``columns``."""
    assert policy_columns({"column": "age", "by": "ecog"}) == ["age", "ecog"]
    assert policy_columns({"column": "age", "groups": [
        {"label": "low", "filter": {"op": "<", "column": "bed10", "value": 80}},
        {"label": "high", "filter": {"op": ">=", "column": "bed10", "value": 80}}],
        "filter": {"op": "==", "column": "sex", "value": "f"}}) == ["age", "bed10", "sex"]
    assert policy_columns({"columns": ["age", "bed10"], "filter": {
        "op": "is_present", "column": "ecog"}}) == ["age", "bed10", "ecog"]


def test_a_prevalence_needs_a_policy_on_its_case_definition_and_cells() -> None:
    """prevalence reads its ``by`` columns and its numerator: a boolean column, or every
    column of a filter that defines the cases."""
    assert policy_columns({"numerator": "diabetes", "by": ["zip", "sex"]}) == [
        "diabetes", "sex", "zip"]
    assert policy_columns({"numerator": {"op": ">=", "column": "hba1c", "value": "6.5"},
                           "by": ["sex"], "filter": {"op": ">=", "column": "age",
                                                     "value": 18}}) == ["age", "hba1c", "sex"]


def test_a_regression_needs_a_policy_on_its_outcome_and_every_covariate() -> None:
    """linear_regression reads ``y`` and every one of ``x`` (and the filter's columns):
    exactly the typed columns the analysis itself declares."""
    parameters = {"y": "sbp", "x": ["age", "smoker"],
                  "filter": {"op": "==", "column": "sex", "value": "f"}}
    assert policy_columns(parameters) == ["age", "sbp", "sex", "smoker"]
    assert policy_columns(parameters) == sorted(
        get_analysis("linear_regression").columns(parameters))
