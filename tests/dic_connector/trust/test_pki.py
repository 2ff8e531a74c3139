"""The deployment PKI written by ``dic pki``: certificates chain to the CA, carry the node
identity and its host names, and work for mutual TLS exactly as the nodes and connectors use
them (a real handshake on 127.0.0.1); keys are private and never silently replaced."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from dic_connector.errors import ConfigError
from dic_connector.trust.pki import init_ca, issue_connector, issue_node
from mpc.local import free_port
from mpc.tls import NodeTls, peer_names


def test_node_certificates_name_the_identity_and_the_hosts(tmp_path: Path) -> None:
    ca = init_ca(tmp_path)
    node = issue_node(tmp_path, 2, ("node2.dic.example", "10.1.2.3"))
    assert node.names == ("node-2", "node2.dic.example", "10.1.2.3")
    cert = x509.load_pem_x509_certificate(node.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    issuer = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    cert.verify_directly_issued_by(issuer)
    for key in (ca.key, node.key):
        assert key.stat().st_mode & 0o777 == 0o600


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run `dic pki init` first"):
        issue_connector(tmp_path, "tm")
    init_ca(tmp_path)
    with pytest.raises(ConfigError, match="exists; pass --force"):
        init_ca(tmp_path)
    with pytest.raises(ConfigError, match="nodes 0, 1 and 2"):
        issue_node(tmp_path, 3)
    with pytest.raises(ConfigError, match="not a host name"):
        issue_node(tmp_path, 0, ("bad host",))
    with pytest.raises(ConfigError, match="lowercase"):
        issue_connector(tmp_path, "TM")
    first = issue_connector(tmp_path, "tm").cert.read_bytes()
    with pytest.raises(ConfigError, match="exists"):
        issue_connector(tmp_path, "tm")
    assert issue_connector(tmp_path, "tm", force=True).cert.read_bytes() != first


async def test_a_connector_and_a_node_complete_mutual_tls(tmp_path: Path) -> None:
    init_ca(tmp_path)
    node = issue_node(tmp_path, 0, ("127.0.0.1",))
    connector = issue_connector(tmp_path, "tm")
    server_tls = NodeTls(tmp_path / "ca.pem", node.cert, node.key)
    client_tls = NodeTls(tmp_path / "ca.pem", connector.cert, connector.key)
    seen: list[set[str]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(peer_names(writer.get_extra_info("peercert")))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port,
                                        ssl=server_tls.server_context())
    async with server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_tls.client_context(), server_hostname="node-0")
        assert await reader.read() == b"ok"
        writer.close()
    assert seen[0] == {"connector.tm"}
    # as the web API serves browsers: no client certificate, the host checked by address
    port = free_port()
    api = await asyncio.start_server(handle, "127.0.0.1", port,
                                     ssl=server_tls.server_context(require_client_cert=False))
    async with api:
        browser = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=browser,
                                                       server_hostname="127.0.0.1")
        assert await reader.read() == b"ok"
        writer.close()
