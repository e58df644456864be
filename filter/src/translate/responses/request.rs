//! A Responses API request as a hub chat request, for backends that do not speak
//! the Responses API. Stateless only: anything that needs OpenAI's stored responses
//! or its built-in tools is refused with a 422 that says why.

use serde_json::{json, Map, Value};

use crate::schema::openai::ChatCompletionRequest;
use crate::translate::plan::read_json;
use crate::translate::TranslateError;

/// Converts the client's body to the hub; `model` is the one the backend gets.
pub fn client_request(body: &[u8], model: &str) -> Result<ChatCompletionRequest, TranslateError> {
    let doc: Map<String, Value> = read_json(body)?;
    for (field, why) in [
        (
            "previous_response_id",
            "continuing a stored response needs OpenAI's own storage: send the whole conversation in `input`",
        ),
        (
            "conversation",
            "conversations are stored by OpenAI: send the whole conversation in `input`",
        ),
        ("prompt", "prompt templates are stored by OpenAI"),
    ] {
        if doc.get(field).is_some_and(|v| !v.is_null()) {
            return Err(TranslateError::unsupported(field, why));
        }
    }
    for (field, why) in [
        (
            "store",
            "this backend keeps no responses: send `store: false` or leave it out",
        ),
        ("background", "background responses are run by OpenAI only"),
    ] {
        if doc.get(field) == Some(&Value::Bool(true)) {
            return Err(TranslateError::unsupported(field, why));
        }
    }

    let mut messages = Vec::new();
    if let Some(i) = doc.get("instructions").filter(|v| !v.is_null()) {
        let Some(text) = i.as_str() else {
            return Err(TranslateError::invalid("instructions", "must be a string"));
        };
        messages.push(json!({"role": "system", "content": text}));
    }
    match doc.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut messages)?;
            }
        }
        _ => {
            return Err(TranslateError::invalid(
                "input",
                "a string or an array of input items is required",
            ))
        }
    }

    let mut hub = Map::new();
    hub.insert("model".into(), Value::String(model.to_string()));
    hub.insert("messages".into(), Value::Array(messages));
    if let Some(n) = doc.get("max_output_tokens").filter(|v| !v.is_null()) {
        hub.insert("max_completion_tokens".into(), n.clone());
    }
    for key in ["temperature", "top_p", "parallel_tool_calls", "user"] {
        if let Some(v) = doc.get(key).filter(|v| !v.is_null()) {
            hub.insert(key.into(), v.clone());
        }
    }
    if let Some(effort) = doc.get("reasoning").and_then(|r| r.get("effort")) {
        if !effort.is_null() {
            hub.insert("reasoning_effort".into(), effort.clone());
        }
    }
    if let Some(tools) = doc.get("tools").and_then(Value::as_array) {
        let tools = tools
            .iter()
            .enumerate()
            .map(|(i, t)| tool(t, i))
            .collect::<Result<Vec<_>, _>>()?;
        if !tools.is_empty() {
            hub.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = doc.get("tool_choice").filter(|v| !v.is_null()) {
        hub.insert("tool_choice".into(), tool_choice(choice)?);
    }
    if let Some(format) = doc.get("text").and_then(|t| t.get("format")) {
        if let Some(f) = response_format(format)? {
            hub.insert("response_format".into(), f);
        }
    }
    if doc.get("stream") == Some(&Value::Bool(true)) {
        hub.insert("stream".into(), Value::Bool(true));
        // The last event carries usage: the hub must have it to write it.
        hub.insert("stream_options".into(), json!({"include_usage": true}));
    }
    serde_json::from_value(Value::Object(hub))
        .map_err(|e| TranslateError::invalid("input", e.to_string()))
}

/// One item of `input`, appended to the hub's messages.
fn input_item(item: &Value, i: usize, messages: &mut Vec<Value>) -> Result<(), TranslateError> {
    let at = |field: &str| format!("input[{i}].{field}");
    let kind = item.get("type").and_then(Value::as_str);
    match kind {
        None | Some("message") => {
            let role = item.get("role").and_then(Value::as_str).unwrap_or("");
            if !matches!(role, "user" | "assistant" | "system" | "developer") {
                return Err(TranslateError::invalid(
                    at("role"),
                    "must be user, assistant, system or developer",
                ));
            }
            let content = match item.get("content") {
                Some(Value::String(s)) => Value::String(s.clone()),
                Some(Value::Array(parts)) => content_parts(parts, role, &at("content"))?,
                _ => {
                    return Err(TranslateError::invalid(
                        at("content"),
                        "a string or an array of content parts is required",
                    ))
                }
            };
            messages.push(json!({"role": role, "content": content}));
        }
        Some("function_call") => {
            let (Some(call_id), Some(name)) = (
                item.get("call_id").and_then(Value::as_str),
                item.get("name").and_then(Value::as_str),
            ) else {
                return Err(TranslateError::invalid(
                    at("call_id"),
                    "a function call needs call_id and name",
                ));
            };
            let arguments = item
                .get("arguments")
                .and_then(Value::as_str)
                .unwrap_or("{}");
            let call = json!({"id": call_id, "type": "function",
                "function": {"name": name, "arguments": arguments}});
            // Calls of one turn belong to one assistant message, after its text.
            match messages.last_mut() {
                Some(last) if last["role"] == "assistant" => match last.get_mut("tool_calls") {
                    Some(Value::Array(calls)) => calls.push(call),
                    _ => {
                        last["tool_calls"] = json!([call]);
                    }
                },
                _ => messages
                    .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        Some("function_call_output") => {
            let Some(call_id) = item.get("call_id").and_then(Value::as_str) else {
                return Err(TranslateError::invalid(at("call_id"), "is required"));
            };
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => text_of(parts),
                _ => String::new(),
            };
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        // Reasoning of an earlier turn is the backend's own business; a stateless
        // backend cannot take another's encrypted reasoning.
        Some("reasoning") => {}
        Some("item_reference") => {
            return Err(TranslateError::unsupported(
                at("type"),
                "item references name stored items: send the items themselves",
            ))
        }
        Some(other) => {
            return Err(TranslateError::unsupported(
                at("type"),
                format!("input items of type {other} are served by OpenAI only"),
            ))
        }
    }
    Ok(())
}

/// Content parts as the hub's: text and images for user turns, one string for the
/// others (the hub's assistant and system turns are text).
fn content_parts(parts: &[Value], role: &str, at: &str) -> Result<Value, TranslateError> {
    if role != "user" {
        return Ok(Value::String(text_of(parts)));
    }
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        match p.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text") => {
                out.push(
                    json!({"type": "text", "text": p.get("text").cloned().unwrap_or_default()}),
                );
            }
            Some("input_image") => {
                let Some(url) = p.get("image_url").and_then(Value::as_str) else {
                    return Err(TranslateError::unsupported(
                        format!("{at}[{j}].file_id"),
                        "images by file id are stored by OpenAI: send image_url (a data URL or an http URL)",
                    ));
                };
                let mut image = json!({"url": url});
                if let Some(d) = p.get("detail").filter(|d| !d.is_null()) {
                    image["detail"] = d.clone();
                }
                out.push(json!({"type": "image_url", "image_url": image}));
            }
            other => {
                return Err(TranslateError::unsupported(
                    format!("{at}[{j}].type"),
                    format!(
                        "content parts of type {} are served by OpenAI only",
                        other.unwrap_or("(none)")
                    ),
                ))
            }
        }
    }
    Ok(Value::Array(out))
}

/// The text of content parts, joined.
fn text_of(parts: &[Value]) -> String {
    parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("")
}

fn tool(t: &Value, i: usize) -> Result<Value, TranslateError> {
    match t.get("type").and_then(Value::as_str) {
        Some("function") => {
            let Some(name) = t.get("name").and_then(Value::as_str) else {
                return Err(TranslateError::invalid(
                    format!("tools[{i}].name"),
                    "is required",
                ));
            };
            let mut function = json!({"name": name});
            for key in ["description", "parameters", "strict"] {
                if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
                    function[key] = v.clone();
                }
            }
            Ok(json!({"type": "function", "function": function}))
        }
        other => Err(TranslateError::unsupported(
            format!("tools[{i}].type"),
            format!(
                "built-in tools ({}) are run by OpenAI only; function tools work with every backend",
                other.unwrap_or("(none)")
            ),
        )),
    }
}

fn tool_choice(choice: &Value) -> Result<Value, TranslateError> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Ok(choice.clone())
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            match o.get("name").and_then(Value::as_str) {
                Some(name) => Ok(json!({"type": "function", "function": {"name": name}})),
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
fn response_format(format: &Value) -> Result<Option<Value>, TranslateError> {
    match format.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for key in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.into(), v.clone());
                }
            }
            if !schema.contains_key("name") {
                return Err(TranslateError::invalid("text.format.name", "is required"));
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        Some(_) => Err(TranslateError::invalid(
            "text.format.type",
            "must be text, json_object or json_schema",
        )),
    }
}
