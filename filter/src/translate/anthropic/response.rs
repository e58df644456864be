//! Provider answer → client answer: an Anthropic message as a hub answer, a hub
//! answer as an Anthropic message, and a provider's error answer as a
//! [`ProviderError`].

use serde_json::{json, Value};

use super::{thinking_entry, RESPONSE_TOOL, THINKING_BLOCKS};
use crate::host::Headers;
use crate::schema::anthropic as an;
use crate::schema::openai::{
    ChatCompletion, Choice, FunctionCall, PromptTokensDetails, ResponseMessage, Rest, Role,
    ToolCall, Usage,
};
use crate::translate::{ErrorKind, ProviderError, ResponseMeta, TranslateError};

/// Longest provider error message passed on, in characters.
const MAX_MESSAGE_CHARS: usize = 1000;

// ---------------------------------------------------------------------------------
// Messages answer → hub answer.

/// Anthropic's `stop_reason` as OpenAI's `finish_reason`. Reasons OpenAI has no word
/// for (`pause_turn`, and any a newer API adds) become `stop`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// OpenAI's `finish_reason` as Anthropic's `stop_reason`.
fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic usage in hub terms: prompt tokens count cache reads and writes too.
pub(super) fn hub_usage(u: &an::Usage) -> Usage {
    let input = u.input_tokens.unwrap_or(0);
    let read = u.cache_read_input_tokens.unwrap_or(0);
    let write = u.cache_creation_input_tokens.unwrap_or(0);
    let output = u.output_tokens.unwrap_or(0);
    let prompt = input.saturating_add(read).saturating_add(write);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: output,
        total_tokens: prompt.saturating_add(output),
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(read),
            cache_creation_tokens: (write > 0).then_some(write),
            rest: Rest::new(),
        }),
        completion_tokens_details: None,
        rest: Rest::new(),
    }
}

/// Hub usage in Anthropic terms: `input_tokens` counts only uncached input.
pub(super) fn anthropic_usage(u: &Usage) -> an::Usage {
    let details = u.prompt_tokens_details.as_ref();
    let read = details.and_then(|d| d.cached_tokens).unwrap_or(0);
    let write = details.and_then(|d| d.cache_creation_tokens).unwrap_or(0);
    an::Usage {
        input_tokens: Some(u.prompt_tokens.saturating_sub(read).saturating_sub(write)),
        output_tokens: Some(u.completion_tokens),
        cache_creation_input_tokens: Some(write),
        cache_read_input_tokens: Some(read),
        rest: Rest::new(),
    }
}

/// Translates an Anthropic message (any flavor) into a hub answer.
pub fn chat_response(body: &[u8], meta: &ResponseMeta) -> Result<ChatCompletion, TranslateError> {
    let resp: an::MessagesResponse = serde_json::from_slice(body)
        .map_err(|e| TranslateError::BadResponse(format!("Anthropic message: {e}")))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    let mut json_answer = None;
    for block in resp.content {
        match block.kind.as_str() {
            "text" => text.push_str(block.text.as_deref().unwrap_or_default()),
            "thinking" => {
                let t = block.thinking.unwrap_or_default();
                reasoning.push_str(&t);
                thinking_blocks.push(thinking_entry(&t, &block.signature.unwrap_or_default()));
            }
            "redacted_thinking" => thinking_blocks
                .push(json!({"type": "redacted_thinking", "data": block.data.unwrap_or_default()})),
            "tool_use" if block.name.as_deref() == Some(RESPONSE_TOOL) => {
                json_answer = Some(block.input.unwrap_or_else(|| json!({})).to_string())
            }
            "tool_use" => {
                let n = tool_calls.len();
                tool_calls.push(ToolCall {
                    id: block.id.unwrap_or_else(|| format!("call_{}_{n}", meta.id)),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: block.name.unwrap_or_default(),
                        arguments: block.input.unwrap_or_else(|| json!({})).to_string(),
                        rest: Rest::new(),
                    },
                    rest: Rest::new(),
                });
            }
            // Server tool blocks and citations-only blocks have no hub form.
            _ => {}
        }
    }
    // The structured answer is the whole answer, whatever prose came with it.
    if let Some(answer) = json_answer {
        text = answer;
    }
    let stop = resp.stop_reason.as_deref().unwrap_or("end_turn");
    let mut finish = finish_reason(stop);
    if finish == "tool_calls" && tool_calls.is_empty() {
        finish = "stop";
    }
    let mut choice_rest = Rest::new();
    if let (Some(seq), "stop_sequence") = (resp.stop_sequence, stop) {
        choice_rest.insert("stop_reason".into(), Value::String(seq));
    }
    let mut message_rest = Rest::new();
    if !thinking_blocks.is_empty() {
        message_rest.insert(THINKING_BLOCKS.into(), Value::Array(thinking_blocks));
    }
    let content = if text.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(text)
    };
    Ok(meta.completion(
        vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content,
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                rest: message_rest,
            },
            finish_reason: Some(finish.to_string()),
            rest: choice_rest,
        }],
        Some(hub_usage(&resp.usage)),
    ))
}

// ---------------------------------------------------------------------------------
// Hub answer → Anthropic client.

/// `msg_` + the hub id (without OpenAI's `chatcmpl-`).
pub(super) fn message_id(hub_id: &str) -> String {
    if hub_id.starts_with("msg_") {
        return hub_id.to_string();
    }
    format!("msg_{}", hub_id.strip_prefix("chatcmpl-").unwrap_or(hub_id))
}

/// Thinking blocks of a hub message or delta, as Anthropic blocks.
pub(super) fn thinking_blocks_of(rest: &Rest) -> Vec<an::ContentBlock> {
    rest.get(THINKING_BLOCKS)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| serde_json::from_value::<an::ContentBlock>(v.clone()).ok())
        .filter(|b| matches!(b.kind.as_str(), "thinking" | "redacted_thinking"))
        .collect()
}

/// `stop_reason` and `stop_sequence` for a hub finish reason and choice extras.
pub(super) fn client_stop(finish: &str, choice_rest: &Rest) -> (&'static str, Option<String>) {
    let seq = choice_rest.get("stop_reason").and_then(Value::as_str);
    match (finish, seq) {
        ("stop", Some(s)) => ("stop_sequence", Some(s.to_string())),
        _ => (stop_reason(finish), None),
    }
}

/// A hub answer as an Anthropic message.
pub fn client_response(completion: &ChatCompletion) -> Vec<u8> {
    let mut content = Vec::new();
    let mut stop = (None, None);
    if let Some(choice) = completion.choices.first() {
        let m = &choice.message;
        let thinking = thinking_blocks_of(&m.rest);
        if !thinking.is_empty() {
            content.extend(thinking);
        } else if let Some(r) = m.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            // No signature is known: fine for a client that replays through the
            // gateway, refused by Anthropic's own API.
            content.push(an::ContentBlock {
                kind: "thinking".into(),
                thinking: Some(r.to_string()),
                signature: Some(String::new()),
                ..Default::default()
            });
        }
        let refusal = m.rest.get("refusal").and_then(Value::as_str);
        if let Some(t) = m.content.as_deref().filter(|t| !t.is_empty()).or(refusal) {
            content.push(an::ContentBlock::text(t));
        }
        for call in m.tool_calls.iter().flatten() {
            let input = serde_json::from_str::<Value>(&call.function.arguments)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            content.push(an::ContentBlock {
                kind: "tool_use".into(),
                id: Some(call.id.clone()),
                name: Some(call.function.name.clone()),
                input: Some(input),
                ..Default::default()
            });
        }
        let finish = choice.finish_reason.as_deref().unwrap_or("stop");
        let (reason, seq) = client_stop(finish, &choice.rest);
        stop = (Some(reason.to_string()), seq);
    }
    let usage = anthropic_usage(&completion.usage.clone().unwrap_or_default());
    let resp = an::MessagesResponse {
        id: message_id(&completion.id),
        kind: "message".into(),
        role: "assistant".into(),
        content,
        model: completion.model.clone(),
        stop_reason: stop.0,
        stop_sequence: stop.1,
        usage,
        rest: Rest::new(),
    };
    serde_json::to_vec(&resp).unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// Errors.

/// The status the client gets for a provider's: kept where it means the same,
/// Bedrock's 424 (the model failed) as 502, a non-error status as 502.
fn client_status(status: u16) -> u16 {
    match status {
        424 => 502,
        400..=599 => status,
        _ => 502,
    }
}

pub(super) fn clip(message: &str) -> String {
    message.chars().take(MAX_MESSAGE_CHARS).collect()
}

fn generic_message(status: u16) -> String {
    format!("the Anthropic provider answered HTTP {status}")
}

pub(super) fn anthropic_kind(kind: &str) -> Option<ErrorKind> {
    Some(match kind {
        "invalid_request_error" => ErrorKind::InvalidRequest,
        "authentication_error" => ErrorKind::Authentication,
        "permission_error" | "billing_error" => ErrorKind::PermissionDenied,
        "not_found_error" => ErrorKind::NotFound,
        "request_too_large" => ErrorKind::RequestTooLarge,
        "rate_limit_error" => ErrorKind::RateLimit,
        "overloaded_error" => ErrorKind::Overloaded,
        "timeout_error" => ErrorKind::Timeout,
        "api_error" => ErrorKind::Server,
        _ => return None,
    })
}

/// The HTTP status Anthropic gives an error type (for errors met mid-stream).
pub(super) fn anthropic_status(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// Google's `error.status` on Vertex.
fn google_kind(status: &str) -> Option<ErrorKind> {
    Some(match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => ErrorKind::InvalidRequest,
        "UNAUTHENTICATED" => ErrorKind::Authentication,
        "PERMISSION_DENIED" => ErrorKind::PermissionDenied,
        "NOT_FOUND" => ErrorKind::NotFound,
        "RESOURCE_EXHAUSTED" => ErrorKind::RateLimit,
        "UNAVAILABLE" => ErrorKind::Overloaded,
        "DEADLINE_EXCEEDED" => ErrorKind::Timeout,
        "INTERNAL" | "UNKNOWN" => ErrorKind::Server,
        _ => return None,
    })
}

/// Bedrock's exception names (`ThrottlingException`; in streams `throttlingException`).
pub(super) fn bedrock_kind(name: &str) -> Option<ErrorKind> {
    Some(match name.to_ascii_lowercase().as_str() {
        "validationexception" => ErrorKind::InvalidRequest,
        "accessdeniedexception" => ErrorKind::PermissionDenied,
        "unrecognizedclientexception"
        | "expiredtokenexception"
        | "invalidsignatureexception"
        | "incompletesignatureexception" => ErrorKind::Authentication,
        "resourcenotfoundexception" => ErrorKind::NotFound,
        "throttlingexception" | "servicequotaexceededexception" | "modelnotreadyexception" => {
            ErrorKind::RateLimit
        }
        "modeltimeoutexception" => ErrorKind::Timeout,
        "serviceunavailableexception" => ErrorKind::Overloaded,
        "internalserverexception" | "modelerrorexception" | "modelstreamerrorexception" => {
            ErrorKind::Server
        }
        _ => return None,
    })
}

/// The status of an error class, for errors that come without one.
pub(super) fn kind_status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::InvalidRequest => 400,
        ErrorKind::Authentication => 401,
        ErrorKind::PermissionDenied => 403,
        ErrorKind::NotFound => 404,
        ErrorKind::RequestTooLarge => 413,
        ErrorKind::RateLimit => 429,
        ErrorKind::Timeout => 504,
        ErrorKind::Overloaded => 503,
        ErrorKind::Server => 502,
    }
}

pub(super) fn message_of(v: &Value) -> Option<String> {
    v.get("message")
        .or_else(|| v.get("Message"))
        .and_then(Value::as_str)
        .map(clip)
}

/// A provider's error answer, whatever the flavor: Anthropic's
/// `{"type":"error","error":{...}}`, Google's `{"error":{"code","message","status"}}`
/// (also wrapped in a list), Bedrock's `x-amzn-errortype` header with
/// `{"message": ...}`. Anything else gets a message naming the status; bodies are
/// not echoed.
pub fn error(status: u16, headers: &dyn Headers, body: &[u8]) -> ProviderError {
    let http = client_status(status);
    let doc = match serde_json::from_slice::<Value>(body).ok() {
        Some(Value::Array(mut list)) if !list.is_empty() => Some(list.swap_remove(0)),
        other => other,
    };
    let doc_message = doc.as_ref().and_then(message_of);
    if let Some(t) = headers.get("x-amzn-errortype") {
        let name = t.split(':').next().unwrap_or_default().trim();
        if !name.is_empty() {
            return ProviderError {
                status: http,
                kind: bedrock_kind(name).unwrap_or_else(|| ErrorKind::from_status(http)),
                code: Some(name.to_string()),
                message: doc_message.unwrap_or_else(|| generic_message(status)),
            };
        }
    }
    let Some(doc) = doc else {
        return ProviderError::new(http, None, generic_message(status));
    };
    if let Some(err) = doc.get("error").filter(|e| e.is_object()) {
        let message = message_of(err).unwrap_or_else(|| generic_message(status));
        if let Some(t) = err.get("type").and_then(Value::as_str) {
            let status = if (400..=599).contains(&status) {
                http
            } else {
                anthropic_status(t)
            };
            return ProviderError {
                status,
                kind: anthropic_kind(t).unwrap_or_else(|| ErrorKind::from_status(status)),
                code: Some(t.to_string()),
                message,
            };
        }
        if let Some(s) = err.get("status").and_then(Value::as_str) {
            return ProviderError {
                status: http,
                kind: google_kind(s).unwrap_or_else(|| ErrorKind::from_status(http)),
                code: Some(s.to_string()),
                message,
            };
        }
        return ProviderError::new(http, None, message);
    }
    if let Some(t) = doc.get("__type").and_then(Value::as_str) {
        let name = t.rsplit('#').next().unwrap_or(t);
        return ProviderError {
            status: http,
            kind: bedrock_kind(name).unwrap_or_else(|| ErrorKind::from_status(http)),
            code: Some(name.to_string()),
            message: doc_message.unwrap_or_else(|| generic_message(status)),
        };
    }
    ProviderError::new(
        http,
        None,
        doc_message.unwrap_or_else(|| generic_message(status)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::anthropic::tests::meta;

    const RESPONSE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/anthropic/response_tools.json"
    ));

    // ----- Anthropic answer → hub -----

    #[test]
    fn response_with_thinking_tools_and_cache() {
        let c = chat_response(RESPONSE, &meta()).unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "chatcmpl-abc", "object": "chat.completion", "created": 1_700_000_000u64, "model": "claude-test",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant",
                    "content": "Checking both cities.",
                    "reasoning_content": "Two cities, two calls.",
                    "tool_calls": [
                        {"id": "toolu_paris", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "toolu_rome", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\",\"units\":[\"c\"]}"}}
                    ],
                    "thinking_blocks": [
                        {"type": "thinking", "thinking": "Two cities, two calls.", "signature": "EqQBCgIYAhIMsig"},
                        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}
                    ]
                }}],
                "usage": {"prompt_tokens": 1240, "completion_tokens": 60, "total_tokens": 1300,
                          "prompt_tokens_details": {"cached_tokens": 1000, "cache_creation_tokens": 200}}
            })
        );
        // The gateway's own usage reader agrees with what the client is told.
        let mut meter =
            crate::metering::usage::ResponseMeter::new(crate::metering::usage::MeterOptions {
                format: crate::metering::usage::BodyFormat::Json,
                gzip: false,
                strip_usage_chunk: false,
                max_buffered: 1 << 20,
            });
        let _ = meter.feed(
            &serde_json::to_vec(&c).unwrap(),
            true,
            std::time::Duration::ZERO,
        );
        let u = meter.usage().unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.cached_input_tokens,
                u.cache_creation_input_tokens
            ),
            (1240, 1000, 200)
        );
    }

    #[test]
    fn response_stop_sequence_json_tool_and_refusal() {
        let c = chat_response(
            br#"{"content":[{"type":"text","text":"a"}],"stop_reason":"stop_sequence","stop_sequence":"END",
                 "usage":{"input_tokens":5,"output_tokens":1}}"#,
            &meta(),
        )
        .unwrap();
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(c.choices[0].rest.get("stop_reason"), Some(&json!("END")));
        let u = c.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.total_tokens), (5, 6));
        assert_eq!(u.prompt_tokens_details.unwrap().cache_creation_tokens, None);

        let c = chat_response(
            br#"{"content":[{"type":"text","text":"Sure:"},{"type":"tool_use","id":"t","name":"aigw_json_response","input":{"a":1}}],
                 "stop_reason":"tool_use","usage":{}}"#,
            &meta(),
        )
        .unwrap();
        assert_eq!(c.choices[0].message.content.as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(c.choices[0].message.tool_calls, None);
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("stop"));

        let c = chat_response(
            br#"{"content":[],"stop_reason":"refusal","usage":{"input_tokens":1,"output_tokens":0}}"#,
            &meta(),
        )
        .unwrap();
        assert_eq!(
            c.choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );
        assert_eq!(c.choices[0].message.content.as_deref(), Some(""));

        // Unknown blocks are skipped; a tool call without an id gets one.
        let c = chat_response(
            br#"{"content":[{"type":"server_tool_use","id":"s","name":"web_search","input":{}},
                            {"type":"tool_use","name":"f"}],"stop_reason":"tool_use"}"#,
            &meta(),
        )
        .unwrap();
        let calls = c.choices[0].message.tool_calls.clone().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].id, "call_chatcmpl-abc_0");
        assert_eq!(calls[0].function.arguments, "{}");
    }

    #[test]
    fn finish_reason_mapping() {
        for (anthropic, openai) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("something_new", "stop"),
        ] {
            assert_eq!(finish_reason(anthropic), openai);
        }
        for (openai, anthropic) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("function_call", "tool_use"),
            ("content_filter", "refusal"),
            ("other", "end_turn"),
        ] {
            assert_eq!(stop_reason(openai), anthropic);
        }
    }

    #[test]
    fn bad_response_is_502() {
        for b in [
            &b"not json"[..],
            br#"{"type":"error","error":{"type":"api_error","message":"x"}}"#,
            b"{}",
            br#"{"content":"text"}"#,
            b"",
        ] {
            let err = chat_response(b, &meta()).unwrap_err();
            assert_eq!(err.status(), 502, "{err:?}");
        }
    }

    // ----- hub answer → Anthropic client -----

    fn completion(v: Value) -> ChatCompletion {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn client_response_shapes() {
        let c = completion(json!({
            "id": "chatcmpl-123", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Here.", "reasoning_content": "think",
                "thinking_blocks": [{"type": "thinking", "thinking": "think", "signature": "s"}, {"type": "other"}],
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                               {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "not json"}}]}}],
            "usage": {"prompt_tokens": 1300, "completion_tokens": 50, "total_tokens": 1350,
                      "prompt_tokens_details": {"cached_tokens": 1000, "cache_creation_tokens": 200}}
        }));
        let v: Value = serde_json::from_slice(&client_response(&c)).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "msg_123", "type": "message", "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "think", "signature": "s"},
                    {"type": "text", "text": "Here."},
                    {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
                    {"type": "tool_use", "id": "call_2", "name": "g", "input": {}}
                ],
                "model": "gpt-4o", "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 100, "output_tokens": 50, "cache_creation_input_tokens": 200, "cache_read_input_tokens": 1000}
            })
        );

        for (finish, extra, reason, seq) in [
            ("stop", json!({}), "end_turn", Value::Null),
            (
                "stop",
                json!({"stop_reason": "END"}),
                "stop_sequence",
                json!("END"),
            ),
            (
                "stop",
                json!({"stop_reason": 50256}),
                "end_turn",
                Value::Null,
            ),
            ("length", json!({}), "max_tokens", Value::Null),
            ("content_filter", json!({}), "refusal", Value::Null),
        ] {
            let mut choice = json!({"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": "x"}});
            for (k, v) in extra.as_object().unwrap() {
                choice[k] = v.clone();
            }
            let c = completion(
                json!({"id": "msg_x", "object": "chat.completion", "created": 1, "model": "m", "choices": [choice]}),
            );
            let v: Value = serde_json::from_slice(&client_response(&c)).unwrap();
            assert_eq!(
                (v["stop_reason"].clone(), v["stop_sequence"].clone()),
                (json!(reason), seq),
                "{finish}"
            );
            assert_eq!(v["id"], "msg_x");
            assert_eq!(
                v["usage"],
                json!({"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
            );
        }

        // Reasoning without blocks, a refusal, and no choices at all.
        let c = completion(
            json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [
            {"index": 0, "finish_reason": "content_filter", "message": {"role": "assistant", "content": null,
             "reasoning_content": "r", "refusal": "I can't."}}]}),
        );
        let v: Value = serde_json::from_slice(&client_response(&c)).unwrap();
        assert_eq!(
            v["content"],
            json!([{"type": "thinking", "thinking": "r", "signature": ""}, {"type": "text", "text": "I can't."}])
        );
        let c = completion(
            json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": []}),
        );
        let v: Value = serde_json::from_slice(&client_response(&c)).unwrap();
        assert_eq!(
            (v["content"].clone(), v["stop_reason"].clone()),
            (json!([]), Value::Null)
        );
    }

    // ----- errors -----

    fn err(status: u16, headers: &[(&str, &str)], b: &str) -> ProviderError {
        error(status, &headers, b.as_bytes())
    }

    #[test]
    fn errors_of_each_flavor() {
        let e = err(
            529,
            &[],
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(
            e,
            ProviderError {
                status: 529,
                kind: ErrorKind::Overloaded,
                code: Some("overloaded_error".into()),
                message: "Overloaded".into()
            }
        );
        let e = err(
            429,
            &[],
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"},"request_id":"req_1"}"#,
        );
        assert_eq!((e.status, e.kind), (429, ErrorKind::RateLimit));
        let e = err(
            400,
            &[],
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: required"}}"#,
        );
        assert_eq!(
            (e.status, e.kind, e.message.as_str()),
            (400, ErrorKind::InvalidRequest, "max_tokens: required")
        );
        let e = err(
            402,
            &[],
            r#"{"type":"error","error":{"type":"billing_error","message":"pay"}}"#,
        );
        assert_eq!((e.status, e.kind), (402, ErrorKind::PermissionDenied));

        // Vertex: Google's shape, bare or in a list, or Anthropic's own.
        let e = err(
            429,
            &[],
            r#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!(
            e,
            ProviderError {
                status: 429,
                kind: ErrorKind::RateLimit,
                code: Some("RESOURCE_EXHAUSTED".into()),
                message: "Quota exceeded".into()
            }
        );
        let e = err(
            403,
            &[],
            r#"[{"error":{"code":403,"message":"denied","status":"PERMISSION_DENIED"}}]"#,
        );
        assert_eq!(
            (e.status, e.kind, e.code.as_deref()),
            (403, ErrorKind::PermissionDenied, Some("PERMISSION_DENIED"))
        );
        let e = err(
            404,
            &[],
            r#"{"error":{"code":404,"message":"Publisher model not found"}}"#,
        );
        assert_eq!((e.status, e.kind, e.code), (404, ErrorKind::NotFound, None));

        // Bedrock: the header names the exception.
        let hdr = [(
            "x-amzn-errortype",
            "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/",
        )];
        let e = err(400, &hdr, r#"{"message":"max_tokens: field required"}"#);
        assert_eq!(
            e,
            ProviderError {
                status: 400,
                kind: ErrorKind::InvalidRequest,
                code: Some("ValidationException".into()),
                message: "max_tokens: field required".into()
            }
        );
        let e = err(
            429,
            &[("x-amzn-errortype", "ThrottlingException")],
            r#"{"Message":"Too many requests"}"#,
        );
        assert_eq!(
            (e.status, e.kind, e.message.as_str()),
            (429, ErrorKind::RateLimit, "Too many requests")
        );
        let e = err(
            424,
            &[("x-amzn-errortype", "ModelErrorException")],
            r#"{"message":"boom"}"#,
        );
        assert_eq!((e.status, e.kind), (502, ErrorKind::Server));
        let e = err(
            403,
            &[],
            r#"{"__type":"com.amazon.coral#AccessDeniedException","message":"no"}"#,
        );
        assert_eq!(
            (e.status, e.kind, e.code.as_deref()),
            (
                403,
                ErrorKind::PermissionDenied,
                Some("AccessDeniedException")
            )
        );
        let e = err(500, &[("x-amzn-errortype", "InternalServerException")], "");
        assert_eq!(e.message, "the Anthropic provider answered HTTP 500");

        // Not JSON: a message naming the status, never the body.
        let e = err(
            502,
            &[],
            "<html><body>Bad Gateway secret-token</body></html>",
        );
        assert_eq!(
            e,
            ProviderError::new(502, None, "the Anthropic provider answered HTTP 502")
        );
        let e = err(503, &[], "");
        assert_eq!((e.status, e.kind), (503, ErrorKind::Overloaded));
        let e = err(200, &[], "{}");
        assert_eq!(e.status, 502);
        let e = err(
            200,
            &[],
            r#"{"type":"error","error":{"type":"overloaded_error","message":"x"}}"#,
        );
        assert_eq!(e.status, 529);
        let long = "x".repeat(5000);
        let e = err(
            400,
            &[],
            &json!({"type": "error", "error": {"type": "invalid_request_error", "message": long}})
                .to_string(),
        );
        assert_eq!(e.message.len(), MAX_MESSAGE_CHARS);
    }
}
