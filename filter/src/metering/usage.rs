//! Token usage read from upstream responses (OpenAI schema), JSON or SSE, gzip or not.
//!
//! The meter watches a response body go by without holding it: a JSON body is copied
//! up to a limit and read once at the end; an event stream is cut into events as it
//! arrives and each `data:` chunk is read on its own. A gzip body is inflated into a
//! scratch copy while the client gets the compressed bytes as they were. Whatever
//! the upstream sends, the client's bytes are never held back or broken by metering:
//! unreadable JSON just yields no usage.
//!
//! Besides OpenAI's names (`prompt_tokens`, `completion_tokens`, ...) the reader
//! takes Anthropic's (`input_tokens`, `output_tokens`, `cache_read_input_tokens`,
//! `cache_creation_input_tokens`, also nested in `message` or `response`). One sum is
//! done so that input tokens mean the same whatever the client's API: Anthropic's
//! `input_tokens` leave out cache reads and writes, OpenAI's `prompt_tokens` count
//! them, and the gateway reports the latter (all input tokens).

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

use flate2::write::MultiGzDecoder;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use crate::codec::sse::{SseDecoder, SseEvent};

/// Token counts of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub reasoning_tokens: u64,
}

/// How the response body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// One JSON document (buffered up to a limit to read `usage`).
    Json,
    /// `text/event-stream`: `data:` events of JSON chunks, ending with `[DONE]`.
    EventStream,
}

/// Options of one [`ResponseMeter`].
#[derive(Clone, Copy, Debug)]
pub struct MeterOptions {
    pub format: BodyFormat,
    /// The body is `content-encoding: gzip`: decode a copy to observe, pass bytes as-is.
    pub gzip: bool,
    /// The gateway asked for `stream_options.include_usage` on the client's behalf:
    /// remove the usage-only chunk (`"choices": []`) so the client sees what it asked for.
    /// Only for an uncompressed event stream; ignored otherwise.
    pub strip_usage_chunk: bool,
    /// Max bytes of a JSON body (or of one SSE event) kept to parse.
    pub max_buffered: usize,
}

/// Observes one response body, chunk by chunk.
pub struct ResponseMeter {
    body: Body,
    /// Rewriting the stream (strip mode, still healthy).
    strip: bool,
    ended: bool,
}

impl fmt::Debug for ResponseMeter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let obs = self.body.observer();
        f.debug_struct("ResponseMeter")
            .field("seen", &obs.seen)
            .field("strip", &self.strip)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

// One per response, and the common variant is the large one: boxing it buys nothing.
#[allow(clippy::large_enum_variant)]
enum Body {
    Plain(Observer),
    /// Inflates into the observer; `broken` after a gzip error (observing stops).
    Gzip {
        inflate: Box<MultiGzDecoder<Observer>>,
        broken: bool,
    },
}

impl Body {
    fn observer(&self) -> &Observer {
        match self {
            Body::Plain(o) => o,
            Body::Gzip { inflate, .. } => inflate.get_ref(),
        }
    }
}

impl ResponseMeter {
    pub fn new(opts: MeterOptions) -> Self {
        let obs = Observer::new(&opts);
        let strip = opts.strip_usage_chunk && !opts.gzip && opts.format == BodyFormat::EventStream;
        let body = if opts.gzip {
            Body::Gzip {
                inflate: Box::new(MultiGzDecoder::new(obs)),
                broken: false,
            }
        } else {
            Body::Plain(obs)
        };
        ResponseMeter {
            body,
            strip,
            ended: false,
        }
    }

    /// Observes one chunk. Returns the bytes to send instead of `chunk` when the
    /// stream is being rewritten, `None` to pass `chunk` unchanged.
    ///
    /// In strip mode every call returns `Some` (possibly empty: an unfinished event
    /// is held until its end) and `end_of_stream` flushes all that is held; should
    /// the stream stop parsing (an event over `max_buffered`), the held bytes come
    /// out at once and later chunks pass unchanged.
    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool, now: Duration) -> Option<Vec<u8>> {
        if self.ended {
            return None;
        }
        self.ended = end_of_stream;
        match &mut self.body {
            Body::Plain(obs) => {
                obs.now = now;
                if self.strip {
                    let mut out = Vec::with_capacity(chunk.len());
                    let healthy = obs.push(chunk, Some(&mut out));
                    if end_of_stream {
                        obs.end(Some(&mut out));
                    }
                    self.strip = healthy;
                    Some(out)
                } else {
                    obs.push(chunk, None);
                    if end_of_stream {
                        obs.end(None);
                    }
                    None
                }
            }
            Body::Gzip { inflate, broken } => {
                inflate.get_mut().now = now;
                if !*broken && !inflate.get_ref().idle() {
                    // Observer::write never fails: an error is the gzip data's.
                    let ok = inflate.write_all(chunk).is_ok()
                        && (!end_of_stream || inflate.try_finish().is_ok());
                    *broken = !ok;
                }
                if end_of_stream {
                    inflate.get_mut().end(None);
                }
                None
            }
        }
    }

    /// The usage seen, once the upstream reported it.
    pub fn usage(&self) -> Option<TokenUsage> {
        self.body.observer().seen.usage.map(|u| u.resolve())
    }

    /// The `model` the upstream answered with.
    pub fn response_model(&self) -> Option<&str> {
        self.body.observer().seen.model.as_deref()
    }

    /// When the first SSE event with content arrived (streams only).
    pub fn first_event_at(&self) -> Option<Duration> {
        self.body.observer().seen.first_event_at
    }

    /// When the last SSE event with content arrived (streams only).
    pub fn last_event_at(&self) -> Option<Duration> {
        self.body.observer().seen.last_event_at
    }

    /// How many SSE events with content arrived (streams only).
    pub fn content_events(&self) -> u64 {
        self.body.observer().seen.content_events
    }
}

/// What was learnt from the body so far.
#[derive(Debug, Default)]
struct Seen {
    usage: Option<UsageFields>,
    model: Option<String>,
    first_event_at: Option<Duration>,
    last_event_at: Option<Duration>,
    content_events: u64,
}

/// Reads plaintext body bytes (after gzip, if any).
struct Observer {
    now: Duration,
    max_buffered: usize,
    kind: Kind,
    seen: Seen,
}

enum Kind {
    /// A copy of the body; `None` once it outgrew the limit.
    Json(Option<Vec<u8>>),
    Sse {
        decoder: SseDecoder,
        /// Reused between pushes.
        events: Vec<SseEvent>,
        done: bool,
        /// The decoder failed: nothing more is read.
        failed: bool,
    },
}

impl Observer {
    fn new(opts: &MeterOptions) -> Self {
        let kind = match opts.format {
            BodyFormat::Json => Kind::Json(Some(Vec::new())),
            BodyFormat::EventStream => Kind::Sse {
                decoder: SseDecoder::new(opts.max_buffered),
                events: Vec::new(),
                done: false,
                failed: false,
            },
        };
        Observer {
            now: Duration::ZERO,
            max_buffered: opts.max_buffered,
            kind,
            seen: Seen::default(),
        }
    }

    /// Nothing left to learn from more bytes (used to stop inflating).
    fn idle(&self) -> bool {
        match &self.kind {
            Kind::Json(buf) => buf.is_none(),
            Kind::Sse { done, failed, .. } => *done || *failed,
        }
    }

    /// Reads `bytes`; with `emit`, appends the bytes the client should get. Returns
    /// false once the stream can no longer be rewritten (held bytes were emitted).
    fn push(&mut self, bytes: &[u8], emit: Option<&mut Vec<u8>>) -> bool {
        match &mut self.kind {
            Kind::Json(buf) => {
                if let Some(b) = buf {
                    if b.len() + bytes.len() > self.max_buffered {
                        *buf = None;
                    } else {
                        b.extend_from_slice(bytes);
                    }
                }
                true
            }
            Kind::Sse {
                decoder,
                events,
                done,
                failed,
            } => {
                if *failed {
                    if let Some(out) = emit {
                        out.extend_from_slice(bytes);
                    }
                    return false;
                }
                if emit.is_none() && *done {
                    return true;
                }
                let r = decoder.push(bytes, events);
                let mut emit = emit;
                for ev in events.drain(..) {
                    let keep = observe_event(&ev, self.now, done, &mut self.seen);
                    if let (Some(out), true) = (emit.as_deref_mut(), keep) {
                        out.extend_from_slice(ev.raw());
                    }
                }
                if r.is_err() {
                    *failed = true;
                    let pending = decoder.take_pending();
                    if let Some(out) = emit {
                        out.extend_from_slice(&pending);
                    }
                    return false;
                }
                true
            }
        }
    }

    /// The end of the body.
    fn end(&mut self, emit: Option<&mut Vec<u8>>) {
        match &mut self.kind {
            Kind::Json(buf) => {
                if let Some(b) = buf.take() {
                    if let Ok(doc) = serde_json::from_slice::<Chunk<'_>>(&b) {
                        doc.record(&mut self.seen);
                    }
                }
            }
            Kind::Sse {
                decoder,
                done,
                failed,
                ..
            } => {
                if *failed {
                    return;
                }
                if let Ok(Some(ev)) = decoder.finish() {
                    let keep = observe_event(&ev, self.now, done, &mut self.seen);
                    if let (Some(out), true) = (emit, keep) {
                        out.extend_from_slice(ev.raw());
                    }
                }
            }
        }
    }
}

impl Write for Observer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.push(buf, None);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads one event. Returns false for the usage-only chunk (to strip it).
fn observe_event(ev: &SseEvent, now: Duration, done: &mut bool, seen: &mut Seen) -> bool {
    if *done || !ev.has_data() {
        return true;
    }
    let data = ev.data();
    if data.trim_ascii() == b"[DONE]" {
        *done = true;
        return true;
    }
    let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
        return true;
    };
    if chunk.is_content() {
        seen.first_event_at.get_or_insert(now);
        seen.last_event_at = Some(now);
        seen.content_events += 1;
    }
    let usage_only = chunk.choices == Some(Count(0)) && chunk.usage.is_some();
    chunk.record(seen);
    !usage_only
}

/// The fields read from one JSON body or one stream chunk; the rest is skipped.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default)]
    choices: Option<Count>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    /// Anthropic `message_start` (`message`) and OpenAI Responses (`response`) nest
    /// the model and usage.
    #[serde(borrow, default)]
    message: Option<Nested<'a>>,
    #[serde(borrow, default)]
    response: Option<Nested<'a>>,
    /// Cohere's counts (rerank, chat): `meta.tokens`, else `meta.billed_units`.
    #[serde(default)]
    meta: Option<CohereMeta>,
}

#[derive(Deserialize)]
struct CohereMeta {
    #[serde(default)]
    tokens: Option<RawUsage>,
    #[serde(default)]
    billed_units: Option<RawUsage>,
}

#[derive(Deserialize)]
struct Nested<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<RawUsage>,
}

impl Chunk<'_> {
    /// A chunk that carries generated content: OpenAI choices, or an Anthropic /
    /// Responses content delta.
    fn is_content(&self) -> bool {
        self.choices.is_some_and(|c| c.0 > 0)
            || matches!(
                self.kind.as_deref(),
                Some("content_block_delta" | "response.output_text.delta")
            )
    }

    fn record(self, seen: &mut Seen) {
        let nested = self.message.into_iter().chain(self.response);
        let cohere = self.meta.and_then(|m| m.tokens.or(m.billed_units));
        for (model, usage) in [(self.model, self.usage.or(cohere))]
            .into_iter()
            .chain(nested.map(|n| (n.model, n.usage)))
        {
            if let Some(m) = model.filter(|m| !m.is_empty()) {
                if seen.model.is_none() {
                    seen.model = Some(m.into_owned());
                }
            }
            if let Some(u) = usage {
                let fields = u.fields();
                if fields.any() {
                    seen.usage
                        .get_or_insert_with(UsageFields::default)
                        .merge(fields);
                }
            }
        }
    }
}

/// The usage object in either naming; unknown fields are skipped.
#[derive(Deserialize, Default)]
struct RawUsage {
    #[serde(default, deserialize_with = "lenient")]
    prompt_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    completion_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    total_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
    #[serde(default)]
    completion_tokens_details: Option<Details>,
    #[serde(default, deserialize_with = "lenient")]
    input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    cache_read_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<Details>,
    #[serde(default)]
    output_tokens_details: Option<Details>,
}

#[derive(Deserialize, Default)]
struct Details {
    #[serde(default, deserialize_with = "lenient")]
    cached_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    cache_creation_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    reasoning_tokens: Option<u64>,
}

impl RawUsage {
    fn fields(&self) -> UsageFields {
        let d = |d: &Option<Details>, f: fn(&Details) -> Option<u64>| d.as_ref().and_then(f);
        UsageFields {
            input: self.prompt_tokens.or(self.input_tokens),
            output: self.completion_tokens.or(self.output_tokens),
            total: self.total_tokens,
            cached: d(&self.prompt_tokens_details, |d| d.cached_tokens)
                .or(self.cache_read_input_tokens)
                .or(d(&self.input_tokens_details, |d| d.cached_tokens)),
            cache_creation: d(&self.prompt_tokens_details, |d| d.cache_creation_tokens)
                .or(self.cache_creation_input_tokens),
            reasoning: d(&self.completion_tokens_details, |d| d.reasoning_tokens)
                .or(d(&self.output_tokens_details, |d| d.reasoning_tokens)),
            // Anthropic's cache counts sit beside `input_tokens`, outside it.
            input_excludes_cache: self.prompt_tokens.is_none()
                && self.input_tokens.is_some()
                && (self.cache_read_input_tokens.is_some()
                    || self.cache_creation_input_tokens.is_some()),
        }
    }
}

/// Counters as reported; a later report overrides only what it carries (Anthropic
/// sends input counts first and output counts at the end).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct UsageFields {
    input: Option<u64>,
    output: Option<u64>,
    total: Option<u64>,
    cached: Option<u64>,
    cache_creation: Option<u64>,
    reasoning: Option<u64>,
    /// `input` counts uncached tokens only (Anthropic).
    input_excludes_cache: bool,
}

impl UsageFields {
    fn any(&self) -> bool {
        *self != UsageFields::default()
    }

    fn merge(&mut self, new: UsageFields) {
        let pick = |old: &mut Option<u64>, new: Option<u64>| {
            if new.is_some() {
                *old = new;
            }
        };
        pick(&mut self.input, new.input);
        pick(&mut self.output, new.output);
        pick(&mut self.total, new.total);
        pick(&mut self.cached, new.cached);
        pick(&mut self.cache_creation, new.cache_creation);
        pick(&mut self.reasoning, new.reasoning);
        self.input_excludes_cache |= new.input_excludes_cache;
    }

    fn resolve(self) -> TokenUsage {
        let mut input = self.input.unwrap_or(0);
        if self.input_excludes_cache {
            input = input
                .saturating_add(self.cached.unwrap_or(0))
                .saturating_add(self.cache_creation.unwrap_or(0));
        }
        let output = self.output.unwrap_or(0);
        TokenUsage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: self.total.unwrap_or(input.saturating_add(output)),
            cached_input_tokens: self.cached.unwrap_or(0),
            cache_creation_input_tokens: self.cache_creation.unwrap_or(0),
            reasoning_tokens: self.reasoning.unwrap_or(0),
        }
    }
}

/// A token count: a non-negative integer (also written `12.0`). Anything else
/// (null, negative, fractional, a string) reads as absent rather than failing the
/// whole chunk.
fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a token count")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(u64::try_from(v).ok())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            let ok = v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64;
            Ok(ok.then_some(v as u64))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// The length of a JSON array, counted without keeping its elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                let mut n = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Count(n))
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;

    const CHAT_STREAM: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/chat-streaming.sse"
    ));
    const CHAT_STREAM_USAGE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/chat-streaming-detailed-usage.sse"
    ));
    const COMPLETION_STREAM: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/completion-streaming.sse"
    ));
    const COMPLETION_STREAM_USAGE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/completion-streaming-usage.sse"
    ));
    const CHAT_BASIC: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/chat-basic.json"
    ));
    const CHAT_DETAILED: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/chat-detailed-usage.json"
    ));
    const COMPLETION_BASIC: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/completion-basic.json"
    ));
    const EMBEDDINGS_BASIC: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/embeddings-basic.json"
    ));

    fn opts(format: BodyFormat) -> MeterOptions {
        MeterOptions {
            format,
            gzip: false,
            strip_usage_chunk: false,
            max_buffered: 1 << 20,
        }
    }

    /// Feeds `chunks` (the last one with end_of_stream), the i-th at i ms; returns
    /// what the client would get.
    fn run(meter: &mut ResponseMeter, chunks: &[&[u8]]) -> Vec<u8> {
        let mut client = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let eos = i + 1 == chunks.len();
            match meter.feed(c, eos, Duration::from_millis(i as u64)) {
                Some(b) => client.extend_from_slice(&b),
                None => client.extend_from_slice(c),
            }
        }
        client
    }

    const fn usage(input: u64, output: u64, total: u64, cached: u64, reasoning: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: total,
            cached_input_tokens: cached,
            cache_creation_input_tokens: 0,
            reasoning_tokens: reasoning,
        }
    }

    struct Case {
        body: &'static [u8],
        usage: Option<TokenUsage>,
        model: &'static str,
        content_events: u64,
    }

    const CHAT_STREAM_CASE: Case = Case {
        body: CHAT_STREAM,
        usage: None,
        model: "gpt-5-nano-2025-08-07",
        content_events: 50,
    };
    const CHAT_STREAM_USAGE_CASE: Case = Case {
        body: CHAT_STREAM_USAGE,
        usage: Some(usage(12, 100, 112, 0, 100)),
        model: "gpt-5-nano-2025-08-07",
        content_events: 2,
    };
    const COMPLETION_STREAM_CASE: Case = Case {
        body: COMPLETION_STREAM,
        usage: None,
        model: "babbage:2023-07-21-v2",
        content_events: 25,
    };
    const COMPLETION_STREAM_USAGE_CASE: Case = Case {
        body: COMPLETION_STREAM_USAGE,
        usage: Some(usage(31, 25, 56, 0, 0)),
        model: "babbage:2023-07-21-v2",
        content_events: 25,
    };

    fn stream_cases() -> [Case; 4] {
        [
            CHAT_STREAM_CASE,
            CHAT_STREAM_USAGE_CASE,
            COMPLETION_STREAM_CASE,
            COMPLETION_STREAM_USAGE_CASE,
        ]
    }

    /// Cuts the stream in two at every byte: same bytes out, same readings.
    fn every_split_point(case: Case) {
        let body = case.body;
        let first_end = body.windows(2).position(|w| w == b"\n\n").unwrap_or(0) + 2;
        for at in 0..=body.len() {
            let (a, b) = body.split_at(at);
            let mut m = ResponseMeter::new(opts(BodyFormat::EventStream));
            let client = run(&mut m, &[a, b]);
            assert_eq!(client, body);
            assert_eq!(m.usage(), case.usage, "split at {at}");
            assert_eq!(m.response_model(), Some(case.model));
            assert_eq!(m.content_events(), case.content_events, "split at {at}");
            let first = m.first_event_at().map(|d| d.as_millis());
            let last = m.last_event_at().map(|d| d.as_millis());
            // The first event has content: it is timed by the chunk completing it.
            assert_eq!(first, Some(u128::from(at < first_end)), "split at {at}");
            assert!(last >= first);
        }
    }

    #[test]
    fn chat_stream_at_every_split_point() {
        every_split_point(CHAT_STREAM_CASE);
    }

    #[test]
    fn chat_stream_with_usage_at_every_split_point() {
        every_split_point(CHAT_STREAM_USAGE_CASE);
    }

    #[test]
    fn completion_stream_at_every_split_point() {
        every_split_point(COMPLETION_STREAM_CASE);
    }

    #[test]
    fn completion_stream_with_usage_at_every_split_point() {
        every_split_point(COMPLETION_STREAM_USAGE_CASE);
    }

    #[test]
    fn streams_byte_by_byte_with_timing() {
        for case in stream_cases() {
            let chunks: Vec<&[u8]> = case.body.chunks(1).collect();
            let mut m = ResponseMeter::new(opts(BodyFormat::EventStream));
            run(&mut m, &chunks);
            assert_eq!(m.usage(), case.usage);
            assert_eq!(m.content_events(), case.content_events);
            let first = m.first_event_at().unwrap_or_default();
            let last = m.last_event_at().unwrap_or_default();
            assert!(first > Duration::ZERO && last > first);
        }
    }

    #[test]
    fn json_bodies() {
        let cases = [
            (
                CHAT_BASIC,
                usage(8, 377, 385, 0, 320),
                "gpt-5-nano-2025-08-07",
            ),
            (
                CHAT_DETAILED,
                usage(12, 100, 112, 0, 100),
                "gpt-5-nano-2025-08-07",
            ),
            (
                COMPLETION_BASIC,
                usage(31, 25, 56, 0, 0),
                "babbage:2023-07-21-v2",
            ),
            (
                EMBEDDINGS_BASIC,
                usage(7, 0, 7, 0, 0),
                "text-embedding-3-small",
            ),
        ];
        for (body, want, model) in cases {
            for size in [1, 7, 100, body.len()] {
                let chunks: Vec<&[u8]> = body.chunks(size).collect();
                let mut m = ResponseMeter::new(opts(BodyFormat::Json));
                assert_eq!(run(&mut m, &chunks), body);
                assert_eq!(m.usage(), Some(want));
                assert_eq!(m.response_model(), Some(model));
                assert_eq!(m.first_event_at(), None);
            }
        }
    }

    #[test]
    fn cohere_meta_counts_and_no_usage_in_a_token_count() {
        let rerank = br#"{"id":"r1","results":[{"index":0,"relevance_score":0.9}],
            "meta":{"api_version":{"version":"2"},"billed_units":{"search_units":1},
            "tokens":{"input_tokens":57}}}"#;
        let mut m = ResponseMeter::new(opts(BodyFormat::Json));
        run(&mut m, &[rerank]);
        assert_eq!(
            m.usage().map(|u| (u.input_tokens, u.total_tokens)),
            Some((57, 57))
        );
        // Only billed units, search units only: nothing to count as tokens.
        let mut m = ResponseMeter::new(opts(BodyFormat::Json));
        run(
            &mut m,
            &[br#"{"results":[],"meta":{"billed_units":{"search_units":1}}}"#],
        );
        assert_eq!(m.usage(), None);
        // Anthropic's count_tokens answer is a count, not usage.
        let mut m = ResponseMeter::new(opts(BodyFormat::Json));
        run(&mut m, &[br#"{"input_tokens":42}"#]);
        assert_eq!(m.usage(), None);
    }

    #[test]
    fn cached_and_cache_creation_tokens() {
        let body = br#"{"model":"gpt-4o","usage":{"prompt_tokens":2006,"completion_tokens":300,
            "total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"cache_creation_tokens":64},
            "completion_tokens_details":{"reasoning_tokens":12}}}"#;
        let mut m = ResponseMeter::new(opts(BodyFormat::Json));
        run(&mut m, &[body]);
        assert_eq!(
            m.usage(),
            Some(TokenUsage {
                input_tokens: 2006,
                output_tokens: 300,
                total_tokens: 2306,
                cached_input_tokens: 1920,
                cache_creation_input_tokens: 64,
                reasoning_tokens: 12,
            })
        );
    }

    #[test]
    fn anthropic_names_merge_across_events() {
        let body = concat!(
            "event: message_start\n",
            r#"data: {"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":10,"cache_read_input_tokens":4,"cache_creation_input_tokens":3,"output_tokens":1}}}"#,
            "\n\n",
            "event: content_block_delta\n",
            r#"data: {"type":"content_block_delta","delta":{"text":"hi"}}"#,
            "\n\n",
            "event: message_delta\n",
            r#"data: {"type":"message_delta","usage":{"output_tokens":7}}"#,
            "\n\n"
        );
        let mut m = ResponseMeter::new(opts(BodyFormat::EventStream));
        run(&mut m, &[body.as_bytes()]);
        // Input tokens count cache reads and writes too, as OpenAI's prompt_tokens do.
        let expected = TokenUsage {
            input_tokens: 17,
            output_tokens: 7,
            total_tokens: 24,
            cached_input_tokens: 4,
            cache_creation_input_tokens: 3,
            reasoning_tokens: 0,
        };
        assert_eq!(m.usage(), Some(expected));
        assert_eq!(m.response_model(), Some("claude-x"));
        assert_eq!(m.content_events(), 1);

        // The newer API repeats every count, cumulatively, in message_delta.
        let cumulative = body.replace(
            r#"{"output_tokens":7}"#,
            r#"{"input_tokens":10,"cache_read_input_tokens":4,"cache_creation_input_tokens":3,"output_tokens":7}"#,
        );
        let mut m = ResponseMeter::new(opts(BodyFormat::EventStream));
        run(&mut m, &[cumulative.as_bytes()]);
        assert_eq!(m.usage(), Some(expected));

        // An OpenAI Responses usage (input_tokens with details) already counts cached.
        let mut m = ResponseMeter::new(opts(BodyFormat::Json));
        run(
            &mut m,
            &[br#"{"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":4},"output_tokens":2}}"#],
        );
        assert_eq!(m.usage().map(|u| u.input_tokens), Some(10));
    }

    #[test]
    fn json_past_the_limit_is_skipped() {
        let mut o = opts(BodyFormat::Json);
        o.max_buffered = CHAT_BASIC.len() - 1;
        let mut m = ResponseMeter::new(o);
        assert_eq!(
            run(&mut m, &[&CHAT_BASIC[..10], &CHAT_BASIC[10..]]),
            CHAT_BASIC
        );
        assert_eq!(m.usage(), None);
    }

    #[test]
    fn malformed_json_yields_no_usage_and_keeps_bytes() {
        let body: &[u8] = b"data: {\"choices\":[{}],\"usage\":{\"prompt_tokens\":\n\ndata: not json\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":\"x\",\"total_tokens\":3.0}}\n\ndata: [DONE]\n\n";
        let mut o = opts(BodyFormat::EventStream);
        o.strip_usage_chunk = true;
        let mut m = ResponseMeter::new(o);
        let out = run(&mut m, &[body]);
        // The readable usage chunk is stripped, nothing else.
        let stripped: &[u8] = b"data: {\"choices\":[{}],\"usage\":{\"prompt_tokens\":\n\ndata: not json\n\ndata: [DONE]\n\n";
        assert_eq!(out, stripped);
        assert_eq!(m.usage(), Some(usage(0, 0, 3, 0, 0)));

        let mut m = ResponseMeter::new(opts(BodyFormat::Json));
        run(&mut m, &[b"{\"usage\": {\"prompt_tokens\": 3", b""]);
        assert_eq!(m.usage(), None);
    }

    #[test]
    fn strip_removes_exactly_the_usage_chunk() {
        for body in [CHAT_STREAM_USAGE, COMPLETION_STREAM_USAGE] {
            let text = std::str::from_utf8(body).unwrap_or_default();
            let events: Vec<&str> = text.split_inclusive("\n\n").collect();
            let usage_event: Vec<&&str> = events
                .iter()
                .filter(|e| e.contains("\"choices\":[]"))
                .collect();
            assert_eq!(usage_event.len(), 1);
            let want: String = events
                .iter()
                .filter(|e| !e.contains("\"choices\":[]"))
                .copied()
                .collect();
            assert_eq!(want.len() + usage_event[0].len(), body.len());
            for at in 0..=body.len() {
                let (a, b) = body.split_at(at);
                let mut o = opts(BodyFormat::EventStream);
                o.strip_usage_chunk = true;
                let mut m = ResponseMeter::new(o);
                let mut client = Vec::new();
                for (i, c) in [a, b].iter().enumerate() {
                    let out = m.feed(c, i == 1, Duration::ZERO);
                    client.extend(out.unwrap_or_else(|| panic!("strip mode answers Some")));
                }
                assert_eq!(client, want.as_bytes(), "split at {at}");
                assert!(m.usage().is_some());
            }
        }
    }

    #[test]
    fn strip_mode_holds_tails_and_flushes_at_end() {
        let mut o = opts(BodyFormat::EventStream);
        o.strip_usage_chunk = true;
        let mut m = ResponseMeter::new(o);
        assert_eq!(
            m.feed(b"data: {\"choices\":[{}]}", false, Duration::ZERO),
            Some(vec![])
        );
        // No terminating blank line: the tail comes out at the end anyway.
        assert_eq!(
            m.feed(b"\n", true, Duration::ZERO),
            Some(b"data: {\"choices\":[{}]}\n".to_vec())
        );
        assert_eq!(m.content_events(), 1);
    }

    #[test]
    fn strip_mode_gives_up_cleanly_on_an_oversized_event() {
        let mut o = opts(BodyFormat::EventStream);
        o.strip_usage_chunk = true;
        o.max_buffered = 64;
        let mut m = ResponseMeter::new(o);
        let big = format!("data: {}\n\n", "x".repeat(100));
        let mut client = Vec::new();
        client.extend(
            m.feed(b"data: {\"choices\":[{}]}\n\ndata: ", false, Duration::ZERO)
                .unwrap_or_default(),
        );
        client.extend(
            m.feed(&big.as_bytes()[6..], false, Duration::ZERO)
                .unwrap_or_default(),
        );
        // Passes unchanged from now on.
        assert_eq!(m.feed(b"data: [DONE]\n\n", true, Duration::ZERO), None);
        client.extend_from_slice(b"data: [DONE]\n\n");
        let want = format!("data: {{\"choices\":[{{}}]}}\n\n{big}data: [DONE]\n\n");
        assert_eq!(client, want.as_bytes());
    }

    fn gzip(body: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(body).unwrap_or_default();
        e.finish().unwrap_or_default()
    }

    #[test]
    fn gzip_bodies_in_chunks() {
        let zjson = gzip(CHAT_DETAILED);
        let zsse = gzip(COMPLETION_STREAM_USAGE);
        for size in [1, 3, 64, 1 << 20] {
            let mut o = opts(BodyFormat::Json);
            o.gzip = true;
            let mut m = ResponseMeter::new(o);
            let chunks: Vec<&[u8]> = zjson.chunks(size).collect();
            assert_eq!(run(&mut m, &chunks), zjson);
            assert_eq!(m.usage(), Some(usage(12, 100, 112, 0, 100)), "size {size}");

            let mut o = opts(BodyFormat::EventStream);
            o.gzip = true;
            o.strip_usage_chunk = true; // ignored: compressed bytes are not rewritten
            let mut m = ResponseMeter::new(o);
            let chunks: Vec<&[u8]> = zsse.chunks(size).collect();
            assert_eq!(run(&mut m, &chunks), zsse);
            assert_eq!(m.usage(), Some(usage(31, 25, 56, 0, 0)), "size {size}");
            assert_eq!(m.content_events(), 25);
        }
    }

    #[test]
    fn broken_gzip_yields_no_usage_and_passes_bytes() {
        let mut o = opts(BodyFormat::Json);
        o.gzip = true;
        let mut m = ResponseMeter::new(o);
        let junk: &[u8] = b"this is not gzip at all";
        assert_eq!(run(&mut m, &[junk, junk]), [junk, junk].concat());
        assert_eq!(m.usage(), None);
    }

    #[test]
    fn nothing_after_end_of_stream() {
        let mut m = ResponseMeter::new(opts(BodyFormat::Json));
        run(&mut m, &[COMPLETION_BASIC]);
        assert_eq!(m.feed(CHAT_BASIC, true, Duration::ZERO), None);
        assert_eq!(m.usage(), Some(usage(31, 25, 56, 0, 0)));
    }
}
