"""The JWT figure of `make bench`: microseconds to identify a caller by JWT, keys cached.

In process, no network: the key set is a file written from keys generated
here, loaded once, so every timed call is what a request pays once the
issuer's keys are cached. Two figures per algorithm: a full verification
(the verified-token cache off: header, signature, claims, user id rule), and
the same token again (what an app's later requests pay, from the cache).
The baseline is the same call with the shared opaque token (a SHA-256 and
a dictionary look-up), timed the same way in the same run.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from jwt.algorithms import get_default_algorithms
from jwt.utils import base64url_decode

from service.auth import Authenticator
from service.idp import JwtSection, JwtVerifier, KeySet
from tests.auth.issuer import AUDIENCE, FakeIssuer, SigningKey, ec_key, ed_key, rsa_key

BUDGET_US = 500.0  # the "at most a few hundred microseconds per request", read as 500
SHARED = "bench-shared-token"  # a made-up token of this benchmark


async def _per_call_us(auth: Authenticator, header: str, calls: int) -> float:
    """The best of 5 batches of the mean time of one ``identify`` call.

    The best, not the median: on a shared, loaded machine the slower batches
    measure the neighbours; the best is the closest to what the code costs.
    """
    batches = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            await auth.identify(header)
        batches.append((time.perf_counter() - t0) * 1e6 / calls)
    return min(batches)


def _signature_us(token: str, key: SigningKey, calls: int) -> float:
    """The signature check alone (cryptography, through PyJWT's algorithm object), timed alike."""
    signing_input, _, signature = token.rpartition(".")
    algorithm = get_default_algorithms()[key.algorithm]
    public = key.private.public_key()
    raw = base64url_decode(signature)
    batches = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            algorithm.verify(signing_input.encode(), public, raw)
        batches.append((time.perf_counter() - t0) * 1e6 / calls)
    return min(batches)


async def _measure(calls: int) -> dict[str, Any]:
    issuer = FakeIssuer([rsa_key("rsa"), ec_key("ec"), ed_key("ed")])  # not started: no socket
    with tempfile.TemporaryDirectory() as folder:
        keys_file = Path(folder) / "jwks.json"
        keys_file.write_text(json.dumps(issuer.jwks()))
        section = JwtSection(issuer=issuer.issuer, audience=AUDIENCE, jwks_file=keys_file)
        figures: dict[str, Any] = {}
        for cache_size, suffix in ((0, "us"), (10_000, "repeat_us")):
            verifier = JwtVerifier(section, KeySet(file=keys_file), cache_size=cache_size)
            auth = Authenticator(jwt=verifier, shared_token=SHARED)
            await auth.start()
            try:
                figures["opaque_token_us"] = await _per_call_us(auth, f"Bearer {SHARED}", calls)
                for kid in ("rsa", "ec", "ed"):
                    key = issuer.key(kid)
                    token = issuer.token("bench-user", key=key, lifetime_s=3600)
                    figures[f"{key.algorithm}_{suffix}"] = await _per_call_us(
                        auth, f"Bearer {token}", calls
                    )
                    figures[f"{key.algorithm}_signature_us"] = _signature_us(token, key, calls)
            finally:
                await auth.aclose()
    return figures


def jwt_figures(calls: int = 2000) -> dict[str, Any]:
    return asyncio.run(_measure(calls))


ALGORITHMS = ("RS256", "ES256", "EdDSA")


def jwt_verdicts(figures: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(target, measured, against the baseline, met) of issue 21's figure.

    The slowest algorithm's full verification is held to the budget whole,
    not less the opaque token's cost, so the verdict errs on the strict side.
    """
    base = figures["opaque_token_us"]
    full = {name: figures[f"{name}_us"] for name in ALGORITHMS}
    worst = max(full, key=full.__getitem__)
    return [
        (
            f"verifying a JWT adds <= {BUDGET_US:.0f} us per request (cached keys)",
            ", ".join(f"{name} {us:.0f} us" for name, us in full.items())
            + f" verified in full; the same token again {figures[f'{worst}_repeat_us']:.1f} us",
            f"{worst}: {full[worst] / base:.0f}x the opaque token's {base:.1f} us "
            f"(+{full[worst] - base:.0f} us)",
            full[worst] <= BUDGET_US,
        )
    ]


def jwt_report(figures: dict[str, Any]) -> list[str]:
    base = figures["opaque_token_us"]
    lines = ["\nJWT verification (in process, cached keys; per request, best of 5 batches)"]
    for name in ALGORITHMS:
        us, again = figures[f"{name}_us"], figures[f"{name}_repeat_us"]
        signature = figures[f"{name}_signature_us"]
        lines.append(
            f"  {name}: {us:.0f} us verified in full, of which {signature:.0f} us the signature "
            f"alone ({us / signature:.1f}x); the same token again {again:.1f} us"
        )
    lines.append(f"  opaque token (the baseline): {base:.1f} us")
    for target, measured, ratio, met in jwt_verdicts(figures):
        lines.append(f"  [{'met' if met else 'NOT met'}] {target}\n      {measured}; {ratio}")
    lines.append(f"  (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return lines
