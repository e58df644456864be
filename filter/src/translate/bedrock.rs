//! AWS Bedrock Converse API (`/model/{modelId}/converse`, `/converse-stream`).
//!
//! Field names follow the Bedrock Runtime API reference (`Converse`,
//! `ConverseStream`, `ContentBlock`, `TokenUsage`, `MessageStopEvent`). Request-side
//! types here are written by the gateway; response-side types name only what it
//! reads, unknown fields and event types are skipped so a newer Bedrock still works.
//!
//! Host and signing are not here: see [`crate::sigv4`] (service name `bedrock`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sigv4::encode_path_segment;

/// Path of the Converse call for `model_id` (a model id, inference profile id or ARN;
/// encoded as one path segment, so `:` travels as `%3A` and `/` as `%2F`).
pub fn converse_path(model_id: &str, stream: bool) -> String {
    let verb = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    format!("/model/{}/{verb}", encode_path_segment(model_id))
}

// ---------------------------------------------------------------------------------
// Wire types, request side (written).

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConverseRequest {
    messages: Vec<Message>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<SystemBlock>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inference_config: Option<InferenceConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig>,
}

#[derive(Debug, Serialize)]
struct Message {
    role: &'static str,
    content: Vec<ContentBlock>,
}

/// A union: serialized as an object with exactly one key.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum ContentBlock {
    Text(String),
    Image(ImageBlock),
    ToolUse(ToolUseBlock),
    ToolResult(ToolResultBlock),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum SystemBlock {
    Text(String),
}

#[derive(Debug, Serialize)]
struct ImageBlock {
    format: &'static str,
    source: ImageSource,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum ImageSource {
    /// Base64 text in JSON (the SDKs' blob encoding).
    Bytes(String),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseBlock {
    tool_use_id: String,
    name: String,
    input: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolResultBlock {
    tool_use_id: String,
    content: Vec<ToolResultContent>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum ToolResultContent {
    Text(String),
    Image(ImageBlock),
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct InferenceConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    tools: Vec<ToolEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum ToolEntry {
    ToolSpec(ToolSpec),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolSpec {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    input_schema: InputSchema,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum InputSchema {
    Json(Value),
}

#[derive(Debug, Serialize)]
struct Empty {}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum ToolChoice {
    Auto(Empty),
    Any(Empty),
    Tool(NamedTool),
}

#[derive(Debug, Serialize)]
struct NamedTool {
    name: String,
}

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
}

#[derive(Debug, Deserialize)]
struct OutReasoningText {
    #[serde(default)]
    text: String,
}

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

/// Stream event payloads (`:event-type` names the member).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStart {
    #[serde(default)]
    content_block_index: u64,
    #[serde(default)]
    start: Option<BlockStartUnion>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStartUnion {
    tool_use: Option<StartToolUse>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartToolUse {
    tool_use_id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDelta {
    #[serde(default)]
    content_block_index: u64,
    delta: DeltaUnion,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeltaUnion {
    text: Option<String>,
    tool_use: Option<DeltaToolUse>,
    reasoning_content: Option<DeltaReasoning>,
}

#[derive(Debug, Deserialize)]
struct DeltaToolUse {
    #[serde(default)]
    input: String,
}

#[derive(Debug, Deserialize)]
struct DeltaReasoning {
    /// Only the text member is forwarded; `signature` and `redactedContent` have no
    /// OpenAI counterpart.
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageStop {
    stop_reason: String,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    usage: Option<Usage>,
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

impl Usage {
    /// OpenAI usage (prompt tokens include cache reads and writes, as OpenAI's
    /// `prompt_tokens` includes cached tokens) and the gateway's counts.
    fn to_openai(self) -> (crate::schema::openai::Usage, crate::usage::TokenUsage) {
        use crate::schema::openai::{PromptTokensDetails, Usage as OUsage};
        let prompt = self
            .input_tokens
            .saturating_add(self.cache_read_input_tokens)
            .saturating_add(self.cache_write_input_tokens);
        let total = prompt.saturating_add(self.output_tokens);
        let details =
            (self.cache_read_input_tokens > 0 || self.cache_write_input_tokens > 0).then(|| {
                PromptTokensDetails {
                    cached_tokens: Some(self.cache_read_input_tokens),
                    cache_creation_tokens: Some(self.cache_write_input_tokens),
                    rest: Default::default(),
                }
            });
        let openai = OUsage {
            prompt_tokens: prompt,
            completion_tokens: self.output_tokens,
            total_tokens: total,
            prompt_tokens_details: details,
            completion_tokens_details: None,
            rest: Default::default(),
        };
        let tokens = crate::usage::TokenUsage {
            input_tokens: prompt,
            output_tokens: self.output_tokens,
            total_tokens: total,
            cached_input_tokens: self.cache_read_input_tokens,
            cache_creation_input_tokens: self.cache_write_input_tokens,
            reasoning_tokens: 0,
        };
        (openai, tokens)
    }
}

/// OpenAI Chat Completions clients.
pub mod from_openai {
    use std::fmt;

    use serde_json::{json, Value};

    use super::*;
    use crate::eventstream::{self, Decoder, EventStreamError};
    use crate::schema::openai::{
        ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, Choice,
        ChunkChoice, ContentPart, Delta, FunctionCall, FunctionCallDelta, MessageContent,
        ResponseMessage, Role, ToolCall, ToolCallDelta, ToolChoice as OToolChoice,
    };
    use crate::translate::{push_sse_data, ResponseMeta, TranslateError, SSE_DONE};
    use crate::usage::TokenUsage;

    /// Translates a chat request into a Converse call: returns the path and the body.
    ///
    /// Dropped without error because Bedrock has no counterpart and the answer is
    /// still what was asked for: `stream_options`, `user`, `seed`, `metadata`,
    /// `store`, `parallel_tool_calls`, `service_tier`, penalties, `logit_bias`,
    /// message `name`s. Refused (the caller answers 422): `n` > 1, `logprobs`,
    /// structured `response_format`, audio, image URLs that are not data URLs,
    /// non-function tools, `function` messages.
    pub fn request(
        req: &ChatCompletionRequest,
        model_id: &str,
    ) -> Result<(String, Vec<u8>), TranslateError> {
        if req.n.is_some_and(|n| n > 1) {
            return Err(TranslateError::unsupported(
                "n",
                "Bedrock returns one choice",
            ));
        }
        if req.logprobs == Some(true) {
            return Err(TranslateError::unsupported(
                "logprobs",
                "Bedrock returns no log probabilities",
            ));
        }
        if let Some(rf) = &req.response_format {
            if rf.kind != "text" {
                return Err(TranslateError::unsupported(
                    "response_format",
                    format!("'{}' has no Converse counterpart", rf.kind),
                ));
            }
        }
        if req.rest.get("audio").is_some_and(|v| !v.is_null())
            || req
                .rest
                .get("modalities")
                .and_then(Value::as_array)
                .is_some_and(|m| m.iter().any(|x| x == "audio"))
        {
            return Err(TranslateError::unsupported(
                "audio",
                "Converse does not produce audio",
            ));
        }

        let mut system = Vec::new();
        let mut messages: Vec<Message> = Vec::new();
        let mut has_tool_blocks = false;
        for (i, m) in req.messages.iter().enumerate() {
            let field = format!("messages[{i}]");
            let (role, blocks) = match m.role {
                Role::System | Role::Developer => {
                    for text in text_only(m, &field)? {
                        system.push(SystemBlock::Text(text));
                    }
                    continue;
                }
                Role::User => ("user", user_blocks(m, &field)?),
                Role::Assistant => {
                    let blocks = assistant_blocks(m, &field)?;
                    has_tool_blocks |= blocks.iter().any(|b| matches!(b, ContentBlock::ToolUse(_)));
                    ("assistant", blocks)
                }
                Role::Tool => {
                    has_tool_blocks = true;
                    ("user", vec![tool_result(m, &field)?])
                }
                Role::Function => {
                    return Err(TranslateError::unsupported(
                        format!("{field}.role"),
                        "'function' messages are deprecated; use 'tool' messages",
                    ))
                }
            };
            // Converse wants turns to alternate; OpenAI allows runs of one role (several
            // tool results in a row, above all). A run becomes one turn.
            match messages.last_mut() {
                Some(last) if last.role == role => last.content.extend(blocks),
                _ => messages.push(Message {
                    role,
                    content: blocks,
                }),
            }
        }

        let stop_sequences = req
            .stop
            .clone()
            .map(|s| s.into_vec())
            .filter(|v| !v.is_empty());
        let inference = InferenceConfig {
            max_tokens: req.max_completion_tokens.or(req.max_tokens),
            temperature: req.temperature,
            top_p: req.top_p,
            stop_sequences,
        };
        let inference_config = (inference.max_tokens.is_some()
            || inference.temperature.is_some()
            || inference.top_p.is_some()
            || inference.stop_sequences.is_some())
        .then_some(inference);

        let body = ConverseRequest {
            messages,
            system,
            inference_config,
            tool_config: tool_config(req, has_tool_blocks)?,
        };
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| TranslateError::invalid("messages", e.to_string()))?;
        Ok((converse_path(model_id, req.is_stream()), bytes))
    }

    /// Parses an OpenAI request body and translates it.
    pub fn request_from_slice(
        body: &[u8],
        model_id: &str,
    ) -> Result<(String, Vec<u8>), TranslateError> {
        let req: ChatCompletionRequest = serde_json::from_slice(body)
            .map_err(|e| TranslateError::invalid("body", e.to_string()))?;
        request(&req, model_id)
    }

    /// Text of a message whose content may only be text (system, developer, tool).
    fn text_only(m: &ChatMessage, field: &str) -> Result<Vec<String>, TranslateError> {
        match &m.content {
            None => Ok(Vec::new()),
            Some(MessageContent::Text(t)) => Ok(vec![t.clone()]),
            Some(MessageContent::Parts(parts)) => parts
                .iter()
                .enumerate()
                .map(|(j, p)| match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => Ok(t.clone()),
                    _ => Err(TranslateError::unsupported(
                        format!("{field}.content[{j}]"),
                        format!("a '{}' part is not allowed in this message", p.kind),
                    )),
                })
                .collect(),
        }
    }

    fn user_blocks(m: &ChatMessage, field: &str) -> Result<Vec<ContentBlock>, TranslateError> {
        match &m.content {
            None => Err(TranslateError::invalid(
                format!("{field}.content"),
                "missing",
            )),
            Some(MessageContent::Text(t)) => Ok(vec![ContentBlock::Text(t.clone())]),
            Some(MessageContent::Parts(parts)) => parts
                .iter()
                .enumerate()
                .map(|(j, p)| part_block(p, &format!("{field}.content[{j}]")))
                .collect(),
        }
    }

    fn part_block(p: &ContentPart, field: &str) -> Result<ContentBlock, TranslateError> {
        match p.kind.as_str() {
            "text" => match &p.text {
                Some(t) => Ok(ContentBlock::Text(t.clone())),
                None => Err(TranslateError::invalid(format!("{field}.text"), "missing")),
            },
            "image_url" => match &p.image_url {
                Some(img) => Ok(ContentBlock::Image(image(&img.url, field)?)),
                None => Err(TranslateError::invalid(
                    format!("{field}.image_url"),
                    "missing",
                )),
            },
            other => Err(TranslateError::unsupported(
                field,
                format!("content parts of type '{other}' have no Converse counterpart"),
            )),
        }
    }

    /// A `data:image/<fmt>;base64,<data>` URL as an image block. Bedrock cannot fetch
    /// URLs, and the gateway does not fetch them on a client's behalf.
    fn image(url: &str, field: &str) -> Result<ImageBlock, TranslateError> {
        let field = format!("{field}.image_url.url");
        let Some(rest) = url.strip_prefix("data:") else {
            return Err(TranslateError::unsupported(
                field,
                "Bedrock cannot fetch image URLs; send the image inline as a base64 data URL \
                 (data:image/png;base64,...)",
            ));
        };
        let Some((meta, data)) = rest.split_once(',') else {
            return Err(TranslateError::invalid(field, "malformed data URL"));
        };
        let mut params = meta.split(';');
        let mime = params.next().unwrap_or_default().to_ascii_lowercase();
        if !params.any(|p| p.eq_ignore_ascii_case("base64")) {
            return Err(TranslateError::unsupported(
                field,
                "only base64 data URLs are supported",
            ));
        }
        let format = match mime.as_str() {
            "image/png" => "png",
            "image/jpeg" | "image/jpg" => "jpeg",
            "image/gif" => "gif",
            "image/webp" => "webp",
            _ => {
                return Err(TranslateError::unsupported(
                    field,
                    format!("image type '{mime}' is not one of png, jpeg, gif, webp"),
                ))
            }
        };
        let valid = !data.is_empty()
            && data
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        if !valid {
            return Err(TranslateError::invalid(
                field,
                "the data URL is not valid base64",
            ));
        }
        Ok(ImageBlock {
            format,
            source: ImageSource::Bytes(data.to_string()),
        })
    }

    fn assistant_blocks(m: &ChatMessage, field: &str) -> Result<Vec<ContentBlock>, TranslateError> {
        let mut blocks = Vec::new();
        // Bedrock refuses blank text blocks; clients send `""` next to tool calls.
        for text in text_or_refusal(m, field)? {
            if !text.trim().is_empty() {
                blocks.push(ContentBlock::Text(text));
            }
        }
        for (k, call) in m.tool_calls.iter().flatten().enumerate() {
            let args = call.function.arguments.trim();
            let input = if args.is_empty() {
                json!({})
            } else {
                serde_json::from_str::<Value>(args).map_err(|_| {
                    TranslateError::invalid(
                        format!("{field}.tool_calls[{k}].function.arguments"),
                        "not valid JSON",
                    )
                })?
            };
            if !input.is_object() {
                return Err(TranslateError::unsupported(
                    format!("{field}.tool_calls[{k}].function.arguments"),
                    "Bedrock tool input must be a JSON object",
                ));
            }
            blocks.push(ContentBlock::ToolUse(ToolUseBlock {
                tool_use_id: call.id.clone(),
                name: call.function.name.clone(),
                input,
            }));
        }
        Ok(blocks)
    }

    /// Assistant text; `refusal` parts count as text.
    fn text_or_refusal(m: &ChatMessage, field: &str) -> Result<Vec<String>, TranslateError> {
        match &m.content {
            Some(MessageContent::Parts(parts)) => parts
                .iter()
                .enumerate()
                .map(|(j, p)| match p.kind.as_str() {
                    "text" => Ok(p.text.clone().unwrap_or_default()),
                    "refusal" => Ok(p
                        .rest
                        .get("refusal")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()),
                    other => Err(TranslateError::unsupported(
                        format!("{field}.content[{j}]"),
                        format!("a '{other}' part is not allowed in an assistant message"),
                    )),
                })
                .collect(),
            _ => text_only(m, field),
        }
    }

    fn tool_result(m: &ChatMessage, field: &str) -> Result<ContentBlock, TranslateError> {
        let Some(id) = m.tool_call_id.clone() else {
            return Err(TranslateError::invalid(
                format!("{field}.tool_call_id"),
                "missing",
            ));
        };
        let content = match &m.content {
            None => Vec::new(),
            Some(MessageContent::Text(t)) => vec![ToolResultContent::Text(t.clone())],
            Some(MessageContent::Parts(parts)) => parts
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    let f = format!("{field}.content[{j}]");
                    match part_block(p, &f)? {
                        ContentBlock::Text(t) => Ok(ToolResultContent::Text(t)),
                        ContentBlock::Image(i) => Ok(ToolResultContent::Image(i)),
                        _ => Err(TranslateError::unsupported(
                            f,
                            "not allowed in a tool result",
                        )),
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(ContentBlock::ToolResult(ToolResultBlock {
            tool_use_id: id,
            content,
        }))
    }

    fn tool_config(
        req: &ChatCompletionRequest,
        has_tool_blocks: bool,
    ) -> Result<Option<ToolConfig>, TranslateError> {
        let mut tools = Vec::new();
        for (i, t) in req.tools.iter().flatten().enumerate() {
            let field = format!("tools[{i}]");
            let f = match (t.kind.as_str(), &t.function) {
                ("function", Some(f)) => f,
                ("function", None) => {
                    return Err(TranslateError::invalid(
                        format!("{field}.function"),
                        "missing",
                    ))
                }
                (other, _) => {
                    return Err(TranslateError::unsupported(
                        format!("{field}.type"),
                        format!("'{other}' tools have no Converse counterpart"),
                    ))
                }
            };
            let schema = f
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            tools.push(ToolEntry::ToolSpec(ToolSpec {
                name: f.name.clone(),
                description: f.description.clone(),
                input_schema: InputSchema::Json(schema),
            }));
        }
        let choice = match &req.tool_choice {
            None => None,
            Some(OToolChoice::Mode(m)) => match m.as_str() {
                "auto" => Some(ToolChoice::Auto(Empty {})),
                "required" => Some(ToolChoice::Any(Empty {})),
                "none" => {
                    // Converse has no "none". Without tools the model cannot call one;
                    // but a conversation holding tool blocks needs its tools declared.
                    if has_tool_blocks && !tools.is_empty() {
                        return Err(TranslateError::unsupported(
                            "tool_choice",
                            "\"none\" cannot be expressed for Bedrock in a conversation with tool calls",
                        ));
                    }
                    return Ok(None);
                }
                other => {
                    return Err(TranslateError::invalid(
                        "tool_choice",
                        format!("unknown mode '{other}'"),
                    ))
                }
            },
            Some(OToolChoice::Named(n)) => Some(ToolChoice::Tool(NamedTool {
                name: n.function.name.clone(),
            })),
        };
        if tools.is_empty() {
            return match choice {
                Some(ToolChoice::Tool(_)) | Some(ToolChoice::Any(_)) => Err(
                    TranslateError::invalid("tool_choice", "requires at least one tool in 'tools'"),
                ),
                _ => Ok(None),
            };
        }
        Ok(Some(ToolConfig {
            tools,
            tool_choice: choice,
        }))
    }

    /// Translates a Converse answer into a `chat.completion`; also returns the usage.
    pub fn response(
        body: &[u8],
        meta: &ResponseMeta,
    ) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
        let resp: ConverseResponse = serde_json::from_slice(body)
            .map_err(|e| TranslateError::BadResponse(format!("Converse response: {e}")))?;
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut tool_calls = Vec::new();
        for block in resp.output.message.map(|m| m.content).unwrap_or_default() {
            if let Some(t) = block.text {
                text.push_str(&t);
            }
            if let Some(r) = block.reasoning_content.and_then(|r| r.reasoning_text) {
                reasoning.push_str(&r.text);
            }
            if let Some(tu) = block.tool_use {
                tool_calls.push(ToolCall {
                    id: tu.tool_use_id,
                    kind: "function".into(),
                    function: FunctionCall {
                        name: tu.name,
                        arguments: serde_json::to_string(&tu.input).unwrap_or_default(),
                        rest: Default::default(),
                    },
                    rest: Default::default(),
                });
            }
        }
        let (usage, tokens) = resp.usage.unwrap_or_default().to_openai();
        let content = if text.is_empty() && !tool_calls.is_empty() {
            None
        } else {
            Some(text)
        };
        let completion = ChatCompletion {
            id: meta.id.clone(),
            object: "chat.completion".into(),
            created: meta.created,
            model: meta.model.clone(),
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    role: Role::Assistant,
                    content,
                    reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                    tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                    rest: Default::default(),
                },
                finish_reason: Some(finish_reason(&resp.stop_reason).to_string()),
                rest: Default::default(),
            }],
            usage: Some(usage),
            rest: Default::default(),
        };
        let bytes = serde_json::to_vec(&completion)
            .map_err(|e| TranslateError::BadResponse(e.to_string()))?;
        Ok((bytes, tokens))
    }

    /// Bedrock's error (status, `x-amzn-errortype` header, body) as an OpenAI error:
    /// the status is kept, `code` is the Bedrock exception name, `type` follows the
    /// status the way OpenAI's SDKs read it.
    pub fn error(status: u16, error_type: Option<&str>, body: &[u8]) -> (u16, Vec<u8>) {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        // `x-amzn-errortype: ValidationException:http://internal.amazon.com/...`;
        // bodies may instead carry `__type: "com.amazon...#ValidationException"`.
        let name = error_type
            .map(|t| t.split(':').next().unwrap_or(t).trim().to_string())
            .filter(|t| !t.is_empty())
            .or_else(|| {
                parsed
                    .as_ref()
                    .and_then(|v| v.get("__type"))
                    .and_then(Value::as_str)
                    .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            });
        let message = parsed
            .as_ref()
            .and_then(|v| v.get("message").or_else(|| v.get("Message")))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                (!text.is_empty()).then(|| text.chars().take(1000).collect())
            })
            .unwrap_or_else(|| format!("Bedrock returned HTTP {status}"));
        let status = if (400..=599).contains(&status) {
            status
        } else {
            502
        };
        let body = json!({
            "error": {
                "message": message,
                "type": openai_error_type(status),
                "param": null,
                "code": name,
            }
        });
        (status, serde_json::to_vec(&body).unwrap_or_default())
    }

    fn openai_error_type(status: u16) -> &'static str {
        match status {
            400 | 404 | 409 | 413 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            _ => "server_error",
        }
    }

    /// Stream exceptions (`throttlingException`, ...) by the status Bedrock gives
    /// them in a non-streamed answer.
    fn exception_status(kind: &str) -> u16 {
        match kind.to_ascii_lowercase().as_str() {
            "validationexception" => 400,
            "accessdeniedexception" => 403,
            "resourcenotfoundexception" => 404,
            "throttlingexception" | "servicequotaexceededexception" => 429,
            "modeltimeoutexception" => 408,
            "serviceunavailableexception" => 503,
            _ => 500,
        }
    }

    /// Turns decoded `ConverseStream` messages into OpenAI `chat.completion.chunk`
    /// server-sent events.
    ///
    /// Feed each message to [`StreamTranslator::on_message`], then call
    /// [`StreamTranslator::finish`] at end of stream. Output is appended to the
    /// caller's buffer. An upstream exception or an unreadable event is written as an
    /// OpenAI error event (`data: {"error": ...}`) and ends the translation: later
    /// calls write nothing and return the same error, and no `[DONE]` follows.
    pub struct StreamTranslator {
        meta: ResponseMeta,
        /// The role was sent (on the first chunk).
        role_sent: bool,
        /// Bedrock content block index → OpenAI tool call index.
        tools: Vec<(u64, u32)>,
        finish_reason: Option<&'static str>,
        usage: Option<TokenUsage>,
        done: bool,
        error: Option<TranslateError>,
    }

    impl fmt::Debug for StreamTranslator {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("StreamTranslator")
                .field("tools", &self.tools.len())
                .field("finish_reason", &self.finish_reason)
                .field("usage", &self.usage)
                .field("done", &self.done)
                .field("error", &self.error)
                .finish_non_exhaustive()
        }
    }

    impl StreamTranslator {
        pub fn new(meta: ResponseMeta) -> Self {
            Self {
                meta,
                role_sent: false,
                tools: Vec::new(),
                finish_reason: None,
                usage: None,
                done: false,
                error: None,
            }
        }

        /// Usage from the `metadata` event, once it arrived.
        pub fn usage(&self) -> Option<TokenUsage> {
            self.usage
        }

        /// The finish reason, once `messageStop` arrived.
        pub fn finish_reason(&self) -> Option<&'static str> {
            self.finish_reason
        }

        /// Translates one event-stream message.
        pub fn on_message(
            &mut self,
            msg: &eventstream::Message,
            out: &mut Vec<u8>,
        ) -> Result<(), TranslateError> {
            if let Some(err) = &self.error {
                return Err(err.clone());
            }
            if self.done {
                return Ok(());
            }
            let result = self.handle(msg, out);
            if let Err(err) = &result {
                self.fail(err.clone(), out);
            }
            result
        }

        /// End of stream: writes `[DONE]` if the message completed; a stream cut off
        /// before `messageStop` is an error event instead.
        pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), TranslateError> {
            if let Some(err) = &self.error {
                return Err(err.clone());
            }
            if self.done {
                return Ok(());
            }
            if self.finish_reason.is_none() {
                let err = TranslateError::BadResponse(
                    "the Bedrock stream ended before messageStop".into(),
                );
                self.fail(err.clone(), out);
                return Err(err);
            }
            out.extend_from_slice(SSE_DONE);
            self.done = true;
            Ok(())
        }

        /// Records a fatal error and writes it as the stream's last event.
        fn fail(&mut self, err: TranslateError, out: &mut Vec<u8>) {
            let (kind, status) = match &err {
                TranslateError::UpstreamStream { kind, .. } => {
                    (kind.clone(), exception_status(kind))
                }
                other => (other.code().to_string(), other.status()),
            };
            let body = json!({
                "error": {
                    "message": err.message(),
                    "type": openai_error_type(status),
                    "param": null,
                    "code": kind,
                }
            });
            push_sse_data(out, &serde_json::to_vec(&body).unwrap_or_default());
            self.error = Some(err);
        }

        fn handle(
            &mut self,
            msg: &eventstream::Message,
            out: &mut Vec<u8>,
        ) -> Result<(), TranslateError> {
            match msg.header_str(":message-type").unwrap_or("event") {
                "event" => {}
                "exception" => {
                    let kind = msg.header_str(":exception-type").unwrap_or("exception");
                    let message = serde_json::from_slice::<Value>(&msg.payload)
                        .ok()
                        .and_then(|v| {
                            v.get("message")
                                .or_else(|| v.get("Message"))
                                .and_then(Value::as_str)
                                .map(str::to_string)
                        })
                        .unwrap_or_else(|| "no message".into());
                    return Err(TranslateError::UpstreamStream {
                        kind: kind.to_string(),
                        message,
                    });
                }
                "error" => {
                    return Err(TranslateError::UpstreamStream {
                        kind: msg.header_str(":error-code").unwrap_or("error").to_string(),
                        message: msg
                            .header_str(":error-message")
                            .unwrap_or("no message")
                            .to_string(),
                    })
                }
                _ => return Ok(()),
            }
            let event = msg.header_str(":event-type").unwrap_or_default();
            match event {
                // The role goes out at once, as OpenAI's first chunk does.
                "messageStart" if !self.role_sent => {
                    self.emit(
                        Delta {
                            content: Some(String::new()),
                            ..Default::default()
                        },
                        None,
                        out,
                    );
                }
                "contentBlockStart" => {
                    let ev: BlockStart = parse_event(event, &msg.payload)?;
                    if let Some(tu) = ev.start.and_then(|s| s.tool_use) {
                        let index = self.tool_index(ev.content_block_index);
                        self.emit(
                            tool_delta(
                                index,
                                Some(tu.tool_use_id),
                                Some(tu.name),
                                Some(String::new()),
                            ),
                            None,
                            out,
                        );
                    }
                }
                "contentBlockDelta" => {
                    let ev: BlockDelta = parse_event(event, &msg.payload)?;
                    // Empty pieces carry nothing a client could use: skipped.
                    if let Some(text) = ev.delta.text.filter(|t| !t.is_empty()) {
                        self.emit(
                            Delta {
                                content: Some(text),
                                ..Default::default()
                            },
                            None,
                            out,
                        );
                    } else if let Some(tu) = ev.delta.tool_use.filter(|t| !t.input.is_empty()) {
                        let index = self.tool_index(ev.content_block_index);
                        self.emit(tool_delta(index, None, None, Some(tu.input)), None, out);
                    } else if let Some(text) = ev
                        .delta
                        .reasoning_content
                        .and_then(|r| r.text)
                        .filter(|t| !t.is_empty())
                    {
                        self.emit(
                            Delta {
                                reasoning_content: Some(text),
                                ..Default::default()
                            },
                            None,
                            out,
                        );
                    }
                }
                "messageStop" => {
                    let ev: MessageStop = parse_event(event, &msg.payload)?;
                    let reason = finish_reason(&ev.stop_reason);
                    self.finish_reason = Some(reason);
                    self.emit(Delta::default(), Some(reason), out);
                }
                "metadata" => {
                    let ev: Metadata = parse_event(event, &msg.payload)?;
                    if let Some(u) = ev.usage {
                        let (usage, tokens) = u.to_openai();
                        self.usage = Some(tokens);
                        let chunk = ChatCompletionChunk {
                            id: self.meta.id.clone(),
                            object: "chat.completion.chunk".into(),
                            created: self.meta.created,
                            model: self.meta.model.clone(),
                            choices: Vec::new(),
                            usage: Some(usage),
                            rest: Default::default(),
                        };
                        write_chunk(&chunk, out);
                    }
                }
                // contentBlockStop carries nothing OpenAI streams show; unknown events
                // are a newer API's and skipped.
                _ => {}
            }
            Ok(())
        }

        /// The OpenAI index of the tool call in Bedrock content block `block`.
        fn tool_index(&mut self, block: u64) -> u32 {
            if let Some((_, i)) = self.tools.iter().find(|(b, _)| *b == block) {
                return *i;
            }
            let i = self.tools.len() as u32;
            self.tools.push((block, i));
            i
        }

        fn emit(&mut self, mut delta: Delta, finish: Option<&'static str>, out: &mut Vec<u8>) {
            if !self.role_sent {
                delta.role = Some(Role::Assistant);
                self.role_sent = true;
            }
            let chunk = ChatCompletionChunk {
                id: self.meta.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.meta.created,
                model: self.meta.model.clone(),
                choices: vec![ChunkChoice {
                    index: 0,
                    delta,
                    finish_reason: finish.map(str::to_string),
                    rest: Default::default(),
                }],
                usage: None,
                rest: Default::default(),
            };
            write_chunk(&chunk, out);
        }
    }

    fn tool_delta(
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: Option<String>,
    ) -> Delta {
        let kind = id.as_ref().map(|_| "function".to_string());
        Delta {
            tool_calls: Some(vec![ToolCallDelta {
                index,
                id,
                kind,
                function: FunctionCallDelta { name, arguments },
            }]),
            ..Default::default()
        }
    }

    fn write_chunk(chunk: &ChatCompletionChunk, out: &mut Vec<u8>) {
        // Serializing these plain structs cannot fail (no maps with non-string keys).
        if let Ok(json) = serde_json::to_vec(chunk) {
            push_sse_data(out, &json);
        }
    }

    fn parse_event<T: serde::de::DeserializeOwned>(
        event: &str,
        payload: &[u8],
    ) -> Result<T, TranslateError> {
        serde_json::from_slice(payload)
            .map_err(|e| TranslateError::BadResponse(format!("Bedrock {event} event: {e}")))
    }

    /// A `ConverseStream` response body, bytes in, OpenAI SSE bytes out: the
    /// event-stream decoder and the [`StreamTranslator`] together.
    #[derive(Debug)]
    pub struct ResponseStream {
        decoder: Decoder,
        translator: StreamTranslator,
        scratch: Vec<eventstream::Message>,
    }

    impl ResponseStream {
        /// `max_message_bytes` bounds one event-stream message (memory held).
        pub fn new(meta: ResponseMeta, max_message_bytes: usize) -> Self {
            Self {
                decoder: Decoder::new(max_message_bytes),
                translator: StreamTranslator::new(meta),
                scratch: Vec::new(),
            }
        }

        pub fn translator(&self) -> &StreamTranslator {
            &self.translator
        }

        /// Takes the next body chunk, appends what the client should receive to
        /// `out`. An `Err` means the stream is over (its error event is in `out`).
        pub fn feed(
            &mut self,
            chunk: &[u8],
            end_of_stream: bool,
            out: &mut Vec<u8>,
        ) -> Result<(), TranslateError> {
            self.scratch.clear();
            let decoded = self.decoder.push_into(chunk, &mut self.scratch);
            for msg in &self.scratch {
                self.translator.on_message(msg, out)?;
            }
            let decoded = decoded.and_then(|()| {
                if end_of_stream {
                    self.decoder.finish()
                } else {
                    Ok(())
                }
            });
            if let Err(e) = decoded {
                return self.decode_error(e, out);
            }
            if end_of_stream {
                self.translator.finish(out)?;
            }
            Ok(())
        }

        fn decode_error(
            &mut self,
            e: EventStreamError,
            out: &mut Vec<u8>,
        ) -> Result<(), TranslateError> {
            if let Some(err) = &self.translator.error {
                return Err(err.clone());
            }
            let err = TranslateError::BadResponse(e.to_string());
            self.translator.fail(err.clone(), out);
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::from_openai::*;
    use super::*;
    use crate::eventstream::{self, Decoder};
    use crate::translate::{ResponseMeta, TranslateError};
    use crate::usage::TokenUsage;
    use serde_json::json;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/testdata/bedrock/");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{DIR}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Compares with a golden file; `AIGW_BLESS=1 cargo test` rewrites it instead.
    fn golden(name: &str, actual: &[u8]) {
        let path = format!("{DIR}{name}");
        if std::env::var_os("AIGW_BLESS").is_some() {
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let expected = fixture(name);
        if name.ends_with(".json") {
            let e: Value = serde_json::from_slice(&expected).unwrap();
            let a: Value = serde_json::from_slice(actual).unwrap();
            assert_eq!(a, e, "{name}:\n{}", String::from_utf8_lossy(actual));
        } else {
            assert_eq!(
                String::from_utf8_lossy(actual),
                String::from_utf8_lossy(&expected),
                "{name}"
            );
        }
    }

    fn pretty(bytes: &[u8]) -> Vec<u8> {
        let v: Value = serde_json::from_slice(bytes).unwrap();
        let mut s = serde_json::to_vec_pretty(&v).unwrap();
        s.push(b'\n');
        s
    }

    fn meta() -> ResponseMeta {
        ResponseMeta {
            id: "chatcmpl-test".into(),
            model: "claude-sonnet".into(),
            created: 1_700_000_000,
        }
    }

    fn req(v: Value) -> Result<(String, Value), TranslateError> {
        let (path, body) = request_from_slice(&serde_json::to_vec(&v).unwrap(), "m")?;
        Ok((path, serde_json::from_slice(&body).unwrap()))
    }

    fn field_of(err: TranslateError) -> String {
        match err {
            TranslateError::Unsupported { field, .. }
            | TranslateError::InvalidRequest { field, .. } => field,
            other => panic!("unexpected {other:?}"),
        }
    }

    // ----- request -----

    #[test]
    fn golden_request() {
        let body = fixture("request_chat.openai.json");
        let (path, out) =
            request_from_slice(&body, "us.anthropic.claude-3-7-sonnet-20250219-v1:0").unwrap();
        assert_eq!(
            path,
            "/model/us.anthropic.claude-3-7-sonnet-20250219-v1%3A0/converse-stream"
        );
        golden("request_chat.bedrock.json", &pretty(&out));
    }

    #[test]
    fn request_path_non_stream_and_arn() {
        let (path, body) =
            req(json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
        assert_eq!(path, "/model/m/converse");
        assert_eq!(
            body,
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
        );
        assert_eq!(
            converse_path(
                "arn:aws:bedrock:us-east-1:1:inference-profile/us.a-v1:0",
                false
            ),
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.a-v1%3A0/converse"
        );
    }

    #[test]
    fn request_max_tokens_and_stop_forms() {
        let (_, b) = req(json!({"model": "x", "max_tokens": 5, "stop": "END",
            "messages": [{"role": "user", "content": "hi"}]}))
        .unwrap();
        assert_eq!(
            b["inferenceConfig"],
            json!({"maxTokens": 5, "stopSequences": ["END"]})
        );
    }

    #[test]
    fn request_tool_choice_forms() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let base = |choice: Value| {
            json!({"model": "x", "messages": [{"role": "user", "content": "hi"}],
                   "tools": tools, "tool_choice": choice})
        };
        let (_, b) = req(base(json!("required"))).unwrap();
        assert_eq!(b["toolConfig"]["toolChoice"], json!({"any": {}}));
        let (_, b) = req(base(json!({"type": "function", "function": {"name": "f"}}))).unwrap();
        assert_eq!(
            b["toolConfig"]["toolChoice"],
            json!({"tool": {"name": "f"}})
        );
        assert_eq!(
            b["toolConfig"]["tools"][0],
            json!({"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object", "properties": {}}}}})
        );
        // "none" without tool history: tools are dropped, so none can be called.
        let (_, b) = req(base(json!("none"))).unwrap();
        assert!(b.get("toolConfig").is_none());
        let mut with_history = base(json!("none"));
        with_history["messages"] = json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "r"}
        ]);
        assert_eq!(field_of(req(with_history).unwrap_err()), "tool_choice");
        let e = req(json!({"model": "x", "messages": [], "tool_choice": "required"})).unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn request_unsupported_is_422_and_names_the_field() {
        let user = |content: Value| json!({"model": "x", "messages": [{"role": "user", "content": content}]});
        let cases = [
            (
                user(
                    json!([{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]),
                ),
                "messages[0].content[0].image_url.url",
            ),
            (
                user(
                    json!([{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}]),
                ),
                "messages[0].content[0].image_url.url",
            ),
            (
                user(json!([{"type": "image_url", "image_url": {"url": "data:image/png,%00%01"}}])),
                "messages[0].content[0].image_url.url",
            ),
            (
                user(
                    json!([{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]),
                ),
                "messages[0].content[0]",
            ),
            (json!({"model": "x", "n": 2, "messages": []}), "n"),
            (
                json!({"model": "x", "logprobs": true, "messages": []}),
                "logprobs",
            ),
            (
                json!({"model": "x", "response_format": {"type": "json_schema", "json_schema": {}}, "messages": []}),
                "response_format",
            ),
            (
                json!({"model": "x", "modalities": ["text", "audio"], "messages": []}),
                "audio",
            ),
            (
                json!({"model": "x", "messages": [], "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "x", "messages": [{"role": "function", "name": "f", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "x", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]}),
                "messages[0].content[0]",
            ),
        ];
        for (body, field) in cases {
            let err = req(body.clone()).unwrap_err();
            assert_eq!(err.status(), 422, "{body}: {err:?}");
            assert_eq!(field_of(err), field, "{body}");
        }
        let err = req(user(
            json!([{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]),
        ))
        .unwrap_err();
        assert!(
            err.message().contains("base64 data URL"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn request_invalid_is_400() {
        let cases = [
            (
                json!({"model": "x", "messages": [{"role": "assistant", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"model": "x", "messages": [{"role": "tool", "content": "r"}]}),
                "messages[0].tool_call_id",
            ),
            (
                json!({"model": "x", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]}),
                "messages[0].content[0].image_url.url",
            ),
        ];
        for (body, field) in cases {
            let err = req(body.clone()).unwrap_err();
            assert_eq!(err.status(), 400, "{body}: {err:?}");
            assert_eq!(field_of(err), field, "{body}");
        }
        let err = request_from_slice(b"{", "m").unwrap_err();
        assert_eq!(err.status(), 400);
        let err = request_from_slice(
            br#"{"model":"x","messages":[{"role":"robot","content":"x"}]}"#,
            "m",
        )
        .unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn request_tool_arguments_must_be_objects() {
        let body = json!({"model": "x", "messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]});
        assert_eq!(req(body).unwrap_err().status(), 422);
        let body = json!({"model": "x", "messages": [{"role": "assistant", "content": null, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}]}]});
        let (_, b) = req(body).unwrap();
        assert_eq!(
            b["messages"][0]["content"],
            json!([{"toolUse": {"toolUseId": "c", "name": "f", "input": {}}}])
        );
    }

    // ----- response -----

    #[test]
    fn golden_response_text() {
        let (out, usage) = response(&fixture("response_text.bedrock.json"), &meta()).unwrap();
        golden("response_text.openai.json", &pretty(&out));
        assert_eq!(
            usage,
            TokenUsage {
                input_tokens: 25,
                output_tokens: 9,
                total_tokens: 34,
                ..Default::default()
            }
        );
    }

    #[test]
    fn golden_response_tools() {
        let (out, usage) = response(&fixture("response_tools.bedrock.json"), &meta()).unwrap();
        golden("response_tools.openai.json", &pretty(&out));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        let args = v["choices"][0]["message"]["tool_calls"][1]["function"]["arguments"]
            .as_str()
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(args).unwrap(),
            json!({"city": "Rome", "units": ["c"]})
        );
        assert_eq!(
            usage,
            TokenUsage {
                input_tokens: 1240,
                output_tokens: 60,
                total_tokens: 1300,
                cached_input_tokens: 1000,
                cache_creation_input_tokens: 200,
                reasoning_tokens: 0,
            }
        );
        // The gateway's own usage reader agrees with what the client is told.
        let mut meter = crate::usage::ResponseMeter::new(crate::usage::MeterOptions {
            format: crate::usage::BodyFormat::Json,
            gzip: false,
            strip_usage_chunk: false,
            max_buffered: 1 << 20,
        });
        let _ = meter.feed(&out, true, std::time::Duration::ZERO);
        assert_eq!(meter.usage(), Some(usage));
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
            ("something_new", "stop"),
        ] {
            assert_eq!(finish_reason(bedrock), openai);
            let body = json!({"output": {"message": {"role": "assistant", "content": [{"text": "x"}]}},
                              "stopReason": bedrock, "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}});
            let (out, _) = response(&serde_json::to_vec(&body).unwrap(), &meta()).unwrap();
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], openai);
        }
    }

    #[test]
    fn bad_response_is_502() {
        for body in [
            &b"not json"[..],
            br#"{"output":{}}"#,
            br#"{"stopReason":"end_turn"}"#,
        ] {
            let err = response(body, &meta()).unwrap_err();
            assert_eq!(err.status(), 502, "{err:?}");
        }
    }

    // ----- errors -----

    #[test]
    fn error_translation() {
        let (status, body) = error(
            400,
            Some("ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            br#"{"message":"The provided model identifier is invalid."}"#,
        );
        assert_eq!(status, 400);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"error": {"message": "The provided model identifier is invalid.",
                             "type": "invalid_request_error", "param": null, "code": "ValidationException"}})
        );

        let (status, body) = error(
            429,
            None,
            br#"{"__type":"com.amazon.coral#ThrottlingException","Message":"Too many requests"}"#,
        );
        assert_eq!(status, 429);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "ThrottlingException");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["message"], "Too many requests");

        let (status, body) = error(503, None, b"upstream connect error");
        assert_eq!(status, 503);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["message"], "upstream connect error");
        assert_eq!(v["error"]["type"], "server_error");
        assert_eq!(v["error"]["code"], Value::Null);

        let (status, body) = error(200, None, b"");
        assert_eq!(status, 502);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["message"], "Bedrock returned HTTP 200");

        let (_, body) = error(
            403,
            Some("AccessDeniedException"),
            br#"{"Message":"denied"}"#,
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["type"], "permission_error");
        assert_eq!(v["error"]["code"], "AccessDeniedException");
    }

    // ----- streams -----

    /// Runs a whole encoded stream through [`ResponseStream`], split into three chunks.
    fn run_split(
        data: &[u8],
        i: usize,
        j: usize,
    ) -> (Vec<u8>, Option<TranslateError>, Option<TokenUsage>) {
        let mut s = ResponseStream::new(meta(), 1 << 16);
        let mut out = Vec::new();
        let mut err = None;
        for (chunk, eos) in [
            (&data[..i], false),
            (&data[i..j], false),
            (&data[j..], true),
        ] {
            if let Err(e) = s.feed(chunk, eos, &mut out) {
                err = Some(e);
                break;
            }
        }
        (out, err, s.translator().usage())
    }

    fn check_stream_golden(bin: &str, sse: &str) -> (Option<TranslateError>, Option<TokenUsage>) {
        let data = fixture(bin);
        let (whole, err, usage) = run_split(&data, data.len(), data.len());
        golden(sse, &whole);
        // Every split point gives the same bytes, the same error and the same usage.
        for i in 0..=data.len() {
            let (out, e, u) = run_split(&data, i, i);
            assert_eq!(out, whole, "{bin} split at {i}");
            assert_eq!((e, u), (err.clone(), usage), "{bin} split at {i}");
        }
        // Two split points, sampled (all pairs would be quadratic in a 2.5 KB stream).
        for i in (0..=data.len()).step_by(37) {
            for j in (i..=data.len()).step_by(53) {
                assert_eq!(run_split(&data, i, j).0, whole, "{bin} split at {i},{j}");
            }
        }
        (err, usage)
    }

    #[test]
    fn golden_stream_text() {
        let (err, usage) = check_stream_golden("stream_text.bin", "stream_text.sse");
        assert_eq!(err, None);
        assert_eq!(
            usage.map(|u| (u.input_tokens, u.output_tokens, u.total_tokens)),
            Some((12, 4, 16))
        );
        let sse = fixture("stream_text.sse");
        let text = String::from_utf8(sse).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert!(text.contains(r#""finish_reason":"length""#));
    }

    #[test]
    fn golden_stream_tools() {
        let (err, usage) = check_stream_golden("stream_tools.bin", "stream_tools.sse");
        assert_eq!(err, None);
        assert_eq!(
            usage.map(|u| (u.input_tokens, u.cached_input_tokens)),
            Some((130, 100))
        );

        // Reassemble the tool calls the way an OpenAI client does.
        let sse = String::from_utf8(fixture("stream_tools.sse")).unwrap();
        let mut calls: Vec<(String, String, String)> = Vec::new();
        let mut content = String::new();
        let mut reasoning = String::new();
        let mut finish = None;
        for line in sse.lines().filter_map(|l| l.strip_prefix("data: ")) {
            if line == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(line).unwrap();
            let Some(choice) = v["choices"].get(0) else {
                continue;
            };
            let d = &choice["delta"];
            content.push_str(d["content"].as_str().unwrap_or_default());
            reasoning.push_str(d["reasoning_content"].as_str().unwrap_or_default());
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
            for tc in d["tool_calls"].as_array().into_iter().flatten() {
                let i = tc["index"].as_u64().unwrap() as usize;
                if i == calls.len() {
                    calls.push(Default::default());
                }
                let c = &mut calls[i];
                c.0.push_str(tc["id"].as_str().unwrap_or_default());
                c.1.push_str(tc["function"]["name"].as_str().unwrap_or_default());
                c.2.push_str(tc["function"]["arguments"].as_str().unwrap_or_default());
            }
        }
        assert_eq!(content, "Checking both cities.");
        assert_eq!(reasoning, "The user wants weather.");
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        assert_eq!(
            calls,
            [
                (
                    "tooluse_paris".into(),
                    "get_weather".into(),
                    r#"{"city": "Paris"}"#.into()
                ),
                (
                    "tooluse_rome".into(),
                    "get_weather".into(),
                    r#"{"city": "Rome"}"#.into()
                ),
            ]
        );
    }

    #[test]
    fn golden_stream_exception() {
        let (err, usage) = check_stream_golden("stream_exception.bin", "stream_exception.sse");
        assert_eq!(
            err,
            Some(TranslateError::UpstreamStream {
                kind: "throttlingException".into(),
                message: "Too many tokens, please wait before trying again.".into()
            })
        );
        assert_eq!(usage, None);
        let text = String::from_utf8(fixture("stream_exception.sse")).unwrap();
        assert!(!text.contains("[DONE]"));
        let last = text
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .strip_prefix("data: ")
            .unwrap();
        let v: Value = serde_json::from_str(last).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "throttlingException");
    }

    #[test]
    fn stream_errors_are_sticky_and_final() {
        // Corrupt CRC in the middle of a stream: events before it are delivered, then
        // one error event, then nothing.
        let mut data = fixture("stream_text.bin");
        let mut d = Decoder::default();
        let first_len = {
            let msgs = d.push(&data).unwrap();
            eventstream::encode(&msgs[0].headers, &msgs[0].payload)
                .unwrap()
                .len()
        };
        data[first_len + 20] ^= 0xff;
        let mut s = ResponseStream::new(meta(), 1 << 16);
        let mut out = Vec::new();
        let err = s.feed(&data, false, &mut out).unwrap_err();
        assert_eq!(err.status(), 502);
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(text.matches("data: ").count(), 2, "{text}");
        assert!(text.contains("CRC"));
        let before = out.len();
        assert_eq!(s.feed(b"more", true, &mut out), Err(err));
        assert_eq!(out.len(), before);
    }

    #[test]
    fn stream_cut_before_message_stop_is_an_error() {
        let data = fixture("stream_text.bin");
        let mut d = Decoder::default();
        let msgs = d.push(&data).unwrap();
        // Whole messages, but no messageStop / metadata.
        let mut partial = Vec::new();
        for m in &msgs[..4] {
            eventstream::encode_into(&m.headers, &m.payload, &mut partial).unwrap();
        }
        let mut s = ResponseStream::new(meta(), 1 << 16);
        let mut out = Vec::new();
        let err = s.feed(&partial, true, &mut out).unwrap_err();
        assert!(err.message().contains("messageStop"));
        // Cut inside a message: the decoder reports truncation.
        let mut s = ResponseStream::new(meta(), 1 << 16);
        let mut out = Vec::new();
        let err = s.feed(&data[..data.len() - 5], true, &mut out).unwrap_err();
        assert!(err.message().contains("ended inside a message"), "{err:?}");
        assert!(!String::from_utf8_lossy(&out).contains("[DONE]"));
    }

    #[test]
    fn stream_oversize_message_is_an_error() {
        let data = fixture("stream_tools.bin");
        let mut s = ResponseStream::new(meta(), 64);
        let mut out = Vec::new();
        let err = s.feed(&data, false, &mut out).unwrap_err();
        assert!(err.message().contains("exceeds the limit"), "{err:?}");
    }

    #[test]
    fn stream_bad_event_payload_is_an_error() {
        let mut t = StreamTranslator::new(meta());
        let mut out = Vec::new();
        let msg = eventstream::Message {
            headers: vec![
                eventstream::Header::string(":message-type", "event"),
                eventstream::Header::string(":event-type", "messageStop"),
            ],
            payload: b"{}".to_vec(),
        };
        let err = t.on_message(&msg, &mut out).unwrap_err();
        assert_eq!(err.status(), 502);
        assert!(String::from_utf8_lossy(&out).contains("\"error\""));
        // Unknown event types are skipped, not errors.
        let mut t = StreamTranslator::new(meta());
        let mut out = Vec::new();
        let msg = eventstream::Message {
            headers: vec![eventstream::Header::string(":event-type", "somethingNew")],
            payload: b"{}".to_vec(),
        };
        t.on_message(&msg, &mut out).unwrap();
        assert!(out.is_empty());
    }
}
