"""Configuration loading shared by the node and the connector: file, environment, typed checks.

Sources, later ones overriding earlier ones: defaults, a JSON or YAML file, and environment
variables with a prefix (``DIC_`` for a node, nested keys joined with ``__``, e.g.
``DIC_AUTH__JWT_AUDIENCE``). Every problem is a :class:`~dic_connector.errors.ConfigError`
naming the key and saying what was expected, in the style of Starlette's
``Config 'PORT' has value 'x'. Not a valid int.`` The typed configurations themselves are
frozen dataclasses of the deployable that reads them (:mod:`dic_connector.node.config`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from dic_connector.errors import ConfigError

if TYPE_CHECKING:  # SQLAlchemy is imported where a URL is parsed: `dic` people's commands
    from sqlalchemy.engine import URL  # read configs too and never open a database

#: Database backends the service runs on, and the async driver each one gets.
DATABASE_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def int_value(key: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``low..high`` (a bool or a float is not an int)."""
    try:
        number = int(value)
        if isinstance(value, float | bool) or str(number) != str(value).strip():
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"Config '{key}' has value {value!r}. Not a valid int.") from None
    if (low is not None and number < low) or (high is not None and number > high):
        raise ConfigError(f"Config '{key}' has value {number}. Expected {low}..{high}.")
    return number


def str_value(key: str, value: Any) -> str:
    """``value`` as a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"Config '{key}' has value {value!r}. Expected a non-empty string.")
    return value


def known_keys(key: str, data: Mapping[str, Any], known: Iterable[str]) -> None:
    """:class:`ConfigError` naming the first key of ``data`` (under ``key``; ``""``: the top
    level) that is not one of ``known``, and listing what is."""
    allowed = sorted(known)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        where = f"{key}.{unknown[0]}" if key else unknown[0]
        raise ConfigError(f"Config '{where}' is not a known setting. Expected one of "
                          f"{', '.join(allowed)}.")


def bool_value(key: str, value: Any) -> bool:
    """A boolean from YAML (true/false) or an environment variable (true/false/1/0/yes/no)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"Config '{key}' has value {value!r}. Expected true or false.")


def float_value(key: str, value: Any, low: float, high: float) -> float:
    """``value`` as a number in ``low..high``."""
    try:
        number = float(value)
        if isinstance(value, bool):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"Config '{key}' has value {value!r}. Not a valid number.") from None
    if not low <= number <= high:
        raise ConfigError(f"Config '{key}' has value {number:g}. Expected {low:g}..{high:g}.")
    return number


def database_url(url: str | URL, key: str = "database_url") -> URL:
    """A SQLite or PostgreSQL URL with its async driver (``postgresql`` -> asyncpg,
    ``sqlite`` -> aiosqlite). The message names ``key`` and never shows a password."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # sqlalchemy's ArgumentError quotes the URL, password included
        raise ConfigError(f"Config '{key}' is not a valid database URL. Expected "
                          "sqlite:///path or postgresql://user@host/db.") from None
    backend = parsed.get_backend_name()
    if backend not in DATABASE_DRIVERS:
        raise ConfigError(f"Config '{key}' has backend '{backend}'. Expected sqlite or "
                          "postgresql.")
    return parsed.set(drivername=DATABASE_DRIVERS[backend])


def masked_url(url: str | URL) -> str:
    """The URL as text with its password replaced by ``***`` (for reprs and logs)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<not a valid URL>"


def env_overrides(env: Mapping[str, str], prefix: str,
                  exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The variables of ``env`` starting with ``prefix`` as a nested mapping
    (``PREFIX_A__B=1`` -> ``{"a": {"b": "1"}}``), except those starting with one of
    ``exclude`` (another component's variables under a shorter shared prefix)."""
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(prefix) or name.startswith(exclude):
            continue
        parts = name[len(prefix):].lower().split("__")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a JSON (``.json``) or YAML file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"Config file {path} cannot be read: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"Config file {path} is not valid JSON/YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping at the top level")
    return data


def layered(path: Path | None, env: Mapping[str, str] | None, prefix: str,
            exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Defaults < file < environment variables with ``prefix`` (``os.environ`` if None),
    but not those starting with one of ``exclude``."""
    data: dict[str, Any] = read_config_file(path) if path is not None else {}
    return merge(data, env_overrides(os.environ if env is None else env, prefix, exclude))


def path_value(key: str, value: Any, base_dir: Path) -> Path:
    """``value`` as a path, relative ones resolved against ``base_dir``."""
    path = Path(str_value(key, value)).expanduser()
    return path if path.is_absolute() else base_dir / path


def secret_value(key: str, data: Mapping[str, Any], name: str, base_dir: Path,
            env: Mapping[str, str], required: bool = True) -> str | None:
    """``name``, or the variable named by ``name_env``, or the file at ``name_file``."""
    given = [k for k in (name, f"{name}_env", f"{name}_file") if k in data]
    if len(given) > 1:
        raise ConfigError(f"Config '{key}' gives {' and '.join(given)}; give one.")
    if not given:
        if required:
            raise ConfigError(f"Config '{key}.{name}' (or '{name}_env', '{name}_file') is "
                              "required.")
        return None
    which = given[0]
    if which == name:
        return str_value(f"{key}.{name}", data[name])
    if which.endswith("_env"):
        variable = str_value(f"{key}.{which}", data[which])
        if not env.get(variable):
            raise ConfigError(f"Config '{key}.{which}' names environment variable "
                              f"{variable}, which is not set.")
        return env[variable]
    path = path_value(f"{key}.{which}", data[which], base_dir)
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"Config '{key}.{which}': {path} cannot be read "
                          f"({exc.strerror}).") from None
