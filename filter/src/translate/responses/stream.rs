//! Hub stream items as Responses API events, in the order OpenAI sends them:
//! `response.created` and `response.in_progress`, then per output item its `added`,
//! deltas and `done` events (a message's text, a reasoning summary, a function call's
//! arguments), then `response.completed` (or `response.incomplete`) with the usage.
//! A failed stream ends with `error` and `response.failed`. Every event carries a
//! `sequence_number`; nothing is written after the end.

use serde_json::{json, Value};

use crate::schema::openai::{ChatCompletionChunk, Usage};
use crate::translate::{ProviderError, ResponseMeta, StreamItem};

use super::response::{
    function_call, message_item, output_text, reasoning_item, response_object, status_of, Ids,
};

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
    output: Vec<Value>,
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
                let response = response_object(
                    &self.response_id,
                    &self.meta,
                    status,
                    std::mem::take(&mut self.output),
                    self.usage.as_ref(),
                );
                self.event(kind, json!({"response": response}), out);
                self.ended = true;
            }
            StreamItem::Error(e) => self.fail(e, out),
        }
    }

    fn fail(&mut self, e: &ProviderError, out: &mut Vec<u8>) {
        let code = e
            .code
            .clone()
            .unwrap_or_else(|| e.kind.openai_type().to_string());
        self.event(
            "error",
            json!({"code": code, "message": e.message, "param": null}),
            out,
        );
        let mut response = response_object(
            &self.response_id,
            &self.meta,
            ("failed", None),
            std::mem::take(&mut self.output),
            self.usage.as_ref(),
        );
        response["error"] = json!({"code": code, "message": e.message});
        self.event("response.failed", json!({"response": response}), out);
        self.ended = true;
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        for kind in ["response.created", "response.in_progress"] {
            let r = response_object(
                &self.response_id,
                &self.meta,
                ("in_progress", None),
                Vec::new(),
                None,
            );
            self.event(kind, json!({"response": r}), out);
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
            let index = self.output.len();
            let id = self.reasoning_id.clone();
            self.event(
                "response.reasoning_summary_text.delta",
                json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": r}),
                out,
            );
        }
        if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
            if !matches!(self.open, Some(Open::Text { .. })) {
                self.close(out);
                self.open_text(out);
            }
            let Some(Open::Text { id, text }) = &mut self.open else {
                return;
            };
            text.push_str(t);
            let id = id.clone();
            let index = self.output.len();
            self.event(
                "response.output_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0, "delta": t, "logprobs": []}),
                out,
            );
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
                let item = function_call(&call_id, &name, "", "in_progress");
                let index = self.output.len();
                self.event(
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                    out,
                );
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
                let id = format!("fc_{call_id}");
                self.event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": index, "delta": piece}),
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
        self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": message_item(&id, "in_progress", "")}),
            out,
        );
        self.event(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": output_text("")}),
            out,
        );
        self.open = Some(Open::Text {
            id,
            text: String::new(),
        });
    }

    fn open_reasoning(&mut self, out: &mut Vec<u8>) {
        let (id, index) = (self.reasoning_id.clone(), self.output.len());
        self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": reasoning_item(&id, "")}),
            out,
        );
        self.event(
            "response.reasoning_summary_part.added",
            json!({"item_id": id, "output_index": index, "summary_index": 0,
                "part": {"type": "summary_text", "text": ""}}),
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
        let item = match open {
            Open::Text { id, text } => {
                let at = json!({"item_id": id, "output_index": index, "content_index": 0});
                self.event(
                    "response.output_text.done",
                    with(&at, json!({"text": text, "logprobs": []})),
                    out,
                );
                self.event(
                    "response.content_part.done",
                    with(&at, json!({"part": output_text(&text)})),
                    out,
                );
                message_item(&id, "completed", &text)
            }
            Open::Reasoning { text } => {
                let id = self.reasoning_id.clone();
                let at = json!({"item_id": id, "output_index": index, "summary_index": 0});
                self.event(
                    "response.reasoning_summary_text.done",
                    with(&at, json!({"text": text})),
                    out,
                );
                self.event(
                    "response.reasoning_summary_part.done",
                    with(&at, json!({"part": {"type": "summary_text", "text": text}})),
                    out,
                );
                reasoning_item(&id, &text)
            }
            Open::Call {
                call_id,
                name,
                arguments,
                ..
            } => {
                self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": format!("fc_{call_id}"), "output_index": index,
                        "name": name, "arguments": arguments}),
                    out,
                );
                function_call(&call_id, &name, &arguments, "completed")
            }
        };
        self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
            out,
        );
        self.output.push(item);
    }

    fn event(&mut self, kind: &str, mut data: Value, out: &mut Vec<u8>) {
        if let Value::Object(o) = &mut data {
            o.insert("type".into(), Value::String(kind.to_string()));
            o.insert("sequence_number".into(), Value::from(self.seq));
        }
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        if serde_json::to_writer(&mut *out, &data).is_err() {
            out.extend_from_slice(b"{}");
        }
        out.extend_from_slice(b"\n\n");
    }
}

/// `base`'s fields and `more`'s, in one object.
fn with(base: &Value, more: Value) -> Value {
    let mut v = base.clone();
    if let (Value::Object(a), Value::Object(b)) = (&mut v, more) {
        a.extend(b);
    }
    v
}
