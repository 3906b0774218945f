#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use super::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn tp(version: &str, trace: &str, parent: &str, flags: &str) -> String {
    format!("{version}-{trace}-{parent}-{flags}")
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn traceparent_of(o: &Outgoing) -> TraceParent {
    let (_, v) = o.headers().find(|(k, _)| *k == "traceparent").unwrap();
    parse_traceparent(v.to_str().unwrap()).unwrap()
}

// === traceparent ===

#[test]
fn a_valid_traceparent_parses() {
    let p = parse_traceparent(&tp("00", TRACE, PARENT, "01")).unwrap();
    assert_eq!(hex(&p.trace_id), TRACE);
    assert_eq!(hex(&p.span_id), PARENT);
    assert!(p.sampled());
    let p = parse_traceparent(&tp("00", TRACE, PARENT, "00")).unwrap();
    assert!(!p.sampled());
    // Other flag bits are kept but only bit 0 means sampled.
    let p = parse_traceparent(&tp("00", TRACE, PARENT, "fe")).unwrap();
    assert_eq!(p.flags, 0xfe);
    assert!(!p.sampled());
    // Optional whitespace around a header value is not part of it.
    assert!(parse_traceparent(&format!(" {} ", tp("00", TRACE, PARENT, "01"))).is_some());
}

#[test]
fn versions_follow_the_spec() {
    // ff is forbidden.
    assert_eq!(parse_traceparent(&tp("ff", TRACE, PARENT, "01")), None);
    // 00 has exactly four fields.
    assert_eq!(
        parse_traceparent(&format!("{}-extra", tp("00", TRACE, PARENT, "01"))),
        None
    );
    // A later version may add fields after a dash; the four known ones are read.
    let later = parse_traceparent(&format!("{}-what-comes", tp("cc", TRACE, PARENT, "01")));
    assert_eq!(hex(&later.unwrap().trace_id), TRACE);
    assert!(parse_traceparent(&tp("01", TRACE, PARENT, "01")).is_some());
    assert_eq!(
        parse_traceparent(&format!("{}x", tp("01", TRACE, PARENT, "01"))),
        None
    );
    // Not hex.
    assert_eq!(parse_traceparent(&tp("0g", TRACE, PARENT, "01")), None);
}

#[test]
fn all_zero_ids_are_invalid() {
    let zero_trace = "0".repeat(32);
    let zero_span = "0".repeat(16);
    assert_eq!(
        parse_traceparent(&tp("00", &zero_trace, PARENT, "01")),
        None
    );
    assert_eq!(parse_traceparent(&tp("00", TRACE, &zero_span, "01")), None);
}

#[test]
fn wrong_lengths_are_invalid() {
    for s in [
        String::new(),
        "00".into(),
        tp("00", &TRACE[1..], PARENT, "01"),
        tp("00", &format!("{TRACE}0"), PARENT, "01"),
        tp("00", TRACE, &PARENT[1..], "01"),
        tp("00", TRACE, &format!("{PARENT}0"), "01"),
        tp("00", TRACE, PARENT, "1"),
        tp("00", TRACE, PARENT, "001"),
        tp("0", TRACE, PARENT, "01"),
        format!("00-{TRACE}-{PARENT}"),
        format!("00_{TRACE}_{PARENT}_01"),
    ] {
        assert_eq!(parse_traceparent(&s), None, "{s:?}");
    }
}

#[test]
fn uppercase_hex_is_invalid() {
    let upper = TRACE.to_ascii_uppercase();
    assert_eq!(parse_traceparent(&tp("00", &upper, PARENT, "01")), None);
    assert_eq!(
        parse_traceparent(&tp("00", TRACE, &PARENT.to_ascii_uppercase(), "01")),
        None
    );
    assert_eq!(parse_traceparent(&tp("00", TRACE, PARENT, "0A")), None);
    assert_eq!(parse_traceparent(&tp("0A", TRACE, PARENT, "01")), None);
}

#[test]
fn formatting_round_trips() {
    for flags in ["00", "01"] {
        let s = tp("00", TRACE, PARENT, flags);
        let p = parse_traceparent(&s).unwrap();
        assert_eq!(format_traceparent(&p.trace_id, &p.span_id, p.sampled()), s);
    }
    // A later version is answered in version 00, with only the sampled flag.
    let p = parse_traceparent(&tp("cc", TRACE, PARENT, "ff")).unwrap();
    assert_eq!(
        format_traceparent(&p.trace_id, &p.span_id, p.sampled()),
        tp("00", TRACE, PARENT, "01")
    );
}

#[test]
fn random_ids_are_never_zero() {
    for _ in 0..1000 {
        assert_ne!(new_span_id(), [0; 8]);
        assert_ne!(random_id::<16>(), [0; 16]);
    }
}

// === a request's trace ===

#[test]
fn a_client_traceparent_becomes_the_parent() {
    let h = headers(&[
        ("traceparent", &tp("00", TRACE, PARENT, "01")),
        ("tracestate", "vendor=abc"),
    ]);
    let t = RequestTrace::start(&h, None);
    assert_eq!(hex(&t.trace_id), TRACE);
    assert_eq!(t.parent.map(|p| hex(&p)).as_deref(), Some(PARENT));
    assert_ne!(hex(&t.span_id), PARENT);
    assert!(t.sampled);
    assert!(!t.exported(), "no endpoint, nothing exported");
    let (span, out) = t.attempt();
    let sent = traceparent_of(&out);
    assert_eq!(sent.trace_id, t.trace_id);
    assert_eq!(sent.span_id, span);
    assert_ne!(span, t.span_id);
    assert!(sent.sampled());
    let state: Vec<_> = out.headers().filter(|(k, _)| *k == "tracestate").collect();
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].1, "vendor=abc");
    // Each attempt has its own span.
    assert_ne!(t.attempt().0, span);
}

#[test]
fn an_unsampled_client_trace_is_propagated_not_exported() {
    let (tx, _rx) = mpsc::channel(4);
    let exporter = Exporter {
        tx,
        dropped: Arc::default(),
    };
    let h = headers(&[("traceparent", &tp("00", TRACE, PARENT, "00"))]);
    let t = RequestTrace::start(&h, Some(&exporter));
    assert!(!t.sampled);
    assert!(!t.exported());
    assert!(!traceparent_of(&t.attempt().1).sampled());
    let h = headers(&[("traceparent", &tp("00", TRACE, PARENT, "01"))]);
    assert!(RequestTrace::start(&h, Some(&exporter)).exported());
    // A new trace is sampled exactly when it is exported.
    let t = RequestTrace::start(&HeaderMap::new(), Some(&exporter));
    assert!(t.sampled && t.exported());
    let t = RequestTrace::start(&HeaderMap::new(), None);
    assert!(!t.sampled && !t.exported());
}

#[test]
fn a_malformed_or_missing_traceparent_starts_a_new_trace() {
    for h in [
        HeaderMap::new(),
        headers(&[("traceparent", "garbage")]),
        headers(&[(
            "traceparent",
            &tp("00", &TRACE.to_ascii_uppercase(), PARENT, "01"),
        )]),
        // Two traceparent headers: invalid, both ignored.
        headers(&[
            ("traceparent", &tp("00", TRACE, PARENT, "01")),
            ("traceparent", &tp("00", TRACE, PARENT, "01")),
        ]),
        // A tracestate without a valid traceparent is not forwarded.
        headers(&[("traceparent", "00-bad"), ("tracestate", "vendor=abc")]),
    ] {
        let t = RequestTrace::start(&h, None);
        assert_ne!(hex(&t.trace_id), TRACE);
        assert_ne!(t.trace_id, [0; 16]);
        assert_eq!(t.parent, None);
        let out = t.attempt().1;
        assert_eq!(traceparent_of(&out).trace_id, t.trace_id);
        assert!(out.headers().all(|(k, _)| k != "tracestate"));
    }
    let a = RequestTrace::start(&HeaderMap::new(), None);
    let b = RequestTrace::start(&HeaderMap::new(), None);
    assert_ne!(a.trace_id, b.trace_id);
}

#[test]
fn the_endpoint_gets_the_traces_path() {
    assert_eq!(
        traces_url("http://127.0.0.1:4318"),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
    assert_eq!(
        traces_url("https://c/otlp/v1/traces"),
        "https://c/otlp/v1/traces"
    );
    assert_eq!(traces_url("https://c/otlp"), "https://c/otlp/v1/traces");
}

// === encoding ===

/// A request with a failed attempt, a fallback that served, an experiment, a parent.
fn sample() -> (RequestTrace, ExecutionRecord) {
    let h = headers(&[("traceparent", &tp("00", TRACE, PARENT, "01"))]);
    let mut t = RequestTrace::start(&h, None);
    t.span_id = [1, 2, 3, 4, 5, 6, 7, 8];
    t.start_unix_nanos = 1_700_000_000_000_000_000;
    let mut r = ExecutionRecord::new("r1".into(), "openai", "chat");
    r.tenant = Some("t".into());
    r.model_requested = Some("chat".into());
    r.stream = true;
    r.cache = "miss";
    r.decision.chosen = Some("mock-good/gpt-4o-mini".into());
    r.decision.experiment = Some("exp".into());
    r.decision.arm = Some("candidate".into());
    r.prompt_tokens = 10;
    r.completion_tokens = 20;
    r.cost_usd = 0.00125;
    r.ttft_ms = Some(7.5);
    r.latency_ms = 50.0;
    r.attempts = vec![
        Attempt {
            provider: "mock-bad".into(),
            model: "gpt-4o-mini".into(),
            region: "us".into(),
            status: Some(500),
            error: Some("status 500".into()),
            latency_ms: 12.5,
            ttft_ms: None,
            span_id: [0x11; 8],
            offset: Duration::from_millis(1),
        },
        Attempt {
            provider: "mock-good".into(),
            model: "gpt-4o-mini".into(),
            region: "eu".into(),
            status: Some(200),
            error: None,
            latency_ms: 30.25,
            ttft_ms: Some(7.5),
            span_id: [0x22; 8],
            offset: Duration::from_millis(20),
        },
    ];
    (t, r)
}

/// The spans of `(t, r)` in an export request, encoded with prost and decoded back.
fn round_trip(t: &RequestTrace, r: &ExecutionRecord) -> ExportTraceServiceRequest {
    let mut spans = Vec::new();
    Finished::of(t, r).into_spans(&mut spans);
    let (resource, scope) = resource_and_scope_of("asc-test", "0.1.0");
    let body = export_request(resource, scope, spans).encode_to_vec();
    ExportTraceServiceRequest::decode(body.as_slice()).unwrap()
}

/// The spans of a decoded request (one resource, one scope).
fn spans_in(req: &ExportTraceServiceRequest) -> &[Span] {
    assert_eq!(req.resource_spans.len(), 1);
    assert_eq!(req.resource_spans[0].scope_spans.len(), 1);
    &req.resource_spans[0].scope_spans[0].spans
}

/// Attributes as (key, value), in order.
fn attrs(kvs: &[KeyValue]) -> Vec<(&str, Value)> {
    kvs.iter()
        .map(|kv| {
            let v = kv.value.clone().and_then(|a| a.value);
            (kv.key.as_str(), v.unwrap())
        })
        .collect()
}

fn s(v: &str) -> Value {
    Value::StringValue(v.to_owned())
}

#[test]
fn spans_decode_back_as_the_request_and_its_attempts() {
    let (t, r) = sample();
    let req = round_trip(&t, &r);
    let rs = &req.resource_spans[0];
    assert_eq!(
        attrs(&rs.resource.as_ref().unwrap().attributes),
        [
            ("service.name", s("asc-test")),
            ("service.version", s("0.1.0"))
        ]
    );
    let scope = rs.scope_spans[0].scope.as_ref().unwrap();
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("asc", "0.1.0")
    );

    let [request, failed, served] = spans_in(&req) else {
        panic!("three spans expected: {req:#?}");
    };
    // Ids and parents: the request span is the client's span's child, the attempts the
    // request span's.
    for span in [request, failed, served] {
        assert_eq!(hex(&span.trace_id), TRACE);
    }
    assert_eq!(request.span_id, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(hex(&request.parent_span_id), PARENT);
    assert_eq!(failed.span_id, [0x11; 8]);
    assert_eq!(served.span_id, [0x22; 8]);
    assert_eq!(failed.parent_span_id, request.span_id);
    assert_eq!(served.parent_span_id, request.span_id);
    // Names and kinds.
    assert_eq!(request.name, "chat");
    assert_eq!(failed.name, "chat gpt-4o-mini");
    assert_eq!(served.name, "chat gpt-4o-mini");
    assert_eq!(request.kind(), SpanKind::Server);
    assert_eq!(failed.kind(), SpanKind::Client);
    assert_eq!(served.kind(), SpanKind::Client);
    // Times: the request's wall-clock start plus monotonic offsets and durations.
    let t0 = 1_700_000_000_000_000_000;
    let times = |s: &Span| (s.start_time_unix_nano, s.end_time_unix_nano);
    assert_eq!(times(request), (t0, t0 + 50_000_000));
    assert_eq!(times(failed), (t0 + 1_000_000, t0 + 1_000_000 + 12_500_000));
    assert_eq!(
        times(served),
        (t0 + 20_000_000, t0 + 20_000_000 + 30_250_000)
    );
    // Only the failed attempt has an error status.
    assert_eq!(request.status, None);
    assert_eq!(
        failed.status,
        Some(Status {
            message: "status 500".into(),
            code: StatusCode::Error.into(),
        })
    );
    assert_eq!(served.status, None);
    // Attributes, in order: no prompt, no key, nothing the record does not have.
    assert_eq!(
        attrs(&request.attributes),
        [
            ("asc.request_id", s("r1")),
            ("asc.tenant", s("t")),
            ("asc.surface", s("openai")),
            ("asc.model", s("chat")),
            ("asc.stream", Value::BoolValue(true)),
            ("asc.status", s("success")),
            ("http.response.status_code", Value::IntValue(200)),
            ("asc.cache", s("miss")),
            ("asc.target", s("mock-good/gpt-4o-mini")),
            ("asc.attempts", Value::IntValue(2)),
            ("asc.experiment", s("exp")),
            ("asc.arm", s("candidate")),
            ("gen_ai.usage.input_tokens", Value::IntValue(10)),
            ("gen_ai.usage.output_tokens", Value::IntValue(20)),
            ("asc.cost_usd", Value::DoubleValue(0.00125)),
            ("asc.ttft_ms", Value::DoubleValue(7.5)),
        ]
    );
    assert_eq!(
        attrs(&failed.attributes),
        [
            ("asc.provider", s("mock-bad")),
            ("asc.model", s("gpt-4o-mini")),
            ("asc.region", s("us")),
            ("asc.attempt", Value::IntValue(1)),
            ("http.response.status_code", Value::IntValue(500)),
            ("error.type", s("status 500")),
            ("asc.latency_ms", Value::DoubleValue(12.5)),
        ]
    );
    assert_eq!(
        attrs(&served.attributes),
        [
            ("asc.provider", s("mock-good")),
            ("asc.model", s("gpt-4o-mini")),
            ("asc.region", s("eu")),
            ("asc.attempt", Value::IntValue(2)),
            ("http.response.status_code", Value::IntValue(200)),
            ("asc.latency_ms", Value::DoubleValue(30.25)),
            ("asc.ttft_ms", Value::DoubleValue(7.5)),
        ]
    );
}

#[test]
fn a_root_request_that_failed_has_no_parent_and_an_error_status() {
    let mut t = RequestTrace::start(&HeaderMap::new(), None);
    t.start_unix_nanos = 1_000;
    let mut r = ExecutionRecord::new("r2".into(), "anthropic", "embeddings");
    r.status = "error";
    r.http_status = 502;
    r.error_code = Some("upstream_error".into());
    r.latency_ms = f64::NAN;
    let req = round_trip(&t, &r);
    let [request] = spans_in(&req) else {
        panic!("one span expected: {req:#?}");
    };
    assert_eq!(request.trace_id, t.trace_id);
    assert_eq!(request.span_id, t.span_id);
    assert!(request.parent_span_id.is_empty(), "a root span");
    assert_eq!(request.name, "embeddings");
    // A bad duration cannot wrap a timestamp.
    assert_eq!(
        (request.start_time_unix_nano, request.end_time_unix_nano),
        (1_000, 1_000)
    );
    assert_eq!(
        request.status,
        Some(Status {
            message: "upstream_error".into(),
            code: StatusCode::Error.into(),
        })
    );
    let a = attrs(&request.attributes);
    assert!(a.contains(&("error.type", s("upstream_error"))), "{a:?}");
    assert!(a.contains(&("asc.attempts", Value::IntValue(0))), "{a:?}");
    assert!(
        !a.iter()
            .any(|(k, _)| ["asc.tenant", "asc.target", "asc.arm"].contains(k))
    );
}

#[test]
fn finishing_queues_the_spans_once() {
    let (tx, mut rx) = mpsc::channel(1);
    let exporter = Exporter {
        tx,
        dropped: Arc::default(),
    };
    let (_, r) = sample();
    let h = headers(&[("traceparent", &tp("00", TRACE, PARENT, "01"))]);
    let mut t = RequestTrace::start(&h, Some(&exporter));
    t.finish(&r);
    t.finish(&r);
    let got = rx.try_recv().unwrap();
    assert_eq!(got.count(), 3);
    assert_eq!(got.span_id, t.span_id);
    assert!(rx.try_recv().is_err(), "finish sends once");
    // A full queue drops and counts, never waits.
    let mut a = RequestTrace::start(&h, Some(&exporter));
    let mut b = RequestTrace::start(&h, Some(&exporter));
    a.finish(&r);
    b.finish(&r);
    assert_eq!(exporter.dropped.load(Ordering::Relaxed), 3);
}

/// What tracing costs a request, with and without an endpoint, and what building and
/// encoding its spans costs the export task (printed, not asserted: run with
/// `--nocapture`). Debug build: the release figures are several times lower.
#[test]
fn overhead_per_request() {
    const N: u32 = 10_000;
    let (_, r) = sample();
    let h = headers(&[("traceparent", &tp("00", TRACE, PARENT, "01"))]);
    let (tx, mut rx) = mpsc::channel(N as usize + 1);
    let exporter = Exporter {
        tx,
        dropped: Arc::default(),
    };
    let run = |exporter: Option<&Exporter>| {
        let t0 = Instant::now();
        let mut bytes = 0;
        for _ in 0..N {
            let mut t = RequestTrace::start(&h, exporter);
            for _ in &r.attempts {
                let (_, out) = t.attempt();
                bytes += out.headers().count();
            }
            t.finish(&r);
        }
        assert!(bytes > 0);
        t0.elapsed() / N
    };
    let off = run(None);
    let on = run(Some(&exporter));
    // The export task's part, in batches as it sends them.
    let (resource, scope) = resource_and_scope_of("asc", "0.1.0");
    let t0 = Instant::now();
    let (mut encoded, mut spans, mut requests) = (0, Vec::new(), 0);
    while let Ok(f) = rx.try_recv() {
        f.into_spans(&mut spans);
        requests += 1;
        if requests % BATCH == 0 {
            let batch = std::mem::take(&mut spans);
            encoded += export_request(resource.clone(), scope.clone(), batch)
                .encode_to_vec()
                .len();
        }
    }
    encoded += export_request(resource, scope, spans).encode_to_vec().len();
    let task = t0.elapsed() / N;
    assert_eq!(requests, N as usize);
    eprintln!(
        "traces: per request with 2 attempts: {off:?} without an endpoint, {on:?} with one \
         (its spans' fields copied and queued); the export task: {task:?} to build and \
         encode them ({} bytes of spans per request)",
        encoded / N as usize
    );
}
