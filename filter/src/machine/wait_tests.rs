//! Requests that wait (for the credential their backend's exchange gives) driven
//! through `HttpFilter` as a host would: the call asked for, its answer, the wake,
//! the resumed request; and the order of the request path's steps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::config::Config;
use crate::host::{Action, CalloutResult, Status};

const T0: u64 = 1_765_000_000_000;

/// A router instance doing the upstream work (`routerOnly`) for an Azure OpenAI
/// backend whose token the gateway exchanges, and a two-backend route whose
/// upstream instance does it.
fn config() -> Arc<Config> {
    Arc::new(
        Config::from_json(
            json!({
                "version": "v1",
                "routerOnly": true,
                "backends": [
                    {"name": "azure", "schema": {"name": "AzureOpenAI", "version": "2024-10-21"},
                     "host": "res.openai.azure.com", "modelNameOverride": "gpt-4o",
                     "auth": {"azureEntraId": {"tenantId": "t1", "clientId": "app",
                              "clientSecret": {"value": "s3cret"},
                              "token": {"cluster": "entra"}}}},
                    {"name": "plain", "schema": {"name": "OpenAI"}}
                ],
                "routes": [
                    {"name": "r", "models": ["m"], "backends": [{"name": "azure"}]},
                    {"name": "two", "models": ["two"],
                     "backends": [{"name": "azure"}, {"name": "plain", "priority": 1}]}
                ]
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap(),
    )
}

fn t(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

const CHAT: [(&str, &str); 3] = [
    (":method", "POST"),
    (":path", "/v1/chat/completions"),
    (":authority", "gw"),
];
const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

/// A router instance through its request headers and body.
fn start(config: &Arc<Config>, now_ms: u64, out: &mut Vec<Action>) -> (HttpFilter, Status) {
    let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
    f.set_unix_millis(now_ms);
    assert_eq!(
        f.on_request_headers(&CHAT, false, t(0), out),
        Status::StopIteration
    );
    let s = f.on_request_body(BODY, true, t(1), out);
    (f, s)
}

fn call(out: &[Action]) -> (u32, Callout) {
    out.iter()
        .find_map(|a| match a {
            Action::Call { id, call } => Some((*id, call.clone())),
            _ => None,
        })
        .expect("a call")
}

fn header<'a>(out: &'a [Action], name: &str) -> Option<&'a str> {
    out.iter().rev().find_map(|a| match a {
        Action::SetHeader { name: n, value } if n == name => Some(value.as_str()),
        _ => None,
    })
}

fn token(value: &str, expires_in: u64) -> CalloutResult {
    CalloutResult::Response {
        status: 200,
        headers: vec![],
        body: json!({"token_type": "Bearer", "expires_in": expires_in, "access_token": value})
            .to_string()
            .into_bytes(),
    }
}

#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_request_waits_for_its_call_and_goes_on_signed() {
    let config = config();
    let mut out = Vec::new();
    let (mut f, s) = start(&config, T0, &mut out);
    // Held, body and all, while the token is fetched.
    assert_eq!(s, Status::StopAndBuffer);
    assert!(f.waiting());
    let (id, c) = call(&out);
    assert_eq!(c.cluster, "entra");
    assert_eq!(c.header(":path"), Some("/t1/oauth2/v2.0/token"));
    assert!(
        header(&out, "authorization").is_none(),
        "nothing signed yet"
    );
    assert_eq!(
        header(&out, crate::MODEL_HEADER),
        Some("m"),
        "routed already"
    );
    assert!(!out.iter().any(|a| matches!(a, Action::ReplaceBody(_))));

    // Another request meanwhile parks on the same exchange.
    let mut out2 = Vec::new();
    let (mut g, s2) = start(&config, T0, &mut out2);
    assert_eq!(s2, Status::StopAndBuffer);
    assert!(out2.contains(&Action::Park));
    assert!(!out2.iter().any(|a| matches!(a, Action::Call { .. })));
    let wakes = Arc::new(Wakes::default());
    g.set_waker(Waker::from(wakes.clone()));
    // Not woken yet: a wake now is spurious and changes nothing.
    out2.clear();
    assert_eq!(g.on_wake(t(2), &mut out2), Status::StopIteration);
    assert!(out2.is_empty());

    // A stale id changes nothing either.
    out.clear();
    assert_eq!(
        f.on_callout_done(id + 7, token("x", 60), t(3), &mut out),
        Status::StopIteration
    );
    assert!(out.is_empty());

    assert_eq!(
        f.on_callout_done(id, token("tok-1", 3600), t(4), &mut out),
        Status::Continue,
        "resumed"
    );
    assert!(!f.waiting());
    assert_eq!(header(&out, "authorization"), Some("Bearer tok-1"));
    assert_eq!(
        header(&out, ":path"),
        Some("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21")
    );
    assert_eq!(
        wakes.0.load(Ordering::SeqCst),
        1,
        "the parked request was woken"
    );

    out2.clear();
    assert_eq!(g.on_wake(t(5), &mut out2), Status::Continue);
    assert_eq!(header(&out2, "authorization"), Some("Bearer tok-1"));

    // Later requests use the token at once.
    let mut out3 = Vec::new();
    let (_h, s3) = start(&config, T0 + 1000, &mut out3);
    assert_eq!(s3, Status::Continue);
    assert_eq!(header(&out3, "authorization"), Some("Bearer tok-1"));
}

#[test]
fn a_failed_exchange_is_a_503_in_the_clients_schema() {
    let config = config();
    let mut out = Vec::new();
    let (mut f, _) = start(&config, T0, &mut out);
    let (id, _) = call(&out);
    let mut out2 = Vec::new();
    let mut g = HttpFilter::new(config.clone(), FilterRole::Router);
    g.set_unix_millis(T0);
    let anthropic = [
        (":method", "POST"),
        (":path", "/anthropic/v1/messages"),
        (":authority", "gw"),
    ];
    let _ = g.on_request_headers(&anthropic, false, t(0), &mut out2);
    let _ = g.on_request_body(
        br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
        true,
        t(1),
        &mut out2,
    );
    assert!(out2.contains(&Action::Park));
    g.set_waker(Waker::from(Arc::new(Wakes::default())));

    out.clear();
    let s = f.on_callout_done(
        id,
        CalloutResult::Failed("the connection failed or was reset"),
        t(2),
        &mut out,
    );
    assert_eq!(s, Status::StopIteration);
    let Some(Action::SendLocalReply { status, body, .. }) = out.last() else {
        panic!("{out:?}")
    };
    assert_eq!(*status, 503);
    let body: serde_json::Value = serde_json::from_slice(body).unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("could not obtain a credential"),
        "{message}"
    );
    assert!(message.contains("the call to Entra ID failed"), "{message}");
    assert!(!message.contains("s3cret"));
    assert!(out.contains(&Action::Count(
        crate::host::Counter::CredentialExchangeFailed
    )));
    assert!(f.replied());

    // The parked request fails the same way, in Anthropic's schema.
    out2.clear();
    let _ = g.on_wake(t(3), &mut out2);
    let Some(Action::SendLocalReply { status, body, .. }) = out2.last() else {
        panic!("{out2:?}")
    };
    assert_eq!(*status, 503);
    let body: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(body["type"], "error");

    // Within the backoff, the next request fails at once, with no call.
    let mut out3 = Vec::new();
    let (_h, s3) = start(&config, T0 + 10, &mut out3);
    assert_eq!(s3, Status::StopIteration);
    assert!(!out3.iter().any(|a| matches!(a, Action::Call { .. })));
    assert!(matches!(
        out3.last(),
        Some(Action::SendLocalReply { status: 503, .. })
    ));
}

#[test]
fn a_leader_that_goes_away_hands_the_exchange_on() {
    let config = config();
    let mut out = Vec::new();
    let (mut f, _) = start(&config, T0, &mut out);
    let mut out2 = Vec::new();
    let (mut g, _) = start(&config, T0, &mut out2);
    let wakes = Arc::new(Wakes::default());
    g.set_waker(Waker::from(wakes.clone()));
    // The leading client disconnects: the host completes its stream, then drops it.
    f.on_stream_complete(t(2), &mut Vec::new());
    drop(f);
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    out2.clear();
    assert_eq!(g.on_wake(t(3), &mut out2), Status::StopIteration);
    let (id, c) = call(&out2);
    assert_eq!(c.cluster, "entra");
    out2.clear();
    assert_eq!(
        g.on_callout_done(id, token("tok-2", 3600), t(4), &mut out2),
        Status::Continue
    );
    assert_eq!(header(&out2, "authorization"), Some("Bearer tok-2"));
}

#[test]
fn the_upstream_instance_waits_too() {
    let config = config();
    let mut f = HttpFilter::new(config.clone(), FilterRole::Upstream);
    f.bind_backend(Some("azure"), T0, None);
    let mut out = Vec::new();
    let headers = [
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "gw"),
        (crate::MODEL_HEADER, "two"),
    ];
    let _ = f.on_request_headers(&headers, false, t(0), &mut out);
    let s = f.on_request_body(br#"{"model":"two","messages":[]}"#, true, t(1), &mut out);
    assert_eq!(s, Status::StopAndBuffer);
    let (id, _) = call(&out);
    out.clear();
    assert_eq!(
        f.on_callout_done(id, token("tok-u", 3600), t(2), &mut out),
        Status::Continue
    );
    assert_eq!(header(&out, "authorization"), Some("Bearer tok-u"));
    assert_eq!(header(&out, ":authority"), Some("res.openai.azure.com"));
    assert!(out.iter().any(|a| matches!(a, Action::ReplaceBody(_))));
}

#[test]
fn validation_denies_before_the_body_is_read() {
    let config = Arc::new(
        Config::from_json(
            br#"{"version": "v1",
            "backends": [{"name": "b", "schema": {"name": "OpenAI"}}],
            "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "b"}],
                        "rateLimit": {"requestsPerMinute": 1}, "cache": {"ttlSeconds": 60}}],
            "requestValidation": {"rules": [{"expression": "'x-deny' in request.headers", "action": "Deny"}]}}"#,
        )
        .unwrap(),
    );
    // Denied on its headers: the body (not even JSON) is never looked at.
    let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
    let mut out = Vec::new();
    let denied = [
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        ("x-deny", "1"),
    ];
    assert_eq!(
        f.on_request_headers(&denied, false, t(0), &mut out),
        Status::StopIteration
    );
    assert!(matches!(
        out.last(),
        Some(Action::SendLocalReply { status: 403, .. })
    ));

    // A cached answer comes before the rate limit: the second request, past the
    // limit of one a minute, is answered from the cache, not refused.
    let body = br#"{"model":"m"}"#;
    let ok = [(":method", "POST"), (":path", "/v1/chat/completions")];
    let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
    let mut out = Vec::new();
    let _ = f.on_request_headers(&ok, false, t(0), &mut out);
    assert_eq!(
        f.on_request_body(body, true, t(1), &mut out),
        Status::Continue
    );
    let _ = f.on_response_headers(
        &[(":status", "200"), ("content-type", "application/json")],
        false,
        t(2),
        &mut out,
    );
    let _ = f.on_response_body(br#"{"choices":[]}"#, true, t(3), &mut out);
    drop(f);
    let mut g = HttpFilter::new(config.clone(), FilterRole::Router);
    let mut out = Vec::new();
    let _ = g.on_request_headers(&ok, false, t(4), &mut out);
    let _ = g.on_request_body(body, true, t(5), &mut out);
    assert!(
        matches!(
            out.last(),
            Some(Action::SendLocalReply {
                status: 200,
                details: "cache_hit",
                ..
            })
        ),
        "{out:?}"
    );
    // A different question is refused by the limit.
    let mut h = HttpFilter::new(config, FilterRole::Router);
    let mut out = Vec::new();
    let _ = h.on_request_headers(&ok, false, t(6), &mut out);
    let _ = h.on_request_body(br#"{"model":"m","n":2}"#, true, t(7), &mut out);
    assert!(matches!(
        out.last(),
        Some(Action::SendLocalReply { status: 429, .. })
    ));
}
