"""The ``auth.jwt`` section: what may be configured, how it is checked, and what a check fetches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from agentconf.files import ConfigError
from service.config import load_settings
from service.idp import JwtSection, JwtVerifier, KeySet
from tests.auth.issuer import AUDIENCE, FakeIssuer, ec_key, rsa_key

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("AGENT_", "ANTHROPIC_", "IOS_APITOKEN")):
            monkeypatch.delenv(name)
    return monkeypatch


def jwt_env(issuer: str = "https://idp.example/", **extra: str) -> dict[str, str]:
    return {
        "AGENT_AUTH__JWT__ISSUER": issuer,
        "AGENT_AUTH__JWT__AUDIENCE": AUDIENCE,
        "AGENT_AUTH__JWT__JWKS_URL": "https://idp.example/.well-known/jwks.json",
        **extra,
    }


def check_config(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "IOS_"))}
    return subprocess.run(
        [sys.executable, "-m", "service.main", "--check-config"],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_validates_the_section_and_fetches_nothing(tmp_path: Path) -> None:
    with FakeIssuer() as issuer:
        env = jwt_env(
            issuer.issuer,
            AGENT_AUTH__JWT__JWKS_URL=issuer.jwks_url,
            AGENT_AUTH__JWT__ALGORITHMS="RS256,ES256",
        )
        proc = check_config(tmp_path, env)
        assert proc.returncode == 0, proc.stderr
        shown = yaml.safe_load(proc.stdout)["auth"]["jwt"]
        assert shown["issuer"] == issuer.issuer and shown["audience"] == [AUDIENCE]
        assert shown["algorithms"] == ["RS256", "ES256"]
        assert issuer.requests == []  # the check never calls the identity provider

        refused = check_config(tmp_path, {**env, "AGENT_AUTH__JWT__ALGORITHMS": "HS256"})
        assert refused.returncode == 2
        assert (
            "auth.jwt.algorithms" in refused.stderr and "'HS256' is not allowed" in refused.stderr
        )


@pytest.mark.parametrize(
    ("algorithms", "words"),
    [
        ("none", "unsigned tokens are never accepted"),
        ("RS256,HS256", "public key into a shared secret"),
        ('["HS512"]', "public key into a shared secret"),
        ("RS257", "unknown algorithm"),
    ],
)
def test_none_and_hmac_can_never_be_configured(
    clean_env: pytest.MonkeyPatch, algorithms: str, words: str
) -> None:
    for name, value in jwt_env(AGENT_AUTH__JWT__ALGORITHMS=algorithms).items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert words in str(caught.value)


def test_environment_forms_of_lists(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in jwt_env().items():
        clean_env.setenv(name, value)
    assert load_settings().auth.jwt.audience == [AUDIENCE]
    clean_env.setenv("AGENT_AUTH__JWT__AUDIENCE", '["https://api.example/", "agent-api"]')
    clean_env.setenv("AGENT_AUTH__JWT__ADMIN_CLAIM", "groups")
    clean_env.setenv("AGENT_AUTH__JWT__ADMIN_VALUES", "agent, admins")  # one group name
    jwt = load_settings().auth.jwt
    assert jwt.audience == ["https://api.example/", "agent-api"]
    assert jwt.admin_values == ["agent, admins"]
    assert jwt.algorithms == ["RS256", "ES256", "EdDSA"]  # the default: asymmetric only


SECTION = {"issuer": "https://idp.example/", "audience": AUDIENCE}


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"audience": []}, "audience is required"),
        ({}, "exactly one of jwks_url and jwks_file"),
        ({"jwks_url": "https://a/k", "jwks_file": "k.json"}, "exactly one of"),
        ({"jwks_url": "http://idp.example/jwks"}, "must use https"),
        ({"jwks_url": "ftp://idp.example/jwks"}, "http(s) URL"),
        ({"jwks_url": "https://a/k", "admin_values": ["x"]}, "admin_values needs admin_claim"),
        ({"jwks_url": "https://a/k", "audence": "typo"}, "Extra inputs are not permitted"),
    ],
)
def test_an_incomplete_section_is_refused(values: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        JwtSection(**{**SECTION, **values})
    assert words in str(caught.value)


def test_other_keys_without_an_issuer_are_refused() -> None:
    with pytest.raises(ValidationError, match="issuer is required"):
        JwtSection(audience="x", jwks_url="https://a/k")
    assert not JwtSection().enabled  # nothing set: off


async def test_an_offline_key_set_file_verifies_and_a_broken_one_is_refused(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    keys_file = tmp_path / "jwks.json"
    issuer = FakeIssuer([rsa_key("rsa-1"), ec_key("ec-1")])  # never started: no network
    keys_file.write_text(json.dumps(issuer.jwks()))
    section = JwtSection(issuer=issuer.issuer, audience=AUDIENCE, jwks_file=keys_file)
    verifier = JwtVerifier(section, KeySet(file=keys_file))
    await verifier.start()
    try:
        token = issuer.token("dana", key=issuer.key("ec-1"))
        assert (await verifier.verify(token)).user_id == "dana"
    finally:
        await verifier.aclose()

    clean_env.setenv("AGENT_AUTH__JWT__ISSUER", issuer.issuer)
    clean_env.setenv("AGENT_AUTH__JWT__AUDIENCE", AUDIENCE)
    clean_env.setenv("AGENT_AUTH__JWT__JWKS_FILE", str(keys_file))
    assert load_settings().auth.jwt.jwks_file == keys_file
    keys_file.write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')  # a shared secret only
    with pytest.raises(ConfigError, match=r"auth\.jwt\.jwks_file: .*no asymmetric signature key"):
        load_settings()
