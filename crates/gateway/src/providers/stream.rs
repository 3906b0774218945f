//! Reading an upstream stream: bytes → SSE events → canonical stream events.

use std::time::Duration;

use asc_wire::sse::{SseEvent, SseParser, write_event};
use asc_wire::{StreamEvent, anthropic, mistral, openai};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{AttemptError, Wire};

/// Largest single SSE event accepted from an upstream (a hostile or broken upstream
/// cannot make the gateway buffer without bound).
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

enum Decoder {
    Anthropic(anthropic::StreamDecoder),
    Mistral(mistral::StreamDecoder),
    OpenAi(openai::StreamDecoder),
}

/// A 2xx streaming reply being read.
pub struct UpstreamStream {
    body: Incoming,
    parser: SseParser,
    decoder: Decoder,
    sse: Vec<SseEvent>,
    ended: bool,
    /// For a client of the upstream's own format: the wire form of the events read,
    /// relayed as they came instead of re-encoded from the canonical events.
    /// (Boxed: a pointer in every stream, the buffer only in relayed ones.)
    relay: Option<Box<Relay>>,
}

struct Relay {
    bytes: Vec<u8>,
    /// Leave out events that carry nothing but usage (an OpenAI client that did not
    /// ask for `include_usage`; the gateway always asks the upstream for it).
    drop_usage_only: bool,
}

impl UpstreamStream {
    pub(super) fn new(resp: http::Response<Incoming>, wire: Wire) -> Self {
        let decoder = match wire {
            Wire::Anthropic => Decoder::Anthropic(anthropic::StreamDecoder::new()),
            Wire::Mistral => Decoder::Mistral(mistral::StreamDecoder::new()),
            Wire::OpenAi | Wire::OpenAiCompatible => Decoder::OpenAi(openai::StreamDecoder::new()),
        };
        Self {
            body: resp.into_body(),
            parser: SseParser::new(MAX_EVENT_BYTES),
            decoder,
            sse: Vec::new(),
            ended: false,
            relay: None,
        }
    }

    /// From now on, keep the wire form of every event read (see [`Self::take_relayed`]).
    pub fn relay(&mut self, drop_usage_only: bool) {
        self.relay = Some(Box::new(Relay {
            bytes: Vec::new(),
            drop_usage_only,
        }));
    }

    pub fn relaying(&self) -> bool {
        self.relay.is_some()
    }

    /// Moves the wire form of the events read so far to `out` (without a copy when
    /// `out` is empty, as it is when nothing is re-encoded); nothing when not relaying.
    pub fn take_relayed(&mut self, out: &mut Vec<u8>) {
        if let Some(r) = self.relay.as_mut() {
            if out.is_empty() {
                std::mem::swap(out, &mut r.bytes);
            } else {
                out.append(&mut r.bytes);
            }
        }
    }

    /// Reads until at least one canonical event is decoded, the body ends, or `idle`
    /// passes without a byte. Appends events to `out`; returns `Ok(false)` once the
    /// body has ended (after its last events).
    pub async fn next_events(
        &mut self,
        out: &mut Vec<StreamEvent>,
        idle: Duration,
    ) -> Result<bool, AttemptError> {
        if self.ended {
            return Ok(false);
        }
        let start = out.len();
        while out.len() == start {
            let frame = tokio::time::timeout(idle, self.body.frame())
                .await
                .map_err(|_| AttemptError::Timeout)?;
            match frame {
                Some(Ok(frame)) => {
                    // Trailers (HTTP/2) carry no events.
                    if let Some(bytes) = frame.data_ref() {
                        self.parser
                            .feed(bytes, &mut self.sse)
                            .map_err(|e| AttemptError::Malformed(e.to_string()))?;
                    }
                }
                Some(Err(e)) => return Err(AttemptError::Connect(super::body_failed(&e))),
                None => {
                    self.parser.finish(&mut self.sse);
                    self.ended = true;
                }
            }
            for ev in self.sse.drain(..) {
                let before = out.len();
                let r = match &mut self.decoder {
                    Decoder::Anthropic(d) => d.decode(&ev, out),
                    Decoder::Mistral(d) => d.decode(&ev, out),
                    Decoder::OpenAi(d) => d.decode(&ev, out),
                };
                r.map_err(|e| AttemptError::Malformed(e.to_string()))?;
                let new = &out[before..];
                if let Some(relay) = self.relay.as_mut() {
                    // An event that means nothing canonical (an Azure content-filter
                    // chunk, an empty one) is left out, as re-encoding would; so the
                    // relayed bytes never run ahead of the events that carry them.
                    let dropped = new.is_empty()
                        || (relay.drop_usage_only && matches!(new, [StreamEvent::Usage(_)]));
                    if !dropped {
                        write_event(&mut relay.bytes, ev.event.as_deref(), &ev.data);
                    }
                }
                // The end, or an error, is the stream's last event: whatever an upstream
                // sends after it is not read.
                if new
                    .iter()
                    .any(|e| matches!(e, StreamEvent::Done | StreamEvent::Error { .. }))
                {
                    self.ended = true;
                    break;
                }
            }
            if self.ended {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
