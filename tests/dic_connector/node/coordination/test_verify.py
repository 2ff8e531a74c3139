"""What a node says about a failure in a request's status: ours in our words, foreign
errors by type only (their text may hold SQL, paths or values)."""

from __future__ import annotations

from dic_connector.errors import NotReady
from dic_connector.node.coordination.verify import reason_of


def test_our_errors_keep_their_message() -> None:
    assert reason_of(NotReady("version v not committed on node-1")) == \
        "version v not committed on node-1"
    assert len(reason_of(NotReady("x" * 2000))) == 500


def test_foreign_errors_show_only_their_type() -> None:
    reason = reason_of(KeyError("SELECT age FROM patients WHERE id = 'p17'"))
    assert reason.startswith("KeyError") and "p17" not in reason and "SELECT" not in reason
