//! The vocabulary between the core and a host: what the core reads ([`Headers`]) and
//! what it asks the host to do ([`Action`], [`Status`]).
//!
//! Every `HttpFilter::on_*` call appends actions to a caller-owned `Vec<Action>` and
//! returns a [`Status`]. The host applies the actions in the order given, then acts
//! on the status. A [`Action::SendLocalReply`] is always the last action of a call;
//! after it the host stops iteration and the core ignores further input for that
//! stream.
//!
//! A request can wait: on an HTTP call of its own ([`Action::Call`], answered by
//! `HttpFilter::on_callout_done`) or on work another request or the process is doing
//! ([`Action::Park`], ended by `HttpFilter::on_wake`). Either way the hook returns a
//! stop status and the host holds the request; the later hook's actions apply to it,
//! and a [`Status::Continue`] from that hook means "resume the request now".
//!
//! A stream can also ask to be called back later ([`Action::Timer`], answered by
//! `HttpFilter::on_timer`): a streamed answer whose provider goes quiet is ended by
//! the core from that hook ([`Action::EndResponse`]).

use std::time::Duration;

/// Read access to one header map, as the host has it now.
///
/// Names are lower-case, pseudo-headers included (`:path`, `:method`, `:status`).
pub trait Headers {
    /// The first value of `name`, if present.
    fn get(&self, name: &str) -> Option<String>;

    /// Every header in the map, in order, a repeated name once per value. A map
    /// that keeps only some headers lists those.
    fn for_each(&self, f: &mut dyn FnMut(&str, &str));

    /// Every header name, as [`Headers::for_each`] lists them: for steps that look
    /// at names only, so that a host need not check every value's UTF-8.
    fn for_each_name(&self, f: &mut dyn FnMut(&str)) {
        self.for_each(&mut |name, _| f(name));
    }
}

/// Whether `name` (any case) is one of the gateway's internal headers.
pub(crate) fn is_internal_header(name: &str) -> bool {
    let prefix = crate::INTERNAL_HEADER_PREFIX.as_bytes();
    name.as_bytes()
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// A header map for tests and for hosts that copy headers out before calling in.
impl Headers for &[(&str, &str)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| (*v).to_string())
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        self.iter().for_each(|(k, v)| f(k, v));
    }
}

impl<const N: usize> Headers for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        Headers::get(&self.as_slice(), name)
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        Headers::for_each(&self.as_slice(), f)
    }
}

/// Whether the host lets the current headers or body chunk go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Status {
    /// Pass what the host holds (possibly modified by the actions) downstream/upstream.
    Continue,
    /// Headers: hold them until the body has been seen.
    StopIteration,
    /// Body: keep buffering; the core will see the next chunk.
    StopAndBuffer,
}

/// Severity of a log line the core asks the host to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// A value written into dynamic metadata under [`crate::METADATA_NAMESPACE`].
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataValue {
    Number(f64),
    String(String),
}

/// One thing the host must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Set (replace) a header on the map of the current direction.
    SetHeader { name: String, value: String },
    /// Remove a header from the map of the current direction.
    RemoveHeader { name: String },
    /// Envoy must pick the route again: the routing header changed.
    ClearRouteCache,
    /// Allow the host to buffer this many bytes of request body (Envoy's default
    /// buffer limit is smaller than a large chat request).
    SetBufferLimit(u64),
    /// Replace the body: for a request, the whole buffered body; for a response
    /// chunk, the chunk that was just passed in. The host fixes `content-length`
    /// itself only when told by a `SetHeader`/`RemoveHeader`.
    ReplaceBody(Vec<u8>),
    /// Write into the downstream request's dynamic metadata.
    SetMetadata { key: String, value: MetadataValue },
    /// Store bytes in the request's filter state (shared by every filter instance of
    /// the request, upstream attempts included). Read back by the host and handed to
    /// the core ([`crate::HttpFilter::bind_backend`]).
    SetFilterState { key: &'static str, value: Vec<u8> },
    /// Answer the client directly; nothing reaches the upstream.
    SendLocalReply {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
        /// Short reason for Envoy's response-code details (no spaces).
        details: &'static str,
        /// Headers besides `content-type` (`retry-after`).
        headers: Vec<(&'static str, String)>,
    },
    /// A log line. Never carries secrets.
    Log { level: LogLevel, message: String },
    /// Count one event in an Envoy stat.
    Count(Counter),
    /// Make an HTTP call for this request and hand its outcome to
    /// `HttpFilter::on_callout_done` with the same `id`. The request stays held
    /// meanwhile; if the stream ends first, the host cancels the call.
    Call { id: u32, call: Callout },
    /// The request waits on shared work (a token another request is fetching): the
    /// host gives the core a waker for this stream (`HttpFilter::set_waker`) and,
    /// when it is woken, calls `HttpFilter::on_wake` on the stream's own thread.
    Park,
    /// Call `HttpFilter::on_timer` on the stream's own thread once, no sooner than
    /// this long from now. It replaces a timer the stream has pending (the core asks
    /// for one at a time). A call that comes early or late is harmless: the core
    /// checks its own deadline and asks again. A host without timers ignores it.
    Timer(Duration),
    /// The answer's headers (and part of its body) are with the client: send these
    /// bytes after what the client has, then end the response there. Always the last
    /// action of a call; the host may find the stream completed (and gone) once it
    /// is applied, and ignores what it still gets from the provider. Envoy abandons
    /// the upstream request when the downstream stream completes.
    EndResponse(Vec<u8>),
}

/// An HTTP call to an Envoy cluster, made by the host for the core.
#[derive(Clone, PartialEq, Eq)]
pub struct Callout {
    /// The Envoy cluster the call goes to (written by the config compiler).
    pub cluster: String,
    /// Request headers, `:method`, `:path` and `:authority` included.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

impl std::fmt::Debug for Callout {
    /// Bodies and header values may carry credentials: only names and sizes show.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Callout")
            .field("cluster", &self.cluster)
            .field("headers", &names)
            .field("body_bytes", &self.body.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Callout {
    /// The value of request header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How a callout ended.
#[derive(Clone, PartialEq, Eq)]
pub enum CalloutResult {
    /// An answer arrived (any status; a timeout may show as Envoy's own 504).
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// No answer: the connection failed or was reset, the call timed out, the
    /// cluster is unknown or the answer was too large. The text says which, when
    /// the host knows.
    Failed(&'static str),
}

impl std::fmt::Debug for CalloutResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CalloutResult::Response { status, body, .. } => f
                .debug_struct("Response")
                .field("status", status)
                .field("body_bytes", &body.len())
                .finish(),
            CalloutResult::Failed(why) => f.debug_tuple("Failed").field(why).finish(),
        }
    }
}

/// The gateway's own counters, as Envoy stats (native: `dynamicmodulescustom.NAME`;
/// wasm: `wasmcustom.NAME`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A route's rate limit refused a request.
    RateLimited,
    /// A request validation rule denied a request.
    RequestDenied,
    /// The answer cache answered.
    CacheHit,
    /// A cacheable request went to the provider.
    CacheMiss,
    /// A request was answered 503: the credential the gateway exchanges for its
    /// backend could not be had.
    CredentialExchangeFailed,
    /// A spent budget refused a request (`block`).
    BudgetBlocked,
    /// A request ran into a spent budget's low rate (`throttle`): counted whether it
    /// was let through or refused.
    BudgetThrottled,
    /// A request reached a budget's alert threshold (`alert`).
    BudgetAlert,
    /// Fleet mode: an answer passed without the rate-limit service's verdict (the
    /// service could not be asked and the rate-limit filter fails open, or it has no
    /// limit for the descriptors): unchecked, and its charge likely lost.
    FleetUnchecked,
    /// A streamed answer's provider sent nothing for the route's
    /// `streamIdleTimeout`: the gateway ended the stream with an error event.
    StreamIdleTimeout,
    /// A guardrail policy whose action is `block` refused a request.
    GuardrailBlocked,
    /// A guardrail policy whose action is `mask` rewrote a request.
    GuardrailMasked,
    /// A guardrail policy whose action is `log` found something and let it pass.
    GuardrailLogged,
}

impl Counter {
    pub const ALL: [Counter; 13] = [
        Counter::RateLimited,
        Counter::RequestDenied,
        Counter::CacheHit,
        Counter::CacheMiss,
        Counter::CredentialExchangeFailed,
        Counter::BudgetBlocked,
        Counter::BudgetThrottled,
        Counter::BudgetAlert,
        Counter::FleetUnchecked,
        Counter::StreamIdleTimeout,
        Counter::GuardrailBlocked,
        Counter::GuardrailMasked,
        Counter::GuardrailLogged,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::RateLimited => "aigw_rate_limited",
            Counter::RequestDenied => "aigw_request_denied",
            Counter::CacheHit => "aigw_cache_hits",
            Counter::CacheMiss => "aigw_cache_misses",
            Counter::CredentialExchangeFailed => "aigw_credential_exchange_failures",
            Counter::BudgetBlocked => "aigw_budget_blocked",
            Counter::BudgetThrottled => "aigw_budget_throttled",
            Counter::BudgetAlert => "aigw_budget_alerts",
            Counter::FleetUnchecked => "aigw_fleet_unchecked",
            Counter::StreamIdleTimeout => "aigw_stream_idle_timeouts",
            Counter::GuardrailBlocked => "aigw_guardrail_blocked",
            Counter::GuardrailMasked => "aigw_guardrail_masked",
            Counter::GuardrailLogged => "aigw_guardrail_logged",
        }
    }
}
