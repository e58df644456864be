//! Anthropic Messages, in three flavors that share one body: the native API
//! (`POST /v1/messages`), Vertex AI (`:rawPredict` / `:streamRawPredict`) and Bedrock
//! (`InvokeModel` / `InvokeModelWithResponseStream`).
//!
//! Two directions meet here:
//! - provider side: a hub request becomes a Messages call ([`chat_request`]) and the
//!   answer, stream or error comes back as hub values ([`chat_response`],
//!   [`ChatStream`], [`error`]); an Anthropic client's own body passes through with
//!   the flavor's edits only ([`messages_request`], [`MessagesStream`]);
//! - client side: an Anthropic client's request becomes a hub request and the hub
//!   answer goes back in Anthropic's shape ([`client_request`], [`client_response`],
//!   [`ClientStream`]), so an Anthropic client reaches every provider.
//!
//! Hub extensions this module reads and writes, where OpenAI has no field:
//! - `thinking_blocks` on a message (and in a stream delta): Anthropic's `thinking`
//!   (with `signature`) and `redacted_thinking` blocks, so a conversation with
//!   reasoning and tools can be replayed. In a stream the text travels in
//!   `reasoning_content` and a signature as
//!   `{"type":"thinking","thinking":"","signature":"..."}`.
//! - `stop_reason` on a choice: the stop sequence that ended the answer (vLLM's name).
//! - `is_error` and `cache_control` on a tool message, `top_k` at the top level.
//!
//! `response_format` `json_schema` travels as a forced tool ([`RESPONSE_TOOL`]) whose
//! input is the answer: every Claude model on every flavor honours a forced tool,
//! which the native `output_config.format` cannot promise. Its call comes back as
//! the message text. Anthropic cannot force a tool while thinking, so that pair is
//! refused (422). `json_object` becomes a system instruction, as it carries no schema.
//!
//! Request bodies are translated in `request`, whole answers and errors in
//! `response`, streams (framing and translators) in `stream`; token counting in
//! `count_tokens`.

mod count_tokens;
mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

pub use count_tokens::{bedrock_count_response, count_tokens_request};
pub use request::{chat_request, client_request, messages_request};
pub use response::{chat_response, client_response, error, finish_reason};
pub(crate) use stream::write_error_event;
pub use stream::{ChatStream, ClientStream, Framing, MessagesStream};

use serde_json::{json, Value};

use crate::auth::sigv4::encode_path_segment;

/// `anthropic-version` header of the native API.
pub const NATIVE_VERSION: &str = "2023-06-01";
/// `anthropic_version` body member on Vertex.
pub const VERTEX_VERSION: &str = "vertex-2023-10-16";
/// `anthropic_version` body member on Bedrock.
pub const BEDROCK_VERSION: &str = "bedrock-2023-05-31";
/// `max_tokens` when the hub request sets none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// The forced tool that carries a `json_schema` answer.
pub const RESPONSE_TOOL: &str = "aigw_json_response";

/// Hub message (and delta) member holding Anthropic thinking blocks.
const THINKING_BLOCKS: &str = "thinking_blocks";

/// Which Anthropic endpoint serves the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor<'a> {
    /// api.anthropic.com: model and `stream` in the body, version in a header.
    Native,
    /// Vertex AI: model in the path, `anthropic_version` in the body.
    Vertex { project: &'a str, region: &'a str },
    /// Bedrock `InvokeModel`: model in the path, no `stream` in the body.
    Bedrock,
}

/// Where and how a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    pub flavor: Flavor<'a>,
    /// The provider's model id (Bedrock: id, inference profile or ARN).
    pub model: &'a str,
    /// Decides path and body; the request's own `stream` is not read.
    pub stream: bool,
    /// Whether a hub stream must end with a usage chunk (for the caller's
    /// [`ChatStream`]; Anthropic always reports usage).
    pub include_usage: bool,
    /// Overrides the flavor's default API version.
    pub version: Option<&'a str>,
}

impl Target<'_> {
    /// Path (no query) of the call.
    pub fn path(&self) -> String {
        match self.flavor {
            Flavor::Native => "/v1/messages".to_string(),
            Flavor::Vertex { project, region } => {
                let verb = if self.stream {
                    "streamRawPredict"
                } else {
                    "rawPredict"
                };
                format!(
                    "/v1/projects/{}/locations/{}/publishers/anthropic/models/{}:{verb}",
                    encode_path_segment(project),
                    encode_path_segment(region),
                    // Vertex model ids carry their version after `@`.
                    encode_path_segment(self.model).replace("%40", "@"),
                )
            }
            Flavor::Bedrock => {
                let verb = if self.stream {
                    "invoke-with-response-stream"
                } else {
                    "invoke"
                };
                format!("/model/{}/{verb}", encode_path_segment(self.model))
            }
        }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![("content-type", "application/json".to_string())];
        if self.flavor == Flavor::Native {
            h.push((
                "anthropic-version",
                self.version.unwrap_or(NATIVE_VERSION).to_string(),
            ));
        }
        h
    }

    /// Puts the clouds' `anthropic_version` into a body: the route's, else a
    /// version the client chose, else the flavor's default. The native API takes
    /// it in a header instead.
    fn set_body_version(&self, map: &mut serde_json::Map<String, Value>) {
        if let Some(version) = self.body_version() {
            let keep = self.version.is_none()
                && map.get("anthropic_version").is_some_and(Value::is_string);
            if !keep {
                map.insert("anthropic_version".into(), Value::String(version));
            }
        }
    }

    /// `anthropic_version` for the clouds' bodies.
    fn body_version(&self) -> Option<String> {
        let default = match self.flavor {
            Flavor::Native => return None,
            Flavor::Vertex { .. } => VERTEX_VERSION,
            Flavor::Bedrock => BEDROCK_VERSION,
        };
        Some(self.version.unwrap_or(default).to_string())
    }
}

fn thinking_entry(thinking: &str, signature: &str) -> Value {
    json!({"type": "thinking", "thinking": thinking, "signature": signature})
}
