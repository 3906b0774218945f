"""Writes golden.hex: the request of traces::tests::sample as the official OTLP
serializer encodes it. Run it after changing what spans carry:

    python3 -m venv /tmp/otlp && /tmp/otlp/bin/pip install opentelemetry-proto
    /tmp/otlp/bin/python crates/gateway/src/traces/golden.py > crates/gateway/src/traces/golden.hex
"""

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status


def kv(key, v):
    if isinstance(v, bool):
        a = AnyValue(bool_value=v)
    elif isinstance(v, int):
        a = AnyValue(int_value=v)
    elif isinstance(v, float):
        a = AnyValue(double_value=v)
    else:
        a = AnyValue(string_value=v)
    return KeyValue(key=key, value=a)


TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
T0 = 1_700_000_000_000_000_000
REQ = bytes([1, 2, 3, 4, 5, 6, 7, 8])

request = Span(
    trace_id=TRACE,
    span_id=REQ,
    parent_span_id=bytes.fromhex("00f067aa0ba902b7"),
    name="chat",
    kind=Span.SPAN_KIND_SERVER,
    start_time_unix_nano=T0,
    end_time_unix_nano=T0 + 50_000_000,
    attributes=[
        kv("asc.request_id", "r1"),
        kv("asc.tenant", "t"),
        kv("asc.surface", "openai"),
        kv("asc.model", "chat"),
        kv("asc.stream", True),
        kv("asc.status", "success"),
        kv("http.response.status_code", 200),
        kv("asc.cache", "miss"),
        kv("asc.target", "mock-good/gpt-4o-mini"),
        kv("asc.attempts", 2),
        kv("asc.experiment", "exp"),
        kv("asc.arm", "candidate"),
        kv("gen_ai.usage.input_tokens", 10),
        kv("gen_ai.usage.output_tokens", 20),
        kv("asc.cost_usd", 0.00125),
        kv("asc.ttft_ms", 7.5),
    ],
)
failed = Span(
    trace_id=TRACE,
    span_id=bytes([0x11] * 8),
    parent_span_id=REQ,
    name="chat gpt-4o-mini",
    kind=Span.SPAN_KIND_CLIENT,
    start_time_unix_nano=T0 + 1_000_000,
    end_time_unix_nano=T0 + 1_000_000 + 12_500_000,
    attributes=[
        kv("asc.provider", "mock-bad"),
        kv("asc.model", "gpt-4o-mini"),
        kv("asc.region", "us"),
        kv("asc.attempt", 1),
        kv("http.response.status_code", 500),
        kv("error.type", "status 500"),
        kv("asc.latency_ms", 12.5),
    ],
    status=Status(message="status 500", code=Status.STATUS_CODE_ERROR),
)
served = Span(
    trace_id=TRACE,
    span_id=bytes([0x22] * 8),
    parent_span_id=REQ,
    name="chat gpt-4o-mini",
    kind=Span.SPAN_KIND_CLIENT,
    start_time_unix_nano=T0 + 20_000_000,
    end_time_unix_nano=T0 + 20_000_000 + 30_250_000,
    attributes=[
        kv("asc.provider", "mock-good"),
        kv("asc.model", "gpt-4o-mini"),
        kv("asc.region", "eu"),
        kv("asc.attempt", 2),
        kv("http.response.status_code", 200),
        kv("asc.latency_ms", 30.25),
        kv("asc.ttft_ms", 7.5),
    ],
)
msg = ExportTraceServiceRequest(
    resource_spans=[
        ResourceSpans(
            resource=Resource(
                attributes=[kv("service.name", "asc-test"), kv("service.version", "0.1.0")]
            ),
            scope_spans=[
                ScopeSpans(
                    scope=InstrumentationScope(name="asc", version="0.1.0"),
                    spans=[request, failed, served],
                )
            ],
        )
    ]
)
print(msg.SerializeToString(deterministic=True).hex())
