"""A complete three-node deployment on one machine: PKI, keyrings and node configs.

What the Helm chart does across three institutions, done in one directory for the embedded
demo and the end-to-end tests: a throwaway deployment CA (:func:`mpc.tls.write_dev_pki`)
issuing ``node-0..2`` and one ``connector.<site>`` certificate per site, a keyring per node
(mode 0600), and ``node-<i>.yaml`` configs that name all three nodes' control API
(``https://127.0.0.1:<port>``) and MPC listener, so each node serves HTTPS with its own
certificate and talks to its peers over mutual TLS. Servers bind to loopback only.

:func:`register_people` migrates the node databases and registers the same principals
(with their Ed25519 public keys) on all three nodes; :class:`LocalNodes` runs the nodes as
real OS processes (``dic node serve``), waits for ``/ready``, calls them as a person over
HTTPS, and stops them with SIGTERM (SIGKILL after a grace period). The demo, the end-to-end
tests and the benchmarks share these.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.errors import NodeProcessError
from dic_connector.node import admin
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
READY_TIMEOUT_S = 40.0
STOP_GRACE_S = 10.0
POLL_S = 0.1



@dataclass(frozen=True)
class LocalDeployment:
    """Where the files of a local three-node deployment are."""

    directory: Path
    config_files: tuple[Path, ...]
    pki: dict[str, NodeTls]

    def config(self, index: int) -> NodeConfig:
        return load_config(self.config_files[index], env={})

    def api_url(self, index: int) -> str:
        return self.config(index).peers[index].api_url


def write_local_deployment(directory: Path, sites: Sequence[str] = ("tm", "tr"),
                           database_urls: Sequence[str] | None = None,
                           extra: dict[str, Any] | None = None) -> LocalDeployment:
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
    return LocalDeployment(directory, tuple(files), pki)


async def register_people(deployment: LocalDeployment,
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
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text[-lines:])


class LocalNodes:
    """The three node processes of a local deployment, and HTTPS calls to them as a person."""

    def __init__(self, deployment: LocalDeployment, http: aiohttp.ClientSession) -> None:
        self.deployment = deployment
        self.http = http
        self.ssl = ssl.create_default_context(cafile=str(deployment.pki[NODE_NAMES[0]].ca_cert))
        self.urls = [deployment.api_url(i) for i in range(len(NODE_NAMES))]
        self.nodes: list[NodeProcess] = []
        self.tokens: list[dict[str, str]] = [{} for _ in NODE_NAMES]

    def start(self, logs: Path) -> None:
        """Start the three node processes (logs in ``logs/node-<i>.log``)."""
        for i in range(len(NODE_NAMES)):
            self.start_node(i, logs)

    def start_node(self, index: int, logs: Path) -> None:
        """Start (or restart) one node process; its log is appended to."""
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{NODE_NAMES[index]}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "dic_connector.cli", "node", "serve", "--config",
                 str(self.deployment.config_files[index])], stdin=subprocess.DEVNULL,
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
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise NodeProcessError(f"{node.name} exited with code "
                                       f"{node.process.returncode} while starting; its log "
                                       f"ends:\n{node.tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with self.http.get(self.urls[node.index] + "/ready", ssl=self.ssl,
                                         server_hostname=node.name) as response:
                    if response.status == 200:
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
        return [n.process.returncode for n in self.nodes]

    async def call(self, node: int, method: str, path: str, who: str,
                   body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        """Call node ``node`` as principal ``who``; the JSON answer, or NodeProcessError."""
        try:
            async with self.http.request(
                    method, self.urls[node] + path, json=body, ssl=self.ssl,
                    server_hostname=NODE_NAMES[node],
                    headers={"Authorization": f"Bearer {self.tokens[node][who]}"}) as response:
                answer = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NodeProcessError(f"{who} -> {NODE_NAMES[node]} {method} {path}: "
                                   f"{type(exc).__name__}") from exc
        if status not in ok:
            detail = answer.get("detail", answer) if isinstance(answer, dict) else answer
            raise NodeProcessError(f"{who} -> {NODE_NAMES[node]} {method} {path} answered "
                                   f"{status}: {detail}")
        return answer
