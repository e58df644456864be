//! Anthropic Messages: request, response, stream events and errors.
//!
//! The same body serves api.anthropic.com, Vertex AI (`rawPredict`) and Bedrock
//! (`InvokeModel`); the two clouds take the model from the path and want
//! `anthropic_version` in the body. Typed fields are the ones the gateway reads or
//! writes; `rest` keeps the others in their original order, so parse-then-serialize
//! loses nothing and a field Anthropic adds tomorrow passes through.
//!
//! Content blocks are one struct rather than an enum, as OpenAI's content parts are:
//! a block type the gateway does not know (`document`, `server_tool_use`, ...)
//! survives intact.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Unknown fields, kept as they came.
pub type Rest = Map<String, Value>;

/// `POST /v1/messages` body.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct MessagesRequest {
    /// Absent on Vertex and Bedrock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Vertex and Bedrock only (`vertex-2023-10-16`, `bedrock-2023-05-31`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic_version: Option<String>,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Content>,
    /// Required by the API; optional here so a parse names what is wrong later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Thinking>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// `effort` and `format` (structured output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_config: Option<OutputConfig>,
    #[serde(flatten)]
    pub rest: Rest,
}

impl MessagesRequest {
    /// `stream: true`.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }
}

/// Who wrote a message. Anthropic has no system role: the prompt is top-level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One message of `messages`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Message {
    pub role: Role,
    pub content: Content,
    #[serde(flatten)]
    pub rest: Rest,
}

/// `content` (and `system`, and a tool result's `content`): a string or blocks.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

impl Content {
    /// The content as blocks (a string is one text block).
    pub fn into_blocks(self) -> Vec<ContentBlock> {
        match self {
            Content::Text(t) => vec![ContentBlock::text(t)],
            Content::Blocks(b) => b,
        }
    }
}

/// One content block. `kind` is its `type`: `text`, `image`, `document`, `tool_use`,
/// `tool_result`, `thinking`, `redacted_thinking`, or one the gateway does not know.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ContentBlock {
    #[serde(rename = "type")]
    pub kind: String,
    /// `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `image`, `document` (a [`Source`]); a string on `search_result`, so kept as
    /// it came: see [`ContentBlock::source`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Value>,
    /// `tool_use`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// `tool_result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    /// `thinking`: the text and the signature that lets it be sent back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// `redacted_thinking`: encrypted reasoning, opaque.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// A prompt-cache breakpoint (`{"type": "ephemeral"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
    #[serde(flatten)]
    pub rest: Rest,
}

impl ContentBlock {
    pub fn text(text: impl Into<String>) -> Self {
        ContentBlock {
            kind: "text".into(),
            text: Some(text.into()),
            ..Default::default()
        }
    }

    /// An `image` or `document` block from `source`.
    pub fn with_source(kind: &str, source: Source) -> Self {
        ContentBlock {
            kind: kind.into(),
            source: serde_json::to_value(source).ok(),
            ..Default::default()
        }
    }

    /// The `source` as an image or document source, if it is one.
    pub fn source(&self) -> Option<Source> {
        self.source
            .as_ref()
            .filter(|s| s.is_object())
            .and_then(|s| Source::deserialize(s).ok())
    }
}

/// Where an image or document comes from: `base64` (`media_type`, `data`), `url`,
/// `text` (`media_type`, `data`) or `file` (`file_id`, kept in `rest`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Source {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// One entry of `tools`. Client tools have no `type` (or `custom`); server tools
/// (`web_search_20250305`, `bash_20250124`, ...) name theirs and carry no schema.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Tool {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// `tool_choice`: `auto`, `any`, `tool` (with `name`) or `none`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_parallel_tool_use: Option<bool>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// `thinking`: `{"type": "enabled", "budget_tokens": N}`, `{"type": "disabled"}` or
/// `{"type": "adaptive"}`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Thinking {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u64>,
    #[serde(flatten)]
    pub rest: Rest,
}

impl Thinking {
    /// The budget, when thinking is on with one.
    pub fn budget(&self) -> Option<u64> {
        (self.kind == "enabled")
            .then_some(self.budget_tokens)
            .flatten()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct OutputConfig {
    /// `low`, `medium`, `high`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<OutputFormat>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// `{"type": "json_schema", "schema": {...}}`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct OutputFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// A complete answer, `type: "message"`; also the `message` of `message_start`
/// (then `content` is empty and `stop_reason` null).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct MessagesResponse {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub role: String,
    /// Required: a document without it is not a message.
    pub content: Vec<ContentBlock>,
    #[serde(default)]
    pub model: String,
    /// Written as `null` until known, as Anthropic does.
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
    #[serde(default)]
    pub usage: Usage,
    #[serde(flatten)]
    pub rest: Rest,
}

/// Token counts. `input_tokens` counts neither cache reads nor cache writes. In a
/// `message_delta` every count is cumulative and any may be absent or null.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Usage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// One streamed event (the SSE `data`, whose `type` repeats the `event:` name).
/// Unknown event types parse as [`StreamEvent::Unknown`] so a newer API still
/// streams; fields of known events the gateway does not read are dropped.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        message: MessagesResponse,
    },
    ContentBlockStart {
        index: u32,
        content_block: ContentBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDelta,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    MessageStop,
    Ping,
    Error {
        error: ErrorDetail,
    },
    #[serde(other)]
    Unknown,
}

impl StreamEvent {
    /// The `type` name, for the SSE `event:` line.
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Ping => "ping",
            StreamEvent::Error { .. } => "error",
            StreamEvent::Unknown => "unknown",
        }
    }
}

/// The `delta` of `content_block_delta`: `text_delta` (`text`), `input_json_delta`
/// (`partial_json`), `thinking_delta` (`thinking`), `signature_delta`
/// (`signature`), `citations_delta`, ...
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct BlockDelta {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_json: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// The `delta` of `message_delta`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct MessageDelta {
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// `{"type": "error", "error": {...}}`, as an answer body or a stream event.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ErrorResponse {
    #[serde(rename = "type")]
    pub kind: String,
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ErrorDetail {
    /// `invalid_request_error`, `overloaded_error`, ...
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub message: String,
    #[serde(flatten)]
    pub rest: Rest,
}

/// Bedrock `InvokeModelWithResponseStream`: the payload of a `chunk` event. `bytes`
/// is base64 of one stream event's JSON; other members (Bedrock pads with `p`) are
/// ignored.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct BedrockChunk {
    pub bytes: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_round_trip_is_lossless() {
        let body = json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "sig"},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "ok"}], "is_error": false},
                    {"type": "document", "source": {"type": "file", "file_id": "file_1"}, "title": "t"},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
                ]}
            ],
            "tools": [{"name": "f", "input_schema": {"type": "object"}},
                      {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "metadata": {"user_id": "u"},
            "container": "c1",
            "stream": true
        });
        let req: MessagesRequest = serde_json::from_value(body.clone()).unwrap();
        assert!(req.is_stream());
        assert_eq!(req.thinking.as_ref().unwrap().budget(), Some(2048));
        assert_eq!(req.rest.get("container"), Some(&json!("c1")));
        let back = serde_json::to_value(&req).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn stream_events_parse_and_unknown_ones_are_kept_as_unknown() {
        let e: StreamEvent = serde_json::from_str(
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a"}}"#,
        )
        .unwrap();
        assert_eq!(e.name(), "content_block_delta");
        let e: StreamEvent = serde_json::from_str(r#"{"type":"something_new","x":1}"#).unwrap();
        assert_eq!(e, StreamEvent::Unknown);
        let e: StreamEvent = serde_json::from_str(
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":5,"input_tokens":null}}"#,
        )
        .unwrap();
        let StreamEvent::MessageDelta { usage, .. } = e else {
            panic!()
        };
        assert_eq!(usage.unwrap().input_tokens, None);
        // Bedrock adds its metrics to message_stop.
        let e: StreamEvent = serde_json::from_str(
            r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":5}}"#,
        )
        .unwrap();
        assert_eq!(e, StreamEvent::MessageStop);
        assert_eq!(
            serde_json::to_string(&StreamEvent::MessageStop).unwrap(),
            r#"{"type":"message_stop"}"#
        );
    }

    #[test]
    fn a_message_needs_content() {
        assert!(serde_json::from_str::<MessagesResponse>(r#"{"type":"error"}"#).is_err());
        let m: MessagesResponse =
            serde_json::from_str(r#"{"id":"m","content":[],"usage":{"input_tokens":3}}"#).unwrap();
        assert_eq!(m.usage.input_tokens, Some(3));
        // Unknown stop reasons and nulls are written as Anthropic writes them.
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["stop_reason"], Value::Null);
    }
}
