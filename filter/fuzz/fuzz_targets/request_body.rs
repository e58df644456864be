//! The router-level machine fed an arbitrary request body on every endpoint, for
//! a route to a backend of every schema, with and without `routerOnly` (inline
//! translation); without it, the body the router lets on goes through an upstream
//! instance bound to that backend, as Envoy would send it. No panic, and what the
//! gateway sends a provider in place of the client's body is JSON.
//!
//! Input: `[selector][4 chunk sizes][body]`.
#![no_main]

use aigw_filter_fuzz::{
    config, is_json, model_of, route_request, split, upstream_request, Unstructured, ENDPOINTS,
    SCHEMAS,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let mut u = Unstructured::new(input);
    let Ok(sel) = u.arbitrary::<u8>() else { return };
    let Ok(sizes) = u.arbitrary::<[u8; 4]>() else {
        return;
    };
    let body = u.take_rest();
    let sel = usize::from(sel);
    let endpoint = sel % ENDPOINTS.len();
    let schema = (sel / ENDPOINTS.len()) % SCHEMAS.len();
    let router_only = sel / (ENDPOINTS.len() * SCHEMAS.len()) % 2 == 1;
    let chunks = split(body, &sizes);
    let cfg = config(schema, router_only);
    let Some(sent) = route_request(
        cfg.clone(),
        ENDPOINTS[endpoint],
        &[("anthropic-beta", "b1")],
        &chunks,
    ) else {
        return;
    };
    if sent.body != body {
        assert!(is_json(&sent.body), "router-level body is not JSON");
    }
    if router_only || model_of(&sent.headers).is_none() {
        return;
    }
    if let Some((_u, sent_on)) = upstream_request(cfg, "b", &sent.headers, &sent.body) {
        if sent_on != sent.body {
            assert!(is_json(&sent_on), "upstream body is not JSON");
        }
    }
});
