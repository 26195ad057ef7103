"""OTLP ``ExportTraceServiceRequest`` protobuf, encoded by hand for lean spans.

Why by hand: the SDK's exporter builds a tree of ``pb2`` objects per span and serializes
it (~75 µs per span, holding the GIL in the exporter thread; a quarter of the gateway's
CPU under load). The schema we emit is fixed and small, so writing the wire format
directly (varints, length-delimited fields, fixed64 timestamps) costs a few µs per span.
Field numbers are those of ``opentelemetry/proto/{collector/trace,trace,common,resource}/
v1/*.proto``; the tests decode the output with the official ``pb2`` classes.

What a span carries, mirroring the SDK's encoder: trace/span/parent ids, trace_state,
name, kind, start/end (unix ns), attributes, status (always present, empty when unset)
and ``flags`` (has-is-remote, plus is-remote when the parent came from a caller).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from switchboard_common.lean_trace import AttributeValue, LeanSpan

# SpanFlags (trace.proto)
FLAG_HAS_IS_REMOTE: Final = 0x100
FLAG_IS_REMOTE: Final = 0x200

_pack_q = struct.Struct("<Q").pack
# trace_id=1 (16 bytes) and span_id=2 (8 bytes) with their tags, in one pack (ids are
# big-endian byte strings, as ``int.to_bytes(…, "big")`` would give)
_pack_ids = struct.Struct(">HQQHQ").pack
# start_time_unix_nano=7 and end_time_unix_nano=8, fixed64 little-endian, with their tags
_pack_times = struct.Struct("<BQBQ").pack
_KIND_TAG: Final = 0x30  # kind=6, varint
_U64: Final = 0xFFFFFFFFFFFFFFFF
_pack_d = struct.Struct("<d").pack
_pack_i = struct.Struct("<I").pack
_LOCAL_FLAGS: Final = b"\x85\x01" + _pack_i(FLAG_HAS_IS_REMOTE)  # field 16, fixed32
_REMOTE_FLAGS: Final = b"\x85\x01" + _pack_i(FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE)
_EMPTY_STATUS: Final = b"\x7a\x00"  # field 15, a present but empty Status
_KV_CACHE_MAX: Final = 4096

ResourceValue = str | bool | int | float | Sequence[str | bool | int | float]


def varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) with a one-byte tag."""
    return bytes((tag,)) + varint(len(payload)) + payload


def _any_value(value: ResourceValue) -> bytes:
    """AnyValue: string_value=1, bool_value=2, int_value=3, double_value=4, array_value=5."""
    if isinstance(value, bool):  # before int: bool is an int
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(0x0A, value.encode())
    if isinstance(value, int):
        return b"\x18" + varint(value & 0xFFFFFFFFFFFFFFFF)  # int64: two's complement
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    values = b"".join(_field(0x0A, _any_value(v)) for v in value)  # ArrayValue.values=1
    return _field(0x2A, values)


def key_value(key: str, value: ResourceValue) -> bytes:
    """A KeyValue message body: key=1, value=2."""
    return _field(0x0A, key.encode()) + _field(0x12, _any_value(value))


class SpanEncoder:
    """Encodes batches of lean spans for one resource and one instrumentation scope.

    The resource and scope are encoded once; repeated attribute pairs (method, service,
    status code) come from a small cache, so a span costs little more than its ids,
    timestamps and path.
    """

    def __init__(
        self,
        resource: Mapping[str, ResourceValue],
        scope_name: str,
        scope_version: str | None = None,
    ) -> None:
        attrs = b"".join(_field(0x0A, key_value(k, v)) for k, v in resource.items())
        self._resource = _field(0x0A, attrs)  # ResourceSpans.resource=1 {attributes=1}
        scope = _field(0x0A, scope_name.encode())
        if scope_version:
            scope += _field(0x12, scope_version.encode())
        self._scope = _field(0x0A, scope)  # ScopeSpans.scope=1
        self._kv: dict[tuple[str, AttributeValue, type], bytes] = {}
        self._names: dict[tuple[str, int], bytes] = {}

    def _attribute(self, key: str, value: AttributeValue) -> bytes:
        cache_key = (key, value, type(value))  # True == 1: the type tells them apart
        encoded = self._kv.get(cache_key)
        if encoded is None:
            encoded = _field(0x4A, key_value(key, value))  # Span.attributes=9
            if len(self._kv) >= _KV_CACHE_MAX:
                self._kv.clear()
            self._kv[cache_key] = encoded
        return encoded

    def _name_kind(self, name: str, kind: int) -> bytes:
        """name=5 and kind=6, cached: a span's name is ``METHOD /route``, from a few."""
        encoded = self._names.get((name, kind))
        if encoded is None:
            encoded = _field(0x2A, name.encode()) + bytes((_KIND_TAG,)) + varint(kind)
            if len(self._names) >= _KV_CACHE_MAX:
                self._names.clear()
            self._names[(name, kind)] = encoded
        return encoded

    def span(self, span: LeanSpan) -> bytes:
        trace_id = span.trace_id
        parts = [
            _pack_ids(0x0A10, trace_id >> 64, trace_id & _U64, 0x1208, span.span_id),
        ]
        if span.trace_state:
            parts.append(_field(0x1A, span.trace_state.encode()))  # trace_state=3
        if span.parent_span_id:
            parts.append(b"\x22\x08" + span.parent_span_id.to_bytes(8, "big"))  # parent=4
        parts.append(self._name_kind(span.name, span.kind))
        parts.append(_pack_times(0x39, span.start_ns, 0x41, span.end_ns))
        attribute = self._attribute
        parts += [attribute(k, v) for k, v in span.attributes.items()]
        if span.status_code or span.status_message:
            status = b""
            if span.status_message:
                status += _field(0x12, span.status_message.encode())  # message=2
            if span.status_code:
                status += b"\x18" + varint(span.status_code)  # code=3
            parts.append(_field(0x7A, status))  # status=15
        else:
            parts.append(_EMPTY_STATUS)
        parts.append(_REMOTE_FLAGS if span.parent_remote else _LOCAL_FLAGS)
        return _field(0x12, b"".join(parts))  # ScopeSpans.spans=2

    def request(self, spans: Iterable[LeanSpan]) -> bytes:
        """One ExportTraceServiceRequest{resource_spans=1 [ResourceSpans{resource=1,
        scope_spans=2 [ScopeSpans{scope=1, spans=2}]}]} holding every span."""
        encode = self.span
        scope_spans = _field(0x12, self._scope + b"".join([encode(s) for s in spans]))
        return _field(0x0A, self._resource + scope_spans)
