"""JWT verification against a real local JWKS endpoint: every check, the key cache, claims.

The issuer (``tests.auth.issuer``) serves keys generated here (RSA, EC and
Ed25519) over HTTP on loopback; the key set's clock is injected, so "at most
one fetch per interval" is checked without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from service.auth import Authenticator, Principal
from service.errors import PermissionDenied, Reason, ServiceUnavailable, Unauthenticated
from service.idp import JwtSection, JwtVerifier, KeySet
from tests.auth.cases import FAILURES, assert_not_echoed
from tests.auth.issuer import FakeIssuer, ec_key, ed_key, rsa_key

INTERVAL_S = 30.0


class Clock:
    """Seconds that move only when a test says so (monotonic, or wall-clock from ``start``)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    issuer: FakeIssuer
    clock: Clock
    auth: Authenticator
    keys: KeySet
    verifier: JwtVerifier
    wall: Clock

    async def identify(self, token: str) -> Principal:
        return await self.auth.identify(f"Bearer {token}")


async def make(issuer: FakeIssuer, *, start: bool = True, **extra: Any) -> Setup:
    clock = Clock()
    section = JwtSection(**issuer.config(min_refresh_interval_s=INTERVAL_S, **extra))
    keys = KeySet(
        url=section.jwks_url,
        min_refresh_interval_s=section.min_refresh_interval_s,
        max_age_s=section.max_age_s,
        clock=clock,
    )
    wall = Clock(time.time())
    verifier = JwtVerifier(section, keys, known_tiers={"free", "pro"}, wall_clock=wall)
    auth = Authenticator(
        jwt=verifier, shared_token="shared-secret", user_tokens={"ursula": "ursula-token"}
    )
    if start:
        await auth.start()
    return Setup(issuer, clock, auth, keys, verifier, wall)


@pytest.fixture
async def issuer() -> AsyncIterator[FakeIssuer]:
    async with FakeIssuer([rsa_key("rsa-1"), ec_key("ec-1"), ed_key("ed-1")]) as server:
        yield server


@pytest.fixture
async def setup(issuer: FakeIssuer) -> AsyncIterator[Setup]:
    s = await make(issuer)
    yield s
    await s.auth.aclose()


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1", "ed-1"])
async def test_a_valid_token_acts_as_its_user_only(setup: Setup, kid: str) -> None:
    token = setup.issuer.token("alice", key=setup.issuer.key(kid))
    principal = await setup.identify(token)
    assert principal == Principal("jwt", "alice", admin=False, tier="")
    assert setup.auth.user_for(principal, "") == "alice"
    assert setup.auth.user_for(principal, "alice") == "alice"
    with pytest.raises(PermissionDenied):
        setup.auth.user_for(principal, "bob")
    assert setup.issuer.fetches() == 1  # the fetch at start; verification used the cache


@pytest.mark.parametrize("case", list(FAILURES))
async def test_each_failed_check_is_a_401_naming_it(setup: Setup, case: str) -> None:
    make_token, expected = FAILURES[case]
    token = make_token(setup.issuer)
    setup.clock.now += INTERVAL_S  # an unknown kid may refresh the set once
    with pytest.raises(Unauthenticated) as caught:
        await setup.identify(token)
    error = caught.value
    assert expected in error.message, error.message
    assert error.reason is Reason.INVALID_TOKEN
    assert_not_echoed(token, error.message)
    if case == "unknown kid":
        assert setup.issuer.fetches() == 2  # refreshed once, then refused


async def test_a_flood_of_unknown_kids_costs_one_fetch_per_interval(setup: Setup) -> None:
    issuer = setup.issuer
    setup.clock.now += INTERVAL_S
    tokens = [issuer.token("alice", kid=secrets.token_hex(8)) for _ in range(1000)]
    results = await asyncio.gather(*(setup.identify(t) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, Unauthenticated) for r in results)
    assert issuer.fetches() == 2  # the one at start, and one for the whole flood
    for token in tokens[:100]:  # one after another, still within the interval: none
        with pytest.raises(Unauthenticated):
            await setup.identify(token)
    assert issuer.fetches() == 2
    setup.clock.now += INTERVAL_S
    with pytest.raises(Unauthenticated):
        await setup.identify(tokens[0])
    assert issuer.fetches() == 3


async def test_a_key_rotated_at_the_issuer_works_without_a_restart(setup: Setup) -> None:
    issuer = setup.issuer
    new = ec_key("ec-2")
    issuer.keys = [new]  # the old keys retired, a new kid published
    setup.clock.now += INTERVAL_S
    principal = await setup.identify(issuer.token("carol", key=new))
    assert principal.user_id == "carol"
    assert issuer.fetches() == 2


async def test_an_issuer_that_is_down_leaves_the_cached_keys_working(setup: Setup) -> None:
    issuer = setup.issuer
    issuer.down = True
    setup.clock.now += 3600 + 1  # the set is stale: a refresh is tried, and fails
    assert (await setup.identify(issuer.token("alice"))).user_id == "alice"
    await setup.keys.idle()
    assert issuer.fetches() == 2
    assert "503" in setup.keys.last_error
    # The keys held still serve, and nothing is fetched again within the interval.
    assert (await setup.identify(issuer.token("bob", key=issuer.key("ec-1")))).user_id == "bob"
    await setup.keys.idle()
    assert issuer.fetches() == 2


async def test_a_hung_issuer_delays_no_request_on_a_stale_key_set(setup: Setup) -> None:
    issuer = setup.issuer
    issuer.hold = threading.Event()  # the issuer accepts the fetch and never answers
    setup.clock.now += 3600 + 1
    for user in ("alice", "bob", "carol"):
        assert (await setup.identify(issuer.token(user))).user_id == user
    assert await issuer.wait_until(lambda: len(issuer.requests) == 2)  # the fetch is held
    issuer.keys = [rsa_key("rsa-9")]  # what the issuer will answer once it does
    issuer.hold.set()
    await setup.keys.idle()
    assert setup.keys.key("rsa-9", "RS256") is not None  # the refreshed set is in use


async def test_no_key_ever_fetched_is_a_503_until_the_issuer_answers(
    issuer: FakeIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    issuer.down = True
    with caplog.at_level(logging.WARNING):
        s = await make(issuer)  # starting is not refused
    try:
        assert "could not be loaded" in caplog.text and issuer.jwks_url in caplog.text
        with pytest.raises(ServiceUnavailable) as caught:
            await s.identify(issuer.token("alice"))
        assert "never loaded" in caught.value.message
        assert caught.value.retry_after_s == INTERVAL_S
        issuer.down = False
        s.clock.now += INTERVAL_S
        assert (await s.identify(issuer.token("alice"))).user_id == "alice"
    finally:
        await s.auth.aclose()


async def test_tier_and_admin_come_from_claims(issuer: FakeIssuer) -> None:
    s = await make(
        issuer,
        tier_claim="https://agent.example/plan",  # Auth0-style: a namespaced claim with dots
        admin_claim="realm_access.roles",  # Keycloak-style: a nested list
        admin_values=["agent-admin"],
    )
    try:
        admin = await s.identify(
            issuer.token(
                "root",
                **{"https://agent.example/plan": "pro"},
                realm_access={"roles": ["user", "agent-admin"]},
            )
        )
        assert (admin.admin, admin.tier) == (True, "pro")
        assert s.auth.tier_of("root") == "pro"
        plain = await s.identify(
            issuer.token(
                "alice",
                **{"https://agent.example/plan": "platinum"},  # not a tier of limits.tiers
                realm_access={"roles": ["user"]},
            )
        )
        assert (plain.admin, plain.tier) == (False, "")
        assert s.auth.tier_of("alice") == ""
        # A later token with another tier moves the user (limits look the tier up by user).
        await s.identify(issuer.token("alice", **{"https://agent.example/plan": ["free"]}))
        assert s.auth.tier_of("alice") == "free"
    finally:
        await s.auth.aclose()


async def test_per_user_and_shared_tokens_still_work_beside_jwts(setup: Setup) -> None:
    assert (await setup.identify("shared-secret")).mode == "shared_token"
    assert await setup.identify("ursula-token") == Principal("user_token", "ursula")
    with pytest.raises(Unauthenticated) as caught:
        await setup.identify("not-a-jwt")
    assert caught.value.message == "invalid API token"
    with pytest.raises(Unauthenticated) as caught:
        await setup.auth.identify(None)
    assert caught.value.reason is None  # no token presented: the bare challenge


async def test_a_repeated_token_is_verified_once_and_kept_only_briefly(setup: Setup) -> None:
    token = setup.issuer.token("alice", lifetime_s=300)
    for _ in range(5):
        assert (await setup.identify(token)).user_id == "alice"
    assert setup.verifier.full_verifications == 1
    setup.wall.now += 60  # the cache's 60 s are over: verified in full again
    await setup.identify(token)
    assert setup.verifier.full_verifications == 2
    # A token that expires sooner is kept only until its exp plus the leeway (30 s).
    setup.wall.now = time.time()
    short = setup.issuer.token("bob", lifetime_s=10)  # exp: the whole second + 10
    await setup.identify(short)
    setup.wall.now += 39
    await setup.identify(short)
    assert setup.verifier.full_verifications == 3
    setup.wall.now += 2
    await setup.identify(short)
    assert setup.verifier.full_verifications == 4


async def test_a_refused_token_is_never_cached(setup: Setup) -> None:
    token = setup.issuer.token("alice", aud="another-api")
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="wrong audience"):
            await setup.identify(token)
    assert setup.verifier.full_verifications == 0


async def test_a_slow_key_fetch_blocks_no_one_and_survives_its_callers_cancellation(
    setup: Setup,
) -> None:
    issuer = setup.issuer
    issuer.hold = threading.Event()
    new = rsa_key("rsa-2")
    issuer.keys = [*issuer.keys, new]  # rotated in; the service has not seen it yet
    setup.clock.now += INTERVAL_S
    first = asyncio.create_task(setup.identify(issuer.token("carol", key=new)))
    assert await issuer.wait_until(lambda: len(issuer.requests) == 2)  # the fetch is held
    # Meanwhile a token on a cached key is verified at once: the loop is not blocked.
    assert (await setup.identify(issuer.token("alice"))).user_id == "alice"
    second = asyncio.create_task(setup.identify(issuer.token("dave", key=new)))
    await asyncio.sleep(0)
    first.cancel()  # the caller that started the fetch goes away
    issuer.hold.set()
    assert (await second).user_id == "dave"  # the shared fetch finished all the same
    assert first.cancelled()
    assert issuer.fetches() == 2
