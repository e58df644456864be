//! Tests across directions (garbage into every entry point) and the fixtures the
//! per-direction tests share.

use base64::Engine as _;
use serde_json::{json, Value};

use super::*;
use crate::codec::eventstream::encode_event;
use crate::codec::sse::SseDecoder;
use crate::translate::testing::Rng;
use crate::translate::{ChunkSource, ResponseMeta, StreamItem};

pub(super) const STREAM: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/anthropic/stream_tools.sse"
));

pub(super) fn meta() -> ResponseMeta {
    ResponseMeta {
        id: "chatcmpl-abc".into(),
        model: "claude-test".into(),
        created: 1_700_000_000,
    }
}

pub(super) fn target(flavor: Flavor<'static>, stream: bool) -> Target<'static> {
    Target {
        flavor,
        model: "claude-x",
        stream,
        include_usage: true,
        version: None,
    }
}

/// Feeds `data` cut at `cuts` (ascending offsets), the last piece with
/// end_of_stream.
pub(super) fn run(mut s: impl ChunkSource, data: &[u8], cuts: &[usize]) -> Vec<StreamItem> {
    let mut out = Vec::new();
    let mut from = 0;
    for &c in cuts {
        s.feed(&data[from..c], false, &mut out);
        from = c;
    }
    s.feed(&data[from..], true, &mut out);
    // Nothing after the end.
    let n = out.len();
    s.feed(b"event: message_stop\ndata: {}\n\n", true, &mut out);
    assert_eq!(out.len(), n);
    out
}

/// The event JSON documents of an SSE stream.
fn sse_datas(data: &[u8]) -> Vec<Vec<u8>> {
    let mut d = SseDecoder::new(1 << 20);
    let mut events = Vec::new();
    d.push(data, &mut events).unwrap();
    events.extend(d.finish().unwrap());
    events
        .iter()
        .filter(|e| e.has_data())
        .map(|e| e.data().to_vec())
        .collect()
}

/// The events as Bedrock sends them: its metrics on message_stop.
pub(super) fn bedrock_events(data: &[u8]) -> Vec<Vec<u8>> {
    sse_datas(data)
        .into_iter()
        .map(|json| {
            let mut v: Value = serde_json::from_slice(&json).unwrap();
            if v["type"] != "message_stop" {
                return json;
            }
            v["amazon-bedrock-invocationMetrics"] = json!({"inputTokenCount": 1230,
                "outputTokenCount": 89, "invocationLatency": 2087, "firstByteLatency": 512});
            serde_json::to_vec(&v).unwrap()
        })
        .collect()
}

/// Bedrock's framing of the same events.
pub(super) fn bedrock_frames(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for json in bedrock_events(data) {
        let payload = json!({
            "bytes": base64::engine::general_purpose::STANDARD.encode(&json),
            "p": "abcdefghij"
        });
        out.extend(encode_event("chunk", payload.to_string().as_bytes()).unwrap());
    }
    out
}

#[test]
fn garbage_never_panics() {
    let frames = bedrock_frames(STREAM);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..400 {
        let (src, framing) = if round % 2 == 0 {
            (STREAM, Framing::Sse)
        } else {
            (frames.as_slice(), Framing::EventStream)
        };
        let mut data = src[..rng.below(src.len() + 1)].to_vec();
        for _ in 0..rng.below(8) {
            if data.is_empty() {
                break;
            }
            let at = rng.below(data.len());
            data[at] = rng.next() as u8;
        }
        if round % 7 == 0 {
            data = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
        }
        let cut = rng.below(data.len() + 1);
        let items = run(ChatStream::new(framing, meta(), true, 4096), &data, &[cut]);
        let ends = items
            .iter()
            .filter(|i| matches!(i, StreamItem::Done | StreamItem::Error(_)))
            .count();
        assert_eq!(ends, 1, "round {round}: {items:?}");
        assert!(matches!(
            items.last(),
            Some(StreamItem::Done | StreamItem::Error(_))
        ));

        let mut ms = MessagesStream::new(4096);
        let mut out = Vec::new();
        ms.feed(&data, true, &mut out);
        let _ = chat_response(&data, &meta());
        let _ = client_request(&data);
        let _ = error(500, &[("x-amzn-errortype", "X")], &data);
        let _ = messages_request(&data, &target(Flavor::Bedrock, true));
    }
}
