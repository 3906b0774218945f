//! Prompt token counting with tiktoken-rs.
//!
//! Encoding by model name (lowercased, any `provider/` prefix dropped):
//! - `o200k_base` for `gpt-4o*`, `chatgpt-4o*`, `gpt-4.1*`, `gpt-4.5*`, `gpt-5*`, `gpt-oss*`
//!   and the o-series (`o1*`, `o3*`, `o4*`);
//! - `cl100k_base` for everything else: `gpt-4*`, `gpt-3.5*`, and, as a documented
//!   approximation (their tokenizers are not public or not shipped), Anthropic `claude-*`,
//!   Mistral and any other model. Counts for those are estimates within roughly ±15 %.
//!
//! What is counted, after the OpenAI cookbook's chat accounting:
//! - the system prompt, every text block, tool-call names and arguments, tool results;
//! - each message (and the system prompt) costs [`PER_MESSAGE`] tokens of framing, and the
//!   reply priming [`REPLY_PRIMING`] once;
//! - each image a flat [`PER_IMAGE`] (OpenAI's low-detail cost; size is not known here);
//! - each tool definition: the JSON `{"name","description","parameters"}`.
//!
//! The encoders are process-wide singletons, built on first use (tens of milliseconds).

use asc_wire::canonical::{Block, ChatRequest};
use tiktoken_rs::CoreBPE;

/// Framing tokens per message (`<|start|>role ... <|end|>`).
pub const PER_MESSAGE: u64 = 3;
/// Tokens that prime the assistant's reply.
pub const REPLY_PRIMING: u64 = 3;
/// Flat cost of one image.
pub const PER_IMAGE: u64 = 85;

/// The tokenizer a model's prompt is counted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Cl100kBase,
    O200kBase,
}

/// Which encoding counts `model`'s tokens.
pub fn encoding_for(model: &str) -> Encoding {
    let m = model.to_ascii_lowercase();
    let m = m.rsplit('/').next().unwrap_or(&m);
    let o200k = [
        "gpt-4o",
        "chatgpt-4o",
        "gpt-4.1",
        "gpt-4.5",
        "gpt-5",
        "gpt-oss",
    ]
    .iter()
    .any(|p| m.starts_with(p))
        || ["o1", "o3", "o4"]
            .iter()
            .any(|p| m == *p || m.starts_with(&format!("{p}-")));
    if o200k {
        Encoding::O200kBase
    } else {
        Encoding::Cl100kBase
    }
}

fn bpe(encoding: Encoding) -> &'static CoreBPE {
    match encoding {
        Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
    }
}

/// Tokens of `text` in `encoding` (special-token text counted as ordinary text).
pub fn count_text(encoding: Encoding, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    bpe(encoding).encode_ordinary(text).len() as u64
}

/// Counts the prompt tokens of a request: see the module documentation.
pub fn count_prompt_tokens(model: &str, req: &ChatRequest) -> u64 {
    let enc = encoding_for(model);
    let mut total = REPLY_PRIMING;
    if let Some(system) = &req.system {
        total += PER_MESSAGE + count_text(enc, system);
    }
    for msg in &req.messages {
        total += PER_MESSAGE;
        for block in &msg.content {
            total += match block {
                Block::Text { text } => count_text(enc, text),
                Block::Image { .. } => PER_IMAGE,
                Block::ToolCall {
                    name, arguments, ..
                } => count_text(enc, name) + count_text(enc, arguments),
                Block::ToolResult { content, .. } => count_text(enc, content),
            };
        }
    }
    for tool in &req.tools {
        let def = serde_json::json!({
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        });
        total += count_text(enc, &def.to_string());
    }
    total
}
