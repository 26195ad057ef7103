"""Access tokens through joserfc: mint, verify, and every way a token must be refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from joserfc import jwt
from joserfc.errors import UnsupportedAlgorithmError
from joserfc.jwk import OKPKey

from auth_service.core.tokens import (
    ALLOWED_ALGORITHMS,
    AccessTokenClaims,
    InvalidToken,
    generate_signing_key,
    mint_access_token,
    public_jwk,
    verify_access_token,
)

ISS, AUD = "switchboard-auth", "switchboard"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@pytest.fixture(scope="module")
def key() -> OKPKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def public(key: OKPKey) -> dict[str, OKPKey]:
    return {str(key.kid): OKPKey.import_key(public_jwk(key))}


def mint(key: OKPKey, *, now: float | None = None, ttl_s: int = 900, **overrides: str) -> str:
    params = {
        "issuer": ISS,
        "audience": AUD,
        "subject": "user-1",
        "session_id": "sid-1",
        "scope": "inference memory",
        "tier": "free",
        "role": "user",
        "username": "alice",
        **overrides,
    }
    token, _claims = mint_access_token(key, ttl_s=ttl_s, now=now, **params)  # type: ignore[arg-type]
    return token


def verify(token: str, keys: dict[str, OKPKey], **kw: str) -> AccessTokenClaims:
    return verify_access_token(
        token, keys, issuer=kw.get("issuer", ISS), audience=kw.get("audience", AUD)
    )


def test_minted_token_carries_contract_header_and_claims(
    key: OKPKey, public: dict[str, OKPKey]
) -> None:
    token = mint(key)
    header = json.loads(unb64(token.split(".")[0]))
    assert header == {"alg": "Ed25519", "kid": key.kid, "typ": "at+jwt"}
    claims = verify(token, public)
    assert claims.sub == "user-1"
    assert claims.sid == "sid-1"
    assert claims.scopes == ["inference", "memory"]
    assert (claims.iss, claims.aud, claims.tier, claims.role) == (ISS, AUD, "free", "user")
    assert claims.exp - claims.iat == 900
    assert claims.nbf == claims.iat
    assert len(claims.jti) >= 16
    assert mint(key) != mint(key)  # unique jti


def test_kid_is_the_rfc7638_thumbprint(key: OKPKey) -> None:
    jwk = public_jwk(key)
    assert jwk["kid"] == key.thumbprint()
    assert jwk["alg"] == "Ed25519"
    assert jwk["use"] == "sig"
    assert "d" not in jwk  # no private part


def test_allow_list_is_exactly_ed25519() -> None:
    assert ALLOWED_ALGORITHMS == ("Ed25519",)


def test_alg_none_is_refused(key: OKPKey, public: dict[str, OKPKey]) -> None:
    _h, payload, _s = mint(key).split(".")
    header = b64(json.dumps({"alg": "none", "kid": key.kid, "typ": "at+jwt"}).encode())
    with pytest.raises(InvalidToken):
        verify(f"{header}.{payload}.", public)


def test_hmac_with_the_public_key_as_secret_is_refused(
    key: OKPKey, public: dict[str, OKPKey]
) -> None:
    """The classic algorithm-confusion attack: HS256 keyed with the public key bytes."""
    _h, payload, _s = mint(key).split(".")
    header = b64(json.dumps({"alg": "HS256", "kid": key.kid, "typ": "at+jwt"}).encode())
    secret = public_jwk(key)["x"].encode()
    signature = b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    with pytest.raises(InvalidToken):
        verify(f"{header}.{payload}.{signature}", public)


def test_tampered_payload_is_refused(key: OKPKey, public: dict[str, OKPKey]) -> None:
    header, payload, signature = mint(key).split(".")
    claims = json.loads(unb64(payload))
    claims["scope"] = "admin inference"
    with pytest.raises(InvalidToken):
        verify(f"{header}.{b64(json.dumps(claims).encode())}.{signature}", public)


def test_tampered_signature_is_refused(key: OKPKey, public: dict[str, OKPKey]) -> None:
    header, payload, signature = mint(key).split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    with pytest.raises(InvalidToken):
        verify(f"{header}.{payload}.{flipped}", public)


def test_wrong_audience_and_issuer_are_refused(key: OKPKey, public: dict[str, OKPKey]) -> None:
    with pytest.raises(InvalidToken, match="aud"):
        verify(mint(key, audience="someone-else"), public)
    with pytest.raises(InvalidToken, match="iss"):
        verify(mint(key, issuer="evil-issuer"), public)


def test_expired_token_is_refused(key: OKPKey, public: dict[str, OKPKey]) -> None:
    with pytest.raises(InvalidToken, match="expired"):
        verify(mint(key, now=time.time() - 3600, ttl_s=900), public)


def test_token_from_the_future_is_refused(key: OKPKey, public: dict[str, OKPKey]) -> None:
    with pytest.raises(InvalidToken):
        verify(mint(key, now=time.time() + 3600), public)


def test_unknown_kid_is_refused(key: OKPKey) -> None:
    other = generate_signing_key()
    keys = {str(other.kid): OKPKey.import_key(public_jwk(other))}
    with pytest.raises(InvalidToken, match="unknown key"):
        verify(mint(key), keys)


def test_missing_kid_is_refused(key: OKPKey, public: dict[str, OKPKey]) -> None:
    claims = json.loads(unb64(mint(key).split(".")[1]))
    token = jwt.encode({"alg": "Ed25519", "typ": "at+jwt"}, claims, key, algorithms=["Ed25519"])
    with pytest.raises(InvalidToken, match="kid"):
        verify(token, public)


def test_wrong_typ_is_refused(key: OKPKey, public: dict[str, OKPKey]) -> None:
    claims = json.loads(unb64(mint(key).split(".")[1]))
    header = {"alg": "Ed25519", "kid": key.kid, "typ": "JWT"}
    token = jwt.encode(header, claims, key, algorithms=["Ed25519"])
    with pytest.raises(InvalidToken, match="type"):
        verify(token, public)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "x" * 10000, "eyJhbGciOi.e30.AAAA"])
def test_garbage_is_refused(garbage: str, public: dict[str, OKPKey]) -> None:
    with pytest.raises(InvalidToken):
        verify(garbage, public)


def test_joserfc_refuses_the_eddsa_name(key: OKPKey) -> None:
    """Why we use "Ed25519": joserfc 1.8 treats the polymorphic "EdDSA" as not recommended."""
    with pytest.raises(UnsupportedAlgorithmError):
        jwt.encode({"alg": "EdDSA"}, {"sub": "x"}, key)
