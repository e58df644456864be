//! Provider answer → client answer: a `chat.completion` body read into the hub type,
//! evened out across compatible servers, and an error answer as the client's error.

use serde_json::{Map, Value};

use crate::host::Headers;
use crate::schema::openai::ChatCompletion;
use crate::translate::{ProviderError, TranslateError};

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
pub(super) enum Kind {
    Completion,
    Chunk,
}

/// Fills what compatible servers leave out, so the hub types read the answer.
pub(super) fn normalize(v: &mut Value, kind: Kind) -> Result<(), TranslateError> {
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
pub(super) fn error_fields(v: &Value) -> (Option<String>, Option<String>, Option<String>) {
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
    use crate::schema::openai::Role;
    use crate::translate::openai::tests::fixture;
    use crate::translate::testing::Rng;
    use crate::translate::ErrorKind;
    use serde_json::json;

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
