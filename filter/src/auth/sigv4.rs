//! AWS Signature Version 4, header-based, for one request.
//!
//! Pure: the signing time is an argument (seconds since the Unix epoch, UTC), so AWS
//! and botocore test vectors reproduce exactly; nothing here reads a clock.
//!
//! Path encoding: the path given is the one sent on the wire, already percent-encoded
//! once (a Bedrock model id's `:` travels as `%3A`; [`encode_path_segment`] builds such
//! segments). For every service but S3 the canonical URI encodes that path *again*
//! (`%3A` becomes `%253A`), after removing `.`/`..` segments and empty segments, as
//! botocore does. S3 (single encoding, no normalization) is not supported here.
//!
//! Secrets never leave this module except inside the signature: [`Credentials`] has a
//! redacting `Debug`, and no error message carries key material.

use std::cell::RefCell;
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// SHA-256 of the empty string, the payload hash of a bodyless request.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Long- or short-term AWS credentials. `Debug` shows only the access key id.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl Credentials {
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: session_token.filter(|t| !t.is_empty()),
        }
    }

    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// For tools that write configuration (the CRD compiler); never logged.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// What a signature is scoped to.
#[derive(Clone, Debug)]
pub struct SigningParams<'a> {
    pub credentials: &'a Credentials,
    /// e.g. `us-east-1`.
    pub region: &'a str,
    /// e.g. `bedrock` (the signing name, also for `bedrock-runtime` hosts).
    pub service: &'a str,
    /// Signing time, seconds since the Unix epoch (UTC).
    pub unix_seconds: u64,
    /// Also send (and sign) `x-amz-content-sha256`. AWS services other than S3 do not
    /// require it; botocore does not send it for Bedrock.
    pub content_sha256_header: bool,
}

/// The request to sign.
#[derive(Clone, Debug)]
pub struct SignableRequest<'a> {
    /// `POST`, `GET`, ... (upper-cased when signing).
    pub method: &'a str,
    /// The path as sent, already percent-encoded once, starting with `/`.
    pub path: &'a str,
    /// The raw query string as sent, without `?` (may be empty).
    pub query: &'a str,
    /// Headers to sign besides the ones the signer adds. Must include `host` (with the
    /// port if it is not the scheme's default). Names are matched case-insensitively;
    /// hop-by-hop headers and `user-agent` etc. are skipped, as botocore does.
    /// Pass only headers that reach AWS unchanged (`host` from `:authority`,
    /// `content-type`): anything a proxy rewrites after signing breaks the signature.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// Headers to set on the request, names lower-case, in this order:
/// `x-amz-date`, `x-amz-security-token` (with a session token),
/// `x-amz-content-sha256` (if asked), `authorization`.
/// `Debug` redacts the token.
#[derive(Clone, PartialEq, Eq)]
#[must_use]
pub struct SignedHeaders {
    pub headers: Vec<(&'static str, String)>,
}

impl SignedHeaders {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for SignedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_list();
        for (name, value) in &self.headers {
            if *name == "x-amz-security-token" {
                l.entry(&(name, "<redacted>"));
            } else {
                l.entry(&(name, value));
            }
        }
        l.finish()
    }
}

/// Why a request could not be signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SigningError {
    /// No `host` header among the request's headers.
    MissingHost,
    /// The path does not start with `/`.
    InvalidPath,
    /// A header value holds a byte that cannot be sent (CR, LF, NUL).
    InvalidHeaderValue,
}

impl fmt::Display for SigningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MissingHost => "SigV4: the request has no host header",
            Self::InvalidPath => "SigV4: the request path must start with '/'",
            Self::InvalidHeaderValue => "SigV4: a header value contains a control character",
        })
    }
}

impl std::error::Error for SigningError {}

/// Headers botocore never signs: hop-by-hop, tracing, and ones proxies rewrite.
const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "baggage",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "traceparent",
    "tracestate",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
];

/// Signs `req`: returns the headers to add (see [`SignedHeaders`]).
pub fn sign(
    req: &SignableRequest<'_>,
    params: &SigningParams<'_>,
) -> Result<SignedHeaders, SigningError> {
    if !req.path.starts_with('/') {
        return Err(SigningError::InvalidPath);
    }
    let amz_date = format_amz_date(params.unix_seconds);
    let date = &amz_date[..8];
    let payload_hash = hex32(Sha256::digest(req.body).into());

    let mut added: Vec<(&'static str, String)> = vec![("x-amz-date", amz_date.clone())];
    if let Some(token) = &params.credentials.session_token {
        added.push(("x-amz-security-token", token.clone()));
    }
    if params.content_sha256_header {
        added.push(("x-amz-content-sha256", payload_hash.clone()));
    }

    // Canonical headers: lower-case names, sorted, values trimmed with inner runs of
    // spaces collapsed, repeated names joined with ','. Headers the signer adds
    // replace any of the same name.
    let mut signed: Vec<(String, String)> = Vec::new();
    for (name, value) in req.headers {
        let lname = name.trim().to_ascii_lowercase();
        if UNSIGNED_HEADERS.contains(&lname.as_str()) || added.iter().any(|(a, _)| *a == lname) {
            continue;
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(SigningError::InvalidHeaderValue);
        }
        let v = value.split_whitespace().collect::<Vec<_>>().join(" ");
        match signed.iter_mut().find(|(n, _)| *n == lname) {
            Some((_, existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            None => signed.push((lname, v)),
        }
    }
    if !signed.iter().any(|(n, _)| n == "host") {
        return Err(SigningError::MissingHost);
    }
    for (name, value) in &added {
        signed.push((name.to_string(), value.clone()));
    }
    signed.sort_by(|a, b| a.0.cmp(&b.0));
    let signed_names = signed
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");

    let mut canonical = String::new();
    canonical.push_str(&req.method.to_ascii_uppercase());
    canonical.push('\n');
    canonical.push_str(&canonical_uri(req.path));
    canonical.push('\n');
    canonical.push_str(&canonical_query(req.query));
    canonical.push('\n');
    for (n, v) in &signed {
        canonical.push_str(n);
        canonical.push(':');
        canonical.push_str(v);
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed_names);
    canonical.push('\n');
    canonical.push_str(&payload_hash);

    let scope = format!("{date}/{}/{}/aws4_request", params.region, params.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex32(Sha256::digest(canonical.as_bytes()).into())
    );

    let k_signing = signing_key(
        &params.credentials.secret_access_key,
        date,
        params.region,
        params.service,
    );
    let signature = hex32(hmac(&k_signing, string_to_sign.as_bytes()));

    added.push((
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_names}, Signature={signature}",
            params.credentials.access_key_id
        ),
    ));
    Ok(SignedHeaders { headers: added })
}

/// A derived signing key and what it was derived from.
struct CachedKey {
    secret: String,
    date: String,
    region: String,
    service: String,
    key: [u8; 32],
}

/// Signing keys derived on this thread; a handful of backends at most.
const CACHED_KEYS: usize = 8;

thread_local! {
    static SIGNING_KEYS: RefCell<Vec<CachedKey>> = const { RefCell::new(Vec::new()) };
}

/// The key for `date` (YYYYMMDD), `region` and `service`: four HMACs that depend on
/// neither the request nor the time of day, so each thread derives it once a day
/// per credential instead of once per request.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let derive = || {
        let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
        let k_region = hmac(&k_date, region.as_bytes());
        let k_service = hmac(&k_region, service.as_bytes());
        hmac(&k_service, b"aws4_request")
    };
    SIGNING_KEYS
        .try_with(|cache| {
            let mut cache = cache.borrow_mut();
            let hit = cache
                .iter()
                .position(|c| c.secret == secret && c.region == region && c.service == service);
            match hit {
                Some(i) if cache[i].date == date => cache[i].key,
                Some(i) => {
                    let key = derive();
                    cache[i].date = date.to_string();
                    cache[i].key = key;
                    key
                }
                None => {
                    let key = derive();
                    if cache.len() == CACHED_KEYS {
                        cache.remove(0);
                    }
                    cache.push(CachedKey {
                        secret: secret.to_string(),
                        date: date.to_string(),
                        region: region.to_string(),
                        service: service.to_string(),
                        key,
                    });
                    key
                }
            }
        })
        .unwrap_or_else(|_| derive())
}

/// Lower-case hex of a digest, without `hex::encode`'s per-character iterator.
fn hex32(digest: [u8; 32]) -> String {
    let mut out = [0u8; 64];
    match hex::encode_to_slice(digest, &mut out) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => hex::encode(digest),
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    match HmacSha256::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(msg);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; 32],
    }
}

/// RFC 3986 unreserved characters: never percent-encoded.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

fn percent_encode(s: &str, keep_slash: bool, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// Encodes one path segment for the wire: everything but unreserved characters, so a
/// model id or ARN (`:` and `/` included) stays one segment. Same as botocore's
/// rendering of a non-greedy URI label.
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    percent_encode(segment, false, &mut out);
    out
}

/// The canonical URI of a (once-encoded) wire path for non-S3 services: dot segments
/// and empty segments removed, then every byte but unreserved ones and `/` encoded,
/// so existing `%XX` escapes become `%25XX`.
pub fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut normalized = String::from("/");
    normalized.push_str(&segments.join("/"));
    if path.len() > 1 && path.ends_with('/') && !segments.is_empty() {
        normalized.push('/');
    }
    let mut out = String::with_capacity(normalized.len() + 8);
    percent_encode(&normalized, true, &mut out);
    out
}

/// Canonical query string: `key=value` pairs, as sent, sorted by key then value.
/// (The query is taken as already encoded, as botocore does for a query in the URL.)
pub fn canonical_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `YYYYMMDD'T'HHMMSS'Z'` for a Unix time in seconds.
pub fn format_amz_date(unix_seconds: u64) -> String {
    let days = unix_seconds / 86_400;
    let secs = unix_seconds % 86_400;
    let (y, m, d) = crate::date::civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors generated with botocore 1.44.5 (`SigV4Auth` on an `AWSRequest`, the
    // clock patched to the given time); see the script in
    // `testdata/bedrock/sigv4_vectors.py`.

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    // 2015-08-30T12:36:00Z, the date of AWS's own SigV4 test suite.
    const T: u64 = 1_440_938_160;

    fn params<'a>(creds: &'a Credentials, service: &'a str, region: &'a str) -> SigningParams<'a> {
        SigningParams {
            credentials: creds,
            region,
            service,
            unix_seconds: T,
            content_sha256_header: false,
        }
    }

    #[test]
    fn cached_signing_keys_follow_the_day_region_and_secret() {
        let fresh = |secret: &str, date: &str, region: &str| {
            let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
            let k = hmac(&k, region.as_bytes());
            let k = hmac(&k, b"bedrock");
            hmac(&k, b"aws4_request")
        };
        for (secret, date, region) in [
            ("s1", "20240101", "us-east-1"),
            ("s1", "20240102", "us-east-1"),
            ("s1", "20240102", "eu-west-1"),
            ("s2", "20240102", "eu-west-1"),
            ("s1", "20240101", "us-east-1"),
        ] {
            assert_eq!(
                signing_key(secret, date, region, "bedrock"),
                fresh(secret, date, region),
                "{secret} {date} {region}"
            );
        }
        for i in 0..(CACHED_KEYS + 2) {
            let secret = format!("k{i}");
            assert_eq!(
                signing_key(&secret, "20240101", "r", "bedrock"),
                fresh(&secret, "20240101", "r")
            );
        }
        SIGNING_KEYS.with(|c| assert_eq!(c.borrow().len(), CACHED_KEYS));
    }

    #[test]
    fn amz_date_formatting() {
        assert_eq!(format_amz_date(T), "20150830T123600Z");
        assert_eq!(format_amz_date(0), "19700101T000000Z");
        assert_eq!(format_amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(format_amz_date(4_102_444_799), "20991231T235959Z");
    }

    /// AWS's published test suite, `get-vanilla`.
    #[test]
    fn aws_suite_get_vanilla() {
        let creds = Credentials::new(AKID, SECRET, None);
        let req = SignableRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: &[("Host", "example.amazonaws.com")],
            body: b"",
        };
        let out = sign(&req, &params(&creds, "service", "us-east-1")).unwrap();
        assert_eq!(out.get("x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(
            out.get("authorization"),
            Some("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        );
    }

    #[test]
    fn canonical_uri_double_encodes() {
        assert_eq!(
            canonical_uri("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"),
            "/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse"
        );
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a//b/./c/../d/"), "/a/b/d/");
        assert_eq!(canonical_uri("/a b"), "/a%20b");
        assert_eq!(
            encode_path_segment("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.x"),
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.x"
        );
    }

    #[test]
    fn canonical_query_sorts() {
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("flag"), "flag=");
    }

    #[test]
    fn botocore_bedrock_converse() {
        let creds = Credentials::new(AKID, SECRET, None);
        let body = br#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}]}"#;
        let req = SignableRequest {
            method: "POST",
            path: "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
            query: "",
            headers: &[
                ("host", "bedrock-runtime.us-east-1.amazonaws.com"),
                ("content-type", "application/json"),
                ("user-agent", "ignored/1.0"),
            ],
            body,
        };
        let out = sign(&req, &params(&creds, "bedrock", "us-east-1")).unwrap();
        assert_eq!(
            out.get("authorization"),
            Some(
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/testdata/bedrock/sigv4_converse.txt"
                ))
                .trim()
            )
        );
        assert_eq!(out.get("x-amz-security-token"), None);
        assert_eq!(out.get("x-amz-content-sha256"), None);
    }

    #[test]
    fn botocore_bedrock_stream_with_session_token_and_sha_header() {
        let creds = Credentials::new(AKID, SECRET, Some("session/token+value==".into()));
        let body = br#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}],"inferenceConfig":{"maxTokens":16}}"#;
        let req = SignableRequest {
            method: "POST",
            path: "/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream",
            query: "",
            headers: &[
                ("Host", "bedrock-runtime.us-west-2.amazonaws.com"),
                ("Content-Type", "application/json"),
                ("X-Custom", "  a   b  "),
            ],
            body,
        };
        let mut p = params(&creds, "bedrock", "us-west-2");
        p.content_sha256_header = true;
        let out = sign(&req, &p).unwrap();
        assert_eq!(
            out.get("x-amz-security-token"),
            Some("session/token+value==")
        );
        assert_eq!(
            out.get("x-amz-content-sha256"),
            Some(hex::encode(Sha256::digest(body)).as_str())
        );
        assert_eq!(
            out.get("authorization"),
            Some(
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/testdata/bedrock/sigv4_stream_token.txt"
                ))
                .trim()
            )
        );
        // Order documented on `SignedHeaders`.
        let names: Vec<_> = out.headers.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "x-amz-date",
                "x-amz-security-token",
                "x-amz-content-sha256",
                "authorization"
            ]
        );
    }

    #[test]
    fn botocore_get_with_query() {
        let creds = Credentials::new(AKID, SECRET, None);
        let req = SignableRequest {
            method: "get",
            path: "/foundation-models",
            query: "byProvider=anthropic&byOutputModality=TEXT",
            headers: &[("host", "bedrock.eu-central-1.amazonaws.com")],
            body: b"",
        };
        let out = sign(&req, &params(&creds, "bedrock", "eu-central-1")).unwrap();
        assert_eq!(
            out.get("authorization"),
            Some(
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/testdata/bedrock/sigv4_get_query.txt"
                ))
                .trim()
            )
        );
    }

    #[test]
    fn errors_and_redaction() {
        let creds = Credentials::new(AKID, SECRET, Some("TOKEN-SECRET".into()));
        let mut req = SignableRequest {
            method: "POST",
            path: "/x",
            query: "",
            headers: &[("content-type", "application/json")],
            body: b"",
        };
        let p = params(&creds, "bedrock", "us-east-1");
        assert_eq!(sign(&req, &p), Err(SigningError::MissingHost));
        req.path = "x";
        assert_eq!(sign(&req, &p), Err(SigningError::InvalidPath));
        req.path = "/x";
        req.headers = &[("host", "h"), ("x-bad", "a\r\nb")];
        assert_eq!(sign(&req, &p), Err(SigningError::InvalidHeaderValue));

        let dbg = format!("{creds:?} {p:?}");
        assert!(
            !dbg.contains(SECRET) && !dbg.contains("TOKEN-SECRET"),
            "{dbg}"
        );
        assert!(dbg.contains(AKID));
        req.headers = &[("host", "h")];
        let signed = sign(&req, &p).unwrap();
        let dbg = format!("{signed:?}");
        assert!(!dbg.contains("TOKEN-SECRET"), "{dbg}");
        assert!(dbg.contains("authorization"));
    }
}
