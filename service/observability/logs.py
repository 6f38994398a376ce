"""Logging for the service: text or JSON lines, each carrying the call it belongs to.

A filter copies the current RPC's method, user and request id (from
``service.context``) onto every record, so a line logged deep inside a
turn still says which request it is about; a line outside an RPC has no
method, and one of a call without a user no user (docs/operations.md,
"Logs", lists each field and when it is there). JSON lines come from
python-json-logger. Third-party loggers that write request bodies at debug
level (the Anthropic SDK, httpx, the MCP SDK) are held at info unless
``logging.include_content`` says otherwise: users' messages stay out of logs.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

from service.context import find_call

LogFormat = Literal["text", "json"]
CONTENT_LOGGERS = ("anthropic", "httpx", "httpcore", "mcp")
CHATTY_LOGGERS = ("httpx", "httpcore")
_TEXT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# user and method follow as extras, on the records that have them.
_JSON_FIELDS = "%(message)s %(request_id)s"


class CallFilter(logging.Filter):
    """Puts the current call's request id on every record, its user and method where known."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = find_call()
        if not hasattr(record, "request_id"):
            # "-" outside a call, and for a call that came without an id.
            record.request_id = (call.request_id if call is not None else "") or "-"
        if call is not None:
            # Absent rather than empty: a JSON line has a field only when it says something.
            if call.user_id and not hasattr(record, "user"):
                record.user = call.user_id
            if call.method and not hasattr(record, "method"):
                record.method = call.method
        return True


class JsonLineFormatter(JsonFormatter):
    """One JSON object a line, the same fields as the gateway's (docs/operations.md, "Logs").

    timestamp (ISO 8601, UTC), level (lower case), logger, message, then the
    call's request_id, user and method (where known) and any extras.
    """

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["timestamp"] = datetime.fromtimestamp(record.created, UTC).isoformat()
        log_data["level"] = record.levelname.lower()
        log_data["logger"] = record.name
        super().add_fields(log_data, record, message_dict)


def formatter(fmt: LogFormat) -> logging.Formatter:
    if fmt == "json":
        return JsonLineFormatter(_JSON_FIELDS)
    return logging.Formatter(_TEXT)


def configure_logging(
    level: str, fmt: LogFormat = "text", *, include_content: bool = False
) -> None:
    """Set up the root logger once, at start (``agent-service`` calls it)."""
    numeric = logging.DEBUG if level.lower() == "trace" else getattr(logging, level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(CallFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in (*CONTENT_LOGGERS, *CHATTY_LOGGERS):
        logging.getLogger(name).setLevel(logging.NOTSET)  # inherit, unless held back below
    if not include_content:
        for name in CONTENT_LOGGERS:
            logging.getLogger(name).setLevel(max(numeric, logging.INFO))
        # httpx logs every request at info; the pool's health probes alone would fill the log.
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
