//! Translation across formats keeps what both sides can express: a conversation written
//! on one surface, sent upstream in the other format and read back there, has the same
//! texts, tool names, tool arguments and tool-call pairing; a reply read from one format
//! and written in the other keeps its text, tool calls, stop reason and usage; a stream
//! decoded from one format and encoded in the other reassembles to the same reply.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use asc_wire::sse::SseParser;
use asc_wire::{Block, ChatResponse, Role, StopReason, StreamEvent, Usage, anthropic, openai};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Texts and tool calls of a canonical conversation, the part both formats express.
fn essence(req: &asc_wire::ChatRequest) -> Vec<(Role, Vec<String>)> {
    req.messages
        .iter()
        .map(|m| {
            let parts = m
                .content
                .iter()
                .map(|b| match b {
                    Block::Text { text, .. } => format!("text:{text}"),
                    Block::ToolCall {
                        name, arguments, ..
                    } => {
                        let args: Value = serde_json::from_str(arguments).unwrap();
                        format!("call:{name}:{args}")
                    }
                    Block::ToolResult { content, .. } => format!("result:{content}"),
                    Block::Image { .. } => "image".into(),
                    Block::Thinking { thinking, .. } => format!("thinking:{thinking}"),
                    Block::RedactedThinking { .. } => "redacted_thinking".into(),
                    Block::Document(_) => "document".into(),
                })
                .collect();
            (m.role, parts)
        })
        .collect()
}

fn arb_text() -> impl Strategy<Value = String> {
    "[^\u{0}]{1,40}".prop_filter("non-blank", |s| !s.trim().is_empty())
}

fn arb_args() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        "[a-z]{1,8}",
        prop_oneof![
            arb_text().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ],
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// OpenAI client body → canonical → Anthropic upstream body → canonical.
    #[test]
    fn openai_conversations_survive_the_trip_to_anthropic(
        system in arb_text(),
        first in arb_text(),
        name in "[a-zA-Z_][a-zA-Z0-9_]{0,20}",
        args in arb_args(),
        result in arb_text(),
        last in arb_text(),
    ) {
        let body = json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": first},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": name, "arguments": args.to_string()}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": result},
                {"role": "user", "content": last},
            ],
            "tools": [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}],
        });
        let from_openai = openai::parse_request(&serde_json::to_vec(&body).unwrap()).unwrap();
        let upstream = anthropic::encode_request(&from_openai, "claude");
        let read_back = anthropic::parse_request(&upstream).unwrap();
        prop_assert_eq!(read_back.system_text().map(|s| s.into_owned()), Some(system.clone()));
        prop_assert_eq!(&read_back.tools[0].name, &name);
        // Anthropic merges the tool result and the next user text into one user turn.
        let flat = |e: Vec<(Role, Vec<String>)>| e.into_iter().flat_map(|(_, p)| p).collect::<Vec<_>>();
        prop_assert_eq!(flat(essence(&read_back)), flat(essence(&from_openai)));
        // The tool result still answers the call it belongs to.
        let call_id = read_back.messages.iter().flat_map(|m| &m.content).find_map(|b| match b {
            Block::ToolCall { id, .. } => Some(id.clone()), _ => None }).unwrap();
        let result_id = read_back.messages.iter().flat_map(|m| &m.content).find_map(|b| match b {
            Block::ToolResult { tool_call_id, .. } => Some(tool_call_id.clone()), _ => None }).unwrap();
        prop_assert_eq!(call_id, result_id);
    }

    /// Anthropic client body → canonical → OpenAI upstream body → canonical.
    #[test]
    fn anthropic_conversations_survive_the_trip_to_openai(
        first in arb_text(),
        name in "[a-zA-Z_][a-zA-Z0-9_]{0,20}",
        args in arb_args(),
        result in arb_text(),
    ) {
        let body = json!({
            "model": "m", "max_tokens": 100,
            "messages": [
                {"role": "user", "content": first},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": name, "input": args}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": result}]},
            ],
        });
        let from_anthropic = anthropic::parse_request(&serde_json::to_vec(&body).unwrap()).unwrap();
        let upstream = openai::encode_request(&from_anthropic, "gpt", openai::Dialect::Compatible);
        let read_back = openai::parse_request(&upstream).unwrap();
        prop_assert_eq!(essence(&read_back), essence(&from_anthropic));
        prop_assert_eq!(read_back.max_tokens, Some(100));
    }

    /// A reply read from either format and written in the other keeps its content.
    #[test]
    fn replies_translate_both_ways(
        text in arb_text(),
        name in "[a-zA-Z_][a-zA-Z0-9_]{0,20}",
        args in arb_args(),
        input in 0u64..100_000,
        output in 0u64..100_000,
    ) {
        let reply = ChatResponse {
            id: "x1".into(),
            model: "m".into(),
            content: vec![
                Block::Text { text: text.clone(), cache_control: None },
                Block::ToolCall { id: "call_9".into(), name: name.clone(), arguments: args.to_string(), cache_control: None },
            ],
            stop_reason: Some(StopReason::ToolUse),
            usage: Usage { input_tokens: input, output_tokens: output, ..Default::default() },
        };
        let via_openai = openai::decode_response(&openai::encode_response(&reply, 1)).unwrap();
        let via_anthropic = anthropic::decode_response(&anthropic::encode_response(&via_openai)).unwrap();
        for r in [&via_openai, &via_anthropic] {
            prop_assert_eq!(r.text(), text.clone());
            prop_assert_eq!(r.stop_reason, Some(StopReason::ToolUse));
            prop_assert_eq!(r.usage, reply.usage);
            let call = r.content.iter().find_map(|b| match b {
                Block::ToolCall { name, arguments, .. } => Some((name.clone(), serde_json::from_str::<Value>(arguments).unwrap())),
                _ => None }).unwrap();
            prop_assert_eq!(call, (name.clone(), args.clone()));
        }
    }

    /// A stream decoded from Anthropic's events and re-encoded as OpenAI chunks (and the
    /// reverse) reassembles to the same text and arguments, however the text is split.
    #[test]
    fn streams_translate_both_ways(
        pieces in prop::collection::vec(arb_text(), 1..6),
        name in "[a-zA-Z_][a-zA-Z0-9_]{0,20}",
        args in arb_args(),
    ) {
        let args_text = args.to_string();
        let mid = args_text.len() / 2;
        let (a1, a2) = args_text.split_at(args_text.char_indices().map(|(i, _)| i).find(|&i| i >= mid).unwrap_or(0));
        let mut events = vec![StreamEvent::Start { id: "s".into(), model: "m".into(), usage: Some(Usage { input_tokens: 3, ..Default::default() }) }];
        events.extend(pieces.iter().map(|p| StreamEvent::TextDelta { text: p.clone() }));
        events.push(StreamEvent::ToolCallStart { index: 0, id: "call_1".into(), name: name.clone() });
        events.push(StreamEvent::ToolCallDelta { index: 0, arguments: a1.into() });
        events.push(StreamEvent::ToolCallDelta { index: 0, arguments: a2.into() });
        events.push(StreamEvent::Finish { stop_reason: StopReason::ToolUse });
        events.push(StreamEvent::Usage(Usage { input_tokens: 3, output_tokens: 7, ..Default::default() }));
        events.push(StreamEvent::Done);

        // canonical → Anthropic SSE → canonical → OpenAI SSE → canonical
        let mut wire = Vec::new();
        let mut enc = anthropic::StreamEncoder::new();
        for e in &events { enc.encode(e, &mut wire); }
        let from_anthropic = decode_all(&wire, true);
        let mut wire2 = Vec::new();
        let mut enc2 = openai::StreamEncoder::new(true, 1);
        for e in &from_anthropic { enc2.encode(e, &mut wire2); }
        let from_openai = decode_all(&wire2, false);
        for evs in [&from_anthropic, &from_openai] {
            let text: String = evs.iter().filter_map(|e| match e { StreamEvent::TextDelta { text } => Some(text.as_str()), _ => None }).collect();
            prop_assert_eq!(text, pieces.concat());
            let args_back: String = evs.iter().filter_map(|e| match e { StreamEvent::ToolCallDelta { arguments, .. } => Some(arguments.as_str()), _ => None }).collect();
            prop_assert_eq!(serde_json::from_str::<Value>(&args_back).unwrap(), args.clone());
            let started = evs.iter().any(|e| matches!(e, StreamEvent::ToolCallStart { name: n, .. } if n == &name));
            prop_assert!(started, "tool call start");
            let usage = StreamEvent::Usage(Usage { input_tokens: 3, output_tokens: 7, ..Default::default() });
            prop_assert!(evs.contains(&usage), "usage kept");
            prop_assert_eq!(evs.last(), Some(&StreamEvent::Done));
        }
    }
}

/// Parses SSE bytes and decodes them with one decoder kept across events.
fn decode_all(bytes: &[u8], anthropic_format: bool) -> Vec<StreamEvent> {
    let mut parser = SseParser::new(1 << 20);
    let mut sse = Vec::new();
    parser.feed(bytes, &mut sse).unwrap();
    parser.finish(&mut sse);
    let mut out = Vec::new();
    let mut a = anthropic::StreamDecoder::new();
    let mut o = openai::StreamDecoder::new();
    for ev in &sse {
        if anthropic_format {
            a.decode(ev, &mut out).unwrap();
        } else {
            o.decode(ev, &mut out).unwrap();
        }
    }
    out
}
