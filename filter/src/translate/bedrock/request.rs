//! Client request → provider request: a chat request as a Converse call, an
//! embeddings request as a Titan `InvokeModel` call.

use serde::Serialize;
use serde_json::{json, Value};

use super::{is_claude, model_path};
use crate::schema::openai::{
    ChatCompletionRequest, ChatMessage, ContentPart, EmbeddingInput, EmbeddingsRequest,
    MessageContent, Rest, Role, ToolChoice as OToolChoice,
};
use crate::translate::function_tools;
use crate::translate::{TranslateError, UpstreamRequest};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::bedrock::tests::{fixture, golden};
    use crate::translate::testing::pretty;

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
}
