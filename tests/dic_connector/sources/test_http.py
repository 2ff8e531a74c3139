"""HTTP layer: TLS verification and custom CA, per-server concurrency limit, Retry-After,
an injected session."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dic_connector.errors import SourceError
from dic_connector.sources.auth import BearerAuth
from dic_connector.sources.fhir_rest import FhirRestConfig, FhirRestSource, SearchSpec
from dic_connector.sources.http import HttpClient, HttpConfig, diagnostics, retry_after_s

if TYPE_CHECKING:
    from conftest import FaultProxy, SekmetServer

def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_sekmet(tmp_path: Path, sekmet_launcher: Callable[..., SekmetServer]
               ) -> tuple[str, Path]:
    """A second sekmet-fhir, HTTPS only, with a self-signed certificate for 127.0.0.1."""
    cert, key = self_signed(tmp_path)
    server = sekmet_launcher(tls=(cert, key))
    server.put([{"resourceType": "Patient", "id": "tls"}])
    return server.base_url, cert


async def pull(base_url: str, http: HttpConfig) -> list[str]:
    config = FhirRestConfig(base_url, (SearchSpec("Patient"),), http=http,
                            auth=BearerAuth("static-test-token"))
    async with FhirRestSource(config) as source:
        return [r["id"] async for r in source.stream()]


@pytest.mark.fhir_server
async def test_tls_verified_by_default_and_custom_ca(tls_sekmet: tuple[str, Path]) -> None:
    url, cert = tls_sekmet
    with pytest.raises(SourceError, match="TLS verification failed"):
        await pull(url, HttpConfig())
    assert await pull(url, HttpConfig(ca_bundle=cert)) == ["tls"]
    assert await pull(url, HttpConfig(verify_tls=False)) == ["tls"]


@pytest.mark.fhir_server
async def test_concurrency_limit_is_shared_per_server(sekmet: SekmetServer,
                                                      fault_proxy: FaultProxy) -> None:
    in_flight, peak = 0, 0

    async def counting(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.02)
            return await fault_proxy.forward(request)
        finally:
            in_flight -= 1

    fault_proxy.add_fault(counting, nth=None)
    client = HttpClient(fault_proxy.base_url, BearerAuth(sekmet.static_token),
                        HttpConfig(max_concurrency=2))

    async def one(rtype: str) -> set[str]:
        source = FhirRestSource(FhirRestConfig(fault_proxy.base_url, (SearchSpec(rtype),),
                                               page_size=100), client=client)
        return {r["id"] async for r in source.stream()}

    try:
        results = await asyncio.gather(*(one(t) for t in sekmet.types))
    finally:
        await client.close()
    assert dict(zip(sekmet.types, results, strict=True)) == sekmet.resources
    assert peak == 2  # three paging streams with one-page lookahead, never more than two calls


@dataclass
class TlsApp:
    """A small HTTPS server on 127.0.0.1 with a self-signed certificate ``cert``:
    ``/fhir/Patient`` answers 503 (Retry-After: 0) once, then a Bundle;
    ``/fhir/export.ndjson`` an NDJSON body; ``/fhir/slow`` a Bundle after 20 ms."""

    base_url: str
    cert: Path
    #: User-Agent of every request to the first two routes
    agents: list[str] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0


@pytest.fixture
async def tls_app(tmp_path: Path) -> AsyncIterator[TlsApp]:
    cert, key = self_signed(tmp_path)
    server = TlsApp("", cert)

    async def patients(request: web.Request) -> web.Response:
        server.agents.append(request.headers.get("User-Agent", ""))
        if len(server.agents) == 1:
            return web.json_response({"resourceType": "OperationOutcome", "issue": []},
                                     status=503, headers={"Retry-After": "0"})
        return web.json_response({"resourceType": "Bundle", "total": 1})

    async def export(request: web.Request) -> web.Response:
        server.agents.append(request.headers.get("User-Agent", ""))
        return web.Response(body=b'{"resourceType": "Patient", "id": "p1"}\n',
                            content_type="application/fhir+ndjson")

    async def slow(request: web.Request) -> web.Response:
        server.in_flight += 1
        server.peak = max(server.peak, server.in_flight)
        try:
            await asyncio.sleep(0.02)
            return web.json_response({"resourceType": "Bundle", "total": 0})
        finally:
            server.in_flight -= 1

    app = web.Application()
    app.router.add_get("/fhir/Patient", patients)
    app.router.add_get("/fhir/export.ndjson", export)
    app.router.add_get("/fhir/slow", slow)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
        server.base_url = f"https://127.0.0.1:{runner.addresses[0][1]}/fhir"
        yield server
    finally:
        await runner.cleanup()


async def test_injected_session_carries_requests_retries_and_streams_and_stays_open(
        tls_app: TlsApp) -> None:
    base = tls_app.base_url
    sent: list[str] = []

    async def count(request: aiohttp.ClientRequest,
                    handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        sent.append(f"{request.method} {request.url.path}")
        return await handler(request)

    waited: list[float] = []

    async def no_wait(seconds: float) -> None:
        waited.append(seconds)

    async with aiohttp.ClientSession(middlewares=(count,)) as session:
        async with HttpClient(base, config=HttpConfig(ca_bundle=tls_app.cert), sleep=no_wait,
                              session=session) as client:
            _, bundle = await client.request("GET", f"{base}/Patient", want_json=True)
            async with client.open_stream(f"{base}/export.ndjson") as response:
                body = await response.read()
        await client.close()  # closing the client again leaves the caller's session alone
        assert not session.closed
        assert bundle == {"resourceType": "Bundle", "total": 1}
        assert body.startswith(b'{"resourceType": "Patient"')
        # the 503 and its retry both went through the injected session
        assert sent == ["GET /fhir/Patient", "GET /fhir/Patient", "GET /fhir/export.ndjson"]
        assert (client.retries, waited) == (1, [0.0])
        assert tls_app.agents == ["dic-connector/0.1"] * 3
        # the session alone does not trust the private CA: the client's own TLS settings,
        # passed per request, are what verified the server above, and still apply
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"{base}/Patient")
        with pytest.raises(SourceError, match="TLS verification failed"):
            await HttpClient(base, config=HttpConfig(), session=session).request(
                "GET", f"{base}/Patient")
        assert not session.closed


async def test_concurrency_limit_holds_on_an_injected_session(tls_app: TlsApp) -> None:
    """The limit is the client's, not the pool's: a roomy injected session does not lift it."""
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:
        client = HttpClient(tls_app.base_url, session=session,
                            config=HttpConfig(ca_bundle=tls_app.cert, max_concurrency=2))
        await asyncio.gather(*(client.request("GET", f"{tls_app.base_url}/slow")
                               for _ in range(8)))
    assert tls_app.peak == 2


def test_retry_after_forms() -> None:
    assert retry_after_s({"Retry-After": "120"}) == 120.0
    when = email.utils.formatdate(1_000_030, usegmt=True)
    assert retry_after_s({"Retry-After": when}, now=1_000_000) == 30.0
    assert retry_after_s({"Retry-After": "soon"}) is None
    assert retry_after_s({}) is None


def test_diagnostics_never_echo_non_fhir_bodies() -> None:
    assert diagnostics(b"<html>patient 4711 ...</html>") == "non-JSON body of 29 bytes"
    assert diagnostics(b'{"error": "invalid_client", "error_description": "bad key"}') == \
        "invalid_client: bad key"
