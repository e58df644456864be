//! Translation between the client's API schema and a provider's own.
//!
//! Hub and spokes: OpenAI Chat Completions is the hub. Each provider module
//! (`bedrock`, `anthropic`, `gemini`, `openai`) turns a hub request
//! ([`ChatCompletionRequest`]) into its own body, and its answer back into a hub
//! answer ([`ChatCompletion`]) or, for streams, into hub [`StreamItem`]s through a
//! [`ChunkSource`]. A client that speaks another API (Anthropic Messages, OpenAI
//! Responses) is translated to the hub on the way in and from it on the way out
//! (`anthropic`, `responses`), so every client reaches every provider. Where client and provider speak the same
//! API, bodies pass through with only the edits the provider needs.
//!
//! All pure: bytes and parsed values in, bytes or values out; ids and timestamps the
//! answer needs come in [`ResponseMeta`] because nothing here reads a clock or draws
//! random numbers.

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod lambda;
pub mod openai;
pub mod plan;
pub mod responses;
#[cfg(test)]
pub(crate) mod testing;

use std::fmt;

use serde_json::json;

use crate::error::{clip_quoted, ClientSchema, MAX_QUOTED_NAME, MAX_QUOTED_REASON};

use crate::schema::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice, ChunkChoice, Delta,
    ErrorBody, FunctionCallDelta, FunctionDef, Tool, ToolCallDelta, Usage,
};

/// Why a translation failed. Each variant knows its HTTP status and its OpenAI-shaped
/// body. Messages are built from the request's own fields and static text only.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TranslateError {
    /// The request is valid OpenAI but the provider's API cannot express it (422).
    Unsupported { field: String, reason: String },
    /// The request is not a valid OpenAI request (400).
    InvalidRequest { field: String, reason: String },
    /// The provider's answer could not be read (502).
    BadResponse(String),
    /// The provider reported an error in the middle of a stream.
    UpstreamStream { kind: String, message: String },
}

impl TranslateError {
    pub(crate) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Unsupported {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidRequest {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// HTTP status of a local reply carrying this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::Unsupported { .. } => 422,
            Self::InvalidRequest { .. } => 400,
            Self::BadResponse(_) | Self::UpstreamStream { .. } => 502,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unsupported { .. } => "unsupported_by_provider",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::BadResponse(_) => "bad_upstream_response",
            Self::UpstreamStream { .. } => "upstream_stream_error",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Unsupported { field, reason } => format!(
                "'{}' cannot be sent to this model's provider: {}",
                clip_quoted(field, MAX_QUOTED_NAME),
                clip_quoted(reason, MAX_QUOTED_REASON)
            ),
            Self::InvalidRequest { field, reason } => format!(
                "Invalid '{}': {}",
                clip_quoted(field, MAX_QUOTED_NAME),
                clip_quoted(reason, MAX_QUOTED_REASON)
            ),
            Self::BadResponse(why) => format!("The upstream response was invalid: {why}"),
            Self::UpstreamStream { kind, message } => {
                format!("The upstream failed mid-stream ({kind}): {message}")
            }
        }
    }

    /// The error document in the client's schema (OpenAI's names the field in `param`).
    pub fn body(&self, schema: ClientSchema) -> Vec<u8> {
        match schema {
            ClientSchema::OpenAI => self.openai_body(),
            ClientSchema::Anthropic => ProviderError::from_translate(self).anthropic_body(),
        }
    }

    /// The OpenAI error document (`{"error": {...}}`).
    pub fn openai_body(&self) -> Vec<u8> {
        let param = match self {
            Self::Unsupported { field, .. } | Self::InvalidRequest { field, .. } => {
                Some(clip_quoted(field, MAX_QUOTED_NAME))
            }
            _ => None,
        };
        let kind = match self {
            Self::Unsupported { .. } | Self::InvalidRequest { .. } => "invalid_request_error",
            _ => "server_error",
        };
        serde_json::to_vec(&json!({
            "error": {
                "message": self.message(),
                "type": kind,
                "param": param,
                "code": self.code(),
            }
        }))
        .unwrap_or_default()
    }
}

impl std::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for TranslateError {}

impl From<TranslateError> for ProviderError {
    fn from(e: TranslateError) -> Self {
        ProviderError::from_translate(&e)
    }
}

/// What the client-side answer needs that the provider's answer lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseMeta {
    /// `id` of the completion (e.g. `chatcmpl-` + the upstream request id).
    pub id: String,
    /// `model` as the client should see it (usually the model it asked for).
    pub model: String,
    /// `created`, Unix seconds.
    pub created: u64,
}

/// What a provider answers for a hub response, as the client should see it: the
/// error in a normalized form that [`ProviderError::openai_body`] and
/// [`ProviderError::anthropic_body`] write in the client's schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderError {
    /// HTTP status for the client (already mapped from the provider's).
    pub status: u16,
    pub kind: ErrorKind,
    /// The provider's own error code or type, when it gave one
    /// (`ThrottlingException`, `overloaded_error`, `RESOURCE_EXHAUSTED`).
    pub code: Option<String>,
    /// The provider's message; never the request's credentials.
    pub message: String,
}

/// Error classes every client schema can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    PermissionDenied,
    NotFound,
    RequestTooLarge,
    RateLimit,
    Overloaded,
    Timeout,
    Server,
}

impl ErrorKind {
    /// The class a bare HTTP status implies, for bodies that say nothing better.
    pub fn from_status(status: u16) -> ErrorKind {
        match status {
            400 | 405 | 409 | 422 => ErrorKind::InvalidRequest,
            401 => ErrorKind::Authentication,
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            408 | 504 => ErrorKind::Timeout,
            413 => ErrorKind::RequestTooLarge,
            429 => ErrorKind::RateLimit,
            503 | 529 => ErrorKind::Overloaded,
            _ => ErrorKind::Server,
        }
    }

    /// OpenAI's `error.type`.
    pub fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::NotFound | ErrorKind::RequestTooLarge => {
                "invalid_request_error"
            }
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Overloaded | ErrorKind::Timeout | ErrorKind::Server => "server_error",
        }
    }

    /// Anthropic's `error.type`.
    pub fn anthropic_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Overloaded => "overloaded_error",
            ErrorKind::Timeout => "timeout_error",
            ErrorKind::Server => "api_error",
        }
    }
}

impl ProviderError {
    /// An error whose class follows from its status.
    pub fn new(status: u16, code: Option<String>, message: impl Into<String>) -> Self {
        ProviderError {
            status,
            kind: ErrorKind::from_status(status),
            code,
            message: message.into(),
        }
    }

    /// A translation failure as a client-facing error.
    pub fn from_translate(e: &TranslateError) -> Self {
        let (status, code) = match e {
            TranslateError::UpstreamStream { kind, .. } => (502, kind.clone()),
            other => (other.status(), other.code().to_string()),
        };
        ProviderError {
            status,
            kind: match e {
                TranslateError::Unsupported { .. } | TranslateError::InvalidRequest { .. } => {
                    ErrorKind::InvalidRequest
                }
                _ => ErrorKind::Server,
            },
            code: Some(code),
            message: e.message(),
        }
    }

    /// OpenAI's `{"error": {...}}`.
    pub fn openai_body(&self) -> Vec<u8> {
        let body = ErrorBody {
            message: self.message.clone(),
            kind: self.kind.openai_type().to_string(),
            param: None,
            code: self.code.clone(),
        };
        serde_json::to_vec(&json!({ "error": body })).unwrap_or_default()
    }

    /// The error document in the client's schema.
    pub fn body(&self, schema: ClientSchema) -> Vec<u8> {
        match schema {
            ClientSchema::OpenAI => self.openai_body(),
            ClientSchema::Anthropic => self.anthropic_body(),
        }
    }

    /// Anthropic's `{"type": "error", "error": {...}}`.
    pub fn anthropic_body(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "type": "error",
            "error": { "type": self.kind.anthropic_type(), "message": self.message }
        }))
        .unwrap_or_default()
    }
}

/// The request a provider gets: path (with query), body, and headers its API needs
/// besides auth (`anthropic-version`, `content-type`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamRequest {
    pub path: String,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// One step of a translated stream, in hub form.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    /// A `chat.completion.chunk`. A usage-only chunk has empty `choices`.
    Chunk(Box<ChatCompletionChunk>),
    /// The stream failed (provider exception, unreadable event, cut short); nothing
    /// follows it.
    Error(ProviderError),
    /// The stream completed normally; nothing follows it.
    Done,
}

/// A provider's streamed answer, bytes in, hub items out.
///
/// `feed` takes each body chunk as it arrives, whatever its boundaries, and appends
/// the items it completes. At `end_of_stream` the source ends with exactly one
/// [`StreamItem::Done`] or [`StreamItem::Error`] (a stream cut off before the
/// provider's own end marker is an error); after that, further calls append
/// nothing. A source never panics on bad input.
pub trait ChunkSource: fmt::Debug + Send {
    fn feed(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<StreamItem>);
}

/// A delta carrying one piece of a streamed tool call: its start (`id`, `name`) or
/// a run of its arguments.
pub(crate) fn tool_call_delta(
    index: u32,
    id: Option<String>,
    name: Option<String>,
    arguments: String,
) -> Delta {
    Delta {
        tool_calls: Some(vec![ToolCallDelta {
            index,
            kind: id.as_ref().map(|_| "function".to_string()),
            id,
            function: FunctionCallDelta {
                name,
                arguments: Some(arguments),
            },
            rest: Default::default(),
        }]),
        ..Default::default()
    }
}

/// Writes hub items as an OpenAI `text/event-stream`: `data: <chunk>`, an error as
/// `data: {"error": ...}`, and `data: [DONE]` at a normal end.
pub fn encode_openai_sse(item: &StreamItem, out: &mut Vec<u8>) {
    match item {
        StreamItem::Chunk(chunk) => {
            if let Ok(json) = serde_json::to_vec(chunk) {
                push_sse_data(out, &json);
            }
        }
        StreamItem::Error(e) => push_sse_data(out, &e.openai_body()),
        StreamItem::Done => out.extend_from_slice(SSE_DONE),
    }
}

/// The event that ends a client's stream with an error, in its schema: OpenAI's
/// `data: {"error": {...}}` (as [`encode_openai_sse`] writes a failed stream),
/// Anthropic's `event: error`. Nothing is to follow it.
pub fn stream_error_event(schema: ClientSchema, e: &ProviderError) -> Vec<u8> {
    let mut out = Vec::new();
    match schema {
        ClientSchema::OpenAI => encode_openai_sse(&StreamItem::Error(e.clone()), &mut out),
        ClientSchema::Anthropic => anthropic::write_error_event(&mut out, e),
    }
    out
}

/// The function tools of a hub request, each with its field path (`tools[2]`). A
/// tool of another type has no counterpart at `provider`: refused (422).
pub(crate) fn function_tools<'a>(
    req: &'a ChatCompletionRequest,
    provider: &str,
) -> Result<Vec<(String, &'a Tool, &'a FunctionDef)>, TranslateError> {
    let mut out = Vec::new();
    for (i, t) in req.tools.iter().flatten().enumerate() {
        let field = format!("tools[{i}]");
        match (t.kind.as_str(), &t.function) {
            ("function", Some(f)) => out.push((field, t, f)),
            ("function", None) => {
                return Err(TranslateError::invalid(
                    format!("{field}.function"),
                    "missing",
                ))
            }
            (other, _) => {
                return Err(TranslateError::unsupported(
                    format!("{field}.type"),
                    format!("'{other}' tools have no {provider} counterpart"),
                ))
            }
        }
    }
    Ok(out)
}

impl ResponseMeta {
    /// A `chat.completion` with this id, model and time.
    pub fn completion(&self, choices: Vec<Choice>, usage: Option<Usage>) -> ChatCompletion {
        ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            rest: Default::default(),
        }
    }

    /// A `chat.completion.chunk` with this id, model and time.
    pub fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            rest: Default::default(),
        }
    }
}

/// Appends one SSE event `data: <json>\n\n`.
pub(crate) fn push_sse_data(out: &mut Vec<u8>, json: &[u8]) {
    out.reserve(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
}

/// The end-of-stream marker of OpenAI streams.
pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_shapes() {
        let e = TranslateError::unsupported("messages[1].content[0].image_url", "no URLs");
        assert_eq!(e.status(), 422);
        let v: serde_json::Value = serde_json::from_slice(&e.openai_body()).unwrap();
        assert_eq!(v["error"]["param"], "messages[1].content[0].image_url");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].as_str().unwrap().contains("no URLs"));
        let e = TranslateError::BadResponse("x".into());
        assert_eq!(e.status(), 502);
        let v: serde_json::Value = serde_json::from_slice(&e.openai_body()).unwrap();
        assert_eq!(v["error"]["param"], serde_json::Value::Null);
    }

    #[test]
    fn an_error_does_not_send_the_clients_input_back() {
        // A 10 MB key whose value is out of range, a 10 MB string where a number goes.
        let big = "k".repeat(10 << 20);
        for e in [
            TranslateError::invalid(big.clone(), "number out of range at line 1 column 9"),
            TranslateError::invalid(
                "max_tokens",
                format!("invalid type: string \"{big}\", expected u64"),
            ),
            TranslateError::unsupported(big.clone(), big.clone()),
        ] {
            for schema in [ClientSchema::OpenAI, ClientSchema::Anthropic] {
                let body = e.body(schema);
                assert!(body.len() < 4096, "{} bytes", body.len());
            }
            assert!(e.message().contains('…'));
        }
    }
}
