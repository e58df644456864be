//! What the upstream instance does to one attempt, for one pair of client API and
//! backend schema: the request it sends ([`Prepared`]) and how it reads the answer
//! ([`ResponsePlan`]). Every provider module is reached from here and nowhere else.

use serde_json::{Map, Value};

use crate::codec::multipart::Form;
use crate::config::backend::{Backend, BackendSchema, BodyMutation};
use crate::endpoint::Endpoint;
use crate::error::ClientSchema;
use crate::host::Headers;
use crate::schema::openai::{ChatCompletion, ChatCompletionRequest, EmbeddingsRequest};
use crate::translate::{
    anthropic, bedrock, encode_openai_sse, gemini, lambda, openai, responses, ChunkSource,
    ProviderError, ResponseMeta, StreamItem, TranslateError, UpstreamRequest,
};

/// The API a client called, as far as the upstream instance cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientApi {
    Chat,
    Completions,
    Embeddings,
    /// Anthropic Messages (`/anthropic/v1/messages`).
    Messages,
    /// OpenAI Responses (`/v1/responses`).
    Responses,
    /// Images and audio (`/v1/images/...`, `/v1/audio/...`): OpenAI's and Azure's
    /// own APIs, served as they are by those backends only.
    Media(Endpoint),
    /// Cohere-shaped rerank: to Cohere, or as is to an OpenAI-schema server.
    Rerank,
    /// Anthropic's token counting, to Anthropic models only.
    CountTokens,
    /// Another API a route passes as is (`routes[].passthrough`).
    Passthrough,
}

impl ClientApi {
    pub fn from_endpoint(e: Endpoint) -> Option<ClientApi> {
        match e {
            Endpoint::ChatCompletions => Some(ClientApi::Chat),
            Endpoint::Completions => Some(ClientApi::Completions),
            Endpoint::Embeddings => Some(ClientApi::Embeddings),
            Endpoint::Messages => Some(ClientApi::Messages),
            Endpoint::Responses => Some(ClientApi::Responses),
            Endpoint::ImagesGenerations
            | Endpoint::ImagesEdits
            | Endpoint::AudioSpeech
            | Endpoint::AudioTranscriptions
            | Endpoint::AudioTranslations => Some(ClientApi::Media(e)),
            Endpoint::Rerank => Some(ClientApi::Rerank),
            Endpoint::CountTokens => Some(ClientApi::CountTokens),
            Endpoint::Passthrough => Some(ClientApi::Passthrough),
            Endpoint::Models => None,
        }
    }

    pub fn schema(self) -> ClientSchema {
        match self {
            ClientApi::Messages | ClientApi::CountTokens => ClientSchema::Anthropic,
            _ => ClientSchema::OpenAI,
        }
    }

    /// The path after `/v1` on an OpenAI-schema server.
    fn openai_suffix(self) -> &'static str {
        match self {
            ClientApi::Chat | ClientApi::Messages => "/chat/completions",
            ClientApi::Completions => "/completions",
            ClientApi::Embeddings => "/embeddings",
            ClientApi::Responses => "/responses",
            ClientApi::Rerank => "/rerank",
            ClientApi::Media(e) => e.path().strip_prefix("/v1").unwrap_or(e.path()),
            // Not sent to OpenAI-schema servers (refused, or the client's own path).
            ClientApi::CountTokens | ClientApi::Passthrough => "",
        }
    }
}

/// What the upstream instance knows of one attempt besides the body.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    pub api: ClientApi,
    pub backend: &'a Backend,
    /// The client's `:path`, query included.
    pub path: &'a str,
    /// The model the client asked for (the routing header).
    pub client_model: &'a str,
    /// For ids of translated answers.
    pub request_id: &'a str,
    pub unix_seconds: u64,
    /// Bound of one buffered stream event.
    pub max_event_bytes: usize,
    /// The client's `anthropic-beta` header (Bedrock and Vertex take it in the body).
    pub anthropic_beta: Option<&'a str>,
}

/// The request as the provider wants it.
#[derive(Debug)]
pub struct Prepared {
    /// `:path`, query included.
    pub path: String,
    /// The new body; `None` leaves the client's as it is.
    pub body: Option<Vec<u8>>,
    /// Headers the provider's API needs (`content-type`, `anthropic-version`).
    pub headers: Vec<(&'static str, String)>,
    pub response: ResponsePlan,
}

/// How the provider's answer becomes the client's.
#[derive(Debug)]
pub struct ResponsePlan {
    kind: Reader,
    /// The backend's schema: which provider's errors and embeddings to read.
    schema: BackendSchema,
    /// The client's API: which form a translated answer and its errors take.
    api: ClientApi,
    stream: bool,
    include_usage: bool,
    meta: ResponseMeta,
    max_event_bytes: usize,
    /// The answer is an AWS Lambda invocation's (see [`lambda`]).
    lambda: bool,
}

/// Which reader the provider's answer needs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reader {
    /// The client and the provider speak the same API: bytes pass.
    Passthrough,
    /// An OpenAI-schema provider answering a client of another API.
    OpenAi,
    Bedrock,
    Gemini,
    /// An Anthropic-family provider answering a hub request.
    Anthropic {
        eventstream: bool,
    },
    /// An Anthropic-family provider answering an Anthropic client: the body passes
    /// (Bedrock's binary stream becomes SSE), errors are normalized.
    AnthropicMessages {
        eventstream: bool,
    },
    /// A provider's embeddings answer (the backend's schema says whose).
    Embeddings {
        model: String,
        base64: bool,
    },
    /// Bedrock's CountTokens answer, for an Anthropic client.
    BedrockCountTokens,
}

/// Whether the request body must be read before the request can go: always, except
/// for an OpenAI-schema client and backend whose path does not depend on the model
/// and whose body is not edited.
pub fn needs_body(api: ClientApi, backend: &Backend) -> bool {
    let untouched = backend.model_name_override.is_none() && backend.body_mutation.is_empty();
    let signed = matches!(
        backend.auth,
        Some(crate::config::backend::Auth::AwsSigV4 { .. })
    );
    let passthrough = match api {
        ClientApi::Messages | ClientApi::CountTokens => false,
        // Bodies of other APIs are never edited: only a signature needs them.
        ClientApi::Passthrough => return signed,
        ClientApi::Responses | ClientApi::Media(_) => {
            matches!(backend.schema, BackendSchema::OpenAI { .. })
        }
        ClientApi::Rerank => matches!(
            backend.schema,
            BackendSchema::OpenAI { .. } | BackendSchema::Cohere { .. }
        ),
        _ => matches!(
            backend.schema,
            BackendSchema::OpenAI { .. } | BackendSchema::Mistral
        ),
    };
    !(passthrough && untouched && !signed && backend.lambda.is_none())
}

/// The request when the body is not needed ([`needs_body`] is false).
pub fn prepare_without_body(a: &Attempt<'_>) -> Prepared {
    Prepared {
        path: same_api_path(a, a.client_model),
        body: None,
        headers: Vec::new(),
        response: ResponsePlan::passthrough(a, false),
    }
}

/// Translates the request body for the backend.
pub fn prepare(a: &Attempt<'_>, body: &[u8]) -> Result<Prepared, TranslateError> {
    if a.api == ClientApi::Passthrough {
        // Read only to be signed: neither the body nor the answer is touched.
        return Ok(prepare_without_body(a));
    }
    let peek = Peek::of(body)?;
    let model = a
        .backend
        .model_name_override
        .as_deref()
        .unwrap_or(peek.model.as_deref().unwrap_or(a.client_model))
        .to_string();
    let schema = &a.backend.schema;
    let mut prepared = match a.api {
        // A function sees the body, not the path: it is given chat requests only
        // (its schema's), which no other endpoint's body can be taken for.
        ClientApi::Completions
        | ClientApi::Embeddings
        | ClientApi::Rerank
        | ClientApi::CountTokens
        | ClientApi::Media(_)
            if a.backend.lambda.is_some() =>
        {
            return Err(TranslateError::unsupported(
                "model",
                format!(
                    "{} is not served by AWS Lambda backends: a function is given chat requests only",
                    split_query(a.path).0
                ),
            ))
        }
        ClientApi::Responses if a.backend.lambda.is_some() => {
            let hub = responses::client_request(body, &model)?;
            chat(a, &hub, &model)?
        }
        // Same API on both sides: only the model and the path change.
        ClientApi::Chat | ClientApi::Completions | ClientApi::Embeddings
            if schema.is_openai_family() =>
        {
            same_api(a, body, &model, peek.stream)?
        }
        // OpenAI's own APIs, which Azure serves too.
        ClientApi::Responses | ClientApi::Media(_)
            if matches!(
                schema,
                BackendSchema::OpenAI { .. } | BackendSchema::AzureOpenAI { .. }
            ) =>
        {
            same_api(a, body, &model, peek.stream)?
        }
        ClientApi::Rerank
            if matches!(
                schema,
                BackendSchema::OpenAI { .. } | BackendSchema::Cohere { .. }
            ) =>
        {
            same_api(a, body, &model, false)?
        }
        ClientApi::Rerank => {
            return Err(served_only_by("rerank", "Cohere and OpenAI-schema", schema))
        }
        ClientApi::CountTokens => count_tokens(a, body, &model)?,
        // Answered before the body is peeked at; never here.
        ClientApi::Passthrough => return Ok(prepare_without_body(a)),
        ClientApi::Media(e) => {
            return Err(served_only_by(e.path(), "OpenAI and Azure OpenAI", schema))
        }
        // Every other backend: through the hub, stateless.
        ClientApi::Responses => {
            let hub = responses::client_request(body, &model)?;
            chat(a, &hub, &model)?
        }
        ClientApi::Completions => {
            return Err(served_only_by(
                "legacy completions",
                "OpenAI-schema",
                schema,
            ))
        }
        ClientApi::Embeddings => embeddings(a, body, &model)?,
        ClientApi::Chat => {
            let hub = hub_request(body, &model)?;
            chat(a, &hub, &model)?
        }
        ClientApi::Messages => messages(a, body, &model, peek.stream)?,
    };
    if !a.backend.body_mutation.is_empty() {
        let current = prepared.body.as_deref().unwrap_or(body);
        prepared.body = Some(mutate(current, &a.backend.body_mutation)?);
    }
    match &a.backend.lambda {
        None => Ok(prepared),
        Some(f) => lambda::invoke(f, prepared),
    }
}

/// A request body read whole; an error names the offending field by its path.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, TranslateError> {
    // Tracking the path slows every parse down; only a body that fails needs it.
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let v = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".into() } else { path };
        TranslateError::invalid(field, e.into_inner().to_string())
    })?;
    // As `from_slice` does: nothing but whitespace may follow the value.
    de.end()
        .map_err(|e| TranslateError::invalid("body", e.to_string()))?;
    Ok(v)
}

/// An OpenAI chat request, read whole; `model` is the one the provider gets.
fn hub_request(body: &[u8], model: &str) -> Result<ChatCompletionRequest, TranslateError> {
    let mut req: ChatCompletionRequest = read_json(body)?;
    req.model = model.to_string();
    Ok(req)
}

/// The Gemini API a backend speaks, if it is a Gemini backend.
fn gemini_api(schema: &BackendSchema) -> Option<gemini::Api<'_>> {
    match schema {
        BackendSchema::Gemini { version } => Some(gemini::Api::AiStudio {
            version: version.as_deref(),
        }),
        BackendSchema::GcpVertexAi {
            project,
            region,
            version,
        } => Some(gemini::Api::Vertex {
            project,
            region,
            version: version.as_deref(),
        }),
        _ => None,
    }
}

/// A hub chat request to a provider of another API.
fn chat(
    a: &Attempt<'_>,
    hub: &ChatCompletionRequest,
    model: &str,
) -> Result<Prepared, TranslateError> {
    let stream = hub.is_stream();
    let include_usage = hub
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let schema = &a.backend.schema;
    let (up, reader) = if schema.is_openai_family() {
        // Reached from an Anthropic or Responses client only: the hub is OpenAI's own body.
        let body =
            serde_json::to_vec(hub).map_err(|e| TranslateError::invalid("body", e.to_string()))?;
        let path = openai_path(
            &Attempt {
                api: ClientApi::Chat,
                ..*a
            },
            model,
        );
        (
            UpstreamRequest {
                path,
                body,
                headers: vec![("content-type", "application/json".into())],
            },
            Reader::OpenAi,
        )
    } else if let Some(api) = gemini_api(schema) {
        (gemini::chat_request(hub, &api, model)?, Reader::Gemini)
    } else if *schema == BackendSchema::AwsBedrock {
        (bedrock::chat_request(hub, model)?, Reader::Bedrock)
    } else if let Some(target) = anthropic_target(schema, model, stream, include_usage) {
        let eventstream = target.flavor == anthropic::Flavor::Bedrock;
        (
            anthropic::chat_request(hub, &target)?,
            Reader::Anthropic { eventstream },
        )
    } else {
        return Err(TranslateError::unsupported(
            "model",
            format!("{} backends serve rerank only", schema_name(schema)),
        ));
    };
    Ok(Prepared {
        path: up.path,
        body: Some(up.body),
        headers: up.headers,
        response: ResponsePlan::new(a, reader, stream, include_usage),
    })
}

/// An OpenAI embeddings request to a provider of another API.
fn embeddings(a: &Attempt<'_>, body: &[u8], model: &str) -> Result<Prepared, TranslateError> {
    let req: EmbeddingsRequest = read_json(body)?;
    let base64 = req.wants_base64();
    let schema = &a.backend.schema;
    let up = if let Some(api) = gemini_api(schema) {
        gemini::embeddings_request(&req, &api, model)?
    } else if *schema == BackendSchema::AwsBedrock {
        bedrock::embeddings_request(&req, model)?
    } else {
        return Err(TranslateError::unsupported(
            "model",
            format!("{} backends serve no embeddings", schema_name(schema)),
        ));
    };
    Ok(Prepared {
        path: up.path,
        body: Some(up.body),
        headers: up.headers,
        response: ResponsePlan::new(
            a,
            Reader::Embeddings {
                model: model.to_string(),
                base64,
            },
            false,
            false,
        ),
    })
}

/// An Anthropic Messages request: passed through (with the flavor's edits) to an
/// Anthropic model, through the hub to any other provider.
fn messages(
    a: &Attempt<'_>,
    body: &[u8],
    model: &str,
    stream: bool,
) -> Result<Prepared, TranslateError> {
    if let Some(target) = anthropic_target(&a.backend.schema, model, stream, true) {
        let eventstream = target.flavor == anthropic::Flavor::Bedrock;
        let mut up = anthropic::messages_request(body, &target)?;
        if let (Some(beta), false) = (a.anthropic_beta, target.flavor == anthropic::Flavor::Native)
        {
            // Bedrock and Vertex read beta flags from the body, not the header.
            let flags: Vec<Value> = beta
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(|f| Value::String(f.to_string()))
                .collect();
            up.body = edit_object(&up.body, |o| {
                o.insert("anthropic_beta".into(), Value::Array(flags));
            })?;
        }
        return Ok(Prepared {
            path: up.path,
            body: Some(up.body),
            headers: up.headers,
            response: ResponsePlan::new(a, Reader::AnthropicMessages { eventstream }, stream, true),
        });
    }
    let mut hub = anthropic::client_request(body)?;
    hub.model = model.to_string();
    chat(a, &hub, model)
}

/// Anthropic's token counting, on an Anthropic-family backend only.
fn count_tokens(a: &Attempt<'_>, body: &[u8], model: &str) -> Result<Prepared, TranslateError> {
    let Some(target) = anthropic_target(&a.backend.schema, model, false, false) else {
        return Err(served_only_by(
            "token counting",
            "Anthropic, GCPAnthropic and AWSAnthropic",
            &a.backend.schema,
        ));
    };
    let reader = match target.flavor {
        anthropic::Flavor::Bedrock => Reader::BedrockCountTokens,
        _ => Reader::AnthropicMessages { eventstream: false },
    };
    let up = anthropic::count_tokens_request(body, &target)?;
    Ok(Prepared {
        path: up.path,
        body: Some(up.body),
        headers: up.headers,
        response: ResponsePlan::new(a, reader, false, false),
    })
}

/// Where an Anthropic-family backend takes a request.
fn anthropic_target<'a>(
    schema: &'a BackendSchema,
    model: &'a str,
    stream: bool,
    include_usage: bool,
) -> Option<anthropic::Target<'a>> {
    let (flavor, version) = match schema {
        BackendSchema::Anthropic { version } => (anthropic::Flavor::Native, version),
        BackendSchema::GcpAnthropic {
            project,
            region,
            version,
        } => (anthropic::Flavor::Vertex { project, region }, version),
        BackendSchema::AwsAnthropic { version } => (anthropic::Flavor::Bedrock, version),
        _ => return None,
    };
    Some(anthropic::Target {
        flavor,
        model,
        stream,
        include_usage,
        version: version.as_deref(),
    })
}

/// A 422: `what` is an API only `by` serve.
fn served_only_by(what: &str, by: &str, schema: &BackendSchema) -> TranslateError {
    TranslateError::unsupported(
        "model",
        format!(
            "{what} is served by {by} backends only, not {}",
            schema_name(schema)
        ),
    )
}

fn schema_name(s: &BackendSchema) -> &'static str {
    match s {
        BackendSchema::OpenAI { .. } => "OpenAI",
        BackendSchema::Mistral => "Mistral",
        BackendSchema::AzureOpenAI { .. } => "AzureOpenAI",
        BackendSchema::AwsBedrock => "AWSBedrock",
        BackendSchema::AwsAnthropic { .. } => "AWSAnthropic",
        BackendSchema::Anthropic { .. } => "Anthropic",
        BackendSchema::GcpAnthropic { .. } => "GCPAnthropic",
        BackendSchema::GcpVertexAi { .. } => "GCPVertexAI",
        BackendSchema::Gemini { .. } => "Gemini",
        BackendSchema::Cohere { .. } => "Cohere",
    }
}

/// The path on an OpenAI-schema server: the client's path with `/v1` replaced by the
/// backend's prefix (query kept), or Azure's deployment path.
/// The client's API on a backend that speaks it: only the model and the path change.
fn same_api(
    a: &Attempt<'_>,
    body: &[u8],
    model: &str,
    stream: bool,
) -> Result<Prepared, TranslateError> {
    let body =
        match &a.backend.model_name_override {
            None => None,
            Some(m) => match Form::parse(body) {
                Some(form) => Some(form.with_text("model", m).ok_or_else(|| {
                    TranslateError::invalid("model", "the form has no model field")
                })?),
                None => Some(edit_object(body, |o| {
                    o.insert("model".into(), Value::String(m.clone()));
                })?),
            },
        };
    Ok(Prepared {
        path: same_api_path(a, model),
        body,
        headers: Vec::new(),
        response: ResponsePlan::passthrough(a, stream),
    })
}

/// The path of a request that goes as the client sent it: a passthrough's own path
/// (an OpenAI-schema backend's prefix in place of `/v1`), Cohere's rerank path, or
/// the OpenAI-schema path.
fn same_api_path(a: &Attempt<'_>, model: &str) -> String {
    match (&a.backend.schema, a.api) {
        (BackendSchema::OpenAI { prefix }, ClientApi::Passthrough) => {
            match a.path.strip_prefix("/v1") {
                Some(rest) if rest.is_empty() || rest.starts_with(['/', '?']) => {
                    format!("{prefix}{rest}")
                }
                _ => a.path.to_string(),
            }
        }
        (_, ClientApi::Passthrough) => a.path.to_string(),
        (BackendSchema::Cohere { version }, _) => {
            with_query(format!("/{version}/rerank"), split_query(a.path).1)
        }
        _ => openai_path(a, model),
    }
}

fn openai_path(a: &Attempt<'_>, model: &str) -> String {
    let (_, query) = split_query(a.path);
    let suffix = a.api.openai_suffix();
    match &a.backend.schema {
        // Azure serves the Responses API on its v1 path only, with the deployment
        // named by the body's model and no api-version.
        BackendSchema::AzureOpenAI { .. } if a.api == ClientApi::Responses => {
            let query: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("api-version="))
                .collect();
            with_query(format!("/openai/v1{suffix}"), &query.join("&"))
        }
        BackendSchema::AzureOpenAI { api_version } => {
            let mut path = format!(
                "/openai/deployments/{}{suffix}?api-version={}",
                crate::auth::sigv4::encode_path_segment(model),
                api_version
            );
            // The client's own query parameters, except a competing api-version.
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                if !pair.starts_with("api-version=") {
                    path.push('&');
                    path.push_str(pair);
                }
            }
            path
        }
        BackendSchema::OpenAI { prefix } => with_query(format!("{prefix}{suffix}"), query),
        _ => with_query(format!("/v1{suffix}"), query),
    }
}

fn split_query(path: &str) -> (&str, &str) {
    path.split_once('?').unwrap_or((path, ""))
}

fn with_query(mut path: String, query: &str) -> String {
    if !query.is_empty() {
        path.push('?');
        path.push_str(query);
    }
    path
}

/// The few request fields every translation looks at.
#[derive(serde::Deserialize)]
struct Peek {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
}

impl Peek {
    fn of(body: &[u8]) -> Result<PeekFacts, TranslateError> {
        if let Some(form) = Form::parse(body) {
            return Ok(PeekFacts {
                model: form
                    .text("model")
                    .filter(|m| !m.is_empty())
                    .map(str::to_string),
                stream: form.text("stream") == Some("true"),
            });
        }
        let p: Peek = serde_json::from_slice(body)
            .map_err(|e| TranslateError::invalid("body", e.to_string()))?;
        Ok(PeekFacts {
            model: p.model.filter(|m| !m.is_empty()),
            stream: p.stream == Some(true),
        })
    }
}

struct PeekFacts {
    model: Option<String>,
    stream: bool,
}

/// Re-serialises a JSON object with top-level edits; key order is kept.
pub(crate) fn edit_object(
    body: &[u8],
    edit: impl FnOnce(&mut Map<String, Value>),
) -> Result<Vec<u8>, TranslateError> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| TranslateError::invalid("body", e.to_string()))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| TranslateError::invalid("body", "expected a JSON object"))?;
    edit(obj);
    serde_json::to_vec(&value).map_err(|e| TranslateError::invalid("body", e.to_string()))
}

/// Applies a backend's body mutation to the body it will receive.
pub fn mutate(body: &[u8], m: &BodyMutation) -> Result<Vec<u8>, TranslateError> {
    edit_object(body, |o| {
        for field in &m.remove {
            o.remove(field);
        }
        for (field, value) in &m.set {
            o.insert(field.clone(), value.clone());
        }
    })
}

impl ResponsePlan {
    fn passthrough(a: &Attempt<'_>, stream: bool) -> Self {
        ResponsePlan::new(a, Reader::Passthrough, stream, false)
    }

    fn new(a: &Attempt<'_>, kind: Reader, stream: bool, include_usage: bool) -> Self {
        ResponsePlan {
            kind,
            schema: a.backend.schema.clone(),
            api: a.api,
            stream,
            include_usage,
            meta: ResponseMeta {
                id: format!("chatcmpl-{}", a.request_id),
                model: a.client_model.to_string(),
                created: a.unix_seconds,
            },
            max_event_bytes: a.max_event_bytes,
            lambda: false,
        }
    }

    /// The answer comes from an AWS Lambda invocation: a failed function and
    /// Lambda's own errors are read as such.
    pub(crate) fn via_lambda(&mut self) {
        self.lambda = true;
    }

    /// The answer passes as the provider sent it (errors included).
    pub fn is_passthrough(&self) -> bool {
        self.kind == Reader::Passthrough && !self.lambda
    }

    /// Whether an answer with this status and these headers is a success (a 2xx,
    /// but not a failed Lambda function's).
    pub fn succeeded(&self, status: u16, headers: &dyn Headers) -> bool {
        (200..300).contains(&status) && !(self.lambda && lambda::is_function_error(headers))
    }

    /// Whether a successful answer reaches the client as the provider sent it
    /// (`streamed`: it is an event stream): always for a passthrough, and for an
    /// Anthropic client of an Anthropic model but for Bedrock's binary stream.
    pub fn answer_passes(&self, streamed: bool) -> bool {
        match self.kind {
            Reader::Passthrough => true,
            Reader::AnthropicMessages { eventstream } => !(eventstream && streamed),
            _ => false,
        }
    }

    /// The client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// A provider error answer in the client's schema: the status and body to send.
    /// `None` for a passthrough: the client understands the provider's own errors.
    pub fn error(&self, status: u16, headers: &dyn Headers, body: &[u8]) -> Option<(u16, Vec<u8>)> {
        if self.lambda {
            return Some(self.write_error(&lambda::error(status, headers, body)));
        }
        if self.kind == Reader::Passthrough {
            return None;
        }
        let e = if self.schema.is_openai_family() {
            openai::error(status, headers, body)
        } else if gemini_api(&self.schema).is_some() {
            gemini::error(status, headers, body)
        } else if self.schema == BackendSchema::AwsBedrock {
            bedrock::error(status, headers, body)
        } else if self.schema.is_anthropic_family() {
            anthropic::error(status, headers, body)
        } else {
            ProviderError::new(status, None, format!("the provider answered {status}"))
        };
        Some(self.write_error(&e))
    }

    /// A whole (non-streamed) answer for the client.
    pub fn body(&self, body: &[u8]) -> Result<Vec<u8>, (u16, Vec<u8>)> {
        let completion = match &self.kind {
            Reader::BedrockCountTokens => {
                return anthropic::bedrock_count_response(body)
                    .map_err(|e| self.write_error(&ProviderError::from_translate(&e)))
            }
            Reader::Passthrough | Reader::AnthropicMessages { .. } => return Ok(body.to_vec()),
            Reader::OpenAi => openai::chat_response(body),
            Reader::Anthropic { .. } => anthropic::chat_response(body, &self.meta),
            Reader::Gemini => gemini::chat_response(body, &self.meta),
            Reader::Bedrock => bedrock::chat_response(body, &self.meta),
            Reader::Embeddings { model, base64 } => {
                let answer = match gemini_api(&self.schema) {
                    Some(api) => gemini::embeddings_response(body, &api, model, *base64),
                    None => bedrock::embeddings_response(body, model, *base64),
                };
                return match answer {
                    Ok(e) => Ok(serde_json::to_vec(&e).unwrap_or_default()),
                    Err(e) => Err(self.write_error(&ProviderError::from_translate(&e))),
                };
            }
        };
        match completion {
            Ok(c) => Ok(self.write_completion(&c)),
            Err(e) => Err(self.write_error(&ProviderError::from_translate(&e))),
        }
    }

    /// The stream translator, when the answer is streamed and must be translated.
    pub fn stream(&self) -> Option<StreamTranslator> {
        let (meta, usage, max) = (self.meta.clone(), self.include_usage, self.max_event_bytes);
        let source: Box<dyn ChunkSource> = match self.kind {
            Reader::Passthrough
            | Reader::Embeddings { .. }
            | Reader::BedrockCountTokens
            | Reader::AnthropicMessages { eventstream: false } => return None,
            Reader::AnthropicMessages { eventstream: true } => {
                return Some(StreamTranslator::Messages(Box::new(
                    anthropic::MessagesStream::new(max),
                )))
            }
            Reader::OpenAi => Box::new(openai::ChatStream::new(max)),
            Reader::Gemini => Box::new(gemini::ChatStream::new(meta, usage, max)),
            Reader::Bedrock => Box::new(bedrock::ChatStream::new(meta, usage, max)),
            Reader::Anthropic { eventstream } => {
                let framing = if eventstream {
                    anthropic::Framing::EventStream
                } else {
                    anthropic::Framing::Sse
                };
                Box::new(anthropic::ChatStream::new(framing, meta, usage, max))
            }
        };
        let client = match self.api {
            ClientApi::Responses => {
                ClientEncoder::Responses(Box::new(responses::ClientStream::new(&self.meta)))
            }
            ClientApi::Messages => {
                ClientEncoder::Anthropic(Box::new(anthropic::ClientStream::new(&self.meta.model)))
            }
            _ => ClientEncoder::OpenAi,
        };
        Some(StreamTranslator::Hub {
            source,
            client,
            items: Vec::new(),
        })
    }

    fn write_completion(&self, c: &ChatCompletion) -> Vec<u8> {
        match self.api {
            ClientApi::Responses => responses::client_response(c, &self.meta),
            ClientApi::Messages => anthropic::client_response(c),
            _ => serde_json::to_vec(c).unwrap_or_default(),
        }
    }

    fn write_error(&self, e: &ProviderError) -> (u16, Vec<u8>) {
        // OpenAI clients know no 529.
        let client = self.api.schema();
        let status = match (client, e.status) {
            (ClientSchema::OpenAI, 529) => 503,
            (_, s) => s,
        };
        (status, e.body(client))
    }
}

/// A streamed answer on its way to the client: provider bytes in, client bytes out.
#[derive(Debug)]
pub enum StreamTranslator {
    /// Provider stream → hub items → the client's stream.
    Hub {
        source: Box<dyn ChunkSource>,
        client: ClientEncoder,
        items: Vec<StreamItem>,
    },
    /// Bedrock's InvokeModel stream of Anthropic events, for an Anthropic client.
    Messages(Box<anthropic::MessagesStream>),
}

/// Writes hub items in the client's stream format.
#[derive(Debug)]
pub enum ClientEncoder {
    OpenAi,
    Anthropic(Box<anthropic::ClientStream>),
    Responses(Box<responses::ClientStream>),
}

impl StreamTranslator {
    /// Translates one body chunk; what the client gets is appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) {
        match self {
            StreamTranslator::Messages(m) => m.feed(chunk, end_of_stream, out),
            StreamTranslator::Hub {
                source,
                client,
                items,
            } => {
                items.clear();
                source.feed(chunk, end_of_stream, items);
                for item in items.iter() {
                    match client {
                        ClientEncoder::OpenAi => encode_openai_sse(item, out),
                        ClientEncoder::Anthropic(c) => c.encode(item, out),
                        ClientEncoder::Responses(c) => c.encode(item, out),
                    }
                }
                if end_of_stream {
                    if let ClientEncoder::Anthropic(c) = client {
                        c.finish(out);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn backend(json: serde_json::Value) -> Backend {
        let doc = serde_json::json!({"version": "v1", "backends": [json]});
        Config::from_json(&serde_json::to_vec(&doc).unwrap())
            .unwrap()
            .backends[0]
            .clone()
    }

    fn attempt<'a>(api: ClientApi, b: &'a Backend, path: &'a str) -> Attempt<'a> {
        Attempt {
            api,
            backend: b,
            path,
            client_model: "gpt-4o",
            request_id: "r1",
            unix_seconds: 1,
            max_event_bytes: 1 << 20,
            anthropic_beta: None,
        }
    }

    /// Fuzzing (request_body): the path-tracking parse, taken when the fast one
    /// fails, read a value and ignored the bytes after it.
    #[test]
    fn fuzz_request_body_read_json_refuses_trailing_bytes() {
        let r: Result<serde_json::Value, _> = read_json(b"{\"model\":\"m\"}\0");
        assert!(
            matches!(&r, Err(TranslateError::InvalidRequest { field, .. }) if field == "body"),
            "{r:?}"
        );
        let ok: serde_json::Value = read_json(b"{\"model\":\"m\"}\n").unwrap();
        assert_eq!(ok["model"], "m");
    }

    #[test]
    fn openai_paths_follow_prefix_and_azure_deployments() {
        let plain = backend(serde_json::json!({"name": "o", "schema": {"name": "OpenAI"}}));
        let p = prepare_without_body(&attempt(
            ClientApi::Chat,
            &plain,
            "/v1/chat/completions?x=1",
        ));
        assert_eq!(p.path, "/v1/chat/completions?x=1");
        let compat = backend(
            serde_json::json!({"name": "o", "schema": {"name": "OpenAI", "version": "v1beta/openai"}}),
        );
        assert!(!needs_body(ClientApi::Embeddings, &compat));
        let p = prepare_without_body(&attempt(ClientApi::Embeddings, &compat, "/v1/embeddings"));
        assert_eq!(p.path, "/v1beta/openai/embeddings");
        let root =
            backend(serde_json::json!({"name": "o", "schema": {"name": "OpenAI", "version": "/"}}));
        let p = prepare_without_body(&attempt(ClientApi::Chat, &root, "/v1/chat/completions"));
        assert_eq!(p.path, "/chat/completions");

        let azure = backend(
            serde_json::json!({"name": "a", "schema": {"name": "AzureOpenAI", "version": "2025-01-01-preview"}}),
        );
        assert!(needs_body(ClientApi::Chat, &azure));
        let p = prepare(
            &attempt(
                ClientApi::Chat,
                &azure,
                "/v1/chat/completions?api-version=x&foo=1",
            ),
            br#"{"model":"gpt-4o-mini","messages":[]}"#,
        )
        .unwrap();
        assert_eq!(
            p.path,
            "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2025-01-01-preview&foo=1"
        );
        assert!(p.body.is_none());
        assert!(p.response.is_passthrough());
    }

    #[test]
    fn rerank_goes_to_cohere_and_openai_schema_servers_only() {
        let body = br#"{"model":"rerank-v3.5","query":"q","documents":["a","b"]}"#;
        let cohere = backend(serde_json::json!({"name": "c", "schema": {"name": "Cohere"}}));
        assert!(!needs_body(ClientApi::Rerank, &cohere));
        let p = prepare_without_body(&attempt(ClientApi::Rerank, &cohere, "/v1/rerank"));
        assert_eq!(p.path, "/v2/rerank");
        assert!(p.response.is_passthrough());
        let renamed = backend(
            serde_json::json!({"name": "c", "schema": {"name": "Cohere"}, "modelNameOverride": "rerank-english-v3.0"}),
        );
        let p = prepare(&attempt(ClientApi::Rerank, &renamed, "/v2/rerank"), body).unwrap();
        assert_eq!(p.path, "/v2/rerank");
        let sent: Value = serde_json::from_slice(p.body.as_deref().unwrap()).unwrap();
        assert_eq!(sent["model"], "rerank-english-v3.0");
        assert_eq!(sent["documents"][1], "b");

        let vllm = backend(serde_json::json!({"name": "o", "schema": {"name": "OpenAI"}}));
        let p = prepare_without_body(&attempt(ClientApi::Rerank, &vllm, "/v2/rerank"));
        assert_eq!(p.path, "/v1/rerank");

        let bedrock = backend(
            serde_json::json!({"name": "b", "schema": {"name": "AWSBedrock"}, "region": "us-east-1"}),
        );
        let e = prepare(&attempt(ClientApi::Rerank, &bedrock, "/v1/rerank"), body).unwrap_err();
        assert_eq!(e.status(), 422);
        // A Cohere backend serves nothing else.
        let chat = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let e = prepare(
            &attempt(ClientApi::Chat, &cohere, "/v1/chat/completions"),
            chat,
        )
        .unwrap_err();
        assert!(
            matches!(&e, TranslateError::Unsupported { reason, .. } if reason.contains("rerank only"))
        );
    }

    #[test]
    fn token_counts_go_to_anthropic_models_and_bedrock_answers_are_read_back() {
        let body = br#"{"model":"claude-sonnet","messages":[{"role":"user","content":"hi"}]}"#;
        let native = backend(serde_json::json!({"name": "a", "schema": {"name": "Anthropic"}}));
        assert!(needs_body(ClientApi::CountTokens, &native));
        let a = attempt(
            ClientApi::CountTokens,
            &native,
            "/anthropic/v1/messages/count_tokens",
        );
        let p = prepare(&a, body).unwrap();
        assert_eq!(p.path, "/v1/messages/count_tokens");
        assert!(p.response.answer_passes(false));

        let bedrock = backend(
            serde_json::json!({"name": "b", "schema": {"name": "AWSAnthropic"},
            "region": "us-east-1", "modelNameOverride": "anthropic.claude-3-5-haiku-20241022-v1:0"}),
        );
        let a = attempt(
            ClientApi::CountTokens,
            &bedrock,
            "/anthropic/v1/messages/count_tokens",
        );
        let p = prepare(&a, body).unwrap();
        assert_eq!(
            p.path,
            "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/count-tokens"
        );
        assert!(!p.response.answer_passes(false));
        assert_eq!(
            p.response.body(br#"{"inputTokens":9}"#).unwrap(),
            br#"{"input_tokens":9}"#
        );
        let (status, err) = p.response.body(b"not json").unwrap_err();
        assert_eq!(status, 502);
        assert!(String::from_utf8_lossy(&err).contains("\"type\":\"error\""));

        let openai = backend(serde_json::json!({"name": "o", "schema": {"name": "OpenAI"}}));
        let a = attempt(
            ClientApi::CountTokens,
            &openai,
            "/anthropic/v1/messages/count_tokens",
        );
        assert_eq!(prepare(&a, body).unwrap_err().status(), 422);
    }

    #[test]
    fn a_passthrough_keeps_its_path_under_the_backends_prefix_and_its_body() {
        let compat = backend(
            serde_json::json!({"name": "o", "schema": {"name": "OpenAI", "version": "v1beta/openai"},
                "modelNameOverride": "ignored", "bodyMutation": {"set": [{"field": "x", "value": 1}]}}),
        );
        assert!(!needs_body(ClientApi::Passthrough, &compat));
        let a = attempt(
            ClientApi::Passthrough,
            &compat,
            "/v1/files/file-1/content?x=1",
        );
        let p = prepare_without_body(&a);
        assert_eq!(p.path, "/v1beta/openai/files/file-1/content?x=1");
        assert!(p.body.is_none() && p.response.is_passthrough());
        let a = attempt(ClientApi::Passthrough, &compat, "/v1beta2/things");
        assert_eq!(prepare_without_body(&a).path, "/v1beta2/things");

        let signed = backend(
            serde_json::json!({"name": "b", "schema": {"name": "AWSBedrock"},
            "region": "us-east-1", "auth": {"awsSigV4": {"accessKeyId": "AKID", "secretAccessKey": "s"}}}),
        );
        assert!(needs_body(ClientApi::Passthrough, &signed));
        let a = attempt(
            ClientApi::Passthrough,
            &signed,
            "/guardrail/g1/version/1/apply",
        );
        let p = prepare(&a, b"not json at all").unwrap();
        assert_eq!(p.path, "/guardrail/g1/version/1/apply");
        assert!(p.body.is_none());
    }

    #[test]
    fn responses_go_as_they_are_to_openai_and_azure_and_through_the_hub_elsewhere() {
        let body = br#"{"model":"gpt-4.1","input":"hi","stream":true}"#;
        let plain = backend(serde_json::json!({"name": "o", "schema": {"name": "OpenAI"}}));
        assert!(!needs_body(ClientApi::Responses, &plain));
        let p = prepare_without_body(&attempt(ClientApi::Responses, &plain, "/v1/responses"));
        assert_eq!(p.path, "/v1/responses");
        assert!(p.response.is_passthrough());

        let azure = backend(
            serde_json::json!({"name": "a", "schema": {"name": "AzureOpenAI", "version": "2024-10-21"},
                "modelNameOverride": "my-deployment"}),
        );
        let p = prepare(
            &attempt(
                ClientApi::Responses,
                &azure,
                "/v1/responses?api-version=x&foo=1",
            ),
            body,
        )
        .unwrap();
        assert_eq!(p.path, "/openai/v1/responses?foo=1");
        let sent: Value = serde_json::from_slice(p.body.as_deref().unwrap()).unwrap();
        assert_eq!(sent["model"], "my-deployment");
        assert_eq!(sent["input"], "hi");
        assert!(p.response.is_passthrough() && p.response.is_stream());

        // Every other schema: through the hub, stateless only.
        let stateful = br#"{"model":"m","input":"hi","previous_response_id":"resp_1"}"#;
        for (schema, path) in [
            ("Anthropic", "/v1/messages"),
            ("AWSBedrock", "/model/gpt-4.1/converse-stream"),
            ("Mistral", "/v1/chat/completions"),
        ] {
            let b = backend(serde_json::json!({"name": "x", "schema": {"name": schema},
                "region": "us-east-1", "project": "p"}));
            assert!(needs_body(ClientApi::Responses, &b), "{schema}");
            let p = prepare(&attempt(ClientApi::Responses, &b, "/v1/responses"), body).unwrap();
            assert_eq!(p.path, path, "{schema}");
            assert!(!p.response.is_passthrough() && p.response.stream().is_some());
            let e = prepare(
                &attempt(ClientApi::Responses, &b, "/v1/responses"),
                stateful,
            )
            .unwrap_err();
            assert_eq!(e.status(), 422, "{schema}");
            assert!(
                e.to_string().contains("previous_response_id"),
                "{schema}: {e}"
            );
        }
    }

    #[test]
    fn images_and_audio_go_as_they_are_to_openai_and_azure_only() {
        let api = ClientApi::Media(Endpoint::AudioTranscriptions);
        let form = b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\n--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--B--\r\n";
        let plain = backend(serde_json::json!({"name": "o", "schema": {"name": "OpenAI"}}));
        assert!(!needs_body(api, &plain));
        let p = prepare_without_body(&attempt(api, &plain, "/v1/audio/transcriptions"));
        assert_eq!(p.path, "/v1/audio/transcriptions");

        let azure = backend(serde_json::json!({"name": "a",
            "schema": {"name": "AzureOpenAI", "version": "2025-04-01-preview"},
            "modelNameOverride": "my-whisper"}));
        let p = prepare(&attempt(api, &azure, "/v1/audio/transcriptions"), form).unwrap();
        assert_eq!(
            p.path,
            "/openai/deployments/my-whisper/audio/transcriptions?api-version=2025-04-01-preview"
        );
        let sent = p.body.unwrap();
        assert_eq!(
            Form::parse(&sent).unwrap().text("model"),
            Some("my-whisper")
        );
        assert!(sent.windows(4).any(|w| w == b"RIFF"));

        let images = ClientApi::Media(Endpoint::ImagesGenerations);
        let claude = backend(serde_json::json!({"name": "c", "schema": {"name": "Anthropic"}}));
        let e = prepare(
            &attempt(images, &claude, "/v1/images/generations"),
            br#"{"model":"gpt-image-1","prompt":"a cat"}"#,
        )
        .unwrap_err();
        assert_eq!(e.status(), 422);
        assert!(e.to_string().contains("/v1/images/generations"), "{e}");
    }

    #[test]
    fn override_and_body_mutation_edit_the_body() {
        let b = backend(serde_json::json!({
            "name": "o", "schema": {"name": "OpenAI"}, "modelNameOverride": "m2",
            "bodyMutation": {"set": [{"field": "service_tier", "value": "flex"}], "remove": ["user"]}
        }));
        assert!(needs_body(ClientApi::Chat, &b));
        let p = prepare(
            &attempt(ClientApi::Chat, &b, "/v1/chat/completions"),
            br#"{"model":"m","user":"u","messages":[]}"#,
        )
        .unwrap();
        assert_eq!(
            p.body.unwrap(),
            br#"{"model":"m2","messages":[],"service_tier":"flex"}"#
        );
    }

    const CHAT: &[u8] = br#"{"model":"claude","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"max_tokens":50}"#;

    #[test]
    fn chat_to_bedrock_and_back() {
        let b = backend(serde_json::json!({
            "name": "br", "schema": {"name": "AWSBedrock"}, "region": "us-east-1",
            "modelNameOverride": "anthropic.claude-3-haiku-20240307-v1:0"
        }));
        let a = attempt(ClientApi::Chat, &b, "/v1/chat/completions");
        let p = prepare(&a, CHAT).unwrap();
        assert_eq!(
            p.path,
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        );
        let body: Value = serde_json::from_slice(p.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["system"][0]["text"], "be brief");
        assert_eq!(body["inferenceConfig"]["maxTokens"], 50);
        assert!(body.get("model").is_none());
        assert!(!p.response.is_passthrough());

        let answer = br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hello"}]}},"stopReason":"end_turn","usage":{"inputTokens":5,"outputTokens":1,"totalTokens":6}}"#;
        let client: Value = serde_json::from_slice(&p.response.body(answer).unwrap()).unwrap();
        assert_eq!(client["object"], "chat.completion");
        assert_eq!(client["id"], "chatcmpl-r1");
        assert_eq!(client["model"], "gpt-4o");
        assert_eq!(client["choices"][0]["message"]["content"], "Hello");
        assert_eq!(client["usage"]["total_tokens"], 6);

        let h = [(
            "x-amzn-errortype",
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
        )];
        let (status, body) = p
            .response
            .error(429, &h, br#"{"message":"Too many requests"}"#)
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 429);
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["message"], "Too many requests");

        // An unreadable answer is a 502 in the client's schema, not a crash.
        let (status, body) = p.response.body(b"<html>").unwrap_err();
        assert_eq!(status, 502);
        assert!(serde_json::from_slice::<Value>(&body).unwrap()["error"].is_object());
    }

    #[test]
    fn streamed_chat_to_bedrock_becomes_openai_sse() {
        let b = backend(
            serde_json::json!({"name": "br", "schema": {"name": "AWSBedrock"}, "region": "us-west-2"}),
        );
        let a = attempt(ClientApi::Chat, &b, "/v1/chat/completions");
        let req = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
        let p = prepare(&a, req).unwrap();
        assert_eq!(p.path, "/model/m/converse-stream");
        let mut t = p.response.stream().expect("a stream translator");
        let frames = crate::translate::testing::converse_stream(&["Hel", "lo"], 3, 2);
        let mut out = Vec::new();
        for piece in frames.chunks(7) {
            t.feed(piece, false, &mut out);
        }
        t.feed(&[], true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let content: String = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(content, "Hello");
        assert!(text.contains(r#""total_tokens":5"#));
    }

    #[test]
    fn chat_and_embeddings_to_gemini() {
        let b = backend(serde_json::json!({
            "name": "g", "schema": {"name": "GCPVertexAI"}, "project": "p1", "region": "us-central1"
        }));
        let a = attempt(ClientApi::Chat, &b, "/v1/chat/completions");
        let p = prepare(&a, br#"{"model":"gemini-2.0-flash","stream":true,"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(
            p.path,
            "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
        );
        assert!(p.response.stream().is_some());
        let a = attempt(ClientApi::Embeddings, &b, "/v1/embeddings");
        let p = prepare(&a, br#"{"model":"text-embedding-005","input":"hi"}"#).unwrap();
        assert!(p.path.ends_with("text-embedding-005:predict"), "{}", p.path);
        let answer = br#"{"predictions":[{"embeddings":{"values":[0.5,-1],"statistics":{"token_count":2}}}]}"#;
        let v: Value = serde_json::from_slice(&p.response.body(answer).unwrap()).unwrap();
        assert_eq!(v["data"][0]["embedding"], serde_json::json!([0.5, -1.0]));
        assert_eq!(v["usage"]["prompt_tokens"], 2);
    }

    fn sse_data(bytes: &[u8]) -> Vec<Value> {
        String::from_utf8_lossy(bytes)
            .split("\n\n")
            .flat_map(|e| e.lines())
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect()
    }

    #[test]
    fn chat_to_anthropic_native() {
        let b = backend(serde_json::json!({"name": "a", "schema": {"name": "Anthropic"}}));
        let p = prepare(&attempt(ClientApi::Chat, &b, "/v1/chat/completions"), CHAT).unwrap();
        assert_eq!(p.path, "/v1/messages");
        assert!(p
            .headers
            .iter()
            .any(|(n, v)| *n == "anthropic-version" && v == "2023-06-01"));
        let body: Value = serde_json::from_slice(p.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["model"], "claude");
        let answer = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":4,"cache_read_input_tokens":6,"output_tokens":2}}"#;
        let v: Value = serde_json::from_slice(&p.response.body(answer).unwrap()).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hi");
        assert_eq!(v["usage"]["prompt_tokens"], 10);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 6);
        let (status, body) = p
            .response
            .error(
                529,
                &[("content-type", "application/json")],
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )
            .unwrap();
        assert_eq!(status, 503, "OpenAI clients know no 529");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["error"]["message"],
            "Overloaded"
        );
    }

    const MESSAGES: &[u8] = br#"{"model":"claude","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

    #[test]
    fn messages_to_bedrock_anthropic_pass_through_as_sse() {
        use crate::codec::eventstream::encode_event;
        use base64::Engine as _;
        let b = backend(
            serde_json::json!({"name": "ba", "schema": {"name": "AWSAnthropic"}, "region": "us-east-1"}),
        );
        let mut a = attempt(ClientApi::Messages, &b, "/anthropic/v1/messages");
        a.anthropic_beta =
            Some("interleaved-thinking-2025-05-14, token-efficient-tools-2025-02-19");
        let p = prepare(&a, MESSAGES).unwrap();
        assert_eq!(p.path, "/model/claude/invoke-with-response-stream");
        let body: Value = serde_json::from_slice(p.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["anthropic_version"], "bedrock-2023-05-31");
        assert_eq!(
            body["anthropic_beta"],
            serde_json::json!([
                "interleaved-thinking-2025-05-14",
                "token-efficient-tools-2025-02-19"
            ])
        );
        assert!(body.get("model").is_none() && body.get("stream").is_none());
        let mut frames = Vec::new();
        for ev in [
            r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"claude","content":[],"usage":{"input_tokens":3,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Yo"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}"#,
            r#"{"type":"message_stop"}"#,
        ] {
            let b64 = base64::engine::general_purpose::STANDARD.encode(ev);
            frames.extend(
                encode_event("chunk", format!(r#"{{"bytes":"{b64}"}}"#).as_bytes()).unwrap(),
            );
        }
        let mut t = p.response.stream().unwrap();
        let mut out = Vec::new();
        for piece in frames.chunks(5) {
            t.feed(piece, false, &mut out);
        }
        t.feed(&[], true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: message_start\n"), "{text}");
        assert!(text.contains(r#""text":"Yo""#) && text.contains("event: message_stop"));
    }

    #[test]
    fn messages_through_the_hub_to_openai_and_bedrock() {
        // To an OpenAI-schema backend: an OpenAI chat body out, an Anthropic answer back.
        let o = backend(serde_json::json!({"name": "o", "schema": {"name": "OpenAI"}}));
        let body = br#"{"model":"claude","max_tokens":64,"system":"terse","messages":[{"role":"user","content":"hi"}]}"#;
        let p = prepare(
            &attempt(ClientApi::Messages, &o, "/anthropic/v1/messages"),
            body,
        )
        .unwrap();
        assert_eq!(p.path, "/v1/chat/completions");
        let sent: Value = serde_json::from_slice(p.body.as_deref().unwrap()).unwrap();
        assert_eq!(sent["messages"][0]["role"], "system");
        let answer = br#"{"id":"c1","object":"chat.completion","created":1,"model":"gpt","choices":[{"index":0,"message":{"role":"assistant","content":"Hey"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
        let v: Value = serde_json::from_slice(&p.response.body(answer).unwrap()).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["content"][0]["text"], "Hey");
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["usage"]["input_tokens"], 5);
        let (status, body) = p
            .response
            .error(
                429,
                &[],
                br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
            )
            .unwrap();
        let e: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((status, e["type"].as_str()), (429, Some("error")));
        assert_eq!(e["error"]["type"], "rate_limit_error");

        // To Bedrock Converse, streamed: Anthropic SSE events back.
        let br = backend(
            serde_json::json!({"name": "br", "schema": {"name": "AWSBedrock"}, "region": "us-east-1"}),
        );
        let p = prepare(
            &attempt(ClientApi::Messages, &br, "/anthropic/v1/messages"),
            MESSAGES,
        )
        .unwrap();
        assert_eq!(p.path, "/model/claude/converse-stream");
        let frames = crate::translate::testing::converse_stream(&["Yo"], 3, 1);
        let mut t = p.response.stream().unwrap();
        let mut out = Vec::new();
        t.feed(&frames, true, &mut out);
        let events = sse_data(&out);
        let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(types.first(), Some(&"message_start"));
        assert_eq!(types.last(), Some(&"message_stop"));
        let delta = events
            .iter()
            .find(|e| e["type"] == "message_delta")
            .unwrap();
        assert_eq!(delta["usage"]["output_tokens"], 1);
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    }

    #[test]
    fn what_a_provider_cannot_do_is_a_422() {
        let b = backend(
            serde_json::json!({"name": "br", "schema": {"name": "AWSBedrock"}, "region": "us-east-1"}),
        );
        let e = prepare(
            &attempt(ClientApi::Completions, &b, "/v1/completions"),
            br#"{"model":"m","prompt":"x"}"#,
        )
        .unwrap_err();
        assert_eq!(e.status(), 422);
        let e = prepare(
            &attempt(ClientApi::Chat, &b, "/v1/chat/completions"),
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":3}"#,
        )
        .unwrap_err();
        assert_eq!((e.status(), e.code()), (422, "unsupported_by_provider"));
        // An invalid request names the field.
        let e = prepare(
            &attempt(ClientApi::Chat, &b, "/v1/chat/completions"),
            br#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.message().contains("messages[0].role"), "{}", e.message());
    }

    #[test]
    fn lambda_functions_are_given_chat_requests_only() {
        let b = backend(serde_json::json!({
            "name": "fn", "schema": {"name": "OpenAI"}, "region": "us-east-1",
            "lambda": {"functionName": "chat-fn"}
        }));
        assert!(needs_body(ClientApi::Chat, &b));
        let e = prepare(
            &attempt(ClientApi::Embeddings, &b, "/v1/embeddings"),
            br#"{"model":"m","input":"hi"}"#,
        )
        .unwrap_err();
        assert_eq!((e.status(), e.code()), (422, "unsupported_by_provider"));
        assert!(e.message().contains("/v1/embeddings"), "{}", e.message());
        // The Responses API through the hub: the function gets a chat body.
        let p = prepare(
            &attempt(ClientApi::Responses, &b, "/v1/responses"),
            br#"{"model":"m","input":"hi"}"#,
        )
        .unwrap();
        assert_eq!(p.path, "/2015-03-31/functions/chat-fn/invocations");
        let sent: Value = serde_json::from_slice(p.body.as_deref().unwrap()).unwrap();
        assert_eq!(sent["messages"][0]["content"], "hi");
        assert!(p
            .headers
            .contains(&("x-amz-invocation-type", "RequestResponse".into())));
        let answer = br#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hey"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
        let v: Value = serde_json::from_slice(&p.response.body(answer).unwrap()).unwrap();
        assert_eq!(v["object"], "response");
        // An Anthropic client of an Anthropic function: Messages as they are.
        let a = backend(serde_json::json!({
            "name": "fa", "schema": {"name": "Anthropic"}, "region": "us-east-1",
            "lambda": {"functionName": "claude-fn"}
        }));
        let p = prepare(
            &attempt(ClientApi::Messages, &a, "/anthropic/v1/messages"),
            br#"{"model":"claude","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert_eq!(p.path, "/2015-03-31/functions/claude-fn/invocations");
        let sent: Value = serde_json::from_slice(p.body.as_deref().unwrap()).unwrap();
        assert_eq!(sent["max_tokens"], 9);
    }

    #[test]
    fn signed_backends_need_the_body() {
        let b = backend(serde_json::json!({
            "name": "o", "schema": {"name": "OpenAI"}, "host": "h",
            "auth": {"awsSigV4": {"region": "us-east-1", "accessKeyId": "a", "secretAccessKey": "s"}}
        }));
        assert!(needs_body(ClientApi::Chat, &b));
    }
}
