//! Token usage read from upstream responses (OpenAI schema), JSON or SSE, gzip or not.
//!
//! INTERFACE STUB (to be implemented).

use std::time::Duration;

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
    pub strip_usage_chunk: bool,
    /// Max bytes of a JSON body (or of one SSE event) kept to parse.
    pub max_buffered: usize,
}

/// Observes one response body, chunk by chunk.
#[derive(Debug)]
pub struct ResponseMeter {
    opts: MeterOptions,
}

impl ResponseMeter {
    pub fn new(opts: MeterOptions) -> Self {
        ResponseMeter { opts }
    }

    /// Observes one chunk. Returns the bytes to send instead of `chunk` when the
    /// stream is being rewritten, `None` to pass `chunk` unchanged.
    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool, now: Duration) -> Option<Vec<u8>> {
        let _ = (chunk, end_of_stream, now, self.opts);
        None
    }

    /// The usage seen, once the upstream reported it.
    pub fn usage(&self) -> Option<TokenUsage> {
        None
    }

    /// The `model` the upstream answered with.
    pub fn response_model(&self) -> Option<&str> {
        None
    }

    /// When the first SSE event with content arrived (streams only).
    pub fn first_event_at(&self) -> Option<Duration> {
        None
    }

    /// When the last SSE event with content arrived (streams only).
    pub fn last_event_at(&self) -> Option<Duration> {
        None
    }

    /// How many SSE events with content arrived (streams only).
    pub fn content_events(&self) -> u64 {
        0
    }
}
