"""Switchboard's shared library: what every service needs and no service owns.

Curated exports; import from here, not from the submodules, unless you need internals.
"""

from switchboard_common.app import create_service_app
from switchboard_common.exception_handlers import (
    ProblemResponse,
    install_exception_handlers,
    problem_response,
)
from switchboard_common.health import ReadinessChecks
from switchboard_common.http_client import HttpLimits, HttpTimeouts, create_http_client
from switchboard_common.identity import (
    IDENTITY_HEADER,
    SIGNATURE_HEADER,
    CurrentPrincipal,
    Principal,
    current_principal,
    require_scopes,
    sign_identity,
    verify_identity,
)
from switchboard_common.problems import (
    BadGateway,
    BadRequest,
    Conflict,
    Forbidden,
    GatewayTimeout,
    InternalError,
    NotFound,
    PayloadTooLarge,
    Problem,
    ProblemError,
    RequestTimeout,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnprocessableContent,
    problem_body,
    problem_bytes,
    problem_responses,
)
from switchboard_common.redis_client import create_redis, managed_redis, redis_ping
from switchboard_common.request_context import current_request_id, current_trace_id
from switchboard_common.server import serve
from switchboard_common.settings import Environment, ServiceSettings

__all__ = [
    "IDENTITY_HEADER",
    "SIGNATURE_HEADER",
    "BadGateway",
    "BadRequest",
    "Conflict",
    "CurrentPrincipal",
    "Environment",
    "Forbidden",
    "GatewayTimeout",
    "HttpLimits",
    "HttpTimeouts",
    "InternalError",
    "NotFound",
    "PayloadTooLarge",
    "Principal",
    "Problem",
    "ProblemError",
    "ProblemResponse",
    "ReadinessChecks",
    "RequestTimeout",
    "ServiceSettings",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnprocessableContent",
    "create_http_client",
    "create_redis",
    "create_service_app",
    "current_principal",
    "current_request_id",
    "current_trace_id",
    "install_exception_handlers",
    "managed_redis",
    "problem_body",
    "problem_bytes",
    "problem_response",
    "problem_responses",
    "redis_ping",
    "require_scopes",
    "serve",
    "sign_identity",
    "verify_identity",
]
