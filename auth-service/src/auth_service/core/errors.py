"""Problems the auth service raises, on top of switchboard_common's tree::

    ProblemError
    ├── BadRequest
    │   └── OAuthError              400  RFC 6749 §5.2 ``error`` + ``error_description``
    ├── Forbidden
    │   └── RegistrationDisabled    403
    ├── Conflict
    │   └── UsernameTaken           409
    ├── UnprocessableContent
    │   └── WeakPassword            422  ``violations`` lists what the policy refused
    └── TooManyRequests
        └── LoginLocked             429  Retry-After: seconds until the lock lifts

Every one renders as problem+json through the shared exception handler.
"""

from __future__ import annotations

from switchboard_common import BadRequest, Conflict, Forbidden, TooManyRequests
from switchboard_common.problems import UnprocessableContent


class OAuthError(BadRequest):
    """A token-endpoint error: ``error`` is the RFC 6749 code (``invalid_grant``, …)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(
            description,
            slug=error.replace("_", "-"),
            title=error.replace("_", " ").title(),
            error=error,
            error_description=description,
        )
        self.error = error


def invalid_grant(description: str = "Invalid username or password.") -> OAuthError:
    return OAuthError("invalid_grant", description)


class RegistrationDisabled(Forbidden):
    slug, title = "registration-disabled", "Registration Disabled"


class UsernameTaken(Conflict):
    slug, title = "username-taken", "Username Taken"


class WeakPassword(UnprocessableContent):
    slug, title = "weak-password", "Password Rejected"


class LoginLocked(TooManyRequests):
    slug, title = "login-locked", "Too Many Failed Logins"
