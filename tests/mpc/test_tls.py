"""The certificate rules a node checks at start (:func:`mpc.tls.check_certificate`): each
broken rule is refused with a message naming the file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mpc.errors import TlsConfigError
from mpc.tls import NodeTls, check_certificate, issue_cert, make_ca, write_dev_pki


def test_a_dev_certificate_passes(tmp_path: Path) -> None:
    pki = write_dev_pki(tmp_path, ["node-1"])
    cert = check_certificate(pki["node-1"], "node-1")
    assert isinstance(cert, x509.Certificate)


def _server_only(ca_cert: bytes, ca_key: bytes, path: Path) -> NodeTls:
    """A certificate for node-0 that allows TLS server use only."""
    ca = x509.load_pem_x509_certificate(ca_cert)
    signer = serialization.load_pem_private_key(ca_key, password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-0")]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("node-0")]), False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(signer, hashes.SHA256()))
    (path / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (path / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return NodeTls(path / "ca.pem", path / "server.pem", path / "server.key")


def test_each_broken_rule_names_the_file(tmp_path: Path) -> None:
    pki = write_dev_pki(tmp_path / "a", ["node-0", "node-1"])
    other = write_dev_pki(tmp_path / "b", ["node-0"])
    good = pki["node-0"]
    with pytest.raises(TlsConfigError, match=r"node-1\.pem names node-1; expected 'node-0'"):
        check_certificate(pki["node-1"], "node-0")
    with pytest.raises(TlsConfigError, match=r"b/node-0\.pem was not issued by the "
                                             r"deployment CA in .*a/ca\.pem"):
        check_certificate(NodeTls(good.ca_cert, other["node-0"].cert, other["node-0"].key),
                          "node-0")
    with pytest.raises(TlsConfigError, match=r"node-1\.key is not the key of .*node-0\.pem"):
        check_certificate(NodeTls(good.ca_cert, good.cert, pki["node-1"].key), "node-0")
    with pytest.raises(TlsConfigError, match="not now"):
        check_certificate(good, "node-0", now=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(TlsConfigError, match="not found"):
        check_certificate(NodeTls(good.ca_cert, tmp_path / "none.pem", good.key), "node-0")
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(TlsConfigError, match=r"junk\.pem is not a PEM certificate"):
        check_certificate(NodeTls(good.ca_cert, tmp_path / "junk.pem", good.key), "node-0")
    ca_cert, ca_key = make_ca()
    (tmp_path / "ca.pem").write_bytes(ca_cert)
    with pytest.raises(TlsConfigError, match="server and client use"):
        check_certificate(_server_only(ca_cert, ca_key, tmp_path), "node-0")
    cert, key = issue_cert(ca_cert, ca_key, "node-0", extra_names=["127.0.0.1", "h.example"])
    (tmp_path / "n.pem").write_bytes(cert)
    (tmp_path / "n.key").write_bytes(key)
    check_certificate(NodeTls(tmp_path / "ca.pem", tmp_path / "n.pem", tmp_path / "n.key"),
                      "node-0")
