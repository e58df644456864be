//! Test support shared by the translators' tests: fixture files, golden files, and a
//! deterministic generator for the garbage-in tests.

use serde::Serialize;
use serde_json::Value;

/// The bytes of a test fixture `dir/name`.
pub(crate) fn fixture(dir: &str, name: &str) -> Vec<u8> {
    std::fs::read(format!("{dir}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Compares `actual` with the golden file `dir/name` (as JSON values for `.json`
/// files, as text otherwise); `AIGW_BLESS=1 cargo test` rewrites the file instead.
pub(crate) fn golden(dir: &str, name: &str, actual: &[u8]) {
    if std::env::var_os("AIGW_BLESS").is_some() {
        std::fs::write(format!("{dir}{name}"), actual).unwrap();
        return;
    }
    let expected = fixture(dir, name);
    if name.ends_with(".json") {
        let e: Value = serde_json::from_slice(&expected).unwrap();
        let a: Value = serde_json::from_slice(actual).unwrap();
        assert_eq!(a, e, "{name}:\n{}", String::from_utf8_lossy(actual));
    } else {
        assert_eq!(
            String::from_utf8_lossy(actual),
            String::from_utf8_lossy(&expected),
            "{name}"
        );
    }
}

/// Pretty JSON with a final newline, as golden files are written.
pub(crate) fn pretty<T: Serialize>(v: &T) -> Vec<u8> {
    let mut s = serde_json::to_vec_pretty(v).unwrap();
    s.push(b'\n');
    s
}

/// A Bedrock ConverseStream answer in AWS event-stream frames: the message start,
/// one text delta per piece of `text`, an `end_turn` stop, and the usage.
pub(crate) fn converse_stream(text: &[&str], input_tokens: u64, output_tokens: u64) -> Vec<u8> {
    let deltas = text.iter().map(|t| {
        let delta = serde_json::json!({"contentBlockIndex": 0, "delta": {"text": t}});
        ("contentBlockDelta", delta.to_string())
    });
    let usage = serde_json::json!({"usage": {
        "inputTokens": input_tokens,
        "outputTokens": output_tokens,
        "totalTokens": input_tokens + output_tokens,
    }});
    std::iter::once(("messageStart", r#"{"role":"assistant"}"#.to_string()))
        .chain(deltas)
        .chain([
            ("messageStop", r#"{"stopReason":"end_turn"}"#.to_string()),
            ("metadata", usage.to_string()),
        ])
        .flat_map(|(ev, json)| {
            crate::codec::eventstream::encode_event(ev, json.as_bytes()).unwrap()
        })
        .collect()
}

/// A tiny deterministic generator (xorshift64*) for fuzz-ish tests.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
