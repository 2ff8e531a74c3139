"""Structured logs for the connector: one JSON object per line, counts and names only.

Each record carries ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg`` and the fields a
call passes in ``extra=`` (``event``, ``dataset``, ``run``, counts, ...), so a log shipper can
index them without parsing prose. Fields are copied only when they are numbers, booleans or
short strings: a whole object (a row, a resource) passed by mistake is logged as its type
name, not rendered.

An exception is logged as its type and its stack frames (file, line, function), *without*
its message: our own errors carry no values, but a library's might (``ValueError: invalid
literal for int() with base 10: '<a lab value>'``), and the connector's logs must never hold
row-level data.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import traceback
from typing import Any

#: attributes every LogRecord has; anything else came from ``extra=``
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
#: longest string field copied into a log line
MAX_FIELD_CHARS = 500


class JsonFormatter(logging.Formatter):
    """Formats records as single-line JSON objects (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage()[:MAX_FIELD_CHARS],
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_"):
                continue
            out[key] = _field(value)
        if record.exc_info and record.exc_info[0] is not None:
            kind, _, tb = record.exc_info
            out["exception"] = kind.__name__
            out["frames"] = [f"{f.filename}:{f.lineno} {f.name}"
                             for f in traceback.extract_tb(tb)][-12:]
        return json.dumps(out, separators=(",", ":"))


def _field(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value[:MAX_FIELD_CHARS]
    return f"<{type(value).__name__}>"


def configure_json_logging(level: int = logging.INFO) -> None:
    """Send the ``dic_connector`` loggers to stderr as JSON lines (the service's setting)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("dic_connector")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
