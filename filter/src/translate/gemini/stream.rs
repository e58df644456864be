//! The `streamGenerateContent?alt=sse` stream as hub items.

use serde_json::Value;

use super::response::{
    args_text, call_id, candidate_finish, error_from_object, error_object, signature_rest,
};
use super::GenerateContentResponse;
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::schema::openai::{ChunkChoice, Delta, FunctionCallDelta, Role, ToolCallDelta, Usage};
use crate::translate::{ChunkSource, ProviderError, ResponseMeta, StreamItem, TranslateError};

// ---------------------------------------------------------------------------------
// Stream.

/// A `streamGenerateContent?alt=sse` body, bytes in, hub chunks out.
///
/// Each SSE event is a whole `GenerateContentResponse`: its parts are the deltas
/// (text, `thought` text as `reasoning_content`, function calls whole, one OpenAI
/// tool-call chunk with the full arguments), a `finishReason` closes its choice, and
/// `usageMetadata` (the last one wins) becomes the usage chunk. Gemini sends no end
/// marker: the stream is complete when it ends after every choice got a finish
/// reason (or the prompt was blocked); otherwise it is an error. A usage chunk is
/// written only when Gemini reported usage. An `{"error": ...}` event (or a Vertex
/// array of them) ends the stream with that error. Thought signatures are not
/// forwarded: a streamed tool call has no field for them (see [`chat_request`] for
/// what replaces them).
///
/// [`chat_request`]: super::chat_request
#[derive(Debug)]
pub struct ChatStream {
    meta: ResponseMeta,
    include_usage: bool,
    decoder: SseDecoder,
    scratch: Vec<SseEvent>,
    choices: Vec<ChoiceState>,
    /// Function calls seen, for ids.
    calls: usize,
    usage: Option<Usage>,
    /// Done or Error was emitted.
    over: bool,
}

#[derive(Debug)]
struct ChoiceState {
    index: u32,
    role_sent: bool,
    tools: u32,
    finished: bool,
}

impl ChatStream {
    /// `max_event_bytes` bounds one SSE event (memory held).
    pub fn new(meta: ResponseMeta, include_usage: bool, max_event_bytes: usize) -> Self {
        ChatStream {
            meta,
            include_usage,
            decoder: SseDecoder::new(max_event_bytes),
            scratch: Vec::new(),
            choices: Vec::new(),
            calls: 0,
            usage: None,
            over: false,
        }
    }

    fn fail(&mut self, err: ProviderError, out: &mut Vec<StreamItem>) {
        out.push(StreamItem::Error(err));
        self.over = true;
    }

    fn bad(&mut self, why: String, out: &mut Vec<StreamItem>) {
        self.fail(TranslateError::BadResponse(why).into(), out);
    }

    fn on_event(&mut self, ev: &SseEvent, out: &mut Vec<StreamItem>) {
        let data = ev.data().trim_ascii();
        if data.is_empty() || data == b"[DONE]" {
            return;
        }
        let value: Value = match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(e) => return self.bad(format!("unreadable Gemini stream event: {e}"), out),
        };
        if let Some(err) = error_object(&value) {
            let err = error_from_object(None, err);
            return self.fail(err, out);
        }
        match serde_json::from_value::<GenerateContentResponse>(value) {
            Ok(resp) => self.on_response(resp, out),
            Err(e) => self.bad(format!("Gemini stream event: {e}"), out),
        }
    }

    fn on_response(&mut self, resp: GenerateContentResponse, out: &mut Vec<StreamItem>) {
        if let Some(u) = resp.usage_metadata {
            self.usage = Some(u.to_openai());
        }
        if resp.candidates.is_empty() {
            let blocked = resp.prompt_feedback.and_then(|f| f.block_reason).is_some();
            if blocked {
                let slot = self.choice(0);
                let state = &mut self.choices[slot];
                if !state.finished {
                    state.finished = true;
                    emit(
                        &self.meta,
                        state,
                        Delta::default(),
                        Some("content_filter"),
                        out,
                    );
                }
            }
            return;
        }
        for (p, c) in resp.candidates.into_iter().enumerate() {
            let index = c
                .index
                .unwrap_or_else(|| u32::try_from(p).unwrap_or(u32::MAX));
            let slot = self.choice(index);
            if self.choices[slot].finished {
                continue;
            }
            for part in c.content.map(|c| c.parts).unwrap_or_default() {
                let delta = if let Some(fc) = part.function_call {
                    let id = fc.id.unwrap_or_else(|| call_id(&self.meta, self.calls));
                    self.calls += 1;
                    let state = &mut self.choices[slot];
                    let tool_index = state.tools;
                    state.tools += 1;
                    Delta {
                        tool_calls: Some(vec![ToolCallDelta {
                            index: tool_index,
                            id: Some(id),
                            kind: Some("function".into()),
                            function: FunctionCallDelta {
                                name: Some(fc.name),
                                arguments: Some(args_text(fc.args)),
                            },
                            rest: signature_rest(part.thought_signature),
                        }]),
                        ..Default::default()
                    }
                } else {
                    match part.text {
                        Some(t) if t.is_empty() => continue,
                        Some(t) if part.thought == Some(true) => Delta {
                            reasoning_content: Some(t),
                            ..Default::default()
                        },
                        Some(t) => Delta {
                            content: Some(t),
                            ..Default::default()
                        },
                        None => continue,
                    }
                };
                emit(&self.meta, &mut self.choices[slot], delta, None, out);
            }
            if let Some(reason) = c
                .finish_reason
                .filter(|r| !r.is_empty() && r != "FINISH_REASON_UNSPECIFIED")
            {
                let state = &mut self.choices[slot];
                state.finished = true;
                let finish = candidate_finish(&reason, state.tools > 0);
                emit(&self.meta, state, Delta::default(), Some(finish), out);
            }
        }
    }

    /// The slot of choice `index`, created on first sight.
    fn choice(&mut self, index: u32) -> usize {
        if let Some(i) = self.choices.iter().position(|c| c.index == index) {
            return i;
        }
        self.choices.push(ChoiceState {
            index,
            role_sent: false,
            tools: 0,
            finished: false,
        });
        self.choices.len() - 1
    }

    fn end(&mut self, out: &mut Vec<StreamItem>) {
        if self.choices.is_empty() || self.choices.iter().any(|c| !c.finished) {
            return self.bad(
                "stream ended early: Gemini sent no finishReason".into(),
                out,
            );
        }
        if self.include_usage {
            if let Some(usage) = self.usage.take() {
                out.push(chunk(&self.meta, Vec::new(), Some(usage)));
            }
        }
        out.push(StreamItem::Done);
        self.over = true;
    }
}

impl ChunkSource for ChatStream {
    fn feed(&mut self, bytes: &[u8], end_of_stream: bool, out: &mut Vec<StreamItem>) {
        if self.over {
            return;
        }
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        let pushed = self.decoder.push(bytes, &mut events);
        for ev in &events {
            if self.over {
                break;
            }
            self.on_event(ev, out);
        }
        self.scratch = events;
        if self.over {
            return;
        }
        if let Err(e) = pushed {
            return self.bad(format!("Gemini stream: {e}"), out);
        }
        if end_of_stream {
            match self.decoder.finish() {
                Ok(Some(ev)) => self.on_event(&ev, out),
                Ok(None) => {}
                Err(e) => return self.bad(format!("Gemini stream: {e}"), out),
            }
            if !self.over {
                self.end(out);
            }
        }
    }
}

fn chunk(meta: &ResponseMeta, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> StreamItem {
    StreamItem::Chunk(Box::new(meta.chunk(choices, usage)))
}

/// Writes one delta of a choice, after a role chunk if the choice is new.
fn emit(
    meta: &ResponseMeta,
    state: &mut ChoiceState,
    delta: Delta,
    finish: Option<&'static str>,
    out: &mut Vec<StreamItem>,
) {
    let one = |delta, finish: Option<&str>| ChunkChoice {
        index: state.index,
        delta,
        finish_reason: finish.map(str::to_string),
        rest: Default::default(),
    };
    if !state.role_sent {
        let role = Delta {
            role: Some(Role::Assistant),
            content: Some(String::new()),
            ..Default::default()
        };
        out.push(chunk(meta, vec![one(role, None)], None));
    }
    out.push(chunk(meta, vec![one(delta, finish)], None));
    state.role_sent = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::encode_openai_sse;
    use crate::translate::gemini::tests::{fixture, golden, meta};
    use serde_json::json;

    // ----- streams -----

    /// Feeds `chunks` (the last with end_of_stream) and collects the items.
    fn run(chunks: &[&[u8]], include_usage: bool) -> Vec<StreamItem> {
        let mut s = ChatStream::new(meta(), include_usage, 1 << 16);
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            s.feed(c, i + 1 == chunks.len(), &mut out);
        }
        out
    }

    fn encode(items: &[StreamItem]) -> Vec<u8> {
        let mut out = Vec::new();
        for it in items {
            encode_openai_sse(it, &mut out);
        }
        out
    }

    /// Whole, split at every offset, and byte by byte: always the same items.
    fn check_stream(name: &str, include_usage: bool) -> Vec<StreamItem> {
        let data = fixture(&format!("{name}.gemini.sse"));
        let whole = run(&[&data], include_usage);
        golden(&format!("{name}.openai.sse"), &encode(&whole));
        for i in 0..=data.len() {
            let (a, b) = data.split_at(i);
            assert_eq!(run(&[a, b], include_usage), whole, "{name} split at {i}");
        }
        let bytes: Vec<&[u8]> = data.chunks(1).chain([&b""[..]]).collect();
        assert_eq!(run(&bytes, include_usage), whole, "{name} byte by byte");
        assert_eq!(
            whole
                .iter()
                .filter(|i| matches!(i, StreamItem::Done | StreamItem::Error(_)))
                .count(),
            1
        );
        whole
    }

    fn chunks_of(items: &[StreamItem]) -> Vec<&crate::schema::openai::ChatCompletionChunk> {
        items
            .iter()
            .filter_map(|i| match i {
                StreamItem::Chunk(c) => Some(&**c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn golden_stream_text() {
        let items = check_stream("stream_text", true);
        assert_eq!(items.last(), Some(&StreamItem::Done));
        let chunks = chunks_of(&items);
        assert_eq!(chunks[0].choices[0].delta.role, Some(Role::Assistant));
        let text: String = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .filter_map(|c| c.delta.content.as_deref())
            .collect();
        assert_eq!(text, "The sky is blue, été 🌤 and clear.");
        let reasoning: String = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .filter_map(|c| c.delta.reasoning_content.as_deref())
            .collect();
        assert_eq!(reasoning, "**Considering the sky**\n\nRayleigh scattering.");
        let last = chunks.last().unwrap();
        assert!(last.choices.is_empty());
        let u = last.usage.as_ref().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (12, 34, 46)
        );
        assert_eq!(
            chunks[chunks.len() - 2].choices[0].finish_reason.as_deref(),
            Some("length")
        );
        // Without include_usage: the same, less the usage chunk.
        let data = fixture("stream_text.gemini.sse");
        let plain = run(&[&data], false);
        assert_eq!(plain.len(), items.len() - 1);
        assert!(chunks_of(&plain).iter().all(|c| c.usage.is_none()));
    }

    #[test]
    fn golden_stream_tools() {
        let items = check_stream("stream_tools", true);
        assert_eq!(items.last(), Some(&StreamItem::Done));
        let chunks = chunks_of(&items);
        let calls: Vec<&ToolCallDelta> = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .flat_map(|c| c.delta.tool_calls.iter().flatten())
            .collect();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (
                calls[0].index,
                calls[0].id.as_deref(),
                calls[0].function.arguments.as_deref()
            ),
            (0, Some("call_chatcmpl-test_0"), Some(r#"{"city":"Paris"}"#))
        );
        // The thought signature rides along, where a client sends it back from.
        assert_eq!(
            calls[0].rest.get("extra_content"),
            Some(&serde_json::json!({"google": {"thought_signature": "c2lnLXBhcmlz"}}))
        );
        assert!(calls[1].rest.is_empty());
        assert_eq!(
            (
                calls[1].index,
                calls[1].id.as_deref(),
                calls[1].function.name.as_deref()
            ),
            (1, Some("fc_rome"), Some("get_weather"))
        );
        let finish: Vec<&str> = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .filter_map(|c| c.finish_reason.as_deref())
            .collect();
        assert_eq!(finish, ["tool_calls"]);
    }

    #[test]
    fn golden_stream_error() {
        let items = check_stream("stream_error", true);
        let Some(StreamItem::Error(e)) = items.last() else {
            panic!("{items:?}")
        };
        assert_eq!(e.status, 503);
        assert_eq!(e.kind, crate::translate::ErrorKind::Overloaded);
        assert_eq!(e.code.as_deref(), Some("UNAVAILABLE"));
        assert_eq!(
            e.message,
            "The model is overloaded. Please try again later."
        );
        assert_eq!(chunks_of(&items).len(), 2);
    }

    #[test]
    fn stream_ended_early_is_an_error() {
        let data = fixture("stream_text.gemini.sse");
        let text = String::from_utf8(data.clone()).unwrap();
        // Everything but the event with the finish reason.
        let cut = text.rfind("data: ").unwrap();
        for (body, what) in [
            (&data[..cut], "no finish"),
            (&b""[..], "empty"),
            (&data[..cut + 30], "cut inside"),
        ] {
            let items = run(&[body], true);
            let Some(StreamItem::Error(e)) = items.last() else {
                panic!("{what}: {items:?}")
            };
            assert_eq!(e.status, 502, "{what}");
            assert!(!items.contains(&StreamItem::Done), "{what}");
            if what == "no finish" {
                assert!(e.message.contains("stream ended early"), "{e:?}");
            }
        }
        // A last event lacking its blank line still counts at end of stream.
        let trimmed = text.trim_end();
        let items = run(&[trimmed.as_bytes()], false);
        assert_eq!(items.last(), Some(&StreamItem::Done));
    }

    #[test]
    fn stream_stops_after_an_error() {
        let mut s = ChatStream::new(meta(), true, 1 << 16);
        let mut out = Vec::new();
        s.feed(b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}]}}]}\n\ndata: {nope}\n\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"b\"}]}}]}\n\n", false, &mut out);
        assert_eq!(out.len(), 3, "{out:?}");
        let Some(StreamItem::Error(e)) = out.last() else {
            panic!("{out:?}")
        };
        assert_eq!(e.status, 502);
        s.feed(b"data: {}\n\n", true, &mut out);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn stream_error_shapes() {
        // A Vertex array of errors, as one event.
        let items = run(
            &[br#"data: [{"error": {"code": 429, "message": "Resource exhausted.", "status": "RESOURCE_EXHAUSTED"}}]

"#],
            true,
        );
        let [StreamItem::Error(e)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(
            (e.status, e.kind),
            (429, crate::translate::ErrorKind::RateLimit)
        );
        // An event too large for the decoder.
        let mut s = ChatStream::new(meta(), true, 64);
        let mut out = Vec::new();
        s.feed(&fixture("stream_tools.gemini.sse"), false, &mut out);
        let [StreamItem::Error(e)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert!(e.message.contains("larger than 64 bytes"), "{e:?}");
        // An event of the wrong shape.
        let items = run(&[b"data: {\"candidates\": {}}\n\n"], true);
        assert!(matches!(items.as_slice(), [StreamItem::Error(e)] if e.status == 502));
    }

    #[test]
    fn stream_blocked_prompt_and_comments() {
        let items = run(
            &[b": keep-alive\r\n\r\ndata: {\"promptFeedback\": {\"blockReason\": \"PROHIBITED_CONTENT\"}, \"usageMetadata\": {\"promptTokenCount\": 9, \"totalTokenCount\": 9}}\r\n\r\n"],
            true,
        );
        let chunks = chunks_of(&items);
        assert_eq!(chunks.len(), 3, "{items:?}");
        assert_eq!(chunks[0].choices[0].delta.role, Some(Role::Assistant));
        assert_eq!(
            chunks[1].choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );
        assert_eq!(chunks[2].usage.as_ref().unwrap().prompt_tokens, 9);
        assert_eq!(items.last(), Some(&StreamItem::Done));
    }

    #[test]
    fn stream_several_candidates() {
        let ev = |v: Value| format!("data: {v}\r\n\r\n");
        let body = [
            ev(json!({"candidates": [{"content": {"parts": [{"text": "a"}]}, "index": 0},
                                     {"content": {"parts": [{"functionCall": {"name": "f", "args": {"x": 1}}}]}, "index": 1}]})),
            ev(json!({"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP", "index": 0}]})),
        ]
        .concat();
        // Choice 1 never finished: the stream is incomplete.
        let items = run(&[body.as_bytes()], false);
        assert!(
            matches!(items.last(), Some(StreamItem::Error(_))),
            "{items:?}"
        );
        let done = format!(
            "{body}{}",
            ev(
                json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "g"}}]}, "finishReason": "STOP", "index": 1}]})
            )
        );
        let items = run(&[done.as_bytes()], false);
        assert_eq!(items.last(), Some(&StreamItem::Done));
        /// (choice, content, tool-call index, finish reason) of each chunk choice.
        type Seen<'a> = (u32, Option<&'a str>, Option<u32>, Option<&'a str>);
        let per_choice: Vec<Seen> = chunks_of(&items)
            .iter()
            .flat_map(|c| &c.choices)
            .map(|c| {
                let tc = c.delta.tool_calls.as_ref().and_then(|t| t.first());
                (
                    c.index,
                    c.delta.content.as_deref(),
                    tc.map(|t| t.index),
                    c.finish_reason.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            per_choice,
            [
                (0, Some(""), None, None),
                (0, Some("a"), None, None),
                (1, Some(""), None, None),
                (1, None, Some(0), None),
                (0, Some("b"), None, None),
                (0, None, None, Some("stop")),
                (1, None, Some(1), None),
                (1, None, None, Some("tool_calls")),
            ]
        );
    }
}
