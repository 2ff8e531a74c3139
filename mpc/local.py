"""Three parties on one machine: a throwaway PKI and loopback addresses.

Used by the embedded demo, the benchmarks and the end-to-end tests, which run the three
parties as separate OS processes on 127.0.0.1 with real mutual TLS. A
:class:`LocalDeployment` is written to a directory (certificates plus ``deployment.json``)
so that each process can load it by path.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
from dataclasses import dataclass
from pathlib import Path

from mpc.channels import PeerAddress, TlsChannels
from mpc.session import DEFAULT_TIMEOUT_S, Party
from mpc.tls import NodeTls, write_dev_pki

LOOPBACK = "127.0.0.1"


#: Where :func:`free_port` looks when the kernel's ephemeral range cannot be read.
FALLBACK_EPHEMERAL = (32768, 60999)
#: The lowest port :func:`free_port` hands out.
LOWEST_PORT = 10_000


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return FALLBACK_EPHEMERAL


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that was free a moment ago, for a listener started later.

    It is drawn at random *outside* the kernel's ephemeral range: outgoing connections and
    port-0 listeners take their ports from that range, so a port handed out here is not
    taken by one of them before its listener binds (a port-0 probe is, now and then, on a
    busy machine).
    """
    low, high = _ephemeral_range()
    candidates = [p for p in range(LOWEST_PORT, 65536) if not low <= p <= high]
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.choice(candidates)
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port on {host} outside the ephemeral range {low}-{high}")


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
