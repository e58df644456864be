//! The per-request state machine both hosts drive.
//!
//! A host creates one [`HttpFilter`] per HTTP stream and calls, in stream order,
//! `on_request_headers`, `on_request_body` (per chunk), `on_response_headers`,
//! `on_response_body` (per chunk) and, where the host has it, `on_stream_complete`.
//! Each call appends [`Action`]s to `out` and returns a [`Status`]; see
//! [`crate::host`] for the order the host applies them in. `now` is any monotonic
//! clock reading; only differences are used.
//!
//! Two roles share this machine:
//! - [`FilterRole::Router`], before Envoy's router: answers `/v1/models`, validates
//!   and parses the request, sets the routing header, meters the response and writes
//!   dynamic metadata.
//! - [`FilterRole::Upstream`], in a backend cluster's upstream filters, once per
//!   attempt: prepares the request for the backend Envoy picked and tells the router
//!   instance, in internal response headers, which backend answered.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Config, Route};
use crate::endpoint::Endpoint;
use crate::error::{ClientSchema, GatewayError};
use crate::host::{Action, Counter, Headers, LogLevel, MetadataValue, Status};
use crate::machine::upstream::Upstream;
use crate::metering::cost::CostInputs;
use crate::metering::usage::{BodyFormat, MeterOptions, ResponseMeter};
use crate::policy::cache;
use crate::MODEL_HEADER;

pub use crate::machine::upstream::{BACKEND_HEADER, MODEL_OVERRIDE_HEADER};

/// Headers a client may not send: the gateway alone sets them.
pub(crate) const CLIENT_FORBIDDEN_HEADERS: [&str; 3] =
    [MODEL_HEADER, BACKEND_HEADER, MODEL_OVERRIDE_HEADER];

/// Where in Envoy's filter chains an instance runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterRole {
    /// The HTTP connection manager's chain, before the router.
    Router,
    /// A backend cluster's upstream HTTP filters.
    Upstream,
}

/// The per-request machine.
#[derive(Debug)]
pub struct HttpFilter {
    config: Arc<Config>,
    role: FilterRole,
    phase: Phase,
    endpoint: Option<Endpoint>,
    started_at: Duration,
    body: Vec<u8>,
    request: RequestFacts,
    response: ResponseFacts,
    /// The upstream role's state (boxed: the router role does not need it).
    upstream: Option<Box<Upstream>>,
    /// Router role with `routerOnly`: the request headers the inline upstream work
    /// reads, taken before the body arrives.
    inline_headers: Option<crate::machine::upstream::SavedRequest>,
    /// Router role with `routerOnly`: the upstream work, done here.
    inline: Option<Box<Upstream>>,
    /// Wall-clock seconds, for the inline upstream work.
    unix_seconds: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing seen yet.
    Start,
    /// Not an AI request: everything passes untouched.
    PassThrough,
    /// Buffering the request body.
    RequestBody,
    /// Request sent on; waiting for or streaming the response.
    Response,
    /// Metadata written; nothing more to do.
    Done,
    /// A local reply was sent; ignore the rest of the stream.
    Replied,
}

#[derive(Debug, Default)]
struct RequestFacts {
    model: String,
    route: Option<usize>,
    stream: bool,
    /// The gateway added `stream_options.include_usage`; strip the usage chunk.
    injected_usage: bool,
    /// The route whose rate limit admitted the request: released when the filter goes.
    admitted: Option<usize>,
    /// Digests of the client's credential headers and of the headers that change
    /// an answer (only when a route caches).
    credentials: Option<cache::Key>,
    variant: Option<cache::Key>,
}

#[derive(Debug, Default)]
struct ResponseFacts {
    status: u16,
    backend: Option<String>,
    model_override: Option<String>,
    meter: Option<ResponseMeter>,
    /// The route caches answers: where this one goes, and its bytes so far.
    cache_key: Option<cache::Key>,
    captured: Option<Vec<u8>>,
}

/// The fields of a request body the gateway reads; everything else is skipped
/// without being built.
#[derive(Deserialize)]
struct RequestPeek<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    /// `None`: absent; `Some(None)`: `null`.
    #[serde(default, deserialize_with = "present")]
    stream_options: Option<Option<StreamOptions>>,
}

/// Tells a field sent as `null` from an absent one (`None` by `default`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

impl HttpFilter {
    pub fn new(config: Arc<Config>, role: FilterRole) -> Self {
        HttpFilter {
            config,
            role,
            phase: Phase::Start,
            endpoint: None,
            started_at: Duration::ZERO,
            body: Vec::new(),
            request: RequestFacts::default(),
            response: ResponseFacts::default(),
            upstream: (role == FilterRole::Upstream).then(|| Box::new(Upstream::new())),
            inline_headers: None,
            inline: None,
            unix_seconds: 0,
        }
    }

    /// The wall-clock time (Unix seconds), for work that signs requests or dates
    /// answers. The upstream role gets it from [`HttpFilter::bind_backend`].
    pub fn set_unix_seconds(&mut self, unix_seconds: u64) {
        self.unix_seconds = unix_seconds;
    }

    /// Upstream role: names the backend Envoy picked for this attempt (from the
    /// selected host's or cluster's metadata), the wall-clock time (Unix seconds:
    /// request signing, `created` of translated answers) and what an earlier attempt
    /// of the same request saved in filter state under
    /// [`crate::machine::upstream::SAVED_REQUEST_KEY`]. Call before `on_request_headers`.
    pub fn bind_backend(
        &mut self,
        backend: Option<&str>,
        unix_seconds: u64,
        saved_request: Option<&[u8]>,
    ) {
        if let Some(u) = self.upstream.as_mut() {
            u.bind(backend, unix_seconds, saved_request);
        }
    }

    /// Whether the machine answered the stream itself (a local reply).
    pub fn replied(&self) -> bool {
        match &self.upstream {
            Some(u) => u.replied(),
            None => self.phase == Phase::Replied,
        }
    }

    pub fn on_request_headers(
        &mut self,
        headers: &dyn Headers,
        end_of_stream: bool,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        if let Some(u) = self.upstream.as_mut() {
            return u.on_request_headers(&self.config, headers, end_of_stream, out);
        }
        if self.phase != Phase::Start {
            return Status::Continue;
        }
        self.started_at = now;
        self.router_request_headers(headers, end_of_stream, out)
    }

    pub fn on_request_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        if let Some(u) = self.upstream.as_mut() {
            return u.on_request_body(&self.config, chunk, end_of_stream, out);
        }
        if self.phase != Phase::RequestBody {
            return Status::Continue;
        }
        let body = match buffer_body(&self.config, &mut self.body, chunk, end_of_stream) {
            Ok(Some(body)) => body,
            Ok(None) => return Status::StopAndBuffer,
            Err(e) => return self.reply(e, out),
        };
        self.phase = Phase::Response;
        self.router_request_body(&body, now, out)
    }

    pub fn on_response_headers(
        &mut self,
        headers: &dyn Headers,
        end_of_stream: bool,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        if let Some(u) = self.upstream.as_mut() {
            return u.on_response_headers(&self.config, headers, end_of_stream, out);
        }
        if self.phase != Phase::Response {
            return Status::Continue;
        }
        let mut status = Status::Continue;
        if let Some(u) = self.inline.as_mut() {
            // The provider's answer becomes the client's first; metering reads that.
            let mut own = Vec::new();
            status = u.on_response_headers(&self.config, headers, end_of_stream, &mut own);
            own.retain(|a| !matches!(a, Action::SetHeader { name, .. } | Action::RemoveHeader { name } if name.starts_with(crate::INTERNAL_HEADER_PREFIX)));
            let view = Edited {
                base: headers,
                edits: &own,
            };
            out.extend(own.iter().cloned());
            self.router_response_headers(&view, out);
            if status != Status::Continue {
                return status;
            }
        } else {
            self.router_response_headers(headers, out);
        }
        if end_of_stream {
            self.finish(now, out);
        }
        status
    }

    pub fn on_response_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        if let Some(u) = self.upstream.as_mut() {
            return u.on_response_body(&self.config, chunk, end_of_stream, out);
        }
        if self.phase != Phase::Response {
            return Status::Continue;
        }
        let mut translated = None;
        if let Some(u) = self.inline.as_mut() {
            let mut own = Vec::new();
            let status = u.on_response_body(&self.config, chunk, end_of_stream, &mut own);
            if status != Status::Continue {
                out.extend(own);
                return status;
            }
            // The client's bytes go to the meter, and out once, after it.
            for a in own {
                match a {
                    Action::ReplaceBody(b) => translated = Some(b),
                    other => out.push(other),
                }
            }
        }
        let client_bytes = translated.as_deref().unwrap_or(chunk);
        let rewritten = match self.response.meter.as_mut() {
            Some(meter) => meter.feed(client_bytes, end_of_stream, now),
            None => None,
        };
        if let Some(buf) = self.response.captured.as_mut() {
            if buf.len() + client_bytes.len() > cache::MAX_ENTRY_BYTES {
                self.response.captured = None;
            } else {
                buf.extend_from_slice(client_bytes);
            }
        }
        if let Some(b) = rewritten.or(translated) {
            out.push(Action::ReplaceBody(b));
        }
        if end_of_stream {
            self.store_answer(now);
            self.finish(now, out);
        }
        Status::Continue
    }

    /// The stream ended (completed, reset or aborted). Writes what is known if the
    /// response did not reach its end.
    pub fn on_stream_complete(&mut self, now: Duration, out: &mut Vec<Action>) {
        if self.phase == Phase::Response && self.role == FilterRole::Router {
            self.finish(now, out);
        }
        self.body = Vec::new();
        self.response.meter = None;
    }

    fn reply(&mut self, err: GatewayError, out: &mut Vec<Action>) -> Status {
        self.phase = Phase::Replied;
        let schema = self
            .endpoint
            .map_or(ClientSchema::OpenAI, Endpoint::client_schema);
        out.push(Action::SendLocalReply {
            status: err.status(),
            content_type: "application/json",
            body: err.body(schema),
            details: err.code(),
            headers: err.headers(),
        });
        Status::StopIteration
    }

    fn router_request_headers(
        &mut self,
        headers: &dyn Headers,
        end_of_stream: bool,
        out: &mut Vec<Action>,
    ) -> Status {
        // Only the gateway sets the routing and internal headers, whatever the path.
        for name in CLIENT_FORBIDDEN_HEADERS {
            if headers.get(name).is_some() {
                out.push(Action::RemoveHeader {
                    name: name.to_string(),
                });
            }
        }
        let path = headers.get(":path").unwrap_or_default();
        let endpoint = Endpoint::classify(&path);
        if !self.config.request_rules.is_empty() {
            let verdict = self.config.request_rules.check(headers);
            for (i, why) in verdict.failures {
                out.push(Action::Log {
                    level: LogLevel::Debug,
                    message: format!("requestValidation.rules[{i}] did not match: {why}"),
                });
            }
            if let Some(rule) = verdict.denied_by {
                out.push(Action::Count(Counter::RequestDenied));
                self.endpoint = endpoint;
                return self.reply(GatewayError::Denied { rule }, out);
            }
        }
        let Some(endpoint) = endpoint else {
            self.phase = Phase::PassThrough;
            return Status::Continue;
        };
        self.endpoint = Some(endpoint);
        if self.config.any_cache {
            self.request.credentials = Some(cache::credentials_part(&self.config, headers));
            self.request.variant = Some(cache::variant_part(headers));
        }
        if self.config.router_only {
            self.inline_headers = Some(crate::machine::upstream::SavedRequest::take(
                &self.config,
                headers,
            ));
        }
        let method = headers.get(":method").unwrap_or_default();
        if endpoint == Endpoint::Models {
            if method != "GET" && method != "HEAD" {
                return self.reply(
                    GatewayError::MethodNotAllowed {
                        method,
                        path: endpoint.path(),
                    },
                    out,
                );
            }
            self.phase = Phase::Replied;
            out.push(Action::SendLocalReply {
                status: 200,
                content_type: "application/json",
                body: self.config.models_body().to_vec(),
                details: "models_list",
                headers: Vec::new(),
            });
            return Status::StopIteration;
        }
        if method != "POST" {
            return self.reply(
                GatewayError::MethodNotAllowed {
                    method,
                    path: endpoint.path(),
                },
                out,
            );
        }
        if end_of_stream {
            return self.reply(GatewayError::InvalidJson("the body is empty".into()), out);
        }
        match begin_body(&self.config, headers, &mut self.body, out) {
            Ok(()) => {
                self.phase = Phase::RequestBody;
                Status::StopIteration
            }
            Err(e) => self.reply(e, out),
        }
    }

    fn router_request_body(&mut self, body: &[u8], now: Duration, out: &mut Vec<Action>) -> Status {
        let peek: RequestPeek = match parse_peek(body) {
            Ok(p) => p,
            Err(e) => return self.reply(e, out),
        };
        let model = match peek.model {
            Some(m) if !m.is_empty() => m.into_owned(),
            _ => {
                return self.reply(
                    GatewayError::InvalidField {
                        field: "model".into(),
                        reason: "a non-empty model name is required".into(),
                    },
                    out,
                )
            }
        };
        let Some(route_index) = self.config.route_index(&model) else {
            return self.reply(GatewayError::UnknownModel(model), out);
        };
        let endpoint = self.endpoint.unwrap_or(Endpoint::ChatCompletions);
        self.request.stream = endpoint.can_stream() && peek.stream == Some(true);
        if let Some(status) = self.cached_answer(route_index, &model, body, now, out) {
            return status;
        }
        let limit = &self.config.routes[route_index].rate_limit;
        if !limit.is_unlimited() {
            if let Err(refusal) = limit.admit(self.config.counts(), now) {
                out.push(Action::Count(Counter::RateLimited));
                return self.reply(GatewayError::RateLimited(refusal), out);
            }
            self.request.admitted = Some(route_index);
        }
        let include_usage = peek
            .stream_options
            .as_ref()
            .and_then(|o| o.as_ref()?.include_usage)
            .unwrap_or(false);
        let route = &self.config.routes[route_index];
        let wants_usage = !route.costs.is_empty() || route.rate_limit.tokens_per_minute.is_some();

        out.push(Action::SetHeader {
            name: MODEL_HEADER.to_string(),
            value: model.clone(),
        });
        out.push(Action::ClearRouteCache);

        let openai = endpoint.client_schema() == ClientSchema::OpenAI;
        if openai && self.request.stream && wants_usage && !include_usage {
            match with_include_usage(body, peek.stream_options.is_none()) {
                Ok(new_body) => {
                    self.request.injected_usage = true;
                    // The usage chunk is removed from plain text; keep it plain.
                    out.push(Action::RemoveHeader {
                        name: "accept-encoding".into(),
                    });
                    replace_request_body(new_body, out);
                }
                Err(e) => return self.reply(e, out),
            }
        }
        self.request.model = model;
        self.request.route = Some(route_index);
        if self.config.router_only {
            return self.inline_upstream(body, out);
        }
        Status::Continue
    }

    /// `routerOnly` (no upstream instance, as on Envoy Gateway): the upstream work
    /// for a route with one backend, on the request as the router will send it.
    fn inline_upstream(&mut self, body: &[u8], out: &mut Vec<Action>) -> Status {
        let Some(route) = self.route() else {
            return Status::Continue;
        };
        let [only] = route.backends.as_slice() else {
            // Not translated here (fallback needs the upstream instance); the client's
            // credentials still stay home unless a backend takes them.
            let forwards = route.backends.iter().any(|rb| {
                self.config
                    .backend(&rb.name)
                    .is_some_and(|b| b.forward_client_credentials)
            });
            // A backend's per-request credential header is the upstream instance's
            // to read and remove, even when it is one of those names.
            let overrides: Vec<&str> = route
                .backends
                .iter()
                .filter_map(|rb| {
                    self.config
                        .backend(&rb.name)?
                        .credential_override
                        .as_deref()
                })
                .collect();
            let sent = self.inline_headers.as_ref();
            if !forwards {
                for name in crate::machine::upstream::CLIENT_CREDENTIAL_HEADERS {
                    if sent.is_some_and(|h| h.get(name).is_some()) && !overrides.contains(&name) {
                        out.push(Action::RemoveHeader { name: name.into() });
                    }
                }
            }
            return Status::Continue;
        };
        let backend = only.name.clone();
        let mut headers = self.inline_headers.take().unwrap_or_default();
        headers.set(MODEL_HEADER, self.request.model.clone());
        // The body the router sends: the gateway's own rewrite of it, if any.
        let sent = out.iter().rev().find_map(|a| match a {
            Action::ReplaceBody(b) => Some(b.clone()),
            _ => None,
        });
        let body = sent.as_deref().unwrap_or(body);
        let mut u = Box::new(Upstream::new_inline());
        u.bind(Some(&backend), self.unix_seconds, None);
        let mut own = Vec::new();
        let mut status = u.on_request_headers(&self.config, &headers, false, &mut own);
        if status == Status::StopIteration && !u.replied() {
            status = u.on_request_body(&self.config, body, true, &mut own);
        }
        if own.iter().any(|a| matches!(a, Action::ReplaceBody(_))) {
            // The translation replaces the body again: only its version is sent.
            out.retain(|a| !matches!(a, Action::ReplaceBody(_)));
        }
        out.extend(own);
        if u.replied() {
            self.phase = Phase::Replied;
            return status;
        }
        self.response.model_override = self
            .config
            .backend(&backend)
            .and_then(|b| b.model_name_override.clone());
        self.response.backend = Some(backend);
        self.inline = Some(u);
        Status::Continue
    }

    /// A route with a cache: answers from it (`Some`), or notes where the provider's
    /// answer goes and asks for it uncompressed.
    fn cached_answer(
        &mut self,
        route_index: usize,
        model: &str,
        body: &[u8],
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Option<Status> {
        let route = &self.config.routes[route_index];
        let cache = route.cache.as_ref()?;
        if self.request.stream {
            return None;
        }
        let endpoint = self.endpoint?;
        let credentials: &[u8] = match &self.request.credentials {
            Some(c) if route.client_credentials_reach_provider => c,
            _ => &[],
        };
        let variant: &[u8] = self.request.variant.as_ref().map_or(&[], |v| v);
        let key = cache::key(&[endpoint.path().as_bytes(), variant, credentials, body]);
        let Some(answer) = cache.get(&key, now) else {
            out.push(Action::Count(Counter::CacheMiss));
            self.response.cache_key = Some(key);
            out.push(Action::RemoveHeader {
                name: "accept-encoding".into(),
            });
            return None;
        };
        route_metadata(route, model, out);
        out.push(Action::SetMetadata {
            key: "cache".into(),
            value: MetadataValue::String("hit".into()),
        });
        self.phase = Phase::Replied;
        out.push(Action::Count(Counter::CacheHit));
        out.push(Action::SendLocalReply {
            status: 200,
            content_type: "application/json",
            body: answer.to_vec(),
            details: "cache_hit",
            headers: vec![(cache::ANSWER_HEADER, "HIT".into())],
        });
        Some(Status::StopIteration)
    }

    /// A whole 200 answer of a caching route goes into its cache.
    fn store_answer(&mut self, now: Duration) {
        let (Some(key), Some(body)) = (self.response.cache_key, self.response.captured.take())
        else {
            return;
        };
        if let Some(cache) = self.route().and_then(|r| r.cache.as_ref()) {
            cache.put(key, &body, now);
        }
    }

    fn route(&self) -> Option<&Route> {
        self.request.route.map(|i| &self.config.routes[i])
    }

    fn router_response_headers(&mut self, headers: &dyn Headers, out: &mut Vec<Action>) {
        self.response.status = headers
            .get(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        for (name, slot) in [
            (BACKEND_HEADER, &mut self.response.backend),
            (MODEL_OVERRIDE_HEADER, &mut self.response.model_override),
        ] {
            if let Some(v) = headers.get(name) {
                *slot = Some(v);
                out.push(Action::RemoveHeader { name: name.into() });
            }
        }
        if !(200..300).contains(&self.response.status) {
            return;
        }
        if self.response.cache_key.is_some()
            && self.response.status == 200
            && headers.get("content-encoding").is_none()
        {
            self.response.captured = Some(Vec::new());
            out.push(Action::SetHeader {
                name: cache::ANSWER_HEADER.into(),
                value: "MISS".into(),
            });
        }
        let event_stream = headers
            .get("content-type")
            .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
        let gzip = headers
            .get("content-encoding")
            .is_some_and(|ce| ce.to_ascii_lowercase().contains("gzip"));
        let strip_usage_chunk = self.request.injected_usage && event_stream && !gzip;
        if strip_usage_chunk {
            out.push(Action::RemoveHeader {
                name: "content-length".into(),
            });
        }
        self.response.meter = Some(ResponseMeter::new(MeterOptions {
            format: if event_stream {
                BodyFormat::EventStream
            } else {
                BodyFormat::Json
            },
            gzip,
            strip_usage_chunk,
            max_buffered: self.config.limits.max_response_body_bytes as usize,
        }));
    }

    /// Writes the request's metadata: names, token latencies, costs.
    fn finish(&mut self, now: Duration, out: &mut Vec<Action>) {
        self.phase = Phase::Done;
        let Some(route) = self.route() else { return };
        let backend = self.response.backend.clone().or_else(|| {
            // One backend: no need for the upstream instance to say which.
            (route.backends.len() == 1).then(|| route.backends[0].name.clone())
        });
        route_metadata(route, &self.request.model, out);
        let mut set = |key: &str, value: MetadataValue| {
            out.push(Action::SetMetadata {
                key: key.to_string(),
                value,
            })
        };
        if let Some(b) = &backend {
            set("backend_name", MetadataValue::String(b.clone()));
        }
        if let Some(m) = &self.response.model_override {
            set("model_name_override", MetadataValue::String(m.clone()));
        }
        if self.response.cache_key.is_some() {
            set("cache", MetadataValue::String("miss".into()));
        }
        let Some(meter) = self.response.meter.as_ref() else {
            return;
        };
        if let Some(m) = meter.response_model() {
            set("response_model", MetadataValue::String(m.to_string()));
        }
        let usage = meter.usage();
        if self.request.stream {
            if let Some(first) = meter.first_event_at() {
                let ttft = first.saturating_sub(self.started_at);
                set("token_latency_ttft", MetadataValue::Number(ms(ttft)));
                let last = meter.last_event_at().unwrap_or(first);
                let steps = usage
                    .map(|u| u.output_tokens)
                    .filter(|&n| n > 1)
                    .unwrap_or(meter.content_events())
                    .saturating_sub(1);
                let itl = if steps == 0 {
                    0.0
                } else {
                    ms(last.saturating_sub(first)) / steps as f64
                };
                set("token_latency_itl", MetadataValue::Number(itl));
            }
        }
        let Some(usage) = usage else { return };
        route
            .rate_limit
            .record_tokens(self.config.counts(), now, usage.total_tokens);
        let mut logs = Vec::new();
        let inputs = CostInputs {
            model: &self.request.model,
            backend: backend.as_deref().unwrap_or(""),
            route_name: &route.name,
            usage: &usage,
        };
        for cost in &route.costs {
            match cost.evaluate(&inputs) {
                Ok(v) => set(&cost.metadata_key, MetadataValue::Number(v as f64)),
                Err(e) => logs.push(Action::Log {
                    level: LogLevel::Warn,
                    message: format!("cost '{}' not written: {e}", cost.metadata_key),
                }),
            }
        }
        out.extend(logs);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn parse_peek(body: &[u8]) -> Result<RequestPeek<'_>, GatewayError> {
    // serde also reads a struct from an array; a request is always an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(GatewayError::InvalidJson("expected a JSON object".into()));
    }
    // Tracking the path slows every parse down; only a body that fails needs it.
    if let Ok(p) = serde_json::from_slice::<RequestPeek>(body) {
        return Ok(p);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, RequestPeek>(de) {
        Ok(p) => Ok(p),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_data() && path != "." {
                Err(GatewayError::InvalidField {
                    field: path,
                    reason: inner.to_string(),
                })
            } else {
                Err(GatewayError::InvalidJson(inner.to_string()))
            }
        }
    }
}

/// `body` asking for the usage chunk. `absent`: the object has no `stream_options`
/// member, so one is written in front of the others without parsing the body again.
fn with_include_usage(body: &[u8], absent: bool) -> Result<Vec<u8>, GatewayError> {
    if absent {
        if let Some(b) = insert_first_member(body, br#""stream_options":{"include_usage":true}"#) {
            return Ok(b);
        }
    }
    crate::translate::plan::edit_object(body, |obj| {
        let opts = obj
            .entry("stream_options")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if !opts.is_object() {
            *opts = serde_json::Value::Object(Default::default());
        }
        if let Some(o) = opts.as_object_mut() {
            o.insert("include_usage".into(), true.into());
        }
    })
    .map_err(|e| GatewayError::InvalidJson(e.message()))
}

/// `member` (`"key":value`) as the first member of `body`, a JSON object that
/// parsed as one.
fn insert_first_member(body: &[u8], member: &[u8]) -> Option<Vec<u8>> {
    let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[open] != b'{' {
        return None;
    }
    let rest = &body[open + 1..];
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = Vec::with_capacity(body.len() + member.len() + 1);
    out.extend_from_slice(&body[..=open]);
    out.extend_from_slice(member);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// The metadata of every request a route served: its name, its fixed metadata and
/// the model asked for.
fn route_metadata(route: &Route, model: &str, out: &mut Vec<Action>) {
    let fixed = route.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    for (key, value) in [
        ("route_name", route.name.as_str()),
        ("request_model", model),
    ]
    .into_iter()
    .chain(fixed)
    {
        out.push(Action::SetMetadata {
            key: key.into(),
            value: MetadataValue::String(value.into()),
        });
    }
}

impl Drop for HttpFilter {
    fn drop(&mut self) {
        if let Some(i) = self.request.admitted {
            self.config.routes[i]
                .rate_limit
                .release(self.config.counts());
        }
    }
}

/// A header map with a call's header edits applied, as the next filter will see it.
struct Edited<'a> {
    base: &'a dyn Headers,
    edits: &'a [Action],
}

impl Headers for Edited<'_> {
    fn get(&self, name: &str) -> Option<String> {
        for a in self.edits.iter().rev() {
            match a {
                Action::SetHeader { name: n, value } if n.eq_ignore_ascii_case(name) => {
                    return Some(value.clone())
                }
                Action::RemoveHeader { name: n } if n.eq_ignore_ascii_case(name) => return None,
                _ => {}
            }
        }
        self.base.get(name)
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        let mut edited: Vec<&str> = Vec::new();
        for a in self.edits {
            if let Action::SetHeader { name, .. } | Action::RemoveHeader { name } = a {
                if !edited.iter().any(|e| e.eq_ignore_ascii_case(name)) {
                    edited.push(name);
                }
            }
        }
        self.base.for_each(&mut |n, v| {
            if !edited.iter().any(|e| e.eq_ignore_ascii_case(n)) {
                f(n, v)
            }
        });
        for name in edited {
            if let Some(v) = self.get(name) {
                f(name, &v);
            }
        }
    }
}

/// Checks the announced size of a request body and starts buffering it.
pub(crate) fn begin_body(
    config: &Config,
    headers: &dyn Headers,
    body: &mut Vec<u8>,
    out: &mut Vec<Action>,
) -> Result<(), GatewayError> {
    let limit = config.limits.max_request_body_bytes;
    if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        if len > limit {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        body.reserve(len as usize);
    }
    out.push(Action::SetBufferLimit(limit));
    Ok(())
}

/// Adds a chunk to the buffered request body: the whole body once it is complete,
/// `None` while more is coming, an error (and nothing kept) past the limit.
pub(crate) fn buffer_body(
    config: &Config,
    body: &mut Vec<u8>,
    chunk: &[u8],
    end_of_stream: bool,
) -> Result<Option<Vec<u8>>, GatewayError> {
    let limit = config.limits.max_request_body_bytes;
    if (body.len() + chunk.len()) as u64 > limit {
        *body = Vec::new();
        return Err(GatewayError::BodyTooLarge { limit });
    }
    body.extend_from_slice(chunk);
    Ok(end_of_stream.then(|| std::mem::take(body)))
}

pub(crate) fn replace_request_body(body: Vec<u8>, out: &mut Vec<Action>) {
    out.push(Action::SetHeader {
        name: "content-length".into(),
        value: body.len().to_string(),
    });
    out.push(Action::ReplaceBody(body));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Headers;

    const CONFIG: &str = r#"{
        "version": "v1",
        "backends": [
            {"name": "primary", "schema": {"name": "OpenAI"}},
            {"name": "renamed", "schema": {"name": "OpenAI"}, "modelNameOverride": "upstream-model"}
        ],
        "routes": [
            {"name": "chat", "models": ["gpt-4o-mini"], "backends": [{"name": "primary"}],
             "llmRequestCosts": [{"metadataKey": "in", "type": "InputToken"}]},
            {"name": "free", "models": ["free-model"], "backends": [{"name": "primary"}, {"name": "renamed"}]}
        ],
        "limits": {"maxRequestBodyBytes": 64}
    }"#;

    fn config() -> Arc<Config> {
        Arc::new(Config::from_json(CONFIG.as_bytes()).unwrap())
    }

    fn t(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// Drives a router instance through a request; returns the transcript.
    fn request(headers: &[(&str, &str)], body: &[u8]) -> (HttpFilter, Vec<Action>, Status) {
        let mut f = HttpFilter::new(config(), FilterRole::Router);
        let mut out = Vec::new();
        let s = f.on_request_headers(&headers, body.is_empty(), t(0), &mut out);
        if s != Status::StopIteration || f.replied() {
            return (f, out, s);
        }
        let s = f.on_request_body(body, true, t(1), &mut out);
        (f, out, s)
    }

    fn post(body: &[u8]) -> (HttpFilter, Vec<Action>, Status) {
        request(
            &[(":method", "POST"), (":path", "/v1/chat/completions")],
            body,
        )
    }

    fn local_reply(out: &[Action]) -> (u16, serde_json::Value) {
        match out.last() {
            Some(Action::SendLocalReply { status, body, .. }) => {
                (*status, serde_json::from_slice(body).unwrap())
            }
            other => panic!("expected a local reply, got {other:?}"),
        }
    }

    #[test]
    fn route_rate_limits_answer_429_and_count_tokens_and_streams() {
        let config = Arc::new(
            Config::from_json(
                br#"{"version": "v1",
                "backends": [{"name": "b", "schema": {"name": "OpenAI"}}],
                "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "b"}],
                            "rateLimit": {"tokensPerMinute": 10, "concurrency": 1}},
                           {"name": "free", "models": ["n"], "backends": [{"name": "b"}]}]}"#,
            )
            .unwrap(),
        );
        let start = |model: &str, at: u64| {
            let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
            let mut out = Vec::new();
            let h = [(":method", "POST"), (":path", "/v1/chat/completions")];
            let _ = f.on_request_headers(&h, false, t(at), &mut out);
            let body = format!(r#"{{"model":"{model}","stream":true,"messages":[]}}"#);
            let s = f.on_request_body(body.as_bytes(), true, t(at), &mut out);
            (f, s, out)
        };
        let (mut first, s, out) = start("m", 1_000);
        assert_eq!(s, Status::Continue);
        // Usage is needed for the token limit: asked for although no cost is set.
        assert!(out.iter().any(|a| matches!(a, Action::ReplaceBody(b)
            if String::from_utf8_lossy(b).contains("include_usage"))));
        // One at a time: a second request waits for the first stream to end.
        let (_, s, out) = start("m", 1_001);
        assert_eq!(s, Status::StopIteration);
        let (status, body) = local_reply(&out);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (429, Some("rate_limit_exceeded"))
        );
        assert_eq!(
            start("n", 1_001).1,
            Status::Continue,
            "other routes are not limited"
        );

        let mut out = Vec::new();
        let rh = [(":status", "200"), ("content-type", "text/event-stream")];
        let _ = first.on_response_headers(&rh, false, t(1_100), &mut out);
        let sse = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":4,\"total_tokens\":12}}\n\ndata: [DONE]\n\n";
        let _ = first.on_response_body(sse, true, t(1_200), &mut out);
        drop(first);
        // The stream ended, but its 12 tokens spent this minute's 10.
        let (_, s, out) = start("m", 2_000);
        assert_eq!(s, Status::StopIteration);
        let (_, body) = local_reply(&out);
        assert_eq!(body["error"]["type"], "tokens");
        // 2 s into the minute: 58 s to wait.
        assert!(
            matches!(out.last(), Some(Action::SendLocalReply { headers, .. })
            if headers == &[("retry-after", "58".to_string())])
        );
        assert_eq!(start("m", 60_000).1, Status::Continue, "the next minute");

        let bad = Config::from_json(
            br#"{"version": "v1", "backends": [{"name": "b", "schema": {"name": "OpenAI"}}],
            "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "b"}],
                        "rateLimit": {"requestsPerMinute": 0}}]}"#,
        )
        .unwrap_err();
        assert_eq!(bad.path, "routes[0].rateLimit.requestsPerMinute");
    }

    #[test]
    fn cached_answers_come_from_the_gateway_until_the_ttl() {
        let config = Arc::new(
            Config::from_json(
                br#"{"version": "v1",
                "backends": [{"name": "b", "schema": {"name": "OpenAI"}},
                             {"name": "byok", "schema": {"name": "OpenAI"}, "forwardClientCredentials": true}],
                "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "b"}],
                            "cache": {"ttlSeconds": 60}},
                           {"name": "own-keys", "models": ["k"], "backends": [{"name": "byok"}],
                            "cache": {"ttlSeconds": 60}}]}"#,
            )
            .unwrap(),
        );
        let answer = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
        // Returns whether the gateway answered from its cache. The second call
        // carries an anthropic-beta header.
        let calls = std::cell::Cell::new(0);
        let ask = |body: &str, key: &str, at: u64| {
            let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
            let mut out = Vec::new();
            let beta = if calls.get() == 1 { "tools-1" } else { "" };
            calls.set(calls.get() + 1);
            let h = [
                (":method", "POST"),
                (":path", "/v1/chat/completions"),
                ("authorization", key),
                ("anthropic-beta", beta),
            ];
            let _ = f.on_request_headers(&h, false, t(at), &mut out);
            let s = f.on_request_body(body.as_bytes(), true, t(at), &mut out);
            if s == Status::StopIteration {
                assert!(
                    matches!(out.last(), Some(Action::SendLocalReply { status: 200, body: b, headers, .. })
                    if b == answer && headers == &[("x-cache", "HIT".to_string())])
                );
                return true;
            }
            let uncompressed = out
                .iter()
                .any(|a| matches!(a, Action::RemoveHeader { name } if name == "accept-encoding"));
            assert_eq!(uncompressed, !body.contains(r#""stream":true"#));
            let rh = [(":status", "200"), ("content-type", "application/json")];
            let mut out = Vec::new();
            let _ = f.on_response_headers(&rh, false, t(at), &mut out);
            let (head, tail) = answer.split_at(10);
            let _ = f.on_response_body(head, false, t(at), &mut out);
            let _ = f.on_response_body(tail, true, t(at), &mut out);
            false
        };
        let q = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        assert!(!ask(q, "Bearer a", 0));
        assert!(
            !ask(q, "Bearer a", 0),
            "another anthropic-beta: another answer"
        );
        assert!(
            ask(q, "Bearer other-client", 1_000),
            "the same question, any client"
        );
        assert!(!ask(r#"{"model":"m","messages":[]}"#, "Bearer a", 1_000));
        assert!(!ask(q, "Bearer a", 61_000), "expired");
        let streamed = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        assert!(!ask(streamed, "Bearer a", 61_500));
        assert!(!ask(streamed, "Bearer a", 62_000), "streams are not cached");
        // The client's own key reaches this provider: answers are per key.
        let k = r#"{"model":"k","messages":[]}"#;
        assert!(!ask(k, "Bearer a", 0));
        assert!(!ask(k, "Bearer b", 0));
        assert!(ask(k, "Bearer a", 0));
    }

    #[test]
    fn route_metadata_is_written_with_the_requests() {
        let config = Arc::new(
            Config::from_json(
                br#"{"version": "v1",
                "backends": [{"name": "b", "schema": {"name": "OpenAI"}}],
                "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "b"}],
                            "metadata": {"tenant": "search"}}]}"#,
            )
            .unwrap(),
        );
        let mut f = HttpFilter::new(config, FilterRole::Router);
        let mut out = Vec::new();
        let h = [(":method", "POST"), (":path", "/v1/chat/completions")];
        let _ = f.on_request_headers(&h, false, t(0), &mut out);
        let _ = f.on_request_body(br#"{"model":"m","messages":[]}"#, true, t(0), &mut out);
        let _ = f.on_response_headers(&[(":status", "200")], false, t(1), &mut out);
        out.clear();
        let _ = f.on_response_body(b"{}", true, t(2), &mut out);
        assert!(out.iter().any(
            |a| matches!(a, Action::SetMetadata { key, value: MetadataValue::String(v) }
            if key == "tenant" && v == "search")
        ));

        let clash = Config::from_json(
            br#"{"version": "v1", "backends": [{"name": "b", "schema": {"name": "OpenAI"}}],
            "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "b"}],
                        "metadata": {"route_name": "x"}}]}"#,
        )
        .unwrap_err();
        assert_eq!(clash.path, "routes[0].metadata.route_name");
    }

    #[test]
    fn edited_headers_list_what_the_next_filter_sees() {
        let base = [("a", "1"), ("b", "2"), ("c", "3")];
        let edits = [
            Action::SetHeader {
                name: "b".into(),
                value: "x".into(),
            },
            Action::RemoveHeader { name: "c".into() },
            Action::SetHeader {
                name: "d".into(),
                value: "4".into(),
            },
            Action::SetHeader {
                name: "b".into(),
                value: "y".into(),
            },
        ];
        let view = Edited {
            base: &base,
            edits: &edits,
        };
        let mut seen = Vec::new();
        view.for_each(&mut |n, v| seen.push(format!("{n}={v}")));
        assert_eq!(seen, ["a=1", "b=y", "d=4"]);
    }

    #[test]
    fn request_validation_denies_in_the_clients_schema_before_anything_else() {
        let config = Arc::new(
            Config::from_json(
                br#"{"version": "v1",
                "backends": [{"name": "b", "schema": {"name": "OpenAI"}}],
                "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "b"}]}],
                "requestValidation": {"rules": [
                    {"expression": "request.headers['x-team'] == 'trusted'", "action": "Allow"},
                    {"expression": "!('x-team' in request.headers) || request.url_path == '/admin'", "action": "Deny"}
                ]}}"#,
            )
            .unwrap(),
        );
        let run = |path: &str, team: Option<&str>| {
            let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
            let mut out = Vec::new();
            let mut h = vec![(":method", "POST"), (":path", path)];
            h.extend(team.map(|t| ("x-team", t)));
            let s = f.on_request_headers(&h.as_slice(), false, t(0), &mut out);
            (s, out)
        };
        let (s, out) = run("/v1/chat/completions", None);
        assert_eq!(s, Status::StopIteration);
        assert!(out.contains(&Action::Count(Counter::RequestDenied)));
        let (status, body) = local_reply(&out);
        assert_eq!(status, 403);
        assert_eq!(body["error"]["code"], "request_denied");
        assert_eq!(body["error"]["type"], "permission_error");
        let (_, out) = run("/anthropic/v1/messages", None);
        let (status, body) = local_reply(&out);
        assert_eq!(
            (status, body["error"]["type"].as_str()),
            (403, Some("permission_error"))
        );
        assert_eq!(body["type"], "error");
        // Any path: an Allow ends the rules, the Deny catches what is left.
        assert_eq!(local_reply(&run("/admin", Some("ads")).1).0, 403);
        let (s, out) = run("/admin", Some("trusted"));
        assert_eq!(s, Status::Continue);
        assert!(out.is_empty(), "{out:?}");
        let (s, _) = run("/v1/chat/completions", Some("ads"));
        assert_eq!(s, Status::StopIteration, "on to the body");

        let bad = Config::from_json(
            br#"{"version": "v1", "requestValidation": {"rules": [
                {"expression": "true", "action": "Allow"},
                {"expression": "req.path == '/'", "action": "Deny"}]}}"#,
        )
        .unwrap_err();
        assert_eq!(bad.path, "requestValidation.rules[1].expression");
        let bad = Config::from_json(
            br#"{"version": "v1", "requestValidation": {"rules": [
                {"expression": "true", "action": "Maybe"}]}}"#,
        )
        .unwrap_err();
        assert_eq!(bad.path, "requestValidation.rules[0].action");
    }

    #[test]
    fn routes_by_model_and_clears_route_cache() {
        let (_, out, s) = post(br#"{"model":"gpt-4o-mini","messages":[]}"#);
        assert_eq!(s, Status::Continue);
        assert_eq!(
            out,
            vec![
                Action::SetBufferLimit(64),
                Action::SetHeader {
                    name: MODEL_HEADER.into(),
                    value: "gpt-4o-mini".into()
                },
                Action::ClearRouteCache,
            ]
        );
    }

    #[test]
    fn spoofed_routing_header_is_removed_on_every_path() {
        for path in ["/v1/chat/completions", "/other"] {
            let (_, out, _) = request(
                &[
                    (":method", "POST"),
                    (":path", path),
                    (MODEL_HEADER, "free-model"),
                ],
                br#"{"model":"gpt-4o-mini"}"#,
            );
            assert_eq!(
                out[0],
                Action::RemoveHeader {
                    name: MODEL_HEADER.into()
                },
                "{path}"
            );
        }
        let (_, out, _) = post(br#"{"model":"gpt-4o-mini"}"#);
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::SetHeader { value, .. } if value == "gpt-4o-mini")));
        let (_, out, _) = request(
            &[
                (":method", "POST"),
                (":path", "/v1/chat/completions"),
                (BACKEND_HEADER, "x"),
                (MODEL_OVERRIDE_HEADER, "y"),
            ],
            br#"{"model":"gpt-4o-mini"}"#,
        );
        assert_eq!(
            &out[..2],
            &[
                Action::RemoveHeader {
                    name: BACKEND_HEADER.into()
                },
                Action::RemoveHeader {
                    name: MODEL_OVERRIDE_HEADER.into()
                },
            ]
        );
    }

    #[test]
    fn bad_inputs_get_openai_errors() {
        let cases: &[(&[u8], u16, &str)] = &[
            (b"{not json", 400, "invalid_json"),
            (b"[1,2]", 400, "invalid_json"),
            (br#"{"messages":[]}"#, 400, "invalid_request"),
            (br#"{"model":""}"#, 400, "invalid_request"),
            (br#"{"model":42}"#, 400, "invalid_request"),
            (
                br#"{"model":"gpt-4o-mini","stream":"yes"}"#,
                400,
                "invalid_request",
            ),
            (br#"{"model":"nope-model"}"#, 404, "model_not_found"),
        ];
        for (body, status, code) in cases {
            let (f, out, s) = post(body);
            assert_eq!(s, Status::StopIteration);
            assert!(f.replied());
            let (got, v) = local_reply(&out);
            assert_eq!(
                (got, v["error"]["code"].as_str().unwrap()),
                (*status, *code),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let (_, out, _) = post(br#"{"model":"nope-model"}"#);
        assert!(local_reply(&out).1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope-model"));
        let (_, out, _) = post(br#"{"model":42}"#);
        assert_eq!(local_reply(&out).1["error"]["param"], "model");
    }

    #[test]
    fn oversized_bodies_get_413_by_header_or_by_bytes() {
        let (_, out, _) = request(
            &[
                (":method", "POST"),
                (":path", "/v1/embeddings"),
                ("content-length", "65"),
            ],
            b"{}",
        );
        assert_eq!(local_reply(&out).0, 413);

        let mut f = HttpFilter::new(config(), FilterRole::Router);
        let mut out = Vec::new();
        let h = [(":method", "POST"), (":path", "/v1/embeddings")];
        assert_eq!(
            f.on_request_headers(&h, false, t(0), &mut out),
            Status::StopIteration
        );
        assert_eq!(
            f.on_request_body(&[b' '; 40], false, t(0), &mut out),
            Status::StopAndBuffer
        );
        let _ = f.on_request_body(&[b' '; 40], false, t(0), &mut out);
        let (status, v) = local_reply(&out);
        assert_eq!(status, 413);
        assert_eq!(v["error"]["code"], "request_too_large");
        // Nothing more happens on this stream.
        out.clear();
        assert_eq!(
            f.on_request_body(b"x", true, t(0), &mut out),
            Status::Continue
        );
        assert!(out.is_empty());
    }

    #[test]
    fn models_list_and_method_checks() {
        let (_, out, _) = request(&[(":method", "GET"), (":path", "/v1/models")], b"");
        let (status, v) = local_reply(&out);
        assert_eq!(status, 200);
        let ids: Vec<_> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["gpt-4o-mini", "free-model"]);

        let (_, out, _) = request(
            &[(":method", "GET"), (":path", "/v1/chat/completions")],
            b"",
        );
        assert_eq!(local_reply(&out).0, 405);
        let (_, out, _) = request(
            &[(":method", "POST"), (":path", "/v1/chat/completions")],
            b"",
        );
        assert_eq!(local_reply(&out).0, 400);
    }

    #[test]
    fn other_paths_pass_through_untouched() {
        let (mut f, out, s) = request(&[(":method", "GET"), (":path", "/healthz")], b"");
        assert_eq!(s, Status::Continue);
        assert!(out.is_empty());
        let mut out = Vec::new();
        assert_eq!(
            f.on_response_headers(&[(":status", "200")], false, t(2), &mut out),
            Status::Continue
        );
        assert_eq!(
            f.on_response_body(b"ok", true, t(3), &mut out),
            Status::Continue
        );
        f.on_stream_complete(t(4), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn streaming_with_costs_asks_upstream_for_usage() {
        let (_, out, _) = post(br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#);
        let body = out.iter().find_map(|a| match a {
            Action::ReplaceBody(b) => Some(b.clone()),
            _ => None,
        });
        let v: serde_json::Value = serde_json::from_slice(&body.expect("body rewritten")).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "gpt-4o-mini");
        assert!(out.contains(&Action::RemoveHeader {
            name: "accept-encoding".into()
        }));
        let len = out.iter().find_map(|a| match a {
            Action::SetHeader { name, value } if name == "content-length" => Some(value.clone()),
            _ => None,
        });
        assert_eq!(len, Some(serde_json::to_vec(&v).unwrap().len().to_string()));

        // Client asked itself, or route has no costs: body untouched.
        for body in [
            &br#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true}}"#[..],
            br#"{"model":"free-model","stream":true}"#,
            br#"{"model":"gpt-4o-mini","stream":false}"#,
        ] {
            let (_, out, _) = post(body);
            assert!(!out.iter().any(|a| matches!(a, Action::ReplaceBody(_))));
        }
    }

    #[test]
    fn response_metadata_names_route_backend_and_override() {
        let (mut f, _, _) = post(br#"{"model":"free-model"}"#);
        let mut out = Vec::new();
        let h = [
            (":status", "200"),
            ("content-type", "application/json"),
            (BACKEND_HEADER, "renamed"),
            (MODEL_OVERRIDE_HEADER, "upstream-model"),
        ];
        let _ = f.on_response_headers(&h, false, t(5), &mut out);
        assert!(out.contains(&Action::RemoveHeader {
            name: BACKEND_HEADER.into()
        }));
        assert!(out.contains(&Action::RemoveHeader {
            name: MODEL_OVERRIDE_HEADER.into()
        }));
        out.clear();
        let _ = f.on_response_body(b"{}", true, t(6), &mut out);
        let meta: Vec<_> = out
            .iter()
            .filter_map(|a| match a {
                Action::SetMetadata {
                    key,
                    value: MetadataValue::String(v),
                } => Some((key.as_str(), v.as_str())),
                _ => None,
            })
            .collect();
        assert!(meta.contains(&("route_name", "free")));
        assert!(meta.contains(&("backend_name", "renamed")));
        assert!(meta.contains(&("model_name_override", "upstream-model")));
        assert!(meta.contains(&("request_model", "free-model")));
        // Written once.
        out.clear();
        f.on_stream_complete(t(7), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn upstream_role_overrides_model_and_names_backend() {
        let mut f = HttpFilter::new(config(), FilterRole::Upstream);
        f.bind_backend(Some("renamed"), 0, None);
        let mut out = Vec::new();
        let h = [(":method", "POST"), (":path", "/v1/chat/completions")];
        assert_eq!(
            f.on_request_headers(&h, false, t(0), &mut out),
            Status::StopIteration
        );
        let _ = f.on_request_body(br#"{"model":"free-model","n":1}"#, true, t(0), &mut out);
        let body = out.iter().find_map(|a| match a {
            Action::ReplaceBody(b) => Some(b.clone()),
            _ => None,
        });
        assert_eq!(body.unwrap(), br#"{"model":"upstream-model","n":1}"#);
        out.clear();
        let _ = f.on_response_headers(&[(":status", "200")], false, t(1), &mut out);
        assert_eq!(
            out,
            vec![
                Action::SetHeader {
                    name: BACKEND_HEADER.into(),
                    value: "renamed".into()
                },
                Action::SetHeader {
                    name: MODEL_OVERRIDE_HEADER.into(),
                    value: "upstream-model".into()
                },
            ]
        );

        // No override: no buffering, and a spoofed override header is cleared.
        let mut f = HttpFilter::new(config(), FilterRole::Upstream);
        f.bind_backend(Some("primary"), 0, None);
        let mut out = Vec::new();
        assert_eq!(
            f.on_request_headers(&h, false, t(0), &mut out),
            Status::Continue
        );
        let _ = f.on_response_headers(
            &[(":status", "200"), (MODEL_OVERRIDE_HEADER, "x")],
            false,
            t(1),
            &mut out,
        );
        assert!(out.contains(&Action::RemoveHeader {
            name: MODEL_OVERRIDE_HEADER.into()
        }));

        // Unknown backend: pass through.
        let mut f = HttpFilter::new(config(), FilterRole::Upstream);
        f.bind_backend(None, 0, None);
        let mut out = Vec::new();
        assert_eq!(
            f.on_request_headers(&h, false, t(0), &mut out),
            Status::Continue
        );
        out.clear();
        let _ = f.on_response_headers(&[(":status", "200")], false, t(1), &mut out);
        assert!(out.is_empty());
    }

    fn metered_config() -> Arc<Config> {
        Arc::new(
            Config::from_json(
                br#"{
            "version": "v1",
            "backends": [{"name": "primary", "schema": {"name": "OpenAI"}}],
            "routes": [{"name": "chat", "models": ["m"], "backends": [{"name": "primary"}]}],
            "llmRequestCosts": [
                {"metadataKey": "in", "type": "InputToken"},
                {"metadataKey": "total", "type": "TotalToken"},
                {"metadataKey": "weighted", "type": "CEL", "cel": "input_tokens + output_tokens * 4"},
                {"metadataKey": "negative", "type": "CEL", "cel": "input_tokens - 1000"}
            ]
        }"#,
            )
            .unwrap(),
        )
    }

    fn numbers(out: &[Action]) -> Vec<(&str, f64)> {
        out.iter()
            .filter_map(|a| match a {
                Action::SetMetadata {
                    key,
                    value: MetadataValue::Number(n),
                } => Some((key.as_str(), *n)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn stream_is_metered_and_the_injected_usage_chunk_removed() {
        let mut f = HttpFilter::new(metered_config(), FilterRole::Router);
        let mut out = Vec::new();
        let h = [(":method", "POST"), (":path", "/v1/chat/completions")];
        let _ = f.on_request_headers(&h, false, t(0), &mut out);
        let _ = f.on_request_body(br#"{"model":"m","stream":true}"#, true, t(0), &mut out);
        assert!(out.iter().any(|a| matches!(a, Action::ReplaceBody(_))));
        out.clear();
        let rh = [(":status", "200"), ("content-type", "text/event-stream")];
        let _ = f.on_response_headers(&rh, false, t(100), &mut out);
        let chunks: [&[u8]; 4] = [
            b"data: {\"model\":\"m-1\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\ndata: {\"choices\":[],\"usage\":",
            b"{\"prompt_tokens\":10,\"completion_tokens\":3,\"total_tokens\":13}}\n\n",
            b"data: [DONE]\n\n",
        ];
        let mut sent = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            out.clear();
            let eos = i == chunks.len() - 1;
            let _ = f.on_response_body(chunk, eos, t(200 + 100 * i as u64), &mut out);
            match out.iter().find_map(|a| match a {
                Action::ReplaceBody(b) => Some(b.clone()),
                _ => None,
            }) {
                Some(b) => sent.extend(b),
                None => sent.extend_from_slice(chunk),
            }
        }
        let sent = String::from_utf8(sent).unwrap();
        assert!(!sent.contains("usage"), "{sent}");
        assert!(
            sent.contains("\"a\"") && sent.contains("\"b\"") && sent.ends_with("data: [DONE]\n\n")
        );
        let n = numbers(&out);
        assert!(n.contains(&("in", 10.0)));
        assert!(n.contains(&("total", 13.0)));
        assert!(n.contains(&("weighted", 22.0)));
        assert!(n.contains(&("token_latency_ttft", 200.0)), "{n:?}");
        // Negative results are logged, not written.
        assert!(!n.iter().any(|(k, _)| *k == "negative"));
        assert!(out.iter().any(
            |a| matches!(a, Action::Log { level: LogLevel::Warn, message } if message.contains("negative"))
        ));
        assert!(out.contains(&Action::SetMetadata {
            key: "response_model".into(),
            value: MetadataValue::String("m-1".into())
        }));
    }

    #[test]
    fn upstream_errors_pass_through_unmetered() {
        let mut f = HttpFilter::new(metered_config(), FilterRole::Router);
        let mut out = Vec::new();
        let h = [(":method", "POST"), (":path", "/v1/chat/completions")];
        let _ = f.on_request_headers(&h, false, t(0), &mut out);
        let _ = f.on_request_body(br#"{"model":"m"}"#, true, t(0), &mut out);
        out.clear();
        let _ = f.on_response_headers(&[(":status", "429")], false, t(1), &mut out);
        let _ = f.on_response_body(
            br#"{"error":{"message":"slow down"}}"#,
            true,
            t(2),
            &mut out,
        );
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::ReplaceBody(_) | Action::SendLocalReply { .. })));
        assert!(numbers(&out).is_empty());
        assert!(out.contains(&Action::SetMetadata {
            key: "route_name".into(),
            value: MetadataValue::String("chat".into())
        }));
    }

    #[test]
    fn include_usage_is_asked_for_whatever_stream_options_holds() {
        let usage = |body: &str| {
            let peek = parse_peek(body.as_bytes()).unwrap();
            let out = with_include_usage(body.as_bytes(), peek.stream_options.is_none()).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            (v["stream_options"]["include_usage"].clone(), v)
        };
        for body in [
            r#"{"model":"m","stream":true}"#,
            r#"  { "model" : "m" }"#,
            r#"{}"#,
            r#"{ }"#,
            r#"{"stream_options":null,"model":"m"}"#,
            r#"{"model":"m","stream_options":{"include_usage":false,"x":1}}"#,
        ] {
            let (include, v) = usage(body);
            assert_eq!(include, serde_json::Value::Bool(true), "{body}");
            let members = v.as_object().unwrap();
            let original: serde_json::Value = serde_json::from_str(body).unwrap();
            for (k, val) in original.as_object().unwrap() {
                if k != "stream_options" {
                    assert_eq!(members.get(k), Some(val), "{body}");
                }
            }
        }
        let (_, v) = usage(r#"{"model":"m","stream_options":{"include_usage":false,"x":1}}"#);
        assert_eq!(v["stream_options"]["x"], 1);
    }

    #[test]
    fn router_only_leaves_a_per_request_credential_to_the_upstream_instance() {
        // Several backends: the upstream instance does the upstream work, and reads
        // the per-request key from `authorization`; the client's `x-api-key` goes.
        let config = Arc::new(
            Config::from_json(
                br#"{"version": "v1", "routerOnly": true,
                "backends": [
                  {"name": "a", "schema": {"name": "OpenAI"},
                   "credentialOverride": {"header": "authorization"}},
                  {"name": "b", "schema": {"name": "OpenAI"}}],
                "routes": [{"name": "r", "models": ["m"],
                  "backends": [{"name": "a"}, {"name": "b", "priority": 1}]}]}"#,
            )
            .unwrap(),
        );
        let mut f = HttpFilter::new(config, FilterRole::Router);
        let mut out = Vec::new();
        let h = [
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            ("authorization", "Bearer per-request"),
            ("x-api-key", "client"),
        ];
        let _ = f.on_request_headers(&h, false, t(0), &mut out);
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(
            f.on_request_body(body, true, t(1), &mut out),
            Status::Continue
        );
        let removed = |name: &str| {
            out.iter()
                .any(|a| matches!(a, Action::RemoveHeader { name: n } if n == name))
        };
        assert!(!removed("authorization"), "{out:?}");
        assert!(removed("x-api-key"), "{out:?}");
    }

    #[test]
    fn router_only_translates_before_routing_and_meters_the_translation() {
        let config = Arc::new(
            Config::from_json(
                br#"{"version": "v1", "routerOnly": true,
                "backends": [{"name": "br", "schema": {"name": "AWSBedrock"}, "region": "us-east-1",
                  "modelNameOverride": "amazon.nova-lite-v1:0",
                  "auth": {"awsSigV4": {"accessKeyId": "AKID", "secretAccessKey": "s"}}}],
                "routes": [{"name": "r", "models": ["nova"], "backends": [{"name": "br"}]}],
                "llmRequestCosts": [{"metadataKey": "in", "type": "InputToken"}]}"#,
            )
            .unwrap(),
        );
        let mut f = HttpFilter::new(config, FilterRole::Router);
        f.set_unix_seconds(1_700_000_000);
        let mut out = Vec::new();
        let h = [
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gw"),
            ("authorization", "Bearer client"),
        ];
        assert_eq!(
            f.on_request_headers(&h, false, t(0), &mut out),
            Status::StopIteration
        );
        out.clear();
        let body = br#"{"model":"nova","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(
            f.on_request_body(body, true, t(1), &mut out),
            Status::Continue
        );
        let set = |name: &str| {
            out.iter().rev().find_map(|a| match a {
                Action::SetHeader { name: n, value } if n == name => Some(value.clone()),
                _ => None,
            })
        };
        assert_eq!(set(MODEL_HEADER).as_deref(), Some("nova"));
        // The route is picked on the client's Host; the route rewrites it.
        assert_eq!(set(":authority"), None);
        assert_eq!(
            set(":path").as_deref(),
            Some("/model/amazon.nova-lite-v1%3A0/converse-stream")
        );
        assert!(set("authorization")
            .unwrap()
            .starts_with("AWS4-HMAC-SHA256"));
        let bodies: Vec<_> = out
            .iter()
            .filter(|a| matches!(a, Action::ReplaceBody(_)))
            .collect();
        assert_eq!(bodies.len(), 1, "only the translated body is sent");
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::SetFilterState { .. })));

        // The Bedrock stream comes back as OpenAI SSE, and is metered as such.
        out.clear();
        let rh = [
            (":status", "200"),
            ("content-type", "application/vnd.amazon.eventstream"),
        ];
        assert_eq!(
            f.on_response_headers(&rh, false, t(2), &mut out),
            Status::Continue
        );
        assert_eq!(
            out.iter().find_map(|a| match a {
                Action::SetHeader { name, value } if name == "content-type" => Some(value.as_str()),
                _ => None,
            }),
            Some("text/event-stream")
        );
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::SetHeader { name, .. } if name.starts_with("x-aigw-"))));
        let frames = crate::translate::testing::converse_stream(&["Hi"], 7, 1);
        let mut sent = Vec::new();
        for (i, piece) in frames.chunks(9).enumerate() {
            out.clear();
            let _ = f.on_response_body(piece, false, t(3 + i as u64), &mut out);
            for a in &out {
                if let Action::ReplaceBody(b) = a {
                    sent.extend_from_slice(b);
                }
            }
        }
        let _ = f.on_response_body(&[], true, t(100), &mut out);
        for a in &out {
            if let Action::ReplaceBody(b) = a {
                sent.extend_from_slice(b);
            }
        }
        let text = String::from_utf8(sent).unwrap();
        assert!(
            text.contains(r#""content":"Hi""#) && text.ends_with("data: [DONE]\n\n"),
            "{text}"
        );
        assert!(
            !text.contains("usage"),
            "the gateway asked for usage: the client does not see it"
        );
        assert!(out.contains(&Action::SetMetadata {
            key: "in".into(),
            value: MetadataValue::Number(7.0)
        }));
        assert!(out.contains(&Action::SetMetadata {
            key: "backend_name".into(),
            value: MetadataValue::String("br".into())
        }));
    }

    #[test]
    fn headers_lookup_is_case_insensitive() {
        let h = [("Content-Type", "x")];
        assert_eq!(h.get("content-type").as_deref(), Some("x"));
    }
}
