//! CEL expressions as the configuration takes them: the fuzz input is the text of
//! a cost's `cel` or of a `requestValidation` rule. When the configuration loads,
//! a request and a metered answer go through it, so the expression is evaluated
//! over real variables. No panic (caught or not), no hang, bounded memory.
//!
//! Input: `[selector][expression text]`.
#![no_main]

use std::sync::Arc;

use aigw_filter::Config;
use aigw_filter_fuzz::{canned_request, respond, route_request, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

const ANSWER: &[u8] = br#"{"id":"c1","object":"chat.completion","model":"m-2024","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":2}}}"#;

fuzz_target!(|input: &[u8]| {
    let mut u = Unstructured::new(input);
    let Ok(sel) = u.arbitrary::<u8>() else { return };
    let Ok(expr) = std::str::from_utf8(u.take_rest()) else {
        return;
    };
    let backend = json!({"name": "b", "schema": {"name": "OpenAI"}});
    let route = json!({"name": "r", "models": ["m"], "backends": [{"name": "b"}]});
    let doc = if sel & 1 == 0 {
        json!({"version": "v1", "backends": [backend], "routes": [route],
               "llmRequestCosts": [{"metadataKey": "cost", "type": "CEL", "cel": expr}]})
    } else {
        let action = if sel & 2 == 0 { "Deny" } else { "Allow" };
        json!({"version": "v1", "backends": [backend], "routes": [route],
               "requestValidation": {"rules": [
                   {"expression": expr, "action": action},
                   {"expression": "'x-deny' in request.headers", "action": "Deny"}]}})
    };
    let Ok(config) = Config::from_json(doc.to_string().as_bytes()) else {
        return;
    };
    let headers = [
        ("x-team", "platform"),
        ("user-agent", "fuzz/1.0"),
        ("x-multi", "a"),
        ("x-multi", "b"),
    ];
    let request = canned_request(0, false);
    let path = if sel & 4 == 0 {
        "/v1/chat/completions?x=1&y=2"
    } else {
        "/v1/chat/completions"
    };
    let Some(sent) = route_request(Arc::new(config), path, &headers, &[&request]) else {
        return;
    };
    let mut router = sent.filter;
    let _ = respond(
        &mut router,
        &[(":status", "200"), ("content-type", "application/json")],
        &[ANSWER],
    );
});
