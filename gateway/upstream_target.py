"""Where the gateway dials: one service process, or several replicas balanced by gRPC itself.

``grpc.address`` on the gateway is one ``host:port``, several of them
separated by commas (``10.0.0.5:50051,10.0.0.6:50051``), or any gRPC target
URI (``dns:///agent-service:50051``, whose name may resolve to several
replicas). With more than one possible backend the channel balances calls
with gRPC's ``round_robin`` and checks each backend with ``grpc.health.v1``
(the service name ``agent.v1.AgentService``), so a replica that is draining
(NOT_SERVING) or dead gets no new calls. The service listens on exactly one
address: a list is for the gateway only.
"""

from __future__ import annotations

import ipaddress
import json

HEALTH_SERVICE = "agent.v1.AgentService"

_BALANCED = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": HEALTH_SERVICE},
    }
)


class TargetError(ValueError):
    """``grpc.address`` cannot be dialled as written."""


def dial_target(address: str) -> tuple[str, bool]:
    """The channel target for ``address``, and whether calls are balanced over several."""
    address = address.strip()
    if "://" in address or address.startswith(("dns:", "ipv4:", "ipv6:", "unix:")):
        return address, address.startswith(("dns:", "ipv4:", "ipv6:"))
    parts = [part.strip() for part in address.split(",") if part.strip()]
    if not parts:
        raise TargetError("grpc.address is empty")
    if len(parts) == 1:
        return parts[0], False
    families = {_family(part) for part in parts}
    if len(families) != 1:
        raise TargetError(
            "grpc.address: a list of replicas must be all IPv4 or all IPv6 literals "
            f"(got {address!r}); for host names use one DNS name: dns:///name:port"
        )
    return f"{families.pop()}:{','.join(parts)}", True


def _family(part: str) -> str:
    host, sep, port = part.rpartition(":")
    if not sep or not port.isdigit():
        raise TargetError(f"grpc.address: {part!r} is not host:port")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise TargetError(
            f"grpc.address: {host!r} in a list must be an IP literal; "
            "for host names use one DNS name: dns:///name:port"
        ) from None
    return "ipv4" if ip.version == 4 else "ipv6"


def balancing_options(balanced: bool) -> list[tuple[str, str | int]]:
    """Channel options: round_robin with health checks when there are several backends.

    With one backend, gRPC's transparent retries are off: a retry could only go
    back to the process that refused the call, and the retry state costs about
    6 KiB of every open call (a bare grpc.aio client holding streams open: 29 KiB
    per call with it, 23 KiB without), which thousands of waiting streams pay.
    """
    if not balanced:
        return [("grpc.enable_retries", 0)]
    return [("grpc.service_config", _BALANCED), ("grpc.enable_retries", 1)]
