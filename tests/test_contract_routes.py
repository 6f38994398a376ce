"""The gateway serves exactly the routes the proto's google.api.http annotations declare."""

from __future__ import annotations

import re

from agent.v1 import agent_pb2
from google.api import annotations_pb2

from gateway.app import create_app


def _proto_routes() -> set[tuple[str, str]]:
    service = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    routes = set()
    for method in service.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        assert verb is not None, f"{method.name} has no http annotation"
        routes.add((verb.upper(), getattr(rule, verb)))
    return routes


def _gateway_routes() -> set[tuple[str, str]]:
    # The OpenAPI document lists every route the app serves, whatever the router nesting.
    paths = create_app().openapi()["paths"]
    return {
        (verb.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/api/")
        for verb in operations
    }


def test_every_rpc_has_an_annotation_and_a_route() -> None:
    proto = _proto_routes()
    assert len(proto) == len(agent_pb2.DESCRIPTOR.services_by_name["AgentService"].methods)
    assert _gateway_routes() == proto


def test_path_parameters_match_request_fields() -> None:
    service = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    for method in service.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        path = getattr(rule, rule.WhichOneof("pattern"))
        for name in re.findall(r"{(\w+)}", path):
            assert name in method.input_type.fields_by_name, (method.name, name)


def test_generated_code_is_fresh() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "scripts/generate.py", "--check"], cwd=root, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
