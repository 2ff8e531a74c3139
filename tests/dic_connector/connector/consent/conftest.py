"""An empty sekmet-fhir server for the consent tests, started once per module on 127.0.0.1
with :mod:`dic_connector.dev.sekmet`."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dic_connector.dev.sekmet import SekmetServer, start_sekmet, stop_sekmet


@pytest.fixture(scope="module")
def consent_server() -> Iterator[SekmetServer]:
    """A sekmet server of its own (the session ``sekmet`` fixture loads 2,250 resources)."""
    tmpdir = Path(tempfile.mkdtemp(prefix="dic-consent-sekmet-"))
    server = start_sekmet(tmpdir)
    try:
        yield server
    finally:
        stop_sekmet(server)
        shutil.rmtree(tmpdir, ignore_errors=True)
