"""Log output: text or JSON lines, each with the request id of the request it is about.

One ``logging.config`` dictionary configures the gateway's loggers and
uvicorn's (passed to ``uvicorn.run`` as ``log_config``, so every worker applies
it), so uvicorn's own error lines share the format. uvicorn's access log is off:
``gateway.access`` writes one line per request instead.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from gateway import request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# Loggers of libraries that may log request or response bodies below info.
CONTENT_LOGGERS = ("httpx", "httpcore", "grpc", "opentelemetry")


class RequestContextFilter(logging.Filter):
    """Puts ``request_id`` and ``user`` on every record ("-" and absent outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = request_id.current()
        if not hasattr(record, "request_id"):
            record.request_id = info.request_id if info is not None else "-"
        if info is not None and info.user_id and not hasattr(record, "user"):
            record.user = info.user_id
        return True


class JsonLineFormatter(JsonFormatter):
    """One JSON object a line: timestamp (UTC), level (lower case), logger, message, extras."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["timestamp"] = datetime.fromtimestamp(record.created, UTC).isoformat()
        log_data["level"] = record.levelname.lower()
        log_data["logger"] = record.name
        super().add_fields(log_data, record, message_dict)
        # uvicorn puts an ANSI-coloured copy of its message on its records, for terminals.
        log_data.pop("color_message", None)


def log_config(fmt: str, level: str, *, include_content: bool = False) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` dictionary for the gateway process and its workers."""
    py_level = "DEBUG" if level == "trace" else level.upper()
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonLineFormatter", "fmt": "%(message)s"}
        if fmt == "json"
        else {"format": TEXT_FORMAT}
    )
    loggers: dict[str, Any] = {
        "uvicorn": {"level": py_level},
        "uvicorn.error": {"level": py_level},
        # Replaced by gateway.access; kept quiet should anything still write to it.
        "uvicorn.access": {"level": "WARNING", "propagate": False},
        "gateway": {"level": py_level},
    }
    if not include_content:
        floor = max(logging.INFO, logging.getLevelName(py_level))
        for name in CONTENT_LOGGERS:
            loggers[name] = {"level": logging.getLevelName(floor)}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request": {"()": f"{__name__}.RequestContextFilter"}},
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["request"],
            }
        },
        "loggers": loggers,
        "root": {"level": py_level, "handlers": ["stderr"]},
    }
