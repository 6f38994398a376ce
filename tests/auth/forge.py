"""Tokens an attacker would craft by hand (libraries refuse to make them)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def part(obj: dict[str, Any]) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def unsigned(claims: dict[str, Any], kid: str) -> str:
    """``alg: none``: no signature at all."""
    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{part(claims)}."


def hmac_with_public_key(claims: dict[str, Any], kid: str, public_pem: bytes) -> str:
    """HS256 with the issuer's public key as the secret (the key-confusion attack)."""
    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{part(claims)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a token, unverified (to re-sign it differently)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
