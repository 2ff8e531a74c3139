"""HTTP layer: TLS verification and custom CA, per-server concurrency limit, Retry-After."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

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
