"""``/gateway/verify``: the gateway's checks as a forwardAuth endpoint (Traefik, nginx).

A proxy in front of the services asks here before forwarding a request: the original
method and path come in ``X-Forwarded-Method`` / ``X-Forwarded-Uri`` and the client's
headers (``Authorization``, ``X-API-Key``) as they were. The answer is 200 with the signed
identity headers to attach (``X-Switchboard-Identity``, ``X-Switchboard-Signature``; none
for public routes; ``X-Priority`` on inference routes; ``RateLimit-*``) or the
400/401/403/404/429 problem the client should get: the same checks, priority and request-rate
limit as a request through the gateway itself (token budgets excepted: they need the body).
Identity headers the client sent are never used. See deploy/traefik/dynamic.yml.

The answer vouches for a caller, so the endpoint is off unless
``GATEWAY_FORWARD_AUTH_ENABLED`` is set, and only networks in
``GATEWAY_FORWARD_AUTH_ALLOWED_FROM`` (the proxy's) may call it.
"""

import ipaddress
from functools import cache
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, Request, Response

from gateway.core.dispatch import GatewayApp
from gateway.core.route_table import RouteTable
from gateway.dependencies import SettingsDep
from switchboard_common import BadRequest, Forbidden, NotFound, problem_responses
from switchboard_common.problems import problem_messages
from switchboard_common.request_context import current_request_id

router = APIRouter(tags=["gateway"])
_table = RouteTable()


@cache
def _networks(spec: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(
        ipaddress.ip_network(n.strip(), strict=False) for n in spec.split(",") if n.strip()
    )


def _allowed(host: str, spec: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in _networks(spec))


def _forwarded_client(request: Request) -> str:
    first = request.headers.get("x-forwarded-for", "").split(",", 1)[0].strip()
    try:
        return str(ipaddress.ip_address(first))
    except ValueError:
        return ""


@router.api_route(
    "/gateway/verify",
    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    summary="forwardAuth: may the forwarded request pass, and as whom",
    responses={
        200: {"description": "Allowed; attach the X-Switchboard-* headers of this answer."},
        **problem_responses(400, 401, 403, 404, 429, 503),
    },
)
async def verify(request: Request, settings: SettingsDep) -> Response:
    if not settings.forward_auth_enabled:
        raise NotFound("forwardAuth is off; set GATEWAY_FORWARD_AUTH_ENABLED=true to serve it.")
    client = request.client.host if request.client else ""
    if not _allowed(client, settings.forward_auth_allowed_from):
        raise Forbidden("Only the proxies in GATEWAY_FORWARD_AUTH_ALLOWED_FROM may ask.")
    forwarded = request.headers.get("x-forwarded-uri", "")
    raw = urlsplit(forwarded).path or "/"
    if "%2f" in raw.lower() or "%5c" in raw.lower():
        raise BadRequest("Encoded slashes are not allowed in paths.")
    path = unquote(raw)  # judge the path the service will see, decoded like uvicorn does
    service = _table.resolve(path)
    if service is None:
        raise NotFound(f"No service serves {path}.")
    gateway: GatewayApp = request.app.state.gateway
    scope = {
        "type": "http",
        "path": path,
        "method": request.headers.get("x-forwarded-method", "GET"),
        "headers": [
            (k, v)
            for k, v in request.scope["headers"]
            if k not in (b"x-switchboard-identity", b"x-switchboard-signature")
        ],
        "query_string": b"",
        # anonymous routes are limited per client IP: the one the proxy saw (it is trusted:
        # only GATEWAY_FORWARD_AUTH_ALLOWED_FROM gets here)
        "client": (_forwarded_client(request) or client, 0),
    }
    decision = await gateway.check(scope, service)
    if decision.status:
        start, body = problem_messages(
            decision.status,
            decision.detail,
            instance=path,
            request_id=current_request_id(),
            headers=decision.response_headers,
            extensions=decision.extensions,
        )
        headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return Response(body["body"], status_code=decision.status, headers=headers)
    allowed = [*decision.identity, *(decision.response_headers or ())]
    return Response(status_code=200, headers={k.decode(): v.decode() for k, v in allowed})
