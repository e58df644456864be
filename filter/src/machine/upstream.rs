//! The upstream instance: runs in a backend cluster's upstream filters, once per
//! attempt, for the backend Envoy picked. It turns the request into the provider's
//! (path, host, body, credentials) and the answer back into the client's schema, so a
//! retry or fallback that lands on another provider is translated for that one, and
//! the router instance always sees the client's schema.

use crate::auth::exchange::Token;
use crate::auth::{self, Outgoing};
use crate::config::backend::Backend;
use crate::config::Config;
use crate::endpoint::Endpoint;
use crate::error::{ClientSchema, GatewayError};
use crate::host::{Action, CalloutResult, Counter, Headers, LogLevel, Status};
use crate::machine::credentials::{CredentialWait, Need};
use crate::machine::WaitFor;
use crate::translate::plan::{self, Attempt, ClientApi, ResponsePlan, StreamTranslator};
use crate::translate::TranslateError;
use crate::MODEL_HEADER;

/// Internal response header: the backend that answered (upstream → router instance).
pub const BACKEND_HEADER: &str = "x-aigw-backend";
/// Internal response header: the model name the backend was asked for, when overridden.
pub const MODEL_OVERRIDE_HEADER: &str = "x-aigw-model-override";

/// Credential headers of the client's own, removed unless a backend forwards them.
pub(crate) const CLIENT_CREDENTIAL_HEADERS: [&str; 4] =
    ["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// Filter-state key of the request headers as the first attempt found them.
///
/// Envoy gives every attempt of a request the same request header map, so what one
/// attempt rewrote (path, host, credentials) is what the next one sees. The first
/// attempt saves the headers any attempt may touch; each later one puts them back
/// before doing its own rewriting, so a retry on another provider starts from the
/// client's request and no credential of one provider leaks to the next.
pub const SAVED_REQUEST_KEY: &str = "io.envoy.ai_gateway.upstream_request";

/// Request headers an attempt may set or remove, besides the backends' own
/// (mutations, credential overrides: see [`Config::touched_headers`]).
pub(crate) const TOUCHED_HEADERS: &[&str] = &[
    ":path",
    ":authority",
    "content-type",
    "content-length",
    "accept",
    "accept-encoding",
    "anthropic-version",
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "x-amz-invocation-type",
    "x-amz-log-type",
    "x-amz-client-context",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Start,
    /// Not for the gateway (unknown path or backend): untouched.
    PassThrough,
    RequestBody,
    /// Held until the backend's exchanged credential is there.
    Waiting,
    /// Request sent; waiting for the answer's headers.
    Sent,
    /// Reading a whole answer to translate it (`error`: the status was not 2xx).
    ResponseBody {
        error: bool,
    },
    /// Translating a stream chunk by chunk.
    Streaming,
    Done,
    Replied,
}

/// The request facts the attempt needs after its headers are gone.
#[derive(Debug, Default)]
struct Request {
    method: String,
    authority: String,
    path: String,
    request_id: String,
    client_model: String,
    override_value: Option<String>,
    anthropic_beta: Option<String>,
}

/// One attempt's state.
#[derive(Debug)]
pub(crate) struct Upstream {
    phase: Phase,
    backend_name: Option<String>,
    backend: Option<usize>,
    unix_ms: u64,
    api: Option<ClientApi>,
    request: Request,
    body: Vec<u8>,
    status: u16,
    plan: Option<ResponsePlan>,
    stream: Option<StreamTranslator>,
    saved: SavedHeaders,
    /// The request headers an earlier attempt saved.
    saved_request: Option<SavedRequest>,
    /// Run by the router-level instance (`routerOnly`): no attempts to save for.
    inline: bool,
    /// The backend's exchanged credential, while it is being obtained.
    credential: CredentialWait,
    /// The request as it will be sent, held until the credential is there.
    held: Option<(plan::Prepared, Option<Vec<u8>>)>,
    wait: Option<WaitFor>,
}

impl Upstream {
    pub(crate) fn new() -> Self {
        Upstream {
            phase: Phase::Start,
            backend_name: None,
            backend: None,
            unix_ms: 0,
            api: None,
            request: Request::default(),
            body: Vec::new(),
            status: 0,
            plan: None,
            stream: None,
            saved: SavedHeaders::default(),
            saved_request: None,
            inline: false,
            credential: CredentialWait::default(),
            held: None,
            wait: None,
        }
    }

    /// The upstream work done by the router-level instance, before routing.
    pub(crate) fn new_inline() -> Self {
        Upstream {
            inline: true,
            ..Upstream::new()
        }
    }

    pub(crate) fn bind(&mut self, backend: Option<&str>, unix_ms: u64, saved: Option<&[u8]>) {
        self.backend_name = backend.map(str::to_string);
        self.unix_ms = unix_ms;
        self.saved_request = saved.map(SavedRequest::decode);
    }

    pub(crate) fn set_unix_millis(&mut self, unix_ms: u64) {
        self.unix_ms = unix_ms;
    }

    pub(crate) fn replied(&self) -> bool {
        self.phase == Phase::Replied
    }

    pub(crate) fn is_waiting(&self) -> bool {
        self.phase == Phase::Waiting
    }

    pub(crate) fn take_wait(&mut self) -> Option<WaitFor> {
        self.wait.take()
    }

    /// Whether the answer is rewritten into the client's schema (errors included),
    /// rather than passed on as the provider sent it.
    pub(crate) fn translates_answer(&self) -> bool {
        self.plan.as_ref().is_some_and(|p| !p.is_passthrough())
    }

    /// The stream ended: an exchange this attempt led is handed on.
    pub(crate) fn on_stream_complete(&mut self) {
        self.credential.abandon();
        self.held = None;
        self.wait = None;
    }

    fn backend<'c>(&self, config: &'c Config) -> Option<&'c Backend> {
        self.backend.map(|i| &config.backends[i])
    }

    fn schema(&self) -> ClientSchema {
        self.api.map_or(ClientSchema::OpenAI, ClientApi::schema)
    }

    fn reply(
        &mut self,
        status: u16,
        body: Vec<u8>,
        details: &'static str,
        out: &mut Vec<Action>,
    ) -> Status {
        self.phase = Phase::Replied;
        out.push(Action::SendLocalReply {
            status,
            content_type: "application/json",
            body,
            details,
            headers: Vec::new(),
        });
        Status::StopIteration
    }

    fn reply_error(&mut self, e: &GatewayError, out: &mut Vec<Action>) -> Status {
        let body = e.body(self.schema());
        self.reply(e.status(), body, e.code(), out)
    }

    fn reply_translate(&mut self, e: &TranslateError, out: &mut Vec<Action>) -> Status {
        let body = e.body(self.schema());
        self.reply(e.status(), body, e.code(), out)
    }

    pub(crate) fn on_request_headers(
        &mut self,
        config: &Config,
        live: &dyn Headers,
        end_of_stream: bool,
        out: &mut Vec<Action>,
    ) -> Status {
        // The client's request as the first attempt saw it (see SAVED_REQUEST_KEY): a
        // later attempt puts it back first.
        let saved = self.saved_request.take();
        if let Some(saved) = &saved {
            for name in config.touched_headers() {
                out.push(match saved.value(name) {
                    Some(v) => Action::SetHeader {
                        name: name.clone(),
                        value: v.to_string(),
                    },
                    None => Action::RemoveHeader { name: name.clone() },
                });
            }
        }
        let original;
        let headers: &dyn Headers = match &saved {
            Some(saved) => {
                original = Original {
                    config,
                    saved,
                    live,
                };
                &original
            }
            None => live,
        };
        let path = headers.get(":path").unwrap_or_default();
        let Some(api) = Endpoint::classify(&path)
            .or_else(|| {
                config
                    .passthrough_route(&path)
                    .map(|_| Endpoint::Passthrough)
            })
            .and_then(ClientApi::from_endpoint)
        else {
            self.phase = Phase::PassThrough;
            return Status::Continue;
        };
        let Some(index) = self
            .backend_name
            .as_deref()
            .and_then(|n| config.backend_index(n))
        else {
            out.push(Action::Log {
                level: LogLevel::Warn,
                message: format!(
                    "upstream filter: no configured backend for this host ({:?}); passing through",
                    self.backend_name
                ),
            });
            self.phase = Phase::PassThrough;
            return Status::Continue;
        };
        if saved.is_none() && !self.inline {
            out.push(Action::SetFilterState {
                key: SAVED_REQUEST_KEY,
                value: SavedRequest::take(config, live).encode(),
            });
        }
        self.api = Some(api);
        self.backend = Some(index);
        let backend = &config.backends[index];
        self.request = Request {
            method: headers.get(":method").unwrap_or_else(|| "POST".into()),
            authority: headers.get(":authority").unwrap_or_default(),
            path,
            request_id: headers.get("x-request-id").unwrap_or_default(),
            client_model: headers.get(MODEL_HEADER).unwrap_or_default(),
            override_value: None,
            anthropic_beta: headers.get("anthropic-beta"),
        };
        if let Some(name) = &backend.credential_override {
            self.request.override_value = headers.get(name);
            out.push(Action::RemoveHeader { name: name.clone() });
        }
        if backend.lambda.is_some() {
            for name in crate::translate::lambda::CLIENT_HEADERS_REMOVED {
                if headers.get(name).is_some() {
                    out.push(Action::RemoveHeader { name: name.into() });
                }
            }
        }
        if !backend.forward_client_credentials {
            for name in CLIENT_CREDENTIAL_HEADERS {
                if headers.get(name).is_some() {
                    out.push(Action::RemoveHeader { name: name.into() });
                }
            }
        }
        if plan::needs_body(api, backend) && !end_of_stream {
            return match crate::machine::begin_body(config, headers, &mut self.body, out) {
                Ok(()) => {
                    self.phase = Phase::RequestBody;
                    Status::StopIteration
                }
                Err(e) => self.reply_error(&e, out),
            };
        }
        let prepared = plan::prepare_without_body(&self.attempt(config));
        self.send(config, prepared, None, out)
    }

    pub(crate) fn on_request_body(
        &mut self,
        config: &Config,
        chunk: &[u8],
        end_of_stream: bool,
        out: &mut Vec<Action>,
    ) -> Status {
        match self.phase {
            Phase::RequestBody => {}
            // Held: Envoy keeps what still arrives.
            Phase::Waiting => return Status::StopAndBuffer,
            _ => return Status::Continue,
        }
        let body = match crate::machine::buffer_body(config, &mut self.body, chunk, end_of_stream) {
            Ok(Some(body)) => body,
            Ok(None) => return Status::StopAndBuffer,
            Err(e) => return self.reply_error(&e, out),
        };
        match plan::prepare(&self.attempt(config), &body) {
            Ok(prepared) => self.send(config, prepared, Some(&body), out),
            Err(e) => self.reply_translate(&e, out),
        }
    }

    fn attempt<'a>(&'a self, config: &'a Config) -> Attempt<'a> {
        Attempt {
            api: self.api.unwrap_or(ClientApi::Chat),
            backend: &config.backends[self.backend.unwrap_or(0)],
            path: &self.request.path,
            client_model: &self.request.client_model,
            request_id: &self.request.request_id,
            unix_seconds: self.unix_ms / 1000,
            max_event_bytes: config.limits.max_response_body_bytes as usize,
            anthropic_beta: self.request.anthropic_beta.as_deref(),
        }
    }

    /// Sends the request on, once the backend's credential is there (at once,
    /// unless the gateway exchanges it and has none yet).
    fn send(
        &mut self,
        config: &Config,
        prepared: plan::Prepared,
        original: Option<&[u8]>,
        out: &mut Vec<Action>,
    ) -> Status {
        let slot = self.backend.and_then(|i| config.exchange_slot(i));
        let Some(slot) = slot else {
            return self.complete_send(config, prepared, original, None, out);
        };
        match self
            .credential
            .poll(slot, config.secrets(), self.unix_ms, None)
        {
            Need::Ready(token) => self.complete_send(config, prepared, original, Some(&token), out),
            Need::Wait(wait) => {
                self.held = Some((prepared, original.map(<[u8]>::to_vec)));
                self.wait = Some(wait);
                self.phase = Phase::Waiting;
                // In a headers hook too: what body arrives meanwhile stays with Envoy.
                Status::StopAndBuffer
            }
            Need::Failed(e) => self.credential_failed(config, &e.to_string(), out),
        }
    }

    /// The wait for the credential ended: the call this attempt made answered
    /// (`answer`), or the exchange another request ran ended. A `Continue` sends the
    /// held request on.
    pub(crate) fn resume(
        &mut self,
        config: &Config,
        answer: Option<CalloutResult>,
        out: &mut Vec<Action>,
    ) -> Status {
        if self.phase != Phase::Waiting {
            return Status::StopIteration;
        }
        let Some(slot) = self.backend.and_then(|i| config.exchange_slot(i)) else {
            return Status::StopIteration;
        };
        match self
            .credential
            .poll(slot, config.secrets(), self.unix_ms, answer.as_ref())
        {
            Need::Ready(token) => {
                let Some((prepared, original)) = self.held.take() else {
                    return Status::StopIteration;
                };
                self.complete_send(config, prepared, original.as_deref(), Some(&token), out)
            }
            Need::Wait(wait) => {
                self.wait = Some(wait);
                Status::StopIteration
            }
            Need::Failed(e) => self.credential_failed(config, &e.to_string(), out),
        }
    }

    /// No credential could be had: a 503 in the client's schema, never a request
    /// without one.
    fn credential_failed(&mut self, config: &Config, why: &str, out: &mut Vec<Action>) -> Status {
        self.held = None;
        let name = self.backend(config).map_or("", |b| b.name.as_str());
        let e = crate::auth::AuthError::Exchange {
            message: why.to_string(),
        };
        out.push(Action::Log {
            level: LogLevel::Warn,
            message: format!("backend '{name}': {e}"),
        });
        out.push(Action::Count(Counter::CredentialExchangeFailed));
        let err = crate::translate::ProviderError::new(e.status(), None, e.to_string());
        let body = err.body(self.schema());
        self.reply(e.status(), body, "upstream_credentials", out)
    }

    /// Rewrites the request for the provider: body, path, host, the API's headers,
    /// the backend's header edits, then credentials over the final request.
    fn complete_send(
        &mut self,
        config: &Config,
        prepared: plan::Prepared,
        original: Option<&[u8]>,
        token: Option<&Token>,
        out: &mut Vec<Action>,
    ) -> Status {
        let Some(backend) = self.backend(config) else {
            return Status::Continue;
        };
        let set = |out: &mut Vec<Action>, name: &str, value: String| {
            out.push(Action::SetHeader {
                name: name.to_string(),
                value,
            })
        };
        if prepared.path != self.request.path {
            set(out, ":path", prepared.path.clone());
        }
        let authority = backend
            .host
            .clone()
            .unwrap_or_else(|| self.request.authority.clone());
        // Inline (`routerOnly`), Envoy picks the route after this, on the client's
        // Host (a virtual host may name it): the route rewrites Host to this one.
        if authority != self.request.authority && !self.inline {
            set(out, ":authority", authority.clone());
        }
        let mut content_type = None;
        for (name, value) in &prepared.headers {
            if *name == "content-type" {
                content_type = Some(value.clone());
            }
            set(out, name, value.clone());
        }
        if !prepared.response.is_passthrough() {
            // The answer is parsed here: it must come uncompressed.
            out.push(Action::RemoveHeader {
                name: "accept-encoding".into(),
            });
        }
        for name in &backend.header_mutation.remove {
            out.push(Action::RemoveHeader { name: name.clone() });
        }
        for (name, value) in &backend.header_mutation.set {
            set(out, name, value.clone());
        }
        let body: &[u8] = match (&prepared.body, original) {
            (Some(b), _) => b,
            (None, Some(b)) => b,
            (None, None) => &[],
        };
        // The API's own `x-amz-*` headers are signed with the request.
        let amz: Vec<(&str, &str)> = prepared
            .headers
            .iter()
            .filter(|(n, _)| n.starts_with("x-amz-"))
            .map(|(n, v)| (*n, v.as_str()))
            .collect();
        let outgoing = Outgoing {
            method: &self.request.method,
            authority: &authority,
            path: &prepared.path,
            content_type: content_type
                .as_deref()
                .or(original.map(|_| "application/json")),
            signed: &amz,
            body,
            unix_seconds: self.unix_ms / 1000,
        };
        match auth::headers(
            backend,
            config.secrets(),
            token,
            self.request.override_value.as_deref(),
            &outgoing,
        ) {
            Ok(h) => {
                for (name, value) in h {
                    set(out, &name, value);
                }
            }
            Err(e) => {
                let status = e.status();
                out.push(Action::Log {
                    level: LogLevel::Warn,
                    message: format!("backend '{}': {e}", backend.name),
                });
                let err = crate::translate::ProviderError::new(status, None, e.to_string());
                let body = err.body(self.schema());
                return self.reply(status, body, "upstream_credentials", out);
            }
        }
        if let Some(new_body) = prepared.body {
            crate::machine::replace_request_body(new_body, out);
        }
        self.plan = Some(prepared.response);
        self.phase = Phase::Sent;
        Status::Continue
    }

    pub(crate) fn on_response_headers(
        &mut self,
        config: &Config,
        headers: &dyn Headers,
        end_of_stream: bool,
        out: &mut Vec<Action>,
    ) -> Status {
        if self.phase != Phase::Sent {
            return Status::Continue;
        }
        let Some(backend) = self.backend(config) else {
            return Status::Continue;
        };
        out.push(Action::SetHeader {
            name: BACKEND_HEADER.into(),
            value: backend.name.clone(),
        });
        match &backend.model_name_override {
            Some(m) => out.push(Action::SetHeader {
                name: MODEL_OVERRIDE_HEADER.into(),
                value: m.clone(),
            }),
            None => out.push(Action::RemoveHeader {
                name: MODEL_OVERRIDE_HEADER.into(),
            }),
        }
        self.status = headers
            .get(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let Some(plan) = &self.plan else {
            self.phase = Phase::Done;
            return Status::Continue;
        };
        if plan.is_passthrough() {
            self.phase = Phase::Done;
            return Status::Continue;
        }
        let ok = plan.succeeded(self.status, headers);
        let streamed = is_stream_content(headers);
        if ok && plan.answer_passes(streamed) {
            self.phase = Phase::Done;
            return Status::Continue;
        }
        if ok && plan.is_stream() && streamed {
            if let Some(t) = plan.stream() {
                self.stream = Some(t);
                out.push(Action::SetHeader {
                    name: "content-type".into(),
                    value: "text/event-stream".into(),
                });
                out.push(Action::RemoveHeader {
                    name: "content-length".into(),
                });
                // The client gets the translator's plain SSE, whatever encoding the
                // provider claimed (it was asked for none): an error event the
                // client could not read as gzip would be lost.
                out.push(Action::RemoveHeader {
                    name: "content-encoding".into(),
                });
                self.phase = Phase::Streaming;
                if end_of_stream {
                    return self.on_response_body(config, &[], true, out);
                }
                return Status::Continue;
            }
        }
        self.phase = Phase::ResponseBody { error: !ok };
        self.saved = SavedHeaders::of(headers);
        if end_of_stream {
            return self.finish_body(out);
        }
        // Held until the whole answer is translated.
        Status::StopIteration
    }

    pub(crate) fn on_response_body(
        &mut self,
        config: &Config,
        chunk: &[u8],
        end_of_stream: bool,
        out: &mut Vec<Action>,
    ) -> Status {
        match self.phase {
            Phase::Streaming => {
                let mut bytes = Vec::new();
                if let Some(t) = self.stream.as_mut() {
                    t.feed(chunk, end_of_stream, &mut bytes);
                }
                // Always replaced, even by nothing: the provider's bytes never pass.
                out.push(Action::ReplaceBody(bytes));
                if end_of_stream {
                    self.phase = Phase::Done;
                    self.stream = None;
                }
                Status::Continue
            }
            Phase::ResponseBody { .. } => {
                let limit = config.limits.max_response_body_bytes as usize;
                if self.body.len() + chunk.len() > limit {
                    self.body = Vec::new();
                    let e = crate::translate::ProviderError::new(
                        502,
                        Some("response_too_large".into()),
                        format!(
                            "the provider's answer exceeds the gateway's limit of {limit} bytes"
                        ),
                    );
                    return self.answer_error(&e, out);
                }
                self.body.extend_from_slice(chunk);
                if !end_of_stream {
                    return Status::StopAndBuffer;
                }
                self.finish_body(out)
            }
            _ => Status::Continue,
        }
    }

    /// The whole answer is in: translate it and let it go.
    fn finish_body(&mut self, out: &mut Vec<Action>) -> Status {
        let body = std::mem::take(&mut self.body);
        let Some(plan) = self.plan.as_ref() else {
            return Status::Continue;
        };
        let error = matches!(self.phase, Phase::ResponseBody { error: true });
        self.phase = Phase::Done;
        let (status, bytes) = if error {
            match plan.error(self.status, &self.saved, &body) {
                Some(translated) => translated,
                None => return Status::Continue,
            }
        } else {
            match plan.body(&body) {
                Ok(b) => (self.status, b),
                Err(translated) => translated,
            }
        };
        self.write_answer(status, bytes, out)
    }

    /// Replaces a held answer with an error in the client's schema.
    fn answer_error(
        &mut self,
        e: &crate::translate::ProviderError,
        out: &mut Vec<Action>,
    ) -> Status {
        self.phase = Phase::Done;
        let body = e.body(self.schema());
        self.write_answer(e.status, body, out)
    }

    fn write_answer(&mut self, status: u16, body: Vec<u8>, out: &mut Vec<Action>) -> Status {
        let changed = (status != self.status).then_some(status);
        crate::machine::json_answer_headers(changed, body.len(), out);
        out.push(Action::ReplaceBody(body));
        Status::Continue
    }
}

/// Whether a 2xx answer is a stream (SSE, or AWS's binary event stream).
fn is_stream_content(headers: &dyn Headers) -> bool {
    headers.get("content-type").is_some_and(|ct| {
        let ct = ct.trim_start().to_ascii_lowercase();
        ct.starts_with("text/event-stream") || ct.starts_with("application/vnd.amazon.eventstream")
    })
}

/// Request headers an attempt reads that no attempt changes.
const READ_HEADERS: [&str; 3] = [":method", "x-request-id", "anthropic-beta"];

/// The request headers attempts touch or read, as a request carried them: what the
/// first attempt saves for the later ones (see [`SAVED_REQUEST_KEY`]), and what the
/// router-level instance keeps of the headers for its inline attempt.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SavedRequest(Vec<(String, String)>);

impl SavedRequest {
    /// The names saved: every header an attempt may touch, and those it reads.
    fn names(config: &Config) -> impl Iterator<Item = &str> {
        config
            .touched_headers()
            .iter()
            .map(String::as_str)
            .chain(READ_HEADERS)
    }

    pub(crate) fn take(config: &Config, headers: &dyn Headers) -> Self {
        SavedRequest(
            Self::names(config)
                .filter_map(|n| headers.get(n).map(|v| (n.to_string(), v)))
                .collect(),
        )
    }

    pub(crate) fn set(&mut self, name: &str, value: String) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name.to_string(), value)),
        }
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `name NUL value LF` per header present: neither a header name nor a value
    /// can hold NUL or LF, and this is cheaper than JSON on every request.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.iter().map(|(n, v)| n.len() + v.len() + 2).sum());
        for (name, value) in &self.0 {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out
    }

    fn decode(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        SavedRequest(
            text.split_terminator('\n')
                .filter_map(|line| line.split_once('\0'))
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }
}

impl Headers for SavedRequest {
    fn get(&self, name: &str) -> Option<String> {
        self.value(name).map(str::to_string)
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        self.0.iter().for_each(|(n, v)| f(n, v));
    }
}

/// The request headers as the client sent them: the saved values of the headers
/// attempts touch (absent if not saved), the live map for the others.
struct Original<'a> {
    config: &'a Config,
    saved: &'a SavedRequest,
    live: &'a dyn Headers,
}

impl Headers for Original<'_> {
    fn get(&self, name: &str) -> Option<String> {
        if self.is_touched(name) {
            self.saved.get(name)
        } else {
            self.live.get(name)
        }
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        self.live.for_each(&mut |n, v| {
            if !self.is_touched(n) {
                f(n, v)
            }
        });
        self.saved.0.iter().for_each(|(n, v)| {
            if self.is_touched(n) {
                f(n, v)
            }
        });
    }
}

impl Original<'_> {
    fn is_touched(&self, name: &str) -> bool {
        self.config.touched_headers().iter().any(|n| n == name)
    }
}

/// The response headers an error translation reads after the headers have gone.
#[derive(Debug, Default)]
struct SavedHeaders(Vec<(&'static str, String)>);

impl SavedHeaders {
    const NAMES: [&'static str; 3] = [
        "content-type",
        "x-amzn-errortype",
        crate::translate::lambda::FUNCTION_ERROR_HEADER,
    ];

    fn of(headers: &dyn Headers) -> Self {
        SavedHeaders(
            Self::NAMES
                .iter()
                .filter_map(|n| headers.get(n).map(|v| (*n, v)))
                .collect(),
        )
    }
}

impl Headers for SavedHeaders {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        self.0.iter().for_each(|(n, v)| f(n, v));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::config::Config;
    use crate::host::{Action, Status};
    use crate::machine::router::{FilterRole, HttpFilter};

    fn gateway() -> Arc<Config> {
        Arc::new(
            Config::from_json(
                br#"{"version": "v1",
                "backends": [
                  {"name": "br", "schema": {"name": "AWSBedrock"}, "region": "us-east-1",
                   "auth": {"awsSigV4": {"accessKeyId": "AKID", "secretAccessKey": "secret"}},
                   "headerMutation": {"set": [{"name": "x-team", "value": "blue"}], "remove": ["x-debug"]}},
                  {"name": "oa", "schema": {"name": "OpenAI"}}
                ],
                "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "br"}]}]}"#,
            )
            .unwrap(),
        )
    }

    fn set<'a>(out: &'a [Action], name: &str) -> Option<&'a str> {
        out.iter().rev().find_map(|a| match a {
            Action::SetHeader { name: n, value } if n == name => Some(value.as_str()),
            _ => None,
        })
    }

    fn body(out: &[Action]) -> Option<&[u8]> {
        out.iter().find_map(|a| match a {
            Action::ReplaceBody(b) => Some(b.as_slice()),
            _ => None,
        })
    }

    const T: Duration = Duration::ZERO;

    #[test]
    fn a_bedrock_attempt_is_translated_signed_and_answered_in_openai() {
        let mut f = HttpFilter::new(gateway(), FilterRole::Upstream);
        f.bind_backend(Some("br"), 1_700_000_000_000, None);
        let mut out = Vec::new();
        let h = [
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gateway.local"),
            ("x-ai-eg-model", "m"),
            ("x-request-id", "req-7"),
            ("authorization", "Bearer client-key"),
            ("x-debug", "1"),
        ];
        assert_eq!(
            f.on_request_headers(&h, false, T, &mut out),
            Status::StopIteration
        );
        assert!(out.contains(&Action::RemoveHeader {
            name: "authorization".into()
        }));
        out.clear();
        let req = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(f.on_request_body(req, true, T, &mut out), Status::Continue);
        assert_eq!(set(&out, ":path"), Some("/model/m/converse"));
        assert_eq!(
            set(&out, ":authority"),
            Some("bedrock-runtime.us-east-1.amazonaws.com")
        );
        assert_eq!(set(&out, "x-team"), Some("blue"));
        assert!(out.contains(&Action::RemoveHeader {
            name: "x-debug".into()
        }));
        let sent = body(&out).unwrap().to_vec();
        assert_eq!(
            set(&out, "content-length"),
            Some(sent.len().to_string().as_str())
        );
        let auth = set(&out, "authorization").unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKID/20231114/us-east-1/bedrock/"));
        assert_eq!(set(&out, "x-amz-date"), Some("20231114T221320Z"));
        // Signed after every other edit: the signature's header comes last.
        let last_set = out
            .iter()
            .rposition(|a| matches!(a, Action::SetHeader { name, .. } if name == "authorization"));
        let body_at = out.iter().position(|a| matches!(a, Action::ReplaceBody(_)));
        assert!(last_set < body_at);

        // The answer: held until whole, then translated with its length fixed.
        out.clear();
        let rh = [(":status", "200"), ("content-type", "application/json")];
        assert_eq!(
            f.on_response_headers(&rh, false, T, &mut out),
            Status::StopIteration
        );
        assert_eq!(set(&out, super::BACKEND_HEADER), Some("br"));
        out.clear();
        let answer = br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hello"}]}},"stopReason":"end_turn","usage":{"inputTokens":5,"outputTokens":1,"totalTokens":6}}"#;
        assert_eq!(
            f.on_response_body(&answer[..20], false, T, &mut out),
            Status::StopAndBuffer
        );
        assert_eq!(
            f.on_response_body(&answer[20..], true, T, &mut out),
            Status::Continue
        );
        let client: serde_json::Value = serde_json::from_slice(body(&out).unwrap()).unwrap();
        assert_eq!(client["id"], "chatcmpl-req-7");
        assert_eq!(client["choices"][0]["message"]["content"], "Hello");
        assert_eq!(
            set(&out, "content-length"),
            Some(body(&out).unwrap().len().to_string().as_str())
        );
    }

    #[test]
    fn provider_errors_and_refusals_come_in_the_clients_schema() {
        // A Bedrock throttle for an Anthropic client.
        let mut f = HttpFilter::new(gateway(), FilterRole::Upstream);
        f.bind_backend(Some("br"), 0, None);
        let mut out = Vec::new();
        let h = [
            (":method", "POST"),
            (":path", "/anthropic/v1/messages"),
            ("x-ai-eg-model", "m"),
        ];
        let _ = f.on_request_headers(&h, false, T, &mut out);
        let req = br#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
        let _ = f.on_request_body(req, true, T, &mut out);
        out.clear();
        let rh = [
            (":status", "400"),
            ("x-amzn-errortype", "ThrottlingException:http://x/"),
        ];
        assert_eq!(
            f.on_response_headers(&rh, false, T, &mut out),
            Status::StopIteration
        );
        let _ = f.on_response_body(br#"{"message":"Rate exceeded"}"#, true, T, &mut out);
        assert_eq!(set(&out, ":status"), Some("429"));
        let v: serde_json::Value = serde_json::from_slice(body(&out).unwrap()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");

        // A request Bedrock cannot express: a 422 before anything is sent.
        let mut f = HttpFilter::new(gateway(), FilterRole::Upstream);
        f.bind_backend(Some("br"), 0, None);
        let mut out = Vec::new();
        let h = [
            (":method", "POST"),
            (":path", "/v1/completions"),
            ("x-ai-eg-model", "m"),
        ];
        let _ = f.on_request_headers(&h, false, T, &mut out);
        let s = f.on_request_body(br#"{"model":"m","prompt":"x"}"#, true, T, &mut out);
        assert_eq!(s, Status::StopIteration);
        assert!(f.replied());
        assert!(matches!(
            out.last(),
            Some(Action::SendLocalReply { status: 422, .. })
        ));
    }

    #[test]
    fn a_retry_starts_from_the_clients_request() {
        // Attempt 1: Bedrock rewrites path and host and signs.
        let config = gateway();
        let mut f = HttpFilter::new(config.clone(), FilterRole::Upstream);
        f.bind_backend(Some("br"), 1_700_000_000_000, None);
        let mut out = Vec::new();
        let client = [
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gateway.local"),
            ("x-ai-eg-model", "m"),
            ("authorization", "Bearer client-key"),
        ];
        let _ = f.on_request_headers(&client, false, T, &mut out);
        let saved = out
            .iter()
            .find_map(|a| match a {
                Action::SetFilterState { key, value } if *key == super::SAVED_REQUEST_KEY => {
                    Some(value.clone())
                }
                _ => None,
            })
            .expect("the first attempt saves the request");
        let _ = f.on_request_body(br#"{"model":"m","messages":[]}"#, true, T, &mut out);

        // Attempt 2 on the same header map, as Envoy leaves it, to an OpenAI backend.
        let after_first = [
            (":method", "POST"),
            (":path", "/model/m/converse"),
            (":authority", "bedrock-runtime.us-east-1.amazonaws.com"),
            ("x-ai-eg-model", "m"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKID/..."),
            ("x-amz-date", "20231114T221320Z"),
            ("x-team", "blue"),
        ];
        let mut f = HttpFilter::new(config, FilterRole::Upstream);
        f.bind_backend(Some("oa"), 0, Some(&saved));
        let mut out = Vec::new();
        assert_eq!(
            f.on_request_headers(&after_first, false, T, &mut out),
            Status::Continue
        );
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::SetFilterState { .. })));
        let mut map: std::collections::HashMap<String, Option<String>> = after_first
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect();
        for a in &out {
            match a {
                Action::SetHeader { name, value } => {
                    map.insert(name.clone(), Some(value.clone()));
                }
                Action::RemoveHeader { name } => {
                    map.insert(name.clone(), None);
                }
                _ => {}
            }
        }
        let get = |n: &str| map.get(n).cloned().flatten();
        assert_eq!(get(":path").as_deref(), Some("/v1/chat/completions"));
        assert_eq!(get(":authority").as_deref(), Some("gateway.local"));
        assert_eq!(get("x-amz-date"), None);
        assert_eq!(get("x-team"), None, "Bedrock's header edit is undone");
        assert_eq!(
            get("authorization"),
            None,
            "the client's key is removed again"
        );
    }

    #[test]
    fn a_translated_stream_is_never_labelled_compressed() {
        // A provider that compresses the stream anyway (it was asked for none), or
        // sends a gzip header and then garbage: the client gets plain SSE ending in
        // an error event, not bytes labelled gzip that no client can read.
        let mut f = HttpFilter::new(gateway(), FilterRole::Upstream);
        f.bind_backend(Some("br"), 0, None);
        let mut out = Vec::new();
        let h = [
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            ("x-ai-eg-model", "m"),
        ];
        let _ = f.on_request_headers(&h, false, T, &mut out);
        let req = br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let _ = f.on_request_body(req, true, T, &mut out);
        out.clear();
        let rh = [
            (":status", "200"),
            ("content-type", "application/vnd.amazon.eventstream"),
            ("content-encoding", "gzip"),
        ];
        assert_eq!(
            f.on_response_headers(&rh, false, T, &mut out),
            Status::Continue
        );
        assert_eq!(set(&out, "content-type"), Some("text/event-stream"));
        assert!(out.contains(&Action::RemoveHeader {
            name: "content-encoding".into()
        }));
        out.clear();
        let garbage = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\xff\xff\xffnot deflate";
        assert_eq!(
            f.on_response_body(garbage, true, T, &mut out),
            Status::Continue
        );
        let sse = String::from_utf8(body(&out).unwrap().to_vec()).unwrap();
        assert!(sse.starts_with("data: {\"error\":"), "{sse}");
    }

    #[test]
    fn openai_passthrough_touches_neither_body_nor_answer() {
        let mut f = HttpFilter::new(gateway(), FilterRole::Upstream);
        f.bind_backend(Some("oa"), 0, None);
        let mut out = Vec::new();
        let h = [
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            ("x-ai-eg-model", "m"),
        ];
        assert_eq!(
            f.on_request_headers(&h, false, T, &mut out),
            Status::Continue
        );
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::SetHeader { name, .. } if name == ":path")));
        out.clear();
        let rh = [(":status", "500")];
        assert_eq!(
            f.on_response_headers(&rh, false, T, &mut out),
            Status::Continue
        );
        out.clear();
        assert_eq!(
            f.on_response_body(b"{}", true, T, &mut out),
            Status::Continue
        );
        assert!(out.is_empty());
    }
}
