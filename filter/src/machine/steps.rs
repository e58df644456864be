//! The gateway's own steps of the router-level pipelines (see [`super::pipeline`]):
//! telling its endpoints from the rest, reading the request, routing it, and the
//! inline upstream work of `routerOnly`. Policies' and metering's steps live beside
//! their policies (`policy/`, `metering/`).

use std::borrow::Cow;

use serde::Deserialize;

use super::pipeline::{BodyStep, Chunk, Cx, Flow, HeaderStep, ResponseStep};
use super::upstream::{SavedRequest, Upstream, CLIENT_CREDENTIAL_HEADERS};
use super::{BACKEND_HEADER, MODEL_OVERRIDE_HEADER};
use crate::codec::multipart::Form;
use crate::endpoint::Endpoint;
use crate::error::{ClientSchema, GatewayError};
use crate::host::{Action, CalloutResult, Headers, Status};
use crate::MODEL_HEADER;

/// Headers a client may not send: the gateway alone sets them.
pub(crate) const CLIENT_FORBIDDEN_HEADERS: [&str; 3] =
    [MODEL_HEADER, BACKEND_HEADER, MODEL_OVERRIDE_HEADER];

// ---------------------------------------------------------------------------------
// Request headers.

/// Removes the routing and internal headers a client sent, whatever the path: the
/// routing header and every `x-aigw-*` header, those the gateway uses today and
/// any it may use later.
pub(crate) struct InternalHeaders;

impl HeaderStep for InternalHeaders {
    fn on_headers(&self, _cx: &mut Cx<'_>, headers: &dyn Headers, out: &mut Vec<Action>) -> Flow {
        let mut sent: Vec<String> = Vec::new();
        headers.for_each_name(&mut |name| {
            let internal = crate::host::is_internal_header(name)
                || CLIENT_FORBIDDEN_HEADERS
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(name));
            if internal {
                let lower = name.to_ascii_lowercase();
                if !sent.contains(&lower) {
                    sent.push(lower);
                }
            }
        });
        for name in CLIENT_FORBIDDEN_HEADERS {
            if !sent.iter().any(|s| s == name) && headers.get(name).is_some() {
                sent.push(name.to_string());
            }
        }
        out.extend(sent.into_iter().map(|name| Action::RemoveHeader { name }));
        Flow::Next
    }
}

/// The endpoint the path names (none: not the gateway's).
pub(crate) struct Classify;

impl HeaderStep for Classify {
    fn on_headers(&self, cx: &mut Cx<'_>, headers: &dyn Headers, _out: &mut Vec<Action>) -> Flow {
        let path = headers.get(":path").unwrap_or_default();
        cx.req.endpoint = Endpoint::classify(&path);
        if cx.req.endpoint.is_none() {
            cx.req.route = cx.config.passthrough_route(&path);
            cx.req.endpoint = cx.req.route.map(|_| Endpoint::Passthrough);
        }
        cx.req.method = headers.get(":method").unwrap_or_default();
        Flow::Next
    }
}

/// Lets other paths pass, answers `GET /v1/models`, refuses the wrong method (a
/// route's passthrough takes any).
pub(crate) struct Gateway;

impl HeaderStep for Gateway {
    fn on_headers(&self, cx: &mut Cx<'_>, _headers: &dyn Headers, out: &mut Vec<Action>) -> Flow {
        let Some(endpoint) = cx.req.endpoint else {
            return Flow::PassThrough;
        };
        let method = &cx.req.method;
        if endpoint == Endpoint::Models {
            if method != "GET" && method != "HEAD" {
                return Flow::Reply(GatewayError::MethodNotAllowed {
                    method: method.clone(),
                    path: endpoint.path(),
                });
            }
            out.push(Action::SendLocalReply {
                status: 200,
                content_type: "application/json",
                body: cx.config.models_body().to_vec(),
                details: "models_list",
                headers: Vec::new(),
            });
            return Flow::Replied;
        }
        if method != "POST" && endpoint != Endpoint::Passthrough {
            return Flow::Reply(GatewayError::MethodNotAllowed {
                method: method.clone(),
                path: endpoint.path(),
            });
        }
        Flow::Next
    }
}

/// `routerOnly`: keeps the headers the inline upstream work reads (the body comes
/// after them).
pub(crate) struct SaveForInline;

impl HeaderStep for SaveForInline {
    fn on_headers(&self, cx: &mut Cx<'_>, headers: &dyn Headers, _out: &mut Vec<Action>) -> Flow {
        if cx.config.router_only {
            cx.req.saved = Some(SavedRequest::take(cx.config, headers));
        }
        Flow::Next
    }
}

// ---------------------------------------------------------------------------------
// Request body.

/// The fields of a request body the gateway reads; everything else is skipped
/// without being built.
#[derive(Deserialize)]
pub(crate) struct RequestPeek<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    /// `None`: absent; `Some(None)`: `null`.
    #[serde(default, deserialize_with = "present")]
    pub(crate) stream_options: Option<Option<StreamOptions>>,
    /// Read leniently: a value that is no count is the provider's to refuse.
    #[serde(default, deserialize_with = "count")]
    max_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    max_completion_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    max_output_tokens: Option<u64>,
}

/// A token count when the value is a non-negative number, else `None`. Read from the
/// raw text: a number too large for any type (`1e400`) is no count, not a parse error
/// of the whole body.
fn count<'de, D>(d: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: Box<serde_json::value::RawValue> = Deserialize::deserialize(d)?;
    let text = raw.get();
    Ok(text.parse::<u64>().ok().or_else(|| {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.min(u64::MAX as f64) as u64)
    }))
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
pub(crate) struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Reads `model`, `stream`, `stream_options` and the token caps; nothing else of
/// the body is looked into here (a passthrough body's bytes are the provider's).
pub(crate) struct Parse;

impl BodyStep for Parse {
    fn on_body(&self, cx: &mut Cx<'_>, _out: &mut Vec<Action>) -> Flow {
        let endpoint = cx.req.endpoint.unwrap_or(Endpoint::ChatCompletions);
        if endpoint == Endpoint::Passthrough {
            // Another API's body: not the gateway's to read.
            return Flow::Next;
        }
        if endpoint.takes_forms() && cx.req.body.starts_with(b"--") {
            return parse_form(cx, endpoint);
        }
        let peek = match parse_peek(&cx.req.body) {
            Ok(p) => p,
            Err(e) => return Flow::Reply(e),
        };
        let model = match peek.model {
            Some(m) if !m.is_empty() => m.into_owned(),
            _ => {
                return Flow::Reply(GatewayError::InvalidField {
                    field: "model".into(),
                    reason: "a non-empty model name is required".into(),
                })
            }
        };
        cx.req.stream = endpoint.can_stream() && peek.stream == Some(true);
        cx.req.stream_options_sent = peek.stream_options.is_some();
        cx.req.include_usage = peek
            .stream_options
            .as_ref()
            .and_then(|o| o.as_ref()?.include_usage)
            .unwrap_or(false);
        cx.req.model = model;
        cx.req.max_output_tokens = peek
            .max_completion_tokens
            .or(peek.max_tokens)
            .or(peek.max_output_tokens);
        Flow::Next
    }
}

/// An upload's `model` and `stream` fields.
fn parse_form(cx: &mut Cx<'_>, endpoint: Endpoint) -> Flow {
    let Some(form) = Form::parse(&cx.req.body) else {
        return Flow::Reply(GatewayError::InvalidField {
            field: "body".into(),
            reason: "not a well-formed multipart/form-data body".into(),
        });
    };
    let Some(model) = form.text("model").filter(|m| !m.is_empty()) else {
        return Flow::Reply(GatewayError::InvalidField {
            field: "model".into(),
            reason: "a non-empty model field is required".into(),
        });
    };
    cx.req.model = model.to_string();
    cx.req.stream = endpoint.can_stream() && form.text("stream") == Some("true");
    cx.req.form = true;
    Flow::Next
}

/// The route that serves the model (a passthrough's was found by its path).
pub(crate) struct PickRoute;

impl BodyStep for PickRoute {
    fn on_body(&self, cx: &mut Cx<'_>, _out: &mut Vec<Action>) -> Flow {
        if cx.req.endpoint == Some(Endpoint::Passthrough) {
            return Flow::Next;
        }
        match cx.config.route_index(&cx.req.model) {
            Some(i) => {
                cx.req.route = Some(i);
                Flow::Next
            }
            None => Flow::Reply(GatewayError::UnknownModel(cx.req.model.clone())),
        }
    }
}

/// Sets the routing header; Envoy picks the route again on it. A passthrough goes
/// where its route's first model goes, so every route table the compiler writes
/// routes it with no rule of its own.
pub(crate) struct Routing;

impl BodyStep for Routing {
    fn on_body(&self, cx: &mut Cx<'_>, out: &mut Vec<Action>) -> Flow {
        let value = match (cx.req.endpoint, cx.route()) {
            (Some(Endpoint::Passthrough), Some(route)) => route.models[0].clone(),
            _ => cx.req.model.clone(),
        };
        out.push(Action::SetHeader {
            name: MODEL_HEADER.to_string(),
            value,
        });
        out.push(Action::ClearRouteCache);
        Flow::Next
    }
}

/// A stream of an OpenAI client that did not ask for usage, on a route that needs
/// it (costs, a token limit): asks for it; the meter removes the extra chunk.
pub(crate) struct IncludeUsage;

impl BodyStep for IncludeUsage {
    fn on_body(&self, cx: &mut Cx<'_>, out: &mut Vec<Action>) -> Flow {
        let Some(route) = cx.route() else {
            return Flow::Next;
        };
        let wants_usage = !route.costs.is_empty() || route.rate_limit.tokens_per_minute.is_some();
        // The Responses API reports usage in its last event unasked.
        let openai = cx
            .req
            .endpoint
            .is_some_and(|e| e.client_schema() == ClientSchema::OpenAI && e != Endpoint::Responses);
        if !(openai && cx.req.stream && wants_usage && !cx.req.include_usage) {
            return Flow::Next;
        }
        match with_include_usage(cx.req.body_as_sent(), !cx.req.stream_options_sent) {
            Ok(body) => {
                cx.req.injected_usage = true;
                cx.req.rewritten = Some(body);
                // The usage chunk is removed from plain text; keep it plain.
                out.push(Action::RemoveHeader {
                    name: "accept-encoding".into(),
                });
                Flow::Next
            }
            Err(e) => Flow::Reply(e),
        }
    }
}

/// `routerOnly` (no upstream instance, as on Envoy Gateway): the upstream work for
/// a route with one backend, on the request as the router will send it. It may
/// wait, for the backend's exchanged credential.
pub(crate) struct Inline;

impl BodyStep for Inline {
    fn on_body(&self, cx: &mut Cx<'_>, out: &mut Vec<Action>) -> Flow {
        if !cx.config.router_only {
            return Flow::Next;
        }
        let Some(route) = cx.route() else {
            return Flow::Next;
        };
        let [only] = route.backends.as_slice() else {
            keep_client_credentials_home(cx, out);
            return Flow::Next;
        };
        let backend = only.name.clone();
        let mut headers = cx.req.saved.take().unwrap_or_default();
        headers.set(MODEL_HEADER, cx.req.model.clone());
        let mut u = Box::new(Upstream::new_inline());
        u.bind(Some(&backend), cx.unix_ms, None);
        let mut own = Vec::new();
        let status = u.on_request_headers(cx.config, &headers, false, &mut own);
        if status == Status::StopIteration && !u.replied() && !u.is_waiting() {
            let _ = u.on_request_body(cx.config, cx.req.body_as_sent(), true, &mut own);
        }
        cx.resp.model_override = cx
            .config
            .backend(&backend)
            .and_then(|b| b.model_name_override.clone());
        cx.resp.backend = Some(backend);
        let flow = inline_flow(cx, &mut u, own, out);
        cx.resp.inline = Some(u);
        flow
    }

    fn on_resume(
        &self,
        cx: &mut Cx<'_>,
        answer: Option<CalloutResult>,
        out: &mut Vec<Action>,
    ) -> Flow {
        let Some(mut u) = cx.resp.inline.take() else {
            return Flow::Next;
        };
        let mut own = Vec::new();
        let _ = u.resume(cx.config, answer, &mut own);
        let flow = inline_flow(cx, &mut u, own, out);
        cx.resp.inline = Some(u);
        flow
    }
}

/// What the inline upstream work's outcome means for the pipeline.
fn inline_flow(cx: &mut Cx<'_>, u: &mut Upstream, own: Vec<Action>, out: &mut Vec<Action>) -> Flow {
    if own.iter().any(|a| matches!(a, Action::ReplaceBody(_))) {
        // The translation replaces the body again: only its version is sent.
        cx.req.rewritten = None;
    }
    out.extend(own);
    if u.replied() {
        return Flow::Replied;
    }
    match u.take_wait() {
        Some(super::WaitFor::Call(c)) => Flow::Call(c),
        Some(super::WaitFor::Park(cell)) => Flow::Park(cell),
        None => Flow::Next,
    }
}

/// A route with several backends is not translated here (fallback needs the
/// upstream instance); the client's credentials still stay home unless a backend
/// takes them.
fn keep_client_credentials_home(cx: &Cx<'_>, out: &mut Vec<Action>) {
    let Some(route) = cx.route() else { return };
    let backends = || {
        route
            .backends
            .iter()
            .filter_map(|rb| cx.config.backend(&rb.name))
    };
    if backends().any(|b| b.forward_client_credentials) {
        return;
    }
    // A backend's per-request credential header is the upstream instance's to read
    // and remove, even when it is one of those names.
    let overrides: Vec<&str> = backends()
        .filter_map(|b| b.credential_override.as_deref())
        .collect();
    let sent = cx.req.saved.as_ref();
    for name in CLIENT_CREDENTIAL_HEADERS {
        if sent.is_some_and(|h| h.get(name).is_some()) && !overrides.contains(&name) {
            out.push(Action::RemoveHeader { name: name.into() });
        }
    }
}

// ---------------------------------------------------------------------------------
// Response.

/// `routerOnly`: the provider's answer becomes the client's before anything else
/// reads it; the inline work's internal headers stay inside.
pub(crate) struct TranslateBack;

impl ResponseStep for TranslateBack {
    fn on_headers(
        &self,
        cx: &mut Cx<'_>,
        headers: &dyn Headers,
        end_of_stream: bool,
        out: &mut Vec<Action>,
    ) -> Status {
        let Some(u) = cx.resp.inline.as_mut() else {
            return Status::Continue;
        };
        let mut own = Vec::new();
        let status = u.on_response_headers(cx.config, headers, end_of_stream, &mut own);
        own.retain(|a| !matches!(a, Action::SetHeader { name, .. } | Action::RemoveHeader { name } if name.starts_with(crate::INTERNAL_HEADER_PREFIX)));
        out.extend(own);
        status
    }

    fn on_body(&self, cx: &mut Cx<'_>, chunk: &mut Chunk<'_>, out: &mut Vec<Action>) -> Status {
        let Some(u) = cx.resp.inline.as_mut() else {
            return Status::Continue;
        };
        let mut own = Vec::new();
        let status = u.on_response_body(cx.config, chunk.bytes(), chunk.end_of_stream, &mut own);
        if status != Status::Continue {
            out.extend(own);
            return status;
        }
        for a in own {
            match a {
                Action::ReplaceBody(b) => chunk.replace(b),
                other => out.push(other),
            }
        }
        Status::Continue
    }
}

/// Longest plain-text error body [`PlainErrors`] rewrites (Envoy's are one line).
const MAX_PLAIN_ERROR: u64 = 4096;

/// An error answer that is not JSON, in the client's schema when no translation
/// writes it: Envoy's own (`upstream request timeout` at the route timeout,
/// `upstream connect error or disconnect/reset before headers` when the provider
/// resets or refuses, `no healthy upstream`), which reach this instance only, never
/// an upstream one, and a provider's or a proxy's plain-text or HTML error. An
/// OpenAI or Anthropic client reads JSON errors; the text is quoted in the message
/// when it is one short line. A long body (or one of unknown length) passes as it
/// is rather than be held.
pub(crate) struct PlainErrors;

impl ResponseStep for PlainErrors {
    fn on_headers(
        &self,
        cx: &mut Cx<'_>,
        headers: &dyn Headers,
        end_of_stream: bool,
        _out: &mut Vec<Action>,
    ) -> Status {
        let status = headers
            .get(":status")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        if status < 400 || end_of_stream {
            return Status::Continue;
        }
        if cx
            .resp
            .inline
            .as_ref()
            .is_some_and(|u| u.translates_answer())
        {
            return Status::Continue; // TranslateBack writes it in the client's schema
        }
        let json = headers
            .get("content-type")
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
        let short = headers
            .get("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n <= MAX_PLAIN_ERROR);
        if json || !short {
            return Status::Continue;
        }
        cx.resp.plain_error = Some((status, Vec::new()));
        Status::StopIteration
    }

    fn on_body(&self, cx: &mut Cx<'_>, chunk: &mut Chunk<'_>, out: &mut Vec<Action>) -> Status {
        let Some((_, body)) = cx.resp.plain_error.as_mut() else {
            return Status::Continue;
        };
        let room = (MAX_PLAIN_ERROR as usize).saturating_sub(body.len());
        body.extend_from_slice(&chunk.bytes()[..chunk.bytes().len().min(room)]);
        if !chunk.end_of_stream {
            return Status::StopAndBuffer;
        }
        let Some((status, body)) = cx.resp.plain_error.take() else {
            return Status::Continue;
        };
        let none: [(&str, &str); 0] = [];
        let err = crate::translate::openai::error(status, &none, &body);
        let schema = cx
            .req
            .endpoint
            .map_or(ClientSchema::OpenAI, Endpoint::client_schema);
        let bytes = err.body(schema);
        crate::machine::json_answer_headers(None, bytes.len(), out);
        chunk.replace(bytes);
        Status::Continue
    }
}

/// Which backend answered and under which model name: the upstream instance says
/// so in internal headers, which go no further.
pub(crate) struct Attribution;

impl ResponseStep for Attribution {
    fn on_headers(
        &self,
        cx: &mut Cx<'_>,
        headers: &dyn Headers,
        _end_of_stream: bool,
        out: &mut Vec<Action>,
    ) -> Status {
        cx.resp.status = headers
            .get(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        // With the upstream work done here (`routerOnly`) no upstream instance ran:
        // such headers come from the provider and say nothing. No `x-aigw-*`
        // header reaches the client.
        let trusted = cx.resp.inline.is_none();
        for (name, slot) in [
            (BACKEND_HEADER, &mut cx.resp.backend),
            (MODEL_OVERRIDE_HEADER, &mut cx.resp.model_override),
        ] {
            if let Some(v) = headers.get(name) {
                if trusted {
                    *slot = Some(v);
                }
                out.push(Action::RemoveHeader { name: name.into() });
            }
        }
        let mut others: Vec<String> = Vec::new();
        headers.for_each_name(&mut |name| {
            if !crate::host::is_internal_header(name) {
                return;
            }
            let lower = name.to_ascii_lowercase();
            let known = lower == BACKEND_HEADER || lower == MODEL_OVERRIDE_HEADER;
            if !known && !others.contains(&lower) {
                others.push(lower);
            }
        });
        out.extend(others.into_iter().map(|name| Action::RemoveHeader { name }));
        Status::Continue
    }
}

// ---------------------------------------------------------------------------------
// Body helpers.

pub(crate) fn parse_peek(body: &[u8]) -> Result<RequestPeek<'_>, GatewayError> {
    // serde also reads a struct from an array; a request is always an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(GatewayError::InvalidJson("expected a JSON object".into()));
    }
    // Tracking the path slows every parse down; only a body that fails needs it.
    if let Ok(p) = serde_json::from_slice::<RequestPeek>(body) {
        return Ok(p);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, RequestPeek>(&mut *de) {
        // As `from_slice` does: nothing but whitespace may follow the object.
        Ok(p) => de
            .end()
            .map(|()| p)
            .map_err(|e| GatewayError::InvalidJson(e.to_string())),
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
pub(crate) fn with_include_usage(body: &[u8], absent: bool) -> Result<Vec<u8>, GatewayError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzzing (request_body): bytes after the request object were accepted when
    /// the fast parse failed, and the rewritten body sent on was not JSON.
    #[test]
    fn fuzz_request_body_trailing_bytes_after_the_object_are_refused() {
        for body in [
            &b"{\"model\":\"m\",\"stream\":true}\0\0"[..],
            b"{\"model\":\"m\"} {\"model\":\"other\"}",
            b"{\"model\":\"m\"}]",
        ] {
            assert!(
                matches!(parse_peek(body), Err(GatewayError::InvalidJson(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            parse_peek(b"{\"model\":\"m\"} \n")
                .unwrap()
                .model
                .as_deref(),
            Some("m")
        );
    }

    #[test]
    fn a_token_count_that_is_no_number_is_none_not_a_parse_error() {
        for (value, want) in [
            ("10", Some(10)),
            ("10.0", Some(10)),
            ("1e3", Some(1000)),
            ("1e400", None),
            ("-5", None),
            ("\"10\"", None),
            ("null", None),
            ("[1]", None),
        ] {
            let body = format!("{{\"model\":\"m\",\"max_tokens\":{value}}}");
            let peek = parse_peek(body.as_bytes()).unwrap_or_else(|e| panic!("{value}: {e:?}"));
            assert_eq!(peek.max_tokens, want, "{value}");
        }
        // The path-tracking parse (after a failed fast one) reads it too.
        let peek = parse_peek(b"{\"model\":\"m\",\"max_tokens\":1e400,\"stream\":\"x\"}");
        assert!(peek.is_err() || peek.unwrap().max_tokens.is_none());
    }
}
