"""The gateway's dial target: one service, a list of replicas, or a gRPC target URI."""

from __future__ import annotations

import json

import pytest

from gateway.upstream_target import TargetError, balancing_options, dial_target


def test_one_address_is_dialled_as_it_is_without_balancing() -> None:
    assert dial_target("127.0.0.1:50051") == ("127.0.0.1:50051", False)
    assert dial_target("agent-service:50051") == ("agent-service:50051", False)
    assert balancing_options(False) == [("grpc.enable_retries", 0)]


def test_a_list_of_replicas_becomes_one_balanced_target() -> None:
    assert dial_target("127.0.0.1:5001, 127.0.0.1:5002,127.0.0.1:5003") == (
        "ipv4:127.0.0.1:5001,127.0.0.1:5002,127.0.0.1:5003",
        True,
    )
    assert dial_target("[::1]:5001,[::1]:5002") == ("ipv6:[::1]:5001,[::1]:5002", True)


def test_a_dns_target_is_balanced_with_health_checks() -> None:
    target, balanced = dial_target("dns:///agent-service:50051")
    assert target == "dns:///agent-service:50051" and balanced
    config = json.loads(dict(balancing_options(balanced))["grpc.service_config"])  # type: ignore[arg-type]
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": "agent.v1.AgentService"}


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("a.example:1,b.example:2", "IP literal"),
        ("127.0.0.1:1,[::1]:2", "all IPv4 or all IPv6"),
        ("127.0.0.1:1,127.0.0.1", "not host:port"),
        (" , ", "empty"),
    ],
)
def test_lists_that_cannot_be_dialled_are_refused_with_a_reason(address: str, says: str) -> None:
    with pytest.raises(TargetError, match=says):
        dial_target(address)
