"""A stand-in OTLP/HTTP trace collector for the bench (G1/G3 "traced" requests).

The gateways under test export every proxy span here, so the bench pays the real cost of
tracing (span creation, batching, protobuf encoding, an HTTP POST from the exporter
thread) without a Jaeger in the loop. It decodes each export to count spans, so the bench
can show the spans really left the gateway: ``GET /stats`` → ``{"exports": n, "spans": n}``.

Raw ASGI on purpose: the sink shares the machine's two cores with what is measured.
"""

from __future__ import annotations

import gzip
import json

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.types import Receive, Scope, Send

_stats = {"exports": 0, "spans": 0}


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "POST" and scope["path"] == "/v1/traces":
        body = await _body(receive)
        if (b"content-encoding", b"gzip") in scope["headers"]:
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        _stats["exports"] += 1
        _stats["spans"] += sum(
            len(scoped.spans) for spans in export.resource_spans for scoped in spans.scope_spans
        )
        # An empty ExportTraceServiceResponse is zero bytes of protobuf: full success.
        await _answer(send, 200, b"", b"application/x-protobuf")
    elif scope["path"] == "/stats":
        await _answer(send, 200, json.dumps(_stats).encode(), b"application/json")
    else:
        await _answer(send, 404, b"", b"text/plain")
