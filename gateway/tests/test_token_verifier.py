"""TokenVerifier claim and header checks, with a local Ed25519 key standing in for the JWKS."""

from __future__ import annotations

import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import OKPKey

from gateway.services.token_verifier import TokenVerifier
from switchboard_common.access_tokens import InvalidToken

KEY = OKPKey.generate_key("Ed25519", parameters={"kid": "k1"})


class FakeJwks:
    def __init__(self) -> None:
        self.keys = {"k1": OKPKey.import_key(KEY.as_dict(private=False))}
        self.asked: list[str] = []

    async def key_for(self, kid: str) -> dict[str, OKPKey] | None:
        self.asked.append(kid)
        return self.keys if kid == "k1" else None


def verifier() -> TokenVerifier:
    return TokenVerifier(
        FakeJwks(),  # type: ignore[arg-type]
        issuer="switchboard-auth",
        audience="switchboard",
        leeway_s=30,
        cache_size=2,
    )


def token(header: dict[str, Any] | None = None, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": "switchboard-auth",
        "aud": "switchboard",
        "sub": "42",
        "sid": "s1",
        "scope": "memory inference",
        "tier": "pro",
        "role": "user",
        "username": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": "j1",
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    head = {"alg": "Ed25519", "typ": "at+jwt", "kid": "k1", **(header or {})}
    return jwt.encode(head, body, KEY, algorithms=["Ed25519"])


async def test_valid_token_becomes_a_principal() -> None:
    entry = await verifier().verify(token())
    p = entry.principal
    assert (p.sub, p.sid, p.username, p.tier, p.kind) == ("42", "s1", "alice", "pro", "user")
    assert p.scope == ["memory", "inference"]


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"aud": "someone-else"}, "aud"),
        ({"iss": "evil"}, "iss"),
        ({"sid": None}, "claim"),
        ({"sub": None}, "claim"),
        ({"nbf": int(time.time()) + 600}, "not valid yet"),
    ],
)
async def test_bad_claims_are_refused(claims: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidToken, match=message):
        await verifier().verify(token(**claims))


async def test_small_clock_skew_is_tolerated() -> None:
    await verifier().verify(token(exp=int(time.time()) - 10))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"typ": "JWT"}, "not an access token"),
        ({"kid": "unknown"}, "unknown key"),
        ({"kid": None}, "names no signing key"),
    ],
)
async def test_bad_headers_are_refused(header: dict[str, Any], message: str) -> None:
    head = {
        k: v
        for k, v in {"alg": "Ed25519", "typ": "at+jwt", "kid": "k1", **header}.items()
        if v is not None
    }
    raw = jwt.encode(head, {"sub": "1"}, KEY, algorithms=["Ed25519"])
    with pytest.raises(InvalidToken, match=message):
        await verifier().verify(raw)


async def test_cache_is_bounded_and_evictable() -> None:
    v = verifier()
    tokens = [token(sid=f"s{i}", jti=f"j{i}") for i in range(3)]
    now = time.time()
    for t in tokens:
        v.remember(t, await v.verify(t))
    assert len(v) == 2  # LRU bound
    assert v.cached(tokens[0], now) is None
    assert v.cached(tokens[2], now) is not None
    assert v.evict(sid="s2") == 1
    assert v.cached(tokens[2], now) is None


async def test_cached_entry_expires_with_the_token() -> None:
    v = verifier()
    t = token(exp=int(time.time()) + 1)
    v.remember(t, await v.verify(t))
    assert v.cached(t, time.time() + 60) is None
