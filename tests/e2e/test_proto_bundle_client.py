"""A client built from `make proto-bundle` alone decodes the RetryInfo of a refused request.

The bundle is compiled with grpcio-tools into a temp folder; a separate
Python process whose imports of ``agent.v1``, ``google.api`` and
``google.rpc`` come from that folder only (checked) calls the real service
until its rate limit refuses (RESOURCE_EXHAUSTED, HTTP 429) and reads the
retry delay from the status details.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_tools import protoc

from tests.e2e.stack import Stack, launch, provider_config
from tests.fakes.ollama import FakeOllama

ROOT = Path(__file__).resolve().parents[2]

CLIENT = textwrap.dedent(
    """
    import json, sys
    import grpc
    from agent.v1 import agent_pb2, agent_pb2_grpc
    from google.rpc import error_details_pb2, status_pb2

    built = sys.argv[2]
    for module in (agent_pb2, agent_pb2_grpc, error_details_pb2, status_pb2):
        assert module.__file__.startswith(built), module.__file__
    channel = grpc.insecure_channel(sys.argv[1])
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    request = agent_pb2.ChatRequest(message="hello", user_id="bundle-user")
    stub.Chat(request, timeout=20)
    try:
        stub.Chat(request, timeout=20)
    except grpc.RpcError as exc:
        details = dict(exc.trailing_metadata())["grpc-status-details-bin"]
        status = status_pb2.Status.FromString(details)
        retry = error_details_pb2.RetryInfo()
        [packed] = [d for d in status.details if d.Is(retry.DESCRIPTOR)]
        packed.Unpack(retry)
        print(json.dumps({"code": exc.code().name, "retry_s": retry.retry_delay.seconds}))
    """
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama) -> Iterator[Stack]:
    config = provider_config("ollama", fake_ollama, None)
    config["limits"] = {"requests_per_minute": 1}
    stack = launch(tmp_path_factory.mktemp("bundle-stack"), config)
    yield stack
    stack.stop()


def _build_client(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    subprocess.run(
        [sys.executable, "scripts/generate.py", "--bundle", str(bundle)], cwd=ROOT, check=True
    )
    out = tmp_path / "client"
    out.mkdir()
    wkt = Path(protoc.__file__).parent / "_proto"  # the well-known types every protoc ships
    protos = [str(p.relative_to(bundle)) for p in bundle.rglob("*.proto")]
    status = protoc.main(
        [
            "protoc",
            f"-I{bundle}",
            f"-I{wkt}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ]
    )
    assert status == 0
    # Regular packages below google/ (google itself stays a namespace, for google.protobuf),
    # so these win over any installed copy.
    for folder in out.rglob("*"):
        if folder.is_dir() and folder != out / "google":
            (folder / "__init__.py").touch()
    return out


def test_a_client_from_the_bundle_decodes_retry_info(stack: Stack, tmp_path: Path) -> None:
    built = _build_client(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(built)}
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, stack.grpc_address, str(built)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["code"] == "RESOURCE_EXHAUSTED"
    assert 1 <= answer["retry_s"] <= 60
