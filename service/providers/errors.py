"""Upstream failures translated into ProviderError / DeadlineExceeded, shared by the bridges.

Messages name the provider, the URL and the model and say what to do, because
the person reading them is usually the operator: an upstream 401 means the
service's own key is wrong, not the caller's.

    HTTP status / fault         Code                 Reason (google.rpc.ErrorInfo)
    401, 403                    FAILED_PRECONDITION  PROVIDER_CREDENTIALS_REJECTED (fix the key)
    404                         NOT_FOUND            PROVIDER_MODEL_NOT_FOUND
    400, 422, 413               INVALID_ARGUMENT     PROVIDER_REJECTED_REQUEST
    429                         RESOURCE_EXHAUSTED   PROVIDER_RATE_LIMITED (retry hint from headers)
    503, 529                    UNAVAILABLE          PROVIDER_OVERLOADED (retry hint, a default)
    other 5xx, 408, 409         UNAVAILABLE          PROVIDER_FAILED
    anything else, bad payload  UNAVAILABLE          PROVIDER_INVALID_RESPONSE
    no connection               UNAVAILABLE          PROVIDER_UNREACHABLE
    stream cut short            UNAVAILABLE          PROVIDER_STREAM_BROKEN
    error line/event after 200  by its type          (as its status; mid-stream errors FAILED)
    first-byte / idle timeout   DEADLINE_EXCEEDED    PROVIDER_TIMEOUT

Every error's ErrorInfo metadata names the provider and its URL (and the
model where known), so the gateway can say which upstream failed.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from service.errors import Code, DeadlineExceeded, ProviderError, Reason, UpstreamLost

# Used when an overloaded upstream gives no hint: long enough not to hammer it.
DEFAULT_BUSY_RETRY_S = 2.0

# Anthropic reports errors after a 200 by type only; these are the statuses they stand for.
ANTHROPIC_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


@dataclass(frozen=True, slots=True)
class Upstream:
    """Who a bridge talks to, with the remedies its error messages suggest."""

    vendor: str  # "Ollama", "Anthropic"
    url: str
    key_hint: str  # what to do when the upstream rejects the service's credentials
    model_hint: str  # what to do about an unknown model; may use {model}

    def metadata(self, model: str | None = None) -> dict[str, str]:
        """ErrorInfo metadata: which upstream (and model) failed."""
        meta = {"provider": self.vendor.lower(), "url": self.url}
        if model:
            meta["model"] = model
        return meta

    def error(
        self,
        message: str,
        code: Code,
        reason: Reason,
        *,
        model: str | None = None,
        retry_after_s: float | None = None,
    ) -> ProviderError:
        return ProviderError(
            message,
            code=code,
            reason=reason,
            metadata=self.metadata(model),
            retry_after_s=retry_after_s,
        )


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def from_status(
    upstream: Upstream,
    status: int,
    detail: str,
    *,
    model: str,
    headers: Mapping[str, str] | None = None,
    label: str | None = None,
) -> ProviderError:
    """The ProviderError for an HTTP error status (or its equivalent) from the upstream.

    ``label`` replaces "HTTP <status>" in the message when the status is only
    implied, e.g. by the type of an error event sent after a 200.
    """
    vendor, url = upstream.vendor, upstream.url
    detail = _clip(detail) or "no detail given"
    what = label or f"HTTP {status}"
    retry_after = parse_retry_after(headers)
    if status in (401, 403):
        return upstream.error(
            f"{vendor} at {url} rejected the service's credentials ({what}: {detail}); "
            f"{upstream.key_hint}",
            Code.FAILED_PRECONDITION,
            Reason.PROVIDER_CREDENTIALS_REJECTED,
            model=model,
        )
    if status == 404:
        hint = upstream.model_hint.format(model=model)
        return upstream.error(
            f"{vendor} at {url} has no model '{model}' ({what}: {detail}); {hint}",
            Code.NOT_FOUND,
            Reason.PROVIDER_MODEL_NOT_FOUND,
            model=model,
        )
    if status == 413:
        return upstream.error(
            f"request too large for {vendor} model '{model}' ({what}: {detail})",
            Code.INVALID_ARGUMENT,
            Reason.PROVIDER_REJECTED_REQUEST,
            model=model,
        )
    if status in (400, 422):
        return upstream.error(
            f"{vendor} rejected the request for model '{model}' ({what}: {detail})",
            Code.INVALID_ARGUMENT,
            Reason.PROVIDER_REJECTED_REQUEST,
            model=model,
        )
    if status == 429:
        hint = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        return upstream.error(
            f"{vendor} rate limit reached ({what}: {detail}){hint}",
            Code.RESOURCE_EXHAUSTED,
            Reason.PROVIDER_RATE_LIMITED,
            model=model,
            retry_after_s=retry_after,
        )
    if status in (503, 529):
        wait = retry_after if retry_after is not None else DEFAULT_BUSY_RETRY_S
        return upstream.error(
            f"{vendor} at {url} is overloaded ({what}: {detail}); retry after {wait:g} s",
            Code.UNAVAILABLE,
            Reason.PROVIDER_OVERLOADED,
            model=model,
            retry_after_s=wait,
        )
    if status >= 500 or status in (408, 409):
        return upstream.error(
            f"{vendor} at {url} failed ({what}: {detail})",
            Code.UNAVAILABLE,
            Reason.PROVIDER_FAILED,
            model=model,
            retry_after_s=retry_after,
        )
    return upstream.error(
        f"unexpected HTTP {status} from {vendor} at {url}: {detail}",
        Code.UNAVAILABLE,
        Reason.PROVIDER_INVALID_RESPONSE,
        model=model,
    )


def connect_failure(upstream: Upstream, exc: BaseException) -> ProviderError:
    """The UNAVAILABLE error for a connection that could not be made."""
    reason = _connect_reason(exc)
    return UpstreamLost(
        f"cannot reach {upstream.vendor} at {upstream.url}: {reason}",
        refused=reason == "connection refused",
        reason=Reason.PROVIDER_UNREACHABLE,
        metadata=upstream.metadata(None),
    )


def _connect_reason(exc: BaseException) -> str:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or (
            isinstance(current, OSError) and current.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        if isinstance(current, socket.gaierror):
            return "host name could not be resolved"
        if isinstance(current, TimeoutError) or "timeout" in type(current).__name__.lower():
            return "connection timed out"
        current = current.__cause__ or current.__context__
    text = str(exc)
    if "refused" in text.lower() or "all connection attempts failed" in text.lower():
        return "connection refused"
    return _clip(text) or type(exc).__name__


def stream_broken(upstream: Upstream, model: str, why: str) -> ProviderError:
    """The UNAVAILABLE error for a response that stopped before its end."""
    return UpstreamLost(
        f"{upstream.vendor} at {upstream.url} stream ended early for model '{model}': {why}",
        reason=Reason.PROVIDER_STREAM_BROKEN,
        metadata=upstream.metadata(model),
    )


def mid_stream_failure(upstream: Upstream, model: str, detail: str) -> ProviderError:
    """The UNAVAILABLE error for an error the upstream reported after starting to answer."""
    return upstream.error(
        f"{upstream.vendor} at {upstream.url} failed mid-stream for model '{model}': "
        f"{_clip(detail)}",
        Code.UNAVAILABLE,
        Reason.PROVIDER_FAILED,
        model=model,
    )


def bad_payload(upstream: Upstream, model: str, detail: str) -> ProviderError:
    """The error for a response we cannot read: the upstream's fault, not ours (HTTP 502)."""
    return upstream.error(
        f"{upstream.vendor} at {upstream.url} sent an unreadable response for model "
        f"'{model}': {_clip(detail)}",
        Code.UNAVAILABLE,
        Reason.PROVIDER_INVALID_RESPONSE,
        model=model,
    )


def first_byte_timeout(upstream: Upstream, model: str, seconds: float) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"{upstream.vendor} at {upstream.url} sent nothing within {seconds:g} s for model "
        f"'{model}' (first_byte_timeout_s)",
        reason=Reason.PROVIDER_TIMEOUT,
        metadata=upstream.metadata(model),
    )


def idle_timeout(upstream: Upstream, model: str, seconds: float) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"{upstream.vendor} at {upstream.url} stalled: no data for {seconds:g} s mid-stream "
        f"for model '{model}' (idle_timeout_s)",
        reason=Reason.PROVIDER_TIMEOUT,
        metadata=upstream.metadata(model),
    )


T = TypeVar("T")


async def next_in_time(
    items: AsyncIterator[T],
    upstream: Upstream,
    model: str,
    *,
    first_deadline: float | None,
    first_byte_timeout_s: float,
    idle_timeout_s: float,
) -> T | None:
    """The next item, or None at the end.

    The first item must come by ``first_deadline``; later ones within ``idle_timeout_s``.
    """
    try:
        if first_deadline is not None:
            async with asyncio.timeout_at(first_deadline):
                return await anext(items)
        async with asyncio.timeout(idle_timeout_s):
            return await anext(items)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        if first_deadline is not None:
            raise first_byte_timeout(upstream, model, first_byte_timeout_s) from None
        raise idle_timeout(upstream, model, idle_timeout_s) from None
