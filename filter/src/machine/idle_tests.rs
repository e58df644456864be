//! `streamIdleTimeout`: a streamed answer whose provider goes quiet is ended by the
//! router-level machine with an error event in the client's schema.
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::{Config, DEFAULT_STREAM_IDLE_TIMEOUT};
use crate::host::{Counter, MetadataValue};

const CONFIG: &str = r#"{
    "version": "v1",
    "streamIdleTimeout": "5s",
    "backends": [
        {"name": "openai", "schema": {"name": "OpenAI"}},
        {"name": "claude", "schema": {"name": "Anthropic"}}
    ],
    "routes": [
        {"name": "fast", "models": ["m"], "backends": [{"name": "openai"}],
         "streamIdleTimeout": "1s",
         "llmRequestCosts": [{"metadataKey": "in", "type": "InputToken"}]},
        {"name": "claude", "models": ["c"], "backends": [{"name": "claude"}],
         "streamIdleTimeout": "1s"},
        {"name": "global", "models": ["g"], "backends": [{"name": "openai"}]},
        {"name": "off", "models": ["o"], "backends": [{"name": "openai"}],
         "streamIdleTimeout": "0s"}
    ]
}"#;

fn config() -> Arc<Config> {
    Arc::new(Config::from_json(CONFIG.as_bytes()).unwrap())
}

fn t(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

const SSE: [(&str, &str); 2] = [(":status", "200"), ("content-type", "text/event-stream")];

/// A router instance whose request for `model` (streamed or not) went upstream at
/// t = 0, and the actions of its answer's headers (given at t = 100).
fn answered(
    path: &str,
    model: &str,
    stream: bool,
    headers: &[(&str, &str)],
) -> (HttpFilter, Vec<Action>) {
    let mut f = HttpFilter::new(config(), FilterRole::Router);
    let mut out = Vec::new();
    let h = [(":method", "POST"), (":path", path)];
    let _ = f.on_request_headers(&h, false, t(0), &mut out);
    let body = format!(
        r#"{{"model":"{model}","stream":{stream},"max_tokens":5,"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let s = f.on_request_body(body.as_bytes(), true, t(0), &mut out);
    assert_eq!(s, Status::Continue, "{out:?}");
    out.clear();
    let _ = f.on_response_headers(&headers, false, t(100), &mut out);
    (f, out)
}

fn chat(model: &str) -> (HttpFilter, Vec<Action>) {
    answered("/v1/chat/completions", model, true, &SSE)
}

fn timers(out: &[Action]) -> Vec<Duration> {
    out.iter()
        .filter_map(|a| match a {
            Action::Timer(d) => Some(*d),
            _ => None,
        })
        .collect()
}

/// The bytes of the `EndResponse`, which must be the last action.
fn ended(out: &[Action]) -> String {
    match out.last() {
        Some(Action::EndResponse(b)) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("expected EndResponse last, got {other:?} in {out:?}"),
    }
}

#[test]
fn a_timer_is_asked_for_when_a_stream_starts() {
    // The route's own, the document's, none.
    assert_eq!(timers(&chat("m").1), [t(1000)]);
    assert_eq!(timers(&chat("g").1), [t(5000)]);
    assert_eq!(timers(&chat("o").1), []);
    // Not for a whole answer, an error, or what is not an event stream.
    let json = [(":status", "200"), ("content-type", "application/json")];
    let error = [(":status", "429"), ("content-type", "text/event-stream")];
    assert_eq!(
        timers(&answered("/v1/chat/completions", "m", false, &SSE).1),
        []
    );
    assert_eq!(
        timers(&answered("/v1/chat/completions", "m", true, &json).1),
        []
    );
    assert_eq!(
        timers(&answered("/v1/chat/completions", "m", true, &error).1),
        []
    );
    // The Anthropic API streams too; the type may carry parameters.
    let sse = [
        (":status", "200"),
        ("content-type", "Text/Event-Stream; charset=utf-8"),
    ];
    assert_eq!(
        timers(&answered("/anthropic/v1/messages", "c", true, &sse).1),
        [t(1000)]
    );
}

#[test]
fn data_moves_the_deadline_and_the_timer_is_asked_for_again() {
    let (mut f, _) = chat("m");
    let mut out = Vec::new();
    let _ = f.on_response_body(b"data: {\"choices\":[]}\n\n", false, t(600), &mut out);
    assert_eq!(timers(&out), [], "no host call per chunk");
    // The first timer (due at 1100) finds 500 ms of quiet: asks for the rest.
    out.clear();
    f.on_timer(t(1100), &mut out);
    assert_eq!(out, [Action::Timer(t(500))]);
    // Early or spurious: the same.
    out.clear();
    f.on_timer(t(1200), &mut out);
    assert_eq!(out, [Action::Timer(t(400))]);
    // Quiet for the whole second: ended.
    out.clear();
    f.on_timer(t(1600), &mut out);
    assert!(ended(&out).contains("stream_idle_timeout"));
}

#[test]
fn a_quiet_openai_stream_ends_with_an_error_event_and_its_metadata() {
    let (mut f, _) = chat("m");
    let mut out = Vec::new();
    let first = b"data: {\"model\":\"m-1\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n";
    let _ = f.on_response_body(first, false, t(200), &mut out);
    out.clear();
    f.on_timer(t(1200), &mut out);
    let bytes = ended(&out);
    let data = bytes
        .strip_prefix("data: ")
        .and_then(|b| b.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("one SSE event: {bytes:?}"));
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"error": {
            "message": "the provider sent nothing for 1s in the middle of the stream: the gateway ended it (streamIdleTimeout)",
            "type": "server_error", "param": null, "code": "stream_idle_timeout"}})
    );
    // Counted, logged, and what was seen is written before the end.
    assert!(out.contains(&Action::Count(Counter::StreamIdleTimeout)));
    assert!(out.iter().any(|a| matches!(a, Action::Log { message, .. }
        if message.contains("route 'fast'") && message.contains("mid-stream"))));
    assert!(out.contains(&Action::SetMetadata {
        key: "route_name".into(),
        value: MetadataValue::String("fast".into())
    }));
    assert!(out.contains(&Action::SetMetadata {
        key: "response_model".into(),
        value: MetadataValue::String("m-1".into())
    }));
    // The bytes the host injects come back through this filter: they pass, and
    // nothing more happens on this stream.
    out.clear();
    let s = f.on_response_body(bytes.as_bytes(), true, t(1201), &mut out);
    assert_eq!((s, out.as_slice()), (Status::Continue, &[][..]));
    f.on_timer(t(5000), &mut out);
    f.on_stream_complete(t(5001), &mut out);
    assert_eq!(out, []);
}

#[test]
fn a_quiet_anthropic_stream_ends_with_an_anthropic_error_event() {
    let (mut f, _) = answered("/anthropic/v1/messages", "c", true, &SSE);
    let mut out = Vec::new();
    let start = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"x\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"c\",\"content\":[],\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n";
    let _ = f.on_response_body(start, false, t(200), &mut out);
    out.clear();
    f.on_timer(t(1300), &mut out);
    assert_eq!(
        ended(&out),
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"timeout_error\",\"message\":\"the provider sent nothing for 1s in the middle of the stream: the gateway ended it (streamIdleTimeout)\"}}\n\n"
    );
}

#[test]
fn an_event_cut_in_the_middle_is_closed_first() {
    for (sent, closing) in [
        (&b"data: {\"choi"[..], "\n\n"),
        (b"data: {\"choices\":[]}\n", "\n"),
        (b"data: {\"choices\":[]}\r\n\r\n", ""),
        (b"data: {}\n\n", ""),
        (b"", ""),
    ] {
        // A route without costs: the answer passes as it comes.
        let (mut f, _) = chat("g");
        let mut out = Vec::new();
        let _ = f.on_response_body(sent, false, t(200), &mut out);
        assert_eq!(out, []);
        f.on_timer(t(5200), &mut out);
        let bytes = ended(&out);
        assert!(
            bytes.starts_with(&format!("{closing}data: {{\"error\"")),
            "{sent:?}: {bytes:?}"
        );
    }
    // Only the last bytes count, across chunks.
    let (mut f, _) = chat("g");
    let mut out = Vec::new();
    let _ = f.on_response_body(b"data: {}\n", false, t(150), &mut out);
    let _ = f.on_response_body(b"\n", false, t(200), &mut out);
    f.on_timer(t(5200), &mut out);
    assert!(ended(&out).starts_with("data: {\"error\""));
    // Where the gateway holds a cut event back (it strips the usage chunk it asked
    // for: route `fast` has costs), the client has none of it: nothing to close.
    let (mut f, _) = chat("m");
    let _ = f.on_response_body(b"data: {\"choi", false, t(200), &mut out);
    out.clear();
    f.on_timer(t(1200), &mut out);
    assert!(ended(&out).starts_with("data: {\"error\""));
}

#[test]
fn nothing_once_the_stream_ended() {
    // The answer's end.
    let (mut f, _) = chat("m");
    let mut out = Vec::new();
    let _ = f.on_response_body(b"data: [DONE]\n\n", true, t(300), &mut out);
    out.clear();
    f.on_timer(t(1100), &mut out);
    f.on_timer(t(9000), &mut out);
    assert_eq!(out, []);
    // The stream's end (a reset, the client gone).
    let (mut f, _) = chat("m");
    f.on_stream_complete(t(300), &mut out);
    out.clear();
    f.on_timer(t(1100), &mut out);
    assert_eq!(out, []);
    // Fired once: a late timer finds nothing.
    let (mut f, _) = chat("m");
    f.on_timer(t(1100), &mut out);
    assert!(matches!(out.last(), Some(Action::EndResponse(_))));
    out.clear();
    f.on_timer(t(2100), &mut out);
    assert_eq!(out, []);
    // Neither role of the facade ever ends a stream it does not stream.
    let mut up = HttpFilter::new(config(), FilterRole::Upstream);
    up.on_timer(t(100_000), &mut out);
    let (mut whole, _) = answered("/v1/chat/completions", "m", false, &SSE);
    whole.on_timer(t(100_000), &mut out);
    assert_eq!(out, []);
}

#[test]
fn the_setting_is_a_duration_checked_at_load() {
    let with = |global: Option<&str>, route: Option<&str>| {
        let mut doc = serde_json::json!({"version": "v1",
            "backends": [{"name": "b", "schema": {"name": "OpenAI"}}],
            "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "b"}]}]});
        if let Some(g) = global {
            doc["streamIdleTimeout"] = g.into();
        }
        if let Some(r) = route {
            doc["routes"][0]["streamIdleTimeout"] = r.into();
        }
        Config::from_json(&serde_json::to_vec(&doc).unwrap())
    };
    let idle =
        |c: Result<Config, crate::config::ConfigError>| c.unwrap().routes[0].stream_idle_timeout;
    assert_eq!(idle(with(None, None)), Some(DEFAULT_STREAM_IDLE_TIMEOUT));
    assert_eq!(DEFAULT_STREAM_IDLE_TIMEOUT, Duration::from_secs(30));
    assert_eq!(idle(with(Some("2m"), None)), Some(Duration::from_secs(120)));
    assert_eq!(
        idle(with(Some("0s"), Some("1m30s"))),
        Some(Duration::from_secs(90))
    );
    assert_eq!(idle(with(Some("10s"), Some("0s"))), None);
    assert_eq!(idle(with(None, Some("500ms"))), Some(t(500)));
    for bad in [
        "",
        "30",
        "1.5s",
        "-1s",
        "30 s",
        "1d",
        "s",
        "123456s",
        "1h1m1s1ms1s",
    ] {
        let e = with(None, Some(bad)).unwrap_err();
        assert_eq!(e.path, "routes[0].streamIdleTimeout", "{bad:?}: {e}");
        assert!(e.message.contains("not a duration"), "{e}");
        let e = with(Some(bad), None).unwrap_err();
        assert_eq!(e.path, "streamIdleTimeout", "{bad:?}: {e}");
    }
    let e = with(Some("30"), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid config at `streamIdleTimeout`: '30' is not a duration (e.g. 30s, 1m30s, 500ms; 0s for no limit)"
    );
    // Not a string at all: the parser says where.
    let doc = br#"{"version": "v1", "streamIdleTimeout": 30}"#;
    assert_eq!(
        Config::from_json(doc).unwrap_err().path,
        "streamIdleTimeout"
    );
}
