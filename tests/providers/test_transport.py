"""LeanTransport against the fake Ollama and small raw loopback servers written per test."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from service.providers.transport import LeanTransport
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def client(
    url: str, *, timeout: httpx.Timeout | None = None, **limits: float | None
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        timeout=timeout or httpx.Timeout(5.0),
        transport=LeanTransport(limits=httpx.Limits(**limits)),  # type: ignore[arg-type]
        trust_env=False,
    )


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


# --- raw servers -----------------------------------------------------------------

# Returns True when it saw the client close the connection.
Handler = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool | None]]


@dataclass
class Raw:
    """A raw loopback server: ``handler(connection_number, reader, writer)`` per connection.

    The server closes a connection when its handler returns.
    """

    url: str
    connections: int = 0
    closed_by_client: list[int] = field(default_factory=list)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request (head and Content-Length body); b"" when the client closed instead."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


@asynccontextmanager
async def raw_server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Raw]:
    tasks: set[asyncio.Task[None]] = set()
    raw = Raw(url="")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw.connections += 1
        number = raw.connections
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            if await handler(number, reader, writer):
                raw.closed_by_client.append(number)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    scheme = "https" if tls else "http"
    raw.url = f"{scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield raw
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def keep_serving(response: bytes, *, per_connection: int = 1000) -> Handler:
    """Answer each request with ``response``; after ``per_connection`` of them, close."""

    async def handler(
        number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        for _ in range(per_connection):
            if not await read_request(reader):
                return True
            writer.write(response)
            await writer.drain()
        return not await read_request(reader)  # close as the next request arrives

    return handler


# --- against the fake Ollama -----------------------------------------------------


async def test_each_line_arrives_before_the_next_is_sent(fake: FakeOllama) -> None:
    fake.push(Reply.text("one", "two", hang_after=1))  # then silence until we leave
    async with client(fake.url) as http, http.stream("POST", "/api/chat", json=CHAT) as r:
        lines = r.aiter_lines()
        first = json.loads(await asyncio.wait_for(anext(lines), 2))
        assert first["message"]["content"] == "one"
    assert await fake.disconnected(0, timeout=2)


@pytest.mark.parametrize("split", [1, 7, "random"])
async def test_a_body_cut_into_any_pieces_parses_whole(fake: FakeOllama, split: object) -> None:
    fake.push(Reply.text("alpha", " beta", " gamma", split=split))
    async with client(fake.url) as http, http.stream("POST", "/api/chat", json=CHAT) as r:
        lines = [json.loads(line) async for line in r.aiter_lines() if line]
    assert "".join(line["message"]["content"] for line in lines) == "alpha beta gamma"
    assert lines[-1]["done"] is True


async def test_the_request_goes_out_whole_and_the_connection_is_reused(fake: FakeOllama) -> None:
    async with client(fake.url) as http:
        for _ in range(3):
            response = await http.post("/api/chat?trace=1", json=CHAT)
            assert response.status_code == 200
            assert response.http_version == "HTTP/1.1"
            assert response.reason_phrase == "OK"
        tags = await http.get("/api/tags")
    assert tags.json()["models"][0]["name"] == "llama3.2:latest"
    assert fake.connections_opened == 1
    chat = fake.chats[0]
    assert (chat.method, chat.query, chat.json) == ("POST", "trace=1", CHAT)
    assert chat.headers["host"] == fake.url.removeprefix("http://")
    assert chat.headers["content-length"] == str(len(chat.raw_body))
    assert chat.headers["content-type"] == "application/json"


async def test_a_truncated_body_raises_after_what_did_arrive(fake: FakeOllama) -> None:
    fake.push(Reply.text("one", "two", "three", truncate_after=2))
    got: list[str] = []
    async with client(fake.url) as http, http.stream("POST", "/api/chat", json=CHAT) as r:
        with pytest.raises(httpx.RemoteProtocolError):
            async for line in r.aiter_lines():
                got.append(json.loads(line)["message"]["content"])
    assert got == ["one", "two"]


async def test_closing_a_response_early_closes_its_connection(fake: FakeOllama) -> None:
    fake.push(Reply.text(*["tok"] * 50, chunk_delay_s=0.05))
    async with client(fake.url) as http:
        async with http.stream("POST", "/api/chat", json=CHAT) as r:
            await anext(r.aiter_lines())
            closed_at = time.monotonic()
        assert await fake.disconnected(0, timeout=2)
        assert fake.chats[0].disconnected_at - closed_at < 0.25  # type: ignore[operator]
        assert (await http.post("/api/chat", json=CHAT)).status_code == 200
    assert fake.connections_opened == 2


async def test_a_silent_server_hits_the_read_timeout(fake: FakeOllama) -> None:
    fake.push(Reply.text("one", "two", hang_after=1))
    timeout = httpx.Timeout(5.0, read=0.2)
    async with client(fake.url, timeout=timeout) as http:
        async with http.stream("POST", "/api/chat", json=CHAT) as r:
            lines = r.aiter_lines()
            await anext(lines)
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await anext(lines)
            assert 0.15 < time.monotonic() - started < 2
        fake.push(Reply.text("x", initial_delay_s=2))
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/api/chat", json=CHAT)


async def test_the_connection_limit_queues_requests(fake: FakeOllama) -> None:
    fake.responder = lambda request: Reply.text("x", "y", chunk_delay_s=0.05)
    async with client(fake.url, max_connections=2, max_keepalive_connections=2) as http:
        responses = await asyncio.gather(*(http.post("/api/chat", json=CHAT) for _ in range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    assert fake.max_in_flight <= 2
    assert fake.connections_opened == 2


async def test_waiting_for_a_connection_is_bounded_by_the_pool_timeout(fake: FakeOllama) -> None:
    fake.push(Reply.text("one", hang_after=1))
    timeout = httpx.Timeout(5.0, pool=0.1)
    async with client(fake.url, timeout=timeout, max_connections=1) as http:
        async with http.stream("POST", "/api/chat", json=CHAT):
            with pytest.raises(httpx.PoolTimeout):
                await http.get("/api/version")
        assert (await http.get("/api/version")).status_code == 200  # the slot came back


async def test_refused_connections_are_connect_errors() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with client(f"http://127.0.0.1:{port}") as http:
        with pytest.raises(httpx.ConnectError) as caught:
            await http.get("/")
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


# --- against raw servers ------------------------------------------------------------


async def test_a_content_length_body_keeps_the_connection() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    async with raw_server(keep_serving(ok)) as raw, client(raw.url) as http:
        assert [(await http.get("/")).text for _ in range(3)] == ["hello"] * 3
    assert raw.connections == 1


async def test_a_close_delimited_body_ends_with_the_connection() -> None:
    async def handler(
        number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"part two")
        writer.close()

    async with raw_server(handler) as raw, client(raw.url) as http:
        assert [(await http.get("/")).text for _ in range(2)] == ["part one, part two"] * 2
    assert raw.connections == 2


async def test_connection_close_from_the_server_is_not_reused() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with raw_server(keep_serving(closing)) as raw, client(raw.url) as http:
        assert [(await http.get("/")).text for _ in range(2)] == ["ok", "ok"]
    assert raw.connections == 2


async def test_a_stale_kept_alive_connection_is_retried_once_on_a_new_one() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    # Each connection answers one request, then closes when the next one arrives.
    async with raw_server(keep_serving(ok, per_connection=1)) as raw, client(raw.url) as http:
        assert [(await http.post("/", content=b"x")).text for _ in range(3)] == ["ok"] * 3
    assert raw.connections == 3


async def test_a_new_connection_closed_without_an_answer_is_not_retried() -> None:
    async with raw_server(keep_serving(b"", per_connection=0)) as raw, client(raw.url) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/")
    assert raw.connections == 1


async def test_a_connection_the_server_closed_while_idle_is_not_used() -> None:
    async def handler(
        number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # without saying Connection: close

    async with raw_server(handler) as raw, client(raw.url) as http:
        assert (await http.get("/")).text == "ok"
        await asyncio.sleep(0.05)
        assert (await http.get("/")).text == "ok"
    assert raw.connections == 2


async def test_malformed_responses_are_protocol_errors() -> None:
    garbage = b"SPDY/9 what\r\n\r\n"
    async with raw_server(keep_serving(garbage)) as raw, client(raw.url) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/")


async def test_head_responses_and_interim_responses() -> None:
    async def handler(
        number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while request := await read_request(reader):
            if request.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
                writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")

    async with raw_server(handler) as raw, client(raw.url) as http:
        head = await http.head("/")
        assert (head.status_code, head.content) == (200, b"")
        created = await http.post("/", content=b"x")
        assert (created.status_code, created.text) == (201, "done")
        assert "link" not in created.headers
    assert raw.connections == 1


async def test_a_streamed_request_body_is_sent_chunked() -> None:
    received: list[bytes] = []

    async def handler(
        number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        received.append(head + await reader.readuntil(b"0\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    async def parts() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b"world"

    async with raw_server(handler) as raw, client(raw.url) as http:
        assert (await http.post("/up", content=parts())).status_code == 200
    assert b"transfer-encoding: chunked" in received[0].lower()
    assert received[0].endswith(b"\r\n\r\nb\r\nhello world\r\n0\r\n\r\n")


async def test_a_large_body_arrives_whole() -> None:
    body = bytes(range(256)) * 8192  # 2 MiB: reading pauses and resumes on the way
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    async with raw_server(keep_serving(response)) as raw, client(raw.url) as http:
        async with http.stream("GET", "/") as r:
            await asyncio.sleep(0.1)  # let the server get ahead of us
            assert await r.aread() == body
        assert (await http.get("/")).content == body
    assert raw.connections == 1


async def test_a_whole_body_left_unread_leaves_the_connection_usable() -> None:
    body = b"x" * (256 * 1024 + 1)  # just over the point where reading pauses
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    timeout = httpx.Timeout(2.0)
    async with raw_server(keep_serving(response)) as raw, client(raw.url, timeout=timeout) as http:
        async with http.stream("GET", "/"):
            await asyncio.sleep(0.1)  # all of it arrives, and is never read
        assert (await http.get("/")).content == body
    assert raw.connections == 1


async def test_idle_connections_expire_and_aclose_closes_them() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with raw_server(keep_serving(ok)) as raw:
        async with client(raw.url, keepalive_expiry=0.05) as http:
            await http.get("/")
            await asyncio.sleep(0.1)
            await http.get("/")
            assert raw.connections == 2
            assert await wait_for(lambda: raw.closed_by_client == [1])
        assert await wait_for(lambda: raw.closed_by_client == [1, 2])


async def test_the_limit_counts_idle_connections_of_other_hosts() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    timeout = httpx.Timeout(5, pool=0.5)
    async with (
        raw_server(keep_serving(ok)) as a,
        raw_server(keep_serving(ok)) as b,
        client(a.url, max_connections=1, timeout=timeout) as http,
    ):
        assert (await http.get(f"{a.url}/")).text == "ok"
        assert (await http.get(f"{b.url}/")).text == "ok"
        assert await wait_for(lambda: a.closed_by_client == [1])


async def test_a_connect_that_hangs_is_a_connect_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    # Fill the accept queue so further handshakes get no answer.
    fillers = [socket.socket() for _ in range(4)]
    for filler in fillers:
        filler.setblocking(False)
        with suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
    timeout = httpx.Timeout(5.0, connect=0.2)
    try:
        async with client(f"http://127.0.0.1:{port}", timeout=timeout) as http:
            started = time.monotonic()
            with pytest.raises(httpx.ConnectTimeout):
                await http.get("/")
            assert time.monotonic() - started < 2
    finally:
        for sock in [*fillers, listener]:
            sock.close()


# --- TLS -----------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
         "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_is_verified_tls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret"
    trusting = ssl.create_default_context(cafile=str(cert))
    async with raw_server(keep_serving(ok), tls=server_side) as raw:
        async with httpx.AsyncClient(transport=LeanTransport(ssl_context=trusting)) as http:
            assert [(await http.get(raw.url)).text for _ in range(2)] == ["secret"] * 2
        async with httpx.AsyncClient(transport=LeanTransport()) as http:
            with pytest.raises(httpx.ConnectError) as caught:
                await http.get(raw.url)  # the default context does not trust a self-signed cert
    assert raw.connections == 1  # the refused handshake never reached the handler
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)


async def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True
