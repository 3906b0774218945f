//! Structured outputs whichever provider serves the request: OpenAI `response_format`
//! `json_schema` through Anthropic's `output_config.format`, Anthropic's
//! `output_config.format` through OpenAI and Mistral `response_format`, JSON and
//! streamed, against in-process mock providers that answer a schema with its simplest
//! instance.

use serde_json::{Value, json};

use crate::support::{self, Reassembled, TestGateway};

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "temperature": {"type": "number"},
            "conditions": {"enum": ["sunny", "rainy"]},
        },
        "required": ["city", "temperature", "conditions"],
        "additionalProperties": false,
    })
}

/// The reply's text is a JSON object holding every key the schema requires.
fn assert_follows_schema(r: &Reassembled, ctx: &str) {
    let v: Value = serde_json::from_str(&r.text)
        .unwrap_or_else(|e| panic!("{ctx}: the reply is not JSON ({e}): {:?}", r.text));
    for key in ["city", "temperature", "conditions"] {
        assert!(v.get(key).is_some(), "{ctx}: no `{key}` in {v}");
    }
    assert_eq!(v["city"], "echo: Weather in Zürich?", "{ctx}");
    assert_eq!(v["conditions"], "sunny", "{ctx}");
    assert!(r.tool_calls.is_empty(), "{ctx}");
    assert!(r.terminated, "{ctx}");
}

async fn openai_call(gw: &TestGateway, model: &str, stream: bool, format: &Value) -> Reassembled {
    let mut body = json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "Weather in Zürich?"}],
        "response_format": format,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200, "{model}, stream={stream}");
    let bytes = resp.bytes().await.unwrap();
    if stream {
        support::openai_stream(&bytes)
    } else {
        support::openai_json(&serde_json::from_slice(&bytes).unwrap())
    }
}

async fn anthropic_call(gw: &TestGateway, model: &str, stream: bool, extra: &Value) -> Reassembled {
    let mut body = json!({
        "model": model,
        "max_tokens": 256,
        "stream": stream,
        "messages": [{"role": "user", "content": "Weather in Zürich?"}],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let resp = gw.post("/v1/messages", &body).await;
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(
        status,
        200,
        "{model}, stream={stream}: {}",
        String::from_utf8_lossy(&bytes)
    );
    if stream {
        support::anthropic_stream(&bytes)
    } else {
        support::anthropic_json(&serde_json::from_slice(&bytes).unwrap())
    }
}

#[tokio::test]
async fn openai_json_schema_is_served_by_anthropic_structured_outputs() {
    let gw = TestGateway::start(&support::config("", "", "")).await;
    let format = json!({"type": "json_schema", "json_schema": {
        "name": "Weather", "schema": schema(), "strict": true}});
    for stream in [false, true] {
        let r = openai_call(&gw, "m-anthropic", stream, &format).await;
        let ctx = format!("OpenAI → Anthropic, stream={stream}");
        assert_follows_schema(&r, &ctx);
        assert_eq!(r.stop, "stop", "{ctx}");
        let sent = gw.mock("mock-anthropic").last_body.unwrap();
        assert_eq!(
            sent["output_config"],
            json!({"format": {"type": "json_schema", "schema": schema()}}),
            "{ctx}"
        );
        assert!(sent.get("response_format").is_none(), "{ctx}");
    }
    // `text` and `json_object` have no Anthropic counterpart: plain text, no 400.
    for format in [json!({"type": "text"}), json!({"type": "json_object"})] {
        let r = openai_call(&gw, "m-anthropic", false, &format).await;
        assert_eq!(r.text, "echo: Weather in Zürich?", "{format}");
        let sent = gw.mock("mock-anthropic").last_body.unwrap();
        assert!(sent.get("output_config").is_none(), "{format}");
    }
}

#[tokio::test]
async fn anthropic_output_config_is_served_by_openai_and_mistral() {
    let gw = TestGateway::start(&support::config("", "", "")).await;
    let extra = json!({"output_config": {
        "format": {"type": "json_schema", "schema": schema()}, "effort": "low"}});
    let want_format = json!({"type": "json_schema", "json_schema": {
        "name": "response", "schema": schema(), "strict": true}});
    for (model, provider) in [("m-openai", "mock-openai"), ("m-mistral", "mock-mistral")] {
        for stream in [false, true] {
            let r = anthropic_call(&gw, model, stream, &extra).await;
            let ctx = format!("Anthropic → {provider}, stream={stream}");
            assert_follows_schema(&r, &ctx);
            assert_eq!(r.stop, "end_turn", "{ctx}");
            let sent = gw.mock(provider).last_body.unwrap();
            assert_eq!(sent["response_format"], want_format, "{ctx}");
            assert!(sent.get("output_config").is_none(), "{ctx}");
            // The effort stays with Anthropic: OpenAI's models without reasoning refuse
            // `reasoning_effort`, and Mistral's mock, like its API, refuses unknown fields.
            assert!(sent.get("reasoning_effort").is_none(), "{ctx}");
        }
    }
    // The deprecated beta `output_format` is the same request.
    let beta = json!({"output_format": {"type": "json_schema", "schema": schema()}});
    let r = anthropic_call(&gw, "m-openai", false, &beta).await;
    assert_follows_schema(&r, "beta output_format → OpenAI");
    assert_eq!(
        gw.mock("mock-openai").last_body.unwrap()["response_format"],
        want_format
    );
}

#[tokio::test]
async fn anthropic_output_config_reaches_an_anthropic_upstream_as_ga() {
    let gw = TestGateway::start(&support::config("", "", "")).await;
    let config = json!({"format": {"type": "json_schema", "schema": schema()}, "effort": "high"});
    for stream in [false, true] {
        let r = anthropic_call(
            &gw,
            "m-anthropic",
            stream,
            &json!({"output_config": config}),
        )
        .await;
        assert_follows_schema(&r, &format!("Anthropic → Anthropic, stream={stream}"));
        assert_eq!(
            gw.mock("mock-anthropic").last_body.unwrap()["output_config"],
            config
        );
    }
    // The beta name goes up in its GA place (the mock, like the GA API, has no
    // top-level `output_format`).
    let beta = json!({"output_format": {"type": "json_schema", "schema": schema()}});
    let r = anthropic_call(&gw, "m-anthropic", false, &beta).await;
    assert_follows_schema(&r, "beta output_format → Anthropic");
    let sent = gw.mock("mock-anthropic").last_body.unwrap();
    assert_eq!(
        sent["output_config"],
        json!({"format": {"type": "json_schema", "schema": schema()}})
    );
    assert!(sent.get("output_format").is_none());
}

#[tokio::test]
async fn invalid_structured_output_shapes_are_400_naming_the_field() {
    let gw = TestGateway::start(&support::config("", "", "")).await;
    for (format, param) in [
        (json!("json"), "response_format"),
        (
            json!({"type": "json_schema"}),
            "response_format.json_schema",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "x"}}),
            "response_format.json_schema.schema",
        ),
    ] {
        let body = json!({"model": "m-anthropic", "response_format": format,
            "messages": [{"role": "user", "content": "hi"}]});
        let resp = gw.post("/v1/chat/completions", &body).await;
        assert_eq!(resp.status(), 400, "{format}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_request", "{v}");
        assert_eq!(v["error"]["param"], param, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{param}`")),
            "{v}"
        );
    }
    for (extra, param) in [
        (
            json!({"output_config": {"format": {"type": "json_object"}}}),
            "output_config.format.type",
        ),
        (
            json!({"output_config": {"format": {"type": "json_schema"}}}),
            "output_config.format.schema",
        ),
        (
            json!({"output_config": {"effort": 1}}),
            "output_config.effort",
        ),
        (
            json!({"output_format": {"type": "json_schema", "schema": []}}),
            "output_format.schema",
        ),
    ] {
        let mut body = json!({"model": "m-openai", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let resp = gw.post("/v1/messages", &body).await;
        assert_eq!(resp.status(), 400, "{extra}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{param}`")),
            "{v}"
        );
    }
    // Nothing reached a provider.
    assert_eq!(gw.mock("mock-openai").last_body, None);
    assert_eq!(gw.mock("mock-anthropic").last_body, None);
}
