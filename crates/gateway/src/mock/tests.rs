//! End-to-end tests of the mock over real HTTP (reqwest against `serve`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Flavor, Mock, MockSettings, serve};

async fn spawn(settings: MockSettings) -> (String, Arc<Mock>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mock = Mock::new(settings);
    tokio::spawn(serve(listener, Arc::clone(&mock)));
    (format!("http://{addr}"), mock)
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

fn default_headers(flavor: Flavor) -> Vec<(&'static str, String)> {
    match flavor {
        Flavor::Anthropic => vec![("anthropic-version", "2023-06-01".to_string())],
        _ => Vec::new(),
    }
}

async fn send(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<String>,
) -> Resp {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method, format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Resp {
        status,
        headers,
        text,
    }
}

async fn post(base: &str, flavor: Flavor, path: &str, body: &Value) -> Resp {
    send(
        base,
        "POST",
        path,
        &default_headers(flavor),
        Some(body.to_string()),
    )
    .await
}

fn chat_path(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Anthropic => "/v1/messages",
        _ => "/v1/chat/completions",
    }
}

/// Parses SSE text into (event name, data) pairs, checking the framing.
fn sse(text: &str) -> Vec<(Option<String>, String)> {
    assert!(
        text.ends_with("\n\n"),
        "stream must end with a blank line: {text:?}"
    );
    text.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|block| {
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    assert!(data.is_none(), "one data line per event");
                    data = Some(d.to_string());
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (event, data.expect("data line"))
        })
        .collect()
}

fn openai_data(text: &str) -> (Vec<Value>, bool) {
    let events = sse(text);
    let done = events.last().is_some_and(|(_, d)| d == "[DONE]");
    let chunks = events
        .iter()
        .filter(|(e, d)| {
            assert!(e.is_none(), "openai streams have no event names");
            d != "[DONE]"
        })
        .map(|(_, d)| serde_json::from_str(d).expect("chunk JSON"))
        .collect();
    (chunks, done)
}

fn user_req(model: &str, text: &str) -> Value {
    json!({
        "model": model,
        "messages": [
            { "role": "system", "content": "be nice" },
            { "role": "user", "content": text }
        ]
    })
}

fn anthropic_req(text: &str) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": "be nice",
        "messages": [{ "role": "user", "content": [{ "type": "text", "text": text }] }]
    })
}

fn tools_openai() -> Value {
    json!([
        { "type": "function", "function": { "name": "lookup", "parameters": { "type": "object" } } },
        { "type": "function", "function": { "name": "other", "parameters": { "type": "object" } } }
    ])
}

#[tokio::test]
async fn openai_text_reply_and_usage() {
    let (base, mock) = spawn(MockSettings::new(Flavor::OpenAi)).await;
    let r = post(
        &base,
        Flavor::OpenAi,
        "/v1/chat/completions",
        &user_req("gpt-4o", "hello there"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o");
    assert!(v["id"].as_str().expect("id").starts_with("chatcmpl-"));
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello there");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // prompt: ceil((7 + 11) / 4) + 2 * 3 = 11; completion: ceil(17 / 4) = 5
    assert_eq!(v["usage"]["prompt_tokens"], 11);
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(v["usage"]["total_tokens"], 16);
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.chat, stats.streams), (1, 1, 0));
    assert_eq!(stats.last_body.expect("body")["model"], "gpt-4o");
}

#[tokio::test]
async fn openai_tools_call_then_complete() {
    let (base, _) = spawn(MockSettings::new(Flavor::OpenAi)).await;
    let mut req = user_req("gpt-4o", "weather in Paris");
    req["tools"] = tools_openai();
    let v = post(&base, Flavor::OpenAi, "/v1/chat/completions", &req)
        .await
        .json();
    let msg = &v["choices"][0]["message"];
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(msg["content"], Value::Null);
    let call = &msg["tool_calls"][0];
    assert!(call["id"].as_str().expect("id").starts_with("call_"));
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "lookup");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("args")).expect("json");
    assert_eq!(args, json!({ "input": "weather in Paris" }));

    req["tool_choice"] = json!({ "type": "function", "function": { "name": "other" } });
    let v = post(&base, Flavor::OpenAi, "/v1/chat/completions", &req)
        .await
        .json();
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "other"
    );

    req["tool_choice"] = json!("none");
    let v = post(&base, Flavor::OpenAi, "/v1/chat/completions", &req)
        .await
        .json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "echo: weather in Paris"
    );

    req["tool_choice"] = json!("auto");
    let messages = req["messages"].as_array_mut().expect("messages");
    messages.push(json!({ "role": "assistant", "content": null, "tool_calls": [call.clone()] }));
    messages.push(json!({ "role": "tool", "tool_call_id": call["id"], "content": "sunny, 21C" }));
    let v = post(&base, Flavor::OpenAi, "/v1/chat/completions", &req)
        .await
        .json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: sunny, 21C");
}

/// OpenAI's automatic prompt cache, as the mock tells it: half of a long prompt (in
/// steps of 128, from 1024) is cached, in JSON and streamed replies alike; short prompts
/// and Mistral none.
#[tokio::test]
async fn openai_reports_cached_tokens_for_long_prompts() {
    assert_eq!(
        [0, 2047, 2048, 2303, 2304, 10_000].map(super::openai::cached_tokens),
        [0, 0, 1024, 1024, 1152, 4992]
    );
    let (base, _) = spawn(MockSettings::new(Flavor::OpenAi)).await;
    // ceil(8000 / 4) + 3 = 2003 (under 2048): nothing cached; ceil(9000 / 4) + 3 = 2253.
    for (chars, prompt, cached) in [(8000, 2003, 0), (9000, 2253, 1024)] {
        let long = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "y".repeat(chars)}]});
        let v = post(&base, Flavor::OpenAi, "/v1/chat/completions", &long)
            .await
            .json();
        assert_eq!(v["usage"]["prompt_tokens"], prompt, "{v}");
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], cached);
        let mut sreq = long.clone();
        sreq["stream"] = json!(true);
        sreq["stream_options"] = json!({ "include_usage": true });
        let r = post(&base, Flavor::OpenAi, "/v1/chat/completions", &sreq).await;
        let (chunks, _) = openai_data(&r.text);
        let last = chunks.last().expect("usage chunk");
        assert_eq!(last["usage"], v["usage"]);
    }
    let (base, _) = spawn(MockSettings::new(Flavor::Mistral)).await;
    let long = json!({"model": "mistral-small-latest", "messages": [{"role": "user", "content": "y".repeat(9000)}]});
    let v = post(&base, Flavor::Mistral, chat_path(Flavor::Mistral), &long)
        .await
        .json();
    assert_eq!(v["usage"]["prompt_tokens"], 2253);
    assert!(v["usage"].get("prompt_tokens_details").is_none(), "{v}");
}

#[tokio::test]
async fn openai_stream_matches_json() {
    let mut s = MockSettings::new(Flavor::OpenAi);
    s.chunks = 3;
    let (base, mock) = spawn(s).await;
    let req = user_req("gpt-4o", "héllo 🦀 wörld");
    let full = post(&base, Flavor::OpenAi, "/v1/chat/completions", &req)
        .await
        .json();

    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({ "include_usage": true });
    let r = post(&base, Flavor::OpenAi, "/v1/chat/completions", &sreq).await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/event-stream")
    );
    let (chunks, done) = openai_data(&r.text);
    assert!(done, "ends with [DONE]");
    // role, 3 content pieces, finish, usage
    assert_eq!(chunks.len(), 6, "{}", r.text);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"])
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        full["choices"][0]["message"]["content"]
            .as_str()
            .expect("content")
    );
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert!(
        chunks[..5]
            .iter()
            .all(|c| c["usage"].is_null() && c.get("usage").is_some())
    );
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(chunks[5]["usage"], full["usage"]);

    // without include_usage: no usage chunk, no usage field
    sreq.as_object_mut().expect("obj").remove("stream_options");
    let (chunks, done) = openai_data(
        &post(&base, Flavor::OpenAi, "/v1/chat/completions", &sreq)
            .await
            .text,
    );
    assert!(done);
    assert_eq!(chunks.len(), 5);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(mock.stats().streams, 2);
    assert_eq!(mock.stats().aborted, 0);
}

#[tokio::test]
async fn openai_stream_tool_call() {
    let (base, _) = spawn(MockSettings::new(Flavor::OpenAi)).await;
    let mut req = user_req("gpt-4o", "weather in Paris");
    req["tools"] = tools_openai();
    let full = post(&base, Flavor::OpenAi, "/v1/chat/completions", &req)
        .await
        .json();
    req["stream"] = json!(true);
    let (chunks, done) = openai_data(
        &post(&base, Flavor::OpenAi, "/v1/chat/completions", &req)
            .await
            .text,
    );
    assert!(done);
    let head = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert!(head["id"].as_str().expect("id").starts_with("call_"));
    assert_eq!(head["function"]["name"], "lookup");
    assert_eq!(head["function"]["arguments"], "");
    let args: String = chunks[1..]
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        args,
        full["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .expect("a")
    );
    assert_eq!(chunks.len(), 1 + 4 + 1);
    assert_eq!(
        chunks.last().expect("last")["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn mistral_text_tools_and_stream() {
    let (base, _) = spawn(MockSettings::new(Flavor::Mistral)).await;
    let req = user_req("mistral-small-latest", "bonjour");
    let full = post(&base, Flavor::Mistral, "/v1/chat/completions", &req)
        .await
        .json();
    assert_eq!(full["object"], "chat.completion");
    assert_eq!(full["choices"][0]["message"]["content"], "echo: bonjour");
    assert_eq!(full["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        full["usage"],
        json!({ "prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14 })
    );

    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let (chunks, done) = openai_data(
        &post(&base, Flavor::Mistral, "/v1/chat/completions", &sreq)
            .await
            .text,
    );
    assert!(done);
    assert_eq!(chunks.len(), 1 + 4);
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({ "role": "assistant", "content": "" })
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: bonjour");
    let last = chunks.last().expect("last");
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["usage"], full["usage"]);
    assert!(chunks[..4].iter().all(|c| c.get("usage").is_none()));

    let mut treq = req.clone();
    treq["tools"] = tools_openai();
    treq["tool_choice"] = json!("any");
    let full = post(&base, Flavor::Mistral, "/v1/chat/completions", &treq)
        .await
        .json();
    let call = &full["choices"][0]["message"]["tool_calls"][0];
    let id = call["id"].as_str().expect("id");
    assert_eq!(id.len(), 9);
    assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(full["choices"][0]["finish_reason"], "tool_calls");
    treq["stream"] = json!(true);
    let (chunks, done) = openai_data(
        &post(&base, Flavor::Mistral, "/v1/chat/completions", &treq)
            .await
            .text,
    );
    assert!(done);
    assert_eq!(chunks.len(), 2);
    assert_eq!(
        chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"],
        call["function"]
    );
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[1]["usage"], full["usage"]);

    // Mistral refuses fields it does not know (e.g. OpenAI's stream_options).
    sreq["stream_options"] = json!({ "include_usage": true });
    let r = post(&base, Flavor::Mistral, "/v1/chat/completions", &sreq).await;
    assert_eq!(r.status, 422);
    let v = r.json();
    assert_eq!(v["object"], "error");
    assert_eq!(v["type"], "invalid_request_error");
    assert_eq!(v["message"]["detail"][0]["type"], "extra_forbidden");
    assert_eq!(
        v["message"]["detail"][0]["loc"],
        json!(["body", "stream_options"])
    );
}

#[tokio::test]
async fn anthropic_text_tools_and_tool_result() {
    let (base, _) = spawn(MockSettings::new(Flavor::Anthropic)).await;
    let v = post(
        &base,
        Flavor::Anthropic,
        "/v1/messages",
        &anthropic_req("hello there"),
    )
    .await
    .json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert!(v["id"].as_str().expect("id").starts_with("msg_"));
    assert_eq!(
        v["content"],
        json!([{ "type": "text", "text": "echo: hello there" }])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    // same count as the OpenAI request with a system message
    assert_eq!(v["usage"]["input_tokens"], 11);
    assert_eq!(v["usage"]["output_tokens"], 5);

    let mut req = anthropic_req("weather in Paris");
    req["tools"] = json!([
        { "name": "lookup", "input_schema": { "type": "object" } },
        { "name": "other", "input_schema": { "type": "object" } }
    ]);
    let v = post(&base, Flavor::Anthropic, "/v1/messages", &req)
        .await
        .json();
    assert_eq!(v["stop_reason"], "tool_use");
    let block = &v["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().expect("id").starts_with("toolu_"));
    assert_eq!(block["name"], "lookup");
    assert_eq!(block["input"], json!({ "input": "weather in Paris" }));

    let mut named = req.clone();
    named["tool_choice"] = json!({ "type": "tool", "name": "other" });
    let v = post(&base, Flavor::Anthropic, "/v1/messages", &named)
        .await
        .json();
    assert_eq!(v["content"][0]["name"], "other");
    named["tool_choice"] = json!({ "type": "none" });
    let v = post(&base, Flavor::Anthropic, "/v1/messages", &named)
        .await
        .json();
    assert_eq!(v["content"][0]["text"], "echo: weather in Paris");

    let messages = req["messages"].as_array_mut().expect("messages");
    messages.push(json!({ "role": "assistant", "content": [block.clone()] }));
    messages.push(json!({ "role": "user", "content": [{
        "type": "tool_result", "tool_use_id": block["id"], "content": [{ "type": "text", "text": "sunny" }]
    }] }));
    let v = post(&base, Flavor::Anthropic, "/v1/messages", &req)
        .await
        .json();
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["content"][0]["text"], "echo: sunny");
}

fn anthropic_events(text: &str) -> Vec<(String, Value)> {
    sse(text)
        .into_iter()
        .map(|(e, d)| {
            let e = e.expect("anthropic events are named");
            let v: Value = serde_json::from_str(&d).expect("event JSON");
            assert_eq!(v["type"], e.as_str(), "data.type matches the event name");
            (e, v)
        })
        .collect()
}

#[tokio::test]
async fn anthropic_stream_matches_json() {
    let (base, _) = spawn(MockSettings::new(Flavor::Anthropic)).await;
    let req = anthropic_req("héllo 🦀 wörld");
    let full = post(&base, Flavor::Anthropic, "/v1/messages", &req)
        .await
        .json();
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let r = post(&base, Flavor::Anthropic, "/v1/messages", &sreq).await;
    assert_eq!(r.status, 200);
    let events = anthropic_events(&r.text);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let start = &events[0].1["message"];
    assert_eq!(start["content"], json!([]));
    assert_eq!(
        start["usage"]["input_tokens"],
        full["usage"]["input_tokens"]
    );
    assert_eq!(
        events[1].1["content_block"],
        json!({ "type": "text", "text": "" })
    );
    let text: String = events
        .iter()
        .filter(|(e, _)| e == "content_block_delta")
        .map(|(_, v)| {
            assert_eq!(v["delta"]["type"], "text_delta");
            v["delta"]["text"].as_str().expect("text").to_string()
        })
        .collect();
    assert_eq!(text, full["content"][0]["text"].as_str().expect("text"));
    assert_eq!(events[8].1["delta"]["stop_reason"], full["stop_reason"]);
    assert_eq!(
        events[8].1["usage"]["output_tokens"],
        full["usage"]["output_tokens"]
    );

    let mut treq = sreq.clone();
    treq["tools"] = json!([{ "name": "lookup", "input_schema": { "type": "object" } }]);
    let events = anthropic_events(
        &post(&base, Flavor::Anthropic, "/v1/messages", &treq)
            .await
            .text,
    );
    assert_eq!(events[1].1["content_block"]["type"], "tool_use");
    assert_eq!(events[1].1["content_block"]["input"], json!({}));
    let partial: String = events
        .iter()
        .filter(|(e, _)| e == "content_block_delta")
        .map(|(_, v)| {
            v["delta"]["partial_json"]
                .as_str()
                .expect("partial_json")
                .to_string()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).expect("json"),
        json!({ "input": "héllo 🦀 wörld" })
    );
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn auth_required_and_refused() {
    let key = "sk-test-0123456789abcdef";
    for flavor in [Flavor::OpenAi, Flavor::Mistral, Flavor::Anthropic] {
        let mut s = MockSettings::new(flavor);
        s.api_key = Some(key.to_string());
        let (base, _) = spawn(s).await;
        let body = if flavor == Flavor::Anthropic {
            anthropic_req("hi")
        } else {
            user_req("m", "hi")
        };
        let path = chat_path(flavor);
        let mut missing = default_headers(flavor);
        let r = send(&base, "POST", path, &missing, Some(body.to_string())).await;
        assert_eq!(r.status, 401, "{flavor}");
        let v = r.json();
        match flavor {
            Flavor::OpenAi => {
                assert_eq!(v["error"]["type"], "invalid_request_error");
                assert_eq!(v["error"]["code"], Value::Null);
                assert!(
                    v["error"]["message"]
                        .as_str()
                        .expect("m")
                        .starts_with("You didn't provide an API key.")
                );
            }
            Flavor::Mistral => assert_eq!(
                v,
                json!({ "object": "error", "message": "Unauthorized", "type": "authentication_error", "param": null, "code": null })
            ),
            Flavor::Anthropic => {
                assert_eq!(v["type"], "error");
                assert_eq!(
                    v["error"],
                    json!({ "type": "authentication_error", "message": "x-api-key header is required" })
                );
                assert!(
                    v["request_id"]
                        .as_str()
                        .expect("request_id")
                        .starts_with("req_")
                );
            }
        }
        let mut wrong = missing.clone();
        match flavor {
            Flavor::Anthropic => wrong.push(("x-api-key", "sk-wrong-key-999999".to_string())),
            _ => wrong.push(("authorization", "Bearer sk-wrong-key-999999".to_string())),
        }
        let r = send(&base, "POST", path, &wrong, Some(body.to_string())).await;
        assert_eq!(r.status, 401);
        let v = r.json();
        match flavor {
            Flavor::OpenAi => assert_eq!(
                v,
                json!({ "error": {
                    "message": "Incorrect API key provided: sk-************9999. You can find your API key at https://platform.openai.com/account/api-keys.",
                    "type": "invalid_request_error", "param": null, "code": "invalid_api_key"
                } })
            ),
            Flavor::Mistral => assert_eq!(v["type"], "authentication_error"),
            Flavor::Anthropic => {
                assert_eq!(
                    v["error"],
                    json!({ "type": "authentication_error", "message": "invalid x-api-key" })
                )
            }
        }
        match flavor {
            Flavor::Anthropic => missing.push(("x-api-key", key.to_string())),
            _ => missing.push(("authorization", format!("Bearer {key}"))),
        }
        let r = send(&base, "POST", path, &missing, Some(body.to_string())).await;
        assert_eq!(r.status, 200, "{flavor}: {}", r.text);
    }
    // Anthropic without anthropic-version: 400 even with a good key.
    let mut s = MockSettings::new(Flavor::Anthropic);
    s.api_key = Some(key.to_string());
    let (base, mock) = spawn(s).await;
    let r = send(
        &base,
        "POST",
        "/v1/messages",
        &[("x-api-key", key.to_string())],
        Some(anthropic_req("hi").to_string()),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"],
        json!({ "type": "invalid_request_error", "message": "anthropic-version: header is required" })
    );
    let headers = mock.stats().last_headers;
    assert!(headers.contains(&("x-api-key".to_string(), "<redacted>".to_string())));
    assert!(!format!("{headers:?}").contains(key));
}

#[tokio::test]
async fn fail_rate_one_returns_provider_errors() {
    let cases = [
        (Flavor::OpenAi, 429u16),
        (Flavor::OpenAi, 500),
        (Flavor::OpenAi, 503),
        (Flavor::Anthropic, 529),
        (Flavor::Anthropic, 429),
        (Flavor::Anthropic, 500),
        (Flavor::Mistral, 429),
        (Flavor::Mistral, 503),
    ];
    for (flavor, status) in cases {
        let mut s = MockSettings::new(flavor);
        s.fail_rate = 1.0;
        s.fail_status = status;
        let (base, mock) = spawn(s).await;
        let body = if flavor == Flavor::Anthropic {
            anthropic_req("hi")
        } else {
            user_req("m", "hi")
        };
        let r = post(&base, flavor, chat_path(flavor), &body).await;
        assert_eq!(r.status, status, "{flavor}");
        assert_eq!(r.headers.get("retry-after").is_some(), status == 429);
        let v = r.json();
        match (flavor, status) {
            (Flavor::OpenAi, 429) => {
                assert_eq!(v["error"]["code"], "rate_limit_exceeded");
                assert_eq!(v["error"]["param"], Value::Null);
            }
            (Flavor::OpenAi, _) => assert_eq!(v["error"]["type"], "server_error"),
            (Flavor::Anthropic, 529) => assert_eq!(
                v["error"],
                json!({ "type": "overloaded_error", "message": "Overloaded" })
            ),
            (Flavor::Anthropic, 429) => assert_eq!(v["error"]["type"], "rate_limit_error"),
            (Flavor::Anthropic, _) => assert_eq!(v["error"]["type"], "api_error"),
            (Flavor::Mistral, 429) => assert_eq!(v["type"], "rate_limit_error"),
            (Flavor::Mistral, _) => {
                assert_eq!(
                    v,
                    json!({ "object": "error", "message": "Service unavailable", "type": "server_error", "param": null, "code": null })
                )
            }
        }
        assert_eq!(mock.stats().failures_injected, 1);
    }
}

#[tokio::test]
async fn fail_rate_is_deterministic() {
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let mut s = MockSettings::new(Flavor::OpenAi);
        s.fail_rate = 0.5;
        s.seed = 42;
        let (base, mock) = spawn(s).await;
        let mut run = Vec::new();
        for _ in 0..24 {
            run.push(
                post(
                    &base,
                    Flavor::OpenAi,
                    "/v1/chat/completions",
                    &user_req("m", "x"),
                )
                .await
                .status,
            );
        }
        // reset restarts the sequence
        mock.reset();
        let again = post(
            &base,
            Flavor::OpenAi,
            "/v1/chat/completions",
            &user_req("m", "x"),
        )
        .await
        .status;
        assert_eq!(again, run[0]);
        outcomes.push(run);
    }
    assert_eq!(outcomes[0], outcomes[1]);
    let fails = outcomes[0].iter().filter(|s| **s == 500).count();
    assert!((4..=20).contains(&fails), "about half fail: {fails}");
    assert!(outcomes[0].iter().all(|s| *s == 200 || *s == 500));
}

#[tokio::test]
async fn max_tokens_and_stop_sequences() {
    let (base, _) = spawn(MockSettings::new(Flavor::OpenAi)).await;
    let mut req = user_req("m", "hello world");
    req["max_tokens"] = json!(2);
    let v = post(&base, Flavor::OpenAi, "/v1/chat/completions", &req)
        .await
        .json();
    assert_eq!(v["choices"][0]["message"]["content"], "echo: he");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 2);
    req["stream"] = json!(true);
    let (chunks, _) = openai_data(
        &post(&base, Flavor::OpenAi, "/v1/chat/completions", &req)
            .await
            .text,
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: he");
    assert_eq!(
        chunks.last().expect("last")["choices"][0]["finish_reason"],
        "length"
    );

    let mut req = user_req("m", "hello world");
    req["stop"] = json!(["wor", "ll"]);
    let v = post(&base, Flavor::OpenAi, "/v1/chat/completions", &req)
        .await
        .json();
    assert_eq!(v["choices"][0]["message"]["content"], "echo: he");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    let (base, _) = spawn(MockSettings::new(Flavor::Anthropic)).await;
    let mut req = anthropic_req("hello world");
    req["max_tokens"] = json!(1);
    let v = post(&base, Flavor::Anthropic, "/v1/messages", &req)
        .await
        .json();
    assert_eq!(v["content"][0]["text"], "echo");
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 1);
    req["max_tokens"] = json!(100);
    req["stop_sequences"] = json!(["wor"]);
    let v = post(&base, Flavor::Anthropic, "/v1/messages", &req)
        .await
        .json();
    assert_eq!(v["content"][0]["text"], "echo: hello ");
    assert_eq!(v["stop_reason"], "stop_sequence");
    assert_eq!(v["stop_sequence"], "wor");
}

#[tokio::test]
async fn validation_errors() {
    let (base, _) = spawn(MockSettings::new(Flavor::OpenAi)).await;
    let r = send(
        &base,
        "POST",
        "/v1/chat/completions",
        &[],
        Some("{not json".into()),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = post(
        &base,
        Flavor::OpenAi,
        "/v1/chat/completions",
        &json!({ "messages": [] }),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "you must provide a model parameter"
    );
    let r = post(
        &base,
        Flavor::OpenAi,
        "/v1/chat/completions",
        &json!({ "model": "m" }),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({ "error": {
            "message": "Missing required parameter: 'messages'.",
            "type": "invalid_request_error", "param": "messages", "code": "missing_required_parameter"
        } })
    );
    let mut req = user_req("m", "x");
    req["stream_options"] = json!({ "include_usage": true });
    assert_eq!(
        post(&base, Flavor::OpenAi, "/v1/chat/completions", &req)
            .await
            .status,
        400
    );
    let mut req = user_req("m", "x");
    req["max_tokens_to_sample"] = json!(5);
    let r = post(&base, Flavor::OpenAi, "/v1/chat/completions", &req).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "Unrecognized request argument supplied: max_tokens_to_sample"
    );
    let r = send(&base, "POST", "/v1/nope", &[], Some("{}".into())).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["message"], "Invalid URL (POST /v1/nope)");

    let (base, _) = spawn(MockSettings::new(Flavor::Anthropic)).await;
    let mut req = anthropic_req("x");
    req.as_object_mut().expect("obj").remove("max_tokens");
    let r = post(&base, Flavor::Anthropic, "/v1/messages", &req).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"],
        json!({ "type": "invalid_request_error", "message": "max_tokens: Field required" })
    );
    let mut req = anthropic_req("x");
    req.as_object_mut().expect("obj").remove("messages");
    let r = post(&base, Flavor::Anthropic, "/v1/messages", &req).await;
    assert_eq!(r.json()["error"]["message"], "messages: Field required");
    let mut req = anthropic_req("x");
    req["stream_options"] = json!({ "include_usage": true });
    let r = post(&base, Flavor::Anthropic, "/v1/messages", &req).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "stream_options: Extra inputs are not permitted"
    );
    let r = send(
        &base,
        "POST",
        "/v1/messages",
        &default_headers(Flavor::Anthropic),
        Some("[".into()),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    let (base, _) = spawn(MockSettings::new(Flavor::Mistral)).await;
    let r = post(
        &base,
        Flavor::Mistral,
        "/v1/chat/completions",
        &json!({ "model": "m" }),
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json()["message"]["detail"][0]["loc"],
        json!(["body", "messages"])
    );
}

#[tokio::test]
async fn embeddings_are_deterministic() {
    for flavor in [Flavor::OpenAi, Flavor::Mistral] {
        let (base, mock) = spawn(MockSettings::new(flavor)).await;
        let req = json!({ "model": "emb", "input": ["hello", "world", "hello"] });
        let a = post(&base, flavor, "/v1/embeddings", &req).await.json();
        let b = post(&base, flavor, "/v1/embeddings", &req).await.json();
        assert_eq!(a["data"], b["data"]);
        assert_eq!(a["object"], "list");
        let data = a["data"].as_array().expect("data");
        assert_eq!(data.len(), 3);
        assert_eq!(data[0]["object"], "embedding");
        assert_eq!(data[1]["index"], 1);
        assert_eq!(data[0]["embedding"].as_array().expect("vec").len(), 8);
        assert_eq!(data[0]["embedding"], data[2]["embedding"]);
        assert_ne!(data[0]["embedding"], data[1]["embedding"]);
        assert_eq!(a["usage"]["prompt_tokens"], 6);
        let single = post(
            &base,
            flavor,
            "/v1/embeddings",
            &json!({ "model": "emb", "input": "hello" }),
        )
        .await
        .json();
        assert_eq!(single["data"][0]["embedding"], data[0]["embedding"]);
        assert_eq!(mock.stats().embeddings, 3);
    }
    let (base, _) = spawn(MockSettings::new(Flavor::OpenAi)).await;
    let req =
        json!({ "model": "emb", "input": "hello", "encoding_format": "base64", "dimensions": 4 });
    let v = post(&base, Flavor::OpenAi, "/v1/embeddings", &req)
        .await
        .json();
    assert_eq!(v["data"][0]["embedding"].as_str().expect("b64").len(), 24);
    let r = post(
        &base,
        Flavor::OpenAi,
        "/v1/embeddings",
        &json!({ "model": "emb" }),
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn client_abort_is_counted() {
    let mut s = MockSettings::new(Flavor::OpenAi);
    s.latency_ms = 3000;
    let (base, mock) = spawn(s).await;
    let mut req = user_req("m", "a long enough message");
    req["stream"] = json!(true);
    let client = reqwest::Client::new();
    let mut resp = client
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(req.to_string())
        .send()
        .await
        .expect("send");
    let first = resp.chunk().await.expect("chunk").expect("some");
    assert!(first.starts_with(b"data: "));
    drop(resp);
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(3);
    while mock.stats().aborted == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mock.stats().aborted, 1);
    assert_eq!(mock.stats().streams, 1);
}

#[tokio::test]
async fn timing_knobs() {
    let mut s = MockSettings::new(Flavor::Anthropic);
    s.ttft_ms = 150;
    s.latency_ms = 300;
    let (base, _) = spawn(s).await;
    let t = Instant::now();
    let r = post(
        &base,
        Flavor::Anthropic,
        "/v1/messages",
        &anthropic_req("x"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(450));

    let mut req = anthropic_req("x");
    req["stream"] = json!(true);
    let client = reqwest::Client::new();
    let t = Instant::now();
    let mut resp = client
        .post(format!("{base}/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .header("x-mock-stall-ms", "100")
        .body(req.to_string())
        .send()
        .await
        .expect("send");
    let headers_at = t.elapsed();
    assert!(headers_at >= Duration::from_millis(250), "{headers_at:?}");
    assert!(headers_at < Duration::from_millis(540), "{headers_at:?}");
    while resp.chunk().await.expect("chunk").is_some() {}
    assert!(
        t.elapsed() >= Duration::from_millis(550),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn test_hooks() {
    let (base, mock) = spawn(MockSettings::new(Flavor::OpenAi)).await;
    let mut req = user_req("m", "hello");
    req["stream"] = json!(true);
    let h = |k: &'static str, v: &str| vec![(k, v.to_string())];

    let r = send(
        &base,
        "POST",
        "/v1/chat/completions",
        &h("x-mock-truncate-after", "2"),
        Some(req.to_string()),
    )
    .await;
    let (chunks, done) = openai_data(&r.text);
    assert!(!done);
    assert_eq!(chunks.len(), 2);

    let r = send(
        &base,
        "POST",
        "/v1/chat/completions",
        &h("x-mock-stream-error-after", "1"),
        Some(req.to_string()),
    )
    .await;
    let events = sse(&r.text);
    assert_eq!(events.len(), 2);
    let err: Value = serde_json::from_str(&events[1].1).expect("json");
    assert_eq!(err["error"]["type"], "server_error");

    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{base}/v1/chat/completions"))
        .header("x-mock-reset-after", "2")
        .body(req.to_string())
        .send()
        .await
        .expect("send");
    assert!(resp.text().await.is_err(), "body is cut");

    let r = send(
        &base,
        "POST",
        "/v1/chat/completions",
        &h("x-mock-fail", "503"),
        Some(req.to_string()),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["type"], "server_error");
    let stats = mock.stats();
    assert_eq!(stats.failures_injected, 1);
    assert_eq!(stats.aborted, 0);
    assert_eq!(stats.streams, 3);

    let (base, _) = spawn(MockSettings::new(Flavor::Anthropic)).await;
    let mut req = anthropic_req("x");
    req["stream"] = json!(true);
    let mut hs = default_headers(Flavor::Anthropic);
    hs.push(("x-mock-stream-error-after", "3".to_string()));
    let r = send(&base, "POST", "/v1/messages", &hs, Some(req.to_string())).await;
    let events = anthropic_events(&r.text);
    assert_eq!(events.len(), 4);
    assert_eq!(events[3].0, "error");
    assert_eq!(events[3].1["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn models_stats_and_reset() {
    for flavor in [Flavor::OpenAi, Flavor::Mistral, Flavor::Anthropic] {
        let (base, _) = spawn(MockSettings::new(flavor)).await;
        let r = send(&base, "GET", "/v1/models", &default_headers(flavor), None).await;
        assert_eq!(r.status, 200);
        let v = r.json();
        assert!(!v["data"].as_array().expect("data").is_empty());
        if flavor == Flavor::Anthropic {
            assert_eq!(v["data"][0]["type"], "model");
        } else {
            assert_eq!(v["object"], "list");
        }
    }
    let (base, _) = spawn(MockSettings::new(Flavor::OpenAi)).await;
    let hs = vec![
        ("authorization", "Bearer secret".to_string()),
        ("x-custom", "keep".to_string()),
    ];
    send(
        &base,
        "POST",
        "/v1/chat/completions",
        &hs,
        Some(user_req("m", "x").to_string()),
    )
    .await;
    let stats = send(&base, "GET", "/mock/stats", &[], None).await.json();
    assert_eq!(stats["requests"], 1);
    assert_eq!(stats["chat"], 1);
    let headers = stats["last_headers"].as_array().expect("headers");
    assert!(headers.contains(&json!(["authorization", "<redacted>"])));
    assert!(headers.contains(&json!(["x-custom", "keep"])));
    assert_eq!(stats["last_body"]["model"], "m");
    assert_eq!(
        send(&base, "POST", "/mock/reset", &[], None).await.status,
        200
    );
    let stats = send(&base, "GET", "/mock/stats", &[], None).await.json();
    assert_eq!(stats["requests"], 0);
    assert_eq!(stats["last_body"], Value::Null);
}

#[test]
fn flavor_names() {
    assert_eq!(
        serde_json::to_string(&Flavor::OpenAi).expect("ser"),
        "\"openai\""
    );
    assert_eq!(
        serde_json::from_str::<Flavor>("\"anthropic\"").expect("de"),
        Flavor::Anthropic
    );
    assert_eq!("mistral".parse::<Flavor>(), Ok(Flavor::Mistral));
    assert!("gemini".parse::<Flavor>().is_err());
}

#[tokio::test]
async fn anthropic_output_config_json_schema() {
    let (base, _) = spawn(MockSettings::new(Flavor::Anthropic)).await;
    let schema = json!({
        "type": "object",
        "properties": {
            "city": { "type": "string" },
            "unit": { "enum": ["celsius", "fahrenheit"] },
            "days": { "type": "integer" },
            "tags": { "type": "array", "items": { "type": "string" } },
            "place": { "$ref": "#/$defs/Place" }
        },
        "required": ["city", "unit", "days", "tags", "place"],
        "additionalProperties": false,
        "$defs": { "Place": { "type": "object", "properties": { "sunny": { "type": "boolean" } } } }
    });
    let want = json!({
        "city": "echo: weather?", "unit": "celsius", "days": 0, "tags": [],
        "place": { "sunny": false }
    });
    let mut req = anthropic_req("weather?");
    // A small max_tokens does not cut the JSON (the API holds it to the schema).
    req["max_tokens"] = json!(2);
    req["output_config"] =
        json!({ "format": { "type": "json_schema", "schema": schema }, "effort": "low" });
    let full = post(&base, Flavor::Anthropic, "/v1/messages", &req).await;
    assert_eq!(full.status, 200, "{}", full.text);
    let full = full.json();
    assert_eq!(full["stop_reason"], "end_turn");
    let text = full["content"][0]["text"].as_str().expect("text");
    assert_eq!(serde_json::from_str::<Value>(text).expect("JSON"), want);
    let completion = u64::try_from(text.chars().count().div_ceil(4)).expect("u64");
    assert_eq!(full["usage"]["output_tokens"], completion);

    req["stream"] = json!(true);
    let r = post(&base, Flavor::Anthropic, "/v1/messages", &req).await;
    let events = anthropic_events(&r.text);
    let streamed: String = events
        .iter()
        .filter(|(e, _)| e == "content_block_delta")
        .map(|(_, v)| v["delta"]["text"].as_str().expect("text").to_string())
        .collect();
    assert_eq!(streamed, text);
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["usage"]["output_tokens"], completion);

    // Checked as the API checks it.
    for (config, message) in [
        (
            json!("x"),
            "output_config: Input should be a valid dictionary or object to extract fields from",
        ),
        (
            json!({ "format": { "type": "json_object" } }),
            "output_config.format.type: Input should be 'json_schema'",
        ),
        (
            json!({ "format": { "type": "json_schema" } }),
            "output_config.format.schema: Field required",
        ),
        (
            json!({ "effort": "turbo" }),
            "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'",
        ),
        (
            json!({ "knob": 1 }),
            "output_config.knob: Extra inputs are not permitted",
        ),
    ] {
        let mut bad = anthropic_req("x");
        bad["output_config"] = config;
        let r = post(&base, Flavor::Anthropic, "/v1/messages", &bad).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.json()["error"]["message"], message);
    }
    // The deprecated beta field is not the GA API's.
    let mut beta = anthropic_req("x");
    beta["output_format"] = json!({ "type": "json_schema", "schema": { "type": "object" } });
    let r = post(&base, Flavor::Anthropic, "/v1/messages", &beta).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "output_format: Extra inputs are not permitted"
    );
}

mod documents;
