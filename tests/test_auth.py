"""Authenticator: modes, token files, and who a request may act as."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from service.auth import Authenticator, load_tokens_file
from service.errors import InvalidRequest, PermissionDenied, Unauthenticated


def test_open_mode_accepts_anyone_and_uses_the_default_user() -> None:
    auth = Authenticator(default_user="someone")
    principal = auth.authenticate(None)
    assert auth.user_for(principal, "") == "someone"
    assert auth.user_for(principal, "bob") == "bob"


def test_shared_token() -> None:
    auth = Authenticator(shared_token="s3cret")
    with pytest.raises(Unauthenticated):
        auth.authenticate(None)
    with pytest.raises(Unauthenticated):
        auth.authenticate("Bearer wrong")
    with pytest.raises(Unauthenticated):
        auth.authenticate("Basic s3cret")
    principal = auth.authenticate("Bearer s3cret")
    assert auth.user_for(principal, "carol") == "carol"
    assert auth.user_for(principal, "") == "default"
    with pytest.raises(InvalidRequest):
        auth.user_for(principal, "../../etc/passwd")


def test_user_tokens_plain_and_hashed() -> None:
    digest = hashlib.sha256(b"bob-token").hexdigest()
    auth = Authenticator(user_tokens={"alice": "alice-token", "bob": f"sha256:{digest}"})
    alice = auth.authenticate("bearer alice-token")
    assert auth.user_for(alice, "") == "alice"
    assert auth.user_for(alice, "alice") == "alice"
    with pytest.raises(PermissionDenied):
        auth.user_for(alice, "bob")
    assert auth.user_for(auth.authenticate("Bearer bob-token"), "") == "bob"
    with pytest.raises(Unauthenticated):
        auth.authenticate(f"Bearer {digest}")  # the digest itself is not a token


def test_tokens_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n  alice: a1\n  bob: b2\n")
    assert load_tokens_file(path) == {"alice": "a1", "bob": "b2"}
    path.write_text("- just a list\n")
    with pytest.raises(ValueError, match="mapping"):
        load_tokens_file(path)
    path.write_text("'../evil': x\n")
    with pytest.raises(InvalidRequest):
        load_tokens_file(path)
