//! Every translator's response direction, whole and streamed: a request of each
//! endpoint goes to a backend of each schema (through an upstream instance, or
//! inline with `routerOnly`), and the backend answers arbitrary bytes, with an
//! arbitrary status and content type (JSON, SSE, AWS event stream), cut anywhere.
//! The router-level instance then meters what the client gets (and, on the route
//! with response-stage guardrails, holds and masks it).
//!
//! Invariants: no panic; an answer the gateway rewrote into JSON is JSON, and a
//! stream it rewrote is SSE whose every `data:` is JSON or `[DONE]`.
//!
//! Input: `[selector][status][content type][4 chunk sizes][answer]`.
#![no_main]

use aigw_filter::codec::sse::SseDecoder;
use aigw_filter::Headers;
use aigw_filter_fuzz::{
    canned_request, config, is_json, respond, route_request, split, upstream_request, Unstructured,
    ENDPOINTS, SCHEMAS,
};
use libfuzzer_sys::fuzz_target;

const STATUSES: [&str; 8] = ["200", "200", "400", "429", "500", "503", "404", "201"];
const TYPES: [&str; 6] = [
    "application/json",
    "text/event-stream",
    "application/vnd.amazon.eventstream",
    "text/event-stream; charset=utf-8",
    "text/plain",
    "",
];

fn check(headers: &aigw_filter_fuzz::H, body: &[u8], answer: &[u8]) {
    if body == answer {
        return;
    }
    let ct = headers.get("content-type").unwrap_or_default();
    if ct.starts_with("application/json") {
        assert!(is_json(body), "a rewritten answer is not JSON");
    } else if ct.starts_with("text/event-stream") {
        let mut d = SseDecoder::new(usize::MAX);
        let mut events = Vec::new();
        d.push(body, &mut events).expect("rewritten stream decodes");
        events.extend(d.finish().expect("rewritten stream ends"));
        for e in events.iter().filter(|e| e.has_data()) {
            let data = e.data();
            assert!(
                data == b"[DONE]" || is_json(data),
                "a rewritten event is not JSON: {:?}",
                String::from_utf8_lossy(data)
            );
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let mut u = Unstructured::new(input);
    let Ok(sel) = u.arbitrary::<u8>() else { return };
    let Ok(status) = u.choose(&STATUSES) else {
        return;
    };
    let Ok(ct) = u.choose(&TYPES) else { return };
    let Ok(sizes) = u.arbitrary::<[u8; 4]>() else {
        return;
    };
    let answer = u.take_rest();
    let sel = usize::from(sel);
    let endpoint = sel % ENDPOINTS.len();
    let schema = (sel / ENDPOINTS.len()) % SCHEMAS.len();
    let stream = sel / (ENDPOINTS.len() * SCHEMAS.len()) % 2 == 1;
    let router_only = sel / (ENDPOINTS.len() * SCHEMAS.len() * 2) % 2 == 1;
    let mut request = canned_request(endpoint, stream);
    if !stream && sizes[3] & 1 == 1 {
        // To the route whose guardrails hold, read and mask the whole answer.
        request = String::from_utf8_lossy(&request)
            .replacen(r#""model":"m""#, r#""model":"answers""#, 1)
            .into_bytes();
    }
    let Some(sent) = route_request(
        config(schema, router_only),
        ENDPOINTS[endpoint],
        &[],
        &[&request],
    ) else {
        return;
    };
    let mut router = sent.filter;
    let chunks = split(answer, &sizes);
    let mut headers = vec![(":status", *status), ("x-request-id", "fuzz-1")];
    if !ct.is_empty() {
        headers.push(("content-type", *ct));
    }
    // A provider that speaks the client's schema has its events passed on as
    // they are (usage stripped, model named): only a translation must make JSON.
    let same = match endpoint {
        3 => schema == 5 || schema == 6,
        _ => schema <= 2,
    };
    let check = |h: &aigw_filter_fuzz::H, body: &[u8]| {
        if !same {
            check(h, body, answer)
        }
    };
    if router_only {
        let (h, body) = respond(&mut router, &headers, &chunks);
        check(&h, &body);
        return;
    }
    let Some((mut upstream, _)) =
        upstream_request(config(schema, false), "b", &sent.headers, &sent.body)
    else {
        return;
    };
    let (h, body) = respond(&mut upstream, &headers, &chunks);
    check(&h, &body);
    // The router level sees the upstream instance's answer, cut the same way.
    let pairs: Vec<(&str, &str)> = h.0.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let _ = respond(&mut router, &pairs, &split(&body, &sizes));
});
