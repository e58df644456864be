//! A hub answer as a Responses API `response` object.

use serde_json::{json, Value};

use crate::schema::openai::{ChatCompletion, ToolCall, Usage};
use crate::translate::ResponseMeta;

/// Ids of a translated response, from the attempt's request id.
pub(crate) struct Ids {
    pub response: String,
    pub message: String,
    pub reasoning: String,
}

impl Ids {
    pub fn of(meta: &ResponseMeta) -> Self {
        // `meta.id` is `chatcmpl-<request id>`.
        let rid = meta.id.strip_prefix("chatcmpl-").unwrap_or(&meta.id);
        Ids {
            response: format!("resp_{rid}"),
            message: format!("msg_{rid}"),
            reasoning: format!("rs_{rid}"),
        }
    }
}

/// The whole answer for the client.
pub fn client_response(c: &ChatCompletion, meta: &ResponseMeta) -> Vec<u8> {
    let ids = Ids::of(meta);
    let mut output = Vec::new();
    let choice = c.choices.first();
    if let Some(m) = choice.map(|c| &c.message) {
        if let Some(r) = m.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            output.push(reasoning_item(&ids.reasoning, r));
        }
        let calls = m.tool_calls.as_deref().unwrap_or_default();
        let text = m.content.as_deref().unwrap_or_default();
        if !text.is_empty() || calls.is_empty() {
            output.push(message_item(&ids.message, "completed", text));
        }
        output.extend(calls.iter().map(|t| function_call_item(t, "completed")));
    }
    let finish = choice.and_then(|c| c.finish_reason.as_deref());
    let body = response_object(
        &ids.response,
        meta,
        status_of(finish),
        output,
        c.usage.as_ref(),
    );
    serde_json::to_vec(&body).unwrap_or_default()
}

/// `completed`, or `incomplete` for an answer cut by its token limit or a filter.
pub(crate) fn status_of(finish: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

pub(crate) fn response_object(
    id: &str,
    meta: &ResponseMeta,
    (status, incomplete): (&str, Option<&str>),
    output: Vec<Value>,
    usage: Option<&Usage>,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": meta.created,
        "status": status,
        "error": null,
        "incomplete_details": incomplete.map(|r| json!({"reason": r})),
        "model": meta.model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "store": false,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "usage": usage.map(responses_usage),
        "metadata": {},
    })
}

/// Hub usage in the Responses API's names (input counts include cached tokens on
/// both sides).
pub(crate) fn responses_usage(u: &Usage) -> Value {
    let cached = u
        .prompt_tokens_details
        .as_ref()
        .and_then(|d| d.cached_tokens)
        .unwrap_or(0);
    let reasoning = u
        .completion_tokens_details
        .as_ref()
        .and_then(|d| d.reasoning_tokens)
        .unwrap_or(0);
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": u.total_tokens,
    })
}

pub(crate) fn message_item(id: &str, status: &str, text: &str) -> Value {
    let content = if status == "completed" {
        json!([output_text(text)])
    } else {
        json!([])
    };
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

pub(crate) fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

pub(crate) fn reasoning_item(id: &str, summary: &str) -> Value {
    let summary = if summary.is_empty() {
        json!([])
    } else {
        json!([{"type": "summary_text", "text": summary}])
    };
    json!({"id": id, "type": "reasoning", "summary": summary})
}

pub(crate) fn function_call_item(t: &ToolCall, status: &str) -> Value {
    function_call(&t.id, &t.function.name, &t.function.arguments, status)
}

pub(crate) fn function_call(call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"id": format!("fc_{call_id}"), "type": "function_call", "status": status,
        "call_id": call_id, "name": name, "arguments": arguments})
}
