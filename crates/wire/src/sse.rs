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

    /// Feeds bytes; appends every event they complete to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseTooLarge> {
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    self.end_line(out);
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                    if self.line.len() + self.data.len() > self.max_event_bytes {
                        return Err(SseTooLarge(self.max_event_bytes));
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends the stream: a final event without its blank line is dispatched too.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.line.is_empty() {
            self.end_line(out);
        }
        self.dispatch(out);
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        if self.line.is_empty() {
            self.dispatch(out);
            return;
        }
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line.as_str(), ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            _ => {}
        }
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

/// Appends one event in wire form (`event: NAME\ndata: ...\n\n`) to `out`.
/// `data` must not contain newlines except as intended line breaks (JSON never does).
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &str) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
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
    fn oversized_event_is_refused() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        assert!(p.feed(&[b'a'; 64], &mut out).is_err());
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
