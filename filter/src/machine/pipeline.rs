//! The router-level instance's request path and response path, in order, written
//! once (the three lists below). A step is a small value with one interface: a
//! request step sees the request's facts and answers a [`Flow`]; a response step
//! sees the answer's headers, transforms or observes each chunk, and sees the end.
//! What a step keeps for later (a cache key, the meter) lives in the facts
//! ([`Request`], [`Response`]), not in the step.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::exchange::WaitCell;
use crate::config::{Config, Route};
use crate::endpoint::Endpoint;
use crate::error::GatewayError;
use crate::host::{Action, Callout, CalloutResult, Headers, Status};
use crate::metering::prices::Cost;
use crate::metering::usage::ResponseMeter;
use crate::metering::{Meter, Report};
use crate::policy::budget::{BudgetStep, Reservation};
use crate::policy::cache::{self, CacheCapture, CacheDigests, ExactCache};
use crate::policy::fleet::FleetDescriptors;
use crate::policy::guardrail::{GuardrailAnswer, GuardrailStep};
use crate::policy::identity::Identify;
use crate::policy::ratelimit::{Admission, RateLimitStep};
use crate::policy::validation::Validation;

use super::steps::{
    Attribution, Classify, Gateway, IncludeUsage, Inline, InternalHeaders, Parse, PickRoute,
    PlainErrors, Routing, SaveForInline, TranslateBack,
};
use super::upstream::{SavedRequest, Upstream};

/// Every request, as its headers arrive (any path: only `Gateway` tells the
/// gateway's endpoints from the rest, which pass untouched).
pub(crate) static ON_REQUEST_HEADERS: [&dyn HeaderStep; 7] = [
    &InternalHeaders, // a client cannot set routing or internal headers
    &Classify,        // which endpoint the path names
    &Validation,      // CEL rules: deny before anything else
    &Gateway,         // not ours: pass; /v1/models: answer; wrong method or no body
    &Identify,        // who is asking (limits and budgets count per identity)
    &CacheDigests,    // what of the headers a cached answer depends on
    &SaveForInline,   // routerOnly: the headers the inline upstream work reads
];

/// Once the whole body is in.
pub(crate) static ON_REQUEST_BODY: [&dyn BodyStep; 10] = [
    &Parse,            // model, stream, stream_options, max tokens (borrowing the body)
    &PickRoute,        // the route that serves the model
    &GuardrailStep,    // block or mask before anything is spent or cached
    &ExactCache,       // answer from the cache, or note where the answer goes
    &RateLimitStep,    // requests, tokens (reserved), requests in flight
    &BudgetStep,       // spend budgets: block, throttle, alert (cost reserved)
    &FleetDescriptors, // fleet mode: what the rate-limit service counts
    &IncludeUsage,     // ask a stream for its usage when the gateway needs it
    &Routing,          // set the routing header; Envoy picks the route again
    &Inline,           // routerOnly: translate, credentials (may wait), sign
];

/// The answer, as it streams back.
pub(crate) static ON_RESPONSE: [&dyn ResponseStep; 10] = [
    &TranslateBack,    // routerOnly: the provider's answer into the client's schema
    &PlainErrors,      // Envoy's own plain-text errors (timeouts, resets) in it too
    &Attribution,      // which backend answered (from the upstream instance)
    &Meter,            // token usage, whatever the chunk boundaries; its cost
    &GuardrailAnswer,  // response-stage guardrails (the meter saw the answer as sent)
    &CacheCapture,     // keep a cacheable answer; store it when it ends well
    &RateLimitStep,    // settle the tokens the answer used
    &BudgetStep,       // settle the cost; the alert header
    &FleetDescriptors, // fleet mode: the charges
    &Report,           // dynamic metadata: names, latencies, costs
];

/// What a request step answers.
#[derive(Debug)]
pub(crate) enum Flow {
    /// On to the next step.
    Next,
    /// Not for the gateway: the rest of the stream passes untouched.
    PassThrough,
    /// Answer with an error in the client's schema; nothing reaches a provider.
    Reply(GatewayError),
    /// The step pushed its own local reply (a cached answer, the models list, a
    /// translation refused).
    Replied,
    /// Hold the request until this call answers; then `on_resume` with its outcome.
    Call(Callout),
    /// Hold the request until the cell is woken; then `on_resume` with none.
    Park(Arc<WaitCell>),
}

/// A request step run on the request headers. It does not wait (the body is still to
/// come): waits belong to body steps.
pub(crate) trait HeaderStep: Sync {
    fn on_headers(&self, cx: &mut Cx<'_>, headers: &dyn Headers, out: &mut Vec<Action>) -> Flow;
}

/// A request step run once the body is whole (`cx.req.body`).
pub(crate) trait BodyStep: Sync {
    fn on_body(&self, cx: &mut Cx<'_>, out: &mut Vec<Action>) -> Flow;

    /// The wait this step asked for ended: `answer` is the call's outcome, `None`
    /// after a wake.
    fn on_resume(
        &self,
        _cx: &mut Cx<'_>,
        _answer: Option<CalloutResult>,
        _out: &mut Vec<Action>,
    ) -> Flow {
        Flow::Next
    }
}

/// A response step. A non-`Continue` status from `on_headers` or `on_body` holds
/// what the host has (a whole answer being translated); later steps of that call
/// do not see the chunk.
pub(crate) trait ResponseStep: Sync {
    fn on_headers(
        &self,
        _cx: &mut Cx<'_>,
        _headers: &dyn Headers,
        _end_of_stream: bool,
        _out: &mut Vec<Action>,
    ) -> Status {
        Status::Continue
    }

    fn on_body(&self, _cx: &mut Cx<'_>, _chunk: &mut Chunk<'_>, _out: &mut Vec<Action>) -> Status {
        Status::Continue
    }

    /// The stream ended: `complete` when the answer reached its end, not when the
    /// stream was reset or aborted first.
    fn on_end(&self, _cx: &mut Cx<'_>, _complete: bool, _out: &mut Vec<Action>) {}
}

/// What a step sees.
pub(crate) struct Cx<'a> {
    pub config: &'a Config,
    pub req: &'a mut Request,
    pub resp: &'a mut Response,
    pub now: Duration,
    pub unix_ms: u64,
}

impl Cx<'_> {
    pub fn route(&self) -> Option<&Route> {
        self.req.route.map(|i| &self.config.routes[i])
    }
}

/// The request's facts, as steps find them out.
#[derive(Debug, Default)]
pub(crate) struct Request {
    pub endpoint: Option<Endpoint>,
    pub method: String,
    /// When the request arrived.
    pub started_at: Duration,
    /// The whole body as the client sent it (body steps only).
    pub body: Vec<u8>,
    /// The body as it will be sent, when a step rewrote it.
    pub rewritten: Option<Vec<u8>>,
    pub model: String,
    pub route: Option<usize>,
    pub stream: bool,
    /// The client sent `stream_options` (any value, `null` included).
    pub stream_options_sent: bool,
    /// ... and asked for the usage chunk.
    pub include_usage: bool,
    /// The gateway added `stream_options.include_usage`; strip the usage chunk.
    pub injected_usage: bool,
    /// The route whose rate limit admitted the request, and what it holds:
    /// settled when the answer ends, released when the filter goes.
    pub admitted: Option<(usize, Admission)>,
    /// Who is asking (hashed when it is a credential).
    pub identity: Option<String>,
    /// `max_tokens`, `max_completion_tokens` or `max_output_tokens`.
    pub max_output_tokens: Option<u64>,
    /// The body is a form upload (audio, images): its bytes are no prompt.
    pub form: bool,
    /// The body's size (kept once the body is gone).
    pub body_len: usize,
    /// What the budgets reserved, settled when the answer ends.
    pub reservations: Vec<Reservation>,
    /// The cost reserved (micro-units), for a charge when the answer's is unknown.
    pub cost_estimate: Option<u64>,
    /// Budgets whose alert threshold this request reached (`name:pct%`).
    pub budget_alerts: Vec<String>,
    /// Fleet mode wrote this request's descriptors.
    pub fleet: bool,
    /// Digests of the client's credential headers and of the headers that change
    /// an answer (only when a route caches).
    pub credentials: Option<cache::Key>,
    pub variant: Option<cache::Key>,
    /// routerOnly: the request headers the inline upstream work reads.
    pub saved: Option<SavedRequest>,
    /// What the request-stage guardrails did (`policy:action:stage:detectors`).
    pub guardrail_outcomes: Vec<String>,
}

impl Response {
    /// Whether the answer is known to have failed (a status other than 2xx): the
    /// provider charged nothing, whatever was reserved for it.
    pub fn failed(&self) -> bool {
        self.status != 0 && !(200..300).contains(&self.status)
    }
}

impl Request {
    /// The body as it will be sent.
    pub fn body_as_sent(&self) -> &[u8] {
        self.rewritten.as_deref().unwrap_or(&self.body)
    }

    /// Input and output tokens to reserve before the answer: the prompt at about
    /// four bytes a token (an upload's bytes are no prompt) and the most it may get
    /// back. None for token counting, which generates none, nor for a passthrough,
    /// charged only what its answer reports.
    pub fn token_estimate_parts(&self) -> (u64, u64) {
        if !self.endpoint.is_none_or(Endpoint::generates_tokens) {
            return (0, 0);
        }
        let prompt = if self.form { 0 } else { self.body_len as u64 };
        let output = self
            .max_output_tokens
            .unwrap_or(crate::policy::budget::DEFAULT_MAX_OUTPUT_TOKENS);
        (prompt.div_ceil(4), output)
    }

    /// Tokens to reserve before the answer, in all.
    pub fn token_estimate(&self) -> u64 {
        let (input, output) = self.token_estimate_parts();
        input.saturating_add(output)
    }
}

/// The answer's facts.
#[derive(Debug, Default)]
pub(crate) struct Response {
    pub status: u16,
    pub backend: Option<String>,
    pub model_override: Option<String>,
    pub meter: Option<ResponseMeter>,
    /// The route caches answers: where this one goes, and its bytes so far.
    pub cache_key: Option<cache::Key>,
    pub captured: Option<Vec<u8>>,
    /// routerOnly: the upstream work done by this instance.
    pub inline: Option<Box<Upstream>>,
    /// What the answer cost, once its usage and price are known.
    pub cost: Option<Cost>,
    /// A plain-text error answer held to be rewritten: its status and body so far.
    pub plain_error: Option<(u16, Vec<u8>)>,
    /// Fleet mode: the answer carries no verdict of the rate-limit service.
    pub fleet_unchecked: bool,
    /// The answer held for the response-stage guardrails, so far.
    pub guarded: Option<Vec<u8>>,
    /// ... which outgrew `limits.maxResponseBodyBytes`: what is left is no answer.
    pub guarded_too_large: bool,
}

/// One response chunk on its way through the steps: the host's bytes, or what a
/// step replaced them with.
pub(crate) struct Chunk<'a> {
    original: &'a [u8],
    replaced: Option<Vec<u8>>,
    pub end_of_stream: bool,
}

impl<'a> Chunk<'a> {
    pub fn new(original: &'a [u8], end_of_stream: bool) -> Self {
        Chunk {
            original,
            replaced: None,
            end_of_stream,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        self.replaced.as_deref().unwrap_or(self.original)
    }

    pub fn replace(&mut self, bytes: Vec<u8>) {
        self.replaced = Some(bytes);
    }

    /// The new bytes, if a step replaced them.
    pub fn into_replaced(self) -> Option<Vec<u8>> {
        self.replaced
    }
}
