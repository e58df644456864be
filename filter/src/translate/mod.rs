//! Translation between the client's API schema and a provider's own.
//!
//! One module per provider (`bedrock`), holding one `from_<client schema>` module each
//! (`from_openai`), with the same verbs: `request`, `response`, a stream translator
//! and `error`. All pure: bytes and parsed values in, bytes out; ids and timestamps
//! the answer needs come in [`ResponseMeta`] because nothing here reads a clock or
//! draws random numbers.

pub mod bedrock;

use serde_json::json;

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
            Self::Unsupported { field, reason } => {
                format!("'{field}' cannot be sent to this model's provider: {reason}")
            }
            Self::InvalidRequest { field, reason } => format!("Invalid '{field}': {reason}"),
            Self::BadResponse(why) => format!("The upstream response was invalid: {why}"),
            Self::UpstreamStream { kind, message } => {
                format!("The upstream failed mid-stream ({kind}): {message}")
            }
        }
    }

    /// The OpenAI error document (`{"error": {...}}`).
    pub fn openai_body(&self) -> Vec<u8> {
        let param = match self {
            Self::Unsupported { field, .. } | Self::InvalidRequest { field, .. } => {
                Some(field.as_str())
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
}
