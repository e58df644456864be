//! Arbitrary bytes, cut into arbitrary chunks: the decoder never panics, gives the
//! same events however the input is cut, and loses no byte.
#![no_main]

use aigw_filter::codec::sse::{SseDecoder, SseEvent};
use libfuzzer_sys::fuzz_target;

fn decode(chunks: &[&[u8]], max: usize) -> Option<Vec<SseEvent>> {
    let mut d = SseDecoder::new(max);
    let mut out = Vec::new();
    for c in chunks {
        d.push(c, &mut out).ok()?;
    }
    out.extend(d.finish().ok()?);
    Some(out)
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let max = 1 + usize::from(seed) * 4;
    let step = 1 + usize::from(seed % 13);
    let chunks: Vec<&[u8]> = data.chunks(step).collect();
    let whole = decode(&[data], max);
    let cut = decode(&chunks, max);
    if let (Some(whole), Some(cut)) = (&whole, &cut) {
        assert_eq!(whole, cut);
        let raw: Vec<u8> = whole.iter().flat_map(|e| e.raw().to_vec()).collect();
        assert_eq!(raw, data);
        assert!(whole.iter().all(|e| e.raw().len() <= max));
    }
    // Any event over the limit fails both ways: the cut does not change the verdict.
    assert_eq!(whole.is_some(), cut.is_some());
});
