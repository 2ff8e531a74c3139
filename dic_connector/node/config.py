"""Node configuration: one frozen, typed value loaded once at start-up.

Sources, later ones overriding earlier ones: defaults, a JSON or YAML file, and environment
variables with the prefix ``DIC_`` (``DIC_DATABASE_URL``, ``DIC_NODE_INDEX``, ...; nested keys
joined with ``__``, e.g. ``DIC_AUTH__JWT_AUDIENCE``), read by :mod:`dic_connector.config`.
The variables of the other components on the same machine are not the node's:
``DIC_CONNECTOR_*`` (the connector), ``DIC_CLIENT_*`` and ``DIC_PROFILE`` (a person's
profile) and ``DIC_TOKEN_*`` (the profile's example token variables); every other ``DIC_*``
variable is a node setting, and an unknown one is refused, naming it.
Every problem is a :class:`~dic_connector.errors.ConfigError` naming the key. The database
URL is checked when the file is loaded and its password never appears in a ``repr``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dic_connector.config import (
    bool_value,
    database_url,
    float_value,
    int_value,
    layered,
    masked_url,
    str_value,
)
from dic_connector.errors import ConfigError
from mpc.tls import NodeTls

ENV_PREFIX = "DIC_"
#: ``DIC_*`` variables that belong to the connector and the client, never to a node
OTHER_COMPONENTS = ("DIC_CONNECTOR_", "DIC_CLIENT_", "DIC_PROFILE", "DIC_TOKEN_")
DEFAULT_MIN_CELL_COUNT = 5


def default_concurrency() -> int:
    """``max_concurrent_computations`` unless configured: the cores, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


#: The share of the node's memory its computations may reserve by default: the rest is the
#: process itself (~150 MiB), the database driver and the API's buffers.
DEFAULT_MEMORY_SHARE = 0.6


def memory_limit_bytes() -> int | None:
    """The memory this process may use: the cgroup v2 limit (a Kubernetes pod's
    ``resources.limits.memory``) if there is one, else the machine's; None if unknown."""
    limits = []
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            limits.append(int(text))
    except OSError:
        pass
    with contextlib.suppress(ValueError, OSError):
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(limits) if limits else None


def default_memory_budget_mib() -> int:
    """``memory_budget_mib`` unless configured: 60 % of :func:`memory_limit_bytes` (4 GiB
    if that is unknown), at least 256 MiB."""
    limit = memory_limit_bytes()
    return max(256, int((limit or 4 << 30) * DEFAULT_MEMORY_SHARE) >> 20)


@dataclass(frozen=True)
class AuthConfig:
    """How callers authenticate: bearer tokens issued by the node, and/or OIDC JWTs."""

    #: JWKS document (file path) against which OIDC JWTs are verified offline; None: no JWTs.
    jwks_file: Path | None = None
    #: Required ``iss`` of accepted JWTs.
    jwt_issuer: str | None = None
    #: Required ``aud`` of accepted JWTs.
    jwt_audience: str | None = None
    #: Accepted JWT signature algorithms (asymmetric only: no HS* shared secrets).
    jwt_algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    #: Failed authentications a client address (or a token id) may have in a burst before
    #: it is answered 429 (:mod:`dic_connector.node.api.throttle`).
    failure_burst: int = 10
    #: How fast that allowance refills (failures per second).
    failure_refill_per_s: float = 1.0


@dataclass(frozen=True)
class PerturbationConfig:
    """Consistent cell-key perturbation of opened counts (``perturbation:`` in the file; off
    when absent): the perturbation table's parameters, as in the ``ptable`` R package
    (:mod:`dic_connector.node.analyses.ptable` checks them fully)."""

    #: D: the largest absolute noise added to a count.
    max_noise: int
    #: V: the noise variance.
    variance: float
    #: js: perturbed counts are never in 1..js.
    js: int = 0
    #: The method (only the cell-key method).
    method: str = "cellkey"
    #: Let recipes that do not perturb yet (``mean``, ``summary``, ...) open exact n and
    #: sums; off: they are refused while counts are perturbed.
    allow_exact: bool = False


_PERTURBATION_KEYS = {"method", "max_noise", "variance", "js", "allow_exact"}


def _perturbation(value: Any) -> PerturbationConfig | None:
    if value is None or value is False or value == {}:
        return None
    if isinstance(value, str):  # DIC_PERTURBATION as JSON
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError("Config 'perturbation' is not a valid JSON mapping.") from None
    if not isinstance(value, Mapping) or set(value) - _PERTURBATION_KEYS \
            or not {"max_noise", "variance"} <= set(value):
        raise ConfigError("Config 'perturbation' must be a mapping {method: cellkey, "
                          "max_noise: D, variance: V, js: 0}.")
    method = str_value("perturbation.method", value.get("method", "cellkey"))
    if method != "cellkey":
        raise ConfigError(f"Config 'perturbation.method' has value {method!r}. Expected "
                          "'cellkey'.")
    d = int_value("perturbation.max_noise", value["max_noise"], 1, 20)
    return PerturbationConfig(
        d, float_value("perturbation.variance", value["variance"], 1e-6, 0.75 * d * d - 1e-9),
        int_value("perturbation.js", value.get("js", 0), 0, d - 1),
        allow_exact=bool_value("perturbation.allow_exact", value.get("allow_exact", False)))


@dataclass(frozen=True)
class PeerConfig:
    """Where one of the three nodes is reached (the list includes this node itself)."""

    #: Base URL of the node's control API (``https://...``), called over mutual TLS.
    api_url: str
    #: Host and port of the node's MPC channel listener (:class:`mpc.mux.ChannelPool`: one
    #: connection per peer pair, shared by every session).
    mpc_host: str
    mpc_port: int
    #: The name the node's certificate carries (subjectAltName dNSName), ``node-<i>``.
    name: str


@dataclass(frozen=True)
class NodeConfig:
    """Everything one compute node needs to run its control API."""

    #: This node's index among the three (0, 1 or 2).
    node_index: int
    #: SQLAlchemy URL of the node database (sqlite:///... embedded, postgresql://... prod);
    #: checked at load, shown without its password.
    database_url: str = field(repr=False)
    #: Host the control API binds to.
    listen_host: str = "127.0.0.1"
    #: Port of the control API (0: any free port, for tests).
    listen_port: int = 8443
    #: File holding the node's at-rest key material (created by ``dic`` tooling).
    keyring_file: Path | None = None
    #: Smallest count any opened cell may have, unless a data owner sets a higher one.
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT
    #: Smallest query set each contributing dataset version must have (None: k; never
    #: below the k in force).
    min_subset_size: int | None = None
    #: Most levels (cells, groups, bins) a table or grouping may have (None: no limit
    #: beyond each analysis' own); a data owner's policy may lower it.
    max_levels: int | None = None
    #: Check every release against the release ledger (differencing across releases);
    #: a data owner's policy may force it on for its dataset, never off.
    ledger: bool = True
    #: An upload still ``receiving`` this long after it began is abandoned and erased.
    stale_upload_after_s: int = 3600
    #: How often the node looks for abandoned uploads.
    cleanup_interval_s: int = 300
    auth: AuthConfig = field(default_factory=AuthConfig)
    #: Serve HTTPS with this node's certificate; client certificates (connectors) are
    #: verified against the deployment CA when presented. None: plain HTTP (tests, demo).
    tls: NodeTls | None = None
    #: The three nodes in index order (this one included). Empty: a standalone node that
    #: accepts and verifies requests but never computes (tests of the API alone).
    peers: tuple[PeerConfig, ...] = ()
    #: How often the coordinator looks at approved requests (seconds).
    coordination_interval_s: float = 1.0
    #: The longest a status read waits for a change (``GET /v1/requests/{id}?wait=``);
    #: a longer ``wait`` is cut to it. 0: status reads never wait.
    status_wait_max_s: float = 30.0
    #: An approved request that cannot start (a node down or disagreeing) fails after this.
    coordination_timeout_s: int = 3600
    #: A computation fails when a peer sends nothing for this long (seconds per message).
    mpc_timeout_s: int = 60
    #: Computations this node runs at once (each its own MPC session); a start beyond it
    #: waits (its prepare answers not ready). Default: the cores, at most 4.
    max_concurrent_computations: int = field(default_factory=default_concurrency)
    #: The memory (MiB) the computations running at once on this node may need together, by
    #: their recipes' estimates (:meth:`~dic_connector.node.analyses.base.Analysis.
    #: memory_estimate`); the coordinator keeps to the smallest of the three. A computation
    #: that alone needs more still runs, alone. Default: 60 % of the pod's or machine's.
    memory_budget_mib: int = field(default_factory=default_memory_budget_mib)
    #: Attempts to deliver one outbox message before it is parked for an admin (a 4xx
    #: refusal other than 404 parks it at once).
    replication_max_attempts: int = 30
    #: The first retry's delay; it doubles per attempt up to ``replication_backoff_max_s``
    #: (half of it random: "equal jitter").
    replication_backoff_s: float = 0.5
    replication_backoff_max_s: float = 60.0
    #: Cell-key perturbation of the counts that count and frequency open (None: off, exact
    #: counts); the three nodes must have the same setting.
    perturbation: PerturbationConfig | None = None
    #: How often the node asks each peer for its audit chain head and checks that the peer's
    #: chain still holds the head recorded last (seconds; :mod:`~dic_connector.node.
    #: coordination.exchange`): truncation or rewrite of a peer's newest entries shows
    #: within this time even when no request follows.
    audit_exchange_interval_s: float = 60.0
    #: Serve without peers or TLS on purpose (the API alone: tests, a catalogue); without
    #: it ``dic node serve`` refuses a node that could never compute.
    standalone: bool = False

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__dataclass_fields__
                           if name != "database_url")
        return f"NodeConfig(database_url={masked_url(self.database_url)!r}, {fields})"

    @property
    def node_id(self) -> str:
        return f"node-{self.node_index}"

    @property
    def coordinated(self) -> bool:
        """True when the node knows its two peers and computes with them."""
        return len(self.peers) == 3












_TOP_KEYS = {"node_index", "database_url", "listen_host", "listen_port", "keyring_file",
             "min_cell_count", "min_subset_size", "max_levels", "ledger",
             "stale_upload_after_s", "cleanup_interval_s", "auth", "tls",
             "peers", "coordination_interval_s", "coordination_timeout_s", "mpc_timeout_s",
             "max_concurrent_computations", "memory_budget_mib", "status_wait_max_s",
             "replication_max_attempts", "replication_backoff_s", "replication_backoff_max_s",
             "audit_exchange_interval_s", "standalone", "perturbation"}
_PEER_KEYS = {"api_url", "mpc_host", "mpc_port", "name"}
_AUTH_KEYS = {"jwks_file", "jwt_issuer", "jwt_audience", "jwt_algorithms", "failure_burst",
              "failure_refill_per_s"}




def _peers(value: Any, has_tls: bool) -> tuple[PeerConfig, ...]:
    if value is None or value == []:
        return ()
    if isinstance(value, str):  # DIC_PEERS as a JSON list
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError("Config 'peers' is not a valid JSON list.") from None
    if not isinstance(value, list) or len(value) != 3:
        raise ConfigError("Config 'peers' must list exactly the three nodes, in index order.")
    peers = []
    for i, entry in enumerate(value):
        key = f"peers[{i}]"
        if not isinstance(entry, Mapping) or set(entry) - _PEER_KEYS \
                or not {"api_url", "mpc_host", "mpc_port"} <= set(entry):
            raise ConfigError(f"Config '{key}' must have 'api_url', 'mpc_host', 'mpc_port' "
                              f"and optionally 'name'.")
        url = str_value(f"{key}.api_url", entry["api_url"])
        if not url.startswith("https://"):
            raise ConfigError(f"Config '{key}.api_url' has value {url!r}. Expected an "
                              f"https:// URL: nodes talk over mutual TLS only.")
        peers.append(PeerConfig(url.rstrip("/"), str_value(f"{key}.mpc_host", entry["mpc_host"]),
                                int_value(f"{key}.mpc_port", entry["mpc_port"], 1, 65535),
                                str_value(f"{key}.name", entry.get("name", f"node-{i}"))))
    if not has_tls:
        raise ConfigError("Config 'peers' needs 'tls': nodes authenticate each other by "
                          "their certificates.")
    return tuple(peers)


def _database_url(value: Any) -> str:
    text = str_value("database_url", value)
    database_url(text)
    return text


def parse_config(data: Mapping[str, Any]) -> NodeConfig:
    """Validate a merged mapping into a :class:`NodeConfig`."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"Config has unknown keys {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    for required in ("node_index", "database_url"):
        if required not in data:
            raise ConfigError(f"Config '{required}' is missing.")
    auth_data = data.get("auth") or {}
    if not isinstance(auth_data, Mapping):
        raise ConfigError("Config 'auth' must be a mapping.")
    unknown = set(auth_data) - _AUTH_KEYS
    if unknown:
        raise ConfigError(f"Config 'auth' has unknown keys {sorted(unknown)}")
    algorithms = auth_data.get("jwt_algorithms", AuthConfig.jwt_algorithms)
    if isinstance(algorithms, str):
        algorithms = tuple(a.strip() for a in algorithms.split(",") if a.strip())
    if any(a.upper().startswith("HS") or a == "none" for a in algorithms):
        raise ConfigError("Config 'auth.jwt_algorithms' may list asymmetric algorithms only.")
    jwks = auth_data.get("jwks_file")
    auth = AuthConfig(
        jwks_file=Path(jwks) if jwks else None,
        jwt_issuer=auth_data.get("jwt_issuer"),
        jwt_audience=auth_data.get("jwt_audience"),
        jwt_algorithms=tuple(algorithms),
        failure_burst=int_value("auth.failure_burst", auth_data.get(
            "failure_burst", AuthConfig.failure_burst), 1, 1_000_000),
        failure_refill_per_s=float_value("auth.failure_refill_per_s", auth_data.get(
            "failure_refill_per_s", AuthConfig.failure_refill_per_s), 0.001, 1_000_000),
    )
    if auth.jwks_file is not None and not (auth.jwt_issuer and auth.jwt_audience):
        raise ConfigError("Config 'auth.jwks_file' needs 'auth.jwt_issuer' and "
                          "'auth.jwt_audience' too.")
    keyring = data.get("keyring_file")
    tls_data = data.get("tls") or None
    if tls_data is not None and (not isinstance(tls_data, Mapping)
                                 or set(tls_data) != {"ca_cert", "cert", "key"}):
        raise ConfigError("Config 'tls' must have exactly 'ca_cert', 'cert' and 'key' (paths).")
    return NodeConfig(
        node_index=int_value("node_index", data["node_index"], 0, 2),
        database_url=_database_url(data["database_url"]),
        listen_host=str_value("listen_host", data.get("listen_host", "127.0.0.1")),
        listen_port=int_value("listen_port", data.get("listen_port", 8443), 0, 65535),
        keyring_file=Path(keyring) if keyring else None,
        min_cell_count=int_value("min_cell_count",
                            data.get("min_cell_count", DEFAULT_MIN_CELL_COUNT), 1, 10_000),
        min_subset_size=None if data.get("min_subset_size") is None else int_value(
            "min_subset_size", data["min_subset_size"], 1, 10_000),
        max_levels=None if data.get("max_levels") is None else int_value(
            "max_levels", data["max_levels"], 2, 1_000_000),
        ledger=bool_value("ledger", data.get("ledger", True)),
        stale_upload_after_s=int_value("stale_upload_after_s",
                                  data.get("stale_upload_after_s", 3600), 0, 7 * 86_400),
        cleanup_interval_s=int_value("cleanup_interval_s", data.get("cleanup_interval_s", 300),
                                1, 86_400),
        auth=auth,
        peers=_peers(data.get("peers"), tls_data is not None),
        coordination_interval_s=float_value("coordination_interval_s",
                                       data.get("coordination_interval_s", 1.0), 0.01, 3600),
        status_wait_max_s=float_value("status_wait_max_s", data.get("status_wait_max_s", 30.0),
                                      0, 3600),
        coordination_timeout_s=int_value("coordination_timeout_s",
                                    data.get("coordination_timeout_s", 3600), 1, 30 * 86_400),
        mpc_timeout_s=int_value("mpc_timeout_s", data.get("mpc_timeout_s", 60), 1, 86_400),
        max_concurrent_computations=int_value(
            "max_concurrent_computations",
            data.get("max_concurrent_computations", default_concurrency()), 1, 64),
        memory_budget_mib=int_value(
            "memory_budget_mib", data.get("memory_budget_mib", default_memory_budget_mib()),
            64, 1 << 30),
        replication_max_attempts=int_value(
            "replication_max_attempts", data.get("replication_max_attempts", 30), 1, 10_000),
        replication_backoff_s=float_value(
            "replication_backoff_s", data.get("replication_backoff_s", 0.5), 0.001, 3600),
        replication_backoff_max_s=float_value(
            "replication_backoff_max_s", data.get("replication_backoff_max_s", 60.0), 0.001,
            86_400),
        audit_exchange_interval_s=float_value(
            "audit_exchange_interval_s", data.get("audit_exchange_interval_s", 60.0), 0.05,
            86_400),
        standalone=bool_value("standalone", data.get("standalone", False)),
        perturbation=_perturbation(data.get("perturbation")),
        tls=None if tls_data is None else NodeTls(
            Path(str_value("tls.ca_cert", tls_data["ca_cert"])), Path(str_value("tls.cert", tls_data["cert"])),
            Path(str_value("tls.key", tls_data["key"]))),
    )


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> NodeConfig:
    """Defaults < file < ``DIC_*`` environment variables (not the connector's or client's)."""
    return parse_config(layered(path, env, ENV_PREFIX, OTHER_COMPONENTS))
