//! Arbitrary response bodies in every mode: metering never panics, never changes
//! the bytes unless stripping, and stripping only ever removes whole events.
#![no_main]

use std::time::Duration;

use aigw_filter::metering::usage::{BodyFormat, MeterOptions, ResponseMeter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let opts = MeterOptions {
        format: if seed & 1 == 0 {
            BodyFormat::Json
        } else {
            BodyFormat::EventStream
        },
        gzip: seed & 2 != 0,
        strip_usage_chunk: seed & 4 != 0,
        max_buffered: 16 + usize::from(seed >> 3) * 64,
    };
    let step = 1 + usize::from(seed % 7) * 5;
    let mut meter = ResponseMeter::new(opts);
    let mut client = Vec::new();
    let chunks: Vec<&[u8]> = data.chunks(step).collect();
    for (i, c) in chunks.iter().enumerate() {
        let eos = i + 1 == chunks.len();
        match meter.feed(c, eos, Duration::from_millis(i as u64)) {
            Some(b) => client.extend_from_slice(&b),
            None => client.extend_from_slice(c),
        }
    }
    if !(opts.strip_usage_chunk && !opts.gzip && opts.format == BodyFormat::EventStream) {
        assert_eq!(client, data);
    } else {
        assert!(client.len() <= data.len());
    }
    let _ = (
        meter.usage(),
        meter.response_model(),
        meter.content_events(),
    );
    if let (Some(first), Some(last)) = (meter.first_event_at(), meter.last_event_at()) {
        assert!(first <= last);
    }
});
