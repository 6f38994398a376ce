"""A fake identity provider: keys generated in the test, a JWKS endpoint on loopback, and tokens.

The endpoint is a real HTTP server (``tests.fakes.server``), so the service
fetches keys exactly as it would from Auth0 or Keycloak; the requests it
receives are recorded, which is how tests count key-set fetches.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tests.fakes.server import Exchange, LoopbackServer

JWKS_PATH = "/.well-known/jwks.json"
AUDIENCE = "agent-api"


@dataclass(frozen=True)
class SigningKey:
    """One private key of the issuer, with the kid and algorithm it signs with."""

    kid: str
    algorithm: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if self.algorithm.startswith(("RS", "PS")):
            jwk = json.loads(RSAAlgorithm.to_jwk(public))
        elif self.algorithm.startswith("ES"):
            jwk = json.loads(ECAlgorithm.to_jwk(public))
        else:
            jwk = json.loads(OKPAlgorithm.to_jwk(public))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def ed_key(kid: str) -> SigningKey:
    return SigningKey(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


class FakeIssuer(LoopbackServer):
    """Serves the public half of ``keys`` at ``JWKS_PATH``; ``down`` answers 503 instead.

    ``hold`` keeps JWKS answers back until the test sets it (a slow issuer).
    """

    def __init__(self, keys: list[SigningKey] | None = None) -> None:
        super().__init__()
        self.keys = keys if keys is not None else [rsa_key("rsa-1"), ec_key("ec-1")]
        self.down = False
        self.hold: threading.Event | None = None  # set: answer JWKS requests only once it is set

    @property
    def issuer(self) -> str:
        return f"{self.url}/"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}{JWKS_PATH}"

    def fetches(self) -> int:
        return len(self.calls(JWKS_PATH))

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in self.keys]}

    async def handle(self, exchange: Exchange) -> None:
        if exchange.request.path != JWKS_PATH:
            exchange.respond(404, b"not found", "text/plain")
        elif self.hold is not None and not await self._released(exchange, self.hold):
            return
        elif self.down:
            exchange.respond(503, b"down for maintenance", "text/plain")
        else:
            exchange.respond_json(200, self.jwks())

    @staticmethod
    async def _released(exchange: Exchange, hold: threading.Event) -> bool:
        """Wait for ``hold``; False if the client left first."""
        while not hold.is_set():
            if not await exchange.pause(0.005):
                return False
        return True

    def key(self, kid: str) -> SigningKey:
        return next(k for k in self.keys if k.kid == kid)

    def token(
        self,
        sub: object = "alice",
        *,
        key: SigningKey | None = None,
        kid: str | None = None,
        lifetime_s: float = 300,
        **claims: Any,
    ) -> str:
        """A token of this issuer for ``sub``; ``claims`` add to or override the standard ones."""
        key = key or self.keys[0]
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": sub,
            "iat": now,
            "exp": now + int(lifetime_s),
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        headers = {"kid": kid if kid is not None else key.kid}
        return jwt.encode(payload, key.private, algorithm=key.algorithm, headers=headers)

    def config(self, **extra: Any) -> dict[str, Any]:
        """The ``auth.jwt`` section that trusts this issuer."""
        return {"issuer": self.issuer, "audience": AUDIENCE, "jwks_url": self.jwks_url, **extra}
