"""Taking the gRPC port: one service per address, and a clear line when it is taken.

gRPC's default SO_REUSEPORT lets a second service bind a port the first one
listens on; the kernel then splits calls between two separate queues. The
server is built with ``grpc.so_reuseport`` off, and the address is tried with
a plain socket first, because gRPC's own bind failure is a RuntimeError plus a
C-core log line on stderr.
"""

from __future__ import annotations

import errno
import socket

import grpc


class ListenError(OSError):
    """The service cannot listen on its configured address."""


def _host_and_port(address: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port``; None for forms only gRPC understands (unix:, dns:)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or "/" in address:
        return None
    host = host.strip("[]") or "::"
    return host, int(port_text)


def check_address_free(address: str, setting: str = "grpc.address") -> None:
    """Raise ListenError when something already listens on ``address`` (port 0 always passes).

    ``setting`` names the key that chose the address, for the hint in the message.
    """
    parsed = _host_and_port(address)
    if parsed is None or parsed[1] == 0:
        return
    host, port = parsed
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {address}: {exc.strerror}") from None  # bad host
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                # SO_REUSEADDR as gRPC sets it: a port in TIME_WAIT is free, a listening one
                # is not.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ListenError(
                    f"cannot listen on {address}: address already in use "
                    f"(is another agent-service running? set {setting})"
                ) from None
            # Anything else (no IPv6 here, say) is gRPC's to judge: add_port reports it.


def add_port(server: grpc.aio.Server, address: str) -> int:
    """Bind ``server`` to ``address``; the port it got, or ListenError."""
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc raises "Failed to bind to address ..."
        raise ListenError(f"cannot listen on {address}: {exc}") from None
    if port == 0:
        raise ListenError(f"cannot listen on {address}")
    return port
