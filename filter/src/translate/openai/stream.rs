//! An OpenAI-schema `text/event-stream` as hub items.

use serde_json::Value;

use super::response::{error_fields, normalize, Kind};
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::schema::openai::{ChatCompletionChunk, Role};
use crate::translate::{ChunkSource, ProviderError, StreamItem, TranslateError};

// ---------------------------------------------------------------------------------
// Stream.

/// An OpenAI-schema `text/event-stream` as hub items.
///
/// Each `data:` chunk becomes a [`StreamItem::Chunk`] (the first with choices gets
/// `role: "assistant"` if it lacks one); `data: [DONE]` ends with
/// [`StreamItem::Done`]. Usage, whether sent as its own chunk (OpenAI) or on a content
/// chunk (Mistral), comes out as one usage-only chunk just before `Done`; chunks with
/// neither choices nor usage (Azure's `prompt_filter_results`) carry nothing for the
/// hub and are skipped. A `data: {"error": ...}` event, an unreadable event, an
/// oversize event, or a stream that ends before `[DONE]` and before any
/// `finish_reason` yields one [`StreamItem::Error`]; a stream that ends after a
/// `finish_reason` without `[DONE]` (some servers never send it) is `Done`.
#[derive(Debug)]
pub struct ChatStream {
    decoder: SseDecoder,
    events: Vec<SseEvent>,
    role_sent: bool,
    /// A `finish_reason` went by.
    finished: bool,
    /// The latest usage, as a usage-only chunk, held for the end.
    usage: Option<Box<ChatCompletionChunk>>,
    /// `Done` or `Error` is out.
    ended: bool,
}

impl ChatStream {
    /// `max_event_bytes` bounds one event (the memory held).
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            decoder: SseDecoder::new(max_event_bytes),
            events: Vec::new(),
            role_sent: false,
            finished: false,
            usage: None,
            ended: false,
        }
    }

    fn fail(&mut self, e: ProviderError, out: &mut Vec<StreamItem>) {
        out.push(StreamItem::Error(e));
        self.ended = true;
    }

    fn done(&mut self, out: &mut Vec<StreamItem>) {
        if let Some(u) = self.usage.take() {
            out.push(StreamItem::Chunk(u));
        }
        out.push(StreamItem::Done);
        self.ended = true;
    }

    /// `tail`: the unterminated rest at the end of the body.
    fn on_event(&mut self, ev: &SseEvent, tail: bool, out: &mut Vec<StreamItem>) {
        let data = ev.data().trim_ascii();
        if data.is_empty() {
            // Comments (`: keep-alive`), `retry:`, blank `data:`.
            return;
        }
        // A body cut inside the final `[DONE]` lost nothing.
        if data == b"[DONE]" || (tail && self.finished && b"[DONE]".starts_with(data)) {
            self.done(out);
            return;
        }
        let mut v: Value = match serde_json::from_slice(data) {
            Ok(v) => v,
            // A body cut inside an event leaves half of its JSON.
            Err(_) if tail => return self.fail(ended_early("inside an event"), out),
            Err(e) => return self.fail(bad_response(format!("unreadable stream event: {e}")), out),
        };
        let is_error = ev.event() == Some(b"error")
            || (v.get("choices").is_none() && v.get("error").is_some_and(|e| !e.is_null()));
        if is_error {
            let e = stream_error(&v);
            return self.fail(e, out);
        }
        if let Err(e) = normalize(&mut v, Kind::Chunk) {
            return self.fail(ProviderError::from_translate(&e), out);
        }
        let mut chunk: ChatCompletionChunk = match serde_json::from_value(v) {
            Ok(c) => c,
            Err(e) => return self.fail(bad_response(format!("unreadable stream chunk: {e}")), out),
        };
        if let Some(usage) = chunk.usage.take() {
            self.usage = Some(Box::new(ChatCompletionChunk {
                id: chunk.id.clone(),
                object: chunk.object.clone(),
                created: chunk.created,
                model: chunk.model.clone(),
                choices: Vec::new(),
                usage: Some(usage),
                rest: chunk.rest.clone(),
            }));
        }
        if chunk.choices.is_empty() {
            return;
        }
        if !self.role_sent {
            for c in &mut chunk.choices {
                c.delta.role.get_or_insert(Role::Assistant);
            }
            self.role_sent = true;
        }
        self.finished |= chunk.choices.iter().any(|c| c.finish_reason.is_some());
        out.push(StreamItem::Chunk(Box::new(chunk)));
    }
}

impl ChunkSource for ChatStream {
    fn feed(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<StreamItem>) {
        if self.ended {
            return;
        }
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        // Events completed before an oversize one are still handed out: read them
        // first, then report.
        let pushed = self.decoder.push(chunk, &mut events);
        for ev in &events {
            self.on_event(ev, false, out);
            if self.ended {
                break;
            }
        }
        events.clear();
        self.events = events;
        if self.ended {
            return;
        }
        if let Err(e) = pushed {
            return self.fail(bad_response(e.to_string()), out);
        }
        if !end_of_stream {
            return;
        }
        // A last event without its blank line still counts.
        match self.decoder.finish() {
            Ok(Some(ev)) => self.on_event(&ev, true, out),
            Ok(None) => {}
            Err(e) => return self.fail(bad_response(e.to_string()), out),
        }
        if self.ended {
            return;
        }
        if self.finished {
            self.done(out);
        } else {
            self.fail(ended_early("before [DONE] or a finish_reason"), out);
        }
    }
}

fn ended_early(where_: &str) -> ProviderError {
    bad_response(format!("the stream ended early, {where_}"))
}

fn bad_response(why: String) -> ProviderError {
    ProviderError::from_translate(&TranslateError::BadResponse(why))
}

/// A mid-stream `{"error": {...}}`. The HTTP status was 200: the error's own status
/// or type says what it was, else it is the upstream's failure (502).
fn stream_error(v: &Value) -> ProviderError {
    let (code, kind, message) = error_fields(v);
    let e = v.get("error").unwrap_or(v);
    let status = [e.get("status"), e.get("code")]
        .into_iter()
        .flatten()
        .find_map(status_of)
        .or_else(|| kind.as_deref().and_then(type_status))
        .unwrap_or(502);
    let message = message.unwrap_or_else(|| "the upstream failed mid-stream".into());
    ProviderError::new(status, code.or(kind), message)
}

/// An HTTP status written as a number or numeric text (Azure's `"code": "429"`).
fn status_of(v: &Value) -> Option<u16> {
    let n = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    u16::try_from(n).ok().filter(|s| (400..=599).contains(s))
}

/// The status OpenAI answers with for an error `type`.
fn type_status(kind: &str) -> Option<u16> {
    Some(match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "rate_limit_error" | "insufficient_quota" => 429,
        "server_error" | "api_error" => 500,
        "overloaded_error" => 503,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::openai::Usage;
    use crate::translate::openai::tests::{fixture, golden};
    use crate::translate::testing::Rng;
    use crate::translate::{encode_openai_sse, ErrorKind};

    // ----- stream -----

    fn run_cuts(data: &[u8], cuts: &[usize], max: usize) -> Vec<StreamItem> {
        let mut s = ChatStream::new(max);
        let mut out = Vec::new();
        let mut start = 0;
        for &c in cuts {
            s.feed(&data[start..c], false, &mut out);
            start = c;
        }
        s.feed(&data[start..], true, &mut out);
        let n = out.len();
        s.feed(b"data: [DONE]\n\n", true, &mut out);
        assert_eq!(out.len(), n, "nothing follows the end");
        out
    }

    /// The items of a whole stream, the same at every split point and one byte at a
    /// time; exactly one end, last. Past 4 KiB only every 61st split point (each is a
    /// whole run: quadratic); cut such a stream shorter to test every point.
    fn check_splits(data: &[u8]) -> Vec<StreamItem> {
        let whole = run_cuts(data, &[], 1 << 16);
        let step = if data.len() <= 4096 { 1 } else { 61 };
        for i in (0..=data.len()).step_by(step) {
            assert_eq!(run_cuts(data, &[i], 1 << 16), whole, "split at {i}");
        }
        let bytes: Vec<usize> = (1..data.len()).collect();
        assert_eq!(run_cuts(data, &bytes, 1 << 16), whole, "single bytes");
        let ends = whole
            .iter()
            .filter(|i| matches!(i, StreamItem::Done | StreamItem::Error(_)))
            .count();
        assert_eq!(ends, 1);
        assert!(matches!(
            whole.last(),
            Some(StreamItem::Done | StreamItem::Error(_))
        ));
        whole
    }

    fn chunks(items: &[StreamItem]) -> Vec<&ChatCompletionChunk> {
        items
            .iter()
            .filter_map(|i| match i {
                StreamItem::Chunk(c) => Some(&**c),
                _ => None,
            })
            .collect()
    }

    fn text(items: &[StreamItem]) -> (String, String) {
        let mut content = String::new();
        let mut reasoning = String::new();
        for c in chunks(items) {
            for ch in &c.choices {
                content.push_str(ch.delta.content.as_deref().unwrap_or_default());
                reasoning.push_str(ch.delta.reasoning_content.as_deref().unwrap_or_default());
            }
        }
        (content, reasoning)
    }

    fn usage(items: &[StreamItem]) -> Option<&Usage> {
        let n = items.len();
        let c = chunks(&items[n.saturating_sub(2)..]).into_iter().next()?;
        assert!(c.choices.is_empty());
        c.usage.as_ref()
    }

    fn sse(items: &[StreamItem]) -> Vec<u8> {
        let mut out = Vec::new();
        for i in items {
            encode_openai_sse(i, &mut out);
        }
        out
    }

    #[test]
    fn stream_openai_recorded() {
        let data = fixture("chat-streaming.sse");
        let items = check_splits(&data);
        assert_eq!(items.last(), Some(&StreamItem::Done));
        // Every upstream chunk is one item with nothing lost: re-encoded, each event
        // is the same JSON document (field order aside).
        let events = |bytes: &[u8]| -> Vec<Value> {
            bytes
                .split(|&b| b == b'\n')
                .filter_map(|l| l.strip_prefix(b"data: "))
                .filter(|d| *d != b"[DONE]")
                .map(|d| serde_json::from_slice(d).unwrap())
                .collect()
        };
        assert_eq!(events(&sse(&items)), events(&data));
        assert_eq!(chunks(&items).len(), events(&data).len());
        assert!(text(&items).0.starts_with("Hi there!"));
        // Every split point of its first three and last two events.
        let text_events: Vec<&str> = std::str::from_utf8(&data)
            .unwrap()
            .split_terminator("\n\n")
            .collect();
        let n = text_events.len();
        let short: String = text_events[..3]
            .iter()
            .chain(&text_events[n - 2..])
            .map(|e| format!("{e}\n\n"))
            .collect();
        let short = short.into_bytes();
        let items = check_splits(&short);
        assert_eq!(chunks(&items).len(), 4);
        assert_eq!(items.last(), Some(&StreamItem::Done));

        let data = fixture("chat-streaming-detailed-usage.sse");
        let items = check_splits(&data);
        let u = usage(&items).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (12, 100, 112)
        );
        assert_eq!(
            u.completion_tokens_details
                .as_ref()
                .unwrap()
                .reasoning_tokens,
            Some(100)
        );
    }

    #[test]
    fn stream_mistral_usage_on_the_last_content_chunk() {
        let items = check_splits(&fixture("openai/mistral-stream.sse"));
        golden("openai/mistral-stream.hub.sse", &sse(&items));
        let cs = chunks(&items);
        // The finish chunk lost its usage; a usage-only chunk comes before Done.
        let finish = cs
            .iter()
            .find(|c| c.choices.iter().any(|ch| ch.finish_reason.is_some()));
        assert_eq!(finish.unwrap().usage, None);
        let u = usage(&items).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (84, 31, 115)
        );
        let call = cs
            .iter()
            .find_map(|c| c.choices[0].delta.tool_calls.as_ref())
            .unwrap();
        assert_eq!(call[0].id.as_deref(), Some("Xq3tPz9aB"));
    }

    #[test]
    fn stream_magistral_thinking_parts() {
        let items = check_splits(&fixture("openai/magistral-stream.sse"));
        golden("openai/magistral-stream.hub.sse", &sse(&items));
        assert_eq!(
            text(&items),
            (
                "Hello!".to_string(),
                "The user greets me. Answer briefly.".to_string()
            )
        );
    }

    #[test]
    fn stream_azure_prompt_filter_chunk_is_skipped() {
        let items = check_splits(&fixture("openai/azure-stream.sse"));
        golden("openai/azure-stream.hub.sse", &sse(&items));
        let cs = chunks(&items);
        assert_eq!(cs[0].choices[0].delta.role, Some(Role::Assistant));
        assert_eq!(cs[0].id, "chatcmpl-AzUre1");
        assert_eq!(text(&items).0, "Hi there.");
        assert_eq!(usage(&items).unwrap().total_tokens, 11);
        // Azure's per-choice filter results stay on the chunk.
        assert!(cs[1].choices[0].rest.contains_key("content_filter_results"));
    }

    #[test]
    fn stream_compatible_server_without_done() {
        let items = check_splits(&fixture("openai/compat-no-done.sse"));
        golden("openai/compat-no-done.hub.sse", &sse(&items));
        assert_eq!(items.last(), Some(&StreamItem::Done));
        let cs = chunks(&items);
        assert_eq!(cs[0].object, "chat.completion.chunk");
        assert_eq!(cs[0].choices[0].delta.role, Some(Role::Assistant));
        assert_eq!(text(&items).1, "Need a tool.");
        let mut args = String::new();
        for c in &cs {
            for tc in c
                .choices
                .iter()
                .flat_map(|ch| ch.delta.tool_calls.iter().flatten())
            {
                assert_eq!(tc.index, 0);
                args.push_str(tc.function.arguments.as_deref().unwrap_or_default());
            }
        }
        assert_eq!(args, r#"{"q":"x"}"#);
        let u = usage(&items).unwrap();
        assert_eq!(u.total_tokens, 29);
    }

    #[test]
    fn stream_ended_early_is_an_error() {
        let data = fixture("chat-streaming.sse");
        // Cut anywhere before the finish chunk: Error, never Done.
        let finish_at = data
            .windows(b"\"finish_reason\":\"stop\"".len())
            .position(|w| w == b"\"finish_reason\":\"stop\"")
            .unwrap();
        let event_end = finish_at
            + data[finish_at..]
                .windows(2)
                .position(|w| w == b"\n\n")
                .unwrap();
        for cut in (0..event_end).step_by(7) {
            let items = run_cuts(&data[..cut], &[], 1 << 16);
            let Some(StreamItem::Error(e)) = items.last() else {
                panic!("cut at {cut}: {:?}", items.last())
            };
            assert_eq!(e.status, 502);
        }
        let items = run_cuts(&data[..100], &[], 1 << 16);
        let Some(StreamItem::Error(e)) = items.last() else {
            panic!()
        };
        assert!(e.message.contains("ended early"), "{}", e.message);
        // Cut after the finish chunk, before or inside [DONE]: Done.
        for cut in event_end..data.len() {
            let items = run_cuts(&data[..cut], &[], 1 << 16);
            assert_eq!(items.last(), Some(&StreamItem::Done), "cut at {cut}");
        }
        // An empty body.
        assert!(matches!(
            &run_cuts(b"", &[], 1 << 16)[..],
            [StreamItem::Error(_)]
        ));
    }

    #[test]
    fn stream_error_events() {
        let head = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
        for (event, status, code, kind) in [
            (
                r#"data: {"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}"#,
                500,
                Some("server_error"),
                ErrorKind::Server,
            ),
            (
                r#"data: {"error":{"code":"429","message":"Rate limit is exceeded."}}"#,
                429,
                Some("429"),
                ErrorKind::RateLimit,
            ),
            (
                r#"data: {"error":{"message":"Overloaded","type":"overloaded_error"}}"#,
                503,
                Some("overloaded_error"),
                ErrorKind::Overloaded,
            ),
            (
                r#"data: {"error":{"message":"boom"}}"#,
                502,
                None,
                ErrorKind::Server,
            ),
            (
                "event: error\ndata: {\"message\":\"busy\",\"code\":503}",
                503,
                Some("503"),
                ErrorKind::Overloaded,
            ),
        ] {
            let data = format!("{head}{event}\n\ndata: [DONE]\n\n");
            let items = check_splits(data.as_bytes());
            assert_eq!(items.len(), 2, "{event}");
            let StreamItem::Error(e) = &items[1] else {
                panic!("{event}: {items:?}")
            };
            assert_eq!(
                (e.status, e.code.as_deref(), e.kind),
                (status, code, kind),
                "{event}"
            );
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn stream_garbage_in() {
        for bad in [
            &b"data: {not json}\n\n"[..],
            b"data: [1,2]\n\n",
            b"data: {\"choices\":[{\"delta\":{\"role\":\"robot\"}}]}\n\n",
            b"data: {\"choices\":\"x\"}\n\n",
            b"<html>502 Bad Gateway</html>",
            b"\xff\xfe\x00garbage",
        ] {
            let items = check_splits(bad);
            assert!(
                matches!(&items[..], [StreamItem::Error(e)] if e.status == 502),
                "{}: {items:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Unknown fields, comments and `event:` names that are not `error` are fine.
        let ok = b": hi\n\nevent: message\nid: 1\ndata: {\"choices\":[{\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\",\"extra\":1}]}\n\ndata: [DONE]\n\n";
        let items = check_splits(ok);
        assert_eq!(items.len(), 2);
        assert_eq!(items[1], StreamItem::Done);

        let good = fixture("openai/mistral-stream.sse");
        let mut rng = Rng(11);
        for round in 0..400 {
            let mut data = good.clone();
            for _ in 0..rng.below(5) {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            if round % 3 == 0 {
                data.truncate(rng.below(data.len()));
            }
            if round % 7 == 0 {
                data = (0..rng.below(400)).map(|_| rng.next() as u8).collect();
            }
            let mut cuts: Vec<usize> = (0..rng.below(6))
                .map(|_| rng.below(data.len() + 1))
                .collect();
            cuts.sort_unstable();
            let items = run_cuts(&data, &cuts, 1 << 16);
            let ends = items
                .iter()
                .filter(|x| matches!(x, StreamItem::Done | StreamItem::Error(_)))
                .count();
            assert_eq!(ends, 1);
        }
    }

    #[test]
    fn stream_oversize_event_is_an_error() {
        let data = fixture("chat-streaming.sse");
        let items = run_cuts(&data, &[], 200);
        let Some(StreamItem::Error(e)) = items.last() else {
            panic!("{items:?}")
        };
        assert!(e.message.contains("larger than 200"), "{}", e.message);
        assert_eq!(items.len(), 1);
    }
}
