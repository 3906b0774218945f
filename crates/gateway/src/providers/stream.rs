//! Reading an upstream stream: bytes → SSE events → canonical stream events.

use std::time::Duration;

use asc_wire::sse::{SseEvent, SseParser, write_event};
use asc_wire::{StreamEvent, anthropic, mistral, openai};
use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Frame;

use super::{AttemptError, Wire};

/// Largest single SSE event accepted from an upstream (a hostile or broken upstream
/// cannot make the gateway buffer without bound).
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// Most upstream body frames, and bytes, taken into one read when they are already
/// there (see [`UpstreamStream::next_events`]): a burst never makes one client write,
/// or the memory behind it, larger than this.
const MAX_BURST_FRAMES: u32 = 64;
const MAX_BURST_BYTES: usize = 64 * 1024;

/// Consecutive reads that found nothing more already there, after which a stream stops
/// looking (its upstream sends events one at a time, as a model generating tokens does).
const BURST_MISSES: u8 = 2;

/// Empty looks in a row that end one read's burst. The upstream connection's task hands
/// over its next chunk within two scheduler turns when it has one: one to run it, one
/// for the chunk's wake-up to reach the reading task (measured: one turn found nothing).
const EMPTY_LOOKS: u8 = 2;

enum Decoder {
    Anthropic(anthropic::StreamDecoder),
    Mistral(mistral::StreamDecoder),
    OpenAi(openai::StreamDecoder),
}

/// A 2xx streaming reply being read.
pub struct UpstreamStream {
    body: super::lanes::Body,
    parser: SseParser,
    decoder: Decoder,
    sse: Vec<SseEvent>,
    ended: bool,
    /// A first read was made (it returns as soon as it has an event, for the time to
    /// first token; later reads also take what has already arrived).
    started: bool,
    /// Consecutive reads that looked for more already-arrived frames and found none.
    burst_misses: u8,
    /// A failure met while taking a burst, returned by the next read: the events read
    /// before it go out first, as they would have without the burst. (Boxed: every
    /// stream carries the field, few ever fill it.)
    failed: Option<Box<AttemptError>>,
    /// For a client of the upstream's own format: the wire form of the events read,
    /// relayed as they came instead of re-encoded from the canonical events.
    /// (Boxed: a pointer in every stream, the buffer only in relayed ones.)
    relay: Option<Box<Relay>>,
}

struct Relay {
    bytes: Vec<u8>,
    /// Where in `bytes` the stream's last event (its end, or an error) begins, once read.
    end_at: Option<usize>,
    /// Leave out events that carry nothing but usage (an OpenAI client that did not
    /// ask for `include_usage`; the gateway always asks the upstream for it).
    drop_usage_only: bool,
    /// Relay events that decode to nothing canonical too (Anthropic's `ping`,
    /// `content_block_start`, `citations_delta`, server-tool blocks): the client's
    /// SDK reads them. Otherwise (OpenAI) they are left out, as re-encoding would.
    keep_unmapped: bool,
}

impl UpstreamStream {
    pub(super) fn new(resp: http::Response<super::lanes::Body>, wire: Wire) -> Self {
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
            started: false,
            burst_misses: 0,
            failed: None,
            relay: None,
        }
    }

    /// From now on, keep the wire form of every event read (see [`Self::take_relayed`]).
    pub fn relay(&mut self, drop_usage_only: bool, keep_unmapped: bool) {
        self.relay = Some(Box::new(Relay {
            bytes: Vec::new(),
            end_at: None,
            drop_usage_only,
            keep_unmapped,
        }));
    }

    pub fn relaying(&self) -> bool {
        self.relay.is_some()
    }

    /// Moves the wire form of the events read so far to `out` (without a copy when
    /// `out` is empty, as it is when nothing is re-encoded); nothing when not relaying.
    /// Returns where in `out` the stream's end event begins, when it is among them.
    pub fn take_relayed(&mut self, out: &mut Vec<u8>) -> Option<usize> {
        let r = self.relay.as_mut()?;
        let base = out.len();
        if out.is_empty() {
            std::mem::swap(out, &mut r.bytes);
        } else {
            out.append(&mut r.bytes);
        }
        r.end_at.take().map(|at| base + at)
    }

    /// Reads until at least one canonical event is decoded, the body ends, or `idle`
    /// passes without a byte. Appends events to `out`; returns `Ok(false)` once the
    /// body has ended (after its last events).
    ///
    /// After the stream's first read, a read also takes the frames that have already
    /// arrived behind the one it waited for, so that a burst (an upstream faster than
    /// the gateway, or one that sends a whole answer at once) goes to the client in one
    /// write instead of one per event. hyper hands an HTTP/1 body over one chunk at a
    /// time from its connection task, so "already arrived" is seen by yielding once to
    /// let that task run and then polling without waiting. Nothing is ever waited for:
    /// an event is never held back for one that has not come. A stream whose upstream
    /// sends one event at a time stops looking after [`BURST_MISSES`] empty looks.
    pub async fn next_events(
        &mut self,
        out: &mut Vec<StreamEvent>,
        idle: Duration,
    ) -> Result<bool, AttemptError> {
        if let Some(e) = self.failed.take() {
            return Err(*e);
        }
        if self.ended {
            return Ok(false);
        }
        let first = !std::mem::replace(&mut self.started, true);
        let start = out.len();
        while out.len() == start {
            // Relayed events that mean nothing canonical (Anthropic's `ping`s while the
            // model thinks or a server tool runs) go out as they come, after the
            // stream's first event, not with the next event that means something: they
            // are what keeps the client's connection alive through idle-timing proxies.
            if !first && self.relay.as_ref().is_some_and(|r| !r.bytes.is_empty()) {
                return Ok(true);
            }
            let frame = tokio::time::timeout(idle, self.body.frame())
                .await
                .map_err(|_| AttemptError::Timeout)?;
            self.absorb(frame, out)?;
            if self.ended {
                return Ok(false);
            }
        }
        if first || self.burst_misses >= BURST_MISSES {
            return Ok(true);
        }
        let mut taken = 0;
        let mut bytes = 0;
        let mut empty = 0;
        while taken < MAX_BURST_FRAMES && bytes < MAX_BURST_BYTES && empty < EMPTY_LOOKS {
            tokio::task::yield_now().await;
            let Some(frame) = self.body.frame().now_or_never() else {
                empty += 1;
                continue;
            };
            empty = 0;
            taken += 1;
            if let Some(Ok(f)) = &frame {
                bytes += f.data_ref().map_or(0, Bytes::len);
            }
            if let Err(e) = self.absorb(frame, out) {
                self.failed = Some(Box::new(e));
                return Ok(true);
            }
            if self.ended {
                return Ok(false);
            }
        }
        self.burst_misses = if taken == 0 { self.burst_misses + 1 } else { 0 };
        Ok(true)
    }

    /// Takes one body frame (or the body's end) through the SSE parser and the decoder.
    fn absorb(
        &mut self,
        frame: Option<Result<Frame<Bytes>, hyper::Error>>,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), AttemptError> {
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
            // The end, or an error, is the stream's last event: whatever an upstream
            // sends after it is not read.
            let last = new
                .iter()
                .any(|e| matches!(e, StreamEvent::Done | StreamEvent::Error { .. }));
            if let Some(relay) = self.relay.as_mut() {
                // An OpenAI-format event that means nothing canonical (an Azure
                // content-filter chunk, an empty one) is left out, as re-encoding
                // would. Kept ones (Anthropic's) wait in the buffer for the next event
                // that does mean something: relayed bytes go out with the events that
                // follow them, never before.
                let dropped = (new.is_empty() && !relay.keep_unmapped)
                    || (relay.drop_usage_only && matches!(new, [StreamEvent::Usage(_)]));
                if !dropped {
                    if last {
                        relay.end_at = Some(relay.bytes.len());
                    }
                    write_event(&mut relay.bytes, ev.event.as_deref(), &ev.data);
                }
            }
            if last {
                self.ended = true;
                break;
            }
        }
        Ok(())
    }
}
