//! Streaming semantics: fallback only before the first byte, explicit errors for
//! truncated or stalled streams, and a client disconnect cancelling the upstream.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::fault::{self, Fault};
use crate::support::{self, KEY, TestGateway};

#[tokio::test]
async fn a_stream_falls_back_before_its_first_byte() {
    let failing = fault::start(Fault::Status(503)).await;
    let reset = fault::start(Fault::Reset).await;
    let providers = format!(
        "  - {{name: failing, kind: openai, api_key: k, region: us, base_url: \"{}\"}}\n  - {{name: reset, kind: openai, api_key: k, region: us, base_url: \"{}\"}}",
        failing.base_url, reset.base_url
    );
    let models = r#"  - name: fb
    retries: 0
    targets: [{provider: failing, model: x}, {provider: reset, model: y, weight: 0.001}]
    fallbacks: [{provider: mock-anthropic, model: claude-3-5-haiku-latest}]"#;
    let gw = TestGateway::start(&support::config(&providers, models, "")).await;
    for surface in ["/v1/chat/completions", "/v1/messages"] {
        let body = json!({"model": "fb", "stream": true, "max_tokens": 50,
            "messages": [{"role": "user", "content": "fall back"}]});
        let resp = gw.post(surface, &body).await;
        assert_eq!(resp.status(), 200, "{surface}");
        assert_eq!(resp.headers()["x-asc-provider"], "mock-anthropic");
        assert_eq!(resp.headers()["x-asc-attempts"], "3");
        let bytes = resp.bytes().await.unwrap();
        let r = if surface == "/v1/messages" {
            support::anthropic_stream(&bytes)
        } else {
            support::openai_stream(&bytes)
        };
        assert_eq!(r.text, "echo: fall back", "{surface}");
        assert!(r.terminated);
    }
}

#[tokio::test]
async fn a_stream_cut_or_stalled_after_its_first_byte_ends_with_an_error_event() {
    let cut = fault::start(Fault::CloseMidStream).await;
    let stall = fault::start(Fault::StallMidStream).await;
    let providers = format!(
        "  - {{name: cut, kind: openai, api_key: k, region: us, base_url: \"{}\"}}\n  - {{name: stall, kind: openai, api_key: k, region: us, base_url: \"{}\"}}",
        cut.base_url, stall.base_url
    );
    let models = r#"  - name: cut
    retries: 0
    targets: [{provider: cut, model: x}]
    fallbacks: [{provider: mock-openai, model: gpt-4o-mini}]
  - name: stall
    retries: 0
    timeout_ms: 400
    targets: [{provider: stall, model: x}]
    fallbacks: [{provider: mock-openai, model: gpt-4o-mini}]"#;
    let gw = TestGateway::start(&support::config(&providers, models, "")).await;
    for model in ["cut", "stall"] {
        let body = json!({"model": model, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]});
        let resp = gw.post("/v1/chat/completions", &body).await;
        assert_eq!(resp.status(), 200, "{model}: the stream had started");
        let bytes = resp.bytes().await.unwrap();
        let r = support::openai_stream(&bytes);
        assert_eq!(
            r.text, "partial",
            "{model}: no fallback after the first byte"
        );
        assert!(
            !r.terminated,
            "{model}: a broken stream must not end with [DONE]"
        );
        let err = r.error.expect("an error event");
        let code = if model == "cut" {
            "upstream_error"
        } else {
            "upstream_timeout"
        };
        assert_eq!(err["code"], code, "{model}");

        let body = json!({"model": model, "stream": true, "max_tokens": 9,
            "messages": [{"role": "user", "content": "hi"}]});
        let resp = gw.post("/v1/messages", &body).await;
        let r = support::anthropic_stream(&resp.bytes().await.unwrap());
        assert_eq!(r.text, "partial");
        assert!(
            !r.terminated,
            "{model}: no message_stop after a broken stream"
        );
        assert!(r.error.is_some(), "{model}: an Anthropic error event");
    }
    assert_eq!(
        gw.mock("mock-openai").requests,
        0,
        "never fell back mid-stream"
    );
}

#[tokio::test]
async fn a_client_disconnect_cancels_the_upstream_within_a_second() {
    let providers =
        "  - {name: slow, kind: mock, flavor: openai, region: us, chunks: 50, latency_ms: 20000}";
    let models = "  - name: slow\n    targets: [{provider: slow, model: gpt-4o-mini}]";
    let gw = TestGateway::start(&support::config(providers, models, "")).await;
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let before = gw.mock("slow").aborted;
        let body = json!({"model": "slow", "stream": true, "max_tokens": 500,
            "messages": [{"role": "user", "content": "a long answer please, with many words in it"}]});
        let resp = gw.post(path, &body).await;
        assert_eq!(resp.status(), 200);
        let mut stream = resp.bytes_stream();
        let first = stream.next().await.unwrap().unwrap();
        assert!(!first.is_empty());
        drop(stream);
        let t0 = Instant::now();
        while gw.mock("slow").aborted == before {
            assert!(
                t0.elapsed() < Duration::from_secs(1),
                "{path}: upstream not cancelled within a second"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An Anthropic stream counts its output only at its end (`message_start` says one
/// token): a client that hangs up midway is charged at least the text it was sent, not
/// the start's one token.
#[tokio::test]
async fn a_stream_cut_short_is_charged_for_the_text_it_sent() {
    let providers = "  - {name: slow, kind: mock, flavor: anthropic, region: us, chunks: 40, latency_ms: 20000}";
    let models = "  - name: slow\n    targets: [{provider: slow, model: claude-3-5-haiku-latest}]";
    let gw = TestGateway::start(&support::config(providers, models, "")).await;
    let text = "a long answer please, with many words in it ".repeat(4);
    let body = json!({"model": "slow", "stream": true, "max_tokens": 500,
        "messages": [{"role": "user", "content": text}]});
    let resp = gw.post("/v1/messages", &body).await;
    assert_eq!(resp.status(), 200);
    let id = support::request_id(&resp);
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    // Until some text has arrived (the mock spreads 40 pieces over 20 s).
    while String::from_utf8_lossy(&got).matches("text_delta").count() < 3 {
        got.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    drop(stream);
    let sent: usize = support::sse_events(&got)
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| v["delta"]["text"].as_str().map(str::len))
        .sum();
    let record = loop {
        if let Some((_, r)) = gw.state.store.record(&id).await.unwrap()
            && r["status"] == "client_closed"
        {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let charged = record["completion_tokens"].as_u64().unwrap();
    assert!(
        charged >= sent.div_ceil(4) as u64 && charged > 1,
        "{sent} chars: {record}"
    );
    assert_eq!(record["usage_estimated"], true, "{record}");
}

#[tokio::test]
async fn a_stream_survives_many_small_chunks_with_multibyte_text() {
    let providers = "  - {name: chunky, kind: mock, flavor: anthropic, region: us, chunks: 40}";
    let models =
        "  - name: chunky\n    targets: [{provider: chunky, model: claude-3-5-haiku-latest}]";
    let gw = TestGateway::start(&support::config(providers, models, "")).await;
    let text = "héllo wörld 🌍 ünïcödé ✓ ".repeat(5);
    let body = json!({"model": "chunky", "stream": true,
        "messages": [{"role": "user", "content": text}]});
    let resp = gw.post("/v1/chat/completions", &body).await;
    let r = support::openai_stream(&resp.bytes().await.unwrap());
    assert_eq!(r.text, format!("echo: {text}"));
    assert!(!r.text.contains('\u{FFFD}'));
    let _ = KEY;
}

/// The `data:` payloads of an SSE body, as JSON where they are JSON.
fn chunks(body: &[u8]) -> Vec<serde_json::Value> {
    support::sse_events(body)
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap_or(serde_json::Value::String(e.data.clone())))
        .collect()
}

/// Of an OpenAI stream's JSON chunks: how many carry the mock upstream's
/// `system_fingerprint` (which only a relayed stream keeps), and how many there are.
fn fingerprinted(body: &[u8]) -> (usize, usize) {
    let json: Vec<_> = chunks(body).into_iter().filter(|c| c.is_object()).collect();
    let with = json
        .iter()
        .filter(|c| c["system_fingerprint"] == "fp_asc_mock")
        .count();
    (with, json.len())
}

#[tokio::test]
async fn an_openai_text_stream_is_relayed_as_the_upstream_wrote_it_and_still_metered() {
    let redacting = format!(
        "  - name: r\n    allowed_models: [\"*\"]\n    guardrails: {{pii: redact}}\n    keys: [{{name: r, key: \"{KEY}-r\"}}]"
    );
    let gw = TestGateway::start(&support::config("", "", &redacting)).await;
    let stream = |model: &str, usage: bool| {
        let mut b = json!({"model": model, "stream": true,
                           "messages": [{"role": "user", "content": "hi"}]});
        if usage {
            b["stream_options"] = json!({"include_usage": true});
        }
        b
    };

    // OpenAI client, OpenAI upstream: the upstream's own chunks (its fingerprint), and
    // without include_usage no usage-only chunk.
    let r = gw
        .post("/v1/chat/completions", &stream("m-openai", false))
        .await;
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert_eq!(support::openai_stream(&body).text, "echo: hi");
    let all = chunks(&body);
    assert_eq!(all.last().unwrap(), "[DONE]");
    let (with, total) = fingerprinted(&body);
    assert!(total > 0 && with == total, "{all:?}");
    let json: Vec<_> = all.iter().filter(|c| c.is_object()).collect();
    assert!(
        json.iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "a usage-only chunk reached a client that did not ask for usage: {all:?}"
    );

    // With include_usage, the upstream's usage chunk is relayed.
    let r = gw
        .post("/v1/chat/completions", &stream("m-openai", true))
        .await;
    let got = support::openai_stream(&r.bytes().await.unwrap());
    assert!(got.prompt_tokens > 0 && got.completion_tokens > 0);

    // The gateway still read the usage of the relayed streams.
    let metrics = support::metrics_text(&gw).await;
    let completion = support::metric_sum(
        &metrics,
        "asc_tokens_total",
        &[
            ("tenant", "t"),
            ("model", "m-openai"),
            ("kind", "completion"),
        ],
    );
    assert_eq!(completion, 2.0 * got.completion_tokens as f64, "{metrics}");

    // Another format, or a tenant whose replies are redacted: re-encoded by the gateway
    // (no upstream fingerprint).
    let r = gw
        .post("/v1/chat/completions", &stream("m-anthropic", false))
        .await;
    let body = r.bytes().await.unwrap();
    assert_eq!(support::openai_stream(&body).text, "echo: hi");
    assert_eq!(fingerprinted(&body).0, 0);
    let r = gw
        .post_raw(
            "/v1/chat/completions",
            serde_json::to_vec(&stream("m-openai", false)).unwrap(),
            &format!("{KEY}-r"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert_eq!(support::openai_stream(&body).text, "echo: hi");
    assert_eq!(fingerprinted(&body).0, 0);

    // With tools offered, the gateway re-encodes (it renumbers parallel calls and names
    // id-less ones): the tool call arrives whole, without the upstream's fingerprint.
    let mut with_tools = stream("m-openai", false);
    with_tools["tools"] = json!([{"type": "function", "function": {"name": "lookup",
        "parameters": {"type": "object", "properties": {"input": {"type": "string"}}}}}]);
    let r = gw.post("/v1/chat/completions", &with_tools).await;
    let body = r.bytes().await.unwrap();
    let got = support::openai_stream(&body);
    assert_eq!(
        got.tool_calls,
        vec![("lookup".to_owned(), r#"{"input":"hi"}"#.to_owned())]
    );
    assert_eq!(fingerprinted(&body).0, 0);

    // Anthropic client, Anthropic upstream: re-encoded (blocks such as thinking are
    // left out), and a well-formed stream.
    let r = gw
        .post(
            "/v1/messages",
            &json!({"model": "m-anthropic", "max_tokens": 50, "stream": true,
                    "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let got = support::anthropic_stream(&r.bytes().await.unwrap());
    assert_eq!(got.text, "echo: hi");
    assert!(got.completion_tokens > 0);
}

/// Anthropic to Anthropic, relayed: an upstream `error` event mid-stream reaches the
/// client as Anthropic sent it and nothing after it does; a stream cut before its end
/// gets the gateway's error event, never `message_stop`; both records say error, with
/// the text relayed charged; neither falls back after the first byte.
#[tokio::test]
async fn a_relayed_anthropic_stream_that_fails_midway_ends_with_an_error_event() {
    let failing = fault::start(Fault::AnthropicErrorMidStream).await;
    let cut = fault::start(Fault::AnthropicCloseMidStream).await;
    let providers = format!(
        "  - {{name: failing, kind: anthropic, api_key: k, region: us, base_url: \"{}\"}}\n  - {{name: cut, kind: anthropic, api_key: k, region: us, base_url: \"{}\"}}",
        failing.base_url.trim_end_matches("/v1"),
        cut.base_url.trim_end_matches("/v1")
    );
    let models = r#"  - name: failing
    retries: 0
    targets: [{provider: failing, model: claude-3-5-haiku-latest}]
    fallbacks: [{provider: mock-anthropic, model: claude-3-5-haiku-latest}]
  - name: cut
    retries: 0
    targets: [{provider: cut, model: claude-3-5-haiku-latest}]
    fallbacks: [{provider: mock-anthropic, model: claude-3-5-haiku-latest}]"#;
    let gw = TestGateway::start(&support::config(&providers, models, "")).await;
    for model in ["failing", "cut"] {
        let body = json!({"model": model, "stream": true, "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}]});
        let resp = gw.post("/v1/messages", &body).await;
        assert_eq!(resp.status(), 200, "{model}");
        let id = support::request_id(&resp);
        let bytes = resp.bytes().await.unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let got = support::anthropic_stream(&bytes);
        assert_eq!(got.text, "partial", "{model}: {text}");
        assert!(!got.terminated, "{model}: no message_stop: {text}");
        let err = got.error.expect("an error event");
        assert!(!text.contains("after the error"), "{model}: {text}");
        if model == "failing" {
            // The upstream's own error event, relayed.
            assert_eq!(err["type"], "overloaded_error", "{text}");
        }
        let record = loop {
            if let Some((_, r)) = gw.state.store.record(&id).await.unwrap() {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert_eq!(record["status"], "error", "{model}: {record}");
        assert!(
            record["completion_tokens"].as_u64().unwrap() >= 2,
            "{record}"
        );
    }
    assert_eq!(
        gw.mock("mock-anthropic").requests,
        0,
        "never fell back mid-stream"
    );
}

/// Anthropic's keep-alive `ping`s reach the client as they come, not held until the
/// next text: a proxy between client and gateway that cuts idle connections sees the
/// bytes Anthropic sent while the model was quiet.
#[tokio::test]
async fn a_relayed_anthropic_ping_is_not_held_back_for_the_next_text() {
    let pinging = fault::start(Fault::AnthropicPingThenPause).await;
    let providers = format!(
        "  - {{name: pinging, kind: anthropic, api_key: k, region: us, base_url: \"{}\"}}",
        pinging.base_url.trim_end_matches("/v1")
    );
    let models = "  - name: p\n    retries: 0\n    targets: [{provider: pinging, model: claude-3-5-haiku-latest}]";
    let gw = TestGateway::start(&support::config(&providers, models, "")).await;
    let body = json!({"model": "p", "stream": true, "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}]});
    let resp = gw.post("/v1/messages", &body).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut chunks: Vec<(Instant, Vec<u8>)> = Vec::new();
    while let Some(c) = stream.next().await {
        chunks.push((Instant::now(), c.unwrap().to_vec()));
    }
    let when = |needle: &str| {
        chunks
            .iter()
            .find(|(_, c)| String::from_utf8_lossy(c).contains(needle))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("no {needle:?} in the stream"))
    };
    let (ping, more) = (when("\"ping\""), when(" more"));
    assert!(
        more.duration_since(ping) >= Duration::from_millis(300),
        "the ping was held back for the text: {:?} apart",
        more.duration_since(ping)
    );
    let all: Vec<u8> = chunks.into_iter().flat_map(|(_, c)| c).collect();
    let got = support::anthropic_stream(&all);
    assert_eq!(got.text, "partial more");
    assert!(got.terminated);
}

#[tokio::test]
async fn nothing_after_an_upstream_error_reaches_the_client_relayed_or_re_encoded() {
    let quirky = fault::start(Fault::ErrorMidStream).await;
    let providers = support::fault_provider("quirky", &quirky.base_url);
    let models = "  - name: q\n    retries: 0\n    targets: [{provider: quirky, model: m}]";
    let gw = TestGateway::start(&support::config(&providers, models, "")).await;
    let ask = |tools: bool| {
        let mut b = json!({"model": "q", "stream": true,
                           "messages": [{"role": "user", "content": "hi"}]});
        if tools {
            b["tools"] = json!([{"type": "function", "function": {"name": "f",
                "parameters": {"type": "object"}}}]);
        }
        b
    };
    // Without tools the stream is relayed; with them, re-encoded.
    for tools in [false, true] {
        let r = gw.post("/v1/chat/completions", &ask(tools)).await;
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.unwrap();
        let got = support::openai_stream(&body);
        assert_eq!(got.text, "partial", "tools: {tools}");
        assert!(got.error.is_some(), "tools: {tools}");
        assert!(!got.terminated, "no [DONE] after an error (tools: {tools})");
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("after the error"), "tools: {tools}: {text}");
        assert!(
            !text.contains("prompt_filter_results"),
            "tools: {tools}: {text}"
        );
    }
}

/// One streamed request on a raw connection: the HTTP chunks of the reply as they
/// arrived (each is one write of the gateway's: hyper frames every body frame as a chunk).
async fn raw_stream_chunks(gw: &TestGateway, model: &str) -> Vec<(Instant, Vec<u8>)> {
    raw_stream_chunks_of(gw, model, "one two three four five six").await
}

async fn raw_stream_chunks_of(
    gw: &TestGateway,
    model: &str,
    prompt: &str,
) -> Vec<(Instant, Vec<u8>)> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let addr = gw.url.trim_start_matches("http://");
    let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut sock = BufReader::new(sock);
    let body = json!({"model": model, "stream": true,
                      "messages": [{"role": "user", "content": prompt}]})
    .to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.get_mut().write_all(req.as_bytes()).await.unwrap();
    let mut line = String::new();
    loop {
        line.clear();
        sock.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        assert!(!line.is_empty(), "connection closed in the headers");
        let l = line.to_ascii_lowercase();
        if l.starts_with("http/1.1") {
            assert!(l.contains(" 200 "), "{line}");
        }
    }
    let mut out = Vec::new();
    loop {
        line.clear();
        sock.read_line(&mut line).await.unwrap();
        let size = usize::from_str_radix(line.trim(), 16).unwrap_or_else(|_| panic!("{line:?}"));
        let mut data = vec![0; size + 2];
        sock.read_exact(&mut data).await.unwrap();
        if size == 0 {
            return out;
        }
        data.truncate(size);
        out.push((Instant::now(), data));
    }
}

#[tokio::test]
async fn an_upstream_burst_leaves_in_few_writes_and_spaced_events_are_not_held_back() {
    let providers = "  - {name: burst, kind: mock, flavor: openai, region: us, chunks: 16}\n  - {name: spaced, kind: mock, flavor: openai, region: us, chunks: 6, latency_ms: 1500}";
    let models = "  - name: burst\n    targets: [{provider: burst, model: gpt-4o-mini}]\n  - name: spaced\n    targets: [{provider: spaced, model: gpt-4o-mini}]";
    let gw = TestGateway::start(&support::config(providers, models, "")).await;

    // Everything at once: after the first event (sent alone, for the time to first
    // token), what has already arrived leaves together, not in one write per event.
    let got = raw_stream_chunks(&gw, "burst").await;
    let all: Vec<u8> = got.iter().flat_map(|(_, d)| d.clone()).collect();
    let events = support::sse_events(&all).len();
    assert!(events >= 18, "{events} events");
    assert_eq!(
        support::openai_stream(&all).text,
        "echo: one two three four five six"
    );
    assert!(
        got.len() * 3 <= events,
        "{} writes for {events} events of a burst",
        got.len()
    );
    assert_eq!(
        support::sse_events(&got[0].1).len(),
        1,
        "the first event did not go out alone"
    );

    // Events ~190 ms apart (wide, so that a loaded machine's pauses do not merge two):
    // each one leaves as it comes, none held back for the next.
    let got = raw_stream_chunks(&gw, "spaced").await;
    let all: Vec<u8> = got.iter().flat_map(|(_, d)| d.clone()).collect();
    let events = support::sse_events(&all).len();
    assert_eq!(
        support::openai_stream(&all).text,
        "echo: one two three four five six"
    );
    assert_eq!(
        got.len(),
        events,
        "spaced events were held back and sent together"
    );
    let first = got.first().unwrap().0;
    let last = got.last().unwrap().0;
    assert!(
        last.duration_since(first) >= Duration::from_millis(1000),
        "{:?}",
        last.duration_since(first)
    );
}

#[tokio::test]
async fn a_large_burst_is_split_into_bounded_writes() {
    let providers = "  - {name: big, kind: mock, flavor: openai, region: us, chunks: 16}";
    let models = "  - name: big\n    targets: [{provider: big, model: gpt-4o-mini}]";
    let yaml = support::config(providers, models, "")
        .replace("max_body_bytes: 65536", "max_body_bytes: 1048576");
    let gw = TestGateway::start(&yaml).await;
    // A 200 KB echo in 16 chunks of ~12.5 KB, all sent at once.
    let text = "0123456789abcdef ".repeat(12_000);
    let got = raw_stream_chunks_of(&gw, "big", &text).await;
    let all: Vec<u8> = got.iter().flat_map(|(_, d)| d.clone()).collect();
    assert_eq!(support::openai_stream(&all).text, format!("echo: {text}"));
    let largest = got.iter().map(|(_, d)| d.len()).max().unwrap();
    // At most 64 KiB of chunks that had already arrived, plus the event waited for
    // and the chunk that crossed the bound (~13 KB each here); all at once would be
    // one write of ~200 KB.
    assert!(
        largest <= 64 * 1024 + 2 * 16 * 1024,
        "a write of {largest} bytes ({} writes for {} bytes)",
        got.len(),
        all.len()
    );
}

#[tokio::test]
async fn events_read_in_a_burst_before_a_malformed_chunk_still_reach_the_client() {
    let bad = fault::start(Fault::MalformedInBurst).await;
    let providers = support::fault_provider("bad", &bad.base_url);
    let models = "  - name: b\n    retries: 0\n    targets: [{provider: bad, model: m}]";
    let ops = "ops-token-0123456789abcdef";
    let yaml = format!(
        "admin:\n  tokens:\n    - {{name: ops, token: \"{ops}\", role: platform_admin}}\n{}",
        support::config(&providers, models, "")
    );
    let gw = TestGateway::start(&yaml).await;
    let r = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "b", "stream": true,
                    "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let id = support::request_id(&r);
    let body = r.bytes().await.unwrap();
    let got = support::openai_stream(&body);
    // Everything before the bad chunk, then an error in place of the end.
    assert_eq!(got.text, "abcde", "{}", String::from_utf8_lossy(&body));
    assert_eq!(got.error.as_ref().unwrap()["code"], "upstream_error");
    assert!(!got.terminated);
    // And the record (committed before the stream's last bytes) says so.
    let (st, rec) = gw
        .admin(
            reqwest::Method::GET,
            &format!("/admin/v1/records/{id}"),
            ops,
            None,
        )
        .await;
    assert_eq!(st, 200, "{rec}");
    assert_eq!(rec["status"], "error", "{rec}");
    assert_eq!(rec["error_code"], "upstream_error", "{rec}");
}
