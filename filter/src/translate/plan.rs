//! What the upstream instance does to one attempt, for one pair of client API and
//! backend schema: the request it sends ([`Prepared`]) and how it reads the answer
//! ([`ResponsePlan`]). Every provider module is reached from here and nowhere else.

use serde_json::{Map, Value};

use crate::backend::{Backend, BackendSchema, BodyMutation};
use crate::endpoint::Endpoint;
use crate::error::ClientSchema;
use crate::host::Headers;
use crate::schema::openai::ChatCompletion;
use crate::translate::{
    encode_openai_sse, ChunkSource, ProviderError, ResponseMeta, StreamItem, TranslateError,
};

/// The API a client called, as far as the upstream instance cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientApi {
    Chat,
    Completions,
    Embeddings,
    /// Anthropic Messages (`/anthropic/v1/messages`).
    Messages,
}

impl ClientApi {
    pub fn from_endpoint(e: Endpoint) -> Option<ClientApi> {
        match e {
            Endpoint::ChatCompletions => Some(ClientApi::Chat),
            Endpoint::Completions => Some(ClientApi::Completions),
            Endpoint::Embeddings => Some(ClientApi::Embeddings),
            Endpoint::Messages => Some(ClientApi::Messages),
            Endpoint::Models => None,
        }
    }

    pub fn schema(self) -> ClientSchema {
        match self {
            ClientApi::Messages => ClientSchema::Anthropic,
            _ => ClientSchema::OpenAI,
        }
    }

    /// The path after `/v1` on an OpenAI-schema server.
    fn openai_suffix(self) -> &'static str {
        match self {
            ClientApi::Chat | ClientApi::Messages => "/chat/completions",
            ClientApi::Completions => "/completions",
            ClientApi::Embeddings => "/embeddings",
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
#[allow(dead_code)] // include_usage: read by the provider readers as they land
pub struct ResponsePlan {
    kind: Reader,
    client: ClientSchema,
    stream: bool,
    include_usage: bool,
    meta: ResponseMeta,
    max_event_bytes: usize,
}

/// Which reader the provider's answer needs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reader {
    /// The client and the provider speak the same API: bytes pass.
    Passthrough,
}

/// Whether the request body must be read before the request can go: always, except
/// for an OpenAI-schema client and backend whose path does not depend on the model
/// and whose body is not edited.
pub fn needs_body(api: ClientApi, backend: &Backend) -> bool {
    let untouched = backend.model_name_override.is_none() && backend.body_mutation.is_empty();
    let signed = matches!(backend.auth, Some(crate::backend::Auth::AwsSigV4 { .. }));
    let passthrough = api != ClientApi::Messages
        && matches!(
            backend.schema,
            BackendSchema::OpenAI { .. } | BackendSchema::Mistral
        );
    !(passthrough && untouched && !signed)
}

/// The request when the body is not needed ([`needs_body`] is false).
pub fn prepare_without_body(a: &Attempt<'_>) -> Prepared {
    Prepared {
        path: openai_path(a, a.client_model),
        body: None,
        headers: Vec::new(),
        response: ResponsePlan::passthrough(a, false),
    }
}

/// Translates the request body for the backend.
pub fn prepare(a: &Attempt<'_>, body: &[u8]) -> Result<Prepared, TranslateError> {
    let peek = Peek::of(body)?;
    let model = a
        .backend
        .model_name_override
        .as_deref()
        .unwrap_or(peek.model.as_deref().unwrap_or(a.client_model));
    let mut prepared = match (&a.backend.schema, a.api) {
        (s, api) if s.is_openai_family() && api != ClientApi::Messages => {
            let body = match &a.backend.model_name_override {
                Some(m) => Some(edit_object(body, |o| {
                    o.insert("model".into(), Value::String(m.clone()));
                })?),
                None => None,
            };
            Prepared {
                path: openai_path(a, model),
                body,
                headers: Vec::new(),
                response: ResponsePlan::passthrough(a, peek.stream),
            }
        }
        (s, ClientApi::Messages) if s.is_openai_family() => {
            return Err(TranslateError::unsupported(
                "model",
                "the Anthropic Messages API is not translated for this backend yet",
            ));
        }
        (s, _) => {
            return Err(TranslateError::unsupported(
                "model",
                format!(
                    "{} backends are not supported by this build",
                    schema_name(s)
                ),
            ));
        }
    };
    if !a.backend.body_mutation.is_empty() {
        let current = prepared.body.as_deref().unwrap_or(body);
        prepared.body = Some(mutate(current, &a.backend.body_mutation)?);
    }
    Ok(prepared)
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
    }
}

/// The path on an OpenAI-schema server: the client's path with `/v1` replaced by the
/// backend's prefix (query kept), or Azure's deployment path.
fn openai_path(a: &Attempt<'_>, model: &str) -> String {
    let (_, query) = split_query(a.path);
    let suffix = a.api.openai_suffix();
    match &a.backend.schema {
        BackendSchema::AzureOpenAI { api_version } => {
            let mut path = format!(
                "/openai/deployments/{}{suffix}?api-version={}",
                crate::sigv4::encode_path_segment(model),
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
fn edit_object(
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
            client: a.api.schema(),
            stream,
            include_usage,
            meta: ResponseMeta {
                id: format!("chatcmpl-{}", a.request_id),
                model: a.client_model.to_string(),
                created: a.unix_seconds,
            },
            max_event_bytes: a.max_event_bytes,
        }
    }

    /// The answer passes as the provider sent it.
    pub fn is_passthrough(&self) -> bool {
        self.kind == Reader::Passthrough
    }

    /// The client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// A provider error answer in the client's schema: the status and body to send.
    /// `None` for a passthrough: the client understands the provider's own errors.
    pub fn error(&self, status: u16, headers: &dyn Headers, body: &[u8]) -> Option<(u16, Vec<u8>)> {
        let e = match self.kind {
            Reader::Passthrough => return None,
        };
        #[allow(unreachable_code)]
        Some(self.write_error(&e))
    }

    /// A whole (non-streamed) answer for the client.
    pub fn body(&self, body: &[u8]) -> Result<Vec<u8>, (u16, Vec<u8>)> {
        let completion: Result<ChatCompletion, TranslateError> = match self.kind {
            Reader::Passthrough => return Ok(body.to_vec()),
        };
        #[allow(unreachable_code)]
        match completion {
            Ok(c) => Ok(self.write_completion(&c)),
            Err(e) => Err(self.write_error(&ProviderError::from_translate(&e))),
        }
    }

    /// The stream translator, when the answer is streamed and must be translated.
    pub fn stream(&self) -> Option<StreamTranslator> {
        let source: Box<dyn ChunkSource> = match self.kind {
            Reader::Passthrough => return None,
        };
        #[allow(unreachable_code)]
        Some(StreamTranslator {
            source,
            client: self.client,
            items: Vec::new(),
        })
    }

    fn write_completion(&self, c: &ChatCompletion) -> Vec<u8> {
        match self.client {
            ClientSchema::OpenAI => serde_json::to_vec(c).unwrap_or_default(),
            ClientSchema::Anthropic => serde_json::to_vec(c).unwrap_or_default(),
        }
    }

    fn write_error(&self, e: &ProviderError) -> (u16, Vec<u8>) {
        match self.client {
            // OpenAI clients know no 529.
            ClientSchema::OpenAI => (
                if e.status == 529 { 503 } else { e.status },
                e.openai_body(),
            ),
            ClientSchema::Anthropic => (e.status, e.anthropic_body()),
        }
    }
}

/// A streamed answer on its way to the client: provider bytes in, client bytes out.
#[derive(Debug)]
pub struct StreamTranslator {
    source: Box<dyn ChunkSource>,
    client: ClientSchema,
    items: Vec<StreamItem>,
}

impl StreamTranslator {
    /// Translates one body chunk; what the client gets is appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) {
        self.items.clear();
        self.source.feed(chunk, end_of_stream, &mut self.items);
        for item in &self.items {
            match self.client {
                ClientSchema::OpenAI => encode_openai_sse(item, out),
                ClientSchema::Anthropic => encode_openai_sse(item, out),
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
        }
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

    #[test]
    fn signed_backends_need_the_body() {
        let b = backend(serde_json::json!({
            "name": "o", "schema": {"name": "OpenAI"}, "host": "h",
            "auth": {"awsSigV4": {"region": "us-east-1", "accessKeyId": "a", "secretAccessKey": "s"}}
        }));
        assert!(needs_body(ClientApi::Chat, &b));
    }
}
