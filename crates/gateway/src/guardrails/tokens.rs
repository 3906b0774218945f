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
//! - a document: its title, context and text (a text document, the text blocks of a
//!   custom-content one), plus [`opaque_document_tokens`] for what is not text: a PDF
//!   [`PER_PDF_PAGE`] a page, counted in the file, other inline data a token a byte, and
//!   a document the gateway cannot see (by URL, by Files API id) [`UNSEEN_DOCUMENT`];
//!   never below what a provider can bill, by design (a limit or a budget then refuses
//!   rather than lets through);
//! - each tool definition: the JSON `{"name","description","parameters"}`.
//!
//! The encoders are process-wide singletons, built on first use (tens of milliseconds).

use std::collections::HashSet;
use std::sync::OnceLock;

use asc_wire::canonical::{Block, ChatRequest, Document, DocumentSource, ResponseFormat};
use asc_wire::openai::TokenDecoder;
use base64::Engine as _;
use tiktoken_rs::CoreBPE;

/// Framing tokens per message (`<|start|>role ... <|end|>`).
pub const PER_MESSAGE: u64 = 3;
/// Tokens that prime the assistant's reply.
pub const REPLY_PRIMING: u64 = 3;
/// Flat cost of one image.
pub const PER_IMAGE: u64 = 85;
/// Cost of one PDF page: the top of Anthropic's 1,500 to 3,000 text tokens a page, plus
/// the page read as an image (Anthropic and OpenAI both add one per page; an image
/// Anthropic reads costs at most about 1,600 tokens).
/// <https://platform.claude.com/docs/en/build-with-claude/pdf-support>
pub const PER_PDF_PAGE: u64 = 4_600;
/// Cost of a document the gateway cannot see (by URL, by Files API id): Anthropic's
/// page limit for a request to a 200k-context model, 100 pages, at [`PER_PDF_PAGE`].
pub const UNSEEN_DOCUMENT: u64 = 100 * PER_PDF_PAGE;

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
            total += block_tokens(enc, block);
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
    // A structured-output schema is read by the model (and billed) like a tool's.
    if let Some(ResponseFormat::JsonSchema(f)) = &req.response_format {
        total += count_text(enc, &f.schema.to_string());
    }
    total
}

fn block_tokens(enc: Encoding, block: &Block) -> u64 {
    match block {
        Block::Text { text, .. } => count_text(enc, text),
        Block::Image { .. } => PER_IMAGE,
        Block::Thinking { thinking, .. } => count_text(enc, thinking),
        Block::RedactedThinking { .. } => 0,
        Block::ToolCall {
            name, arguments, ..
        } => count_text(enc, name) + count_text(enc, arguments),
        Block::ToolResult { content, .. } => count_text(enc, content),
        Block::Document(d) => document_tokens(enc, d),
    }
}

fn document_tokens(enc: Encoding, d: &Document) -> u64 {
    let texts = [d.title.as_deref(), d.context.as_deref()]
        .into_iter()
        .flatten()
        .map(|t| count_text(enc, t))
        .sum::<u64>();
    texts
        + match &d.source {
            DocumentSource::Text { data, .. } => count_text(enc, data),
            DocumentSource::Content { content } => {
                content.iter().map(|b| block_tokens(enc, b)).sum()
            }
            source => opaque_document_tokens(source),
        }
}

/// The tokens of what a document holds that is not text the gateway reads (0 for text
/// and custom content, whose texts are counted as text):
///
/// - a PDF: [`PER_PDF_PAGE`] for each of its pages, counted as the most of the page
///   objects in sight (`/Type /Page`) and the largest page-tree `/Count`; and when the
///   file has object streams (`/Type /ObjStm`, PDF 1.5), which compress page objects out
///   of sight, of its streams too (`endstream`: every page with content has a stream of
///   its own, so this counts more, never fewer). At least one page. Taking the most
///   means a visible page object or two cannot hide a hundred compressed ones. (Pages
///   that share one content stream, with their page tree compressed too, can still be
///   counted low: the provider's usage settles the real cost.)
/// - other inline data: one token a byte (a token is never less than a byte);
/// - a document by URL or by Files API id: [`UNSEEN_DOCUMENT`].
///
/// Decoding the data costs a copy of it, for requests with inline documents only.
pub fn opaque_document_tokens(source: &DocumentSource) -> u64 {
    match source {
        DocumentSource::Text { .. } | DocumentSource::Content { .. } => 0,
        DocumentSource::Url { .. } | DocumentSource::File { .. } => UNSEEN_DOCUMENT,
        DocumentSource::Base64 { media_type, data } => {
            let bytes = decode_base64(data);
            if media_type.eq_ignore_ascii_case("application/pdf") {
                pdf_pages(&bytes).saturating_mul(PER_PDF_PAGE)
            } else {
                bytes.len() as u64
            }
        }
    }
}

/// Standard base64, tolerating line breaks (MIME style); what is not base64 at all
/// decodes to nothing (the provider refuses such a document, and bills nothing).
fn decode_base64(data: &str) -> Vec<u8> {
    let engine = &base64::engine::general_purpose::STANDARD;
    engine.decode(data).unwrap_or_else(|_| {
        let compact: Vec<u8> = data.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        engine.decode(compact).unwrap_or_default()
    })
}

/// The pages of a PDF, as [`opaque_document_tokens`] counts them (one pass).
fn pdf_pages(pdf: &[u8]) -> u64 {
    static MARKS: OnceLock<Option<aho_corasick::AhoCorasick>> = OnceLock::new();
    let Some(marks) =
        MARKS.get_or_init(|| aho_corasick::AhoCorasick::new(["/Type", "endstream", "/Count"]).ok())
    else {
        return 1;
    };
    let (mut pages, mut streams, mut count, mut object_streams) = (0u64, 0u64, 0u64, false);
    for m in marks.find_iter(pdf) {
        let after = pdf[m.end()..].trim_ascii_start();
        match m.pattern().as_usize() {
            1 => streams += 1,
            2 => {
                let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
                let n = std::str::from_utf8(&after[..digits.min(9)])
                    .ok()
                    .and_then(|d| d.parse::<u64>().ok())
                    .unwrap_or(0);
                count = count.max(n);
            }
            _ => {
                let name_is = |name: &[u8]| {
                    after
                        .strip_prefix(name)
                        .is_some_and(|rest| !rest.first().is_some_and(u8::is_ascii_alphanumeric))
                };
                if name_is(b"/Page") {
                    pages += 1;
                } else if name_is(b"/ObjStm") {
                    object_streams = true;
                }
            }
        }
    }
    let seen = pages.max(count);
    if object_streams {
        seen.max(streams)
    } else {
        seen
    }
    .max(1)
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

    fn pdf(body: &str) -> DocumentSource {
        DocumentSource::Base64 {
            media_type: "application/pdf".into(),
            data: base64::engine::general_purpose::STANDARD.encode(body),
        }
    }

    #[test]
    fn documents_the_gateway_cannot_read_count_conservatively() {
        // Page objects, however spaced; the page tree (`/Pages`) is not a page.
        let two = "%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n\
                   2 0 obj <</Type /Pages /Kids [3 0 R 4 0 R] /Count 2>> endobj\n\
                   3 0 obj <</Type /Page /Parent 2 0 R>> endobj\n\
                   4 0 obj <</Type/Page/Parent 2 0 R>> endobj\n%%EOF";
        assert_eq!(opaque_document_tokens(&pdf(two)), 2 * PER_PDF_PAGE);
        // One page object in sight does not hide the compressed ones: a hundred content
        // streams count a hundred pages, and so does a page tree's /Count.
        let mut decoy = String::from(
            "%PDF-1.5\n1 0 obj <</Type /Page>> endobj\n9 0 obj <</Type /ObjStm>> stream\nx\nendstream\n",
        );
        for i in 0..100 {
            decoy.push_str(&format!(
                "{} 0 obj <</Length 1>> stream\nx\nendstream\n",
                i + 2
            ));
        }
        assert_eq!(opaque_document_tokens(&pdf(&decoy)), 101 * PER_PDF_PAGE);
        // Without object streams, page objects are all in sight: fonts and images (more
        // streams) are not pages.
        let plain = "%PDF-1.4\n1 0 obj <</Type /Page>> endobj\n\
                     2 0 obj <</Length 1>> stream\nx\nendstream\n\
                     3 0 obj <</Type /Font /Length 1>> stream\nx\nendstream\n%%EOF";
        assert_eq!(opaque_document_tokens(&pdf(plain)), PER_PDF_PAGE);
        let counted = "%PDF-1.5\n1 0 obj <</Type /Page>> endobj\n\
                       2 0 obj <</Type /Pages /Count 40>> endobj\n%%EOF";
        assert_eq!(opaque_document_tokens(&pdf(counted)), 40 * PER_PDF_PAGE);
        // Page objects hidden in object streams: every stream counts as a page.
        let hidden = "%PDF-1.5\n5 0 obj <</Type /ObjStm>> stream\nxx\nendstream\n\
                      6 0 obj <</Length 2>> stream\nyy\nendstream\n\
                      7 0 obj <</Length 2>> stream\nzz\nendstream\n%%EOF";
        assert_eq!(opaque_document_tokens(&pdf(hidden)), 3 * PER_PDF_PAGE);
        // Nothing recognisable, or not base64 at all: one page.
        assert_eq!(opaque_document_tokens(&pdf("%PDF-1.4")), PER_PDF_PAGE);
        let broken = DocumentSource::Base64 {
            media_type: "application/pdf".into(),
            data: "not base64!".into(),
        };
        assert_eq!(opaque_document_tokens(&broken), PER_PDF_PAGE);
        // Base64 broken into lines (MIME) still reads.
        let mut wrapped = base64::engine::general_purpose::STANDARD.encode(two);
        wrapped.insert(8, '\n');
        let wrapped = DocumentSource::Base64 {
            media_type: "application/pdf".into(),
            data: wrapped,
        };
        assert_eq!(opaque_document_tokens(&wrapped), 2 * PER_PDF_PAGE);
        // Other inline data: a token a byte.
        let text = DocumentSource::Base64 {
            media_type: "text/plain".into(),
            data: base64::engine::general_purpose::STANDARD.encode("twelve bytes"),
        };
        assert_eq!(opaque_document_tokens(&text), 12);
        // Unseen: the page limit; text is counted as text, not here.
        let url = DocumentSource::Url {
            url: "https://example.com/a.pdf".into(),
        };
        assert_eq!(opaque_document_tokens(&url), UNSEEN_DOCUMENT);
        let plain = DocumentSource::Text {
            media_type: "text/plain".into(),
            data: "words".into(),
        };
        assert_eq!(opaque_document_tokens(&plain), 0);
    }

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
