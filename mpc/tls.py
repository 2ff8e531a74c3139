"""Mutual TLS between the three nodes: deployment CA, node certificates, SSL contexts.

Every node holds a certificate issued by the deployment's own CA (one CA per deployment, not
a public CA). Each certificate names its node in a subjectAltName dNSName, which is the
node's *identity*: a dialling node verifies the listener with TLS hostname checking against
the expected name, and a listening node reads the dialler's name from its verified
certificate. Addresses are never trusted (RFC 8446 TLS 1.3 only; RFC 5280 certificates;
RFC 6125 name checks).

:func:`write_dev_pki` creates a throwaway CA and node certificates for tests, benchmarks and
the embedded demo. Production deployments bring their own (the Helm chart mounts them).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mpc.errors import TlsConfigError


@dataclass(frozen=True)
class NodeTls:
    """Paths of one node's TLS material: deployment CA, its certificate and private key."""

    ca_cert: Path
    cert: Path
    key: Path

    def _context(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        for label, path in (("CA certificate", self.ca_cert), ("certificate", self.cert),
                            ("private key", self.key)):
            if not Path(path).is_file():
                raise TlsConfigError(f"{label} file not found: {path}")
        ctx = ssl.create_default_context(purpose, cafile=str(self.ca_cert))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_cert_chain(str(self.cert), str(self.key))
        except (ssl.SSLError, ValueError) as exc:
            raise TlsConfigError(f"cannot load certificate/key {self.cert}: {exc}") from exc
        return ctx

    def server_context(self, require_client_cert: bool = True) -> ssl.SSLContext:
        """Context for accepting peers: client certificates from the deployment CA required
        (or, with ``require_client_cert=False``, verified when presented: an HTTPS API that
        serves both certificate-holding services and token-holding people)."""
        ctx = self._context(ssl.Purpose.CLIENT_AUTH)
        if not require_client_cert:
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """Context for dialling peers: server name checked against the expected identity."""
        ctx = self._context(ssl.Purpose.SERVER_AUTH)
        ctx.check_hostname = True
        return ctx


def check_certificate(tls: NodeTls, identity: str,
                      now: dt.datetime | None = None) -> x509.Certificate:
    """Check the rules a deployment certificate must follow, naming the file that breaks one.

    The certificate at ``tls.cert`` must carry ``identity`` as a dNSName, be issued by the
    CA at ``tls.ca_cert`` (signature checked), be valid now, allow TLS server and client
    use, and belong to the key at ``tls.key``. :class:`TlsConfigError` otherwise.
    """
    def read(label: str, path: Path) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError:
            raise TlsConfigError(f"{label} file not found or unreadable: {path}") from None

    try:
        ca = x509.load_pem_x509_certificate(read("CA certificate", tls.ca_cert))
    except ValueError:
        raise TlsConfigError(f"{tls.ca_cert} is not a PEM certificate") from None
    try:
        cert = x509.load_pem_x509_certificate(read("certificate", tls.cert))
    except ValueError:
        raise TlsConfigError(f"{tls.cert} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(read("private key", tls.key), password=None)
    except (ValueError, TypeError):
        raise TlsConfigError(f"{tls.key} is not an unencrypted PEM private key") from None
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise TlsConfigError(f"{tls.cert} was not issued by the deployment CA in "
                             f"{tls.ca_cert}") from None
    moment = now or dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
        raise TlsConfigError(f"{tls.cert} is valid from {cert.not_valid_before_utc:%Y-%m-%d} "
                             f"to {cert.not_valid_after_utc:%Y-%m-%d}, not now")
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if identity not in names:
        raise TlsConfigError(f"{tls.cert} names {', '.join(names) or 'no DNS name'}; expected "
                             f"{identity!r} (`dic pki issue` writes it)")
    try:
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = set()
    if not {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= usages:
        raise TlsConfigError(f"{tls.cert} must allow both TLS server and client use "
                             "(extendedKeyUsage serverAuth, clientAuth)")
    public = cert.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    if not hasattr(key, "public_key") or key.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo) != public:
        raise TlsConfigError(f"{tls.key} is not the key of {tls.cert}")
    return cert


def peer_names(peercert: dict[str, Any] | None) -> set[str]:
    """dNSName entries of a verified peer certificate (``SSLSocket.getpeercert()`` form)."""
    if not peercert:
        return set()
    return {value for kind, value in peercert.get("subjectAltName", ()) if kind == "DNS"}


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dic-connector deployment"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
    )


def make_ca(common_name: str = "dic-connector deployment CA",
            days: int = 3650) -> tuple[bytes, bytes]:
    """A self-signed deployment CA (ECDSA P-256). Returns (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem(cert, key)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue_cert(ca_cert_pem: bytes, ca_key_pem: bytes, name: str,
               days: int = 825, extra_names: Sequence[str] = ()) -> tuple[bytes, bytes]:
    """A certificate for identity ``name`` (dNSName SAN, checked by peers), usable as TLS
    client and server; ``extra_names`` add the host names or IP addresses it is reached at."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TlsConfigError("the deployment CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(name), *(_san(n) for n in extra_names if n != name)]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _pem(cert, key)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` created mode 0600 (never readable by others, not even
    between creation and a chmod)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def write_dev_pki(directory: Path, names: Sequence[str],
                  ca_name: str = "dic-connector dev CA") -> dict[str, NodeTls]:
    """Write a fresh CA and one certificate per name into ``directory`` (keys mode 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = make_ca(ca_name)
    (directory / "ca.pem").write_bytes(ca_cert)
    ca_key_path = directory / "ca.key"
    _write_private(ca_key_path, ca_key)
    out: dict[str, NodeTls] = {}
    for name in names:
        cert, key = issue_cert(ca_cert, ca_key, name)
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert_path.write_bytes(cert)
        _write_private(key_path, key)
        out[name] = NodeTls(directory / "ca.pem", cert_path, key_path)
    return out
