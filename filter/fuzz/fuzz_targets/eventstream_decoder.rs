//! AWS event-stream decoding: arbitrary bytes cut anywhere decode to the same
//! messages and the same verdict as whole, never panic, never buffer more than one
//! message's limit, and what decodes re-encodes to the very bytes it came from.
//!
//! Input: `[limit][4 chunk sizes][bytes]`.
#![no_main]

use aigw_filter::codec::eventstream::{encode, Decoder, EventStreamError, Message};
use aigw_filter_fuzz::{split, Unstructured};
use libfuzzer_sys::fuzz_target;

fn decode(chunks: &[&[u8]], max: usize) -> (Vec<Message>, Result<(), EventStreamError>) {
    let mut d = Decoder::new(max);
    let mut out = Vec::new();
    for c in chunks {
        if let Err(e) = d.push_into(c, &mut out) {
            return (out, Err(e));
        }
        // An unfinished message is never held past the limit.
        assert!(d.buffered() <= max.max(12));
    }
    let r = d.finish();
    (out, r)
}

fuzz_target!(|input: &[u8]| {
    let mut u = Unstructured::new(input);
    let Ok(limit) = u.arbitrary::<u8>() else {
        return;
    };
    let Ok(sizes) = u.arbitrary::<[u8; 4]>() else {
        return;
    };
    let data = u.take_rest();
    // 0: AWS's own limit; otherwise small limits that some frames exceed.
    let max = if limit == 0 {
        aigw_filter::codec::eventstream::DEFAULT_MAX_MESSAGE_BYTES
    } else {
        16 + usize::from(limit) * 8
    };
    let (whole, whole_r) = decode(&[data], max);
    let (cut, cut_r) = decode(&split(data, &sizes), max);
    assert_eq!(whole, cut, "messages differ with the cut");
    assert_eq!(whole_r, cut_r, "verdict differs with the cut");
    let mut again = Vec::new();
    for m in &whole {
        again.extend(encode(&m.headers, &m.payload).expect("a decoded message encodes"));
    }
    assert_eq!(&data[..again.len()], &again[..], "re-encoding differs");
    if whole_r.is_ok() {
        assert_eq!(again.len(), data.len());
    }
});
