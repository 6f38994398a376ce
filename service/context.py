"""What every RPC knows about its call, carried in a contextvar: method, caller, request id.

A bottom-floor module (it imports nothing above ``service.auth``'s Principal),
so the turn and the log formatter read the call without importing ``rpc/``.
The interceptor (``service.rpc.interceptor``) sets it before a handler runs,
so handlers, logging and errors read the same facts without passing them
down, and an RPC added later cannot forget to authenticate. The handler
fills in what only it learns (the user the call acts as, a chat turn's own
request id), so the access line and every log record of the call carry them.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass

from service.auth import Principal

# The request id rule, for ids callers send and ids the service mints alike.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def is_request_id(value: str) -> bool:
    """Whether ``value`` may be a request id: 1-64 of letters, digits, ``_`` and ``-``."""
    return _REQUEST_ID.fullmatch(value) is not None  # fullmatch: "$" alone admits a final "\n"


@dataclass(slots=True)
class Call:
    """One RPC in progress."""

    method: str  # the full method name, "/agent.v1.AgentService/Chat"
    principal: Principal
    request_id: str = ""  # the caller's x-request-id, or the chat turn's own id
    user_id: str = ""  # the user the call acts as, once the handler knows it


_current: ContextVar[Call | None] = ContextVar("agent_rpc_call", default=None)


def current_call() -> Call:
    """The call being handled; RuntimeError outside an intercepted RPC (a wiring bug)."""
    call = _current.get()
    if call is None:
        raise RuntimeError("no RPC call context: is the call interceptor installed?")
    return call


def find_call() -> Call | None:
    """The call being handled, or None outside one (log records, background tasks)."""
    return _current.get()


def current_method() -> str:
    """The method being handled, or "an RPC" outside one (for log messages)."""
    call = _current.get()
    return call.method if call is not None else "an RPC"


def enter_call(call: Call) -> None:
    """Make ``call`` the current one for the rest of this task (and tasks it starts)."""
    _current.set(call)


def note_request_id(request_id: str) -> None:
    """The request id the call's work runs under (a chat turn's), for its log lines."""
    call = _current.get()
    if call is not None:
        call.request_id = request_id


def request_id_from(value: str | None) -> str:
    """A caller-sent request id if it follows the request id rule, else ""."""
    if value and is_request_id(value):
        return value
    return ""
