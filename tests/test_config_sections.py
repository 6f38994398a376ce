"""The shared config file: every section the service reads is one the gateway lets through.

Each process checks its own sections strictly and leaves the other's to it;
a section added to the service but not listed for the gateway would make the
gateway refuse a valid file.
"""

from __future__ import annotations

from gateway.config import SERVICE_KEYS
from service.config import GATEWAY_SECTIONS, Settings

# Sections both processes read; each checks the keys it owns.
SHARED = {"api_server", "grpc", "logging"}


def test_every_service_section_is_tolerated_by_the_gateway() -> None:
    service_sections = set(Settings.model_fields) - SHARED
    assert service_sections - set(SERVICE_KEYS) == set()


def test_gateway_sections_are_not_service_sections() -> None:
    assert set(GATEWAY_SECTIONS).isdisjoint(Settings.model_fields)


def test_both_read_the_same_logging_keys() -> None:
    from gateway.config import LoggingSection as GatewayLogging
    from service.config import LoggingSection as ServiceLogging

    assert set(GatewayLogging.model_fields) == set(ServiceLogging.model_fields)
