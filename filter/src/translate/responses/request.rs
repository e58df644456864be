//! A Responses API request as a hub chat request, for backends that do not speak
//! the Responses API. Stateless only: anything that needs OpenAI's stored responses
//! or its built-in tools is refused with a 422 that says why.
//!
//! The body is read once into [`Request`], whose strings borrow from it (the text
//! of the conversation is most of its bytes), and the hub request is built from
//! that: no intermediate JSON tree. Fields are read as leniently as a JSON tree
//! would be (`Value::get`, `as_str`): a member of another type counts as absent where
//! the hub would not see it, and a duplicate member's last value wins. The errors are
//! the ones a hub request read from such a tree would give, in the same order.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    value::{MapAccessDeserializer, SeqAccessDeserializer},
    Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::{Map, Value};

use crate::schema::openai::{
    ChatCompletionRequest, ChatMessage, ContentPart, FunctionCall, FunctionDef, ImageUrl,
    MessageContent, NamedFunction, NamedToolChoice, ResponseFormat, Rest, Role, StreamOptions,
    Tool, ToolCall, ToolChoice,
};
use crate::translate::plan::read_json;
use crate::translate::TranslateError;

/// Converts the client's body to the hub; `model` is the one the backend gets.
pub fn client_request(body: &[u8], model: &str) -> Result<ChatCompletionRequest, TranslateError> {
    let doc = parse(body)?;
    for (sent, field, why) in [
        (
            doc.previous_response_id,
            "previous_response_id",
            "continuing a stored response needs OpenAI's own storage: send the whole conversation in `input`",
        ),
        (
            doc.conversation,
            "conversation",
            "conversations are stored by OpenAI: send the whole conversation in `input`",
        ),
        (doc.prompt, "prompt", "prompt templates are stored by OpenAI"),
        (
            doc.store,
            "store",
            "this backend keeps no responses: send `store: false` or leave it out",
        ),
        (
            doc.background,
            "background",
            "background responses are run by OpenAI only",
        ),
    ] {
        if sent {
            return Err(TranslateError::unsupported(field, why));
        }
    }

    // The first error reading the hub from a JSON tree would have given (a value of
    // the wrong type where the hub has a type): reported only when the request has
    // nothing worse, as that reading came last.
    let mut late = Late::default();
    let mut messages = Vec::new();
    match doc.instructions {
        Any::Null => {}
        Any::Str(text) => messages.push(message(Role::System, text.into_owned())),
        Any::Other(_) => return Err(TranslateError::invalid("instructions", "must be a string")),
    }
    match doc.input {
        Input::Text(s) => messages.push(message(Role::User, s.into_owned())),
        Input::Items(items) => {
            for (i, item) in items.into_iter().enumerate() {
                input_item(item, i, &mut messages, &mut late)?;
            }
        }
        Input::Other => {
            return Err(TranslateError::invalid(
                "input",
                "a string or an array of input items is required",
            ))
        }
    }

    let mut hub = ChatCompletionRequest {
        model: model.to_string(),
        ..Default::default()
    };
    hub.max_completion_tokens = late.read(doc.max_output_tokens);
    hub.temperature = late.read(doc.temperature);
    hub.top_p = late.read(doc.top_p);
    for (key, v) in [
        ("parallel_tool_calls", doc.parallel_tool_calls),
        ("user", doc.user),
    ] {
        if !v.is_null() {
            hub.rest.insert(key.into(), v);
        }
    }
    if let Value::Object(mut r) = doc.reasoning {
        if let Some(effort) = r.remove("effort").filter(|e| !e.is_null()) {
            hub.rest.insert("reasoning_effort".into(), effort);
        }
    }
    if let Value::Array(tools) = doc.tools {
        let tools = tools
            .into_iter()
            .enumerate()
            .map(|(i, t)| tool(t, i, &mut late))
            .collect::<Result<Vec<_>, _>>()?;
        if !tools.is_empty() {
            hub.tools = Some(tools);
        }
    }
    if !doc.tool_choice.is_null() {
        hub.tool_choice = Some(tool_choice(doc.tool_choice)?);
    }
    if let Some(format) = doc.text.get("format") {
        hub.response_format = response_format(format)?;
    }
    if doc.stream {
        hub.stream = Some(true);
        // The last event carries usage: the hub must have it to write it.
        hub.stream_options = Some(StreamOptions {
            include_usage: Some(true),
            rest: Rest::new(),
        });
    }
    if let Some(e) = late.0 {
        return Err(TranslateError::invalid("input", e));
    }
    hub.messages = messages;
    Ok(hub)
}

/// The body read, or the error reading it as a JSON object gives.
fn parse(body: &[u8]) -> Result<Request<'_>, TranslateError> {
    // Checked whole first, as a JSON tree's strings would be (and ignored members
    // are not): then strings need no checking one by one.
    let read = std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_json::from_str::<Request<'_>>(text).ok());
    match read {
        Some(doc) => Ok(doc),
        // Only a body that is no JSON object fails here: its error, field path
        // included, is the one a JSON tree gives.
        None => Err(match read_json::<Map<String, Value>>(body) {
            Err(e) => e,
            Ok(_) => TranslateError::invalid("body", "expected a JSON object"),
        }),
    }
}

/// The first error of reading the hub, in the order its fields are read.
#[derive(Default)]
struct Late(Option<String>);

impl Late {
    /// A typed hub field from the client's value (`null`: absent).
    fn read<T: serde::de::DeserializeOwned>(&mut self, v: Value) -> Option<T> {
        if v.is_null() {
            return None;
        }
        match serde_json::from_value(v) {
            Ok(t) => Some(t),
            Err(e) => {
                self.note(e.to_string());
                None
            }
        }
    }

    fn note(&mut self, e: impl Into<String>) {
        if self.0.is_none() {
            self.0 = Some(e.into());
        }
    }
}

fn message(role: Role, text: String) -> ChatMessage {
    ChatMessage {
        role,
        content: Some(MessageContent::Text(text)),
        name: None,
        tool_calls: None,
        tool_call_id: None,
        rest: Rest::new(),
    }
}

fn at(i: usize, field: &str) -> String {
    format!("input[{i}].{field}")
}

/// One item of `input`, appended to the hub's messages.
fn input_item(
    item: Item<'_>,
    i: usize,
    messages: &mut Vec<ChatMessage>,
    late: &mut Late,
) -> Result<(), TranslateError> {
    match item.kind.as_str() {
        None | Some("message") => {
            let role = match item.role.as_str().unwrap_or("") {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "system" => Role::System,
                "developer" => Role::Developer,
                _ => {
                    return Err(TranslateError::invalid(
                        at(i, "role"),
                        "must be user, assistant, system or developer",
                    ))
                }
            };
            let content = match item.content {
                Content::Text(s) => MessageContent::Text(s.into_owned()),
                Content::Parts(parts) => content_parts(parts, role, i, late)?,
                Content::Other => {
                    return Err(TranslateError::invalid(
                        at(i, "content"),
                        "a string or an array of content parts is required",
                    ))
                }
            };
            messages.push(ChatMessage {
                content: Some(content),
                ..message(role, String::new())
            });
        }
        Some("function_call") => {
            let (Some(call_id), Some(name)) = (item.call_id.as_str(), item.name.as_str()) else {
                return Err(TranslateError::invalid(
                    at(i, "call_id"),
                    "a function call needs call_id and name",
                ));
            };
            let call = ToolCall {
                id: call_id.to_string(),
                kind: "function".into(),
                function: FunctionCall {
                    name: name.to_string(),
                    arguments: item.arguments.as_str().unwrap_or("{}").to_string(),
                    rest: Rest::new(),
                },
                rest: Rest::new(),
            };
            // Calls of one turn belong to one assistant message, after its text.
            match messages.last_mut() {
                Some(last) if last.role == Role::Assistant => {
                    last.tool_calls.get_or_insert_with(Vec::new).push(call);
                }
                _ => messages.push(ChatMessage {
                    content: None,
                    tool_calls: Some(vec![call]),
                    ..message(Role::Assistant, String::new())
                }),
            }
        }
        Some("function_call_output") => {
            let Some(call_id) = item.call_id.as_str() else {
                return Err(TranslateError::invalid(at(i, "call_id"), "is required"));
            };
            let output = match &item.output {
                Content::Text(s) => s.to_string(),
                Content::Parts(parts) => text_of(parts),
                Content::Other => String::new(),
            };
            messages.push(ChatMessage {
                tool_call_id: Some(call_id.to_string()),
                ..message(Role::Tool, output)
            });
        }
        // Reasoning of an earlier turn is the backend's own business; a stateless
        // backend cannot take another's encrypted reasoning.
        Some("reasoning") => {}
        Some("item_reference") => {
            return Err(TranslateError::unsupported(
                at(i, "type"),
                "item references name stored items: send the items themselves",
            ))
        }
        Some(other) => {
            return Err(TranslateError::unsupported(
                at(i, "type"),
                format!("input items of type {other} are served by OpenAI only"),
            ))
        }
    }
    Ok(())
}

/// Content parts as the hub's: text and images for user turns, one string for the
/// others (the hub's assistant and system turns are text).
fn content_parts(
    parts: Vec<Part<'_>>,
    role: Role,
    i: usize,
    late: &mut Late,
) -> Result<MessageContent, TranslateError> {
    if role != Role::User {
        return Ok(MessageContent::Text(text_of(&parts)));
    }
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.into_iter().enumerate() {
        match p.kind.as_str() {
            Some("input_text" | "output_text") => {
                let text = match p.text {
                    Any::Null => None,
                    Any::Str(s) => Some(s.into_owned()),
                    // The hub's part text is a string: its content is neither form.
                    Any::Other(_) => {
                        late.note("data did not match any variant of untagged enum MessageContent");
                        None
                    }
                };
                out.push(ContentPart {
                    kind: "text".into(),
                    text,
                    image_url: None,
                    rest: Rest::new(),
                });
            }
            Some("input_image") => {
                let Some(url) = p.image_url.as_str() else {
                    return Err(TranslateError::unsupported(
                        format!("input[{i}].content[{j}].file_id"),
                        "images by file id are stored by OpenAI: send image_url (a data URL or an http URL)",
                    ));
                };
                let mut rest = Rest::new();
                if !p.detail.is_null() {
                    rest.insert("detail".into(), p.detail.into_value());
                }
                out.push(ContentPart {
                    kind: "image_url".into(),
                    text: None,
                    image_url: Some(ImageUrl {
                        url: url.to_string(),
                        rest,
                    }),
                    rest: Rest::new(),
                });
            }
            other => {
                return Err(TranslateError::unsupported(
                    format!("input[{i}].content[{j}].type"),
                    format!(
                        "content parts of type {} are served by OpenAI only",
                        other.unwrap_or("(none)")
                    ),
                ))
            }
        }
    }
    Ok(MessageContent::Parts(out))
}

/// The text of content parts, joined.
fn text_of(parts: &[Part<'_>]) -> String {
    let mut text = String::new();
    for s in parts.iter().filter_map(|p| p.text.as_str()) {
        text.push_str(s);
    }
    text
}

fn tool(t: Value, i: usize, late: &mut Late) -> Result<Tool, TranslateError> {
    let Value::Object(mut t) = t else {
        return Err(built_in(i, None));
    };
    match t.get("type").and_then(Value::as_str) {
        Some("function") => {}
        other => return Err(built_in(i, other)),
    }
    let Some(Value::String(name)) = t.remove("name") else {
        return Err(TranslateError::invalid(
            format!("tools[{i}].name"),
            "is required",
        ));
    };
    let mut take = |key: &str| t.remove(key).unwrap_or(Value::Null);
    let description = late.read(take("description"));
    let parameters = Some(take("parameters")).filter(|v| !v.is_null());
    let mut rest = Rest::new();
    if let Some(strict) = Some(take("strict")).filter(|v| !v.is_null()) {
        rest.insert("strict".into(), strict);
    }
    Ok(Tool {
        kind: "function".into(),
        function: Some(FunctionDef {
            name,
            description,
            parameters,
            rest,
        }),
        rest: Rest::new(),
    })
}

fn built_in(i: usize, kind: Option<&str>) -> TranslateError {
    TranslateError::unsupported(
        format!("tools[{i}].type"),
        format!(
            "built-in tools ({}) are run by OpenAI only; function tools work with every backend",
            kind.unwrap_or("(none)")
        ),
    )
}

fn tool_choice(choice: Value) -> Result<ToolChoice, TranslateError> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Ok(ToolChoice::Mode(s))
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            match o.get("name").and_then(Value::as_str) {
                Some(name) => Ok(ToolChoice::Named(NamedToolChoice {
                    kind: "function".into(),
                    function: NamedFunction {
                        name: name.to_string(),
                    },
                    rest: Rest::new(),
                })),
                None => Err(TranslateError::invalid("tool_choice.name", "is required")),
            }
        }
        _ => Err(TranslateError::unsupported(
            "tool_choice",
            "only auto, none, required and a function by name work with this backend",
        )),
    }
}

/// `text.format` as the hub's `response_format` (`None`: plain text).
fn response_format(format: &Value) -> Result<Option<ResponseFormat>, TranslateError> {
    let kind = match format.get("type").and_then(Value::as_str) {
        None | Some("text") => return Ok(None),
        Some(k @ ("json_object" | "json_schema")) => k,
        Some(_) => {
            return Err(TranslateError::invalid(
                "text.format.type",
                "must be text, json_object or json_schema",
            ))
        }
    };
    let mut rest = Rest::new();
    if kind == "json_schema" {
        let mut schema = Map::new();
        for key in ["name", "schema", "strict", "description"] {
            if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                schema.insert(key.into(), v.clone());
            }
        }
        if !schema.contains_key("name") {
            return Err(TranslateError::invalid("text.format.name", "is required"));
        }
        rest.insert("json_schema".into(), Value::Object(schema));
    }
    Ok(Some(ResponseFormat {
        kind: kind.into(),
        rest,
    }))
}

// ---------------------------------------------------------------------------------
// The request as read: only the members translated, strings borrowed from the body.

/// The members of a Responses request the translation reads; the others are skipped.
#[derive(Default)]
struct Request<'a> {
    /// Sent and not `null`.
    previous_response_id: bool,
    conversation: bool,
    prompt: bool,
    /// Sent as `true`.
    store: bool,
    background: bool,
    stream: bool,
    instructions: Any<'a>,
    input: Input<'a>,
    // Small members the hub takes as they are (`null`: absent).
    max_output_tokens: Value,
    temperature: Value,
    top_p: Value,
    parallel_tool_calls: Value,
    user: Value,
    reasoning: Value,
    tools: Value,
    tool_choice: Value,
    text: Value,
}

impl<'de> Object<'de> for Request<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        let non_null = |map: &mut A| Ok(map.next_value::<Option<IgnoredAny>>()?.is_some());
        let is_true = |map: &mut A| Ok(matches!(map.next_value()?, Any::Other(Value::Bool(true))));
        match key {
            "previous_response_id" => self.previous_response_id = non_null(map)?,
            "conversation" => self.conversation = non_null(map)?,
            "prompt" => self.prompt = non_null(map)?,
            "store" => self.store = is_true(map)?,
            "background" => self.background = is_true(map)?,
            "stream" => self.stream = is_true(map)?,
            "instructions" => self.instructions = map.next_value()?,
            "input" => self.input = map.next_value()?,
            "max_output_tokens" => self.max_output_tokens = map.next_value()?,
            "temperature" => self.temperature = map.next_value()?,
            "top_p" => self.top_p = map.next_value()?,
            "parallel_tool_calls" => self.parallel_tool_calls = map.next_value()?,
            "user" => self.user = map.next_value()?,
            "reasoning" => self.reasoning = map.next_value()?,
            "tools" => self.tools = map.next_value()?,
            "tool_choice" => self.tool_choice = map.next_value()?,
            "text" => self.text = map.next_value()?,
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Request<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor(PhantomData))
    }
}

/// `input`: a string, items, or anything else (refused).
#[derive(Default)]
enum Input<'a> {
    Text(Cow<'a, str>),
    Items(Vec<Item<'a>>),
    #[default]
    Other,
}

/// One input item; anything but an object reads as an empty one.
#[derive(Default)]
struct Item<'a> {
    kind: Any<'a>,
    role: Any<'a>,
    content: Content<'a>,
    call_id: Any<'a>,
    name: Any<'a>,
    arguments: Any<'a>,
    output: Content<'a>,
}

impl<'de> Object<'de> for Item<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "type" => self.kind = map.next_value()?,
            "role" => self.role = map.next_value()?,
            "content" => self.content = map.next_value()?,
            "call_id" => self.call_id = map.next_value()?,
            "name" => self.name = map.next_value()?,
            "arguments" => self.arguments = map.next_value()?,
            "output" => self.output = map.next_value()?,
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A message's `content` or a call's `output`: a string, parts, or anything else.
#[derive(Default)]
enum Content<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<Part<'a>>),
    #[default]
    Other,
}

/// One content part; anything but an object reads as an empty one.
#[derive(Default)]
struct Part<'a> {
    kind: Any<'a>,
    text: Any<'a>,
    image_url: Any<'a>,
    detail: Any<'a>,
}

impl<'de> Object<'de> for Part<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "type" => self.kind = map.next_value()?,
            "text" => self.text = map.next_value()?,
            "image_url" => self.image_url = map.next_value()?,
            "detail" => self.detail = map.next_value()?,
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// Any JSON value: `null`, a string (borrowed when it has no escapes), or another
/// value as a tree.
#[derive(Default)]
enum Any<'a> {
    #[default]
    Null,
    Str(Cow<'a, str>),
    Other(Value),
}

impl Any<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Any::Str(s) => Some(s),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Any::Null)
    }

    fn into_value(self) -> Value {
        match self {
            Any::Null => Value::Null,
            Any::Str(s) => Value::String(s.into_owned()),
            Any::Other(v) => v,
        }
    }
}

/// Members of a JSON object, read one by one; a later duplicate replaces an earlier
/// one.
trait Object<'de>: Default {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

/// An object member's name, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Reads any JSON value into `T`: an object member by member, anything else (skipped)
/// as an empty object, as `Value::get` sees it.
struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Object<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut t = T::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            t.member(&key.0, &mut map)?;
        }
        Ok(t)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::default())
    }
    fn visit_bool<E>(self, _: bool) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::default())
    }
}

impl<'de> Deserialize<'de> for Item<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectVisitor(PhantomData))
    }
}

impl<'de> Deserialize<'de> for Part<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectVisitor(PhantomData))
    }
}

/// What [`Input`] and [`Content`] are made of: a string, a list of `T`, or anything
/// else (skipped).
enum TextOr<'a, T> {
    Text(Cow<'a, str>),
    List(Vec<T>),
    Other,
}

struct TextOrVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for TextOrVisitor<T> {
    type Value = TextOr<'de, T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(TextOr::Text(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(TextOr::Text(Cow::Owned(s.to_string())))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(TextOr::Text(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(t) = seq.next_element()? {
            list.push(t);
        }
        Ok(TextOr::List(list))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(TextOr::Other)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(TextOr::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(TextOr::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(TextOr::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(TextOr::Other)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(TextOr::Other)
    }
}

impl<'de> Deserialize<'de> for Input<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match d.deserialize_any(TextOrVisitor(PhantomData))? {
            TextOr::Text(s) => Input::Text(s),
            TextOr::List(items) => Input::Items(items),
            TextOr::Other => Input::Other,
        })
    }
}

impl<'de> Deserialize<'de> for Content<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match d.deserialize_any(TextOrVisitor(PhantomData))? {
            TextOr::Text(s) => Content::Text(s),
            TextOr::List(parts) => Content::Parts(parts),
            TextOr::Other => Content::Other,
        })
    }
}

impl<'de> Deserialize<'de> for Any<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Any<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Any<'de>, E> {
                Ok(Any::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Any<'de>, E> {
                Ok(Any::Str(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Any<'de>, E> {
                Ok(Any::Str(Cow::Owned(s)))
            }
            fn visit_unit<E>(self) -> Result<Any<'de>, E> {
                Ok(Any::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Any<'de>, E> {
                Ok(Any::Other(Value::Bool(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Any<'de>, E> {
                Ok(Any::Other(Value::from(n)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Any<'de>, E> {
                Ok(Any::Other(Value::from(n)))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Any<'de>, E> {
                Ok(Any::Other(Value::from(n)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Any<'de>, A::Error> {
                Value::deserialize(SeqAccessDeserializer::new(seq)).map(Any::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Any<'de>, A::Error> {
                Value::deserialize(MapAccessDeserializer::new(map)).map(Any::Other)
            }
        }
        d.deserialize_any(V)
    }
}
