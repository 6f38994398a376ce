"""Tokens that must be refused, each with the words the refusal must contain.

The issuer under test holds an RSA key ``rsa-1`` and an EC key ``ec-1``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.auth import forge
from tests.auth.issuer import FakeIssuer, ec_key, rsa_key


def _other_rsa_signed(issuer: FakeIssuer) -> str:
    """Signed by an RSA key the issuer does not have, under the issuer's RSA kid."""
    return issuer.token("alice", key=rsa_key("rsa-1"))


def _other_ec_signed(issuer: FakeIssuer) -> str:
    """Signed by an EC key the issuer does not have, under the issuer's EC kid."""
    return issuer.token("alice", key=ec_key("ec-1"))


def _hmac_with(issuer: FakeIssuer, kid: str) -> str:
    """HS256 with the PEM of the issuer's public key ``kid`` as the secret."""
    return forge.hmac_with_public_key(_claims(issuer), kid, issuer.key(kid).public_pem())


def _claims(issuer: FakeIssuer) -> dict[str, Any]:
    return forge.claims_of(issuer.token("alice"))


FAILURES: dict[str, tuple[Callable[[FakeIssuer], str], str]] = {
    "expired": (lambda i: i.token("alice", lifetime_s=-120), "expired (exp"),
    "not yet valid": (lambda i: i.token("alice", nbf=_in(600)), "not yet valid (nbf"),
    "issued in the future": (lambda i: i.token("alice", iat=_in(600)), "not yet valid (iat"),
    "wrong issuer": (lambda i: i.token("alice", iss="https://evil.example/"), "wrong issuer"),
    "wrong audience": (lambda i: i.token("alice", aud="another-api"), "wrong audience"),
    "bad signature (RSA)": (_other_rsa_signed, "bad signature"),
    "bad signature (EC)": (_other_ec_signed, "bad signature"),
    "alg none": (lambda i: forge.unsigned(_claims(i), "rsa-1"), "algorithm 'none' is not allowed"),
    "HS256 with the RSA public key": (
        lambda i: _hmac_with(i, "rsa-1"),
        "algorithm 'HS256' is not allowed",
    ),
    "HS256 with the EC public key": (
        lambda i: _hmac_with(i, "ec-1"),
        "algorithm 'HS256' is not allowed",
    ),
    "unknown kid": (lambda i: i.token("alice", kid="no-such-key"), "unknown signing key (kid)"),
    "100 KB": (lambda i: i.token("alice", pad="x" * 100_000), "bytes long, more than the"),
    "sub not a user id": (lambda i: i.token("../../etc/passwd"), "claim 'sub' is not a valid"),
    "sub not a string": (lambda i: i.token(12345), "claim 'sub' is not a string"),
    "no sub": (lambda i: i.token(None), "claim 'sub' (the user id) is missing"),
    "no exp": (lambda i: i.token("alice", exp=None), "required claim 'exp' is missing"),
    "garbage": (lambda i: "eyJub3QganNvbg.e30.AAAA", "malformed token"),
}


def _in(seconds: int) -> int:
    return int(time.time()) + seconds


def assert_not_echoed(token: str, text: str) -> None:
    """No part of the token (header, claims, signature) appears in ``text``."""
    for piece in token.split("."):
        if len(piece) > 8:
            assert piece[:40] not in text
