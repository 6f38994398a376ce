"""Bearer JWTs of an identity provider (``auth.jwt``): configuration, keys, verification."""

from service.idp.config import JwtSection
from service.idp.keys import KeySet, KeySetError
from service.idp.verifier import JwtIdentity, JwtVerifier, looks_like_jwt

__all__ = ["JwtIdentity", "JwtSection", "JwtVerifier", "KeySet", "KeySetError", "looks_like_jwt"]
