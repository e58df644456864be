use serde_json::{json, Value};

use super::*;
use crate::schema::openai::{ChatCompletion, ChatCompletionChunk};
use crate::translate::{ProviderError, ResponseMeta, StreamItem};

fn hub(body: Value) -> Value {
    let req = client_request(&serde_json::to_vec(&body).unwrap(), "backend-model").unwrap();
    serde_json::to_value(req).unwrap()
}

fn refused(body: Value) -> (u16, String) {
    let e = client_request(&serde_json::to_vec(&body).unwrap(), "m").unwrap_err();
    (e.status(), e.to_string())
}

fn meta() -> ResponseMeta {
    ResponseMeta {
        id: "chatcmpl-r1".into(),
        model: "claude-x".into(),
        created: 7,
    }
}

#[test]
fn a_string_input_with_instructions() {
    let h = hub(
        json!({"model": "m", "input": "hi", "instructions": "be brief",
        "max_output_tokens": 50, "temperature": 0.2, "stream": true}),
    );
    assert_eq!(h["model"], "backend-model");
    assert_eq!(
        h["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    );
    assert_eq!(h["max_completion_tokens"], 50);
    assert_eq!(h["temperature"], 0.2);
    assert_eq!(h["stream"], true);
    assert_eq!(h["stream_options"]["include_usage"], true);
}

#[test]
fn items_become_turns_with_tool_calls_and_results() {
    let h = hub(json!({"model": "m", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "weather?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Oslo\"}"},
        {"type": "function_call", "call_id": "call_2", "name": "time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "rain"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "noon"}]}
    ],
    "tools": [{"type": "function", "name": "weather", "description": "d",
        "parameters": {"type": "object"}, "strict": true}],
    "tool_choice": {"type": "function", "name": "weather"},
    "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
    "reasoning": {"effort": "low"}}));
    let m = h["messages"].as_array().unwrap();
    assert_eq!(m.len(), 4, "{m:#?}");
    assert_eq!(
        m[0]["content"][0],
        json!({"type": "text", "text": "weather?"})
    );
    assert_eq!(
        m[0]["content"][1]["image_url"],
        json!({"url": "data:image/png;base64,AAAA", "detail": "low"})
    );
    assert_eq!(m[1]["role"], "assistant");
    assert_eq!(m[1]["content"], "Let me look.");
    assert_eq!(m[1]["tool_calls"][0]["id"], "call_1");
    assert_eq!(m[1]["tool_calls"][1]["function"]["name"], "time");
    assert_eq!(
        (&m[2]["role"], &m[2]["tool_call_id"], &m[2]["content"]),
        (&json!("tool"), &json!("call_1"), &json!("rain"))
    );
    assert_eq!(m[3]["content"], "noon");
    assert_eq!(h["tools"][0]["function"]["name"], "weather");
    assert_eq!(h["tools"][0]["function"]["strict"], true);
    assert_eq!(h["tool_choice"]["function"]["name"], "weather");
    assert_eq!(h["response_format"]["json_schema"]["name"], "w");
    assert_eq!(h["reasoning_effort"], "low");
}

#[test]
fn stateful_and_built_in_features_are_refused_with_reasons() {
    for (body, field) in [
        (
            json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (json!({"model": "m", "input": "x", "store": true}), "store"),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
            "tools[0].type",
        ),
        (
            json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}),
            "input[0].type",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}),
            "input[0].content[0].file_id",
        ),
    ] {
        let (status, message) = refused(body);
        assert_eq!(status, 422, "{field}");
        assert!(message.contains(field), "{field}: {message}");
    }
    // store: false and a null previous_response_id are what a stateless client sends.
    hub(json!({"model": "m", "input": "x", "store": false, "previous_response_id": null}));
    assert_eq!(refused(json!({"model": "m"})).0, 400);
}

#[test]
fn a_whole_answer_with_text_reasoning_and_a_call() {
    let c: ChatCompletion = serde_json::from_value(json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": "claude",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.", "reasoning_content": "think",
            "tool_calls": [{"id": "call_9", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4}}
    }))
    .unwrap();
    let r: Value = serde_json::from_slice(&client_response(&c, &meta())).unwrap();
    assert_eq!(r["id"], "resp_r1");
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["model"], "claude-x");
    let kinds: Vec<&str> = r["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["reasoning", "message", "function_call"]);
    assert_eq!(r["output"][1]["content"][0]["text"], "Checking.");
    assert_eq!(r["output"][2]["call_id"], "call_9");
    assert_eq!(r["output"][2]["arguments"], "{\"city\":\"Oslo\"}");
    assert_eq!(
        r["usage"],
        json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4},
            "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15})
    );
    // Cut by the token limit: incomplete, with the reason.
    let mut cut = c.clone();
    cut.choices[0].finish_reason = Some("length".into());
    let r: Value = serde_json::from_slice(&client_response(&cut, &meta())).unwrap();
    assert_eq!(
        (&r["status"], &r["incomplete_details"]["reason"]),
        (&json!("incomplete"), &json!("max_output_tokens"))
    );
}

fn chunk(v: Value) -> StreamItem {
    let mut base =
        json!({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"});
    base.as_object_mut()
        .unwrap()
        .extend(v.as_object().unwrap().clone());
    let c: ChatCompletionChunk = serde_json::from_value(base).unwrap();
    StreamItem::Chunk(Box::new(c))
}

fn delta(d: Value, finish: Option<&str>) -> StreamItem {
    chunk(json!({"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}))
}

/// (event name, data) of every event written.
fn events(bytes: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(bytes).unwrap();
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (head, data) = e.split_once("\ndata: ").unwrap();
            let name = head.strip_prefix("event: ").unwrap().to_string();
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], name.as_str());
            (name, data)
        })
        .collect()
}

#[test]
fn a_stream_of_text_then_a_call_in_openai_order() {
    let mut s = ClientStream::new(&meta());
    let mut out = Vec::new();
    for item in [
        delta(json!({"role": "assistant", "content": ""}), None),
        delta(json!({"content": "Hel"}), None),
        delta(json!({"content": "lo"}), None),
        delta(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": ""}}]}),
            None,
        ),
        delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"c\":"}}]}),
            None,
        ),
        delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            None,
        ),
        delta(json!({}), Some("tool_calls")),
        chunk(
            json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}),
        ),
        StreamItem::Done,
        delta(json!({"content": "after the end"}), None),
    ] {
        s.encode(&item, &mut out);
    }
    let ev = events(&out);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (_, d)) in ev.iter().enumerate() {
        assert_eq!(d["sequence_number"], i as u64);
    }
    assert_eq!(ev[6].1["text"], "Hello");
    assert_eq!(ev[9].1["output_index"], 1);
    assert_eq!(ev[12].1["arguments"], "{\"c\":1}");
    let done = &ev[14].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(done["output"][1]["call_id"], "call_1");
    assert_eq!(done["usage"]["output_tokens"], 4);
    assert_eq!(done["usage"]["total_tokens"], 7);
}

#[test]
fn a_failed_stream_ends_with_error_and_failed() {
    let mut s = ClientStream::new(&meta());
    let mut out = Vec::new();
    s.encode(&delta(json!({"content": "Hi"}), None), &mut out);
    let e = ProviderError::new(503, None, "overloaded");
    s.encode(&StreamItem::Error(e), &mut out);
    s.encode(&StreamItem::Done, &mut out);
    let ev = events(&out);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[names.len() - 2..], ["error", "response.failed"]);
    assert_eq!(ev.last().unwrap().1["response"]["status"], "failed");
    assert_eq!(ev[ev.len() - 2].1["message"], "overloaded");
}

#[test]
fn escaped_strings_and_duplicate_members_read_as_a_json_tree_would() {
    let body = br#"{"model":"m","in\u0070ut":"a\"b","instructions":"x","instructions":"be \u00e9",
        "store":true,"store":false,"tools":{"not":"a list"}}"#;
    let h = serde_json::to_value(client_request(body, "m").unwrap()).unwrap();
    assert_eq!(
        h["messages"],
        json!([{"role": "system", "content": "be é"}, {"role": "user", "content": "a\"b"}])
    );
    assert!(h.get("tools").is_none());
    // An item or part that is no object is an empty one.
    let (status, message) = refused(json!({"model": "m", "input": [5]}));
    assert_eq!(status, 400);
    assert!(message.contains("input[0].role"), "{message}");
    let h =
        hub(json!({"model": "m", "input": [{"role": "assistant", "content": [7, {"text": "t"}]}]}));
    assert_eq!(h["messages"][0]["content"], "t");
}

#[test]
fn the_hubs_own_type_errors_come_after_the_requests() {
    let (status, message) = refused(json!({"model": "m", "input": "x", "temperature": "hot"}));
    assert_eq!(status, 400);
    assert!(message.contains("expected f64"), "{message}");
    let (status, _) = refused(json!({"model": "m", "input": "x", "temperature": "hot",
        "tools": [{"type": "web_search"}]}));
    assert_eq!(status, 422);
    // Not JSON, or not an object: the parse error, with its place.
    let e = client_request(b"{\"input\": [1,}", "m").unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(client_request(b"[1]", "m").is_err());
    assert!(client_request(b"{\"input\":\"a\",\"x\":\"\xff\"}", "m").is_err());
}

#[test]
fn a_whole_answer_is_written_in_openais_order() {
    let c: ChatCompletion = serde_json::from_value(json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": "claude",
        "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hi \"you\""}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    }))
    .unwrap();
    assert_eq!(
        String::from_utf8(client_response(&c, &meta())).unwrap(),
        concat!(
            r#"{"id":"resp_r1","object":"response","created_at":7,"status":"completed","error":null,"#,
            r#""incomplete_details":null,"model":"claude-x","output":[{"id":"msg_r1","type":"message","#,
            r#""status":"completed","role":"assistant","content":[{"type":"output_text","#,
            r#""text":"Hi \"you\"","annotations":[],"logprobs":[]}]}],"parallel_tool_calls":true,"#,
            r#""previous_response_id":null,"store":false,"text":{"format":{"type":"text"}},"#,
            r#""tool_choice":"auto","tools":[],"usage":{"input_tokens":3,"input_tokens_details":"#,
            r#"{"cached_tokens":0},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"#,
            r#""total_tokens":5},"metadata":{}}"#
        )
    );
}
