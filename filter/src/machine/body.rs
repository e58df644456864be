//! Request bodies as the machines buffer and replace them, and a header map seen
//! through a call's own edits.

use crate::config::Config;
use crate::error::GatewayError;
use crate::host::{Action, Headers};

/// Checks the announced size of a request body and starts buffering it.
pub(crate) fn begin_body(
    config: &Config,
    headers: &dyn Headers,
    body: &mut Vec<u8>,
    out: &mut Vec<Action>,
) -> Result<(), GatewayError> {
    let limit = config.limits.max_request_body_bytes;
    if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        if len > limit {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        body.reserve(len as usize);
    }
    out.push(Action::SetBufferLimit(limit));
    Ok(())
}

/// Adds a chunk to the buffered request body: the whole body once it is complete,
/// `None` while more is coming, an error (and nothing kept) past the limit.
pub(crate) fn buffer_body(
    config: &Config,
    body: &mut Vec<u8>,
    chunk: &[u8],
    end_of_stream: bool,
) -> Result<Option<Vec<u8>>, GatewayError> {
    let limit = config.limits.max_request_body_bytes;
    if (body.len() + chunk.len()) as u64 > limit {
        *body = Vec::new();
        return Err(GatewayError::BodyTooLarge { limit });
    }
    body.extend_from_slice(chunk);
    Ok(end_of_stream.then(|| std::mem::take(body)))
}

pub(crate) fn replace_request_body(body: Vec<u8>, out: &mut Vec<Action>) {
    out.push(Action::SetHeader {
        name: "content-length".into(),
        value: body.len().to_string(),
    });
    out.push(Action::ReplaceBody(body));
}

/// The headers of a whole JSON answer that replaces the provider's while its
/// headers are still held: the new status (`None`: unchanged), its type, no
/// encoding, its length. The caller puts the bytes in place.
pub(crate) fn json_answer_headers(status: Option<u16>, len: usize, out: &mut Vec<Action>) {
    if let Some(status) = status {
        out.push(Action::SetHeader {
            name: ":status".into(),
            value: status.to_string(),
        });
    }
    out.push(Action::SetHeader {
        name: "content-type".into(),
        value: "application/json".into(),
    });
    out.push(Action::RemoveHeader {
        name: "content-encoding".into(),
    });
    out.push(Action::SetHeader {
        name: "content-length".into(),
        value: len.to_string(),
    });
}

/// A header map with a call's header edits applied, as the next filter will see it.
pub(crate) struct Edited<'a> {
    pub base: &'a dyn Headers,
    pub edits: &'a [Action],
}

impl Headers for Edited<'_> {
    fn get(&self, name: &str) -> Option<String> {
        for a in self.edits.iter().rev() {
            match a {
                Action::SetHeader { name: n, value } if n.eq_ignore_ascii_case(name) => {
                    return Some(value.clone())
                }
                Action::RemoveHeader { name: n } if n.eq_ignore_ascii_case(name) => return None,
                _ => {}
            }
        }
        self.base.get(name)
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        let mut edited: Vec<&str> = Vec::new();
        for a in self.edits {
            if let Action::SetHeader { name, .. } | Action::RemoveHeader { name } = a {
                if !edited.iter().any(|e| e.eq_ignore_ascii_case(name)) {
                    edited.push(name);
                }
            }
        }
        self.base.for_each(&mut |n, v| {
            if !edited.iter().any(|e| e.eq_ignore_ascii_case(n)) {
                f(n, v)
            }
        });
        for name in edited {
            if let Some(v) = self.get(name) {
                f(name, &v);
            }
        }
    }
}
