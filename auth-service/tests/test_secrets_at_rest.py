"""Secrets at rest: opaque tokens are stored hashed; signing keys encrypted and bound to kid."""

from __future__ import annotations

import pytest

from auth_service.core.key_encryption import KeyDecryptionError, KeyEncryptor
from auth_service.core.security import (
    api_key_display_prefix,
    hash_secret,
    new_api_key,
    new_refresh_token,
)
from auth_service.core.tokens import generate_signing_key, private_key_from_pem


def test_refresh_tokens_are_random_and_stored_as_sha256() -> None:
    tokens = {new_refresh_token() for _ in range(100)}
    assert len(tokens) == 100
    token = next(iter(tokens))
    assert token.startswith("rt-")
    assert len(token) >= 40
    digest = hash_secret(token)
    assert len(digest) == 64
    assert token not in digest
    assert digest == hash_secret(token)
    assert digest != hash_secret(token + "x")


def test_api_keys_have_sk_prefix_and_a_short_display_prefix() -> None:
    key = new_api_key()
    assert key.startswith("sk-")
    prefix = api_key_display_prefix(key)
    assert key.startswith(prefix)
    assert len(prefix) == 11


def test_signing_key_round_trips_encrypted() -> None:
    key = generate_signing_key()
    pem = key.as_pem(private=True)
    sealed = KeyEncryptor("s3cret-value-for-tests").encrypt(pem, str(key.kid))
    assert pem not in sealed
    assert b"PRIVATE KEY" not in sealed
    opened = KeyEncryptor("s3cret-value-for-tests").decrypt(sealed, str(key.kid))
    assert private_key_from_pem(opened, str(key.kid)).thumbprint() == key.thumbprint()


def test_wrong_secret_or_swapped_kid_cannot_decrypt() -> None:
    key = generate_signing_key()
    sealed = KeyEncryptor("the-right-secret-123").encrypt(key.as_pem(private=True), str(key.kid))
    with pytest.raises(KeyDecryptionError, match="AUTH_KEY_ENCRYPTION_SECRET"):
        KeyEncryptor("the-wrong-secret-456").decrypt(sealed, str(key.kid))
    with pytest.raises(KeyDecryptionError):
        KeyEncryptor("the-right-secret-123").decrypt(sealed, "another-kid")
