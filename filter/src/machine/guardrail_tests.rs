//! Request guardrails driven through `HttpFilter` as a host would: what the
//! provider gets when a policy masks, what the client gets when one blocks, and
//! that a blocked request spends nothing.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::config::Config;
use crate::host::{Action, Counter, MetadataValue, Status};
use crate::MODEL_HEADER;

/// Policies `pii` (mask), `secrets` (block), `audit` (log) and `size` (block past
/// 64 bytes of prompt); route `r` (model `m`) runs those `policies` and allows
/// `rpm` requests a minute, with a token limit so that streams ask for usage.
fn config(policies: &[&str], rpm: u64) -> Arc<Config> {
    let attached: Vec<Value> = policies
        .iter()
        .map(|p| json!({"policy": p, "stage": "request"}))
        .collect();
    let doc = json!({
        "version": "v1",
        "guardrails": [
            {"name": "pii", "action": "mask",
             "detectors": {"pii": ["email", "card", "iban", "phone"], "words": ["falcon"]}},
            {"name": "secrets", "action": "block",
             "detectors": {"secrets": ["awsAccessKey", "privateKey", "apiKey"]}},
            {"name": "audit", "action": "log",
             "detectors": {"regex": [{"name": "ticket", "pattern": "TICKET-[0-9]+"}]}},
            {"name": "size", "action": "block", "detectors": {"maxPromptBytes": 64}}
        ],
        "backends": [{"name": "b", "schema": {"name": "OpenAI"}}],
        "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "b"}],
                    "rateLimit": {"requestsPerMinute": rpm, "tokensPerMinute": 1000000},
                    "guardrails": attached}]
    });
    Arc::new(Config::from_json(doc.to_string().as_bytes()).unwrap())
}

struct Done {
    status: Status,
    out: Vec<Action>,
}

impl Done {
    fn replaced(&self) -> Option<Value> {
        self.out.iter().find_map(|a| match a {
            Action::ReplaceBody(b) => Some(serde_json::from_slice(b).expect("JSON")),
            _ => None,
        })
    }

    fn metadata(&self, key: &str) -> Option<String> {
        self.out.iter().find_map(|a| match a {
            Action::SetMetadata {
                key: k,
                value: MetadataValue::String(v),
            } if k == key => Some(v.clone()),
            _ => None,
        })
    }

    fn counted(&self, c: Counter) -> bool {
        self.out.contains(&Action::Count(c))
    }

    fn reply(&self) -> Option<(u16, Value)> {
        match self.out.last() {
            Some(Action::SendLocalReply { status, body, .. }) => {
                Some((*status, serde_json::from_slice(body).unwrap()))
            }
            _ => None,
        }
    }

    fn routed(&self) -> bool {
        self.out
            .iter()
            .any(|a| matches!(a, Action::SetHeader { name, .. } if name == MODEL_HEADER))
    }
}

fn send(config: &Arc<Config>, path: &str, body: &Value) -> Done {
    let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
    let mut out = Vec::new();
    let h = [(":method", "POST"), (":path", path)];
    let _ = f.on_request_headers(&h, false, Duration::ZERO, &mut out);
    let status = f.on_request_body(body.to_string().as_bytes(), true, Duration::ZERO, &mut out);
    Done { status, out }
}

const CARD: &str = "4111 1111 1111 1111";

#[test]
fn a_masking_policy_rewrites_only_the_prompt_text() {
    let c = config(&["pii"], 100);
    let body = json!({
        "model": "m",
        "temperature": 0.25,
        "messages": [
            {"role": "system", "content": "Reply to ops@example.com"},
            {"role": "user", "content": [
                {"type": "text", "text": format!("my card is {CARD}, not 4111 1111 1111 1112; about Falcon")},
                {"type": "image_url", "image_url": {"url": "https://x/ops@example.com"}}
            ]}
        ],
        "user": "someone@example.com"
    });
    let d = send(&c, "/v1/chat/completions", &body);
    assert_eq!(d.status, Status::Continue);
    assert!(d.routed());
    let sent = d.replaced().expect("the body is rewritten");
    assert_eq!(sent["messages"][0]["content"], "Reply to [EMAIL]");
    assert_eq!(
        sent["messages"][1]["content"][0]["text"],
        "my card is [CARD], not 4111 1111 1111 1112; about [REDACTED]"
    );
    // Not prompt text: left as it came.
    assert_eq!(
        sent["messages"][1]["content"][1]["image_url"]["url"],
        "https://x/ops@example.com"
    );
    assert_eq!(sent["user"], "someone@example.com");
    assert_eq!(sent["temperature"], 0.25);
    assert_eq!(
        d.metadata("guardrail").as_deref(),
        Some("pii:mask:request:email,card,words")
    );
    assert!(d.counted(Counter::GuardrailMasked));
}

#[test]
fn a_masked_stream_keeps_its_mask_when_usage_is_asked_for() {
    let c = config(&["pii"], 100);
    let body = json!({"model": "m", "stream": true,
                      "messages": [{"role": "user", "content": "mail a@example.org"}]});
    let d = send(&c, "/v1/chat/completions", &body);
    let sent = d.replaced().unwrap();
    assert_eq!(sent["messages"][0]["content"], "mail [EMAIL]");
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[test]
fn a_blocking_policy_answers_in_the_clients_schema_and_spends_nothing() {
    // One request a minute: blocked ones must not use it up.
    let c = config(&["pii", "secrets"], 1);
    let key = "AKIAIOSFODNN7EXAMPLE";
    let openai =
        json!({"model": "m", "messages": [{"role": "user", "content": format!("key {key}")}]});
    for _ in 0..2 {
        let d = send(&c, "/v1/chat/completions", &openai);
        let (status, err) = d.reply().expect("refused");
        assert_eq!(status, 400);
        assert_eq!(err["error"]["type"], "invalid_request_error");
        assert_eq!(err["error"]["code"], "content_policy_violation");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains("'secrets'"), "{message}");
        assert!(!err.to_string().contains(key), "never the matched text");
        assert!(!d.routed());
        assert!(d.counted(Counter::GuardrailBlocked));
        assert_eq!(
            d.metadata("guardrail").as_deref(),
            Some("secrets:block:request:awsAccessKey")
        );
    }
    let anthropic = json!({"model": "m", "max_tokens": 5,
        "system": [{"type": "text", "text": "x"}],
        "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
            "content": "token sk-ant-api03-abcdefghijklmnopqrstuvwxyz"}]}]});
    let d = send(&c, "/anthropic/v1/messages", &anthropic);
    let (status, err) = d.reply().expect("refused");
    assert_eq!(status, 400);
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'secrets'"));

    let clean = json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]});
    let d = send(&c, "/v1/chat/completions", &clean);
    assert_eq!(
        d.status,
        Status::Continue,
        "the minute's one request is left"
    );
    assert!(d.replaced().is_none());
    assert!(d.metadata("guardrail").is_none());
}

#[test]
fn a_logging_policy_passes_unchanged_and_says_so() {
    let c = config(&["audit", "pii"], 100);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "see TICKET-42"}]});
    let d = send(&c, "/v1/chat/completions", &body);
    assert_eq!(d.status, Status::Continue);
    assert!(d.replaced().is_none());
    assert_eq!(
        d.metadata("guardrail").as_deref(),
        Some("audit:log:request:ticket")
    );
    assert!(d.counted(Counter::GuardrailLogged));
    // Both fire: each is written, in the route's order.
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "TICKET-1 from z@example.com"}]});
    let d = send(&c, "/v1/chat/completions", &body);
    assert_eq!(
        d.metadata("guardrail").as_deref(),
        Some("audit:log:request:ticket;pii:mask:request:email")
    );
    assert_eq!(
        d.replaced().unwrap()["messages"][0]["content"],
        "TICKET-1 from [EMAIL]"
    );
}

#[test]
fn a_prompt_over_the_cap_is_refused() {
    let c = config(&["size"], 100);
    let short = json!({"model": "m", "messages": [{"role": "user", "content": "short"}]});
    assert_eq!(
        send(&c, "/v1/chat/completions", &short).status,
        Status::Continue
    );
    let long = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(65)}]});
    let d = send(&c, "/v1/chat/completions", &long);
    assert_eq!(d.reply().unwrap().0, 400);
    assert_eq!(
        d.metadata("guardrail").as_deref(),
        Some("size:block:request:maxPromptBytes")
    );
}

#[test]
fn a_content_of_the_wrong_shape_is_refused_on_a_guarded_route() {
    let c = config(&["pii"], 100);
    let body =
        json!({"model": "m", "messages": [{"role": "user", "content": {"text": "a@b.example"}}]});
    let (status, err) = send(&c, "/v1/chat/completions", &body).reply().unwrap();
    assert_eq!(status, 400);
    assert_eq!(err["error"]["param"], "messages[0].content");
}

/// Route `r` (model `m`) runs `pii` (mask) and `secrets` (block) on answers too.
fn answer_config() -> Arc<Config> {
    let doc = json!({
        "version": "v1",
        "guardrails": [
            {"name": "pii", "action": "mask", "detectors": {"pii": ["email"]}},
            {"name": "secrets", "action": "block", "detectors": {"secrets": ["awsAccessKey"]}}
        ],
        "backends": [{"name": "b", "schema": {"name": "OpenAI"}}],
        "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "b"}],
                    "cache": {"ttlSeconds": 60},
                    "guardrails": [{"policy": "pii", "stage": "both"},
                                   {"policy": "secrets", "stage": "response"}]}]
    });
    Arc::new(Config::from_json(doc.to_string().as_bytes()).unwrap())
}

/// A request to `path` answered 200 with `answer` cut in `pieces`: the request's
/// actions, then each answer call's status and actions.
fn answered(
    path: &str,
    request: &str,
    answer: &str,
    pieces: usize,
) -> (Vec<Action>, Vec<(Status, Vec<Action>)>) {
    let mut f = HttpFilter::new(answer_config(), FilterRole::Router);
    let mut req = Vec::new();
    let h = [(":method", "POST"), (":path", path)];
    let _ = f.on_request_headers(&h, false, Duration::ZERO, &mut req);
    if f.on_request_body(request.as_bytes(), true, Duration::ZERO, &mut req) != Status::Continue {
        return (req, Vec::new());
    }
    let mut calls = Vec::new();
    let mut out = Vec::new();
    let rh = [(":status", "200"), ("content-type", "application/json")];
    let s = f.on_response_headers(&rh, false, Duration::ZERO, &mut out);
    calls.push((s, out));
    let size = answer.len().div_ceil(pieces);
    let chunks: Vec<&[u8]> = answer.as_bytes().chunks(size).collect();
    for (i, c) in chunks.iter().enumerate() {
        let mut out = Vec::new();
        let s = f.on_response_body(c, i + 1 == chunks.len(), Duration::ZERO, &mut out);
        calls.push((s, out));
    }
    (req, calls)
}

fn header_set<'a>(out: &'a [Action], name: &str) -> Option<&'a str> {
    out.iter().rev().find_map(|a| match a {
        Action::SetHeader { name: n, value } if n == name => Some(value.as_str()),
        _ => None,
    })
}

fn body_of(out: &[Action]) -> Value {
    out.iter()
        .find_map(|a| match a {
            Action::ReplaceBody(b) => Some(serde_json::from_slice(b).unwrap()),
            _ => None,
        })
        .expect("a replaced body")
}

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

#[test]
fn an_answer_is_held_whole_then_masked() {
    let answer = r#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"write to bob@example.com"}}],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#;
    let (req, calls) = answered("/v1/chat/completions", CHAT, answer, 3);
    // The answer must come uncompressed to be read.
    assert!(req
        .iter()
        .any(|a| matches!(a, Action::RemoveHeader { name } if name == "accept-encoding")));
    assert_eq!(calls[0].0, Status::StopIteration, "headers held");
    assert_eq!(calls[1].0, Status::StopAndBuffer);
    assert_eq!(calls[2].0, Status::StopAndBuffer);
    let (status, last) = &calls[3];
    assert_eq!(*status, Status::Continue);
    let body = body_of(last);
    assert_eq!(body["choices"][0]["message"]["content"], "write to [EMAIL]");
    assert_eq!(body["usage"]["total_tokens"], 8);
    let len = header_set(last, "content-length").unwrap();
    assert_eq!(
        len.parse::<usize>().unwrap(),
        serde_json::to_vec(&body).unwrap().len()
    );
    let outcome = last.iter().find_map(|a| match a {
        Action::SetMetadata {
            key,
            value: MetadataValue::String(v),
        } if key == "guardrail" => Some(v.clone()),
        _ => None,
    });
    assert_eq!(outcome.as_deref(), Some("pii:mask:response:email"));
}

#[test]
fn an_answer_a_policy_blocks_is_a_400_in_the_clients_schema() {
    let request = r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"keys?"}]}"#;
    let answer = r#"{"type":"message","content":[{"type":"text","text":"use AKIAIOSFODNN7EXAMPLE"}],"usage":{"input_tokens":3,"output_tokens":4}}"#;
    let (_, calls) = answered("/anthropic/v1/messages", request, answer, 1);
    let last = &calls[1].1;
    assert_eq!(header_set(last, ":status"), Some("400"));
    let body = body_of(last);
    assert_eq!(body["type"], "error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("answer") && message.contains("'secrets'"),
        "{message}"
    );
    assert!(!message.contains("AKIA"));
}

#[test]
fn a_route_that_checks_answers_refuses_streams_and_unreadable_answers() {
    let stream = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (req, calls) = answered("/v1/chat/completions", stream, "", 1);
    assert!(calls.is_empty());
    match req.last() {
        Some(Action::SendLocalReply { status, body, .. }) => {
            assert_eq!(*status, 400);
            assert!(String::from_utf8_lossy(body).contains("stream"));
        }
        other => panic!("{other:?}"),
    }
    let (_, calls) = answered("/v1/chat/completions", CHAT, "<html>oops</html>", 1);
    assert_eq!(header_set(&calls[1].1, ":status"), Some("502"));
    // Embeddings carry no generated text: they pass untouched.
    let (_, calls) = answered(
        "/v1/embeddings",
        r#"{"model":"m","input":"x"}"#,
        r#"{"data":[]}"#,
        1,
    );
    assert_eq!(calls[0].0, Status::Continue);
}

#[test]
fn an_answer_over_the_limit_is_a_502_even_when_its_tail_reads_as_one() {
    let doc = json!({
        "version": "v1",
        "guardrails": [{"name": "pii", "action": "mask", "detectors": {"pii": ["email"]}}],
        "backends": [{"name": "b", "schema": {"name": "OpenAI"}}],
        "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "b"}],
                    "guardrails": [{"policy": "pii", "stage": "response"}]}],
        "limits": {"maxResponseBodyBytes": 64}
    });
    let config = Arc::new(Config::from_json(doc.to_string().as_bytes()).unwrap());
    let mut f = HttpFilter::new(config, FilterRole::Router);
    let mut out = Vec::new();
    let h = [(":method", "POST"), (":path", "/v1/chat/completions")];
    let _ = f.on_request_headers(&h, false, Duration::ZERO, &mut out);
    assert_eq!(
        f.on_request_body(CHAT.as_bytes(), true, Duration::ZERO, &mut out),
        Status::Continue
    );
    let rh = [(":status", "200"), ("content-type", "application/json")];
    let _ = f.on_response_headers(&rh, false, Duration::ZERO, &mut out);
    let mut out = Vec::new();
    let head = format!("{{\"pad\":\"{}\",", "x".repeat(80));
    assert_eq!(
        f.on_response_body(head.as_bytes(), false, Duration::ZERO, &mut out),
        Status::StopAndBuffer
    );
    // A last chunk that, alone, is an answer: it must not be taken for the whole.
    let tail = br#"{"choices":[{"message":{"content":"a@b.co"}}]}"#;
    let mut out = Vec::new();
    let _ = f.on_response_body(tail, true, Duration::ZERO, &mut out);
    assert_eq!(header_set(&out, ":status"), Some("502"));
    assert_eq!(body_of(&out)["error"]["code"], "bad_upstream_response");
}
