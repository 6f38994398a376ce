"""The shared config file: one model per shared section, every section known to both processes.

The gateway reads api_server, grpc, sse and logging through the same models as
the service (agentconf.sections) and lets the service's own sections through;
the service checks every key of the file. A misspelt key inside any section is
an error, never silently ignored.
"""

from __future__ import annotations

import os
import socket

import pytest
from pydantic import ValidationError

from agentconf.sections import SERVICE_SECTIONS
from gateway.config import GatewaySettings
from service.config import Settings


def test_the_service_reads_every_section_and_the_gateway_the_rest_by_name() -> None:
    assert set(Settings.model_fields) == set(GatewaySettings.model_fields) | SERVICE_SECTIONS
    assert SERVICE_SECTIONS.isdisjoint(GatewaySettings.model_fields)


def test_shared_sections_are_one_model_in_both_processes() -> None:
    for name in GatewaySettings.model_fields:
        service = Settings.model_fields[name].annotation
        assert service is GatewaySettings.model_fields[name].annotation, name


@pytest.mark.parametrize("model", [Settings, GatewaySettings])
@pytest.mark.parametrize("section", ["api_server", "grpc", "logging", "sse"])
def test_an_unknown_key_in_a_shared_section_is_refused(model: type, section: str) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model(**{section: {"no_such_key": 1}})


@pytest.mark.parametrize("section", sorted(SERVICE_SECTIONS - {"limits"}))
def test_an_unknown_key_in_a_service_section_is_refused(section: str) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Settings(**{section: {"no_such_key": 1}})


def test_an_unknown_key_of_an_mcp_server_is_refused() -> None:
    server = {"name": "time", "command": "mcp-server-time", "comand": "typo"}
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Settings(tools={"mcp_servers": [server]})


def test_the_replica_id_defaults_to_host_name_and_pid() -> None:
    scheduler = Settings().scheduler
    assert scheduler.resolved_replica_id() == f"{socket.gethostname()}-{os.getpid()}"
    named = Settings(scheduler={"replica_id": "r1"}).scheduler
    assert named.resolved_replica_id() == "r1"
