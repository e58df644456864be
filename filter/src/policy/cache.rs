//! Exact-match answer cache per route (`routes[].cache`): a non-streamed request
//! whose endpoint, body bytes and answer-changing headers (and, where a client's own
//! credentials reach the provider, those credentials) match one answered with a 200
//! less than `ttlSeconds` ago gets that answer from the gateway, with no provider call.
//!
//! The cache belongs to the compiled config, like the rate-limit counters: shared by
//! the workers of the native module, one per worker in wasm, emptied by a config
//! reload. It is bounded by entries and bytes; expired entries go first, then the
//! oldest. Only uncompressed JSON answers are kept (the gateway asks for them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::host::{Action, Counter, Headers, MetadataValue, Status};
use crate::machine::pipeline::{BodyStep, Chunk, Cx, Flow, HeaderStep, ResponseStep};

/// Default bound on entries per route.
pub const DEFAULT_MAX_ENTRIES: usize = 1000;
/// Largest answer kept, and the bound on a route's total bytes.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
pub const MAX_TOTAL_BYTES: usize = 64 << 20;

/// A cache key: SHA-256 over length-prefixed parts.
pub type Key = [u8; 32];

pub fn key(parts: &[&[u8]]) -> Key {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// The answer header saying whether the gateway's cache answered (`HIT`) or
/// stored the provider's answer (`MISS`), as CDNs say it.
pub const ANSWER_HEADER: &str = "x-cache";

/// Request headers besides the body that change a provider's answer.
const VARIANT_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];

/// The key part of the headers that change an answer.
pub(crate) fn variant_part(headers: &dyn Headers) -> Key {
    digest(&VARIANT_HEADERS, headers)
}

/// The key part that identifies a client to providers that see its own
/// credentials (used only for routes where they do).
pub(crate) fn credentials_part(config: &Config, headers: &dyn Headers) -> Key {
    let names: Vec<&str> = crate::machine::upstream::CLIENT_CREDENTIAL_HEADERS
        .iter()
        .copied()
        .chain(
            config
                .backends
                .iter()
                .filter_map(|b| b.credential_override.as_deref()),
        )
        .collect();
    digest(&names, headers)
}

/// The values of `names` (absent: empty), as one key part.
fn digest(names: &[&str], headers: &dyn Headers) -> Key {
    let values: Vec<String> = names
        .iter()
        .map(|n| headers.get(n).unwrap_or_default())
        .collect();
    let parts: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
    key(&parts)
}

#[derive(Debug)]
pub struct AnswerCache {
    pub ttl: Duration,
    max_entries: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    bytes: usize,
    /// Insertion counter: the smallest is the oldest.
    seq: u64,
}

#[derive(Debug)]
struct Entry {
    body: Arc<[u8]>,
    expires: Duration,
    seq: u64,
}

impl AnswerCache {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        AnswerCache {
            ttl,
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The answer stored under `key`, if it has not expired.
    pub fn get(&self, key: &Key, now: Duration) -> Option<Arc<[u8]>> {
        let inner = self.inner.lock().ok()?;
        let e = inner.entries.get(key)?;
        (e.expires > now).then(|| e.body.clone())
    }

    /// Keeps `body` under `key` until `now + ttl`; too large an answer is not kept.
    pub fn put(&self, key: Key, body: &[u8], now: Duration) {
        if body.len() > MAX_ENTRY_BYTES {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let inner = &mut *inner;
        if let Some(old) = inner.entries.remove(&key) {
            inner.bytes -= old.body.len();
        }
        while inner.entries.len() >= self.max_entries || inner.bytes + body.len() > MAX_TOTAL_BYTES
        {
            // Expired first, else the oldest (a scan: inserts only, bounded count).
            let victim = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| (e.expires > now, e.seq))
                .map(|(k, _)| *k);
            let Some(k) = victim else { break };
            if let Some(e) = inner.entries.remove(&k) {
                inner.bytes -= e.body.len();
            }
        }
        inner.seq += 1;
        inner.bytes += body.len();
        let entry = Entry {
            body: Arc::from(body),
            expires: now + self.ttl,
            seq: inner.seq,
        };
        inner.entries.insert(key, entry);
    }
}

/// Pipeline step: what of the request headers a cached answer depends on, kept
/// while the headers are here (only when some route caches).
pub(crate) struct CacheDigests;

impl HeaderStep for CacheDigests {
    fn on_headers(&self, cx: &mut Cx<'_>, headers: &dyn Headers, _out: &mut Vec<Action>) -> Flow {
        if cx.config.any_cache {
            cx.req.credentials = Some(credentials_part(cx.config, headers));
            cx.req.variant = Some(variant_part(headers));
        }
        Flow::Next
    }
}

/// Pipeline step: a route with a cache answers from it, or notes where the
/// provider's answer goes and asks for it uncompressed. Streams are not cached.
pub(crate) struct ExactCache;

impl BodyStep for ExactCache {
    fn on_body(&self, cx: &mut Cx<'_>, out: &mut Vec<Action>) -> Flow {
        let Some(route) = cx.route() else {
            return Flow::Next;
        };
        let (Some(cache), Some(endpoint)) = (route.cache.as_ref(), cx.req.endpoint) else {
            return Flow::Next;
        };
        if cx.req.stream || endpoint == crate::endpoint::Endpoint::Passthrough {
            return Flow::Next;
        }
        let credentials: &[u8] = match &cx.req.credentials {
            Some(c) if route.client_credentials_reach_provider => c,
            _ => &[],
        };
        let variant: &[u8] = cx.req.variant.as_ref().map_or(&[], |v| v);
        let key = key(&[
            endpoint.path().as_bytes(),
            variant,
            credentials,
            // A masked prompt is what was asked (guardrails run before the cache).
            cx.req.body_as_sent(),
        ]);
        let Some(answer) = cache.get(&key, cx.now) else {
            out.push(Action::Count(Counter::CacheMiss));
            cx.resp.cache_key = Some(key);
            out.push(Action::RemoveHeader {
                name: "accept-encoding".into(),
            });
            return Flow::Next;
        };
        crate::metering::route_metadata(route, &cx.req.model, cx.req.identity.as_deref(), out);
        out.push(Action::SetMetadata {
            key: "cache".into(),
            value: MetadataValue::String("hit".into()),
        });
        out.push(Action::Count(Counter::CacheHit));
        out.push(Action::SendLocalReply {
            status: 200,
            content_type: "application/json",
            body: answer.to_vec(),
            details: "cache_hit",
            headers: vec![(ANSWER_HEADER, "HIT".into())],
        });
        Flow::Replied
    }
}

/// Pipeline step: keeps a cacheable 200 answer as the client gets it, and stores
/// it when it ends well.
pub(crate) struct CacheCapture;

impl ResponseStep for CacheCapture {
    fn on_headers(
        &self,
        cx: &mut Cx<'_>,
        headers: &dyn Headers,
        _end_of_stream: bool,
        out: &mut Vec<Action>,
    ) -> Status {
        if cx.resp.cache_key.is_some()
            && cx.resp.status == 200
            && headers.get("content-encoding").is_none()
        {
            cx.resp.captured = Some(Vec::new());
            out.push(Action::SetHeader {
                name: ANSWER_HEADER.into(),
                value: "MISS".into(),
            });
        }
        Status::Continue
    }

    fn on_body(&self, cx: &mut Cx<'_>, chunk: &mut Chunk<'_>, _out: &mut Vec<Action>) -> Status {
        if let Some(buf) = cx.resp.captured.as_mut() {
            if buf.len() + chunk.bytes().len() > MAX_ENTRY_BYTES {
                cx.resp.captured = None;
            } else {
                buf.extend_from_slice(chunk.bytes());
            }
        }
        Status::Continue
    }

    fn on_end(&self, cx: &mut Cx<'_>, complete: bool, _out: &mut Vec<Action>) {
        let (Some(key), Some(body)) = (cx.resp.cache_key, cx.resp.captured.take()) else {
            return;
        };
        if !complete {
            return;
        }
        if let Some(cache) = cx.route().and_then(|r| r.cache.as_ref()) {
            cache.put(key, &body, cx.now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn answers_until_the_ttl() {
        let c = AnswerCache::new(s(10), 10);
        let k = key(&[b"/v1/chat/completions", b"{}"]);
        assert!(c.get(&k, s(0)).is_none());
        c.put(k, b"answer", s(0));
        assert_eq!(c.get(&k, s(9)).as_deref(), Some(&b"answer"[..]));
        assert!(c.get(&k, s(10)).is_none());
    }

    #[test]
    fn keys_separate_their_parts() {
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]));
        assert_ne!(key(&[b"x"]), key(&[b"x", b""]));
    }

    #[test]
    fn bounded_expired_first_then_oldest() {
        let c = AnswerCache::new(s(10), 2);
        let (a, b, d) = (key(&[b"a"]), key(&[b"b"]), key(&[b"d"]));
        c.put(a, b"1", s(0));
        c.put(b, b"2", s(5));
        c.put(d, b"3", s(11)); // a has expired: it goes
        assert!(c.get(&b, s(11)).is_some() && c.get(&d, s(11)).is_some());
        c.put(a, b"4", s(12)); // none expired: the oldest (b) goes
        assert!(c.get(&b, s(12)).is_none());
        assert!(c.get(&d, s(12)).is_some() && c.get(&a, s(12)).is_some());
        c.put(a, &vec![0; MAX_ENTRY_BYTES + 1], s(13));
        assert_eq!(
            c.get(&a, s(13)).as_deref(),
            Some(&b"4"[..]),
            "too large: not kept"
        );
    }
}
