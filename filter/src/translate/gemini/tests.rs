//! Tests across directions (an answer's thought signatures back in a request,
//! garbage into every entry point) and the fixtures the per-direction tests share.

use serde_json::{json, Value};

use super::*;
use crate::schema::openai::ChatCompletionRequest;
use crate::translate::testing::{self, pretty, Rng};
use crate::translate::{ChunkSource, ResponseMeta, StreamItem, TranslateError};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/gemini/");
pub(super) const STUDIO: Api<'static> = Api::AiStudio { version: None };
pub(super) const VERTEX: Api<'static> = Api::Vertex {
    project: "my-proj",
    region: "us-central1",
    version: None,
};

pub(super) fn fixture(name: &str) -> Vec<u8> {
    testing::fixture(DIR, name)
}

pub(super) fn golden(name: &str, actual: &[u8]) {
    testing::golden(DIR, name, actual)
}

pub(super) fn meta() -> ResponseMeta {
    ResponseMeta {
        id: "chatcmpl-test".into(),
        model: "gemini-2.5-flash".into(),
        created: 1_700_000_000,
    }
}

pub(super) fn parse(v: Value) -> ChatCompletionRequest {
    serde_json::from_value(v).unwrap()
}

/// Translates for AI Studio; returns the path and the body as JSON.
pub(super) fn req(v: Value) -> Result<(String, Value), TranslateError> {
    let up = chat_request(&parse(v), &STUDIO, "gemini-2.5-flash")?;
    assert_eq!(
        up.headers,
        vec![("content-type", "application/json".to_string())]
    );
    Ok((up.path, serde_json::from_slice(&up.body).unwrap()))
}

pub(super) fn body(v: Value) -> Value {
    req(v).unwrap().1
}

#[test]
fn golden_response_tools() {
    let out = chat_response(&fixture("response_tools.gemini.json"), &meta()).unwrap();
    golden("response_tools.openai.json", &pretty(&out));
    let c = &out.choices[0];
    assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
    let calls = c.message.tool_calls.as_ref().unwrap();
    let ids: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        ["call_chatcmpl-test_0", "fc_rome", "call_chatcmpl-test_2"]
    );
    assert_eq!(calls[2].function.arguments, "{}");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[1].function.arguments).unwrap(),
        json!({"city": "Rome", "units": ["c"]})
    );
    let u = out.usage.unwrap();
    assert_eq!(u.prompt_tokens_details, None);
    assert_eq!(u.completion_tokens_details, None);
    // The signature makes the round trip back into a request.
    let msg = serde_json::to_value(&c.message).unwrap();
    let b = body(json!({"model": "x", "messages": [{"role": "user", "content": "hi"}, msg]}));
    assert_eq!(
        b["contents"][1]["parts"][1]["thoughtSignature"],
        "c2lnLXBhcmlz"
    );
    assert_eq!(b["contents"][1]["parts"][2].get("thoughtSignature"), None);
}

// ----- garbage -----

#[test]
fn no_panics_on_garbage() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds: Vec<Vec<u8>> = [
        "response_text.gemini.json",
        "response_tools.gemini.json",
        "stream_text.gemini.sse",
        "stream_tools.gemini.sse",
        "stream_error.gemini.sse",
        "request_chat.openai.json",
    ]
    .iter()
    .map(|n| fixture(n))
    .collect();
    let h: [(&str, &str); 0] = [];
    for round in 0..3000 {
        let seed = &seeds[round % seeds.len()];
        let mut data = seed[..rng.below(seed.len() + 1)].to_vec();
        for _ in 0..rng.below(4) {
            if !data.is_empty() {
                let i = rng.below(data.len());
                data[i] = (rng.next() & 0xff) as u8;
            }
        }
        let _ = chat_response(&data, &meta());
        let _ = error(rng.below(700) as u16, &h, &data);
        let _ = embeddings_response(&data, &VERTEX, "m", true);
        let _ = embeddings_response(&data, &STUDIO, "m", false);
        let mut s = ChatStream::new(meta(), true, 512);
        let mut out = Vec::new();
        let cut = rng.below(data.len() + 1);
        s.feed(&data[..cut], false, &mut out);
        s.feed(&data[cut..], true, &mut out);
        let ends = out
            .iter()
            .filter(|i| matches!(i, StreamItem::Done | StreamItem::Error(_)))
            .count();
        assert_eq!(ends, 1, "round {round}");
        assert!(matches!(
            out.last(),
            Some(StreamItem::Done | StreamItem::Error(_))
        ));
        if let Ok(r) = serde_json::from_slice::<ChatCompletionRequest>(&data) {
            let _ = chat_request(&r, &VERTEX, "m");
        }
    }
}
