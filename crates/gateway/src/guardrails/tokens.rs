//! Prompt token counting with tiktoken-rs, and the reading of embeddings token arrays
//! as text ([`EmbeddingTokens`]).
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

use std::collections::HashSet;
use std::sync::OnceLock;

use asc_wire::canonical::{Block, ChatRequest};
use asc_wire::openai::TokenDecoder;
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
    if let Some(system) = req.system_text() {
        total += PER_MESSAGE + count_text(enc, &system);
    }
    for msg in &req.messages {
        total += PER_MESSAGE;
        for block in &msg.content {
            total += match block {
                Block::Text { text, .. } => count_text(enc, text),
                Block::Image { .. } => PER_IMAGE,
                Block::Thinking { thinking, .. } => count_text(enc, thinking),
                Block::RedactedThinking { .. } => 0,
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

/// Reads the token arrays of an embeddings request (`"input": [[1, 2]]`, as LangChain
/// sends by default) as cl100k_base text: the encoding of OpenAI's embedding models
/// (`text-embedding-3-*`, `text-embedding-ada-002`), which is what such clients tokenize
/// with. The text then goes through the gateway and to any provider as text input would.
///
/// Special tokens (`<|endoftext|>`, ...) are refused like unknown ids: clients tokenize
/// ordinary text, and their text would be re-read by the upstream as ordinary characters.
/// Bytes that are not UTF-8 (a character split across two token arrays, as a client that
/// cuts a long text into windows of N tokens may do) become U+FFFD: a token array has no
/// exact text then, and refusing it would refuse such clients' long non-ASCII texts.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbeddingTokens;

impl TokenDecoder for EmbeddingTokens {
    fn encoding(&self) -> &str {
        "cl100k_base"
    }

    fn decode(&self, tokens: &[u32]) -> Result<String, usize> {
        let bpe = bpe(Encoding::Cl100kBase);
        let special = cl100k_special();
        if let Some(i) = tokens.iter().position(|t| special.contains(t)) {
            return Err(i);
        }
        match bpe.decode_bytes(tokens) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) => Err(tokens.iter().position(|&t| t == e.token).unwrap_or(0)),
        }
    }
}

/// The ids of cl100k_base's special tokens.
fn cl100k_special() -> &'static HashSet<u32> {
    static SPECIAL: OnceLock<HashSet<u32>> = OnceLock::new();
    SPECIAL.get_or_init(|| {
        let bpe = bpe(Encoding::Cl100kBase);
        bpe.special_tokens()
            .into_iter()
            .flat_map(|s| bpe.encode_with_special_tokens(s))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_token_arrays_read_as_cl100k_text() {
        let d = EmbeddingTokens;
        assert_eq!(d.encoding(), "cl100k_base");
        // "hello world" in cl100k_base (as tiktoken encodes it)
        assert_eq!(d.decode(&[15339, 1917]), Ok("hello world".to_owned()));
        let text = "Grüezi, Zürich! 🌦 <|endoftext|>";
        let ids = bpe(Encoding::Cl100kBase).encode_ordinary(text);
        assert_eq!(d.decode(&ids), Ok(text.to_owned()));
        // unknown ids and special tokens name their position
        assert_eq!(d.decode(&[15339, 200_000, 1917]), Err(1));
        assert_eq!(d.decode(&[15339, 1917, 100_257]), Err(2));
        assert_eq!(d.decode(&[100_276]), Err(0));
        // a character split across two arrays: "🌦" is F0 9F | 8C | A6; each lone piece
        // reads as U+FFFD
        let rain = bpe(Encoding::Cl100kBase).encode_ordinary("🌦");
        assert_eq!(rain, [9468, 234, 99]);
        assert_eq!(d.decode(&[9468]), Ok("\u{FFFD}".to_owned()));
        assert_eq!(d.decode(&[234, 99]), Ok("\u{FFFD}\u{FFFD}".to_owned()));
    }
}
