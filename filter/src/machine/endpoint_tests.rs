//! The endpoints beyond chat, driven through `HttpFilter` as a host would: a route's
//! passthrough (routing, methods, credentials) and token counting, which reserves
//! no tokens.
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::config::Config;
use crate::host::{Action, Status};
use crate::MODEL_HEADER;

fn config(rate_limit: serde_json::Value) -> Arc<Config> {
    let doc = json!({
        "version": "v1",
        "backends": [
            {"name": "openai", "schema": {"name": "OpenAI", "version": "v1beta/openai"},
             "auth": {"apiKey": {"value": "sk-gateway"}},
             "headerMutation": {"set": [{"name": "x-team", "value": "blue"}]}},
            {"name": "claude", "schema": {"name": "Anthropic"}, "auth": {"apiKey": {"value": "sk-ant"}}}
        ],
        "routes": [
            {"name": "files", "models": ["gpt-4o-mini", "gpt-4o"], "backends": [{"name": "openai"}],
             "passthrough": ["/v1/files", "/v1/batches"]},
            {"name": "claude", "models": ["claude-sonnet"], "backends": [{"name": "claude"}],
             "rateLimit": rate_limit}
        ]
    });
    Arc::new(Config::from_json(doc.to_string().as_bytes()).unwrap())
}

const T: Duration = Duration::ZERO;

fn set<'a>(out: &'a [Action], name: &str) -> Option<&'a str> {
    out.iter().rev().find_map(|a| match a {
        Action::SetHeader { name: n, value } if n == name => Some(value.as_str()),
        _ => None,
    })
}

#[test]
fn a_passthrough_is_routed_by_its_path_whatever_the_method() {
    let config = config(json!({}));
    for (method, path) in [
        ("GET", "/v1/files"),
        ("GET", "/v1/files/file-1/content?x=1"),
        ("DELETE", "/v1/files/file-1"),
        ("POST", "/v1/batches/batch_1/cancel"),
    ] {
        let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
        let mut out = Vec::new();
        let h = [(":method", method), (":path", path)];
        let s = f.on_request_headers(&h, true, T, &mut out);
        assert_eq!(s, Status::Continue, "{method} {path}: {out:?}");
        // Where the route's first model goes.
        assert_eq!(set(&out, MODEL_HEADER), Some("gpt-4o-mini"), "{path}");
        assert!(out.iter().any(|a| matches!(a, Action::ClearRouteCache)));
    }
    // With a body: buffered, never parsed as a model request.
    let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
    let mut out = Vec::new();
    let h = [(":method", "POST"), (":path", "/v1/files")];
    assert_eq!(
        f.on_request_headers(&h, false, T, &mut out),
        Status::StopIteration
    );
    let s = f.on_request_body(b"--boundary\r\nnot json", true, T, &mut out);
    assert_eq!(s, Status::Continue, "{out:?}");
    assert_eq!(set(&out, MODEL_HEADER), Some("gpt-4o-mini"));

    // Not a prefix match at a path segment, and not configured: untouched.
    for path in [
        "/v1/filesystem",
        "/v1/vector_stores",
        "/v1/models/x",
        // Nothing that a server could normalize out of the prefix gets credentials.
        "/v1/files/../admin",
        "/v1/files/%2e%2e/admin",
        "/v1/files/x%2F..%2Fadmin",
        "/v1/files/./x",
        "/v1/files\\..\\admin",
    ] {
        let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
        let mut out = Vec::new();
        let h = [(":method", "GET"), (":path", path)];
        assert_eq!(
            f.on_request_headers(&h, true, T, &mut out),
            Status::Continue
        );
        assert_eq!(set(&out, MODEL_HEADER), None, "{path}");
    }
}

#[test]
fn a_passthrough_attempt_gets_the_backends_credentials_prefix_and_mutation() {
    let mut f = HttpFilter::new(config(json!({})), FilterRole::Upstream);
    f.bind_backend(Some("openai"), 1_700_000_000_000, None);
    let mut out = Vec::new();
    let h = [
        (":method", "GET"),
        (":path", "/v1/files/file-1"),
        (":authority", "gw.example"),
        ("authorization", "Bearer client-key"),
        (MODEL_HEADER, "gpt-4o-mini"),
    ];
    assert_eq!(
        f.on_request_headers(&h, true, T, &mut out),
        Status::Continue
    );
    assert_eq!(set(&out, "authorization"), Some("Bearer sk-gateway"));
    assert_eq!(set(&out, ":path"), Some("/v1beta/openai/files/file-1"));
    assert_eq!(set(&out, "x-team"), Some("blue"));
    // The answer passes as it is.
    let mut out = Vec::new();
    let rh = [(":status", "200"), ("content-type", "application/json")];
    assert_eq!(
        f.on_response_headers(&rh, false, T, &mut out),
        Status::Continue
    );
    assert_eq!(
        f.on_response_body(b"{\"id\":\"file-1\"}", true, T, &mut out),
        Status::Continue
    );
    assert!(!out.iter().any(|a| matches!(a, Action::ReplaceBody(_))));
}

#[test]
fn a_token_count_reserves_no_tokens() {
    let config = config(json!({"tokensPerMinute": 100}));
    let run = |path: &str, body: &str, answer: &str| {
        let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
        f.set_unix_millis(1_796_644_800_000);
        let mut out = Vec::new();
        let h = [(":method", "POST"), (":path", path)];
        let _ = f.on_request_headers(&h, false, T, &mut out);
        let s = f.on_request_body(body.as_bytes(), true, T, &mut out);
        if s == Status::Continue {
            let rh = [(":status", "200"), ("content-type", "application/json")];
            let _ = f.on_response_headers(&rh, false, T, &mut out);
            let _ = f.on_response_body(answer.as_bytes(), true, T, &mut out);
        }
        (s, out)
    };
    let count = r#"{"model":"claude-sonnet","messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..3 {
        let (s, out) = run(
            "/anthropic/v1/messages/count_tokens",
            count,
            r#"{"input_tokens":9}"#,
        );
        assert_eq!(s, Status::Continue, "{out:?}");
    }
    // Had any count kept the 4096-token estimate of a message, this would be refused.
    let message =
        r#"{"model":"claude-sonnet","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let answer = r#"{"type":"message","usage":{"input_tokens":9,"output_tokens":5}}"#;
    let (s, out) = run("/anthropic/v1/messages", message, answer);
    assert_eq!(s, Status::Continue, "{out:?}");
}
