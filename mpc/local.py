"""Three parties on one machine: a throwaway PKI and loopback addresses.

Used by the embedded demo, the benchmarks and the end-to-end tests, which run the three
parties as separate OS processes on 127.0.0.1 with real mutual TLS. A
:class:`LocalDeployment` is written to a directory (certificates plus ``deployment.json``)
so that each process can load it by path.
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass
from pathlib import Path

from mpc.channels import PeerAddress, TlsChannels
from mpc.session import DEFAULT_TIMEOUT_S, Party
from mpc.tls import NodeTls, write_dev_pki

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LocalDeployment:
    """Where the three local parties listen, and their TLS material."""

    directory: Path
    peers: tuple[PeerAddress, PeerAddress, PeerAddress]

    @classmethod
    def create(cls, directory: Path, names: tuple[str, str, str] = ("node-0", "node-1", "node-2"),
               ports: tuple[int, int, int] | None = None) -> LocalDeployment:
        write_dev_pki(directory, names)
        ports = ports or (free_port(), free_port(), free_port())
        peers = tuple(PeerAddress(LOOPBACK, port, name) for port, name in zip(ports, names, strict=True))
        deployment = cls(directory, peers)  # type: ignore[arg-type]
        (directory / "deployment.json").write_text(json.dumps(
            {"peers": [{"host": p.host, "port": p.port, "name": p.name} for p in peers]}))
        return deployment

    @classmethod
    def load(cls, directory: Path) -> LocalDeployment:
        data = json.loads((directory / "deployment.json").read_text())
        peers = tuple(PeerAddress(p["host"], int(p["port"]), p["name"]) for p in data["peers"])
        return cls(directory, peers)  # type: ignore[arg-type]

    def tls(self, index: int) -> NodeTls:
        name = self.peers[index].name
        return NodeTls(self.directory / "ca.pem", self.directory / f"{name}.pem",
                       self.directory / f"{name}.key")

    async def connect(self, index: int, timeout_s: float = DEFAULT_TIMEOUT_S,
                      connect_timeout_s: float = 30.0) -> Party:
        channels = await TlsChannels.connect(index, self.peers, self.tls(index),
                                             connect_timeout_s)
        return Party(channels, timeout_s)
