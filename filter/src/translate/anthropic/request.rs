//! Client request → provider request: a hub request as a Messages call, an Anthropic
//! client's body for an Anthropic-family provider, an Anthropic client's request as
//! a hub request.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::{thinking_entry, Flavor, Target, DEFAULT_MAX_TOKENS, RESPONSE_TOOL, THINKING_BLOCKS};
use crate::schema::anthropic as an;
use crate::schema::openai::{
    ChatCompletionRequest, ChatMessage, ContentPart, FunctionCall, FunctionDef, ImageUrl,
    MessageContent, NamedFunction, NamedToolChoice, ResponseFormat, Rest, Role, Stop,
    StreamOptions, Tool, ToolCall, ToolChoice,
};
use crate::translate::function_tools;
use crate::translate::{TranslateError, UpstreamRequest};

/// Smallest thinking budget Anthropic accepts.
const MIN_BUDGET: u64 = 1024;
const JSON_OBJECT_INSTRUCTION: &str =
    "Respond with a single JSON object and nothing else: no prose, no code fences.";

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
// Anthropic client → Anthropic-family provider.

/// An Anthropic client's body for an Anthropic-family provider: unknown fields and
/// their order stay; native gets the routed `model`, the clouds lose `model` and get
/// `anthropic_version`, Bedrock loses `stream` (the path says it). The client's
/// `anthropic-beta` header is the caller's to carry (Bedrock and Vertex want it in
/// the body as `anthropic_beta`).
pub fn messages_request(body: &[u8], target: &Target) -> Result<UpstreamRequest, TranslateError> {
    let mut map: Map<String, Value> = crate::translate::plan::read_json(body)?;
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
    target.set_body_version(&mut map);
    let bytes =
        serde_json::to_vec(&map).map_err(|e| TranslateError::invalid("body", e.to_string()))?;
    Ok(UpstreamRequest {
        path: target.path(),
        body: bytes,
        headers: target.headers(),
    })
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
    // An error names the field by its path (`max_tokens`, `messages[2].content`).
    let req: an::MessagesRequest = crate::translate::plan::read_json(body)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::anthropic::tests::target;

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

    #[test]
    fn a_bad_field_is_named_by_its_path() {
        // Out of range, of the wrong type or not UTF-8: the 400 names the field, as
        // an OpenAI client's does, whichever way the body goes.
        let flavor = target(Flavor::Bedrock, false);
        for value in [
            &b"-1"[..],
            b"18446744073709551616",
            b"1e400",
            b"\"100\"",
            b"10.5",
        ] {
            let mut body = br#"{"model":"m","max_tokens":"#.to_vec();
            body.extend_from_slice(value);
            body.extend_from_slice(br#","messages":[{"role":"user","content":"hi"}]}"#);
            let text = String::from_utf8_lossy(&body).into_owned();
            match client_request(&body).unwrap_err() {
                TranslateError::InvalidRequest { field, .. } => {
                    assert_eq!(field, "max_tokens", "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
            if value == b"1e400" {
                // The clouds' body is read as it is, numbers unchecked but parsed.
                match messages_request(&body, &flavor).unwrap_err() {
                    TranslateError::InvalidRequest { field, .. } => assert_eq!(field, "max_tokens"),
                    other => panic!("{text}: {other:?}"),
                }
            }
        }
        let body = b"{\"model\":\"m\",\"max_tokens\":5,\"system\":\"be \xff\",\"messages\":[]}";
        match client_request(body).unwrap_err() {
            TranslateError::InvalidRequest { field, .. } => assert_eq!(field, "system"),
            other => panic!("{other:?}"),
        }
    }
}
