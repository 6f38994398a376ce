"""A bounded schemathesis run: the gateway (in process) against its own OpenAPI document.

The real service runs behind it (a subprocess on the fake Ollama, shared
token auth), so each route answers for real: no 5xx, and every response
(status, content type, headers, body) conforms to what the document says.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, settings
from schemathesis import checks
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi

from gateway.app import create_app
from gateway.config import GatewaySettings
from tests.e2e.stack import Stack, provider_config
from tests.fakes.ollama import FakeOllama

TOKEN = "schemathesis-token"
CASES_PER_OPERATION = 25  # x 9 operations x 2 modes: a few hundred cases


@pytest.fixture(scope="module")
def service_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with FakeOllama() as fake:
        stack = Stack(
            Path(tmp_path_factory.mktemp("schemathesis")),
            provider_config("ollama", fake, None),
            env={"IOS_APITOKEN": TOKEN},
        )
        stack.workdir.mkdir(parents=True, exist_ok=True)
        stack.start_service(str(stack._write_config()))
        try:
            stack.wait_service_ready()
            yield stack.grpc_address
        finally:
            asgi.shutdown_lifespans()  # the gateway's channel, before its service goes
            stack.stop()


@pytest.fixture(scope="module")
def schema(service_address: str) -> schemathesis.BaseSchema:
    app = create_app(GatewaySettings(grpc={"address": service_address}))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _runs() -> list[tuple[str, GenerationMode]]:
    paths = create_app().openapi()["paths"]
    runs = []
    for path, ops in sorted(paths.items()):
        for verb, op in ops.items():
            label = f"{verb.upper()} {path}"
            runs.append((label, GenerationMode.POSITIVE))
            if op.get("parameters") or op.get("requestBody"):  # else nothing can be invalid
                runs.append((label, GenerationMode.NEGATIVE))
    return runs


def schema_valid_is_never_422(ctx: object, response: Any, case: schemathesis.Case) -> None:
    """Data the document allows passes the gateway's validation.

    (Replaces positive_data_acceptance, which also refuses 400: the service's
    answer to well-formed but meaningless values, such as an unknown page_token.)
    """
    if response.status_code == 422:
        raise AssertionError(f"schema-valid request refused: {response.text}")


@pytest.mark.parametrize(("label", "mode"), _runs())
def test_operation_conforms(
    schema: schemathesis.BaseSchema, label: str, mode: GenerationMode
) -> None:
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    if mode is GenerationMode.POSITIVE:
        kwargs: dict[str, Any] = {
            "excluded_checks": [checks.positive_data_acceptance],
            "additional_checks": [schema_valid_is_never_422],
        }
    else:
        # Unknown query parameters are ignored, as HTTP APIs do; every other check stays.
        kwargs = {"excluded_checks": [checks.negative_data_rejection]}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=CASES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
            # JSON Schema counts 4.0 as an integer; the gateway deliberately does not.
            assume(not isinstance(case.body.get("priority"), float))
        case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs)

    run()
