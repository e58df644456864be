//! Hub stream items as Responses API events, in the order OpenAI sends them:
//! `response.created` and `response.in_progress`, then per output item its `added`,
//! deltas and `done` events (a message's text, a reasoning summary, a function call's
//! arguments), then `response.completed` (or `response.incomplete`) with the usage.
//! A failed stream ends with `error` and `response.failed`. Every event carries a
//! `sequence_number`; nothing is written after the end.

use serde::Serialize;

use crate::schema::openai::{ChatCompletionChunk, Usage};
use crate::translate::{ProviderError, ResponseMeta, StreamItem};

use super::response::{status_of, ErrorObject, Id, Ids, Null, OutputItem, Part, ResponseObject};

#[derive(Debug)]
pub struct ClientStream {
    meta: ResponseMeta,
    response_id: String,
    message_id: String,
    reasoning_id: String,
    seq: u64,
    started: bool,
    ended: bool,
    /// Finished output items, for the final response.
    output: Vec<Done>,
    open: Option<Open>,
    /// Messages opened so far (a second one gets its own id).
    messages: usize,
    finish: Option<String>,
    usage: Option<Usage>,
}

#[derive(Debug)]
enum Open {
    Text {
        id: String,
        text: String,
    },
    Reasoning {
        text: String,
    },
    Call {
        hub_index: u32,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// A finished output item.
#[derive(Debug)]
enum Done {
    Text {
        id: String,
        text: String,
    },
    Reasoning {
        text: String,
    },
    Call {
        call_id: String,
        name: String,
        arguments: String,
    },
}

impl Done {
    fn item<'a>(&'a self, reasoning_id: &'a str) -> OutputItem<'a> {
        match self {
            Done::Text { id, text } => OutputItem::message(Id("", id), "completed", text),
            Done::Reasoning { text } => OutputItem::reasoning(Id("", reasoning_id), text),
            Done::Call {
                call_id,
                name,
                arguments,
            } => OutputItem::function_call(call_id, name, arguments, "completed"),
        }
    }
}

/// The members of one event besides its `type` and `sequence_number`, which come
/// last; each kind of event has its own few, always in this order.
#[derive(Default, Serialize)]
struct Event<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ResponseObject<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<Null>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_id: Option<Id<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    part: Option<Part<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<OutputItem<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<[(); 0]>,
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
}

/// An event about a place in the output: `item_id` and `output_index`.
fn at(id: Id<'_>, index: usize) -> Event<'_> {
    Event {
        item_id: Some(id),
        output_index: Some(index),
        ..Event::default()
    }
}

impl ClientStream {
    pub fn new(meta: &ResponseMeta) -> Self {
        let ids = Ids::of(meta);
        ClientStream {
            meta: meta.clone(),
            response_id: ids.response,
            message_id: ids.message,
            reasoning_id: ids.reasoning,
            seq: 0,
            started: false,
            ended: false,
            output: Vec::new(),
            open: None,
            messages: 0,
            finish: None,
            usage: None,
        }
    }

    pub fn encode(&mut self, item: &StreamItem, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.start(out);
        match item {
            StreamItem::Chunk(c) => self.chunk(c, out),
            StreamItem::Done => {
                self.close(out);
                let status = status_of(self.finish.as_deref());
                let kind = if status.0 == "completed" {
                    "response.completed"
                } else {
                    "response.incomplete"
                };
                self.finished(kind, status, None, out);
                self.ended = true;
            }
            StreamItem::Error(e) => self.fail(e, out),
        }
    }

    /// The last event: the whole response, its output items and usage.
    fn finished(
        &mut self,
        kind: &'static str,
        status: (&str, Option<&str>),
        error: Option<ErrorObject<'_>>,
        out: &mut Vec<u8>,
    ) {
        let output: Vec<OutputItem<'_>> = self
            .output
            .iter()
            .map(|d| d.item(&self.reasoning_id))
            .collect();
        let mut response = ResponseObject::new(
            Id("", &self.response_id),
            &self.meta,
            status,
            &output,
            self.usage.as_ref(),
        );
        response.error = error;
        let event = Event {
            response: Some(response),
            ..Event::default()
        };
        write(&mut self.seq, kind, event, out);
    }

    fn fail(&mut self, e: &ProviderError, out: &mut Vec<u8>) {
        let code = e.code.as_deref().unwrap_or_else(|| e.kind.openai_type());
        let event = Event {
            code: Some(code),
            message: Some(&e.message),
            param: Some(Null),
            ..Event::default()
        };
        write(&mut self.seq, "error", event, out);
        let error = ErrorObject {
            code,
            message: &e.message,
        };
        self.finished("response.failed", ("failed", None), Some(error), out);
        self.ended = true;
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        for kind in ["response.created", "response.in_progress"] {
            let r = ResponseObject::new(
                Id("", &self.response_id),
                &self.meta,
                ("in_progress", None),
                &[],
                None,
            );
            let event = Event {
                response: Some(r),
                ..Event::default()
            };
            write(&mut self.seq, kind, event, out);
        }
    }

    fn chunk(&mut self, c: &ChatCompletionChunk, out: &mut Vec<u8>) {
        if let Some(u) = &c.usage {
            self.usage = Some(u.clone());
        }
        let Some(choice) = c.choices.iter().find(|ch| ch.index == 0) else {
            return;
        };
        let d = &choice.delta;
        if let Some(r) = d.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            if !matches!(self.open, Some(Open::Reasoning { .. })) {
                self.close(out);
                self.open_reasoning(out);
            }
            if let Some(Open::Reasoning { text }) = &mut self.open {
                text.push_str(r);
            }
            let event = Event {
                summary_index: Some(0),
                delta: Some(r),
                ..at(Id("", &self.reasoning_id), self.output.len())
            };
            write(
                &mut self.seq,
                "response.reasoning_summary_text.delta",
                event,
                out,
            );
        }
        if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
            if !matches!(self.open, Some(Open::Text { .. })) {
                self.close(out);
                self.open_text(out);
            }
            let index = self.output.len();
            let Some(Open::Text { id, text }) = &mut self.open else {
                return;
            };
            text.push_str(t);
            let event = Event {
                content_index: Some(0),
                delta: Some(t),
                logprobs: Some([]),
                ..at(Id("", id), index)
            };
            write(&mut self.seq, "response.output_text.delta", event, out);
        }
        for tc in d.tool_calls.iter().flatten() {
            let same =
                matches!(&self.open, Some(Open::Call { hub_index, .. }) if *hub_index == tc.index);
            if !same {
                self.close(out);
                let call_id = tc
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("call_{}", tc.index));
                let name = tc.function.name.clone().unwrap_or_default();
                let event = Event {
                    output_index: Some(self.output.len()),
                    item: Some(OutputItem::function_call(
                        &call_id,
                        &name,
                        "",
                        "in_progress",
                    )),
                    ..Event::default()
                };
                write(&mut self.seq, "response.output_item.added", event, out);
                self.open = Some(Open::Call {
                    hub_index: tc.index,
                    call_id,
                    name,
                    arguments: String::new(),
                });
            }
            let piece = tc.function.arguments.as_deref().unwrap_or_default();
            if piece.is_empty() {
                continue;
            }
            let index = self.output.len();
            if let Some(Open::Call {
                call_id, arguments, ..
            }) = &mut self.open
            {
                arguments.push_str(piece);
                let event = Event {
                    delta: Some(piece),
                    ..at(Id("fc_", call_id), index)
                };
                write(
                    &mut self.seq,
                    "response.function_call_arguments.delta",
                    event,
                    out,
                );
            }
        }
        if let Some(f) = &choice.finish_reason {
            self.finish = Some(f.clone());
        }
    }

    fn open_text(&mut self, out: &mut Vec<u8>) {
        let id = if self.messages == 0 {
            self.message_id.clone()
        } else {
            format!("{}_{}", self.message_id, self.messages)
        };
        self.messages += 1;
        let index = self.output.len();
        let event = Event {
            output_index: Some(index),
            item: Some(OutputItem::message(Id("", &id), "in_progress", "")),
            ..Event::default()
        };
        write(&mut self.seq, "response.output_item.added", event, out);
        let event = Event {
            content_index: Some(0),
            part: Some(Part::output_text("")),
            ..at(Id("", &id), index)
        };
        write(&mut self.seq, "response.content_part.added", event, out);
        self.open = Some(Open::Text {
            id,
            text: String::new(),
        });
    }

    fn open_reasoning(&mut self, out: &mut Vec<u8>) {
        let (id, index) = (Id("", &self.reasoning_id), self.output.len());
        let event = Event {
            output_index: Some(index),
            item: Some(OutputItem::reasoning(id, "")),
            ..Event::default()
        };
        write(&mut self.seq, "response.output_item.added", event, out);
        let event = Event {
            summary_index: Some(0),
            part: Some(Part::summary_text("")),
            ..at(id, index)
        };
        write(
            &mut self.seq,
            "response.reasoning_summary_part.added",
            event,
            out,
        );
        self.open = Some(Open::Reasoning {
            text: String::new(),
        });
    }

    /// Ends the open output item with its `done` events.
    fn close(&mut self, out: &mut Vec<u8>) {
        let Some(open) = self.open.take() else {
            return;
        };
        let index = self.output.len();
        let seq = &mut self.seq;
        let done = match open {
            Open::Text { id, text } => {
                let event = Event {
                    content_index: Some(0),
                    text: Some(&text),
                    logprobs: Some([]),
                    ..at(Id("", &id), index)
                };
                write(seq, "response.output_text.done", event, out);
                let event = Event {
                    content_index: Some(0),
                    part: Some(Part::output_text(&text)),
                    ..at(Id("", &id), index)
                };
                write(seq, "response.content_part.done", event, out);
                Done::Text { id, text }
            }
            Open::Reasoning { text } => {
                let id = Id("", &self.reasoning_id);
                let event = Event {
                    summary_index: Some(0),
                    text: Some(&text),
                    ..at(id, index)
                };
                write(seq, "response.reasoning_summary_text.done", event, out);
                let event = Event {
                    summary_index: Some(0),
                    part: Some(Part::summary_text(&text)),
                    ..at(id, index)
                };
                write(seq, "response.reasoning_summary_part.done", event, out);
                Done::Reasoning { text }
            }
            Open::Call {
                call_id,
                name,
                arguments,
                ..
            } => {
                let event = Event {
                    name: Some(&name),
                    arguments: Some(&arguments),
                    ..at(Id("fc_", &call_id), index)
                };
                write(seq, "response.function_call_arguments.done", event, out);
                Done::Call {
                    call_id,
                    name,
                    arguments,
                }
            }
        };
        let event = Event {
            output_index: Some(index),
            item: Some(done.item(&self.reasoning_id)),
            ..Event::default()
        };
        write(seq, "response.output_item.done", event, out);
        self.output.push(done);
    }
}

/// Writes one event of kind `kind` with the next sequence number.
fn write(seq: &mut u64, kind: &'static str, mut event: Event<'_>, out: &mut Vec<u8>) {
    event.kind = kind;
    event.sequence_number = *seq;
    *seq += 1;
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    if serde_json::to_writer(&mut *out, &event).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
}
