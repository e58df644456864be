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

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::auth::sigv4::encode_path_segment;
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::host::Headers;
use crate::schema::openai::{
    ChatCompletion, ChatCompletionRequest, ChatMessage, Choice, ChunkChoice,
    CompletionTokensDetails, ContentPart, Delta, Embedding, EmbeddingInput, EmbeddingVector,
    EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage, FunctionCall, FunctionCallDelta,
    MessageContent, PromptTokensDetails, ResponseMessage, Role, ToolCall, ToolCallDelta,
    ToolChoice as OToolChoice, Usage,
};
use crate::translate::function_tools;
use crate::translate::{
    ChunkSource, ProviderError, ResponseMeta, StreamItem, TranslateError, UpstreamRequest,
};

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
// Chat response.

/// Gemini's `finishReason` as OpenAI's `finish_reason`. Reasons OpenAI has no word for
/// (`MALFORMED_FUNCTION_CALL`, `LANGUAGE`, `OTHER`, any a newer API adds) become
/// `stop` rather than failing the answer. A candidate that stopped after calling
/// functions reports `tool_calls` (the caller checks; Gemini says `STOP`).
pub fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ => "stop",
    }
}

/// A candidate's finish reason, `tool_calls` when it stopped after calling functions.
fn candidate_finish(reason: &str, called: bool) -> &'static str {
    match finish_reason(reason) {
        "stop" if called => "tool_calls",
        other => other,
    }
}

fn call_id(meta: &ResponseMeta, n: usize) -> String {
    format!("call_{}_{n}", meta.id)
}

/// Google's OpenAI-compatible home for a thought signature on a tool call.
fn signature_rest(signature: Option<String>) -> Map<String, Value> {
    let mut rest = Map::new();
    if let Some(sig) = signature {
        rest.insert(
            "extra_content".into(),
            json!({ "google": { "thought_signature": sig } }),
        );
    }
    rest
}

/// Translates a `generateContent` answer into a `chat.completion`.
///
/// Each candidate is a choice (its `index`); text parts make `content`, `thought`
/// parts `reasoning_content`, function calls `tool_calls` (id: the part's `id`, else
/// `call_<meta.id>_<n>` numbered across the answer; a thought signature goes in the
/// call's `extra_content.google.thought_signature`, where Google's own OpenAI layer
/// puts it and where [`chat_request`] reads it back). A prompt blocked
/// (`promptFeedback.blockReason`, no candidates) is an answer, not an error: one empty
/// choice with `finish_reason: content_filter`, as OpenAI reports its own filter.
pub fn chat_response(body: &[u8], meta: &ResponseMeta) -> Result<ChatCompletion, TranslateError> {
    let resp: GenerateContentResponse = serde_json::from_slice(body)
        .map_err(|e| TranslateError::BadResponse(format!("Gemini response: {e}")))?;
    let mut choices = Vec::new();
    if resp.candidates.is_empty() {
        if resp
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_ref())
            .is_none()
        {
            return Err(TranslateError::BadResponse(
                "the Gemini response has no candidates".into(),
            ));
        }
        choices.push(Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content: Some(String::new()),
                reasoning_content: None,
                tool_calls: None,
                rest: Default::default(),
            },
            finish_reason: Some("content_filter".into()),
            rest: Default::default(),
        });
    }
    let mut n = 0;
    for (p, c) in resp.candidates.into_iter().enumerate() {
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut tool_calls = Vec::new();
        for part in c.content.map(|c| c.parts).unwrap_or_default() {
            if let Some(fc) = part.function_call {
                tool_calls.push(ToolCall {
                    id: fc.id.unwrap_or_else(|| call_id(meta, n)),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: fc.name,
                        arguments: args_text(fc.args),
                        rest: Default::default(),
                    },
                    rest: signature_rest(part.thought_signature),
                });
                n += 1;
            } else if let Some(t) = part.text {
                if part.thought == Some(true) {
                    reasoning.push_str(&t);
                } else {
                    text.push_str(&t);
                }
            }
        }
        let finish = c
            .finish_reason
            .as_deref()
            .map(|r| candidate_finish(r, !tool_calls.is_empty()).to_string());
        choices.push(Choice {
            index: c
                .index
                .unwrap_or_else(|| u32::try_from(p).unwrap_or(u32::MAX)),
            message: ResponseMessage {
                role: Role::Assistant,
                content: (!text.is_empty() || tool_calls.is_empty()).then_some(text),
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                rest: Default::default(),
            },
            finish_reason: finish,
            rest: Default::default(),
        });
    }
    Ok(meta.completion(choices, resp.usage_metadata.map(UsageMetadata::to_openai)))
}

/// Function call arguments as JSON text (`{}` when Gemini sent none).
fn args_text(args: Option<Value>) -> String {
    match args {
        None | Some(Value::Null) => "{}".into(),
        Some(v) => serde_json::to_string(&v).unwrap_or_else(|_| "{}".into()),
    }
}

// ---------------------------------------------------------------------------------
// Stream.

/// A `streamGenerateContent?alt=sse` body, bytes in, hub chunks out.
///
/// Each SSE event is a whole `GenerateContentResponse`: its parts are the deltas
/// (text, `thought` text as `reasoning_content`, function calls whole, one OpenAI
/// tool-call chunk with the full arguments), a `finishReason` closes its choice, and
/// `usageMetadata` (the last one wins) becomes the usage chunk. Gemini sends no end
/// marker: the stream is complete when it ends after every choice got a finish
/// reason (or the prompt was blocked); otherwise it is an error. A usage chunk is
/// written only when Gemini reported usage. An `{"error": ...}` event (or a Vertex
/// array of them) ends the stream with that error. Thought signatures are not
/// forwarded: a streamed tool call has no field for them (see [`chat_request`] for
/// what replaces them).
#[derive(Debug)]
pub struct ChatStream {
    meta: ResponseMeta,
    include_usage: bool,
    decoder: SseDecoder,
    scratch: Vec<SseEvent>,
    choices: Vec<ChoiceState>,
    /// Function calls seen, for ids.
    calls: usize,
    usage: Option<Usage>,
    /// Done or Error was emitted.
    over: bool,
}

#[derive(Debug)]
struct ChoiceState {
    index: u32,
    role_sent: bool,
    tools: u32,
    finished: bool,
}

impl ChatStream {
    /// `max_event_bytes` bounds one SSE event (memory held).
    pub fn new(meta: ResponseMeta, include_usage: bool, max_event_bytes: usize) -> Self {
        ChatStream {
            meta,
            include_usage,
            decoder: SseDecoder::new(max_event_bytes),
            scratch: Vec::new(),
            choices: Vec::new(),
            calls: 0,
            usage: None,
            over: false,
        }
    }

    fn fail(&mut self, err: ProviderError, out: &mut Vec<StreamItem>) {
        out.push(StreamItem::Error(err));
        self.over = true;
    }

    fn bad(&mut self, why: String, out: &mut Vec<StreamItem>) {
        self.fail(TranslateError::BadResponse(why).into(), out);
    }

    fn on_event(&mut self, ev: &SseEvent, out: &mut Vec<StreamItem>) {
        let data = ev.data().trim_ascii();
        if data.is_empty() || data == b"[DONE]" {
            return;
        }
        let value: Value = match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(e) => return self.bad(format!("unreadable Gemini stream event: {e}"), out),
        };
        if let Some(err) = error_object(&value) {
            let err = error_from_object(None, err);
            return self.fail(err, out);
        }
        match serde_json::from_value::<GenerateContentResponse>(value) {
            Ok(resp) => self.on_response(resp, out),
            Err(e) => self.bad(format!("Gemini stream event: {e}"), out),
        }
    }

    fn on_response(&mut self, resp: GenerateContentResponse, out: &mut Vec<StreamItem>) {
        if let Some(u) = resp.usage_metadata {
            self.usage = Some(u.to_openai());
        }
        if resp.candidates.is_empty() {
            let blocked = resp.prompt_feedback.and_then(|f| f.block_reason).is_some();
            if blocked {
                let slot = self.choice(0);
                let state = &mut self.choices[slot];
                if !state.finished {
                    state.finished = true;
                    emit(
                        &self.meta,
                        state,
                        Delta::default(),
                        Some("content_filter"),
                        out,
                    );
                }
            }
            return;
        }
        for (p, c) in resp.candidates.into_iter().enumerate() {
            let index = c
                .index
                .unwrap_or_else(|| u32::try_from(p).unwrap_or(u32::MAX));
            let slot = self.choice(index);
            if self.choices[slot].finished {
                continue;
            }
            for part in c.content.map(|c| c.parts).unwrap_or_default() {
                let delta = if let Some(fc) = part.function_call {
                    let id = fc.id.unwrap_or_else(|| call_id(&self.meta, self.calls));
                    self.calls += 1;
                    let state = &mut self.choices[slot];
                    let tool_index = state.tools;
                    state.tools += 1;
                    Delta {
                        tool_calls: Some(vec![ToolCallDelta {
                            index: tool_index,
                            id: Some(id),
                            kind: Some("function".into()),
                            function: FunctionCallDelta {
                                name: Some(fc.name),
                                arguments: Some(args_text(fc.args)),
                            },
                            rest: signature_rest(part.thought_signature),
                        }]),
                        ..Default::default()
                    }
                } else {
                    match part.text {
                        Some(t) if t.is_empty() => continue,
                        Some(t) if part.thought == Some(true) => Delta {
                            reasoning_content: Some(t),
                            ..Default::default()
                        },
                        Some(t) => Delta {
                            content: Some(t),
                            ..Default::default()
                        },
                        None => continue,
                    }
                };
                emit(&self.meta, &mut self.choices[slot], delta, None, out);
            }
            if let Some(reason) = c
                .finish_reason
                .filter(|r| !r.is_empty() && r != "FINISH_REASON_UNSPECIFIED")
            {
                let state = &mut self.choices[slot];
                state.finished = true;
                let finish = candidate_finish(&reason, state.tools > 0);
                emit(&self.meta, state, Delta::default(), Some(finish), out);
            }
        }
    }

    /// The slot of choice `index`, created on first sight.
    fn choice(&mut self, index: u32) -> usize {
        if let Some(i) = self.choices.iter().position(|c| c.index == index) {
            return i;
        }
        self.choices.push(ChoiceState {
            index,
            role_sent: false,
            tools: 0,
            finished: false,
        });
        self.choices.len() - 1
    }

    fn end(&mut self, out: &mut Vec<StreamItem>) {
        if self.choices.is_empty() || self.choices.iter().any(|c| !c.finished) {
            return self.bad(
                "stream ended early: Gemini sent no finishReason".into(),
                out,
            );
        }
        if self.include_usage {
            if let Some(usage) = self.usage.take() {
                out.push(chunk(&self.meta, Vec::new(), Some(usage)));
            }
        }
        out.push(StreamItem::Done);
        self.over = true;
    }
}

impl ChunkSource for ChatStream {
    fn feed(&mut self, bytes: &[u8], end_of_stream: bool, out: &mut Vec<StreamItem>) {
        if self.over {
            return;
        }
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        let pushed = self.decoder.push(bytes, &mut events);
        for ev in &events {
            if self.over {
                break;
            }
            self.on_event(ev, out);
        }
        self.scratch = events;
        if self.over {
            return;
        }
        if let Err(e) = pushed {
            return self.bad(format!("Gemini stream: {e}"), out);
        }
        if end_of_stream {
            match self.decoder.finish() {
                Ok(Some(ev)) => self.on_event(&ev, out),
                Ok(None) => {}
                Err(e) => return self.bad(format!("Gemini stream: {e}"), out),
            }
            if !self.over {
                self.end(out);
            }
        }
    }
}

fn chunk(meta: &ResponseMeta, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> StreamItem {
    StreamItem::Chunk(Box::new(meta.chunk(choices, usage)))
}

/// Writes one delta of a choice, after a role chunk if the choice is new.
fn emit(
    meta: &ResponseMeta,
    state: &mut ChoiceState,
    delta: Delta,
    finish: Option<&'static str>,
    out: &mut Vec<StreamItem>,
) {
    let one = |delta, finish: Option<&str>| ChunkChoice {
        index: state.index,
        delta,
        finish_reason: finish.map(str::to_string),
        rest: Default::default(),
    };
    if !state.role_sent {
        let role = Delta {
            role: Some(Role::Assistant),
            content: Some(String::new()),
            ..Default::default()
        };
        out.push(chunk(meta, vec![one(role, None)], None));
    }
    out.push(chunk(meta, vec![one(delta, finish)], None));
    state.role_sent = true;
}

// ---------------------------------------------------------------------------------
// Errors.

/// Longest provider message passed on.
const MAX_MESSAGE_CHARS: usize = 4000;

/// Gemini's error answer as a [`ProviderError`].
///
/// Bodies are Google's `{"error": {"code", "message", "status", "details"}}` (Vertex
/// may wrap it in a JSON array). The status follows the canonical `status` name where
/// one is given (`RESOURCE_EXHAUSTED` 429, `UNAVAILABLE` 503, `DEADLINE_EXCEEDED` 504,
/// ...), and an AI Studio `API_KEY_INVALID` (sent as 400) becomes 401; `code` is the
/// `status` name. A body that is not Google's shape yields a message naming the HTTP
/// status (plus a short plain-text body, never HTML or a long one). Headers are not
/// read: Google puts nothing there the client needs.
pub fn error(status: u16, _headers: &dyn Headers, body: &[u8]) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(e) = parsed.as_ref().and_then(error_object) {
        return error_from_object(Some(status), e);
    }
    let status = client_status(None, status);
    let text = std::str::from_utf8(body).map(str::trim).unwrap_or_default();
    let message = if parsed.is_none()
        && !text.is_empty()
        && text.len() <= 200
        && !text.starts_with('<')
        && !text.contains('\n')
    {
        format!("Gemini returned HTTP {status}: {text}")
    } else {
        format!("Gemini returned HTTP {status}")
    };
    ProviderError::new(status, None, message)
}

/// The `error` member of an error document, or of the first of a Vertex array.
fn error_object(v: &Value) -> Option<&Value> {
    let doc = match v {
        Value::Array(a) => a.first()?,
        other => other,
    };
    doc.get("error").filter(|e| e.is_object())
}

/// A Google error object; `http` is the response status (none mid-stream; there, or
/// when it is no error status, the object's own `code` stands in).
fn error_from_object(http: Option<u16>, e: &Value) -> ProviderError {
    let grpc = e
        .get("status")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let code = e
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok());
    let key_invalid = e
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"));
    let status = if key_invalid {
        401
    } else {
        let http = http.filter(|h| (400..=599).contains(h));
        client_status(grpc, http.or(code).unwrap_or(0))
    };
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| m.chars().take(MAX_MESSAGE_CHARS).collect())
        .unwrap_or_else(|| format!("Gemini returned HTTP {status}"));
    ProviderError::new(status, grpc.map(str::to_string), message)
}

/// The client's status from a canonical status name, else the HTTP status (502 when
/// that is not an error status).
fn client_status(grpc: Option<&str>, http: u16) -> u16 {
    match grpc {
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") => 400,
        Some("UNAUTHENTICATED") => 401,
        Some("PERMISSION_DENIED") => 403,
        Some("NOT_FOUND") => 404,
        Some("ABORTED" | "ALREADY_EXISTS") => 409,
        Some("RESOURCE_EXHAUSTED") => 429,
        Some("INTERNAL" | "UNKNOWN" | "DATA_LOSS") => 500,
        Some("UNIMPLEMENTED") => 501,
        Some("UNAVAILABLE") => 503,
        Some("DEADLINE_EXCEEDED") => 504,
        _ if (400..=599).contains(&http) => http,
        _ => 502,
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

#[derive(Debug, Deserialize)]
struct BatchEmbedResponse {
    embeddings: Vec<ContentEmbedding>,
}

#[derive(Debug, Deserialize)]
struct ContentEmbedding {
    values: Vec<f32>,
}

#[derive(Debug, Deserialize)]
struct PredictResponse {
    predictions: Vec<Prediction>,
}

#[derive(Debug, Deserialize)]
struct Prediction {
    embeddings: PredictionEmbedding,
}

#[derive(Debug, Deserialize)]
struct PredictionEmbedding {
    values: Vec<f32>,
    #[serde(default)]
    statistics: Option<EmbeddingStatistics>,
}

#[derive(Debug, Deserialize)]
struct EmbeddingStatistics {
    /// A JSON number Vertex may write as `6.0`.
    #[serde(default)]
    token_count: f64,
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

/// Translates an embeddings answer into OpenAI's `list`, `model` as given. Usage: on
/// Vertex the sum of each prediction's `statistics.token_count`; AI Studio reports no
/// token counts, so its usage is 0.
pub fn embeddings_response(
    body: &[u8],
    api: &Api,
    model: &str,
    base64: bool,
) -> Result<EmbeddingsResponse, TranslateError> {
    let bad = |e: serde_json::Error| TranslateError::BadResponse(format!("Gemini embeddings: {e}"));
    let (vectors, tokens): (Vec<Vec<f32>>, u64) = match api {
        Api::AiStudio { .. } => {
            let r: BatchEmbedResponse = serde_json::from_slice(body).map_err(bad)?;
            (r.embeddings.into_iter().map(|e| e.values).collect(), 0)
        }
        Api::Vertex { .. } => {
            let r: PredictResponse = serde_json::from_slice(body).map_err(bad)?;
            let mut tokens = 0u64;
            let mut vectors = Vec::with_capacity(r.predictions.len());
            for p in r.predictions {
                let count = p.embeddings.statistics.map_or(0.0, |s| s.token_count);
                if count.is_finite() && count > 0.0 {
                    // Saturating float-to-int cast.
                    tokens = tokens.saturating_add(count as u64);
                }
                vectors.push(p.embeddings.values);
            }
            (vectors, tokens)
        }
    };
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| Embedding {
            object: "embedding".into(),
            index: u32::try_from(i).unwrap_or(u32::MAX),
            embedding: EmbeddingVector::new(v, base64),
        })
        .collect();
    Ok(EmbeddingsResponse {
        object: "list".into(),
        data,
        model: model.to_string(),
        usage: EmbeddingsUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
        rest: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::encode_openai_sse;
    use crate::translate::testing::{self, pretty, Rng};

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/gemini/");
    const STUDIO: Api<'static> = Api::AiStudio { version: None };
    const VERTEX: Api<'static> = Api::Vertex {
        project: "my-proj",
        region: "us-central1",
        version: None,
    };

    fn fixture(name: &str) -> Vec<u8> {
        testing::fixture(DIR, name)
    }

    fn golden(name: &str, actual: &[u8]) {
        testing::golden(DIR, name, actual)
    }

    fn meta() -> ResponseMeta {
        ResponseMeta {
            id: "chatcmpl-test".into(),
            model: "gemini-2.5-flash".into(),
            created: 1_700_000_000,
        }
    }

    fn parse(v: Value) -> ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    /// Translates for AI Studio; returns the path and the body as JSON.
    fn req(v: Value) -> Result<(String, Value), TranslateError> {
        let up = chat_request(&parse(v), &STUDIO, "gemini-2.5-flash")?;
        assert_eq!(
            up.headers,
            vec![("content-type", "application/json".to_string())]
        );
        Ok((up.path, serde_json::from_slice(&up.body).unwrap()))
    }

    fn body(v: Value) -> Value {
        req(v).unwrap().1
    }

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

    // ----- response -----

    #[test]
    fn golden_response_text() {
        let out = chat_response(&fixture("response_text.gemini.json"), &meta()).unwrap();
        golden("response_text.openai.json", &pretty(&out));
        let u = out.usage.clone().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (1210, 50, 1260)
        );
        assert_eq!(u.prompt_tokens_details.unwrap().cached_tokens, Some(1024));
        assert_eq!(
            u.completion_tokens_details.unwrap().reasoning_tokens,
            Some(36)
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
            &serde_json::to_vec(&out).unwrap(),
            true,
            std::time::Duration::ZERO,
        );
        assert_eq!(
            meter.usage(),
            Some(crate::metering::usage::TokenUsage {
                input_tokens: 1210,
                output_tokens: 50,
                total_tokens: 1260,
                cached_input_tokens: 1024,
                cache_creation_input_tokens: 0,
                reasoning_tokens: 36,
            })
        );
    }

    #[test]
    fn golden_response_tools() {
        let out = chat_response(&fixture("response_tools.gemini.json"), &meta()).unwrap();
        golden("response_tools.openai.json", &pretty(&out));
        let c = &out.choices[0];
        assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
        let calls = c.message.tool_calls.as_ref().unwrap();
        let ids: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            ["call_chatcmpl-test_0", "fc_rome", "call_chatcmpl-test_2"]
        );
        assert_eq!(calls[2].function.arguments, "{}");
        assert_eq!(
            serde_json::from_str::<Value>(&calls[1].function.arguments).unwrap(),
            json!({"city": "Rome", "units": ["c"]})
        );
        let u = out.usage.unwrap();
        assert_eq!(u.prompt_tokens_details, None);
        assert_eq!(u.completion_tokens_details, None);
        // The signature makes the round trip back into a request.
        let msg = serde_json::to_value(&c.message).unwrap();
        let b = body(json!({"model": "x", "messages": [{"role": "user", "content": "hi"}, msg]}));
        assert_eq!(
            b["contents"][1]["parts"][1]["thoughtSignature"],
            "c2lnLXBhcmlz"
        );
        assert_eq!(b["contents"][1]["parts"][2].get("thoughtSignature"), None);
    }

    #[test]
    fn response_finish_reasons() {
        for (gemini, openai) in [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
            ("BLOCKLIST", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"),
            ("IMAGE_SAFETY", "content_filter"),
            ("MALFORMED_FUNCTION_CALL", "stop"),
            ("OTHER", "stop"),
            ("SOMETHING_NEW", "stop"),
        ] {
            assert_eq!(finish_reason(gemini), openai);
            let b = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": gemini}]});
            let out = chat_response(&serde_json::to_vec(&b).unwrap(), &meta()).unwrap();
            assert_eq!(out.choices[0].finish_reason.as_deref(), Some(openai));
        }
        // A safety stop may come without content.
        let b = br#"{"candidates": [{"finishReason": "SAFETY", "index": 0}]}"#;
        let out = chat_response(b, &meta()).unwrap();
        assert_eq!(out.choices[0].message.content.as_deref(), Some(""));
        assert_eq!(out.usage, None);
    }

    #[test]
    fn response_blocked_prompt_and_candidates() {
        let b = br#"{"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                     "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}}"#;
        let out = chat_response(b, &meta()).unwrap();
        assert_eq!(out.choices.len(), 1);
        assert_eq!(
            out.choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );
        assert_eq!(out.choices[0].message.content.as_deref(), Some(""));
        assert_eq!(out.usage.unwrap().total_tokens, 7);

        let b = br#"{"candidates": [
            {"content": {"parts": [{"text": "one"}]}, "finishReason": "STOP", "index": 0},
            {"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]}, "finishReason": "STOP", "index": 1},
            {"content": {"parts": [{"text": "three"}]}, "finishReason": "MAX_TOKENS"}
        ]}"#;
        let out = chat_response(b, &meta()).unwrap();
        let got: Vec<(u32, Option<&str>, Option<&str>)> = out
            .choices
            .iter()
            .map(|c| {
                (
                    c.index,
                    c.message.content.as_deref(),
                    c.finish_reason.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, Some("one"), Some("stop")),
                (1, None, Some("tool_calls")),
                (2, Some("three"), Some("length"))
            ]
        );
    }

    #[test]
    fn response_usage_counts_tool_use_prompt_as_input() {
        let b = br#"{"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 10, "toolUsePromptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 18}}"#;
        let u = chat_response(b, &meta()).unwrap().usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (15, 3, 18)
        );
    }

    #[test]
    fn bad_response_is_502() {
        for b in [
            &b"not json"[..],
            b"",
            b"[]",
            b"{}",
            br#"{"candidates": []}"#,
            br#"{"candidates": 5}"#,
            br#"{"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]}"#,
            br#"{"error": {"code": 500, "message": "x"}}"#,
        ] {
            let e = chat_response(b, &meta()).unwrap_err();
            assert_eq!(e.status(), 502, "{}", String::from_utf8_lossy(b));
        }
    }

    // ----- streams -----

    /// Feeds `chunks` (the last with end_of_stream) and collects the items.
    fn run(chunks: &[&[u8]], include_usage: bool) -> Vec<StreamItem> {
        let mut s = ChatStream::new(meta(), include_usage, 1 << 16);
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            s.feed(c, i + 1 == chunks.len(), &mut out);
        }
        out
    }

    fn encode(items: &[StreamItem]) -> Vec<u8> {
        let mut out = Vec::new();
        for it in items {
            encode_openai_sse(it, &mut out);
        }
        out
    }

    /// Whole, split at every offset, and byte by byte: always the same items.
    fn check_stream(name: &str, include_usage: bool) -> Vec<StreamItem> {
        let data = fixture(&format!("{name}.gemini.sse"));
        let whole = run(&[&data], include_usage);
        golden(&format!("{name}.openai.sse"), &encode(&whole));
        for i in 0..=data.len() {
            let (a, b) = data.split_at(i);
            assert_eq!(run(&[a, b], include_usage), whole, "{name} split at {i}");
        }
        let bytes: Vec<&[u8]> = data.chunks(1).chain([&b""[..]]).collect();
        assert_eq!(run(&bytes, include_usage), whole, "{name} byte by byte");
        assert_eq!(
            whole
                .iter()
                .filter(|i| matches!(i, StreamItem::Done | StreamItem::Error(_)))
                .count(),
            1
        );
        whole
    }

    fn chunks_of(items: &[StreamItem]) -> Vec<&crate::schema::openai::ChatCompletionChunk> {
        items
            .iter()
            .filter_map(|i| match i {
                StreamItem::Chunk(c) => Some(&**c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn golden_stream_text() {
        let items = check_stream("stream_text", true);
        assert_eq!(items.last(), Some(&StreamItem::Done));
        let chunks = chunks_of(&items);
        assert_eq!(chunks[0].choices[0].delta.role, Some(Role::Assistant));
        let text: String = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .filter_map(|c| c.delta.content.as_deref())
            .collect();
        assert_eq!(text, "The sky is blue, été 🌤 and clear.");
        let reasoning: String = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .filter_map(|c| c.delta.reasoning_content.as_deref())
            .collect();
        assert_eq!(reasoning, "**Considering the sky**\n\nRayleigh scattering.");
        let last = chunks.last().unwrap();
        assert!(last.choices.is_empty());
        let u = last.usage.as_ref().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (12, 34, 46)
        );
        assert_eq!(
            chunks[chunks.len() - 2].choices[0].finish_reason.as_deref(),
            Some("length")
        );
        // Without include_usage: the same, less the usage chunk.
        let data = fixture("stream_text.gemini.sse");
        let plain = run(&[&data], false);
        assert_eq!(plain.len(), items.len() - 1);
        assert!(chunks_of(&plain).iter().all(|c| c.usage.is_none()));
    }

    #[test]
    fn golden_stream_tools() {
        let items = check_stream("stream_tools", true);
        assert_eq!(items.last(), Some(&StreamItem::Done));
        let chunks = chunks_of(&items);
        let calls: Vec<&ToolCallDelta> = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .flat_map(|c| c.delta.tool_calls.iter().flatten())
            .collect();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (
                calls[0].index,
                calls[0].id.as_deref(),
                calls[0].function.arguments.as_deref()
            ),
            (0, Some("call_chatcmpl-test_0"), Some(r#"{"city":"Paris"}"#))
        );
        // The thought signature rides along, where a client sends it back from.
        assert_eq!(
            calls[0].rest.get("extra_content"),
            Some(&serde_json::json!({"google": {"thought_signature": "c2lnLXBhcmlz"}}))
        );
        assert!(calls[1].rest.is_empty());
        assert_eq!(
            (
                calls[1].index,
                calls[1].id.as_deref(),
                calls[1].function.name.as_deref()
            ),
            (1, Some("fc_rome"), Some("get_weather"))
        );
        let finish: Vec<&str> = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .filter_map(|c| c.finish_reason.as_deref())
            .collect();
        assert_eq!(finish, ["tool_calls"]);
    }

    #[test]
    fn golden_stream_error() {
        let items = check_stream("stream_error", true);
        let Some(StreamItem::Error(e)) = items.last() else {
            panic!("{items:?}")
        };
        assert_eq!(e.status, 503);
        assert_eq!(e.kind, crate::translate::ErrorKind::Overloaded);
        assert_eq!(e.code.as_deref(), Some("UNAVAILABLE"));
        assert_eq!(
            e.message,
            "The model is overloaded. Please try again later."
        );
        assert_eq!(chunks_of(&items).len(), 2);
    }

    #[test]
    fn stream_ended_early_is_an_error() {
        let data = fixture("stream_text.gemini.sse");
        let text = String::from_utf8(data.clone()).unwrap();
        // Everything but the event with the finish reason.
        let cut = text.rfind("data: ").unwrap();
        for (body, what) in [
            (&data[..cut], "no finish"),
            (&b""[..], "empty"),
            (&data[..cut + 30], "cut inside"),
        ] {
            let items = run(&[body], true);
            let Some(StreamItem::Error(e)) = items.last() else {
                panic!("{what}: {items:?}")
            };
            assert_eq!(e.status, 502, "{what}");
            assert!(!items.contains(&StreamItem::Done), "{what}");
            if what == "no finish" {
                assert!(e.message.contains("stream ended early"), "{e:?}");
            }
        }
        // A last event lacking its blank line still counts at end of stream.
        let trimmed = text.trim_end();
        let items = run(&[trimmed.as_bytes()], false);
        assert_eq!(items.last(), Some(&StreamItem::Done));
    }

    #[test]
    fn stream_stops_after_an_error() {
        let mut s = ChatStream::new(meta(), true, 1 << 16);
        let mut out = Vec::new();
        s.feed(b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}]}}]}\n\ndata: {nope}\n\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"b\"}]}}]}\n\n", false, &mut out);
        assert_eq!(out.len(), 3, "{out:?}");
        let Some(StreamItem::Error(e)) = out.last() else {
            panic!("{out:?}")
        };
        assert_eq!(e.status, 502);
        s.feed(b"data: {}\n\n", true, &mut out);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn stream_error_shapes() {
        // A Vertex array of errors, as one event.
        let items = run(
            &[br#"data: [{"error": {"code": 429, "message": "Resource exhausted.", "status": "RESOURCE_EXHAUSTED"}}]

"#],
            true,
        );
        let [StreamItem::Error(e)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(
            (e.status, e.kind),
            (429, crate::translate::ErrorKind::RateLimit)
        );
        // An event too large for the decoder.
        let mut s = ChatStream::new(meta(), true, 64);
        let mut out = Vec::new();
        s.feed(&fixture("stream_tools.gemini.sse"), false, &mut out);
        let [StreamItem::Error(e)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert!(e.message.contains("larger than 64 bytes"), "{e:?}");
        // An event of the wrong shape.
        let items = run(&[b"data: {\"candidates\": {}}\n\n"], true);
        assert!(matches!(items.as_slice(), [StreamItem::Error(e)] if e.status == 502));
    }

    #[test]
    fn stream_blocked_prompt_and_comments() {
        let items = run(
            &[b": keep-alive\r\n\r\ndata: {\"promptFeedback\": {\"blockReason\": \"PROHIBITED_CONTENT\"}, \"usageMetadata\": {\"promptTokenCount\": 9, \"totalTokenCount\": 9}}\r\n\r\n"],
            true,
        );
        let chunks = chunks_of(&items);
        assert_eq!(chunks.len(), 3, "{items:?}");
        assert_eq!(chunks[0].choices[0].delta.role, Some(Role::Assistant));
        assert_eq!(
            chunks[1].choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );
        assert_eq!(chunks[2].usage.as_ref().unwrap().prompt_tokens, 9);
        assert_eq!(items.last(), Some(&StreamItem::Done));
    }

    #[test]
    fn stream_several_candidates() {
        let ev = |v: Value| format!("data: {v}\r\n\r\n");
        let body = [
            ev(json!({"candidates": [{"content": {"parts": [{"text": "a"}]}, "index": 0},
                                     {"content": {"parts": [{"functionCall": {"name": "f", "args": {"x": 1}}}]}, "index": 1}]})),
            ev(json!({"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP", "index": 0}]})),
        ]
        .concat();
        // Choice 1 never finished: the stream is incomplete.
        let items = run(&[body.as_bytes()], false);
        assert!(
            matches!(items.last(), Some(StreamItem::Error(_))),
            "{items:?}"
        );
        let done = format!(
            "{body}{}",
            ev(
                json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "g"}}]}, "finishReason": "STOP", "index": 1}]})
            )
        );
        let items = run(&[done.as_bytes()], false);
        assert_eq!(items.last(), Some(&StreamItem::Done));
        /// (choice, content, tool-call index, finish reason) of each chunk choice.
        type Seen<'a> = (u32, Option<&'a str>, Option<u32>, Option<&'a str>);
        let per_choice: Vec<Seen> = chunks_of(&items)
            .iter()
            .flat_map(|c| &c.choices)
            .map(|c| {
                let tc = c.delta.tool_calls.as_ref().and_then(|t| t.first());
                (
                    c.index,
                    c.delta.content.as_deref(),
                    tc.map(|t| t.index),
                    c.finish_reason.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            per_choice,
            [
                (0, Some(""), None, None),
                (0, Some("a"), None, None),
                (1, Some(""), None, None),
                (1, None, Some(0), None),
                (0, Some("b"), None, None),
                (0, None, None, Some("stop")),
                (1, None, Some(1), None),
                (1, None, None, Some("tool_calls")),
            ]
        );
    }

    // ----- errors -----

    #[test]
    fn error_statuses() {
        let h: [(&str, &str); 0] = [];
        for (http, status, want, kind) in [
            (400, "INVALID_ARGUMENT", 400, "invalid_request_error"),
            (400, "FAILED_PRECONDITION", 400, "invalid_request_error"),
            (401, "UNAUTHENTICATED", 401, "authentication_error"),
            (403, "PERMISSION_DENIED", 403, "permission_error"),
            (404, "NOT_FOUND", 404, "invalid_request_error"),
            (429, "RESOURCE_EXHAUSTED", 429, "rate_limit_error"),
            (500, "INTERNAL", 500, "server_error"),
            (503, "UNAVAILABLE", 503, "server_error"),
            (504, "DEADLINE_EXCEEDED", 504, "server_error"),
            (499, "CANCELLED", 499, "server_error"),
            (418, "SOMETHING_NEW", 418, "server_error"),
        ] {
            let body = json!({"error": {"code": http, "message": "m", "status": status}});
            let e = error(http, &h, &serde_json::to_vec(&body).unwrap());
            assert_eq!(
                (e.status, e.code.as_deref()),
                (want, Some(status)),
                "{status}"
            );
            let v: Value = serde_json::from_slice(&e.openai_body()).unwrap();
            assert_eq!(v["error"]["type"], kind, "{status}");
            assert_eq!(v["error"]["message"], "m");
        }
        // AI Studio sends a bad key as 400 INVALID_ARGUMENT with a reason.
        let e = error(
            400,
            &h,
            br#"{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
                 "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}}"#,
        );
        assert_eq!(
            (e.status, e.kind),
            (401, crate::translate::ErrorKind::Authentication)
        );
        // Vertex wraps errors in an array.
        let e = error(
            429,
            &h,
            br#"[{"error": {"code": 429, "message": "Resource exhausted. Please try again later.", "status": "RESOURCE_EXHAUSTED"}}]"#,
        );
        assert_eq!(e.status, 429);
        assert_eq!(e.message, "Resource exhausted. Please try again later.");
        // An error document under a success status: its own code stands in.
        let e = error(
            200,
            &h,
            br#"{"error": {"code": 429, "message": "slow down"}}"#,
        );
        assert_eq!((e.status, e.code.clone()), (429, None));
        // No status name: the HTTP status stands.
        let e = error(404, &h, br#"{"error": {"code": 404, "message": ""}}"#);
        assert_eq!((e.status, e.code.clone()), (404, None));
        assert_eq!(e.message, "Gemini returned HTTP 404");
    }

    #[test]
    fn error_bodies_that_are_not_google_errors() {
        let h = [("content-type", "text/html")];
        let e = error(502, &h, b"<html><body>Bad Gateway</body></html>");
        assert_eq!(
            (e.status, e.message.as_str()),
            (502, "Gemini returned HTTP 502")
        );
        let e = error(
            503,
            &h,
            b"upstream connect error or disconnect/reset before headers",
        );
        assert_eq!(
            e.message,
            "Gemini returned HTTP 503: upstream connect error or disconnect/reset before headers"
        );
        let e = error(500, &h, &[b'x'; 5000]);
        assert_eq!(e.message, "Gemini returned HTTP 500");
        let e = error(200, &h, b"");
        assert_eq!(
            (e.status, e.message.as_str()),
            (502, "Gemini returned HTTP 502")
        );
        let e = error(429, &h, br#"{"message": "not google's shape"}"#);
        assert_eq!(
            (e.status, e.kind),
            (429, crate::translate::ErrorKind::RateLimit)
        );
        assert_eq!(e.message, "Gemini returned HTTP 429");
        let e = error(400, &h, &[0xff, 0xfe, 0x00]);
        assert_eq!(e.message, "Gemini returned HTTP 400");
        // Long provider messages are cut.
        let long = "y".repeat(10_000);
        let e = error(
            400,
            &h,
            &serde_json::to_vec(&json!({"error": {"message": long}})).unwrap(),
        );
        assert_eq!(e.message.len(), MAX_MESSAGE_CHARS);
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

    #[test]
    fn embeddings_responses() {
        let r = embeddings_response(
            br#"{"embeddings": [{"values": [1.0, -2.5]}, {"values": [0.25]}]}"#,
            &STUDIO,
            "gemini-embedding-001",
            false,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"object": "list", "data": [
                {"object": "embedding", "index": 0, "embedding": [1.0, -2.5]},
                {"object": "embedding", "index": 1, "embedding": [0.25]}
            ], "model": "gemini-embedding-001", "usage": {"prompt_tokens": 0, "total_tokens": 0}})
        );
        let r = embeddings_response(
            br#"{"predictions": [
                {"embeddings": {"values": [1.0, -2.5], "statistics": {"token_count": 6, "truncated": false}}},
                {"embeddings": {"values": [0.5], "statistics": {"token_count": 4.0, "truncated": false}}},
                {"embeddings": {"values": [0.5]}}
            ], "metadata": {"billableCharacterCount": 12}}"#,
            &VERTEX,
            "text-embedding-005",
            true,
        )
        .unwrap();
        assert_eq!(
            r.data[0].embedding,
            EmbeddingVector::Base64("AACAPwAAIMA=".into())
        );
        assert_eq!((r.usage.prompt_tokens, r.usage.total_tokens), (10, 10));
        assert_eq!(r.model, "text-embedding-005");
        for (body, api) in [
            (&b"nope"[..], STUDIO),
            (br#"{"predictions": []}"#, STUDIO),
            (br#"{"embeddings": [{"values": ["x"]}]}"#, STUDIO),
            (br#"{"embeddings": []}"#, VERTEX),
            (br#"{"predictions": [{"embeddings": {}}]}"#, VERTEX),
        ] {
            let e = embeddings_response(body, &api, "m", false).unwrap_err();
            assert_eq!(e.status(), 502);
        }
    }

    // ----- garbage -----

    #[test]
    fn no_panics_on_garbage() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seeds: Vec<Vec<u8>> = [
            "response_text.gemini.json",
            "response_tools.gemini.json",
            "stream_text.gemini.sse",
            "stream_tools.gemini.sse",
            "stream_error.gemini.sse",
            "request_chat.openai.json",
        ]
        .iter()
        .map(|n| fixture(n))
        .collect();
        let h: [(&str, &str); 0] = [];
        for round in 0..3000 {
            let seed = &seeds[round % seeds.len()];
            let mut data = seed[..rng.below(seed.len() + 1)].to_vec();
            for _ in 0..rng.below(4) {
                if !data.is_empty() {
                    let i = rng.below(data.len());
                    data[i] = (rng.next() & 0xff) as u8;
                }
            }
            let _ = chat_response(&data, &meta());
            let _ = error(rng.below(700) as u16, &h, &data);
            let _ = embeddings_response(&data, &VERTEX, "m", true);
            let _ = embeddings_response(&data, &STUDIO, "m", false);
            let mut s = ChatStream::new(meta(), true, 512);
            let mut out = Vec::new();
            let cut = rng.below(data.len() + 1);
            s.feed(&data[..cut], false, &mut out);
            s.feed(&data[cut..], true, &mut out);
            let ends = out
                .iter()
                .filter(|i| matches!(i, StreamItem::Done | StreamItem::Error(_)))
                .count();
            assert_eq!(ends, 1, "round {round}");
            assert!(matches!(
                out.last(),
                Some(StreamItem::Done | StreamItem::Error(_))
            ));
            if let Ok(r) = serde_json::from_slice::<ChatCompletionRequest>(&data) {
                let _ = chat_request(&r, &VERTEX, "m");
            }
        }
    }
}
