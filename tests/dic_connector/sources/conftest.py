"""Real servers for the source tests: a sekmet-fhir FHIR R4 server and a fault-injecting proxy.

The server process is :mod:`dic_connector.dev.sekmet`'s (the demo and the benchmarks start it
too); its names are imported here for the tests that import them from this module. The other
module-level helpers (:func:`generate_resources`, :func:`load_resources`, :class:`FaultProxy`)
can move to the root ``tests/conftest.py`` for the end-to-end tests unchanged. Everything
binds to 127.0.0.1 only. Tests reach the helpers through fixtures (``sekmet.put``, ``sekmet_launcher``, ``fault_proxy``): a conftest is not importable
by module name under pytest's default import mode.

The server accepts a static bearer token, HTTP Basic and SMART Backend Services (one RS384 and
one ES384 client registered by public JWK), so every auth kind of the sources is exercised
against real code; ``/metadata`` and the SMART discovery document are public.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import ClientSession, ClientTimeout, web

from dic_connector.dev.sekmet import (
    SekmetServer,
    put_bundle,
    start_sekmet,
    stop_sekmet,
)

N_PATIENTS = 450  # x (1 Patient + 3 Observations + 1 Condition) = 2,250 resources


def outcome(code: str, text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}]}


def generate_resources(n_patients: int, seed: int = 5) -> list[dict[str, Any]]:
    """Seeded Patients, each with three Observations and one Condition (client-assigned ids)."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    loinc = [("8302-2", "cm", 150, 200), ("29463-7", "kg", 45, 120), ("8867-4", "/min", 50, 110)]
    for i in range(n_patients):
        pid = f"p{i:05d}"
        out.append({"resourceType": "Patient", "id": pid, "gender": rng.choice(["male", "female"]),
                    "birthDate": f"{rng.randint(1930, 2005)}-{rng.randint(1, 12):02d}-15"})
        for j, (code, unit, lo, hi) in enumerate(loinc):
            out.append({"resourceType": "Observation", "id": f"o{i:05d}-{j}", "status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                        "subject": {"reference": f"Patient/{pid}"},
                        "effectiveDateTime": f"20{rng.randint(10, 24)}-0{rng.randint(1, 9)}-01",
                        "valueQuantity": {"value": rng.randint(lo, hi), "unit": unit,
                                          "system": "http://unitsofmeasure.org", "code": unit}})
        out.append({"resourceType": "Condition", "id": f"c{i:05d}",
                    "clinicalStatus": {"coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": rng.choice(["active", "resolved"])}]},
                    "code": {"coding": [{"system": "http://snomed.info/sct",
                                         "code": rng.choice(["44054006", "38341003", "195967001"])}]},
                    "subject": {"reference": f"Patient/{pid}"}})
    return out


def load_resources(base_url: str, resources: list[dict[str, Any]], batch: int = 500) -> None:
    for start in range(0, len(resources), batch):
        put_bundle(base_url, resources[start:start + batch])


@pytest.fixture(scope="session")
def sekmet() -> Iterator[SekmetServer]:
    """A session sekmet-fhir server loaded with :data:`N_PATIENTS` generated patients."""
    tmpdir = Path(tempfile.mkdtemp(prefix="dic-sekmet-"))
    server = start_sekmet(tmpdir)
    try:
        resources = generate_resources(N_PATIENTS)
        load_resources(server.base_url, resources)
        for r in resources:
            server.resources.setdefault(r["resourceType"], set()).add(r["id"])
        yield server
    finally:
        stop_sekmet(server)
        shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.fixture
def sekmet_launcher(tmp_path: Path) -> Iterator[Callable[..., SekmetServer]]:
    """Start extra, empty sekmet servers (``start_sekmet`` options), stopped after the test."""
    started: list[SekmetServer] = []

    def launch(**options: Any) -> SekmetServer:
        workdir = tmp_path / f"sekmet-{len(started)}"
        workdir.mkdir()
        started.append(start_sekmet(workdir, **options))
        return started[-1]

    yield launch
    for server in started:
        stop_sekmet(server)


# ---------------------------------------------------------------- fault-injecting proxy

SESSION = web.AppKey("session", ClientSession)
Fault = Callable[[web.Request], Callable[[], Awaitable[web.StreamResponse]] | None]


@dataclass
class FaultProxy:
    """aiohttp reverse proxy on 127.0.0.1 in front of a FHIR server.

    Faults are added with :meth:`add_fault` (or the shortcuts below it); each counts the
    requests matching it, whether or not an earlier fault answered them, and the first fault
    that fires answers; without one the request is forwarded. URLs in bodies and headers are rewritten so that paging ``next``
    links and Bulk manifests keep pointing at the proxy.
    """

    upstream_root: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    root_url: str = ""

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/fhir"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(f"{request.method} {request.path_qs}")
        chosen = [make for fault in self.faults if (make := fault(request)) is not None]
        return await chosen[0]() if chosen else await self.forward(request)

    def add_fault(self, make: Callable[[web.Request], Awaitable[web.StreamResponse]], *,
                  match: str = "", nth: Collection[int] | None = (0,)) -> None:
        """Answer with ``make(request)`` on the ``nth`` requests (0-based, among those whose
        path and query contain ``match``; ``None``: all of them); forward the others."""
        counter = itertools.count()

        def fault(request: web.Request) -> Callable[[], Awaitable[web.StreamResponse]] | None:
            if match not in unquote(request.path_qs):
                return None
            i = next(counter)
            return (lambda: make(request)) if nth is None or i in nth else None

        self.faults.append(fault)

    def status(self, status: int, *, retry_after: str | None = None, **where: Any) -> None:
        """An OperationOutcome with ``status`` (and ``Retry-After`` if given)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}

        async def make(request: web.Request) -> web.StreamResponse:
            return web.json_response(outcome("transient", f"injected {status}"), status=status,
                                     headers=headers)

        self.add_fault(make, **where)

    def expired_token(self, **where: Any) -> None:
        """401 as a server answers a token that expired early."""

        async def make(request: web.Request) -> web.StreamResponse:
            return web.json_response(outcome("expired", "Access token expired"), status=401,
                                     headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

        self.add_fault(make, **where)

    def slow(self, delay_s: float, **where: Any) -> None:
        """Forward, but only after ``delay_s`` seconds."""

        async def make(request: web.Request) -> web.StreamResponse:
            await asyncio.sleep(delay_s)
            return await self.forward(request)

        self.add_fault(make, **where)

    def truncated(self, **where: Any) -> None:
        """The first half of the real answer, with a matching Content-Length."""

        async def make(request: web.Request) -> web.StreamResponse:
            full = await self.forward(request)
            body = full.body if isinstance(full.body, bytes) else b""
            return web.Response(body=body[: len(body) // 2], status=full.status,
                                content_type="application/fhir+json")

        self.add_fault(make, **where)

    def cut_connection(self, fraction: float = 0.5, **where: Any) -> None:
        """Announce the full Content-Length, send ``fraction`` of the body, drop the line."""

        async def make(request: web.Request) -> web.StreamResponse:
            full = await self.forward(request)
            body = full.body if isinstance(full.body, bytes) else b""
            response = web.StreamResponse(status=full.status)
            response.content_type = full.content_type
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[: int(len(body) * fraction)])
            assert request.transport is not None
            request.transport.close()
            return response

        self.add_fault(make, **where)

    def drop_entries(self, **where: Any) -> None:
        """A well-formed searchset page with its last entries silently removed."""

        async def make(request: web.Request) -> web.StreamResponse:
            full = await self.forward(request)
            bundle = json.loads(full.body if isinstance(full.body, bytes) else b"{}")
            bundle["entry"] = bundle.get("entry", [])[: len(bundle.get("entry", [])) // 2]
            return web.json_response(bundle, content_type="application/fhir+json")

        self.add_fault(make, **where)

    async def forward(self, request: web.Request) -> web.Response:
        session = request.app[SESSION]
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "accept-encoding")}
        body = await request.read()
        async with session.request(request.method, self.upstream_root + request.path_qs,
                                   headers=headers, data=body or None,
                                   allow_redirects=False) as up:
            data = await up.read()
            out_headers = {k: v.replace(self.upstream_root, self.root_url)
                           for k, v in up.headers.items()
                           if k.lower() in ("content-type", "content-location", "location",
                                            "retry-after", "x-progress", "www-authenticate")}
        if not request.path.endswith("smart-configuration"):  # tokens are audience-bound
            data = data.replace(self.upstream_root.encode(), self.root_url.encode())
        return web.Response(status=up.status, body=data, headers=out_headers)


@contextlib.asynccontextmanager
async def run_proxy(upstream_root: str) -> AsyncIterator[FaultProxy]:
    """Start a :class:`FaultProxy` on 127.0.0.1 (random port) in the running event loop."""
    proxy = FaultProxy(upstream_root)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    async with ClientSession(timeout=ClientTimeout(total=60)) as session:
        app[SESSION] = session
        runner = web.AppRunner(app, handler_cancellation=True)  # slow faults end with the client
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        proxy.root_url = f"http://127.0.0.1:{port}"
        try:
            yield proxy
        finally:
            await runner.cleanup()


@pytest.fixture
async def fault_proxy(sekmet: SekmetServer) -> AsyncIterator[FaultProxy]:
    """A fresh fault proxy per test in front of the session sekmet server."""
    async with run_proxy(sekmet.root_url) as proxy:
        yield proxy


@pytest.fixture
def sleep_recorder() -> tuple[list[float], Callable[[float], Awaitable[None]]]:
    """A ``sleep`` replacement that records requested delays and yields control at once."""
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    return delays, sleep
