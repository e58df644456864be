//! Provider answer → client answer: a Converse answer as a `chat.completion`, a Titan
//! answer as an embeddings list, and Bedrock's error answer as the client's error.

use serde::Deserialize;
use serde_json::{json, Value};

use super::Usage;
use crate::host::Headers;
use crate::schema::openai::{
    ChatCompletion, Choice, Embedding, EmbeddingVector, EmbeddingsResponse, EmbeddingsUsage,
    FunctionCall, ResponseMessage, Rest, Role, ToolCall,
};
use crate::translate::openai::{clip, plain_reason, MAX_MESSAGE_CHARS};
use crate::translate::{ProviderError, ResponseMeta, TranslateError};

// ---------------------------------------------------------------------------------
// Wire types, response side (read).

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    output: Output,
    stop_reason: String,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct Output {
    #[serde(default)]
    message: Option<OutMessage>,
}

#[derive(Debug, Deserialize)]
struct OutMessage {
    #[serde(default)]
    content: Vec<OutBlock>,
}

/// A response content block: a union of which only the members read are named.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutBlock {
    text: Option<String>,
    tool_use: Option<OutToolUse>,
    reasoning_content: Option<OutReasoning>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutToolUse {
    tool_use_id: String,
    name: String,
    #[serde(default)]
    input: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutReasoning {
    reasoning_text: Option<OutReasoningText>,
    redacted_content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OutReasoningText {
    #[serde(default)]
    text: String,
    signature: Option<String>,
}

/// Bedrock's `stopReason` as OpenAI's `finish_reason`. Reasons OpenAI has no word
/// for (`malformed_model_output`, `malformed_tool_use`, and any a newer API adds)
/// become `stop` rather than failing the answer.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

// ---------------------------------------------------------------------------------
// Chat response.

/// Translates a Converse answer into a `chat.completion`.
pub fn chat_response(body: &[u8], meta: &ResponseMeta) -> Result<ChatCompletion, TranslateError> {
    let resp: ConverseResponse = serde_json::from_slice(body)
        .map_err(|e| TranslateError::BadResponse(format!("Converse response: {e}")))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    for block in resp.output.message.map(|m| m.content).unwrap_or_default() {
        if let Some(t) = block.text {
            text.push_str(&t);
        }
        if let Some(r) = block.reasoning_content {
            if let Some(rt) = r.reasoning_text {
                reasoning.push_str(&rt.text);
                if let Some(sig) = rt.signature {
                    thinking_blocks.push(thinking_block(&rt.text, &sig));
                }
            }
            if let Some(data) = r.redacted_content {
                thinking_blocks.push(redacted_block(&data));
            }
        }
        if let Some(tu) = block.tool_use {
            let id = tool_id(tu.tool_use_id, &meta.id, tool_calls.len());
            tool_calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall {
                    name: tu.name,
                    arguments: serde_json::to_string(&tu.input).unwrap_or_default(),
                    rest: Rest::new(),
                },
                rest: Rest::new(),
            });
        }
    }
    let content = if text.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(text)
    };
    let mut rest = Rest::new();
    if !thinking_blocks.is_empty() {
        rest.insert("thinking_blocks".into(), Value::Array(thinking_blocks));
    }
    Ok(meta.completion(
        vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content,
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                rest,
            },
            finish_reason: Some(finish_reason(&resp.stop_reason).to_string()),
            rest: Rest::new(),
        }],
        Some(resp.usage.unwrap_or_default().to_hub()),
    ))
}

pub(super) fn thinking_block(text: &str, signature: &str) -> Value {
    json!({"type": "thinking", "thinking": text, "signature": signature})
}

pub(super) fn redacted_block(data: &str) -> Value {
    json!({"type": "redacted_thinking", "data": data})
}

/// Bedrock names every tool use; should one come without, a stable id is derived.
pub(super) fn tool_id(id: String, response_id: &str, n: usize) -> String {
    if id.is_empty() {
        format!("call_{response_id}_{n}")
    } else {
        id
    }
}

// ---------------------------------------------------------------------------------
// Errors.

/// Bedrock's error answer (status, `x-amzn-errortype`, body `{"message"}` or
/// `{"Message"}`) for the client. `code` is the exception name; the status follows
/// the exception (see [`exception_status`]) and otherwise stays as Bedrock sent it.
pub fn error(status: u16, headers: &dyn Headers, body: &[u8]) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    // `x-amzn-errortype: ValidationException:http://internal.amazon.com/...`; bodies
    // may instead carry `__type: "com.amazon.coral...#ValidationException"`.
    let name = headers
        .get("x-amzn-errortype")
        .map(|t| exception_name(&t))
        .filter(|t| !t.is_empty())
        .or_else(|| {
            parsed
                .as_ref()
                .and_then(|v| v.get("__type"))
                .and_then(Value::as_str)
                .map(exception_name)
                .filter(|t| !t.is_empty())
        });
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .map(|m| clip(m, MAX_MESSAGE_CHARS))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| generic_message(status, name.as_deref(), parsed.is_none(), body));
    let mapped =
        name.as_deref()
            .and_then(exception_status)
            .unwrap_or(if (400..=599).contains(&status) {
                status
            } else {
                502
            });
    ProviderError::new(mapped, name, message)
}

/// A message for a body that has none: the status, the exception name, and a short
/// plain-text reason, never HTML or a long body.
fn generic_message(status: u16, name: Option<&str>, non_json: bool, body: &[u8]) -> String {
    let mut m = format!("Bedrock returned HTTP {status}");
    if let Some(n) = name {
        m.push_str(&format!(" ({n})"));
    }
    if let Some(reason) = plain_reason(body).filter(|_| non_json) {
        m.push_str(": ");
        m.push_str(reason);
    }
    m
}

/// `ThrottlingException:http://...`, `com.amazon.coral#ThrottlingException` or a
/// stream's `throttlingException`, as `ThrottlingException`.
pub(crate) fn exception_name(raw: &str) -> String {
    let raw = raw.rsplit('#').next().unwrap_or(raw);
    let raw = raw.split(':').next().unwrap_or(raw).trim();
    let mut chars = raw.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The client status for a Bedrock exception; `None` keeps Bedrock's status.
///
/// - `ModelErrorException` (Bedrock: 424) and the stream's `ModelStreamErrorException`
///   become 502: the model behind Bedrock failed, and 424 means nothing to OpenAI or
///   Anthropic clients, which retry a 502.
/// - `ServiceQuotaExceededException` (Bedrock: 400) and `ModelNotReadyException`
///   become 429: both ask the caller to come back later.
/// - Credential failures (`UnrecognizedClientException`, `InvalidSignatureException`,
///   `ExpiredTokenException`, ...; Bedrock: 403) become 401: they are authentication
///   failures, not permission ones; the code names the exception.
pub(super) fn exception_status(name: &str) -> Option<u16> {
    let lower = name.to_ascii_lowercase();
    if let Some(status) = common_exception_status(&lower) {
        return Some(status);
    }
    Some(match lower.as_str() {
        "validationexception" => 400,
        "resourcenotfoundexception" => 404,
        "modeltimeoutexception" => 408,
        "conflictexception" => 409,
        "throttlingexception" | "servicequotaexceededexception" | "modelnotreadyexception" => 429,
        "internalserverexception" => 500,
        "modelerrorexception" | "modelstreamerrorexception" => 502,
        "serviceunavailableexception" => 503,
        _ => return None,
    })
}

/// The client status of an error every AWS service answers alike (`lower`: the
/// exception's name, lower-cased): its credentials or signature (401: an
/// authentication failure, whatever status the service gave) and its permissions
/// (403). `None` for every other exception.
pub(crate) fn common_exception_status(lower: &str) -> Option<u16> {
    match lower {
        "unrecognizedclientexception"
        | "invalidsignatureexception"
        | "expiredtokenexception"
        | "incompletesignatureexception"
        | "missingauthenticationtokenexception"
        | "invalidclienttokenid" => Some(401),
        "accessdeniedexception" => Some(403),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------
// Embeddings (Amazon Titan Text Embeddings, v1 and v2).

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanResponse {
    embedding: Vec<f32>,
    #[serde(default)]
    input_text_token_count: u64,
}

/// Translates a Titan answer (`{"embedding": [...], "inputTextTokenCount": n}`) into
/// an OpenAI embeddings list; `base64` when the client asked for that encoding.
pub fn embeddings_response(
    body: &[u8],
    model: &str,
    base64: bool,
) -> Result<EmbeddingsResponse, TranslateError> {
    let resp: TitanResponse = serde_json::from_slice(body)
        .map_err(|e| TranslateError::BadResponse(format!("Titan embeddings response: {e}")))?;
    let tokens = resp.input_text_token_count;
    Ok(EmbeddingsResponse {
        object: "list".into(),
        data: vec![Embedding {
            object: "embedding".into(),
            index: 0,
            embedding: EmbeddingVector::new(resp.embedding, base64),
        }],
        model: model.to_string(),
        usage: EmbeddingsUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
        rest: Rest::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::bedrock::tests::{fixture, golden, meta};
    use crate::translate::testing::{pretty, Rng};
    use crate::translate::ErrorKind;

    // ----- response -----

    #[test]
    fn golden_response_text() {
        let out = chat_response(&fixture("response_text.bedrock.json"), &meta()).unwrap();
        golden("response_text.openai.json", &pretty(&out));
        let u = out.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (25, 9, 34)
        );
        assert_eq!(u.prompt_tokens_details, None);
    }

    #[test]
    fn golden_response_tools() {
        let out = chat_response(&fixture("response_tools.bedrock.json"), &meta()).unwrap();
        golden("response_tools.openai.json", &pretty(&out));
        let msg = &out.choices[0].message;
        assert_eq!(msg.content, None);
        assert_eq!(out.choices[0].finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            msg.reasoning_content.as_deref(),
            Some("Two cities, two calls.")
        );
        assert_eq!(
            msg.rest["thinking_blocks"],
            json!([{"type": "thinking", "thinking": "Two cities, two calls.", "signature": "c2ln"}])
        );
        let args = &msg.tool_calls.as_ref().unwrap()[1].function.arguments;
        assert_eq!(
            serde_json::from_str::<Value>(args).unwrap(),
            json!({"city": "Rome", "units": ["c"]})
        );
        let u = out.usage.clone().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (1240, 60, 1300)
        );
        let d = u.prompt_tokens_details.unwrap();
        assert_eq!(
            (d.cached_tokens, d.cache_creation_tokens),
            (Some(1000), Some(200))
        );

        // The gateway's own usage reader agrees with what the client is told.
        let bytes = serde_json::to_vec(&out).unwrap();
        let mut meter =
            crate::metering::usage::ResponseMeter::new(crate::metering::usage::MeterOptions {
                format: crate::metering::usage::BodyFormat::Json,
                gzip: false,
                strip_usage_chunk: false,
                max_buffered: 1 << 20,
            });
        let _ = meter.feed(&bytes, true, std::time::Duration::ZERO);
        assert_eq!(
            meter.usage(),
            Some(crate::metering::usage::TokenUsage {
                input_tokens: 1240,
                output_tokens: 60,
                total_tokens: 1300,
                cached_input_tokens: 1000,
                cache_creation_input_tokens: 200,
                reasoning_tokens: 0,
            })
        );
    }

    #[test]
    fn response_redacted_reasoning_and_unnamed_tools() {
        let body = json!({"output": {"message": {"role": "assistant", "content": [
            {"reasoningContent": {"redactedContent": "cmVk"}},
            {"reasoningContent": {"reasoningText": {"text": "unsigned"}}},
            {"text": "Hi"},
            {"toolUse": {"toolUseId": "", "name": "f", "input": {}}},
            {"image": {"format": "png", "source": {"bytes": "AA=="}}}
        ]}}, "stopReason": "tool_use",
           "usage": {"inputTokens": 1, "outputTokens": 2, "cacheReadInputTokens": 0, "cacheWriteInputTokens": 7}});
        let out = chat_response(&serde_json::to_vec(&body).unwrap(), &meta()).unwrap();
        let msg = &out.choices[0].message;
        assert_eq!(msg.content.as_deref(), Some("Hi"));
        assert_eq!(msg.reasoning_content.as_deref(), Some("unsigned"));
        assert_eq!(
            msg.rest["thinking_blocks"],
            json!([{"type": "redacted_thinking", "data": "cmVk"}])
        );
        assert_eq!(
            msg.tool_calls.as_ref().unwrap()[0].id,
            "call_chatcmpl-test_0"
        );
        let u = out.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.total_tokens), (8, 10));
        let d = u.prompt_tokens_details.unwrap();
        assert_eq!(
            (d.cached_tokens, d.cache_creation_tokens),
            (Some(0), Some(7))
        );
    }

    #[test]
    fn finish_reason_mapping() {
        for (bedrock, openai) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("guardrail_intervened", "content_filter"),
            ("content_filtered", "content_filter"),
            ("malformed_tool_use", "stop"),
            ("something_new", "stop"),
        ] {
            assert_eq!(finish_reason(bedrock), openai);
            let body = json!({"output": {"message": {"role": "assistant", "content": [{"text": "x"}]}},
                              "stopReason": bedrock, "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}});
            let out = chat_response(&serde_json::to_vec(&body).unwrap(), &meta()).unwrap();
            assert_eq!(out.choices[0].finish_reason.as_deref(), Some(openai));
        }
    }

    #[test]
    fn bad_response_is_502_and_garbage_never_panics() {
        for body in [
            &b"not json"[..],
            b"",
            b"null",
            br#"{"output":{}}"#,
            br#"{"stopReason":"end_turn"}"#,
            br#"{"output":{"message":{"content":[{"toolUse":{"name":"f"}}]}},"stopReason":"x"}"#,
        ] {
            let err = chat_response(body, &meta()).unwrap_err();
            assert_eq!(err.status(), 502, "{err:?}");
        }
        let good = fixture("response_tools.bedrock.json");
        let mut rng = Rng(7);
        for _ in 0..2000 {
            let mut b = good[..rng.below(good.len() + 1)].to_vec();
            if !b.is_empty() && rng.below(2) == 0 {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            let _ = chat_response(&b, &meta());
            let _ = error(400, &[("x-amzn-errortype", "ValidationException")], &b);
            let _ = embeddings_response(&b, "m", true);
        }
    }

    // ----- errors -----

    #[test]
    fn error_status_for_every_exception() {
        for (name, bedrock_status, status, kind) in [
            ("ValidationException", 400, 400, ErrorKind::InvalidRequest),
            (
                "AccessDeniedException",
                403,
                403,
                ErrorKind::PermissionDenied,
            ),
            ("ResourceNotFoundException", 404, 404, ErrorKind::NotFound),
            ("ThrottlingException", 429, 429, ErrorKind::RateLimit),
            (
                "ServiceQuotaExceededException",
                400,
                429,
                ErrorKind::RateLimit,
            ),
            ("ModelTimeoutException", 408, 408, ErrorKind::Timeout),
            ("ModelNotReadyException", 429, 429, ErrorKind::RateLimit),
            (
                "ServiceUnavailableException",
                503,
                503,
                ErrorKind::Overloaded,
            ),
            ("ModelErrorException", 424, 502, ErrorKind::Server),
            ("ModelStreamErrorException", 424, 502, ErrorKind::Server),
            ("InternalServerException", 500, 500, ErrorKind::Server),
            (
                "UnrecognizedClientException",
                403,
                401,
                ErrorKind::Authentication,
            ),
            (
                "InvalidSignatureException",
                403,
                401,
                ErrorKind::Authentication,
            ),
            ("ExpiredTokenException", 403, 401, ErrorKind::Authentication),
            ("ConflictException", 409, 409, ErrorKind::InvalidRequest),
            ("SomethingNewException", 418, 418, ErrorKind::Server),
        ] {
            let header = format!("{name}:http://internal.amazon.com/coral/com.amazon.bedrock/");
            let e = error(
                bedrock_status,
                &[("x-amzn-errortype", header.as_str())],
                br#"{"message":"why"}"#,
            );
            assert_eq!(
                e,
                ProviderError {
                    status,
                    kind,
                    code: Some(name.to_string()),
                    message: "why".into()
                },
                "{name}"
            );
        }
    }

    #[test]
    fn error_names_and_messages() {
        let none: [(&str, &str); 0] = [];
        // The name from the body when the header is missing; `Message` spelled either way.
        let e = error(
            429,
            &none,
            br#"{"__type":"com.amazon.coral.service#ThrottlingException","Message":"Too many requests"}"#,
        );
        assert_eq!(
            (e.status, e.code.as_deref(), e.message.as_str()),
            (429, Some("ThrottlingException"), "Too many requests")
        );
        let v: Value = serde_json::from_slice(&e.openai_body()).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "ThrottlingException");
        let v: Value = serde_json::from_slice(&e.anthropic_body()).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");

        // Non-JSON: a short plain reason is quoted, HTML and long bodies are not.
        let e = error(
            503,
            &none,
            b"upstream connect error or disconnect/reset before headers",
        );
        assert_eq!(
            e.message,
            "Bedrock returned HTTP 503: upstream connect error or disconnect/reset before headers"
        );
        assert_eq!((e.status, e.code.clone()), (503, None));
        let e = error(502, &none, b"<html><body>Bad Gateway</body></html>");
        assert_eq!(e.message, "Bedrock returned HTTP 502");
        let long = vec![b'x'; 5000];
        assert_eq!(
            error(500, &none, &long).message,
            "Bedrock returned HTTP 500"
        );
        let e = error(403, &[("x-amzn-errortype", "AccessDeniedException")], b"");
        assert_eq!(
            e.message,
            "Bedrock returned HTTP 403 (AccessDeniedException)"
        );
        // A status that is no error is still reported as one.
        let e = error(200, &none, b"");
        assert_eq!(
            (e.status, e.message.as_str()),
            (502, "Bedrock returned HTTP 200")
        );
        // A huge JSON message is clipped.
        let big = json!({"message": "m".repeat(10_000)}).to_string();
        assert_eq!(
            error(400, &none, big.as_bytes()).message.len(),
            MAX_MESSAGE_CHARS
        );
    }

    // ----- embeddings -----

    #[test]
    fn embeddings_response_both_encodings() {
        let body =
            br#"{"embedding":[1.0,-2.5,0.125],"inputTextTokenCount":4,"embeddingsByType":{}}"#;
        let r = embeddings_response(body, "titan", false).unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"object": "list", "data": [{"object": "embedding", "index": 0,
                   "embedding": [1.0, -2.5, 0.125]}],
                   "model": "titan", "usage": {"prompt_tokens": 4, "total_tokens": 4}})
        );
        let r = embeddings_response(body, "titan", true).unwrap();
        // 1.0, -2.5, 0.125 as little-endian f32.
        assert_eq!(
            r.data[0].embedding,
            EmbeddingVector::Base64("AACAPwAAIMAAAAA+".into())
        );
        for bad in [&b"{}"[..], b"[]", b"nope", br#"{"embedding":"x"}"#] {
            assert_eq!(
                embeddings_response(bad, "t", false).unwrap_err().status(),
                502
            );
        }
    }
}
