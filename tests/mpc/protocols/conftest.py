"""Fixtures of the protocol tests."""

from __future__ import annotations

import pytest

from tests.mpc.protocols.views import Drawn, recording


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> Drawn:
    """Every PRG draw of the test, by PRG object: the parties' own randomness."""
    return recording(monkeypatch)
