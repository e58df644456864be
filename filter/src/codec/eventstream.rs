//! `application/vnd.amazon.eventstream`: the binary framing AWS uses for streamed
//! responses (Bedrock `ConverseStream`, `InvokeModelWithResponseStream`).
//!
//! A message is
//!
//! ```text
//! total length u32 BE | headers length u32 BE | prelude CRC32 (of the 8 bytes before)
//! headers             | payload               | message CRC32 (of everything before)
//! ```
//!
//! and each header is `name length u8 | name | type u8 | value`, the value's width
//! given by the type (strings and byte arrays carry a u16 BE length).
//!
//! [`Decoder`] is a push parser in httparse's manner: [`Decoder::push`] takes whatever
//! arrived, returns the complete messages and keeps only the unfinished tail. Memory
//! is bounded by a maximum message size, checked as soon as the prelude is in, and
//! errors are values (never panics) and sticky: once the stream is corrupt every later
//! call answers the same error, because nothing after a bad frame can be trusted.
//! [`encode`] writes frames, for tests and simulators.

use std::fmt;

/// Bytes of the prelude: two lengths and the prelude CRC.
const PRELUDE_LEN: usize = 12;
/// Smallest message: prelude plus message CRC, no headers, no payload.
const MIN_MESSAGE_LEN: usize = PRELUDE_LEN + 4;

/// AWS's own limit on one event-stream message (16 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Why a stream could not be decoded, or a message not encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventStreamError {
    /// A message declares a length above the decoder's limit.
    FrameTooLarge { declared: u64, limit: usize },
    /// The prelude's CRC does not match: the lengths cannot be trusted.
    PreludeCrcMismatch,
    /// The message CRC does not match: some byte of headers or payload is corrupt.
    MessageCrcMismatch,
    /// The lengths contradict each other (total below 16, headers past the payload).
    InvalidLength,
    /// A header is truncated, has an unknown type or a name that is not UTF-8.
    InvalidHeader,
    /// The stream ended inside a message.
    Truncated,
    /// (Encoder) A header name, string or byte array is too long for its length field.
    ValueTooLong,
}

impl fmt::Display for EventStreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FrameTooLarge { declared, limit } => {
                write!(
                    f,
                    "event-stream message of {declared} bytes exceeds the limit of {limit}"
                )
            }
            Self::PreludeCrcMismatch => f.write_str("event-stream prelude CRC mismatch"),
            Self::MessageCrcMismatch => f.write_str("event-stream message CRC mismatch"),
            Self::InvalidLength => f.write_str("event-stream message lengths are inconsistent"),
            Self::InvalidHeader => f.write_str("event-stream header is malformed"),
            Self::Truncated => f.write_str("event stream ended inside a message"),
            Self::ValueTooLong => f.write_str("event-stream header value too long to encode"),
        }
    }
}

impl std::error::Error for EventStreamError {}

/// A typed header value. The wire type byte is given for each variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    /// Types 0 (true) and 1 (false): no value bytes.
    Bool(bool),
    /// Type 2.
    Byte(i8),
    /// Type 3.
    Short(i16),
    /// Type 4.
    Int(i32),
    /// Type 5.
    Long(i64),
    /// Type 6: u16 length, then bytes.
    Bytes(Vec<u8>),
    /// Type 7: u16 length, then UTF-8.
    String(String),
    /// Type 8: milliseconds since the Unix epoch.
    Timestamp(i64),
    /// Type 9: 16 bytes.
    Uuid([u8; 16]),
}

impl HeaderValue {
    /// The value as text, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One header: name and typed value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: HeaderValue,
}

impl Header {
    /// A string header (type 7), the kind AWS uses for `:event-type` and friends.
    pub fn string(name: &str, value: &str) -> Self {
        Self {
            name: name.to_string(),
            value: HeaderValue::String(value.to_string()),
        }
    }
}

/// One decoded message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<Header>,
    pub payload: Vec<u8>,
}

impl Message {
    /// The first header of that name.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| &h.value)
    }

    /// The first header of that name, if it is a string.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(HeaderValue::as_str)
    }
}

/// Push decoder: feed chunks as they arrive, get complete messages back.
#[derive(Debug)]
pub struct Decoder {
    /// Unconsumed bytes: at most one unfinished message.
    buf: Vec<u8>,
    max_message_bytes: usize,
    error: Option<EventStreamError>,
}

impl Decoder {
    /// A decoder that refuses messages larger than `max_message_bytes` (whole frame).
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_message_bytes,
            error: None,
        }
    }

    /// Takes the next chunk and appends every message it completes to `out`.
    /// On error, messages completed before the bad one are still in `out`.
    pub fn push_into(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<(), EventStreamError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        // Fast path: nothing buffered, parse straight from the caller's chunk.
        let result = if self.buf.is_empty() {
            let (consumed, res) = self.parse_all(chunk, out);
            if res.is_ok() {
                self.buf.extend_from_slice(&chunk[consumed..]);
            }
            res
        } else {
            self.buf.extend_from_slice(chunk);
            let buf = std::mem::take(&mut self.buf);
            let (consumed, res) = self.parse_all(&buf, out);
            self.buf = buf;
            self.buf.drain(..consumed);
            res
        };
        if let Err(err) = result {
            self.error = Some(err);
            self.buf = Vec::new();
        }
        result
    }

    /// Takes the next chunk and returns the messages it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Message>, EventStreamError> {
        let mut out = Vec::new();
        self.push_into(chunk, &mut out)?;
        Ok(out)
    }

    /// The stream ended: an unfinished message left over is [`EventStreamError::Truncated`].
    pub fn finish(&mut self) -> Result<(), EventStreamError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        if self.buf.is_empty() {
            Ok(())
        } else {
            self.error = Some(EventStreamError::Truncated);
            Err(EventStreamError::Truncated)
        }
    }

    /// Bytes held of an unfinished message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Parses every complete message of `data`; returns how many bytes it consumed.
    fn parse_all(
        &self,
        data: &[u8],
        out: &mut Vec<Message>,
    ) -> (usize, Result<(), EventStreamError>) {
        let mut pos = 0;
        loop {
            match parse_one(&data[pos..], self.max_message_bytes) {
                Ok(Some((msg, len))) => {
                    out.push(msg);
                    pos += len;
                }
                Ok(None) => return (pos, Ok(())),
                Err(err) => return (pos, Err(err)),
            }
        }
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE_BYTES)
    }
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

/// One message from the start of `data`: `Ok(None)` while incomplete. The prelude is
/// validated as soon as it is in, so a corrupt or oversize length fails before the
/// decoder waits for (or buffers) the bytes it announces.
fn parse_one(data: &[u8], max: usize) -> Result<Option<(Message, usize)>, EventStreamError> {
    if data.len() < PRELUDE_LEN {
        return Ok(None);
    }
    let total = be_u32(&data[0..4]) as usize;
    let headers_len = be_u32(&data[4..8]) as usize;
    if crc32fast::hash(&data[0..8]) != be_u32(&data[8..12]) {
        return Err(EventStreamError::PreludeCrcMismatch);
    }
    if total > max {
        return Err(EventStreamError::FrameTooLarge {
            declared: total as u64,
            limit: max,
        });
    }
    if total < MIN_MESSAGE_LEN || headers_len > total - MIN_MESSAGE_LEN {
        return Err(EventStreamError::InvalidLength);
    }
    if data.len() < total {
        return Ok(None);
    }
    let frame = &data[..total];
    if crc32fast::hash(&frame[..total - 4]) != be_u32(&frame[total - 4..]) {
        return Err(EventStreamError::MessageCrcMismatch);
    }
    let headers = parse_headers(&frame[PRELUDE_LEN..PRELUDE_LEN + headers_len])?;
    let payload = frame[PRELUDE_LEN + headers_len..total - 4].to_vec();
    Ok(Some((Message { headers, payload }, total)))
}

/// Reads `n` bytes at `*pos`, advancing it.
fn take<'a>(b: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], EventStreamError> {
    let end = pos.checked_add(n).ok_or(EventStreamError::InvalidHeader)?;
    let s = b.get(*pos..end).ok_or(EventStreamError::InvalidHeader)?;
    *pos = end;
    Ok(s)
}

fn take_array<const N: usize>(b: &[u8], pos: &mut usize) -> Result<[u8; N], EventStreamError> {
    let mut a = [0u8; N];
    a.copy_from_slice(take(b, pos, N)?);
    Ok(a)
}

fn parse_headers(b: &[u8]) -> Result<Vec<Header>, EventStreamError> {
    let mut headers = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let name_len = take(b, &mut pos, 1)?[0] as usize;
        let name = std::str::from_utf8(take(b, &mut pos, name_len)?)
            .map_err(|_| EventStreamError::InvalidHeader)?
            .to_string();
        let kind = take(b, &mut pos, 1)?[0];
        let value = match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(take_array(b, &mut pos)?)),
            3 => HeaderValue::Short(i16::from_be_bytes(take_array(b, &mut pos)?)),
            4 => HeaderValue::Int(i32::from_be_bytes(take_array(b, &mut pos)?)),
            5 => HeaderValue::Long(i64::from_be_bytes(take_array(b, &mut pos)?)),
            6 | 7 => {
                let len = u16::from_be_bytes(take_array(b, &mut pos)?) as usize;
                let bytes = take(b, &mut pos, len)?;
                if kind == 6 {
                    HeaderValue::Bytes(bytes.to_vec())
                } else {
                    let s =
                        std::str::from_utf8(bytes).map_err(|_| EventStreamError::InvalidHeader)?;
                    HeaderValue::String(s.to_string())
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(take_array(b, &mut pos)?)),
            9 => HeaderValue::Uuid(take_array(b, &mut pos)?),
            _ => return Err(EventStreamError::InvalidHeader),
        };
        headers.push(Header { name, value });
    }
    Ok(headers)
}

/// Encodes one message into `out` (appended).
pub fn encode_into(
    headers: &[Header],
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EventStreamError> {
    let mut hbuf = Vec::new();
    for h in headers {
        let name = h.name.as_bytes();
        let name_len = u8::try_from(name.len()).map_err(|_| EventStreamError::ValueTooLong)?;
        hbuf.push(name_len);
        hbuf.extend_from_slice(name);
        match &h.value {
            HeaderValue::Bool(true) => hbuf.push(0),
            HeaderValue::Bool(false) => hbuf.push(1),
            HeaderValue::Byte(v) => {
                hbuf.push(2);
                hbuf.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Short(v) => {
                hbuf.push(3);
                hbuf.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Int(v) => {
                hbuf.push(4);
                hbuf.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Long(v) => {
                hbuf.push(5);
                hbuf.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Bytes(v) => encode_sized(&mut hbuf, 6, v)?,
            HeaderValue::String(v) => encode_sized(&mut hbuf, 7, v.as_bytes())?,
            HeaderValue::Timestamp(v) => {
                hbuf.push(8);
                hbuf.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Uuid(v) => {
                hbuf.push(9);
                hbuf.extend_from_slice(v);
            }
        }
    }
    let total = MIN_MESSAGE_LEN + hbuf.len() + payload.len();
    let total32 = u32::try_from(total).map_err(|_| EventStreamError::ValueTooLong)?;
    let headers32 = u32::try_from(hbuf.len()).map_err(|_| EventStreamError::ValueTooLong)?;
    let start = out.len();
    out.reserve(total);
    out.extend_from_slice(&total32.to_be_bytes());
    out.extend_from_slice(&headers32.to_be_bytes());
    let prelude_crc = crc32fast::hash(&out[start..start + 8]);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&hbuf);
    out.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&message_crc.to_be_bytes());
    Ok(())
}

fn encode_sized(hbuf: &mut Vec<u8>, kind: u8, v: &[u8]) -> Result<(), EventStreamError> {
    let len = u16::try_from(v.len()).map_err(|_| EventStreamError::ValueTooLong)?;
    hbuf.push(kind);
    hbuf.extend_from_slice(&len.to_be_bytes());
    hbuf.extend_from_slice(v);
    Ok(())
}

/// Encodes one message.
pub fn encode(headers: &[Header], payload: &[u8]) -> Result<Vec<u8>, EventStreamError> {
    let mut out = Vec::new();
    encode_into(headers, payload, &mut out)?;
    Ok(out)
}

/// Encodes an AWS event (`:message-type` event, `:event-type`, JSON content type),
/// as Bedrock sends them.
pub fn encode_event(event_type: &str, json: &[u8]) -> Result<Vec<u8>, EventStreamError> {
    encode(
        &[
            Header::string(":event-type", event_type),
            Header::string(":content-type", "application/json"),
            Header::string(":message-type", "event"),
        ],
        json,
    )
}

/// Encodes an AWS modeled exception (`:message-type` exception).
pub fn encode_exception(exception_type: &str, json: &[u8]) -> Result<Vec<u8>, EventStreamError> {
    encode(
        &[
            Header::string(":exception-type", exception_type),
            Header::string(":content-type", "application/json"),
            Header::string(":message-type", "exception"),
        ],
        json,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_types() -> Message {
        Message {
            headers: vec![
                Header::string(":event-type", "contentBlockDelta"),
                Header {
                    name: "t".into(),
                    value: HeaderValue::Bool(true),
                },
                Header {
                    name: "f".into(),
                    value: HeaderValue::Bool(false),
                },
                Header {
                    name: "byte".into(),
                    value: HeaderValue::Byte(-3),
                },
                Header {
                    name: "short".into(),
                    value: HeaderValue::Short(-300),
                },
                Header {
                    name: "int".into(),
                    value: HeaderValue::Int(70_000),
                },
                Header {
                    name: "long".into(),
                    value: HeaderValue::Long(-5_000_000_000),
                },
                Header {
                    name: "bytes".into(),
                    value: HeaderValue::Bytes(vec![0, 1, 2, 255]),
                },
                Header {
                    name: "ts".into(),
                    value: HeaderValue::Timestamp(1_700_000_000_000),
                },
                Header {
                    name: "uuid".into(),
                    value: HeaderValue::Uuid([7; 16]),
                },
            ],
            payload: br#"{"delta":{"text":"hi"}}"#.to_vec(),
        }
    }

    fn enc(m: &Message) -> Vec<u8> {
        encode(&m.headers, &m.payload).unwrap()
    }

    /// A message captured from AWS's own documentation of the format (one string header
    /// `:content-type`=`application/json`, payload `{'foo':'bar'}`).
    #[test]
    fn decodes_reference_frame() {
        let frame: &[u8] = b"\x00\x00\x00\x3d\x00\x00\x00\x20\x07\xfd\x83\x96\x0ccontent-type\x07\x00\x10application/json{'foo':'bar'}\x8d\x9c\x08\xb1";
        let msgs = Decoder::default().push(frame).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].header_str("content-type"), Some("application/json"));
        assert_eq!(msgs[0].payload, b"{'foo':'bar'}");
        assert_eq!(enc(&msgs[0]), frame);
    }

    #[test]
    fn round_trip_all_header_types() {
        let m = all_types();
        let bytes = enc(&m);
        let mut d = Decoder::default();
        assert_eq!(d.push(&bytes).unwrap(), vec![m]);
        assert_eq!(d.buffered(), 0);
        d.finish().unwrap();
    }

    #[test]
    fn empty_message_round_trips() {
        let bytes = encode(&[], b"").unwrap();
        assert_eq!(bytes.len(), MIN_MESSAGE_LEN);
        let msgs = Decoder::default().push(&bytes).unwrap();
        assert_eq!(msgs, vec![Message::default()]);
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let a = all_types();
        let b = Message {
            headers: vec![Header::string(":event-type", "messageStop")],
            payload: br#"{"stopReason":"end_turn"}"#.to_vec(),
        };
        let mut stream = enc(&a);
        stream.extend(enc(&b));
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let mut d = Decoder::new(1024);
                let mut got = d.push(&stream[..i]).unwrap();
                got.extend(d.push(&stream[i..j]).unwrap());
                got.extend(d.push(&stream[j..]).unwrap());
                assert_eq!(got, vec![a.clone(), b.clone()], "split at {i},{j}");
                d.finish().unwrap();
            }
        }
    }

    #[test]
    fn byte_by_byte_holds_only_the_tail() {
        let bytes = enc(&all_types());
        let mut d = Decoder::default();
        for (i, b) in bytes.iter().enumerate() {
            let got = d.push(std::slice::from_ref(b)).unwrap();
            if i + 1 < bytes.len() {
                assert!(got.is_empty());
                assert_eq!(d.buffered(), i + 1);
            } else {
                assert_eq!(got.len(), 1);
                assert_eq!(d.buffered(), 0);
            }
        }
    }

    #[test]
    fn corrupt_byte_anywhere_is_an_error() {
        let m = all_types();
        let bytes = enc(&m);
        let headers_end = PRELUDE_LEN + be_u32(&bytes[4..8]) as usize;
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x5a;
            let mut d = Decoder::new(1 << 20);
            let res = d.push(&bad);
            let want = if i < PRELUDE_LEN {
                EventStreamError::PreludeCrcMismatch
            } else {
                EventStreamError::MessageCrcMismatch
            };
            assert_eq!(
                res,
                Err(want),
                "corrupt byte {i} (headers end at {headers_end})"
            );
            // Sticky: the decoder keeps answering the same error.
            assert_eq!(d.push(&bytes), Err(want));
            assert_eq!(d.finish(), Err(want));
        }
    }

    #[test]
    fn messages_before_a_corrupt_one_are_delivered() {
        let good = enc(&all_types());
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        let mut stream = good.clone();
        stream.extend(&bad);
        let mut out = Vec::new();
        let res = Decoder::default().push_into(&stream, &mut out);
        assert_eq!(res, Err(EventStreamError::MessageCrcMismatch));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn oversize_fails_on_the_prelude() {
        let bytes = enc(&all_types());
        let limit = bytes.len() - 1;
        let mut d = Decoder::new(limit);
        // Only the prelude is needed to refuse.
        assert_eq!(
            d.push(&bytes[..PRELUDE_LEN]),
            Err(EventStreamError::FrameTooLarge {
                declared: bytes.len() as u64,
                limit
            })
        );
        assert_eq!(d.buffered(), 0);
        // Exactly at the limit is fine.
        assert_eq!(Decoder::new(bytes.len()).push(&bytes).unwrap().len(), 1);
    }

    #[test]
    fn inconsistent_lengths_are_errors() {
        // A valid prelude CRC over lengths that contradict each other.
        for (total, headers) in [(8u32, 0u32), (20, 5), (16, 1)] {
            let mut f = Vec::new();
            f.extend(total.to_be_bytes());
            f.extend(headers.to_be_bytes());
            let crc = crc32fast::hash(&f);
            f.extend(crc.to_be_bytes());
            f.resize(32, 0);
            assert_eq!(
                Decoder::default().push(&f),
                Err(EventStreamError::InvalidLength)
            );
        }
    }

    #[test]
    fn malformed_headers_with_valid_crcs_are_errors() {
        for headers in [
            &b"\x05ab"[..],               // name runs past the block
            b"\x01a\x0e",                 // unknown type 14
            b"\x01a\x07\x00\x05ab",       // string runs past the block
            b"\x01a\x04\x00\x00",         // int cut short
            b"\x02\xff\xfe\x00",          // name not UTF-8
            b"\x01a\x07\x00\x02\xc3\x28", // string not UTF-8
        ] {
            let mut f = Vec::new();
            let total = (MIN_MESSAGE_LEN + headers.len()) as u32;
            f.extend(total.to_be_bytes());
            f.extend((headers.len() as u32).to_be_bytes());
            let crc = crc32fast::hash(&f);
            f.extend(crc.to_be_bytes());
            f.extend(headers);
            let crc = crc32fast::hash(&f);
            f.extend(crc.to_be_bytes());
            assert_eq!(
                Decoder::default().push(&f),
                Err(EventStreamError::InvalidHeader),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn truncated_stream_is_reported_at_finish() {
        let bytes = enc(&all_types());
        let mut d = Decoder::default();
        assert!(d.push(&bytes[..bytes.len() - 3]).unwrap().is_empty());
        assert_eq!(d.finish(), Err(EventStreamError::Truncated));
    }

    #[test]
    fn encoder_refuses_oversized_values() {
        let long_name = Header {
            name: "x".repeat(256),
            value: HeaderValue::Bool(true),
        };
        assert_eq!(
            encode(&[long_name], b""),
            Err(EventStreamError::ValueTooLong)
        );
        let long_str = Header::string("a", &"x".repeat(65_536));
        assert_eq!(
            encode(&[long_str], b""),
            Err(EventStreamError::ValueTooLong)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: pseudo-random garbage and mutated frames.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let frame = enc(&all_types());
        for round in 0..2000 {
            let mut data = if round % 2 == 0 {
                frame.clone()
            } else {
                vec![0u8; (round % 97) + 1]
            };
            for b in data.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if round % 2 == 1 || x.is_multiple_of(31) {
                    *b = x as u8;
                }
            }
            let mut d = Decoder::new(4096);
            let _ = d.push(&data);
            let _ = d.finish();
        }
    }
}
