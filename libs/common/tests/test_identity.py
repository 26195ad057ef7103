"""Gateway-signed identity: sign/verify, every way a credential is refused, the FastAPI
dependencies (401 / 403 problems, scopes in OpenAPI), and the shared secret setting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from switchboard_common import (
    IDENTITY_HEADER,
    SIGNATURE_HEADER,
    CurrentPrincipal,
    Principal,
    ServiceSettings,
    Unauthorized,
    create_service_app,
    require_scopes,
    sign_identity,
    verify_identity,
)

SECRET = "identity-tests-secret-0123456789"
NOW = 1_800_000_000.0

ALICE = Principal(
    sub="u-1",
    username="alice",
    sid="s-1",
    scope=["inference", "memory"],
    tier="pro",
    role="user",
    kind="user",
)


def test_round_trip_stamps_a_60_second_expiry() -> None:
    value, signature = sign_identity(ALICE, SECRET, now=NOW)
    assert "=" not in value  # base64url without padding
    assert len(signature) == 64
    int(signature, 16)  # hex
    principal = verify_identity(value, signature, SECRET, now=NOW + 59)
    assert principal == ALICE.model_copy(update={"exp": int(NOW) + 60})
    assert principal.has_scope("memory")
    assert not principal.has_scope("admin")


def test_a_verified_pair_is_remembered_but_still_expires_and_stays_bound_to_its_secret() -> None:
    value, signature = sign_identity(ALICE, SECRET, now=NOW)
    first = verify_identity(value, signature, SECRET, now=NOW)
    assert verify_identity(value, signature, SECRET, now=NOW + 30) is first  # checked once
    with pytest.raises(Unauthorized, match="expired"):
        verify_identity(value, signature, SECRET, now=NOW + 61)
    with pytest.raises(Unauthorized, match="signature"):
        verify_identity(value, signature, "another-secret-0123456789abcdef", now=NOW)


def test_payload_is_the_contract_json() -> None:
    value, _ = sign_identity(ALICE, SECRET, now=NOW)
    payload = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    assert payload == {
        "sub": "u-1",
        "username": "alice",
        "sid": "s-1",
        "scope": ["inference", "memory"],
        "tier": "pro",
        "role": "user",
        "kind": "user",
        "api_key_id": None,
        "exp": int(NOW) + 60,
        "rate_limit": None,
        "max_priority": None,
        "priority": None,
    }


def test_a_payload_without_the_optional_overrides_still_verifies() -> None:
    """Identities signed before rate_limit/max_priority/priority existed stay valid."""
    value = _forge({"sub": "u-1", "username": "a", "scope": [], "exp": int(NOW) + 60})
    mac = hmac.new(SECRET.encode(), value.encode(), hashlib.sha256).hexdigest()
    principal = verify_identity(value, mac, SECRET, now=NOW)
    assert (principal.rate_limit, principal.max_priority, principal.priority) == (None, None, None)


def test_signature_accepts_secretstr_and_uppercase_hex() -> None:
    value, signature = sign_identity(ALICE, SecretStr(SECRET), now=NOW)
    assert verify_identity(value, signature.upper(), SECRET, now=NOW).sub == "u-1"


def _forge(payload: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "case",
    ["wrong-secret", "tampered", "expired", "bad-signature", "not-base64", "not-json", "bad-model"],
)
def test_invalid_credentials_raise_unauthorized(case: str) -> None:
    value, signature = sign_identity(ALICE, SECRET, now=NOW)
    now = NOW
    if case == "wrong-secret":
        value, signature = sign_identity(ALICE, "another-secret", now=NOW)
    elif case == "tampered":
        payload = ALICE.model_dump() | {"scope": ["admin"], "exp": int(NOW) + 60}
        value = _forge(payload)
    elif case == "expired":
        now = NOW + 60
    elif case == "bad-signature":
        signature = "zz" + signature[2:]
    else:  # validly signed garbage: only the payload checks can refuse it
        garbage = {"not-base64": "!!!***", "not-json": _raw(b"{nope"), "bad-model": _forge({})}
        value = garbage[case]
        signature = hmac.new(SECRET.encode(), value.encode(), hashlib.sha256).hexdigest()
    with pytest.raises(Unauthorized) as info:
        verify_identity(value, signature, SECRET, now=now)
    assert info.value.headers["WWW-Authenticate"] == "Bearer"


def _raw(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_oversized_or_non_ascii_headers_are_refused() -> None:
    with pytest.raises(Unauthorized):
        verify_identity("a" * 10_000, "00", SECRET)
    with pytest.raises(Unauthorized):
        verify_identity("é", "00", SECRET)


# --- FastAPI dependencies ----------------------------------------------------------------

router = APIRouter()


@router.get("/whoami")
async def whoami(principal: CurrentPrincipal) -> dict[str, str]:
    return {"sub": principal.sub, "kind": principal.kind}


@router.get("/admin-only")
async def admin_only(principal: Annotated[Principal, require_scopes("admin")]) -> dict[str, str]:
    return {"sub": principal.sub}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = ServiceSettings(service_name="identity-test", SWITCHBOARD_INTERNAL_SECRET=SECRET)  # type: ignore[call-arg]
    app = create_service_app(settings, title="identity test", routers=[router])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def _headers(principal: Principal, secret: str = SECRET) -> dict[str, str]:
    value, signature = sign_identity(principal, secret)
    return {IDENTITY_HEADER: value, SIGNATURE_HEADER: signature}


async def test_missing_credential_is_a_401_problem(client: httpx.AsyncClient) -> None:
    resp = await client.get("/whoami")
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["www-authenticate"] == "Bearer"
    assert resp.json()["type"] == "urn:switchboard:problem:unauthorized"


async def test_wrong_secret_is_a_401_problem(client: httpx.AsyncClient) -> None:
    resp = await client.get("/whoami", headers=_headers(ALICE, "not-the-secret"))
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"


async def test_valid_credential_reaches_the_handler(client: httpx.AsyncClient) -> None:
    resp = await client.get("/whoami", headers=_headers(ALICE))
    assert resp.status_code == 200
    assert resp.json() == {"sub": "u-1", "kind": "user"}


async def test_missing_scope_is_a_403_naming_it(client: httpx.AsyncClient) -> None:
    resp = await client.get("/admin-only", headers=_headers(ALICE))
    assert resp.status_code == 403
    body = resp.json()
    assert body["missing_scopes"] == ["admin"]
    assert "'admin'" in body["detail"]
    assert 'error="insufficient_scope"' in resp.headers["www-authenticate"]
    admin = ALICE.model_copy(update={"scope": ["admin"]})
    assert (await client.get("/admin-only", headers=_headers(admin))).status_code == 200


async def test_required_scopes_show_in_openapi(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    security = spec["paths"]["/admin-only"]["get"]["security"]
    assert security == [{"OAuth2PasswordBearer": ["admin"]}]
    flow = spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"]
    assert flow["tokenUrl"] == "/auth/token"
    assert "admin" in flow["scopes"]


# --- the shared secret setting ------------------------------------------------------------


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore")


def test_secret_is_read_without_the_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_INTERNAL_SECRET", "shared-by-all-services-1")
    monkeypatch.setenv("DEMO_INTERNAL_SECRET", "ignored-prefixed-value")
    assert DemoSettings().internal_secret.get_secret_value() == "shared-by-all-services-1"


def test_local_default_is_refused_outside_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHBOARD_INTERNAL_SECRET", raising=False)
    assert DemoSettings().internal_secret.get_secret_value() == "local-dev-internal-secret"
    with pytest.raises(ValidationError, match="SWITCHBOARD_INTERNAL_SECRET"):
        DemoSettings(environment="production")
