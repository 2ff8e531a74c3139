"""The demo's workspace: a fresh directory or an empty one the user names, removed (or
emptied) afterwards unless ``--keep``, whether the demo succeeded or failed. The whole demo
runs in ``tests/e2e/test_demo.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from dic_connector.dev.demo import workspace_dir
from dic_connector.errors import DemoError


def test_a_temporary_workspace_is_removed_unless_kept() -> None:
    with workspace_dir(None, keep=False) as work:
        (work / "nodes").mkdir()
        (work / "nodes" / "node-0.db").write_bytes(b"x")
    assert not work.exists()
    with workspace_dir(None, keep=True) as kept:
        (kept / "f").write_text("x")
    assert (kept / "f").read_text() == "x"


@pytest.mark.parametrize("existing", [True, False])
def test_a_named_workspace_is_emptied_or_removed_even_when_the_demo_fails(
        tmp_path: Path, existing: bool) -> None:
    named = tmp_path / "demo"
    if existing:
        named.mkdir()
    with pytest.raises(RuntimeError, match="step failed"), workspace_dir(named, keep=False) as work:
        (work / "logs").mkdir()
        (work / "logs" / "node-0.log").write_text("x")
        (work / "deployment.yaml").write_text("x")
        raise RuntimeError("step failed")
    # a directory the user made stays (empty); one the demo made is gone
    assert named.exists() is existing
    if existing:
        assert list(named.iterdir()) == []


def test_a_non_empty_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("mine")
    with (pytest.raises(DemoError, match="must be an empty directory"),
          workspace_dir(tmp_path, keep=False)):
        pass  # pragma: no cover - never entered
    assert (tmp_path / "something").read_text() == "mine"
