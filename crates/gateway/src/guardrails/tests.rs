#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use asc_wire::canonical::{
    Block, CacheControl, ChatRequest, ChatResponse, Message, Role, StopReason, StreamEvent, System,
    SystemBlock, Tool, Usage,
};
use proptest::prelude::*;

use super::pii::{self, Kind, PiiState, detect};
use super::tokens::{Encoding, count_text, encoding_for};
use super::*;

fn kinds(text: &str) -> Vec<&'static str> {
    detect(text, 0).iter().map(|m| m.kind.name()).collect()
}

fn found(text: &str) -> Vec<(&'static str, String)> {
    detect(text, 0)
        .iter()
        .map(|m| (m.kind.name(), text[m.start..m.end].to_owned()))
        .collect()
}

fn redact(text: &str) -> String {
    PiiState::default()
        .process(text, true)
        .unwrap_or_else(|| text.to_owned())
}

/// Each fixture must be found whole, as exactly one value of `kind`, in several contexts.
fn assert_found(kind: &str, fixtures: &[&str]) {
    for v in fixtures {
        for ctx in ["{}", "value: {}.", "({})", "x {}\nnext", "\"{}\","] {
            let text = ctx.replace("{}", v);
            assert_eq!(
                found(&text),
                vec![(kind, (*v).to_owned())],
                "{kind} fixture {v:?} in {text:?}"
            );
        }
    }
}

fn assert_none(fixtures: &[&str]) {
    for v in fixtures {
        for ctx in ["{}", "ref {} ok.", "({})"] {
            let text = ctx.replace("{}", v);
            assert_eq!(found(&text), vec![], "near miss {v:?} in {text:?}");
        }
    }
}

fn assert_not_kind(kind: &str, fixtures: &[&str]) {
    for v in fixtures {
        assert!(
            !kinds(v).contains(&kind),
            "{v:?} must not be {kind}: {:?}",
            found(v)
        );
    }
}

#[test]
fn builtin_patterns_compile() {
    // Every detector finds its canonical example (a pattern that failed to compile would
    // silently find nothing).
    let text = "a@b.io DE89370400440532013000 4111111111111111 123-45-6789 8.8.8.8 2001:db8::1 \
                +44 20 7946 0958, 01.02.2024";
    assert_eq!(
        kinds(text),
        ["email", "iban", "card", "ssn", "ip", "ip", "phone"]
    );
}

#[test]
fn emails() {
    assert_found(
        "email",
        &[
            "john.doe@example.com",
            "JOHN+tag@Mail.Example.co.uk",
            "a_b-c%d@sub.domain.io",
            "x@y.museum",
        ],
    );
    assert_eq!(kinds("mailto:john@example.com"), ["email"]);
    assert_eq!(kinds("<john@example.com>"), ["email"]);
    assert_none(&[
        "john@localhost",
        "user@@example.com",
        "foo..bar@example.com",
        "john.@example.com",
        "@handle",
        "version@1.2.3",
        "a@b.c",
    ]);
    // An unbounded local part is not an address.
    assert_none(&[&format!("{}@example.com", "x".repeat(80))]);
}

#[test]
fn phones() {
    assert_found(
        "phone",
        &[
            "+1 (555) 123-4567",
            "+44 20 7946 0958",
            "+33612345678",
            "+49 (0)30 1234567",
            "+1-800-555-0199",
            "(555) 123-4567",
            "555-123-4567",
            "555.123.4567",
            "1-800-555-0199",
            "020 7946 0958",
            "06 12 34 56 78",
            "030-123456",
        ],
    );
    assert_none(&[
        "12345678",
        "#1234567890",
        "2024-06-12",
        "01.02.2024",
        "+12",
        "2+3",
        "INV-2024-000123",
        "1.5551234567",
        "555-1234",
    ]);
}

#[test]
fn cards() {
    assert!(pii::luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
    assert!(!pii::luhn(&[
        4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2
    ]));
    assert_found(
        "card",
        &[
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4111111111111111",
            "5500 0000 0000 0004",
            "3782 822463 10005",
            "6011111111111117",
            "4222222222222",
            "6304 0000 0000 0000 018",
        ],
    );
    // A trailing short group is not part of the number.
    assert_eq!(
        found("4111 1111 1111 1111 12 items"),
        vec![("card", "4111 1111 1111 1111".to_owned())]
    );
    assert_none(&[
        "4111 1111 1111 1112",
        "4111111111111112",
        "5500 0000 0000 0005",
        "0000 0000 0000 0000",
        "4444444444444444",
        "123456789012",
        "41111111111111111111111",
        "4111 1111 1111 1111-3",
    ]);
    assert_not_kind("card", &["+4111111111111111"]);
}

#[test]
fn ssns() {
    assert_found("ssn", &["123-45-6789", "078-05-1120", "899-99-9999"]);
    assert_none(&[
        "000-12-3456",
        "666-12-3456",
        "912-34-5678",
        "123-00-4567",
        "123-45-0000",
        "123-45-67890",
        "1123-45-6789",
        "123 45 6789",
    ]);
}

#[test]
fn ibans() {
    assert_found(
        "iban",
        &[
            "DE89 3704 0044 0532 0130 00",
            "DE89370400440532013000",
            "GB29 NWBK 6016 1331 9268 19",
            "FR14 2004 1010 0505 0001 3M02 606",
            "NL91ABNA0417164300",
            "BE68 5390 0754 7034",
            "CH93 0076 2011 6238 5295 7",
            "NO9386011117947",
            "de89 3704 0044 0532 0130 00",
        ],
    );
    assert_eq!(
        found("IBAN DE89 3704 0044 0532 0130 00 ABCD please"),
        vec![("iban", "DE89 3704 0044 0532 0130 00".to_owned())]
    );
    assert!(pii::mod97_ok(b"GB82WEST12345698765432"));
    assert!(!pii::mod97_ok(b"GB83WEST12345698765432"));
    assert_none(&[
        "DE89 3704 0044 0532 0130 01",
        "DE88370400440532013000",
        "XX89 3704 0044 0532 0130 00",
        "DE89 3704 0044 0532 0130",
        "DE89370400440532013000AB",
    ]);
}

#[test]
fn ips() {
    assert_found(
        "ip",
        &[
            "192.168.1.10",
            "8.8.8.8",
            "10.0.0.1",
            "255.255.255.255",
            "2001:db8::1",
            "fe80::1ff:fe23:4567:890a",
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            "::ffff:192.0.2.128",
        ],
    );
    assert_eq!(found("net 10.0.0.0/8"), vec![("ip", "10.0.0.0".to_owned())]);
    assert_none(&[
        "999.1.1.1",
        "256.1.1.1",
        "1.2.3.4.5",
        "v1.2.3.4",
        "12:30:45",
        "std::fmt::Debug",
        "a::b",
        "dead::beef",
        "00:1a:2b:3c:4d:5e",
        "::1",
    ]);
}

#[test]
fn overlapping_types_resolve_by_priority() {
    // The card's digits also look like a trunk phone tail; the card wins.
    assert_eq!(kinds("pay 5500 0000 0000 0004 now"), ["card"]);
    // The embedded IPv4 of an IPv6 address is one value.
    assert_eq!(kinds("::ffff:192.0.2.128"), ["ip"]);
}

#[test]
fn placeholders_are_typed_numbered_and_stable() {
    let text = "Mail john@example.com or JOHN@example.com, then mary@example.com; \
                card 4111 1111 1111 1111 (again 4111-1111-1111-1111); ssn 123-45-6789; \
                iban DE89 3704 0044 0532 0130 00; ip 10.0.0.1; call +44 20 7946 0958.";
    assert_eq!(
        redact(text),
        "Mail [EMAIL_1] or [EMAIL_1], then [EMAIL_2]; card [CARD_1] (again [CARD_1]); \
         ssn [SSN_1]; iban [IBAN_1]; ip [IP_1]; call [PHONE_1]."
    );
    let mut state = PiiState::default();
    state.process(text, false);
    let counts: Vec<(&str, u32)> = state.findings.pii.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(
        counts,
        [
            ("card", 2),
            ("email", 3),
            ("iban", 1),
            ("ip", 1),
            ("phone", 1),
            ("ssn", 1)
        ]
    );
    assert_eq!(redact("nothing here 42"), "nothing here 42");
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "chat".into(),
        system: Some("Support agent. Escalate to boss@corp.example.".into()),
        messages: vec![
            Message {
                role: Role::User,
                content: vec![Block::Text {
                    text: "I am john@example.com, card 4111 1111 1111 1111.".into(),
                    cache_control: None,
                }],
            },
            Message {
                role: Role::Assistant,
                content: vec![Block::ToolCall {
                    id: "c1".into(),
                    name: "lookup".into(),
                    arguments: r#"{"email":"john@example.com","note":"\n555-123-4567"}"#.into(),
                    cache_control: None,
                }],
            },
            Message {
                role: Role::User,
                content: vec![Block::ToolResult {
                    tool_call_id: "c1".into(),
                    content: "account of JOHN@example.com, iban DE89370400440532013000".into(),
                    is_error: false,
                    cache_control: None,
                }],
            },
        ],
        tools: vec![Tool {
            name: "lookup".into(),
            description: Some("Looks a customer up".into()),
            parameters: serde_json::json!({"type": "object"}),
            strict: None,
            cache_control: None,
        }],
        ..ChatRequest::default()
    }
}

pub(super) fn guardrails(pii: Option<&str>, terms: &[&str], max: Option<u64>) -> Guardrails {
    Guardrails::from_raw(Some(&GuardrailsRaw {
        pii: pii.map(str::to_owned),
        max_prompt_tokens: max,
        blocked_terms: terms.iter().map(|t| (*t).to_owned()).collect(),
    }))
    .unwrap()
}

#[test]
fn redact_mode_rewrites_every_visible_text() {
    let g = guardrails(Some("redact"), &[], None);
    let mut req = request();
    let findings = g.check_request(&mut req, "gpt-4o").unwrap();
    assert_eq!(
        req.system_text().as_deref(),
        Some("Support agent. Escalate to [EMAIL_1].")
    );
    assert_eq!(
        req.messages[0].content[0],
        Block::Text {
            text: "I am [EMAIL_2], card [CARD_1].".into(),
            cache_control: None,
        }
    );
    let Block::ToolCall { arguments, .. } = &req.messages[1].content[0] else {
        panic!("tool call expected");
    };
    assert_eq!(arguments, r#"{"email":"[EMAIL_2]","note":"\n[PHONE_1]"}"#);
    let Block::ToolResult { content, .. } = &req.messages[2].content[0] else {
        panic!("tool result expected");
    };
    assert_eq!(content, "account of [EMAIL_2], iban [IBAN_1]");
    assert_eq!(findings.pii.get("email"), Some(&4));
    assert_eq!(findings.pii.get("card"), Some(&1));
    assert_eq!(findings.prompt_tokens, None);
    // Texts without PII (tool definitions are not rewritten) keep their bytes.
    assert_eq!(req.tools, request().tools);
}

#[test]
fn detect_mode_changes_nothing() {
    let g = guardrails(Some("detect"), &[], None);
    let mut req = request();
    let findings = g.check_request(&mut req, "gpt-4o").unwrap();
    assert_eq!(req, request());
    assert_eq!(findings.pii.get("email"), Some(&4));
    assert_eq!(findings.pii.get("iban"), Some(&1));
    assert_eq!(findings.pii.get("phone"), Some(&1));
    assert!(g.stream_redactor().is_none());
}

#[test]
fn block_mode_refuses_pii_and_names_types_only() {
    let g = guardrails(Some("block"), &[], None);
    let err = g.check_request(&mut request(), "gpt-4o").unwrap_err();
    assert_eq!(
        err,
        Violation::Pii {
            types: vec!["card", "email", "iban", "phone"]
        }
    );
    assert_eq!(err.guardrail(), "pii");
    assert!(!err.to_string().contains("john"));
    let mut clean = ChatRequest {
        messages: vec![Message {
            role: Role::User,
            content: vec![Block::Text {
                text: "hello there".into(),
                cache_control: None,
            }],
        }],
        ..ChatRequest::default()
    };
    assert_eq!(
        g.check_request(&mut clean, "gpt-4o").unwrap(),
        Findings::default()
    );
}

#[test]
fn off_and_none() {
    let g = Guardrails::from_raw(None).unwrap();
    assert!(g.is_off());
    let mut req = request();
    assert_eq!(
        g.check_request(&mut req, "gpt-4o").unwrap(),
        Findings::default()
    );
    assert_eq!(req, request());
    assert!(g.stream_redactor().is_none());
    assert!(guardrails(Some("off"), &[], None).is_off());
    assert!(!guardrails(None, &["x"], None).is_off());
    assert!(!guardrails(None, &[], Some(10)).is_off());
}

#[test]
fn from_raw_errors_name_the_field() {
    let raw = |pii: Option<&str>, max: Option<u64>, terms: Vec<&str>| GuardrailsRaw {
        pii: pii.map(str::to_owned),
        max_prompt_tokens: max,
        blocked_terms: terms.into_iter().map(str::to_owned).collect(),
    };
    let err = Guardrails::from_raw(Some(&raw(Some("mask"), None, vec![]))).unwrap_err();
    assert!(err.starts_with("guardrails.pii:"), "{err}");
    let err = Guardrails::from_raw(Some(&raw(None, Some(0), vec![]))).unwrap_err();
    assert!(err.starts_with("guardrails.max_prompt_tokens:"), "{err}");
    let err = Guardrails::from_raw(Some(&raw(None, None, vec!["ok", "  "]))).unwrap_err();
    assert!(err.starts_with("guardrails.blocked_terms[1]:"), "{err}");
}

fn user(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![Message {
            role: Role::User,
            content: vec![Block::Text {
                text: text.into(),
                cache_control: None,
            }],
        }],
        ..ChatRequest::default()
    }
}

#[test]
fn blocked_terms_whole_word_case_insensitive() {
    let g = guardrails(
        Some("off"),
        &["project-orion", "orion", "Zeta Lab", "café"],
        None,
    );
    for text in [
        "about Project-Orion today",
        "ORION.",
        "the orion",
        "visit zeta lab",
        "(orion)",
        "au CAFÉ",
    ] {
        let err = g.check_request(&mut user(text), "gpt-4o").unwrap_err();
        assert_eq!(err, Violation::BlockedTerm, "{text}");
        assert_eq!(err.guardrail(), "blocked_terms");
        assert!(!err.to_string().to_lowercase().contains("orion"));
    }
    for text in [
        "orionis",
        "the orions",
        "zetalab",
        "xorion",
        "orion_x",
        "cafés",
    ] {
        assert!(g.check_request(&mut user(text), "gpt-4o").is_ok(), "{text}");
    }
    // Blocked whatever the pii mode, and in the system prompt or tool results too.
    let g = guardrails(Some("redact"), &["orion"], None);
    let mut req = user("fine");
    req.system = Some("codename Orion".into());
    assert_eq!(g.check_request(&mut req, "m"), Err(Violation::BlockedTerm));
}

#[test]
fn prompt_too_long() {
    let g = guardrails(None, &[], Some(20));
    let mut short = user("hi");
    let f = g.check_request(&mut short, "gpt-4o").unwrap();
    assert!(f.prompt_tokens.is_some_and(|t| t > 0 && t <= 20));
    let err = g
        .check_request(&mut user(&"word ".repeat(50)), "gpt-4o")
        .unwrap_err();
    let Violation::PromptTooLong { tokens, max } = err else {
        panic!("{err:?}");
    };
    assert!(tokens > 50 && max == 20);
    assert_eq!(err.guardrail(), "max_prompt_tokens");
}

#[test]
fn token_counting() {
    assert_eq!(encoding_for("gpt-4o-mini"), Encoding::O200kBase);
    assert_eq!(encoding_for("openai/gpt-4.1"), Encoding::O200kBase);
    assert_eq!(encoding_for("o3-mini"), Encoding::O200kBase);
    assert_eq!(encoding_for("o1"), Encoding::O200kBase);
    assert_eq!(encoding_for("gpt-5"), Encoding::O200kBase);
    assert_eq!(encoding_for("gpt-4"), Encoding::Cl100kBase);
    assert_eq!(encoding_for("gpt-4-turbo"), Encoding::Cl100kBase);
    assert_eq!(encoding_for("gpt-3.5-turbo"), Encoding::Cl100kBase);
    assert_eq!(encoding_for("claude-sonnet-4-5"), Encoding::Cl100kBase);
    assert_eq!(encoding_for("mistral-large-latest"), Encoding::Cl100kBase);
    assert_eq!(encoding_for("omni-model"), Encoding::Cl100kBase);

    assert_eq!(count_text(Encoding::Cl100kBase, "hello world"), 2);
    assert_eq!(count_text(Encoding::O200kBase, "hello world"), 2);
    let text = "Ünïcödé текст на русском языке и 日本語のテキスト";
    assert_ne!(
        count_text(Encoding::Cl100kBase, text),
        count_text(Encoding::O200kBase, text)
    );

    let small = count_prompt_tokens("gpt-4o", &user("hello"));
    assert!(small > 0);
    let big = count_prompt_tokens("gpt-4o", &user(&"hello world ".repeat(100)));
    assert!(big > small + 150);
    let mut req = request();
    let with_tools = count_prompt_tokens("claude-3-5-haiku", &req);
    req.tools.clear();
    assert!(count_prompt_tokens("claude-3-5-haiku", &req) < with_tools);
}

#[test]
fn response_redaction() {
    let g = guardrails(Some("redact"), &["orion"], None);
    let mut resp = ChatResponse {
        id: "r".into(),
        model: "m".into(),
        content: vec![
            Block::Text {
                text: "Write to ann@example.com about Orion, or ann@example.com.".into(),
                cache_control: None,
            },
            Block::ToolCall {
                id: "t".into(),
                name: "send".into(),
                arguments: r#"{"to":"ann@example.com", "ip":"10.1.2.3", "n":1}"#.into(),
                cache_control: None,
            },
        ],
        stop_reason: Some(StopReason::EndTurn),
        usage: Usage::default(),
    };
    let f = g.redact_response(&mut resp);
    assert_eq!(resp.text(), "Write to [EMAIL_1] about Orion, or [EMAIL_1].");
    let Block::ToolCall { arguments, .. } = &resp.content[1] else {
        panic!("tool call expected");
    };
    assert_eq!(arguments, r#"{"to":"[EMAIL_1]", "ip":"[IP_1]", "n":1}"#);
    assert_eq!(f.pii.get("email"), Some(&3));
    assert_eq!(f.blocked_terms, 1);

    let detect = guardrails(Some("detect"), &[], None);
    let mut copy = resp.clone();
    copy.content = vec![Block::Text {
        text: "ann@example.com".into(),
        cache_control: None,
    }];
    let before = copy.clone();
    assert_eq!(detect.redact_response(&mut copy).pii.get("email"), Some(&1));
    assert_eq!(copy, before);
}

fn stream_all(parts: &[&str]) -> (Vec<String>, String) {
    let mut r = guardrails(Some("redact"), &[], None)
        .stream_redactor()
        .unwrap();
    let mut chunks: Vec<String> = parts.iter().map(|p| r.push(p)).collect();
    chunks.push(r.finish());
    let all = chunks.concat();
    (chunks, all)
}

#[test]
fn stream_holds_back_a_split_value() {
    let (chunks, all) = stream_all(&["write to jo", "hn@example.com now"]);
    assert_eq!(all, "write to [EMAIL_1] now");
    assert_eq!(chunks, ["write to ", "[EMAIL_1] ", "now"]);

    let (chunks, all) = stream_all(&["card 4111 1111 ", "1111 1111 and ", "more text ", "x"]);
    assert_eq!(all, "card [CARD_1] and more text x");
    assert!(chunks.iter().all(|c| !c.contains("4111")));

    let (_, all) = stream_all(&["a@b.io then a@b", ".io and c@d.io"]);
    assert_eq!(all, "[EMAIL_1] then [EMAIL_1] and [EMAIL_2]");
}

#[test]
fn stream_hold_back_is_bounded() {
    let mut r = StreamRedactor::new();
    // Prose: only the last word is held.
    assert_eq!(r.push("hello there wor"), "hello there ");
    // A run without whitespace is emitted once it passes the cap.
    let blob = "x".repeat(3000);
    let out = r.push(&blob);
    assert!(out.len() >= 3000 - stream::HOLD_CAP, "{}", out.len());
    let rest = r.finish();
    assert_eq!(
        format!("hello there {out}{rest}"),
        format!("hello there wor{blob}")
    );
}

#[test]
fn redaction_rewrites_system_blocks_one_by_one_and_keeps_thinking() {
    let g = guardrails(Some("redact"), &["forbidden"], None);
    let mut cache = serde_json::Map::new();
    cache.insert("type".into(), serde_json::json!("ephemeral"));
    let thinking = Block::Thinking {
        thinking: "The user is john@example.com.".into(),
        signature: Some("sig".into()),
    };
    let mut req = request();
    req.system = Some(System::Blocks(vec![
        SystemBlock {
            text: "Support agent.".into(),
            cache_control: None,
        },
        SystemBlock {
            text: "Escalate to boss@corp.example.".into(),
            cache_control: Some(CacheControl(cache.clone())),
        },
    ]));
    req.messages[1].content.insert(0, thinking.clone());
    g.check_request(&mut req, "gpt-4o").unwrap();
    assert_eq!(
        req.system,
        Some(System::Blocks(vec![
            SystemBlock {
                text: "Support agent.".into(),
                cache_control: None,
            },
            SystemBlock {
                text: "Escalate to [EMAIL_1].".into(),
                cache_control: Some(CacheControl(cache)),
            },
        ]))
    );
    // Thinking sent back keeps the bytes its signature covers.
    assert_eq!(req.messages[1].content[0], thinking);
    // Blocked terms and token counting read the joined system text.
    let mut blocked = request();
    blocked.system = Some(System::Blocks(vec![SystemBlock {
        text: "a forbidden word".into(),
        cache_control: None,
    }]));
    assert!(g.check_request(&mut blocked, "gpt-4o").is_err());
    let mut as_text = request();
    as_text.system = Some("Support agent.\n\nEscalate.".into());
    let mut as_blocks = request();
    as_blocks.system = Some(System::Blocks(vec![
        SystemBlock {
            text: "Support agent.".into(),
            cache_control: None,
        },
        SystemBlock {
            text: "Escalate.".into(),
            cache_control: None,
        },
    ]));
    assert_eq!(
        super::tokens::count_prompt_tokens("gpt-4o", &as_text),
        super::tokens::count_prompt_tokens("gpt-4o", &as_blocks)
    );
    assert_eq!(loggable_request(&as_text), loggable_request(&as_blocks));
}

#[test]
fn replies_have_pii_redacted_in_thinking_too() {
    let g = guardrails(Some("redact"), &[], None);
    let mut resp = ChatResponse {
        id: "r".into(),
        model: "m".into(),
        content: vec![
            Block::Thinking {
                thinking: "Mail bob@example.org.".into(),
                signature: Some("sig".into()),
            },
            Block::RedactedThinking {
                data: "opaque".into(),
            },
        ],
        stop_reason: None,
        usage: Usage::default(),
    };
    g.redact_response(&mut resp);
    assert_eq!(
        resp.content,
        vec![
            Block::Thinking {
                thinking: "Mail [EMAIL_1].".into(),
                signature: Some("sig".into()),
            },
            Block::RedactedThinking {
                data: "opaque".into()
            },
        ]
    );
    // Streamed: thinking is held back and redacted, and flushed before its signature.
    let mut r = StreamRedactor::new();
    let mut out = Vec::new();
    for ev in [
        StreamEvent::TextDelta { text: "a ".into() },
        StreamEvent::ThinkingDelta {
            thinking: "mail bob@exa".into(),
        },
        StreamEvent::ThinkingDelta {
            thinking: "mple.org".into(),
        },
        StreamEvent::SignatureDelta {
            signature: "sig".into(),
        },
        StreamEvent::RedactedThinking { data: "x".into() },
        StreamEvent::Done,
    ] {
        out.extend(r.on_event(ev));
    }
    let thinking: String = out
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ThinkingDelta { thinking } => Some(thinking.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(thinking, "mail [EMAIL_1]");
    let kinds: Vec<&str> = out
        .iter()
        .map(|e| match e {
            StreamEvent::TextDelta { .. } => "text",
            StreamEvent::ThinkingDelta { .. } => "thinking",
            StreamEvent::SignatureDelta { .. } => "signature",
            StreamEvent::RedactedThinking { .. } => "redacted",
            StreamEvent::Done => "done",
            _ => "other",
        })
        .collect();
    // The text before the thinking is flushed first; the thinking before its signature.
    let first_thinking = kinds.iter().position(|k| *k == "thinking").unwrap();
    let last_thinking = kinds.iter().rposition(|k| *k == "thinking").unwrap();
    let signature = kinds.iter().position(|k| *k == "signature").unwrap();
    assert!(kinds[..first_thinking].contains(&"text"), "{kinds:?}");
    assert!(last_thinking < signature, "{kinds:?}");
    assert_eq!(kinds[signature..], ["signature", "redacted", "done"]);
}

#[test]
fn stream_events() {
    let mut r = StreamRedactor::new();
    let mut out = Vec::new();
    for ev in [
        StreamEvent::Start {
            id: "s".into(),
            model: "m".into(),
            usage: None,
        },
        StreamEvent::TextDelta {
            text: "mail bob@exa".into(),
        },
        StreamEvent::TextDelta {
            text: "mple.org".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "t".into(),
            name: "f".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: r#"{"to":"bob@ex"#.into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: r#"ample.org"}"#.into(),
        },
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
        },
        StreamEvent::Done,
    ] {
        out.extend(r.on_event(ev));
    }
    let text: String = out
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let args: String = out
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallDelta { arguments, .. } => Some(arguments.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "mail [EMAIL_1]");
    assert_eq!(args, r#"{"to":"[EMAIL_1]"}"#);
    assert!(matches!(out[0], StreamEvent::Start { .. }));
    assert!(matches!(out.last(), Some(StreamEvent::Done)));
    let start = out
        .iter()
        .position(|e| matches!(e, StreamEvent::ToolCallStart { .. }))
        .unwrap();
    assert!(
        out[..start]
            .iter()
            .any(|e| matches!(e, StreamEvent::TextDelta { .. }))
    );
    assert_eq!(r.findings().pii.get("email"), Some(&2));
}

const SAMPLES: &[&str] = &[
    "john.doe@example.com",
    "a@b.io",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "5500000000000004",
    "DE89 3704 0044 0532 0130 00",
    "GB29NWBK60161331926819",
    "+44 20 7946 0958",
    "123-45-6789",
    "10.0.0.1",
];

const WORDS: &[&str] = &[
    "the", "card", "is", "mail", "to", "x", "42", "2024", "(call", "me)", "1.2", "-", "\n", "",
    "ok.", "IBAN", "DE", "4111",
];

fn text_strategy() -> impl Strategy<Value = (String, Vec<usize>)> {
    let words = prop::collection::vec(prop::sample::select(WORDS), 0..8);
    (
        words.clone(),
        prop::collection::vec(prop::sample::select(SAMPLES), 1..3),
        words,
        prop::sample::select(&[" ", "\n", ", ", " (", ": "][..]),
    )
        .prop_map(|(pre, pii, post, sep)| {
            let mut parts: Vec<String> = pre.iter().map(|w| (*w).to_owned()).collect();
            for p in pii {
                parts.push(p.to_owned());
            }
            parts.extend(post.iter().map(|w| (*w).to_owned()));
            parts.join(sep)
        })
        .prop_flat_map(|text| {
            let n = text.len();
            (Just(text), prop::collection::vec(0..=n, 0..8))
        })
}

fn split_stream(text: &str, mut cuts: Vec<usize>) -> String {
    cuts.sort_unstable();
    let mut r = StreamRedactor::new();
    let mut out = String::new();
    let mut last = 0;
    for c in cuts {
        out.push_str(&r.push(&text[last..c]));
        last = c;
    }
    out.push_str(&r.push(&text[last..]));
    out.push_str(&r.finish());
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn stream_equals_whole_redaction((text, cuts) in text_strategy()) {
        let whole = redact(&text);
        let streamed = split_stream(&text, cuts);
        prop_assert_eq!(&streamed, &whole);
        for s in SAMPLES {
            prop_assert!(!streamed.contains(s), "{:?} leaked in {:?}", s, streamed);
        }
    }

    #[test]
    fn stream_equals_whole_on_noise(
        text in "[0-9 .\\-@+():a-fA-Z\\n]{0,400}",
        cuts in prop::collection::vec(0usize..400, 0..10),
    ) {
        let cuts = cuts.into_iter().filter(|c| *c <= text.len()).collect();
        prop_assert_eq!(split_stream(&text, cuts), redact(&text));
    }
}

#[test]
fn stream_forced_cuts_keep_values_whole() {
    // A dense run with no whitespace long enough to force cuts, values inside.
    let mut text = String::new();
    for i in 0..300 {
        text.push_str(&format!("{i}-a@b.io;"));
    }
    let expected = redact(&text);
    for step in [1, 7, 64, 500] {
        let cuts: Vec<usize> = (1..text.len()).step_by(step).collect();
        assert_eq!(split_stream(&text, cuts), expected, "step {step}");
    }
    assert_eq!(Kind::ALL.len(), 6);
}

#[test]
fn tool_arguments_keep_their_shape() {
    let mut s = PiiState::default();
    let args = "{\"bob@x.io\": [\"bob@x.io\", {\"ip\" : \"say \\\"10.0.0.1\\\"\"}], \"n\": 2}";
    assert_eq!(
        s.process_json(args, true).unwrap(),
        "{\"bob@x.io\": [\"[EMAIL_1]\", {\"ip\" : \"say \\\"[IP_1]\\\"\"}], \"n\": 2}"
    );
    assert_eq!(s.process_json("{\"a\": 1}", true), None);
    // Not JSON (yet): plain text.
    assert_eq!(
        s.process_json("{\"to\": \"bob@x.io", true).unwrap(),
        "{\"to\": \"[EMAIL_1]"
    );
}

#[test]
fn ordinary_text_has_no_pii() {
    for text in [
        "2024-06-12T10:30:00Z",
        "at 10:30:00 on 12/06/2024",
        "costs $1,234.56 or 1 234 567 units",
        "id 550e8400-e29b-41d4-a716-446655440000",
        "commit 3f9a2c1d4e5b6a7980c1d2e3f4a5b6c7d8e9f001",
        "Python 3.11.4, rust 1.95.0, semver 1.2.3-beta.1",
        "ISBN 978-3-16-148410-0",
        "call fn::<u32>() and std::net::Ipv6Addr",
        "order #20240612001, invoice INV-2024-000123, ticket 123456789",
        "lat 48.8566, lon 2.3522; 3.14159265358979",
        "the year 1999 and 2000-2024",
    ] {
        assert_eq!(found(text), vec![], "{text}");
    }
}
