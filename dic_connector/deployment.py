"""A complete three-node deployment on one machine: PKI, keyrings and node configs.

What the Helm chart does across three institutions, done in one directory for the embedded
demo and the end-to-end tests: a throwaway deployment CA (:func:`mpc.tls.write_dev_pki`)
issuing ``node-0..2`` and one ``connector.<site>`` certificate per site, a keyring per node
(mode 0600), and ``node-<i>.yaml`` configs that name all three nodes' control API
(``https://127.0.0.1:<port>``) and MPC listener, so each node serves HTTPS with its own
certificate and talks to its peers over mutual TLS. Servers bind to loopback only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mpc.local import LOOPBACK, free_port
from mpc.tls import NodeTls, write_dev_pki

from .config import NodeConfig, load_config
from .keyring import write_keyring
from .store.crypto import NodeKeyring

NODE_NAMES = ("node-0", "node-1", "node-2")


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
