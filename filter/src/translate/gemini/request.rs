//! Client request → provider request: a chat request as a `generateContent` call
//! (its JSON Schemas cleaned to Gemini's subset), an embeddings request as
//! `batchEmbedContents` or `predict`.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::Api;
use crate::schema::openai::{
    ChatCompletionRequest, ChatMessage, ContentPart, EmbeddingInput, EmbeddingsRequest,
    MessageContent, Role, ToolChoice as OToolChoice,
};
use crate::translate::function_tools;
use crate::translate::{TranslateError, UpstreamRequest};

// ---------------------------------------------------------------------------------
// Wire types, request side (written).

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentRequest {
    contents: Vec<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDecl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation_config: Option<GenerationConfig>,
}

#[derive(Debug, Serialize)]
struct Content {
    /// `user` or `model`; none on `systemInstruction`.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: Vec<Part>,
}

/// A union: exactly one data member is set, `thoughtSignature` may go along.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inline_data: Option<Blob>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_data: Option<FileData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionCallOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_response: Option<FunctionResponseOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thought_signature: Option<String>,
}

impl Part {
    fn text(t: &str) -> Part {
        Part {
            text: Some(t.to_string()),
            ..Default::default()
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Blob {
    mime_type: String,
    /// Base64, as the data URL carried it.
    data: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileData {
    mime_type: &'static str,
    file_uri: String,
}

#[derive(Debug, Serialize)]
struct FunctionCallOut {
    name: String,
    args: Value,
}

#[derive(Debug, Serialize)]
struct FunctionResponseOut {
    name: String,
    response: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolDecl {
    function_declarations: Vec<FunctionDeclaration>,
}

#[derive(Debug, Serialize)]
struct FunctionDeclaration {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    function_calling_config: FunctionCallingConfig,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_function_names: Option<Vec<String>>,
}

#[derive(Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<ThinkingConfig>,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    thinking_budget: u64,
    include_thoughts: bool,
}

// ---------------------------------------------------------------------------------
// Chat request.

/// Sent as the `thoughtSignature` of a replayed function call that has none: the value
/// Google documents for histories Gemini did not produce (Gemini 3 refuses a function
/// call without a signature; older models ignore it).
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// Translates a chat request into a `generateContent` call (`streamGenerateContent`
/// with `?alt=sse` when `stream` is true).
///
/// - `system` and `developer` messages, wherever they stand, become
///   `systemInstruction` parts, in order.
/// - Turns alternate `user`/`model`: a run of one role (tool results, above all)
///   becomes one turn. Tool results are `functionResponse` parts named after the
///   earlier assistant call with that id; a result that is a JSON object is sent as
///   is, anything else as `{"content": <JSON value or text>}`. Empty text parts, and
///   messages left without parts, are skipped (Gemini refuses empty text).
/// - Images and files: data URLs go inline; `http(s)://` and `gs://` URLs go as
///   `fileData` with the media type read from the file extension, and a URL whose
///   extension says nothing known is refused (422) rather than guessed. Input audio
///   (wav, mp3) and `file` parts with `file_data` go inline.
/// - Thought signatures: a tool call carrying
///   `extra_content.google.thought_signature` (as [`chat_response`] writes it) gives it
///   back; otherwise the first call of each assistant message gets Google's documented
///   skip value, so Gemini 3 accepts histories from clients that drop the field.
/// - Schemas (tool parameters, `json_schema`) are cleaned to Gemini's subset: see
///   `clean_schema`. A tool whose parameters have no properties is declared without
///   `parameters` (Gemini refuses an OBJECT schema with no properties).
/// - Reasoning: `thinking` (`enabled` with `budget_tokens`, or `disabled`) wins over
///   `reasoning_effort` (`minimal`/`low` 1024, `medium` 2048, `high` 4096, `none` off).
///
/// Dropped because Gemini has no counterpart and the answer is still what was asked
/// for: `stream_options`, `user`, `metadata`, `store`, `service_tier`,
/// `parallel_tool_calls`, `logit_bias`, message `name`s, `cache_control` marks
/// (Gemini caches prompts implicitly), image `detail`, function call ids (Gemini pairs
/// calls and responses by name and order). Refused (422): `logprobs`, `top_logprobs`,
/// audio output, non-function tools, `function` messages, OpenAI file ids.
///
/// [`chat_response`]: super::chat_response
pub fn chat_request(
    req: &ChatCompletionRequest,
    api: &Api,
    model: &str,
) -> Result<UpstreamRequest, TranslateError> {
    refuse_unsupported(req)?;

    let mut system = Vec::new();
    let mut contents: Vec<Content> = Vec::new();
    // (id, name) of every assistant tool call so far, for naming tool results.
    let mut calls: Vec<(String, String)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let (role, parts) = match m.role {
            Role::System | Role::Developer => {
                system.extend(system_parts(m, &field)?);
                continue;
            }
            Role::User => ("user", user_parts(m, &field)?),
            Role::Assistant => ("model", model_parts(m, &field, &mut calls)?),
            Role::Tool => ("user", vec![function_response(m, &field, &calls)?]),
            Role::Function => {
                return Err(TranslateError::unsupported(
                    format!("{field}.role"),
                    "'function' messages are deprecated; use 'tool' messages",
                ))
            }
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some(last) if last.role == Some(role) => last.parts.extend(parts),
            _ => contents.push(Content {
                role: Some(role),
                parts,
            }),
        }
    }

    let (tools, tool_config) = tools(req)?;
    let generation_config = generation_config(req)?;
    let body = GenerateContentRequest {
        contents,
        system_instruction: (!system.is_empty()).then_some(Content {
            role: None,
            parts: system,
        }),
        tools,
        tool_config,
        generation_config: (generation_config != GenerationConfig::default())
            .then_some(generation_config),
    };
    let body = serde_json::to_vec(&body)
        .map_err(|e| TranslateError::invalid("messages", e.to_string()))?;
    let path = if req.is_stream() {
        format!("{}:streamGenerateContent?alt=sse", api.model_path(model))
    } else {
        format!("{}:generateContent", api.model_path(model))
    };
    Ok(UpstreamRequest {
        path,
        body,
        headers: vec![("content-type", "application/json".to_string())],
    })
}

fn refuse_unsupported(req: &ChatCompletionRequest) -> Result<(), TranslateError> {
    if req.logprobs == Some(true) {
        return Err(TranslateError::unsupported(
            "logprobs",
            "the gateway does not translate Gemini log probabilities",
        ));
    }
    if req.rest.get("top_logprobs").is_some_and(|v| !v.is_null()) {
        return Err(TranslateError::unsupported(
            "top_logprobs",
            "the gateway does not translate Gemini log probabilities",
        ));
    }
    if req.rest.get("audio").is_some_and(|v| !v.is_null()) {
        return Err(TranslateError::unsupported(
            "audio",
            "Gemini text models do not produce audio",
        ));
    }
    if req
        .rest
        .get("modalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|x| x == "audio"))
    {
        return Err(TranslateError::unsupported(
            "modalities",
            "Gemini text models do not produce audio",
        ));
    }
    if req.n == Some(0) {
        return Err(TranslateError::invalid("n", "must be at least 1"));
    }
    Ok(())
}

/// Text of a system or developer message.
fn system_parts(m: &ChatMessage, field: &str) -> Result<Vec<Part>, TranslateError> {
    match &m.content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(t)) => Ok(nonempty_text(t)),
        Some(MessageContent::Parts(parts)) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => out.extend(nonempty_text(t)),
                    ("text", None) => {
                        return Err(TranslateError::invalid(
                            format!("{field}.content[{j}].text"),
                            "missing",
                        ))
                    }
                    (other, _) => {
                        return Err(TranslateError::unsupported(
                            format!("{field}.content[{j}]"),
                            format!("a '{other}' part is not allowed in this message"),
                        ))
                    }
                }
            }
            Ok(out)
        }
    }
}

fn nonempty_text(t: &str) -> Vec<Part> {
    if t.is_empty() {
        Vec::new()
    } else {
        vec![Part::text(t)]
    }
}

fn user_parts(m: &ChatMessage, field: &str) -> Result<Vec<Part>, TranslateError> {
    match &m.content {
        None => Err(TranslateError::invalid(
            format!("{field}.content"),
            "missing",
        )),
        Some(MessageContent::Text(t)) => Ok(nonempty_text(t)),
        Some(MessageContent::Parts(parts)) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                out.extend(content_part(p, &format!("{field}.content[{j}]"))?);
            }
            Ok(out)
        }
    }
}

fn content_part(p: &ContentPart, field: &str) -> Result<Option<Part>, TranslateError> {
    match p.kind.as_str() {
        "text" => match &p.text {
            Some(t) if t.is_empty() => Ok(None),
            Some(t) => Ok(Some(Part::text(t))),
            None => Err(TranslateError::invalid(format!("{field}.text"), "missing")),
        },
        "image_url" => match &p.image_url {
            Some(img) => media_part(&img.url, &format!("{field}.image_url.url")).map(Some),
            None => Err(TranslateError::invalid(
                format!("{field}.image_url"),
                "missing",
            )),
        },
        "input_audio" => audio_part(p, field).map(Some),
        "file" => file_part(p, field).map(Some),
        other => Err(TranslateError::unsupported(
            field,
            format!("content parts of type '{other}' have no Gemini counterpart"),
        )),
    }
}

/// An image (or other media) URL: data URLs inline, fetchable URLs by reference.
fn media_part(url: &str, field: &str) -> Result<Part, TranslateError> {
    if let Some(rest) = strip_prefix_ci(url, "data:") {
        return Ok(Part {
            inline_data: Some(data_url(rest, field)?),
            ..Default::default()
        });
    }
    let fetchable = ["https://", "http://", "gs://"]
        .iter()
        .any(|s| strip_prefix_ci(url, s).is_some());
    if !fetchable {
        return Err(TranslateError::unsupported(
            field,
            "Gemini takes data:, http(s):// and gs:// URLs only",
        ));
    }
    let Some(mime_type) = mime_from_extension(url) else {
        return Err(TranslateError::unsupported(
            field,
            "Gemini needs the media type of a URL, and this URL's file extension does not \
             name one (known: png, jpg, jpeg, webp, gif, heic, heif, pdf, wav, mp3, flac, aac, \
             ogg, mp4, mov, webm, txt); send a base64 data URL instead",
        ));
    };
    Ok(Part {
        file_data: Some(FileData {
            mime_type,
            file_uri: url.to_string(),
        }),
        ..Default::default()
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The part of a data URL after `data:`: `<mime>[;params];base64,<data>`.
fn data_url(rest: &str, field: &str) -> Result<Blob, TranslateError> {
    let Some((meta, data)) = rest.split_once(',') else {
        return Err(TranslateError::invalid(field, "malformed data URL"));
    };
    let mut params = meta.split(';');
    let mime = params
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !params.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err(TranslateError::unsupported(
            field,
            "only base64 data URLs are supported",
        ));
    }
    if mime.is_empty() {
        return Err(TranslateError::invalid(
            field,
            "the data URL names no media type",
        ));
    }
    if !is_base64(data) {
        return Err(TranslateError::invalid(
            field,
            "the data URL is not valid base64",
        ));
    }
    Ok(Blob {
        mime_type: mime,
        data: data.to_string(),
    })
}

/// Standard or URL-safe alphabet (Google's JSON parser takes both).
fn is_base64(data: &str) -> bool {
    !data.is_empty()
        && data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

/// Media type from the extension of a URL's (or file name's) last path segment.
fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_scheme = path.split_once("://").map_or(path, |(_, p)| p);
    let (_, name) = after_scheme.rsplit_once('/')?;
    let (_, ext) = name.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "wav" => "audio/wav",
        "mp3" => "audio/mp3",
        "flac" => "audio/flac",
        "aac" => "audio/aac",
        "ogg" => "audio/ogg",
        "mp4" => "video/mp4",
        "mov" => "video/mov",
        "webm" => "video/webm",
        "txt" => "text/plain",
        _ => return None,
    })
}

/// `{"type": "input_audio", "input_audio": {"data": "<base64>", "format": "wav"}}`.
fn audio_part(p: &ContentPart, field: &str) -> Result<Part, TranslateError> {
    let audio = p.rest.get("input_audio");
    let Some(data) = audio.and_then(|a| a.get("data")).and_then(Value::as_str) else {
        return Err(TranslateError::invalid(
            format!("{field}.input_audio.data"),
            "missing",
        ));
    };
    let mime = match audio.and_then(|a| a.get("format")).and_then(Value::as_str) {
        Some("wav") => "audio/wav",
        Some("mp3") => "audio/mp3",
        _ => {
            return Err(TranslateError::invalid(
                format!("{field}.input_audio.format"),
                "must be 'wav' or 'mp3'",
            ))
        }
    };
    if !is_base64(data) {
        return Err(TranslateError::invalid(
            format!("{field}.input_audio.data"),
            "not valid base64",
        ));
    }
    Ok(Part {
        inline_data: Some(Blob {
            mime_type: mime.into(),
            data: data.to_string(),
        }),
        ..Default::default()
    })
}

/// `{"type": "file", "file": {"file_data": "data:application/pdf;base64,...",
/// "filename": "a.pdf"}}`; bare base64 takes its type from `filename`.
fn file_part(p: &ContentPart, field: &str) -> Result<Part, TranslateError> {
    let file = p.rest.get("file");
    let Some(data) = file
        .and_then(|f| f.get("file_data"))
        .and_then(Value::as_str)
    else {
        if file.and_then(|f| f.get("file_id")).is_some() {
            return Err(TranslateError::unsupported(
                format!("{field}.file.file_id"),
                "OpenAI file ids mean nothing to Gemini; send the file inline as file_data",
            ));
        }
        return Err(TranslateError::invalid(
            format!("{field}.file.file_data"),
            "missing",
        ));
    };
    let data_field = format!("{field}.file.file_data");
    let blob = match strip_prefix_ci(data, "data:") {
        Some(rest) => data_url(rest, &data_field)?,
        None => {
            let name = file
                .and_then(|f| f.get("filename"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let Some(mime) = mime_from_extension(&format!("/{name}")) else {
                return Err(TranslateError::unsupported(
                    data_field,
                    "cannot tell the file's media type; send a data URL (data:<type>;base64,...)",
                ));
            };
            if !is_base64(data) {
                return Err(TranslateError::invalid(data_field, "not valid base64"));
            }
            Blob {
                mime_type: mime.into(),
                data: data.to_string(),
            }
        }
    };
    Ok(Part {
        inline_data: Some(blob),
        ..Default::default()
    })
}

fn model_parts(
    m: &ChatMessage,
    field: &str,
    calls: &mut Vec<(String, String)>,
) -> Result<Vec<Part>, TranslateError> {
    let mut parts = Vec::new();
    match &m.content {
        None => {}
        Some(MessageContent::Text(t)) => parts.extend(nonempty_text(t)),
        Some(MessageContent::Parts(ps)) => {
            for (j, p) in ps.iter().enumerate() {
                let text = match p.kind.as_str() {
                    "text" => p.text.as_deref().unwrap_or_default(),
                    "refusal" => p
                        .rest
                        .get("refusal")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    other => {
                        return Err(TranslateError::unsupported(
                            format!("{field}.content[{j}]"),
                            format!("a '{other}' part is not allowed in an assistant message"),
                        ))
                    }
                };
                parts.extend(nonempty_text(text));
            }
        }
    }
    for (k, call) in m.tool_calls.iter().flatten().enumerate() {
        let f = format!("{field}.tool_calls[{k}]");
        if call.kind != "function" {
            return Err(TranslateError::unsupported(
                format!("{f}.type"),
                format!("'{}' tool calls have no Gemini counterpart", call.kind),
            ));
        }
        let raw = call.function.arguments.trim();
        let args = if raw.is_empty() {
            json!({})
        } else {
            serde_json::from_str::<Value>(raw).map_err(|_| {
                TranslateError::invalid(format!("{f}.function.arguments"), "not valid JSON")
            })?
        };
        if !args.is_object() {
            return Err(TranslateError::unsupported(
                format!("{f}.function.arguments"),
                "Gemini function call arguments must be a JSON object",
            ));
        }
        let signature = call
            .rest
            .get("extra_content")
            .and_then(|e| e.get("google"))
            .and_then(|g| g.get("thought_signature"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| (k == 0).then(|| SKIP_SIGNATURE.to_string()));
        parts.push(Part {
            function_call: Some(FunctionCallOut {
                name: call.function.name.clone(),
                args,
            }),
            thought_signature: signature,
            ..Default::default()
        });
        calls.push((call.id.clone(), call.function.name.clone()));
    }
    Ok(parts)
}

fn function_response(
    m: &ChatMessage,
    field: &str,
    calls: &[(String, String)],
) -> Result<Part, TranslateError> {
    let Some(id) = m.tool_call_id.as_deref() else {
        return Err(TranslateError::invalid(
            format!("{field}.tool_call_id"),
            "missing",
        ));
    };
    // The latest call with this id: ids a provider numbers per answer may repeat.
    let Some((_, name)) = calls.iter().rev().find(|(i, _)| i == id) else {
        return Err(TranslateError::invalid(
            format!("{field}.tool_call_id"),
            format!("no earlier assistant tool call has id '{id}'"),
        ));
    };
    let text = match &m.content {
        None => String::new(),
        Some(MessageContent::Text(t)) => t.clone(),
        Some(MessageContent::Parts(parts)) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => text.push_str(t),
                    _ => {
                        return Err(TranslateError::unsupported(
                            format!("{field}.content[{j}]"),
                            "only text can be sent back as a Gemini function response",
                        ))
                    }
                }
            }
            text
        }
    };
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(o)) => Value::Object(o),
        Ok(other) => json!({ "content": other }),
        Err(_) => json!({ "content": text }),
    };
    Ok(Part {
        function_response: Some(FunctionResponseOut {
            name: name.clone(),
            response,
        }),
        ..Default::default()
    })
}

fn tools(
    req: &ChatCompletionRequest,
) -> Result<(Vec<ToolDecl>, Option<ToolConfig>), TranslateError> {
    let mut decls = Vec::new();
    for (field, _, f) in function_tools(req, "Gemini")? {
        let parameters = match &f.parameters {
            None => None,
            Some(p) => {
                let schema = clean_schema(p, &format!("{field}.function.parameters"))?;
                // No properties: declare no parameters (Gemini refuses an empty OBJECT).
                let empty_object = schema.get("properties").is_none()
                    && schema.get("anyOf").is_none()
                    && schema
                        .get("type")
                        .is_none_or(|t| t.as_str() == Some("OBJECT"));
                (!empty_object).then_some(schema)
            }
        };
        decls.push(FunctionDeclaration {
            name: f.name.clone(),
            description: f.description.clone(),
            parameters,
        });
    }
    let config = match &req.tool_choice {
        None => None,
        Some(OToolChoice::Mode(m)) => match m.as_str() {
            "auto" => Some(("AUTO", None)),
            "none" => Some(("NONE", None)),
            "required" => Some(("ANY", None)),
            other => {
                return Err(TranslateError::invalid(
                    "tool_choice",
                    format!("unknown mode '{other}'"),
                ))
            }
        },
        Some(OToolChoice::Named(n)) => {
            if !decls.iter().any(|d| d.name == n.function.name) {
                return Err(TranslateError::invalid(
                    "tool_choice.function.name",
                    format!("'{}' is not one of 'tools'", n.function.name),
                ));
            }
            Some(("ANY", Some(vec![n.function.name.clone()])))
        }
    };
    if decls.is_empty() {
        return match config {
            Some(("ANY", _)) => Err(TranslateError::invalid(
                "tool_choice",
                "requires at least one tool in 'tools'",
            )),
            _ => Ok((Vec::new(), None)),
        };
    }
    let tool_config = config.map(|(mode, names)| ToolConfig {
        function_calling_config: FunctionCallingConfig {
            mode,
            allowed_function_names: names,
        },
    });
    Ok((
        vec![ToolDecl {
            function_declarations: decls,
        }],
        tool_config,
    ))
}

fn generation_config(req: &ChatCompletionRequest) -> Result<GenerationConfig, TranslateError> {
    let number = |name: &str| -> Result<Option<f64>, TranslateError> {
        match req.rest.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| TranslateError::invalid(name, "must be a number")),
        }
    };
    let seed = match req.rest.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| TranslateError::invalid("seed", "must be an integer"))?,
        ),
    };
    let (response_mime_type, response_schema) = response_format(req)?;
    Ok(GenerationConfig {
        stop_sequences: req
            .stop
            .clone()
            .map(|s| s.into_vec())
            .filter(|v| !v.is_empty()),
        max_output_tokens: req.max_completion_tokens.or(req.max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        candidate_count: req.n.filter(|n| *n > 1),
        seed,
        presence_penalty: number("presence_penalty")?,
        frequency_penalty: number("frequency_penalty")?,
        response_mime_type,
        response_schema,
        thinking_config: thinking_config(req)?,
    })
}

fn response_format(
    req: &ChatCompletionRequest,
) -> Result<(Option<&'static str>, Option<Value>), TranslateError> {
    let Some(rf) = &req.response_format else {
        return Ok((None, None));
    };
    match rf.kind.as_str() {
        "text" => Ok((None, None)),
        "json_object" => Ok((Some("application/json"), None)),
        "json_schema" => {
            let Some(schema) = rf.rest.get("json_schema").and_then(|j| j.get("schema")) else {
                return Err(TranslateError::invalid(
                    "response_format.json_schema.schema",
                    "missing",
                ));
            };
            let schema = clean_schema(schema, "response_format.json_schema.schema")?;
            Ok((Some("application/json"), Some(schema)))
        }
        other => Err(TranslateError::invalid(
            "response_format.type",
            format!("unknown type '{other}'"),
        )),
    }
}

fn thinking_config(req: &ChatCompletionRequest) -> Result<Option<ThinkingConfig>, TranslateError> {
    let on = |budget| {
        Ok(Some(ThinkingConfig {
            thinking_budget: budget,
            include_thoughts: true,
        }))
    };
    let off = Ok(Some(ThinkingConfig {
        thinking_budget: 0,
        include_thoughts: false,
    }));
    if let Some(t) = req.rest.get("thinking").filter(|v| !v.is_null()) {
        return match t.get("type").and_then(Value::as_str) {
            Some("enabled") => match t.get("budget_tokens").and_then(Value::as_u64) {
                Some(budget) => on(budget),
                None => Err(TranslateError::invalid(
                    "thinking.budget_tokens",
                    "must be a non-negative integer",
                )),
            },
            Some("disabled") => off,
            _ => Err(TranslateError::invalid(
                "thinking.type",
                "must be 'enabled' or 'disabled'",
            )),
        };
    }
    match req.rest.get("reasoning_effort") {
        None | Some(Value::Null) => Ok(None),
        Some(e) => match e.as_str() {
            Some("minimal" | "low") => on(1024),
            Some("medium") => on(2048),
            Some("high") => on(4096),
            Some("none") => off,
            _ => Err(TranslateError::invalid(
                "reasoning_effort",
                "must be one of none, minimal, low, medium, high",
            )),
        },
    }
}

// ---------------------------------------------------------------------------------
// JSON Schema → Gemini `Schema`.

/// Keywords of Gemini's `Schema` copied as they are, besides `title` and `description`
/// (the subset AI Studio's `v1beta` and Vertex's `v1` both accept). `type`, `format`,
/// `nullable`, `enum`, `properties`, `required`, `items` and `anyOf` are rewritten by
/// [`clean_schema`].
const SCHEMA_KEEP: &[&str] = &[
    "default",
    "example",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "propertyOrdering",
];

/// Bounds on the cleaned schema, so `$ref` inlining cannot blow up.
const MAX_SCHEMA_DEPTH: usize = 64;
const MAX_SCHEMA_NODES: usize = 10_000;

/// Rewrites a JSON Schema into the OpenAPI 3.0 subset Gemini accepts; Gemini answers
/// 400 to any keyword it does not know.
///
/// - Kept: the keywords in [`SCHEMA_KEEP`]; `type` (upper-cased); `format` only where
///   Gemini knows it (`enum`/`date-time` on strings, `float`/`double`, `int32`/`int64`).
/// - Rewritten: `type: [T, "null"]` and `anyOf`/`oneOf` members `{"type": "null"}` become
///   `nullable: true`; several types become `anyOf`; `oneOf` becomes `anyOf` (one
///   member: merged); `allOf` of one member is merged; `const` becomes a one-value
///   `enum`; local `$ref`s (`#/$defs/...`, `#/definitions/...`) are inlined;
///   `required` keeps only declared properties; empty `properties` are dropped.
/// - Dropped (they only narrow what is valid; the caller should still validate):
///   `additionalProperties`, `$schema`, `$id`, `$defs`, `definitions`, `strict`,
///   `examples`, `exclusiveMinimum`/`Maximum`, `multipleOf`, `uniqueItems`,
///   `patternProperties`, `not`, `if`/`then`/`else`, `dependentRequired`, and every
///   other keyword; enums with non-string values.
/// - Refused (422): recursive `$ref`s, remote `$ref`s, `allOf` of several members,
///   tuple `items`/`prefixItems`, schemas too large once inlined.
fn clean_schema(schema: &Value, field: &str) -> Result<Value, TranslateError> {
    let mut cx = SchemaCx {
        root: schema,
        field,
        stack: Vec::new(),
        nodes: 0,
    };
    cx.clean(schema, 0)
}

struct SchemaCx<'a> {
    root: &'a Value,
    field: &'a str,
    /// `$ref`s being inlined (a repeat means recursion).
    stack: Vec<String>,
    nodes: usize,
}

impl SchemaCx<'_> {
    fn unsupported(&self, why: impl Into<String>) -> TranslateError {
        TranslateError::unsupported(self.field, why)
    }

    fn invalid(&self, why: impl Into<String>) -> TranslateError {
        TranslateError::invalid(self.field, why)
    }

    fn clean(&mut self, v: &Value, depth: usize) -> Result<Value, TranslateError> {
        self.nodes += 1;
        if depth > MAX_SCHEMA_DEPTH || self.nodes > MAX_SCHEMA_NODES {
            return Err(self.unsupported(
                "the schema is too large or too deeply nested for Gemini once $refs are inlined",
            ));
        }
        let obj = match v {
            Value::Object(o) => o,
            Value::Bool(true) => return Ok(json!({})),
            _ => return Err(self.invalid("a schema must be a JSON object")),
        };
        if let Some(r) = obj.get("$ref") {
            return self.inline_ref(obj, r, depth);
        }

        let mut nullable = obj.get("nullable") == Some(&Value::Bool(true));
        let mut ty: Option<String> = None;
        let mut variants: Vec<Value> = Vec::new();
        match obj.get("type") {
            None => {}
            Some(Value::String(t)) if t == "null" => nullable = true,
            Some(Value::String(t)) => ty = Some(t.to_ascii_uppercase()),
            Some(Value::Array(ts)) => {
                let mut names = Vec::new();
                for t in ts {
                    match t.as_str() {
                        Some("null") => nullable = true,
                        Some(t) => names.push(t.to_ascii_uppercase()),
                        None => return Err(self.invalid("'type' entries must be strings")),
                    }
                }
                if names.len() == 1 {
                    ty = names.pop();
                } else {
                    variants.extend(names.into_iter().map(|t| json!({ "type": t })));
                }
            }
            Some(_) => return Err(self.invalid("'type' must be a string or an array")),
        }

        let mut properties = Map::new();
        if let Some(props) = obj.get("properties") {
            let Some(props) = props.as_object() else {
                return Err(self.invalid("'properties' must be an object"));
            };
            for (name, s) in props {
                properties.insert(name.clone(), self.clean(s, depth + 1)?);
            }
            if ty.is_none() && variants.is_empty() {
                ty = Some("OBJECT".into());
            }
        }
        let required: Vec<Value> = obj
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|r| r.as_str().is_some_and(|r| properties.contains_key(r)))
            .cloned()
            .collect();

        let items = match obj.get("items") {
            None => None,
            Some(Value::Array(_)) => {
                return Err(self.unsupported("tuple 'items' have no Gemini counterpart"))
            }
            Some(s) => Some(self.clean(s, depth + 1)?),
        };
        if obj.contains_key("prefixItems") {
            return Err(self.unsupported("'prefixItems' (tuples) have no Gemini counterpart"));
        }

        // Gemini enums are strings; `null` among them means nullable.
        let mut enum_values: Option<Vec<Value>> = None;
        let listed = match (obj.get("enum"), obj.get("const")) {
            (Some(Value::Array(e)), _) => Some(e.clone()),
            (_, Some(c)) => Some(vec![c.clone()]),
            _ => None,
        };
        if let Some(values) = listed {
            nullable |= values.iter().any(Value::is_null);
            let strings: Vec<Value> = values.into_iter().filter(|v| !v.is_null()).collect();
            if !strings.is_empty() && strings.iter().all(Value::is_string) {
                ty.get_or_insert_with(|| "STRING".into());
                enum_values = Some(strings);
            }
        }

        for key in ["anyOf", "oneOf"] {
            let Some(list) = obj.get(key) else { continue };
            let Some(list) = list.as_array() else {
                return Err(self.invalid(format!("'{key}' must be an array")));
            };
            for s in list {
                let c = self.clean(s, depth + 1)?;
                if c == json!({ "nullable": true }) {
                    nullable = true;
                } else {
                    variants.push(c);
                }
            }
        }
        let mut merged: Option<Value> = None;
        if let Some(all) = obj.get("allOf") {
            match all.as_array().map(Vec::as_slice) {
                Some([]) => {}
                Some([one]) => merged = Some(self.clean(one, depth + 1)?),
                Some(_) => {
                    return Err(
                        self.unsupported("'allOf' with several schemas has no Gemini counterpart")
                    )
                }
                None => return Err(self.invalid("'allOf' must be an array")),
            }
        }
        if variants.len() == 1 {
            merged = match (merged, variants.pop()) {
                (Some(Value::Object(mut a)), Some(Value::Object(b))) => {
                    for (k, v) in b {
                        a.entry(k).or_insert(v);
                    }
                    Some(Value::Object(a))
                }
                (a, b) => a.or(b),
            };
        }

        let format = obj.get("format").and_then(Value::as_str).filter(|f| {
            matches!(
                (ty.as_deref(), *f),
                (Some("STRING"), "enum" | "date-time")
                    | (Some("NUMBER"), "float" | "double")
                    | (Some("INTEGER"), "int32" | "int64")
            )
        });

        // Written in a fixed order, so golden files read naturally.
        let mut out = Map::new();
        if let Some(t) = ty {
            out.insert("type".into(), Value::String(t));
        }
        if let Some(f) = format {
            out.insert("format".into(), Value::String(f.into()));
        }
        for key in ["title", "description"] {
            if let Some(v) = obj.get(key) {
                out.insert(key.into(), v.clone());
            }
        }
        if nullable {
            out.insert("nullable".into(), Value::Bool(true));
        }
        if let Some(e) = enum_values {
            out.insert("enum".into(), Value::Array(e));
        }
        if !properties.is_empty() {
            out.insert("properties".into(), Value::Object(properties));
        }
        if !required.is_empty() {
            out.insert("required".into(), Value::Array(required));
        }
        if let Some(items) = items {
            out.insert("items".into(), items);
        }
        if !variants.is_empty() {
            out.insert("anyOf".into(), Value::Array(variants));
        }
        for key in SCHEMA_KEEP {
            if let Some(v) = obj.get(*key) {
                out.insert((*key).into(), v.clone());
            }
        }
        // A lone anyOf/oneOf/allOf member fills in what this level does not say.
        if let Some(Value::Object(m)) = merged {
            for (k, v) in m {
                out.entry(k).or_insert(v);
            }
        }
        Ok(Value::Object(out))
    }

    /// Inlines a local `$ref`; keywords beside it override the target's.
    fn inline_ref(
        &mut self,
        obj: &Map<String, Value>,
        r: &Value,
        depth: usize,
    ) -> Result<Value, TranslateError> {
        let Some(r) = r.as_str() else {
            return Err(self.invalid("'$ref' must be a string"));
        };
        let Some(pointer) = r.strip_prefix('#') else {
            return Err(self.unsupported(format!(
                "only local $refs can be inlined for Gemini, not '{r}'"
            )));
        };
        let Some(target) = self.root.pointer(pointer) else {
            return Err(self.invalid(format!("'$ref' '{r}' points nowhere")));
        };
        if self.stack.iter().any(|s| s == r) {
            return Err(self.unsupported(format!(
                "recursive schemas ('{r}') have no Gemini counterpart"
            )));
        }
        self.stack.push(r.to_string());
        let base = self.clean(target, depth + 1);
        self.stack.pop();
        let mut base = match base? {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        if obj.len() > 1 {
            let siblings: Map<String, Value> = obj
                .iter()
                .filter(|(k, _)| k.as_str() != "$ref")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let Value::Object(m) = self.clean(&Value::Object(siblings), depth + 1)? {
                for (k, v) in m {
                    base.insert(k, v);
                }
            }
        }
        Ok(Value::Object(base))
    }
}

// ---------------------------------------------------------------------------------
// Embeddings.

#[derive(Debug, Serialize)]
struct BatchEmbedRequest<'a> {
    requests: Vec<EmbedContentRequest<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EmbedContentRequest<'a> {
    model: &'a str,
    content: EmbedContent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimensionality: Option<u32>,
}

#[derive(Debug, Serialize)]
struct EmbedContent<'a> {
    parts: [TextPart<'a>; 1],
}

#[derive(Debug, Serialize)]
struct TextPart<'a> {
    text: &'a str,
}

#[derive(Debug, Serialize)]
struct PredictRequest<'a> {
    instances: Vec<PredictInstance<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<PredictParameters>,
}

#[derive(Debug, Serialize)]
struct PredictInstance<'a> {
    content: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PredictParameters {
    output_dimensionality: u32,
}

/// Translates an embeddings request: AI Studio `batchEmbedContents` (one request per
/// input) or Vertex `predict` (one instance per input). `dimensions` becomes
/// `outputDimensionality`; `user` is dropped; inputs are not truncated by the
/// gateway (Vertex truncates over-long ones unless told otherwise). Token-id inputs
/// are refused (422): Gemini embeds text only.
pub fn embeddings_request(
    req: &EmbeddingsRequest,
    api: &Api,
    model: &str,
) -> Result<UpstreamRequest, TranslateError> {
    let texts: Vec<&str> = match &req.input {
        EmbeddingInput::Text(t) => vec![t.as_str()],
        EmbeddingInput::Texts(v) if v.is_empty() => {
            return Err(TranslateError::invalid("input", "must not be empty"))
        }
        EmbeddingInput::Texts(v) => v.iter().map(String::as_str).collect(),
        EmbeddingInput::Tokens(_) | EmbeddingInput::TokenLists(_) => {
            return Err(TranslateError::unsupported(
                "input",
                "Gemini embeds text, not token ids",
            ))
        }
    };
    let base = api.model_path(model);
    let (path, body) = match api {
        Api::AiStudio { .. } => {
            // The resource name without the version: `models/<id>`.
            let name = base.splitn(3, '/').nth(2).unwrap_or_default();
            let body = BatchEmbedRequest {
                requests: texts
                    .iter()
                    .map(|t| EmbedContentRequest {
                        model: name,
                        content: EmbedContent {
                            parts: [TextPart { text: t }],
                        },
                        output_dimensionality: req.dimensions,
                    })
                    .collect(),
            };
            (
                format!("{base}:batchEmbedContents"),
                serde_json::to_vec(&body),
            )
        }
        Api::Vertex { .. } => {
            let body = PredictRequest {
                instances: texts
                    .iter()
                    .map(|t| PredictInstance { content: t })
                    .collect(),
                parameters: req.dimensions.map(|d| PredictParameters {
                    output_dimensionality: d,
                }),
            };
            (format!("{base}:predict"), serde_json::to_vec(&body))
        }
    };
    let body = body.map_err(|e| TranslateError::invalid("input", e.to_string()))?;
    Ok(UpstreamRequest {
        path,
        body,
        headers: vec![("content-type", "application/json".to_string())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::gemini::tests::{body, fixture, golden, parse, req, STUDIO, VERTEX};
    use crate::translate::testing::pretty;

    fn user(content: Value) -> Value {
        json!({"model": "x", "messages": [{"role": "user", "content": content}]})
    }

    fn field_of(err: TranslateError) -> String {
        match err {
            TranslateError::Unsupported { field, .. }
            | TranslateError::InvalidRequest { field, .. } => field,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Parameters of the first tool after cleaning.
    fn cleaned(schema: Value) -> Result<Value, TranslateError> {
        let b = req(
            json!({"model": "x", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]}),
        )?
        .1;
        Ok(b["tools"][0]["functionDeclarations"][0]["parameters"].clone())
    }

    // ----- request -----

    #[test]
    fn golden_request() {
        let r: ChatCompletionRequest =
            serde_json::from_slice(&fixture("request_chat.openai.json")).unwrap();
        let up = chat_request(&r, &STUDIO, "gemini-2.5-flash").unwrap();
        assert_eq!(
            up.path,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let v: Value = serde_json::from_slice(&up.body).unwrap();
        golden("request_chat.gemini.json", &pretty(&v));
        // Vertex takes the very same body.
        let vx = chat_request(&r, &VERTEX, "gemini-2.5-flash").unwrap();
        assert_eq!(vx.body, up.body);
        assert_eq!(
            vx.path,
            "/v1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn paths_and_hosts() {
        let r = parse(json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]}));
        let path = |api: &Api, model: &str| chat_request(&r, api, model).unwrap().path;
        assert_eq!(
            path(&STUDIO, "gemini-2.0-flash"),
            "/v1beta/models/gemini-2.0-flash:generateContent"
        );
        assert_eq!(
            path(&STUDIO, "models/gemini-2.0-flash"),
            "/v1beta/models/gemini-2.0-flash:generateContent"
        );
        assert_eq!(
            path(
                &Api::AiStudio {
                    version: Some("v1")
                },
                "tunedModels/my-tune"
            ),
            "/v1/tunedModels/my-tune:generateContent"
        );
        // Anything odd in a name stays inside its segment.
        assert_eq!(
            path(&STUDIO, "a/b?c"),
            "/v1beta/models/a%2Fb%3Fc:generateContent"
        );
        let global = Api::Vertex {
            project: "p",
            region: "global",
            version: Some("v1beta1"),
        };
        assert_eq!(
            path(&global, "gemini-2.5-pro"),
            "/v1beta1/projects/p/locations/global/publishers/google/models/gemini-2.5-pro:generateContent"
        );
        assert_eq!(STUDIO.host(), "generativelanguage.googleapis.com");
        assert_eq!(VERTEX.host(), "us-central1-aiplatform.googleapis.com");
        assert_eq!(global.host(), "aiplatform.googleapis.com");
    }

    #[test]
    fn request_minimal_body() {
        let (path, b) =
            req(json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
        assert_eq!(path, "/v1beta/models/gemini-2.5-flash:generateContent");
        assert_eq!(
            b,
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
        );
    }

    #[test]
    fn request_roles_merge_and_tool_results() {
        let b = body(json!({"model": "x", "messages": [
            {"role": "user", "content": "a"},
            {"role": "user", "content": ""},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{\"x\":1}"}}]},
            {"role": "tool", "tool_call_id": "c2", "content": "[1, 2]"},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "plain "}, {"type": "text", "text": "text"}]},
            {"role": "user", "content": "thanks"},
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}, {"type": "refusal", "refusal": " no"}]},
            {"role": "assistant", "content": "more"},
            {"role": "system", "content": "late system"}
        ]}));
        assert_eq!(
            b,
            json!({
                "contents": [
                    {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
                    {"role": "model", "parts": [
                        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": SKIP_SIGNATURE},
                        {"functionCall": {"name": "g", "args": {"x": 1}}}]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "g", "response": {"content": [1, 2]}}},
                        {"functionResponse": {"name": "f", "response": {"content": "plain text"}}},
                        {"text": "thanks"}]},
                    {"role": "model", "parts": [{"text": "ok"}, {"text": " no"}, {"text": "more"}]}
                ],
                "systemInstruction": {"parts": [{"text": "late system"}]}
            })
        );
    }

    #[test]
    fn request_tool_result_names_come_from_the_latest_call_with_that_id() {
        // Providers that number calls per answer repeat ids across turns.
        let b = body(json!({"model": "x", "messages": [
            {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "first", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "{\"ok\": true}"},
            {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "second", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "{\"ok\": false}"}
        ]}));
        assert_eq!(
            b["contents"][1]["parts"][0]["functionResponse"],
            json!({"name": "first", "response": {"ok": true}})
        );
        assert_eq!(
            b["contents"][3]["parts"][0]["functionResponse"],
            json!({"name": "second", "response": {"ok": false}})
        );
    }

    #[test]
    fn request_tool_message_errors() {
        let e =
            req(json!({"model": "x", "messages": [{"role": "tool", "content": "x"}]})).unwrap_err();
        assert_eq!(
            (e.status(), field_of(e)),
            (400, "messages[0].tool_call_id".into())
        );
        let e = req(json!({"model": "x", "messages": [
            {"role": "tool", "tool_call_id": "nope", "content": "x"}]}))
        .unwrap_err();
        assert!(
            e.message().contains("no earlier assistant tool call"),
            "{e}"
        );
        assert_eq!(e.status(), 400);
        let e = req(json!({"model": "x", "messages": [
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]}))
        .unwrap_err();
        assert_eq!(
            (e.status(), field_of(e)),
            (422, "messages[1].content[0]".into())
        );
    }

    #[test]
    fn request_tool_call_arguments() {
        let call = |args: &str| {
            json!({"model": "x", "messages": [{"role": "assistant", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": args}}]}]})
        };
        let e = req(call("[1]")).unwrap_err();
        assert_eq!(
            (e.status(), field_of(e)),
            (422, "messages[0].tool_calls[0].function.arguments".into())
        );
        let e = req(call("{nope")).unwrap_err();
        assert_eq!(e.status(), 400);
        let b = body(call(" {\"a\": [true]} "));
        assert_eq!(
            b["contents"][0]["parts"][0]["functionCall"]["args"],
            json!({"a": [true]})
        );
    }

    #[test]
    fn request_media_parts() {
        let img = |url: &str| user(json!([{"type": "image_url", "image_url": {"url": url}}]));
        let part = |url: &str| body(img(url))["contents"][0]["parts"][0].clone();
        assert_eq!(
            part("data:image/webp;base64,UklGRg=="),
            json!({"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}})
        );
        assert_eq!(
            part("DATA:Image/JPEG;charset=x;BASE64,_-09"),
            json!({"inlineData": {"mimeType": "image/jpeg", "data": "_-09"}})
        );
        assert_eq!(
            part("https://cdn.example.com/a/b/photo.webp#frag"),
            json!({"fileData": {"mimeType": "image/webp", "fileUri": "https://cdn.example.com/a/b/photo.webp#frag"}})
        );
        assert_eq!(
            part("gs://bucket/clip.mp4"),
            json!({"fileData": {"mimeType": "video/mp4", "fileUri": "gs://bucket/clip.mp4"}})
        );
        for (url, status) in [
            ("https://example.com/image", 422),
            ("https://example.com/", 422),
            ("https://example.com", 422),
            ("https://example.com/x.bmp", 422),
            ("ftp://example.com/x.png", 422),
            ("file:///etc/x.png", 422),
            ("data:image/png,rawbytes", 422),
            ("data:image/png;base64", 400),
            ("data:;base64,AAAA", 400),
            ("data:image/png;base64,not base64!", 400),
            ("data:image/png;base64,", 400),
        ] {
            let e = req(img(url)).unwrap_err();
            assert_eq!(e.status(), status, "{url}: {e}");
            assert_eq!(field_of(e), "messages[0].content[0].image_url.url", "{url}");
        }
    }

    #[test]
    fn request_audio_and_file_parts() {
        let b = body(user(json!([
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
            {"type": "file", "file": {"file_data": "JVBERi0=", "filename": "report.PDF"}}
        ])));
        assert_eq!(
            b["contents"][0]["parts"],
            json!([
                {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}
            ])
        );
        for (part, status, field) in [
            (
                json!({"type": "input_audio", "input_audio": {"data": "AA==", "format": "flac"}}),
                400,
                "messages[0].content[0].input_audio.format",
            ),
            (
                json!({"type": "input_audio", "input_audio": {"format": "wav"}}),
                400,
                "messages[0].content[0].input_audio.data",
            ),
            (
                json!({"type": "file", "file": {"file_id": "file-abc"}}),
                422,
                "messages[0].content[0].file.file_id",
            ),
            (
                json!({"type": "file", "file": {"file_data": "AAAA"}}),
                422,
                "messages[0].content[0].file.file_data",
            ),
            (
                json!({"type": "file", "file": {}}),
                400,
                "messages[0].content[0].file.file_data",
            ),
            (
                json!({"type": "video_url", "video_url": {}}),
                422,
                "messages[0].content[0]",
            ),
            (json!({"type": "text"}), 400, "messages[0].content[0].text"),
        ] {
            let e = req(user(json!([part]))).unwrap_err();
            assert_eq!(
                (e.status(), field_of(e)),
                (status, field.to_string()),
                "{part}"
            );
        }
    }

    #[test]
    fn request_thought_signatures() {
        let b = body(json!({"model": "x", "messages": [
            {"role": "assistant", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"},
                 "extra_content": {"google": {"thought_signature": "c2ln"}}}]},
            {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "tool", "tool_call_id": "b", "content": "2"},
            {"role": "assistant", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"},
                 "extra_content": {"google": {"thought_signature": "Zmlyc3Q="}}},
                {"id": "d", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
        ]}));
        let sigs: Vec<Value> = [0, 2]
            .iter()
            .flat_map(|&t| {
                b["contents"][t]["parts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.get("thoughtSignature").cloned().unwrap_or(Value::Null))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            sigs,
            [
                json!(SKIP_SIGNATURE),
                json!("c2ln"),
                json!("Zmlyc3Q="),
                Value::Null
            ]
        );
    }

    #[test]
    fn request_unsupported_and_invalid() {
        let base = || json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]});
        let with = |k: &str, v: Value| {
            let mut b = base();
            b[k] = v;
            b
        };
        for (body, status, field) in [
            (with("logprobs", json!(true)), 422, "logprobs"),
            (with("top_logprobs", json!(3)), 422, "top_logprobs"),
            (
                with("audio", json!({"voice": "alloy", "format": "wav"})),
                422,
                "audio",
            ),
            (
                with("modalities", json!(["text", "audio"])),
                422,
                "modalities",
            ),
            (with("n", json!(0)), 400, "n"),
            (with("seed", json!("7")), 400, "seed"),
            (
                with("presence_penalty", json!("high")),
                400,
                "presence_penalty",
            ),
            (
                with("response_format", json!({"type": "xml"})),
                400,
                "response_format.type",
            ),
            (
                with(
                    "response_format",
                    json!({"type": "json_schema", "json_schema": {"name": "x"}}),
                ),
                400,
                "response_format.json_schema.schema",
            ),
            (
                with("reasoning_effort", json!("extreme")),
                400,
                "reasoning_effort",
            ),
            (
                with("thinking", json!({"type": "enabled"})),
                400,
                "thinking.budget_tokens",
            ),
            (
                with("thinking", json!({"type": "adaptive"})),
                400,
                "thinking.type",
            ),
            (
                with("tools", json!([{"type": "web_search"}])),
                422,
                "tools[0].type",
            ),
            (
                with("tools", json!([{"type": "function"}])),
                400,
                "tools[0].function",
            ),
            (with("tool_choice", json!("required")), 400, "tool_choice"),
            (with("tool_choice", json!("sometimes")), 400, "tool_choice"),
            (
                json!({"model": "x", "messages": [{"role": "function", "name": "f", "content": "x"}]}),
                422,
                "messages[0].role",
            ),
            (
                json!({"model": "x", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]}),
                422,
                "messages[0].content[0]",
            ),
            (
                json!({"model": "x", "messages": [{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
                422,
                "messages[0].content[0]",
            ),
            (
                json!({"model": "x", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "function": {"name": "f"}}]}]}),
                422,
                "messages[0].tool_calls[0].type",
            ),
            (
                json!({"model": "x", "messages": [{"role": "user"}]}),
                400,
                "messages[0].content",
            ),
        ] {
            let e = req(body.clone()).unwrap_err();
            assert_eq!(
                (e.status(), field_of(e)),
                (status, field.to_string()),
                "{body}"
            );
        }
    }

    #[test]
    fn request_generation_config() {
        let b = body(
            json!({"model": "x", "messages": [{"role": "user", "content": "hi"}],
            "stop": "END", "max_tokens": 50, "n": 3, "temperature": 0, "top_p": 1,
            "presence_penalty": 0.5, "frequency_penalty": -0.5, "seed": -3,
            "response_format": {"type": "json_object"}}),
        );
        assert_eq!(
            b["generationConfig"],
            json!({"stopSequences": ["END"], "maxOutputTokens": 50, "temperature": 0.0,
                   "topP": 1.0, "candidateCount": 3, "seed": -3, "presencePenalty": 0.5,
                   "frequencyPenalty": -0.5, "responseMimeType": "application/json"})
        );
        // n = 1, empty stop lists and text format say nothing.
        let b = body(
            json!({"model": "x", "messages": [{"role": "user", "content": "hi"}],
            "n": 1, "stop": [], "response_format": {"type": "text"}, "seed": null}),
        );
        assert!(b.get("generationConfig").is_none(), "{b}");
    }

    #[test]
    fn request_reasoning() {
        let cfg = |extra: Value| {
            let mut b = json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            body(b)["generationConfig"]["thinkingConfig"].clone()
        };
        for (effort, budget) in [
            ("minimal", 1024),
            ("low", 1024),
            ("medium", 2048),
            ("high", 4096),
        ] {
            assert_eq!(
                cfg(json!({"reasoning_effort": effort})),
                json!({"thinkingBudget": budget, "includeThoughts": true})
            );
        }
        assert_eq!(
            cfg(json!({"reasoning_effort": "none"})),
            json!({"thinkingBudget": 0, "includeThoughts": false})
        );
        assert_eq!(
            cfg(
                json!({"thinking": {"type": "enabled", "budget_tokens": 10000}, "reasoning_effort": "low"})
            ),
            json!({"thinkingBudget": 10000, "includeThoughts": true})
        );
        assert_eq!(
            cfg(json!({"thinking": {"type": "disabled"}})),
            json!({"thinkingBudget": 0, "includeThoughts": false})
        );
        assert_eq!(cfg(json!({"thinking": null})), Value::Null);
    }

    #[test]
    fn request_tool_choice_forms() {
        let base = |choice: Value| {
            json!({"model": "x", "messages": [{"role": "user", "content": "hi"}],
                   "tools": [{"type": "function", "function": {"name": "f", "description": "d"}},
                             {"type": "function", "function": {"name": "g"}}],
                   "tool_choice": choice})
        };
        let b = body(base(json!("required")));
        assert_eq!(
            b["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY"}})
        );
        assert_eq!(
            b["tools"],
            json!([{"functionDeclarations": [{"name": "f", "description": "d"}, {"name": "g"}]}])
        );
        let b = body(base(json!({"type": "function", "function": {"name": "g"}})));
        assert_eq!(
            b["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["g"]}})
        );
        let b = body(base(json!("none")));
        assert_eq!(
            b["toolConfig"],
            json!({"functionCallingConfig": {"mode": "NONE"}})
        );
        let b = body(base(json!("auto")));
        assert_eq!(
            b["toolConfig"],
            json!({"functionCallingConfig": {"mode": "AUTO"}})
        );
        let e = req(base(json!({"type": "function", "function": {"name": "h"}}))).unwrap_err();
        assert_eq!(
            (e.status(), field_of(e)),
            (400, "tool_choice.function.name".into())
        );
        // Without tools, "none" and "auto" need no config.
        let b = body(
            json!({"model": "x", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "none"}),
        );
        assert!(b.get("toolConfig").is_none() && b.get("tools").is_none());
    }

    #[test]
    fn schema_types_nullability_and_enums() {
        let p = cleaned(json!({"type": "object", "properties": {
            "a": {"type": ["integer", "null"], "format": "int64"},
            "b": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "maybe"},
            "c": {"oneOf": [{"type": "string"}, {"type": "number", "format": "float"}]},
            "d": {"type": ["string", "integer"]},
            "e": {"const": "fixed"},
            "f": {"enum": [1, 2, 3], "type": "integer"},
            "g": {"enum": ["x", null]},
            "h": {"type": "null"},
            "i": {"type": "string", "format": "email"},
            "j": {"type": "number", "format": "double", "nullable": true},
            "k": true,
            "l": {"allOf": [{"type": "string", "description": "inner"}], "description": "outer"}
        }}))
        .unwrap();
        assert_eq!(
            p,
            json!({"type": "OBJECT", "properties": {
                "a": {"type": "INTEGER", "format": "int64", "nullable": true},
                "b": {"description": "maybe", "nullable": true, "type": "STRING"},
                "c": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER", "format": "float"}]},
                "d": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
                "e": {"type": "STRING", "enum": ["fixed"]},
                "f": {"type": "INTEGER"},
                "g": {"type": "STRING", "nullable": true, "enum": ["x"]},
                "h": {"nullable": true},
                "i": {"type": "STRING"},
                "j": {"type": "NUMBER", "format": "double", "nullable": true},
                "k": {},
                "l": {"description": "outer", "type": "STRING"}
            }})
        );
    }

    #[test]
    fn schema_refs_are_inlined() {
        let p = cleaned(json!({
            "type": "object",
            "properties": {
                "home": {"$ref": "#/definitions/Addr"},
                "work": {"$ref": "#/$defs/Addr2", "description": "office"},
                "list": {"type": "array", "items": {"$ref": "#/$defs/Addr2"}, "minItems": 1}
            },
            "definitions": {"Addr": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}},
            "$defs": {"Addr2": {"$ref": "#/definitions/Addr", "title": "Addr2"}}
        }))
        .unwrap();
        let addr = json!({"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]});
        let mut addr2 = addr.clone();
        addr2["title"] = json!("Addr2");
        let mut work = addr2.clone();
        work["description"] = json!("office");
        assert_eq!(
            p,
            json!({"type": "OBJECT", "properties": {
                "home": addr,
                "work": work,
                "list": {"type": "ARRAY", "items": addr2, "minItems": 1}
            }})
        );
    }

    #[test]
    fn schema_refusals() {
        for (schema, status) in [
            // Recursion.
            (
                json!({"type": "object", "properties": {"node": {"$ref": "#/$defs/N"}},
                    "$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}}}),
                422,
            ),
            (json!({"$ref": "#"}), 422),
            (
                json!({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}),
                422,
            ),
            (
                json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}),
                400,
            ),
            (
                json!({"type": "object", "properties": {"a": {"$ref": 5}}}),
                400,
            ),
            (
                json!({"type": "object", "properties": {"a": {"allOf": [{"type": "string"}, {"minLength": 1}]}}}),
                422,
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "array", "items": [{"type": "string"}]}}}),
                422,
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "array", "prefixItems": [{"type": "string"}]}}}),
                422,
            ),
            (json!({"type": "object", "properties": {"a": 5}}), 400),
            (json!({"type": "object", "properties": []}), 400),
            (json!({"type": 5}), 400),
            (json!({"type": ["string", 5]}), 400),
            (json!({"anyOf": {}}), 400),
        ] {
            let e = cleaned(schema.clone()).unwrap_err();
            assert_eq!(e.status(), status, "{schema}: {e}");
            assert_eq!(field_of(e), "tools[0].function.parameters");
        }
        // Exponential $ref fan-out is stopped, not expanded.
        let mut defs = Map::new();
        defs.insert("D0".into(), json!({"type": "string"}));
        for i in 1..40 {
            defs.insert(
                format!("D{i}"),
                json!({"type": "object", "properties": {
                    "a": {"$ref": format!("#/$defs/D{}", i - 1)},
                    "b": {"$ref": format!("#/$defs/D{}", i - 1)}}}),
            );
        }
        let e = cleaned(json!({"$ref": "#/$defs/D39", "$defs": defs})).unwrap_err();
        assert_eq!(e.status(), 422);
        // Deep nesting is bounded too.
        let mut deep = json!({"type": "string"});
        for _ in 0..100 {
            deep = json!({"type": "array", "items": deep});
        }
        assert_eq!(cleaned(deep).unwrap_err().status(), 422);
    }

    #[test]
    fn schema_without_properties_declares_no_parameters() {
        for schema in [
            json!({"type": "object", "properties": {}, "required": []}),
            json!({"type": "object", "additionalProperties": false}),
            json!({}),
        ] {
            assert_eq!(cleaned(schema.clone()).unwrap(), Value::Null, "{schema}");
        }
        // Properties without a type make an OBJECT.
        assert_eq!(
            cleaned(json!({"properties": {"a": {"type": "boolean"}}})).unwrap(),
            json!({"type": "OBJECT", "properties": {"a": {"type": "BOOLEAN"}}})
        );
        // Property names that look like keywords are names, not keywords.
        assert_eq!(
            cleaned(json!({"type": "object", "properties": {"$schema": {"type": "string"}, "additionalProperties": {"type": "string"}}})).unwrap(),
            json!({"type": "OBJECT", "properties": {"$schema": {"type": "STRING"}, "additionalProperties": {"type": "STRING"}}})
        );
    }

    // ----- embeddings -----

    fn emb(v: Value) -> EmbeddingsRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn embeddings_requests() {
        let r = emb(json!({"model": "m", "input": ["a", "b"], "dimensions": 256, "user": "u"}));
        let up = embeddings_request(&r, &STUDIO, "gemini-embedding-001").unwrap();
        assert_eq!(
            up.path,
            "/v1beta/models/gemini-embedding-001:batchEmbedContents"
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&up.body).unwrap(),
            json!({"requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 256},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 256}
            ]})
        );
        let up = embeddings_request(&r, &VERTEX, "text-embedding-005").unwrap();
        assert_eq!(
            up.path,
            "/v1/projects/my-proj/locations/us-central1/publishers/google/models/text-embedding-005:predict"
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&up.body).unwrap(),
            json!({"instances": [{"content": "a"}, {"content": "b"}], "parameters": {"outputDimensionality": 256}})
        );
        let one = emb(json!({"model": "m", "input": "solo"}));
        let up = embeddings_request(&one, &VERTEX, "m").unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&up.body).unwrap(),
            json!({"instances": [{"content": "solo"}]})
        );
        let up = embeddings_request(&one, &STUDIO, "models/m").unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&up.body).unwrap(),
            json!({"requests": [{"model": "models/m", "content": {"parts": [{"text": "solo"}]}}]})
        );
        for (input, status) in [
            (json!([1, 2]), 422),
            (json!([[1], [2]]), 422),
            (json!([]), 400),
        ] {
            let e = embeddings_request(&emb(json!({"model": "m", "input": input})), &STUDIO, "m")
                .unwrap_err();
            assert_eq!((e.status(), field_of(e)), (status, "input".into()));
        }
    }
}
