"""Encryption at rest of signing private keys.

A 256-bit key is derived from ``AUTH_KEY_ENCRYPTION_SECRET`` with HKDF-SHA256 (the secret
is expected to be random, e.g. ``secrets.token_urlsafe(32)``; HKDF does not stretch a weak
passphrase). Each private key (PKCS#8 PEM) is sealed with AES-256-GCM under a fresh 96-bit
nonce, with the ``kid`` as associated data so a ciphertext cannot be swapped onto another
key's row. Stored form: ``nonce || ciphertext+tag``.

A database copied without the secret yields no usable private key; a process started
with the wrong secret refuses to start (:class:`KeyDecryptionError`) rather than minting
new keys silently.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_SALT = b"switchboard-auth/signing-keys"
_INFO = b"aes-256-gcm key v1"
_NONCE_BYTES = 12


class KeyDecryptionError(RuntimeError):
    """A stored private key could not be decrypted (wrong secret or corrupted row)."""


class KeyEncryptor:
    def __init__(self, secret: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO).derive(
            secret.encode("utf-8")
        )
        self._aead = AESGCM(derived)

    def encrypt(self, plaintext: bytes, kid: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, kid.encode())

    def decrypt(self, sealed: bytes, kid: str) -> bytes:
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, ciphertext, kid.encode())
        except (InvalidTag, ValueError) as exc:
            raise KeyDecryptionError(
                f"cannot decrypt signing key {kid}: AUTH_KEY_ENCRYPTION_SECRET differs from the "
                "one that encrypted it (or the row is corrupted)"
            ) from exc
