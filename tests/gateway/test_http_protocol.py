"""A request uvicorn's HTTP parser refuses (URL over its limit) still gets the JSON error shape.

Driven at the protocol's seam (bytes in, bytes out), the way uvicorn feeds it:
over a real socket the server closes with the rest of the request unread,
and the client may see a reset before the answer.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import uvicorn
from uvicorn.server import ServerState

from gateway.app import create_app
from gateway.http_protocol import PROTOCOL_PATH, JsonErrorHttpToolsProtocol


class RecordingTransport(asyncio.Transport):
    """What the protocol writes, and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


@pytest.mark.parametrize("length", [70_000, 200_000, 1_000_000])
async def test_over_long_url_gets_json_400(length: int) -> None:
    config = uvicorn.Config(app=create_app(), http=PROTOCOL_PATH, log_level="critical")
    assert config.loaded is False
    config.load()
    assert config.http_protocol_class is JsonErrorHttpToolsProtocol
    protocol = JsonErrorHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    transport = RecordingTransport()
    protocol.connection_made(transport)
    request = b"GET /api/conversations/" + b"a" * length + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    for start in range(0, len(request), 65536):  # as the socket delivers it
        if transport.closed:
            break
        protocol.data_received(request[start : start + 65536])
    assert transport.closed
    head, _, body = transport.written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/json" in head
    assert int(head.split(b"content-length: ")[1].split(b"\r\n")[0]) == len(body)
    assert json.loads(body)["code"] == "invalid_argument"
