#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use super::*;
use crate::record::Attempt;

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

/// One protobuf field as read back.
#[derive(Debug, Clone, PartialEq)]
enum F {
    Varint(u64),
    Fixed64(u64),
    Bytes(Vec<u8>),
}

/// A protobuf message's fields, in order (a minimal reader for checking what is written).
fn fields(mut b: &[u8]) -> Vec<(u32, F)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (byte, rest) = b.split_first().unwrap();
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
        }
        panic!("varint too long");
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let field = u32::try_from(key >> 3).unwrap();
        let value = match key & 7 {
            0 => F::Varint(varint(&mut b)),
            1 => {
                let (v, rest) = b.split_at(8);
                b = rest;
                F::Fixed64(u64::from_le_bytes(v.try_into().unwrap()))
            }
            2 => {
                let n = usize::try_from(varint(&mut b)).unwrap();
                let (v, rest) = b.split_at(n);
                b = rest;
                F::Bytes(v.to_vec())
            }
            w => panic!("unexpected wire type {w}"),
        };
        out.push((field, value));
    }
    out
}

fn bytes_of(fs: &[(u32, F)], field: u32) -> Vec<Vec<u8>> {
    fs.iter()
        .filter(|(f, _)| *f == field)
        .map(|(_, v)| match v {
            F::Bytes(b) => b.clone(),
            other => panic!("field {field}: {other:?}"),
        })
        .collect()
}

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

fn encoded() -> Vec<u8> {
    let (t, r) = sample();
    let mut spans = Vec::new();
    encode_spans(&t, &r, &mut spans);
    let (resource, scope) = resource_and_scope_of("asc-test", "0.1.0");
    export_request(&resource, &scope, &spans)
}

/// The bytes the official serializer (`opentelemetry-proto` 1.45 for Python, protobuf
/// 7.36) writes for the same `ExportTraceServiceRequest` as [`sample`] (fields in
/// number order, as official serializers write them), made by `golden.py` beside this
/// file: so the field numbers and wire types here are checked against the real schema.
const GOLDEN: &str = include_str!("golden.hex");

#[test]
fn spans_encode_as_the_official_serializer_does() {
    let golden = GOLDEN.trim();
    assert_eq!(hex(&encoded()), golden);
}

#[test]
fn spans_have_the_request_and_its_attempts() {
    let body = encoded();
    let req = fields(&body);
    let rs = bytes_of(&req, 1);
    assert_eq!(rs.len(), 1);
    let rs = fields(&rs[0]);
    let ss = fields(&bytes_of(&rs, 2)[0]);
    let spans: Vec<_> = bytes_of(&ss, 2).iter().map(|s| fields(s)).collect();
    assert_eq!(spans.len(), 3);
    let id = |s: &[(u32, F)], f: u32| bytes_of(s, f).first().map(|b| hex(b));
    let (req_span, a1, a2) = (&spans[0], &spans[1], &spans[2]);
    for s in &spans {
        assert_eq!(id(s, 1).as_deref(), Some(TRACE));
    }
    assert_eq!(id(req_span, 4).as_deref(), Some(PARENT));
    assert_eq!(id(a1, 4), id(req_span, 2));
    assert_eq!(id(a2, 4), id(req_span, 2));
    assert_eq!(bytes_of(req_span, 5), [b"chat".to_vec()]);
    assert_eq!(bytes_of(a1, 5), [b"chat gpt-4o-mini".to_vec()]);
    let fixed = |s: &[(u32, F)], f: u32| {
        s.iter()
            .find_map(|(n, v)| match v {
                F::Fixed64(x) if *n == f => Some(*x),
                _ => None,
            })
            .unwrap()
    };
    let t0 = 1_700_000_000_000_000_000;
    assert_eq!(fixed(req_span, 7), t0);
    assert_eq!(fixed(req_span, 8), t0 + 50_000_000);
    assert_eq!(fixed(a2, 7), t0 + 20_000_000);
    assert_eq!(fixed(a2, 8), t0 + 20_000_000 + 30_250_000);
    // Only the failed attempt has an error status.
    assert_eq!(bytes_of(a1, 15).len(), 1);
    assert!(bytes_of(a2, 15).is_empty());
    assert!(bytes_of(req_span, 15).is_empty());
    // Attribute keys, in order: no prompt, no key, nothing the record does not have.
    let keys = |s: &[(u32, F)]| -> Vec<String> {
        bytes_of(s, 9)
            .iter()
            .map(|kv| String::from_utf8(bytes_of(&fields(kv), 1)[0].clone()).unwrap())
            .collect()
    };
    assert_eq!(
        keys(req_span),
        [
            "asc.request_id",
            "asc.tenant",
            "asc.surface",
            "asc.model",
            "asc.stream",
            "asc.status",
            "http.response.status_code",
            "asc.cache",
            "asc.target",
            "asc.attempts",
            "asc.experiment",
            "asc.arm",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "asc.cost_usd",
            "asc.ttft_ms",
        ]
    );
    assert_eq!(
        keys(a1),
        [
            "asc.provider",
            "asc.model",
            "asc.region",
            "asc.attempt",
            "http.response.status_code",
            "error.type",
            "asc.latency_ms",
        ]
    );
}

#[test]
fn a_long_span_keeps_its_length_prefix_right() {
    // Lengths over 127 take two varint bytes, over 16383 three.
    for n in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
        let mut buf = Vec::new();
        pb::message(&mut buf, 2, |b| b.extend(std::iter::repeat_n(7u8, n)));
        assert_eq!(fields(&buf), [(2, F::Bytes(vec![7; n]))]);
    }
    let mut buf = Vec::new();
    pb::uint(&mut buf, 3, (-5i64) as u64);
    assert_eq!(fields(&buf), [(3, F::Varint((-5i64) as u64))]);
    for v in [
        0u64,
        1,
        127,
        128,
        16_383,
        16_384,
        u64::from(u32::MAX),
        u64::MAX,
    ] {
        let mut b = Vec::new();
        pb::varint(&mut b, v);
        assert_eq!(pb::varint_len(v), b.len(), "{v}");
    }
    // Every kind of attribute value, read back.
    for (v, want) in [
        (Val::Str("x"), F::Bytes(b"x".to_vec())),
        (Val::Bool(false), F::Varint(0)),
        (Val::Int(-1), F::Varint(u64::MAX)),
        (Val::F64(0.5), F::Fixed64(0.5f64.to_bits())),
    ] {
        let mut b = Vec::new();
        attr(&mut b, 9, &"k".repeat(200), v);
        let kv = fields(&bytes_of(&fields(&b), 9)[0]);
        assert_eq!(kv[0], (1, F::Bytes(vec![b'k'; 200])));
        let any = fields(&bytes_of(&kv, 2)[0]);
        assert_eq!(any.len(), 1);
        assert_eq!(any[0].1, want);
    }
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
    assert_eq!(got.count, 3);
    assert!(rx.try_recv().is_err(), "finish sends once");
    // A full queue drops and counts, never waits.
    let mut a = RequestTrace::start(&h, Some(&exporter));
    let mut b = RequestTrace::start(&h, Some(&exporter));
    a.finish(&r);
    b.finish(&r);
    assert_eq!(exporter.dropped.load(Ordering::Relaxed), 3);
}

/// What tracing costs a request, with and without an endpoint (printed, not asserted:
/// run with `--nocapture`). Debug build: the release figures are several times lower.
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
    let mut queued = 0;
    while let Ok(s) = rx.try_recv() {
        queued += s.bytes.len();
    }
    eprintln!(
        "traces: per request with 2 attempts: {off:?} without an endpoint, {on:?} with one \
         (spans encoded and queued; {} bytes of spans per request)",
        queued / N as usize
    );
}
