"""`agent-service users` against a running service: a new token works, a rotated or revoked
one is refused within seconds without a restart, and the file holds digests only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from tests.e2e.queue_helpers import queue_stack, wait_until
from tests.fakes.ollama import FakeOllama
from tests.gateway_http import gateway_client

_CONSOLE_SCRIPT = Path(sys.executable).with_name("agent-service")


def users_cli(path: Path, *args: str) -> str:
    """Run the installed console script; its standard output."""
    done = subprocess.run(
        [str(_CONSOLE_SCRIPT), "users", "--file", str(path), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def status_code(client: httpx.Client, token: str) -> int:
    return client.get("/api/status", headers={"Authorization": f"Bearer {token}"}).status_code


def test_users_round_trip(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    path = tmp_path / "users.yaml"
    alice = users_cli(path, "add", "alice")
    stack = queue_stack(tmp_path / "stack", fake_ollama, auth={"tokens_file": str(path)})
    try:
        with gateway_client(stack.url, timeout=20) as client:
            r = client.post(
                "/api/chat", json={"message": "hi"}, headers={"Authorization": f"Bearer {alice}"}
            )
            assert r.status_code == 200, r.text

            bob = users_cli(path, "add", "bob", "--admin")  # picked up while running
            wait_until(lambda: status_code(client, bob) == 200, "bob's new token to work")
            assert client.get("/api/status", headers={"Authorization": f"Bearer {bob}"}).json()[
                "caller_admin"
            ]

            rotated = users_cli(path, "rotate", "alice")
            wait_until(lambda: status_code(client, alice) == 401, "alice's old token to stop")
            assert status_code(client, rotated) == 200

            users_cli(path, "revoke", "alice")
            wait_until(lambda: status_code(client, rotated) == 401, "the revoked token to stop")
            assert status_code(client, bob) == 200

            listing = users_cli(path, "list")
            assert "bob" in listing and "alice" not in listing and bob not in listing
    finally:
        stack.stop()
    text = path.read_text()
    assert alice not in text and rotated not in text and bob not in text
    entries = yaml.safe_load(text)
    tokens = [e if isinstance(e, str) else e["token"] for e in entries.values()]
    assert tokens and all(t.startswith("sha256:") for t in tokens)
