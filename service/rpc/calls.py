"""What every RPC knows about its call, carried in a contextvar: method, caller, request id.

The interceptor (``service.rpc.interceptor``) sets it before a handler runs,
so handlers, logging and errors read the same facts without passing them
down, and an RPC added later cannot forget to authenticate. The handler
fills in what only it learns (the user the call acts as, a chat turn's own
request id), so the access line and every log record of the call carry them.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from service.auth import Principal
from service.scheduler.admission import is_request_id


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
