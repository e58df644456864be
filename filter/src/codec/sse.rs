//! Server-sent events: a push parser that takes what arrived and returns complete
//! events, keeping only the unfinished tail.
//!
//! Framing follows the WHATWG `text/event-stream` rules: lines end with `\r\n`, `\n`
//! or `\r`; a blank line ends an event; a line starting with `:` is a comment;
//! `data:` lines join with `\n`; one space after the colon is dropped. Unlike a
//! browser, the decoder hands back *every* block of bytes, comments and stray blank
//! lines included, with its raw bytes: a filter that re-emits events one by one
//! then reproduces the stream byte for byte.
//!
//! Memory is bounded by `max_event_bytes`: an event (or an unfinished tail) larger
//! than that is [`SseError::EventTooLarge`], and the error is sticky.

use std::fmt;
use std::ops::Range;

/// Why the decoder stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseError {
    /// One event grew past the decoder's limit.
    EventTooLarge {
        /// The configured limit, in bytes.
        limit: usize,
    },
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::EventTooLarge { limit } => {
                write!(f, "server-sent event larger than {limit} bytes")
            }
        }
    }
}

impl std::error::Error for SseError {}

/// Where an event's joined `data` lives.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Data {
    /// No `data` field.
    None,
    /// One `data` line: a range of `raw` (the common case, no copy).
    Span(Range<usize>),
    /// Several `data` lines, joined with `\n`.
    Joined(Vec<u8>),
}

/// One event: its raw bytes (terminating blank line included) and its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    raw: Vec<u8>,
    event: Option<Range<usize>>,
    data: Data,
}

impl SseEvent {
    /// Parses one complete block (as cut by the decoder, or what is left at the end
    /// of a stream). Lines are cut again here: an event is short and this keeps the
    /// boundary scan free of per-line state.
    fn parse(raw: Vec<u8>) -> SseEvent {
        let mut event = None;
        let mut data = Data::None;
        let mut pos = 0;
        while pos < raw.len() {
            let (end, next) = match memchr::memchr2(b'\n', b'\r', &raw[pos..]) {
                Some(i) => {
                    let end = pos + i;
                    let crlf = raw[end] == b'\r' && raw.get(end + 1) == Some(&b'\n');
                    (end, end + if crlf { 2 } else { 1 })
                }
                None => (raw.len(), raw.len()),
            };
            let line = &raw[pos..end];
            let (name, value) = match memchr::memchr(b':', line) {
                Some(0) => (&line[..0], None), // comment
                Some(c) => {
                    let v = c + 1 + usize::from(line.get(c + 1) == Some(&b' '));
                    (&line[..c], Some(pos + v..end))
                }
                None => (line, Some(end..end)),
            };
            if let Some(value) = value {
                match name {
                    b"data" => {
                        data = match data {
                            Data::None => Data::Span(value),
                            Data::Span(first) => {
                                let mut joined = raw[first].to_vec();
                                joined.push(b'\n');
                                joined.extend_from_slice(&raw[value]);
                                Data::Joined(joined)
                            }
                            Data::Joined(mut joined) => {
                                joined.push(b'\n');
                                joined.extend_from_slice(&raw[value]);
                                Data::Joined(joined)
                            }
                        }
                    }
                    b"event" => event = Some(value),
                    _ => {}
                }
            }
            pos = next;
        }
        SseEvent { raw, event, data }
    }

    /// The bytes as received, terminating blank line included.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Takes the raw bytes.
    pub fn into_raw(self) -> Vec<u8> {
        self.raw
    }

    /// The `event:` name, if the event has one (the last one wins).
    pub fn event(&self) -> Option<&[u8]> {
        self.event.clone().map(|r| &self.raw[r])
    }

    /// The `data:` lines joined with `\n` (empty when there is none).
    pub fn data(&self) -> &[u8] {
        match &self.data {
            Data::None => &[],
            Data::Span(r) => &self.raw[r.clone()],
            Data::Joined(v) => v,
        }
    }

    /// Whether the event has at least one `data` field.
    pub fn has_data(&self) -> bool {
        self.data != Data::None
    }
}

/// Push decoder of a `text/event-stream` body.
#[derive(Debug)]
pub struct SseDecoder {
    max_event_bytes: usize,
    /// Bytes of the unfinished event (never more than `max_event_bytes`).
    buf: Vec<u8>,
    /// Scan state inside `buf`: where the current line starts, where to look for
    /// the next line end. Everything before `scan` was already looked at.
    line_start: usize,
    scan: usize,
    error: Option<SseError>,
}

/// Where a scan of some bytes stopped.
struct Scanned {
    /// End of the last complete event: bytes before it were handed out.
    consumed: usize,
    line_start: usize,
    scan: usize,
    error: Option<SseError>,
}

impl SseDecoder {
    /// A decoder that refuses events longer than `max_event_bytes` (raw bytes,
    /// terminators included).
    pub fn new(max_event_bytes: usize) -> Self {
        SseDecoder {
            max_event_bytes,
            buf: Vec::new(),
            line_start: 0,
            scan: 0,
            error: None,
        }
    }

    /// Decodes what arrived: appends every completed event to `out` and keeps the
    /// rest. After an error nothing more is decoded; events completed before the
    /// offending one are still in `out`, and [`SseDecoder::take_pending`] hands back
    /// the bytes not given out as events.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut chunk = chunk;
        if !self.buf.is_empty() {
            // Complete the held event first. It ends within `max_event_bytes` (plus
            // one byte to settle a trailing `\r`) or is too large: copy no more.
            let held = self.buf.len();
            let cap = (self.max_event_bytes + 2).saturating_sub(held);
            let take = chunk.len().min(cap);
            self.buf.extend_from_slice(&chunk[..take]);
            let buf = std::mem::take(&mut self.buf);
            let s = self.scan_from(&buf, self.line_start, self.scan, out);
            self.buf = buf;
            if s.consumed == 0 || s.error.is_some() || take == chunk.len() {
                let r = self.settle(s, true);
                if r.is_err() {
                    // take_pending owes the caller every byte not handed out.
                    self.buf.extend_from_slice(&chunk[take..]);
                }
                return r;
            }
            // Events completed: drop the copy and go on with the rest of the chunk.
            chunk = &chunk[s.consumed.saturating_sub(held)..];
            self.buf.clear();
        }
        // Fast path: cut events straight out of the chunk, copy only the tail.
        let s = self.scan_from(chunk, 0, 0, out);
        self.buf.extend_from_slice(&chunk[s.consumed..]);
        self.settle(s, false)
    }

    /// The end of the stream: the unfinished tail, if any, as one last event (a
    /// final line without its terminator counts as a line). Returns the sticky
    /// error if there was one; the decoder is empty afterwards.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.line_start = 0;
        self.scan = 0;
        if self.buf.is_empty() {
            return Ok(None);
        }
        Ok(Some(SseEvent::parse(std::mem::take(&mut self.buf))))
    }

    /// The bytes received but not handed out as events (after an error: those up to
    /// the failing push, included; later pushes keep nothing). Leaves the decoder
    /// empty.
    pub fn take_pending(&mut self) -> Vec<u8> {
        self.line_start = 0;
        self.scan = 0;
        std::mem::take(&mut self.buf)
    }

    /// Bytes held for the unfinished event.
    pub fn pending_len(&self) -> usize {
        self.buf.len()
    }

    /// Keeps only the unconsumed tail and checks the size limit. `drain`: `buf`
    /// holds everything scanned (else it holds the tail already).
    fn settle(&mut self, s: Scanned, drain: bool) -> Result<(), SseError> {
        if drain && s.consumed > 0 {
            self.buf.drain(..s.consumed);
        }
        self.line_start = s.line_start - s.consumed;
        self.scan = s.scan - s.consumed;
        if let Some(e) = s.error {
            self.error = Some(e);
            return Err(e);
        }
        if self.buf.len() > self.max_event_bytes {
            let e = SseError::EventTooLarge {
                limit: self.max_event_bytes,
            };
            self.error = Some(e);
            return Err(e);
        }
        Ok(())
    }

    /// Finds event ends in `bytes` from `scan`, the current line starting at
    /// `line_start` and the current event at 0.
    fn scan_from(
        &self,
        bytes: &[u8],
        mut line_start: usize,
        mut scan: usize,
        out: &mut Vec<SseEvent>,
    ) -> Scanned {
        let mut event_start = 0;
        while let Some(i) = memchr::memchr2(b'\n', b'\r', &bytes[scan..]) {
            let end = scan + i;
            let next = if bytes[end] == b'\n' {
                end + 1
            } else {
                match bytes.get(end + 1) {
                    Some(b'\n') => end + 2,
                    Some(_) => end + 1,
                    // A lone `\r` at the end: wait to see whether `\n` follows.
                    None => {
                        scan = end;
                        break;
                    }
                }
            };
            scan = next;
            if end == line_start {
                // A blank line: the event ends here.
                if next - event_start > self.max_event_bytes {
                    return Scanned {
                        consumed: event_start,
                        line_start,
                        scan: event_start,
                        error: Some(SseError::EventTooLarge {
                            limit: self.max_event_bytes,
                        }),
                    };
                }
                out.push(SseEvent::parse(bytes[event_start..next].to_vec()));
                event_start = next;
            }
            line_start = next;
        }
        Scanned {
            consumed: event_start,
            line_start,
            scan,
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/chat-streaming.sse"
    ));

    fn decode_all(chunks: &[&[u8]], max: usize) -> (Vec<SseEvent>, Result<(), SseError>) {
        let mut d = SseDecoder::new(max);
        let mut out = Vec::new();
        for c in chunks {
            if let Err(e) = d.push(c, &mut out) {
                return (out, Err(e));
            }
        }
        match d.finish() {
            Ok(Some(ev)) => out.push(ev),
            Ok(None) => {}
            Err(e) => return (out, Err(e)),
        }
        (out, Ok(()))
    }

    fn concat(events: &[SseEvent]) -> Vec<u8> {
        events
            .iter()
            .flat_map(|e| e.raw().iter().copied())
            .collect()
    }

    #[test]
    fn fields_and_terminators() {
        let input: &[u8] =
            b"event: a\ndata: one\ndata:two\n\n: comment\r\n\r\ndata\rid: 7\r\rdata: x\r\n\n";
        let (ev, r) = decode_all(&[input], 1024);
        assert_eq!(r, Ok(()));
        assert_eq!(ev.len(), 4);
        assert_eq!(ev[0].event(), Some(&b"a"[..]));
        assert_eq!(ev[0].data(), b"one\ntwo");
        assert_eq!(ev[1].raw(), b": comment\r\n\r\n");
        assert!(!ev[1].has_data());
        assert!(ev[2].has_data());
        assert_eq!(ev[2].data(), b"");
        assert_eq!(ev[2].raw(), b"data\rid: 7\r\r");
        assert_eq!(ev[3].data(), b"x");
        assert_eq!(concat(&ev), input);
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let (whole, r) = decode_all(&[STREAM], 1 << 16);
        assert_eq!(r, Ok(()));
        assert_eq!(whole.len(), 51, "events in the fixture");
        assert_eq!(whole.last().map(|e| e.data()), Some(&b"[DONE]"[..]));
        assert_eq!(concat(&whole), STREAM);
        // With the limit at the largest event, a held tail completes from a capped
        // copy and the rest of the chunk takes the fast path.
        let largest = whole.iter().map(|e| e.raw().len()).max().unwrap_or(0);
        for at in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(at);
            for max in [1 << 16, largest] {
                let (ev, r) = decode_all(&[a, b], max);
                assert_eq!(r, Ok(()));
                assert_eq!(ev, whole, "split at {at}");
            }
        }
        let (_, r) = decode_all(&[STREAM], largest - 1);
        assert_eq!(r, Err(SseError::EventTooLarge { limit: largest - 1 }));
    }

    #[test]
    fn byte_by_byte_and_cr_endings() {
        let crlf: Vec<u8> = String::from_utf8_lossy(STREAM)
            .replace('\n', "\r\n")
            .into_bytes();
        let cr: Vec<u8> = String::from_utf8_lossy(STREAM)
            .replace('\n', "\r")
            .into_bytes();
        for input in [STREAM, &crlf[..], &cr[..]] {
            let (whole, _) = decode_all(&[input], 1 << 16);
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            let (ev, r) = decode_all(&bytes, 1 << 16);
            assert_eq!(r, Ok(()));
            assert_eq!(ev, whole);
            assert_eq!(ev.len(), 51);
            assert_eq!(concat(&ev), input);
        }
    }

    #[test]
    fn a_lone_cr_at_a_chunk_end_waits_for_the_next_byte() {
        let (ev, _) = decode_all(&[b"data: a\r", b"\n\r", b"\ndata: b\n\n"], 64);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].raw(), b"data: a\r\n\r\n");
        assert_eq!(ev[1].data(), b"b");
    }

    #[test]
    fn unterminated_tail_comes_out_at_finish() {
        let (ev, r) = decode_all(&[b"data: a\n\ndata: [DONE]\n"], 64);
        assert_eq!(r, Ok(()));
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1].data(), b"[DONE]");
        assert_eq!(ev[1].raw(), b"data: [DONE]\n");
    }

    #[test]
    fn oversized_events_are_an_error_not_growth() {
        // A complete event over the limit.
        let mut d = SseDecoder::new(16);
        let mut out = Vec::new();
        let r = d.push(
            b"data: ok\n\ndata: 0123456789abcdef\n\ndata: z\n\n",
            &mut out,
        );
        assert_eq!(r, Err(SseError::EventTooLarge { limit: 16 }));
        assert_eq!(out.len(), 1);
        assert_eq!(
            d.take_pending(),
            b"data: 0123456789abcdef\n\ndata: z\n\n".to_vec()
        );
        // Held bytes, then a chunk that overflows: every byte comes back.
        let mut d = SseDecoder::new(16);
        assert_eq!(d.push(b"data: 12", &mut out), Ok(()));
        let long = [b'x'; 40];
        assert!(d.push(&long, &mut out).is_err());
        assert_eq!(d.take_pending(), [&b"data: 12"[..], &long].concat());
        // An unfinished one, fed a byte at a time: stops at the limit.
        let mut d = SseDecoder::new(16);
        let mut fed = 0;
        let r = loop {
            fed += 1;
            if let Err(e) = d.push(b"x", &mut out) {
                break e;
            }
            assert!(d.pending_len() <= 16);
        };
        assert_eq!(r, SseError::EventTooLarge { limit: 16 });
        assert_eq!(fed, 17);
        // Sticky, and keeps nothing more.
        assert_eq!(d.push(b"\n\n", &mut out), Err(r));
        assert_eq!(d.take_pending().len(), 17);
        assert_eq!(d.finish(), Err(r));
    }

    /// The fuzz target's properties on generated input (a cheap stand-in for
    /// `cargo fuzz run sse_decoder`): however the bytes are cut, the same events or
    /// the same refusal, and no byte lost.
    #[test]
    fn generated_inputs_cut_anywhere() {
        let alphabet = b"data: x\n\r\n:";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let len = (next() % 64) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let max = 1 + (next() % 24) as usize;
            let step = 1 + (next() % 5) as usize;
            let chunks: Vec<&[u8]> = input.chunks(step).collect();
            let (whole, rw) = decode_all(&[&input], max);
            let (cut, rc) = decode_all(&chunks, max);
            assert_eq!(rw.is_ok(), rc.is_ok(), "{input:?} max {max} step {step}");
            if rw.is_ok() {
                assert_eq!(whole, cut, "{input:?} max {max} step {step}");
                assert_eq!(concat(&whole), input);
                assert!(whole.iter().all(|e| e.raw().len() <= max));
            }
        }
    }

    #[test]
    fn exact_limit_is_accepted() {
        let (ev, r) = decode_all(&[b"data: 12345678\n\n"], 16);
        assert_eq!(r, Ok(()));
        assert_eq!(ev.len(), 1);
    }

    #[test]
    fn stray_blank_lines_are_kept() {
        let input: &[u8] = b"\n\ndata: a\n\n\n";
        let (ev, _) = decode_all(&[input], 64);
        assert_eq!(concat(&ev), input);
        assert_eq!(ev.iter().filter(|e| e.has_data()).count(), 1);
    }
}
