//! A hub answer as a Responses API `response` object, and the pieces the stream's
//! events share with it. Written straight into the output buffer: the constant runs
//! of OpenAI's shape as they are, the hub's strings escaped, no JSON tree and no
//! member-by-member serializer in between (members in OpenAI's order).

use std::fmt;

use serde::Serializer as _;

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
        let rid = request_id(meta);
        Ids {
            response: format!("resp_{rid}"),
            message: format!("msg_{rid}"),
            reasoning: format!("rs_{rid}"),
        }
    }
}

/// `meta.id` is `chatcmpl-<request id>`.
fn request_id(meta: &ResponseMeta) -> &str {
    meta.id.strip_prefix("chatcmpl-").unwrap_or(&meta.id)
}

/// The whole answer for the client.
pub fn client_response(c: &ChatCompletion, meta: &ResponseMeta) -> Vec<u8> {
    let rid = request_id(meta);
    let mut output = Vec::new();
    let choice = c.choices.first();
    let mut size = 512;
    if let Some(m) = choice.map(|c| &c.message) {
        if let Some(r) = m.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            output.push(OutputItem::Reasoning {
                id: Id("rs_", rid),
                summary: r,
            });
            size += r.len();
        }
        let calls = m.tool_calls.as_deref().unwrap_or_default();
        let text = m.content.as_deref().unwrap_or_default();
        if !text.is_empty() || calls.is_empty() {
            output.push(OutputItem::Message {
                id: Id("msg_", rid),
                status: "completed",
                text,
            });
            size += text.len();
        }
        for t in calls {
            output.push(OutputItem::function_call_of(t, "completed"));
            size += t.function.arguments.len() + 128;
        }
    }
    let finish = choice.and_then(|c| c.finish_reason.as_deref());
    // Escapes aside, the answer fits: one allocation.
    let mut body = Vec::with_capacity(size + output.len() * 96);
    ResponseObject {
        id: Id("resp_", rid),
        meta,
        status: status_of(finish),
        output: &output,
        usage: c.usage.as_ref(),
        error: None,
    }
    .write(&mut Out(&mut body));
    body
}

/// `completed`, or `incomplete` for an answer cut by its token limit or a filter.
pub(crate) fn status_of(finish: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// A JSON writer over the output buffer.
pub(crate) struct Out<'a>(pub &'a mut Vec<u8>);

impl Out<'_> {
    /// JSON text as it is (the caller's constants).
    pub fn raw(&mut self, json: &str) {
        self.0.extend_from_slice(json.as_bytes());
    }

    /// A string, quoted and escaped.
    pub fn str(&mut self, s: &str) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::Serializer::new(&mut *self.0).serialize_str(s);
    }

    pub fn id(&mut self, id: Id<'_>) {
        if id.0.is_empty() {
            self.str(id.1);
        } else {
            let _ = serde_json::Serializer::new(&mut *self.0).collect_str(&id);
        }
    }

    pub fn num(&mut self, n: u64) {
        let _ = serde_json::Serializer::new(&mut *self.0).serialize_u64(n);
    }
}

/// An id: a prefix and the rest, written as one string without being joined first.
#[derive(Clone, Copy)]
pub(crate) struct Id<'a>(pub &'static str, pub &'a str);

impl fmt::Display for Id<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        f.write_str(self.1)
    }
}

/// The `response` object.
pub(crate) struct ResponseObject<'a> {
    pub id: Id<'a>,
    pub meta: &'a ResponseMeta,
    /// `status` and `incomplete_details.reason`.
    pub status: (&'a str, Option<&'a str>),
    pub output: &'a [OutputItem<'a>],
    pub usage: Option<&'a Usage>,
    /// `error`'s `code` and `message`, on a failed stream.
    pub error: Option<(&'a str, &'a str)>,
}

impl ResponseObject<'_> {
    pub fn write(&self, out: &mut Out<'_>) {
        out.raw(r#"{"id":"#);
        out.id(self.id);
        out.raw(r#","object":"response","created_at":"#);
        out.num(self.meta.created);
        out.raw(r#","status":"#);
        out.str(self.status.0);
        out.raw(r#","error":"#);
        match self.error {
            Some((code, message)) => {
                out.raw(r#"{"code":"#);
                out.str(code);
                out.raw(r#","message":"#);
                out.str(message);
                out.raw("}");
            }
            None => out.raw("null"),
        }
        out.raw(r#","incomplete_details":"#);
        match self.status.1 {
            Some(reason) => {
                out.raw(r#"{"reason":"#);
                out.str(reason);
                out.raw("}");
            }
            None => out.raw("null"),
        }
        out.raw(r#","model":"#);
        out.str(&self.meta.model);
        out.raw(r#","output":["#);
        for (i, item) in self.output.iter().enumerate() {
            if i > 0 {
                out.raw(",");
            }
            item.write(out);
        }
        out.raw(
            r#"],"parallel_tool_calls":true,"previous_response_id":null,"store":false,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"usage":"#,
        );
        match self.usage {
            Some(u) => write_usage(u, out),
            None => out.raw("null"),
        }
        out.raw(r#","metadata":{}}"#);
    }
}

/// Hub usage in the Responses API's names (input counts include cached tokens on
/// both sides).
fn write_usage(u: &Usage, out: &mut Out<'_>) {
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
    out.raw(r#"{"input_tokens":"#);
    out.num(u.prompt_tokens);
    out.raw(r#","input_tokens_details":{"cached_tokens":"#);
    out.num(cached);
    out.raw(r#"},"output_tokens":"#);
    out.num(u.completion_tokens);
    out.raw(r#","output_tokens_details":{"reasoning_tokens":"#);
    out.num(reasoning);
    out.raw(r#"},"total_tokens":"#);
    out.num(u.total_tokens);
    out.raw("}");
}

/// One output item.
#[derive(Clone, Copy)]
pub(crate) enum OutputItem<'a> {
    /// An assistant message; its text is written once it is `completed`.
    Message {
        id: Id<'a>,
        status: &'a str,
        text: &'a str,
    },
    /// A reasoning summary (none while empty).
    Reasoning { id: Id<'a>, summary: &'a str },
    FunctionCall {
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
        status: &'a str,
    },
}

impl<'a> OutputItem<'a> {
    pub fn function_call_of(t: &'a ToolCall, status: &'a str) -> Self {
        OutputItem::FunctionCall {
            call_id: &t.id,
            name: &t.function.name,
            arguments: &t.function.arguments,
            status,
        }
    }

    pub fn write(&self, out: &mut Out<'_>) {
        match *self {
            OutputItem::Message { id, status, text } => {
                out.raw(r#"{"id":"#);
                out.id(id);
                out.raw(r#","type":"message","status":"#);
                out.str(status);
                out.raw(r#","role":"assistant","content":["#);
                if status == "completed" {
                    Part::OutputText(text).write(out);
                }
                out.raw("]}");
            }
            OutputItem::Reasoning { id, summary } => {
                out.raw(r#"{"id":"#);
                out.id(id);
                out.raw(r#","type":"reasoning","summary":["#);
                if !summary.is_empty() {
                    Part::SummaryText(summary).write(out);
                }
                out.raw("]}");
            }
            OutputItem::FunctionCall {
                call_id,
                name,
                arguments,
                status,
            } => {
                out.raw(r#"{"id":"#);
                out.id(Id("fc_", call_id));
                out.raw(r#","type":"function_call","status":"#);
                out.str(status);
                out.raw(r#","call_id":"#);
                out.str(call_id);
                out.raw(r#","name":"#);
                out.str(name);
                out.raw(r#","arguments":"#);
                out.str(arguments);
                out.raw("}");
            }
        }
    }
}

/// A content part or a summary part.
#[derive(Clone, Copy)]
pub(crate) enum Part<'a> {
    OutputText(&'a str),
    SummaryText(&'a str),
}

impl Part<'_> {
    pub fn write(&self, out: &mut Out<'_>) {
        match *self {
            Part::OutputText(text) => {
                out.raw(r#"{"type":"output_text","text":"#);
                out.str(text);
                out.raw(r#","annotations":[],"logprobs":[]}"#);
            }
            Part::SummaryText(text) => {
                out.raw(r#"{"type":"summary_text","text":"#);
                out.str(text);
                out.raw("}");
            }
        }
    }
}
