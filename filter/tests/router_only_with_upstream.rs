//! `routerOnly` with an upstream instance on the cluster of a route with several
//! backends, as on Envoy Gateway with the compiler's EnvoyPatchPolicy: the
//! router-level instance (config `routerOnly: true`) routes and meters that
//! route without doing any upstream work, the upstream instance (its own config,
//! not `routerOnly`) does it once per attempt, and the router-level instance
//! meters the answer the upstream instance translated back, naming the backend
//! that answered.

use std::sync::Arc;
use std::time::Duration;

use aigw_filter::machine::BACKEND_HEADER;
use aigw_filter::{Action, Config, FilterRole, HttpFilter, MetadataValue, Status, MODEL_HEADER};

const BACKENDS: &str = r#"[
    {"name": "oa", "schema": {"name": "OpenAI"},
     "auth": {"apiKey": {"value": "sk-oa"}}},
    {"name": "an", "schema": {"name": "Anthropic"}, "modelNameOverride": "claude-x",
     "auth": {"apiKey": {"value": "sk-an"}}}
]"#;

fn config(doc: String) -> Arc<Config> {
    Arc::new(Config::from_json(doc.as_bytes()).unwrap())
}

fn t(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn set<'a>(out: &'a [Action], name: &str) -> Option<&'a str> {
    out.iter().rev().find_map(|a| match a {
        Action::SetHeader { name: n, value } if n == name => Some(value.as_str()),
        _ => None,
    })
}

fn body(out: &[Action]) -> Option<&[u8]> {
    out.iter().rev().find_map(|a| match a {
        Action::ReplaceBody(b) => Some(b.as_slice()),
        _ => None,
    })
}

#[test]
fn the_router_level_instance_leaves_a_multi_backend_route_to_the_upstream_instance() {
    let router_config = config(format!(
        r#"{{"version": "v1", "routerOnly": true, "backends": {BACKENDS},
        "routes": [{{"name": "r", "models": ["m"],
          "backends": [{{"name": "oa", "priority": 0}}, {{"name": "an", "priority": 1}}]}}],
        "llmRequestCosts": [{{"metadataKey": "in", "type": "InputToken"}}]}}"#
    ));
    let upstream_config = config(format!(r#"{{"version": "v1", "backends": {BACKENDS}}}"#));
    let request = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

    // Router level: routes on the model, removes the client's key, and nothing
    // else: no path, host, credential or body of a backend's.
    let mut router = HttpFilter::new(router_config, FilterRole::Router);
    let mut out = Vec::new();
    let h = [
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "gw"),
        ("authorization", "Bearer sk-client"),
    ];
    assert_eq!(
        router.on_request_headers(&h, false, t(0), &mut out),
        Status::StopIteration
    );
    assert_eq!(
        router.on_request_body(request, true, t(1), &mut out),
        Status::Continue
    );
    assert_eq!(set(&out, MODEL_HEADER), Some("m"));
    assert!(out.contains(&Action::ClearRouteCache));
    assert!(out.contains(&Action::RemoveHeader {
        name: "authorization".into()
    }));
    for name in [":path", ":authority", "authorization", "x-api-key"] {
        assert_eq!(set(&out, name), None, "{name} set at router level: {out:?}");
    }
    assert!(body(&out).is_none(), "the router level rewrote the body");

    // Upstream instance, on the attempt Envoy sent to the Anthropic endpoint:
    // translation, model override and key, once.
    let mut upstream = HttpFilter::new(upstream_config, FilterRole::Upstream);
    upstream.bind_backend(Some("an"), 1_700_000_000_000, None);
    let mut out = Vec::new();
    let h = [
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "gw"),
        (MODEL_HEADER, "m"),
        ("content-type", "application/json"),
    ];
    let _ = upstream.on_request_headers(&h, false, t(2), &mut out);
    let _ = upstream.on_request_body(request, true, t(3), &mut out);
    assert_eq!(set(&out, ":path"), Some("/v1/messages"));
    assert_eq!(set(&out, "x-api-key"), Some("sk-an"));
    let sent: serde_json::Value = serde_json::from_slice(body(&out).unwrap()).unwrap();
    assert_eq!(sent["model"], "claude-x");

    // The Anthropic answer becomes an OpenAI one upstream, tagged with the backend.
    let mut out = Vec::new();
    let rh = [(":status", "200"), ("content-type", "application/json")];
    let _ = upstream.on_response_headers(&rh, false, t(4), &mut out);
    let answer = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x",
        "content":[{"type":"text","text":"Hello"}],"stop_reason":"end_turn",
        "usage":{"input_tokens":7,"output_tokens":2}}"#;
    let _ = upstream.on_response_body(answer, true, t(5), &mut out);
    assert_eq!(set(&out, BACKEND_HEADER), Some("an"));
    let translated = body(&out).unwrap().to_vec();
    let chat: serde_json::Value = serde_json::from_slice(&translated).unwrap();
    assert_eq!(chat["choices"][0]["message"]["content"], "Hello");

    // Router level again: drops the internal header, meters the translated answer
    // as it is (no second translation), names the backend that answered.
    let mut out = Vec::new();
    let rh = [
        (":status", "200"),
        ("content-type", "application/json"),
        (BACKEND_HEADER, "an"),
    ];
    assert_eq!(
        router.on_response_headers(&rh, false, t(6), &mut out),
        Status::Continue
    );
    assert!(out.contains(&Action::RemoveHeader {
        name: BACKEND_HEADER.into()
    }));
    assert_eq!(
        router.on_response_body(&translated, true, t(7), &mut out),
        Status::Continue
    );
    assert!(
        body(&out).is_none_or(|b| b == translated.as_slice()),
        "the router level changed the translated answer"
    );
    assert!(out.contains(&Action::SetMetadata {
        key: "backend_name".into(),
        value: MetadataValue::String("an".into())
    }));
    assert!(out.contains(&Action::SetMetadata {
        key: "in".into(),
        value: MetadataValue::Number(7.0)
    }));
}
