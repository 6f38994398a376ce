"""Logging for the service: text or JSON lines, each carrying the call it belongs to.

A filter copies the current RPC's method, user and request id (from
``service.context``) onto every record, so a line logged deep inside a
turn still says which request it is about. JSON lines come from
python-json-logger. Third-party loggers that write request bodies at debug
level (the Anthropic SDK, httpx, the MCP SDK) are held at info unless
``logging.include_content`` says otherwise: users' messages stay out of logs.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

from service.context import find_call

LogFormat = Literal["text", "json"]
CONTENT_LOGGERS = ("anthropic", "httpx", "httpcore", "mcp")
CHATTY_LOGGERS = ("httpx", "httpcore")
_TEXT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(user)s %(method)s"
_RENAMES = {"asctime": "timestamp", "levelname": "level", "name": "logger"}


class CallFilter(logging.Filter):
    """Puts the current call's request id, user and method on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = find_call()
        if not hasattr(record, "request_id"):
            record.request_id = call.request_id if call is not None else "-"
        if not hasattr(record, "user"):
            record.user = call.user_id if call is not None else ""
        if not hasattr(record, "method"):
            record.method = call.method if call is not None else ""
        return True


def formatter(fmt: LogFormat) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(_JSON_FIELDS, rename_fields=_RENAMES)
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
