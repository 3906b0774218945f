use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::canonical::*;
use crate::error::RequestError;
use crate::sse::{SseEvent, SseParser};

fn parse(v: Value) -> Result<ChatRequest, RequestError> {
    parse_request(v.to_string().as_bytes())
}

fn param_of(v: Value) -> Option<String> {
    match parse(v) {
        Ok(r) => panic!("expected an error, parsed {r:?}"),
        Err(e) => e.param,
    }
}

fn base() -> Value {
    json!({"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})
}

fn with(mut v: Value, key: &str, val: Value) -> Value {
    v[key] = val;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove(key);
    }
    v
}

fn user(content: Value) -> Value {
    with(
        base(),
        "messages",
        json!([{"role": "user", "content": content}]),
    )
}

#[test]
fn body_level_errors_have_no_param() {
    for body in [
        &b"\xff\xfe"[..],
        b"{",
        br#"{"model":"\ud800","max_tokens":1,"messages":[]}"#,
        b"[1,2]",
        b"\"text\"",
    ] {
        let e = parse_request(body).expect_err("must fail");
        assert_eq!(e.param, None, "{e:?}");
    }
    let e = parse_request(b"\xff").expect_err("utf8");
    assert!(e.message.contains("UTF-8"), "{e}");
    let e = parse_request(br#"{"model":"\ud800"}"#).expect_err("surrogate");
    assert!(e.message.contains("not valid JSON"), "{e}");
    let e = parse_request(b"[]").expect_err("array");
    assert!(e.message.contains("object"), "{e}");
}

#[test]
fn every_validation_error_names_its_param() {
    let cases: Vec<(Value, &str)> = vec![
        (without(base(), "model"), "model"),
        (with(base(), "model", json!("")), "model"),
        (with(base(), "model", json!(5)), "model"),
        (without(base(), "messages"), "messages"),
        (with(base(), "messages", json!([])), "messages"),
        (with(base(), "messages", json!("hi")), "messages"),
        (
            with(
                base(),
                "messages",
                json!([{"role": "system", "content": "x"}]),
            ),
            "messages[0].role",
        ),
        (
            with(
                base(),
                "messages",
                json!([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]),
            ),
            "messages[1].role",
        ),
        (
            with(
                base(),
                "messages",
                json!([{"role": "user", "content": "a"}, {"role": "assistant"}]),
            ),
            "messages[1]",
        ),
        (without(base(), "max_tokens"), "max_tokens"),
        (with(base(), "max_tokens", json!(0)), "max_tokens"),
        (with(base(), "max_tokens", json!(-1)), "max_tokens"),
        (with(base(), "max_tokens", json!(1_000_001)), "max_tokens"),
        (with(base(), "max_tokens", json!("10")), "max_tokens"),
        (with(base(), "max_tokens", json!(1.5)), "max_tokens"),
        (with(base(), "temperature", json!(1.01)), "temperature"),
        (with(base(), "temperature", json!(-0.1)), "temperature"),
        (with(base(), "temperature", json!("hot")), "temperature"),
        (with(base(), "top_p", json!(1.5)), "top_p"),
        (with(base(), "top_p", json!(-1)), "top_p"),
        (
            with(base(), "stop_sequences", json!([1])),
            "stop_sequences[0]",
        ),
        (with(base(), "stream", json!("yes")), "stream"),
        (with(base(), "system", json!(5)), "system"),
        (
            with(base(), "system", json!([{"type": "image"}])),
            "system[0].type",
        ),
        (
            with(base(), "system", json!([{"type": "text", "text": 1}])),
            "system[0].text",
        ),
        (user(json!(5)), "messages[0].content"),
        (
            user(json!([{"type": "text", "text": "a"}, {"type": "video"}])),
            "messages[0].content[1].type",
        ),
        (user(json!([{"text": "a"}])), "messages[0].content[0].type"),
        (user(json!(["a"])), "messages[0].content[0]"),
        (
            user(json!([{"type": "text", "text": 5}])),
            "messages[0].content[0].text",
        ),
        (
            user(json!([{"type": "document", "source": {}}])),
            "messages[0].content[0].source",
        ),
        (
            user(json!([{"type": "document", "source": {"type": "zip", "data": "x"}}])),
            "messages[0].content[0].source.type",
        ),
        (
            user(json!([{"type": "document", "source": {"type": "base64", "data": "x"}}])),
            "messages[0].content[0].source.media_type",
        ),
        (
            user(
                json!([{"type": "document", "source": {"type": "content", "content": [{"type": "document"}]}}]),
            ),
            "messages[0].content[0].source.content[0].type",
        ),
        (
            user(json!([{"type": "document", "title": 5, "source": {"type": "url", "url": "u"}}])),
            "messages[0].content[0].title",
        ),
        (
            user(json!([{"type": "video"}])),
            "messages[0].content[0].type",
        ),
        (
            user(json!([{"type": "image", "source": {"type": "file", "file_id": "f"}}])),
            "messages[0].content[0].source.type",
        ),
        (
            user(
                json!([{"type": "image", "source": {"type": "base64", "media_type": "image/png"}}]),
            ),
            "messages[0].content[0].source.data",
        ),
        (
            user(json!([{"type": "image", "source": {"type": "url"}}])),
            "messages[0].content[0].source.url",
        ),
        (user(json!([{"type": "image"}])), "messages[0].content[0]"),
        (
            user(json!([{"type": "tool_use", "id": "t", "input": {}}])),
            "messages[0].content[0]",
        ),
        (
            user(json!([{"type": "tool_use", "id": "t", "name": 3, "input": {}}])),
            "messages[0].content[0].name",
        ),
        (
            user(
                json!([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image"}]}]),
            ),
            "messages[0].content[0].content[0].type",
        ),
        (
            user(json!([{"type": "tool_result", "tool_use_id": "t", "content": 5}])),
            "messages[0].content[0].content",
        ),
        (
            user(json!([{"type": "tool_result", "tool_use_id": "t", "is_error": "no"}])),
            "messages[0].content[0].is_error",
        ),
        (
            with(
                base(),
                "tools",
                json!([
                    {"name": "a", "input_schema": {"type": "object"}},
                    {"type": "web_search_20250305", "name": "web_search"},
                ]),
            ),
            "tools[1].type",
        ),
        (
            with(base(), "tools", json!([{"name": "a"}])),
            "tools[0].input_schema",
        ),
        (
            with(base(), "tools", json!([{"input_schema": {}}])),
            "tools[0]",
        ),
        (
            with(base(), "tool_choice", json!({"type": "sometimes"})),
            "tool_choice.type",
        ),
        (
            with(base(), "tool_choice", json!({"type": "tool"})),
            "tool_choice.name",
        ),
        (
            with(
                base(),
                "tool_choice",
                json!({"type": "auto", "disable_parallel_tool_use": 1}),
            ),
            "tool_choice.disable_parallel_tool_use",
        ),
        (
            with(base(), "metadata", json!({"user_id": 5})),
            "metadata.user_id",
        ),
        (with(base(), "metadata", json!([])), "metadata"),
    ];
    for (body, want) in cases {
        let got = param_of(body.clone());
        assert_eq!(got.as_deref(), Some(want), "body {body}");
    }
}

#[test]
fn validation_messages_name_the_field() {
    let e = parse(with(base(), "temperature", json!(1.5))).expect_err("range");
    assert!(
        e.message.contains("`temperature`") && e.message.contains("0 and 1"),
        "{e}"
    );
    let e = parse(user(json!([{"type": "text", "text": 5}]))).expect_err("type");
    assert!(e.message.contains("`messages[0].content[0].text`"), "{e}");
    let e = parse(without(base(), "max_tokens")).expect_err("missing");
    assert!(e.message.contains("max_tokens"), "{e}");
}

#[test]
fn boundaries_are_accepted() {
    let ok = |v: Value| parse(v).map(|_| ()).expect("accepted");
    ok(with(base(), "max_tokens", json!(1)));
    ok(with(base(), "max_tokens", json!(1_000_000)));
    ok(with(base(), "temperature", json!(0)));
    ok(with(base(), "temperature", json!(1.0)));
    ok(with(base(), "top_p", json!(0.0)));
    ok(with(base(), "top_p", json!(1)));
    ok(with(base(), "system", Value::Null));
    ok(with(
        base(),
        "tools",
        json!([{"type": "custom", "name": "a", "input_schema": {}}]),
    ));
}

fn rich() -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [
            {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Use tools."},
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these, and the weather?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris", "unit": "c"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                 "content": [{"type": "text", "text": "clock"}, {"type": "text", "text": "broken"}]},
                {"type": "tool_result", "tool_use_id": "toolu_3"},
                {"type": "text", "text": "Thanks"},
            ]},
        ],
        "tools": [
            {"name": "get_weather", "description": "Weather now",
             "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}},
            {"type": "custom", "name": "get_time", "input_schema": {"type": "object"}},
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "stop_sequences": ["END"],
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "metadata": {"user_id": "u-42", "trace": "abc"},
        "stream": true,
    })
}

#[test]
fn parses_a_rich_request() {
    let r = parse(rich()).expect("parses");
    assert_eq!(r.model, "claude-sonnet-4-5");
    assert_eq!(
        r.system_text().as_deref(),
        Some("You are terse.\n\nUse tools.")
    );
    assert_eq!(r.max_tokens, Some(1024));
    assert_eq!(r.temperature, Some(0.5));
    assert_eq!(r.top_p, Some(0.9));
    assert_eq!(r.stop, vec!["END".to_owned()]);
    assert_eq!(r.user.as_deref(), Some("u-42"));
    assert!(r.stream && r.include_usage);
    assert_eq!(r.seed, None);
    assert_eq!(r.response_format, None);
    assert_eq!(r.tool_choice, Some(ToolChoice::Required));
    assert_eq!(r.parallel_tool_calls, Some(false));
    assert_eq!(r.messages.len(), 3);
    assert_eq!(
        r.messages[0],
        Message {
            role: Role::User,
            content: vec![
                Block::Text {
                    text: "What is in these, and the weather?".into(),
                    cache_control: None,
                },
                Block::Image {
                    source: ImageSource::Base64 {
                        media_type: "image/png".into(),
                        data: "iVBORw0KGgo=".into(),
                    },
                    detail: None,
                    cache_control: None,
                },
                Block::Image {
                    source: ImageSource::Url {
                        url: "https://example.com/a.jpg".into()
                    },
                    detail: None,
                    cache_control: None,
                },
            ],
        }
    );
    assert_eq!(
        r.messages[1],
        Message {
            role: Role::Assistant,
            content: vec![
                Block::Thinking {
                    thinking: "hmm".into(),
                    signature: Some("sig".into()),
                },
                Block::Text {
                    text: "Checking.".into(),
                    cache_control: None,
                },
                Block::ToolCall {
                    id: "toolu_1".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"location":"Paris","unit":"c"}"#.into(),
                    cache_control: None,
                },
                Block::ToolCall {
                    id: "toolu_2".into(),
                    name: "get_time".into(),
                    arguments: "{}".into(),
                    cache_control: None,
                },
            ],
        }
    );
    assert_eq!(
        r.messages[2].content,
        vec![
            Block::ToolResult {
                tool_call_id: "toolu_1".into(),
                content: "18C".into(),
                is_error: false,
                cache_control: None,
            },
            Block::ToolResult {
                tool_call_id: "toolu_2".into(),
                content: "clock\nbroken".into(),
                is_error: true,
                cache_control: None,
            },
            Block::ToolResult {
                tool_call_id: "toolu_3".into(),
                content: String::new(),
                is_error: false,
                cache_control: None,
            },
            Block::Text {
                text: "Thanks".into(),
                cache_control: None,
            },
        ]
    );
    assert_eq!(r.tools.len(), 2);
    assert_eq!(r.tools[0].name, "get_weather");
    assert_eq!(r.tools[0].description.as_deref(), Some("Weather now"));
    assert_eq!(
        r.tools[0].parameters["properties"]["location"]["type"],
        "string"
    );
    assert_eq!(r.tools[1].description, None);
    assert_eq!(r.extra.format, Some(Format::Anthropic));
    let keys: Vec<&str> = r.extra.fields.keys().map(String::as_str).collect();
    assert_eq!(keys, ["metadata", "thinking", "top_k"]);
    assert_eq!(r.extra.fields["metadata"], json!({"trace": "abc"}));
    assert_eq!(r.extra.fields["top_k"], json!(40));
}

#[test]
fn tool_choice_variants() {
    let tc = |v: Value| {
        let r = parse(with(base(), "tool_choice", v)).expect("parses");
        (r.tool_choice, r.parallel_tool_calls)
    };
    assert_eq!(tc(json!({"type": "auto"})), (Some(ToolChoice::Auto), None));
    assert_eq!(
        tc(json!({"type": "any"})),
        (Some(ToolChoice::Required), None)
    );
    assert_eq!(tc(json!({"type": "none"})), (Some(ToolChoice::None), None));
    assert_eq!(
        tc(json!({"type": "tool", "name": "f", "disable_parallel_tool_use": false})),
        (Some(ToolChoice::Tool("f".into())), Some(true))
    );
    assert_eq!(
        tc(json!({"type": "auto", "disable_parallel_tool_use": true})),
        (Some(ToolChoice::Auto), Some(false))
    );
    let r = parse(base()).expect("parses");
    assert_eq!(
        (r.tool_choice, r.parallel_tool_calls, r.stream),
        (None, None, false)
    );
    assert_eq!(
        r.messages[0].content,
        vec![Block::Text {
            text: "hi".into(),
            cache_control: None
        }]
    );
    assert!(r.include_usage);
    assert_eq!(r.extra.format, Some(Format::Anthropic));
}

fn encoded(req: &ChatRequest, model: &str) -> Value {
    serde_json::from_slice(&encode_request(req, model)).expect("json")
}

fn msg(role: Role, content: Vec<Block>) -> Message {
    Message { role, content }
}

fn text(t: &str) -> Block {
    Block::Text {
        text: t.into(),
        cache_control: None,
    }
}

#[test]
fn encode_request_field_by_field() {
    let req = ChatRequest {
        model: "gateway-name".into(),
        system: Some("Be brief.".into()),
        messages: vec![
            msg(Role::User, vec![text("a")]),
            msg(
                Role::User,
                vec![
                    text("b"),
                    Block::Image {
                        source: ImageSource::Url {
                            url: "https://x/y.png".into(),
                        },
                        // OpenAI-only: not sent to Anthropic
                        detail: Some(ImageDetail::High),
                        cache_control: None,
                    },
                ],
            ),
            msg(
                Role::Assistant,
                vec![
                    text(""),
                    Block::ToolCall {
                        id: "c1".into(),
                        name: "f".into(),
                        arguments: r#"{"x":1}"#.into(),
                        cache_control: None,
                    },
                    Block::ToolCall {
                        id: "c2".into(),
                        name: "g".into(),
                        arguments: r#"{"x":"#.into(),
                        cache_control: None,
                    },
                    Block::ToolCall {
                        id: "c3".into(),
                        name: "h".into(),
                        arguments: String::new(),
                        cache_control: None,
                    },
                ],
            ),
            msg(
                Role::User,
                vec![Block::ToolResult {
                    tool_call_id: "c1".into(),
                    content: "one".into(),
                    is_error: false,
                    cache_control: None,
                }],
            ),
            msg(
                Role::User,
                vec![Block::ToolResult {
                    tool_call_id: "c2".into(),
                    content: "two".into(),
                    is_error: true,
                    cache_control: None,
                }],
            ),
            msg(Role::User, vec![text("and?")]),
            msg(
                Role::User,
                vec![Block::Image {
                    source: ImageSource::Base64 {
                        media_type: "image/jpeg".into(),
                        data: "AAAA".into(),
                    },
                    detail: None,
                    cache_control: None,
                }],
            ),
        ],
        tools: vec![Tool {
            name: "f".into(),
            description: Some("does f".into()),
            parameters: json!({"type": "object"}),
            // OpenAI-only: not sent to Anthropic
            strict: Some(true),
            cache_control: None,
        }],
        tool_choice: Some(ToolChoice::Tool("f".into())),
        max_tokens: None,
        temperature: Some(1.7),
        top_p: Some(0.3),
        frequency_penalty: Some(0.5),
        presence_penalty: Some(-0.5),
        stop: vec!["\n\nHuman:".into()],
        seed: Some(7),
        user: Some("u1".into()),
        // No Anthropic counterpart (see `encode_request_structured_outputs`).
        response_format: Some(ResponseFormat::JsonObject),
        effort: None,
        parallel_tool_calls: Some(false),
        stream: true,
        include_usage: false,
        extra: Extra::default(),
    };
    let v = encoded(&req, "claude-upstream");
    assert_eq!(v["model"], "claude-upstream");
    assert_eq!(v["max_tokens"], DEFAULT_MAX_TOKENS);
    assert_eq!(v["system"], "Be brief.");
    assert_eq!(v["temperature"], 1.0);
    assert_eq!(v["top_p"], 0.3);
    assert_eq!(v["stop_sequences"], json!(["\n\nHuman:"]));
    assert_eq!(v["metadata"], json!({"user_id": "u1"}));
    assert_eq!(v["stream"], true);
    assert_eq!(
        v["tools"],
        json!([{"name": "f", "description": "does f", "input_schema": {"type": "object"}}])
    );
    assert_eq!(
        v["tool_choice"],
        json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true})
    );
    for dropped in [
        "seed",
        "response_format",
        "parallel_tool_calls",
        "stop",
        "user",
        "include_usage",
        "frequency_penalty",
        "presence_penalty",
    ] {
        assert!(v.get(dropped).is_none(), "{dropped} must not be sent");
    }
    assert_eq!(
        v["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "a"},
                {"type": "text", "text": "b"},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "c1", "name": "f", "input": {"x": 1}},
                {"type": "tool_use", "id": "c2", "name": "g", "input": {}},
                {"type": "tool_use", "id": "c3", "name": "h", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "one"},
                {"type": "tool_result", "tool_use_id": "c2", "content": "two", "is_error": true},
                {"type": "text", "text": "and?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}},
            ]},
        ])
    );
}

#[test]
fn encode_request_tool_choice_mapping_and_omissions() {
    let tool = Tool {
        name: "f".into(),
        description: None,
        parameters: json!({}),
        strict: None,
        cache_control: None,
    };
    let req = |choice: Option<ToolChoice>, parallel: Option<bool>, tools: bool| ChatRequest {
        messages: vec![msg(Role::User, vec![text("x")])],
        tools: if tools { vec![tool.clone()] } else { vec![] },
        tool_choice: choice,
        parallel_tool_calls: parallel,
        max_tokens: Some(10),
        ..ChatRequest::default()
    };
    let tc = |r: ChatRequest| encoded(&r, "m").get("tool_choice").cloned();
    assert_eq!(
        tc(req(Some(ToolChoice::Auto), None, true)),
        Some(json!({"type": "auto"}))
    );
    assert_eq!(
        tc(req(Some(ToolChoice::Required), None, true)),
        Some(json!({"type": "any"}))
    );
    assert_eq!(
        tc(req(Some(ToolChoice::None), Some(false), true)),
        Some(json!({"type": "none"}))
    );
    assert_eq!(
        tc(req(None, Some(false), true)),
        Some(json!({"type": "auto", "disable_parallel_tool_use": true}))
    );
    assert_eq!(
        tc(req(Some(ToolChoice::Required), Some(true), true)),
        Some(json!({"type": "any", "disable_parallel_tool_use": false}))
    );
    assert_eq!(tc(req(None, None, true)), None);
    assert_eq!(
        tc(req(Some(ToolChoice::Required), Some(false), false)),
        None
    );

    let v = encoded(&req(None, None, false), "m");
    assert_eq!(v["max_tokens"], 10);
    for absent in [
        "system",
        "tools",
        "stop_sequences",
        "temperature",
        "top_p",
        "metadata",
        "stream",
    ] {
        assert!(v.get(absent).is_none(), "{absent}");
    }
    let cold = ChatRequest {
        temperature: Some(-0.5),
        ..req(None, None, false)
    };
    assert_eq!(encoded(&cold, "m")["temperature"], 0.0);
}

#[test]
fn encode_request_writes_extras_only_to_their_own_format() {
    let mut fields = serde_json::Map::new();
    fields.insert("top_k".into(), json!(5));
    fields.insert("metadata".into(), json!({"trace": "t"}));
    fields.insert("model".into(), json!("sneaky"));
    let mut req = ChatRequest {
        messages: vec![msg(Role::Assistant, vec![text("first")])],
        user: Some("u".into()),
        extra: Extra {
            format: Some(Format::Anthropic),
            fields,
        },
        ..ChatRequest::default()
    };
    let v = encoded(&req, "m");
    assert_eq!(v["top_k"], 5);
    assert_eq!(v["model"], "m");
    assert_eq!(v["metadata"], json!({"trace": "t", "user_id": "u"}));
    // A conversation starting with the assistant is sent as is.
    assert_eq!(v["messages"][0]["role"], "assistant");
    req.extra.format = Some(Format::OpenAi);
    let v = encoded(&req, "m");
    assert!(v.get("top_k").is_none());
    assert_eq!(v["metadata"], json!({"user_id": "u"}));
}

#[test]
fn encode_response_writes_a_message_object() {
    let resp = ChatResponse {
        id: "chatcmpl-1".into(),
        model: "gpt-x".into(),
        content: vec![
            text("Let me look."),
            Block::ToolCall {
                id: "call_1".into(),
                name: "f".into(),
                arguments: r#"{"q":"a"}"#.into(),
                cache_control: None,
            },
            Block::ToolCall {
                id: "call_2".into(),
                name: "g".into(),
                arguments: "not json".into(),
                cache_control: None,
            },
        ],
        stop_reason: Some(StopReason::ToolUse),
        usage: Usage {
            input_tokens: 12,
            output_tokens: 34,
            ..Default::default()
        },
    };
    let v: Value = serde_json::from_slice(&encode_response(&resp)).expect("json");
    assert_eq!(
        v,
        json!({
            "id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "gpt-x",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "call_1", "name": "f", "input": {"q": "a"}},
                {"type": "tool_use", "id": "call_2", "name": "g", "input": {}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 34},
        })
    );
    let names = [
        (StopReason::EndTurn, "end_turn"),
        (StopReason::MaxTokens, "max_tokens"),
        (StopReason::StopSequence, "stop_sequence"),
        (StopReason::ContentFilter, "refusal"),
    ];
    for (reason, name) in names {
        let r = ChatResponse {
            id: "msg_1".into(),
            stop_reason: Some(reason),
            ..resp.clone()
        };
        let v: Value = serde_json::from_slice(&encode_response(&r)).expect("json");
        assert_eq!(
            (v["stop_reason"].as_str(), v["id"].as_str()),
            (Some(name), Some("msg_1"))
        );
    }
}

#[test]
fn decode_response_reads_a_message() {
    let body = json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": "...", "signature": "x"},
            {"type": "text", "text": "Hello!"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "SF"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 100,
                  "output_tokens": 7, "service_tier": "standard"},
    });
    let r = decode_response(body.to_string().as_bytes()).expect("decodes");
    assert_eq!(r.id, "msg_01XFDUDYJgAACzvnptvVoYEL");
    assert_eq!(r.model, "claude-sonnet-4-5-20250929");
    assert_eq!(
        r.content,
        vec![
            Block::Thinking {
                thinking: "...".into(),
                signature: Some("x".into()),
            },
            text("Hello!"),
            Block::ToolCall {
                id: "toolu_1".into(),
                name: "get_weather".into(),
                arguments: r#"{"location":"SF"}"#.into(),
                cache_control: None,
            },
        ]
    );
    assert_eq!(r.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 115,
            output_tokens: 7,
            cache_creation_input_tokens: Some(5),
            cache_read_input_tokens: Some(100),
        }
    );

    for (name, want) in [
        ("end_turn", StopReason::EndTurn),
        ("max_tokens", StopReason::MaxTokens),
        ("stop_sequence", StopReason::StopSequence),
        ("refusal", StopReason::ContentFilter),
        ("pause_turn", StopReason::EndTurn),
        ("model_context_window_exceeded", StopReason::MaxTokens),
    ] {
        let b = json!({"id": "m", "content": [], "stop_reason": name, "usage": {"input_tokens": 1, "output_tokens": 1}});
        assert_eq!(
            decode_response(b.to_string().as_bytes())
                .expect("ok")
                .stop_reason,
            Some(want)
        );
    }
    assert!(decode_response(b"{\"type\":\"error\"}").is_err());
    assert!(decode_response(b"nope").is_err());
}

#[test]
fn errors_both_ways() {
    let body = error_body("overloaded_error", "Overloaded \"now\"");
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded \"now\""}})
    );
    assert_eq!(
        decode_error(&body),
        Some(ProviderError {
            kind: "overloaded_error".into(),
            message: "Overloaded \"now\"".into()
        })
    );
    let real = br#"{"type":"error","error":{"type":"not_found_error","message":"The requested resource could not be found."},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#;
    assert_eq!(
        decode_error(real).map(|e| e.kind),
        Some("not_found_error".into())
    );
    assert_eq!(decode_error(b"<html>502</html>"), None);
    assert_eq!(decode_error(b"{\"message\":\"x\"}"), None);
    assert_eq!(API_VERSION, "2023-06-01");
}

/// The tool-use example of Anthropic's streaming documentation, as recorded there.
const DOCS_STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-6","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":","}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" let"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'s"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" check"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" the weather for San Francisco, CA:"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" Francisc"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"o,"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" CA\""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":", "}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"unit\": \"fah"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"renheit\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"#;

fn sse_events(bytes: &[u8]) -> Vec<SseEvent> {
    let mut p = SseParser::new(1 << 20);
    let mut out = Vec::new();
    p.feed(bytes, &mut out).expect("within bound");
    p.finish(&mut out);
    out
}

fn decode_all(bytes: &[u8]) -> Vec<StreamEvent> {
    let mut d = StreamDecoder::new();
    let mut out = Vec::new();
    for ev in sse_events(bytes) {
        d.decode(&ev, &mut out).expect("decodes");
    }
    out
}

fn td(t: &str) -> StreamEvent {
    StreamEvent::TextDelta { text: t.into() }
}

fn tcd(index: u32, a: &str) -> StreamEvent {
    StreamEvent::ToolCallDelta {
        index,
        arguments: a.into(),
    }
}

#[test]
fn decodes_the_documented_stream() {
    let got = decode_all(DOCS_STREAM.as_bytes());
    let want = vec![
        StreamEvent::Start {
            id: "msg_014p7gG3wDgGV9EUtLvnow3U".into(),
            model: "claude-opus-4-6".into(),
            usage: Some(Usage {
                input_tokens: 472,
                output_tokens: 2,
                ..Default::default()
            }),
        },
        StreamEvent::Usage(Usage {
            input_tokens: 472,
            output_tokens: 2,
            ..Default::default()
        }),
        td("Okay"),
        td(","),
        td(" let"),
        td("'s"),
        td(" check"),
        td(" the weather for San Francisco, CA:"),
        StreamEvent::ToolCallStart {
            index: 0,
            id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
            name: "get_weather".into(),
        },
        tcd(0, "{\"location\":"),
        tcd(0, " \"San"),
        tcd(0, " Francisc"),
        tcd(0, "o,"),
        tcd(0, " CA\""),
        tcd(0, ", "),
        tcd(0, "\"unit\": \"fah"),
        tcd(0, "renheit\"}"),
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
        },
        StreamEvent::Usage(Usage {
            input_tokens: 472,
            output_tokens: 89,
            ..Default::default()
        }),
        StreamEvent::Done,
    ];
    assert_eq!(got, want);
    let args: String = got
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallDelta { arguments, .. } => Some(arguments.as_str()),
            _ => None,
        })
        .collect();
    let args: Value = serde_json::from_str(&args).expect("complete json");
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
}

#[test]
fn decoder_handles_thinking_errors_cache_usage_and_garbage() {
    let s = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],"usage":{"input_tokens":3,"cache_read_input_tokens":10,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"q\":1}"}}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"t_a","name":"a","input":{}}}

event: content_block_start
data: {"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"t_b","name":"b","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{}"}}

event: brand_new_event
data: {"type":"brand_new_event","x":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"input_tokens":4,"output_tokens":9}}

event: error
data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}

"#;
    let start_usage = Usage {
        input_tokens: 13,
        output_tokens: 1,
        cache_creation_input_tokens: None,
        cache_read_input_tokens: Some(10),
    };
    assert_eq!(
        decode_all(s.as_bytes()),
        vec![
            StreamEvent::Start {
                id: "msg_1".into(),
                model: "m".into(),
                usage: Some(start_usage)
            },
            StreamEvent::Usage(start_usage),
            StreamEvent::ThinkingDelta {
                thinking: "Let me".into()
            },
            StreamEvent::SignatureDelta {
                signature: "EqQB".into()
            },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "t_a".into(),
                name: "a".into()
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "t_b".into(),
                name: "b".into()
            },
            tcd(1, "{}"),
            StreamEvent::Finish {
                stop_reason: StopReason::MaxTokens
            },
            StreamEvent::Usage(Usage {
                input_tokens: 14,
                output_tokens: 9,
                cache_creation_input_tokens: None,
                cache_read_input_tokens: Some(10),
            }),
            StreamEvent::Error {
                kind: "overloaded_error".into(),
                message: "Overloaded".into()
            },
        ]
    );
    let mut d = StreamDecoder::new();
    let mut out = Vec::new();
    let bad = SseEvent {
        event: Some("message_start".into()),
        data: "{not json".into(),
    };
    assert!(d.decode(&bad, &mut out).is_err());
    let bad = SseEvent {
        event: None,
        data: r#"{"type":"content_block_delta"}"#.into(),
    };
    assert!(d.decode(&bad, &mut out).is_err());
    assert!(out.is_empty());
}

fn encode_all(events: &[StreamEvent]) -> Vec<u8> {
    let mut e = StreamEncoder::new();
    let mut out = Vec::new();
    for ev in events {
        e.encode(ev, &mut out);
    }
    out
}

fn start(input: Option<u64>) -> StreamEvent {
    StreamEvent::Start {
        id: "msg_abc".into(),
        model: "claude-x".into(),
        usage: input.map(|n| Usage {
            input_tokens: n,
            ..Default::default()
        }),
    }
}

#[test]
fn encoder_writes_the_documented_wire_shape() {
    let bytes = encode_all(&[
        start(Some(5)),
        td("Hi"),
        StreamEvent::ToolCallStart {
            index: 0,
            id: "toolu_1".into(),
            name: "f".into(),
        },
        tcd(0, "{\"a\":"),
        tcd(0, ""),
        tcd(0, "1}"),
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
        },
        StreamEvent::Usage(Usage {
            input_tokens: 5,
            output_tokens: 9,
            ..Default::default()
        }),
        StreamEvent::Done,
        td("after done is ignored"),
    ]);
    let text = String::from_utf8(bytes.clone()).expect("utf8");
    assert!(text.starts_with("event: message_start\ndata: {"), "{text}");
    assert!(
        text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{text}"
    );
    let evs = sse_events(&bytes);
    let datas: Vec<Value> = evs
        .iter()
        .map(|e| serde_json::from_str(&e.data).expect("json"))
        .collect();
    let names: Vec<&str> = evs
        .iter()
        .map(|e| e.event.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for (name, data) in names.iter().zip(&datas) {
        assert_eq!(data["type"], *name, "event name and data type agree");
    }
    assert_eq!(
        datas[0]["message"],
        json!({"id": "msg_abc", "type": "message", "role": "assistant", "model": "claude-x",
               "content": [], "stop_reason": null, "stop_sequence": null,
               "usage": {"input_tokens": 5, "output_tokens": 0}})
    );
    assert_eq!(
        datas[2],
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        datas[3],
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}})
    );
    assert_eq!(datas[4], json!({"type": "content_block_stop", "index": 0}));
    assert_eq!(
        datas[5],
        json!({"type": "content_block_start", "index": 1,
               "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}})
    );
    assert_eq!(
        datas[6],
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}})
    );
    assert_eq!(datas[8], json!({"type": "content_block_stop", "index": 1}));
    assert_eq!(
        datas[9],
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"output_tokens": 9, "input_tokens": 5}})
    );
}

#[test]
fn encoder_reopens_text_after_tools_and_routes_interleaved_tool_deltas() {
    let bytes = encode_all(&[
        start(None),
        StreamEvent::ToolCallStart {
            index: 0,
            id: "a".into(),
            name: "fa".into(),
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: "b".into(),
            name: "fb".into(),
        },
        tcd(0, "{}"),
        tcd(1, "{\"x\":2}"),
        tcd(7, "{orphan}"),
        td("done"),
        td(""),
        StreamEvent::Done,
    ]);
    let evs = sse_events(&bytes);
    let datas: Vec<Value> = evs
        .iter()
        .map(|e| serde_json::from_str(&e.data).expect("json"))
        .collect();
    let summary: Vec<String> = datas
        .iter()
        .map(|d| format!("{}:{}", d["type"].as_str().unwrap_or(""), d["index"]))
        .collect();
    assert_eq!(
        summary,
        [
            "message_start:null",
            "ping:null",
            "content_block_start:0",
            "content_block_stop:0",
            "content_block_start:1",
            "content_block_delta:0",
            "content_block_delta:1",
            "content_block_stop:1",
            "content_block_start:2",
            "content_block_delta:2",
            "content_block_stop:2",
            "message_delta:null",
            "message_stop:null",
        ]
    );
    assert_eq!(datas[0]["message"]["usage"]["input_tokens"], 0);
    // No Finish and no Usage: end_turn and zero usage.
    assert_eq!(datas[11]["delta"]["stop_reason"], "end_turn");
    assert_eq!(
        datas[11]["usage"],
        json!({"output_tokens": 0, "input_tokens": 0})
    );
}

#[test]
fn encoder_errors_and_id_prefix() {
    let bytes = encode_all(&[
        StreamEvent::Start {
            id: "chatcmpl-9".into(),
            model: "gpt".into(),
            usage: Some(Usage {
                input_tokens: 1,
                ..Default::default()
            }),
        },
        td("x"),
        StreamEvent::Error {
            kind: "api_error".into(),
            message: "upstream died".into(),
        },
        StreamEvent::Done,
    ]);
    let evs = sse_events(&bytes);
    let last = evs.last().expect("events");
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(
        serde_json::from_str::<Value>(&last.data).expect("json"),
        json!({"type": "error", "error": {"type": "api_error", "message": "upstream died"}})
    );
    assert!(
        !evs.iter()
            .any(|e| e.event.as_deref() == Some("message_stop"))
    );
    let first: Value = serde_json::from_str(&evs[0].data).expect("json");
    assert_eq!(first["message"]["id"], "msg_chatcmpl-9");

    let mut enc = StreamEncoder::new();
    let mut out = Vec::new();
    enc.encode_error("overloaded_error", "busy", &mut out);
    assert_eq!(
        String::from_utf8(out).expect("utf8"),
        "event: error\ndata: {\"error\":{\"message\":\"busy\",\"type\":\"overloaded_error\"},\"type\":\"error\"}\n\n"
    );
}

#[test]
fn stream_round_trip_encoder_to_decoder() {
    // As an OpenAI upstream orders them (Finish, Usage, Done) and with Anthropic's order.
    let openai_order = vec![
        start(Some(21)),
        StreamEvent::Usage(Usage {
            input_tokens: 21,
            output_tokens: 0,
            ..Default::default()
        }),
        td("Héllo 🌍"),
        td(" world\nline two"),
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_1".into(),
            name: "get_weather".into(),
        },
        tcd(0, "{\"city\":"),
        tcd(0, "\"Paris\"}"),
        StreamEvent::ToolCallStart {
            index: 1,
            id: "call_2".into(),
            name: "get_time".into(),
        },
        tcd(1, "{}"),
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
        },
        StreamEvent::Usage(Usage {
            input_tokens: 21,
            output_tokens: 40,
            ..Default::default()
        }),
        StreamEvent::Done,
    ];
    assert_eq!(decode_all(&encode_all(&openai_order)), openai_order);

    let mut usage_first = openai_order.clone();
    let n = usage_first.len();
    usage_first.swap(n - 3, n - 2);
    // The encoder defers both to message_delta, so the decoder gives the canonical order.
    assert_eq!(decode_all(&encode_all(&usage_first)), openai_order);

    // And the documented Anthropic stream survives decode → encode → decode, the
    // provisional output count of message_start included.
    let docs = decode_all(DOCS_STREAM.as_bytes());
    assert_eq!(decode_all(&encode_all(&docs)), docs);
}

fn arb_json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

fn arb_args() -> impl Strategy<Value = Value> {
    let inner = prop::collection::btree_map(".{0,8}", arb_json_leaf(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    let field = prop_oneof![
        arb_json_leaf(),
        inner,
        prop::collection::vec(arb_json_leaf(), 0..3).prop_map(Value::from)
    ];
    prop::collection::btree_map(".{0,10}", field, 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn arb_text() -> impl Strategy<Value = String> {
    "(?s).{1,30}"
}

fn arb_tool_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_-]{1,64}"
}

prop_compose! {
    fn arb_body()(
        system in prop::option::of(prop::collection::vec(arb_text(), 1..3)),
        first in arb_text(),
        say in prop::option::of(arb_text()),
        calls in prop::collection::vec((arb_text(), arb_tool_name(), arb_args()), 1..4),
        results in prop::collection::vec((arb_text(), any::<bool>()), 1..3),
        follow in prop::option::of(arb_text()),
        tools in prop::collection::vec((arb_tool_name(), prop::option::of(arb_text())), 0..3),
        choice in 0usize..6,
        forced in arb_tool_name(),
        temperature in prop::option::of(0u8..=8),
        stop in prop::collection::vec(arb_text(), 0..3),
        user in prop::option::of(arb_text()),
        max_tokens in 1u32..=1_000_000,
        stream in any::<bool>(),
        top_k in prop::option::of(1u32..500),
    ) -> Value {
        let mut assistant: Vec<Value> = say.into_iter().map(|t| json!({"type": "text", "text": t})).collect();
        for (id, name, input) in &calls {
            assistant.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        }
        let mut user_blocks: Vec<Value> = results
            .iter()
            .zip(&calls)
            .map(|((content, is_error), (id, _, _))| {
                json!({"type": "tool_result", "tool_use_id": id, "content": content, "is_error": is_error})
            })
            .collect();
        if let Some(t) = follow {
            user_blocks.push(json!({"type": "text", "text": t}));
        }
        let mut body = json!({
            "model": "claude-test",
            "max_tokens": max_tokens,
            "messages": [
                {"role": "user", "content": first},
                {"role": "assistant", "content": assistant},
                {"role": "user", "content": user_blocks},
            ],
            "stream": stream,
        });
        if let Some(parts) = system {
            body["system"] = parts.iter().map(|t| json!({"type": "text", "text": t})).collect();
        }
        if !tools.is_empty() {
            body["tools"] = tools
                .iter()
                .map(|(n, d)| json!({"name": n, "description": d, "input_schema": {"type": "object"}}))
                .collect();
            body["tool_choice"] = match choice {
                0 => json!({"type": "auto"}),
                1 => json!({"type": "any", "disable_parallel_tool_use": true}),
                2 => json!({"type": "none"}),
                3 => json!({"type": "tool", "name": forced, "disable_parallel_tool_use": false}),
                _ => Value::Null,
            };
        }
        if let Some(t) = temperature {
            body["temperature"] = json!(f64::from(t) / 8.0);
        }
        if !stop.is_empty() {
            body["stop_sequences"] = json!(stop);
        }
        if let Some(u) = user {
            body["metadata"] = json!({"user_id": u});
        }
        if let Some(k) = top_k {
            body["top_k"] = json!(k);
        }
        body
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn parse_encode_parse_is_identity(body in arb_body()) {
        let first = parse_request(body.to_string().as_bytes()).expect("generated bodies are valid");
        let again = parse_request(&encode_request(&first, &first.model)).expect("re-encoded body is valid");
        prop_assert_eq!(&again, &first);
    }
}

// === prompt caching and extended thinking ===

/// A tool-use turn with extended thinking and prompt caching, as a client sends it: every
/// place `cache_control` may go, and thinking blocks echoed back in the assistant turn.
fn cached_thinking_request() -> Value {
    json!({
        "model": "claude-x",
        "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "system": [
            {"type": "text", "text": "You are a contracts lawyer."},
            {"type": "text", "text": "<the whole contract>",
             "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ],
        "tools": [
            {"name": "lookup", "description": "Finds a clause",
             "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}},
            {"name": "cite", "input_schema": {"type": "object"},
             "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What does clause 4 say?",
                 "cache_control": {"type": "ephemeral", "ttl": "5m"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                 "cache_control": {"type": "ephemeral"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Look clause 4 up.", "signature": "EqQBCgIYAhIM"},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                {"type": "text", "text": "Looking it up."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "clause 4"},
                 "cache_control": {"type": "ephemeral"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Payment in 30 days.",
                 "cache_control": {"type": "ephemeral"}},
            ]},
        ],
    })
}

fn ephemeral(ttl: Option<&str>) -> Option<CacheControl> {
    let mut m = serde_json::Map::new();
    m.insert("type".into(), json!("ephemeral"));
    if let Some(ttl) = ttl {
        m.insert("ttl".into(), json!(ttl));
    }
    Some(CacheControl(m))
}

#[test]
fn parse_keeps_cache_control_and_thinking() {
    let r = parse(cached_thinking_request()).expect("parses");
    assert_eq!(
        r.system,
        Some(System::Blocks(vec![
            SystemBlock {
                text: "You are a contracts lawyer.".into(),
                cache_control: None,
            },
            SystemBlock {
                text: "<the whole contract>".into(),
                cache_control: ephemeral(Some("1h")),
            },
        ]))
    );
    assert_eq!(
        r.system_text().as_deref(),
        Some("You are a contracts lawyer.\n\n<the whole contract>")
    );
    assert_eq!(r.tools[0].cache_control, None);
    assert_eq!(r.tools[1].cache_control, ephemeral(None));
    assert_eq!(
        r.messages[0].content,
        vec![
            Block::Text {
                text: "What does clause 4 say?".into(),
                cache_control: ephemeral(Some("5m")),
            },
            Block::Image {
                source: ImageSource::Base64 {
                    media_type: "image/png".into(),
                    data: "iVBO".into(),
                },
                detail: None,
                cache_control: ephemeral(None),
            },
        ]
    );
    assert_eq!(
        r.messages[1].content,
        vec![
            Block::Thinking {
                thinking: "Look clause 4 up.".into(),
                signature: Some("EqQBCgIYAhIM".into()),
            },
            Block::RedactedThinking {
                data: "EmwKAhgBEgy3va3pzix".into(),
            },
            text("Looking it up."),
            Block::ToolCall {
                id: "toolu_1".into(),
                name: "lookup".into(),
                arguments: r#"{"q":"clause 4"}"#.into(),
                cache_control: ephemeral(None),
            },
        ]
    );
    assert_eq!(
        r.messages[2].content,
        vec![Block::ToolResult {
            tool_call_id: "toolu_1".into(),
            content: "Payment in 30 days.".into(),
            is_error: false,
            cache_control: ephemeral(None),
        }]
    );
    // `thinking` (the request field) travels in extra, for Anthropic only.
    assert_eq!(
        r.extra.fields.get("thinking"),
        Some(&json!({"type": "enabled", "budget_tokens": 1024}))
    );
}

#[test]
fn anthropic_upstream_receives_cache_control_and_thinking_exactly() {
    let client = cached_thinking_request();
    let r = parse(client.clone()).expect("parses");
    let sent = encoded(&r, "claude-upstream");
    assert_eq!(sent["system"], client["system"]);
    assert_eq!(sent["tools"], client["tools"]);
    assert_eq!(sent["thinking"], client["thinking"]);
    for i in 0..3 {
        assert_eq!(sent["messages"][i], client["messages"][i], "messages[{i}]");
    }
    assert_eq!(sent["messages"].as_array().map(Vec::len), Some(3));
    // A string system prompt stays a string.
    let plain = parse(with(base(), "system", json!("Be brief."))).expect("parses");
    assert_eq!(encoded(&plain, "m")["system"], json!("Be brief."));
    // A thinking block without a signature is sent without one.
    let unsigned = user(json!("hi"));
    let mut r = parse(unsigned).expect("parses");
    r.messages.push(msg(
        Role::Assistant,
        vec![Block::Thinking {
            thinking: "t".into(),
            signature: None,
        }],
    ));
    assert_eq!(
        encoded(&r, "m")["messages"][1]["content"],
        json!([{"type": "thinking", "thinking": "t"}])
    );
}

/// The request of [`cached_thinking_request`] without its `cache_control`s and thinking
/// blocks, with the system prompt as one string: what the other formats must be sent.
fn stripped(mut r: ChatRequest) -> ChatRequest {
    r.system = r.system_text().map(|s| System::Text(s.into_owned()));
    for t in &mut r.tools {
        t.cache_control = None;
    }
    for m in &mut r.messages {
        m.content
            .retain(|b| !matches!(b, Block::Thinking { .. } | Block::RedactedThinking { .. }));
        for b in &mut m.content {
            match b {
                Block::Text { cache_control, .. }
                | Block::Image { cache_control, .. }
                | Block::ToolCall { cache_control, .. }
                | Block::ToolResult { cache_control, .. } => *cache_control = None,
                Block::Document(d) => d.cache_control = None,
                Block::Thinking { .. } | Block::RedactedThinking { .. } => {}
            }
        }
    }
    r
}

#[test]
fn other_upstreams_ignore_cache_control_and_thinking() {
    let r = parse(cached_thinking_request()).expect("parses");
    let plain = stripped(r.clone());
    assert_ne!(r, plain);
    for dialect in [
        crate::openai::Dialect::OpenAi,
        crate::openai::Dialect::Compatible,
    ] {
        assert_eq!(
            String::from_utf8(crate::openai::encode_request(&r, "gpt", dialect)),
            String::from_utf8(crate::openai::encode_request(&plain, "gpt", dialect)),
        );
    }
    assert_eq!(
        String::from_utf8(crate::mistral::encode_request(&r, "mistral")),
        String::from_utf8(crate::mistral::encode_request(&plain, "mistral")),
    );
    let openai: Value = serde_json::from_slice(&crate::openai::encode_request(
        &r,
        "gpt",
        crate::openai::Dialect::OpenAi,
    ))
    .expect("json");
    assert_eq!(
        openai["messages"][0],
        json!({"role": "system", "content": "You are a contracts lawyer.\n\n<the whole contract>"})
    );
    assert!(!openai.to_string().contains("cache_control"));
    assert!(!openai.to_string().contains("thinking"));
}

#[test]
fn cache_control_must_be_an_object() {
    let bad = json!("ephemeral");
    let sys = with(
        base(),
        "system",
        json!([{"type": "text", "text": "s", "cache_control": bad}]),
    );
    assert_eq!(param_of(sys).as_deref(), Some("system[0].cache_control"));
    let msg = user(json!([{"type": "text", "text": "s", "cache_control": bad}]));
    assert_eq!(
        param_of(msg).as_deref(),
        Some("messages[0].content[0].cache_control")
    );
    let tools = with(
        base(),
        "tools",
        json!([{"name": "f", "input_schema": {}, "cache_control": bad}]),
    );
    assert_eq!(param_of(tools).as_deref(), Some("tools[0].cache_control"));
    let thinking = with(
        base(),
        "messages",
        json!([{"role": "assistant", "content": [{"type": "thinking", "signature": "s"}]}]),
    );
    let e = parse(thinking).expect_err("thinking text is required");
    assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
    assert!(e.message.contains("`thinking`"), "{e}");
}

/// An Anthropic reply with thinking and prompt-cache usage, as the upstream sends it.
fn thinking_reply() -> Value {
    json!({
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "Clause 4 is about payment.", "signature": "EqQBsig"},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "text", "text": "Payment is due in 30 days."},
            {"type": "tool_use", "id": "toolu_2", "name": "cite", "input": {"clause": 4}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": {"input_tokens": 12, "cache_creation_input_tokens": 2000,
                  "cache_read_input_tokens": 30000, "output_tokens": 80},
    })
}

#[test]
fn replies_keep_thinking_and_cache_usage_both_ways() {
    let upstream = thinking_reply();
    let r = decode_response(upstream.to_string().as_bytes()).expect("decodes");
    assert_eq!(
        r.content[..2],
        [
            Block::Thinking {
                thinking: "Clause 4 is about payment.".into(),
                signature: Some("EqQBsig".into()),
            },
            Block::RedactedThinking {
                data: "EmwKAhgB".into(),
            },
        ]
    );
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 32_012,
            output_tokens: 80,
            cache_creation_input_tokens: Some(2000),
            cache_read_input_tokens: Some(30_000),
        }
    );
    let client: Value = serde_json::from_slice(&encode_response(&r)).expect("json");
    assert_eq!(client["content"], upstream["content"]);
    assert_eq!(client["usage"], upstream["usage"]);
    assert_eq!(client, upstream);

    // Usage without cache counts is written as before.
    let mut plain = r.clone();
    plain.usage = Usage {
        input_tokens: 7,
        output_tokens: 3,
        ..Default::default()
    };
    let client: Value = serde_json::from_slice(&encode_response(&plain)).expect("json");
    assert_eq!(
        client["usage"],
        json!({"input_tokens": 7, "output_tokens": 3})
    );

    // OpenAI clients get no thinking: the reply is the one without those blocks.
    let mut without = r.clone();
    without.content.drain(..2);
    assert_eq!(
        crate::openai::encode_response(&r, 1),
        crate::openai::encode_response(&without, 1)
    );
}

/// An Anthropic stream with thinking, a redacted thinking block and prompt-cache usage,
/// written the way [`StreamEncoder`] writes one (so it must survive decode → encode).
const THINKING_STREAM: &[(&str, &str)] = &[
    (
        "message_start",
        r#"{"type":"message_start","message":{"id":"msg_t","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":2000,"cache_read_input_tokens":30000,"output_tokens":1}}}"#,
    ),
    ("ping", r#"{"type":"ping"}"#),
    (
        "content_block_start",
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Clause 4 "}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"is payment."}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBsig"}}"#,
    ),
    (
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#,
    ),
    (
        "content_block_start",
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"thinking_delta","thinking":"Second."}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"signature_delta","signature":"EqQBtwo"}}"#,
    ),
    (
        "content_block_stop",
        r#"{"type":"content_block_stop","index":1}"#,
    ),
    (
        "content_block_start",
        r#"{"type":"content_block_start","index":2,"content_block":{"type":"redacted_thinking","data":"EmwKAhgB"}}"#,
    ),
    (
        "content_block_stop",
        r#"{"type":"content_block_stop","index":2}"#,
    ),
    (
        "content_block_start",
        r#"{"type":"content_block_start","index":3,"content_block":{"type":"text","text":""}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":3,"delta":{"type":"text_delta","text":"30 days."}}"#,
    ),
    (
        "content_block_stop",
        r#"{"type":"content_block_stop","index":3}"#,
    ),
    (
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":12,"cache_creation_input_tokens":2000,"cache_read_input_tokens":30000,"output_tokens":80}}"#,
    ),
    ("message_stop", r#"{"type":"message_stop"}"#),
];

fn thinking_stream_bytes() -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in THINKING_STREAM {
        out.extend_from_slice(format!("event: {name}\ndata: {data}\n\n").as_bytes());
    }
    out
}

#[test]
fn streams_keep_thinking_and_cache_usage_both_ways() {
    let events = decode_all(&thinking_stream_bytes());
    let usage = |output_tokens| Usage {
        input_tokens: 32_012,
        output_tokens,
        cache_creation_input_tokens: Some(2000),
        cache_read_input_tokens: Some(30_000),
    };
    assert_eq!(
        events,
        vec![
            StreamEvent::Start {
                id: "msg_t".into(),
                model: "claude-x".into(),
                usage: Some(usage(1)),
            },
            StreamEvent::Usage(usage(1)),
            StreamEvent::ThinkingDelta {
                thinking: "Clause 4 ".into()
            },
            StreamEvent::ThinkingDelta {
                thinking: "is payment.".into()
            },
            StreamEvent::SignatureDelta {
                signature: "EqQBsig".into()
            },
            StreamEvent::ThinkingDelta {
                thinking: "Second.".into()
            },
            StreamEvent::SignatureDelta {
                signature: "EqQBtwo".into()
            },
            StreamEvent::RedactedThinking {
                data: "EmwKAhgB".into()
            },
            td("30 days."),
            StreamEvent::Finish {
                stop_reason: StopReason::EndTurn
            },
            StreamEvent::Usage(usage(80)),
            StreamEvent::Done,
        ]
    );
    // Encoded for an Anthropic client: the upstream's events, field by field.
    let encoded = encode_all(&events);
    let got = sse_events(&encoded);
    assert_eq!(got.len(), THINKING_STREAM.len());
    for (ev, (name, data)) in got.iter().zip(THINKING_STREAM) {
        assert_eq!(ev.event.as_deref(), Some(*name));
        let want: Value = serde_json::from_str(data).expect("json");
        let have: Value = serde_json::from_str(&ev.data).expect("json");
        assert_eq!(have, want, "{name}");
    }

    // A signature with no thinking text before it still gets its own block.
    let bytes = encode_all(&[
        start(None),
        StreamEvent::SignatureDelta {
            signature: "s".into(),
        },
        StreamEvent::Done,
    ]);
    let datas: Vec<Value> = sse_events(&bytes)
        .iter()
        .map(|e| serde_json::from_str(&e.data).expect("json"))
        .collect();
    assert_eq!(
        datas[2..5],
        [
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "signature_delta", "signature": "s"}}),
            json!({"type": "content_block_stop", "index": 0}),
        ]
    );

    // An OpenAI client gets the stream without the thinking.
    let openai = |evs: &[StreamEvent]| {
        let mut e = crate::openai::StreamEncoder::new(true, 1);
        let mut out = Vec::new();
        for ev in evs {
            e.encode(ev, &mut out);
        }
        out
    };
    let without: Vec<StreamEvent> = events
        .iter()
        .filter(|e| {
            !matches!(
                e,
                StreamEvent::ThinkingDelta { .. }
                    | StreamEvent::SignatureDelta { .. }
                    | StreamEvent::RedactedThinking { .. }
            )
        })
        .cloned()
        .collect();
    assert_eq!(openai(&events), openai(&without));
}

// ---------------------------------------------------------------- structured outputs

fn weather_schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}},
        "required": ["city"], "additionalProperties": false})
}

fn schema_format(schema: Value) -> Option<ResponseFormat> {
    Some(ResponseFormat::JsonSchema(JsonSchemaFormat {
        name: None,
        description: None,
        schema,
        strict: Some(true),
    }))
}

#[test]
fn parses_output_config_and_the_beta_output_format() {
    let config = json!({"format": {"type": "json_schema", "schema": weather_schema()},
        "effort": "low", "future_knob": 1});
    let r = parse(with(base(), "output_config", config)).unwrap();
    assert_eq!(r.response_format, schema_format(weather_schema()));
    assert_eq!(r.effort.as_deref(), Some("low"));
    // Keys without a canonical counterpart stay, for an Anthropic upstream.
    assert_eq!(
        r.extra.fields.get("output_config"),
        Some(&json!({"future_knob": 1}))
    );

    let beta = json!({"type": "json_schema", "schema": weather_schema()});
    let r = parse(with(base(), "output_format", beta)).unwrap();
    assert_eq!(r.response_format, schema_format(weather_schema()));
    assert_eq!(r.effort, None);
    assert!(r.extra.fields.is_empty(), "{:?}", r.extra.fields);

    for config in [
        Value::Null,
        json!({}),
        json!({"format": null, "effort": null}),
    ] {
        let r = parse(with(base(), "output_config", config.clone())).unwrap();
        assert_eq!((r.response_format, r.effort), (None, None), "{config}");
        assert!(r.extra.fields.is_empty(), "{config}");
    }
}

#[test]
fn output_config_errors_name_the_field() {
    let schema = weather_schema();
    let format = |f: Value| json!({"format": f});
    for (field, value, param, message) in [
        (
            "output_config",
            json!("json"),
            "output_config",
            "`output_config` must be an object",
        ),
        (
            "output_config",
            format(json!("json_schema")),
            "output_config.format",
            "`output_config.format` must be an object: {\"type\": \"json_schema\", \"schema\": {...}}",
        ),
        (
            "output_config",
            format(json!({"type": "json_object"})),
            "output_config.format.type",
            "`output_config.format.type` \"json_object\" is not supported here; supported: json_schema",
        ),
        (
            "output_config",
            format(json!({"schema": schema})),
            "output_config.format.type",
            "`output_config.format.type` is required and must be \"json_schema\"",
        ),
        (
            "output_config",
            format(json!({"type": "json_schema"})),
            "output_config.format.schema",
            "`output_config.format.schema` is required and must be a JSON Schema object",
        ),
        (
            "output_config",
            format(json!({"type": "json_schema", "schema": [schema]})),
            "output_config.format.schema",
            "`output_config.format.schema` is required and must be a JSON Schema object",
        ),
        (
            "output_config",
            json!({"effort": 3}),
            "output_config.effort",
            "`output_config.effort` must be a string: low, medium, high, xhigh or max",
        ),
        (
            "output_format",
            json!({"type": "json_schema", "schema": true}),
            "output_format.schema",
            "`output_format.schema` is required and must be a JSON Schema object",
        ),
        (
            "output_format",
            json!({"type": "text"}),
            "output_format.type",
            "`output_format.type` \"text\" is not supported here; supported: json_schema",
        ),
    ] {
        let e = parse(with(base(), field, value.clone())).unwrap_err();
        assert_eq!(e.param.as_deref(), Some(param), "{value}");
        assert_eq!(e.message, message, "{value}");
    }
    let both = with(
        with(
            base(),
            "output_config",
            format(json!({"type": "json_schema", "schema": weather_schema()})),
        ),
        "output_format",
        json!({"type": "json_schema", "schema": weather_schema()}),
    );
    let e = parse(both).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("output_format"));
    assert_eq!(
        e.message,
        "`output_format` and `output_config.format` are both given: send only \
         `output_config.format` (`output_format` is its deprecated beta name)"
    );
}

#[test]
fn encode_request_structured_outputs() {
    // Anthropic → Anthropic: one GA `output_config` with every key the client sent.
    let config = json!({"format": {"type": "json_schema", "schema": weather_schema()},
        "effort": "medium", "future_knob": 1});
    let r = parse(with(base(), "output_config", config.clone())).unwrap();
    let v = encoded(&r, "claude-upstream");
    assert_eq!(v["output_config"], config);
    // The beta alias goes up in its GA place.
    let beta = json!({"type": "json_schema", "schema": weather_schema()});
    let r = parse(with(base(), "output_format", beta.clone())).unwrap();
    let v = encoded(&r, "claude-upstream");
    assert_eq!(v["output_config"], json!({"format": beta}));
    assert!(v.get("output_format").is_none());

    // OpenAI → Anthropic: a json_schema becomes `output_config.format`; OpenAI's name,
    // description and strict have no place there.
    let openai = |format: Value| {
        crate::openai::parse_request(
            json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}],
                "response_format": format, "reasoning_effort": "high"})
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    };
    let r = openai(json!({"type": "json_schema", "json_schema": {
        "name": "Weather", "description": "d", "schema": weather_schema(), "strict": true}}));
    let v = encoded(&r, "claude-upstream");
    assert_eq!(
        v["output_config"],
        json!({"format": {"type": "json_schema", "schema": weather_schema()}})
    );
    for leaked in ["response_format", "reasoning_effort", "output_format"] {
        assert!(v.get(leaked).is_none(), "{leaked} must not be sent");
    }
    // text, json_object and unknown types have no counterpart.
    for format in [
        json!({"type": "text"}),
        json!({"type": "json_object"}),
        json!({"type": "structural_tag"}),
    ] {
        let v = encoded(&openai(format.clone()), "claude-upstream");
        assert!(v.get("output_config").is_none(), "{format}");
        assert!(v.get("response_format").is_none(), "{format}");
    }
}

#[test]
fn output_config_translates_to_openai_and_mistral() {
    let config = json!({"format": {"type": "json_schema", "schema": weather_schema()},
        "effort": "max", "future_knob": 1});
    let r = parse(with(base(), "output_config", config)).unwrap();
    let want = json!({"type": "json_schema", "json_schema": {
        "name": crate::openai::SCHEMA_NAME, "schema": weather_schema(), "strict": true}});
    for dialect in [
        crate::openai::Dialect::OpenAi,
        crate::openai::Dialect::Compatible,
    ] {
        let v: Value =
            serde_json::from_slice(&crate::openai::encode_request(&r, "gpt-4o", dialect)).unwrap();
        assert_eq!(v["response_format"], want, "{dialect:?}");
        for leaked in [
            "output_config",
            "output_format",
            "future_knob",
            "effort",
            "reasoning_effort",
        ] {
            assert!(
                v.get(leaked).is_none(),
                "{leaked} must not be sent ({dialect:?})"
            );
        }
    }
    let v: Value =
        serde_json::from_slice(&crate::mistral::encode_request(&r, "mistral-large")).unwrap();
    assert_eq!(v["response_format"], want);
    for leaked in ["output_config", "reasoning_effort", "future_knob", "effort"] {
        assert!(
            v.get(leaked).is_none(),
            "{leaked} must not be sent to Mistral"
        );
    }
}

/// `output_config.effort` goes to Anthropic as given (unknown values too: the API
/// decides) and nowhere else: OpenAI's models without reasoning refuse
/// `reasoning_effort`, which would break a fallback from Claude to one of them.
#[test]
fn effort_stays_with_anthropic() {
    for effort in ["low", "medium", "high", "xhigh", "max", "turbo"] {
        let r = parse(with(base(), "output_config", json!({"effort": effort}))).unwrap();
        assert_eq!(
            encoded(&r, "c")["output_config"],
            json!({"effort": effort}),
            "{effort}"
        );
        for dialect in [
            crate::openai::Dialect::OpenAi,
            crate::openai::Dialect::Compatible,
        ] {
            let v: Value =
                serde_json::from_slice(&crate::openai::encode_request(&r, "o3", dialect)).unwrap();
            for leaked in [
                "reasoning_effort",
                "output_config",
                "effort",
                "response_format",
            ] {
                assert!(v.get(leaked).is_none(), "{effort}: {leaked} ({dialect:?})");
            }
        }
    }
}

/// An Anthropic schema goes to OpenAI strict only where OpenAI's strict mode takes it
/// (every property required, every object closed, no allOf/oneOf, all the way down);
/// otherwise `strict: false`, which OpenAI accepts (it would refuse it strict).
#[test]
fn strict_only_where_openai_strict_mode_takes_the_schema() {
    let strict_of = |schema: Value| {
        let r = parse(with(
            base(),
            "output_config",
            json!({"format": {"type": "json_schema", "schema": schema}}),
        ))
        .unwrap();
        let v: Value = serde_json::from_slice(&crate::openai::encode_request(
            &r,
            "gpt-4o",
            crate::openai::Dialect::OpenAi,
        ))
        .unwrap();
        v["response_format"]["json_schema"]["strict"].clone()
    };
    let closed = |props: Value, required: Value| {
        json!({"type": "object", "properties": props, "required": required,
            "additionalProperties": false})
    };
    assert_eq!(strict_of(weather_schema()), true);
    // Nested objects, arrays, anyOf and $defs, all closed and required.
    let nested = json!({"type": "object", "additionalProperties": false,
        "required": ["items", "when", "who"],
        "properties": {
            "items": {"type": "array", "items": closed(json!({"n": {"type": "integer"}}), json!(["n"]))},
            "when": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "who": {"$ref": "#/$defs/P"}},
        "$defs": {"P": closed(json!({"name": {"type": "string"}}), json!(["name"]))}});
    assert_eq!(strict_of(nested.clone()), true);
    // An optional property (Pydantic's field with a default), an open object at any
    // depth, allOf/oneOf: not strict.
    let optional = closed(
        json!({"a": {"type": "string"}, "b": {"type": "string"}}),
        json!(["a"]),
    );
    let mut open_deep = nested.clone();
    open_deep["$defs"]["P"]
        .as_object_mut()
        .unwrap()
        .remove("additionalProperties");
    let mut one_of = weather_schema();
    one_of["properties"]["city"] = json!({"oneOf": [{"type": "string"}, {"type": "number"}]});
    let no_required = json!({"type": "object", "properties": {"a": {"type": "string"}},
        "additionalProperties": false});
    for schema in [optional, open_deep, one_of, no_required] {
        assert_eq!(strict_of(schema.clone()), false, "{schema}");
    }
    assert!(!crate::openai::strict_compatible(
        &json!({"type": "string"})
    ));
    assert!(!crate::openai::strict_compatible(&json!(true)));
}

/// A schema from the OpenAI surface is shaped for Anthropic as its SDKs shape Pydantic
/// schemas: refused constraints move into the description, objects are closed; an
/// Anthropic client's own schema goes as written.
#[test]
fn openai_schemas_are_shaped_for_anthropic() {
    // What Pydantic writes for `age: int = Field(ge=0, le=150)`, `name: str =
    // Field(max_length=20, description="Full name")`, `tags: list[str] =
    // Field(min_items=2)`, a nested model without `additionalProperties`.
    let schema = json!({"type": "object", "additionalProperties": false,
        "required": ["age", "name", "tags", "home", "when"],
        "properties": {
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "name": {"type": "string", "maxLength": 20, "description": "Full name"},
            "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"},
                     "minItems": 2},
            "home": {"$ref": "#/$defs/Home"},
            "when": {"type": "string", "format": "date-time"},
            "one": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
        "$defs": {"Home": {"type": "object", "properties": {"city": {"type": "string",
            "format": "city-name"}}, "required": ["city"]}}});
    let r = crate::openai::parse_request(
        json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "P", "schema": schema}}})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let v = encoded(&r, "claude-upstream");
    let sent = &v["output_config"]["format"]["schema"];
    let p = &sent["properties"];
    assert_eq!(
        p["age"],
        json!({"type": "integer", "description": "{maximum: 150, minimum: 0}"})
    );
    assert_eq!(
        p["name"],
        json!({"type": "string", "description": "Full name\n\n{maxLength: 20}"})
    );
    assert_eq!(
        p["tags"],
        json!({"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"},
               "description": "{minItems: 2}"})
    );
    assert_eq!(p["when"], json!({"type": "string", "format": "date-time"}));
    assert_eq!(p["one"]["minItems"], 1);
    assert_eq!(
        sent["$defs"]["Home"],
        json!({"type": "object", "additionalProperties": false, "required": ["city"],
               "properties": {"city": {"type": "string", "description": "{format: \"city-name\"}"}}})
    );
    // The Anthropic surface's own schema is its SDK's business: sent as written.
    let own = parse(with(
        base(),
        "output_config",
        json!({"format": {"type": "json_schema", "schema": schema}}),
    ))
    .unwrap();
    assert_eq!(
        encoded(&own, "claude-upstream")["output_config"]["format"]["schema"],
        schema
    );
}
