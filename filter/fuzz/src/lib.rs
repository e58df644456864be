//! What the fuzz targets share: a host that drives `aigw_filter::HttpFilter` as
//! Envoy would (headers, body chunks, buffering, body replacement), configurations
//! with one backend of each schema, and the input's small structured header (which
//! backend, which endpoint, where the body is cut) read with `arbitrary`.
//!
//! Every target takes `[header bytes][payload]`: the header is a few bytes of
//! choices, the payload is the raw body (request, answer, YAML, ...), so a seed is
//! a file with a few bytes in front (see `seed.sh`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use arbitrary::Unstructured;

use aigw_filter::{Action, Config, FilterRole, Headers, HttpFilter, Status, MODEL_HEADER};

/// The backend schemas a configuration may name, each with the fields and a cheap
/// credential it needs (no credential exchange: no callout would be answered).
pub const SCHEMAS: [(&str, &str); 9] = [
    (
        "OpenAI",
        r#""schema": {"name": "OpenAI"}, "auth": {"apiKey": {"value": "sk-fuzz"}}"#,
    ),
    (
        "Mistral",
        r#""schema": {"name": "Mistral"}, "auth": {"apiKey": {"value": "sk-fuzz"}}"#,
    ),
    (
        "AzureOpenAI",
        r#""schema": {"name": "AzureOpenAI"}, "host": "fuzz.openai.azure.com", "auth": {"apiKey": {"value": "az-fuzz"}}"#,
    ),
    (
        "AWSBedrock",
        r#""schema": {"name": "AWSBedrock"}, "region": "us-east-1",
           "auth": {"awsSigV4": {"accessKeyId": "AKIDFUZZ", "secretAccessKey": "fuzz-secret"}}"#,
    ),
    (
        "AWSAnthropic",
        r#""schema": {"name": "AWSAnthropic"}, "region": "us-west-2",
           "auth": {"awsSigV4": {"accessKeyId": "AKIDFUZZ", "secretAccessKey": "fuzz-secret", "sessionToken": "tok"}}"#,
    ),
    (
        "Anthropic",
        r#""schema": {"name": "Anthropic"}, "auth": {"apiKey": {"value": "sk-ant-fuzz"}}"#,
    ),
    (
        "GCPAnthropic",
        r#""schema": {"name": "GCPAnthropic"}, "project": "p", "region": "us-east5",
           "auth": {"bearerToken": {"value": "ya29.fuzz"}}"#,
    ),
    (
        "GCPVertexAI",
        r#""schema": {"name": "GCPVertexAI"}, "project": "p", "region": "us-central1",
           "auth": {"bearerToken": {"value": "ya29.fuzz"}}"#,
    ),
    (
        "Gemini",
        r#""schema": {"name": "Gemini"}, "auth": {"apiKey": {"value": "gm-fuzz"}}"#,
    ),
];

/// The client endpoints that take a body.
pub const ENDPOINTS: [&str; 7] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/anthropic/v1/messages",
    "/v1/responses",
    // Form uploads (a body starting with `--` is read as one) and JSON.
    "/v1/audio/transcriptions",
    "/v1/images/generations",
];

/// Models the route serves: the ones the seeds (fixtures, cassettes) name, so
/// seeded bodies are routed rather than refused.
pub const MODELS: &[&str] = &[
    "m",
    "gpt-5-nano",
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4o-2024-08-06",
    "babbage-002",
    "babbage:2023-07-21-v2",
    "text-embedding-3-small",
    "claude-sonnet",
    "claude-sonnet-4-5-20250929",
    "gemini-2.5-flash",
    "qwen3-8b",
    "mistral-small-latest",
    "magistral-medium-latest",
    "gpt-4o-mini-search-preview",
    "gpt-4o-audio-preview",
    "gpt-4o-mini-audio-preview",
    "gpt-4.1-nano-wrong",
];

/// A configuration routing every model of [`MODELS`] to one backend `b` of schema
/// `SCHEMAS[schema]`, metering every token kind and a CEL cost, with request
/// guardrails (every detector, masking; a logging one with a size cap) on route `r`;
/// `router_only` makes the router-level instance translate itself (Envoy Gateway's
/// mode).
pub fn config_doc(schema: usize, router_only: bool) -> String {
    let models: Vec<String> = MODELS.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        r#"{{"version": "v1", "routerOnly": {router_only},
        "backends": [{{"name": "b", {}}}, {{"name": "pinned", {}, "modelNameOverride": "pinned-model"}}],
        "routes": [
          {{"name": "r", "models": [{}], "backends": [{{"name": "b"}}],
            "guardrails": [{{"policy": "log", "stage": "request"}}, {{"policy": "mask", "stage": "request"}}]}},
          {{"name": "two", "models": ["two"], "backends": [{{"name": "b", "priority": 0}}, {{"name": "pinned", "priority": 1}}]}},
          {{"name": "answers", "models": ["answers"], "backends": [{{"name": "b"}}],
            "guardrails": [{{"policy": "mask", "stage": "both"}}]}}
        ],
        "llmRequestCosts": [
          {{"metadataKey": "in", "type": "InputToken"}},
          {{"metadataKey": "out", "type": "OutputToken"}},
          {{"metadataKey": "total", "type": "TotalToken"}},
          {{"metadataKey": "cached", "type": "CachedInputToken"}},
          {{"metadataKey": "reasoning", "type": "ReasoningToken"}},
          {{"metadataKey": "cost", "type": "CEL", "cel": "input_tokens * 3 + output_tokens * 15 + (model == 'm' ? 1 : 0)"}}
        ],
        "guardrails": [
          {{"name": "mask", "action": "mask", "detectors": {{
            "pii": ["email", "phone", "card", "ssn", "iban", "ip"],
            "secrets": ["awsAccessKey", "privateKey", "apiKey"],
            "regex": [{{"name": "digits", "pattern": "[0-9]{{4,}}"}}], "words": ["secret", "zoë"]}}}},
          {{"name": "log", "action": "log", "detectors": {{"words": ["hello"], "maxPromptBytes": 64}}}}
        ],
        "limits": {{"maxRequestBodyBytes": 1048576, "maxResponseBodyBytes": 1048576}}}}"#,
        SCHEMAS[schema].1,
        SCHEMAS[schema].1,
        models.join(", ")
    )
}

/// The configuration of [`config_doc`], built once per process.
pub fn config(schema: usize, router_only: bool) -> Arc<Config> {
    static CONFIGS: OnceLock<Vec<Arc<Config>>> = OnceLock::new();
    let all = CONFIGS.get_or_init(|| {
        (0..SCHEMAS.len() * 2)
            .map(|i| {
                let doc = config_doc(i / 2, i % 2 == 1);
                match Config::from_json(doc.as_bytes()) {
                    Ok(c) => Arc::new(c),
                    Err(e) => panic!("fuzz config for {}: {e:?}", SCHEMAS[i / 2].0),
                }
            })
            .collect()
    });
    all[schema * 2 + usize::from(router_only)].clone()
}

/// An owned header map.
#[derive(Clone, Debug, Default)]
pub struct H(pub Vec<(String, String)>);

impl H {
    pub fn new(pairs: &[(&str, &str)]) -> Self {
        H(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// Applies the header actions of `out` as the host would.
    pub fn apply(&mut self, out: &[Action]) {
        for a in out {
            match a {
                Action::SetHeader { name, value } => {
                    self.0.retain(|(k, _)| k != name);
                    self.0.push((name.clone(), value.clone()));
                }
                Action::RemoveHeader { name } => self.0.retain(|(k, _)| k != name),
                _ => {}
            }
        }
    }
}

impl Headers for H {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in &self.0 {
            f(k, v);
        }
    }
}

/// Cuts `data` into chunks whose sizes come from `sizes`, cycled: a 0 means "the
/// rest", any other byte a chunk of that many bytes. Never yields an empty chunk
/// (but yields none for empty data).
pub fn split<'a>(data: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let s = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(0);
        let n = if s == 0 {
            rest.len()
        } else {
            usize::from(s).min(rest.len())
        };
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
        i += 1;
    }
    out
}

/// `AIGW_FUZZ_TRACE=1`: print every body call (to debug a crash file).
pub fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("AIGW_FUZZ_TRACE").is_some())
}

pub fn t(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The body a host lets on after one body call: the chunk (or, after buffering,
/// everything held), unless the filter replaced it.
#[derive(Default)]
pub struct BodyHost {
    held: Vec<u8>,
    /// What was let on, in order.
    pub passed: Vec<u8>,
    /// The filter answered itself.
    pub replied: bool,
}

impl BodyHost {
    /// Hands over one chunk's outcome: `out` are the actions of that call.
    pub fn take(&mut self, chunk: &[u8], status: Status, out: &[Action]) {
        if trace() {
            eprintln!(
                "chunk {:?} -> {status:?} {out:?}",
                String::from_utf8_lossy(chunk)
            );
        }
        self.held.extend_from_slice(chunk);
        if out
            .iter()
            .any(|a| matches!(a, Action::SendLocalReply { .. }))
        {
            self.replied = true;
            self.held.clear();
            return;
        }
        if status != Status::Continue {
            return;
        }
        let replaced = out.iter().rev().find_map(|a| match a {
            Action::ReplaceBody(b) => Some(b.clone()),
            _ => None,
        });
        let held = std::mem::take(&mut self.held);
        self.passed.extend(replaced.unwrap_or(held));
    }

    /// The stream ended: what is still held passes (the host's buffer).
    pub fn finish(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.passed.extend(held);
    }
}

/// The request a client sends through the router-level instance: returns the
/// instance (if it let the request on), the headers and body it let on.
pub struct Sent {
    pub filter: HttpFilter,
    pub headers: H,
    pub body: Vec<u8>,
}

/// Sends `body` (in `chunks`) to `path` through a router-level instance of
/// `config`. `None` if the gateway answered itself.
pub fn route_request(
    config: Arc<Config>,
    path: &str,
    extra: &[(&str, &str)],
    chunks: &[&[u8]],
) -> Option<Sent> {
    let mut f = HttpFilter::new(config, FilterRole::Router);
    f.set_unix_millis(1_700_000_000_000);
    let mut headers = H::new(&[
        (":method", "POST"),
        (":path", path),
        (":authority", "gateway.local"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-client"),
        ("x-request-id", "fuzz-1"),
    ]);
    headers
        .0
        .extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut out = Vec::new();
    let s = f.on_request_headers(&headers, chunks.is_empty(), t(0), &mut out);
    headers.apply(&out);
    if f.replied() || f.waiting() {
        return None;
    }
    let mut host = BodyHost::default();
    if s == Status::Continue && chunks.is_empty() {
        return Some(Sent {
            filter: f,
            headers,
            body: Vec::new(),
        });
    }
    for (i, c) in chunks.iter().enumerate() {
        let eos = i + 1 == chunks.len();
        let mut out = Vec::new();
        let s = f.on_request_body(c, eos, t(1 + i as u64), &mut out);
        headers.apply(&out);
        host.take(c, s, &out);
        if f.replied() || host.replied || f.waiting() {
            return None;
        }
    }
    host.finish();
    Some(Sent {
        filter: f,
        headers,
        body: host.passed,
    })
}

/// Sends a request the router let on through an upstream instance bound to
/// backend `backend`: returns the instance and the body it sends, or `None` if
/// it answered itself.
pub fn upstream_request(
    config: Arc<Config>,
    backend: &str,
    headers: &H,
    body: &[u8],
) -> Option<(HttpFilter, Vec<u8>)> {
    let mut u = HttpFilter::new(config, FilterRole::Upstream);
    u.bind_backend(Some(backend), 1_700_000_000_000, None);
    let mut headers = headers.clone();
    let mut out = Vec::new();
    let s = u.on_request_headers(&headers, body.is_empty(), t(2), &mut out);
    headers.apply(&out);
    if u.replied() || u.waiting() {
        return None;
    }
    let mut host = BodyHost::default();
    if !(s == Status::Continue && body.is_empty()) {
        let mut out = Vec::new();
        let s = u.on_request_body(body, true, t(3), &mut out);
        host.take(body, s, &out);
        if u.replied() || host.replied || u.waiting() {
            return None;
        }
    }
    host.finish();
    Some((u, host.passed))
}

/// Feeds an answer (headers, then `chunks`) to `f`; returns the response headers
/// and body it lets on towards the client.
pub fn respond(f: &mut HttpFilter, headers: &[(&str, &str)], chunks: &[&[u8]]) -> (H, Vec<u8>) {
    let mut h = H::new(headers);
    let mut out = Vec::new();
    let _ = f.on_response_headers(&h, chunks.is_empty(), t(10), &mut out);
    h.apply(&out);
    let mut host = BodyHost::default();
    for (i, c) in chunks.iter().enumerate() {
        let eos = i + 1 == chunks.len();
        let mut out = Vec::new();
        let s = f.on_response_body(c, eos, t(11 + i as u64), &mut out);
        h.apply(&out);
        host.take(c, s, &out);
    }
    host.finish();
    let mut out = Vec::new();
    f.on_stream_complete(t(1_000), &mut out);
    (h, host.passed)
}

/// The model header a router-level instance set, for the upstream instance.
pub fn model_of(h: &H) -> Option<String> {
    h.get(MODEL_HEADER)
}

/// A request body of each endpoint that every translator takes.
pub fn canned_request(endpoint: usize, stream: bool) -> Vec<u8> {
    match endpoint {
        0 => format!(
            r#"{{"model":"m","stream":{stream},"max_tokens":64,"messages":[{{"role":"system","content":"be brief"}},{{"role":"user","content":"hi"}}],"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"object"}}}}}}]}}"#
        ),
        1 => format!(r#"{{"model":"m","stream":{stream},"prompt":"hi","max_tokens":8}}"#),
        2 => r#"{"model":"m","input":["hi","there"]}"#.to_string(),
        _ => format!(
            r#"{{"model":"m","stream":{stream},"max_tokens":64,"system":"be brief","messages":[{{"role":"user","content":"hi"}}]}}"#
        ),
    }
    .into_bytes()
}

/// Whether `body` is one JSON value.
pub fn is_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}
