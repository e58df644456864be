//! The `ConverseStream` event stream as hub items.

use serde::Deserialize;
use serde_json::Value;

use super::response::{
    exception_name, exception_status, finish_reason, redacted_block, thinking_block, tool_id,
};
use super::Usage;
use crate::codec::eventstream::{self, Decoder};
use crate::schema::openai::{ChatCompletionChunk, ChunkChoice, Delta, Rest, Role, Usage as OUsage};
use crate::translate::openai::{clip, MAX_MESSAGE_CHARS};
use crate::translate::{
    tool_call_delta, ChunkSource, ProviderError, ResponseMeta, StreamItem, TranslateError,
};

// ---------------------------------------------------------------------------------
// Wire types, stream events (read).

/// Stream event payloads (`:event-type` names the member).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStart {
    #[serde(default)]
    content_block_index: u64,
    #[serde(default)]
    start: Option<BlockStartUnion>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStartUnion {
    tool_use: Option<StartToolUse>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartToolUse {
    tool_use_id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDelta {
    #[serde(default)]
    content_block_index: u64,
    delta: DeltaUnion,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeltaUnion {
    text: Option<String>,
    tool_use: Option<DeltaToolUse>,
    reasoning_content: Option<DeltaReasoning>,
}

#[derive(Debug, Deserialize)]
struct DeltaToolUse {
    #[serde(default)]
    input: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeltaReasoning {
    text: Option<String>,
    signature: Option<String>,
    redacted_content: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageStop {
    stop_reason: String,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    usage: Option<Usage>,
}

// ---------------------------------------------------------------------------------
// Chat stream.

/// A `ConverseStream` body (`application/vnd.amazon.eventstream`) as hub items.
///
/// Bedrock ends a message with `messageStop` (the stop reason), then `metadata`
/// (usage): the finish chunk goes out at `messageStop`, the usage chunk (only when
/// asked for) and [`StreamItem::Done`] at `metadata`, or `Done` alone at the end of
/// the body if `metadata` never came. An exception, a corrupt or oversize frame, an
/// unreadable event or a body that stops before `messageStop` yield one
/// [`StreamItem::Error`]; nothing follows `Done` or `Error`.
#[derive(Debug)]
pub struct ChatStream {
    decoder: Decoder,
    scratch: Vec<eventstream::Message>,
    meta: ResponseMeta,
    include_usage: bool,
    role_sent: bool,
    /// Bedrock content block index → tool call index.
    tools: Vec<(u64, u32)>,
    /// `messageStop` arrived (its finish chunk is out).
    stopped: bool,
    /// `metadata` that arrived before `messageStop` (its usage), held for after it.
    early_metadata: Option<Option<Usage>>,
    /// `Done` or `Error` is out.
    ended: bool,
}

impl ChatStream {
    /// `max_message_bytes` bounds one event-stream message (the memory held).
    pub fn new(meta: ResponseMeta, include_usage: bool, max_message_bytes: usize) -> Self {
        Self {
            decoder: Decoder::new(max_message_bytes),
            scratch: Vec::new(),
            meta,
            include_usage,
            role_sent: false,
            tools: Vec::new(),
            stopped: false,
            early_metadata: None,
            ended: false,
        }
    }

    fn fail(&mut self, err: ProviderError, out: &mut Vec<StreamItem>) {
        out.push(StreamItem::Error(err));
        self.ended = true;
    }

    /// The usage chunk if asked for, then `Done`.
    fn complete(&mut self, usage: Option<Usage>, out: &mut Vec<StreamItem>) {
        if let Some(u) = usage.filter(|_| self.include_usage) {
            out.push(StreamItem::Chunk(Box::new(
                self.chunk(Vec::new(), Some(u.to_hub())),
            )));
        }
        out.push(StreamItem::Done);
        self.ended = true;
    }

    fn on_message(
        &mut self,
        msg: &eventstream::Message,
        out: &mut Vec<StreamItem>,
    ) -> Result<(), ProviderError> {
        match msg.header_str(":message-type").unwrap_or("event") {
            "event" => {}
            "exception" => {
                let kind = exception_name(msg.header_str(":exception-type").unwrap_or_default());
                let message = serde_json::from_slice::<Value>(&msg.payload)
                    .ok()
                    .and_then(|v| {
                        v.get("message")
                            .or_else(|| v.get("Message"))
                            .and_then(Value::as_str)
                            .map(|m| clip(m, MAX_MESSAGE_CHARS))
                    })
                    .unwrap_or_else(|| "Bedrock failed mid-stream".into());
                return Err(stream_error(kind, message));
            }
            "error" => {
                let kind = exception_name(msg.header_str(":error-code").unwrap_or_default());
                let message = msg
                    .header_str(":error-message")
                    .map(|m| clip(m, MAX_MESSAGE_CHARS))
                    .unwrap_or_else(|| "Bedrock failed mid-stream".into());
                return Err(stream_error(kind, message));
            }
            _ => return Ok(()),
        }
        let event = msg.header_str(":event-type").unwrap_or_default();
        match event {
            // The role goes out at once, as OpenAI's first chunk does.
            "messageStart" if !self.role_sent => self.emit(
                Delta {
                    content: Some(String::new()),
                    ..Default::default()
                },
                out,
            ),
            "contentBlockStart" => {
                let ev: BlockStart = parse_event(event, &msg.payload)?;
                if let Some(tu) = ev.start.and_then(|s| s.tool_use) {
                    let index = self.tool_index(ev.content_block_index);
                    let id = tool_id(tu.tool_use_id, &self.meta.id, index as usize);
                    self.emit(
                        tool_call_delta(index, Some(id), Some(tu.name), String::new()),
                        out,
                    );
                }
            }
            "contentBlockDelta" => {
                let ev: BlockDelta = parse_event(event, &msg.payload)?;
                let d = ev.delta;
                // Empty pieces carry nothing a client could use: skipped.
                if let Some(text) = d.text.filter(|t| !t.is_empty()) {
                    self.emit(
                        Delta {
                            content: Some(text),
                            ..Default::default()
                        },
                        out,
                    );
                } else if let Some(tu) = d.tool_use.filter(|t| !t.input.is_empty()) {
                    let index = self.tool_index(ev.content_block_index);
                    self.emit(tool_call_delta(index, None, None, tu.input), out);
                } else if let Some(r) = d.reasoning_content {
                    if let Some(text) = r.text.filter(|t| !t.is_empty()) {
                        self.emit(
                            Delta {
                                reasoning_content: Some(text),
                                ..Default::default()
                            },
                            out,
                        );
                    }
                    let block = match (r.signature, r.redacted_content) {
                        (Some(sig), _) => Some(thinking_block("", &sig)),
                        (None, Some(data)) => Some(redacted_block(&data)),
                        (None, None) => None,
                    };
                    if let Some(block) = block {
                        let mut delta = Delta::default();
                        delta
                            .rest
                            .insert("thinking_blocks".into(), Value::Array(vec![block]));
                        self.emit(delta, out);
                    }
                }
            }
            "messageStop" if !self.stopped => {
                let ev: MessageStop = parse_event(event, &msg.payload)?;
                let finish = finish_reason(&ev.stop_reason);
                self.push_chunk(Delta::default(), Some(finish), out);
                self.stopped = true;
                if let Some(usage) = self.early_metadata.take() {
                    self.complete(usage, out);
                }
            }
            "metadata" => {
                let ev: Metadata = parse_event(event, &msg.payload)?;
                if self.stopped {
                    self.complete(ev.usage, out);
                } else {
                    self.early_metadata = Some(ev.usage);
                }
            }
            // contentBlockStop carries nothing OpenAI streams show; unknown events
            // are a newer API's and skipped.
            _ => {}
        }
        Ok(())
    }

    /// The tool call index of the tool use in Bedrock content block `block`.
    fn tool_index(&mut self, block: u64) -> u32 {
        if let Some((_, i)) = self.tools.iter().find(|(b, _)| *b == block) {
            return *i;
        }
        let i = u32::try_from(self.tools.len()).unwrap_or(u32::MAX);
        self.tools.push((block, i));
        i
    }

    /// A content chunk; the first one also carries the role.
    fn emit(&mut self, delta: Delta, out: &mut Vec<StreamItem>) {
        self.push_chunk(delta, None, out);
    }

    fn push_chunk(&mut self, mut delta: Delta, finish: Option<&str>, out: &mut Vec<StreamItem>) {
        if !self.role_sent {
            delta.role = Some(Role::Assistant);
            self.role_sent = true;
        }
        let choice = ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish.map(str::to_string),
            rest: Rest::new(),
        };
        out.push(StreamItem::Chunk(Box::new(self.chunk(vec![choice], None))));
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<OUsage>) -> ChatCompletionChunk {
        self.meta.chunk(choices, usage)
    }
}

impl ChunkSource for ChatStream {
    fn feed(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<StreamItem>) {
        if self.ended {
            return;
        }
        let mut msgs = std::mem::take(&mut self.scratch);
        msgs.clear();
        // Messages completed before a bad frame are still handed out: translate them
        // first, then report the frame.
        let decoded = self.decoder.push_into(chunk, &mut msgs);
        for msg in &msgs {
            if let Err(e) = self.on_message(msg, out) {
                self.fail(e, out);
            }
            if self.ended {
                break;
            }
        }
        msgs.clear();
        self.scratch = msgs;
        if self.ended {
            return;
        }
        let decoded = decoded.and_then(|()| {
            if end_of_stream {
                self.decoder.finish()
            } else {
                Ok(())
            }
        });
        if let Err(e) = decoded {
            self.fail(bad_response(e.to_string()), out);
        } else if end_of_stream {
            if self.stopped {
                let usage = self.early_metadata.take().flatten();
                self.complete(usage, out);
            } else {
                self.fail(
                    bad_response("the Bedrock stream ended early, before messageStop".into()),
                    out,
                );
            }
        }
    }
}

/// An exception event as the client's error.
fn stream_error(kind: String, message: String) -> ProviderError {
    let status = exception_status(&kind).unwrap_or(502);
    let code = (!kind.is_empty()).then_some(kind);
    ProviderError::new(status, code, message)
}

fn bad_response(why: String) -> ProviderError {
    ProviderError::from_translate(&TranslateError::BadResponse(why))
}

fn parse_event<T: serde::de::DeserializeOwned>(
    event: &str,
    payload: &[u8],
) -> Result<T, ProviderError> {
    serde_json::from_slice(payload).map_err(|e| bad_response(format!("Bedrock {event} event: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::eventstream::Header;
    use crate::translate::bedrock::tests::{fixture, golden, meta};
    use crate::translate::testing::Rng;
    use crate::translate::{encode_openai_sse, ErrorKind};
    use serde_json::json;

    // ----- streams -----

    /// Feeds `data` cut at `cuts` (sorted offsets), the last piece with end of stream.
    fn run_cuts(data: &[u8], cuts: &[usize], include_usage: bool, max: usize) -> Vec<StreamItem> {
        let mut s = ChatStream::new(meta(), include_usage, max);
        let mut out = Vec::new();
        let mut start = 0;
        for &c in cuts {
            s.feed(&data[start..c], false, &mut out);
            start = c;
        }
        s.feed(&data[start..], true, &mut out);
        // Nothing follows the end.
        let n = out.len();
        s.feed(b"more", true, &mut out);
        assert_eq!(out.len(), n);
        out
    }

    fn sse(items: &[StreamItem]) -> Vec<u8> {
        let mut out = Vec::new();
        for i in items {
            encode_openai_sse(i, &mut out);
        }
        out
    }

    /// The items for a whole stream; the same for every split point, two split points
    /// (sampled) and one byte at a time. Ends with exactly one Done or Error.
    fn check_splits(bin: &str, include_usage: bool) -> Vec<StreamItem> {
        let data = fixture(bin);
        let whole = run_cuts(&data, &[], include_usage, 1 << 16);
        for i in 0..=data.len() {
            assert_eq!(
                run_cuts(&data, &[i], include_usage, 1 << 16),
                whole,
                "{bin} split at {i}"
            );
        }
        for i in (0..=data.len()).step_by(37) {
            for j in (i..=data.len()).step_by(53) {
                assert_eq!(
                    run_cuts(&data, &[i, j], include_usage, 1 << 16),
                    whole,
                    "{bin} split at {i},{j}"
                );
            }
        }
        let bytes: Vec<usize> = (1..data.len()).collect();
        assert_eq!(run_cuts(&data, &bytes, include_usage, 1 << 16), whole);
        let ends = whole
            .iter()
            .filter(|i| matches!(i, StreamItem::Done | StreamItem::Error(_)))
            .count();
        assert_eq!(ends, 1, "{bin}");
        assert!(matches!(
            whole.last(),
            Some(StreamItem::Done | StreamItem::Error(_))
        ));
        whole
    }

    fn chunk(item: &StreamItem) -> &ChatCompletionChunk {
        match item {
            StreamItem::Chunk(c) => c,
            other => panic!("not a chunk: {other:?}"),
        }
    }

    #[test]
    fn golden_stream_text() {
        let items = check_splits("stream_text.bin", true);
        golden("stream_text.sse", &sse(&items));
        // Role first; finish chunk; usage-only chunk; Done.
        let n = items.len();
        assert_eq!(
            chunk(&items[0]).choices[0].delta.role,
            Some(Role::Assistant)
        );
        assert_eq!(
            chunk(&items[n - 3]).choices[0].finish_reason.as_deref(),
            Some("length")
        );
        let usage = chunk(&items[n - 2]);
        assert!(usage.choices.is_empty());
        let u = usage.usage.as_ref().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (12, 4, 16)
        );
        assert_eq!(items[n - 1], StreamItem::Done);

        // Without include_usage the usage chunk is left out, nothing else changes.
        let without = check_splits("stream_text.bin", false);
        let mut expected = items.clone();
        expected.remove(n - 2);
        assert_eq!(without, expected);
    }

    #[test]
    fn golden_stream_tools() {
        let items = check_splits("stream_tools.bin", true);
        golden("stream_tools.sse", &sse(&items));

        // Reassemble the answer the way an OpenAI client does.
        let mut calls: Vec<(String, String, String)> = Vec::new();
        let mut content = String::new();
        let mut reasoning = String::new();
        let mut blocks = Vec::new();
        let mut finish = None;
        for item in &items {
            let StreamItem::Chunk(c) = item else { continue };
            let Some(choice) = c.choices.first() else {
                let d = c
                    .usage
                    .as_ref()
                    .unwrap()
                    .prompt_tokens_details
                    .as_ref()
                    .unwrap();
                assert_eq!(
                    (d.cached_tokens, d.cache_creation_tokens),
                    (Some(100), None)
                );
                continue;
            };
            let d = &choice.delta;
            content.push_str(d.content.as_deref().unwrap_or_default());
            reasoning.push_str(d.reasoning_content.as_deref().unwrap_or_default());
            if let Some(b) = d.rest.get("thinking_blocks") {
                blocks.push(b.clone());
            }
            if let Some(f) = &choice.finish_reason {
                finish = Some(f.clone());
            }
            for tc in d.tool_calls.iter().flatten() {
                let i = tc.index as usize;
                if i == calls.len() {
                    calls.push(Default::default());
                }
                let c = &mut calls[i];
                c.0.push_str(tc.id.as_deref().unwrap_or_default());
                c.1.push_str(tc.function.name.as_deref().unwrap_or_default());
                c.2.push_str(tc.function.arguments.as_deref().unwrap_or_default());
            }
        }
        assert_eq!(content, "Checking both cities.");
        assert_eq!(reasoning, "The user wants weather.");
        assert_eq!(
            blocks,
            [json!([{"type": "thinking", "thinking": "", "signature": "c2lnbmF0dXJl"}])]
        );
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        assert_eq!(
            calls,
            [
                (
                    "tooluse_paris".into(),
                    "get_weather".into(),
                    r#"{"city": "Paris"}"#.into()
                ),
                (
                    "tooluse_rome".into(),
                    "get_weather".into(),
                    r#"{"city": "Rome"}"#.into()
                ),
            ]
        );
    }

    #[test]
    fn golden_stream_reasoning_and_cache() {
        let items = check_splits("stream_reasoning.bin", true);
        golden("stream_reasoning.sse", &sse(&items));
        let last_usage = items
            .iter()
            .filter_map(|i| match i {
                StreamItem::Chunk(c) => c.usage.clone(),
                _ => None,
            })
            .next_back()
            .unwrap();
        assert_eq!(
            (
                last_usage.prompt_tokens,
                last_usage.completion_tokens,
                last_usage.total_tokens
            ),
            (2010, 30, 2040)
        );
        let d = last_usage.prompt_tokens_details.unwrap();
        assert_eq!(
            (d.cached_tokens, d.cache_creation_tokens),
            (Some(1500), Some(500))
        );
    }

    #[test]
    fn golden_stream_exception() {
        let items = check_splits("stream_exception.bin", true);
        golden("stream_exception.sse", &sse(&items));
        assert_eq!(
            items.last(),
            Some(&StreamItem::Error(ProviderError {
                status: 429,
                kind: ErrorKind::RateLimit,
                code: Some("ThrottlingException".into()),
                message: "Too many tokens, please wait before trying again.".into()
            }))
        );
        // The text before the exception was delivered.
        assert_eq!(
            chunk(&items[1]).choices[0].delta.content.as_deref(),
            Some("Partial")
        );
    }

    fn event(kind: &str, payload: Value) -> Vec<u8> {
        eventstream::encode_event(kind, payload.to_string().as_bytes()).unwrap()
    }

    fn exception(kind: &str, payload: &[u8]) -> Vec<u8> {
        eventstream::encode(
            &[
                Header::string(":exception-type", kind),
                Header::string(":content-type", "application/json"),
                Header::string(":message-type", "exception"),
            ],
            payload,
        )
        .unwrap()
    }

    fn feed_all(data: &[u8], eos: bool, include_usage: bool) -> Vec<StreamItem> {
        let mut s = ChatStream::new(meta(), include_usage, 1 << 16);
        let mut out = Vec::new();
        s.feed(data, eos, &mut out);
        out
    }

    fn start_and_text() -> Vec<u8> {
        let mut d = event("messageStart", json!({"role": "assistant"}));
        d.extend(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        ));
        d
    }

    #[test]
    fn stream_every_exception_type() {
        for (kind, status) in [
            ("internalServerException", 500),
            ("modelStreamErrorException", 502),
            ("validationException", 400),
            ("throttlingException", 429),
            ("serviceUnavailableException", 503),
            ("modelTimeoutException", 408),
            ("somethingNewException", 502),
        ] {
            let mut d = start_and_text();
            d.extend(exception(kind, br#"{"message":"boom"}"#));
            let items = feed_all(&d, false, true);
            assert_eq!(items.len(), 3, "{kind}");
            let StreamItem::Error(e) = &items[2] else {
                panic!("{kind}: {items:?}")
            };
            assert_eq!(e.status, status, "{kind}");
            assert_eq!(e.message, "boom");
            let code = e.code.as_deref().unwrap();
            assert!(code.eq_ignore_ascii_case(kind), "{code}");
            assert!(code.starts_with(char::is_uppercase), "{code}");
        }
        // An exception with an unreadable payload still ends the stream with an error.
        let mut d = start_and_text();
        d.extend(exception("throttlingException", b"\xff"));
        let items = feed_all(&d, false, true);
        assert!(matches!(&items[2], StreamItem::Error(e) if e.status == 429));
        // An `error` message (`:error-code`, `:error-message`).
        let mut d = start_and_text();
        d.extend(
            eventstream::encode(
                &[
                    Header::string(":message-type", "error"),
                    Header::string(":error-code", "InternalFailure"),
                    Header::string(":error-message", "oops"),
                ],
                b"",
            )
            .unwrap(),
        );
        let items = feed_all(&d, false, true);
        assert_eq!(
            items.last(),
            Some(&StreamItem::Error(ProviderError::new(
                502,
                Some("InternalFailure".into()),
                "oops"
            )))
        );
    }

    #[test]
    fn stream_done_at_metadata_or_at_the_end() {
        let mut d = start_and_text();
        d.extend(event("messageStop", json!({"stopReason": "end_turn"})));
        // Finish chunk at messageStop; no Done before metadata or the end.
        let items = feed_all(&d, false, true);
        assert_eq!(items.len(), 3);
        assert_eq!(
            chunk(&items[2]).choices[0].finish_reason.as_deref(),
            Some("stop")
        );
        // The end of the body without metadata: Done, no usage chunk.
        let items = feed_all(&d, true, true);
        assert_eq!(items.len(), 4);
        assert_eq!(items[3], StreamItem::Done);
        // Metadata ends the stream at once, before the body's end.
        d.extend(event(
            "metadata",
            json!({"usage": {"inputTokens": 3, "outputTokens": 1}}),
        ));
        let items = feed_all(&d, false, true);
        assert_eq!(items.len(), 5);
        assert!(chunk(&items[3]).usage.is_some());
        assert_eq!(items[4], StreamItem::Done);
        let items = feed_all(&d, false, false);
        assert_eq!(items.len(), 4);
        assert_eq!(items[3], StreamItem::Done);
        // Metadata before messageStop (not Bedrock's order) waits for it.
        let mut d = start_and_text();
        d.extend(event(
            "metadata",
            json!({"usage": {"inputTokens": 3, "outputTokens": 1}}),
        ));
        let items = feed_all(&d, true, true);
        assert!(matches!(items.last(), Some(StreamItem::Error(_))));
        d.extend(event("messageStop", json!({"stopReason": "end_turn"})));
        let items = feed_all(&d, false, true);
        assert_eq!(items.len(), 5);
        assert!(chunk(&items[3]).usage.is_some());
        assert_eq!(items[4], StreamItem::Done);
    }

    #[test]
    fn stream_corrupt_frames_are_errors() {
        let data = fixture("stream_text.bin");
        let first_len = {
            let msgs = Decoder::default().push(&data).unwrap();
            eventstream::encode(&msgs[0].headers, &msgs[0].payload)
                .unwrap()
                .len()
        };
        // Corrupt payload of the second message: the first is delivered, then the error.
        let mut bad = data.clone();
        bad[first_len + 20] ^= 0xff;
        let items = check_splits_of(&bad);
        assert_eq!(items.len(), 2, "{items:?}");
        let StreamItem::Error(e) = &items[1] else {
            panic!("{items:?}")
        };
        assert_eq!((e.status, e.kind), (502, ErrorKind::Server));
        assert!(e.message.contains("CRC"), "{}", e.message);
        // Corrupt prelude.
        let mut bad = data.clone();
        bad[first_len + 2] ^= 0x01;
        let items = check_splits_of(&bad);
        assert!(matches!(&items[1], StreamItem::Error(e) if e.message.contains("prelude")));
        // Flip every byte in turn: never a panic, always exactly one end.
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x5a;
            let items = run_cuts(&bad, &[i / 2], true, 1 << 16);
            let ends = items
                .iter()
                .filter(|x| matches!(x, StreamItem::Done | StreamItem::Error(_)))
                .count();
            assert_eq!(ends, 1, "flip at {i}");
        }
    }

    /// Items of `data` (no fixture file), the same at every split point.
    fn check_splits_of(data: &[u8]) -> Vec<StreamItem> {
        let whole = run_cuts(data, &[], true, 1 << 16);
        for i in 0..=data.len() {
            assert_eq!(run_cuts(data, &[i], true, 1 << 16), whole, "split at {i}");
        }
        whole
    }

    #[test]
    fn stream_cut_off_is_an_error() {
        let data = fixture("stream_text.bin");
        let msgs = Decoder::default().push(&data).unwrap();
        // Whole messages, but no messageStop.
        let mut partial = Vec::new();
        for m in &msgs[..4] {
            eventstream::encode_into(&m.headers, &m.payload, &mut partial).unwrap();
        }
        let items = feed_all(&partial, true, true);
        let StreamItem::Error(e) = items.last().unwrap() else {
            panic!("{items:?}")
        };
        assert!(e.message.contains("ended early"), "{}", e.message);
        // Cut inside a message: truncation.
        let items = feed_all(&data[..data.len() - 5], true, true);
        let StreamItem::Error(e) = items.last().unwrap() else {
            panic!("{items:?}")
        };
        assert!(e.message.contains("ended inside a message"), "{e:?}");
        // An empty body.
        let items = feed_all(b"", true, true);
        assert!(matches!(&items[..], [StreamItem::Error(_)]));
        // Every truncation: exactly one end, never Done before messageStop is in.
        let stop_at = {
            let mut n = 0;
            for m in &msgs[..6] {
                n += eventstream::encode(&m.headers, &m.payload).unwrap().len();
            }
            n
        };
        for cut in 0..data.len() {
            let items = feed_all(&data[..cut], true, true);
            let last = items.last().unwrap();
            if cut < stop_at {
                assert!(matches!(last, StreamItem::Error(_)), "cut at {cut}");
            }
        }
    }

    #[test]
    fn stream_oversize_message_is_an_error() {
        let data = fixture("stream_tools.bin");
        let items = run_cuts(&data, &[], true, 64);
        let StreamItem::Error(e) = items.last().unwrap() else {
            panic!("{items:?}")
        };
        assert!(e.message.contains("exceeds the limit"), "{e:?}");
    }

    #[test]
    fn stream_bad_and_unknown_events() {
        let mut d = start_and_text();
        d.extend(event("messageStop", json!({})));
        let items = feed_all(&d, false, true);
        let StreamItem::Error(e) = items.last().unwrap() else {
            panic!("{items:?}")
        };
        assert_eq!(e.status, 502);
        assert!(e.message.contains("messageStop"), "{}", e.message);
        // Unknown event and message types are skipped, not errors.
        let mut d = start_and_text();
        d.extend(event("somethingNew", json!({"x": 1})));
        d.extend(eventstream::encode(&[Header::string(":message-type", "ping")], b"").unwrap());
        d.extend(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"citation": {}}}),
        ));
        d.extend(event("messageStop", json!({"stopReason": "end_turn"})));
        let items = feed_all(&d, true, false);
        assert_eq!(items.len(), 4, "{items:?}");
        assert_eq!(items[3], StreamItem::Done);
        // A stream without messageStart still puts the role on its first chunk.
        let d = event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "x"}}),
        );
        let items = feed_all(&d, false, false);
        assert_eq!(
            chunk(&items[0]).choices[0].delta.role,
            Some(Role::Assistant)
        );
    }

    #[test]
    fn stream_garbage_never_panics() {
        let good = fixture("stream_tools.bin");
        let mut rng = Rng(42);
        for round in 0..300 {
            let mut data = good.clone();
            for _ in 0..rng.below(4) {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            if round % 3 == 0 {
                data.truncate(rng.below(data.len()));
            }
            if round % 5 == 0 {
                data = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
            }
            let mut cuts: Vec<usize> = (0..rng.below(6))
                .map(|_| rng.below(data.len() + 1))
                .collect();
            cuts.sort_unstable();
            let items = run_cuts(&data, &cuts, true, 1 << 16);
            let ends = items
                .iter()
                .filter(|x| matches!(x, StreamItem::Done | StreamItem::Error(_)))
                .count();
            assert_eq!(ends, 1);
        }
    }
}
