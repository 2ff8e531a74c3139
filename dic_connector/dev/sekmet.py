"""A sekmet-fhir FHIR R4 server as a local process: the demo's, the tests' and the
benchmarks' FHIR server.

`sekmet-fhir <https://pypi.org/project/sekmet-fhir/>`_ implements FHIR R4 REST (HL7 FHIR
R4, http://hl7.org/fhir/R4/http.html), Bulk Data export, SMART Backend Services and the
Subscriptions R5 Backport IG (http://hl7.org/fhir/uv/subscriptions-backport/, topics as
``Basic`` resources, ``Subscription/$status``). It lives in its own virtualenv,
``.venv-fhir`` of the checkout (``make fhir-venv``), so that its pins never meet ours.

:func:`start_sekmet` starts it on 127.0.0.1 (a free port, a database under the given
directory) and waits until ``/metadata`` answers; :func:`stop_sekmet` stops it (SIGTERM, then
SIGKILL). The server accepts a static bearer token, HTTP Basic and SMART Backend Services
(one RS384 and one ES384 client registered by public JWK); ``/metadata`` and the SMART
discovery document are public. :meth:`SekmetServer.put` loads resources (one batch Bundle of
PUTs) and :meth:`SekmetServer.call` makes one FHIR interaction. Development only: never part
of a hospital deployment.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from dic_connector.dev.deployment import PACKAGE_ROOT
from dic_connector.errors import DemoError, FhirServerMissing
from mpc.local import free_port

#: The FHIR server's virtualenv (``make fhir-venv``).
FHIR_VENV = PACKAGE_ROOT / ".venv-fhir"
INSTALL_HINT = "run `make fhir-venv`, which installs sekmet-fhir into .venv-fhir"
STATIC_TOKEN = "static-test-token"
BASIC_USER, BASIC_PASSWORD = "dic", "basic-secret"
RS_CLIENT, ES_CLIENT = "dic-rs384", "dic-es384"
TYPES = ("Patient", "Observation", "Condition")
READY_TIMEOUT_S = 60.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, str]:
    """RFC 7517 public JWK of a private key, for registering a SMART client."""
    if isinstance(key, rsa.RSAPrivateKey):
        nums = key.public_key().public_numbers()
        n = nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")
        e = nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")
        return {"kty": "RSA", "alg": "RS384", "kid": kid, "use": "sig", "n": _b64(n), "e": _b64(e)}
    pub = key.public_key().public_numbers()
    return {"kty": "EC", "alg": "ES384", "kid": kid, "use": "sig", "crv": "P-384",
            "x": _b64(pub.x.to_bytes(48, "big")), "y": _b64(pub.y.to_bytes(48, "big"))}


@dataclass
class SekmetServer:
    """A running sekmet-fhir process; ``base_url`` ends in ``/fhir``."""

    base_url: str
    process: subprocess.Popen[bytes]
    workdir: Path
    rs_key: rsa.RSAPrivateKey
    es_key: ec.EllipticCurvePrivateKey
    resources: dict[str, set[str]] = field(default_factory=dict)
    static_token: str = STATIC_TOKEN
    basic_user: str = BASIC_USER
    basic_password: str = BASIC_PASSWORD
    rs_client: str = RS_CLIENT
    es_client: str = ES_CLIENT
    types: tuple[str, ...] = TYPES
    cafile: Path | None = None

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/fhir")

    def put(self, resources: list[dict[str, Any]]) -> None:
        """Create or update resources (one batch Bundle of PUTs)."""
        put_bundle(self.base_url, resources, self.cafile)

    def call(self, method: str, path: str, body: Any = None, timeout_s: float = 60) -> Any:
        """One FHIR interaction (``path`` below ``base_url``) with the static token; the
        JSON answer."""
        request = urllib.request.Request(
            f"{self.base_url}/{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.static_token}",
                     "Content-Type": "application/fhir+json",
                     "Accept": "application/fhir+json"})
        context = ssl.create_default_context(cafile=str(self.cafile)) if self.cafile else None
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
            return json.load(response)


def sekmet_executable() -> Path:
    """``.venv-fhir/bin/sekmet``; :class:`FhirServerMissing` saying how to get it."""
    exe = FHIR_VENV / "bin" / "sekmet"
    if not exe.exists():
        raise FhirServerMissing(f"sekmet-fhir is not installed ({exe} is missing): {INSTALL_HINT}")
    return exe


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float,
                cafile: Path | None = None) -> None:
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"sekmet exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError, urllib.error.URLError), \
                urllib.request.urlopen(f"{url}/metadata", timeout=2, context=context) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    process.kill()
    process.wait(timeout=10)
    raise DemoError(f"sekmet did not become ready in {timeout_s} s:\n{log.read_text()[-3000:]}")


def start_sekmet(tmpdir: Path, token_lifetime_s: int = 3600,
                 tls: tuple[Path, Path] | None = None) -> SekmetServer:
    """Start sekmet-fhir on 127.0.0.1 with a free port and a database under ``tmpdir``.

    ``tls`` is a (certificate, key) PEM pair: the server then speaks HTTPS only. Raises
    :class:`FhirServerMissing` without ``.venv-fhir``, :class:`DemoError` when it does not start.
    """
    exe = sekmet_executable()
    port = free_port()
    base_url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/fhir"
    rs_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    es_key = ec.generate_private_key(ec.SECP384R1())
    config: dict[str, Any] = {
        "base_url": base_url, "host": "127.0.0.1", "port": port,
        "data_dir": str(tmpdir / "data"), "own_private_key_path": str(tmpdir / "own.pem"),
        "log_inbound": False,
        "validation": {"inbound": "off"},
        "simulator": {"enabled": False, "delay_seconds": 0},
        "server_auth": {
            "types": ["bearer", "basic", "smart"], "tokens": [STATIC_TOKEN],
            "users": {BASIC_USER: BASIC_PASSWORD}, "token_lifetime": token_lifetime_s,
            "smart_clients": [
                {"client_id": RS_CLIENT, "jwks": {"keys": [public_jwk(rs_key, "rs")]},
                 "scopes": "system/*.read"},
                {"client_id": ES_CLIENT, "jwks": {"keys": [public_jwk(es_key, "es")]},
                 "scopes": "system/*.read"},
            ],
        },
    }
    if tls:
        config["tls_certfile"], config["tls_keyfile"] = str(tls[0]), str(tls[1])
    config_path = tmpdir / "settings.yaml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    log = tmpdir / "sekmet.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEKMET_")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(exe), "serve", "--config", str(config_path), "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=tmpdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    _wait_ready(base_url, process, log, timeout_s=READY_TIMEOUT_S,
                cafile=tls[0] if tls else None)
    return SekmetServer(base_url, process, tmpdir, rs_key, es_key,
                        cafile=tls[0] if tls else None)


def stop_sekmet(server: SekmetServer) -> None:
    """SIGTERM, and SIGKILL after 10 s."""
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


@contextlib.contextmanager
def temporary_sekmet(prefix: str) -> Iterator[SekmetServer]:
    """A sekmet in a new temporary directory, stopped and removed on leaving."""
    tmpdir = Path(tempfile.mkdtemp(prefix=prefix))
    server = start_sekmet(tmpdir)
    try:
        yield server
    finally:
        stop_sekmet(server)
        shutil.rmtree(tmpdir, ignore_errors=True)


def put_bundle(base_url: str, resources: list[dict[str, Any]], cafile: Path | None = None
               ) -> None:
    """PUT resources through one batch Bundle (static bearer token); :class:`DemoError` on
    any entry that failed."""
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources]}
    request = urllib.request.Request(
        base_url, data=json.dumps(bundle).encode(), method="POST",
        headers={"Content-Type": "application/fhir+json", "Authorization": f"Bearer {STATIC_TOKEN}"})
    with urllib.request.urlopen(request, timeout=120, context=context) as response:
        answer = json.load(response)
    bad = [e["response"]["status"] for e in answer["entry"]
           if not e["response"]["status"].startswith(("200", "201"))]
    if bad:
        raise DemoError(f"batch load failed: {bad[:5]}")


__all__ = ["FHIR_VENV", "INSTALL_HINT", "SekmetServer", "put_bundle",
           "start_sekmet", "stop_sekmet"]
