//! Answers with `content-encoding: gzip` at the router level: arbitrary bytes as
//! the gzip stream itself, or arbitrary plaintext gzipped here, cut anywhere, in
//! JSON, SSE or AWS event-stream content; metered only (OpenAI backend) or also
//! translated inline (`routerOnly`, other schemas). No panic, and a body the
//! gateway only meters reaches the client byte for byte.
//!
//! Input: `[selector][4 chunk sizes][payload]`.
#![no_main]

use std::io::Write;

use aigw_filter_fuzz::{canned_request, config, respond, route_request, split, Unstructured};
use flate2::write::GzEncoder;
use flate2::Compression;
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 4] = [
    "application/json",
    "text/event-stream",
    "application/vnd.amazon.eventstream",
    "",
];
/// OpenAI first (metering only), then schemas that translate.
const SCHEMAS: [usize; 8] = [0, 1, 3, 5, 8, 2, 7, 4];

fuzz_target!(|input: &[u8]| {
    let mut u = Unstructured::new(input);
    let Ok(sel) = u.arbitrary::<u8>() else { return };
    let Ok(sizes) = u.arbitrary::<[u8; 4]>() else {
        return;
    };
    let payload = u.take_rest();
    let compress = sel & 1 != 0;
    let stream = sel & 2 != 0;
    let ct = TYPES[usize::from(sel >> 2) & 3];
    let router_only = sel & 16 != 0;
    let schema = SCHEMAS[usize::from(sel >> 5)];
    let gz = if compress {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(payload).unwrap();
        e.finish().unwrap()
    } else {
        payload.to_vec()
    };
    let request = canned_request(0, stream);
    let Some(sent) = route_request(
        config(schema, router_only),
        "/v1/chat/completions",
        &[("accept-encoding", "gzip")],
        &[&request],
    ) else {
        return;
    };
    let mut router = sent.filter;
    let mut headers = vec![(":status", "200"), ("content-encoding", "gzip")];
    if !ct.is_empty() {
        headers.push(("content-type", ct));
    }
    let (_, body) = respond(&mut router, &headers, &split(&gz, &sizes));
    if schema == 0 {
        assert!(body == gz, "a metered gzip answer was changed");
    }
});
