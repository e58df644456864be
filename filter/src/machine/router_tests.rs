//! The router-level machine, driven through `HttpFilter` as a host would.
use std::sync::Arc;
use std::time::Duration;

use super::steps::{parse_peek, with_include_usage};
use super::*;
use crate::config::Config;
use crate::host::{Counter, Headers, LogLevel, MetadataValue};
use crate::MODEL_HEADER;

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
    assert!(sent.contains("\"a\"") && sent.contains("\"b\"") && sent.ends_with("data: [DONE]\n\n"));
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
    f.set_unix_millis(1_700_000_000_000);
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

#[test]
fn envoys_plain_text_errors_reach_the_client_in_its_schema() {
    // The route timeout (504) and a provider reset before its headers (503): Envoy
    // answers those itself, in plain text, through this instance only. Passthrough
    // (here, and inline with routerOnly) or not, the client reads its own schema.
    let router_only = Arc::new(
        Config::from_json(
            br#"{"version": "v1", "routerOnly": true,
            "backends": [{"name": "oa", "schema": {"name": "OpenAI"}}],
            "routes": [{"name": "r", "models": ["gpt-4o-mini"], "backends": [{"name": "oa"}]}]}"#,
        )
        .unwrap(),
    );
    let cases = [
        (config(), "/v1/chat/completions", "504", &b"upstream request timeout"[..]),
        (
            router_only.clone(),
            "/v1/chat/completions",
            "503",
            b"upstream connect error or disconnect/reset before headers. reset reason: connection termination",
        ),
        (router_only, "/anthropic/v1/messages", "504", b"upstream request timeout"),
    ];
    for (config, path, status, text) in cases {
        let mut f = HttpFilter::new(config, FilterRole::Router);
        let mut out = Vec::new();
        let _ = f.on_request_headers(
            &[(":method", "POST"), (":path", path)],
            false,
            t(0),
            &mut out,
        );
        // (The default config takes 64 bytes of body.)
        let body = br#"{"model":"gpt-4o-mini","max_tokens":5,"messages":[]}"#;
        assert_eq!(
            f.on_request_body(body, true, t(1), &mut out),
            Status::Continue
        );
        out.clear();
        let len = text.len().to_string();
        let rh = [
            (":status", status),
            ("content-type", "text/plain"),
            ("content-length", len.as_str()),
        ];
        assert_eq!(
            f.on_response_headers(&rh, false, t(2), &mut out),
            Status::StopIteration
        );
        out.clear();
        assert_eq!(
            f.on_response_body(text, true, t(3), &mut out),
            Status::Continue
        );
        let replaced = out
            .iter()
            .find_map(|a| match a {
                Action::ReplaceBody(b) => Some(b.clone()),
                _ => None,
            })
            .expect("the body is rewritten");
        let v: serde_json::Value = serde_json::from_slice(&replaced).unwrap();
        let quoted = format!("HTTP {status}: {}", String::from_utf8_lossy(text));
        if path.starts_with("/anthropic") {
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], "timeout_error");
            assert!(
                v["error"]["message"].as_str().unwrap().ends_with(&quoted),
                "{v}"
            );
        } else {
            assert_eq!(v["error"]["type"], "server_error");
            assert!(
                v["error"]["message"].as_str().unwrap().ends_with(&quoted),
                "{v}"
            );
        }
        assert!(out.contains(&Action::SetHeader {
            name: "content-type".into(),
            value: "application/json".into()
        }));
        assert!(out.contains(&Action::SetHeader {
            name: "content-length".into(),
            value: replaced.len().to_string()
        }));
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::SetHeader { name, .. } if name == ":status")));
    }

    // A provider's JSON error, and a long page, pass as they are.
    for rh in [
        [
            (":status", "500"),
            ("content-type", "application/json"),
            ("content-length", "2"),
        ],
        [
            (":status", "502"),
            ("content-type", "text/html"),
            ("content-length", "100000"),
        ],
    ] {
        let (mut f, _, _) = post(br#"{"model":"gpt-4o-mini"}"#);
        let mut out = Vec::new();
        assert_eq!(
            f.on_response_headers(&rh, false, t(2), &mut out),
            Status::Continue
        );
        assert_eq!(
            f.on_response_body(b"{}", true, t(3), &mut out),
            Status::Continue
        );
        assert!(
            !out.iter().any(|a| matches!(a, Action::ReplaceBody(_))),
            "{rh:?}"
        );
    }
}

#[test]
fn lambda_backends_invoke_the_function_signed_and_read_its_failures() {
    let config = Arc::new(
        Config::from_json(
            br#"{"version": "v1", "routerOnly": true,
            "backends": [{"name": "fn", "schema": {"name": "OpenAI"}, "region": "eu-west-1",
              "lambda": {"functionName": "chat-fn", "qualifier": "live"},
              "auth": {"awsSigV4": {"accessKeyId": "AKID", "secretAccessKey": "s"}}}],
            "routes": [{"name": "r", "models": ["fn-model"], "backends": [{"name": "fn"}]}],
            "llmRequestCosts": [{"metadataKey": "out", "type": "OutputToken"}]}"#,
        )
        .unwrap(),
    );
    assert_eq!(
        config.backends[0].host.as_deref(),
        Some("lambda.eu-west-1.amazonaws.com")
    );
    let send = |f: &mut HttpFilter, body: &[u8]| {
        let mut out = Vec::new();
        let h = [
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gw"),
            ("x-amz-log-type", "Tail"),
        ];
        assert_eq!(
            f.on_request_headers(&h, false, t(0), &mut out),
            Status::StopIteration
        );
        let _ = f.on_request_body(body, true, t(1), &mut out);
        out
    };
    let set = |out: &[Action], name: &str| {
        out.iter().rev().find_map(|a| match a {
            Action::SetHeader { name: n, value } if n == name => Some(value.clone()),
            _ => None,
        })
    };
    let body = br#"{"model":"fn-model","messages":[{"role":"user","content":"hi"}]}"#;
    let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
    f.set_unix_millis(1_700_000_000_000);
    let out = send(&mut f, body);
    assert_eq!(
        set(&out, ":path").as_deref(),
        Some("/2015-03-31/functions/chat-fn/invocations?Qualifier=live")
    );
    assert_eq!(
        set(&out, "x-amz-invocation-type").as_deref(),
        Some("RequestResponse")
    );
    let auth = set(&out, "authorization").unwrap();
    assert!(
        auth.contains("/eu-west-1/lambda/aws4_request")
            && auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-invocation-type"),
        "{auth}"
    );
    assert!(out.contains(&Action::RemoveHeader {
        name: "x-amz-log-type".into()
    }));

    // The function's payload is the answer, metered.
    let mut out = Vec::new();
    let rh = [(":status", "200"), ("content-type", "application/json")];
    let _ = f.on_response_headers(&rh, false, t(2), &mut out);
    let answer = br#"{"id":"c","object":"chat.completion","created":1,"model":"fn-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
    let _ = f.on_response_body(answer, true, t(3), &mut out);
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::SetHeader { name, .. } if name == ":status")),
        "{out:?}"
    );
    assert!(out.contains(&Action::SetMetadata {
        key: "out".into(),
        value: MetadataValue::Number(2.0)
    }));

    // A failed function: Lambda's 200 becomes a 502 in the client's schema, without
    // the function's message or trace.
    let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
    f.set_unix_millis(1_700_000_000_000);
    let _ = send(&mut f, body);
    let mut out = Vec::new();
    let rh = [
        (":status", "200"),
        ("content-type", "application/json"),
        ("x-amz-function-error", "Unhandled"),
    ];
    assert_eq!(
        f.on_response_headers(&rh, false, t(2), &mut out),
        Status::StopIteration
    );
    let failed = br#"{"errorMessage":"db password wrong","errorType":"RuntimeError","stackTrace":["app.py:1"]}"#;
    out.clear();
    let _ = f.on_response_body(failed, true, t(3), &mut out);
    assert_eq!(set(&out, ":status").as_deref(), Some("502"));
    let sent: Vec<u8> = out
        .iter()
        .filter_map(|a| match a {
            Action::ReplaceBody(b) => Some(b.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let v: serde_json::Value = serde_json::from_slice(&sent).unwrap();
    assert_eq!(v["error"]["code"], "lambda_function_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("RuntimeError"));
    assert!(!String::from_utf8_lossy(&sent).contains("password"));

    // A stream is refused before anything is sent.
    let mut f = HttpFilter::new(config, FilterRole::Router);
    let out = send(
        &mut f,
        br#"{"model":"fn-model","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert!(f.replied());
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::SendLocalReply { status: 422, .. })));
}
