//! Redaction of a streamed response, delta by delta.
//!
//! Text is emitted only once no PII value can straddle the point it is emitted up to (the
//! *cut*). A cut is placed right after a whitespace character, where
//! - no value without whitespace (e-mail, SSN, IP) can straddle it, and
//! - a value that may contain spaces (phone, card, IBAN: at most [`MAX_SPACED_LEN`] bytes,
//!   with a digit before its first space) cannot either: either the [`MAX_SPACED_LEN`]
//!   bytes before the cut hold no digit, or at least that many bytes after it have arrived
//!   and no candidate found in them straddles it.
//!
//! So in ordinary prose the hold-back is the last word; after a digit it is at most about
//! 50 bytes. Should no such cut exist while more than [`HOLD_CAP`] bytes are held (a long
//! run without whitespace, a dense table of numbers), the cut may fall anywhere that no
//! candidate straddles, keeping the last [`LOOKAHEAD`] bytes (longer than any candidate)
//! back; the hold-back is thus bounded by `HOLD_CAP` plus one delta.
//!
//! Each scan sees the last [`CONTEXT`] bytes already emitted as look-behind only, so the
//! boundary checks of a value right after a cut are those of the whole text: pushing any
//! split of a text and finishing emits exactly what redacting it whole does.

use std::collections::BTreeMap;

use asc_wire::canonical::StreamEvent;

use super::Findings;
use super::pii::{MAX_CANDIDATE_LEN, MAX_SPACED_LEN, Match, PiiState, detect, detect_with_spans};

/// Bytes of already-emitted text kept as look-behind for the next scan.
pub const CONTEXT: usize = 16;
/// Held bytes beyond which a cut may fall outside whitespace.
pub const HOLD_CAP: usize = 1024;
/// Bytes always held back by such a forced cut (longer than any candidate).
pub const LOOKAHEAD: usize = MAX_CANDIDATE_LEN + 32;

/// A redactor for one streamed response: text deltas, thinking deltas, and tool-call
/// argument deltas per tool call, with one placeholder numbering for the whole stream.
/// (Redacted thinking text no longer matches its signature: see `redact_response`.)
#[derive(Debug, Default)]
pub struct StreamRedactor {
    state: PiiState,
    text: Holder,
    thinking: Holder,
    tools: BTreeMap<u32, Holder>,
}

impl StreamRedactor {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Feeds a text delta; returns the text that is now safe to emit (possibly empty).
    pub fn push(&mut self, delta: &str) -> String {
        self.text.push(delta, &mut self.state)
    }

    /// End of the text: the rest, redacted. Text pushed afterwards starts a new run.
    pub fn finish(&mut self) -> String {
        self.text.finish(&mut self.state)
    }

    /// Feeds an argument delta of tool call `index`; returns what is safe to emit.
    pub fn push_tool_arguments(&mut self, index: u32, delta: &str) -> String {
        self.tools
            .entry(index)
            .or_default()
            .push(delta, &mut self.state)
    }

    /// End of the tool calls: the rest of each one's arguments, redacted, by index.
    pub fn finish_tool_arguments(&mut self) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        for (index, holder) in &mut self.tools {
            let rest = holder.finish(&mut self.state);
            if !rest.is_empty() {
                out.push((*index, rest));
            }
        }
        out
    }

    /// Types and counts found so far.
    pub fn findings(&self) -> &Findings {
        &self.state.findings
    }

    /// Runs one stream event through the redactor, returning the events to send in its
    /// place: text, thinking and argument deltas are held back and redacted; the thinking
    /// still held is flushed before any other block's event or a signature, the text still
    /// held before thinking or a tool call starts, and everything held before `Finish`,
    /// `Done` or `Error`. `Start` and `Usage` pass through.
    pub fn on_event(&mut self, event: StreamEvent) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if !matches!(
            event,
            StreamEvent::ThinkingDelta { .. } | StreamEvent::Start { .. } | StreamEvent::Usage(_)
        ) {
            self.flush_thinking(&mut out);
        }
        match event {
            StreamEvent::ThinkingDelta { thinking } => {
                self.flush_text(&mut out);
                let thinking = self.thinking.push(&thinking, &mut self.state);
                if !thinking.is_empty() {
                    out.push(StreamEvent::ThinkingDelta { thinking });
                }
            }
            StreamEvent::SignatureDelta { .. } => out.push(event),
            StreamEvent::RedactedThinking { .. } => {
                self.flush_text(&mut out);
                out.push(event);
            }
            StreamEvent::TextDelta { text } => {
                let text = self.push(&text);
                if !text.is_empty() {
                    out.push(StreamEvent::TextDelta { text });
                }
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                let arguments = self.push_tool_arguments(index, &arguments);
                if !arguments.is_empty() {
                    out.push(StreamEvent::ToolCallDelta { index, arguments });
                }
            }
            StreamEvent::ToolCallStart { .. } => {
                self.flush_text(&mut out);
                out.push(event);
            }
            StreamEvent::Finish { .. } | StreamEvent::Done | StreamEvent::Error { .. } => {
                self.flush_text(&mut out);
                for (index, arguments) in self.finish_tool_arguments() {
                    out.push(StreamEvent::ToolCallDelta { index, arguments });
                }
                out.push(event);
            }
            StreamEvent::Start { .. } | StreamEvent::Usage(_) => out.push(event),
        }
        out
    }

    fn flush_thinking(&mut self, out: &mut Vec<StreamEvent>) {
        let thinking = self.thinking.finish(&mut self.state);
        if !thinking.is_empty() {
            out.push(StreamEvent::ThinkingDelta { thinking });
        }
    }

    fn flush_text(&mut self, out: &mut Vec<StreamEvent>) {
        let text = self.finish();
        if !text.is_empty() {
            out.push(StreamEvent::TextDelta { text });
        }
    }
}

/// Held-back raw text of one channel (the text, or one tool call's arguments).
#[derive(Debug, Default)]
struct Holder {
    /// The last bytes already emitted (raw), look-behind for the next scan.
    ctx: String,
    /// Raw text not emitted yet.
    pending: String,
}

impl Holder {
    fn push(&mut self, delta: &str, state: &mut PiiState) -> String {
        self.pending.push_str(delta);
        let from = self.ctx.len();
        let text = [self.ctx.as_str(), self.pending.as_str()].concat();
        let (matches, spans) = detect_with_spans(&text, from);
        let cut = choose_cut(&text, from, &matches, &spans);
        if cut <= from {
            return String::new();
        }
        let region: Vec<Match> = matches.into_iter().filter(|m| m.start < cut).collect();
        let mut out = String::new();
        state.apply(&text, from..cut, &region, true, &mut out);
        self.advance(&text, cut);
        out
    }

    fn finish(&mut self, state: &mut PiiState) -> String {
        if self.pending.is_empty() {
            return String::new();
        }
        let from = self.ctx.len();
        let text = [self.ctx.as_str(), self.pending.as_str()].concat();
        let matches = detect(&text, from);
        let mut out = String::new();
        state.apply(&text, from..text.len(), &matches, true, &mut out);
        self.advance(&text, text.len());
        out
    }

    /// Everything before `cut` is emitted: keep its tail as context, the rest as pending.
    fn advance(&mut self, text: &str, cut: usize) {
        let mut start = cut.saturating_sub(CONTEXT);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        self.ctx = text[start..cut].to_owned();
        self.pending = text[cut..].to_owned();
    }
}

/// The largest safe cut in `text[from..]` (see the module documentation); `from` if none.
fn choose_cut(text: &str, from: usize, matches: &[Match], spans: &[(usize, usize)]) -> usize {
    let len = text.len();
    let bytes = text.as_bytes();
    let crosses = |c: usize| spans.iter().any(|&(s, e)| s < c && c < e);
    for (i, ch) in text[from..].char_indices().rev() {
        if !ch.is_whitespace() {
            continue;
        }
        let c = from + i + ch.len_utf8();
        let lo = c.saturating_sub(MAX_SPACED_LEN).max(from);
        // Only a plain space can occur inside a value.
        let quiet = ch != ' ' || !bytes[lo..c].iter().any(u8::is_ascii_digit);
        let seen = len - c > MAX_SPACED_LEN + 2;
        if (quiet || seen) && !crosses(c) {
            return c;
        }
    }
    if len - from <= HOLD_CAP {
        return from;
    }
    // Forced: the largest point no candidate straddles, LOOKAHEAD bytes from the end.
    let mut c = len - LOOKAHEAD;
    while !text.is_char_boundary(c) {
        c -= 1;
    }
    let limit = c;
    while let Some(&(s, _)) = spans.iter().find(|&&(s, e)| s < c && c < e) {
        c = s;
    }
    if c > from {
        return c;
    }
    // Candidates everywhere: cut at the limit, but never inside an accepted value.
    matches
        .iter()
        .find(|m| m.start < limit && limit < m.end)
        .map_or(limit, |m| m.end)
}
