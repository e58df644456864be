//! Provider answer → client answer: a `generateContent` answer as a
//! `chat.completion`, an embeddings answer as OpenAI's list, and Google's error
//! answer as the client's error.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{Api, GenerateContentResponse, UsageMetadata};
use crate::host::Headers;
use crate::schema::openai::{
    ChatCompletion, Choice, Embedding, EmbeddingVector, EmbeddingsResponse, EmbeddingsUsage,
    FunctionCall, ResponseMessage, Role, ToolCall,
};
use crate::translate::{ProviderError, ResponseMeta, TranslateError};

// ---------------------------------------------------------------------------------
// Chat response.

/// Gemini's `finishReason` as OpenAI's `finish_reason`. Reasons OpenAI has no word for
/// (`MALFORMED_FUNCTION_CALL`, `LANGUAGE`, `OTHER`, any a newer API adds) become
/// `stop` rather than failing the answer. A candidate that stopped after calling
/// functions reports `tool_calls` (the caller checks; Gemini says `STOP`).
pub fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ => "stop",
    }
}

/// A candidate's finish reason, `tool_calls` when it stopped after calling functions.
pub(super) fn candidate_finish(reason: &str, called: bool) -> &'static str {
    match finish_reason(reason) {
        "stop" if called => "tool_calls",
        other => other,
    }
}

pub(super) fn call_id(meta: &ResponseMeta, n: usize) -> String {
    format!("call_{}_{n}", meta.id)
}

/// Google's OpenAI-compatible home for a thought signature on a tool call.
pub(super) fn signature_rest(signature: Option<String>) -> Map<String, Value> {
    let mut rest = Map::new();
    if let Some(sig) = signature {
        rest.insert(
            "extra_content".into(),
            json!({ "google": { "thought_signature": sig } }),
        );
    }
    rest
}

/// Translates a `generateContent` answer into a `chat.completion`.
///
/// Each candidate is a choice (its `index`); text parts make `content`, `thought`
/// parts `reasoning_content`, function calls `tool_calls` (id: the part's `id`, else
/// `call_<meta.id>_<n>` numbered across the answer; a thought signature goes in the
/// call's `extra_content.google.thought_signature`, where Google's own OpenAI layer
/// puts it and where [`chat_request`] reads it back). A prompt blocked
/// (`promptFeedback.blockReason`, no candidates) is an answer, not an error: one empty
/// choice with `finish_reason: content_filter`, as OpenAI reports its own filter.
///
/// [`chat_request`]: super::chat_request
pub fn chat_response(body: &[u8], meta: &ResponseMeta) -> Result<ChatCompletion, TranslateError> {
    let resp: GenerateContentResponse = serde_json::from_slice(body)
        .map_err(|e| TranslateError::BadResponse(format!("Gemini response: {e}")))?;
    let mut choices = Vec::new();
    if resp.candidates.is_empty() {
        if resp
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_ref())
            .is_none()
        {
            return Err(TranslateError::BadResponse(
                "the Gemini response has no candidates".into(),
            ));
        }
        choices.push(Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content: Some(String::new()),
                reasoning_content: None,
                tool_calls: None,
                rest: Default::default(),
            },
            finish_reason: Some("content_filter".into()),
            rest: Default::default(),
        });
    }
    let mut n = 0;
    for (p, c) in resp.candidates.into_iter().enumerate() {
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut tool_calls = Vec::new();
        for part in c.content.map(|c| c.parts).unwrap_or_default() {
            if let Some(fc) = part.function_call {
                tool_calls.push(ToolCall {
                    id: fc.id.unwrap_or_else(|| call_id(meta, n)),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: fc.name,
                        arguments: args_text(fc.args),
                        rest: Default::default(),
                    },
                    rest: signature_rest(part.thought_signature),
                });
                n += 1;
            } else if let Some(t) = part.text {
                if part.thought == Some(true) {
                    reasoning.push_str(&t);
                } else {
                    text.push_str(&t);
                }
            }
        }
        let finish = c
            .finish_reason
            .as_deref()
            .map(|r| candidate_finish(r, !tool_calls.is_empty()).to_string());
        choices.push(Choice {
            index: c
                .index
                .unwrap_or_else(|| u32::try_from(p).unwrap_or(u32::MAX)),
            message: ResponseMessage {
                role: Role::Assistant,
                content: (!text.is_empty() || tool_calls.is_empty()).then_some(text),
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                rest: Default::default(),
            },
            finish_reason: finish,
            rest: Default::default(),
        });
    }
    Ok(meta.completion(choices, resp.usage_metadata.map(UsageMetadata::to_openai)))
}

/// Function call arguments as JSON text (`{}` when Gemini sent none).
pub(super) fn args_text(args: Option<Value>) -> String {
    match args {
        None | Some(Value::Null) => "{}".into(),
        Some(v) => serde_json::to_string(&v).unwrap_or_else(|_| "{}".into()),
    }
}

// ---------------------------------------------------------------------------------
// Errors.

/// Longest provider message passed on.
const MAX_MESSAGE_CHARS: usize = 4000;

/// Gemini's error answer as a [`ProviderError`].
///
/// Bodies are Google's `{"error": {"code", "message", "status", "details"}}` (Vertex
/// may wrap it in a JSON array). The status follows the canonical `status` name where
/// one is given (`RESOURCE_EXHAUSTED` 429, `UNAVAILABLE` 503, `DEADLINE_EXCEEDED` 504,
/// ...), and an AI Studio `API_KEY_INVALID` (sent as 400) becomes 401; `code` is the
/// `status` name. A body that is not Google's shape yields a message naming the HTTP
/// status (plus a short plain-text body, never HTML or a long one). Headers are not
/// read: Google puts nothing there the client needs.
pub fn error(status: u16, _headers: &dyn Headers, body: &[u8]) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(e) = parsed.as_ref().and_then(error_object) {
        return error_from_object(Some(status), e);
    }
    let status = client_status(None, status);
    let text = std::str::from_utf8(body).map(str::trim).unwrap_or_default();
    let message = if parsed.is_none()
        && !text.is_empty()
        && text.len() <= 200
        && !text.starts_with('<')
        && !text.contains('\n')
    {
        format!("Gemini returned HTTP {status}: {text}")
    } else {
        format!("Gemini returned HTTP {status}")
    };
    ProviderError::new(status, None, message)
}

/// The `error` member of an error document, or of the first of a Vertex array.
pub(super) fn error_object(v: &Value) -> Option<&Value> {
    let doc = match v {
        Value::Array(a) => a.first()?,
        other => other,
    };
    doc.get("error").filter(|e| e.is_object())
}

/// A Google error object; `http` is the response status (none mid-stream; there, or
/// when it is no error status, the object's own `code` stands in).
pub(super) fn error_from_object(http: Option<u16>, e: &Value) -> ProviderError {
    let grpc = e
        .get("status")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let code = e
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok());
    let key_invalid = e
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"));
    let status = if key_invalid {
        401
    } else {
        let http = http.filter(|h| (400..=599).contains(h));
        client_status(grpc, http.or(code).unwrap_or(0))
    };
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| m.chars().take(MAX_MESSAGE_CHARS).collect())
        .unwrap_or_else(|| format!("Gemini returned HTTP {status}"));
    ProviderError::new(status, grpc.map(str::to_string), message)
}

/// The client's status from a canonical status name, else the HTTP status (502 when
/// that is not an error status).
fn client_status(grpc: Option<&str>, http: u16) -> u16 {
    match grpc {
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") => 400,
        Some("UNAUTHENTICATED") => 401,
        Some("PERMISSION_DENIED") => 403,
        Some("NOT_FOUND") => 404,
        Some("ABORTED" | "ALREADY_EXISTS") => 409,
        Some("RESOURCE_EXHAUSTED") => 429,
        Some("INTERNAL" | "UNKNOWN" | "DATA_LOSS") => 500,
        Some("UNIMPLEMENTED") => 501,
        Some("UNAVAILABLE") => 503,
        Some("DEADLINE_EXCEEDED") => 504,
        _ if (400..=599).contains(&http) => http,
        _ => 502,
    }
}

// ---------------------------------------------------------------------------------
// Embeddings.

#[derive(Debug, Deserialize)]
struct BatchEmbedResponse {
    embeddings: Vec<ContentEmbedding>,
}

#[derive(Debug, Deserialize)]
struct ContentEmbedding {
    values: Vec<f32>,
}

#[derive(Debug, Deserialize)]
struct PredictResponse {
    predictions: Vec<Prediction>,
}

#[derive(Debug, Deserialize)]
struct Prediction {
    embeddings: PredictionEmbedding,
}

#[derive(Debug, Deserialize)]
struct PredictionEmbedding {
    values: Vec<f32>,
    #[serde(default)]
    statistics: Option<EmbeddingStatistics>,
}

#[derive(Debug, Deserialize)]
struct EmbeddingStatistics {
    /// A JSON number Vertex may write as `6.0`.
    #[serde(default)]
    token_count: f64,
}

/// Translates an embeddings answer into OpenAI's `list`, `model` as given. Usage: on
/// Vertex the sum of each prediction's `statistics.token_count`; AI Studio reports no
/// token counts, so its usage is 0.
pub fn embeddings_response(
    body: &[u8],
    api: &Api,
    model: &str,
    base64: bool,
) -> Result<EmbeddingsResponse, TranslateError> {
    let bad = |e: serde_json::Error| TranslateError::BadResponse(format!("Gemini embeddings: {e}"));
    let (vectors, tokens): (Vec<Vec<f32>>, u64) = match api {
        Api::AiStudio { .. } => {
            let r: BatchEmbedResponse = serde_json::from_slice(body).map_err(bad)?;
            (r.embeddings.into_iter().map(|e| e.values).collect(), 0)
        }
        Api::Vertex { .. } => {
            let r: PredictResponse = serde_json::from_slice(body).map_err(bad)?;
            let mut tokens = 0u64;
            let mut vectors = Vec::with_capacity(r.predictions.len());
            for p in r.predictions {
                let count = p.embeddings.statistics.map_or(0.0, |s| s.token_count);
                if count.is_finite() && count > 0.0 {
                    // Saturating float-to-int cast.
                    tokens = tokens.saturating_add(count as u64);
                }
                vectors.push(p.embeddings.values);
            }
            (vectors, tokens)
        }
    };
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| Embedding {
            object: "embedding".into(),
            index: u32::try_from(i).unwrap_or(u32::MAX),
            embedding: EmbeddingVector::new(v, base64),
        })
        .collect();
    Ok(EmbeddingsResponse {
        object: "list".into(),
        data,
        model: model.to_string(),
        usage: EmbeddingsUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
        rest: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::gemini::tests::{fixture, golden, meta, STUDIO, VERTEX};
    use crate::translate::testing::pretty;

    // ----- response -----

    #[test]
    fn golden_response_text() {
        let out = chat_response(&fixture("response_text.gemini.json"), &meta()).unwrap();
        golden("response_text.openai.json", &pretty(&out));
        let u = out.usage.clone().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (1210, 50, 1260)
        );
        assert_eq!(u.prompt_tokens_details.unwrap().cached_tokens, Some(1024));
        assert_eq!(
            u.completion_tokens_details.unwrap().reasoning_tokens,
            Some(36)
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
            &serde_json::to_vec(&out).unwrap(),
            true,
            std::time::Duration::ZERO,
        );
        assert_eq!(
            meter.usage(),
            Some(crate::metering::usage::TokenUsage {
                input_tokens: 1210,
                output_tokens: 50,
                total_tokens: 1260,
                cached_input_tokens: 1024,
                cache_creation_input_tokens: 0,
                reasoning_tokens: 36,
            })
        );
    }

    #[test]
    fn response_finish_reasons() {
        for (gemini, openai) in [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
            ("BLOCKLIST", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"),
            ("IMAGE_SAFETY", "content_filter"),
            ("MALFORMED_FUNCTION_CALL", "stop"),
            ("OTHER", "stop"),
            ("SOMETHING_NEW", "stop"),
        ] {
            assert_eq!(finish_reason(gemini), openai);
            let b = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": gemini}]});
            let out = chat_response(&serde_json::to_vec(&b).unwrap(), &meta()).unwrap();
            assert_eq!(out.choices[0].finish_reason.as_deref(), Some(openai));
        }
        // A safety stop may come without content.
        let b = br#"{"candidates": [{"finishReason": "SAFETY", "index": 0}]}"#;
        let out = chat_response(b, &meta()).unwrap();
        assert_eq!(out.choices[0].message.content.as_deref(), Some(""));
        assert_eq!(out.usage, None);
    }

    #[test]
    fn response_blocked_prompt_and_candidates() {
        let b = br#"{"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                     "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}}"#;
        let out = chat_response(b, &meta()).unwrap();
        assert_eq!(out.choices.len(), 1);
        assert_eq!(
            out.choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );
        assert_eq!(out.choices[0].message.content.as_deref(), Some(""));
        assert_eq!(out.usage.unwrap().total_tokens, 7);

        let b = br#"{"candidates": [
            {"content": {"parts": [{"text": "one"}]}, "finishReason": "STOP", "index": 0},
            {"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]}, "finishReason": "STOP", "index": 1},
            {"content": {"parts": [{"text": "three"}]}, "finishReason": "MAX_TOKENS"}
        ]}"#;
        let out = chat_response(b, &meta()).unwrap();
        let got: Vec<(u32, Option<&str>, Option<&str>)> = out
            .choices
            .iter()
            .map(|c| {
                (
                    c.index,
                    c.message.content.as_deref(),
                    c.finish_reason.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, Some("one"), Some("stop")),
                (1, None, Some("tool_calls")),
                (2, Some("three"), Some("length"))
            ]
        );
    }

    #[test]
    fn response_usage_counts_tool_use_prompt_as_input() {
        let b = br#"{"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 10, "toolUsePromptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 18}}"#;
        let u = chat_response(b, &meta()).unwrap().usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (15, 3, 18)
        );
    }

    #[test]
    fn bad_response_is_502() {
        for b in [
            &b"not json"[..],
            b"",
            b"[]",
            b"{}",
            br#"{"candidates": []}"#,
            br#"{"candidates": 5}"#,
            br#"{"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]}"#,
            br#"{"error": {"code": 500, "message": "x"}}"#,
        ] {
            let e = chat_response(b, &meta()).unwrap_err();
            assert_eq!(e.status(), 502, "{}", String::from_utf8_lossy(b));
        }
    }

    // ----- errors -----

    #[test]
    fn error_statuses() {
        let h: [(&str, &str); 0] = [];
        for (http, status, want, kind) in [
            (400, "INVALID_ARGUMENT", 400, "invalid_request_error"),
            (400, "FAILED_PRECONDITION", 400, "invalid_request_error"),
            (401, "UNAUTHENTICATED", 401, "authentication_error"),
            (403, "PERMISSION_DENIED", 403, "permission_error"),
            (404, "NOT_FOUND", 404, "invalid_request_error"),
            (429, "RESOURCE_EXHAUSTED", 429, "rate_limit_error"),
            (500, "INTERNAL", 500, "server_error"),
            (503, "UNAVAILABLE", 503, "server_error"),
            (504, "DEADLINE_EXCEEDED", 504, "server_error"),
            (499, "CANCELLED", 499, "server_error"),
            (418, "SOMETHING_NEW", 418, "server_error"),
        ] {
            let body = json!({"error": {"code": http, "message": "m", "status": status}});
            let e = error(http, &h, &serde_json::to_vec(&body).unwrap());
            assert_eq!(
                (e.status, e.code.as_deref()),
                (want, Some(status)),
                "{status}"
            );
            let v: Value = serde_json::from_slice(&e.openai_body()).unwrap();
            assert_eq!(v["error"]["type"], kind, "{status}");
            assert_eq!(v["error"]["message"], "m");
        }
        // AI Studio sends a bad key as 400 INVALID_ARGUMENT with a reason.
        let e = error(
            400,
            &h,
            br#"{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
                 "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}}"#,
        );
        assert_eq!(
            (e.status, e.kind),
            (401, crate::translate::ErrorKind::Authentication)
        );
        // Vertex wraps errors in an array.
        let e = error(
            429,
            &h,
            br#"[{"error": {"code": 429, "message": "Resource exhausted. Please try again later.", "status": "RESOURCE_EXHAUSTED"}}]"#,
        );
        assert_eq!(e.status, 429);
        assert_eq!(e.message, "Resource exhausted. Please try again later.");
        // An error document under a success status: its own code stands in.
        let e = error(
            200,
            &h,
            br#"{"error": {"code": 429, "message": "slow down"}}"#,
        );
        assert_eq!((e.status, e.code.clone()), (429, None));
        // No status name: the HTTP status stands.
        let e = error(404, &h, br#"{"error": {"code": 404, "message": ""}}"#);
        assert_eq!((e.status, e.code.clone()), (404, None));
        assert_eq!(e.message, "Gemini returned HTTP 404");
    }

    #[test]
    fn error_bodies_that_are_not_google_errors() {
        let h = [("content-type", "text/html")];
        let e = error(502, &h, b"<html><body>Bad Gateway</body></html>");
        assert_eq!(
            (e.status, e.message.as_str()),
            (502, "Gemini returned HTTP 502")
        );
        let e = error(
            503,
            &h,
            b"upstream connect error or disconnect/reset before headers",
        );
        assert_eq!(
            e.message,
            "Gemini returned HTTP 503: upstream connect error or disconnect/reset before headers"
        );
        let e = error(500, &h, &[b'x'; 5000]);
        assert_eq!(e.message, "Gemini returned HTTP 500");
        let e = error(200, &h, b"");
        assert_eq!(
            (e.status, e.message.as_str()),
            (502, "Gemini returned HTTP 502")
        );
        let e = error(429, &h, br#"{"message": "not google's shape"}"#);
        assert_eq!(
            (e.status, e.kind),
            (429, crate::translate::ErrorKind::RateLimit)
        );
        assert_eq!(e.message, "Gemini returned HTTP 429");
        let e = error(400, &h, &[0xff, 0xfe, 0x00]);
        assert_eq!(e.message, "Gemini returned HTTP 400");
        // Long provider messages are cut.
        let long = "y".repeat(10_000);
        let e = error(
            400,
            &h,
            &serde_json::to_vec(&json!({"error": {"message": long}})).unwrap(),
        );
        assert_eq!(e.message.len(), MAX_MESSAGE_CHARS);
    }

    // ----- embeddings -----

    #[test]
    fn embeddings_responses() {
        let r = embeddings_response(
            br#"{"embeddings": [{"values": [1.0, -2.5]}, {"values": [0.25]}]}"#,
            &STUDIO,
            "gemini-embedding-001",
            false,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"object": "list", "data": [
                {"object": "embedding", "index": 0, "embedding": [1.0, -2.5]},
                {"object": "embedding", "index": 1, "embedding": [0.25]}
            ], "model": "gemini-embedding-001", "usage": {"prompt_tokens": 0, "total_tokens": 0}})
        );
        let r = embeddings_response(
            br#"{"predictions": [
                {"embeddings": {"values": [1.0, -2.5], "statistics": {"token_count": 6, "truncated": false}}},
                {"embeddings": {"values": [0.5], "statistics": {"token_count": 4.0, "truncated": false}}},
                {"embeddings": {"values": [0.5]}}
            ], "metadata": {"billableCharacterCount": 12}}"#,
            &VERTEX,
            "text-embedding-005",
            true,
        )
        .unwrap();
        assert_eq!(
            r.data[0].embedding,
            EmbeddingVector::Base64("AACAPwAAIMA=".into())
        );
        assert_eq!((r.usage.prompt_tokens, r.usage.total_tokens), (10, 10));
        assert_eq!(r.model, "text-embedding-005");
        for (body, api) in [
            (&b"nope"[..], STUDIO),
            (br#"{"predictions": []}"#, STUDIO),
            (br#"{"embeddings": [{"values": ["x"]}]}"#, STUDIO),
            (br#"{"embeddings": []}"#, VERTEX),
            (br#"{"predictions": [{"embeddings": {}}]}"#, VERTEX),
        ] {
            let e = embeddings_response(body, &api, "m", false).unwrap_err();
            assert_eq!(e.status(), 502);
        }
    }
}
