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

use std::fmt;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::auth::sigv4::encode_path_segment;
use crate::codec::eventstream;
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::host::Headers;
use crate::schema::anthropic as an;
use crate::schema::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, Choice, ChunkChoice,
    ContentPart, Delta, FunctionCall, FunctionDef, ImageUrl, MessageContent, NamedFunction,
    NamedToolChoice, PromptTokensDetails, ResponseFormat, ResponseMessage, Rest, Role, Stop,
    StreamOptions, Tool, ToolCall, ToolChoice, Usage,
};
use crate::translate::function_tools;
use crate::translate::{
    tool_call_delta, ChunkSource, ErrorKind, ProviderError, ResponseMeta, StreamItem,
    TranslateError, UpstreamRequest,
};

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
/// Smallest thinking budget Anthropic accepts.
const MIN_BUDGET: u64 = 1024;
/// Longest provider error message passed on, in characters.
const MAX_MESSAGE_CHARS: usize = 1000;
const JSON_OBJECT_INSTRUCTION: &str =
    "Respond with a single JSON object and nothing else: no prose, no code fences.";

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

// ---------------------------------------------------------------------------------
// Hub request → Messages request.

/// Translates a hub request into the provider's call.
///
/// Dropped because Anthropic has no counterpart and the answer is still what was
/// asked for: `seed`, penalties, `logit_bias`, `store`, `service_tier`,
/// `stream_options`, `prediction`, OpenAI `metadata`, message `name`s, `strict` on
/// tools. Refused (422): `n` > 1, `logprobs`, audio, `web_search_options`,
/// non-function tools, `json_schema` with thinking, content parts Anthropic cannot
/// take.
pub fn chat_request(
    req: &ChatCompletionRequest,
    target: &Target,
) -> Result<UpstreamRequest, TranslateError> {
    refuse_unsupported(req)?;
    let mut system = SystemPrompt::default();
    let mut messages: Vec<an::Message> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let (role, content) = match m.role {
            Role::System | Role::Developer => {
                system.push_message(m, &field)?;
                continue;
            }
            Role::User => (an::Role::User, user_content(m, &field, target)?),
            Role::Assistant => match assistant_content(m, &field)? {
                Some(c) => (an::Role::Assistant, c),
                None => continue,
            },
            Role::Tool => (
                an::Role::User,
                an::Content::Blocks(vec![tool_result(m, &field, target)?]),
            ),
            Role::Function => {
                return Err(TranslateError::unsupported(
                    format!("{field}.role"),
                    "'function' messages are deprecated; use 'tool' messages",
                ))
            }
        };
        push_turn(&mut messages, role, content);
    }

    let (max_tokens, thinking) = max_tokens_and_thinking(req)?;
    let mut tools = tools(req)?;
    let mut tool_choice = tool_choice(req, !tools.is_empty())?;
    match req.response_format.as_ref().map(|f| f.kind.as_str()) {
        None | Some("text") => {}
        Some("json_object") => system.push_text(JSON_OBJECT_INSTRUCTION),
        Some("json_schema") => {
            if thinking.as_ref().is_some_and(|t| t.kind != "disabled") {
                return Err(TranslateError::unsupported(
                    "response_format",
                    "Anthropic models cannot be held to a JSON schema while thinking; \
                     drop reasoning or use json_object",
                ));
            }
            let rf = req.response_format.as_ref();
            tools.push(response_tool(rf)?);
            tool_choice = Some(response_tool_choice(tool_choice, tools.len() > 1));
        }
        Some(other) => {
            return Err(TranslateError::invalid(
                "response_format.type",
                format!("unknown type '{other}'"),
            ))
        }
    }

    let user = req
        .rest
        .get("user")
        .and_then(Value::as_str)
        .map(|u| an::Metadata {
            user_id: Some(u.to_string()),
            rest: Rest::new(),
        });
    let body = an::MessagesRequest {
        model: None,
        anthropic_version: None,
        messages,
        system: system.into_content(),
        max_tokens: Some(max_tokens),
        stop_sequences: req
            .stop
            .clone()
            .map(Stop::into_vec)
            .filter(|v| !v.is_empty()),
        stream: None,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.rest.get("top_k").and_then(Value::as_u64),
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        thinking,
        metadata: user,
        output_config: None,
        rest: Rest::new(),
    };
    upstream(body, target)
}

/// Sets what the flavor wants and serializes.
fn upstream(
    mut body: an::MessagesRequest,
    target: &Target,
) -> Result<UpstreamRequest, TranslateError> {
    body.anthropic_version = target.body_version();
    match target.flavor {
        Flavor::Native => {
            body.model = Some(target.model.to_string());
            body.stream = target.stream.then_some(true);
        }
        Flavor::Vertex { .. } => {
            body.model = None;
            body.stream = target.stream.then_some(true);
        }
        Flavor::Bedrock => {
            body.model = None;
            body.stream = None;
        }
    }
    let bytes =
        serde_json::to_vec(&body).map_err(|e| TranslateError::invalid("body", e.to_string()))?;
    Ok(UpstreamRequest {
        path: target.path(),
        body: bytes,
        headers: target.headers(),
    })
}

fn refuse_unsupported(req: &ChatCompletionRequest) -> Result<(), TranslateError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(TranslateError::unsupported(
            "n",
            "Anthropic returns one choice",
        ));
    }
    if req.logprobs == Some(true) {
        return Err(TranslateError::unsupported(
            "logprobs",
            "Anthropic returns no log probabilities",
        ));
    }
    let audio_out = req
        .rest
        .get("modalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|x| x == "audio"));
    if audio_out || req.rest.get("audio").is_some_and(|v| !v.is_null()) {
        return Err(TranslateError::unsupported(
            "audio",
            "Anthropic models do not produce audio",
        ));
    }
    if req
        .rest
        .get("web_search_options")
        .is_some_and(|v| !v.is_null())
    {
        return Err(TranslateError::unsupported(
            "web_search_options",
            "use Anthropic's web search tool through the Messages API instead",
        ));
    }
    Ok(())
}

/// The top-level `system`: a plain string when it was one string, else blocks.
#[derive(Default)]
struct SystemPrompt {
    blocks: Vec<an::ContentBlock>,
    structured: bool,
}

impl SystemPrompt {
    fn push_message(&mut self, m: &ChatMessage, field: &str) -> Result<(), TranslateError> {
        match &m.content {
            None => {}
            Some(MessageContent::Text(t)) => self.push_text(t),
            Some(MessageContent::Parts(parts)) => {
                self.structured = true;
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) if !t.is_empty() => {
                            let mut b = an::ContentBlock::text(t.clone());
                            b.cache_control = p.rest.get("cache_control").cloned();
                            self.blocks.push(b);
                        }
                        ("text", _) => {}
                        (other, _) => {
                            return Err(TranslateError::unsupported(
                                format!("{field}.content[{j}]"),
                                format!("a '{other}' part cannot be part of the system prompt"),
                            ))
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn push_text(&mut self, text: &str) {
        if !text.is_empty() {
            self.blocks.push(an::ContentBlock::text(text));
        }
    }

    fn into_content(mut self) -> Option<an::Content> {
        if self.blocks.len() == 1 && !self.structured {
            return self
                .blocks
                .pop()
                .and_then(|b| b.text)
                .map(an::Content::Text);
        }
        (!self.blocks.is_empty()).then_some(an::Content::Blocks(self.blocks))
    }
}

/// Appends a turn; Anthropic wants roles to alternate, so a run of one role (tool
/// results above all) becomes one turn.
fn push_turn(messages: &mut Vec<an::Message>, role: an::Role, content: an::Content) {
    if let Some(last) = messages.last_mut() {
        if last.role == role {
            let prev = std::mem::replace(&mut last.content, an::Content::Blocks(Vec::new()));
            let mut blocks = prev.into_blocks();
            blocks.extend(content.into_blocks());
            last.content = an::Content::Blocks(blocks);
            return;
        }
    }
    messages.push(an::Message {
        role,
        content,
        rest: Rest::new(),
    });
}

fn user_content(
    m: &ChatMessage,
    field: &str,
    target: &Target,
) -> Result<an::Content, TranslateError> {
    match &m.content {
        None => Err(TranslateError::invalid(
            format!("{field}.content"),
            "missing",
        )),
        Some(MessageContent::Text(t)) => Ok(an::Content::Text(t.clone())),
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| part_block(p, &format!("{field}.content[{j}]"), target))
            .collect::<Result<_, _>>()
            .map(an::Content::Blocks),
    }
}

/// A user (or tool result) content part as a block; its `cache_control` follows.
fn part_block(
    p: &ContentPart,
    field: &str,
    target: &Target,
) -> Result<an::ContentBlock, TranslateError> {
    let mut block = match p.kind.as_str() {
        "text" => match &p.text {
            Some(t) => an::ContentBlock::text(t.clone()),
            None => return Err(TranslateError::invalid(format!("{field}.text"), "missing")),
        },
        "image_url" => match &p.image_url {
            Some(img) => an::ContentBlock::with_source(
                "image",
                image_source(&img.url, &format!("{field}.image_url.url"), target)?,
            ),
            None => {
                return Err(TranslateError::invalid(
                    format!("{field}.image_url"),
                    "missing",
                ))
            }
        },
        "file" => document(p, field)?,
        "input_audio" => {
            return Err(TranslateError::unsupported(
                field,
                "Anthropic models take no audio input",
            ))
        }
        other => {
            return Err(TranslateError::unsupported(
                field,
                format!("content parts of type '{other}' have no Anthropic counterpart"),
            ))
        }
    };
    block.cache_control = p.rest.get("cache_control").cloned();
    Ok(block)
}

/// `data:<mime>;base64,<data>` → (mime, data).
fn parse_data_url(url: &str) -> Option<(String, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mut params = meta.split(';');
    let mime = params
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    params
        .any(|p| p.trim().eq_ignore_ascii_case("base64"))
        .then_some((mime, data))
}

fn is_base64(data: &str) -> bool {
    !data.is_empty()
        && data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

/// An image URL as a source: data URLs inline, http(s) URLs by reference. Only
/// Anthropic's own API fetches URLs; the gateway does not fetch them for the clouds.
fn image_source(url: &str, field: &str, target: &Target) -> Result<an::Source, TranslateError> {
    if url.starts_with("data:") {
        let Some((mime, data)) = parse_data_url(url) else {
            return Err(TranslateError::invalid(
                field,
                "only base64 data URLs are supported",
            ));
        };
        let media_type = match mime.as_str() {
            "image/jpeg" | "image/jpg" => "image/jpeg",
            "image/png" => "image/png",
            "image/gif" => "image/gif",
            "image/webp" => "image/webp",
            _ => {
                return Err(TranslateError::unsupported(
                    field,
                    format!("image type '{mime}' is not one of png, jpeg, gif, webp"),
                ))
            }
        };
        if !is_base64(data) {
            return Err(TranslateError::invalid(
                field,
                "the data URL is not valid base64",
            ));
        }
        return Ok(an::Source {
            kind: "base64".into(),
            media_type: Some(media_type.into()),
            data: Some(data.to_string()),
            ..Default::default()
        });
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        if target.flavor != Flavor::Native {
            return Err(TranslateError::unsupported(
                field,
                "Claude on Vertex and Bedrock cannot fetch image URLs; send the image inline \
                 as a base64 data URL (data:image/png;base64,...)",
            ));
        }
        return Ok(an::Source {
            kind: "url".into(),
            url: Some(url.to_string()),
            ..Default::default()
        });
    }
    Err(TranslateError::invalid(
        field,
        "not an http(s) URL or a data URL",
    ))
}

/// A `file` part (`{"file": {"file_data": "data:application/pdf;base64,...",
/// "filename": ...}}`) as a `document` block: PDFs inline, plain text as text.
fn document(p: &ContentPart, field: &str) -> Result<an::ContentBlock, TranslateError> {
    let file = p.rest.get("file").and_then(Value::as_object);
    let Some(file) = file else {
        return Err(TranslateError::invalid(format!("{field}.file"), "missing"));
    };
    let Some(url) = file.get("file_data").and_then(Value::as_str) else {
        return Err(TranslateError::unsupported(
            format!("{field}.file"),
            "only inline file_data can be sent to Anthropic, not file ids",
        ));
    };
    let data_field = format!("{field}.file.file_data");
    let Some((mime, data)) = parse_data_url(url) else {
        return Err(TranslateError::invalid(data_field, "not a base64 data URL"));
    };
    let source = match mime.as_str() {
        "application/pdf" if is_base64(data) => an::Source {
            kind: "base64".into(),
            media_type: Some(mime),
            data: Some(data.to_string()),
            ..Default::default()
        },
        "text/plain" => {
            let text = base64::engine::general_purpose::STANDARD
                .decode(data)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let Some(text) = text else {
                return Err(TranslateError::invalid(
                    data_field,
                    "not base64 of UTF-8 text",
                ));
            };
            an::Source {
                kind: "text".into(),
                media_type: Some(mime),
                data: Some(text),
                ..Default::default()
            }
        }
        "application/pdf" => {
            return Err(TranslateError::invalid(
                data_field,
                "the data URL is not valid base64",
            ))
        }
        _ => {
            return Err(TranslateError::unsupported(
                data_field,
                format!("Anthropic documents are PDF or plain text, not '{mime}'"),
            ))
        }
    };
    let mut rest = Rest::new();
    if let Some(name) = file.get("filename").and_then(Value::as_str) {
        rest.insert("title".into(), Value::String(name.to_string()));
    }
    let mut block = an::ContentBlock::with_source("document", source);
    block.rest = rest;
    Ok(block)
}

/// An assistant turn: thinking blocks to replay, text, tool calls. `None` when it
/// says nothing (Anthropic refuses empty turns).
fn assistant_content(m: &ChatMessage, field: &str) -> Result<Option<an::Content>, TranslateError> {
    let mut blocks = Vec::new();
    let mut plain = true;
    if let Some(list) = m.rest.get(THINKING_BLOCKS).filter(|v| !v.is_null()) {
        let list: Vec<an::ContentBlock> = serde_json::from_value(list.clone()).map_err(|e| {
            TranslateError::invalid(format!("{field}.{THINKING_BLOCKS}"), e.to_string())
        })?;
        for b in list {
            // A thinking block without its signature cannot be replayed.
            let keep = match b.kind.as_str() {
                "thinking" => b.signature.as_deref().is_some_and(|s| !s.is_empty()),
                "redacted_thinking" => b.data.is_some(),
                _ => false,
            };
            if keep {
                plain = false;
                blocks.push(b);
            }
        }
    }
    match &m.content {
        Some(MessageContent::Text(t)) if !t.trim().is_empty() => {
            blocks.push(an::ContentBlock::text(t.clone()));
        }
        None | Some(MessageContent::Text(_)) => {}
        Some(MessageContent::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let text = match p.kind.as_str() {
                    "text" => p.text.clone().unwrap_or_default(),
                    "refusal" => p
                        .rest
                        .get("refusal")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    other => {
                        return Err(TranslateError::unsupported(
                            format!("{field}.content[{j}]"),
                            format!("a '{other}' part is not allowed in an assistant message"),
                        ))
                    }
                };
                if text.trim().is_empty() {
                    continue;
                }
                let mut b = an::ContentBlock::text(text);
                b.cache_control = p.rest.get("cache_control").cloned();
                plain &= b.cache_control.is_none();
                blocks.push(b);
            }
        }
    }
    for (k, call) in m.tool_calls.iter().flatten().enumerate() {
        plain = false;
        blocks.push(an::ContentBlock {
            kind: "tool_use".into(),
            id: Some(call.id.clone()),
            name: Some(call.function.name.clone()),
            input: Some(tool_input(
                &call.function.arguments,
                &format!("{field}.tool_calls[{k}].function.arguments"),
            )?),
            ..Default::default()
        });
    }
    if plain && blocks.len() == 1 {
        return Ok(blocks.pop().and_then(|b| b.text).map(an::Content::Text));
    }
    Ok((!blocks.is_empty()).then_some(an::Content::Blocks(blocks)))
}

/// Tool arguments (JSON text) as a tool_use `input`, which must be an object.
fn tool_input(arguments: &str, field: &str) -> Result<Value, TranslateError> {
    let args = arguments.trim();
    if args.is_empty() {
        return Ok(json!({}));
    }
    let input: Value =
        serde_json::from_str(args).map_err(|_| TranslateError::invalid(field, "not valid JSON"))?;
    if !input.is_object() {
        return Err(TranslateError::unsupported(
            field,
            "Anthropic tool input must be a JSON object",
        ));
    }
    Ok(input)
}

fn tool_result(
    m: &ChatMessage,
    field: &str,
    target: &Target,
) -> Result<an::ContentBlock, TranslateError> {
    let Some(id) = m.tool_call_id.clone() else {
        return Err(TranslateError::invalid(
            format!("{field}.tool_call_id"),
            "missing",
        ));
    };
    let content = match &m.content {
        None => None,
        Some(MessageContent::Text(t)) => Some(an::Content::Text(t.clone())),
        Some(MessageContent::Parts(parts)) => Some(an::Content::Blocks(
            parts
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    let f = format!("{field}.content[{j}]");
                    match p.kind.as_str() {
                        "text" | "image_url" => part_block(p, &f, target),
                        other => Err(TranslateError::unsupported(
                            f,
                            format!("a '{other}' part is not allowed in a tool result"),
                        )),
                    }
                })
                .collect::<Result<_, _>>()?,
        )),
    };
    Ok(an::ContentBlock {
        kind: "tool_result".into(),
        tool_use_id: Some(id),
        content,
        is_error: m.rest.get("is_error").and_then(Value::as_bool),
        cache_control: m.rest.get("cache_control").cloned(),
        ..Default::default()
    })
}

fn tools(req: &ChatCompletionRequest) -> Result<Vec<an::Tool>, TranslateError> {
    let mut out = Vec::new();
    for (field, t, f) in function_tools(req, "Anthropic")? {
        // Its calls come back as the answer's text.
        if f.name == RESPONSE_TOOL {
            return Err(TranslateError::invalid(
                format!("{field}.function.name"),
                format!("the tool name '{RESPONSE_TOOL}' is reserved by the gateway"),
            ));
        }
        out.push(an::Tool {
            kind: None,
            name: f.name.clone(),
            description: f.description.clone(),
            input_schema: Some(
                f.parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            ),
            cache_control: t
                .rest
                .get("cache_control")
                .or_else(|| f.rest.get("cache_control"))
                .cloned(),
            rest: Rest::new(),
        });
    }
    Ok(out)
}

fn tool_choice(
    req: &ChatCompletionRequest,
    has_tools: bool,
) -> Result<Option<an::ToolChoice>, TranslateError> {
    let serial = req.rest.get("parallel_tool_calls") == Some(&Value::Bool(false));
    let (kind, name) = match &req.tool_choice {
        None if serial => ("auto", None),
        None => return Ok(None),
        Some(ToolChoice::Mode(m)) => match m.as_str() {
            "auto" => ("auto", None),
            "required" => ("any", None),
            "none" => ("none", None),
            other => {
                return Err(TranslateError::invalid(
                    "tool_choice",
                    format!("unknown mode '{other}'"),
                ))
            }
        },
        Some(ToolChoice::Named(n)) => ("tool", Some(n.function.name.clone())),
    };
    if !has_tools {
        if matches!(kind, "any" | "tool") {
            return Err(TranslateError::invalid(
                "tool_choice",
                "requires at least one tool in 'tools'",
            ));
        }
        return Ok(None);
    }
    Ok(Some(an::ToolChoice {
        kind: kind.to_string(),
        name,
        disable_parallel_tool_use: (serial && kind != "none").then_some(true),
        rest: Rest::new(),
    }))
}

/// The tool whose input is a `json_schema` answer.
fn response_tool(rf: Option<&ResponseFormat>) -> Result<an::Tool, TranslateError> {
    let spec = rf.and_then(|f| f.rest.get("json_schema"));
    let Some(schema) = spec.and_then(|s| s.get("schema")) else {
        return Err(TranslateError::invalid(
            "response_format.json_schema.schema",
            "missing",
        ));
    };
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err(TranslateError::unsupported(
            "response_format.json_schema.schema",
            "Anthropic carries structured answers as tool input, which must be an object",
        ));
    }
    let description = spec
        .and_then(|s| s.get("description"))
        .and_then(Value::as_str)
        .map(|d| format!("Give the final answer with this tool. {d}"))
        .unwrap_or_else(|| "Give the final answer with this tool.".to_string());
    Ok(an::Tool {
        kind: None,
        name: RESPONSE_TOOL.to_string(),
        description: Some(description),
        input_schema: Some(schema.clone()),
        cache_control: None,
        rest: Rest::new(),
    })
}

/// With a `json_schema` answer the model must call a tool: the response tool alone,
/// or, when the client's tools may be called, any of them.
fn response_tool_choice(choice: Option<an::ToolChoice>, client_tools: bool) -> an::ToolChoice {
    let forced = an::ToolChoice {
        kind: "tool".into(),
        name: Some(RESPONSE_TOOL.into()),
        ..Default::default()
    };
    match choice {
        Some(c) if c.kind == "tool" => c,
        Some(c) if c.kind == "none" => forced,
        _ if !client_tools => forced,
        Some(c) => an::ToolChoice {
            kind: "any".into(),
            name: None,
            ..c
        },
        None => an::ToolChoice {
            kind: "any".into(),
            ..Default::default()
        },
    }
}

/// `max_tokens`, which Anthropic requires and which must exceed the thinking
/// budget, and `thinking` from the hub's `thinking` or `reasoning_effort`.
fn max_tokens_and_thinking(
    req: &ChatCompletionRequest,
) -> Result<(u64, Option<an::Thinking>), TranslateError> {
    let asked = req.max_completion_tokens.or(req.max_tokens);
    let field = if req.max_completion_tokens.is_some() {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    if let Some(v) = req.rest.get("thinking").filter(|v| !v.is_null()) {
        let t: an::Thinking = serde_json::from_value(v.clone())
            .map_err(|e| TranslateError::invalid("thinking", e.to_string()))?;
        let budget = match (t.kind.as_str(), t.budget_tokens) {
            ("enabled", None) => {
                return Err(TranslateError::invalid("thinking.budget_tokens", "missing"))
            }
            ("enabled", Some(b)) => b,
            _ => return Ok((asked.unwrap_or(DEFAULT_MAX_TOKENS), Some(t))),
        };
        return match asked {
            None => Ok((budget.saturating_add(DEFAULT_MAX_TOKENS), Some(t))),
            Some(m) if m > budget => Ok((m, Some(t))),
            Some(_) => Err(TranslateError::invalid(
                field,
                format!("must be larger than thinking.budget_tokens ({budget})"),
            )),
        };
    }
    let budget = match req.rest.get("reasoning_effort") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "none" => None,
            "minimal" | "low" => Some(1024),
            "medium" => Some(2048),
            "high" => Some(4096),
            other => {
                return Err(TranslateError::invalid(
                    "reasoning_effort",
                    format!("unknown effort '{other}'"),
                ))
            }
        },
        Some(_) => {
            return Err(TranslateError::invalid(
                "reasoning_effort",
                "must be a string",
            ))
        }
    };
    let enabled = |b: u64| an::Thinking {
        kind: "enabled".into(),
        budget_tokens: Some(b),
        rest: Rest::new(),
    };
    Ok(match (asked, budget) {
        (m, None) => (m.unwrap_or(DEFAULT_MAX_TOKENS), None),
        (None, Some(b)) => (b + DEFAULT_MAX_TOKENS, Some(enabled(b))),
        (Some(m), Some(b)) if m > b => (m, Some(enabled(b))),
        // The effort is a hint: shrink the budget to fit the client's cap, or think
        // not at all when even the smallest budget does not fit.
        (Some(m), Some(_)) if m / 2 >= MIN_BUDGET => (m, Some(enabled(m / 2))),
        (Some(m), Some(_)) => (m, None),
    })
}

// ---------------------------------------------------------------------------------
// Messages answer → hub answer.

/// Anthropic's `stop_reason` as OpenAI's `finish_reason`. Reasons OpenAI has no word
/// for (`pause_turn`, and any a newer API adds) become `stop`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// OpenAI's `finish_reason` as Anthropic's `stop_reason`.
fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic usage in hub terms: prompt tokens count cache reads and writes too.
fn hub_usage(u: &an::Usage) -> Usage {
    let input = u.input_tokens.unwrap_or(0);
    let read = u.cache_read_input_tokens.unwrap_or(0);
    let write = u.cache_creation_input_tokens.unwrap_or(0);
    let output = u.output_tokens.unwrap_or(0);
    let prompt = input.saturating_add(read).saturating_add(write);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: output,
        total_tokens: prompt.saturating_add(output),
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(read),
            cache_creation_tokens: (write > 0).then_some(write),
            rest: Rest::new(),
        }),
        completion_tokens_details: None,
        rest: Rest::new(),
    }
}

/// Hub usage in Anthropic terms: `input_tokens` counts only uncached input.
fn anthropic_usage(u: &Usage) -> an::Usage {
    let details = u.prompt_tokens_details.as_ref();
    let read = details.and_then(|d| d.cached_tokens).unwrap_or(0);
    let write = details.and_then(|d| d.cache_creation_tokens).unwrap_or(0);
    an::Usage {
        input_tokens: Some(u.prompt_tokens.saturating_sub(read).saturating_sub(write)),
        output_tokens: Some(u.completion_tokens),
        cache_creation_input_tokens: Some(write),
        cache_read_input_tokens: Some(read),
        rest: Rest::new(),
    }
}

fn thinking_entry(thinking: &str, signature: &str) -> Value {
    json!({"type": "thinking", "thinking": thinking, "signature": signature})
}

/// Translates an Anthropic message (any flavor) into a hub answer.
pub fn chat_response(body: &[u8], meta: &ResponseMeta) -> Result<ChatCompletion, TranslateError> {
    let resp: an::MessagesResponse = serde_json::from_slice(body)
        .map_err(|e| TranslateError::BadResponse(format!("Anthropic message: {e}")))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    let mut json_answer = None;
    for block in resp.content {
        match block.kind.as_str() {
            "text" => text.push_str(block.text.as_deref().unwrap_or_default()),
            "thinking" => {
                let t = block.thinking.unwrap_or_default();
                reasoning.push_str(&t);
                thinking_blocks.push(thinking_entry(&t, &block.signature.unwrap_or_default()));
            }
            "redacted_thinking" => thinking_blocks
                .push(json!({"type": "redacted_thinking", "data": block.data.unwrap_or_default()})),
            "tool_use" if block.name.as_deref() == Some(RESPONSE_TOOL) => {
                json_answer = Some(block.input.unwrap_or_else(|| json!({})).to_string())
            }
            "tool_use" => {
                let n = tool_calls.len();
                tool_calls.push(ToolCall {
                    id: block.id.unwrap_or_else(|| format!("call_{}_{n}", meta.id)),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: block.name.unwrap_or_default(),
                        arguments: block.input.unwrap_or_else(|| json!({})).to_string(),
                        rest: Rest::new(),
                    },
                    rest: Rest::new(),
                });
            }
            // Server tool blocks and citations-only blocks have no hub form.
            _ => {}
        }
    }
    // The structured answer is the whole answer, whatever prose came with it.
    if let Some(answer) = json_answer {
        text = answer;
    }
    let stop = resp.stop_reason.as_deref().unwrap_or("end_turn");
    let mut finish = finish_reason(stop);
    if finish == "tool_calls" && tool_calls.is_empty() {
        finish = "stop";
    }
    let mut choice_rest = Rest::new();
    if let (Some(seq), "stop_sequence") = (resp.stop_sequence, stop) {
        choice_rest.insert("stop_reason".into(), Value::String(seq));
    }
    let mut message_rest = Rest::new();
    if !thinking_blocks.is_empty() {
        message_rest.insert(THINKING_BLOCKS.into(), Value::Array(thinking_blocks));
    }
    let content = if text.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(text)
    };
    Ok(meta.completion(
        vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content,
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                rest: message_rest,
            },
            finish_reason: Some(finish.to_string()),
            rest: choice_rest,
        }],
        Some(hub_usage(&resp.usage)),
    ))
}

// ---------------------------------------------------------------------------------
// Errors.

/// The status the client gets for a provider's: kept where it means the same,
/// Bedrock's 424 (the model failed) as 502, a non-error status as 502.
fn client_status(status: u16) -> u16 {
    match status {
        424 => 502,
        400..=599 => status,
        _ => 502,
    }
}

fn clip(message: &str) -> String {
    message.chars().take(MAX_MESSAGE_CHARS).collect()
}

fn generic_message(status: u16) -> String {
    format!("the Anthropic provider answered HTTP {status}")
}

fn anthropic_kind(kind: &str) -> Option<ErrorKind> {
    Some(match kind {
        "invalid_request_error" => ErrorKind::InvalidRequest,
        "authentication_error" => ErrorKind::Authentication,
        "permission_error" | "billing_error" => ErrorKind::PermissionDenied,
        "not_found_error" => ErrorKind::NotFound,
        "request_too_large" => ErrorKind::RequestTooLarge,
        "rate_limit_error" => ErrorKind::RateLimit,
        "overloaded_error" => ErrorKind::Overloaded,
        "timeout_error" => ErrorKind::Timeout,
        "api_error" => ErrorKind::Server,
        _ => return None,
    })
}

/// The HTTP status Anthropic gives an error type (for errors met mid-stream).
fn anthropic_status(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// Google's `error.status` on Vertex.
fn google_kind(status: &str) -> Option<ErrorKind> {
    Some(match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => ErrorKind::InvalidRequest,
        "UNAUTHENTICATED" => ErrorKind::Authentication,
        "PERMISSION_DENIED" => ErrorKind::PermissionDenied,
        "NOT_FOUND" => ErrorKind::NotFound,
        "RESOURCE_EXHAUSTED" => ErrorKind::RateLimit,
        "UNAVAILABLE" => ErrorKind::Overloaded,
        "DEADLINE_EXCEEDED" => ErrorKind::Timeout,
        "INTERNAL" | "UNKNOWN" => ErrorKind::Server,
        _ => return None,
    })
}

/// Bedrock's exception names (`ThrottlingException`; in streams `throttlingException`).
fn bedrock_kind(name: &str) -> Option<ErrorKind> {
    Some(match name.to_ascii_lowercase().as_str() {
        "validationexception" => ErrorKind::InvalidRequest,
        "accessdeniedexception" => ErrorKind::PermissionDenied,
        "unrecognizedclientexception"
        | "expiredtokenexception"
        | "invalidsignatureexception"
        | "incompletesignatureexception" => ErrorKind::Authentication,
        "resourcenotfoundexception" => ErrorKind::NotFound,
        "throttlingexception" | "servicequotaexceededexception" | "modelnotreadyexception" => {
            ErrorKind::RateLimit
        }
        "modeltimeoutexception" => ErrorKind::Timeout,
        "serviceunavailableexception" => ErrorKind::Overloaded,
        "internalserverexception" | "modelerrorexception" | "modelstreamerrorexception" => {
            ErrorKind::Server
        }
        _ => return None,
    })
}

/// The status of an error class, for errors that come without one.
fn kind_status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::InvalidRequest => 400,
        ErrorKind::Authentication => 401,
        ErrorKind::PermissionDenied => 403,
        ErrorKind::NotFound => 404,
        ErrorKind::RequestTooLarge => 413,
        ErrorKind::RateLimit => 429,
        ErrorKind::Timeout => 504,
        ErrorKind::Overloaded => 503,
        ErrorKind::Server => 502,
    }
}

fn message_of(v: &Value) -> Option<String> {
    v.get("message")
        .or_else(|| v.get("Message"))
        .and_then(Value::as_str)
        .map(clip)
}

/// A provider's error answer, whatever the flavor: Anthropic's
/// `{"type":"error","error":{...}}`, Google's `{"error":{"code","message","status"}}`
/// (also wrapped in a list), Bedrock's `x-amzn-errortype` header with
/// `{"message": ...}`. Anything else gets a message naming the status; bodies are
/// not echoed.
pub fn error(status: u16, headers: &dyn Headers, body: &[u8]) -> ProviderError {
    let http = client_status(status);
    let doc = match serde_json::from_slice::<Value>(body).ok() {
        Some(Value::Array(mut list)) if !list.is_empty() => Some(list.swap_remove(0)),
        other => other,
    };
    let doc_message = doc.as_ref().and_then(message_of);
    if let Some(t) = headers.get("x-amzn-errortype") {
        let name = t.split(':').next().unwrap_or_default().trim();
        if !name.is_empty() {
            return ProviderError {
                status: http,
                kind: bedrock_kind(name).unwrap_or_else(|| ErrorKind::from_status(http)),
                code: Some(name.to_string()),
                message: doc_message.unwrap_or_else(|| generic_message(status)),
            };
        }
    }
    let Some(doc) = doc else {
        return ProviderError::new(http, None, generic_message(status));
    };
    if let Some(err) = doc.get("error").filter(|e| e.is_object()) {
        let message = message_of(err).unwrap_or_else(|| generic_message(status));
        if let Some(t) = err.get("type").and_then(Value::as_str) {
            let status = if (400..=599).contains(&status) {
                http
            } else {
                anthropic_status(t)
            };
            return ProviderError {
                status,
                kind: anthropic_kind(t).unwrap_or_else(|| ErrorKind::from_status(status)),
                code: Some(t.to_string()),
                message,
            };
        }
        if let Some(s) = err.get("status").and_then(Value::as_str) {
            return ProviderError {
                status: http,
                kind: google_kind(s).unwrap_or_else(|| ErrorKind::from_status(http)),
                code: Some(s.to_string()),
                message,
            };
        }
        return ProviderError::new(http, None, message);
    }
    if let Some(t) = doc.get("__type").and_then(Value::as_str) {
        let name = t.rsplit('#').next().unwrap_or(t);
        return ProviderError {
            status: http,
            kind: bedrock_kind(name).unwrap_or_else(|| ErrorKind::from_status(http)),
            code: Some(name.to_string()),
            message: doc_message.unwrap_or_else(|| generic_message(status)),
        };
    }
    ProviderError::new(
        http,
        None,
        doc_message.unwrap_or_else(|| generic_message(status)),
    )
}

// ---------------------------------------------------------------------------------
// Streams: framing.

/// How the provider frames its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `text/event-stream` (native, Vertex).
    Sse,
    /// `application/vnd.amazon.eventstream` (Bedrock).
    EventStream,
}

fn bad(why: impl Into<String>) -> ProviderError {
    ProviderError::from(TranslateError::BadResponse(why.into()))
}

fn ended_early() -> ProviderError {
    bad("the Anthropic stream ended early, before message_stop")
}

/// One Bedrock event-stream message: the Anthropic event JSON of a `chunk`, nothing
/// for other events, or the error an exception stands for.
fn bedrock_event(msg: &eventstream::Message) -> Result<Option<Vec<u8>>, ProviderError> {
    match msg.header_str(":message-type").unwrap_or("event") {
        "event" => {}
        "exception" => {
            let name = msg.header_str(":exception-type").unwrap_or("exception");
            let message = serde_json::from_slice::<Value>(&msg.payload)
                .ok()
                .as_ref()
                .and_then(message_of)
                .unwrap_or_else(|| format!("Bedrock raised {name}"));
            let kind = bedrock_kind(name).unwrap_or(ErrorKind::Server);
            return Err(ProviderError {
                status: kind_status(kind),
                kind,
                code: Some(name.to_string()),
                message,
            });
        }
        "error" => {
            let code = msg.header_str(":error-code").unwrap_or("error");
            let message = msg.header_str(":error-message").unwrap_or("no message");
            return Err(ProviderError {
                status: 502,
                kind: ErrorKind::Server,
                code: Some(code.to_string()),
                message: clip(message),
            });
        }
        _ => return Ok(None),
    }
    if msg.header_str(":event-type") != Some("chunk") {
        return Ok(None);
    }
    let chunk: an::BedrockChunk = serde_json::from_slice(&msg.payload)
        .map_err(|e| bad(format!("unreadable Bedrock chunk: {e}")))?;
    base64::engine::general_purpose::STANDARD
        .decode(chunk.bytes.as_bytes())
        .map(Some)
        .map_err(|e| bad(format!("Bedrock chunk bytes are not base64: {e}")))
}

#[derive(Debug)]
enum FrameDecoder {
    Sse(SseDecoder),
    EventStream(eventstream::Decoder),
}

impl FrameDecoder {
    fn new(framing: Framing, max_event_bytes: usize) -> Self {
        match framing {
            Framing::Sse => FrameDecoder::Sse(SseDecoder::new(max_event_bytes)),
            Framing::EventStream => {
                FrameDecoder::EventStream(eventstream::Decoder::new(max_event_bytes))
            }
        }
    }

    /// Cuts what arrived into Anthropic event JSON documents, calling `on_event` for
    /// each until it returns `false`; a framing error or exception ends with `Err`.
    fn feed(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        mut on_event: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), ProviderError> {
        match self {
            FrameDecoder::Sse(d) => {
                let mut events = Vec::new();
                let pushed = d.push(chunk, &mut events);
                for ev in &events {
                    if !sse_event(ev, &mut on_event) {
                        return Ok(());
                    }
                }
                pushed.map_err(|e| bad(e.to_string()))?;
                if end_of_stream {
                    // An unterminated last event counts only if it is whole: a cut
                    // one is the stream ending early.
                    let tail = d.finish().map_err(|e| bad(e.to_string()))?;
                    if let Some(ev) = tail.filter(|ev| {
                        serde_json::from_slice::<serde::de::IgnoredAny>(ev.data()).is_ok()
                    }) {
                        sse_event(&ev, &mut on_event);
                    }
                }
            }
            FrameDecoder::EventStream(d) => {
                let mut msgs = Vec::new();
                let pushed = d.push_into(chunk, &mut msgs);
                for m in &msgs {
                    if let Some(json) = bedrock_event(m)? {
                        if !on_event(&json) {
                            return Ok(());
                        }
                    }
                }
                pushed.map_err(|e| bad(e.to_string()))?;
                if end_of_stream {
                    d.finish().map_err(|e| bad(e.to_string()))?;
                }
            }
        }
        Ok(())
    }
}

/// Comments, blank events and `data`-less events carry nothing.
fn sse_event(ev: &SseEvent, on_event: &mut impl FnMut(&[u8]) -> bool) -> bool {
    if !ev.has_data() || ev.data().iter().all(u8::is_ascii_whitespace) {
        return true;
    }
    on_event(ev.data())
}

// ---------------------------------------------------------------------------------
// Provider stream → hub items.

/// An Anthropic stream (any flavor) as hub items.
///
/// `message_start` gives the role chunk; text, thinking and tool-argument deltas
/// give content, `reasoning_content` and `tool_calls` pieces; `message_stop` gives
/// the finish chunk, the usage chunk (when asked for) and `Done`. An `error` event,
/// a Bedrock exception or an unreadable event gives one `Error`, and so does a
/// stream that ends before `message_stop`.
#[derive(Debug)]
pub struct ChatStream {
    decoder: FrameDecoder,
    state: ChatState,
}

impl ChatStream {
    pub fn new(
        framing: Framing,
        meta: ResponseMeta,
        include_usage: bool,
        max_event_bytes: usize,
    ) -> Self {
        ChatStream {
            decoder: FrameDecoder::new(framing, max_event_bytes),
            state: ChatState {
                meta,
                include_usage,
                role_sent: false,
                blocks: Vec::new(),
                tool_calls: 0,
                stop_reason: None,
                stop_sequence: None,
                usage: an::Usage::default(),
                ended: false,
            },
        }
    }
}

impl ChunkSource for ChatStream {
    fn feed(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<StreamItem>) {
        if self.state.ended {
            return;
        }
        let state = &mut self.state;
        let fed = self.decoder.feed(chunk, end_of_stream, |json| {
            state.on_event(json, out);
            !state.ended
        });
        if let Err(e) = fed {
            self.state.fail(e, out);
        }
        if end_of_stream && !self.state.ended {
            self.state.fail(ended_early(), out);
        }
    }
}

/// What an Anthropic content block becomes in the hub stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// A tool call, by hub index.
    Tool(u32),
    /// The `json_schema` answer: its input is the message text.
    Json,
    Other,
}

struct ChatState {
    meta: ResponseMeta,
    include_usage: bool,
    role_sent: bool,
    /// Anthropic block index → what it is.
    blocks: Vec<(u32, Block)>,
    tool_calls: u32,
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
    /// Latest count of each kind (message_delta counts are cumulative).
    usage: an::Usage,
    ended: bool,
}

impl fmt::Debug for ChatState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatState")
            .field("blocks", &self.blocks.len())
            .field("tool_calls", &self.tool_calls)
            .field("stop_reason", &self.stop_reason)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

fn merge_usage(into: &mut an::Usage, from: &an::Usage) {
    for (to, v) in [
        (&mut into.input_tokens, from.input_tokens),
        (&mut into.output_tokens, from.output_tokens),
        (
            &mut into.cache_creation_input_tokens,
            from.cache_creation_input_tokens,
        ),
        (
            &mut into.cache_read_input_tokens,
            from.cache_read_input_tokens,
        ),
    ] {
        if v.is_some() {
            *to = v;
        }
    }
}

fn thinking_blocks_delta(entry: Value) -> Delta {
    let mut rest = Rest::new();
    rest.insert(THINKING_BLOCKS.into(), Value::Array(vec![entry]));
    Delta {
        rest,
        ..Default::default()
    }
}

impl ChatState {
    fn on_event(&mut self, json: &[u8], out: &mut Vec<StreamItem>) {
        match serde_json::from_slice::<an::StreamEvent>(json) {
            Ok(ev) => self.handle(ev, out),
            Err(e) => self.fail(bad(format!("unreadable Anthropic stream event: {e}")), out),
        }
    }

    fn handle(&mut self, ev: an::StreamEvent, out: &mut Vec<StreamItem>) {
        use an::StreamEvent as E;
        match ev {
            E::MessageStart { message } => {
                merge_usage(&mut self.usage, &message.usage);
                if !self.role_sent {
                    self.emit(
                        Delta {
                            content: Some(String::new()),
                            ..Default::default()
                        },
                        out,
                    );
                }
            }
            E::ContentBlockStart {
                index,
                content_block: b,
            } => self.block_start(index, b, out),
            E::ContentBlockDelta { index, delta } => self.block_delta(index, delta, out),
            E::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                    self.stop_sequence = delta.stop_sequence;
                }
                if let Some(u) = usage {
                    merge_usage(&mut self.usage, &u);
                }
            }
            E::MessageStop => self.finish(out),
            E::Error { error } => {
                let status = anthropic_status(&error.kind);
                let e = ProviderError {
                    status,
                    kind: anthropic_kind(&error.kind)
                        .unwrap_or_else(|| ErrorKind::from_status(status)),
                    code: Some(error.kind),
                    message: clip(&error.message),
                };
                self.fail(e, out);
            }
            E::ContentBlockStop { .. } | E::Ping | E::Unknown => {}
        }
    }

    fn block(&self, index: u32) -> Block {
        self.blocks
            .iter()
            .rev()
            .find(|(i, _)| *i == index)
            .map_or(Block::Other, |(_, b)| *b)
    }

    fn block_start(&mut self, index: u32, b: an::ContentBlock, out: &mut Vec<StreamItem>) {
        let kind = match b.kind.as_str() {
            "text" => Block::Text,
            "thinking" => Block::Thinking,
            "tool_use" if b.name.as_deref() == Some(RESPONSE_TOOL) => Block::Json,
            "tool_use" => {
                self.tool_calls += 1;
                Block::Tool(self.tool_calls - 1)
            }
            _ => Block::Other,
        };
        self.blocks.push((index, kind));
        // Starts normally come empty; whatever they hold goes out as a first piece.
        let initial_input = b
            .input
            .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
            .map(|v| v.to_string());
        match kind {
            Block::Text => self.text(b.text.unwrap_or_default(), out),
            Block::Thinking => {
                self.reasoning(b.thinking.unwrap_or_default(), out);
                self.signature(b.signature.unwrap_or_default(), out);
            }
            Block::Tool(i) => {
                let id = b.id.unwrap_or_else(|| format!("call_{}_{i}", self.meta.id));
                let delta = tool_call_delta(
                    i,
                    Some(id),
                    Some(b.name.unwrap_or_default()),
                    initial_input.unwrap_or_default(),
                );
                self.emit(delta, out);
            }
            Block::Json => self.text(initial_input.unwrap_or_default(), out),
            Block::Other if b.kind == "redacted_thinking" => {
                let entry =
                    json!({"type": "redacted_thinking", "data": b.data.unwrap_or_default()});
                self.emit(thinking_blocks_delta(entry), out);
            }
            Block::Other => {}
        }
    }

    fn block_delta(&mut self, index: u32, d: an::BlockDelta, out: &mut Vec<StreamItem>) {
        match d.kind.as_str() {
            "text_delta" => self.text(d.text.unwrap_or_default(), out),
            "thinking_delta" => self.reasoning(d.thinking.unwrap_or_default(), out),
            "signature_delta" => self.signature(d.signature.unwrap_or_default(), out),
            "input_json_delta" => {
                let piece = d.partial_json.unwrap_or_default();
                match self.block(index) {
                    _ if piece.is_empty() => {}
                    Block::Tool(i) => self.emit(tool_call_delta(i, None, None, piece), out),
                    Block::Json => self.text(piece, out),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn text(&mut self, text: String, out: &mut Vec<StreamItem>) {
        if !text.is_empty() {
            self.emit(
                Delta {
                    content: Some(text),
                    ..Default::default()
                },
                out,
            );
        }
    }

    fn reasoning(&mut self, text: String, out: &mut Vec<StreamItem>) {
        if !text.is_empty() {
            self.emit(
                Delta {
                    reasoning_content: Some(text),
                    ..Default::default()
                },
                out,
            );
        }
    }

    fn signature(&mut self, signature: String, out: &mut Vec<StreamItem>) {
        if !signature.is_empty() {
            self.emit(thinking_blocks_delta(thinking_entry("", &signature)), out);
        }
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> StreamItem {
        StreamItem::Chunk(Box::new(self.meta.chunk(choices, usage)))
    }

    fn emit_choice(
        &mut self,
        mut delta: Delta,
        finish: Option<&'static str>,
        rest: Rest,
        out: &mut Vec<StreamItem>,
    ) {
        if !self.role_sent {
            delta.role = Some(Role::Assistant);
            self.role_sent = true;
        }
        let choice = ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish.map(str::to_string),
            rest,
        };
        out.push(self.chunk(vec![choice], None));
    }

    fn emit(&mut self, delta: Delta, out: &mut Vec<StreamItem>) {
        self.emit_choice(delta, None, Rest::new(), out);
    }

    fn finish(&mut self, out: &mut Vec<StreamItem>) {
        let stop = self
            .stop_reason
            .clone()
            .unwrap_or_else(|| "end_turn".into());
        let mut reason = finish_reason(&stop);
        if reason == "tool_calls" && self.tool_calls == 0 {
            reason = "stop";
        }
        let mut rest = Rest::new();
        if let (Some(seq), "stop_sequence") = (self.stop_sequence.clone(), stop.as_str()) {
            rest.insert("stop_reason".into(), Value::String(seq));
        }
        self.emit_choice(Delta::default(), Some(reason), rest, out);
        if self.include_usage {
            let usage = hub_usage(&self.usage);
            out.push(self.chunk(Vec::new(), Some(usage)));
        }
        out.push(StreamItem::Done);
        self.ended = true;
    }

    fn fail(&mut self, e: ProviderError, out: &mut Vec<StreamItem>) {
        if !self.ended {
            out.push(StreamItem::Error(e));
            self.ended = true;
        }
    }
}

// ---------------------------------------------------------------------------------
// Anthropic client → Anthropic-family provider.

/// An Anthropic client's body for an Anthropic-family provider: unknown fields and
/// their order stay; native gets the routed `model`, the clouds lose `model` and get
/// `anthropic_version`, Bedrock loses `stream` (the path says it). The client's
/// `anthropic-beta` header is the caller's to carry (Bedrock and Vertex want it in
/// the body as `anthropic_beta`).
pub fn messages_request(body: &[u8], target: &Target) -> Result<UpstreamRequest, TranslateError> {
    let mut map: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| TranslateError::invalid("body", e.to_string()))?;
    let stream = |map: &mut Map<String, Value>| {
        if target.stream {
            map.insert("stream".into(), Value::Bool(true));
        } else if map.contains_key("stream") {
            map.insert("stream".into(), Value::Bool(false));
        }
    };
    match target.flavor {
        Flavor::Native => {
            map.insert("model".into(), Value::String(target.model.to_string()));
            stream(&mut map);
        }
        Flavor::Vertex { .. } => {
            map.shift_remove("model");
            stream(&mut map);
        }
        Flavor::Bedrock => {
            map.shift_remove("model");
            map.shift_remove("stream");
        }
    }
    if let Some(version) = target.body_version() {
        // A version the client chose stays unless the route sets one.
        let keep =
            target.version.is_none() && map.get("anthropic_version").is_some_and(Value::is_string);
        if !keep {
            map.insert("anthropic_version".into(), Value::String(version));
        }
    }
    let bytes =
        serde_json::to_vec(&map).map_err(|e| TranslateError::invalid("body", e.to_string()))?;
    Ok(UpstreamRequest {
        path: target.path(),
        body: bytes,
        headers: target.headers(),
    })
}

/// Bedrock's `invoke-with-response-stream` as the Anthropic SSE a client expects:
/// `event: <type>\ndata: <json>\n\n` per event, bytes in and out. An exception, an
/// unreadable frame or a stream cut before `message_stop` becomes one Anthropic
/// `event: error`, and nothing follows it.
#[derive(Debug)]
pub struct MessagesStream {
    decoder: FrameDecoder,
    stopped: bool,
    ended: bool,
}

impl MessagesStream {
    pub fn new(max_event_bytes: usize) -> Self {
        MessagesStream {
            decoder: FrameDecoder::new(Framing::EventStream, max_event_bytes),
            stopped: false,
            ended: false,
        }
    }

    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let mut failed = None;
        let (stopped, ended) = (&mut self.stopped, &mut self.ended);
        let fed = self.decoder.feed(chunk, end_of_stream, |json| {
            match forward_event(json, out) {
                Ok(kind) => {
                    *stopped |= kind == "message_stop";
                    *ended |= kind == "error";
                }
                Err(e) => failed = Some(e),
            }
            failed.is_none() && !*ended
        });
        if let Some(e) = failed.or(fed.err()) {
            self.fail(&e, out);
            return;
        }
        if end_of_stream && !self.ended {
            if !self.stopped {
                self.fail(&ended_early(), out);
            }
            self.ended = true;
        }
    }

    fn fail(&mut self, e: &ProviderError, out: &mut Vec<u8>) {
        if !self.ended {
            write_event(out, "error", &e.anthropic_body());
            self.ended = true;
        }
    }
}

/// Writes one event's JSON as SSE; returns its type.
fn forward_event(json: &[u8], out: &mut Vec<u8>) -> Result<String, ProviderError> {
    let v: Value = serde_json::from_slice(json)
        .map_err(|e| bad(format!("unreadable Anthropic stream event: {e}")))?;
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| bad("an Anthropic stream event without a type"))?
        .to_string();
    // Compact JSON has no raw line breaks; anything else is written again compactly
    // so that it stays one `data:` line.
    if json.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        write_event(out, &kind, v.to_string().as_bytes());
    } else {
        write_event(out, &kind, json);
    }
    Ok(kind)
}

fn write_event(out: &mut Vec<u8>, name: &str, json: &[u8]) {
    out.reserve(name.len() + json.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
}

// ---------------------------------------------------------------------------------
// Anthropic client ↔ hub.

/// An Anthropic client's request as a hub request, for a provider of any kind.
///
/// System blocks become one system message; a user turn's `tool_result` blocks
/// become `tool` messages (placed before the turn's other content, as OpenAI wants
/// them right after the calls); thinking blocks ride in `thinking_blocks`.
/// `thinking` passes as the hub extension of the same shape, `output_config.effort`
/// as `reasoning_effort`, `output_config.format` as a `json_schema` response format.
/// Refused (422): server tools, MCP servers, block types the hub cannot carry.
pub fn client_request(body: &[u8]) -> Result<ChatCompletionRequest, TranslateError> {
    let req: an::MessagesRequest =
        serde_json::from_slice(body).map_err(|e| TranslateError::invalid("body", e.to_string()))?;
    if req.rest.get("mcp_servers").is_some_and(|v| !v.is_null()) {
        return Err(TranslateError::unsupported(
            "mcp_servers",
            "MCP servers are run by Anthropic's own API only",
        ));
    }
    let mut messages = Vec::new();
    if let Some(system) = req.system {
        messages.push(hub_message(Role::System, client_system(system)?));
    }
    for (i, m) in req.messages.into_iter().enumerate() {
        let field = format!("messages[{i}]");
        match m.role {
            an::Role::User => client_user(m.content, &field, &mut messages)?,
            an::Role::Assistant => messages.push(client_assistant(m.content, &field)?),
        }
    }

    let mut rest = Rest::new();
    let mut tools = Vec::new();
    for (i, t) in req.tools.into_iter().flatten().enumerate() {
        if let Some(kind) = t.kind.as_deref().filter(|k| *k != "custom") {
            return Err(TranslateError::unsupported(
                format!("tools[{i}]"),
                format!("the server tool '{kind}' runs on Anthropic's own API only"),
            ));
        }
        let mut tool_rest = Rest::new();
        if let Some(cc) = t.cache_control {
            tool_rest.insert("cache_control".into(), cc);
        }
        tools.push(Tool {
            kind: "function".into(),
            function: Some(FunctionDef {
                name: t.name,
                description: t.description,
                parameters: t.input_schema,
                rest: Rest::new(),
            }),
            rest: tool_rest,
        });
    }
    let tool_choice = match req.tool_choice {
        None => None,
        Some(tc) => {
            if tc.disable_parallel_tool_use == Some(true) {
                rest.insert("parallel_tool_calls".into(), Value::Bool(false));
            }
            Some(match tc.kind.as_str() {
                "auto" => ToolChoice::Mode("auto".into()),
                "any" => ToolChoice::Mode("required".into()),
                "none" => ToolChoice::Mode("none".into()),
                "tool" => match tc.name {
                    Some(name) => ToolChoice::Named(NamedToolChoice {
                        kind: "function".into(),
                        function: NamedFunction { name },
                        rest: Rest::new(),
                    }),
                    None => return Err(TranslateError::invalid("tool_choice.name", "missing")),
                },
                other => {
                    return Err(TranslateError::invalid(
                        "tool_choice.type",
                        format!("unknown type '{other}'"),
                    ))
                }
            })
        }
    };
    let mut response_format = None;
    if let Some(oc) = req.output_config {
        if let Some(effort) = oc.effort {
            let effort = match effort.as_str() {
                "low" | "medium" | "high" => effort,
                "xhigh" | "max" => "high".to_string(),
                other => {
                    return Err(TranslateError::invalid(
                        "output_config.effort",
                        format!("unknown effort '{other}'"),
                    ))
                }
            };
            rest.insert("reasoning_effort".into(), Value::String(effort));
        }
        if let Some(format) = oc.format {
            let Some(schema) = format.schema.filter(|_| format.kind == "json_schema") else {
                return Err(TranslateError::unsupported(
                    "output_config.format",
                    "only json_schema formats with a schema are supported",
                ));
            };
            let mut f = Rest::new();
            f.insert(
                "json_schema".into(),
                json!({"name": "response", "schema": schema, "strict": true}),
            );
            response_format = Some(ResponseFormat {
                kind: "json_schema".into(),
                rest: f,
            });
        }
    }
    if let Some(t) = req.thinking {
        let v = serde_json::to_value(t)
            .map_err(|e| TranslateError::invalid("thinking", e.to_string()))?;
        rest.insert("thinking".into(), v);
    }
    if let Some(k) = req.top_k {
        rest.insert("top_k".into(), Value::from(k));
    }
    if let Some(user) = req.metadata.and_then(|m| m.user_id) {
        rest.insert("user".into(), Value::String(user));
    }
    let stream = req.stream;
    Ok(ChatCompletionRequest {
        model: req.model.unwrap_or_default(),
        messages,
        stream,
        // Anthropic clients always get usage.
        stream_options: (stream == Some(true)).then(|| StreamOptions {
            include_usage: Some(true),
            rest: Rest::new(),
        }),
        max_tokens: None,
        max_completion_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        n: None,
        stop: req.stop_sequences.map(Stop::Many),
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        response_format,
        logprobs: None,
        rest,
    })
}

fn hub_message(role: Role, content: MessageContent) -> ChatMessage {
    ChatMessage {
        role,
        content: Some(content),
        name: None,
        tool_calls: None,
        tool_call_id: None,
        rest: Rest::new(),
    }
}

fn text_part(text: String, cache_control: Option<Value>) -> ContentPart {
    let mut rest = Rest::new();
    if let Some(cc) = cache_control {
        rest.insert("cache_control".into(), cc);
    }
    ContentPart {
        kind: "text".into(),
        text: Some(text),
        image_url: None,
        rest,
    }
}

fn client_system(system: an::Content) -> Result<MessageContent, TranslateError> {
    match system {
        an::Content::Text(t) => Ok(MessageContent::Text(t)),
        an::Content::Blocks(blocks) => blocks
            .into_iter()
            .enumerate()
            .map(|(j, b)| match (b.kind.as_str(), b.text) {
                ("text", Some(t)) => Ok(text_part(t, b.cache_control)),
                (other, _) => Err(TranslateError::unsupported(
                    format!("system[{j}]"),
                    format!("a '{other}' block cannot be part of the system prompt"),
                )),
            })
            .collect::<Result<_, _>>()
            .map(MessageContent::Parts),
    }
}

/// A user turn: its tool results as tool messages, then the rest as a user message.
fn client_user(
    content: an::Content,
    field: &str,
    messages: &mut Vec<ChatMessage>,
) -> Result<(), TranslateError> {
    let blocks = match content {
        an::Content::Text(t) => {
            messages.push(hub_message(Role::User, MessageContent::Text(t)));
            return Ok(());
        }
        an::Content::Blocks(b) => b,
    };
    let mut parts = Vec::new();
    for (j, b) in blocks.into_iter().enumerate() {
        let f = format!("{field}.content[{j}]");
        if b.kind == "tool_result" {
            messages.push(client_tool_result(b, &f)?);
        } else {
            parts.push(client_part(b, &f)?);
        }
    }
    if !parts.is_empty() {
        messages.push(hub_message(Role::User, MessageContent::Parts(parts)));
    }
    Ok(())
}

fn client_part(b: an::ContentBlock, field: &str) -> Result<ContentPart, TranslateError> {
    let mut part = match (b.kind.as_str(), b.source()) {
        ("text", _) => text_part(b.text.unwrap_or_default(), None),
        ("image", Some(src)) => {
            let url = match (src.kind.as_str(), src.media_type, src.data, src.url) {
                ("base64", Some(mt), Some(data), _) => format!("data:{mt};base64,{data}"),
                ("url", _, _, Some(url)) => url,
                (kind, ..) => {
                    return Err(TranslateError::unsupported(
                        format!("{field}.source"),
                        format!("image sources of type '{kind}' cannot be sent on"),
                    ))
                }
            };
            ContentPart {
                kind: "image_url".into(),
                text: None,
                image_url: Some(ImageUrl {
                    url,
                    rest: Rest::new(),
                }),
                rest: Rest::new(),
            }
        }
        ("document", Some(src)) => match (src.kind.as_str(), src.media_type, src.data) {
            ("base64", Some(mt), Some(data)) if mt == "application/pdf" => {
                let mut file = Map::new();
                if let Some(title) = b.rest.get("title").and_then(Value::as_str) {
                    file.insert("filename".into(), Value::String(title.to_string()));
                }
                file.insert(
                    "file_data".into(),
                    Value::String(format!("data:{mt};base64,{data}")),
                );
                let mut rest = Rest::new();
                rest.insert("file".into(), Value::Object(file));
                ContentPart {
                    kind: "file".into(),
                    text: None,
                    image_url: None,
                    rest,
                }
            }
            ("text", _, Some(text)) => text_part(text, None),
            (kind, ..) => {
                return Err(TranslateError::unsupported(
                    format!("{field}.source"),
                    format!("document sources of type '{kind}' cannot be sent on"),
                ))
            }
        },
        (kind, _) => {
            return Err(TranslateError::unsupported(
                field,
                format!("'{kind}' blocks cannot be sent to this model's provider"),
            ))
        }
    };
    if let Some(cc) = b.cache_control {
        part.rest.insert("cache_control".into(), cc);
    }
    Ok(part)
}

fn client_tool_result(b: an::ContentBlock, field: &str) -> Result<ChatMessage, TranslateError> {
    let Some(id) = b.tool_use_id else {
        return Err(TranslateError::invalid(
            format!("{field}.tool_use_id"),
            "missing",
        ));
    };
    let content = match b.content {
        None => None,
        Some(an::Content::Text(t)) => Some(MessageContent::Text(t)),
        Some(an::Content::Blocks(blocks)) => Some(MessageContent::Parts(
            blocks
                .into_iter()
                .enumerate()
                .map(|(k, inner)| {
                    let f = format!("{field}.content[{k}]");
                    match inner.kind.as_str() {
                        "text" | "image" => client_part(inner, &f),
                        other => Err(TranslateError::unsupported(
                            f,
                            format!("'{other}' blocks cannot be sent in a tool result"),
                        )),
                    }
                })
                .collect::<Result<_, _>>()?,
        )),
    };
    let mut rest = Rest::new();
    if let Some(e) = b.is_error {
        rest.insert("is_error".into(), Value::Bool(e));
    }
    if let Some(cc) = b.cache_control {
        rest.insert("cache_control".into(), cc);
    }
    Ok(ChatMessage {
        role: Role::Tool,
        content,
        name: None,
        tool_calls: None,
        tool_call_id: Some(id),
        rest,
    })
}

fn client_assistant(content: an::Content, field: &str) -> Result<ChatMessage, TranslateError> {
    let blocks = match content {
        an::Content::Text(t) => return Ok(hub_message(Role::Assistant, MessageContent::Text(t))),
        an::Content::Blocks(b) => b,
    };
    let mut texts: Vec<ContentPart> = Vec::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    for (j, b) in blocks.into_iter().enumerate() {
        match b.kind.as_str() {
            "text" => texts.push(text_part(b.text.unwrap_or_default(), b.cache_control)),
            "thinking" => {
                let t = b.thinking.unwrap_or_default();
                reasoning.push_str(&t);
                thinking_blocks.push(thinking_entry(&t, &b.signature.unwrap_or_default()));
            }
            "redacted_thinking" => thinking_blocks
                .push(json!({"type": "redacted_thinking", "data": b.data.unwrap_or_default()})),
            "tool_use" => tool_calls.push(ToolCall {
                id: b.id.unwrap_or_default(),
                kind: "function".into(),
                function: FunctionCall {
                    name: b.name.unwrap_or_default(),
                    arguments: b.input.unwrap_or_else(|| json!({})).to_string(),
                    rest: Rest::new(),
                },
                rest: Rest::new(),
            }),
            other => {
                return Err(TranslateError::unsupported(
                    format!("{field}.content[{j}]"),
                    format!("'{other}' blocks cannot be sent to this model's provider"),
                ))
            }
        }
    }
    // Plain text travels as a string, which every OpenAI-style provider takes.
    let content = if texts.iter().any(|p| !p.rest.is_empty()) {
        Some(MessageContent::Parts(texts))
    } else if texts.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(MessageContent::Text(
            texts.into_iter().filter_map(|p| p.text).collect(),
        ))
    };
    let mut rest = Rest::new();
    if !reasoning.is_empty() {
        rest.insert("reasoning_content".into(), Value::String(reasoning));
    }
    if !thinking_blocks.is_empty() {
        rest.insert(THINKING_BLOCKS.into(), Value::Array(thinking_blocks));
    }
    Ok(ChatMessage {
        role: Role::Assistant,
        content,
        name: None,
        tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
        tool_call_id: None,
        rest,
    })
}

/// `msg_` + the hub id (without OpenAI's `chatcmpl-`).
fn message_id(hub_id: &str) -> String {
    if hub_id.starts_with("msg_") {
        return hub_id.to_string();
    }
    format!("msg_{}", hub_id.strip_prefix("chatcmpl-").unwrap_or(hub_id))
}

/// Thinking blocks of a hub message or delta, as Anthropic blocks.
fn thinking_blocks_of(rest: &Rest) -> Vec<an::ContentBlock> {
    rest.get(THINKING_BLOCKS)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| serde_json::from_value::<an::ContentBlock>(v.clone()).ok())
        .filter(|b| matches!(b.kind.as_str(), "thinking" | "redacted_thinking"))
        .collect()
}

/// `stop_reason` and `stop_sequence` for a hub finish reason and choice extras.
fn client_stop(finish: &str, choice_rest: &Rest) -> (&'static str, Option<String>) {
    let seq = choice_rest.get("stop_reason").and_then(Value::as_str);
    match (finish, seq) {
        ("stop", Some(s)) => ("stop_sequence", Some(s.to_string())),
        _ => (stop_reason(finish), None),
    }
}

/// A hub answer as an Anthropic message.
pub fn client_response(completion: &ChatCompletion) -> Vec<u8> {
    let mut content = Vec::new();
    let mut stop = (None, None);
    if let Some(choice) = completion.choices.first() {
        let m = &choice.message;
        let thinking = thinking_blocks_of(&m.rest);
        if !thinking.is_empty() {
            content.extend(thinking);
        } else if let Some(r) = m.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            // No signature is known: fine for a client that replays through the
            // gateway, refused by Anthropic's own API.
            content.push(an::ContentBlock {
                kind: "thinking".into(),
                thinking: Some(r.to_string()),
                signature: Some(String::new()),
                ..Default::default()
            });
        }
        let refusal = m.rest.get("refusal").and_then(Value::as_str);
        if let Some(t) = m.content.as_deref().filter(|t| !t.is_empty()).or(refusal) {
            content.push(an::ContentBlock::text(t));
        }
        for call in m.tool_calls.iter().flatten() {
            let input = serde_json::from_str::<Value>(&call.function.arguments)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            content.push(an::ContentBlock {
                kind: "tool_use".into(),
                id: Some(call.id.clone()),
                name: Some(call.function.name.clone()),
                input: Some(input),
                ..Default::default()
            });
        }
        let finish = choice.finish_reason.as_deref().unwrap_or("stop");
        let (reason, seq) = client_stop(finish, &choice.rest);
        stop = (Some(reason.to_string()), seq);
    }
    let usage = anthropic_usage(&completion.usage.clone().unwrap_or_default());
    let resp = an::MessagesResponse {
        id: message_id(&completion.id),
        kind: "message".into(),
        role: "assistant".into(),
        content,
        model: completion.model.clone(),
        stop_reason: stop.0,
        stop_sequence: stop.1,
        usage,
        rest: Rest::new(),
    };
    serde_json::to_vec(&resp).unwrap_or_default()
}

/// What the open Anthropic block of a [`ClientStream`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    /// A tool call, by hub index.
    Tool(u32),
}

/// Hub items as the Anthropic SSE a client expects.
///
/// The first chunk opens the message (`message_start`, usage zero: OpenAI-style
/// streams count input at the end); each run of text, reasoning or one tool call's
/// arguments is one content block; `Done` writes `message_delta` with the stop
/// reason and the final usage (cumulative, input and cache counts included, as
/// Anthropic's API now reports them there) and `message_stop`. An `Error` item
/// becomes `event: error`. Nothing is written after either.
#[derive(Debug)]
pub struct ClientStream {
    model: String,
    id: Option<String>,
    open: Option<(u32, Open)>,
    next_index: u32,
    stop: Option<(&'static str, Option<String>)>,
    usage: Option<Usage>,
    ended: bool,
}

impl ClientStream {
    /// `model` is the name the client asked for.
    pub fn new(model: &str) -> Self {
        ClientStream {
            model: model.to_string(),
            id: None,
            open: None,
            next_index: 0,
            stop: None,
            usage: None,
            ended: false,
        }
    }

    pub fn encode(&mut self, item: &StreamItem, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match item {
            StreamItem::Chunk(c) => self.chunk(c, out),
            StreamItem::Error(e) => {
                write_event(out, "error", &e.anthropic_body());
                self.ended = true;
            }
            StreamItem::Done => {
                self.start("", out);
                self.close(out);
                let (reason, seq) = self.stop.take().unwrap_or(("end_turn", None));
                let usage = match &self.usage {
                    Some(u) => anthropic_usage(u),
                    None => an::Usage {
                        output_tokens: Some(0),
                        ..Default::default()
                    },
                };
                self.event(
                    &an::StreamEvent::MessageDelta {
                        delta: an::MessageDelta {
                            stop_reason: Some(reason.to_string()),
                            stop_sequence: seq,
                            rest: Rest::new(),
                        },
                        usage: Some(usage),
                    },
                    out,
                );
                self.event(&an::StreamEvent::MessageStop, out);
                self.ended = true;
            }
        }
    }

    /// The hub stream stopped without `Done` or `Error`: writes an error event
    /// unless the stream already ended.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.ended {
            write_event(out, "error", &ended_early().anthropic_body());
            self.ended = true;
        }
    }

    fn event(&self, ev: &an::StreamEvent, out: &mut Vec<u8>) {
        if let Ok(json) = serde_json::to_vec(ev) {
            write_event(out, ev.name(), &json);
        }
    }

    fn start(&mut self, hub_id: &str, out: &mut Vec<u8>) {
        if self.id.is_some() {
            return;
        }
        let id = message_id(if hub_id.is_empty() { "gateway" } else { hub_id });
        let message = an::MessagesResponse {
            id: id.clone(),
            kind: "message".into(),
            role: "assistant".into(),
            content: Vec::new(),
            model: self.model.clone(),
            stop_reason: None,
            stop_sequence: None,
            usage: an::Usage {
                input_tokens: Some(0),
                output_tokens: Some(0),
                ..Default::default()
            },
            rest: Rest::new(),
        };
        self.id = Some(id);
        self.event(&an::StreamEvent::MessageStart { message }, out);
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            self.event(&an::StreamEvent::ContentBlockStop { index }, out);
        }
    }

    /// Opens a new block (closing the open one).
    fn open(&mut self, kind: Open, block: an::ContentBlock, out: &mut Vec<u8>) -> u32 {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.event(
            &an::StreamEvent::ContentBlockStart {
                index,
                content_block: block,
            },
            out,
        );
        self.open = Some((index, kind));
        index
    }

    /// The open block if it is of `kind`, else a new one.
    fn ensure(&mut self, kind: Open, out: &mut Vec<u8>) -> u32 {
        if let Some((index, open)) = self.open {
            if open == kind {
                return index;
            }
        }
        let block = match kind {
            Open::Thinking => an::ContentBlock {
                kind: "thinking".into(),
                thinking: Some(String::new()),
                signature: Some(String::new()),
                ..Default::default()
            },
            _ => an::ContentBlock::text(""),
        };
        self.open(kind, block, out)
    }

    fn delta(&self, index: u32, delta: an::BlockDelta, out: &mut Vec<u8>) {
        self.event(&an::StreamEvent::ContentBlockDelta { index, delta }, out);
    }

    fn chunk(&mut self, c: &ChatCompletionChunk, out: &mut Vec<u8>) {
        self.start(&c.id, out);
        if let Some(u) = &c.usage {
            self.usage = Some(u.clone());
        }
        let Some(choice) = c.choices.iter().find(|ch| ch.index == 0) else {
            return;
        };
        let d = &choice.delta;
        if let Some(r) = d.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            let index = self.ensure(Open::Thinking, out);
            let delta = an::BlockDelta {
                kind: "thinking_delta".into(),
                thinking: Some(r.to_string()),
                ..Default::default()
            };
            self.delta(index, delta, out);
        }
        for b in thinking_blocks_of(&d.rest) {
            if b.kind == "redacted_thinking" {
                self.open(Open::Text, b, out);
                self.close(out);
                continue;
            }
            // Streamed thinking text travels in `reasoning_content`; the blocks
            // carry signatures.
            if let Some(s) = b.signature.filter(|s| !s.is_empty()) {
                let index = self.ensure(Open::Thinking, out);
                let delta = an::BlockDelta {
                    kind: "signature_delta".into(),
                    signature: Some(s),
                    ..Default::default()
                };
                self.delta(index, delta, out);
            }
        }
        if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
            let index = self.ensure(Open::Text, out);
            let delta = an::BlockDelta {
                kind: "text_delta".into(),
                text: Some(t.to_string()),
                ..Default::default()
            };
            self.delta(index, delta, out);
        }
        for tc in d.tool_calls.iter().flatten() {
            let index = match self.open {
                Some((index, Open::Tool(i))) if i == tc.index => index,
                _ => {
                    let id = tc.id.clone().unwrap_or_else(|| {
                        format!(
                            "toolu_{}_{}",
                            self.id.as_deref().unwrap_or_default(),
                            tc.index
                        )
                    });
                    let block = an::ContentBlock {
                        kind: "tool_use".into(),
                        id: Some(id),
                        name: Some(tc.function.name.clone().unwrap_or_default()),
                        input: Some(json!({})),
                        ..Default::default()
                    };
                    self.open(Open::Tool(tc.index), block, out)
                }
            };
            if let Some(args) = tc.function.arguments.as_deref().filter(|a| !a.is_empty()) {
                let delta = an::BlockDelta {
                    kind: "input_json_delta".into(),
                    partial_json: Some(args.to_string()),
                    ..Default::default()
                };
                self.delta(index, delta, out);
            }
        }
        if let Some(f) = &choice.finish_reason {
            self.close(out);
            self.stop = Some(client_stop(f, &choice.rest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::eventstream::{encode_event, encode_exception};
    use crate::translate::testing::Rng;
    use serde_json::json;

    const STREAM: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/anthropic/stream_tools.sse"
    ));
    const RESPONSE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/anthropic/response_tools.json"
    ));

    fn meta() -> ResponseMeta {
        ResponseMeta {
            id: "chatcmpl-abc".into(),
            model: "claude-test".into(),
            created: 1_700_000_000,
        }
    }

    fn target(flavor: Flavor<'static>, stream: bool) -> Target<'static> {
        Target {
            flavor,
            model: "claude-x",
            stream,
            include_usage: true,
            version: None,
        }
    }

    fn hub(v: Value) -> ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    fn body(up: &UpstreamRequest) -> Value {
        serde_json::from_slice(&up.body).unwrap()
    }

    /// The Anthropic body for a hub request (native, not streamed).
    fn translate(v: Value) -> Result<Value, TranslateError> {
        chat_request(&hub(v), &target(Flavor::Native, false)).map(|up| body(&up))
    }

    // ----- hub → Anthropic request -----

    #[test]
    fn request_native() {
        let r = hub(json!({"model": "m", "stream": true, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"}]}));
        let up = chat_request(&r, &target(Flavor::Native, true)).unwrap();
        assert_eq!(up.path, "/v1/messages");
        assert_eq!(
            up.headers,
            vec![
                ("content-type", "application/json".to_string()),
                ("anthropic-version", "2023-06-01".to_string())
            ]
        );
        assert_eq!(
            body(&up),
            json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}],
                   "system": "be brief", "max_tokens": 4096, "stream": true})
        );
        let mut t = target(Flavor::Native, false);
        t.version = Some("2024-01-01");
        let up = chat_request(&r, &t).unwrap();
        assert_eq!(
            up.headers[1],
            ("anthropic-version", "2024-01-01".to_string())
        );
        assert_eq!(body(&up).get("stream"), None);
    }

    #[test]
    fn request_vertex_and_bedrock() {
        let r = hub(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        let vertex = Flavor::Vertex {
            project: "my-proj",
            region: "us-east5",
        };
        let mut t = target(vertex, true);
        t.model = "claude-sonnet-4@20250514";
        let up = chat_request(&r, &t).unwrap();
        assert_eq!(
            up.path,
            "/v1/projects/my-proj/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict"
        );
        assert_eq!(
            up.headers,
            vec![("content-type", "application/json".to_string())]
        );
        assert_eq!(
            body(&up),
            json!({"anthropic_version": "vertex-2023-10-16", "messages": [{"role": "user", "content": "hi"}],
                   "max_tokens": 4096, "stream": true})
        );
        t.stream = false;
        t.version = Some("vertex-2099-01-01");
        let up = chat_request(&r, &t).unwrap();
        assert!(up.path.ends_with("@20250514:rawPredict"), "{}", up.path);
        let b = body(&up);
        assert_eq!(b["anthropic_version"], "vertex-2099-01-01");
        assert_eq!(b.get("stream"), None);

        // The clouds fetch no image URLs.
        let img = hub(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}));
        for flavor in [vertex, Flavor::Bedrock] {
            let err = chat_request(&img, &target(flavor, false)).unwrap_err();
            assert_eq!(err.status(), 422);
            assert!(err.message().contains("base64 data URL"), "{err}");
        }

        let mut t = target(Flavor::Bedrock, true);
        t.model = "us.anthropic.claude-3-5-sonnet-20241022-v2:0";
        let up = chat_request(&r, &t).unwrap();
        assert_eq!(
            up.path,
            "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/invoke-with-response-stream"
        );
        assert_eq!(
            body(&up),
            json!({"anthropic_version": "bedrock-2023-05-31", "messages": [{"role": "user", "content": "hi"}],
                   "max_tokens": 4096})
        );
        t.stream = false;
        t.model = "arn:aws:bedrock:us-east-1:123:inference-profile/x";
        let up = chat_request(&r, &t).unwrap();
        assert_eq!(
            up.path,
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fx/invoke"
        );
    }

    #[test]
    fn request_full_conversation() {
        let got = translate(json!({
            "model": "gpt-x",
            "messages": [
                {"role": "system", "content": "sys A"},
                {"role": "developer", "content": [{"type": "text", "text": "dev B", "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"},
                     "cache_control": {"type": "ephemeral"}}]},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}],
                 "thinking_blocks": [{"type": "thinking", "thinking": "hm", "signature": "sig1"},
                                     {"type": "thinking", "thinking": "unsigned"}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}], "is_error": true},
                {"role": "user", "content": "thanks"},
                {"role": "user", "content": "and tomorrow?"}
            ],
            "max_tokens": 300, "temperature": 0.5, "top_p": 0.9, "top_k": 5, "seed": 7,
            "stop": "END", "user": "u-1", "frequency_penalty": 0.1,
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                {"type": "function", "function": {"name": "get_time"}, "cache_control": {"type": "ephemeral"}}],
            "tool_choice": "auto", "parallel_tool_calls": false
        }))
        .unwrap();
        let want = json!({
            "model": "claude-x",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"},
                     "cache_control": {"type": "ephemeral"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "sig1"},
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "noon"}], "is_error": true},
                    {"type": "text", "text": "thanks"},
                    {"type": "text", "text": "and tomorrow?"}]}
            ],
            "system": [{"type": "text", "text": "sys A"},
                       {"type": "text", "text": "dev B", "cache_control": {"type": "ephemeral"}}],
            "max_tokens": 300,
            "stop_sequences": ["END"],
            "temperature": 0.5, "top_p": 0.9, "top_k": 5,
            "tools": [
                {"name": "get_weather", "description": "Weather",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "get_time", "input_schema": {"type": "object", "properties": {}},
                 "cache_control": {"type": "ephemeral"}}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "u-1"}
        });
        assert_eq!(got, want);
    }

    #[test]
    fn request_assistant_shapes() {
        // Only tool calls; blank text is dropped; an empty assistant turn vanishes.
        let got = translate(json!({"messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": " ", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "r"},
            {"role": "assistant", "content": null},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}
        ]}))
        .unwrap();
        assert_eq!(
            got["messages"],
            json!([
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c", "content": "r"}]},
                {"role": "assistant", "content": "no"}
            ])
        );
    }

    #[test]
    fn request_tool_choice() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        for (choice, serial, want) in [
            (json!(null), false, json!(null)),
            (
                json!(null),
                true,
                json!({"type": "auto", "disable_parallel_tool_use": true}),
            ),
            (json!("auto"), false, json!({"type": "auto"})),
            (json!("required"), false, json!({"type": "any"})),
            (
                json!("required"),
                true,
                json!({"type": "any", "disable_parallel_tool_use": true}),
            ),
            (json!("none"), true, json!({"type": "none"})),
            (
                json!({"type": "function", "function": {"name": "f"}}),
                false,
                json!({"type": "tool", "name": "f"}),
            ),
        ] {
            let mut r = json!({"messages": [{"role": "user", "content": "x"}], "tools": tools});
            if !choice.is_null() {
                r["tool_choice"] = choice.clone();
            }
            if serial {
                r["parallel_tool_calls"] = json!(false);
            }
            let got = translate(r).unwrap();
            assert_eq!(
                got.get("tool_choice").cloned().unwrap_or(Value::Null),
                want,
                "{choice}"
            );
        }
        // Without tools: auto and none say nothing, required and named are errors.
        let r = json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "none"});
        assert_eq!(translate(r).unwrap().get("tool_choice"), None);
        let r = json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"});
        assert_eq!(translate(r).unwrap_err().status(), 400);
        let r = json!({"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": "sometimes"});
        assert_eq!(translate(r).unwrap_err().status(), 400);
    }

    #[test]
    fn request_reasoning_and_max_tokens() {
        let base = |extra: Value| {
            let mut r = json!({"messages": [{"role": "user", "content": "x"}]});
            for (k, v) in extra.as_object().unwrap() {
                r[k] = v.clone();
            }
            translate(r)
        };
        for (extra, max, budget) in [
            (json!({}), 4096, None),
            (
                json!({"max_completion_tokens": 10, "max_tokens": 99}),
                10,
                None,
            ),
            (json!({"reasoning_effort": "minimal"}), 5120, Some(1024)),
            (json!({"reasoning_effort": "low"}), 5120, Some(1024)),
            (json!({"reasoning_effort": "medium"}), 6144, Some(2048)),
            (
                json!({"reasoning_effort": "high", "max_tokens": 10000}),
                10000,
                Some(4096),
            ),
            (
                json!({"reasoning_effort": "high", "max_tokens": 3000}),
                3000,
                Some(1500),
            ),
            (
                json!({"reasoning_effort": "medium", "max_tokens": 1500}),
                1500,
                None,
            ),
            (json!({"reasoning_effort": "none"}), 4096, None),
            (
                json!({"thinking": {"type": "enabled", "budget_tokens": 8000}}),
                12096,
                Some(8000),
            ),
            (
                json!({"thinking": {"type": "enabled", "budget_tokens": 8000}, "reasoning_effort": "low", "max_tokens": 9000}),
                9000,
                Some(8000),
            ),
        ] {
            let got = base(extra.clone()).unwrap();
            assert_eq!(got["max_tokens"], max, "{extra}");
            assert_eq!(got["thinking"]["budget_tokens"].as_u64(), budget, "{extra}");
            if budget.is_some() {
                assert_eq!(got["thinking"]["type"], "enabled");
            }
        }
        let got = base(json!({"thinking": {"type": "disabled"}})).unwrap();
        assert_eq!(got["thinking"], json!({"type": "disabled"}));
        let got = base(json!({"thinking": {"type": "adaptive"}, "max_tokens": 64000})).unwrap();
        assert_eq!(got["thinking"], json!({"type": "adaptive"}));
        assert_eq!(got["max_tokens"], 64000);

        let err = base(
            json!({"thinking": {"type": "enabled", "budget_tokens": 8000}, "max_tokens": 5000}),
        )
        .unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.message().contains("max_tokens"), "{err}");
        for bad in [
            json!({"thinking": {"type": "enabled"}}),
            json!({"thinking": "on"}),
            json!({"reasoning_effort": "extreme"}),
            json!({"reasoning_effort": 3}),
        ] {
            assert_eq!(base(bad.clone()).unwrap_err().status(), 400, "{bad}");
        }
    }

    #[test]
    fn request_response_format() {
        let schema =
            json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]});
        let rf = json!({"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "description": "An a."}});
        let got = translate(
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": rf}),
        )
        .unwrap();
        assert_eq!(
            got["tools"],
            json!([{"name": RESPONSE_TOOL, "description": "Give the final answer with this tool. An a.", "input_schema": schema}])
        );
        assert_eq!(
            got["tool_choice"],
            json!({"type": "tool", "name": RESPONSE_TOOL})
        );

        // With the client's tools the model may call those or answer.
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let got = translate(
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": rf,
                                   "tools": tools, "parallel_tool_calls": false}),
        )
        .unwrap();
        assert_eq!(got["tools"].as_array().unwrap().len(), 2);
        assert_eq!(
            got["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        let got = translate(
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": rf,
                                   "tools": tools, "tool_choice": "none"}),
        )
        .unwrap();
        assert_eq!(
            got["tool_choice"],
            json!({"type": "tool", "name": RESPONSE_TOOL})
        );
        let got = translate(json!({"messages": [{"role": "user", "content": "x"}], "response_format": rf,
                                   "tools": tools, "tool_choice": {"type": "function", "function": {"name": "f"}}}))
        .unwrap();
        assert_eq!(got["tool_choice"], json!({"type": "tool", "name": "f"}));

        // json_object: an instruction after the client's system prompt.
        let got = translate(json!({"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "x"}],
                                   "response_format": {"type": "json_object"}}))
        .unwrap();
        assert_eq!(
            got["system"],
            json!([{"type": "text", "text": "sys"}, {"type": "text", "text": JSON_OBJECT_INSTRUCTION}])
        );
        let got = translate(json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "text"}})).unwrap();
        assert_eq!(got.get("system"), None);

        for (extra, status) in [
            (
                json!({"response_format": rf, "reasoning_effort": "low"}),
                422,
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "array"}}}}),
                422,
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a"}}}),
                400,
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": RESPONSE_TOOL}}]}),
                400,
            ),
            (json!({"response_format": {"type": "yaml"}}), 400),
        ] {
            let mut r = json!({"messages": [{"role": "user", "content": "x"}]});
            for (k, v) in extra.as_object().unwrap() {
                r[k] = v.clone();
            }
            assert_eq!(translate(r).unwrap_err().status(), status, "{extra}");
        }
    }

    #[test]
    fn request_files_become_documents() {
        let got = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
            {"type": "file", "file": {"file_data": "data:text/plain;base64,aGVsbG8="}}]}]}))
        .unwrap();
        assert_eq!(
            got["messages"][0]["content"],
            json!([
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}, "title": "a.pdf"},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hello"}}
            ])
        );
    }

    #[test]
    fn request_refusals() {
        let user = |content: Value| json!({"messages": [{"role": "user", "content": content}]});
        let cases = [
            (
                json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
                422,
                "n",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "logprobs": true}),
                422,
                "logprobs",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "modalities": ["text", "audio"]}),
                422,
                "audio",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "web_search_options": {}}),
                422,
                "web_search_options",
            ),
            (
                user(
                    json!([{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]),
                ),
                422,
                "messages[0].content[0]",
            ),
            (
                user(json!([{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}])),
                400,
                "messages[0].content[0].image_url.url",
            ),
            (
                user(
                    json!([{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}]),
                ),
                422,
                "messages[0].content[0].image_url.url",
            ),
            (
                user(json!([{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}])),
                400,
                "messages[0].content[0].image_url.url",
            ),
            (
                user(
                    json!([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]),
                ),
                400,
                "messages[0].content[0].image_url.url",
            ),
            (
                user(json!([{"type": "file", "file": {"file_id": "file-1"}}])),
                422,
                "messages[0].content[0].file",
            ),
            (
                user(
                    json!([{"type": "file", "file": {"file_data": "data:image/png;base64,AAAA"}}]),
                ),
                422,
                "messages[0].content[0].file.file_data",
            ),
            (
                user(json!([{"type": "text"}])),
                400,
                "messages[0].content[0].text",
            ),
            (
                json!({"messages": [{"role": "user"}]}),
                400,
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "function", "name": "f", "content": "x"}]}),
                422,
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                400,
                "messages[0].tool_call_id",
            ),
            (
                json!({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]}),
                422,
                "messages[0].content[0]",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}),
                400,
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
                422,
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]}),
                422,
                "messages[0].content[0]",
            ),
            (
                json!({"messages": [{"role": "tool", "tool_call_id": "c", "content": [{"type": "file", "file": {}}]}]}),
                422,
                "messages[0].content[0]",
            ),
            (
                json!({"messages": [], "tools": [{"type": "custom", "custom": {"name": "x"}}]}),
                422,
                "tools[0].type",
            ),
            (
                json!({"messages": [], "tools": [{"type": "function"}]}),
                400,
                "tools[0].function",
            ),
        ];
        for (r, status, field) in cases {
            let err = translate(r.clone()).unwrap_err();
            assert_eq!(err.status(), status, "{r}: {err}");
            match &err {
                TranslateError::Unsupported { field: f, .. }
                | TranslateError::InvalidRequest { field: f, .. } => assert_eq!(f, field, "{r}"),
                other => panic!("{other:?}"),
            }
        }
    }

    // ----- Anthropic answer → hub -----

    #[test]
    fn response_with_thinking_tools_and_cache() {
        let c = chat_response(RESPONSE, &meta()).unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "chatcmpl-abc", "object": "chat.completion", "created": 1_700_000_000u64, "model": "claude-test",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant",
                    "content": "Checking both cities.",
                    "reasoning_content": "Two cities, two calls.",
                    "tool_calls": [
                        {"id": "toolu_paris", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "toolu_rome", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\",\"units\":[\"c\"]}"}}
                    ],
                    "thinking_blocks": [
                        {"type": "thinking", "thinking": "Two cities, two calls.", "signature": "EqQBCgIYAhIMsig"},
                        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}
                    ]
                }}],
                "usage": {"prompt_tokens": 1240, "completion_tokens": 60, "total_tokens": 1300,
                          "prompt_tokens_details": {"cached_tokens": 1000, "cache_creation_tokens": 200}}
            })
        );
        // The gateway's own usage reader agrees with what the client is told.
        let mut meter =
            crate::metering::usage::ResponseMeter::new(crate::metering::usage::MeterOptions {
                format: crate::metering::usage::BodyFormat::Json,
                gzip: false,
                strip_usage_chunk: false,
                max_buffered: 1 << 20,
            });
        let _ = meter.feed(
            &serde_json::to_vec(&c).unwrap(),
            true,
            std::time::Duration::ZERO,
        );
        let u = meter.usage().unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.cached_input_tokens,
                u.cache_creation_input_tokens
            ),
            (1240, 1000, 200)
        );
    }

    #[test]
    fn response_stop_sequence_json_tool_and_refusal() {
        let c = chat_response(
            br#"{"content":[{"type":"text","text":"a"}],"stop_reason":"stop_sequence","stop_sequence":"END",
                 "usage":{"input_tokens":5,"output_tokens":1}}"#,
            &meta(),
        )
        .unwrap();
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(c.choices[0].rest.get("stop_reason"), Some(&json!("END")));
        let u = c.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.total_tokens), (5, 6));
        assert_eq!(u.prompt_tokens_details.unwrap().cache_creation_tokens, None);

        let c = chat_response(
            br#"{"content":[{"type":"text","text":"Sure:"},{"type":"tool_use","id":"t","name":"aigw_json_response","input":{"a":1}}],
                 "stop_reason":"tool_use","usage":{}}"#,
            &meta(),
        )
        .unwrap();
        assert_eq!(c.choices[0].message.content.as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(c.choices[0].message.tool_calls, None);
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("stop"));

        let c = chat_response(
            br#"{"content":[],"stop_reason":"refusal","usage":{"input_tokens":1,"output_tokens":0}}"#,
            &meta(),
        )
        .unwrap();
        assert_eq!(
            c.choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );
        assert_eq!(c.choices[0].message.content.as_deref(), Some(""));

        // Unknown blocks are skipped; a tool call without an id gets one.
        let c = chat_response(
            br#"{"content":[{"type":"server_tool_use","id":"s","name":"web_search","input":{}},
                            {"type":"tool_use","name":"f"}],"stop_reason":"tool_use"}"#,
            &meta(),
        )
        .unwrap();
        let calls = c.choices[0].message.tool_calls.clone().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].id, "call_chatcmpl-abc_0");
        assert_eq!(calls[0].function.arguments, "{}");
    }

    #[test]
    fn finish_reason_mapping() {
        for (anthropic, openai) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("something_new", "stop"),
        ] {
            assert_eq!(finish_reason(anthropic), openai);
        }
        for (openai, anthropic) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("function_call", "tool_use"),
            ("content_filter", "refusal"),
            ("other", "end_turn"),
        ] {
            assert_eq!(stop_reason(openai), anthropic);
        }
    }

    #[test]
    fn bad_response_is_502() {
        for b in [
            &b"not json"[..],
            br#"{"type":"error","error":{"type":"api_error","message":"x"}}"#,
            b"{}",
            br#"{"content":"text"}"#,
            b"",
        ] {
            let err = chat_response(b, &meta()).unwrap_err();
            assert_eq!(err.status(), 502, "{err:?}");
        }
    }

    // ----- errors -----

    fn err(status: u16, headers: &[(&str, &str)], b: &str) -> ProviderError {
        error(status, &headers, b.as_bytes())
    }

    #[test]
    fn errors_of_each_flavor() {
        let e = err(
            529,
            &[],
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(
            e,
            ProviderError {
                status: 529,
                kind: ErrorKind::Overloaded,
                code: Some("overloaded_error".into()),
                message: "Overloaded".into()
            }
        );
        let e = err(
            429,
            &[],
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"},"request_id":"req_1"}"#,
        );
        assert_eq!((e.status, e.kind), (429, ErrorKind::RateLimit));
        let e = err(
            400,
            &[],
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: required"}}"#,
        );
        assert_eq!(
            (e.status, e.kind, e.message.as_str()),
            (400, ErrorKind::InvalidRequest, "max_tokens: required")
        );
        let e = err(
            402,
            &[],
            r#"{"type":"error","error":{"type":"billing_error","message":"pay"}}"#,
        );
        assert_eq!((e.status, e.kind), (402, ErrorKind::PermissionDenied));

        // Vertex: Google's shape, bare or in a list, or Anthropic's own.
        let e = err(
            429,
            &[],
            r#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!(
            e,
            ProviderError {
                status: 429,
                kind: ErrorKind::RateLimit,
                code: Some("RESOURCE_EXHAUSTED".into()),
                message: "Quota exceeded".into()
            }
        );
        let e = err(
            403,
            &[],
            r#"[{"error":{"code":403,"message":"denied","status":"PERMISSION_DENIED"}}]"#,
        );
        assert_eq!(
            (e.status, e.kind, e.code.as_deref()),
            (403, ErrorKind::PermissionDenied, Some("PERMISSION_DENIED"))
        );
        let e = err(
            404,
            &[],
            r#"{"error":{"code":404,"message":"Publisher model not found"}}"#,
        );
        assert_eq!((e.status, e.kind, e.code), (404, ErrorKind::NotFound, None));

        // Bedrock: the header names the exception.
        let hdr = [(
            "x-amzn-errortype",
            "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/",
        )];
        let e = err(400, &hdr, r#"{"message":"max_tokens: field required"}"#);
        assert_eq!(
            e,
            ProviderError {
                status: 400,
                kind: ErrorKind::InvalidRequest,
                code: Some("ValidationException".into()),
                message: "max_tokens: field required".into()
            }
        );
        let e = err(
            429,
            &[("x-amzn-errortype", "ThrottlingException")],
            r#"{"Message":"Too many requests"}"#,
        );
        assert_eq!(
            (e.status, e.kind, e.message.as_str()),
            (429, ErrorKind::RateLimit, "Too many requests")
        );
        let e = err(
            424,
            &[("x-amzn-errortype", "ModelErrorException")],
            r#"{"message":"boom"}"#,
        );
        assert_eq!((e.status, e.kind), (502, ErrorKind::Server));
        let e = err(
            403,
            &[],
            r#"{"__type":"com.amazon.coral#AccessDeniedException","message":"no"}"#,
        );
        assert_eq!(
            (e.status, e.kind, e.code.as_deref()),
            (
                403,
                ErrorKind::PermissionDenied,
                Some("AccessDeniedException")
            )
        );
        let e = err(500, &[("x-amzn-errortype", "InternalServerException")], "");
        assert_eq!(e.message, "the Anthropic provider answered HTTP 500");

        // Not JSON: a message naming the status, never the body.
        let e = err(
            502,
            &[],
            "<html><body>Bad Gateway secret-token</body></html>",
        );
        assert_eq!(
            e,
            ProviderError::new(502, None, "the Anthropic provider answered HTTP 502")
        );
        let e = err(503, &[], "");
        assert_eq!((e.status, e.kind), (503, ErrorKind::Overloaded));
        let e = err(200, &[], "{}");
        assert_eq!(e.status, 502);
        let e = err(
            200,
            &[],
            r#"{"type":"error","error":{"type":"overloaded_error","message":"x"}}"#,
        );
        assert_eq!(e.status, 529);
        let long = "x".repeat(5000);
        let e = err(
            400,
            &[],
            &json!({"type": "error", "error": {"type": "invalid_request_error", "message": long}})
                .to_string(),
        );
        assert_eq!(e.message.len(), MAX_MESSAGE_CHARS);
    }

    // ----- streams -----

    /// Feeds `data` cut at `cuts` (ascending offsets), the last piece with
    /// end_of_stream.
    fn run(mut s: impl ChunkSource, data: &[u8], cuts: &[usize]) -> Vec<StreamItem> {
        let mut out = Vec::new();
        let mut from = 0;
        for &c in cuts {
            s.feed(&data[from..c], false, &mut out);
            from = c;
        }
        s.feed(&data[from..], true, &mut out);
        // Nothing after the end.
        let n = out.len();
        s.feed(b"event: message_stop\ndata: {}\n\n", true, &mut out);
        assert_eq!(out.len(), n);
        out
    }

    fn sse(include_usage: bool) -> ChatStream {
        ChatStream::new(Framing::Sse, meta(), include_usage, 1 << 16)
    }

    fn es(include_usage: bool) -> ChatStream {
        ChatStream::new(Framing::EventStream, meta(), include_usage, 1 << 16)
    }

    /// The event JSON documents of an SSE stream.
    fn sse_datas(data: &[u8]) -> Vec<Vec<u8>> {
        let mut d = SseDecoder::new(1 << 20);
        let mut events = Vec::new();
        d.push(data, &mut events).unwrap();
        events.extend(d.finish().unwrap());
        events
            .iter()
            .filter(|e| e.has_data())
            .map(|e| e.data().to_vec())
            .collect()
    }

    /// The events as Bedrock sends them: its metrics on message_stop.
    fn bedrock_events(data: &[u8]) -> Vec<Vec<u8>> {
        sse_datas(data)
            .into_iter()
            .map(|json| {
                let mut v: Value = serde_json::from_slice(&json).unwrap();
                if v["type"] != "message_stop" {
                    return json;
                }
                v["amazon-bedrock-invocationMetrics"] = json!({"inputTokenCount": 1230,
                    "outputTokenCount": 89, "invocationLatency": 2087, "firstByteLatency": 512});
                serde_json::to_vec(&v).unwrap()
            })
            .collect()
    }

    /// Bedrock's framing of the same events.
    fn bedrock_frames(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for json in bedrock_events(data) {
            let payload = json!({
                "bytes": base64::engine::general_purpose::STANDARD.encode(&json),
                "p": "abcdefghij"
            });
            out.extend(encode_event("chunk", payload.to_string().as_bytes()).unwrap());
        }
        out
    }

    #[derive(Debug, Default, PartialEq)]
    struct Summary {
        role_first: bool,
        content: String,
        reasoning: String,
        signatures: Vec<String>,
        calls: Vec<(String, String, String)>,
        finish: Option<String>,
        stop_sequence: Option<String>,
        usage: Option<Usage>,
        end: Option<Result<(), ProviderError>>,
    }

    /// Reassembles hub items the way an OpenAI client does, checking the order.
    fn summarize(items: &[StreamItem]) -> Summary {
        let mut s = Summary::default();
        for (n, item) in items.iter().enumerate() {
            assert!(s.end.is_none(), "item after the end: {item:?}");
            let c = match item {
                StreamItem::Chunk(c) => c,
                StreamItem::Done => {
                    s.end = Some(Ok(()));
                    continue;
                }
                StreamItem::Error(e) => {
                    s.end = Some(Err(e.clone()));
                    continue;
                }
            };
            assert_eq!(
                (c.id.as_str(), c.model.as_str()),
                ("chatcmpl-abc", "claude-test")
            );
            if let Some(u) = &c.usage {
                assert!(c.choices.is_empty());
                s.usage = Some(u.clone());
                continue;
            }
            assert!(s.finish.is_none(), "content after finish");
            let ch = &c.choices[0];
            if n == 0 {
                s.role_first = ch.delta.role == Some(Role::Assistant);
            } else {
                assert_eq!(ch.delta.role, None);
            }
            s.content
                .push_str(ch.delta.content.as_deref().unwrap_or_default());
            s.reasoning
                .push_str(ch.delta.reasoning_content.as_deref().unwrap_or_default());
            for b in thinking_blocks_of(&ch.delta.rest) {
                s.signatures.extend(b.signature.filter(|x| !x.is_empty()));
            }
            for tc in ch.delta.tool_calls.iter().flatten() {
                let i = tc.index as usize;
                if i == s.calls.len() {
                    assert_eq!(tc.kind.as_deref(), Some("function"));
                    s.calls.push(Default::default());
                }
                let call = &mut s.calls[i];
                call.0.push_str(tc.id.as_deref().unwrap_or_default());
                call.1
                    .push_str(tc.function.name.as_deref().unwrap_or_default());
                call.2
                    .push_str(tc.function.arguments.as_deref().unwrap_or_default());
            }
            if let Some(f) = &ch.finish_reason {
                s.finish = Some(f.clone());
                s.stop_sequence = ch
                    .rest
                    .get("stop_reason")
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
        }
        s
    }

    fn golden_summary() -> Summary {
        Summary {
            role_first: true,
            content: "Checking both cities — ☀️.".into(),
            reasoning: "The user wants weather in two cities.".into(),
            signatures: vec!["EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds".into()],
            calls: vec![
                (
                    "toolu_paris".into(),
                    "get_weather".into(),
                    r#"{"city": "Paris"}"#.into(),
                ),
                (
                    "toolu_rome".into(),
                    "get_weather".into(),
                    r#"{"city": "Rome", "units": ["c"]}"#.into(),
                ),
            ],
            finish: Some("tool_calls".into()),
            stop_sequence: None,
            usage: Some(Usage {
                prompt_tokens: 1230,
                completion_tokens: 89,
                total_tokens: 1319,
                prompt_tokens_details: Some(PromptTokensDetails {
                    cached_tokens: Some(1000),
                    cache_creation_tokens: Some(200),
                    rest: Rest::new(),
                }),
                completion_tokens_details: None,
                rest: Rest::new(),
            }),
            end: Some(Ok(())),
        }
    }

    #[test]
    fn stream_sse_golden() {
        let items = run(sse(true), STREAM, &[]);
        assert_eq!(summarize(&items), golden_summary());
        // role chunk, 2 reasoning, signature, 2 text, tool start, 2 args (the empty
        // one is skipped), tool start, 2 args, finish, usage, done.
        assert_eq!(items.len(), 15, "{items:#?}");
        let without_usage = run(sse(false), STREAM, &[]);
        assert_eq!(without_usage.len(), 14);
        let mut s = summarize(&without_usage);
        assert_eq!(s.usage.take(), None);
        assert_eq!(
            s,
            Summary {
                usage: None,
                ..golden_summary()
            }
        );
    }

    #[test]
    fn stream_sse_any_split() {
        let whole = run(sse(true), STREAM, &[]);
        for i in 0..=STREAM.len() {
            assert_eq!(run(sse(true), STREAM, &[i]), whole, "split at {i}");
        }
        let bytes: Vec<usize> = (1..STREAM.len()).collect();
        assert_eq!(run(sse(true), STREAM, &bytes), whole);
        // CRLF line ends are the same stream.
        let crlf = String::from_utf8(STREAM.to_vec())
            .unwrap()
            .replace('\n', "\r\n");
        assert_eq!(run(sse(true), crlf.as_bytes(), &[]), whole);
    }

    #[test]
    fn stream_bedrock_any_split() {
        let frames = bedrock_frames(STREAM);
        let whole = run(es(true), &frames, &[]);
        assert_eq!(whole, run(sse(true), STREAM, &[]));
        for i in 0..=frames.len() {
            assert_eq!(run(es(true), &frames, &[i]), whole, "split at {i}");
        }
        let bytes: Vec<usize> = (1..frames.len()).collect();
        assert_eq!(run(es(true), &frames, &bytes), whole);
    }

    #[test]
    fn stream_cut_short_is_an_error() {
        let end = STREAM.len() - "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".len();
        for cut in [0, 10, end, STREAM.len() - 3] {
            let items = run(sse(true), &STREAM[..cut], &[]);
            let s = summarize(&items);
            let Some(Err(e)) = s.end else {
                panic!("cut at {cut}: {items:?}")
            };
            assert_eq!(e.status, 502);
            assert!(e.message.contains("ended early"), "{e:?}");
        }
        // The last event may lack its blank line: it still counts.
        let items = run(sse(true), STREAM.strip_suffix(b"\n\n").unwrap(), &[]);
        assert_eq!(summarize(&items).end, Some(Ok(())));

        let frames = bedrock_frames(STREAM);
        let items = run(es(true), &frames[..frames.len() - 5], &[]);
        let Some(Err(e)) = summarize(&items).end else {
            panic!()
        };
        assert!(e.message.contains("ended inside a message"), "{e:?}");
    }

    #[test]
    fn stream_error_event() {
        let data = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":1}}}\n\n\
event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let items = run(sse(true), data, &[]);
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1],
            StreamItem::Error(ProviderError {
                status: 529,
                kind: ErrorKind::Overloaded,
                code: Some("overloaded_error".into()),
                message: "Overloaded".into()
            })
        );
    }

    #[test]
    fn stream_bedrock_exception_and_corrupt_frame() {
        let mut frames = bedrock_frames(STREAM);
        let first = encode_event("chunk", b"{}").unwrap().len();
        let _ = first;
        // An exception after the first event.
        let mut d = eventstream::Decoder::default();
        let msgs = d.push(&frames).unwrap();
        let mut data = eventstream::encode(&msgs[0].headers, &msgs[0].payload).unwrap();
        data.extend(
            encode_exception(
                "throttlingException",
                br#"{"message":"Too many tokens, please wait before trying again."}"#,
            )
            .unwrap(),
        );
        data.extend(eventstream::encode(&msgs[1].headers, &msgs[1].payload).unwrap());
        let items = run(es(true), &data, &[]);
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1],
            StreamItem::Error(ProviderError {
                status: 429,
                kind: ErrorKind::RateLimit,
                code: Some("throttlingException".into()),
                message: "Too many tokens, please wait before trying again.".into()
            })
        );
        let msg = eventstream::Message {
            headers: vec![
                eventstream::Header::string(":message-type", "error"),
                eventstream::Header::string(":error-code", "InternalFailure"),
                eventstream::Header::string(":error-message", "oops"),
            ],
            payload: Vec::new(),
        };
        let e = bedrock_event(&msg).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_deref()),
            (502, Some("InternalFailure"))
        );

        // A flipped byte in the second frame: the first event, then one error.
        let len0 = eventstream::encode(&msgs[0].headers, &msgs[0].payload)
            .unwrap()
            .len();
        frames[len0 + 30] ^= 0x55;
        let items = run(es(true), &frames, &[]);
        assert_eq!(items.len(), 2, "{items:?}");
        let StreamItem::Error(e) = &items[1] else {
            panic!()
        };
        assert!(e.message.contains("CRC"), "{e:?}");

        // Chunks that are not what they should be.
        for payload in [
            &b"nope"[..],
            br#"{"bytes":"***"}"#,
            br#"{"bytes":"bm90IGpzb24="}"#,
        ] {
            let data = encode_event("chunk", payload).unwrap();
            let items = run(es(true), &data, &[]);
            assert!(
                matches!(items.as_slice(), [StreamItem::Error(e)] if e.status == 502),
                "{items:?}"
            );
        }
        // Other event types are skipped.
        let data = encode_event("somethingNew", b"{}").unwrap();
        let items = run(es(true), &data, &[]);
        assert!(
            matches!(items.as_slice(), [StreamItem::Error(e)] if e.message.contains("ended early"))
        );
    }

    #[test]
    fn stream_event_too_large() {
        let items = run(ChatStream::new(Framing::Sse, meta(), true, 64), STREAM, &[]);
        assert!(
            matches!(items.as_slice(), [StreamItem::Error(e)] if e.message.contains("larger than 64")),
            "{items:?}"
        );
        let frames = bedrock_frames(STREAM);
        let items = run(
            ChatStream::new(Framing::EventStream, meta(), true, 64),
            &frames,
            &[],
        );
        assert!(
            matches!(items.as_slice(), [StreamItem::Error(e)] if e.message.contains("exceeds the limit")),
            "{items:?}"
        );
    }

    #[test]
    fn stream_json_answer_stop_sequence_and_cumulative_usage() {
        let events = [
            json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "content": [],
                   "usage": {"input_tokens": 10, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": RESPONSE_TOOL, "input": {}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "xyz"}}),
            json!({"type": "some_future_event", "x": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
                   "usage": {"output_tokens": 7, "input_tokens": 12, "cache_read_input_tokens": 3, "cache_creation_input_tokens": null}}),
            json!({"type": "message_stop"}),
        ];
        let mut data = Vec::new();
        for e in &events {
            write_event(
                &mut data,
                e["type"].as_str().unwrap(),
                e.to_string().as_bytes(),
            );
        }
        let items = run(sse(true), &data, &[]);
        let s = summarize(&items);
        assert_eq!(s.content, r#"{"a":1}"#);
        assert!(s.calls.is_empty());
        assert_eq!(s.finish.as_deref(), Some("stop"));
        assert_eq!(s.stop_sequence.as_deref(), Some("END"));
        let u = s.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (15, 7, 22)
        );
        let redacted = items.iter().any(|i| match i {
            StreamItem::Chunk(c) => c.choices.first().is_some_and(|ch| {
                ch.delta.rest.get(THINKING_BLOCKS)
                    == Some(&json!([{"type": "redacted_thinking", "data": "xyz"}]))
            }),
            _ => false,
        });
        assert!(redacted);
    }

    #[test]
    fn garbage_never_panics() {
        let frames = bedrock_frames(STREAM);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..400 {
            let (src, framing) = if round % 2 == 0 {
                (STREAM, Framing::Sse)
            } else {
                (frames.as_slice(), Framing::EventStream)
            };
            let mut data = src[..rng.below(src.len() + 1)].to_vec();
            for _ in 0..rng.below(8) {
                if data.is_empty() {
                    break;
                }
                let at = rng.below(data.len());
                data[at] = rng.next() as u8;
            }
            if round % 7 == 0 {
                data = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
            }
            let cut = rng.below(data.len() + 1);
            let items = run(ChatStream::new(framing, meta(), true, 4096), &data, &[cut]);
            let ends = items
                .iter()
                .filter(|i| matches!(i, StreamItem::Done | StreamItem::Error(_)))
                .count();
            assert_eq!(ends, 1, "round {round}: {items:?}");
            assert!(matches!(
                items.last(),
                Some(StreamItem::Done | StreamItem::Error(_))
            ));

            let mut ms = MessagesStream::new(4096);
            let mut out = Vec::new();
            ms.feed(&data, true, &mut out);
            let _ = chat_response(&data, &meta());
            let _ = client_request(&data);
            let _ = error(500, &[("x-amzn-errortype", "X")], &data);
            let _ = messages_request(&data, &target(Flavor::Bedrock, true));
        }
    }

    // ----- Anthropic client → Anthropic-family provider -----

    #[test]
    fn messages_request_per_flavor() {
        let client = br#"{"model":"claude-alias","max_tokens":100,"messages":[{"role":"user","content":"hi"}],"stream":true,"container":"c","anthropic_version":"bedrock-2023-05-31"}"#;
        let up = messages_request(client, &target(Flavor::Native, true)).unwrap();
        assert_eq!(up.path, "/v1/messages");
        assert_eq!(
            up.headers[1],
            ("anthropic-version", "2023-06-01".to_string())
        );
        assert_eq!(
            String::from_utf8(up.body).unwrap(),
            r#"{"model":"claude-x","max_tokens":100,"messages":[{"role":"user","content":"hi"}],"stream":true,"container":"c","anthropic_version":"bedrock-2023-05-31"}"#
        );
        let vertex = Flavor::Vertex {
            project: "p",
            region: "europe-west1",
        };
        let up = messages_request(client, &target(vertex, true)).unwrap();
        assert_eq!(
            up.path,
            "/v1/projects/p/locations/europe-west1/publishers/anthropic/models/claude-x:streamRawPredict"
        );
        // The client's own version stays unless the route sets one.
        assert_eq!(
            String::from_utf8(up.body).unwrap(),
            r#"{"max_tokens":100,"messages":[{"role":"user","content":"hi"}],"stream":true,"container":"c","anthropic_version":"bedrock-2023-05-31"}"#
        );
        let mut t = target(Flavor::Bedrock, true);
        t.version = Some("bedrock-2099-01-01");
        let up = messages_request(client, &t).unwrap();
        assert_eq!(up.path, "/model/claude-x/invoke-with-response-stream");
        assert_eq!(
            String::from_utf8(up.body).unwrap(),
            r#"{"max_tokens":100,"messages":[{"role":"user","content":"hi"}],"container":"c","anthropic_version":"bedrock-2099-01-01"}"#
        );
        let plain = br#"{"model":"m","messages":[],"stream":true}"#;
        let up = messages_request(plain, &target(Flavor::Bedrock, false)).unwrap();
        assert_eq!(up.path, "/model/claude-x/invoke");
        assert_eq!(
            body(&up),
            json!({"messages": [], "anthropic_version": "bedrock-2023-05-31"})
        );
        let up = messages_request(plain, &target(vertex, false)).unwrap();
        assert_eq!(
            body(&up),
            json!({"messages": [], "stream": false, "anthropic_version": "vertex-2023-10-16"})
        );
        for bad in [&b"[1]"[..], b"nope", b""] {
            assert_eq!(
                messages_request(bad, &target(Flavor::Native, true))
                    .unwrap_err()
                    .status(),
                400
            );
        }
    }

    fn messages_stream(data: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut s = MessagesStream::new(1 << 16);
        let mut out = Vec::new();
        let mut from = 0;
        for &c in cuts {
            s.feed(&data[from..c], false, &mut out);
            from = c;
        }
        s.feed(&data[from..], true, &mut out);
        let n = out.len();
        s.feed(&data[..data.len().min(100)], true, &mut out);
        assert_eq!(out.len(), n);
        out
    }

    #[test]
    fn messages_stream_any_split() {
        let frames = bedrock_frames(STREAM);
        let mut want = Vec::new();
        for json in bedrock_events(STREAM) {
            let v: Value = serde_json::from_slice(&json).unwrap();
            write_event(&mut want, v["type"].as_str().unwrap(), &json);
        }
        let whole = messages_stream(&frames, &[]);
        assert_eq!(
            String::from_utf8(whole.clone()).unwrap(),
            String::from_utf8(want).unwrap()
        );
        for i in 0..=frames.len() {
            assert_eq!(messages_stream(&frames, &[i]), whole, "split at {i}");
        }
        let bytes: Vec<usize> = (1..frames.len()).collect();
        assert_eq!(messages_stream(&frames, &bytes), whole);
        // What an Anthropic client reads is the stream Anthropic itself would send.
        assert_eq!(run(sse(true), &whole, &[]), run(sse(true), STREAM, &[]));
    }

    #[test]
    fn messages_stream_failures() {
        let frames = bedrock_frames(STREAM);
        let mut d = eventstream::Decoder::default();
        let msgs = d.push(&frames).unwrap();
        let mut data = eventstream::encode(&msgs[0].headers, &msgs[0].payload).unwrap();
        data.extend(
            encode_exception(
                "modelStreamErrorException",
                br#"{"message":"model failed","originalStatusCode":500}"#,
            )
            .unwrap(),
        );
        data.extend(eventstream::encode(&msgs[1].headers, &msgs[1].payload).unwrap());
        let out = String::from_utf8(messages_stream(&data, &[])).unwrap();
        assert!(out.starts_with("event: message_start\ndata: "), "{out}");
        assert!(
            out.ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"model failed\"}}\n\n"),
            "{out}"
        );
        assert_eq!(out.matches("event: ").count(), 2);

        let out = String::from_utf8(messages_stream(&frames[..frames.len() / 2], &[])).unwrap();
        assert!(
            out.ends_with("ended early, before message_stop\"}}\n\n")
                || out.contains("ended inside a message"),
            "{out}"
        );
        assert_eq!(out.matches("event: error").count(), 1);

        // An upstream error event passes through and ends the stream.
        let err = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let payload = json!({"bytes": base64::engine::general_purpose::STANDARD.encode(err)});
        let mut data = eventstream::encode(&msgs[0].headers, &msgs[0].payload).unwrap();
        data.extend(encode_event("chunk", payload.to_string().as_bytes()).unwrap());
        data.extend(eventstream::encode(&msgs[1].headers, &msgs[1].payload).unwrap());
        let out = String::from_utf8(messages_stream(&data, &[])).unwrap();
        assert!(
            out.ends_with(&format!(
                "event: error\ndata: {}\n\n",
                String::from_utf8_lossy(err)
            )),
            "{out}"
        );

        // Pretty-printed JSON stays one data line; typeless events are errors.
        let pretty = b"{\n  \"type\": \"ping\"\n}";
        let payload = json!({"bytes": base64::engine::general_purpose::STANDARD.encode(pretty)});
        let data = encode_event("chunk", payload.to_string().as_bytes()).unwrap();
        let out = String::from_utf8(messages_stream(&data, &[])).unwrap();
        assert!(
            out.starts_with("event: ping\ndata: {\"type\":\"ping\"}\n\n"),
            "{out}"
        );
        let payload = json!({"bytes": base64::engine::general_purpose::STANDARD.encode(b"{\"type\":\"a b\"}")});
        let data = encode_event("chunk", payload.to_string().as_bytes()).unwrap();
        let out = String::from_utf8(messages_stream(&data, &[])).unwrap();
        assert!(out.starts_with("event: error\n"), "{out}");
    }

    // ----- Anthropic client ↔ hub -----

    fn anthropic_request() -> Value {
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 4000,
            "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}, "cache_control": {"type": "ephemeral"}},
                    {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}, "title": "a.pdf"}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Need tool.", "signature": "sig"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "rain"}], "is_error": true,
                     "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "Thanks"}]},
                {"role": "assistant", "content": "You're welcome."},
                {"role": "user", "content": "Bye"}
            ],
            "tools": [{"name": "get_weather", "description": "Weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                       "cache_control": {"type": "ephemeral"}}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 2000},
            "temperature": 0.7,
            "top_p": 0.95,
            "top_k": 40,
            "stop_sequences": ["###"],
            "metadata": {"user_id": "u-9"},
            "stream": true
        })
    }

    #[test]
    fn client_request_to_hub() {
        let r = client_request(anthropic_request().to_string().as_bytes()).unwrap();
        let want = json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}, "cache_control": {"type": "ephemeral"}},
                    {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}]},
                {"role": "assistant", "content": "Checking.",
                 "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}],
                 "reasoning_content": "Need tool.",
                 "thinking_blocks": [{"type": "thinking", "thinking": "Need tool.", "signature": "sig"}]},
                {"role": "tool", "content": "sunny", "tool_call_id": "toolu_1"},
                {"role": "tool", "content": [{"type": "text", "text": "rain"}], "tool_call_id": "toolu_2", "is_error": true,
                 "cache_control": {"type": "ephemeral"}},
                {"role": "user", "content": [{"type": "text", "text": "Thanks"}]},
                {"role": "assistant", "content": "You're welcome."},
                {"role": "user", "content": "Bye"}
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_completion_tokens": 4000,
            "temperature": 0.7,
            "top_p": 0.95,
            "stop": ["###"],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
                       "cache_control": {"type": "ephemeral"}}],
            "tool_choice": "auto",
            "parallel_tool_calls": false,
            "thinking": {"type": "enabled", "budget_tokens": 2000},
            "top_k": 40,
            "user": "u-9"
        });
        assert_eq!(serde_json::to_value(&r).unwrap(), want);
    }

    #[test]
    fn client_round_trip_native() {
        let original = anthropic_request();
        let r = client_request(original.to_string().as_bytes()).unwrap();
        let mut t = target(Flavor::Native, true);
        t.model = "claude-sonnet-4-5";
        let up = chat_request(&r, &t).unwrap();
        assert_eq!(body(&up), original);

        // Other shapes: string system, named and forced tool choices.
        for extra in [
            json!({"system": "sys", "tool_choice": {"type": "any"}}),
            json!({"tool_choice": {"type": "tool", "name": "get_weather"}, "thinking": {"type": "disabled"}}),
            json!({"tool_choice": {"type": "none"}, "stream": false}),
        ] {
            let mut original = anthropic_request();
            for (k, v) in extra.as_object().unwrap() {
                original[k] = v.clone();
            }
            let r = client_request(original.to_string().as_bytes()).unwrap();
            let mut t = target(Flavor::Native, r.is_stream());
            t.model = "claude-sonnet-4-5";
            let mut got = body(&chat_request(&r, &t).unwrap());
            if original["stream"] == json!(false) {
                got["stream"] = json!(false);
            }
            assert_eq!(got, original, "{extra}");
        }
    }

    #[test]
    fn client_request_extras_and_refusals() {
        let r = client_request(
            br#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"doc"}}]}],
                "output_config":{"effort":"max","format":{"type":"json_schema","schema":{"type":"object"}}},
                "tool_choice":{"type":"any"},"tools":[{"type":"custom","name":"f","input_schema":{"type":"object"}}]}"#,
        )
        .unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["reasoning_effort"], "high");
        assert_eq!(
            v["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}, "strict": true}})
        );
        assert_eq!(v["tool_choice"], "required");
        assert_eq!(
            v["messages"][0]["content"],
            json!([{"type": "text", "text": "doc"}])
        );
        assert_eq!(v.get("stream_options"), None);

        let m = |content: Value| json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": content}]});
        for (body, status) in [
            (json!({"model": "m", "messages": "x"}), 400),
            (json!({"model": "m"}), 400),
            (
                json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}),
                400,
            ),
            (
                json!({"model": "m", "messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                422,
            ),
            (
                json!({"model": "m", "messages": [], "mcp_servers": [{"type": "url", "url": "https://x"}]}),
                422,
            ),
            (
                json!({"model": "m", "messages": [], "tool_choice": {"type": "tool"}}),
                400,
            ),
            (
                json!({"model": "m", "messages": [], "tool_choice": {"type": "maybe"}}),
                400,
            ),
            (
                json!({"model": "m", "messages": [], "output_config": {"effort": "huge"}}),
                400,
            ),
            (
                json!({"model": "m", "messages": [], "output_config": {"format": {"type": "regex"}}}),
                422,
            ),
            (
                json!({"model": "m", "messages": [], "system": [{"type": "image", "source": {"type": "url", "url": "https://x"}}]}),
                422,
            ),
            (
                m(json!([{"type": "image", "source": {"type": "file", "file_id": "f"}}])),
                422,
            ),
            (
                m(
                    json!([{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]),
                ),
                422,
            ),
            (
                m(
                    json!([{"type": "search_result", "source": "https://x", "title": "t", "content": []}]),
                ),
                422,
            ),
            (m(json!([{"type": "image", "source": "https://x"}])), 422),
            (m(json!([{"type": "tool_result", "content": "x"}])), 400),
            (
                m(
                    json!([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "document", "source": {}}]}]),
                ),
                422,
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}]}),
                422,
            ),
        ] {
            let err = client_request(body.to_string().as_bytes()).unwrap_err();
            assert_eq!(err.status(), status, "{body}: {err}");
        }
    }

    fn completion(v: Value) -> ChatCompletion {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn client_response_shapes() {
        let c = completion(json!({
            "id": "chatcmpl-123", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Here.", "reasoning_content": "think",
                "thinking_blocks": [{"type": "thinking", "thinking": "think", "signature": "s"}, {"type": "other"}],
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                               {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "not json"}}]}}],
            "usage": {"prompt_tokens": 1300, "completion_tokens": 50, "total_tokens": 1350,
                      "prompt_tokens_details": {"cached_tokens": 1000, "cache_creation_tokens": 200}}
        }));
        let v: Value = serde_json::from_slice(&client_response(&c)).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "msg_123", "type": "message", "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "think", "signature": "s"},
                    {"type": "text", "text": "Here."},
                    {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
                    {"type": "tool_use", "id": "call_2", "name": "g", "input": {}}
                ],
                "model": "gpt-4o", "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 100, "output_tokens": 50, "cache_creation_input_tokens": 200, "cache_read_input_tokens": 1000}
            })
        );

        for (finish, extra, reason, seq) in [
            ("stop", json!({}), "end_turn", Value::Null),
            (
                "stop",
                json!({"stop_reason": "END"}),
                "stop_sequence",
                json!("END"),
            ),
            (
                "stop",
                json!({"stop_reason": 50256}),
                "end_turn",
                Value::Null,
            ),
            ("length", json!({}), "max_tokens", Value::Null),
            ("content_filter", json!({}), "refusal", Value::Null),
        ] {
            let mut choice = json!({"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": "x"}});
            for (k, v) in extra.as_object().unwrap() {
                choice[k] = v.clone();
            }
            let c = completion(
                json!({"id": "msg_x", "object": "chat.completion", "created": 1, "model": "m", "choices": [choice]}),
            );
            let v: Value = serde_json::from_slice(&client_response(&c)).unwrap();
            assert_eq!(
                (v["stop_reason"].clone(), v["stop_sequence"].clone()),
                (json!(reason), seq),
                "{finish}"
            );
            assert_eq!(v["id"], "msg_x");
            assert_eq!(
                v["usage"],
                json!({"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
            );
        }

        // Reasoning without blocks, a refusal, and no choices at all.
        let c = completion(
            json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [
            {"index": 0, "finish_reason": "content_filter", "message": {"role": "assistant", "content": null,
             "reasoning_content": "r", "refusal": "I can't."}}]}),
        );
        let v: Value = serde_json::from_slice(&client_response(&c)).unwrap();
        assert_eq!(
            v["content"],
            json!([{"type": "thinking", "thinking": "r", "signature": ""}, {"type": "text", "text": "I can't."}])
        );
        let c = completion(
            json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": []}),
        );
        let v: Value = serde_json::from_slice(&client_response(&c)).unwrap();
        assert_eq!(
            (v["content"].clone(), v["stop_reason"].clone()),
            (json!([]), Value::Null)
        );
    }

    fn encode_all(items: &[StreamItem]) -> Vec<u8> {
        let mut s = ClientStream::new("claude-alias");
        let mut out = Vec::new();
        for i in items {
            s.encode(i, &mut out);
        }
        s.finish(&mut out);
        out
    }

    fn event_names(sse: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(sse)
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn client_stream_round_trip() {
        // Provider stream → hub items → Anthropic SSE → hub items again: the same.
        let items = run(sse(true), STREAM, &[]);
        let out = encode_all(&items);
        assert_eq!(run(sse(true), &out, &[]), items);
        assert_eq!(
            event_names(&out),
            [
                "message_start",
                "content_block_start", // thinking
                "content_block_delta",
                "content_block_delta",
                "content_block_delta", // signature
                "content_block_stop",
                "content_block_start", // text
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start", // Paris
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start", // Rome
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_abc\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-alias\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\n\n"
        ), "{text}");
        assert!(text.contains(
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":30,\"output_tokens\":89,\"cache_creation_input_tokens\":200,\"cache_read_input_tokens\":1000}}\n\n"
        ), "{text}");
        assert!(text.contains(
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_paris\",\"name\":\"get_weather\",\"input\":{}}}\n\n"
        ), "{text}");
        assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    }

    fn chunk(delta: Value, finish: Option<&str>) -> StreamItem {
        StreamItem::Chunk(Box::new(
            serde_json::from_value(json!({
                "id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
            }))
            .unwrap(),
        ))
    }

    #[test]
    fn client_stream_events() {
        let items = [
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "Hel"}), None),
            chunk(
                json!({"content": "lo", "tool_calls": [{"index": 0, "type": "function", "function": {"name": "f", "arguments": ""}}]}),
                None,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
                None,
            ),
            chunk(
                json!({"thinking_blocks": [{"type": "redacted_thinking", "data": "zz"}]}),
                None,
            ),
            chunk(json!({}), Some("stop")),
            StreamItem::Done,
        ];
        let out = encode_all(&items);
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(
            event_names(&out),
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        // A call without an id gets one; usage unknown is zero output.
        assert!(text.contains("\"id\":\"toolu_msg_9_0\""), "{text}");
        assert!(
            text.contains("{\"type\":\"redacted_thinking\",\"data\":\"zz\"}"),
            "{text}"
        );
        assert!(text.contains("\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":0}"), "{text}");

        // An error item: one error event, nothing after.
        let items = [
            chunk(json!({"content": "x"}), None),
            StreamItem::Error(ProviderError::new(
                429,
                Some("ThrottlingException".into()),
                "slow",
            )),
            StreamItem::Done,
        ];
        let text = String::from_utf8(encode_all(&items)).unwrap();
        assert!(text.ends_with(
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow\"}}\n\n"
        ), "{text}");
        assert_eq!(text.matches("event: error").count(), 1);
        assert!(!text.contains("message_stop"));

        // Cut without Done: an error event from finish.
        let text = String::from_utf8(encode_all(&items[..1])).unwrap();
        assert!(text.ends_with("before message_stop\"}}\n\n"), "{text}");
        assert!(text.contains("\"type\":\"api_error\""), "{text}");

        // Done alone still makes a whole message.
        assert_eq!(
            event_names(&encode_all(&[StreamItem::Done])),
            ["message_start", "message_delta", "message_stop"]
        );

        // A stop sequence and usage sent on the finish chunk.
        let mut fin = chunk(json!({}), Some("stop"));
        if let StreamItem::Chunk(c) = &mut fin {
            c.choices[0].rest.insert("stop_reason".into(), json!("END"));
            c.usage = Some(Usage {
                prompt_tokens: 9,
                completion_tokens: 2,
                total_tokens: 11,
                ..Default::default()
            });
        }
        let text = String::from_utf8(encode_all(&[fin, StreamItem::Done])).unwrap();
        assert!(text.contains(
            "\"delta\":{\"stop_reason\":\"stop_sequence\",\"stop_sequence\":\"END\"},\"usage\":{\"input_tokens\":9,\"output_tokens\":2,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0}"
        ), "{text}");
    }
}
