"""``trigger: {subscription: {...}}`` in connector.yaml: both kinds, defaults, the secret
from the environment or a file, and errors that name the full key."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from dic_connector.connector.config import (
    SubscriptionKind,
    TriggerKind,
    parse_connector_config,
)
from dic_connector.connector.schedule import next_due
from dic_connector.errors import ConfigError

REPO = Path(__file__).resolve().parents[4]
TOPIC = "http://sekmet.dev/fhir/SubscriptionTopic/patient-change"
KEY = "datasets.pilot.trigger.subscription"


def base(tmp: Path, **subscription: Any) -> dict[str, Any]:
    shutil.copy(REPO / "mappings" / "pilot_adrenal.yaml", tmp / "pilot.yaml")
    settings = {"kind": "backport", "topic": TOPIC, "secret_env": "NOTIFY_SECRET",
                "endpoint": "http://127.0.0.1:8600/fhir-notify/pilot", **subscription}
    return {
        "site": "lmu",
        "tls": {"ca_cert": "pki/ca.pem", "cert": "pki/c.pem", "key": "pki/c.key"},
        "nodes": [{"url": f"https://127.0.0.1:{8443 + i}", "name": f"node-{i}"}
                  for i in range(3)],
        "datasets": {"pilot": {"mapping": "pilot.yaml",
                               "source": {"kind": "fhir-rest", "base_url": "http://f/fhir"},
                               "trigger": {"subscription": settings}}},
    }


ENV = {"NOTIFY_SECRET": "s" * 32}


def test_backport_with_defaults(tmp_path: Path) -> None:
    config = parse_connector_config(base(tmp_path, filters=["Patient?identifier=x|1"]),
                                    tmp_path, ENV)
    trigger = config.datasets[0].trigger
    assert trigger.kind is TriggerKind.SUBSCRIPTION and trigger.subscription is not None
    sub = trigger.subscription
    assert (sub.kind, sub.topic, sub.filters, sub.content) == (
        SubscriptionKind.BACKPORT, TOPIC, ("Patient?identifier=x|1",), "empty")
    assert (sub.debounce_s, sub.heartbeat_s, sub.reconcile_s) == (30, 60, 21600)
    assert sub.secret == "s" * 32 and "s" * 32 not in repr(config)
    # the reconcile period is the schedule's interval
    assert trigger.every_s == 21600 and next_due(trigger, dt.datetime.now(dt.UTC), None) is not None
    assert "reconcile every 21600 s" in config.describe()


def test_rest_hook_with_a_secret_file(tmp_path: Path) -> None:
    (tmp_path / "notify.secret").write_text("f" * 20 + "\n")
    data = base(tmp_path, kind="rest-hook", criteria="Observation?code=http://loinc.org|1-8",
                debounce="5s", heartbeat="2m", reconcile="1d", secret_file="notify.secret")
    del data["datasets"]["pilot"]["trigger"]["subscription"]["topic"]
    del data["datasets"]["pilot"]["trigger"]["subscription"]["secret_env"]
    sub = parse_connector_config(data, tmp_path, {}).datasets[0].trigger.subscription
    assert sub is not None and sub.kind is SubscriptionKind.REST_HOOK
    assert (sub.criteria, sub.secret, sub.debounce_s, sub.heartbeat_s, sub.reconcile_s) == (
        "Observation?code=http://loinc.org|1-8", "f" * 20, 5, 120, 86400)


@pytest.mark.parametrize(("change", "message"), [
    ({"kind": "websocket"}, f"Config '{KEY}.kind' has value 'websocket'"),
    ({"topic": "patient-change"}, f"Config '{KEY}.topic' has value 'patient-change'"),
    ({"criteria": "Patient?"}, f"Config '{KEY}.criteria' is for kind rest-hook"),
    ({"content": "full-resource"}, f"Config '{KEY}.content' has value 'full-resource'"),
    ({"endpoint": "ftp://x"}, f"Config '{KEY}.endpoint' has value 'ftp://x'"),
    ({"debounce": "soon"}, f"Config '{KEY}.debounce' has value 'soon'"),
    ({"heartbeat": "0.5s"}, f"Config '{KEY}.heartbeat' is 0.5 s"),
    ({"reconcile": "1s"}, f"Config '{KEY}.reconcile' is 1 s"),
    ({"filters": "Patient?x=1"}, f"Config '{KEY}.filters' must be a list"),
    ({"secret_env": "UNSET"}, f"Config '{KEY}.secret_env' names environment variable UNSET"),
    ({"secret": "short"}, f"Config '{KEY}.secret' must have at least 16"),
    ({"colour": "red"}, f"Config '{KEY}.colour' is not a known setting"),
    ({"kind": "rest-hook", "criteria": "not a search"}, f"Config '{KEY}.topic' is for kind"),
])
def test_errors_name_the_key(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    data = base(tmp_path, **change)
    if "secret" in change:
        del data["datasets"]["pilot"]["trigger"]["subscription"]["secret_env"]
    with pytest.raises(ConfigError) as info:
        parse_connector_config(data, tmp_path, ENV)
    assert message in str(info.value)


def test_rest_hook_criteria_must_be_a_search(tmp_path: Path) -> None:
    data = base(tmp_path, kind="rest-hook", criteria="not a search")
    del data["datasets"]["pilot"]["trigger"]["subscription"]["topic"]
    with pytest.raises(ConfigError, match=re.escape(f"Config '{KEY}.criteria' has value")):
        parse_connector_config(data, tmp_path, ENV)


def test_needs_a_fhir_source_and_one_trigger(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["datasets"]["pilot"]["source"] = {"kind": "ndjson", "directory": "x"}
    with pytest.raises(ConfigError, match=re.escape(f"Config '{KEY}' needs a FHIR source")):
        parse_connector_config(data, tmp_path, ENV)
    data = base(tmp_path)
    data["datasets"]["pilot"]["trigger"]["schedule"] = {"every": "1h"}
    with pytest.raises(ConfigError, match=re.escape("'datasets.pilot.trigger' needs exactly one")):
        parse_connector_config(data, tmp_path, ENV)
