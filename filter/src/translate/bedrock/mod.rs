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

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::sigv4::encode_path_segment;
use crate::codec::eventstream::{self, Decoder};
use crate::host::Headers;
use crate::schema::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, Choice, ChunkChoice,
    ContentPart, Delta, Embedding, EmbeddingInput, EmbeddingVector, EmbeddingsRequest,
    EmbeddingsResponse, EmbeddingsUsage, FunctionCall, MessageContent, PromptTokensDetails,
    ResponseMessage, Rest, Role, ToolCall, ToolChoice as OToolChoice, Usage as OUsage,
};
use crate::translate::function_tools;
use crate::translate::openai::{clip, plain_reason, MAX_MESSAGE_CHARS};
use crate::translate::{
    tool_call_delta, ChunkSource, ProviderError, ResponseMeta, StreamItem, TranslateError,
    UpstreamRequest,
};

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
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_model_request_fields: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<OutputConfig>,
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
    ReasoningContent(ReasoningBlock),
    CachePoint(CachePoint),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum SystemBlock {
    Text(String),
    CachePoint(CachePoint),
}

#[derive(Debug, Serialize)]
struct CachePoint {
    #[serde(rename = "type")]
    kind: &'static str,
}

const CACHE_POINT: CachePoint = CachePoint { kind: "default" };

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

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum ReasoningBlock {
    ReasoningText(ReasoningText),
    /// Base64 text, as Bedrock handed it out.
    RedactedContent(String),
}

#[derive(Debug, Serialize)]
struct ReasoningText {
    text: String,
    signature: String,
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
    CachePoint(CachePoint),
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

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OutputConfig {
    text_format: TextFormat,
}

#[derive(Debug, Serialize)]
struct TextFormat {
    #[serde(rename = "type")]
    kind: &'static str,
    structure: FormatStructure,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum FormatStructure {
    JsonSchema(JsonSchemaDefinition),
}

#[derive(Debug, Serialize)]
struct JsonSchemaDefinition {
    /// The schema as JSON text (Bedrock's type is a string).
    schema: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
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
    redacted_content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OutReasoningText {
    #[serde(default)]
    text: String,
    signature: Option<String>,
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
#[serde(rename_all = "camelCase")]
struct DeltaReasoning {
    text: Option<String>,
    signature: Option<String>,
    redacted_content: Option<String>,
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

// ---------------------------------------------------------------------------------
// Chat request.

/// Translates a chat request into a Converse call.
///
/// Refused (422): `n` > 1, `logprobs`, `response_format` `json_object`, audio, image
/// URLs that are not data URLs, non-function tools, `function` messages, a thinking
/// budget for a model other than Claude. See the module docs for what is dropped.
pub fn chat_request(
    req: &ChatCompletionRequest,
    model_id: &str,
) -> Result<UpstreamRequest, TranslateError> {
    let claude = is_claude(model_id);
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
    let output_config = output_config(req)?;
    let thinking = thinking(req, claude)?;

    let mut system = Vec::new();
    let mut messages: Vec<Message> = Vec::new();
    let mut has_tool_blocks = false;
    for (i, m) in req.messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let (role, mut blocks) = match m.role {
            Role::System | Role::Developer => {
                for (text, marked) in text_only(m, &field)? {
                    system.push(SystemBlock::Text(text));
                    if marked {
                        system.push(SystemBlock::CachePoint(CACHE_POINT));
                    }
                }
                if marked(&m.rest) && matches!(system.last(), Some(SystemBlock::Text(_))) {
                    system.push(SystemBlock::CachePoint(CACHE_POINT));
                }
                continue;
            }
            Role::User => ("user", user_blocks(m, &field)?),
            Role::Assistant => {
                let blocks = assistant_blocks(m, &field, claude)?;
                has_tool_blocks |= blocks.iter().any(|b| matches!(b, ContentBlock::ToolUse(_)));
                ("assistant", blocks)
            }
            Role::Tool => {
                has_tool_blocks = true;
                ("user", tool_result(m, &field)?)
            }
            Role::Function => {
                return Err(TranslateError::unsupported(
                    format!("{field}.role"),
                    "'function' messages are deprecated; use 'tool' messages",
                ))
            }
        };
        if marked(&m.rest) {
            push_cache_point(&mut blocks);
        }
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
        additional_model_request_fields: thinking
            .map(|budget| json!({"thinking": {"type": "enabled", "budget_tokens": budget}})),
        output_config,
    };
    let bytes = serde_json::to_vec(&body)
        .map_err(|e| TranslateError::invalid("messages", e.to_string()))?;
    let verb = if req.is_stream() {
        "converse-stream"
    } else {
        "converse"
    };
    Ok(UpstreamRequest {
        path: model_path(model_id, verb),
        body: bytes,
        headers: vec![("content-type", "application/json".to_string())],
    })
}

/// Whether a part, message or tool carries Anthropic's `cache_control` breakpoint.
fn marked(rest: &Rest) -> bool {
    rest.get("cache_control").is_some_and(|v| !v.is_null())
}

/// A cache point ends what precedes it; none is needed at the start or twice.
fn push_cache_point(blocks: &mut Vec<ContentBlock>) {
    if !matches!(blocks.last(), None | Some(ContentBlock::CachePoint(_))) {
        blocks.push(ContentBlock::CachePoint(CACHE_POINT));
    }
}

/// The thinking budget to ask for, from `thinking` (which wins) or
/// `reasoning_effort`.
fn thinking(req: &ChatCompletionRequest, claude: bool) -> Result<Option<u64>, TranslateError> {
    let (field, budget) = match req.rest.get("thinking").filter(|v| !v.is_null()) {
        Some(t) => {
            let kind = t.get("type").and_then(Value::as_str);
            match kind {
                Some("enabled") => {
                    let budget =
                        t.get("budget_tokens")
                            .and_then(Value::as_u64)
                            .ok_or_else(|| {
                                TranslateError::invalid(
                                    "thinking.budget_tokens",
                                    "must be a positive integer when thinking is enabled",
                                )
                            })?;
                    ("thinking", Some(budget))
                }
                Some("disabled") => ("thinking", None),
                _ => {
                    return Err(TranslateError::invalid(
                        "thinking.type",
                        "must be \"enabled\" or \"disabled\"",
                    ))
                }
            }
        }
        None => match req.rest.get("reasoning_effort").filter(|v| !v.is_null()) {
            None => ("reasoning_effort", None),
            Some(effort) => {
                let budget = match effort.as_str() {
                    Some("minimal" | "low") => Some(1024),
                    Some("medium") => Some(2048),
                    Some("high") => Some(4096),
                    Some("none") => None,
                    _ => {
                        return Err(TranslateError::invalid(
                            "reasoning_effort",
                            "must be one of none, minimal, low, medium, high",
                        ))
                    }
                };
                ("reasoning_effort", budget)
            }
        },
    };
    if budget.is_some() && !claude {
        return Err(TranslateError::unsupported(
            field,
            "only Anthropic Claude models on Bedrock take a thinking budget",
        ));
    }
    Ok(budget)
}

/// `response_format` as Converse structured output.
fn output_config(req: &ChatCompletionRequest) -> Result<Option<OutputConfig>, TranslateError> {
    let Some(rf) = &req.response_format else {
        return Ok(None);
    };
    match rf.kind.as_str() {
        "text" => Ok(None),
        "json_schema" => {
            let Some(js) = rf.rest.get("json_schema").and_then(Value::as_object) else {
                return Err(TranslateError::invalid(
                    "response_format.json_schema",
                    "missing",
                ));
            };
            let Some(schema) = js.get("schema").filter(|s| s.is_object()) else {
                return Err(TranslateError::unsupported(
                    "response_format.json_schema.schema",
                    "Bedrock structured output needs a JSON schema object",
                ));
            };
            let text = |k: &str| js.get(k).and_then(Value::as_str).map(str::to_string);
            Ok(Some(OutputConfig {
                text_format: TextFormat {
                    kind: "json_schema",
                    structure: FormatStructure::JsonSchema(JsonSchemaDefinition {
                        schema: schema.to_string(),
                        name: text("name"),
                        description: text("description"),
                    }),
                },
            }))
        }
        "json_object" => Err(TranslateError::unsupported(
            "response_format",
            "Bedrock has no JSON mode without a schema; send a 'json_schema' response_format",
        )),
        other => Err(TranslateError::unsupported(
            "response_format",
            format!("'{other}' has no Converse counterpart"),
        )),
    }
}

/// Text of a message whose content may only be text (system, developer), each piece
/// with its cache mark.
fn text_only(m: &ChatMessage, field: &str) -> Result<Vec<(String, bool)>, TranslateError> {
    match &m.content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(t)) => Ok(vec![(t.clone(), false)]),
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| match (p.kind.as_str(), &p.text) {
                ("text", Some(t)) => Ok((t.clone(), marked(&p.rest))),
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
        Some(MessageContent::Parts(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                blocks.push(part_block(p, &format!("{field}.content[{j}]"))?);
                if marked(&p.rest) {
                    push_cache_point(&mut blocks);
                }
            }
            Ok(blocks)
        }
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

fn assistant_blocks(
    m: &ChatMessage,
    field: &str,
    claude: bool,
) -> Result<Vec<ContentBlock>, TranslateError> {
    let mut blocks = Vec::new();
    // Claude's signed reasoning goes back first, as it came; other models cannot
    // check Claude's signatures, so it is not theirs to see.
    if claude {
        blocks.extend(reasoning_blocks(&m.rest));
    }
    // Bedrock refuses blank text blocks; clients send `""` next to tool calls.
    for (text, mark) in text_or_refusal(m, field)? {
        if !text.trim().is_empty() {
            blocks.push(ContentBlock::Text(text));
        }
        if mark {
            push_cache_point(&mut blocks);
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

/// `thinking_blocks` of an assistant message (see the module docs). Blocks without a
/// signature are left out: Claude refuses unsigned reasoning.
fn reasoning_blocks(rest: &Rest) -> Vec<ContentBlock> {
    let Some(list) = rest.get("thinking_blocks").and_then(Value::as_array) else {
        return Vec::new();
    };
    let text = |b: &Value, k: &str| b.get(k).and_then(Value::as_str).map(str::to_string);
    list.iter()
        .filter_map(|b| match b.get("type").and_then(Value::as_str) {
            Some("thinking") => Some(ReasoningBlock::ReasoningText(ReasoningText {
                text: text(b, "thinking")?,
                signature: text(b, "signature").filter(|s| !s.is_empty())?,
            })),
            Some("redacted_thinking") => text(b, "data").map(ReasoningBlock::RedactedContent),
            _ => None,
        })
        .map(ContentBlock::ReasoningContent)
        .collect()
}

/// Assistant text with cache marks; `refusal` parts count as text.
fn text_or_refusal(m: &ChatMessage, field: &str) -> Result<Vec<(String, bool)>, TranslateError> {
    match &m.content {
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| match p.kind.as_str() {
                "text" => Ok((p.text.clone().unwrap_or_default(), marked(&p.rest))),
                "refusal" => Ok((
                    p.rest
                        .get("refusal")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    marked(&p.rest),
                )),
                other => Err(TranslateError::unsupported(
                    format!("{field}.content[{j}]"),
                    format!("a '{other}' part is not allowed in an assistant message"),
                )),
            })
            .collect(),
        _ => text_only(m, field),
    }
}

/// A tool message as a `toolResult` block; a cache mark on any of its parts puts a
/// cache point after the block (Converse allows none inside it).
fn tool_result(m: &ChatMessage, field: &str) -> Result<Vec<ContentBlock>, TranslateError> {
    let Some(id) = m.tool_call_id.clone() else {
        return Err(TranslateError::invalid(
            format!("{field}.tool_call_id"),
            "missing",
        ));
    };
    let mut mark = false;
    let content = match &m.content {
        None => Vec::new(),
        Some(MessageContent::Text(t)) => vec![ToolResultContent::Text(t.clone())],
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let f = format!("{field}.content[{j}]");
                mark |= marked(&p.rest);
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
    let mut blocks = vec![ContentBlock::ToolResult(ToolResultBlock {
        tool_use_id: id,
        content,
    })];
    if mark {
        push_cache_point(&mut blocks);
    }
    Ok(blocks)
}

fn tool_config(
    req: &ChatCompletionRequest,
    has_tool_blocks: bool,
) -> Result<Option<ToolConfig>, TranslateError> {
    let mut tools = Vec::new();
    for (_, t, f) in function_tools(req, "Converse")? {
        let schema = f
            .parameters
            .clone()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        tools.push(ToolEntry::ToolSpec(ToolSpec {
            name: f.name.clone(),
            description: f.description.clone(),
            input_schema: InputSchema::Json(schema),
        }));
        if marked(&t.rest) || marked(&f.rest) {
            tools.push(ToolEntry::CachePoint(CACHE_POINT));
        }
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
            Some(ToolChoice::Tool(_)) | Some(ToolChoice::Any(_)) => Err(TranslateError::invalid(
                "tool_choice",
                "requires at least one tool in 'tools'",
            )),
            _ => Ok(None),
        };
    }
    Ok(Some(ToolConfig {
        tools,
        tool_choice: choice,
    }))
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

fn thinking_block(text: &str, signature: &str) -> Value {
    json!({"type": "thinking", "thinking": text, "signature": signature})
}

fn redacted_block(data: &str) -> Value {
    json!({"type": "redacted_thinking", "data": data})
}

/// Bedrock names every tool use; should one come without, a stable id is derived.
fn tool_id(id: String, response_id: &str, n: usize) -> String {
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
fn exception_name(raw: &str) -> String {
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
fn exception_status(name: &str) -> Option<u16> {
    Some(match name.to_ascii_lowercase().as_str() {
        "validationexception" => 400,
        "unrecognizedclientexception"
        | "invalidsignatureexception"
        | "expiredtokenexception"
        | "incompletesignatureexception"
        | "missingauthenticationtokenexception"
        | "invalidclienttokenid" => 401,
        "accessdeniedexception" => 403,
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

// ---------------------------------------------------------------------------------
// Chat stream.

/// A `ConverseStream` body (`application/vnd.amazon.eventstream`) as hub items.
///
/// Bedrock ends a message with `messageStop` (the stop reason), then `metadata`
/// (usage): the finish chunk goes out at `messageStop`, the usage chunk (only when
/// asked for) and [`StreamItem::Done`] at `metadata`, or `Done` alone at the end of
/// the body if `metadata` never came. An exception, a corrupt or oversize frame, an
/// unreadable event or a body that stops before `messageStop` yield one
/// [`StreamItem::Error`]; nothing follows `Done` or `Error`.
#[derive(Debug)]
pub struct ChatStream {
    decoder: Decoder,
    scratch: Vec<eventstream::Message>,
    meta: ResponseMeta,
    include_usage: bool,
    role_sent: bool,
    /// Bedrock content block index → tool call index.
    tools: Vec<(u64, u32)>,
    /// `messageStop` arrived (its finish chunk is out).
    stopped: bool,
    /// `metadata` that arrived before `messageStop` (its usage), held for after it.
    early_metadata: Option<Option<Usage>>,
    /// `Done` or `Error` is out.
    ended: bool,
}

impl ChatStream {
    /// `max_message_bytes` bounds one event-stream message (the memory held).
    pub fn new(meta: ResponseMeta, include_usage: bool, max_message_bytes: usize) -> Self {
        Self {
            decoder: Decoder::new(max_message_bytes),
            scratch: Vec::new(),
            meta,
            include_usage,
            role_sent: false,
            tools: Vec::new(),
            stopped: false,
            early_metadata: None,
            ended: false,
        }
    }

    fn fail(&mut self, err: ProviderError, out: &mut Vec<StreamItem>) {
        out.push(StreamItem::Error(err));
        self.ended = true;
    }

    /// The usage chunk if asked for, then `Done`.
    fn complete(&mut self, usage: Option<Usage>, out: &mut Vec<StreamItem>) {
        if let Some(u) = usage.filter(|_| self.include_usage) {
            out.push(StreamItem::Chunk(Box::new(
                self.chunk(Vec::new(), Some(u.to_hub())),
            )));
        }
        out.push(StreamItem::Done);
        self.ended = true;
    }

    fn on_message(
        &mut self,
        msg: &eventstream::Message,
        out: &mut Vec<StreamItem>,
    ) -> Result<(), ProviderError> {
        match msg.header_str(":message-type").unwrap_or("event") {
            "event" => {}
            "exception" => {
                let kind = exception_name(msg.header_str(":exception-type").unwrap_or_default());
                let message = serde_json::from_slice::<Value>(&msg.payload)
                    .ok()
                    .and_then(|v| {
                        v.get("message")
                            .or_else(|| v.get("Message"))
                            .and_then(Value::as_str)
                            .map(|m| clip(m, MAX_MESSAGE_CHARS))
                    })
                    .unwrap_or_else(|| "Bedrock failed mid-stream".into());
                return Err(stream_error(kind, message));
            }
            "error" => {
                let kind = exception_name(msg.header_str(":error-code").unwrap_or_default());
                let message = msg
                    .header_str(":error-message")
                    .map(|m| clip(m, MAX_MESSAGE_CHARS))
                    .unwrap_or_else(|| "Bedrock failed mid-stream".into());
                return Err(stream_error(kind, message));
            }
            _ => return Ok(()),
        }
        let event = msg.header_str(":event-type").unwrap_or_default();
        match event {
            // The role goes out at once, as OpenAI's first chunk does.
            "messageStart" if !self.role_sent => self.emit(
                Delta {
                    content: Some(String::new()),
                    ..Default::default()
                },
                out,
            ),
            "contentBlockStart" => {
                let ev: BlockStart = parse_event(event, &msg.payload)?;
                if let Some(tu) = ev.start.and_then(|s| s.tool_use) {
                    let index = self.tool_index(ev.content_block_index);
                    let id = tool_id(tu.tool_use_id, &self.meta.id, index as usize);
                    self.emit(
                        tool_call_delta(index, Some(id), Some(tu.name), String::new()),
                        out,
                    );
                }
            }
            "contentBlockDelta" => {
                let ev: BlockDelta = parse_event(event, &msg.payload)?;
                let d = ev.delta;
                // Empty pieces carry nothing a client could use: skipped.
                if let Some(text) = d.text.filter(|t| !t.is_empty()) {
                    self.emit(
                        Delta {
                            content: Some(text),
                            ..Default::default()
                        },
                        out,
                    );
                } else if let Some(tu) = d.tool_use.filter(|t| !t.input.is_empty()) {
                    let index = self.tool_index(ev.content_block_index);
                    self.emit(tool_call_delta(index, None, None, tu.input), out);
                } else if let Some(r) = d.reasoning_content {
                    if let Some(text) = r.text.filter(|t| !t.is_empty()) {
                        self.emit(
                            Delta {
                                reasoning_content: Some(text),
                                ..Default::default()
                            },
                            out,
                        );
                    }
                    let block = match (r.signature, r.redacted_content) {
                        (Some(sig), _) => Some(thinking_block("", &sig)),
                        (None, Some(data)) => Some(redacted_block(&data)),
                        (None, None) => None,
                    };
                    if let Some(block) = block {
                        let mut delta = Delta::default();
                        delta
                            .rest
                            .insert("thinking_blocks".into(), Value::Array(vec![block]));
                        self.emit(delta, out);
                    }
                }
            }
            "messageStop" if !self.stopped => {
                let ev: MessageStop = parse_event(event, &msg.payload)?;
                let finish = finish_reason(&ev.stop_reason);
                self.push_chunk(Delta::default(), Some(finish), out);
                self.stopped = true;
                if let Some(usage) = self.early_metadata.take() {
                    self.complete(usage, out);
                }
            }
            "metadata" => {
                let ev: Metadata = parse_event(event, &msg.payload)?;
                if self.stopped {
                    self.complete(ev.usage, out);
                } else {
                    self.early_metadata = Some(ev.usage);
                }
            }
            // contentBlockStop carries nothing OpenAI streams show; unknown events
            // are a newer API's and skipped.
            _ => {}
        }
        Ok(())
    }

    /// The tool call index of the tool use in Bedrock content block `block`.
    fn tool_index(&mut self, block: u64) -> u32 {
        if let Some((_, i)) = self.tools.iter().find(|(b, _)| *b == block) {
            return *i;
        }
        let i = u32::try_from(self.tools.len()).unwrap_or(u32::MAX);
        self.tools.push((block, i));
        i
    }

    /// A content chunk; the first one also carries the role.
    fn emit(&mut self, delta: Delta, out: &mut Vec<StreamItem>) {
        self.push_chunk(delta, None, out);
    }

    fn push_chunk(&mut self, mut delta: Delta, finish: Option<&str>, out: &mut Vec<StreamItem>) {
        if !self.role_sent {
            delta.role = Some(Role::Assistant);
            self.role_sent = true;
        }
        let choice = ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish.map(str::to_string),
            rest: Rest::new(),
        };
        out.push(StreamItem::Chunk(Box::new(self.chunk(vec![choice], None))));
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<OUsage>) -> ChatCompletionChunk {
        self.meta.chunk(choices, usage)
    }
}

impl ChunkSource for ChatStream {
    fn feed(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<StreamItem>) {
        if self.ended {
            return;
        }
        let mut msgs = std::mem::take(&mut self.scratch);
        msgs.clear();
        // Messages completed before a bad frame are still handed out: translate them
        // first, then report the frame.
        let decoded = self.decoder.push_into(chunk, &mut msgs);
        for msg in &msgs {
            if let Err(e) = self.on_message(msg, out) {
                self.fail(e, out);
            }
            if self.ended {
                break;
            }
        }
        msgs.clear();
        self.scratch = msgs;
        if self.ended {
            return;
        }
        let decoded = decoded.and_then(|()| {
            if end_of_stream {
                self.decoder.finish()
            } else {
                Ok(())
            }
        });
        if let Err(e) = decoded {
            self.fail(bad_response(e.to_string()), out);
        } else if end_of_stream {
            if self.stopped {
                let usage = self.early_metadata.take().flatten();
                self.complete(usage, out);
            } else {
                self.fail(
                    bad_response("the Bedrock stream ended early, before messageStop".into()),
                    out,
                );
            }
        }
    }
}

/// An exception event as the client's error.
fn stream_error(kind: String, message: String) -> ProviderError {
    let status = exception_status(&kind).unwrap_or(502);
    let code = (!kind.is_empty()).then_some(kind);
    ProviderError::new(status, code, message)
}

fn bad_response(why: String) -> ProviderError {
    ProviderError::from_translate(&TranslateError::BadResponse(why))
}

fn parse_event<T: serde::de::DeserializeOwned>(
    event: &str,
    payload: &[u8],
) -> Result<T, ProviderError> {
    serde_json::from_slice(payload).map_err(|e| bad_response(format!("Bedrock {event} event: {e}")))
}

// ---------------------------------------------------------------------------------
// Embeddings (Amazon Titan Text Embeddings, v1 and v2).

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TitanRequest<'a> {
    input_text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    normalize: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanResponse {
    embedding: Vec<f32>,
    #[serde(default)]
    input_text_token_count: u64,
}

/// Translates an embeddings request into a Titan `InvokeModel` call.
///
/// Titan embeds one text per call, so a list of several texts is a 422 (the
/// gateway does not fan one request out into many), and so is token-id input.
/// `normalize: true` is sent to v2 models, whose vectors then match OpenAI's
/// unit-length ones; v1 knows neither that field nor `dimensions`.
pub fn embeddings_request(
    req: &EmbeddingsRequest,
    model_id: &str,
) -> Result<UpstreamRequest, TranslateError> {
    let text = match &req.input {
        EmbeddingInput::Text(t) => t.as_str(),
        EmbeddingInput::Texts(v) => match v.as_slice() {
            [one] => one.as_str(),
            [] => return Err(TranslateError::invalid("input", "must not be empty")),
            _ => {
                return Err(TranslateError::unsupported(
                    "input",
                    "Titan Text Embeddings embeds one text per call; send one text per request",
                ))
            }
        },
        EmbeddingInput::Tokens(_) | EmbeddingInput::TokenLists(_) => {
            return Err(TranslateError::unsupported(
                "input",
                "Titan Text Embeddings takes text, not token ids",
            ))
        }
    };
    match req.encoding_format.as_deref() {
        None | Some("float" | "base64") => {}
        Some(other) => {
            return Err(TranslateError::invalid(
                "encoding_format",
                format!("'{other}' is not 'float' or 'base64'"),
            ))
        }
    }
    let body = TitanRequest {
        input_text: text,
        dimensions: req.dimensions,
        normalize: model_id.contains("titan-embed-text-v2").then_some(true),
    };
    let bytes =
        serde_json::to_vec(&body).map_err(|e| TranslateError::invalid("input", e.to_string()))?;
    Ok(UpstreamRequest {
        path: model_path(model_id, "invoke"),
        body: bytes,
        headers: vec![
            ("content-type", "application/json".to_string()),
            ("accept", "application/json".to_string()),
        ],
    })
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
    use crate::codec::eventstream::{self, Decoder, Header};
    use crate::schema::openai::ChatCompletionRequest;
    use crate::translate::testing::{self, pretty, Rng};
    use crate::translate::{encode_openai_sse, ErrorKind};

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/bedrock/");

    fn fixture(name: &str) -> Vec<u8> {
        testing::fixture(DIR, name)
    }

    fn golden(name: &str, actual: &[u8]) {
        testing::golden(DIR, name, actual)
    }

    fn meta() -> ResponseMeta {
        ResponseMeta {
            id: "chatcmpl-test".into(),
            model: "claude-sonnet".into(),
            created: 1_700_000_000,
        }
    }

    const CLAUDE: &str = "us.anthropic.claude-3-7-sonnet-20250219-v1:0";

    fn parse(v: &Value) -> Result<ChatCompletionRequest, TranslateError> {
        serde_json::from_value(v.clone())
            .map_err(|e| TranslateError::invalid("body", e.to_string()))
    }

    fn req_for(v: Value, model: &str) -> Result<(String, Value), TranslateError> {
        let up = chat_request(&parse(&v)?, model)?;
        assert_eq!(
            up.headers,
            vec![("content-type", "application/json".to_string())]
        );
        Ok((up.path, serde_json::from_slice(&up.body).unwrap()))
    }

    fn req(v: Value) -> Result<(String, Value), TranslateError> {
        req_for(v, "m")
    }

    fn field_of(err: TranslateError) -> String {
        match err {
            TranslateError::Unsupported { field, .. }
            | TranslateError::InvalidRequest { field, .. } => field,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn user(content: Value) -> Value {
        json!({"model": "x", "messages": [{"role": "user", "content": content}]})
    }

    // ----- request -----

    #[test]
    fn golden_request() {
        let body = fixture("request_chat.openai.json");
        let r: ChatCompletionRequest = serde_json::from_slice(&body).unwrap();
        let up = chat_request(&r, CLAUDE).unwrap();
        assert_eq!(
            up.path,
            "/model/us.anthropic.claude-3-7-sonnet-20250219-v1%3A0/converse-stream"
        );
        let out: Value = serde_json::from_slice(&up.body).unwrap();
        golden("request_chat.bedrock.json", &pretty(&out));
    }

    #[test]
    fn golden_request_caching_thinking_structured_output() {
        let body = fixture("request_features.openai.json");
        let r: ChatCompletionRequest = serde_json::from_slice(&body).unwrap();
        let up = chat_request(&r, CLAUDE).unwrap();
        assert!(up.path.ends_with("/converse"), "{}", up.path);
        let out: Value = serde_json::from_slice(&up.body).unwrap();
        golden("request_features.bedrock.json", &pretty(&out));
    }

    #[test]
    fn request_path_non_stream_and_arn() {
        let (path, body) = req(user(json!("hi"))).unwrap();
        assert_eq!(path, "/model/m/converse");
        assert_eq!(
            body,
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
        );
        let r = parse(&user(json!("hi"))).unwrap();
        let up = chat_request(
            &r,
            "arn:aws:bedrock:us-east-1:1:inference-profile/us.a-v1:0",
        )
        .unwrap();
        assert_eq!(
            up.path,
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.a-v1%3A0/converse"
        );
    }

    #[test]
    fn request_inference_config() {
        let mut b = user(json!("hi"));
        b["max_tokens"] = json!(5);
        b["stop"] = json!("END");
        let (_, out) = req(b.clone()).unwrap();
        assert_eq!(
            out["inferenceConfig"],
            json!({"maxTokens": 5, "stopSequences": ["END"]})
        );
        // max_completion_tokens wins; temperature and top_p pass; an empty stop list
        // is no stop.
        b["max_completion_tokens"] = json!(9);
        b["temperature"] = json!(0.5);
        b["top_p"] = json!(0.25);
        b["stop"] = json!([]);
        let (_, out) = req(b).unwrap();
        assert_eq!(
            out["inferenceConfig"],
            json!({"maxTokens": 9, "temperature": 0.5, "topP": 0.25})
        );
    }

    #[test]
    fn request_ignores_what_bedrock_cannot_say() {
        let mut b = user(json!("hi"));
        for (k, v) in [
            ("parallel_tool_calls", json!(false)),
            ("user", json!("u")),
            ("seed", json!(1)),
            ("stream_options", json!({"include_usage": true})),
            ("frequency_penalty", json!(0.5)),
            ("service_tier", json!("auto")),
            ("response_format", json!({"type": "text"})),
            ("thinking", json!({"type": "disabled"})),
            ("reasoning_effort", json!("none")),
        ] {
            b[k] = v;
        }
        let (_, out) = req(b).unwrap();
        assert_eq!(
            out,
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
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
        let (_, b) = req(base(json!("auto"))).unwrap();
        assert_eq!(b["toolConfig"]["toolChoice"], json!({"auto": {}}));
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
        let e = req(base(json!("sometimes"))).unwrap_err();
        assert_eq!((e.status(), field_of(e)), (400, "tool_choice".to_string()));
    }

    #[test]
    fn request_thinking_for_claude() {
        let with = |k: &str, v: Value| {
            let mut b = user(json!("hi"));
            b[k] = v;
            b
        };
        let budget = |b: Value| {
            let (_, out) = req_for(b, CLAUDE).unwrap();
            out["additionalModelRequestFields"]["thinking"].clone()
        };
        assert_eq!(
            budget(with(
                "thinking",
                json!({"type": "enabled", "budget_tokens": 3000})
            )),
            json!({"type": "enabled", "budget_tokens": 3000})
        );
        for (effort, n) in [
            ("minimal", 1024),
            ("low", 1024),
            ("medium", 2048),
            ("high", 4096),
        ] {
            assert_eq!(
                budget(with("reasoning_effort", json!(effort))),
                json!({"type": "enabled", "budget_tokens": n}),
                "{effort}"
            );
        }
        // `thinking` wins over `reasoning_effort`.
        let mut b = with("thinking", json!({"type": "disabled"}));
        b["reasoning_effort"] = json!("high");
        let (_, out) = req_for(b, CLAUDE).unwrap();
        assert!(out.get("additionalModelRequestFields").is_none());

        // Other models take no budget: 422, naming the field asked with.
        let e = req_for(
            with("reasoning_effort", json!("low")),
            "amazon.nova-pro-v1:0",
        )
        .unwrap_err();
        assert_eq!(
            (e.status(), field_of(e)),
            (422, "reasoning_effort".to_string())
        );
        let e = req_for(
            with(
                "thinking",
                json!({"type": "enabled", "budget_tokens": 2000}),
            ),
            "meta.llama3-70b-instruct-v1:0",
        )
        .unwrap_err();
        assert_eq!((e.status(), field_of(e)), (422, "thinking".to_string()));

        // Malformed values are the client's error.
        for (b, field) in [
            (
                with("reasoning_effort", json!("extreme")),
                "reasoning_effort",
            ),
            (with("reasoning_effort", json!(3)), "reasoning_effort"),
            (
                with("thinking", json!({"type": "enabled"})),
                "thinking.budget_tokens",
            ),
            (
                with("thinking", json!({"type": "enabled", "budget_tokens": -1})),
                "thinking.budget_tokens",
            ),
            (with("thinking", json!({"type": "on"})), "thinking.type"),
            (with("thinking", json!("yes")), "thinking.type"),
        ] {
            let e = req_for(b.clone(), CLAUDE).unwrap_err();
            assert_eq!((e.status(), field_of(e)), (400, field.to_string()), "{b}");
        }
    }

    #[test]
    fn request_thinking_blocks_go_back_to_claude_only() {
        let b = json!({"model": "x", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null,
             "thinking_blocks": [
                {"type": "thinking", "thinking": "use the tool", "signature": "c2ln"},
                {"type": "redacted_thinking", "data": "cmVk"},
                {"type": "thinking", "thinking": "unsigned: dropped"},
                {"type": "other"},
                "junk"
             ],
             "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "sunny"}
        ], "tools": [{"type": "function", "function": {"name": "f"}}]});
        let (_, out) = req_for(b.clone(), CLAUDE).unwrap();
        assert_eq!(
            out["messages"][1]["content"],
            json!([
                {"reasoningContent": {"reasoningText": {"text": "use the tool", "signature": "c2ln"}}},
                {"reasoningContent": {"redactedContent": "cmVk"}},
                {"toolUse": {"toolUseId": "c", "name": "f", "input": {}}}
            ])
        );
        let (_, out) = req_for(b, "amazon.nova-pro-v1:0").unwrap();
        assert_eq!(
            out["messages"][1]["content"],
            json!([{"toolUse": {"toolUseId": "c", "name": "f", "input": {}}}])
        );
    }

    #[test]
    fn request_cache_points() {
        let cc = json!({"type": "ephemeral"});
        let b = json!({"model": "x", "messages": [
            {"role": "system", "content": "sys", "cache_control": cc},
            {"role": "system", "content": [
                {"type": "text", "text": "a", "cache_control": cc},
                {"type": "text", "text": "b"}
            ]},
            {"role": "user", "content": [
                {"type": "text", "text": "doc", "cache_control": cc},
                {"type": "text", "text": "q", "cache_control": null}
            ]},
            {"role": "assistant", "content": "ok", "cache_control": cc},
            {"role": "user", "content": "more", "cache_control": cc},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": [
                {"type": "text", "text": "r1", "cache_control": cc},
                {"type": "text", "text": "r2", "cache_control": cc}
            ]}
        ], "tools": [
            {"type": "function", "function": {"name": "f"}},
            {"type": "function", "function": {"name": "g"}, "cache_control": cc}
        ]});
        let (_, out) = req(b).unwrap();
        let cp = json!({"cachePoint": {"type": "default"}});
        assert_eq!(
            out["system"],
            json!([{"text": "sys"}, cp, {"text": "a"}, cp, {"text": "b"}])
        );
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": [{"text": "doc"}, cp, {"text": "q"}]},
                {"role": "assistant", "content": [{"text": "ok"}, cp]},
                {"role": "user", "content": [{"text": "more"}, cp]},
                {"role": "assistant", "content": [{"toolUse": {"toolUseId": "c", "name": "f", "input": {}}}]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "c", "content": [{"text": "r1"}, {"text": "r2"}]}},
                    cp
                ]}
            ])
        );
        assert_eq!(
            out["toolConfig"]["tools"],
            json!([
                {"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object", "properties": {}}}}},
                {"toolSpec": {"name": "g", "inputSchema": {"json": {"type": "object", "properties": {}}}}},
                cp
            ])
        );
    }

    #[test]
    fn request_response_format() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}},
                            "required": ["a"], "additionalProperties": false});
        let mut b = user(json!("hi"));
        b["response_format"] = json!({"type": "json_schema", "json_schema":
            {"name": "thing", "description": "a thing", "schema": schema, "strict": true}});
        let (_, out) = req(b.clone()).unwrap();
        let tf = &out["outputConfig"]["textFormat"];
        assert_eq!(tf["type"], "json_schema");
        assert_eq!(tf["structure"]["jsonSchema"]["name"], "thing");
        assert_eq!(tf["structure"]["jsonSchema"]["description"], "a thing");
        let sent: Value =
            serde_json::from_str(tf["structure"]["jsonSchema"]["schema"].as_str().unwrap())
                .unwrap();
        assert_eq!(sent, schema);

        b["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "x"}});
        let e = req(b.clone()).unwrap_err();
        assert_eq!(
            (e.status(), field_of(e)),
            (422, "response_format.json_schema.schema".to_string())
        );
        b["response_format"] = json!({"type": "json_schema"});
        let e = req(b.clone()).unwrap_err();
        assert_eq!(
            (e.status(), field_of(e)),
            (400, "response_format.json_schema".to_string())
        );
        b["response_format"] = json!({"type": "json_object"});
        let e = req(b).unwrap_err();
        assert_eq!(e.status(), 422);
        assert!(e.message().contains("json_schema"), "{}", e.message());
    }

    #[test]
    fn request_unsupported_is_422_and_names_the_field() {
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
                json!({"model": "x", "response_format": {"type": "json_object"}, "messages": []}),
                "response_format",
            ),
            (
                json!({"model": "x", "response_format": {"type": "grammar"}, "messages": []}),
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
            (
                json!({"model": "x", "messages": [{"role": "assistant", "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
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
            (
                json!({"model": "x", "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
                "messages[0].content[0].text",
            ),
            (
                json!({"model": "x", "messages": [{"role": "user"}]}),
                "messages[0].content",
            ),
            (
                json!({"model": "x", "messages": [], "tools": [{"type": "function"}]}),
                "tools[0].function",
            ),
        ];
        for (body, field) in cases {
            let err = req(body.clone()).unwrap_err();
            assert_eq!(err.status(), 400, "{body}: {err:?}");
            assert_eq!(field_of(err), field, "{body}");
        }
    }

    #[test]
    fn request_tool_history_and_blank_text() {
        let body = json!({"model": "x", "messages": [{"role": "assistant", "content": "  ", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}]}]});
        let (_, b) = req(body).unwrap();
        assert_eq!(
            b["messages"][0]["content"],
            json!([{"toolUse": {"toolUseId": "c", "name": "f", "input": {}}}])
        );
        // A refusal part counts as assistant text.
        let body = json!({"model": "x", "messages": [{"role": "assistant", "content": [
            {"type": "refusal", "refusal": "no"}]}]});
        let (_, b) = req(body).unwrap();
        assert_eq!(b["messages"][0]["content"], json!([{"text": "no"}]));
    }

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

    // ----- streams -----

    /// Feeds `data` cut at `cuts` (sorted offsets), the last piece with end of stream.
    fn run_cuts(data: &[u8], cuts: &[usize], include_usage: bool, max: usize) -> Vec<StreamItem> {
        let mut s = ChatStream::new(meta(), include_usage, max);
        let mut out = Vec::new();
        let mut start = 0;
        for &c in cuts {
            s.feed(&data[start..c], false, &mut out);
            start = c;
        }
        s.feed(&data[start..], true, &mut out);
        // Nothing follows the end.
        let n = out.len();
        s.feed(b"more", true, &mut out);
        assert_eq!(out.len(), n);
        out
    }

    fn sse(items: &[StreamItem]) -> Vec<u8> {
        let mut out = Vec::new();
        for i in items {
            encode_openai_sse(i, &mut out);
        }
        out
    }

    /// The items for a whole stream; the same for every split point, two split points
    /// (sampled) and one byte at a time. Ends with exactly one Done or Error.
    fn check_splits(bin: &str, include_usage: bool) -> Vec<StreamItem> {
        let data = fixture(bin);
        let whole = run_cuts(&data, &[], include_usage, 1 << 16);
        for i in 0..=data.len() {
            assert_eq!(
                run_cuts(&data, &[i], include_usage, 1 << 16),
                whole,
                "{bin} split at {i}"
            );
        }
        for i in (0..=data.len()).step_by(37) {
            for j in (i..=data.len()).step_by(53) {
                assert_eq!(
                    run_cuts(&data, &[i, j], include_usage, 1 << 16),
                    whole,
                    "{bin} split at {i},{j}"
                );
            }
        }
        let bytes: Vec<usize> = (1..data.len()).collect();
        assert_eq!(run_cuts(&data, &bytes, include_usage, 1 << 16), whole);
        let ends = whole
            .iter()
            .filter(|i| matches!(i, StreamItem::Done | StreamItem::Error(_)))
            .count();
        assert_eq!(ends, 1, "{bin}");
        assert!(matches!(
            whole.last(),
            Some(StreamItem::Done | StreamItem::Error(_))
        ));
        whole
    }

    fn chunk(item: &StreamItem) -> &ChatCompletionChunk {
        match item {
            StreamItem::Chunk(c) => c,
            other => panic!("not a chunk: {other:?}"),
        }
    }

    #[test]
    fn golden_stream_text() {
        let items = check_splits("stream_text.bin", true);
        golden("stream_text.sse", &sse(&items));
        // Role first; finish chunk; usage-only chunk; Done.
        let n = items.len();
        assert_eq!(
            chunk(&items[0]).choices[0].delta.role,
            Some(Role::Assistant)
        );
        assert_eq!(
            chunk(&items[n - 3]).choices[0].finish_reason.as_deref(),
            Some("length")
        );
        let usage = chunk(&items[n - 2]);
        assert!(usage.choices.is_empty());
        let u = usage.usage.as_ref().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (12, 4, 16)
        );
        assert_eq!(items[n - 1], StreamItem::Done);

        // Without include_usage the usage chunk is left out, nothing else changes.
        let without = check_splits("stream_text.bin", false);
        let mut expected = items.clone();
        expected.remove(n - 2);
        assert_eq!(without, expected);
    }

    #[test]
    fn golden_stream_tools() {
        let items = check_splits("stream_tools.bin", true);
        golden("stream_tools.sse", &sse(&items));

        // Reassemble the answer the way an OpenAI client does.
        let mut calls: Vec<(String, String, String)> = Vec::new();
        let mut content = String::new();
        let mut reasoning = String::new();
        let mut blocks = Vec::new();
        let mut finish = None;
        for item in &items {
            let StreamItem::Chunk(c) = item else { continue };
            let Some(choice) = c.choices.first() else {
                let d = c
                    .usage
                    .as_ref()
                    .unwrap()
                    .prompt_tokens_details
                    .as_ref()
                    .unwrap();
                assert_eq!(
                    (d.cached_tokens, d.cache_creation_tokens),
                    (Some(100), None)
                );
                continue;
            };
            let d = &choice.delta;
            content.push_str(d.content.as_deref().unwrap_or_default());
            reasoning.push_str(d.reasoning_content.as_deref().unwrap_or_default());
            if let Some(b) = d.rest.get("thinking_blocks") {
                blocks.push(b.clone());
            }
            if let Some(f) = &choice.finish_reason {
                finish = Some(f.clone());
            }
            for tc in d.tool_calls.iter().flatten() {
                let i = tc.index as usize;
                if i == calls.len() {
                    calls.push(Default::default());
                }
                let c = &mut calls[i];
                c.0.push_str(tc.id.as_deref().unwrap_or_default());
                c.1.push_str(tc.function.name.as_deref().unwrap_or_default());
                c.2.push_str(tc.function.arguments.as_deref().unwrap_or_default());
            }
        }
        assert_eq!(content, "Checking both cities.");
        assert_eq!(reasoning, "The user wants weather.");
        assert_eq!(
            blocks,
            [json!([{"type": "thinking", "thinking": "", "signature": "c2lnbmF0dXJl"}])]
        );
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
    fn golden_stream_reasoning_and_cache() {
        let items = check_splits("stream_reasoning.bin", true);
        golden("stream_reasoning.sse", &sse(&items));
        let last_usage = items
            .iter()
            .filter_map(|i| match i {
                StreamItem::Chunk(c) => c.usage.clone(),
                _ => None,
            })
            .next_back()
            .unwrap();
        assert_eq!(
            (
                last_usage.prompt_tokens,
                last_usage.completion_tokens,
                last_usage.total_tokens
            ),
            (2010, 30, 2040)
        );
        let d = last_usage.prompt_tokens_details.unwrap();
        assert_eq!(
            (d.cached_tokens, d.cache_creation_tokens),
            (Some(1500), Some(500))
        );
    }

    #[test]
    fn golden_stream_exception() {
        let items = check_splits("stream_exception.bin", true);
        golden("stream_exception.sse", &sse(&items));
        assert_eq!(
            items.last(),
            Some(&StreamItem::Error(ProviderError {
                status: 429,
                kind: ErrorKind::RateLimit,
                code: Some("ThrottlingException".into()),
                message: "Too many tokens, please wait before trying again.".into()
            }))
        );
        // The text before the exception was delivered.
        assert_eq!(
            chunk(&items[1]).choices[0].delta.content.as_deref(),
            Some("Partial")
        );
    }

    fn event(kind: &str, payload: Value) -> Vec<u8> {
        eventstream::encode_event(kind, payload.to_string().as_bytes()).unwrap()
    }

    fn exception(kind: &str, payload: &[u8]) -> Vec<u8> {
        eventstream::encode(
            &[
                Header::string(":exception-type", kind),
                Header::string(":content-type", "application/json"),
                Header::string(":message-type", "exception"),
            ],
            payload,
        )
        .unwrap()
    }

    fn feed_all(data: &[u8], eos: bool, include_usage: bool) -> Vec<StreamItem> {
        let mut s = ChatStream::new(meta(), include_usage, 1 << 16);
        let mut out = Vec::new();
        s.feed(data, eos, &mut out);
        out
    }

    fn start_and_text() -> Vec<u8> {
        let mut d = event("messageStart", json!({"role": "assistant"}));
        d.extend(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        ));
        d
    }

    #[test]
    fn stream_every_exception_type() {
        for (kind, status) in [
            ("internalServerException", 500),
            ("modelStreamErrorException", 502),
            ("validationException", 400),
            ("throttlingException", 429),
            ("serviceUnavailableException", 503),
            ("modelTimeoutException", 408),
            ("somethingNewException", 502),
        ] {
            let mut d = start_and_text();
            d.extend(exception(kind, br#"{"message":"boom"}"#));
            let items = feed_all(&d, false, true);
            assert_eq!(items.len(), 3, "{kind}");
            let StreamItem::Error(e) = &items[2] else {
                panic!("{kind}: {items:?}")
            };
            assert_eq!(e.status, status, "{kind}");
            assert_eq!(e.message, "boom");
            let code = e.code.as_deref().unwrap();
            assert!(code.eq_ignore_ascii_case(kind), "{code}");
            assert!(code.starts_with(char::is_uppercase), "{code}");
        }
        // An exception with an unreadable payload still ends the stream with an error.
        let mut d = start_and_text();
        d.extend(exception("throttlingException", b"\xff"));
        let items = feed_all(&d, false, true);
        assert!(matches!(&items[2], StreamItem::Error(e) if e.status == 429));
        // An `error` message (`:error-code`, `:error-message`).
        let mut d = start_and_text();
        d.extend(
            eventstream::encode(
                &[
                    Header::string(":message-type", "error"),
                    Header::string(":error-code", "InternalFailure"),
                    Header::string(":error-message", "oops"),
                ],
                b"",
            )
            .unwrap(),
        );
        let items = feed_all(&d, false, true);
        assert_eq!(
            items.last(),
            Some(&StreamItem::Error(ProviderError::new(
                502,
                Some("InternalFailure".into()),
                "oops"
            )))
        );
    }

    #[test]
    fn stream_done_at_metadata_or_at_the_end() {
        let mut d = start_and_text();
        d.extend(event("messageStop", json!({"stopReason": "end_turn"})));
        // Finish chunk at messageStop; no Done before metadata or the end.
        let items = feed_all(&d, false, true);
        assert_eq!(items.len(), 3);
        assert_eq!(
            chunk(&items[2]).choices[0].finish_reason.as_deref(),
            Some("stop")
        );
        // The end of the body without metadata: Done, no usage chunk.
        let items = feed_all(&d, true, true);
        assert_eq!(items.len(), 4);
        assert_eq!(items[3], StreamItem::Done);
        // Metadata ends the stream at once, before the body's end.
        d.extend(event(
            "metadata",
            json!({"usage": {"inputTokens": 3, "outputTokens": 1}}),
        ));
        let items = feed_all(&d, false, true);
        assert_eq!(items.len(), 5);
        assert!(chunk(&items[3]).usage.is_some());
        assert_eq!(items[4], StreamItem::Done);
        let items = feed_all(&d, false, false);
        assert_eq!(items.len(), 4);
        assert_eq!(items[3], StreamItem::Done);
        // Metadata before messageStop (not Bedrock's order) waits for it.
        let mut d = start_and_text();
        d.extend(event(
            "metadata",
            json!({"usage": {"inputTokens": 3, "outputTokens": 1}}),
        ));
        let items = feed_all(&d, true, true);
        assert!(matches!(items.last(), Some(StreamItem::Error(_))));
        d.extend(event("messageStop", json!({"stopReason": "end_turn"})));
        let items = feed_all(&d, false, true);
        assert_eq!(items.len(), 5);
        assert!(chunk(&items[3]).usage.is_some());
        assert_eq!(items[4], StreamItem::Done);
    }

    #[test]
    fn stream_corrupt_frames_are_errors() {
        let data = fixture("stream_text.bin");
        let first_len = {
            let msgs = Decoder::default().push(&data).unwrap();
            eventstream::encode(&msgs[0].headers, &msgs[0].payload)
                .unwrap()
                .len()
        };
        // Corrupt payload of the second message: the first is delivered, then the error.
        let mut bad = data.clone();
        bad[first_len + 20] ^= 0xff;
        let items = check_splits_of(&bad);
        assert_eq!(items.len(), 2, "{items:?}");
        let StreamItem::Error(e) = &items[1] else {
            panic!("{items:?}")
        };
        assert_eq!((e.status, e.kind), (502, ErrorKind::Server));
        assert!(e.message.contains("CRC"), "{}", e.message);
        // Corrupt prelude.
        let mut bad = data.clone();
        bad[first_len + 2] ^= 0x01;
        let items = check_splits_of(&bad);
        assert!(matches!(&items[1], StreamItem::Error(e) if e.message.contains("prelude")));
        // Flip every byte in turn: never a panic, always exactly one end.
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x5a;
            let items = run_cuts(&bad, &[i / 2], true, 1 << 16);
            let ends = items
                .iter()
                .filter(|x| matches!(x, StreamItem::Done | StreamItem::Error(_)))
                .count();
            assert_eq!(ends, 1, "flip at {i}");
        }
    }

    /// Items of `data` (no fixture file), the same at every split point.
    fn check_splits_of(data: &[u8]) -> Vec<StreamItem> {
        let whole = run_cuts(data, &[], true, 1 << 16);
        for i in 0..=data.len() {
            assert_eq!(run_cuts(data, &[i], true, 1 << 16), whole, "split at {i}");
        }
        whole
    }

    #[test]
    fn stream_cut_off_is_an_error() {
        let data = fixture("stream_text.bin");
        let msgs = Decoder::default().push(&data).unwrap();
        // Whole messages, but no messageStop.
        let mut partial = Vec::new();
        for m in &msgs[..4] {
            eventstream::encode_into(&m.headers, &m.payload, &mut partial).unwrap();
        }
        let items = feed_all(&partial, true, true);
        let StreamItem::Error(e) = items.last().unwrap() else {
            panic!("{items:?}")
        };
        assert!(e.message.contains("ended early"), "{}", e.message);
        // Cut inside a message: truncation.
        let items = feed_all(&data[..data.len() - 5], true, true);
        let StreamItem::Error(e) = items.last().unwrap() else {
            panic!("{items:?}")
        };
        assert!(e.message.contains("ended inside a message"), "{e:?}");
        // An empty body.
        let items = feed_all(b"", true, true);
        assert!(matches!(&items[..], [StreamItem::Error(_)]));
        // Every truncation: exactly one end, never Done before messageStop is in.
        let stop_at = {
            let mut n = 0;
            for m in &msgs[..6] {
                n += eventstream::encode(&m.headers, &m.payload).unwrap().len();
            }
            n
        };
        for cut in 0..data.len() {
            let items = feed_all(&data[..cut], true, true);
            let last = items.last().unwrap();
            if cut < stop_at {
                assert!(matches!(last, StreamItem::Error(_)), "cut at {cut}");
            }
        }
    }

    #[test]
    fn stream_oversize_message_is_an_error() {
        let data = fixture("stream_tools.bin");
        let items = run_cuts(&data, &[], true, 64);
        let StreamItem::Error(e) = items.last().unwrap() else {
            panic!("{items:?}")
        };
        assert!(e.message.contains("exceeds the limit"), "{e:?}");
    }

    #[test]
    fn stream_bad_and_unknown_events() {
        let mut d = start_and_text();
        d.extend(event("messageStop", json!({})));
        let items = feed_all(&d, false, true);
        let StreamItem::Error(e) = items.last().unwrap() else {
            panic!("{items:?}")
        };
        assert_eq!(e.status, 502);
        assert!(e.message.contains("messageStop"), "{}", e.message);
        // Unknown event and message types are skipped, not errors.
        let mut d = start_and_text();
        d.extend(event("somethingNew", json!({"x": 1})));
        d.extend(eventstream::encode(&[Header::string(":message-type", "ping")], b"").unwrap());
        d.extend(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"citation": {}}}),
        ));
        d.extend(event("messageStop", json!({"stopReason": "end_turn"})));
        let items = feed_all(&d, true, false);
        assert_eq!(items.len(), 4, "{items:?}");
        assert_eq!(items[3], StreamItem::Done);
        // A stream without messageStart still puts the role on its first chunk.
        let d = event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "x"}}),
        );
        let items = feed_all(&d, false, false);
        assert_eq!(
            chunk(&items[0]).choices[0].delta.role,
            Some(Role::Assistant)
        );
    }

    #[test]
    fn stream_garbage_never_panics() {
        let good = fixture("stream_tools.bin");
        let mut rng = Rng(42);
        for round in 0..300 {
            let mut data = good.clone();
            for _ in 0..rng.below(4) {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            if round % 3 == 0 {
                data.truncate(rng.below(data.len()));
            }
            if round % 5 == 0 {
                data = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
            }
            let mut cuts: Vec<usize> = (0..rng.below(6))
                .map(|_| rng.below(data.len() + 1))
                .collect();
            cuts.sort_unstable();
            let items = run_cuts(&data, &cuts, true, 1 << 16);
            let ends = items
                .iter()
                .filter(|x| matches!(x, StreamItem::Done | StreamItem::Error(_)))
                .count();
            assert_eq!(ends, 1);
        }
    }

    // ----- embeddings -----

    fn emb_req(v: Value, model: &str) -> Result<(String, Value), TranslateError> {
        let r: EmbeddingsRequest = serde_json::from_value(v).unwrap();
        let up = embeddings_request(&r, model)?;
        Ok((up.path, serde_json::from_slice(&up.body).unwrap()))
    }

    #[test]
    fn embeddings_request_forms() {
        let v2 = "amazon.titan-embed-text-v2:0";
        let (path, b) = emb_req(json!({"model": "e", "input": "hello"}), v2).unwrap();
        assert_eq!(path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
        assert_eq!(b, json!({"inputText": "hello", "normalize": true}));
        let (_, b) = emb_req(
            json!({"model": "e", "input": ["hello"], "dimensions": 256, "encoding_format": "base64", "user": "u"}),
            v2,
        )
        .unwrap();
        assert_eq!(
            b,
            json!({"inputText": "hello", "dimensions": 256, "normalize": true})
        );
        let (path, b) = emb_req(
            json!({"model": "e", "input": "hello"}),
            "amazon.titan-embed-text-v1",
        )
        .unwrap();
        assert_eq!(path, "/model/amazon.titan-embed-text-v1/invoke");
        assert_eq!(b, json!({"inputText": "hello"}));

        for (input, status) in [
            (json!(["a", "b"]), 422),
            (json!([1, 2, 3]), 422),
            (json!([[1], [2]]), 422),
            (json!([]), 400),
        ] {
            let e = emb_req(json!({"model": "e", "input": input}), v2).unwrap_err();
            assert_eq!(
                (e.status(), field_of(e)),
                (status, "input".to_string()),
                "{input}"
            );
        }
        let e = emb_req(
            json!({"model": "e", "input": "x", "encoding_format": "int8"}),
            v2,
        )
        .unwrap_err();
        assert_eq!(e.status(), 400);
    }

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
