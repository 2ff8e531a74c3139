"""A complete three-node deployment on one machine: PKI, keyrings and node configs.

What the Helm chart does across three institutions, done in one directory for the embedded
demo and the end-to-end tests: a throwaway deployment CA (:func:`mpc.tls.write_dev_pki`)
issuing ``node-0..2`` and one ``connector.<site>`` certificate per site, a keyring per node
(mode 0600), and ``node-<i>.yaml`` configs that name all three nodes' control API
(``https://127.0.0.1:<port>``) and MPC listener, so each node serves HTTPS with its own
certificate and talks to its peers over mutual TLS. Servers bind to loopback only.

:func:`register_people` migrates the node databases and registers the same principals
(with their Ed25519 public keys) on all three nodes; :class:`LocalNodes` runs the nodes as
real OS processes (``dic node serve``), waits for ``/ready`` and stops them with SIGTERM
(SIGKILL after a grace period). People call the nodes with :mod:`dic_connector.client`:
:meth:`DeploymentFiles.clients` and :meth:`LocalNodes.clients` hand out a person's
:class:`~dic_connector.client.NodeClient` s of the three nodes, which trust the deployment CA
and expect each node's certificate name. The demo, the end-to-end tests and the benchmarks
share these.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.client import NodeClient
from dic_connector.errors import ApiError, NodeProcessError
from dic_connector.node import admin
from dic_connector.node.api.access import ACCESS_LOGGER
from dic_connector.node.config import NodeConfig, load_config
from dic_connector.trust import signing
from dic_connector.trust.keyring import NodeKeyring, write_keyring
from dic_connector.vocabulary import Role
from mpc.local import LOOPBACK, free_port
from mpc.tls import NodeTls, write_dev_pki

NODE_NAMES = ("node-0", "node-1", "node-2")
#: The repository (or installation) root: the directory holding the ``dic_connector``
#: package, ``mpc`` and, in a checkout, ``mappings/``.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
#: Three nodes importing numpy, scipy and aiohttp on two busy cores took 12 s at a load
#: of 5 and more than 40 s at a load of 10; a node that exits early fails at once anyway.
READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0
POLL_S = 0.1
#: A person's node-issued tokens: one ``{principal name: token}`` per node, by node index.
Tokens = Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class DeploymentFiles:
    """Where the files of a local three-node deployment are, and how a person reaches its
    nodes (their URLs and the deployment CA)."""

    directory: Path
    config_files: tuple[Path, ...]
    pki: dict[str, NodeTls]

    def config(self, index: int) -> NodeConfig:
        return load_config(self.config_files[index], env={})

    def api_url(self, index: int) -> str:
        return self.config(index).peers[index].api_url

    @functools.cached_property
    def ca_context(self) -> ssl.SSLContext:
        """A client TLS context trusting the deployment CA only (made once: loading the
        CA file for every call would cost more than the call)."""
        return ssl.create_default_context(cafile=str(self.pki[NODE_NAMES[0]].ca_cert))

    def client(self, index: int, http: aiohttp.ClientSession, token: str | None = None,
               principal: str = "anonymous") -> NodeClient:
        """Node ``index``'s control API as ``principal`` (with ``token``; None for the
        public endpoints), over ``http``, which the caller owns."""
        return NodeClient(base_url=self.api_url(index), session=http, token=token,
                          ssl=self.ca_context, server_hostname=NODE_NAMES[index],
                          principal=principal)

    def clients(self, http: aiohttp.ClientSession, tokens: Tokens,
                who: str) -> tuple[NodeClient, ...]:
        """``who``'s clients of the three nodes, with the tokens each node issued them."""
        return tuple(self.client(i, http, tokens[i][who], who) for i in range(len(NODE_NAMES)))


def write_local_deployment(directory: Path, sites: Sequence[str] = ("tm", "tr"),
                           database_urls: Sequence[str] | None = None,
                           extra: dict[str, Any] | None = None) -> DeploymentFiles:
    """Write PKI, keyrings and configs for three nodes on 127.0.0.1 into ``directory``.

    ``database_urls`` default to one SQLite file per node; ``extra`` config keys (e.g.
    ``coordination_interval_s``) go into every node's config.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = write_dev_pki(directory / "pki", [*NODE_NAMES, *(f"connector.{s}" for s in sites)])
    api_ports = [free_port() for _ in NODE_NAMES]
    mpc_ports = [free_port() for _ in NODE_NAMES]
    peers = [{"api_url": f"https://{LOOPBACK}:{api}", "mpc_host": LOOPBACK, "mpc_port": mpc,
              "name": name} for api, mpc, name in zip(api_ports, mpc_ports, NODE_NAMES,
                                                      strict=True)]
    files = []
    for i, name in enumerate(NODE_NAMES):
        keyring = directory / f"{name}.keyring.json"
        write_keyring(keyring, NodeKeyring.generate(name))
        tls = pki[name]
        config = {
            "node_index": i,
            "database_url": (database_urls[i] if database_urls else
                             f"sqlite:///{(directory / f'{name}.db').resolve()}"),
            "keyring_file": str(keyring.resolve()),
            "listen_host": LOOPBACK, "listen_port": api_ports[i],
            "tls": {"ca_cert": str(tls.ca_cert.resolve()), "cert": str(tls.cert.resolve()),
                    "key": str(tls.key.resolve())},
            "peers": peers, **(extra or {}),
        }
        path = directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        files.append(path)
    return DeploymentFiles(directory, tuple(files), pki)


async def register_people(deployment: DeploymentFiles,
                          people: Mapping[str, tuple[Role, str | None]],
                          keys: Mapping[str, Ed25519PrivateKey]) -> list[dict[str, str]]:
    """Migrate each node's database and register every principal on it (as an operator
    would with ``dic node migrate`` and ``dic admin add-principal``); tokens per node.

    One node after the other: Alembic's command API is not safe to run in parallel threads.
    """
    out: list[dict[str, str]] = []
    for index in range(len(NODE_NAMES)):
        config = deployment.config(index)
        await admin.migrate_database(config)
        tokens: dict[str, str] = {}
        for name, (role, site) in people.items():
            public = base64.b64encode(signing.public_key_bytes(keys[name])).decode()
            created = await admin.add_principal(config, name, role, site, public, token_days=1)
            if created.token is None:
                raise NodeProcessError(f"{NODE_NAMES[index]}: no token issued for {name}")
            tokens[name] = created.token
        out.append(tokens)
    return out


def _child_env() -> dict[str, str]:
    """The nodes' environment: this package first on the path, no ``DIC_*`` overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIC_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class NodeProcess:
    """One ``dic node serve`` child process and its log file."""

    index: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def name(self) -> str:
        return NODE_NAMES[self.index]

    def tail(self, lines: int = 15) -> str:
        """The log's last ``lines``, without the access log (which would crowd them out)."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        text = [line for line in text if f" {ACCESS_LOGGER}: " not in line]
        return "\n".join(f"    {line}" for line in text[-lines:])


class LocalNodes:
    """The three node processes of a local deployment, and the clients people call them
    with (the tokens :func:`register_people` issued, over the caller's session)."""

    def __init__(self, deployment: DeploymentFiles, http: aiohttp.ClientSession,
                 tokens: Tokens = (), profile_dir: Path | None = None) -> None:
        self.deployment = deployment
        #: when set, each node runs under :mod:`cProfile`, which writes
        #: ``<profile_dir>/<node>.prof`` when the node exits cleanly (SIGTERM, :meth:`stop`)
        self.profile_dir = profile_dir
        self.http = http
        self.urls = [deployment.api_url(i) for i in range(len(NODE_NAMES))]
        self.nodes: list[NodeProcess] = []
        self.tokens = list(tokens) or [{} for _ in NODE_NAMES]
        #: The exit codes of the last :meth:`stop`, by node (None: still running).
        self.exit_codes: list[int | None] = []

    def client(self, node: int, who: str) -> NodeClient:
        """Node ``node``'s control API as ``who``."""
        return self.deployment.client(node, self.http, self.tokens[node][who], who)

    def clients(self, who: str) -> tuple[NodeClient, ...]:
        """``who``'s clients of the three nodes (for a Researcher, DataOwner or Admin)."""
        return self.deployment.clients(self.http, self.tokens, who)

    @contextlib.asynccontextmanager
    async def running(self, logs: Path) -> AsyncIterator[LocalNodes]:
        """Start the three nodes, wait until they are ready, and stop them on leaving,
        whatever happened (the exit codes are then in :attr:`exit_codes`)."""
        try:
            self.start(logs)
            await self.wait_ready()
            yield self
        finally:
            await self.stop()

    def start(self, logs: Path) -> None:
        """Start the three node processes (logs in ``logs/node-<i>.log``)."""
        for i in range(len(NODE_NAMES)):
            self.start_node(i, logs)

    def start_node(self, index: int, logs: Path) -> None:
        """Start (or restart) one node process; its log is appended to."""
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{NODE_NAMES[index]}.log"
        profiler: list[str] = []
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            profiler = ["-m", "cProfile", "-o",
                        str(self.profile_dir / f"{NODE_NAMES[index]}.prof")]
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, *profiler, "-m", "dic_connector.cli", "node", "serve",
                 "--config", str(self.deployment.config_files[index])],
                stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, env=_child_env(),
                cwd=self.deployment.directory)
        node = NodeProcess(index, process, log)
        self.nodes = [n for n in self.nodes if n.index != index] + [node]
        self.nodes.sort(key=lambda n: n.index)

    def kill(self, index: int) -> None:
        """SIGKILL one node, as a crash would (no clean shutdown)."""
        for node in self.nodes:
            if node.index == index and node.process.poll() is None:
                node.process.kill()
                node.process.wait(10)

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S,
                         indices: Sequence[int] | None = None) -> None:
        wanted = [n for n in self.nodes if indices is None or n.index in indices]
        await asyncio.gather(*(self._ready(node, timeout_s) for node in wanted))

    async def _ready(self, node: NodeProcess, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        public = self.deployment.client(node.index, self.http)
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise NodeProcessError(f"{node.name} exited with code "
                                       f"{node.process.returncode} while starting; its log "
                                       f"ends:\n{node.tail()}")
            with contextlib.suppress(ApiError):  # not listening yet, or 503: not ready
                await public.ready()
                return
            await asyncio.sleep(POLL_S)
        raise NodeProcessError(f"{node.name} not ready after {timeout_s:.0f} s; its log "
                               f"ends:\n{node.tail()}")

    async def stop(self, grace_s: float = STOP_GRACE_S) -> list[int | None]:
        """SIGTERM every node, SIGKILL what is still running after ``grace_s``; the exit
        codes."""
        for node in self.nodes:
            if node.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(n.process.poll() is None for n in self.nodes):
            await asyncio.sleep(0.05)
        for node in self.nodes:
            if node.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    node.process.kill()
                node.process.wait(5)
        self.exit_codes = [n.process.returncode for n in self.nodes]
        return self.exit_codes
