//! OpenAI-schema backends (OpenAI, Azure OpenAI, Mistral, vLLM and other compatible
//! servers) read back into hub values, for clients that speak another API.
//!
//! The hub is OpenAI's own schema, so requests need no translation here; answers do
//! need reading, and compatible servers differ in small ways this module evens out:
//! missing `object`/`created`/`index` fields, tool-call pieces without `index`,
//! `content` sent as a list of parts (Mistral: text, `thinking`, `reference`),
//! reasoning under `reasoning` instead of `reasoning_content`, usage on the last
//! content chunk instead of a usage-only chunk, and no `[DONE]` at the end.

use serde_json::{Map, Value};

use crate::codec::sse::{SseDecoder, SseEvent};
use crate::host::Headers;
use crate::schema::openai::{ChatCompletion, ChatCompletionChunk, Role};
use crate::translate::{ChunkSource, ProviderError, StreamItem, TranslateError};

/// Reads a `chat.completion` body.
pub fn chat_response(body: &[u8]) -> Result<ChatCompletion, TranslateError> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::BadResponse(format!("chat completion: {e}")))?;
    if v.get("choices").is_none() {
        if let Some(e) = v.get("error") {
            return Err(TranslateError::BadResponse(format!(
                "the upstream answered with an error: {}",
                clip(&describe(e.get("message").unwrap_or(e)), MAX_MESSAGE_CHARS)
            )));
        }
    }
    normalize(&mut v, Kind::Completion)?;
    serde_json::from_value(v)
        .map_err(|e| TranslateError::BadResponse(format!("chat completion: {e}")))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chunk,
}

/// Fills what compatible servers leave out, so the hub types read the answer.
fn normalize(v: &mut Value, kind: Kind) -> Result<(), TranslateError> {
    let Some(obj) = v.as_object_mut() else {
        return Err(TranslateError::BadResponse("not a JSON object".into()));
    };
    let object = match kind {
        Kind::Completion => "chat.completion",
        Kind::Chunk => "chat.completion.chunk",
    };
    default(obj, "object", || object.into());
    default(obj, "id", || "".into());
    default(obj, "model", || "".into());
    default(obj, "created", || 0.into());
    if kind == Kind::Chunk {
        default(obj, "choices", || Value::Array(Vec::new()));
    }
    let id = obj
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(choices) = obj.get_mut("choices").and_then(Value::as_array_mut) else {
        return Err(TranslateError::BadResponse(
            "'choices' is not a list".into(),
        ));
    };
    for (i, choice) in choices.iter_mut().enumerate() {
        let Some(c) = choice.as_object_mut() else {
            continue;
        };
        default(c, "index", || i.into());
        default(c, "finish_reason", || Value::Null);
        let member = match kind {
            Kind::Completion => "message",
            Kind::Chunk => "delta",
        };
        default(c, member, || Value::Object(Map::new()));
        if let Some(m) = c.get_mut(member).and_then(Value::as_object_mut) {
            normalize_message(m, kind, &id);
        }
    }
    if let Some(u) = obj.get_mut("usage") {
        match u.as_object_mut() {
            Some(u) => {
                default(u, "prompt_tokens", || 0.into());
                default(u, "completion_tokens", || 0.into());
                let total = [&u["prompt_tokens"], &u["completion_tokens"]]
                    .iter()
                    .filter_map(|x| x.as_u64())
                    .fold(0u64, u64::saturating_add);
                default(u, "total_tokens", || total.into());
            }
            None => *u = Value::Null,
        }
    }
    Ok(())
}

/// Sets `key` when it is missing or `null`.
fn default(obj: &mut Map<String, Value>, key: &str, value: impl FnOnce() -> Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.to_string(), value());
    }
}

/// A message or delta: content parts to text, `reasoning` to `reasoning_content`,
/// tool calls completed.
fn normalize_message(m: &mut Map<String, Value>, kind: Kind, id: &str) {
    if kind == Kind::Completion {
        default(m, "role", || "assistant".into());
        if !m.contains_key("content") {
            m.insert("content".into(), Value::Null);
        }
    }
    if let Some(Value::Array(parts)) = m.get("content") {
        let mut text = String::new();
        let mut thinking = String::new();
        for p in parts {
            match p.get("type").and_then(Value::as_str) {
                Some("text") => {
                    text.push_str(p.get("text").and_then(Value::as_str).unwrap_or_default())
                }
                Some("thinking") => {
                    if let Some(t) = p.get("thinking") {
                        thinking.push_str(&part_text(t));
                    }
                }
                // `reference` and other annotations have no hub field.
                _ => {}
            }
        }
        if thinking.is_empty() {
            m.insert("content".into(), text.into());
        } else {
            // A thinking-only piece carries no content.
            m.insert("content".into(), (!text.is_empty()).then_some(text).into());
            if m.get("reasoning_content").is_none_or(Value::is_null) {
                m.insert("reasoning_content".into(), thinking.into());
            }
        }
    }
    // Moved, not copied: a reader of both would see the text twice.
    if m.get("reasoning_content").is_none_or(Value::is_null)
        && m.get("reasoning").is_some_and(Value::is_string)
    {
        if let Some(r) = m.remove("reasoning") {
            m.insert("reasoning_content".into(), r);
        }
    }
    if let Some(calls) = m.get_mut("tool_calls").and_then(Value::as_array_mut) {
        for (n, call) in calls.iter_mut().enumerate() {
            let Some(c) = call.as_object_mut() else {
                continue;
            };
            default(c, "function", || Value::Object(Map::new()));
            match kind {
                Kind::Chunk => default(c, "index", || n.into()),
                Kind::Completion => {
                    default(c, "id", || format!("call_{id}_{n}").into());
                    if let Some(f) = c.get_mut("function").and_then(Value::as_object_mut) {
                        default(f, "name", || "".into());
                        // Arguments are JSON text; some servers send the object.
                        if let Some(a) = f.get_mut("arguments").filter(|a| !a.is_string()) {
                            *a = if a.is_null() {
                                "".into()
                            } else {
                                a.to_string().into()
                            };
                        }
                    }
                }
            }
        }
    }
}

/// Text of a `thinking` member: a string or a list of text parts.
fn part_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

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

// ---------------------------------------------------------------------------------
// Errors.

/// An OpenAI-schema error answer for the client. Reads OpenAI's and Azure's
/// `{"error": {"message", "type", "code", "param"}}` (Azure's `code` may be the status
/// as text, or `content_filter`), Mistral's `{"object": "error", "message", "type"}`
/// (whose `message` may be a validation list), FastAPI's `{"detail": ...}` and a bare
/// `{"error": "text"}`. `code` is the provider's code, else its type; the status is
/// kept (a non-error status becomes 502).
pub fn error(status: u16, _headers: &dyn Headers, body: &[u8]) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let (code, kind, message) = parsed.as_ref().map(error_fields).unwrap_or_default();
    let message = message.unwrap_or_else(|| {
        let mut m = format!("the upstream returned HTTP {status}");
        if parsed.is_none() {
            if let Some(reason) = plain_reason(body) {
                m.push_str(": ");
                m.push_str(reason);
            }
        }
        m
    });
    let status = if (400..=599).contains(&status) {
        status
    } else {
        502
    };
    ProviderError::new(status, code.or(kind), message)
}

/// `(code, type, message)` of an error document, each when present.
fn error_fields(v: &Value) -> (Option<String>, Option<String>, Option<String>) {
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let message = |v: Option<&Value>| {
        v.filter(|m| !m.is_null())
            .map(|m| clip(&describe(m), MAX_MESSAGE_CHARS))
            .filter(|m| !m.is_empty())
    };
    match v.get("error") {
        Some(e @ Value::Object(_)) => (
            text(e.get("code")),
            text(e.get("type")),
            message(e.get("message")),
        ),
        Some(e @ Value::String(_)) => (None, None, message(Some(e))),
        _ => (
            text(v.get("code")),
            text(v.get("type")),
            message(v.get("message").or_else(|| v.get("detail"))),
        ),
    }
}

/// A message that may be structured (Mistral's and FastAPI's validation lists:
/// `{"detail": [{"loc": ["body", "top_p"], "msg": "..."}]}`) as one line.
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(describe).collect::<Vec<_>>().join("; "),
        Value::Object(o) => {
            if let Some(d) = o.get("detail").or_else(|| o.get("message")) {
                return describe(d);
            }
            match o.get("msg").and_then(Value::as_str) {
                Some(msg) => {
                    let loc: Vec<String> = o
                        .get("loc")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|p| match p {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect();
                    if loc.is_empty() {
                        msg.to_string()
                    } else {
                        format!("{}: {msg}", loc.join("."))
                    }
                }
                None => v.to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// Longest provider message passed on.
pub(crate) const MAX_MESSAGE_CHARS: usize = 2000;
/// Longest non-JSON body quoted in a message.
const MAX_QUOTED_BODY: usize = 200;

pub(crate) fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A non-JSON error body worth quoting: one short line of plain text (Envoy's
/// `upstream connect error ...`), never HTML or a long page.
pub(crate) fn plain_reason(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?.trim();
    let plain = !text.is_empty()
        && text.len() <= MAX_QUOTED_BODY
        && !text.contains('<')
        && !text.chars().any(char::is_control);
    plain.then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::openai::{ChatCompletionChunk, Usage};
    use crate::translate::testing::{self, Rng};
    use crate::translate::{encode_openai_sse, ErrorKind};
    use serde_json::json;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/");

    fn fixture(name: &str) -> Vec<u8> {
        testing::fixture(DIR, name)
    }

    fn golden(name: &str, actual: &[u8]) {
        testing::golden(DIR, name, actual)
    }

    // ----- response -----

    #[test]
    fn response_openai_and_azure_bodies_read_unchanged() {
        for name in [
            "chat-basic.json",
            "openai/azure-chat-basic.json",
            "openai/chat-parallel-tools.json",
        ] {
            let body = fixture(name);
            let c = chat_response(&body).unwrap();
            // Nothing lost: the hub value writes back the same document.
            let original: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(serde_json::to_value(&c).unwrap(), original, "{name}");
        }
        let c = chat_response(&fixture("openai/chat-parallel-tools.json")).unwrap();
        let calls = c.choices[0].message.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].function.name, "get_current_weather");
        let u = c.usage.unwrap();
        assert_eq!(
            u.completion_tokens_details.unwrap().reasoning_tokens,
            Some(192)
        );
    }

    #[test]
    fn response_from_compatible_servers() {
        // Mistral (Magistral): content parts with thinking; vLLM: `reasoning`; fields
        // left out; tool arguments as an object; a call without id.
        let body = json!({"id": "m1", "model": "magistral", "choices": [{
            "message": {"content": [
                {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
                {"type": "text", "text": "Hi"},
                {"type": "reference", "reference_ids": [1]}
            ], "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
            "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4}});
        let c = chat_response(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(c.object, "chat.completion");
        assert_eq!(c.created, 0);
        let m = &c.choices[0].message;
        assert_eq!(m.role, Role::Assistant);
        assert_eq!(m.content.as_deref(), Some("Hi"));
        assert_eq!(m.reasoning_content.as_deref(), Some("hmm"));
        let call = &m.tool_calls.as_ref().unwrap()[0];
        assert_eq!(
            (call.id.as_str(), call.function.arguments.as_str()),
            ("call_m1_0", r#"{"a":1}"#)
        );
        assert_eq!(c.usage.unwrap().total_tokens, 7);

        let body = json!({"id": "v", "object": "chat.completion", "created": 5, "model": "q",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "x", "reasoning": "why"},
                         "finish_reason": "stop"}], "usage": null});
        let c = chat_response(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(
            c.choices[0].message.reasoning_content.as_deref(),
            Some("why")
        );
        assert_eq!(c.usage, None);
    }

    #[test]
    fn response_errors_are_502_and_garbage_never_panics() {
        for body in [
            &b""[..],
            b"nope",
            b"[]",
            b"{}",
            br#"{"choices": 3}"#,
            br#"{"choices": [{"message": {"role": "robot", "content": "x"}}]}"#,
            br#"{"error": {"message": "quota exceeded", "type": "insufficient_quota"}}"#,
            br#"{"error": "model not loaded"}"#,
        ] {
            let e = chat_response(body).unwrap_err();
            assert_eq!(e.status(), 502, "{}", String::from_utf8_lossy(body));
        }
        let e = chat_response(br#"{"error": {"message": "quota exceeded"}}"#).unwrap_err();
        assert!(e.message().contains("quota exceeded"), "{}", e.message());
        let good = fixture("openai/chat-parallel-tools.json");
        let mut rng = Rng(3);
        for _ in 0..2000 {
            let mut b = good[..rng.below(good.len() + 1)].to_vec();
            if !b.is_empty() {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            let _ = chat_response(&b);
            let _ = error(500, &[("content-type", "application/json")], &b);
        }
    }

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

    // ----- errors -----

    #[test]
    fn error_shapes() {
        let none: [(&str, &str); 0] = [];
        /// Status and body in; status, code, kind and message out.
        type Case = (
            u16,
            &'static [u8],
            u16,
            Option<&'static str>,
            ErrorKind,
            &'static str,
        );
        let cases: [Case; 12] = [
            // OpenAI (recorded).
            (
                400,
                br#"{"error":{"code":"unsupported_parameter","message":"Unsupported parameter: 'max_tokens' is not supported with this model.","param":"max_tokens","type":"invalid_request_error"}}"#,
                400,
                Some("unsupported_parameter"),
                ErrorKind::InvalidRequest,
                "Unsupported parameter: 'max_tokens' is not supported with this model.",
            ),
            (
                404,
                br#"{"error":{"message":"The model `x` does not exist","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
                404,
                Some("model_not_found"),
                ErrorKind::NotFound,
                "The model `x` does not exist",
            ),
            (
                429,
                br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
                429,
                Some("insufficient_quota"),
                ErrorKind::RateLimit,
                "You exceeded your current quota",
            ),
            (
                401,
                br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
                401,
                Some("invalid_api_key"),
                ErrorKind::Authentication,
                "Incorrect API key provided",
            ),
            // Azure: the status as code; content filter.
            (
                429,
                br#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation have exceeded call rate limit."}}"#,
                429,
                Some("429"),
                ErrorKind::RateLimit,
                "Requests to the ChatCompletions_Create Operation have exceeded call rate limit.",
            ),
            (
                400,
                br#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"medium"}}}}}"#,
                400,
                Some("content_filter"),
                ErrorKind::InvalidRequest,
                "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
            ),
            (
                404,
                br#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#,
                404,
                Some("DeploymentNotFound"),
                ErrorKind::NotFound,
                "The API deployment for this resource does not exist.",
            ),
            // Mistral: flat, and with a validation list for a message.
            (
                400,
                br#"{"object":"error","message":"Assistant message must have either content or tool_calls, but not none.","type":"invalid_request_error","param":null,"code":null}"#,
                400,
                Some("invalid_request_error"),
                ErrorKind::InvalidRequest,
                "Assistant message must have either content or tool_calls, but not none.",
            ),
            (
                422,
                br#"{"object":"error","message":{"detail":[{"type":"float_type","loc":["body","top_p"],"msg":"Input should be a valid number","input":null}]},"type":"invalid_request_message_error","param":null,"code":null}"#,
                422,
                Some("invalid_request_message_error"),
                ErrorKind::InvalidRequest,
                "body.top_p: Input should be a valid number",
            ),
            (
                422,
                br#"{"detail":[{"type":"extra_forbidden","loc":["body","store"],"msg":"Extra inputs are not permitted","input":false},{"type":"extra_forbidden","loc":["body","max_completion_tokens"],"msg":"Extra inputs are not permitted","input":8192}]}"#,
                422,
                None,
                ErrorKind::InvalidRequest,
                "body.store: Extra inputs are not permitted; body.max_completion_tokens: Extra inputs are not permitted",
            ),
            // A bare string (Ollama, some proxies).
            (
                404,
                br#"{"error":"model 'llama9' not found"}"#,
                404,
                None,
                ErrorKind::NotFound,
                "model 'llama9' not found",
            ),
            // Overloaded.
            (
                529,
                br#"{"error":{"message":"Overloaded","type":"overloaded_error"}}"#,
                529,
                Some("overloaded_error"),
                ErrorKind::Overloaded,
                "Overloaded",
            ),
        ];
        for (status, body, want_status, code, kind, message) in cases {
            let e = error(status, &none, body);
            assert_eq!(
                e,
                ProviderError {
                    status: want_status,
                    kind,
                    code: code.map(str::to_string),
                    message: message.to_string()
                },
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn error_non_json_bodies() {
        let none: [(&str, &str); 0] = [];
        let e = error(
            503,
            &none,
            b"upstream connect error or disconnect/reset before headers. reset reason: overflow",
        );
        assert_eq!(
            e.message,
            "the upstream returned HTTP 503: upstream connect error or disconnect/reset before headers. reset reason: overflow"
        );
        assert_eq!(
            (e.status, e.kind, e.code),
            (503, ErrorKind::Overloaded, None)
        );
        let e = error(
            502,
            &none,
            b"<html><head><title>502 Bad Gateway</title></head></html>",
        );
        assert_eq!(e.message, "the upstream returned HTTP 502");
        let e = error(500, &none, &[b'a'; 10_000]);
        assert_eq!(e.message, "the upstream returned HTTP 500");
        let e = error(504, &none, b"");
        assert_eq!((e.status, e.kind), (504, ErrorKind::Timeout));
        // A JSON body without a message still names the status.
        let e = error(500, &none, b"{}");
        assert_eq!(e.message, "the upstream returned HTTP 500");
        // A success status with an error body is still an error.
        let e = error(200, &none, br#"{"error":{"message":"x"}}"#);
        assert_eq!((e.status, e.message.as_str()), (502, "x"));
        // A huge message is clipped.
        let big = json!({"error": {"message": "m".repeat(9000)}}).to_string();
        assert_eq!(
            error(400, &none, big.as_bytes()).message.len(),
            MAX_MESSAGE_CHARS
        );
        let v: Value =
            serde_json::from_slice(&error(429, &none, b"slow down").anthropic_body()).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
    }
}
