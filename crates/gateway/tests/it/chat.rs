//! The provider conformance table: every inbound surface × provider flavor, streaming
//! and not, text and tools, through the real server to in-process mock providers.

use serde_json::{Value, json};

use crate::support::{self, Reassembled, TestGateway};

#[derive(Debug, Clone, Copy)]
enum Surface {
    Anthropic,
    OpenAi,
}

const FLAVORS: [&str; 3] = ["openai", "anthropic", "mistral"];

fn request(surface: Surface, model: &str, stream: bool, tools: bool) -> (String, Value) {
    let user = "What is the weather in Zürich? 🌦";
    match surface {
        Surface::OpenAi => {
            let mut body = json!({
                "model": model,
                "stream": stream,
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": user},
                ],
            });
            if stream {
                body["stream_options"] = json!({"include_usage": true});
            }
            if tools {
                body["tools"] = json!([{"type": "function", "function": {
                    "name": "get_weather", "description": "Weather by city",
                    "parameters": {"type": "object", "properties": {"input": {"type": "string"}}}}}]);
            }
            ("/v1/chat/completions".into(), body)
        }
        Surface::Anthropic => {
            let mut body = json!({
                "model": model,
                "max_tokens": 256,
                "stream": stream,
                "system": [{"type": "text", "text": "You are terse."}],
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
                    {"role": "user", "content": [{"type": "text", "text": user}]},
                ],
            });
            if tools {
                body["tools"] = json!([{"name": "get_weather", "description": "Weather by city",
                    "input_schema": {"type": "object", "properties": {"input": {"type": "string"}}}}]);
            }
            ("/v1/messages".into(), body)
        }
    }
}

async fn call(
    gw: &TestGateway,
    surface: Surface,
    flavor: &str,
    stream: bool,
    tools: bool,
) -> Reassembled {
    let (path, body) = request(surface, &format!("m-{flavor}"), stream, tools);
    let resp = gw.post(&path, &body).await;
    let ctx = format!("{surface:?} → {flavor}, stream={stream}, tools={tools}");
    assert_eq!(resp.status(), 200, "{ctx}");
    let headers = resp.headers().clone();
    assert_eq!(headers["x-asc-provider"], format!("mock-{flavor}"), "{ctx}");
    assert_eq!(headers["x-asc-attempts"], "1", "{ctx}");
    assert!(headers.contains_key("x-asc-request-id"), "{ctx}");
    let ct = headers["content-type"].to_str().unwrap().to_owned();
    let bytes = resp.bytes().await.unwrap();
    match (surface, stream) {
        (Surface::OpenAi, false) => {
            assert!(ct.starts_with("application/json"), "{ctx}");
            support::openai_json(&serde_json::from_slice(&bytes).unwrap())
        }
        (Surface::Anthropic, false) => {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["type"], "message", "{ctx}");
            assert_eq!(v["role"], "assistant", "{ctx}");
            support::anthropic_json(&v)
        }
        (Surface::OpenAi, true) => {
            assert!(ct.starts_with("text/event-stream"), "{ctx}");
            support::openai_stream(&bytes)
        }
        (Surface::Anthropic, true) => {
            assert!(ct.starts_with("text/event-stream"), "{ctx}");
            support::anthropic_stream(&bytes)
        }
    }
}

#[tokio::test]
async fn every_surface_reaches_every_provider_with_text() {
    let gw = TestGateway::start(&support::config("", "", "")).await;
    let mut json_usage = std::collections::HashMap::new();
    for surface in [Surface::OpenAi, Surface::Anthropic] {
        for flavor in FLAVORS {
            for stream in [false, true] {
                let r = call(&gw, surface, flavor, stream, false).await;
                let ctx = format!("{surface:?} → {flavor}, stream={stream}");
                assert_eq!(r.text, "echo: What is the weather in Zürich? 🌦", "{ctx}");
                assert!(r.tool_calls.is_empty(), "{ctx}");
                assert!(r.terminated, "{ctx}");
                assert_eq!(r.error, None, "{ctx}");
                let want_stop = match surface {
                    Surface::OpenAi => "stop",
                    Surface::Anthropic => "end_turn",
                };
                assert_eq!(r.stop, want_stop, "{ctx}");
                assert!(
                    r.prompt_tokens > 0 && r.completion_tokens > 0,
                    "{ctx}: {r:?}"
                );
                // The mock's usage is deterministic: streamed and JSON replies agree.
                let usage = (r.prompt_tokens, r.completion_tokens);
                let prev = json_usage
                    .entry((flavor, format!("{surface:?}")))
                    .or_insert(usage);
                assert_eq!(*prev, usage, "{ctx}: usage differs between JSON and stream");
            }
        }
    }
}

#[tokio::test]
async fn every_surface_reaches_every_provider_with_tool_calls() {
    let gw = TestGateway::start(&support::config("", "", "")).await;
    for surface in [Surface::OpenAi, Surface::Anthropic] {
        for flavor in FLAVORS {
            for stream in [false, true] {
                let r = call(&gw, surface, flavor, stream, true).await;
                let ctx = format!("{surface:?} → {flavor}, stream={stream}");
                assert_eq!(r.tool_calls.len(), 1, "{ctx}: {r:?}");
                assert_eq!(r.tool_calls[0].0, "get_weather", "{ctx}");
                let args: Value = serde_json::from_str(&r.tool_calls[0].1).unwrap();
                assert_eq!(
                    args,
                    json!({"input": "What is the weather in Zürich? 🌦"}),
                    "{ctx}"
                );
                let want_stop = match surface {
                    Surface::OpenAi => "tool_calls",
                    Surface::Anthropic => "tool_use",
                };
                assert_eq!(r.stop, want_stop, "{ctx}");
                assert!(r.terminated, "{ctx}");
            }
        }
    }
}

/// A whole tool round trip: the tool call's id goes back with the result, and the
/// provider answers from the result (the mock echoes it).
#[tokio::test]
async fn tool_results_go_back_to_every_provider() {
    let gw = TestGateway::start(&support::config("", "", "")).await;
    for flavor in FLAVORS {
        // OpenAI surface.
        let (path, mut body) = request(Surface::OpenAi, &format!("m-{flavor}"), false, true);
        let first = gw.post(&path, &body).await.json::<Value>().await.unwrap();
        let call = first["choices"][0]["message"]["tool_calls"][0].clone();
        let id = call["id"].as_str().unwrap().to_owned();
        let msgs = body["messages"].as_array_mut().unwrap();
        msgs.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
        msgs.push(json!({"role": "tool", "tool_call_id": id, "content": "sunny, 21°C"}));
        let second = gw.post(&path, &body).await;
        assert_eq!(second.status(), 200, "{flavor}");
        let r = support::openai_json(&second.json().await.unwrap());
        assert_eq!(r.text, "echo: sunny, 21°C", "openai surface → {flavor}");

        // Anthropic surface.
        let (path, mut body) = request(Surface::Anthropic, &format!("m-{flavor}"), false, true);
        let first = gw.post(&path, &body).await.json::<Value>().await.unwrap();
        let tool_use = first["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "tool_use")
            .unwrap()
            .clone();
        let id = tool_use["id"].as_str().unwrap().to_owned();
        let msgs = body["messages"].as_array_mut().unwrap();
        msgs.push(json!({"role": "assistant", "content": [tool_use]}));
        msgs.push(json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": id, "content": "sunny, 21°C"}]}));
        let second = gw.post(&path, &body).await;
        assert_eq!(second.status(), 200, "{flavor}");
        let r = support::anthropic_json(&second.json().await.unwrap());
        assert_eq!(r.text, "echo: sunny, 21°C", "anthropic surface → {flavor}");
    }
}

#[tokio::test]
async fn upstreams_receive_their_own_wire_format_and_auth() {
    let gw = TestGateway::start(&support::config("", "", "")).await;
    let (path, body) = request(Surface::OpenAi, "m-anthropic", false, true);
    assert_eq!(gw.post(&path, &body).await.status(), 200);
    let stats = gw.mock("mock-anthropic");
    let sent = stats.last_body.unwrap();
    assert_eq!(sent["model"], "claude-3-5-haiku-latest");
    assert_eq!(sent["system"], "You are terse.");
    assert!(
        sent["max_tokens"].as_u64().is_some(),
        "Anthropic needs max_tokens"
    );
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert!(sent["tools"][0]["input_schema"].is_object());
    assert!(
        stats
            .last_headers
            .iter()
            .any(|(k, v)| k == "anthropic-version" && v == "2023-06-01")
    );

    let (path, body) = request(Surface::Anthropic, "m-openai", true, false);
    assert_eq!(gw.post(&path, &body).await.status(), 200);
    let sent = gw.mock("mock-openai").last_body.unwrap();
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "You are terse."})
    );
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));

    let (path, mut body) = request(Surface::OpenAi, "m-mistral", false, false);
    body["seed"] = json!(7);
    assert_eq!(gw.post(&path, &body).await.status(), 200);
    let sent = gw.mock("mock-mistral").last_body.unwrap();
    assert_eq!(sent["random_seed"], 7);
    assert!(sent.get("seed").is_none());
}

/// Anthropic users through an Anthropic upstream: the `system` array, `cache_control` on
/// system blocks, content blocks and tools, and the thinking blocks a tool-use turn sends
/// back reach the upstream unchanged; the prompt-cache usage comes back as the upstream
/// sent it, in JSON and streamed replies. An OpenAI upstream gets none of it.
#[tokio::test]
async fn anthropic_caching_and_thinking_reach_an_anthropic_upstream_unchanged() {
    let gw = TestGateway::start(&support::config("", "", "")).await;
    let system = json!([
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Here is the whole manual.",
         "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ]);
    let tools = json!([
        {"name": "get_weather", "description": "Weather by city",
         "input_schema": {"type": "object", "properties": {"input": {"type": "string"}}},
         "cache_control": {"type": "ephemeral"}},
    ]);
    let messages = json!([
        {"role": "user", "content": [
            {"type": "text", "text": "Weather in Zürich?", "cache_control": {"type": "ephemeral"}},
        ]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should call get_weather.",
             "signature": "EqQBCgIYAhIMb2pxY3Vz"},
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
            {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
             "input": {"input": "Zürich"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18°C, sunny",
             "cache_control": {"type": "ephemeral", "ttl": "5m"}},
        ]},
    ]);
    let thinking = json!({"type": "enabled", "budget_tokens": 1024});
    let mut body = json!({
        "model": "m-anthropic", "max_tokens": 2048, "thinking": thinking,
        "system": system, "tools": tools, "messages": messages,
    });

    let resp = gw.post("/v1/messages", &body).await;
    assert_eq!(resp.status(), 200);
    let id = support::request_id(&resp);
    let reply: Value = resp.json().await.unwrap();
    let sent = gw.mock("mock-anthropic").last_body.unwrap();
    assert_eq!(sent["system"], system);
    assert_eq!(sent["tools"], tools);
    assert_eq!(sent["messages"], messages);
    assert_eq!(sent["thinking"], thinking);
    let usage = &reply["usage"];
    assert!(
        usage["cache_creation_input_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );
    assert!(
        usage["cache_read_input_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );
    // The record keeps the cache counts and prices them as Anthropic bills them: reads
    // at a tenth of the input price, writes (this request asks for the one-hour cache)
    // at twice.
    let record = loop {
        if let Some((_, r)) = gw.state.store.record(&id).await.unwrap() {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let (written, read) = (
        usage["cache_creation_input_tokens"].as_u64().unwrap(),
        usage["cache_read_input_tokens"].as_u64().unwrap(),
    );
    assert_eq!(record["cache_creation_tokens"], written, "{record}");
    assert_eq!(record["cache_read_tokens"], read, "{record}");
    let prompt = record["prompt_tokens"].as_u64().unwrap();
    let output = record["completion_tokens"].as_u64().unwrap();
    assert_eq!(
        prompt,
        usage["input_tokens"].as_u64().unwrap() + written + read,
        "{record}"
    );
    let live = gw.state.live.load_full();
    let target = &live.config.model("m-anthropic").unwrap().targets[0];
    let price = asc_gateway::policy::price_of(&live, target).unwrap();
    let cached = asc_gateway::prices::Cached {
        written,
        read,
        hour: true,
    };
    let expected = price.cost_micros_cached(prompt, output, cached);
    assert_ne!(expected, price.cost_micros(prompt, output));
    let cost = (record["cost_usd"].as_f64().unwrap() * 1e6).round() as u64;
    assert_eq!(cost, expected, "{record}");
    // The record with its cache counts is hashed as stored: the trail verifies.
    let report = asc_gateway::audit::verify_store(&gw.state.store)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");

    body["stream"] = json!(true);
    let resp = gw.post("/v1/messages", &body).await;
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    let sent = gw.mock("mock-anthropic").last_body.unwrap();
    assert_eq!(sent["system"], system);
    assert_eq!(sent["tools"], tools);
    assert_eq!(sent["messages"], messages);
    let events: Vec<Value> = support::sse_events(&bytes)
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let start = events
        .iter()
        .find(|e| e["type"] == "message_start")
        .unwrap();
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    for field in [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ] {
        assert_eq!(start["message"]["usage"][field], usage[field], "{field}");
        assert_eq!(delta["usage"][field], usage[field], "{field}");
    }
    assert_eq!(delta["usage"]["output_tokens"], usage["output_tokens"]);

    // An OpenAI upstream: one joined system message, no cache_control, no thinking.
    body["model"] = json!("m-openai");
    body["stream"] = json!(false);
    let resp = gw.post("/v1/messages", &body).await;
    assert_eq!(resp.status(), 200);
    let sent = gw.mock("mock-openai").last_body.unwrap();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "You are terse.\n\nHere is the whole manual."})
    );
    let text = sent.to_string();
    assert!(
        !text.contains("cache_control") && !text.contains("thinking"),
        "{text}"
    );
}

async fn stored_record(gw: &TestGateway, id: &str) -> Value {
    for _ in 0..200 {
        if let Some((_, r)) = gw.state.store.record(id).await.unwrap() {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no record {id}");
}

/// OpenAI's automatic prompt cache: `prompt_tokens_details.cached_tokens` reaches the
/// record as `cache_read_tokens` and is charged at the model's cached-input price (half
/// for gpt-4o-mini), JSON and streamed; an Anthropic-surface client sees it as
/// `cache_read_input_tokens`, outside `input_tokens`, as Anthropic counts. A short prompt
/// has none and is charged as plain input.
#[tokio::test]
async fn openai_cached_tokens_are_recorded_and_priced() {
    let gw = TestGateway::start(&support::config("", "", "")).await;
    let live = gw.state.live.load_full();
    let target = &live.config.model("m-openai").unwrap().targets[0];
    let price = asc_gateway::policy::price_of(&live, target).unwrap();
    assert_eq!(
        price.cache_read * 2,
        price.input,
        "gpt-4o-mini: cached input at half"
    );
    let long = "y".repeat(9000);
    let check = |record: &Value, cached: Option<u64>| {
        let prompt = record["prompt_tokens"].as_u64().unwrap();
        let output = record["completion_tokens"].as_u64().unwrap();
        let read = asc_gateway::prices::Cached {
            written: 0,
            read: cached.unwrap_or(0),
            hour: false,
        };
        let cost = (record["cost_usd"].as_f64().unwrap() * 1e6).round() as u64;
        assert_eq!(
            cost,
            price.cost_micros_cached(prompt, output, read),
            "{record}"
        );
        assert_eq!(record["cache_read_tokens"].as_u64(), cached, "{record}");
        assert!(record.get("cache_creation_tokens").is_none(), "{record}");
    };

    // OpenAI surface, JSON: ceil(9000 / 4) + 3 = 2253 prompt tokens, 1024 cached.
    let body = json!({"model": "m-openai", "messages": [{"role": "user", "content": long}]});
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let id = support::request_id(&resp);
    let reply: Value = resp.json().await.unwrap();
    assert_eq!(reply["usage"]["prompt_tokens"], 2253, "{reply}");
    assert_eq!(
        reply["usage"]["prompt_tokens_details"]["cached_tokens"],
        1024
    );
    let record = stored_record(&gw, &id).await;
    check(&record, Some(1024));
    let prompt = record["prompt_tokens"].as_u64().unwrap();
    let output = record["completion_tokens"].as_u64().unwrap();
    let cost = (record["cost_usd"].as_f64().unwrap() * 1e6).round() as u64;
    assert!(cost < price.cost_micros(prompt, output), "{record}");
    // By hand, at $0.15 / $0.075 cached / $0.60 per million: 1229 plain and 1024 cached
    // prompt tokens, ceil(9006 / 4) = 2252 output: 184.35 + 76.8 + 1351.2 = 1612.35 µ$,
    // rounded up (at full price it would be 1690).
    assert_eq!((prompt, output, cost), (2253, 2252, 1613), "{record}");

    // Streamed: the same counts in the usage chunk and the record.
    let mut stream = body.clone();
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    let resp = gw.post("/v1/chat/completions", &stream).await;
    let id = support::request_id(&resp);
    let bytes = resp.bytes().await.unwrap();
    let usage = support::sse_events(&bytes)
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
        .find(|v| v["usage"].is_object())
        .unwrap()["usage"]
        .clone();
    assert_eq!(usage, reply["usage"]);
    check(&stored_record(&gw, &id).await, Some(1024));

    // The Anthropic surface over the same upstream: cached reads apart from input.
    let body = json!({"model": "m-openai", "max_tokens": 64,
        "messages": [{"role": "user", "content": long}]});
    let resp = gw.post("/v1/messages", &body).await;
    assert_eq!(resp.status(), 200);
    let id = support::request_id(&resp);
    let reply: Value = resp.json().await.unwrap();
    assert_eq!(reply["usage"]["input_tokens"], 2253 - 1024, "{reply}");
    assert_eq!(reply["usage"]["cache_read_input_tokens"], 1024, "{reply}");
    let record = stored_record(&gw, &id).await;
    check(&record, Some(1024));
    // max_tokens 64 cuts the reply to 64 tokens: 184.35 + 76.8 + 38.4 = 299.55 → 300 µ$.
    assert_eq!(record["cost_usd"], 0.0003, "{record}");

    // A short prompt: nothing cached (OpenAI's 0), plain input price.
    let (path, body) = request(Surface::OpenAi, "m-openai", false, false);
    let resp = gw.post(&path, &body).await;
    let id = support::request_id(&resp);
    let reply: Value = resp.json().await.unwrap();
    assert_eq!(reply["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    check(&stored_record(&gw, &id).await, None);
}

#[tokio::test]
async fn openai_stream_without_include_usage_has_no_usage_chunk() {
    let gw = TestGateway::start(&support::config("", "", "")).await;
    for flavor in FLAVORS {
        let (path, mut body) = request(Surface::OpenAi, &format!("m-{flavor}"), true, false);
        body.as_object_mut().unwrap().remove("stream_options");
        let bytes = gw.post(&path, &body).await.bytes().await.unwrap();
        for ev in support::sse_events(&bytes) {
            if ev.data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(&ev.data).unwrap();
            assert!(
                v.get("usage").is_none_or(Value::is_null),
                "{flavor}: usage chunk sent though not asked for: {v}"
            );
            assert!(!v["choices"].as_array().unwrap().is_empty(), "{flavor}");
        }
    }
}

/// Token-array input (LangChain's default) is read as cl100k_base text: each provider's
/// embedding of the tokens is its embedding of the text they encode.
#[tokio::test]
async fn embeddings_token_arrays_are_embedded_as_their_cl100k_text() {
    let extra = "  - name: emb-openai\n    targets: [{provider: mock-openai, model: text-embedding-3-small}]\n  - name: emb-mistral\n    targets: [{provider: mock-mistral, model: mistral-embed}]";
    let gw = TestGateway::start(&support::config("", extra, "")).await;
    let embed = |model: &'static str, input: Value| {
        let gw = &gw;
        async move {
            let body = json!({"model": model, "input": input});
            let resp = gw.post("/v1/embeddings", &body).await;
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let texts = ["hello world", "Grüezi, Zürich! 🌦"];
    let bpe = tiktoken_rs::cl100k_base_singleton();
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| bpe.encode_ordinary(t)).collect();
    assert_eq!(ids[0], [15339, 1917], "hello world in cl100k_base");
    for model in ["emb-openai", "emb-mistral"] {
        let (status, by_text) = embed(model, json!(texts)).await;
        assert_eq!(status, 200, "{model}: {by_text}");
        assert_ne!(
            by_text["data"][0]["embedding"], by_text["data"][1]["embedding"],
            "{model}: vectors depend on the text"
        );
        let (status, by_tokens) = embed(model, json!(ids)).await;
        assert_eq!(status, 200, "{model}: {by_tokens}");
        assert_eq!(by_tokens["data"], by_text["data"], "{model}");
        assert_eq!(by_tokens["data"].as_array().unwrap().len(), 2, "{model}");
        // one flat array is one input
        let (status, one) = embed(model, json!(ids[0])).await;
        assert_eq!(status, 200, "{model}: {one}");
        assert_eq!(one["data"].as_array().unwrap().len(), 1, "{model}");
        assert_eq!(
            one["data"][0]["embedding"], by_text["data"][0]["embedding"],
            "{model}"
        );
    }
    for (input, param) in [
        (json!([[15339], [1917, 100_257]]), "input[1][1]"),
        (json!([15339, 999_999]), "input[1]"),
        (json!([[15339], []]), "input[1]"),
        (json!(["hello", 1917]), "input[1]"),
    ] {
        let (status, v) = embed("emb-openai", input.clone()).await;
        assert_eq!(status, 400, "{input}: {v}");
        assert_eq!(v["error"]["code"], "invalid_request", "{input}: {v}");
        assert_eq!(v["error"]["param"], param, "{input}: {v}");
    }
}

#[tokio::test]
async fn embeddings_and_models() {
    let extra = "  - name: emb\n    targets: [{provider: mock-openai, model: text-embedding-3-small}, {provider: mock-anthropic, model: x}]";
    let tenant = r#"  - name: narrow
    allowed_models: [m-openai, "m-m*"]
    regions: [us]
    keys: [{name: k, key: "sk-narrow-key-00000000"}]"#;
    let gw = TestGateway::start(&support::config("", extra, tenant)).await;
    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "emb", "input": ["a", "b"]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert!(!v["data"][0]["embedding"].as_array().unwrap().is_empty());
    let again: Value = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "emb", "input": ["a", "b"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"], again["data"], "deterministic vectors");

    let list = |key: &'static str, anthropic: bool| {
        let mut rb = gw
            .http
            .get(format!("{}/v1/models", gw.url))
            .header("x-api-key", key);
        if anthropic {
            rb = rb.header("anthropic-version", "2023-06-01");
        }
        async move { rb.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let ids = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    // `narrow` may use m-openai and m-m* but only region us: m-mistral is eu-only.
    let v = list("sk-narrow-key-00000000", false).await;
    assert_eq!(v["object"], "list");
    assert_eq!(ids(&v), ["m-openai"]);
    let v = list("sk-narrow-key-00000000", true).await;
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(ids(&v), ["m-openai"]);
    let all = ids(&list(support::KEY, false).await);
    assert!(all.contains(&"m-anthropic".to_owned()) && all.contains(&"emb".to_owned()));

    // One model (the SDKs' `models.retrieve`): what the list shows, and 404 for what
    // it does not (unknown, or not for this key's regions).
    let one = |key: &'static str, id: &'static str, anthropic: bool| {
        let mut rb = gw
            .http
            .get(format!("{}/v1/models/{id}", gw.url))
            .header("x-api-key", key);
        if anthropic {
            rb = rb.header("anthropic-version", "2023-06-01");
        }
        async move {
            let r = rb.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, v) = one("sk-narrow-key-00000000", "m-openai", false).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["id"].as_str(), v["object"].as_str()),
        (Some("m-openai"), Some("model"))
    );
    let (st, v) = one("sk-narrow-key-00000000", "m-openai", true).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["id"].as_str(), v["type"].as_str()),
        (Some("m-openai"), Some("model"))
    );
    for id in ["m-mistral", "nope"] {
        let (st, v) = one("sk-narrow-key-00000000", id, false).await;
        assert_eq!(st, 404, "{id}: {v}");
        assert_eq!(v["error"]["code"], "model_not_found", "{v}");
    }
    let (st, v) = one("sk-narrow-key-00000000", "nope", true).await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(v["type"], "error", "Anthropic's shape: {v}");
}

/// `POST /v1/messages/count_tokens` (the Anthropic SDK's `messages.count_tokens`): the
/// prompt's tokens as the gateway counts them; more text, more tokens; the key must
/// be allowed the model; nothing reaches a provider.
#[tokio::test]
async fn count_tokens_counts_a_messages_prompt() {
    let gw = TestGateway::start(&support::config("", "", "")).await;
    let count = |body: Value| {
        let http = gw.http.clone();
        let url = format!("{}/v1/messages/count_tokens", gw.url);
        async move {
            let r = http
                .post(url)
                .header("x-api-key", support::KEY)
                .header("anthropic-version", "2023-06-01")
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, short) = count(json!({"model": "m-anthropic",
        "messages": [{"role": "user", "content": "hi"}]}))
    .await;
    assert_eq!(st, 200, "{short}");
    let (st, long) = count(json!({"model": "m-anthropic", "system": "be brief",
        "messages": [{"role": "user", "content": "hello world ".repeat(50)}]}))
    .await;
    assert_eq!(st, 200, "{long}");
    let (short, long) = (
        short["input_tokens"].as_u64().unwrap(),
        long["input_tokens"].as_u64().unwrap(),
    );
    assert!(short > 0 && long > short + 50, "{short} {long}");
    let (st, v) =
        count(json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(v["type"], "error", "{v}");
    let (st, v) = count(json!({"model": "m-anthropic"})).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(
        gw.mock("mock-anthropic").requests,
        0,
        "nothing reached a provider"
    );

    // Residency holds for counting too: a tenant kept to `eu` cannot count against a
    // model served only in `us` (403 residency_denied), and can where `eu` serves it.
    let eu = TestGateway::start(&support::config("", "", "    regions: [eu]")).await;
    let count_eu = |model: &str| {
        let req = eu
            .http
            .post(format!("{}/v1/messages/count_tokens", eu.url))
            .header("x-api-key", support::KEY)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}));
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, v) = count_eu("m-anthropic").await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["error"]["type"], "permission_error", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("region"),
        "{v}"
    );
    let (st, v) = count_eu("m-mistral").await;
    assert_eq!(st, 200, "{v}");
    assert!(v["input_tokens"].as_u64().unwrap() > 0, "{v}");
}
