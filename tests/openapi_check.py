"""Every gateway response a test receives, checked against the OpenAPI document.

The document is made strict first: each object schema that lists its
properties gets ``additionalProperties: false``, so a field the gateway sends
but the document does not name fails as surely as a missing one. SSE bodies
are checked frame by frame against ``StreamFrame`` (each frame needs an id,
and ids increase). The check runs when a response is closed, through a
transport that wraps the real one, so tests that read a stream bit by bit
are unaffected until they are done with it.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import AsyncIterator, Iterator
from functools import cache
from typing import Any

import httpx
from jsonschema import Draft202012Validator

_PARAM = re.compile(r"\{[^}]+\}")
_FRAMES = "#/components/schemas/StreamFrame"


def strict(node: Any) -> Any:
    """A copy of ``node`` whose object schemas forbid properties they do not list."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def sse_frames(text: str) -> list[dict[str, str]]:
    """The complete frames of an SSE body as {id, event, data} strings (OpenAPI 3.2's reading).

    A cut-off last frame is left out.
    """
    frames = []
    for block in text.split("\n\n")[:-1]:
        frame: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":") or not line:
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name in ("id", "event", "data"):
                frame[name] = value
        if frame:
            frames.append(frame)
    return frames


class ResponseCheck:
    """Holds responses to the document; ``problems`` collects what disagreed."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._components = strict(copy.deepcopy(document["components"]))
        self._routes = [
            (verb.upper(), re.compile("^" + _PARAM.sub("[^/]+", path) + "$"), operation)
            for path, operations in document["paths"].items()
            for verb, operation in operations.items()
        ]
        self._validators: dict[str, Draft202012Validator] = {}
        # Every disagreement a closed response showed, also those raised where no test
        # looks (a stream read in a thread): tests/conftest.py fails the test on them.
        self.found: list[str] = []

    def _validator(self, ref: str) -> Draft202012Validator:
        if ref not in self._validators:
            root = {"$ref": ref, "components": self._components}
            self._validators[ref] = Draft202012Validator(root)
        return self._validators[ref]

    def _errors(self, schema: dict[str, Any], value: Any) -> list[str]:
        ref = schema.get("$ref")
        if ref is None:
            validator = Draft202012Validator({**strict(schema), "components": self._components})
        else:
            validator = self._validator(ref)
        return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]

    def problems(
        self, method: str, path: str, status: int, headers: httpx.Headers, body: bytes
    ) -> list[str]:
        """What is wrong with one response ([] when it matches the document)."""
        operation = next(
            (op for verb, pattern, op in self._routes if verb == method and pattern.match(path)),
            None,
        )
        if operation is None:
            return []  # not a documented route: /metrics, /docs, unknown paths
        where = f"{method} {path} {status}"
        entry = operation["responses"].get(str(status))
        if entry is None:
            return [f"{where}: status not documented"]
        if not body:
            return []  # e.g. the 499 a chat whose client left answers to nobody
        kind = headers.get("content-type", "").split(";")[0]
        media = entry.get("content", {}).get(kind)
        if media is None:
            return [f"{where}: {kind} not documented"]
        if kind == "text/event-stream":
            return self._stream_problems(where, media, body.decode())
        return [f"{where} {e}" for e in self._errors(media["schema"], json.loads(body))]

    def _stream_problems(self, where: str, media: dict[str, Any], text: str) -> list[str]:
        out: list[str] = []
        last = 0
        union = media["itemSchema"]
        mapping = self._components["schemas"]["StreamFrame"]["discriminator"]["mapping"]
        for frame in sse_frames(text):
            # A known event is checked against its own member of the union: the union
            # tries every member, several times the cost on a long stream.
            known = union == {"$ref": _FRAMES} and frame.get("event") in mapping
            errors = self._errors({"$ref": mapping[frame["event"]]} if known else union, frame)
            if not errors:  # the frame is right; now its data, by the event's model
                data = self._frame_schema(frame["event"])["properties"]["data"]
                errors = self._errors(data["contentSchema"], json.loads(frame["data"]))
            out += [f"{where} frame {frame}: {e}" for e in errors]
            seq = int(frame["id"]) if frame.get("id", "").isdigit() else 0
            if seq <= last:
                out.append(f"{where}: frame id {frame.get('id')!r} after {last}")
            last = max(last, seq)
        return out

    def _frame_schema(self, event: str) -> dict[str, Any]:
        union = self._components["schemas"]["StreamFrame"]
        ref: str = union["discriminator"]["mapping"][event]
        frame: dict[str, Any] = self._components["schemas"][ref.rsplit("/", 1)[-1]]
        return frame


class _Recorded:
    """Collects the body as it is read, and checks the response when it is closed."""

    def __init__(self, check: ResponseCheck, request: httpx.Request, response: httpx.Response):
        self._check = check
        self._request = request
        self._response = response
        self._chunks: list[bytes] = []

    def _verdict(self) -> None:
        problems = self._check.problems(
            self._request.method,
            self._request.url.path,
            self._response.status_code,
            self._response.headers,
            b"".join(self._chunks),
        )
        self._check.found += problems
        assert not problems, "response disagrees with /openapi.json:\n" + "\n".join(problems)


class _AsyncStream(_Recorded, httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.stream:  # type: ignore[union-attr]
            self._chunks.append(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()
        self._verdict()


class _SyncStream(_Recorded, httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._response.stream:  # type: ignore[union-attr]
            self._chunks.append(chunk)
            yield chunk

    def close(self) -> None:
        self._response.close()
        self._verdict()


class CheckedAsyncTransport(httpx.AsyncBaseTransport):
    """An async transport whose responses are checked against the document when closed."""

    def __init__(self, inner: httpx.AsyncBaseTransport, check: ResponseCheck) -> None:
        self._inner = inner
        self._check = check

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        stream = _AsyncStream(self._check, request, response)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=stream,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class CheckedTransport(httpx.BaseTransport):
    """A sync transport whose responses are checked against the document when closed."""

    def __init__(self, inner: httpx.BaseTransport, check: ResponseCheck) -> None:
        self._inner = inner
        self._check = check

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        stream = _SyncStream(self._check, request, response)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=stream,
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._inner.close()


@cache
def gateway_check() -> ResponseCheck:
    """The check against the gateway's own document (built once per test session)."""
    from gateway.app import create_app

    return ResponseCheck(create_app().openapi())


def found_so_far() -> list[str]:
    """What every check of this process found so far ([] when none has run yet)."""
    return gateway_check().found if gateway_check.cache_info().currsize else []
