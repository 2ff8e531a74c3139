"""An empty sekmet-fhir server for the consent tests, started once per module on 127.0.0.1
with :mod:`dic_connector.dev.sekmet`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dic_connector.dev.sekmet import SekmetServer, temporary_sekmet


@pytest.fixture(scope="module")
def consent_server() -> Iterator[SekmetServer]:
    """A sekmet server of its own (the session ``sekmet`` fixture loads 2,250 resources)."""
    with temporary_sekmet("dic-consent-sekmet-") as server:
        yield server
