"""Container health check for the one image that runs both processes.

    python healthcheck.py grpc [HOST:PORT]   # the service: grpc.health.v1 says SERVING
    python healthcheck.py http [URL]         # the gateway: /health/ready answers 200
    python healthcheck.py                    # auto: whichever process is PID 1

Exit status 0 means healthy, 1 unhealthy (what Docker's HEALTHCHECK expects).
A Dockerfile has one HEALTHCHECK for the image, yet the image starts either
``agent-service`` or ``agent-gateway``; "auto" reads PID 1's command line so
``docker run IMAGE agent-gateway`` is checked as a gateway without extra flags.
Addresses default to what the process itself listens on, taken from the same
environment variables it reads, with a wildcard host replaced by loopback.
It imports only what the image installs anyway (grpcio, grpcio-health-checking).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_S = 3.0
WILDCARD_HOSTS = ("", "0.0.0.0", "[::]", "::")


def loopback(address: str) -> str:
    """HOST:PORT to dial from inside the container: a wildcard host becomes 127.0.0.1."""
    host, _, port = address.rpartition(":")
    return f"127.0.0.1:{port}" if host in WILDCARD_HOSTS else address


def check_grpc(address: str) -> bool:
    """True when the overall ("") service of grpc.health.v1 reports SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def http_status(url: str) -> int:
    """The HTTP status of a GET, or 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as reply:  # noqa: S310 (loopback)
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return 0


def check_http(url: str) -> bool:
    """True when the readiness URL answers 200.

    A gateway older than ``/health/ready`` answers 404 there; its ``/health``
    (which also asks the service) is the next best thing.
    """
    status = http_status(url)
    if status == 404 and url.endswith("/health/ready"):
        status = http_status(url.removesuffix("/ready"))
    return status == 200


def default_grpc_address() -> str:
    return loopback(os.environ.get("AGENT_GRPC__ADDRESS", "127.0.0.1:50051"))


def default_http_url() -> str:
    port = os.environ.get("AGENT_API_SERVER__PORT", "8000")
    return f"http://127.0.0.1:{port}/health/ready"


def mode_for(cmdline: bytes) -> str:
    """The mode for a command line (NUL-separated, as in /proc): http for the gateway."""
    return "http" if b"agent-gateway" in cmdline else "grpc"


def main(argv: list[str]) -> int:
    mode = argv[0] if argv else "auto"
    if mode == "auto":
        try:
            mode = mode_for(Path("/proc/1/cmdline").read_bytes())
        except OSError:
            mode = "grpc"
    target = argv[1] if len(argv) > 1 else None
    if mode == "grpc":
        healthy = check_grpc(target or default_grpc_address())
    elif mode == "http":
        healthy = check_http(target or default_http_url())
    else:
        print(f"unknown mode {mode!r}: use grpc, http or auto", file=sys.stderr)
        return 2
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
