"""Log in through the gateway the way a client would (tests only)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx


@dataclass
class Login:
    username: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def register(
    gateway: str, username: str | None = None, password: str | None = None
) -> tuple[str, str]:
    username = username or f"user-{secrets.token_hex(4)}"
    password = password or secrets.token_urlsafe(16)
    resp = httpx.post(
        gateway + "/auth/register", json={"username": username, "password": password}, timeout=10
    )
    assert resp.status_code == 201, resp.text
    return username, password


def login(gateway: str, username: str, password: str, scope: str | None = None) -> Login:
    form = {"username": username, "password": password}
    if scope is not None:
        form["scope"] = scope
    resp = httpx.post(gateway + "/auth/token", data=form, timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return Login(username, password, body["access_token"], body["refresh_token"])


def new_user(gateway: str) -> Login:
    return login(gateway, *register(gateway))
