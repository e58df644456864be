//! OpenAI Chat Completions: request, response and stream chunk.
//!
//! Only the fields a translator reads are typed; `rest` keeps the others in their
//! original order (serde_json's `preserve_order`), so parse-then-serialize is lossless
//! for passthrough. Optional fields are omitted when absent rather than written as
//! `null`, except where OpenAI itself always writes `null` (`finish_reason` of a
//! chunk, `content` of a message that only calls tools).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Unknown fields, kept as they came.
pub type Rest = Map<String, Value>;

/// `POST /v1/chat/completions` body.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ChatCompletionRequest {
    #[serde(default)]
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(flatten)]
    pub rest: Rest,
}

impl ChatCompletionRequest {
    /// `stream: true`.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// `stop`: one string or several.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    /// Deprecated predecessor of `tool`.
    Function,
}

/// One message of `messages`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ChatMessage {
    pub role: Role,
    /// Absent or `null` on an assistant message that only calls tools.
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// `content`: a string or a list of typed parts.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of a multi-part `content`. `kind` is the part's `type` (`text`,
/// `image_url`, `input_audio`, `file`, `refusal`, ...); a struct rather than an enum so
/// that a part type the gateway does not know survives intact.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<ImageUrl>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ImageUrl {
    /// `https://...` or `data:image/png;base64,...`.
    pub url: String,
    #[serde(flatten)]
    pub rest: Rest,
}

/// A call the assistant made (request history or response).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
    #[serde(flatten)]
    pub rest: Rest,
}

fn function_type() -> String {
    "function".to_string()
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as the model produced it.
    #[serde(default)]
    pub arguments: String,
    #[serde(flatten)]
    pub rest: Rest,
}

/// One entry of `tools`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDef>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// `tool_choice`: `"none"`, `"auto"`, `"required"` or a named function.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Named(NamedToolChoice),
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct NamedToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: NamedFunction,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct NamedFunction {
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub rest: Rest,
}

/// A complete (non-streamed) answer, `object: "chat.completion"`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Choice {
    pub index: u32,
    pub message: ResponseMessage,
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// The assistant message of a [`Choice`].
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ResponseMessage {
    pub role: Role,
    /// `null` when the message only calls tools.
    pub content: Option<String>,
    /// Reasoning text, for models that expose it (the `reasoning_content` extension
    /// used by DeepSeek, vLLM and LiteLLM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// Token counts, OpenAI names.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Usage {
    /// All input tokens, cached ones included.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct PromptTokensDetails {
    /// Read from the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Written to the prompt cache (not in OpenAI's own API, which bills no writes;
    /// the name the gateway's usage reader takes for providers that do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_tokens: Option<u64>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct CompletionTokensDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// One streamed event, `object: "chat.completion.chunk"`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// Only on the last chunk, when usage was asked for (then `choices` is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    /// Written as `null` until the last content chunk, as OpenAI does.
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// A piece of a streamed tool call; `index` ties the pieces of one call together.
/// The first piece carries `id`, `type` and the name, later ones argument text.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub function: FunctionCallDelta,
    /// Provider extensions a client sends back with the call (Gemini's
    /// `extra_content.google.thought_signature`).
    #[serde(flatten, default, skip_serializing_if = "Rest::is_empty")]
    pub rest: Rest,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// The member of OpenAI's error document `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

/// `POST /v1/embeddings` body.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct EmbeddingsRequest {
    #[serde(default)]
    pub model: String,
    pub input: EmbeddingInput,
    /// `float` (default) or `base64` (little-endian f32, base64; the official SDKs
    /// ask for it by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(flatten)]
    pub rest: Rest,
}

impl EmbeddingsRequest {
    /// The answer must carry base64 text instead of float arrays.
    pub fn wants_base64(&self) -> bool {
        self.encoding_format.as_deref() == Some("base64")
    }
}

/// `input`: text, texts, or token ids (one list or several).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// A `list` of embeddings.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct EmbeddingsResponse {
    pub object: String,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingsUsage,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Embedding {
    pub object: String,
    pub index: u32,
    pub embedding: EmbeddingVector,
}

/// Floats, or their base64 form when the request asked for it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

impl EmbeddingVector {
    /// The vector as the client asked for it: floats, or base64 of their
    /// little-endian `f32` bytes.
    pub fn new(values: Vec<f32>, base64: bool) -> Self {
        if !base64 {
            return EmbeddingVector::Float(values);
        }
        use base64::Engine as _;
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in &values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct EmbeddingsUsage {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let body = json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "be brief", "x-note": 1},
                {"role": "user", "content": [
                    {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                    {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"}
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "stop": ["a", "b"],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "seed": 7,
            "user": "u-1",
            "metadata": {"k": "v"}
        });
        let req: ChatCompletionRequest = serde_json::from_value(body.clone()).unwrap();
        assert!(req.is_stream());
        assert_eq!(req.rest.get("seed"), Some(&json!(7)));
        assert_eq!(req.messages[1].role, Role::User);
        assert!(matches!(req.tool_choice, Some(ToolChoice::Named(_))));
        assert_eq!(serde_json::to_value(&req).unwrap(), body);
    }

    #[test]
    fn stop_and_tool_choice_forms() {
        let r: ChatCompletionRequest =
            serde_json::from_str(r#"{"model":"m","messages":[],"stop":"x","tool_choice":"auto"}"#)
                .unwrap();
        assert_eq!(r.stop, Some(Stop::One("x".into())));
        assert_eq!(r.tool_choice, Some(ToolChoice::Mode("auto".into())));
    }

    #[test]
    fn unknown_role_is_rejected() {
        let r = serde_json::from_str::<ChatCompletionRequest>(
            r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
        );
        assert!(r.is_err());
    }

    #[test]
    fn embedding_vectors_as_floats_or_base64() {
        assert_eq!(
            EmbeddingVector::new(vec![1.0, -2.5], false),
            EmbeddingVector::Float(vec![1.0, -2.5])
        );
        // 1.0f32 = 00 00 80 3f, -2.5f32 = 00 00 20 c0 (little-endian).
        assert_eq!(
            EmbeddingVector::new(vec![1.0, -2.5], true),
            EmbeddingVector::Base64("AACAPwAAIMA=".into())
        );
        let r: EmbeddingsRequest =
            serde_json::from_str(r#"{"model":"m","input":["a","b"],"encoding_format":"base64"}"#)
                .unwrap();
        assert!(r.wants_base64());
        assert_eq!(r.input, EmbeddingInput::Texts(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn chunk_writes_null_finish_reason() {
        let c = ChatCompletionChunk {
            id: "x".into(),
            object: "chat.completion.chunk".into(),
            created: 1,
            model: "m".into(),
            choices: vec![ChunkChoice {
                index: 0,
                delta: Delta {
                    content: Some("hi".into()),
                    ..Default::default()
                },
                finish_reason: None,
                rest: Rest::new(),
            }],
            usage: None,
            rest: Rest::new(),
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#
        );
    }
}
