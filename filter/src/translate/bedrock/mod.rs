//! AWS Bedrock: the Converse API for chat (`/model/{modelId}/converse`,
//! `/converse-stream`) and Titan Text Embeddings through `InvokeModel`.
//!
//! Field names follow the Bedrock Runtime API reference (`Converse`,
//! `ConverseStream`, `ContentBlock`, `TokenUsage`, `MessageStopEvent`). Request-side
//! types here are written by the gateway; response-side types name only what it
//! reads, unknown fields and event types are skipped so a newer Bedrock still works.
//!
//! Host and signing are not here: see [`crate::auth::sigv4`] (service name `bedrock`).
//!
//! Choices where the two APIs differ:
//! - Reasoning: `thinking` (Anthropic's shape) or `reasoning_effort` become
//!   `additionalModelRequestFields.thinking` for Anthropic Claude model ids (those
//!   containing `anthropic.`); other Bedrock models take no budget through Converse,
//!   so asking them is a 422. The budget is passed as asked: Bedrock itself checks it
//!   against `maxTokens` (interleaved thinking lets it exceed them).
//! - Reasoning answers: text goes to `reasoning_content`; signed and redacted blocks
//!   also go to `thinking_blocks` (LiteLLM's extension, Anthropic's block shape:
//!   `{"type":"thinking","thinking","signature"}`, `{"type":"redacted_thinking","data"}`)
//!   so that a client can send them back on the assistant message, as Claude needs
//!   when it thinks between tool calls. In streams a signature or redacted block
//!   arrives as a delta carrying one such `thinking_blocks` entry.
//! - Prompt caching: a part's (or a whole message's, or a tool's) `cache_control`
//!   becomes a `cachePoint` block after it; Bedrock has one cache type, so
//!   Anthropic's `ttl` is not carried.
//! - `response_format`: `json_schema` becomes Converse structured output
//!   (`outputConfig.textFormat`), the answer stays text. `json_object` has no
//!   schema-free counterpart and is a 422; a forced tool would fight the client's own
//!   tools and thinking.
//! - Dropped without error (nothing to say them with, and the answer is still what was
//!   asked): `parallel_tool_calls` (Claude may call several tools either way),
//!   `stream_options`, `user`, `seed`, `metadata`, `store`, `service_tier`,
//!   penalties, `logit_bias`, message `name`s, tools' `strict` (Bedrock accepts it only
//!   from models with structured output, and SDKs set it by default).
//!
//! Request bodies are translated in `request`, whole answers and errors in
//! `response`, the event stream in `stream`.

mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

pub use request::{chat_request, embeddings_request};
pub use response::{chat_response, embeddings_response, error, finish_reason};
pub(crate) use response::{common_exception_status, exception_name};
pub use stream::ChatStream;

use serde::Deserialize;

use crate::auth::sigv4::encode_path_segment;
use crate::schema::openai::{PromptTokensDetails, Rest, Usage as OUsage};

/// Path of a call for `model_id` (a model id, inference profile id or ARN; encoded as
/// one path segment, so `:` travels as `%3A` and `/` as `%2F`).
fn model_path(model_id: &str, verb: &str) -> String {
    format!("/model/{}/{verb}", encode_path_segment(model_id))
}

/// Claude takes Anthropic's request fields (thinking) and reasoning signatures.
fn is_claude(model_id: &str) -> bool {
    model_id.contains("anthropic.")
}

// ---------------------------------------------------------------------------------
// Wire types read by both answers and streams.

/// `TokenUsage`. `inputTokens` counts neither cache reads nor cache writes.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Usage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
    #[serde(default)]
    cache_write_input_tokens: u64,
}

impl Usage {
    /// Hub usage: prompt tokens include cache reads and writes, as OpenAI's
    /// `prompt_tokens` includes cached tokens.
    fn to_hub(self) -> OUsage {
        let read = self.cache_read_input_tokens;
        let write = self.cache_write_input_tokens;
        let prompt = self.input_tokens.saturating_add(read).saturating_add(write);
        let details = (read > 0 || write > 0).then(|| PromptTokensDetails {
            cached_tokens: Some(read),
            cache_creation_tokens: (write > 0).then_some(write),
            rest: Rest::new(),
        });
        OUsage {
            prompt_tokens: prompt,
            completion_tokens: self.output_tokens,
            total_tokens: prompt.saturating_add(self.output_tokens),
            prompt_tokens_details: details,
            // Bedrock does not count reasoning tokens apart from output tokens.
            completion_tokens_details: None,
            rest: Rest::new(),
        }
    }
}
