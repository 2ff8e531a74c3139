"""Configuration: file < environment, and errors that name the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dic_connector.errors import ConfigError
from dic_connector.node.config import load_config, parse_config


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("node_index: 1\ndatabase_url: sqlite:///a.db\nlisten_port: 9000\n"
                    "auth:\n  jwt_audience: dic\n")
    config = load_config(path, env={"DIC_LISTEN_PORT": "9100", "DIC_AUTH__JWT_ISSUER": "idp",
                                    "OTHER": "x"})
    assert (config.node_index, config.listen_port, config.database_url) == (1, 9100,
                                                                             "sqlite:///a.db")
    assert config.node_id == "node-1"
    assert (config.auth.jwt_issuer, config.auth.jwt_audience) == ("idp", "dic")
    assert config.min_cell_count == 5 and config.min_subset_size is None
    assert (config.auth.failure_burst, config.auth.failure_refill_per_s) == (10, 1.0)
    assert load_config(path, env={"DIC_AUTH__FAILURE_BURST": "50"}).auth.failure_burst == 50
    assert parse_config({"node_index": 0, "database_url": "sqlite://",
                         "min_subset_size": 12}).min_subset_size == 12


def test_the_connectors_and_clients_variables_are_not_the_nodes(tmp_path: Path) -> None:
    """A person with ``DIC_PROFILE`` (or a connector's ``DIC_CONNECTOR_*``) set in their shell
    can still run ``dic node ...`` on the same machine; a misspelt node variable is refused."""
    path = tmp_path / "node.yaml"
    path.write_text("node_index: 0\ndatabase_url: sqlite:///a.db\n")
    others = {"DIC_PROFILE": "alice.yaml", "DIC_CLIENT_AT": "1", "DIC_TOKEN_0": "dic_x",
              "DIC_CONNECTOR_STATE_DATABASE_URL": "sqlite:///c.db", "DIC_LISTEN_PORT": "9100"}
    assert load_config(path, env=others).listen_port == 9100
    with pytest.raises(ConfigError, match=r"unknown keys.*'lisen_port'"):
        load_config(path, env={"DIC_LISEN_PORT": "9100"})


@pytest.mark.parametrize("data,message", [
    ({"database_url": "sqlite://"}, "Config 'node_index' is missing."),
    ({"node_index": "x", "database_url": "sqlite://"},
     "Config 'node_index' has value 'x'. Not a valid int."),
    ({"node_index": 3, "database_url": "sqlite://"}, "Config 'node_index' has value 3."),
    ({"node_index": 0, "database_url": ""}, "Config 'database_url' has value ''"),
    ({"node_index": 0, "database_url": "sqlite://", "lisen_port": 1}, "unknown keys"),
    ({"node_index": 0, "database_url": "sqlite://", "auth": {"jwt_algorithms": "HS256"}},
     "asymmetric algorithms only"),
    ({"node_index": 0, "database_url": "sqlite://", "auth": {"jwks_file": "k.json"}},
     "needs 'auth.jwt_issuer'"),
    ({"node_index": 0, "database_url": "sqlite://", "min_cell_count": 0},
     "Config 'min_cell_count' has value 0"),
    ({"node_index": 0, "database_url": "sqlite://", "min_subset_size": "many"},
     "Config 'min_subset_size' has value 'many'"),
    ({"node_index": 0, "database_url": "sqlite://", "auth": {"failure_burst": 0}},
     "Config 'auth.failure_burst' has value 0"),
    ({"node_index": 0, "database_url": "sqlite://", "auth": {"failure_refill_per_s": "x"}},
     "Config 'auth.failure_refill_per_s' has value 'x'"),
    ({"node_index": 0, "database_url": "sqlite://", "max_concurrent_computations": 0},
     "Config 'max_concurrent_computations' has value 0"),
    ({"node_index": 0, "database_url": "sqlite://", "max_concurrent_computations": 65},
     "Config 'max_concurrent_computations' has value 65"),
    ({"node_index": 0, "database_url": "sqlite://", "memory_budget_mib": 10},
     "Config 'memory_budget_mib' has value 10"),
])
def test_errors_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert message in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "missing.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(bad, env={})


def test_peers_need_three_https_nodes_and_tls() -> None:
    from dic_connector.node.config import parse_config

    tls = {"ca_cert": "ca.pem", "cert": "n.pem", "key": "n.key"}
    peers = [{"api_url": f"https://127.0.0.1:{8443 + i}", "mpc_host": "127.0.0.1",
              "mpc_port": 9443 + i} for i in range(3)]
    config = parse_config({"node_index": 1, "database_url": "sqlite://", "tls": tls,
                           "peers": peers})
    assert config.coordinated and [p.name for p in config.peers] == ["node-0", "node-1",
                                                                      "node-2"]
    with pytest.raises(ConfigError, match="exactly the three nodes"):
        parse_config({"node_index": 1, "database_url": "sqlite://", "tls": tls,
                      "peers": peers[:2]})
    with pytest.raises(ConfigError, match="Expected an https:// URL"):
        parse_config({"node_index": 1, "database_url": "sqlite://", "tls": tls,
                      "peers": [{**peers[0], "api_url": "http://x"}, *peers[1:]]})
    with pytest.raises(ConfigError, match="needs 'tls'"):
        parse_config({"node_index": 1, "database_url": "sqlite://", "peers": peers})
    with pytest.raises(ConfigError, match=r"peers\[2\]\.mpc_port"):
        parse_config({"node_index": 1, "database_url": "sqlite://", "tls": tls,
                      "peers": [*peers[:2], {**peers[2], "mpc_port": "x"}]})


@pytest.mark.parametrize("url,message", [
    ("mysql://dic:s3cret@db/dic", "Config 'database_url' has backend 'mysql'"),
    ("postgresql://dic:s3cret@db:notaport/dic", "Config 'database_url' is not a valid"),
])
def test_database_url_is_checked_at_load_without_showing_the_password(
        url: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"node_index": 0, "database_url": url})
    assert message in str(info.value) and "s3cret" not in str(info.value)


def test_repr_hides_the_database_password() -> None:
    config = parse_config({"node_index": 2, "database_url": "postgresql://dic:s3cret@db/dic"})
    assert config.database_url == "postgresql://dic:s3cret@db/dic"
    assert "s3cret" not in repr(config) and "postgresql://dic:***@db/dic" in repr(config)
    assert "node_index=2" in repr(config)


def test_concurrent_computations_default_to_the_cores_at_most_four(
        monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"node_index": 0, "database_url": "sqlite://"}
    for cores, expected in ((1, 1), (2, 2), (16, 4), (None, 1)):
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        assert parse_config(base).max_concurrent_computations == expected
    assert parse_config({**base, "max_concurrent_computations": 7}
                        ).max_concurrent_computations == 7


def test_the_memory_budget_defaults_to_sixty_percent_of_the_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"node_index": 0, "database_url": "sqlite://"}
    monkeypatch.setattr("dic_connector.node.config.memory_limit_bytes", lambda: 8 << 30)
    assert parse_config(base).memory_budget_mib == int(8 * 1024 * 0.6)
    monkeypatch.setattr("dic_connector.node.config.memory_limit_bytes", lambda: None)
    assert parse_config(base).memory_budget_mib == int(4 * 1024 * 0.6)
    monkeypatch.setattr("dic_connector.node.config.memory_limit_bytes", lambda: 100 << 20)
    assert parse_config(base).memory_budget_mib == 256
    assert parse_config({**base, "memory_budget_mib": 3072}).memory_budget_mib == 3072


def test_the_memory_limit_is_the_smaller_of_cgroup_and_machine() -> None:
    from dic_connector.node.config import memory_limit_bytes

    limit = memory_limit_bytes()
    assert limit is not None and 0 < limit <= os.sysconf("SC_PHYS_PAGES") * os.sysconf(
        "SC_PAGE_SIZE")
