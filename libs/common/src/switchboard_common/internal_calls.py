"""Signed service-to-gateway calls: one contract for the caller and the gateway.

A service that reports something to the gateway (today: the tokens a generation actually
used, so the gateway can settle its token budget) signs the request body with
``SWITCHBOARD_INTERNAL_SECRET``::

    X-Switchboard-Timestamp:      unix seconds when the call was signed
    X-Switchboard-Call-Signature: v1=<hex HMAC-SHA256 of "v1\\n{timestamp}\\n{path}\\n" + body>

The path is inside the MAC so a signature for one endpoint is not accepted by another; the
timestamp bounds replay to :data:`MAX_CALL_AGE_S` (the receiving endpoints are idempotent
on top, so a replay inside that window changes nothing either). The body is signed as
bytes, before any parsing: the verifier checks the MAC (constant time) first.

Exceptions: :class:`InvalidInternalCall` (a ``ValueError``) for anything that does not
verify — the receiving route turns it into a 401 problem.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

TIMESTAMP_HEADER = "X-Switchboard-Timestamp"
CALL_SIGNATURE_HEADER = "X-Switchboard-Call-Signature"
MAX_CALL_AGE_S = 120
#: Where the inference service reports the usage of a reserved generation.
USAGE_SETTLEMENT_PATH = "/gateway/internal/usage"
#: The gateway → inference header carrying a generation's token reservation.
TOKEN_RESERVATION_HEADER = "X-Switchboard-Token-Reservation"  # noqa: S105 (a header name)
MAX_RESERVATION_CHARS = 400


class InvalidInternalCall(ValueError):
    """The call is not signed with the internal secret, or the signature is too old."""


class UsageSettlement(BaseModel):
    """``POST /gateway/internal/usage`` (inference → gateway): what one generation used.

    ``seq`` numbers the generations made under one reservation: an HTTP request makes one
    (``0``, which settles the gateway's estimate; an answer of 400 or more that generated
    nothing reports 0 tokens, giving the estimate back); a WebSocket connection makes one
    per message (``0, 1, 2, …``, charged as they come). The gateway settles each
    ``(reservation, seq)`` once.
    """

    model_config = ConfigDict(extra="forbid")

    reservation: str = Field(min_length=1, max_length=MAX_RESERVATION_CHARS)
    seq: int = Field(default=0, ge=0, le=1_000_000)
    prompt_tokens: int = Field(ge=0, le=100_000_000)
    completion_tokens: int = Field(ge=0, le=100_000_000)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class UsageSettlementResult(BaseModel):
    """The gateway's answer: ``settled`` false when the report was a duplicate."""

    settled: bool


#: The most reports one :class:`UsageSettlementBatch` may carry.
MAX_SETTLEMENT_BATCH = 64
#: What became of one report of a batch (:class:`UsageSettlementBatchResult`).
SettlementOutcome = Literal["settled", "duplicate", "invalid"]


class UsageSettlementBatch(BaseModel):
    """``POST /gateway/internal/usage`` with several reports: what the inference service
    sends when reports queue up behind each other (one signed POST instead of one each).
    A gateway that predates batches answers 422; the sender then posts them one by one."""

    model_config = ConfigDict(extra="forbid")

    reports: list[UsageSettlement] = Field(min_length=1, max_length=MAX_SETTLEMENT_BATCH)


class UsageSettlementBatchResult(BaseModel):
    """The answer to a batch, in the reports' order: ``settled``; ``duplicate`` (settled
    before); ``invalid`` (a reservation the gateway did not seal: the others still count)."""

    results: list[SettlementOutcome]


def _secret_bytes(secret: str | SecretStr | bytes) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    return secret.encode() if isinstance(secret, str) else secret


def _mac(secret: str | SecretStr | bytes, timestamp: str, path: str, body: bytes) -> str:
    message = f"v1\n{timestamp}\n{path}\n".encode() + body
    return hmac.new(_secret_bytes(secret), message, hashlib.sha256).hexdigest()


def sign_internal_call(
    secret: str | SecretStr | bytes, path: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """The headers that make ``body`` a signed call to ``path``."""
    timestamp = str(int(time.time() if now is None else now))
    return {
        TIMESTAMP_HEADER: timestamp,
        CALL_SIGNATURE_HEADER: "v1=" + _mac(secret, timestamp, path, body),
    }


def verify_internal_call(
    secret: str | SecretStr | bytes,
    path: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    max_age_s: float = MAX_CALL_AGE_S,
    now: float | None = None,
) -> None:
    """Raise :class:`InvalidInternalCall` unless ``body`` was signed for ``path`` recently."""
    if not timestamp or not signature or len(signature) > 100 or len(timestamp) > 20:
        raise InvalidInternalCall("The call is not signed.")
    scheme, _, mac = signature.strip().partition("=")
    if scheme != "v1" or not timestamp.isdigit():
        raise InvalidInternalCall("The call's signature is malformed.")
    expected = _mac(secret, timestamp, path, body)
    if not hmac.compare_digest(expected.encode(), mac.lower().encode("ascii", "replace")):
        raise InvalidInternalCall("The call's signature is not valid.")
    age = (time.time() if now is None else now) - int(timestamp)
    if abs(age) > max_age_s:  # both ways: a clock far ahead would make a long-lived replay
        raise InvalidInternalCall(f"The call was signed {int(age)} s away from now.")
