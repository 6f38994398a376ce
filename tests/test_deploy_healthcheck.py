"""deploy/healthcheck.py against a real gRPC health server and a real HTTP server."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "healthcheck.py"


@pytest.fixture(scope="module")
def check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_healthcheck", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None)


def serve_http(routes: dict[str, int]) -> ThreadingHTTPServer:
    """A server answering each path with its status (404 for the others)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(routes.get(self.path, 404))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def http_server() -> Iterator[tuple[dict[str, int], str]]:
    routes: dict[str, int] = {}
    server = serve_http(routes)
    try:
        yield routes, f"http://127.0.0.1:{server.server_address[1]}/health/ready"
    finally:
        server.shutdown()
        server.server_close()


def test_grpc_serving_is_healthy_and_not_serving_is_not(
    check: ModuleType, health_server: tuple[str, health.HealthServicer]
) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert check.main(["grpc", address]) == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert check.main(["grpc", address]) == 1


def test_grpc_nothing_listening_is_unhealthy(check: ModuleType) -> None:
    assert check.main(["grpc", "127.0.0.1:1"]) == 1


def test_http_ready_and_not_ready(
    check: ModuleType, http_server: tuple[dict[str, int], str]
) -> None:
    routes, url = http_server
    routes["/health/ready"] = 200
    assert check.main(["http", url]) == 0
    routes["/health/ready"] = 503
    assert check.main(["http", url]) == 1


def test_http_falls_back_to_health_on_a_gateway_without_ready(
    check: ModuleType, http_server: tuple[dict[str, int], str]
) -> None:
    routes, url = http_server
    routes["/health"] = 200
    assert check.main(["http", url]) == 0
    routes["/health"] = 503
    assert check.main(["http", url]) == 1


def test_http_nothing_listening_is_unhealthy(check: ModuleType) -> None:
    assert check.main(["http", "http://127.0.0.1:1/health/ready"]) == 1


def test_auto_mode_follows_the_command_of_pid_1(check: ModuleType) -> None:
    gateway = b"/usr/local/bin/python\0/usr/local/bin/agent-gateway\0"
    assert check.mode_for(gateway) == "http"
    assert check.mode_for(b"/usr/local/bin/python\0/usr/local/bin/agent-service\0") == "grpc"


def test_wildcard_listen_addresses_are_dialled_on_loopback(check: ModuleType) -> None:
    assert check.loopback("0.0.0.0:50051") == "127.0.0.1:50051"
    assert check.loopback("[::]:50051") == "127.0.0.1:50051"
    assert check.loopback("service:50051") == "service:50051"


def test_the_script_exits_with_the_status_docker_reads(
    health_server: tuple[str, health.HealthServicer],
) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    run = [sys.executable, str(SCRIPT), "grpc", address]
    assert subprocess.run(run, capture_output=True, check=False).returncode == 0
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "nonsense"], capture_output=True, check=False
    )
    assert bad.returncode == 2 and b"unknown mode" in bad.stderr
