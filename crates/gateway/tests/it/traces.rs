//! Traces: the client's `traceparent` is joined and propagated to every upstream attempt,
//! and with `telemetry.otlp_endpoint` spans reach an OTLP/HTTP receiver: one per request,
//! a child per attempt.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status;
use prost::Message;
use serde_json::{Value, json};

use crate::support::{self, KEY, TestGateway};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

// === a tiny OTLP/HTTP receiver ===

/// What a collector received: one body per export.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Bytes>>>);

async fn receive(
    State(got): State<Received>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], Vec<u8>) {
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok());
    if ct != Some("application/x-protobuf") || body.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            [("content-type", "text/plain")],
            b"protobuf expected".to_vec(),
        );
    }
    got.0.lock().unwrap().push(body);
    // An empty ExportTraceServiceResponse: full success.
    (
        StatusCode::OK,
        [("content-type", "application/x-protobuf")],
        Vec::new(),
    )
}

async fn collector() -> (String, Received) {
    let got = Received::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

// === reading OTLP protobuf back ===

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An attribute value as JSON (string, bool, int, double).
fn any_value(v: Option<&AnyValue>) -> Value {
    match v.and_then(|a| a.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        other => panic!("unexpected AnyValue {other:?}"),
    }
}

fn attributes(kvs: &[KeyValue]) -> serde_json::Map<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), any_value(kv.value.as_ref())))
        .collect()
}

/// One span, decoded.
#[derive(Debug)]
struct Span {
    trace_id: String,
    span_id: String,
    parent: Option<String>,
    name: String,
    kind: SpanKind,
    start: u64,
    end: u64,
    attrs: serde_json::Map<String, Value>,
    /// Status code, when a status is set.
    status: Option<status::StatusCode>,
    service: Value,
}

/// An export's spans: the body decoded as the official `ExportTraceServiceRequest`.
fn decode(body: &[u8]) -> Vec<Span> {
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let resource = rs.resource.as_ref().unwrap();
        let service = attributes(&resource.attributes)["service.name"].clone();
        for ss in &rs.scope_spans {
            assert_eq!(ss.scope.as_ref().unwrap().name, "asc");
            for s in &ss.spans {
                out.push(Span {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent: (!s.parent_span_id.is_empty()).then(|| hex(&s.parent_span_id)),
                    name: s.name.clone(),
                    kind: s.kind(),
                    start: s.start_time_unix_nano,
                    end: s.end_time_unix_nano,
                    attrs: attributes(&s.attributes),
                    status: s.status.as_ref().map(|st| st.code()),
                    service: service.clone(),
                });
            }
        }
    }
    out
}

/// Waits until the collector has `n` spans of trace `trace_id`.
async fn spans_of(got: &Received, trace_id: &str, n: usize) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let spans: Vec<Span> = got
            .0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| decode(b))
            .filter(|s| s.trace_id == trace_id)
            .collect();
        if spans.len() >= n || Instant::now() > deadline {
            assert_eq!(spans.len(), n, "spans of {trace_id}: {spans:#?}");
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `traceparent` the mock provider `provider` last received: (trace id, span id, flags).
fn sent_upstream(gw: &TestGateway, provider: &str) -> (String, String, String) {
    let headers = gw.mock(provider).last_headers;
    let tp = headers
        .iter()
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("{provider} got no traceparent: {headers:?}"));
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

async fn chat(gw: &TestGateway, model: &str, traceparent: Option<&str>) -> reqwest::Response {
    let mut rb = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}));
    if let Some(tp) = traceparent {
        rb = rb.header("traceparent", tp);
    }
    rb.send().await.unwrap()
}

fn with_telemetry(endpoint: &str, providers: &str, models: &str) -> String {
    format!(
        "telemetry: {{otlp_endpoint: \"{endpoint}\", service_name: asc-it}}\n{}",
        support::config(providers, models, "")
    )
}

#[tokio::test]
async fn a_fallback_exports_the_request_span_and_a_child_per_attempt() {
    let (endpoint, got) = collector().await;
    let providers =
        "  - {name: bad, kind: mock, flavor: openai, region: us, fail_rate: 1.0, fail_status: 500}";
    let models = r#"  - name: fb
    retries: 0
    targets: [{provider: bad, model: gpt-4o-mini}]
    fallbacks: [{provider: mock-openai, model: gpt-4o-mini}]"#;
    let gw = TestGateway::start(&with_telemetry(&endpoint, providers, models)).await;
    let client_tp = format!("00-{TRACE}-{PARENT}-01");
    let r = chat(&gw, "fb", Some(&client_tp)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-asc-attempts"], "2");
    let request_id = support::request_id(&r);

    // Both upstream attempts carried the client's trace, each under its own span.
    let (bad_trace, bad_span, bad_flags) = sent_upstream(&gw, "bad");
    let (good_trace, good_span, good_flags) = sent_upstream(&gw, "mock-openai");
    assert_eq!((bad_trace.as_str(), good_trace.as_str()), (TRACE, TRACE));
    assert_eq!((bad_flags.as_str(), good_flags.as_str()), ("01", "01"));
    assert_ne!(bad_span, good_span);
    assert_ne!(good_span, PARENT);

    let spans = spans_of(&got, TRACE, 3).await;
    let request = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    assert_eq!(request.name, "chat");
    assert_eq!(request.service, "asc-it");
    assert_eq!(
        request.parent.as_deref(),
        Some(PARENT),
        "child of the client's span"
    );
    assert_eq!(request.attrs["asc.request_id"], request_id.as_str());
    assert_eq!(request.attrs["asc.tenant"], "t");
    assert_eq!(request.attrs["asc.model"], "fb");
    assert_eq!(request.attrs["asc.status"], "success");
    assert_eq!(request.attrs["asc.surface"], "openai");
    assert_eq!(request.attrs["asc.stream"], false);
    assert_eq!(request.attrs["http.response.status_code"], 200);
    assert_eq!(request.attrs["asc.attempts"], 2);
    assert_eq!(request.attrs["asc.target"], "mock-openai/gpt-4o-mini");
    assert!(request.attrs["gen_ai.usage.input_tokens"].as_i64().unwrap() > 0);
    assert!(
        request.attrs["gen_ai.usage.output_tokens"]
            .as_i64()
            .unwrap()
            > 0
    );
    assert!(request.attrs.contains_key("asc.cost_usd"));
    assert_eq!(request.status, None);
    // Nothing of the prompt or the key in any attribute.
    for s in &spans {
        let text = serde_json::to_string(&s.attrs).unwrap();
        assert!(!text.contains(KEY) && !text.contains("\"hi\""), "{text}");
    }

    let attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client)
        .collect();
    assert_eq!(attempts.len(), 2);
    for a in &attempts {
        assert_eq!(a.parent.as_deref(), Some(request.span_id.as_str()));
        assert_eq!(a.name, "chat gpt-4o-mini");
        assert!(
            a.start >= request.start && a.end <= request.end,
            "{a:?} in {request:?}"
        );
        assert!(a.end >= a.start);
        assert_eq!(a.attrs["asc.model"], "gpt-4o-mini");
        assert_eq!(a.attrs["asc.region"], "us");
    }
    let failed = attempts
        .iter()
        .find(|a| a.attrs["asc.provider"] == "bad")
        .unwrap();
    let served = attempts
        .iter()
        .find(|a| a.attrs["asc.provider"] == "mock-openai")
        .unwrap();
    assert_eq!(
        failed.span_id, bad_span,
        "the header named the attempt's span"
    );
    assert_eq!(served.span_id, good_span);
    assert_eq!(failed.attrs["asc.attempt"], 1);
    assert_eq!(served.attrs["asc.attempt"], 2);
    assert_eq!(failed.attrs["http.response.status_code"], 500);
    assert_eq!(failed.status, Some(status::StatusCode::Error));
    assert!(failed.attrs.contains_key("error.type"));
    assert_eq!(served.attrs["http.response.status_code"], 200);
    assert_eq!(served.status, None);
    assert!(
        served.start >= failed.end,
        "the fallback came after the failure"
    );
}

#[tokio::test]
async fn denials_unsampled_and_new_traces_are_exported_as_they_should() {
    let (endpoint, got) = collector().await;
    let gw = TestGateway::start(&with_telemetry(&endpoint, "", "")).await;

    // A client trace that is not sampled: propagated as such, not exported.
    let unsampled = "11111111111111111111111111111111";
    let r = chat(
        &gw,
        "m-openai",
        Some(&format!("00-{unsampled}-{PARENT}-00")),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (t, _, flags) = sent_upstream(&gw, "mock-openai");
    assert_eq!((t.as_str(), flags.as_str()), (unsampled, "00"));

    // No traceparent: a new trace, sampled (its spans are exported), a root span.
    let r = chat(&gw, "m-openai", None).await;
    assert_eq!(r.status(), 200);
    let (new_trace, span, flags) = sent_upstream(&gw, "mock-openai");
    assert_eq!(flags, "01");
    assert_ne!(new_trace, unsampled);
    let spans = spans_of(&got, &new_trace, 2).await;
    let root = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    assert_eq!(root.parent, None);
    let attempt = spans.iter().find(|s| s.kind == SpanKind::Client).unwrap();
    assert_eq!(attempt.span_id, span);
    assert_eq!(attempt.attrs["asc.provider"], "mock-openai");

    // A request refused before any upstream: the request span alone, with its error.
    let denied = "22222222222222222222222222222222";
    let r = chat(
        &gw,
        "no-such-model",
        Some(&format!("00-{denied}-{PARENT}-01")),
    )
    .await;
    assert_eq!(r.status(), 404);
    let spans = spans_of(&got, denied, 1).await;
    assert_eq!(spans[0].attrs["error.type"], "model_not_found");
    assert_eq!(spans[0].attrs["http.response.status_code"], 404);
    assert_eq!(spans[0].attrs["asc.status"], "error");
    assert_eq!(spans[0].attrs["asc.attempts"], 0);

    // The unsampled request finished before both: had it been exported, it would be in.
    let exported: Vec<Span> = got
        .0
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| decode(b))
        .collect();
    assert!(exported.iter().all(|s| s.trace_id != unsampled));
}

#[tokio::test]
async fn traceparent_is_propagated_without_an_endpoint_and_bad_ones_are_ignored() {
    let gw = TestGateway::start(&support::config("", "", "")).await;
    let client_tp = format!("00-{TRACE}-{PARENT}-01");

    let r = chat(&gw, "m-openai", Some(&client_tp)).await;
    assert_eq!(r.status(), 200);
    let (t, span, flags) = sent_upstream(&gw, "mock-openai");
    assert_eq!(t, TRACE);
    assert_ne!(span, PARENT, "the attempt's own span");
    assert_eq!(flags, "01", "the client's sampling decision goes on");

    // On the Anthropic surface and to an Anthropic upstream, streamed.
    let r = gw
        .http
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .header("traceparent", &client_tp)
        .header("tracestate", "vendor=abc")
        .json(
            &json!({"model": "m-anthropic", "max_tokens": 16, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
    assert_eq!(sent_upstream(&gw, "mock-anthropic").0, TRACE);
    let state = gw.mock("mock-anthropic").last_headers;
    assert!(state.contains(&("tracestate".into(), "vendor=abc".into())));

    // Embeddings too.
    let r = gw
        .http
        .post(format!("{}/v1/embeddings", gw.url))
        .bearer_auth(KEY)
        .header("traceparent", &client_tp)
        .json(&json!({"model": "m-openai", "input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sent_upstream(&gw, "mock-openai").0, TRACE);

    // Malformed: ignored (no error), a new trace instead; not sampled, as nothing is
    // exported without an endpoint.
    for bad in [
        format!("00-{}-{PARENT}-01", TRACE.to_ascii_uppercase()),
        format!("00-{}-{PARENT}-01", "0".repeat(32)),
        format!("ff-{TRACE}-{PARENT}-01"),
        "garbage".to_owned(),
    ] {
        let r = chat(&gw, "m-openai", Some(&bad)).await;
        assert_eq!(r.status(), 200, "{bad}");
        let (t, _, flags) = sent_upstream(&gw, "mock-openai");
        assert_ne!(t, TRACE);
        assert_ne!(t, "0".repeat(32));
        assert_eq!(flags, "00");
        assert!(
            !gw.mock("mock-openai")
                .last_headers
                .iter()
                .any(|(k, _)| k == "tracestate")
        );
    }
}

#[tokio::test]
async fn an_unreachable_collector_costs_requests_nothing() {
    let endpoint = format!("http://127.0.0.1:{}", support::free_port());
    let gw = TestGateway::start(&with_telemetry(&endpoint, "", "")).await;
    for _ in 0..3 {
        let r = chat(&gw, "m-openai", None).await;
        assert_eq!(r.status(), 200);
        assert_eq!(sent_upstream(&gw, "mock-openai").2, "01");
    }
    // The failed exports are logged and dropped; the gateway goes on serving.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(chat(&gw, "m-openai", None).await.status(), 200);
}

#[tokio::test]
async fn a_bad_endpoint_is_a_config_error() {
    let yaml = format!(
        "telemetry: {{otlp_endpoint: \"127.0.0.1:4317\"}}\n{}",
        support::config("", "", "")
    );
    let err = asc_gateway::config::load_str(&yaml, &|_| None).unwrap_err();
    assert!(err.to_string().contains("telemetry.otlp_endpoint"), "{err}");
}
