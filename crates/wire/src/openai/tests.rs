use super::embeddings::{b64_decode, b64_encode};
use super::*;
use crate::canonical::{
    ChatResponse, EmbeddingsResponse, ProviderError, StopReason, StreamEvent, Usage,
};
use crate::sse::SseEvent;
use crate::sse::SseParser;
use proptest::prelude::*;

fn parse(v: &Value) -> Result<ChatRequest, RequestError> {
    parse_request(&serde_json::to_vec(v).unwrap())
}

fn param_of(v: &Value) -> Option<String> {
    parse(v).unwrap_err().param
}

fn base() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

fn with(field: &str, value: Value) -> Value {
    let mut v = base();
    v[field] = value;
    v
}

fn decode_all(bytes: &[u8]) -> Vec<StreamEvent> {
    let mut parser = SseParser::new(1 << 20);
    let mut events = Vec::new();
    parser.feed(bytes, &mut events).unwrap();
    parser.finish(&mut events);
    let mut dec = StreamDecoder::new();
    let mut out = Vec::new();
    for e in &events {
        dec.decode(e, &mut out).unwrap();
    }
    out
}

fn sse_json(bytes: &[u8]) -> Vec<Value> {
    let mut parser = SseParser::new(1 << 20);
    let mut events = Vec::new();
    parser.feed(bytes, &mut events).unwrap();
    events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap_or(Value::String(e.data.clone())))
        .collect()
}

// ---------------------------------------------------------------- validation

#[test]
fn body_must_be_a_json_object() {
    for body in [&b"[1,2]"[..], b"\"text\"", b"42", b"null"] {
        let e = parse_request(body).unwrap_err();
        assert_eq!(e.param, None);
        assert!(e.message.contains("JSON object"), "{}", e.message);
    }
}

#[test]
fn invalid_json_utf8_and_surrogates_are_refused() {
    let bodies: [&[u8]; 5] = [
        b"",
        b"{\"model\": ",
        b"{\"model\":\"a\"} trailing",
        b"{\"model\":\"\xff\xfe\",\"messages\":[]}",
        br#"{"model":"\ud800","messages":[{"role":"user","content":"x"}]}"#,
    ];
    for body in bodies {
        let e = parse_request(body).unwrap_err();
        assert_eq!(e.param, None, "{}", e.message);
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }
}

#[test]
fn model_and_messages_are_required() {
    assert_eq!(
        param_of(&json!({"messages": [{"role": "user", "content": "x"}]})).as_deref(),
        Some("model")
    );
    assert_eq!(
        param_of(&with("model", json!(""))).as_deref(),
        Some("model")
    );
    assert_eq!(param_of(&with("model", json!(3))).as_deref(), Some("model"));
    assert_eq!(
        param_of(&json!({"model": "m"})).as_deref(),
        Some("messages")
    );
    assert_eq!(
        param_of(&with("messages", json!([]))).as_deref(),
        Some("messages")
    );
    assert_eq!(
        param_of(&with("messages", json!("hi"))).as_deref(),
        Some("messages")
    );
}

#[test]
fn roles_and_content_types_are_checked() {
    let msgs = |m: Value| with("messages", m);
    let cases = [
        (
            json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "robot", "content": "c"}]),
            "messages[2].role",
        ),
        (json!([{"content": "a"}]), "messages[0].role"),
        (json!([{"role": 7, "content": "a"}]), "messages[0].role"),
        (
            json!([{"role": "user", "content": 5}]),
            "messages[0].content",
        ),
        (json!([{"role": "user"}]), "messages[0].content"),
        (
            json!([{"role": "user", "content": []}]),
            "messages[0].content",
        ),
        (
            json!([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "input_audio"}]}]),
            "messages[0].content[1].type",
        ),
        (
            json!([{"role": "user", "content": [{"type": "text", "text": 1}]}]),
            "messages[0].content[0].text",
        ),
        (
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "u", "detail": "ultra"}}]}]),
            "messages[0].content[1].image_url.detail",
        ),
        (
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "detail": 1}}]}]),
            "messages[0].content[0].image_url.detail",
        ),
        (
            json!([{"role": "system", "content": {"a": 1}}, {"role": "user", "content": "x"}]),
            "messages[0].content",
        ),
        (
            json!([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]),
            "messages[0].content[0].type",
        ),
        (
            json!([{"role": "assistant", "content": 1}]),
            "messages[0].content",
        ),
        (
            json!([{"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "custom", "function": {"name": "f"}}]}]),
            "messages[0].tool_calls[0].type",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": 3}}]}]),
            "messages[0].tool_calls[0].function.name",
        ),
        (
            json!([{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}]),
            "messages[1].tool_call_id",
        ),
        (
            json!([{"role": "tool", "tool_call_id": "", "content": "r"}]),
            "messages[0].tool_call_id",
        ),
    ];
    for (m, param) in cases {
        assert_eq!(param_of(&msgs(m.clone())).as_deref(), Some(param), "{m}");
    }
}

#[test]
fn numeric_ranges_name_their_field() {
    let cases = [
        ("max_tokens", json!(0)),
        ("max_tokens", json!(-5)),
        ("max_tokens", json!(1_000_001)),
        ("max_tokens", json!(1e30)),
        ("max_tokens", json!("ten")),
        ("max_completion_tokens", json!(0)),
        ("max_completion_tokens", json!(-1)),
        ("max_completion_tokens", json!(5_000_000)),
        ("temperature", json!(2.5)),
        ("temperature", json!(-0.1)),
        ("temperature", json!("hot")),
        ("top_p", json!(1.5)),
        ("top_p", json!(-1)),
        ("frequency_penalty", json!(2.5)),
        ("frequency_penalty", json!(-2.01)),
        ("presence_penalty", json!(3)),
        ("presence_penalty", json!("high")),
        ("n", json!(2)),
        ("n", json!(0)),
    ];
    for (field, value) in cases {
        let e = parse(&with(field, value.clone())).unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some(field),
            "{field}={value}: {}",
            e.message
        );
    }
    let huge = br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":99999999999999999999999}"#;
    assert_eq!(
        parse_request(huge).unwrap_err().param.as_deref(),
        Some("max_tokens")
    );
    assert_eq!(
        parse(&with("n", json!(2))).unwrap_err().message,
        "only n=1 is supported"
    );
    assert_eq!(
        parse(&with("presence_penalty", json!(3)))
            .unwrap_err()
            .message,
        "`presence_penalty` must be between -2 and 2, got 3"
    );
    let r = parse(&with("frequency_penalty", json!(-2))).unwrap();
    assert_eq!(
        (r.frequency_penalty, r.presence_penalty),
        (Some(-2.0), None)
    );
    assert!(parse(&with("n", json!(1))).is_ok());
    assert!(parse(&with("n", Value::Null)).is_ok());
    assert_eq!(
        parse(&with("max_tokens", json!(1_000_000)))
            .unwrap()
            .max_tokens,
        Some(1_000_000)
    );
    assert_eq!(
        parse(&with("temperature", json!(2))).unwrap().temperature,
        Some(2.0)
    );
}

#[test]
fn tools_tool_choice_and_stop_are_checked() {
    let cases = [
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f"}}, {"type": "web_search"}]),
            "tools[1].type",
        ),
        ("tools", json!([{"type": "function"}]), "tools[0].function"),
        (
            "tools",
            json!([{"type": "function", "function": {"name": ""}}]),
            "tools[0].function.name",
        ),
        ("tool_choice", json!("sometimes"), "tool_choice"),
        (
            "tool_choice",
            json!({"type": "function", "function": {}}),
            "tool_choice.function.name",
        ),
        ("tool_choice", json!(5), "tool_choice"),
        ("stop", json!(5), "stop"),
        ("stop", json!(["a", 1]), "stop[1]"),
        ("stream", json!("yes"), "stream"),
    ];
    for (field, value, param) in cases {
        assert_eq!(
            param_of(&with(field, value.clone())).as_deref(),
            Some(param),
            "{field}={value}"
        );
    }
}

// ---------------------------------------------------------------- parsing

fn rich() -> Value {
    json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image, and the weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "12:00"}]},
            {"role": "user", "content": "thanks"},
            {"role": "assistant", "content": "You're welcome."}
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "strict": true}},
            {"type": "function", "function": {"name": "get_time"}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "stop": "END",
        "seed": 7,
        "user": "u-1",
        "response_format": {"type": "json_object"},
        "parallel_tool_calls": false,
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_completion_tokens": 300,
        "temperature": 0.5,
        "top_p": 0.9,
        "logprobs": false,
        "frequency_penalty": 0.1,
        "presence_penalty": -0.3,
        "metadata": {"k": "v"},
        "reasoning_effort": "low"
    })
}

#[test]
fn parses_a_rich_request() {
    let r = parse(&rich()).unwrap();
    assert_eq!(r.model, "gpt-4o");
    assert_eq!(
        r.system_text().as_deref(),
        Some("You are terse.\n\nUse metric units.")
    );
    assert_eq!(r.messages.len(), 5);
    assert_eq!(
        r.messages[0],
        Message {
            role: Role::User,
            content: vec![
                Block::Text {
                    text: "What is in this image, and the weather?".into(),
                    cache_control: None,
                },
                Block::Image {
                    source: ImageSource::Base64 {
                        media_type: "image/png".into(),
                        data: "iVBORw0KGgo=".into()
                    },
                    detail: Some(ImageDetail::Low),
                    cache_control: None,
                },
                Block::Image {
                    source: ImageSource::Url {
                        url: "https://example.com/cat.jpg".into()
                    },
                    detail: None,
                    cache_control: None,
                },
            ],
        }
    );
    assert_eq!(
        r.messages[1].content,
        vec![
            Block::ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: "{\"city\":\"Paris\"}".into(),
                cache_control: None,
            },
            Block::ToolCall {
                id: "call_2".into(),
                name: "get_time".into(),
                arguments: "{}".into(),
                cache_control: None,
            },
        ]
    );
    assert_eq!(r.messages[1].role, Role::Assistant);
    assert_eq!(
        r.messages[2],
        Message {
            role: Role::User,
            content: vec![
                Block::ToolResult {
                    tool_call_id: "call_1".into(),
                    content: "18C".into(),
                    is_error: false,
                    cache_control: None,
                },
                Block::ToolResult {
                    tool_call_id: "call_2".into(),
                    content: "12:00".into(),
                    is_error: false,
                    cache_control: None,
                },
            ],
        }
    );
    assert_eq!(
        r.messages[3].content,
        vec![Block::Text {
            text: "thanks".into(),
            cache_control: None,
        }]
    );
    assert_eq!(
        r.messages[4].content,
        vec![Block::Text {
            text: "You're welcome.".into(),
            cache_control: None,
        }]
    );
    assert_eq!(r.tools.len(), 2);
    assert_eq!(r.tools[0].description.as_deref(), Some("Weather"));
    assert_eq!((r.tools[0].strict, r.tools[1].strict), (Some(true), None));
    assert_eq!(
        (r.frequency_penalty, r.presence_penalty),
        (Some(0.1), Some(-0.3))
    );
    assert_eq!(
        r.tools[1].parameters,
        json!({"type": "object", "properties": {}})
    );
    assert_eq!(r.tool_choice, Some(ToolChoice::Tool("get_weather".into())));
    assert_eq!(r.stop, vec!["END".to_string()]);
    assert_eq!(r.seed, Some(7));
    assert_eq!(r.user.as_deref(), Some("u-1"));
    assert_eq!(r.response_format, Some(ResponseFormat::JsonObject));
    assert_eq!(r.parallel_tool_calls, Some(false));
    assert!(r.stream && r.include_usage);
    assert_eq!(r.max_tokens, Some(300));
    assert_eq!((r.temperature, r.top_p), (Some(0.5), Some(0.9)));
    assert_eq!(r.extra.format, Some(Format::OpenAi));
    let keys: Vec<&str> = r.extra.fields.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "logprobs",
            "max_completion_tokens",
            "metadata",
            "reasoning_effort"
        ]
    );
}

#[test]
fn tool_choice_variants_and_stop_array() {
    for (v, want) in [
        (json!("auto"), ToolChoice::Auto),
        (json!("none"), ToolChoice::None),
        (json!("required"), ToolChoice::Required),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            ToolChoice::Tool("f".into()),
        ),
    ] {
        assert_eq!(
            parse(&with("tool_choice", v)).unwrap().tool_choice,
            Some(want)
        );
    }
    let r = parse(&with("stop", json!(["a", "b"]))).unwrap();
    assert_eq!(r.stop, ["a", "b"]);
    assert!(parse(&with("stop", Value::Null)).unwrap().stop.is_empty());
    let r = parse(&base()).unwrap();
    assert!(!r.stream && !r.include_usage && r.tool_choice.is_none());
    // include_usage only means something when streaming
    let r = parse(&with("stream_options", json!({"include_usage": true}))).unwrap();
    assert!(!r.include_usage);
}

#[test]
fn tool_message_after_user_starts_a_new_message_and_user_after_tools_stays_separate() {
    let r = parse(&with(
        "messages",
        json!([
            {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]},
            {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "user", "content": "more"},
            {"role": "tool", "tool_call_id": "b", "content": "2"}
        ]),
    ))
    .unwrap();
    assert_eq!(r.messages.len(), 4);
    assert_eq!(
        r.messages[0].content,
        vec![Block::ToolCall {
            id: "a".into(),
            name: "f".into(),
            arguments: "{\"x\":1}".into(),
            cache_control: None,
        }]
    );
    assert_eq!(
        r.messages[2].content,
        vec![Block::Text {
            text: "more".into(),
            cache_control: None,
        }]
    );
    assert!(
        matches!(&r.messages[3].content[..], [Block::ToolResult { tool_call_id, .. }] if tool_call_id == "b")
    );
}

// ---------------------------------------------------------------- upstream requests

#[test]
fn encodes_a_request_field_by_field() {
    let r = parse(&rich()).unwrap();
    let v: Value =
        serde_json::from_slice(&encode_request(&r, "gpt-4o-2024-08-06", Dialect::OpenAi)).unwrap();
    assert_eq!(v["model"], "gpt-4o-2024-08-06");
    let m = v["messages"].as_array().unwrap();
    assert_eq!(
        m[0],
        json!({"role": "system", "content": "You are terse.\n\nUse metric units."})
    );
    assert_eq!(
        m[1],
        json!({"role": "user", "content": [
            {"type": "text", "text": "What is in this image, and the weather?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
        ]})
    );
    assert_eq!(
        m[2],
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
        ]})
    );
    assert_eq!(
        m[3],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "18C"})
    );
    assert_eq!(
        m[4],
        json!({"role": "tool", "tool_call_id": "call_2", "content": "12:00"})
    );
    assert_eq!(m[5], json!({"role": "user", "content": "thanks"}));
    assert_eq!(
        m[6],
        json!({"role": "assistant", "content": "You're welcome."})
    );
    assert_eq!(m.len(), 7);
    assert_eq!(
        v["tools"],
        json!([
            {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                "strict": true}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
        ])
    );
    assert_eq!(
        v["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert_eq!(v["max_completion_tokens"], 300);
    assert!(v.get("max_tokens").is_none());
    assert_eq!(v["stop"], json!(["END"]));
    assert_eq!(v["seed"], 7);
    assert_eq!(v["user"], "u-1");
    assert_eq!(v["response_format"], json!({"type": "json_object"}));
    assert_eq!(v["parallel_tool_calls"], false);
    assert_eq!(v["stream"], true);
    assert_eq!(v["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        (v["temperature"].as_f64(), v["top_p"].as_f64()),
        (Some(0.5), Some(0.9))
    );
    assert_eq!(v["frequency_penalty"], 0.1);
    assert_eq!(v["presence_penalty"], -0.3);
    assert_eq!(v["logprobs"], false);
    assert_eq!(v["metadata"], json!({"k": "v"}));
    assert_eq!(v["reasoning_effort"], "low");
}

#[test]
fn token_limit_key_follows_the_client_and_the_dialect() {
    let openai_max_tokens = parse(&with("max_tokens", json!(50))).unwrap();
    let openai_mct = parse(&with("max_completion_tokens", json!(50))).unwrap();
    let anthropic = crate::anthropic::parse_request(
        br#"{"model":"m","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .unwrap();
    let cases = [
        (&openai_max_tokens, Dialect::OpenAi, "max_tokens"),
        (&openai_max_tokens, Dialect::Compatible, "max_tokens"),
        (&openai_mct, Dialect::OpenAi, "max_completion_tokens"),
        (&openai_mct, Dialect::Compatible, "max_completion_tokens"),
        (&anthropic, Dialect::OpenAi, "max_completion_tokens"),
        (&anthropic, Dialect::Compatible, "max_tokens"),
    ];
    for (i, (req, dialect, key)) in cases.into_iter().enumerate() {
        let v: Value = serde_json::from_slice(&encode_request(req, "m", dialect)).unwrap();
        let keys: Vec<&str> = ["max_tokens", "max_completion_tokens"]
            .into_iter()
            .filter(|k| v.get(k).is_some())
            .collect();
        assert_eq!(keys, [key], "case {i}");
        assert_eq!(v[key], 50, "case {i}");
    }
}

#[test]
fn encode_request_defaults_and_foreign_extras() {
    let mut r = parse(&with("max_tokens", json!(50))).unwrap();
    let v: Value = serde_json::from_slice(&encode_request(&r, "m", Dialect::OpenAi)).unwrap();
    assert_eq!(v["max_tokens"], 50);
    assert!(v.get("stream").is_none() && v.get("stream_options").is_none());
    // streaming always asks for usage, even when the client did not
    r.stream = true;
    r.include_usage = false;
    r.extra = Extra {
        format: Some(Format::Anthropic),
        fields: [("top_k".to_string(), json!(5))].into_iter().collect(),
    };
    r.tool_choice = Some(ToolChoice::Required);
    r.messages.push(Message {
        role: Role::User,
        content: vec![
            Block::ToolResult {
                tool_call_id: "toolu_1".into(),
                content: "r".into(),
                is_error: true,
                cache_control: None,
            },
            Block::Text {
                text: "and".into(),
                cache_control: None,
            },
            Block::Image {
                source: ImageSource::Base64 {
                    media_type: "image/jpeg".into(),
                    data: "AAA".into(),
                },
                detail: None,
                cache_control: None,
            },
        ],
    });
    let v: Value = serde_json::from_slice(&encode_request(&r, "m", Dialect::OpenAi)).unwrap();
    assert_eq!(v["stream_options"], json!({"include_usage": true}));
    assert_eq!(v["tool_choice"], "required");
    assert!(v.get("top_k").is_none());
    let m = v["messages"].as_array().unwrap();
    assert_eq!(
        m[1],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": "r"})
    );
    assert_eq!(
        m[2],
        json!({"role": "user", "content": [
            {"type": "text", "text": "and"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAA"}}
        ]})
    );
}

// ---------------------------------------------------------------- responses

#[test]
fn encodes_a_response() {
    let resp = ChatResponse {
        id: "chatcmpl-1".into(),
        model: "gpt-4o".into(),
        content: vec![
            Block::Text {
                text: "Let me check.".into(),
                cache_control: None,
            },
            Block::ToolCall {
                id: "call_9".into(),
                name: "f".into(),
                arguments: "{\"a\":1}".into(),
                cache_control: None,
            },
        ],
        stop_reason: Some(StopReason::ToolUse),
        usage: Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Default::default()
        },
    };
    let v: Value = serde_json::from_slice(&encode_response(&resp, 1_700_000_000)).unwrap();
    assert_eq!(
        v,
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000u64, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {
                "role": "assistant", "content": "Let me check.", "refusal": null,
                "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]
            }, "logprobs": null, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                "prompt_tokens_details": {"cached_tokens": 0}}
        })
    );
    let decoded = decode_response(&encode_response(&resp, 1)).unwrap();
    assert_eq!(decoded, resp);
    for (reason, want) in [
        (StopReason::StopSequence, "stop"),
        (StopReason::EndTurn, "stop"),
        (StopReason::MaxTokens, "length"),
        (StopReason::ContentFilter, "content_filter"),
    ] {
        let r = ChatResponse {
            stop_reason: Some(reason),
            content: vec![],
            ..resp.clone()
        };
        let v: Value = serde_json::from_slice(&encode_response(&r, 1)).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], want);
        assert_eq!(v["choices"][0]["message"]["content"], "");
    }
}

#[test]
fn decodes_a_response() {
    let body = br#"{
      "id": "chatcmpl-abc", "object": "chat.completion", "created": 1741569952, "model": "gpt-4.1-2025-04-14",
      "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null, "annotations": [],
         "tool_calls": [{"id": "call_x", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]},
         "logprobs": null, "finish_reason": "tool_calls"}],
      "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99,
         "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0}},
      "service_tier": "default", "system_fingerprint": "fp_1"
    }"#;
    let r = decode_response(body).unwrap();
    assert_eq!(r.id, "chatcmpl-abc");
    assert_eq!(r.model, "gpt-4.1-2025-04-14");
    assert_eq!(
        r.content,
        vec![Block::ToolCall {
            id: "call_x".into(),
            name: "get_weather".into(),
            arguments: "{\"location\":\"Paris\"}".into(),
            cache_control: None,
        }]
    );
    assert_eq!(r.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 82,
            output_tokens: 17,
            ..Default::default()
        }
    );

    let r = decode_response(br#"{"id":"x","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"length"}]}"#).unwrap();
    assert_eq!(r.text(), "hi");
    assert_eq!(r.stop_reason, Some(StopReason::MaxTokens));
    assert_eq!(r.usage, Usage::default());

    assert!(decode_response(br#"{"id":"x","choices":[]}"#).is_err());
    assert!(decode_response(b"not json").is_err());
}

// ---------------------------------------------------------------- errors

#[test]
fn error_bodies() {
    let v: Value = serde_json::from_slice(&error_body(
        "invalid_request_error",
        "bad_param",
        "nope",
        Some("model"),
    ))
    .unwrap();
    assert_eq!(
        v,
        json!({"error": {"message": "nope", "type": "invalid_request_error", "code": "bad_param", "param": "model"}})
    );
    let cases: [(&[u8], &str, &str); 6] = [
        (br#"{"error":{"message":"Rate limit","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}"#, "rate_limit_error", "Rate limit"),
        (br#"{"error":{"message":"bad key","type":null,"code":"invalid_api_key"}}"#, "invalid_api_key", "bad key"),
        (br#"{"error":"model 'x' not found"}"#, "api_error", "model 'x' not found"),
        (br#"{"object":"error","message":"too long","type":"BadRequestError","param":null,"code":400}"#, "BadRequestError", "too long"),
        (br#"{"detail":[{"type":"missing","loc":["body","model"],"msg":"Field required"}]}"#, "invalid_request_error", "body.model: Field required"),
        (br#"{"detail":"Not Found"}"#, "invalid_request_error", "Not Found"),
    ];
    for (body, kind, message) in cases {
        assert_eq!(
            decode_error(body),
            Some(ProviderError {
                kind: kind.into(),
                message: message.into()
            }),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(decode_error(b"<html>502</html>"), None);
    assert_eq!(decode_error(b"[]"), None);
}

// ---------------------------------------------------------------- streams

/// A recorded-shape OpenAI stream: two parallel tool calls with argument fragments,
/// then the usage chunk with empty choices.
const TOOL_STREAM: &str = r#"data: {"id":"chatcmpl-BA1","object":"chat.completion.chunk","created":1741,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f9f4fb6dbf","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-BA1","object":"chat.completion.chunk","created":1741,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f9f4fb6dbf","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"lo"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-BA1","object":"chat.completion.chunk","created":1741,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f9f4fb6dbf","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"cation\": \"Par"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-BA1","object":"chat.completion.chunk","created":1741,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f9f4fb6dbf","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"is\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-BA1","object":"chat.completion.chunk","created":1741,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f9f4fb6dbf","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_q5cPiEX8ZvZw1qKb7nGZ0hEm","type":"function","function":{"name":"get_time","arguments":""}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-BA1","object":"chat.completion.chunk","created":1741,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f9f4fb6dbf","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"tz\": \"CET\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-BA1","object":"chat.completion.chunk","created":1741,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f9f4fb6dbf","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}

data: {"id":"chatcmpl-BA1","object":"chat.completion.chunk","created":1741,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f9f4fb6dbf","choices":[],"usage":{"prompt_tokens":80,"completion_tokens":48,"total_tokens":128,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}

data: [DONE]

"#;

#[test]
fn decodes_a_recorded_tool_call_stream() {
    let ev = decode_all(TOOL_STREAM.as_bytes());
    assert_eq!(
        ev,
        vec![
            StreamEvent::Start {
                id: "chatcmpl-BA1".into(),
                model: "gpt-4o-2024-08-06".into(),
                usage: None
            },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_DdmO9pD3xa9XTPNJ32zg2hcA".into(),
                name: "get_weather".into()
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"lo".into()
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "cation\": \"Par".into()
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "is\"}".into()
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "call_q5cPiEX8ZvZw1qKb7nGZ0hEm".into(),
                name: "get_time".into()
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "{\"tz\": \"CET\"}".into()
            },
            StreamEvent::Finish {
                stop_reason: StopReason::ToolUse
            },
            StreamEvent::Usage(Usage {
                input_tokens: 80,
                output_tokens: 48,
                ..Default::default()
            }),
            StreamEvent::Done,
        ]
    );
}

#[test]
fn usage_on_a_chunk_with_choices_errors_and_odd_tool_deltas() {
    // litellm#36168: usage rides on the finish chunk.
    let s = concat!(
        // Azure opens with an id-less prompt-filter chunk
        "data: {\"id\":\"\",\"object\":\"\",\"created\":0,\"model\":\"\",\"choices\":[],\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\n",
        "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        // an id repeated on every delta (some compatible servers) is the same call
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"t1\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"t1\",\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n",
        // a whole call without index, arguments as an object
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"t2\",\"function\":{\"name\":\"g\",\"arguments\":{\"b\":2}}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\n",
        ": keep-alive\n\n",
        "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\",\"code\":null,\"param\":null}}\n\n",
    );
    let ev = decode_all(s.as_bytes());
    assert_eq!(
        ev,
        vec![
            StreamEvent::Start {
                id: "c".into(),
                model: "m".into(),
                usage: None
            },
            StreamEvent::TextDelta { text: "Hi".into() },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "t1".into(),
                name: "f".into()
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"a\"".into()
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: ":1}".into()
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "t2".into(),
                name: "g".into()
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "{\"b\":2}".into()
            },
            StreamEvent::Finish {
                stop_reason: StopReason::ToolUse
            },
            StreamEvent::Usage(Usage {
                input_tokens: 3,
                output_tokens: 4,
                ..Default::default()
            }),
            StreamEvent::Error {
                kind: "server_error".into(),
                message: "overloaded".into()
            },
        ]
    );
    let mut dec = StreamDecoder::new();
    let mut out = Vec::new();
    let bad = SseEvent {
        event: None,
        data: "{not json".into(),
    };
    assert!(dec.decode(&bad, &mut out).is_err());
}

fn sample_events() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start {
            id: "chatcmpl-7".into(),
            model: "gpt-4o".into(),
            usage: None,
        },
        StreamEvent::TextDelta {
            text: "Hé 🌍 \"quoted\"\nline".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_a".into(),
            name: "lookup".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "{\"q\":".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "\"x\"}".into(),
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: "call_b".into(),
            name: "other".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 1,
            arguments: "{}".into(),
        },
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
        },
        StreamEvent::Usage(Usage {
            input_tokens: 11,
            output_tokens: 22,
            ..Default::default()
        }),
        StreamEvent::Done,
    ]
}

#[test]
fn stream_encoder_output_decodes_to_the_same_events() {
    let events = sample_events();
    let mut enc = StreamEncoder::new(true, 1_700_000_000);
    let mut bytes = Vec::new();
    for e in &events {
        enc.encode(e, &mut bytes);
    }
    assert_eq!(decode_all(&bytes), events);
    assert!(bytes.ends_with(b"data: [DONE]\n\n"));
}

#[test]
fn stream_encoder_chunk_shapes() {
    let mut enc = StreamEncoder::new(true, 42);
    let mut bytes = Vec::new();
    for e in sample_events() {
        enc.encode(&e, &mut bytes);
    }
    let chunks = sse_json(&bytes);
    assert_eq!(
        chunks[0],
        json!({"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 42, "model": "gpt-4o",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}],
               "usage": null})
    );
    assert_eq!(
        chunks[2]["choices"][0]["delta"],
        json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": ""}}]})
    );
    assert_eq!(
        chunks[3]["choices"][0]["delta"],
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\":"}}]})
    );
    assert_eq!(
        chunks[7]["choices"][0],
        json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"})
    );
    assert_eq!(chunks[8]["choices"], json!([]));
    assert_eq!(
        chunks[8]["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33,
            "prompt_tokens_details": {"cached_tokens": 0}})
    );
    assert_eq!(chunks[8]["id"], "chatcmpl-7");
    assert_eq!(chunks[9], json!("[DONE]"));
    assert_eq!(chunks.len(), 10);
    assert!(
        chunks[..8]
            .iter()
            .all(|c| c["usage"].is_null() && c.get("usage").is_some())
    );

    // without include_usage: no usage key, no usage chunk
    let mut enc = StreamEncoder::new(false, 42);
    let mut bytes = Vec::new();
    for e in sample_events() {
        enc.encode(&e, &mut bytes);
    }
    let chunks = sse_json(&bytes);
    assert_eq!(chunks.len(), 9);
    assert!(chunks[..8].iter().all(|c| c.get("usage").is_none()));
}

#[test]
fn stream_errors() {
    let mut enc = StreamEncoder::new(true, 1);
    let mut bytes = Vec::new();
    enc.encode(
        &StreamEvent::Error {
            kind: "overloaded_error".into(),
            message: "busy".into(),
        },
        &mut bytes,
    );
    enc.encode_error(
        "upstream_timeout",
        "the upstream stopped answering",
        &mut bytes,
    );
    let chunks = sse_json(&bytes);
    assert_eq!(
        chunks[0],
        json!({"error": {"message": "busy", "type": "overloaded_error", "code": null, "param": null}})
    );
    assert_eq!(
        chunks[1],
        json!({"error": {"message": "the upstream stopped answering", "type": "server_error", "code": "upstream_timeout", "param": null}})
    );
    assert!(!String::from_utf8_lossy(&bytes).contains("[DONE]"));
    assert_eq!(
        decode_all(&bytes)[0],
        StreamEvent::Error {
            kind: "overloaded_error".into(),
            message: "busy".into()
        }
    );
}

// ---------------------------------------------------------------- embeddings

/// A toy encoding: token `i` is the letter `a` + i, for i < 4.
struct Letters;

impl TokenDecoder for Letters {
    fn encoding(&self) -> &str {
        "letters"
    }

    fn decode(&self, tokens: &[u32]) -> Result<String, usize> {
        tokens
            .iter()
            .enumerate()
            .map(|(i, &t)| match t {
                0..4 => Ok(char::from(b'a' + t as u8)),
                _ => Err(i),
            })
            .collect()
    }
}

#[test]
fn embeddings_token_array_input_is_read_as_text() {
    let p = |v: Value| {
        parse_embeddings_request(
            &serde_json::to_vec(&json!({"model": "m", "input": v})).unwrap(),
            &Letters,
        )
    };
    assert_eq!(p(json!([1, 2, 3])).unwrap().input, ["bcd"]);
    assert_eq!(
        p(json!([[1, 2], [3], [0]])).unwrap().input,
        ["bc", "d", "a"]
    );
    for (input, param, message) in [
        (
            json!([1, 9, 2]),
            "input[1]",
            "`input[1]` (9) is not a token of the letters encoding",
        ),
        (
            json!([[1], [2, 9]]),
            "input[1][1]",
            "`input[1][1]` (9) is not a token of the letters encoding",
        ),
        (json!([[1], []]), "input[1]", "`input[1]` must not be empty"),
        (
            json!(["a", 1]),
            "input[1]",
            "`input[1]` must be a string like `input[0]`: an array `input` holds only strings, \
             only token ids or only arrays of token ids",
        ),
        (
            json!([1, "a"]),
            "input[1]",
            "`input[1]` must be a token id like `input[0]`: an array `input` holds only strings, \
             only token ids or only arrays of token ids",
        ),
        (
            json!([[1], 2]),
            "input[1]",
            "`input[1]` must be an array of token ids like `input[0]`: an array `input` holds \
             only strings, only token ids or only arrays of token ids",
        ),
        (
            json!([1, -1]),
            "input[1]",
            "`input[1]` must be a token id (a non-negative integer)",
        ),
        (
            json!([1, 1.5]),
            "input[1]",
            "`input[1]` must be a token id (a non-negative integer)",
        ),
        (
            json!([[1, 4_294_967_296u64]]),
            "input[0][1]",
            "`input[0][1]` must be a token id (a non-negative integer)",
        ),
        (
            json!([["a"]]),
            "input[0][0]",
            "`input[0][0]` must be a token id (a non-negative integer)",
        ),
        (
            json!([{}]),
            "input[0]",
            "`input[0]` must be a string, a token id or an array of token ids",
        ),
    ] {
        let e = p(input.clone()).unwrap_err();
        assert_eq!(
            (e.param.as_deref(), e.message.as_str()),
            (Some(param), message),
            "{input}"
        );
    }
}

#[test]
fn embeddings_requests() {
    let p = |v: Value| parse_embeddings_request(&serde_json::to_vec(&v).unwrap(), &Letters);
    let r = p(json!({"model": "text-embedding-3-small", "input": "hello", "dimensions": 256, "user": "u"})).unwrap();
    assert_eq!(r.input, ["hello"]);
    assert_eq!(r.extra.get("dimensions"), Some(&json!(256)));
    assert!(!wants_base64(&r));
    let r = p(json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64"})).unwrap();
    assert_eq!(r.input, ["a", "b"]);
    assert!(wants_base64(&r));
    assert!(
        p(json!({"model": "m", "input": "a", "encoding_format": "float"}))
            .unwrap()
            .extra
            .is_empty()
    );
    for (v, param) in [
        (json!({"input": "a"}), "model"),
        (json!({"model": "m"}), "input"),
        (json!({"model": "m", "input": []}), "input"),
        (json!({"model": "m", "input": ["a", null]}), "input[1]"),
        (json!({"model": "m", "input": 5}), "input"),
        (
            json!({"model": "m", "input": "a", "encoding_format": "int8"}),
            "encoding_format",
        ),
    ] {
        assert_eq!(
            p(v.clone()).unwrap_err().param.as_deref(),
            Some(param),
            "{v}"
        );
    }

    let up: Value =
        serde_json::from_slice(&encode_embeddings_request(&r, "text-embedding-3-large")).unwrap();
    assert_eq!(
        up,
        json!({"model": "text-embedding-3-large", "input": ["a", "b"]})
    );
}

#[test]
fn embeddings_responses_float_and_base64() {
    let resp = EmbeddingsResponse {
        model: "text-embedding-3-small".into(),
        data: vec![vec![0.1, -0.25, 3.5e-5], vec![1.0, 0.0, -1.0]],
        usage: Usage {
            input_tokens: 8,
            output_tokens: 0,
            ..Default::default()
        },
    };
    let body = encode_embeddings_response(&resp);
    let text = String::from_utf8(body.clone()).unwrap();
    assert!(text.contains("[0.1,-0.25,0.000035]"), "{text}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][1]["object"], "embedding");
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["usage"], json!({"prompt_tokens": 8, "total_tokens": 8}));
    assert_eq!(decode_embeddings_response(&body).unwrap(), resp);

    let b64 = encode_embeddings_response_base64(&resp);
    let v: Value = serde_json::from_slice(&b64).unwrap();
    assert!(v["data"][0]["embedding"].is_string());
    assert_eq!(decode_embeddings_response(&b64).unwrap(), resp);

    // out-of-order indexes are put back in order
    let body = br#"{"object":"list","data":[{"object":"embedding","index":1,"embedding":[2.0]},{"object":"embedding","index":0,"embedding":[1.0]}],"model":"m","usage":{"prompt_tokens":2,"total_tokens":2}}"#;
    assert_eq!(
        decode_embeddings_response(body).unwrap().data,
        vec![vec![1.0], vec![2.0]]
    );
}

#[test]
fn base64_matches_the_standard_alphabet() {
    for (raw, enc) in [
        (&b""[..], ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg=="),
        (b"\xff\xfe\x00", "//4A"),
    ] {
        assert_eq!(b64_encode(raw), enc);
        assert_eq!(b64_decode(enc).unwrap(), raw);
    }
    assert!(b64_decode("Z").is_none());
    assert!(b64_decode("Zm*v").is_none());
}

// ---------------------------------------------------------------- properties

fn client_request(
    system: String,
    texts: Vec<String>,
    calls: Vec<(String, String)>,
    temperature: f64,
    stop: Vec<String>,
    stream: bool,
) -> Value {
    let mut messages = vec![json!({"role": "system", "content": system})];
    messages.push(json!({"role": "user", "content": texts[0]}));
    let tool_calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| json!({"id": format!("call_{i}"), "type": "function", "function": {"name": name, "arguments": args}}))
        .collect();
    messages.push(json!({"role": "assistant", "content": texts[1], "tool_calls": tool_calls}));
    for (i, _) in calls.iter().enumerate() {
        messages.push(
            json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": texts[2]}),
        );
    }
    messages.push(json!({"role": "user", "content": [
        {"type": "text", "text": texts[3]},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", b64_encode(texts[3].as_bytes()))}}
    ]}));
    let tools: Vec<Value> = calls
        .iter()
        .map(|(name, _)| json!({"type": "function", "function": {"name": name, "description": texts[0], "parameters": {"type": "object"}}}))
        .collect();
    json!({
        "model": "gpt-4o",
        "messages": messages,
        "tools": tools,
        "temperature": temperature,
        "stop": stop,
        "stream": stream,
        "stream_options": {"include_usage": true},
        "max_tokens": 100,
        "presence_penalty": 0.5,
    })
}

proptest! {
    #[test]
    fn client_request_survives_a_trip_upstream(
        system in "\\PC{0,30}",
        texts in proptest::collection::vec(any::<String>(), 4),
        calls in proptest::collection::vec(("[a-zA-Z_][a-zA-Z0-9_-]{0,20}", "[{}\\[\\]\":,a-z0-9 .\\\\-]{0,40}"), 0..4),
        temperature in 0.0f64..=2.0,
        stop in proptest::collection::vec("\\PC{1,5}", 0..4),
        stream: bool,
    ) {
        let body = client_request(system, texts, calls, temperature, stop, stream);
        let c1 = parse(&body).unwrap();
        let upstream = encode_request(&c1, &c1.model, Dialect::OpenAi);
        let c2 = parse_request(&upstream).unwrap();
        prop_assert_eq!(c1, c2);
    }
}

#[test]
fn a_delta_content_of_any_shape_is_read_to_its_text() {
    let decode = |content: &str| {
        let data = format!(
            r#"{{"id":"c","model":"m","choices":[{{"index":0,"delta":{{"content":{content}}},"finish_reason":null}}]}}"#
        );
        let mut out = Vec::new();
        StreamDecoder::new()
            .decode(&SseEvent { event: None, data }, &mut out)
            .unwrap();
        out.into_iter()
            .filter_map(|e| match e {
                StreamEvent::TextDelta { text } => Some(text),
                _ => None,
            })
            .collect::<String>()
    };
    assert_eq!(decode(r#""plain""#), "plain");
    assert_eq!(decode(r#""esc\"aped\n\u00e9""#), "esc\"aped\né");
    assert_eq!(
        decode(
            r#"[{"type":"thinking","thinking":[{"type":"text","text":"no"}]},{"type":"text","text":"a"},{"type":"text","text":"b"}]"#
        ),
        "ab"
    );
    for nothing in ["null", "7", "true", "{}", r#"{"text":"x"}"#, "[]"] {
        assert_eq!(decode(nothing), "", "{nothing}");
    }
    // A delta whose content is unreadable is still refused, not half-read.
    let mut out = Vec::new();
    let bad = SseEvent {
        event: None,
        data: r#"{"choices":[{"delta":{"content":"x}]}"#.into(),
    };
    assert!(StreamDecoder::new().decode(&bad, &mut out).is_err());
}

/// OpenAI's automatic prompt cache: `prompt_tokens_details.cached_tokens` (part of
/// `prompt_tokens`) is read from replies and streams, 0 as none, and written back to
/// OpenAI-surface clients whichever provider read from its cache.
#[test]
fn cached_tokens_both_ways() {
    let body = br#"{"id":"chatcmpl-c","object":"chat.completion","created":1,"model":"gpt-4o",
      "choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],
      "usage":{"prompt_tokens":2048,"completion_tokens":3,"total_tokens":2051,
        "prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0}}}"#;
    let r = decode_response(body).unwrap();
    assert_eq!(r.usage.input_tokens, 2048);
    assert_eq!(r.usage.cache_read_input_tokens, Some(1920));
    assert_eq!(r.usage.cache_creation_input_tokens, None);
    let v: Value = serde_json::from_slice(&encode_response(&r, 1)).unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 2048);
    assert_eq!(
        v["usage"]["prompt_tokens_details"],
        json!({"cached_tokens": 1920})
    );
    // Nothing cached (0) and no details at all both read as none.
    for usage in [
        r#"{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":0}}"#,
        r#"{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":null}"#,
        r#"{"prompt_tokens":5,"completion_tokens":1}"#,
    ] {
        let body = format!(
            r#"{{"id":"x","model":"m","choices":[{{"index":0,"message":{{"content":"a"}},"finish_reason":"stop"}}],"usage":{usage}}}"#
        );
        let r = decode_response(body.as_bytes()).unwrap();
        assert_eq!(r.usage.cache_read_input_tokens, None, "{usage}");
    }
    // A stream's usage chunk.
    let events = decode_all(
        b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":1500,\"completion_tokens\":2,\"total_tokens\":1502,\"prompt_tokens_details\":{\"cached_tokens\":1024}}}\n\n",
    );
    let usage = events.iter().find_map(|e| match e {
        StreamEvent::Usage(u) => Some(*u),
        _ => None,
    });
    assert_eq!(
        usage,
        Some(Usage {
            input_tokens: 1500,
            output_tokens: 2,
            cache_read_input_tokens: Some(1024),
            ..Default::default()
        })
    );
}

// ---------------------------------------------------------------- structured outputs

#[test]
fn parses_response_format_types_and_writes_them_back() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
        "required": ["city"], "additionalProperties": false});
    let given = json!({"type": "json_schema", "json_schema": {
        "name": "Weather", "description": "the weather", "schema": schema, "strict": true}});
    let r = parse(&with("response_format", given.clone())).unwrap();
    assert_eq!(
        r.response_format,
        Some(ResponseFormat::JsonSchema(JsonSchemaFormat {
            name: Some("Weather".into()),
            description: Some("the weather".into()),
            schema: schema.clone(),
            strict: Some(true),
        }))
    );
    // OpenAI → OpenAI: the same object goes upstream.
    let v: Value = serde_json::from_slice(&encode_request(&r, "gpt-4o", Dialect::OpenAi)).unwrap();
    assert_eq!(v["response_format"], given);

    // Without a name, strict or description, the schema goes up under SCHEMA_NAME.
    let bare = json!({"type": "json_schema", "json_schema": {"schema": schema}});
    let r = parse(&with("response_format", bare)).unwrap();
    let v: Value = serde_json::from_slice(&encode_request(&r, "gpt-4o", Dialect::OpenAi)).unwrap();
    assert_eq!(
        v["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "schema": schema}})
    );

    for (given, want) in [
        (json!({"type": "text"}), Some(ResponseFormat::Text)),
        (
            json!({"type": "json_object"}),
            Some(ResponseFormat::JsonObject),
        ),
        (Value::Null, None),
        // A type the hub does not model (vLLM) is kept as given.
        (
            json!({"type": "structural_tag", "structures": []}),
            Some(ResponseFormat::Other(
                json!({"type": "structural_tag", "structures": []}),
            )),
        ),
    ] {
        let r = parse(&with("response_format", given.clone())).unwrap();
        assert_eq!(r.response_format, want, "{given}");
        let v: Value =
            serde_json::from_slice(&encode_request(&r, "m", Dialect::Compatible)).unwrap();
        let sent = v.get("response_format").cloned().unwrap_or(Value::Null);
        assert_eq!(sent, given);
    }
}

#[test]
fn response_format_errors_name_the_field() {
    let schema = json!({"type": "object"});
    for (format, param, message) in [
        (
            json!("json"),
            "response_format",
            "`response_format` must be an object such as {\"type\": \"json_schema\", \
             \"json_schema\": {\"name\": ..., \"schema\": {...}}}",
        ),
        (
            json!({"json_schema": {"schema": schema}}),
            "response_format.type",
            "`response_format.type` is required and must be a string: text, json_object or \
             json_schema",
        ),
        (
            json!({"type": "json_schema"}),
            "response_format.json_schema",
            "`response_format.json_schema` is required when `response_format.type` is \
             json_schema, and must be an object with `name` and `schema`",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "x"}}),
            "response_format.json_schema.schema",
            "`response_format.json_schema.schema` is required and must be a JSON Schema object",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": "{}"}}),
            "response_format.json_schema.schema",
            "`response_format.json_schema.schema` is required and must be a JSON Schema object",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": 1, "schema": schema}}),
            "response_format.json_schema.name",
            "`response_format.json_schema.name` must be a string",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"schema": schema, "description": []}}),
            "response_format.json_schema.description",
            "`response_format.json_schema.description` must be a string",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"schema": schema, "strict": "yes"}}),
            "response_format.json_schema.strict",
            "`response_format.json_schema.strict` must be a boolean",
        ),
    ] {
        let e = parse(&with("response_format", format.clone())).unwrap_err();
        assert_eq!(e.param.as_deref(), Some(param), "{format}");
        assert_eq!(e.message, message, "{format}");
    }
}
