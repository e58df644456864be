//! `Config::from_json` on arbitrary documents: no panic, no hang, bounded memory,
//! and only JSON documents load.
//! A document that loads is used: its models list is served, and a chat request
//! goes through a router-level instance and an upstream attempt on each backend.
//!
//! Input: the document itself.
#![no_main]

use std::sync::Arc;

use aigw_filter::{Config, FilterRole, HttpFilter};
use aigw_filter_fuzz::{route_request, t, upstream_request, H};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(config) = Config::from_json(input) else {
        return;
    };
    assert!(
        serde_json::from_slice::<serde_json::Value>(input).is_ok(),
        "a document that is not JSON loaded"
    );
    let config = Arc::new(config);
    let _ = (
        config.models_body(),
        config.secret_files(),
        config.secret_env(),
        config.touched_headers(),
    );
    // GET /v1/models, answered locally.
    let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
    let mut out = Vec::new();
    let _ = f.on_request_headers(
        &H::new(&[(":method", "GET"), (":path", "/v1/models")]),
        true,
        t(0),
        &mut out,
    );
    drop(f);
    let model = config
        .routes
        .first()
        .and_then(|r| r.models.first())
        .cloned()
        .unwrap_or_else(|| "m".into());
    let body = format!(
        r#"{{"model":{},"messages":[{{"role":"user","content":"hi"}}]}}"#,
        serde_json::Value::String(model)
    );
    let sent = route_request(
        config.clone(),
        "/v1/chat/completions",
        &[],
        &[body.as_bytes()],
    );
    let headers = sent
        .as_ref()
        .map(|s| s.headers.clone())
        .unwrap_or_else(|| H::new(&[(":method", "POST"), (":path", "/v1/chat/completions")]));
    for b in config.backends.iter().take(4) {
        let _ = upstream_request(config.clone(), &b.name, &headers, body.as_bytes());
    }
});
