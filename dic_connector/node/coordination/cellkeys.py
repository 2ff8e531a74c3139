"""The pairwise secrets behind the cell-key method's record keys, from the nodes' TLS keys.

:mod:`dic_connector.node.analyses.perturbation` derives every row's record key from one
long-lived secret per pair of nodes, so that the same row gets the same key in every session
and no node knows a key. The secret of nodes i and j is the **static ECDH** (NIST SP 800-56A
rev. 3, §5.7.1.2) of node i's TLS private key and the public key in node j's certificate
(P-256; both equal ECDH(j's key, i's certificate)), expanded with HKDF-SHA256 (RFC 5869) bound
to the two node names. Every node already holds its key and receives its peers' certificates,
verified against the deployment CA, in the mutual-TLS handshake
(:meth:`mpc.mux.PooledChannels.peer_certificate`): nothing is exchanged or stored, and the
third node, which holds neither private key, cannot compute it (computational Diffie-Hellman).

Limitations, stated where an operator looks (README): the certificate keys serve TLS
signatures and this key agreement (HKDF with a distinct label separates the uses); issuing a
node a certificate with a **new key** changes the record keys, so the cells released after
the rotation get fresh noise (a researcher gets one more draw per cell per rotation, not
as many as they ask for).
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dic_connector.errors import ConfigError
from dic_connector.node.analyses.perturbation import PairSecrets
from mpc.channels import TlsChannels
from mpc.mux import PooledChannels
from mpc.sharing import next_party, prev_party
from mpc.tls import NodeTls

_INFO = b"dic-connector cell-key pair secret v1 "


def pair_secret(key_pem: bytes, peer_certificate_der: bytes, me: str, peer: str) -> bytes:
    """The secret shared by node ``me`` (its private key, PEM) and node ``peer`` (its
    certificate, DER): HKDF-SHA256 of the static ECDH, bound to both names in order."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    public = x509.load_der_x509_certificate(peer_certificate_der).public_key()
    if not isinstance(key, ec.EllipticCurvePrivateKey) \
            or not isinstance(public, ec.EllipticCurvePublicKey) \
            or key.curve.name != public.curve.name:
        raise ConfigError("cell-key perturbation needs EC node keys on one curve (the "
                          "deployment's P-256 certificates)")
    shared = key.exchange(ec.ECDH(), public)
    low, high = sorted((me, peer))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_INFO + f"{low}|{high}".encode()).derive(shared)


def node_pair_secrets(tls: NodeTls, channels: TlsChannels | PooledChannels, party: int,
                      names: tuple[str, str, str]) -> PairSecrets:
    """This node's two pair secrets, with the peers of ``channels`` (named ``names`` in
    party order)."""
    key = Path(tls.key).read_bytes()
    before, after = prev_party(party), next_party(party)
    return PairSecrets(
        party,
        pair_secret(key, channels.peer_certificate(before), names[party], names[before]),
        pair_secret(key, channels.peer_certificate(after), names[party], names[after]))
