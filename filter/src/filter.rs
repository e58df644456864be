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

use crate::config::{Backend, Config, Route};
use crate::cost::CostInputs;
use crate::endpoint::Endpoint;
use crate::error::{ClientSchema, GatewayError};
use crate::host::{Action, Headers, LogLevel, MetadataValue, Status};
use crate::usage::{BodyFormat, MeterOptions, ResponseMeter};
use crate::MODEL_HEADER;

/// Internal response header: the backend that answered (upstream → router instance).
pub const BACKEND_HEADER: &str = "x-aigw-backend";
/// Internal response header: the model name the backend was asked for, when overridden.
pub const MODEL_OVERRIDE_HEADER: &str = "x-aigw-model-override";

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
    /// Upstream role: the backend bound by the host.
    backend: Option<String>,
}

#[derive(Debug, Default)]
struct ResponseFacts {
    status: u16,
    backend: Option<String>,
    model_override: Option<String>,
    meter: Option<ResponseMeter>,
}

/// The fields of a request body the gateway reads; everything else is skipped
/// without being built.
#[derive(Deserialize)]
struct RequestPeek<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
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
        }
    }

    /// Upstream role: names the backend Envoy picked for this attempt (from the
    /// selected host's or cluster's metadata). Call before `on_request_headers`.
    pub fn bind_backend(&mut self, backend: Option<&str>) {
        self.request.backend = backend.map(str::to_string);
    }

    /// The error answered, for the host's counters, when the machine replied locally.
    pub fn replied(&self) -> bool {
        self.phase == Phase::Replied
    }

    pub fn on_request_headers(
        &mut self,
        headers: &dyn Headers,
        end_of_stream: bool,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        if self.phase != Phase::Start {
            return Status::Continue;
        }
        self.started_at = now;
        match self.role {
            FilterRole::Router => self.router_request_headers(headers, end_of_stream, out),
            FilterRole::Upstream => self.upstream_request_headers(headers, end_of_stream, out),
        }
    }

    pub fn on_request_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        _now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        if self.phase != Phase::RequestBody {
            return Status::Continue;
        }
        let limit = self.config.limits.max_request_body_bytes;
        if (self.body.len() + chunk.len()) as u64 > limit {
            self.body = Vec::new();
            return self.reply(GatewayError::BodyTooLarge { limit }, out);
        }
        self.body.extend_from_slice(chunk);
        if !end_of_stream {
            return Status::StopAndBuffer;
        }
        let body = std::mem::take(&mut self.body);
        self.phase = Phase::Response;
        match self.role {
            FilterRole::Router => self.router_request_body(&body, out),
            FilterRole::Upstream => self.upstream_request_body(&body, out),
        }
    }

    pub fn on_response_headers(
        &mut self,
        headers: &dyn Headers,
        end_of_stream: bool,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        if self.phase != Phase::Response {
            return Status::Continue;
        }
        match self.role {
            FilterRole::Router => {
                self.router_response_headers(headers, out);
                if end_of_stream {
                    self.finish(now, out);
                }
            }
            FilterRole::Upstream => self.upstream_response_headers(out),
        }
        Status::Continue
    }

    pub fn on_response_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        if self.phase != Phase::Response || self.role != FilterRole::Router {
            return Status::Continue;
        }
        if let Some(meter) = self.response.meter.as_mut() {
            if let Some(rewritten) = meter.feed(chunk, end_of_stream, now) {
                out.push(Action::ReplaceBody(rewritten));
            }
        }
        if end_of_stream {
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
        out.push(Action::SendLocalReply {
            status: err.status(),
            content_type: "application/json",
            body: err.body(ClientSchema::OpenAI),
            details: err.code(),
        });
        Status::StopIteration
    }

    fn router_request_headers(
        &mut self,
        headers: &dyn Headers,
        end_of_stream: bool,
        out: &mut Vec<Action>,
    ) -> Status {
        // Only the gateway decides the routing header, whatever the path.
        if headers.get(MODEL_HEADER).is_some() {
            out.push(Action::RemoveHeader {
                name: MODEL_HEADER.to_string(),
            });
        }
        let path = headers.get(":path").unwrap_or_default();
        let Some(endpoint) = Endpoint::classify(&path) else {
            self.phase = Phase::PassThrough;
            return Status::Continue;
        };
        self.endpoint = Some(endpoint);
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
        self.begin_body(headers, out)
    }

    /// Checks the announced size and starts buffering the request body.
    fn begin_body(&mut self, headers: &dyn Headers, out: &mut Vec<Action>) -> Status {
        let limit = self.config.limits.max_request_body_bytes;
        if let Some(len) = headers
            .get("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            if len > limit {
                return self.reply(GatewayError::BodyTooLarge { limit }, out);
            }
            self.body.reserve(len as usize);
        }
        out.push(Action::SetBufferLimit(limit));
        self.phase = Phase::RequestBody;
        Status::StopIteration
    }

    fn router_request_body(&mut self, body: &[u8], out: &mut Vec<Action>) -> Status {
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
        let include_usage = peek
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let wants_usage = !self.config.routes[route_index].costs.is_empty();

        out.push(Action::SetHeader {
            name: MODEL_HEADER.to_string(),
            value: model.clone(),
        });
        out.push(Action::ClearRouteCache);

        if self.request.stream && wants_usage && !include_usage {
            match with_include_usage(body) {
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
        Status::Continue
    }

    fn upstream_request_headers(
        &mut self,
        headers: &dyn Headers,
        end_of_stream: bool,
        out: &mut Vec<Action>,
    ) -> Status {
        let path = headers.get(":path").unwrap_or_default();
        let endpoint = match Endpoint::classify(&path) {
            Some(e) if e != Endpoint::Models => e,
            _ => {
                self.phase = Phase::PassThrough;
                return Status::Continue;
            }
        };
        self.endpoint = Some(endpoint);
        let Some(backend) = self.backend() else {
            out.push(Action::Log {
                level: LogLevel::Warn,
                message: format!(
                    "upstream filter: no configured backend for this host ({:?}); passing through",
                    self.request.backend
                ),
            });
            self.phase = Phase::PassThrough;
            return Status::Continue;
        };
        if backend.model_name_override.is_none() || end_of_stream {
            self.phase = Phase::Response;
            return Status::Continue;
        }
        self.begin_body(headers, out)
    }

    fn upstream_request_body(&mut self, body: &[u8], out: &mut Vec<Action>) -> Status {
        let Some(model) = self.backend().and_then(|b| b.model_name_override.clone()) else {
            return Status::Continue;
        };
        match with_model(body, &model) {
            Ok(new_body) => replace_request_body(new_body, out),
            Err(e) => return self.reply(e, out),
        }
        Status::Continue
    }

    fn upstream_response_headers(&mut self, out: &mut Vec<Action>) {
        let Some(backend) = self.backend() else { return };
        let name = backend.name.clone();
        let model_override = backend.model_name_override.clone();
        out.push(Action::SetHeader {
            name: BACKEND_HEADER.into(),
            value: name,
        });
        match model_override {
            Some(m) => out.push(Action::SetHeader {
                name: MODEL_OVERRIDE_HEADER.into(),
                value: m,
            }),
            None => out.push(Action::RemoveHeader {
                name: MODEL_OVERRIDE_HEADER.into(),
            }),
        }
        self.phase = Phase::Done;
    }

    fn backend(&self) -> Option<&Backend> {
        self.request
            .backend
            .as_deref()
            .and_then(|n| self.config.backend(n))
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
    fn finish(&mut self, _now: Duration, out: &mut Vec<Action>) {
        self.phase = Phase::Done;
        let Some(route) = self.route() else { return };
        let backend = self.response.backend.clone().or_else(|| {
            // One backend: no need for the upstream instance to say which.
            (route.backends.len() == 1).then(|| route.backends[0].name.clone())
        });
        let mut set = |key: &str, value: MetadataValue| {
            out.push(Action::SetMetadata {
                key: key.to_string(),
                value,
            })
        };
        set("route_name", MetadataValue::String(route.name.clone()));
        set("request_model", MetadataValue::String(self.request.model.clone()));
        if let Some(b) = &backend {
            set("backend_name", MetadataValue::String(b.clone()));
        }
        if let Some(m) = &self.response.model_override {
            set("model_name_override", MetadataValue::String(m.clone()));
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
                    message: format!("cost '{}' not written: {e:?}", cost.metadata_key),
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

/// Re-serialises a JSON object with one top-level change. Key order is kept.
fn edit_object(
    body: &[u8],
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Result<Vec<u8>, GatewayError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| GatewayError::InvalidJson(e.to_string()))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| GatewayError::InvalidJson("expected a JSON object".into()))?;
    edit(obj);
    serde_json::to_vec(&value).map_err(|_| GatewayError::Internal)
}

fn with_include_usage(body: &[u8]) -> Result<Vec<u8>, GatewayError> {
    edit_object(body, |obj| {
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
}

fn with_model(body: &[u8], model: &str) -> Result<Vec<u8>, GatewayError> {
    edit_object(body, |obj| {
        obj.insert("model".into(), model.into());
    })
}

fn replace_request_body(body: Vec<u8>, out: &mut Vec<Action>) {
    out.push(Action::SetHeader {
        name: "content-length".into(),
        value: body.len().to_string(),
    });
    out.push(Action::ReplaceBody(body));
}
