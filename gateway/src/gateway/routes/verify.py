"""``/gateway/verify``: the gateway's checks as a forwardAuth endpoint (Traefik, nginx).

A proxy in front of the services asks here before forwarding a request: the original
method and path come in ``X-Forwarded-Method`` / ``X-Forwarded-Uri`` and the client's
headers (``Authorization``, ``X-API-Key``) as they were. The answer is 200 with the signed
identity headers to attach (``X-Switchboard-Identity``, ``X-Switchboard-Signature``; none
for public routes) or the 401/403/404 problem the client should get. Identity headers the
client sent are never used. See deploy/compose/traefik/dynamic.yml.
"""

from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response

from gateway.core.responses import problem_messages
from gateway.core.route_table import RouteTable
from gateway.core.security import Authenticator
from switchboard_common import NotFound, problem_responses
from switchboard_common.request_context import current_request_id

router = APIRouter(tags=["gateway"])
_table = RouteTable()


@router.api_route(
    "/gateway/verify",
    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    summary="forwardAuth: may the forwarded request pass, and as whom",
    responses={
        200: {"description": "Allowed; attach the X-Switchboard-* headers of this answer."},
        **problem_responses(401, 403, 404, 503),
    },
)
async def verify(request: Request) -> Response:
    forwarded = request.headers.get("x-forwarded-uri", "")
    path = urlsplit(forwarded).path or "/"
    service = _table.resolve(path)
    if service is None:
        raise NotFound(f"No service serves {path}.")
    auth: Authenticator = request.app.state.auth
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
    }
    decision = await auth.authorize(scope, service)
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
    return Response(
        status_code=200,
        headers={k.decode(): v.decode() for k, v in decision.identity},
    )
