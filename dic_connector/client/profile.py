"""A person's profile: who they are, their signing key, and how to reach the three nodes.

One YAML file per person (``--profile FILE``, else ``$DIC_PROFILE``, else
``~/.config/dic/profile.yaml``), overridden by ``DIC_CLIENT_*`` variables::

    name: alice                   # the principal name the admin registered
    role: researcher              # researcher | data_owner | admin
    key: alice.pem                # Ed25519 signing key (`dic keys new`); not for admins
    site: tm                      # data owners only
    ca_cert: pki/ca.pem           # the deployment CA the nodes' certificates chain to
    at: 0                         # the node to talk to (the others are read to compare)
    nodes:                        # the three nodes, in index order
      - {url: "https://node0.dic.example:8443", name: node-0, token_env: DIC_TOKEN_0}
      - {url: "https://node1.dic.example:8443", name: node-1, token_file: tokens/node-1}
      - {url: "https://node2.dic.example:8443", name: node-2, token: "dic_..."}

``name`` of a node is the identity its certificate carries (checked as the TLS server name,
default ``node-<i>``); tokens may come from the file (``token``), a variable
(``token_env``) or a file (``token_file``). Relative paths are relative to the profile.
Every problem is a :class:`~dic_connector.errors.ConfigError` naming the key.

:func:`connect` opens one ``aiohttp`` session and yields the person as a
:class:`~.researcher.Researcher`, :class:`~.data_owner.DataOwner` or :class:`~.admin.Admin`.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from dic_connector.client.admin import Admin
from dic_connector.client.data_owner import DataOwner
from dic_connector.client.node import NodeClient
from dic_connector.client.principal import Principal
from dic_connector.client.researcher import Researcher
from dic_connector.config import (
    int_value,
    known_keys,
    layered,
    path_value,
    secret_value,
    str_value,
)
from dic_connector.errors import ConfigError
from dic_connector.trust.signing import load_private_key
from dic_connector.vocabulary import Role

ENV_PREFIX = "DIC_CLIENT_"
DEFAULT_PROFILE = Path("~/.config/dic/profile.yaml")
_KEYS = {"name", "role", "key", "site", "ca_cert", "at", "nodes", "timeout_s"}
_NODE_KEYS = {"url", "name", "token", "token_env", "token_file"}


@dataclass(frozen=True)
class NodeAccess:
    """One node as this person reaches it."""

    url: str
    name: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class Profile:
    """Everything a person's commands need."""

    name: str
    role: Role
    nodes: tuple[NodeAccess, ...]
    key_file: Path | None = None
    site: str | None = None
    ca_cert: Path | None = None
    at: int = 0
    timeout_s: float = 60.0


def profile_path(given: Path | None, env: Mapping[str, str] | None = None) -> Path:
    """The profile file: ``given``, ``$DIC_PROFILE``, or the default in the home directory."""
    environ = os.environ if env is None else env
    if given is not None:
        return given
    if environ.get("DIC_PROFILE"):
        return Path(environ["DIC_PROFILE"])
    return DEFAULT_PROFILE.expanduser()


def load_profile(path: Path, env: Mapping[str, str] | None = None) -> Profile:
    """Read and check a profile (see the module docstring)."""
    environ = os.environ if env is None else env
    if not path.is_file():
        raise ConfigError(f"no profile at {path}: write one (see `dic study --help`) or pass "
                          "--profile")
    data = layered(path, environ, ENV_PREFIX)
    known_keys("", data, _KEYS)
    base = path.resolve().parent
    try:
        role = Role(str_value("role", data.get("role")))
    except ValueError:
        raise ConfigError(f"Config 'role' has value {data.get('role')!r}. Expected one of "
                          f"{', '.join(r.value for r in Role)}.") from None
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list) or len(raw_nodes) != 3:
        raise ConfigError("Config 'nodes' must list the three nodes, in index order.")
    nodes = []
    for i, entry in enumerate(raw_nodes):
        key = f"nodes[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"Config '{key}' must be a mapping (url, name, token...).")
        known_keys(key, entry, _NODE_KEYS)
        url = str_value(f"{key}.url", entry.get("url")).rstrip("/")
        if not url.startswith("https://"):
            raise ConfigError(f"Config '{key}.url' has value {url!r}. Expected an https:// "
                              "URL.")
        nodes.append(NodeAccess(url, str_value(f"{key}.name", entry.get("name", f"node-{i}")),
                                secret_value(key, entry, "token", base, environ) or ""))
    key_file = None if data.get("key") is None else path_value("key", data["key"], base)
    if role in (Role.RESEARCHER, Role.DATA_OWNER) and key_file is None:
        raise ConfigError(f"Config 'key' is required: a {role.value} signs what they send.")
    site = None if data.get("site") is None else str_value("site", data["site"])
    if role is Role.DATA_OWNER and site is None:
        raise ConfigError("Config 'site' is required for a data owner.")
    return Profile(
        name=str_value("name", data.get("name")), role=role, nodes=tuple(nodes),
        key_file=key_file, site=site,
        ca_cert=None if data.get("ca_cert") is None else path_value("ca_cert",
                                                                    data["ca_cert"], base),
        at=int_value("at", data.get("at", 0), 0, 2),
        timeout_s=float(int_value("timeout_s", data.get("timeout_s", 60), 1, 3600)))


def _ssl(profile: Profile) -> ssl.SSLContext:
    if profile.ca_cert is not None and not profile.ca_cert.is_file():
        raise ConfigError(f"Config 'ca_cert': {profile.ca_cert} not found")
    context = ssl.create_default_context(
        cafile=None if profile.ca_cert is None else str(profile.ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@contextlib.asynccontextmanager
async def connect(profile: Profile) -> AsyncIterator[Principal]:
    """The person of ``profile`` with clients of the three nodes over one session."""
    context = _ssl(profile)
    key = None if profile.key_file is None else load_private_key(profile.key_file)
    timeout = aiohttp.ClientTimeout(total=profile.timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        nodes = [NodeClient(base_url=n.url, session=session, token=n.token or None, ssl=context,
                            server_hostname=n.name, name=n.name, principal=profile.name)
                 for n in profile.nodes]
        person: Principal
        if profile.role is Role.RESEARCHER:
            assert key is not None
            person = Researcher(profile.name, key, nodes, at=profile.at)
        elif profile.role is Role.DATA_OWNER:
            assert key is not None and profile.site is not None
            person = DataOwner(profile.name, profile.site, key, nodes, at=profile.at)
        else:
            person = Admin(profile.name, nodes, at=profile.at)
        yield person


def profile_json(profile: Profile) -> dict[str, Any]:
    """The profile without its tokens (for ``dic whoami``)."""
    return {"name": profile.name, "role": profile.role.value, "site": profile.site,
            "at": profile.at, "nodes": [{"url": n.url, "name": n.name} for n in profile.nodes],
            "key": None if profile.key_file is None else str(profile.key_file),
            "ca_cert": None if profile.ca_cert is None else str(profile.ca_cert)}
