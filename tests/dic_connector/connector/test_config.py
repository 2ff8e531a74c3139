"""connector.yaml: loading, environment overrides, and errors that name the key."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from dic_connector.connector.config import (
    TriggerKind,
    Updates,
    duration_s,
    load_connector_config,
    parse_connector_config,
)
from dic_connector.connector.consent import ConsentMode
from dic_connector.errors import ConfigError, MappingFileError
from dic_connector.sources import BasicAuth, FhirRestConfig, NdjsonConfig, SqlConfig

REPO = Path(__file__).resolve().parents[3]
SQL_MAPPING = """\
format: dic-cohort/1
name: sql_cohort
query:
  sql: "SELECT id AS key, age FROM patients"
  key: key
columns:
  - {name: key, kind: patient_key, source: key}
  - {name: age, kind: numeric, unit: a, source: age, min: 0, max: 120}
"""


def base(tmp: Path) -> dict[str, Any]:
    shutil.copy(REPO / "mappings" / "pilot_adrenal.yaml", tmp / "pilot.yaml")
    return {
        "site": "lmu",
        "tls": {"ca_cert": "pki/ca.pem", "cert": "pki/c.pem", "key": "pki/c.key"},
        "nodes": [{"url": f"https://127.0.0.1:{8443 + i}/", "name": f"node-{i}"}
                  for i in range(3)],
        "datasets": {"pilot": {"mapping": "pilot.yaml",
                               "source": {"kind": "fhir-rest", "base_url": "http://f/fhir/"},
                               "trigger": {"schedule": {"every": "6h"}}}},
    }


def write(tmp: Path, data: dict[str, Any]) -> Path:
    path = tmp / "connector.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = load_connector_config(write(tmp_path, base(tmp_path)), env={})
    assert config.site == "lmu"
    assert config.tls.cert == tmp_path / "pki" / "c.pem"
    assert [n.url for n in config.nodes] == [f"https://127.0.0.1:{8443 + i}" for i in range(3)]
    assert config.state_database_url.drivername == "sqlite+aiosqlite"
    assert config.state_database_url.database == str(tmp_path / "connector-state.db")
    (dataset,) = config.datasets
    assert dataset.mapping.name == "pilot_adrenal"
    assert dataset.trigger.kind is TriggerKind.SCHEDULE and dataset.trigger.every_s == 21600
    assert isinstance(dataset.source, FhirRestConfig)
    assert dataset.source.base_url == "http://f/fhir"
    # one unfiltered search per resource type the views read, Patient first
    assert [s.resource_type for s in dataset.source.searches] == [
        "Patient", "Condition", "Observation", "Procedure"]
    assert "lmu" in config.describe() and "fhir-rest" in config.describe()
    assert (config.node_attempts, config.retry_delay_s) == (5, 0.5)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["datasets"]["pilot"]["source"]["auth"] = {"kind": "basic", "username": "dic",
                                                   "password_env": "FHIR_PW"}
    config = load_connector_config(write(tmp_path, data), env={
        "DIC_CONNECTOR_SITE": "tum", "FHIR_PW": "s3cret",
        "DIC_CONNECTOR_STATE_DATABASE_URL": "postgresql://u:pw@db/state"})
    assert config.site == "tum"
    assert config.state_database_url.drivername == "postgresql+asyncpg"
    source = config.datasets[0].source
    assert isinstance(source, FhirRestConfig)
    assert source.auth == BasicAuth("dic", "s3cret")
    assert "s3cret" not in repr(config) and "pw@" not in config.describe()


def test_secrets_from_files_and_sql_sources(tmp_path: Path) -> None:
    (tmp_path / "sql.yaml").write_text(SQL_MAPPING)
    (tmp_path / "db-url").write_text("postgresql://reader:pw@127.0.0.1/clinic\n")
    data = base(tmp_path)
    data["datasets"] = {"registry": {"mapping": "sql.yaml",
                                     "source": {"kind": "sql", "url_file": "db-url"}}}
    (dataset,) = load_connector_config(write(tmp_path, data), env={}).datasets
    assert isinstance(dataset.source, SqlConfig)
    assert dataset.source.url.startswith("postgresql+asyncpg://reader:pw@")
    assert dataset.source.query.startswith("SELECT")
    assert dataset.trigger.kind is TriggerKind.MANUAL


def test_consent_section_is_parsed_at_load(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["datasets"]["pilot"]["consent"] = {"mode": "opt-in", "opt_out_files": ["optout.txt"]}
    (dataset,) = load_connector_config(write(tmp_path, data), env={}).datasets
    assert dataset.consent.mode is ConsentMode.OPT_IN
    assert dataset.consent.opt_out_files == (tmp_path / "optout.txt",)
    data["datasets"]["pilot"]["consent"] = {"mode": "sometimes"}
    with pytest.raises(ConfigError, match=r"Config 'datasets\.pilot\.consent\.mode'"):
        parse_connector_config(data, tmp_path, {})
    del data["datasets"]["pilot"]["consent"]
    (dataset,) = parse_connector_config(data, tmp_path, {}).datasets
    assert dataset.consent.mode is ConsentMode.NONE


def test_updates_are_full_unless_delta_is_chosen(tmp_path: Path) -> None:
    data = base(tmp_path)
    (dataset,) = parse_connector_config(data, tmp_path, {}).datasets
    assert dataset.updates is Updates.FULL
    data["datasets"]["pilot"]["updates"] = "delta"
    (dataset,) = parse_connector_config(data, tmp_path, {}).datasets
    assert dataset.updates is Updates.DELTA


def test_ndjson_source_and_cron(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["datasets"]["pilot"]["source"] = {"kind": "ndjson", "directory": "export"}
    data["datasets"]["pilot"]["trigger"] = {"schedule": {"cron": "0 2 * * 1"}}
    (dataset,) = load_connector_config(write(tmp_path, data), env={}).datasets
    assert dataset.source == NdjsonConfig(tmp_path / "export")
    assert dataset.trigger.cron == "0 2 * * 1"


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("site"), "Config 'site'"),
    (lambda d: d.update(site="a b"), "Config 'site' has value 'a b'"),
    (lambda d: d.update(nodes=d["nodes"][:2]), "Config 'nodes' must list exactly 3"),
    (lambda d: d["nodes"][1].update(url="http://x"), "Config 'nodes.1.url' has value"),
    (lambda d: d.update(colour="red"), "Config 'colour' is not a known setting"),
    (lambda d: d["tls"].pop("key"), "Config 'tls.key'"),
    (lambda d: d.update(datasets={}), "Config 'datasets' must name at least one"),
    (lambda d: d["datasets"]["pilot"]["trigger"]["schedule"].update(every="soon"),
     "Config 'datasets.pilot.trigger.schedule.every' has value 'soon'"),
    (lambda d: d["datasets"]["pilot"]["trigger"]["schedule"].update(every="2s"),
     "Config 'datasets.pilot.trigger.schedule.every' is 2 s"),
    (lambda d: d["datasets"]["pilot"]["trigger"].update(schedule={"cron": "61 * * * *"}),
     "Config 'datasets.pilot.trigger.schedule.cron' has value '61 * * * *'"),
    (lambda d: d["datasets"]["pilot"]["trigger"].update(schedule={}),
     "needs exactly one of 'every' or 'cron'"),
    (lambda d: d["datasets"]["pilot"]["source"].update(kind="sql", url="sqlite://"),
     "Config 'datasets.pilot.source.kind' has value 'sql', but mapping"),
    (lambda d: d["datasets"]["pilot"]["source"].update(kind="ftp"),
     "Config 'datasets.pilot.source.kind' has value 'ftp'"),
    (lambda d: d["datasets"]["pilot"]["source"].update(
        auth={"kind": "basic", "username": "u", "password_env": "NOPE"}),
     "Config 'datasets.pilot.source.auth.password_env' names environment variable NOPE"),
    (lambda d: d["datasets"]["pilot"]["source"].update(
        auth={"kind": "basic", "username": "u", "password": "a", "password_file": "f"}),
     "gives password and password_file"),
    (lambda d: d["datasets"]["pilot"]["source"].update(page_size=0),
     "Config 'datasets.pilot.source.page_size' has value 0"),
    (lambda d: d["datasets"]["pilot"]["source"].update(kind="fhir-bulk", level="group"),
     "Config 'datasets.pilot.source.group_id' is required with level 'group'"),
    (lambda d: d["datasets"]["pilot"].update(mapping="missing.yaml"), "missing.yaml"),
    (lambda d: d.update(operator_token_sha256="abc"), "64 lowercase hex digits"),
    (lambda d: d.update(listen={"port": 70000}), "Config 'listen.port' has value 70000"),
    (lambda d: d.update(node_attempts=0), "Config 'node_attempts' has value 0. Expected 1..20"),
    (lambda d: d.update(retry_delay_s="soon"), "Config 'retry_delay_s' has value 'soon'"),
    (lambda d: d["datasets"]["pilot"].update(updates="incremental"),
     "Config 'datasets.pilot.updates' has value 'incremental'. Expected full or delta."),
])
def test_errors_name_the_key(tmp_path: Path, change: Any, message: str) -> None:
    data = base(tmp_path)
    change(data)
    expected = MappingFileError if message == "missing.yaml" else ConfigError
    with pytest.raises(expected) as info:
        parse_connector_config(data, tmp_path, {})
    assert message in str(info.value)


@pytest.mark.parametrize(("text", "seconds"), [(30, 30.0), ("90s", 90.0), ("15m", 900.0),
                                                ("6h", 21600.0), ("1.5d", 129600.0)])
def test_durations(text: Any, seconds: float) -> None:
    assert duration_s("k", text) == seconds


@pytest.mark.parametrize("text", ["", "6 hours", "-1m", True, "1w"])
def test_bad_durations(text: Any) -> None:
    with pytest.raises(ConfigError, match="Config 'k'"):
        duration_s("k", text)
