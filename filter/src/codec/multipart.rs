//! `multipart/form-data` bodies (audio and image uploads): the few text fields the
//! gateway routes on (`model`, `stream`), read and rewritten in place; file parts
//! are never copied or looked into.
//!
//! The boundary is taken from the body's first line (clients send no preamble), so
//! the reader needs no header; a body that does not start with `--` is not one.

use memchr::memmem;

/// A form's parts, in order.
#[derive(Debug)]
pub struct Form<'a> {
    body: &'a [u8],
    parts: Vec<Part>,
}

/// One part: where its value is in the body, and its field name.
#[derive(Debug)]
struct Part {
    name: String,
    /// Byte range of the value.
    value: (usize, usize),
    is_file: bool,
}

impl<'a> Form<'a> {
    /// Reads the parts of `body`; `None` if it is not a well-formed form.
    pub fn parse(body: &'a [u8]) -> Option<Form<'a>> {
        let first_line_end = memmem::find(body, b"\r\n")?;
        let boundary = body.get(..first_line_end)?.strip_prefix(b"--")?;
        if boundary.is_empty() || boundary.len() > 200 {
            return None;
        }
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary);
        let finder = memmem::Finder::new(&delimiter);
        let mut parts = Vec::new();
        // Just after the first boundary line.
        let mut at = first_line_end + 2;
        loop {
            let headers_end = at + memmem::find(body.get(at..)?, b"\r\n\r\n")?;
            let headers = std::str::from_utf8(&body[at..headers_end]).ok()?;
            let value_start = headers_end + 4;
            let value_end = value_start + finder.find(body.get(value_start..)?)?;
            let (name, is_file) = disposition(headers)?;
            parts.push(Part {
                name,
                value: (value_start, value_end),
                is_file,
            });
            let after = value_end + delimiter.len();
            match body.get(after..after + 2)? {
                b"--" => break,
                b"\r\n" => at = after + 2,
                _ => return None,
            }
        }
        Some(Form { body, parts })
    }

    /// The value of the first text field `name`.
    pub fn text(&self, name: &str) -> Option<&'a str> {
        let body: &'a [u8] = self.body;
        self.parts
            .iter()
            .find(|p| !p.is_file && p.name == name)
            .and_then(|p| std::str::from_utf8(&body[p.value.0..p.value.1]).ok())
    }

    /// The body with text field `name`'s value replaced (`None`: no such field).
    pub fn with_text(&self, name: &str, value: &str) -> Option<Vec<u8>> {
        let p = self.parts.iter().find(|p| !p.is_file && p.name == name)?;
        let mut out = Vec::with_capacity(self.body.len() + value.len());
        out.extend_from_slice(&self.body[..p.value.0]);
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(&self.body[p.value.1..]);
        Some(out)
    }
}

/// The field name of a part's `Content-Disposition: form-data; name="..."` header,
/// and whether the part is a file (it has a `filename`).
fn disposition(headers: &str) -> Option<(String, bool)> {
    let line = headers.split("\r\n").find(|l| {
        l.get(..20)
            .is_some_and(|p| p.eq_ignore_ascii_case("content-disposition:"))
    })?;
    let mut name = None;
    let mut is_file = false;
    for param in line[20..].split(';').map(str::trim) {
        if let Some(v) = param.strip_prefix("name=") {
            name = Some(v.trim_matches('"').to_string());
        } else if param.starts_with("filename=") || param.starts_with("filename*=") {
            is_file = true;
        }
    }
    Some((name?, is_file))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--Xy\x00\xff\r\n--XyZ\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ\r\nContent-Disposition: form-data; name=\"stream\"\r\n\r\ntrue\r\n--XyZ--\r\n";

    #[test]
    fn text_fields_are_read_and_files_skipped() {
        let f = Form::parse(FORM).unwrap();
        assert_eq!(f.text("model"), Some("whisper-1"));
        assert_eq!(f.text("stream"), Some("true"));
        assert_eq!(f.text("file"), None);
        assert_eq!(f.text("prompt"), None);
    }

    #[test]
    fn a_field_is_rewritten_in_place() {
        let f = Form::parse(FORM).unwrap();
        let out = f.with_text("model", "gpt-4o-transcribe").unwrap();
        let g = Form::parse(&out).unwrap();
        assert_eq!(g.text("model"), Some("gpt-4o-transcribe"));
        assert_eq!(g.text("stream"), Some("true"));
        assert_eq!(
            out.len(),
            FORM.len() + "gpt-4o-transcribe".len() - "whisper-1".len()
        );
        assert!(f.with_text("language", "en").is_none());
    }

    #[test]
    fn bodies_that_are_not_forms() {
        for body in [
            &b"{\"model\":\"m\"}"[..],
            b"--\r\n",
            b"--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm",
            b"--B\r\nX: y\r\n\r\nm\r\n--B--",
            b"--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--Bjunk",
            b"",
        ] {
            assert!(Form::parse(body).is_none(), "{body:?}");
        }
        // Every cut of a real form is refused or read, never a panic.
        for i in 0..FORM.len() {
            let _ = Form::parse(&FORM[..i]).map(|f| f.text("model").map(str::len));
        }
    }
}
