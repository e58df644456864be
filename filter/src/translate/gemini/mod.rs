//! Google Gemini: `generateContent` and `streamGenerateContent` on Google AI Studio (the
//! Gemini API, `generativelanguage.googleapis.com`) and on Vertex AI, and embeddings
//! (`batchEmbedContents` on AI Studio, `predict` on Vertex).
//!
//! Both APIs take the same `GenerateContentRequest` body and give the same answer;
//! host, path and auth differ (auth is not here). Field names follow the Gemini API
//! reference (`Content`, `Part`, `GenerationConfig`, `ThinkingConfig`, `Schema`,
//! `UsageMetadata`) and Vertex AI's `v1` reference, which agree on all fields used.
//! Request-side types are written by the gateway; response-side types name only what
//! it reads, so fields a newer API adds are skipped.
//!
//! Request bodies are translated in `request`, whole answers and errors in
//! `response`, the SSE stream in `stream`.

mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

pub use request::{chat_request, embeddings_request};
pub use response::{chat_response, embeddings_response, error, finish_reason};
pub use stream::ChatStream;

use serde::Deserialize;
use serde_json::Value;

use crate::auth::sigv4::encode_path_segment;
use crate::schema::openai::{CompletionTokensDetails, PromptTokensDetails, Usage};

/// Which Gemini API serves the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api<'a> {
    /// Google AI Studio. `version` defaults to `v1beta`, where features land first.
    AiStudio { version: Option<&'a str> },
    /// Vertex AI in `project` and `region` (`global`, `us-central1`, ...). `version`
    /// defaults to `v1`.
    Vertex {
        project: &'a str,
        region: &'a str,
        version: Option<&'a str>,
    },
}

impl Api<'_> {
    /// The upstream host (Vertex: regional, or `aiplatform.googleapis.com` for `global`).
    pub fn host(&self) -> String {
        match self {
            Api::AiStudio { .. } => "generativelanguage.googleapis.com".into(),
            Api::Vertex { region, .. } if *region == "global" => "aiplatform.googleapis.com".into(),
            Api::Vertex { region, .. } => format!("{region}-aiplatform.googleapis.com"),
        }
    }

    /// Versioned resource path of `model`, without the `:method`. A leading `models/`
    /// is dropped; on AI Studio `tunedModels/<id>` names a tuned model.
    fn model_path(&self, model: &str) -> String {
        let model = model.strip_prefix("models/").unwrap_or(model);
        match self {
            Api::AiStudio { version } => {
                let v = encode_path_segment(version.unwrap_or("v1beta"));
                match model.strip_prefix("tunedModels/") {
                    Some(tuned) => format!("/{v}/tunedModels/{}", encode_path_segment(tuned)),
                    None => format!("/{v}/models/{}", encode_path_segment(model)),
                }
            }
            Api::Vertex {
                project,
                region,
                version,
            } => format!(
                "/{}/projects/{}/locations/{}/publishers/google/models/{}",
                encode_path_segment(version.unwrap_or("v1")),
                encode_path_segment(project),
                encode_path_segment(region),
                encode_path_segment(model)
            ),
        }
    }
}

// ---------------------------------------------------------------------------------
// Wire types, response side (read).

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<OutContent>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct OutContent {
    #[serde(default)]
    parts: Vec<OutPart>,
}

/// A response part: a union of which only the members read are named (`inlineData`,
/// `executableCode`, ... are skipped).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutPart {
    #[serde(default)]
    text: Option<String>,
    /// The text is the model's reasoning (only with `includeThoughts`).
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    thought_signature: Option<String>,
    #[serde(default)]
    function_call: Option<OutFunctionCall>,
}

#[derive(Debug, Deserialize)]
struct OutFunctionCall {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

/// `promptTokenCount` includes `cachedContentTokenCount`; `candidatesTokenCount`
/// excludes `thoughtsTokenCount`; `toolUsePromptTokenCount` (results of built-in tools
/// fed back to the model) is input counted apart from the prompt.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
    #[serde(default)]
    tool_use_prompt_token_count: u64,
}

impl UsageMetadata {
    /// OpenAI usage: prompt = prompt (cache reads included) + tool-use prompt;
    /// completion = candidates + thoughts; total = prompt + completion.
    fn to_openai(self) -> Usage {
        let prompt = self
            .prompt_token_count
            .saturating_add(self.tool_use_prompt_token_count);
        let completion = self
            .candidates_token_count
            .saturating_add(self.thoughts_token_count);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            prompt_tokens_details: (self.cached_content_token_count > 0).then(|| {
                PromptTokensDetails {
                    cached_tokens: Some(self.cached_content_token_count),
                    ..Default::default()
                }
            }),
            completion_tokens_details: (self.thoughts_token_count > 0).then(|| {
                CompletionTokensDetails {
                    reasoning_tokens: Some(self.thoughts_token_count),
                    ..Default::default()
                }
            }),
            rest: Default::default(),
        }
    }
}
