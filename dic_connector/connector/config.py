"""The connector's configuration: site, certificate, the three nodes, and its datasets.

One YAML (or JSON) file, ``connector.yaml``, with ``DIC_CONNECTOR_*`` environment variables
laid over it (nested keys joined with ``__``: ``DIC_CONNECTOR_STATE_DATABASE_URL``,
``DIC_CONNECTOR_DATASETS__PILOT__SOURCE__PASSWORD``), loaded by the shared helpers of
:mod:`dic_connector.config`. Every problem is a :class:`~dic_connector.errors.ConfigError`
naming the full key (``Config 'datasets.pilot.trigger.every' has value 'soon'. ...``).
Relative paths are resolved against the directory of the file, so a config and its
mappings and certificates can move together::

    site: lmu
    tls: {ca_cert: pki/ca.pem, cert: pki/connector.lmu.pem, key: pki/connector.lmu.key}
    nodes:
      - {url: "https://node-0.example:8443", name: node-0}
      - {url: "https://node-1.example:8443", name: node-1}
      - {url: "https://node-2.example:8443", name: node-2}
    state_database_url: sqlite:///connector-state.db      # or postgresql://...
    listen: {host: 127.0.0.1, port: 8600}
    operator_token_sha256: 9f86d08...                       # `dic connector token`
    datasets:
      pilot:
        mapping: mappings/pilot_adrenal.yaml
        source: {kind: fhir-rest, base_url: "https://fhir.example/fhir",
                 auth: {kind: basic, username: dic, password_env: FHIR_PASSWORD}}
        trigger: {schedule: {every: 6h}}                   # or {schedule: {cron: "0 2 * * *"}}, or manual
        # or {subscription: {kind: backport, topic: <canonical>, endpoint: <url>,
        #                    secret_env: NOTIFY_SECRET, debounce: 30s, heartbeat: 60s,
        #                    reconcile: 6h}}               (see .subscriptions)
        consent: {mode: opt-out, opt_out_files: [optout.txt]}
        updates: full                                      # or delta (see .delta)

``updates`` is how a new version reaches the nodes: ``full`` (the default) shares every row
again; ``delta`` sends shares of the new and changed rows only and has each node keep the
unchanged rows of the previous version (:mod:`.delta`: the nodes then also learn which of
its row positions survive; a refused delta is sent in full).

Sources (``source.kind``; their settings are those of :mod:`dic_connector.sources`):

- ``fhir-rest``: ``base_url``, ``auth``, optional ``searches`` (``[{type: Observation,
  params: {code: "http://loinc.org|39156-5"}}]``; default: one unfiltered search per resource
  type the mapping's views read), ``page_size``;
- ``fhir-bulk``: ``base_url``, ``auth``, ``level`` (system, patient, group), ``group_id``,
  ``types`` (default: the mapping's resource types);
- ``ndjson``: ``directory``;
- ``sql``: ``url`` (or ``url_env``), the query is the mapping's ``query``.

Secrets are never required in the file: every ``password``, ``token``, ``url`` (SQL) and
SMART ``private_key_file`` may be given as ``<name>_env`` (an environment variable) or
``<name>_file`` (a file holding it), and their values never appear in reprs or messages.

The mapping of each dataset is loaded and checked when the configuration is, so a service
with a broken mapping does not start (the error names the mapping file, line and rule).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from croniter import croniter
from sqlalchemy.engine import URL

from dic_connector.config import (
    database_url,
    float_value,
    int_value,
    known_keys,
    layered,
    masked_url,
    path_value,
    secret_value,
    str_value,
)
from dic_connector.connector.consent import ConsentPolicy, parse_consent_policy
from dic_connector.connector.upload import N_NODES, NodeEndpoint
from dic_connector.errors import ConfigError
from dic_connector.mapping import CohortMapping, load_mapping
from dic_connector.sources import (
    AuthConfig,
    BasicAuth,
    BearerAuth,
    BulkExportConfig,
    FhirRestConfig,
    NdjsonConfig,
    NoAuth,
    SearchSpec,
    SmartBackendAuth,
    SourceConfig,
    SqlConfig,
)
from mpc.tls import NodeTls

ENV_PREFIX = "DIC_CONNECTOR_"
DEFAULT_PORT = 8600
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: shortest schedule interval: a pull more often than this is a misconfiguration
MIN_INTERVAL_S = 10.0


class TriggerKind(StrEnum):
    """What starts a run of a dataset."""

    #: only ``dic connector pull`` or ``POST /v1/datasets/{name}/runs``
    MANUAL = "manual"
    #: every ``every`` seconds, or at the times of a cron expression
    SCHEDULE = "schedule"
    #: soon after a FHIR Subscription notification says the source changed, and every
    #: ``reconcile`` seconds as a last line of defence (:mod:`.subscriptions`)
    SUBSCRIPTION = "subscription"


class SubscriptionKind(StrEnum):
    """Which kind of FHIR Subscription the connector keeps on the source server."""

    #: R5 Subscriptions Backport IG on R4: a topic canonical, filters, heartbeats, event numbers
    BACKPORT = "backport"
    #: classic R4 rest-hook: ``criteria`` is a search; notifications carry no event numbers
    REST_HOOK = "rest-hook"


#: backport payload contents the connector asks for (never ``full-resource``: a notification
#: must not carry patient data to the connector, which would not use it anyway)
PAYLOAD_CONTENTS = ("empty", "id-only")
#: the header the server sends on every notification (the value carries the shared secret)
NOTIFY_HEADER = "Authorization"


@dataclass(frozen=True)
class SubscriptionTrigger:
    """``trigger: {subscription: {...}}`` of a dataset whose source is a FHIR server."""

    kind: SubscriptionKind
    #: this connector's receiver as the FHIR server reaches it: ``.../fhir-notify/<dataset>``
    endpoint: str
    #: shared secret the server sends as ``Authorization: Bearer <secret>``
    secret: str = field(repr=False)
    #: topic canonical URL (backport)
    topic: str | None = None
    #: ``Type?params`` search (rest-hook)
    criteria: str | None = None
    #: backport filter criteria (``Patient?identifier=...`` or ``identifier=...``)
    filters: tuple[str, ...] = ()
    #: backport payload content: ``empty`` or ``id-only``
    content: str = "empty"
    #: quiet time after the last notification before the run (trailing edge)
    debounce_s: float = 30.0
    #: the heartbeat period asked of the server (backport) and the watchdog's period
    heartbeat_s: float = 60.0
    #: a full pull at least this often whatever the notifications say
    reconcile_s: float = 21600.0

    def describe(self) -> str:
        what = self.topic if self.kind is SubscriptionKind.BACKPORT else self.criteria
        return f"subscription ({self.kind.value} {what}), reconcile every {self.reconcile_s:g} s"


@dataclass(frozen=True)
class Trigger:
    kind: TriggerKind = TriggerKind.MANUAL
    #: interval between runs (schedule), seconds
    every_s: float | None = None
    #: five-field cron expression in UTC (schedule), e.g. ``0 2 * * *``
    cron: str | None = None
    #: the FHIR Subscription (subscription); ``every_s`` is then its ``reconcile`` period
    subscription: SubscriptionTrigger | None = None

    def describe(self) -> str:
        if self.kind is TriggerKind.MANUAL:
            return "manual"
        if self.subscription is not None:
            return self.subscription.describe()
        return f"every {self.every_s:g} s" if self.every_s is not None else f"cron '{self.cron}'"


class Updates(StrEnum):
    """How a dataset's new version reaches the nodes (``datasets.<name>.updates``)."""

    #: every row shared again
    FULL = "full"
    #: the changed rows only, on the previous version (:mod:`.delta`)
    DELTA = "delta"


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset the connector keeps current on the nodes."""

    name: str
    mapping: CohortMapping
    source: SourceConfig = field(repr=False)
    trigger: Trigger
    #: who is left out of each version (:mod:`.consent`)
    consent: ConsentPolicy = field(default_factory=ConsentPolicy)
    updates: Updates = Updates.FULL

    @property
    def source_kind(self) -> str:
        return {FhirRestConfig: "fhir-rest", BulkExportConfig: "fhir-bulk",
                NdjsonConfig: "ndjson", SqlConfig: "sql"}[type(self.source)]


@dataclass(frozen=True)
class ConnectorConfig:
    """The whole connector service."""

    site: str
    nodes: tuple[NodeEndpoint, ...]
    tls: NodeTls
    datasets: tuple[DatasetConfig, ...]
    state_database_url: URL = field(repr=False)
    base_dir: Path = Path(".")
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_PORT
    #: SHA-256 (hex) of the operator's bearer token for the /v1 endpoints; None: /v1 closed
    operator_token_sha256: str | None = field(default=None, repr=False)
    upload_timeout_s: float = 300.0
    #: attempts per node of an idempotent call (commit, deletion, erasure of superseded
    #: versions) before the node is named as not confirming; the first retry waits
    #: ``retry_delay_s``, each later one twice as long (:class:`.upload.Uploader`)
    node_attempts: int = 5
    retry_delay_s: float = 0.5
    #: runs of different datasets at the same time (memory grows with each)
    max_parallel_runs: int = 1
    #: the key of the row digests that count how versions differ (created if missing;
    #: default ``lineage.key`` beside the config file; :mod:`.lineage`)
    lineage_key_file: Path = Path("lineage.key")

    def dataset(self, name: str) -> DatasetConfig:
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        raise ConfigError(f"no dataset '{name}' in the connector configuration (configured: "
                          f"{', '.join(d.name for d in self.datasets)})")

    def describe(self) -> str:
        return (f"site {self.site}, state {masked_url(self.state_database_url)}, datasets "
                + ", ".join(f"{d.name} ({d.source_kind}, {d.trigger.describe()})"
                            for d in self.datasets))


def load_connector_config(path: Path | None, env: Mapping[str, str] | None = None
                          ) -> ConnectorConfig:
    """Read ``path`` with ``DIC_CONNECTOR_*`` overrides from ``env`` (``os.environ`` if None)."""
    environ = os.environ if env is None else env
    data = layered(path, environ, ENV_PREFIX)
    base = path.resolve().parent if path is not None else Path.cwd()
    return parse_connector_config(data, base, environ)


def parse_connector_config(data: Mapping[str, Any], base_dir: Path,
                           env: Mapping[str, str]) -> ConnectorConfig:
    known = {"site", "tls", "nodes", "datasets", "state_database_url", "listen",
             "operator_token_sha256", "upload_timeout_s", "node_attempts", "retry_delay_s",
             "max_parallel_runs", "lineage_key_file"}
    known_keys("", data, known)
    site = _name("site", data.get("site"))
    tls = _tls(data.get("tls"), base_dir)
    nodes = _nodes(data.get("nodes"))
    state_url = data.get("state_database_url") or f"sqlite:///{base_dir / 'connector-state.db'}"
    listen = _mapping("listen", data.get("listen") or {})
    known_keys("listen", listen, {"host", "port"})
    token_hash = data.get("operator_token_sha256")
    if token_hash is not None and not re.fullmatch(r"[0-9a-f]{64}", str(token_hash)):
        raise ConfigError("Config 'operator_token_sha256' must be 64 lowercase hex digits "
                          "(the SHA-256 that `dic connector token` prints).")
    raw_datasets = _mapping("datasets", data.get("datasets"))
    if not raw_datasets:
        raise ConfigError("Config 'datasets' must name at least one dataset.")
    datasets = tuple(_dataset(str(name), raw, base_dir, env)
                     for name, raw in raw_datasets.items())
    return ConnectorConfig(
        site=site, nodes=nodes, tls=tls, datasets=datasets,
        state_database_url=database_url(str(state_url), "state_database_url"),
        base_dir=base_dir,
        listen_host=str_value("listen.host", listen.get("host", "127.0.0.1")),
        listen_port=int_value("listen.port", listen.get("port", DEFAULT_PORT), 1, 65535),
        operator_token_sha256=None if token_hash is None else str(token_hash),
        upload_timeout_s=float(int_value("upload_timeout_s",
                                         data.get("upload_timeout_s", 300), 1, 86400)),
        node_attempts=int_value("node_attempts", data.get("node_attempts", 5), 1, 20),
        retry_delay_s=float_value("retry_delay_s", data.get("retry_delay_s", 0.5), 0.01, 60),
        max_parallel_runs=int_value("max_parallel_runs", data.get("max_parallel_runs", 1),
                                    1, 16),
        lineage_key_file=path_value("lineage_key_file", data.get("lineage_key_file",
                                                            "lineage.key"), base_dir))


def _mapping(key: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        raise ConfigError(f"Config '{key}' is required.")
    if not isinstance(value, Mapping):
        raise ConfigError(f"Config '{key}' has value {value!r}. Expected a mapping.")
    return value


def _name(key: str, value: Any) -> str:
    text = str_value(key, value)
    if not _NAME.match(text):
        raise ConfigError(f"Config '{key}' has value {text!r}. Expected letters, digits, "
                          "'_', '.', '-' (at most 64).")
    return text


def _tls(value: Any, base_dir: Path) -> NodeTls:
    data = _mapping("tls", value)
    known_keys("tls", data, {"ca_cert", "cert", "key"})
    return NodeTls(*(path_value(f"tls.{k}", data.get(k), base_dir) for k in ("ca_cert", "cert", "key")))


def _nodes(value: Any) -> tuple[NodeEndpoint, ...]:
    if not isinstance(value, list) or len(value) != N_NODES:
        raise ConfigError(f"Config 'nodes' must list exactly {N_NODES} nodes "
                          "({url: https://..., name: node-i}), in index order.")
    nodes = []
    for i, raw in enumerate(value):
        item = _mapping(f"nodes.{i}", raw)
        known_keys(f"nodes.{i}", item, {"url", "name"})
        url = str_value(f"nodes.{i}.url", item.get("url"))
        if not url.startswith("https://"):
            raise ConfigError(f"Config 'nodes.{i}.url' has value {url!r}. Expected https:// "
                              "(shares travel only over mutual TLS).")
        nodes.append(NodeEndpoint(url.rstrip("/"), str_value(f"nodes.{i}.name",
                                                             item.get("name", f"node-{i}"))))
    return tuple(nodes)


def duration_s(key: str, value: Any) -> float:
    """``30``, ``"90s"``, ``"15m"``, ``"6h"``, ``"1d"`` as seconds."""
    match = _DURATION.match(str(value)) if not isinstance(value, bool) else None
    if match is None:
        raise ConfigError(f"Config '{key}' has value {value!r}. Expected a duration such as "
                          "'90s', '15m', '6h' or '1d'.")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def _trigger(key: str, value: Any, base_dir: Path, env: Mapping[str, str]) -> Trigger:
    if value in (None, "manual"):
        return Trigger()
    data = _mapping(key, value)
    known_keys(key, data, {"schedule", "subscription"})
    if len(data) != 1:
        raise ConfigError(f"Config '{key}' needs exactly one of 'schedule' or 'subscription'.")
    if "subscription" in data:
        return _subscription(f"{key}.subscription", data["subscription"], base_dir, env)
    schedule = _mapping(f"{key}.schedule", data.get("schedule"))
    known_keys(f"{key}.schedule", schedule, {"every", "cron"})
    if ("every" in schedule) == ("cron" in schedule):
        raise ConfigError(f"Config '{key}.schedule' needs exactly one of 'every' or 'cron'.")
    if "every" in schedule:
        every = duration_s(f"{key}.schedule.every", schedule["every"])
        if every < MIN_INTERVAL_S:
            raise ConfigError(f"Config '{key}.schedule.every' is {every:g} s. Expected at "
                              f"least {MIN_INTERVAL_S:g} s.")
        return Trigger(TriggerKind.SCHEDULE, every_s=every)
    cron = str_value(f"{key}.schedule.cron", schedule["cron"])
    if not croniter.is_valid(cron) or len(cron.split()) != 5:
        raise ConfigError(f"Config '{key}.schedule.cron' has value {cron!r}. Expected five "
                          "cron fields (minute hour day month weekday), in UTC.")
    return Trigger(TriggerKind.SCHEDULE, cron=cron)


def _subscription(key: str, value: Any, base_dir: Path, env: Mapping[str, str]) -> Trigger:
    data = _mapping(key, value)
    known_keys(key, data, {"kind", "topic", "criteria", "filters", "content", "debounce",
                            "heartbeat", "reconcile", "endpoint", "secret", "secret_env",
                            "secret_file"})
    try:
        kind = SubscriptionKind(data.get("kind", "backport"))
    except ValueError:
        raise ConfigError(f"Config '{key}.kind' has value {data.get('kind')!r}. Expected "
                          "backport or rest-hook.") from None
    topic = criteria = None
    filters: tuple[str, ...] = ()
    if kind is SubscriptionKind.BACKPORT:
        if "criteria" in data:
            raise ConfigError(f"Config '{key}.criteria' is for kind rest-hook; a backport "
                              "subscription names a 'topic' (and optional 'filters').")
        topic = str_value(f"{key}.topic", data.get("topic"))
        if not topic.startswith(("http://", "https://", "urn:")) or "?" in topic:
            raise ConfigError(f"Config '{key}.topic' has value {topic!r}. Expected a topic's "
                              "canonical URL.")
        raw = data.get("filters") or []
        if not isinstance(raw, list):
            raise ConfigError(f"Config '{key}.filters' must be a list of filter criteria "
                              "('Patient?identifier=...').")
        filters = tuple(str_value(f"{key}.filters.{i}", f) for i, f in enumerate(raw))
    else:
        for backport_only in ("topic", "filters", "content"):
            if backport_only in data:
                raise ConfigError(f"Config '{key}.{backport_only}' is for kind backport; a "
                                  "rest-hook subscription names 'criteria'.")
        criteria = str_value(f"{key}.criteria", data.get("criteria"))
        if not re.fullmatch(r"[A-Z][A-Za-z]+\?\S*", criteria):
            raise ConfigError(f"Config '{key}.criteria' has value {criteria!r}. Expected a "
                              "search such as 'Observation?code=http://loinc.org|39156-5'.")
    content = str(data.get("content", "empty"))
    if content not in PAYLOAD_CONTENTS:
        raise ConfigError(f"Config '{key}.content' has value {content!r}. Expected "
                          f"{' or '.join(PAYLOAD_CONTENTS)} (never full-resource).")
    endpoint = str_value(f"{key}.endpoint", data.get("endpoint"))
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"Config '{key}.endpoint' has value {endpoint!r}. Expected the "
                          "http(s) URL at which the FHIR server reaches this connector's "
                          "/fhir-notify/<dataset>.")
    secret = secret_value(key, data, "secret", base_dir, env) or ""
    if len(secret) < 16:
        raise ConfigError(f"Config '{key}.secret' must have at least 16 characters.")
    debounce = duration_s(f"{key}.debounce", data.get("debounce", "30s"))
    heartbeat = duration_s(f"{key}.heartbeat", data.get("heartbeat", "60s"))
    reconcile = duration_s(f"{key}.reconcile", data.get("reconcile", "6h"))
    if heartbeat < 1:
        raise ConfigError(f"Config '{key}.heartbeat' is {heartbeat:g} s. Expected at least 1 s.")
    if reconcile < MIN_INTERVAL_S:
        raise ConfigError(f"Config '{key}.reconcile' is {reconcile:g} s. Expected at least "
                          f"{MIN_INTERVAL_S:g} s.")
    settings = SubscriptionTrigger(
        kind=kind, endpoint=endpoint, secret=secret, topic=topic, criteria=criteria,
        filters=filters, content=content, debounce_s=debounce, heartbeat_s=heartbeat,
        reconcile_s=reconcile)
    return Trigger(TriggerKind.SUBSCRIPTION, every_s=reconcile, subscription=settings)


def _auth(key: str, value: Any, base_dir: Path, env: Mapping[str, str]) -> AuthConfig:
    if value is None:
        return NoAuth()
    data = _mapping(key, value)
    kind = data.get("kind", "none")
    secrets = {f"{n}{s}" for n in ("password", "token") for s in ("", "_env", "_file")}
    if kind == "none":
        known_keys(key, data, {"kind"})
        return NoAuth()
    if kind == "basic":
        known_keys(key, data, {"kind", "username"} | secrets)
        return BasicAuth(str_value(f"{key}.username", data.get("username")),
                         secret_value(key, data, "password", base_dir, env) or "")
    if kind == "bearer":
        known_keys(key, data, {"kind"} | secrets)
        return BearerAuth(secret_value(key, data, "token", base_dir, env) or "")
    if kind == "smart":
        known_keys(key, data, {"kind", "client_id", "private_key_file", "alg", "key_id",
                                "scope", "token_url"})
        key_path = path_value(f"{key}.private_key_file", data.get("private_key_file"), base_dir)
        try:
            pem = key_path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"Config '{key}.private_key_file': {key_path} cannot be read "
                              f"({exc.strerror}).") from None
        alg = data.get("alg", "RS384")
        if alg not in ("RS384", "ES384"):
            raise ConfigError(f"Config '{key}.alg' has value {alg!r}. Expected RS384 or ES384.")
        return SmartBackendAuth(
            client_id=str_value(f"{key}.client_id", data.get("client_id")),
            private_key_pem=pem, alg=alg, key_id=data.get("key_id"),
            scope=str(data.get("scope", "system/*.read")), token_url=data.get("token_url"))
    raise ConfigError(f"Config '{key}.kind' has value {kind!r}. Expected none, basic, bearer "
                      "or smart.")


def _resource_types(mapping: CohortMapping) -> tuple[str, ...]:
    """The resource types the mapping's views read, Patient first, each once."""
    types = sorted({v.resource for v in mapping.views}, key=lambda t: (t != "Patient", t))
    return tuple(types)


def _searches(key: str, value: Any, mapping: CohortMapping) -> tuple[SearchSpec, ...]:
    if value is None:
        return tuple(SearchSpec(t) for t in _resource_types(mapping))
    if not isinstance(value, list) or not value:
        raise ConfigError(f"Config '{key}' must be a non-empty list of searches "
                          "({type: Observation, params: {code: ...}}).")
    specs = []
    for i, raw in enumerate(value):
        item = _mapping(f"{key}.{i}", raw)
        known_keys(f"{key}.{i}", item, {"type", "params", "include", "revinclude"})
        params = _mapping(f"{key}.{i}.params", item.get("params") or {})
        specs.append(SearchSpec(
            str_value(f"{key}.{i}.type", item.get("type")),
            tuple((str(k), str(v)) for k, v in params.items()),
            tuple(str(v) for v in item.get("include", ())),
            tuple(str(v) for v in item.get("revinclude", ()))))
    return tuple(specs)


def _source(key: str, value: Any, mapping: CohortMapping, base_dir: Path,
            env: Mapping[str, str]) -> SourceConfig:
    data = _mapping(key, value)
    kind = data.get("kind")
    sql = mapping.query is not None
    if sql != (kind == "sql"):
        raise ConfigError(f"Config '{key}.kind' has value {kind!r}, but mapping "
                          f"{mapping.file} is a {'SQL' if sql else 'FHIR'} mapping. Expected "
                          f"{'sql' if sql else 'fhir-rest, fhir-bulk or ndjson'}.")
    if kind == "fhir-rest":
        known_keys(key, data, {"kind", "base_url", "auth", "searches", "page_size"})
        return FhirRestConfig(
            base_url=str_value(f"{key}.base_url", data.get("base_url")).rstrip("/"),
            searches=_searches(f"{key}.searches", data.get("searches"), mapping),
            auth=_auth(f"{key}.auth", data.get("auth"), base_dir, env),
            page_size=int_value(f"{key}.page_size", data.get("page_size", 500), 1, 10_000))
    if kind == "fhir-bulk":
        known_keys(key, data, {"kind", "base_url", "auth", "level", "group_id", "types"})
        level = data.get("level", "system")
        if level not in ("system", "patient", "group"):
            raise ConfigError(f"Config '{key}.level' has value {level!r}. Expected system, "
                              "patient or group.")
        if (level == "group") != ("group_id" in data):
            raise ConfigError(f"Config '{key}.group_id' is required with level 'group' and "
                              "only there.")
        types = data.get("types")
        return BulkExportConfig(
            base_url=str_value(f"{key}.base_url", data.get("base_url")).rstrip("/"),
            level=level, group_id=data.get("group_id"),
            types=tuple(str(t) for t in types) if types else _resource_types(mapping),
            auth=_auth(f"{key}.auth", data.get("auth"), base_dir, env))
    if kind == "ndjson":
        known_keys(key, data, {"kind", "directory"})
        return NdjsonConfig(path_value(f"{key}.directory", data.get("directory"), base_dir))
    if kind == "sql":
        known_keys(key, data, {"kind", "url", "url_env", "url_file"})
        url = secret_value(key, data, "url", base_dir, env) or ""
        assert mapping.query is not None
        return SqlConfig(url=database_url(url, f"{key}.url").render_as_string(
            hide_password=False), query=mapping.query.sql,
            parameters=dict(mapping.query.parameters))
    raise ConfigError(f"Config '{key}.kind' has value {kind!r}. Expected fhir-rest, "
                      "fhir-bulk, ndjson or sql.")


def _dataset(name: str, value: Any, base_dir: Path, env: Mapping[str, str]) -> DatasetConfig:
    key = f"datasets.{name}"
    _name(key, name)
    data = _mapping(key, value)
    known_keys(key, data, {"mapping", "source", "trigger", "consent", "updates"})
    updates = data.get("updates", Updates.FULL.value)
    if updates not in {u.value for u in Updates}:
        raise ConfigError(f"Config '{key}.updates' has value {updates!r}. Expected full or "
                          "delta.")
    mapping = load_mapping(path_value(f"{key}.mapping", data.get("mapping"), base_dir))
    source = _source(f"{key}.source", data.get("source"), mapping, base_dir, env)
    trigger = _trigger(f"{key}.trigger", data.get("trigger"), base_dir, env)
    if trigger.kind is TriggerKind.SUBSCRIPTION and not isinstance(
            source, FhirRestConfig | BulkExportConfig):
        raise ConfigError(f"Config '{key}.trigger.subscription' needs a FHIR source "
                          "(fhir-rest or fhir-bulk): the subscription lives on its server.")
    return DatasetConfig(
        name=name, mapping=mapping, source=source, trigger=trigger,
        consent=parse_consent_policy(f"{key}.consent", data.get("consent"), base_dir),
        updates=Updates(updates))
