//! Errors the gateway answers a client with. Each knows its HTTP status and how it is
//! written in the client's API schema, as a rustls error knows its alert.
//!
//! Messages never carry secrets: they are built from the request's own fields and
//! static text only.

use std::borrow::Cow;

use serde_json::json;

use crate::policy::budget::BudgetRefusal;
use crate::policy::ratelimit::{Limit, Refusal};

/// Longest name of the client's own an error quotes: a model, a field's path (whose
/// keys are the client's).
pub(crate) const MAX_QUOTED_NAME: usize = 256;
/// Longest reason an error gives, a parser's message that may quote a value of the
/// request (`invalid type: string "..."`) included.
pub(crate) const MAX_QUOTED_REASON: usize = 1024;

/// `text` whole when it has at most `max` characters, else its start and its end
/// around an ellipsis: an error names what it refuses, it does not send a 10 MB
/// value back, and a parser's message keeps what it expected and where.
pub(crate) fn clip_quoted(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max || text.chars().count() <= max {
        return Cow::Borrowed(text);
    }
    // `max` characters in all: three quarters from the start, the ellipsis, the rest
    // from the end.
    let head = max * 3 / 4;
    let tail = max.saturating_sub(head + 1);
    let start = text.char_indices().nth(head).map_or(text.len(), |(i, _)| i);
    let end = match tail {
        0 => text.len(),
        n => text.char_indices().rev().nth(n - 1).map_or(0, |(i, _)| i),
    };
    Cow::Owned(format!("{}…{}", &text[..start], &text[end..]))
}

/// The API schema a client speaks; errors are written in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientSchema {
    OpenAI,
    Anthropic,
}

/// An error answered to the client instead of, or in place of, the upstream's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GatewayError {
    /// The request body is not JSON, or not the JSON object the endpoint expects.
    InvalidJson(String),
    /// A required field is missing or has the wrong type.
    InvalidField { field: String, reason: String },
    /// The request body is larger than the configured maximum.
    BodyTooLarge { limit: u64 },
    /// No route serves this model.
    UnknownModel(String),
    /// The request method is not allowed on this endpoint.
    MethodNotAllowed { method: String, path: &'static str },
    /// A request validation rule (`requestValidation.rules[rule]`) denied the request.
    Denied { rule: usize },
    /// The route's rate limit refuses the request for now.
    RateLimited(Refusal),
    /// A spent budget refuses the request (blocked, or throttled past its rate).
    BudgetSpent(BudgetRefusal),
    /// A guardrail policy (by name) refused the request's content. The message
    /// names the policy, never what it found.
    /// `answer`: the provider's answer was blocked, not the prompt.
    GuardrailBlocked { policy: String, answer: bool },
    /// The upstream answered in a way the gateway could not process.
    BadUpstreamResponse(String),
    /// The filter itself failed (a bug); the stream is answered, Envoy keeps running.
    Internal,
}

impl GatewayError {
    /// HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidJson(_) | Self::InvalidField { .. } | Self::GuardrailBlocked { .. } => 400,
            Self::BodyTooLarge { .. } => 413,
            Self::Denied { .. } => 403,
            Self::RateLimited(_) | Self::BudgetSpent(_) => 429,
            Self::UnknownModel(_) => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::BadUpstreamResponse(_) => 502,
            Self::Internal => 500,
        }
    }

    /// Short machine-readable code (OpenAI's `error.code`), also used as Envoy's
    /// response-code details.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidField { .. } => "invalid_request",
            Self::BodyTooLarge { .. } => "request_too_large",
            Self::Denied { .. } => "request_denied",
            Self::RateLimited(_) => "rate_limit_exceeded",
            Self::BudgetSpent(_) => "insufficient_quota",
            Self::GuardrailBlocked { .. } => "content_policy_violation",
            Self::UnknownModel(_) => "model_not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::BadUpstreamResponse(_) => "bad_upstream_response",
            Self::Internal => "internal_error",
        }
    }

    /// Human-readable message.
    pub fn message(&self) -> String {
        match self {
            Self::InvalidJson(why) => format!(
                "The request body is not valid JSON: {}",
                clip_quoted(why, MAX_QUOTED_REASON)
            ),
            Self::InvalidField { field, reason } => format!(
                "Invalid '{}': {}",
                clip_quoted(field, MAX_QUOTED_NAME),
                clip_quoted(reason, MAX_QUOTED_REASON)
            ),
            Self::BodyTooLarge { limit } => {
                format!("The request body exceeds the gateway's limit of {limit} bytes")
            }
            Self::UnknownModel(model) => format!(
                "The model `{}` does not exist or is not served by this gateway",
                clip_quoted(model, MAX_QUOTED_NAME)
            ),
            Self::MethodNotAllowed { method, path } => {
                format!("Method {method} is not allowed on {path}")
            }
            Self::Denied { rule } => {
                format!("The gateway's request validation denied this request (rule {rule})")
            }
            Self::RateLimited(r) => {
                let what = match r.limit {
                    Limit::RequestsPerMinute => "requests per minute",
                    Limit::TokensPerMinute => "tokens per minute",
                    Limit::Concurrency => "concurrent requests",
                };
                let again = if r.retry_after == 0 {
                    "when a request ends".to_string()
                } else {
                    format!("in {} s", r.retry_after)
                };
                format!(
                    "Rate limit reached for {what} on this model's route (limit {}); try again {again}",
                    r.value
                )
            }
            Self::BudgetSpent(r) => r.message(),
            Self::GuardrailBlocked { policy, answer } => format!(
                "The {} was blocked by the gateway's guardrail policy '{}'",
                if *answer { "answer" } else { "request" },
                clip_quoted(policy, MAX_QUOTED_NAME)
            ),
            Self::BadUpstreamResponse(why) => format!("The upstream response was invalid: {why}"),
            Self::Internal => "The gateway failed to process the request".to_string(),
        }
    }

    /// Headers the answer carries besides `content-type`: when to retry a rate
    /// limit (SDKs wait that long before retrying on their own).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::RateLimited(r) => vec![("retry-after", r.retry_after.max(1).to_string())],
            Self::BudgetSpent(r) => vec![("retry-after", r.retry_after.max(1).to_string())],
            _ => Vec::new(),
        }
    }

    /// The JSON body in the client's schema.
    pub fn body(&self, schema: ClientSchema) -> Vec<u8> {
        let value = match schema {
            ClientSchema::OpenAI => json!({
                "error": {
                    "message": self.message(),
                    "type": self.openai_type(),
                    "param": self.param(),
                    "code": self.code(),
                }
            }),
            ClientSchema::Anthropic => json!({
                "type": "error",
                "error": { "type": self.anthropic_type(), "message": self.message() }
            }),
        };
        serde_json::to_vec(&value).unwrap_or_default()
    }

    fn param(&self) -> Option<Cow<'_, str>> {
        match self {
            Self::InvalidField { field, .. } => Some(clip_quoted(field, MAX_QUOTED_NAME)),
            Self::UnknownModel(_) => Some(Cow::Borrowed("model")),
            _ => None,
        }
    }

    fn openai_type(&self) -> &'static str {
        if let Self::BudgetSpent(_) = self {
            // OpenAI's own answer when an account's quota is spent.
            return "insufficient_quota";
        }
        if let Self::RateLimited(r) = self {
            // OpenAI names what ran out.
            return match r.limit {
                Limit::TokensPerMinute => "tokens",
                _ => "requests",
            };
        }
        match self.status() {
            404 | 400 | 405 | 413 => "invalid_request_error",
            403 => "permission_error",
            _ => "server_error",
        }
    }

    fn anthropic_type(&self) -> &'static str {
        match self.status() {
            404 => "not_found_error",
            413 => "request_too_large",
            400 | 405 => "invalid_request_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            _ => "api_error",
        }
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape() {
        let err = GatewayError::UnknownModel("gpt-nope".into());
        let v: serde_json::Value = serde_json::from_slice(&err.body(ClientSchema::OpenAI)).unwrap();
        assert_eq!(err.status(), 404);
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-nope"));
    }

    #[test]
    fn an_error_does_not_send_the_clients_input_back() {
        // A 10 MB model name, field name and value: each error quotes a bounded part
        // of them, keeping the start and the end (what was expected, and where).
        let big = "m".repeat(10 << 20);
        let errors = [
            GatewayError::UnknownModel(big.clone()),
            GatewayError::InvalidField {
                field: big.clone(),
                reason: format!("invalid type: string \"{big}\", expected u64 at line 1 column 9"),
            },
            GatewayError::InvalidJson(format!("{big} at line 1 column 9")),
        ];
        for err in errors {
            for schema in [ClientSchema::OpenAI, ClientSchema::Anthropic] {
                let body = err.body(schema);
                assert!(body.len() < 4096, "{} bytes", body.len());
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert!(v["error"]["message"].as_str().unwrap().contains('…'));
            }
        }
        let err = GatewayError::InvalidField {
            field: "max_tokens".into(),
            reason: format!("invalid type: string \"{big}\", expected u64 at line 1 column 9"),
        };
        let v: serde_json::Value = serde_json::from_slice(&err.body(ClientSchema::OpenAI)).unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("Invalid 'max_tokens': invalid type: string \"mmm"));
        assert!(
            message.ends_with("mm\", expected u64 at line 1 column 9"),
            "{message}"
        );
        assert_eq!(
            message.chars().count(),
            "Invalid 'max_tokens': ".len() + MAX_QUOTED_REASON
        );
        assert_eq!(v["error"]["param"], "max_tokens");
        // Short text is quoted whole; characters are never cut in half.
        assert_eq!(clip_quoted("gpt-4o", 8), "gpt-4o");
        assert_eq!(clip_quoted("ééééééééé", 8), "éééééé…é");
        assert_eq!(clip_quoted("abcdef", 2), "a…");
        assert_eq!(clip_quoted("abcdef", 0), "…");
    }

    #[test]
    fn anthropic_shape() {
        let err = GatewayError::BodyTooLarge { limit: 10 };
        let v: serde_json::Value =
            serde_json::from_slice(&err.body(ClientSchema::Anthropic)).unwrap();
        assert_eq!(err.status(), 413);
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "request_too_large");
    }
}
