"""uvicorn's httptools protocol, with its own 400 answer in the gateway's JSON error shape.

A request the HTTP parser refuses (a URL or header block over the parser's
limit, a malformed request line) never reaches the app: uvicorn answers it
with a plain-text 400. This subclass changes only the body of that answer,
so even those clients get ``{"detail": ..., "code": "invalid_argument"}``.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# The import path agent-gateway hands to uvicorn (workers import it themselves).
PROTOCOL_PATH = "gateway.http_protocol:JsonErrorHttpToolsProtocol"


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose parser-error answer is JSON."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(
            {
                "detail": f"{msg} (malformed request, or URL/headers too long)",
                "code": "invalid_argument",
            }
        ).encode()
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
