//! Hub stream items as Responses API events, in the order OpenAI sends them:
//! `response.created` and `response.in_progress`, then per output item its `added`,
//! deltas and `done` events (a message's text, a reasoning summary, a function call's
//! arguments), then `response.completed` (or `response.incomplete`) with the usage.
//! A failed stream ends with `error` and `response.failed`. Every event carries a
//! `sequence_number`; nothing is written after the end.

use crate::schema::openai::{ChatCompletionChunk, Usage};
use crate::translate::{ProviderError, ResponseMeta, StreamItem};

use super::response::{status_of, Id, Ids, Out, OutputItem, Part, ResponseObject};

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
            Done::Text { id, text } => OutputItem::Message {
                id: Id("", id),
                status: "completed",
                text,
            },
            Done::Reasoning { text } => OutputItem::Reasoning {
                id: Id("", reasoning_id),
                summary: text,
            },
            Done::Call {
                call_id,
                name,
                arguments,
            } => OutputItem::FunctionCall {
                call_id,
                name,
                arguments,
                status: "completed",
            },
        }
    }
}

/// Events written one by one: `event: KIND`, then the data object's own members,
/// then its `type` and `sequence_number`.
struct Events<'a> {
    out: Out<'a>,
    seq: &'a mut u64,
}

impl<'a> Events<'a> {
    fn new(seq: &'a mut u64, out: &'a mut Vec<u8>) -> Self {
        Events { out: Out(out), seq }
    }

    /// Writes one event: `members` writes the data's members before `type`.
    fn event(&mut self, kind: &str, members: impl FnOnce(&mut Out<'_>)) {
        let out = &mut self.out;
        out.raw("event: ");
        out.raw(kind);
        out.raw("\ndata: {");
        members(out);
        out.raw(r#","type":""#);
        out.raw(kind);
        out.raw(r#"","sequence_number":"#);
        out.num(*self.seq);
        out.raw("}\n\n");
        *self.seq += 1;
    }
}

/// `"item_id"` and `"output_index"`, the place an event is about.
fn at(out: &mut Out<'_>, id: Id<'_>, index: usize) {
    out.raw(r#""item_id":"#);
    out.id(id);
    out.raw(r#","output_index":"#);
    out.num(index as u64);
}

/// `"output_index"` and `"item"`.
fn item(out: &mut Out<'_>, index: usize, item: OutputItem<'_>) {
    out.raw(r#""output_index":"#);
    out.num(index as u64);
    out.raw(r#","item":"#);
    item.write(out);
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
        kind: &str,
        status: (&str, Option<&str>),
        error: Option<(&str, &str)>,
        out: &mut Vec<u8>,
    ) {
        let output: Vec<OutputItem<'_>> = self
            .output
            .iter()
            .map(|d| d.item(&self.reasoning_id))
            .collect();
        let response = ResponseObject {
            id: Id("", &self.response_id),
            meta: &self.meta,
            status,
            output: &output,
            usage: self.usage.as_ref(),
            error,
        };
        Events::new(&mut self.seq, out).event(kind, |out| {
            out.raw(r#""response":"#);
            response.write(out);
        });
    }

    fn fail(&mut self, e: &ProviderError, out: &mut Vec<u8>) {
        let code = e.code.as_deref().unwrap_or_else(|| e.kind.openai_type());
        Events::new(&mut self.seq, out).event("error", |out| {
            out.raw(r#""code":"#);
            out.str(code);
            out.raw(r#","message":"#);
            out.str(&e.message);
            out.raw(r#","param":null"#);
        });
        let error = Some((code, e.message.as_str()));
        self.finished("response.failed", ("failed", None), error, out);
        self.ended = true;
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = ResponseObject {
            id: Id("", &self.response_id),
            meta: &self.meta,
            status: ("in_progress", None),
            output: &[],
            usage: None,
            error: None,
        };
        let mut events = Events::new(&mut self.seq, out);
        for kind in ["response.created", "response.in_progress"] {
            events.event(kind, |out| {
                out.raw(r#""response":"#);
                response.write(out);
            });
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
            let (id, index) = (Id("", &self.reasoning_id), self.output.len());
            Events::new(&mut self.seq, out).event("response.reasoning_summary_text.delta", |out| {
                at(out, id, index);
                out.raw(r#","summary_index":0,"delta":"#);
                out.str(r);
            });
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
            Events::new(&mut self.seq, out).event("response.output_text.delta", |out| {
                at(out, Id("", id), index);
                out.raw(r#","content_index":0,"delta":"#);
                out.str(t);
                out.raw(r#","logprobs":[]"#);
            });
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
                let index = self.output.len();
                let added = OutputItem::FunctionCall {
                    call_id: &call_id,
                    name: &name,
                    arguments: "",
                    status: "in_progress",
                };
                Events::new(&mut self.seq, out)
                    .event("response.output_item.added", |out| item(out, index, added));
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
                Events::new(&mut self.seq, out).event(
                    "response.function_call_arguments.delta",
                    |out| {
                        at(out, Id("fc_", call_id), index);
                        out.raw(r#","delta":"#);
                        out.str(piece);
                    },
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
        let mut events = Events::new(&mut self.seq, out);
        let added = OutputItem::Message {
            id: Id("", &id),
            status: "in_progress",
            text: "",
        };
        events.event("response.output_item.added", |out| item(out, index, added));
        events.event("response.content_part.added", |out| {
            at(out, Id("", &id), index);
            out.raw(r#","content_index":0,"part":"#);
            Part::OutputText("").write(out);
        });
        self.open = Some(Open::Text {
            id,
            text: String::new(),
        });
    }

    fn open_reasoning(&mut self, out: &mut Vec<u8>) {
        let (id, index) = (Id("", &self.reasoning_id), self.output.len());
        let mut events = Events::new(&mut self.seq, out);
        let added = OutputItem::Reasoning { id, summary: "" };
        events.event("response.output_item.added", |out| item(out, index, added));
        events.event("response.reasoning_summary_part.added", |out| {
            at(out, id, index);
            out.raw(r#","summary_index":0,"part":"#);
            Part::SummaryText("").write(out);
        });
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
        let mut events = Events::new(&mut self.seq, out);
        let done = match open {
            Open::Text { id, text } => {
                events.event("response.output_text.done", |out| {
                    at(out, Id("", &id), index);
                    out.raw(r#","content_index":0,"text":"#);
                    out.str(&text);
                    out.raw(r#","logprobs":[]"#);
                });
                events.event("response.content_part.done", |out| {
                    at(out, Id("", &id), index);
                    out.raw(r#","content_index":0,"part":"#);
                    Part::OutputText(&text).write(out);
                });
                Done::Text { id, text }
            }
            Open::Reasoning { text } => {
                let id = Id("", &self.reasoning_id);
                events.event("response.reasoning_summary_text.done", |out| {
                    at(out, id, index);
                    out.raw(r#","summary_index":0,"text":"#);
                    out.str(&text);
                });
                events.event("response.reasoning_summary_part.done", |out| {
                    at(out, id, index);
                    out.raw(r#","summary_index":0,"part":"#);
                    Part::SummaryText(&text).write(out);
                });
                Done::Reasoning { text }
            }
            Open::Call {
                call_id,
                name,
                arguments,
                ..
            } => {
                events.event("response.function_call_arguments.done", |out| {
                    at(out, Id("fc_", &call_id), index);
                    out.raw(r#","name":"#);
                    out.str(&name);
                    out.raw(r#","arguments":"#);
                    out.str(&arguments);
                });
                Done::Call {
                    call_id,
                    name,
                    arguments,
                }
            }
        };
        let finished = done.item(&self.reasoning_id);
        events.event("response.output_item.done", |out| {
            item(out, index, finished)
        });
        self.output.push(done);
    }
}
