"""The Helm chart renders offline (helm-python-sdk binds Helm's Go SDK: no helm binary),
every manifest is valid for a current Kubernetes in strict mode, and the node config the
chart writes is one the node's own loader accepts, key for key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from dic_connector.node.config import parse_config  # noqa: E402

CHART = Path(__file__).resolve().parents[2] / "helm" / "dic-connector"
KUBERNETES_VERSION = "1.34.0"
TOPOLOGIES: dict[str, dict[str, Any] | None] = {
    "default": None,
    "all-in-one": {"node": {"allInOne": True}, "dev": {"generateSecrets": True}},
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    chart = helm.Chart.load(CHART)
    out = {}
    for name, values in TOPOLOGIES.items():
        manifests = chart.render(values, name="dic", namespace="dic")
        out[name] = [doc for text in manifests.values() for doc in yaml.safe_load_all(text)
                     if doc]
    return out


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_every_manifest_is_valid_kubernetes(rendered: dict[str, list[dict[str, Any]]],
                                            topology: str) -> None:
    docs = rendered[topology]
    assert {d["kind"] for d in docs} >= {"ConfigMap", "Service", "NetworkPolicy"}
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


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_node_config_loads_with_the_node_loader(rendered: dict[str, list[dict[str, Any]]],
                                                topology: str) -> None:
    docs = rendered[topology]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap"
                      and d["metadata"]["name"] == "dic-dic-connector-node")
    workload = next(d for d in docs if d["kind"] in ("Deployment", "StatefulSet")
                    and d["metadata"]["name"].endswith("-node"))
    container = workload["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["node", "serve", "--config", "/etc/dic/node/node.yaml"]
    indexes = range(3) if topology == "all-in-one" else [0]
    from dic_connector.config import env_overrides, merge
    for index in indexes:
        data = merge(yaml.safe_load(config_map["data"]["node.yaml"]),
                     env_overrides(_env(container, index), "DIC_"))
        config = parse_config(data)
        assert config.node_index == index
        assert config.coordinated and config.tls is not None
        assert config.listen_port == 8443


def test_the_image_runs_dic_as_a_non_root_user_without_secrets() -> None:
    """Static checks of the Dockerfile (no Docker engine on the test machines)."""
    text = (CHART.parents[1] / "Dockerfile").read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    assert final.startswith("python:3.11-slim")
    assert re.search(r"^USER 10001:10001$", final, re.M)
    assert re.search(r'^ENTRYPOINT \["dic"\]$', final, re.M)
    copied = re.findall(r"^COPY (?:--from=\S+ )?(\S+)", text, re.M)
    assert not [c for c in copied if re.search(r"pki|\.key|\.pem|keyring|secret|\.env", c)]
