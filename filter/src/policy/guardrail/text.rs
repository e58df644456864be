//! The prompt text of a request, read from the schema the client speaks rather than
//! from raw JSON: every JSON string that is text a model reads, with where its
//! literal sits in the body, so that a masked text replaces exactly that literal and
//! every other byte of the body stays as the client sent it.
//!
//! On a guarded route only, the top-level members that carry text are found
//! ([`PromptSpans`]) and only those slices are read.
//!
//! - OpenAI chat and Anthropic messages: `messages[].content`, a string or parts;
//!   a part of type `text` gives its `text`, a `tool_result` block its `content`
//!   (a string or text blocks). Every role (system, developer, tool).
//! - Anthropic `system`: a string or text blocks.
//! - OpenAI completions' `prompt`, embeddings' and speech's `input`: a string or
//!   strings; image prompts (`prompt`).
//! - OpenAI Responses: `instructions`, and `input` as a string or items: a message's
//!   `content` (a string or `input_text`/`output_text` parts) and a function call's
//!   `output`.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::GatewayError;

/// Where the top-level members that carry prompt text are in the body.
#[derive(Clone, Debug, Default)]
pub(crate) struct PromptSpans {
    pub messages: Option<Range<usize>>,
    pub system: Option<Range<usize>>,
    pub prompt: Option<Range<usize>>,
    pub input: Option<Range<usize>>,
    pub instructions: Option<Range<usize>>,
}

/// The body's top-level members that carry prompt text, as raw slices.
#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default)]
    system: Option<&'a RawValue>,
    #[serde(borrow, default)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    instructions: Option<&'a RawValue>,
}

/// Where the members that carry prompt text are in the body.
pub(crate) fn spans(body: &[u8]) -> Result<PromptSpans, GatewayError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let top: Top = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            GatewayError::InvalidJson(inner.to_string())
        } else {
            GatewayError::InvalidField {
                field: path,
                reason: inner.to_string(),
            }
        }
    })?;
    let at = |raw: Option<&RawValue>| raw.and_then(|r| span_of(body, r));
    Ok(PromptSpans {
        messages: at(top.messages),
        system: at(top.system),
        prompt: at(top.prompt),
        input: at(top.input),
        instructions: at(top.instructions),
    })
}

/// Where `raw`, borrowed from `body`, sits in it.
pub(crate) fn span_of(body: &[u8], raw: &RawValue) -> Option<Range<usize>> {
    let start = (raw.get().as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start + raw.get().len();
    (end <= body.len()).then_some(start..end)
}

/// One string of prompt text: its literal's place in the body, and its text.
#[derive(Debug)]
pub(crate) struct TextField {
    pub span: Range<usize>,
    pub text: String,
    /// A policy masked it: the body must be written again.
    pub changed: bool,
}

#[derive(Deserialize)]
struct MessageView<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

/// A Responses API input item: a message's `content`, a function call's `output`.
#[derive(Deserialize)]
struct ItemView<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    output: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct PartView<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

/// Every text field the spans lead to, in body order.
pub(crate) fn read(body: &[u8], spans: &PromptSpans) -> Result<Vec<TextField>, GatewayError> {
    let mut out = Vec::new();
    if let Some(r) = &spans.messages {
        let slice = body.get(r.clone()).unwrap_or_default();
        let messages: Vec<MessageView> =
            serde_json::from_slice(slice).map_err(|e| invalid("messages", &e))?;
        for (i, m) in messages.iter().enumerate() {
            if let Some(c) = m.content {
                content(body, c, 0, &mut out)
                    .map_err(|e| invalid(&format!("messages[{i}].content"), &e))?;
            }
        }
    }
    if let Some(r) = &spans.system {
        let raw: &RawValue = parse_raw(body, r).map_err(|e| invalid("system", &e))?;
        content(body, raw, 0, &mut out).map_err(|e| invalid("system", &e))?;
    }
    for (field, r) in [
        ("prompt", &spans.prompt),
        ("input", &spans.input),
        ("instructions", &spans.instructions),
    ] {
        if let Some(r) = r {
            let raw = parse_raw(body, r).map_err(|e| invalid(field, &e))?;
            strings(body, raw, &mut out).map_err(|e| invalid(field, &e))?;
        }
    }
    out.sort_by_key(|f| f.span.start);
    Ok(out)
}

fn parse_raw<'a>(body: &'a [u8], r: &Range<usize>) -> serde_json::Result<&'a RawValue> {
    serde_json::from_slice(body.get(r.clone()).unwrap_or_default())
}

fn invalid(field: &str, e: &serde_json::Error) -> GatewayError {
    GatewayError::InvalidField {
        field: field.to_string(),
        reason: e.to_string(),
    }
}

fn first_byte(raw: &RawValue) -> u8 {
    raw.get().bytes().next().unwrap_or(b'n')
}

/// A `content` (or `system`): a string, `null`, or parts.
fn content(
    body: &[u8],
    raw: &RawValue,
    depth: u8,
    out: &mut Vec<TextField>,
) -> serde_json::Result<()> {
    match first_byte(raw) {
        b'"' => string(body, raw, out),
        b'n' => Ok(()),
        _ => {
            let parts: Vec<PartView> = serde_json::from_str(raw.get())?;
            for p in parts {
                match p.kind.as_deref() {
                    Some("text" | "input_text" | "output_text") => {
                        if let Some(t) = p.text.filter(|t| first_byte(t) == b'"') {
                            string(body, t, out)?;
                        }
                    }
                    // A tool's result holds text blocks, not further results.
                    Some("tool_result") if depth == 0 => {
                        if let Some(c) = p.content {
                            content(body, c, depth + 1, out)?;
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        }
    }
}

/// A string or a list of strings or Responses input items (token arrays are not
/// text and are skipped).
fn strings(body: &[u8], raw: &RawValue, out: &mut Vec<TextField>) -> serde_json::Result<()> {
    match first_byte(raw) {
        b'[' => {
            let items: Vec<&RawValue> = serde_json::from_str(raw.get())?;
            for item in items {
                match first_byte(item) {
                    b'"' => string(body, item, out)?,
                    b'{' => {
                        let i: ItemView = serde_json::from_str(item.get())?;
                        if let Some(c) = i.content {
                            content(body, c, 0, out)?;
                        }
                        if let Some(o) = i.output {
                            content(body, o, 0, out)?;
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        b'"' => string(body, raw, out),
        _ => Ok(()),
    }
}

fn string(body: &[u8], raw: &RawValue, out: &mut Vec<TextField>) -> serde_json::Result<()> {
    let text: String = serde_json::from_str(raw.get())?;
    // `raw` is borrowed from a slice of `body`; a view re-parsed from a copy would
    // have no place in it and is not rewritten.
    if let Some(span) = span_of(body, raw) {
        out.push(TextField {
            span,
            text,
            changed: false,
        });
    }
    Ok(())
}

/// The answer's members that carry generated text.
#[derive(Deserialize)]
struct AnswerTop<'a> {
    /// OpenAI chat (`message.content`) and completions (`text`).
    #[serde(borrow, default)]
    choices: Option<&'a RawValue>,
    /// Anthropic: text blocks.
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    /// OpenAI Responses: message items' `output_text` parts.
    #[serde(borrow, default)]
    output: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(borrow, default)]
    message: Option<MessageView<'a>>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

/// Every text field of an answer (chat, completions, Anthropic messages,
/// Responses), in body order. An answer that is no JSON object is an error: what
/// cannot be read cannot be let through a guardrail.
pub(crate) fn read_answer(body: &[u8]) -> serde_json::Result<Vec<TextField>> {
    let top: AnswerTop = serde_json::from_slice(body)?;
    let mut out = Vec::new();
    if let Some(choices) = top.choices.filter(|c| first_byte(c) == b'[') {
        let choices: Vec<ChoiceView> = serde_json::from_str(choices.get())?;
        for c in choices {
            if let Some(content_raw) = c.message.and_then(|m| m.content) {
                content(body, content_raw, 0, &mut out)?;
            }
            if let Some(t) = c.text.filter(|t| first_byte(t) == b'"') {
                string(body, t, &mut out)?;
            }
        }
    }
    if let Some(c) = top.content.filter(|c| first_byte(c) == b'[') {
        content(body, c, 0, &mut out)?;
    }
    if let Some(items) = top.output.filter(|o| first_byte(o) == b'[') {
        let items: Vec<ItemView> = serde_json::from_str(items.get())?;
        for i in items {
            if let Some(c) = i.content {
                content(body, c, 0, &mut out)?;
            }
        }
    }
    out.sort_by_key(|f| f.span.start);
    Ok(out)
}

/// `body` with each changed field's literal replaced by its new text's.
pub(crate) fn rewrite(body: &[u8], fields: &[TextField]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    for f in fields.iter().filter(|f| f.changed) {
        if f.span.start < at {
            continue; // fields never overlap; a bug must not corrupt the body
        }
        out.extend_from_slice(&body[at..f.span.start]);
        out.extend_from_slice(
            serde_json::Value::String(f.text.clone())
                .to_string()
                .as_bytes(),
        );
        at = f.span.end;
    }
    out.extend_from_slice(&body[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(body: &str) -> Vec<String> {
        read(body.as_bytes(), &spans(body.as_bytes()).unwrap())
            .unwrap()
            .into_iter()
            .map(|f| f.text)
            .collect()
    }

    #[test]
    fn responses_instructions_and_input_items() {
        let body = r#"{"model":"m","instructions":"be kind","input":[
            "plain",
            {"role":"user","content":"item text"},
            {"type":"message","role":"user","content":[{"type":"input_text","text":"part"},
                {"type":"input_image","image_url":"data:x"}]},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"said"}]},
            {"type":"function_call","call_id":"c","name":"f","arguments":"{}"},
            {"type":"function_call_output","call_id":"c","output":"tool out"}
        ]}"#;
        let mut got = texts(body);
        got.sort();
        assert_eq!(
            got,
            ["be kind", "item text", "part", "plain", "said", "tool out"]
        );
    }

    #[test]
    fn openai_chat_text_of_every_role_and_part() {
        let body = r#"{"model":"m","messages":[
            {"role":"system","content":"sys \"quoted\""},
            {"role":"developer","content":[{"type":"text","text":"dev"}]},
            {"role":"user","content":[{"type":"image_url","image_url":{"url":"data:x"}},{"type":"text","text":"user\u00e9"}]},
            {"role":"assistant","content":null,"tool_calls":[]},
            {"role":"tool","tool_call_id":"t","content":"tool out"}
        ],"user":"not text"}"#;
        assert_eq!(texts(body), ["sys \"quoted\"", "dev", "useré", "tool out"]);
    }

    #[test]
    fn anthropic_system_messages_and_tool_results() {
        let body = r#"{"system":[{"type":"text","text":"be kind"}],"messages":[
            {"role":"user","content":"hello"},
            {"role":"assistant","content":[{"type":"tool_use","id":"1","name":"f","input":{"q":"x"}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"1","content":[{"type":"text","text":"result"}]},
                                      {"type":"tool_result","tool_use_id":"2","content":"plain"}]}
        ],"model":"claude"}"#;
        assert_eq!(texts(body), ["be kind", "hello", "result", "plain"]);
        assert_eq!(texts(r#"{"system":"s","messages":[]}"#), ["s"]);
    }

    #[test]
    fn prompt_and_input_strings() {
        assert_eq!(texts(r#"{"prompt":["a","b",[1,2]]}"#), ["a", "b"]);
        assert_eq!(texts(r#"{"input":"x"}"#), ["x"]);
        assert_eq!(texts(r#"{"input":[[1,2]]}"#), Vec::<String>::new());
    }

    #[test]
    fn answer_text_of_every_schema() {
        let read = |b: &str| -> Vec<String> {
            read_answer(b.as_bytes())
                .unwrap()
                .into_iter()
                .map(|f| f.text)
                .collect()
        };
        let chat = r#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"one"}},
            {"index":1,"message":{"role":"assistant","content":null,"tool_calls":[]}}],"usage":{}}"#;
        assert_eq!(read(chat), ["one"]);
        assert_eq!(read(r#"{"choices":[{"text":"done"}]}"#), ["done"]);
        let anthropic = r#"{"type":"message","content":[{"type":"thinking","thinking":"hm"},
            {"type":"text","text":"hello"},{"type":"tool_use","id":"t","name":"f","input":{}}]}"#;
        assert_eq!(read(anthropic), ["hello"]);
        let responses = r#"{"object":"response","output":[{"type":"reasoning","summary":[]},
            {"type":"message","content":[{"type":"output_text","text":"hi","annotations":[]}]},
            {"type":"function_call","arguments":"{}"}]}"#;
        assert_eq!(read(responses), ["hi"]);
        assert!(read_answer(b"not json").is_err());
    }

    #[test]
    fn a_content_that_is_no_content_is_refused() {
        let body = br#"{"messages":[{"role":"user","content":5}]}"#;
        let e = read(body, &spans(body).unwrap()).unwrap_err();
        assert!(
            matches!(&e, GatewayError::InvalidField { field, .. } if field == "messages[0].content"),
            "{e:?}"
        );
    }

    #[test]
    fn rewrite_replaces_only_the_changed_literals_and_stays_json() {
        let body = br#"{"a":1.50,"messages":[{"role":"user","content":"mail me: x@y.com"},{"role":"user","content":[{"type":"text","text":"keep\n"}]}],"z":"\u0041"}"#;
        let mut fields = read(body, &spans(body).unwrap()).unwrap();
        fields[0].text = "mail me: [EMAIL] \"\\ \u{1}".into();
        fields[0].changed = true;
        let out = rewrite(body, &fields);
        let s = String::from_utf8(out.clone()).unwrap();
        // Untouched bytes stay as they were (numbers, escapes).
        assert!(s.starts_with(r#"{"a":1.50,"messages""#), "{s}");
        assert!(s.ends_with(r#""z":"\u0041"}"#), "{s}");
        assert!(s.contains(r#""text":"keep\n""#), "{s}");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["messages"][0]["content"], "mail me: [EMAIL] \"\\ \u{1}");
    }
}
