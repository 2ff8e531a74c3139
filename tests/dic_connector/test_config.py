"""The configuration loading both deployables share: layers, typed values, database URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dic_connector.config import (
    database_url,
    env_overrides,
    float_value,
    int_value,
    layered,
    masked_url,
    merge,
)
from dic_connector.errors import ConfigError


def test_environment_overrides_nest_by_double_underscore_and_keep_their_prefix() -> None:
    env = {"DIC_A": "1", "DIC_AUTH__JWT_ISSUER": "idp", "DIC_CONNECTOR_X": "2", "OTHER": "3"}
    assert env_overrides(env, "DIC_CONNECTOR_") == {"x": "2"}
    assert env_overrides(env, "DIC_") == {"a": "1", "auth": {"jwt_issuer": "idp"},
                                          "connector_x": "2"}


def test_layers_merge_nested_mappings(tmp_path: Path) -> None:
    assert merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"c": 4}}) == {"a": {"b": 1, "c": 4},
                                                                       "d": 3}
    path = tmp_path / "c.json"
    path.write_text('{"auth": {"jwt_issuer": "file", "jwt_audience": "dic"}, "port": 1}')
    assert layered(path, {"X_AUTH__JWT_ISSUER": "env"}, "X_") == {
        "auth": {"jwt_issuer": "env", "jwt_audience": "dic"}, "port": 1}
    assert layered(None, {}, "X_") == {}


@pytest.mark.parametrize("value,message", [
    (True, "Not a valid int"), (1.0, "Not a valid int"), ("1x", "Not a valid int"),
    (11, "Expected 0..10"),
])
def test_int_values(value: object, message: str) -> None:
    assert int_value("k", " 7 ", 0, 10) == 7
    with pytest.raises(ConfigError, match=rf"Config .k. has value .*{message}"):
        int_value("k", value, 0, 10)


def test_float_values() -> None:
    assert float_value("k", "0.5", 0, 1) == 0.5
    with pytest.raises(ConfigError, match="Not a valid number"):
        float_value("k", False, 0, 1)
    with pytest.raises(ConfigError, match=r"Expected 0\.\.1"):
        float_value("k", 2, 0, 1)


def test_database_urls_get_their_async_driver_and_never_show_a_password() -> None:
    assert database_url("postgresql://u:pw@h/db").drivername == "postgresql+asyncpg"
    assert database_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    with pytest.raises(ConfigError, match="Config 'state_url' has backend 'oracle'"):
        database_url("oracle://u:pw@h/db", key="state_url")
    with pytest.raises(ConfigError) as info:
        database_url("postgresql://u:pw@h:port/db")
    assert "pw" not in str(info.value)
    assert masked_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert masked_url("::") == "<not a valid URL>"
