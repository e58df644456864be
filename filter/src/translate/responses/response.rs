//! A hub answer as a Responses API `response` object, and the pieces the stream's
//! events share with it: written by serde from structs that borrow the hub's strings
//! (members in OpenAI's order), no JSON tree in between.

use std::fmt;

use serde::ser::{Serialize, Serializer};

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
    if let Some(m) = choice.map(|c| &c.message) {
        if let Some(r) = m.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            output.push(OutputItem::reasoning(Id("rs_", rid), r));
        }
        let calls = m.tool_calls.as_deref().unwrap_or_default();
        let text = m.content.as_deref().unwrap_or_default();
        if !text.is_empty() || calls.is_empty() {
            output.push(OutputItem::message(Id("msg_", rid), "completed", text));
        }
        output.extend(
            calls
                .iter()
                .map(|t| OutputItem::function_call_of(t, "completed")),
        );
    }
    let finish = choice.and_then(|c| c.finish_reason.as_deref());
    let body = ResponseObject::new(
        Id("resp_", rid),
        meta,
        status_of(finish),
        &output,
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

/// An id: a prefix and the rest, written as one string without being joined first.
#[derive(Clone, Copy)]
pub(crate) struct Id<'a>(pub &'static str, pub &'a str);

impl fmt::Display for Id<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        f.write_str(self.1)
    }
}

impl Serialize for Id<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `[]`, always.
type Empty = [(); 0];

/// `{}`.
#[derive(serde::Serialize)]
struct EmptyObject {}

/// `null`.
#[derive(serde::Serialize)]
pub(crate) struct Null;

/// The `response` object.
#[derive(serde::Serialize)]
pub(crate) struct ResponseObject<'a> {
    id: Id<'a>,
    object: &'static str,
    created_at: u64,
    status: &'a str,
    /// Set on a failed stream.
    pub error: Option<ErrorObject<'a>>,
    incomplete_details: Option<Incomplete<'a>>,
    model: &'a str,
    output: &'a [OutputItem<'a>],
    parallel_tool_calls: bool,
    previous_response_id: Option<Null>,
    store: bool,
    text: TextConfig,
    tool_choice: &'static str,
    tools: Empty,
    usage: Option<ResponsesUsage>,
    metadata: EmptyObject,
}

impl<'a> ResponseObject<'a> {
    pub fn new(
        id: Id<'a>,
        meta: &'a ResponseMeta,
        (status, incomplete): (&'a str, Option<&'a str>),
        output: &'a [OutputItem<'a>],
        usage: Option<&Usage>,
    ) -> Self {
        ResponseObject {
            id,
            object: "response",
            created_at: meta.created,
            status,
            error: None,
            incomplete_details: incomplete.map(|reason| Incomplete { reason }),
            model: &meta.model,
            output,
            parallel_tool_calls: true,
            previous_response_id: None,
            store: false,
            text: TextConfig {
                format: Format { kind: "text" },
            },
            tool_choice: "auto",
            tools: [],
            usage: usage.map(ResponsesUsage::of),
            metadata: EmptyObject {},
        }
    }
}

#[derive(serde::Serialize)]
pub(crate) struct ErrorObject<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

#[derive(serde::Serialize)]
struct Incomplete<'a> {
    reason: &'a str,
}

#[derive(serde::Serialize)]
struct TextConfig {
    format: Format,
}

#[derive(serde::Serialize)]
struct Format {
    #[serde(rename = "type")]
    kind: &'static str,
}

/// Hub usage in the Responses API's names (input counts include cached tokens on
/// both sides).
#[derive(serde::Serialize)]
struct ResponsesUsage {
    input_tokens: u64,
    input_tokens_details: CachedTokens,
    output_tokens: u64,
    output_tokens_details: ReasoningTokens,
    total_tokens: u64,
}

#[derive(serde::Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

#[derive(serde::Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

impl ResponsesUsage {
    fn of(u: &Usage) -> Self {
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
        ResponsesUsage {
            input_tokens: u.prompt_tokens,
            input_tokens_details: CachedTokens {
                cached_tokens: cached,
            },
            output_tokens: u.completion_tokens,
            output_tokens_details: ReasoningTokens {
                reasoning_tokens: reasoning,
            },
            total_tokens: u.total_tokens,
        }
    }
}

/// One output item: a message, a reasoning summary or a function call (the members
/// each kind has, in this order).
#[derive(serde::Serialize)]
pub(crate) struct OutputItem<'a> {
    id: Id<'a>,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Parts<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<Parts<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
}

impl<'a> OutputItem<'a> {
    const NONE: Self = OutputItem {
        id: Id("", ""),
        kind: "",
        status: None,
        role: None,
        content: None,
        summary: None,
        call_id: None,
        name: None,
        arguments: None,
    };

    /// An assistant message; its text is written once it is `completed`.
    pub fn message(id: Id<'a>, status: &'a str, text: &'a str) -> Self {
        let part = (status == "completed").then(|| Part::output_text(text));
        OutputItem {
            id,
            kind: "message",
            status: Some(status),
            role: Some("assistant"),
            content: Some(Parts(part)),
            ..Self::NONE
        }
    }

    pub fn reasoning(id: Id<'a>, summary: &'a str) -> Self {
        let part = (!summary.is_empty()).then(|| Part::summary_text(summary));
        OutputItem {
            id,
            kind: "reasoning",
            summary: Some(Parts(part)),
            ..Self::NONE
        }
    }

    pub fn function_call_of(t: &'a ToolCall, status: &'a str) -> Self {
        Self::function_call(&t.id, &t.function.name, &t.function.arguments, status)
    }

    pub fn function_call(
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
        status: &'a str,
    ) -> Self {
        OutputItem {
            id: Id("fc_", call_id),
            kind: "function_call",
            status: Some(status),
            call_id: Some(call_id),
            name: Some(name),
            arguments: Some(arguments),
            ..Self::NONE
        }
    }
}

/// A content part or a summary part.
#[derive(serde::Serialize)]
pub(crate) struct Part<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<Empty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<Empty>,
}

impl<'a> Part<'a> {
    pub fn output_text(text: &'a str) -> Self {
        Part {
            kind: "output_text",
            text,
            annotations: Some([]),
            logprobs: Some([]),
        }
    }

    pub fn summary_text(text: &'a str) -> Self {
        Part {
            kind: "summary_text",
            text,
            annotations: None,
            logprobs: None,
        }
    }
}

/// A list of at most one part.
pub(crate) struct Parts<'a>(Option<Part<'a>>);

impl Serialize for Parts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}
