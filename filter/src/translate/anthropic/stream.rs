//! Streams: the provider's framing (SSE, AWS event stream) and the translators: an
//! Anthropic stream as hub items, a Bedrock stream as an Anthropic client's SSE, hub
//! items as an Anthropic client's SSE.

use std::fmt;

use base64::Engine as _;
use serde_json::{json, Value};

use super::response::{
    anthropic_kind, anthropic_status, anthropic_usage, bedrock_kind, client_stop, clip,
    finish_reason, hub_usage, kind_status, message_id, message_of, thinking_blocks_of,
};
use super::{thinking_entry, RESPONSE_TOOL, THINKING_BLOCKS};
use crate::codec::eventstream;
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::schema::anthropic as an;
use crate::schema::openai::{ChatCompletionChunk, ChunkChoice, Delta, Rest, Role, Usage};
use crate::translate::{
    tool_call_delta, ChunkSource, ErrorKind, ProviderError, ResponseMeta, StreamItem,
    TranslateError,
};

// ---------------------------------------------------------------------------------
// Streams: framing.

/// How the provider frames its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `text/event-stream` (native, Vertex).
    Sse,
    /// `application/vnd.amazon.eventstream` (Bedrock).
    EventStream,
}

fn bad(why: impl Into<String>) -> ProviderError {
    ProviderError::from(TranslateError::BadResponse(why.into()))
}

fn ended_early() -> ProviderError {
    bad("the Anthropic stream ended early, before message_stop")
}

/// One Bedrock event-stream message: the Anthropic event JSON of a `chunk`, nothing
/// for other events, or the error an exception stands for.
fn bedrock_event(msg: &eventstream::Message) -> Result<Option<Vec<u8>>, ProviderError> {
    match msg.header_str(":message-type").unwrap_or("event") {
        "event" => {}
        "exception" => {
            let name = msg.header_str(":exception-type").unwrap_or("exception");
            let message = serde_json::from_slice::<Value>(&msg.payload)
                .ok()
                .as_ref()
                .and_then(message_of)
                .unwrap_or_else(|| format!("Bedrock raised {name}"));
            let kind = bedrock_kind(name).unwrap_or(ErrorKind::Server);
            return Err(ProviderError {
                status: kind_status(kind),
                kind,
                code: Some(name.to_string()),
                message,
            });
        }
        "error" => {
            let code = msg.header_str(":error-code").unwrap_or("error");
            let message = msg.header_str(":error-message").unwrap_or("no message");
            return Err(ProviderError {
                status: 502,
                kind: ErrorKind::Server,
                code: Some(code.to_string()),
                message: clip(message),
            });
        }
        _ => return Ok(None),
    }
    if msg.header_str(":event-type") != Some("chunk") {
        return Ok(None);
    }
    let chunk: an::BedrockChunk = serde_json::from_slice(&msg.payload)
        .map_err(|e| bad(format!("unreadable Bedrock chunk: {e}")))?;
    base64::engine::general_purpose::STANDARD
        .decode(chunk.bytes.as_bytes())
        .map(Some)
        .map_err(|e| bad(format!("Bedrock chunk bytes are not base64: {e}")))
}

#[derive(Debug)]
enum FrameDecoder {
    Sse(SseDecoder),
    EventStream(eventstream::Decoder),
}

impl FrameDecoder {
    fn new(framing: Framing, max_event_bytes: usize) -> Self {
        match framing {
            Framing::Sse => FrameDecoder::Sse(SseDecoder::new(max_event_bytes)),
            Framing::EventStream => {
                FrameDecoder::EventStream(eventstream::Decoder::new(max_event_bytes))
            }
        }
    }

    /// Cuts what arrived into Anthropic event JSON documents, calling `on_event` for
    /// each until it returns `false`; a framing error or exception ends with `Err`.
    fn feed(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        mut on_event: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), ProviderError> {
        match self {
            FrameDecoder::Sse(d) => {
                let mut events = Vec::new();
                let pushed = d.push(chunk, &mut events);
                for ev in &events {
                    if !sse_event(ev, &mut on_event) {
                        return Ok(());
                    }
                }
                pushed.map_err(|e| bad(e.to_string()))?;
                if end_of_stream {
                    // An unterminated last event counts only if it is whole: a cut
                    // one is the stream ending early.
                    let tail = d.finish().map_err(|e| bad(e.to_string()))?;
                    if let Some(ev) = tail.filter(|ev| {
                        serde_json::from_slice::<serde::de::IgnoredAny>(ev.data()).is_ok()
                    }) {
                        sse_event(&ev, &mut on_event);
                    }
                }
            }
            FrameDecoder::EventStream(d) => {
                let mut msgs = Vec::new();
                let pushed = d.push_into(chunk, &mut msgs);
                for m in &msgs {
                    if let Some(json) = bedrock_event(m)? {
                        if !on_event(&json) {
                            return Ok(());
                        }
                    }
                }
                pushed.map_err(|e| bad(e.to_string()))?;
                if end_of_stream {
                    d.finish().map_err(|e| bad(e.to_string()))?;
                }
            }
        }
        Ok(())
    }
}

/// Comments, blank events and `data`-less events carry nothing.
fn sse_event(ev: &SseEvent, on_event: &mut impl FnMut(&[u8]) -> bool) -> bool {
    if !ev.has_data() || ev.data().iter().all(u8::is_ascii_whitespace) {
        return true;
    }
    on_event(ev.data())
}

// ---------------------------------------------------------------------------------
// Provider stream → hub items.

/// An Anthropic stream (any flavor) as hub items.
///
/// `message_start` gives the role chunk; text, thinking and tool-argument deltas
/// give content, `reasoning_content` and `tool_calls` pieces; `message_stop` gives
/// the finish chunk, the usage chunk (when asked for) and `Done`. An `error` event,
/// a Bedrock exception or an unreadable event gives one `Error`, and so does a
/// stream that ends before `message_stop`.
#[derive(Debug)]
pub struct ChatStream {
    decoder: FrameDecoder,
    state: ChatState,
}

impl ChatStream {
    pub fn new(
        framing: Framing,
        meta: ResponseMeta,
        include_usage: bool,
        max_event_bytes: usize,
    ) -> Self {
        ChatStream {
            decoder: FrameDecoder::new(framing, max_event_bytes),
            state: ChatState {
                meta,
                include_usage,
                role_sent: false,
                blocks: Vec::new(),
                tool_calls: 0,
                stop_reason: None,
                stop_sequence: None,
                usage: an::Usage::default(),
                ended: false,
            },
        }
    }
}

impl ChunkSource for ChatStream {
    fn feed(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<StreamItem>) {
        if self.state.ended {
            return;
        }
        let state = &mut self.state;
        let fed = self.decoder.feed(chunk, end_of_stream, |json| {
            state.on_event(json, out);
            !state.ended
        });
        if let Err(e) = fed {
            self.state.fail(e, out);
        }
        if end_of_stream && !self.state.ended {
            self.state.fail(ended_early(), out);
        }
    }
}

/// What an Anthropic content block becomes in the hub stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// A tool call, by hub index.
    Tool(u32),
    /// The `json_schema` answer: its input is the message text.
    Json,
    Other,
}

struct ChatState {
    meta: ResponseMeta,
    include_usage: bool,
    role_sent: bool,
    /// Anthropic block index → what it is.
    blocks: Vec<(u32, Block)>,
    tool_calls: u32,
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
    /// Latest count of each kind (message_delta counts are cumulative).
    usage: an::Usage,
    ended: bool,
}

impl fmt::Debug for ChatState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatState")
            .field("blocks", &self.blocks.len())
            .field("tool_calls", &self.tool_calls)
            .field("stop_reason", &self.stop_reason)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

fn merge_usage(into: &mut an::Usage, from: &an::Usage) {
    for (to, v) in [
        (&mut into.input_tokens, from.input_tokens),
        (&mut into.output_tokens, from.output_tokens),
        (
            &mut into.cache_creation_input_tokens,
            from.cache_creation_input_tokens,
        ),
        (
            &mut into.cache_read_input_tokens,
            from.cache_read_input_tokens,
        ),
    ] {
        if v.is_some() {
            *to = v;
        }
    }
}

fn thinking_blocks_delta(entry: Value) -> Delta {
    let mut rest = Rest::new();
    rest.insert(THINKING_BLOCKS.into(), Value::Array(vec![entry]));
    Delta {
        rest,
        ..Default::default()
    }
}

impl ChatState {
    fn on_event(&mut self, json: &[u8], out: &mut Vec<StreamItem>) {
        match serde_json::from_slice::<an::StreamEvent>(json) {
            Ok(ev) => self.handle(ev, out),
            Err(e) => self.fail(bad(format!("unreadable Anthropic stream event: {e}")), out),
        }
    }

    fn handle(&mut self, ev: an::StreamEvent, out: &mut Vec<StreamItem>) {
        use an::StreamEvent as E;
        match ev {
            E::MessageStart { message } => {
                merge_usage(&mut self.usage, &message.usage);
                if !self.role_sent {
                    self.emit(
                        Delta {
                            content: Some(String::new()),
                            ..Default::default()
                        },
                        out,
                    );
                }
            }
            E::ContentBlockStart {
                index,
                content_block: b,
            } => self.block_start(index, b, out),
            E::ContentBlockDelta { index, delta } => self.block_delta(index, delta, out),
            E::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                    self.stop_sequence = delta.stop_sequence;
                }
                if let Some(u) = usage {
                    merge_usage(&mut self.usage, &u);
                }
            }
            E::MessageStop => self.finish(out),
            E::Error { error } => {
                let status = anthropic_status(&error.kind);
                let e = ProviderError {
                    status,
                    kind: anthropic_kind(&error.kind)
                        .unwrap_or_else(|| ErrorKind::from_status(status)),
                    code: Some(error.kind),
                    message: clip(&error.message),
                };
                self.fail(e, out);
            }
            E::ContentBlockStop { .. } | E::Ping | E::Unknown => {}
        }
    }

    fn block(&self, index: u32) -> Block {
        self.blocks
            .iter()
            .rev()
            .find(|(i, _)| *i == index)
            .map_or(Block::Other, |(_, b)| *b)
    }

    fn block_start(&mut self, index: u32, b: an::ContentBlock, out: &mut Vec<StreamItem>) {
        let kind = match b.kind.as_str() {
            "text" => Block::Text,
            "thinking" => Block::Thinking,
            "tool_use" if b.name.as_deref() == Some(RESPONSE_TOOL) => Block::Json,
            "tool_use" => {
                self.tool_calls += 1;
                Block::Tool(self.tool_calls - 1)
            }
            _ => Block::Other,
        };
        self.blocks.push((index, kind));
        // Starts normally come empty; whatever they hold goes out as a first piece.
        let initial_input = b
            .input
            .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
            .map(|v| v.to_string());
        match kind {
            Block::Text => self.text(b.text.unwrap_or_default(), out),
            Block::Thinking => {
                self.reasoning(b.thinking.unwrap_or_default(), out);
                self.signature(b.signature.unwrap_or_default(), out);
            }
            Block::Tool(i) => {
                let id = b.id.unwrap_or_else(|| format!("call_{}_{i}", self.meta.id));
                let delta = tool_call_delta(
                    i,
                    Some(id),
                    Some(b.name.unwrap_or_default()),
                    initial_input.unwrap_or_default(),
                );
                self.emit(delta, out);
            }
            Block::Json => self.text(initial_input.unwrap_or_default(), out),
            Block::Other if b.kind == "redacted_thinking" => {
                let entry =
                    json!({"type": "redacted_thinking", "data": b.data.unwrap_or_default()});
                self.emit(thinking_blocks_delta(entry), out);
            }
            Block::Other => {}
        }
    }

    fn block_delta(&mut self, index: u32, d: an::BlockDelta, out: &mut Vec<StreamItem>) {
        match d.kind.as_str() {
            "text_delta" => self.text(d.text.unwrap_or_default(), out),
            "thinking_delta" => self.reasoning(d.thinking.unwrap_or_default(), out),
            "signature_delta" => self.signature(d.signature.unwrap_or_default(), out),
            "input_json_delta" => {
                let piece = d.partial_json.unwrap_or_default();
                match self.block(index) {
                    _ if piece.is_empty() => {}
                    Block::Tool(i) => self.emit(tool_call_delta(i, None, None, piece), out),
                    Block::Json => self.text(piece, out),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn text(&mut self, text: String, out: &mut Vec<StreamItem>) {
        if !text.is_empty() {
            self.emit(
                Delta {
                    content: Some(text),
                    ..Default::default()
                },
                out,
            );
        }
    }

    fn reasoning(&mut self, text: String, out: &mut Vec<StreamItem>) {
        if !text.is_empty() {
            self.emit(
                Delta {
                    reasoning_content: Some(text),
                    ..Default::default()
                },
                out,
            );
        }
    }

    fn signature(&mut self, signature: String, out: &mut Vec<StreamItem>) {
        if !signature.is_empty() {
            self.emit(thinking_blocks_delta(thinking_entry("", &signature)), out);
        }
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> StreamItem {
        StreamItem::Chunk(Box::new(self.meta.chunk(choices, usage)))
    }

    fn emit_choice(
        &mut self,
        mut delta: Delta,
        finish: Option<&'static str>,
        rest: Rest,
        out: &mut Vec<StreamItem>,
    ) {
        if !self.role_sent {
            delta.role = Some(Role::Assistant);
            self.role_sent = true;
        }
        let choice = ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish.map(str::to_string),
            rest,
        };
        out.push(self.chunk(vec![choice], None));
    }

    fn emit(&mut self, delta: Delta, out: &mut Vec<StreamItem>) {
        self.emit_choice(delta, None, Rest::new(), out);
    }

    fn finish(&mut self, out: &mut Vec<StreamItem>) {
        let stop = self
            .stop_reason
            .clone()
            .unwrap_or_else(|| "end_turn".into());
        let mut reason = finish_reason(&stop);
        if reason == "tool_calls" && self.tool_calls == 0 {
            reason = "stop";
        }
        let mut rest = Rest::new();
        if let (Some(seq), "stop_sequence") = (self.stop_sequence.clone(), stop.as_str()) {
            rest.insert("stop_reason".into(), Value::String(seq));
        }
        self.emit_choice(Delta::default(), Some(reason), rest, out);
        if self.include_usage {
            let usage = hub_usage(&self.usage);
            out.push(self.chunk(Vec::new(), Some(usage)));
        }
        out.push(StreamItem::Done);
        self.ended = true;
    }

    fn fail(&mut self, e: ProviderError, out: &mut Vec<StreamItem>) {
        if !self.ended {
            out.push(StreamItem::Error(e));
            self.ended = true;
        }
    }
}

// ---------------------------------------------------------------------------------
// Anthropic client → Anthropic-family provider.

/// Bedrock's `invoke-with-response-stream` as the Anthropic SSE a client expects:
/// `event: <type>\ndata: <json>\n\n` per event, bytes in and out. An exception, an
/// unreadable frame or a stream cut before `message_stop` becomes one Anthropic
/// `event: error`, and nothing follows it.
#[derive(Debug)]
pub struct MessagesStream {
    decoder: FrameDecoder,
    stopped: bool,
    ended: bool,
}

impl MessagesStream {
    pub fn new(max_event_bytes: usize) -> Self {
        MessagesStream {
            decoder: FrameDecoder::new(Framing::EventStream, max_event_bytes),
            stopped: false,
            ended: false,
        }
    }

    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let mut failed = None;
        let (stopped, ended) = (&mut self.stopped, &mut self.ended);
        let fed = self.decoder.feed(chunk, end_of_stream, |json| {
            match forward_event(json, out) {
                Ok(kind) => {
                    *stopped |= kind == "message_stop";
                    *ended |= kind == "error";
                }
                Err(e) => failed = Some(e),
            }
            failed.is_none() && !*ended
        });
        if let Some(e) = failed.or(fed.err()) {
            self.fail(&e, out);
            return;
        }
        if end_of_stream && !self.ended {
            if !self.stopped {
                self.fail(&ended_early(), out);
            }
            self.ended = true;
        }
    }

    fn fail(&mut self, e: &ProviderError, out: &mut Vec<u8>) {
        if !self.ended {
            write_event(out, "error", &e.anthropic_body());
            self.ended = true;
        }
    }
}

/// Writes one event's JSON as SSE; returns its type.
fn forward_event(json: &[u8], out: &mut Vec<u8>) -> Result<String, ProviderError> {
    let v: Value = serde_json::from_slice(json)
        .map_err(|e| bad(format!("unreadable Anthropic stream event: {e}")))?;
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| bad("an Anthropic stream event without a type"))?
        .to_string();
    // Compact JSON has no raw line breaks; anything else is written again compactly
    // so that it stays one `data:` line.
    if json.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        write_event(out, &kind, v.to_string().as_bytes());
    } else {
        write_event(out, &kind, json);
    }
    Ok(kind)
}

/// Appends Anthropic's `event: error` carrying `e`.
pub(crate) fn write_error_event(out: &mut Vec<u8>, e: &ProviderError) {
    write_event(out, "error", &e.anthropic_body());
}

fn write_event(out: &mut Vec<u8>, name: &str, json: &[u8]) {
    out.reserve(name.len() + json.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
}

// ---------------------------------------------------------------------------------
// Hub items → Anthropic client.

/// What the open Anthropic block of a [`ClientStream`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    /// A tool call, by hub index.
    Tool(u32),
}

/// Hub items as the Anthropic SSE a client expects.
///
/// The first chunk opens the message (`message_start`, usage zero: OpenAI-style
/// streams count input at the end); each run of text, reasoning or one tool call's
/// arguments is one content block; `Done` writes `message_delta` with the stop
/// reason and the final usage (cumulative, input and cache counts included, as
/// Anthropic's API now reports them there) and `message_stop`. An `Error` item
/// becomes `event: error`. Nothing is written after either.
#[derive(Debug)]
pub struct ClientStream {
    model: String,
    id: Option<String>,
    open: Option<(u32, Open)>,
    next_index: u32,
    stop: Option<(&'static str, Option<String>)>,
    usage: Option<Usage>,
    ended: bool,
}

impl ClientStream {
    /// `model` is the name the client asked for.
    pub fn new(model: &str) -> Self {
        ClientStream {
            model: model.to_string(),
            id: None,
            open: None,
            next_index: 0,
            stop: None,
            usage: None,
            ended: false,
        }
    }

    pub fn encode(&mut self, item: &StreamItem, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match item {
            StreamItem::Chunk(c) => self.chunk(c, out),
            StreamItem::Error(e) => {
                write_event(out, "error", &e.anthropic_body());
                self.ended = true;
            }
            StreamItem::Done => {
                self.start("", out);
                self.close(out);
                let (reason, seq) = self.stop.take().unwrap_or(("end_turn", None));
                let usage = match &self.usage {
                    Some(u) => anthropic_usage(u),
                    None => an::Usage {
                        output_tokens: Some(0),
                        ..Default::default()
                    },
                };
                self.event(
                    &an::StreamEvent::MessageDelta {
                        delta: an::MessageDelta {
                            stop_reason: Some(reason.to_string()),
                            stop_sequence: seq,
                            rest: Rest::new(),
                        },
                        usage: Some(usage),
                    },
                    out,
                );
                self.event(&an::StreamEvent::MessageStop, out);
                self.ended = true;
            }
        }
    }

    /// The hub stream stopped without `Done` or `Error`: writes an error event
    /// unless the stream already ended.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.ended {
            write_event(out, "error", &ended_early().anthropic_body());
            self.ended = true;
        }
    }

    fn event(&self, ev: &an::StreamEvent, out: &mut Vec<u8>) {
        if let Ok(json) = serde_json::to_vec(ev) {
            write_event(out, ev.name(), &json);
        }
    }

    fn start(&mut self, hub_id: &str, out: &mut Vec<u8>) {
        if self.id.is_some() {
            return;
        }
        let id = message_id(if hub_id.is_empty() { "gateway" } else { hub_id });
        let message = an::MessagesResponse {
            id: id.clone(),
            kind: "message".into(),
            role: "assistant".into(),
            content: Vec::new(),
            model: self.model.clone(),
            stop_reason: None,
            stop_sequence: None,
            usage: an::Usage {
                input_tokens: Some(0),
                output_tokens: Some(0),
                ..Default::default()
            },
            rest: Rest::new(),
        };
        self.id = Some(id);
        self.event(&an::StreamEvent::MessageStart { message }, out);
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            self.event(&an::StreamEvent::ContentBlockStop { index }, out);
        }
    }

    /// Opens a new block (closing the open one).
    fn open(&mut self, kind: Open, block: an::ContentBlock, out: &mut Vec<u8>) -> u32 {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.event(
            &an::StreamEvent::ContentBlockStart {
                index,
                content_block: block,
            },
            out,
        );
        self.open = Some((index, kind));
        index
    }

    /// The open block if it is of `kind`, else a new one.
    fn ensure(&mut self, kind: Open, out: &mut Vec<u8>) -> u32 {
        if let Some((index, open)) = self.open {
            if open == kind {
                return index;
            }
        }
        let block = match kind {
            Open::Thinking => an::ContentBlock {
                kind: "thinking".into(),
                thinking: Some(String::new()),
                signature: Some(String::new()),
                ..Default::default()
            },
            _ => an::ContentBlock::text(""),
        };
        self.open(kind, block, out)
    }

    fn delta(&self, index: u32, delta: an::BlockDelta, out: &mut Vec<u8>) {
        self.event(&an::StreamEvent::ContentBlockDelta { index, delta }, out);
    }

    fn chunk(&mut self, c: &ChatCompletionChunk, out: &mut Vec<u8>) {
        self.start(&c.id, out);
        if let Some(u) = &c.usage {
            self.usage = Some(u.clone());
        }
        let Some(choice) = c.choices.iter().find(|ch| ch.index == 0) else {
            return;
        };
        let d = &choice.delta;
        if let Some(r) = d.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            let index = self.ensure(Open::Thinking, out);
            let delta = an::BlockDelta {
                kind: "thinking_delta".into(),
                thinking: Some(r.to_string()),
                ..Default::default()
            };
            self.delta(index, delta, out);
        }
        for b in thinking_blocks_of(&d.rest) {
            if b.kind == "redacted_thinking" {
                self.open(Open::Text, b, out);
                self.close(out);
                continue;
            }
            // Streamed thinking text travels in `reasoning_content`; the blocks
            // carry signatures.
            if let Some(s) = b.signature.filter(|s| !s.is_empty()) {
                let index = self.ensure(Open::Thinking, out);
                let delta = an::BlockDelta {
                    kind: "signature_delta".into(),
                    signature: Some(s),
                    ..Default::default()
                };
                self.delta(index, delta, out);
            }
        }
        if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
            let index = self.ensure(Open::Text, out);
            let delta = an::BlockDelta {
                kind: "text_delta".into(),
                text: Some(t.to_string()),
                ..Default::default()
            };
            self.delta(index, delta, out);
        }
        for tc in d.tool_calls.iter().flatten() {
            let index = match self.open {
                Some((index, Open::Tool(i))) if i == tc.index => index,
                _ => {
                    let id = tc.id.clone().unwrap_or_else(|| {
                        format!(
                            "toolu_{}_{}",
                            self.id.as_deref().unwrap_or_default(),
                            tc.index
                        )
                    });
                    let block = an::ContentBlock {
                        kind: "tool_use".into(),
                        id: Some(id),
                        name: Some(tc.function.name.clone().unwrap_or_default()),
                        input: Some(json!({})),
                        ..Default::default()
                    };
                    self.open(Open::Tool(tc.index), block, out)
                }
            };
            if let Some(args) = tc.function.arguments.as_deref().filter(|a| !a.is_empty()) {
                let delta = an::BlockDelta {
                    kind: "input_json_delta".into(),
                    partial_json: Some(args.to_string()),
                    ..Default::default()
                };
                self.delta(index, delta, out);
            }
        }
        if let Some(f) = &choice.finish_reason {
            self.close(out);
            self.stop = Some(client_stop(f, &choice.rest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::eventstream::{encode_event, encode_exception};
    use crate::schema::openai::PromptTokensDetails;
    use crate::translate::anthropic::tests::{bedrock_events, bedrock_frames, meta, run, STREAM};

    // ----- streams -----

    fn sse(include_usage: bool) -> ChatStream {
        ChatStream::new(Framing::Sse, meta(), include_usage, 1 << 16)
    }

    fn es(include_usage: bool) -> ChatStream {
        ChatStream::new(Framing::EventStream, meta(), include_usage, 1 << 16)
    }

    #[derive(Debug, Default, PartialEq)]
    struct Summary {
        role_first: bool,
        content: String,
        reasoning: String,
        signatures: Vec<String>,
        calls: Vec<(String, String, String)>,
        finish: Option<String>,
        stop_sequence: Option<String>,
        usage: Option<Usage>,
        end: Option<Result<(), ProviderError>>,
    }

    /// Reassembles hub items the way an OpenAI client does, checking the order.
    fn summarize(items: &[StreamItem]) -> Summary {
        let mut s = Summary::default();
        for (n, item) in items.iter().enumerate() {
            assert!(s.end.is_none(), "item after the end: {item:?}");
            let c = match item {
                StreamItem::Chunk(c) => c,
                StreamItem::Done => {
                    s.end = Some(Ok(()));
                    continue;
                }
                StreamItem::Error(e) => {
                    s.end = Some(Err(e.clone()));
                    continue;
                }
            };
            assert_eq!(
                (c.id.as_str(), c.model.as_str()),
                ("chatcmpl-abc", "claude-test")
            );
            if let Some(u) = &c.usage {
                assert!(c.choices.is_empty());
                s.usage = Some(u.clone());
                continue;
            }
            assert!(s.finish.is_none(), "content after finish");
            let ch = &c.choices[0];
            if n == 0 {
                s.role_first = ch.delta.role == Some(Role::Assistant);
            } else {
                assert_eq!(ch.delta.role, None);
            }
            s.content
                .push_str(ch.delta.content.as_deref().unwrap_or_default());
            s.reasoning
                .push_str(ch.delta.reasoning_content.as_deref().unwrap_or_default());
            for b in thinking_blocks_of(&ch.delta.rest) {
                s.signatures.extend(b.signature.filter(|x| !x.is_empty()));
            }
            for tc in ch.delta.tool_calls.iter().flatten() {
                let i = tc.index as usize;
                if i == s.calls.len() {
                    assert_eq!(tc.kind.as_deref(), Some("function"));
                    s.calls.push(Default::default());
                }
                let call = &mut s.calls[i];
                call.0.push_str(tc.id.as_deref().unwrap_or_default());
                call.1
                    .push_str(tc.function.name.as_deref().unwrap_or_default());
                call.2
                    .push_str(tc.function.arguments.as_deref().unwrap_or_default());
            }
            if let Some(f) = &ch.finish_reason {
                s.finish = Some(f.clone());
                s.stop_sequence = ch
                    .rest
                    .get("stop_reason")
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
        }
        s
    }

    fn golden_summary() -> Summary {
        Summary {
            role_first: true,
            content: "Checking both cities — ☀️.".into(),
            reasoning: "The user wants weather in two cities.".into(),
            signatures: vec!["EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds".into()],
            calls: vec![
                (
                    "toolu_paris".into(),
                    "get_weather".into(),
                    r#"{"city": "Paris"}"#.into(),
                ),
                (
                    "toolu_rome".into(),
                    "get_weather".into(),
                    r#"{"city": "Rome", "units": ["c"]}"#.into(),
                ),
            ],
            finish: Some("tool_calls".into()),
            stop_sequence: None,
            usage: Some(Usage {
                prompt_tokens: 1230,
                completion_tokens: 89,
                total_tokens: 1319,
                prompt_tokens_details: Some(PromptTokensDetails {
                    cached_tokens: Some(1000),
                    cache_creation_tokens: Some(200),
                    rest: Rest::new(),
                }),
                completion_tokens_details: None,
                rest: Rest::new(),
            }),
            end: Some(Ok(())),
        }
    }

    #[test]
    fn stream_sse_golden() {
        let items = run(sse(true), STREAM, &[]);
        assert_eq!(summarize(&items), golden_summary());
        // role chunk, 2 reasoning, signature, 2 text, tool start, 2 args (the empty
        // one is skipped), tool start, 2 args, finish, usage, done.
        assert_eq!(items.len(), 15, "{items:#?}");
        let without_usage = run(sse(false), STREAM, &[]);
        assert_eq!(without_usage.len(), 14);
        let mut s = summarize(&without_usage);
        assert_eq!(s.usage.take(), None);
        assert_eq!(
            s,
            Summary {
                usage: None,
                ..golden_summary()
            }
        );
    }

    #[test]
    fn stream_sse_any_split() {
        let whole = run(sse(true), STREAM, &[]);
        for i in 0..=STREAM.len() {
            assert_eq!(run(sse(true), STREAM, &[i]), whole, "split at {i}");
        }
        let bytes: Vec<usize> = (1..STREAM.len()).collect();
        assert_eq!(run(sse(true), STREAM, &bytes), whole);
        // CRLF line ends are the same stream.
        let crlf = String::from_utf8(STREAM.to_vec())
            .unwrap()
            .replace('\n', "\r\n");
        assert_eq!(run(sse(true), crlf.as_bytes(), &[]), whole);
    }

    #[test]
    fn stream_bedrock_any_split() {
        let frames = bedrock_frames(STREAM);
        let whole = run(es(true), &frames, &[]);
        assert_eq!(whole, run(sse(true), STREAM, &[]));
        for i in 0..=frames.len() {
            assert_eq!(run(es(true), &frames, &[i]), whole, "split at {i}");
        }
        let bytes: Vec<usize> = (1..frames.len()).collect();
        assert_eq!(run(es(true), &frames, &bytes), whole);
    }

    #[test]
    fn stream_cut_short_is_an_error() {
        let end = STREAM.len() - "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".len();
        for cut in [0, 10, end, STREAM.len() - 3] {
            let items = run(sse(true), &STREAM[..cut], &[]);
            let s = summarize(&items);
            let Some(Err(e)) = s.end else {
                panic!("cut at {cut}: {items:?}")
            };
            assert_eq!(e.status, 502);
            assert!(e.message.contains("ended early"), "{e:?}");
        }
        // The last event may lack its blank line: it still counts.
        let items = run(sse(true), STREAM.strip_suffix(b"\n\n").unwrap(), &[]);
        assert_eq!(summarize(&items).end, Some(Ok(())));

        let frames = bedrock_frames(STREAM);
        let items = run(es(true), &frames[..frames.len() - 5], &[]);
        let Some(Err(e)) = summarize(&items).end else {
            panic!()
        };
        assert!(e.message.contains("ended inside a message"), "{e:?}");
    }

    #[test]
    fn stream_error_event() {
        let data = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":1}}}\n\n\
event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let items = run(sse(true), data, &[]);
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1],
            StreamItem::Error(ProviderError {
                status: 529,
                kind: ErrorKind::Overloaded,
                code: Some("overloaded_error".into()),
                message: "Overloaded".into()
            })
        );
    }

    #[test]
    fn stream_bedrock_exception_and_corrupt_frame() {
        let mut frames = bedrock_frames(STREAM);
        let first = encode_event("chunk", b"{}").unwrap().len();
        let _ = first;
        // An exception after the first event.
        let mut d = eventstream::Decoder::default();
        let msgs = d.push(&frames).unwrap();
        let mut data = eventstream::encode(&msgs[0].headers, &msgs[0].payload).unwrap();
        data.extend(
            encode_exception(
                "throttlingException",
                br#"{"message":"Too many tokens, please wait before trying again."}"#,
            )
            .unwrap(),
        );
        data.extend(eventstream::encode(&msgs[1].headers, &msgs[1].payload).unwrap());
        let items = run(es(true), &data, &[]);
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1],
            StreamItem::Error(ProviderError {
                status: 429,
                kind: ErrorKind::RateLimit,
                code: Some("throttlingException".into()),
                message: "Too many tokens, please wait before trying again.".into()
            })
        );
        let msg = eventstream::Message {
            headers: vec![
                eventstream::Header::string(":message-type", "error"),
                eventstream::Header::string(":error-code", "InternalFailure"),
                eventstream::Header::string(":error-message", "oops"),
            ],
            payload: Vec::new(),
        };
        let e = bedrock_event(&msg).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_deref()),
            (502, Some("InternalFailure"))
        );

        // A flipped byte in the second frame: the first event, then one error.
        let len0 = eventstream::encode(&msgs[0].headers, &msgs[0].payload)
            .unwrap()
            .len();
        frames[len0 + 30] ^= 0x55;
        let items = run(es(true), &frames, &[]);
        assert_eq!(items.len(), 2, "{items:?}");
        let StreamItem::Error(e) = &items[1] else {
            panic!()
        };
        assert!(e.message.contains("CRC"), "{e:?}");

        // Chunks that are not what they should be.
        for payload in [
            &b"nope"[..],
            br#"{"bytes":"***"}"#,
            br#"{"bytes":"bm90IGpzb24="}"#,
        ] {
            let data = encode_event("chunk", payload).unwrap();
            let items = run(es(true), &data, &[]);
            assert!(
                matches!(items.as_slice(), [StreamItem::Error(e)] if e.status == 502),
                "{items:?}"
            );
        }
        // Other event types are skipped.
        let data = encode_event("somethingNew", b"{}").unwrap();
        let items = run(es(true), &data, &[]);
        assert!(
            matches!(items.as_slice(), [StreamItem::Error(e)] if e.message.contains("ended early"))
        );
    }

    #[test]
    fn stream_event_too_large() {
        let items = run(ChatStream::new(Framing::Sse, meta(), true, 64), STREAM, &[]);
        assert!(
            matches!(items.as_slice(), [StreamItem::Error(e)] if e.message.contains("larger than 64")),
            "{items:?}"
        );
        let frames = bedrock_frames(STREAM);
        let items = run(
            ChatStream::new(Framing::EventStream, meta(), true, 64),
            &frames,
            &[],
        );
        assert!(
            matches!(items.as_slice(), [StreamItem::Error(e)] if e.message.contains("exceeds the limit")),
            "{items:?}"
        );
    }

    #[test]
    fn stream_json_answer_stop_sequence_and_cumulative_usage() {
        let events = [
            json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "content": [],
                   "usage": {"input_tokens": 10, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": RESPONSE_TOOL, "input": {}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "xyz"}}),
            json!({"type": "some_future_event", "x": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
                   "usage": {"output_tokens": 7, "input_tokens": 12, "cache_read_input_tokens": 3, "cache_creation_input_tokens": null}}),
            json!({"type": "message_stop"}),
        ];
        let mut data = Vec::new();
        for e in &events {
            write_event(
                &mut data,
                e["type"].as_str().unwrap(),
                e.to_string().as_bytes(),
            );
        }
        let items = run(sse(true), &data, &[]);
        let s = summarize(&items);
        assert_eq!(s.content, r#"{"a":1}"#);
        assert!(s.calls.is_empty());
        assert_eq!(s.finish.as_deref(), Some("stop"));
        assert_eq!(s.stop_sequence.as_deref(), Some("END"));
        let u = s.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (15, 7, 22)
        );
        let redacted = items.iter().any(|i| match i {
            StreamItem::Chunk(c) => c.choices.first().is_some_and(|ch| {
                ch.delta.rest.get(THINKING_BLOCKS)
                    == Some(&json!([{"type": "redacted_thinking", "data": "xyz"}]))
            }),
            _ => false,
        });
        assert!(redacted);
    }

    // ----- Anthropic client → Anthropic-family provider -----

    fn messages_stream(data: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut s = MessagesStream::new(1 << 16);
        let mut out = Vec::new();
        let mut from = 0;
        for &c in cuts {
            s.feed(&data[from..c], false, &mut out);
            from = c;
        }
        s.feed(&data[from..], true, &mut out);
        let n = out.len();
        s.feed(&data[..data.len().min(100)], true, &mut out);
        assert_eq!(out.len(), n);
        out
    }

    #[test]
    fn messages_stream_any_split() {
        let frames = bedrock_frames(STREAM);
        let mut want = Vec::new();
        for json in bedrock_events(STREAM) {
            let v: Value = serde_json::from_slice(&json).unwrap();
            write_event(&mut want, v["type"].as_str().unwrap(), &json);
        }
        let whole = messages_stream(&frames, &[]);
        assert_eq!(
            String::from_utf8(whole.clone()).unwrap(),
            String::from_utf8(want).unwrap()
        );
        for i in 0..=frames.len() {
            assert_eq!(messages_stream(&frames, &[i]), whole, "split at {i}");
        }
        let bytes: Vec<usize> = (1..frames.len()).collect();
        assert_eq!(messages_stream(&frames, &bytes), whole);
        // What an Anthropic client reads is the stream Anthropic itself would send.
        assert_eq!(run(sse(true), &whole, &[]), run(sse(true), STREAM, &[]));
    }

    #[test]
    fn messages_stream_failures() {
        let frames = bedrock_frames(STREAM);
        let mut d = eventstream::Decoder::default();
        let msgs = d.push(&frames).unwrap();
        let mut data = eventstream::encode(&msgs[0].headers, &msgs[0].payload).unwrap();
        data.extend(
            encode_exception(
                "modelStreamErrorException",
                br#"{"message":"model failed","originalStatusCode":500}"#,
            )
            .unwrap(),
        );
        data.extend(eventstream::encode(&msgs[1].headers, &msgs[1].payload).unwrap());
        let out = String::from_utf8(messages_stream(&data, &[])).unwrap();
        assert!(out.starts_with("event: message_start\ndata: "), "{out}");
        assert!(
            out.ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"model failed\"}}\n\n"),
            "{out}"
        );
        assert_eq!(out.matches("event: ").count(), 2);

        let out = String::from_utf8(messages_stream(&frames[..frames.len() / 2], &[])).unwrap();
        assert!(
            out.ends_with("ended early, before message_stop\"}}\n\n")
                || out.contains("ended inside a message"),
            "{out}"
        );
        assert_eq!(out.matches("event: error").count(), 1);

        // An upstream error event passes through and ends the stream.
        let err = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let payload = json!({"bytes": base64::engine::general_purpose::STANDARD.encode(err)});
        let mut data = eventstream::encode(&msgs[0].headers, &msgs[0].payload).unwrap();
        data.extend(encode_event("chunk", payload.to_string().as_bytes()).unwrap());
        data.extend(eventstream::encode(&msgs[1].headers, &msgs[1].payload).unwrap());
        let out = String::from_utf8(messages_stream(&data, &[])).unwrap();
        assert!(
            out.ends_with(&format!(
                "event: error\ndata: {}\n\n",
                String::from_utf8_lossy(err)
            )),
            "{out}"
        );

        // Pretty-printed JSON stays one data line; typeless events are errors.
        let pretty = b"{\n  \"type\": \"ping\"\n}";
        let payload = json!({"bytes": base64::engine::general_purpose::STANDARD.encode(pretty)});
        let data = encode_event("chunk", payload.to_string().as_bytes()).unwrap();
        let out = String::from_utf8(messages_stream(&data, &[])).unwrap();
        assert!(
            out.starts_with("event: ping\ndata: {\"type\":\"ping\"}\n\n"),
            "{out}"
        );
        let payload = json!({"bytes": base64::engine::general_purpose::STANDARD.encode(b"{\"type\":\"a b\"}")});
        let data = encode_event("chunk", payload.to_string().as_bytes()).unwrap();
        let out = String::from_utf8(messages_stream(&data, &[])).unwrap();
        assert!(out.starts_with("event: error\n"), "{out}");
    }

    // ----- hub items → Anthropic client -----

    fn encode_all(items: &[StreamItem]) -> Vec<u8> {
        let mut s = ClientStream::new("claude-alias");
        let mut out = Vec::new();
        for i in items {
            s.encode(i, &mut out);
        }
        s.finish(&mut out);
        out
    }

    fn event_names(sse: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(sse)
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn client_stream_round_trip() {
        // Provider stream → hub items → Anthropic SSE → hub items again: the same.
        let items = run(sse(true), STREAM, &[]);
        let out = encode_all(&items);
        assert_eq!(run(sse(true), &out, &[]), items);
        assert_eq!(
            event_names(&out),
            [
                "message_start",
                "content_block_start", // thinking
                "content_block_delta",
                "content_block_delta",
                "content_block_delta", // signature
                "content_block_stop",
                "content_block_start", // text
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start", // Paris
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start", // Rome
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_abc\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-alias\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\n\n"
        ), "{text}");
        assert!(text.contains(
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":30,\"output_tokens\":89,\"cache_creation_input_tokens\":200,\"cache_read_input_tokens\":1000}}\n\n"
        ), "{text}");
        assert!(text.contains(
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_paris\",\"name\":\"get_weather\",\"input\":{}}}\n\n"
        ), "{text}");
        assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    }

    fn chunk(delta: Value, finish: Option<&str>) -> StreamItem {
        StreamItem::Chunk(Box::new(
            serde_json::from_value(json!({
                "id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
            }))
            .unwrap(),
        ))
    }

    #[test]
    fn client_stream_events() {
        let items = [
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "Hel"}), None),
            chunk(
                json!({"content": "lo", "tool_calls": [{"index": 0, "type": "function", "function": {"name": "f", "arguments": ""}}]}),
                None,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
                None,
            ),
            chunk(
                json!({"thinking_blocks": [{"type": "redacted_thinking", "data": "zz"}]}),
                None,
            ),
            chunk(json!({}), Some("stop")),
            StreamItem::Done,
        ];
        let out = encode_all(&items);
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(
            event_names(&out),
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        // A call without an id gets one; usage unknown is zero output.
        assert!(text.contains("\"id\":\"toolu_msg_9_0\""), "{text}");
        assert!(
            text.contains("{\"type\":\"redacted_thinking\",\"data\":\"zz\"}"),
            "{text}"
        );
        assert!(text.contains("\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":0}"), "{text}");

        // An error item: one error event, nothing after.
        let items = [
            chunk(json!({"content": "x"}), None),
            StreamItem::Error(ProviderError::new(
                429,
                Some("ThrottlingException".into()),
                "slow",
            )),
            StreamItem::Done,
        ];
        let text = String::from_utf8(encode_all(&items)).unwrap();
        assert!(text.ends_with(
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow\"}}\n\n"
        ), "{text}");
        assert_eq!(text.matches("event: error").count(), 1);
        assert!(!text.contains("message_stop"));

        // Cut without Done: an error event from finish.
        let text = String::from_utf8(encode_all(&items[..1])).unwrap();
        assert!(text.ends_with("before message_stop\"}}\n\n"), "{text}");
        assert!(text.contains("\"type\":\"api_error\""), "{text}");

        // Done alone still makes a whole message.
        assert_eq!(
            event_names(&encode_all(&[StreamItem::Done])),
            ["message_start", "message_delta", "message_stop"]
        );

        // A stop sequence and usage sent on the finish chunk.
        let mut fin = chunk(json!({}), Some("stop"));
        if let StreamItem::Chunk(c) = &mut fin {
            c.choices[0].rest.insert("stop_reason".into(), json!("END"));
            c.usage = Some(Usage {
                prompt_tokens: 9,
                completion_tokens: 2,
                total_tokens: 11,
                ..Default::default()
            });
        }
        let text = String::from_utf8(encode_all(&[fin, StreamItem::Done])).unwrap();
        assert!(text.contains(
            "\"delta\":{\"stop_reason\":\"stop_sequence\",\"stop_sequence\":\"END\"},\"usage\":{\"input_tokens\":9,\"output_tokens\":2,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0}"
        ), "{text}");
    }
}
