"""JSON log lines: fields from ``extra``, objects reduced to their type, exceptions without
their messages (a library's message may quote a value)."""

from __future__ import annotations

import json
import logging

from dic_connector.connector.logs import JsonFormatter, configure_json_logging


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("dic_connector.connector", logging.INFO, __file__, 1,
                            "run %s", ("done",), None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_fields_are_copied_and_objects_are_not_rendered() -> None:
    line = JsonFormatter().format(record(event="run.succeeded", dataset="pilot", rows=47,
                                         ok=True, row={"age": 63}, long="x" * 2000))
    out = json.loads(line)
    assert out["msg"] == "run done" and out["level"] == "info"
    assert out["event"] == "run.succeeded" and out["dataset"] == "pilot"
    assert out["rows"] == 47 and out["ok"] is True
    assert out["row"] == "<dict>"  # a row passed by mistake is never rendered
    assert len(out["long"]) == 500
    assert out["ts"].endswith("+00:00")


def test_exceptions_are_logged_without_their_message() -> None:
    try:
        int("SENTINEL-LAB-VALUE-7731")
    except ValueError:
        import sys

        rec = record()
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "SENTINEL-LAB-VALUE-7731" not in line
    out = json.loads(line)
    assert out["exception"] == "ValueError"
    assert any("test_exceptions_are_logged_without_their_message" in f for f in out["frames"])


def test_configure_routes_the_package_loggers() -> None:
    configure_json_logging()
    logger = logging.getLogger("dic_connector")
    try:
        assert isinstance(logger.handlers[0].formatter, JsonFormatter)
        assert logger.propagate is False
    finally:
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
