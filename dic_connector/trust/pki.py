"""The deployment's PKI on disk: one CA, a certificate per node, one per site's connector.

Who holds what (README, "Keys and certificates"):

- the **deployment CA** (``ca.pem``, ``ca.key``) is created once by whoever sets up the
  deployment; ``ca.pem`` goes to every node and connector, ``ca.key`` stays offline with that
  person and signs nothing but the certificates below;
- each **node** ``i`` holds ``node-<i>.pem``/``.key``: identity ``node-<i>`` (what peers and
  connectors check, :mod:`mpc.tls`), plus the host names or addresses it is reached at (what
  a browser checks), usable as TLS server and client;
- each **site's connector** holds ``connector.<site>.pem``/``.key``: the nodes accept an
  upload for site S only from the certificate named ``connector.S``.

Private keys are written with mode 0600 and never overwritten (re-issuing is deliberate:
``force``). The certificate rules are those of :func:`mpc.tls.issue_cert` (ECDSA P-256,
SHA-256, RFC 5280 extensions).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from dic_connector.errors import ConfigError
from mpc.tls import issue_cert, make_ca

CA_CERT, CA_KEY = "ca.pem", "ca.key"
SITE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9*]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]"
                  r"([A-Za-z0-9-]{0,62}))*$|^[0-9a-fA-F:.]+$")


@dataclass(frozen=True)
class Issued:
    """Files written for one identity, and what its certificate says."""

    cert: Path
    key: Path
    names: tuple[str, ...]
    not_after: dt.datetime

    def describe(self) -> str:
        return (f"{self.cert} (names {', '.join(self.names)}; valid until "
                f"{self.not_after:%Y-%m-%d}) and its key {self.key} (mode 0600)")


def _write(path: Path, data: bytes, private: bool, force: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; pass --force to replace it")
    if private:
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        tmp.replace(path)
    else:
        path.write_bytes(data)


def _issued(cert_path: Path, key_path: Path) -> Issued:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(n.value) for n in san)
    except x509.ExtensionNotFound:
        names = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(
            NameOID.COMMON_NAME))
    return Issued(cert_path, key_path, names, cert.not_valid_after_utc)


def init_ca(directory: Path, *, name: str = "dic-connector deployment CA", days: int = 3650,
            force: bool = False) -> Issued:
    """Create the deployment CA in ``directory`` (``ca.pem``, ``ca.key``)."""
    cert, key = make_ca(name, days)
    _write(directory / CA_KEY, key, True, force)
    _write(directory / CA_CERT, cert, False, True)
    return _issued(directory / CA_CERT, directory / CA_KEY)


def _ca(directory: Path) -> tuple[bytes, bytes]:
    try:
        return (directory / CA_CERT).read_bytes(), (directory / CA_KEY).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"no deployment CA in {directory} ({CA_CERT} and {CA_KEY}); run "
                          "`dic pki init` first") from None


def _issue(directory: Path, identity: str, hosts: tuple[str, ...], days: int,
           force: bool) -> Issued:
    for host in hosts:
        if not HOST.match(host):
            raise ConfigError(f"--host {host!r} is not a host name or IP address")
    ca_cert, ca_key = _ca(directory)
    cert, key = issue_cert(ca_cert, ca_key, identity, days, extra_names=hosts)
    cert_path, key_path = directory / f"{identity}.pem", directory / f"{identity}.key"
    _write(key_path, key, True, force)
    _write(cert_path, cert, False, True)
    return _issued(cert_path, key_path)


def issue_node(directory: Path, index: int, hosts: tuple[str, ...] = (), *, days: int = 825,
               force: bool = False) -> Issued:
    """``node-<index>.pem``/``.key``: identity ``node-<index>`` and the given host names."""
    if index not in (0, 1, 2):
        raise ConfigError(f"--index {index}: a deployment has nodes 0, 1 and 2")
    return _issue(directory, f"node-{index}", hosts, days, force)


def issue_connector(directory: Path, site: str, *, days: int = 825,
                    force: bool = False) -> Issued:
    """``connector.<site>.pem``/``.key``: the identity the nodes accept uploads of ``site``
    from."""
    if not SITE.match(site):
        raise ConfigError(f"--site {site!r}: expected lowercase letters, digits and '-'")
    return _issue(directory, f"connector.{site}", (), days, force)
