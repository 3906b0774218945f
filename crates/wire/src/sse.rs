//! Server-sent events: a stateful, incremental parser and a writer.
//!
//! The parser follows the WHATWG "event stream interpretation" rules: lines end in
//! `\n`, `\r\n` or `\r`; a line starting with `:` is a comment; `data:` lines of one
//! event are joined with `\n`; an empty line dispatches. Bytes may arrive split anywhere,
//! including inside a multi-byte UTF-8 character: nothing is decoded until a whole line is
//! buffered, so splits never corrupt text (the bug of spiceai/spiceai#12588).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The joined `data:` lines.
    pub data: String,
}

/// Incremental SSE parser. Feed it bytes as they arrive; it returns complete events.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous byte was `\r`, so a following `\n` belongs to the same line end.
    after_cr: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// Upper bound on one buffered event, to bound memory against a hostile upstream.
    max_event_bytes: usize,
}

/// The upstream sent an event larger than the parser's bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server-sent event larger than {0} bytes")]
pub struct SseTooLarge(pub usize);

impl SseParser {
    /// A parser that refuses events over `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            ..Self::default()
        }
    }

    /// Feeds bytes; appends every event they complete to `out`. Line ends are found
    /// with `memchr` (vectorised) and bytes copied a run at a time, not byte by byte.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseTooLarge> {
        while let Some((&first, rest)) = bytes.split_first() {
            if self.after_cr {
                self.after_cr = false;
                if first == b'\n' {
                    bytes = rest;
                    continue;
                }
            }
            match memchr::memchr2(b'\n', b'\r', bytes) {
                Some(i) => {
                    self.take(&bytes[..i])?;
                    self.after_cr = bytes[i] == b'\r';
                    self.end_line(out);
                    bytes = &bytes[i + 1..];
                }
                None => {
                    self.take(bytes)?;
                    bytes = &[];
                }
            }
        }
        Ok(())
    }

    /// Appends part of the current line, within the event bound.
    fn take(&mut self, part: &[u8]) -> Result<(), SseTooLarge> {
        if self.line.len() + part.len() + self.data.len() > self.max_event_bytes {
            return Err(SseTooLarge(self.max_event_bytes));
        }
        self.line.extend_from_slice(part);
        Ok(())
    }

    /// Ends the stream: a final event without its blank line is dispatched too.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.line.is_empty() {
            self.end_line(out);
        }
        self.dispatch(out);
    }

    /// One whole line is buffered: its field is read from the bytes (a field name is
    /// ASCII, so a multi-byte character can only be in the value), and only a value
    /// that is not valid UTF-8 is copied to replace the bad bytes.
    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        if self.line.is_empty() {
            self.dispatch(out);
            return;
        }
        let line = std::mem::take(&mut self.line);
        if line.first() != Some(&b':') {
            let (field, value) = match memchr::memchr(b':', &line) {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (&line[..], &b""[..]),
            };
            match field {
                b"data" => {
                    if self.has_data {
                        self.data.push('\n');
                    }
                    push_lossy(&mut self.data, value);
                    self.has_data = true;
                }
                b"event" => {
                    let mut name = String::new();
                    push_lossy(&mut name, value);
                    self.event = Some(name);
                }
                _ => {}
            }
        }
        // The line's buffer is kept for the next line.
        self.line = line;
        self.line.clear();
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data {
            out.push(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            });
        }
        self.event = None;
        self.has_data = false;
    }
}

/// Appends `bytes` as text, invalid UTF-8 replaced by U+FFFD. Checked with
/// `str::from_utf8` first (word-at-a-time on ASCII): `String::from_utf8_lossy` walks
/// valid text chunk by chunk and cost ~1.8k instructions per ~250-byte event.
fn push_lossy(out: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => out.push_str(text),
        Err(_) => out.push_str(&String::from_utf8_lossy(bytes)),
    }
}

/// Appends one event in wire form (`event: NAME\ndata: ...\n\n`) to `out`.
/// `data` must not contain newlines except as intended line breaks (JSON never does).
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &str) {
    write_name(out, event);
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Appends one event whose data is `value` as compact JSON, serialized straight into
/// `out` (no intermediate string). Compact JSON has no raw newline, so it is one
/// `data:` line.
pub fn write_json_event(out: &mut Vec<u8>, event: Option<&str>, value: &impl serde::Serialize) {
    write_name(out, event);
    out.extend_from_slice(b"data: ");
    let start = out.len();
    if serde_json::to_writer(&mut *out, value).is_err() {
        // Only a map with non-string keys fails; the event goes out empty, as before.
        out.truncate(start);
    }
    out.extend_from_slice(b"\n\n");
}

/// The `event:` line, when the event has a name.
fn write_name(out: &mut Vec<u8>, event: Option<&str>) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        p.finish(&mut out);
        out
    }

    #[test]
    fn parses_events_comments_and_multiline_data() {
        let s = b": ping\nevent: message_start\ndata: {\"a\":1}\n\ndata: x\ndata: y\n\n";
        let ev = parse_all(&[s]);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].event.as_deref(), Some("message_start"));
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[1].event, None);
        assert_eq!(ev[1].data, "x\ny");
    }

    #[test]
    fn crlf_and_cr_line_endings() {
        let ev = parse_all(&[b"data: a\r\n\r\ndata: b\r\rdata:c\n\n"]);
        let data: Vec<_> = ev.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["a", "b", "c"]);
    }

    #[test]
    fn every_split_point_gives_the_same_events_and_no_replacement_chars() {
        let s =
            "event: x\r\ndata: {\"t\":\"héllo 🌍 wörld\"}\r\n\r\n: c\ndata: [DONE]\n\n".as_bytes();
        let whole = parse_all(&[s]);
        for i in 0..=s.len() {
            for j in i..=s.len() {
                let got = parse_all(&[&s[..i], &s[i..j], &s[j..]]);
                assert_eq!(got, whole, "split at {i},{j}");
            }
        }
        assert!(!whole[0].data.contains('\u{FFFD}'));
    }

    #[test]
    fn final_event_without_blank_line_is_dispatched_on_finish() {
        let ev = parse_all(&[b"data: tail"]);
        assert_eq!(
            ev,
            vec![SseEvent {
                event: None,
                data: "tail".into()
            }]
        );
    }

    #[test]
    fn a_crlf_split_between_two_feeds_is_one_line_end() {
        let ev = parse_all(&[b"data: a\r", b"\ndata: b\r", b"\n\r\n"]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "a\nb");
    }

    #[test]
    fn invalid_utf8_in_a_value_is_replaced_not_fatal() {
        let ev = parse_all(&[b"data: a\xffb\n\n"]);
        assert_eq!(ev[0].data, "a\u{FFFD}b");
    }

    #[test]
    fn oversized_event_across_lines_and_feeds_is_refused() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        assert!(p.feed(b"data: 0123456\n", &mut out).is_ok());
        assert!(p.feed(b"data: 0123", &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn oversized_event_is_refused() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        assert!(p.feed(&[b'a'; 64], &mut out).is_err());
    }

    #[test]
    fn json_events_are_written_as_one_data_line() {
        let mut buf = Vec::new();
        let v = serde_json::json!({"text": "two\nlines", "n": 1});
        write_json_event(&mut buf, Some("x"), &v);
        write_json_event(&mut buf, None, &v);
        let ev = parse_all(&[&buf]);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].event.as_deref(), Some("x"));
        let back: serde_json::Value = serde_json::from_str(&ev[1].data).unwrap();
        assert_eq!(back, v);
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 2 + 1 + 2);
    }

    #[test]
    fn writer_round_trips_through_parser() {
        let mut buf = Vec::new();
        write_event(&mut buf, Some("content_block_delta"), "{\"x\":\"y\"}");
        write_event(&mut buf, None, "[DONE]");
        let ev = parse_all(&[&buf]);
        assert_eq!(ev[0].event.as_deref(), Some("content_block_delta"));
        assert_eq!(ev[1].data, "[DONE]");
    }
}
