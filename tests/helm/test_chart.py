"""The Helm chart renders offline (helm-python-sdk binds Helm's Go SDK: no helm binary),
every manifest is valid for a current Kubernetes in strict mode, and the node config the
chart writes is one the node's own loader accepts, key for key."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from dic_connector.config import env_overrides, merge
from dic_connector.connector.config import parse_connector_config
from dic_connector.node.config import parse_config

CHART = Path(__file__).resolve().parents[2] / "helm" / "dic-connector"
KUBERNETES_VERSION = "1.37.0"
REPO = CHART.parents[1]
TOPOLOGIES: dict[str, dict[str, Any] | None] = {"default": None} | {
    path.name.removesuffix("-values.yaml"): yaml.safe_load(path.read_text())
    for path in sorted((CHART / "ci").glob("*-values.yaml"))}
NODE_TOPOLOGIES = [t for t, v in TOPOLOGIES.items() if (v or {}).get("node", {}).get("enabled", True)]
CONNECTOR_TOPOLOGIES = [t for t, v in TOPOLOGIES.items() if (v or {}).get("connector", {}).get("enabled")]


@pytest.fixture(scope="module")
def rendered_text() -> dict[str, str]:
    """Each topology's manifests as one YAML stream, rendered once per module."""
    chart = helm.Chart.load(CHART)
    return {name: "\n---\n".join(t for t in chart.render(values, name="dic", namespace="dic")
                                   .values() if t.strip())
            for name, values in TOPOLOGIES.items()}


@pytest.fixture(scope="module")
def rendered(rendered_text: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {name: [doc for doc in yaml.safe_load_all(text) if doc]
            for name, text in rendered_text.items()}


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_every_manifest_is_valid_kubernetes(rendered: dict[str, list[dict[str, Any]]],
                                            topology: str) -> None:
    docs = rendered[topology]
    assert {d["kind"] for d in docs} >= {"ConfigMap", "Service", "NetworkPolicy"}
    for doc in docs:
        pod = _pod_spec(doc)
        if pod is not None:
            assert pod["automountServiceAccountToken"] is False
            assert pod["securityContext"]["runAsNonRoot"] is True
            for container in pod.get("initContainers", []) + pod["containers"]:
                ctx = container["securityContext"]
                assert ctx["readOnlyRootFilesystem"] and ctx["capabilities"] == {"drop": ["ALL"]}
                assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
                assert container["resources"]["limits"]
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com"):
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def _env(container: dict[str, Any], index: int) -> dict[str, str]:
    """The container's environment as the kubelet builds it: secrets given fake values,
    the pod-index label the ordinal, ``$(VAR)`` expanded from earlier variables."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        source = var.get("valueFrom", {})
        if "secretKeyRef" in source:
            value = "postgresql://dic:secret@db.example/"
        elif "fieldRef" in source:
            value = str(index)
        else:
            value = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], var["value"])
        env[var["name"]] = value
    return env


@pytest.mark.parametrize("topology", NODE_TOPOLOGIES)
def test_node_config_loads_with_the_node_loader(rendered: dict[str, list[dict[str, Any]]],
                                                topology: str) -> None:
    docs = rendered[topology]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap"
                      and d["metadata"]["name"] == "dic-dic-connector-node")
    workload = next(d for d in docs if d["kind"] in ("Deployment", "StatefulSet")
                    and d["metadata"]["name"].endswith("-node"))
    container = workload["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["node", "serve", "--config", "/etc/dic/node/node.yaml"]
    indexes = range(3) if topology == "all-in-one" else [(TOPOLOGIES[topology] or {}).get(
        "node", {}).get("index", 0)]
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    for index in indexes:
        data = merge(yaml.safe_load(config_map["data"]["node.yaml"]),
                     env_overrides(_env(container, index), "DIC_"))
        config = parse_config(data)
        assert config.node_index == index
        assert config.coordinated and config.tls is not None
        assert config.listen_port == 8443
        assert (config.auth.failure_burst, config.auth.failure_refill_per_s) == (10, 1.0)
        assert config.replication_max_attempts == 30
        assert config.audit_exchange_interval_s == 60.0


def test_the_image_runs_dic_as_a_non_root_user_without_secrets() -> None:
    """Static checks of the Dockerfile (no Docker engine on the test machines)."""
    text = (CHART.parents[1] / "Dockerfile").read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    assert final.startswith("python:3.11-slim")
    assert re.search(r"^USER 10001:10001$", final, re.M)
    assert re.search(r'^ENTRYPOINT \["dic"\]$', final, re.M)
    # freed numpy temporaries stay in the heap (benchmarks/_harness.py ALLOCATOR_ENV)
    assert re.search(r"^ENV MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824$",
                     final, re.M)
    copied = re.findall(r"^COPY (?:--from=\S+ )?(\S+)", text, re.M)
    assert not [c for c in copied if re.search(r"pki|\.key|\.pem|keyring|secret|\.env", c)]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
        return dict(doc["spec"]["template"]["spec"])
    return dict(doc["spec"]) if doc["kind"] == "Pod" else None


@pytest.mark.parametrize("topology", CONNECTOR_TOPOLOGIES)
def test_connector_config_loads_with_the_connector_loader(
        rendered: dict[str, list[dict[str, Any]]], topology: str) -> None:
    docs = rendered[topology]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap"
                      and d["metadata"]["name"] == "dic-dic-connector-connector")
    workload = next(d for d in docs if d["kind"] == "Deployment"
                    and d["metadata"]["name"].endswith("-connector"))
    container = workload["spec"]["template"]["spec"]["containers"][0]
    env = _env(container, 0) | {"DIC_CONNECTOR_STATE_DATABASE_URL": "sqlite:///state.db"}
    # the image's mappings (/opt/dic/mappings) are the repository's
    text = config_map["data"]["connector.yaml"].replace("/opt/dic/mappings", str(REPO / "mappings"))
    data = merge(yaml.safe_load(text), env_overrides(env, "DIC_CONNECTOR_"))
    config = parse_connector_config(data, Path("/etc/dic/connector"), {
        k: "s" * 32 for k in env})
    values = TOPOLOGIES[topology] or {}
    assert config.site == values["connector"]["site"]
    assert [d.name for d in config.datasets] == list(values["connector"]["datasets"])
    assert config.listen_port == 8600 and len(config.nodes) == 3
    assert config.lineage_key_file == Path("/etc/dic/lineage/lineage.key")


@pytest.mark.parametrize(("values", "message"), [
    ({"node": {"peers": []}}, "at '/node/peers': minItems: got 0, want 3"),
    ({"node": {"index": 3}}, "at '/node/index': maximum: got 3, want 2"),
    ({"node": {"secrets": {"tls": ""}}}, "at '/node/secrets/tls': minLength: got 0, want 1"),
    ({"connector": {"secrets": {"database": ""}}},
     "at '/connector/secrets/database': minLength"),
    ({"node": {"replicas": 2}}, "additional properties 'replicas' not allowed"),
])
def test_bad_values_fail_at_render_with_the_schema_message(values: dict[str, Any],
                                                           message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(message)):
        helm.Chart.load(CHART).render(values, name="dic", namespace="dic")


CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"


def test_checkov_finds_nothing_but_the_accepted_checks(
        rendered_text: dict[str, str], tmp_path: Path) -> None:
    """checkov once over every topology; the failures allowed are the README's table."""
    if not CHECKOV.exists():
        pytest.fail(f"checkov is not installed ({CHECKOV} is missing): run `make test`, "
                    "which creates the .venv-checkov virtualenv")
    for topology, text in rendered_text.items():
        (tmp_path / f"{topology}.yaml").write_text(text)
    run = subprocess.run([str(CHECKOV), "-d", str(tmp_path), "--framework", "kubernetes",
                          "--quiet", "--compact", "-o", "json"], capture_output=True,
                         text=True, timeout=240, check=False)
    reports = json.loads(run.stdout)
    failed = {(c["check_id"], c["resource"]) for r in (
        reports if isinstance(reports, list) else [reports]) for c in r["results"]["failed_checks"]}
    accepted = set(re.findall(r"^\| (CKV_K8S_\d+) \|", (CHART / "README.md").read_text(), re.M))
    assert accepted and failed, "checkov ran no check"
    assert sorted(f for f in failed if f[0] not in accepted) == []


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_helm_lint_strict_reports_no_warning_or_error(topology: str) -> None:
    report = helm.lint(CHART, TOPOLOGIES[topology], strict=True, kube_version="v1.37.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
