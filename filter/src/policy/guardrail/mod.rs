//! Guardrails: named policies of in-proxy detectors (PII, secrets, custom patterns,
//! words, a prompt-size cap) attached to routes by stage, each with an action:
//! `block` refuses the request in the client's schema, `mask` replaces what was
//! found in the body the provider gets, `log` lets it pass. Whatever fires is
//! counted and written into dynamic metadata (`guardrail`): which policy, which
//! action, which stage, which detectors; never the text.
//!
//! The request stage reads the prompt; the response stage reads a whole answer
//! (streamed answers are not checked yet: a route that checks answers refuses
//! streamed requests).
//!
//! One module per concern: [`detect`] (patterns, one pass over a text),
//! [`checks`] (Luhn, mod-97 and the other checks that reject false positives),
//! [`text`] (the prompt text of each client schema, and writing it back).

pub mod checks;
pub mod detect;
pub(crate) mod text;

use crate::endpoint::Endpoint;
use crate::error::GatewayError;
use crate::host::{Action, Counter, Headers, MetadataValue, Status};
use crate::machine::pipeline::{BodyStep, Chunk, Cx, Flow, ResponseStep};
use detect::Detectors;
use text::TextField;

/// The metadata key the request's guardrail outcomes go under.
pub const METADATA_KEY: &str = "guardrail";

/// What a policy does when one of its detectors fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardAction {
    Block,
    Mask,
    Log,
}

impl GuardAction {
    pub fn name(self) -> &'static str {
        match self {
            GuardAction::Block => "block",
            GuardAction::Mask => "mask",
            GuardAction::Log => "log",
        }
    }

    fn counter(self) -> Counter {
        match self {
            GuardAction::Block => Counter::GuardrailBlocked,
            GuardAction::Mask => Counter::GuardrailMasked,
            GuardAction::Log => Counter::GuardrailLogged,
        }
    }
}

/// Where a route runs a policy: on the prompt, or on the answer (`both` in the
/// configuration is one of each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Request,
    Response,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Request => "request",
            Stage::Response => "response",
        }
    }
}

/// A named policy (`guardrails[]`).
#[derive(Debug)]
pub struct GuardrailPolicy {
    pub name: String,
    pub action: GuardAction,
    pub detectors: Detectors,
    /// `maxPromptBytes`: the prompt text (not the JSON around it) may be this long.
    pub max_prompt_bytes: Option<u64>,
}

/// A policy a route runs (`routes[].guardrails[]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteGuardrail {
    /// Index into [`crate::config::Config::guardrails`].
    pub policy: usize,
    pub stage: Stage,
}

/// What one policy found in a request's text.
#[derive(Debug, PartialEq, Eq)]
pub struct Finding {
    /// The detectors that fired, by name, each once, in the policy's order.
    pub detectors: Vec<String>,
}

impl GuardrailPolicy {
    /// Runs the policy over `fields`; with `mask`, what it finds is replaced in
    /// them. `None`: nothing fired.
    pub(crate) fn check(&self, fields: &mut [TextField]) -> Option<Finding> {
        let mut fired = vec![false; self.detectors.len()];
        let mut too_long = false;
        if let Some(max) = self.max_prompt_bytes {
            let total: usize = fields.iter().map(|f| f.text.len()).sum();
            too_long = total as u64 > max;
        }
        for f in fields.iter_mut() {
            let hits = self.detectors.find(&f.text);
            if hits.is_empty() {
                continue;
            }
            for h in &hits {
                fired[h.detector] = true;
            }
            if self.action == GuardAction::Mask {
                f.text = detect::mask(&f.text, &hits, &self.detectors);
                f.changed = true;
            }
        }
        let mut detectors: Vec<String> = Vec::new();
        for (i, _) in fired.iter().enumerate().filter(|(_, f)| **f) {
            let name = self.detectors.kind(i).name();
            if !detectors.iter().any(|d| d == name) {
                detectors.push(name.to_string());
            }
        }
        if too_long {
            detectors.push("maxPromptBytes".into());
        }
        (!detectors.is_empty()).then_some(Finding { detectors })
    }
}

/// The route's policies at `stage`, in the route's order.
fn policies_at<'c>(
    config: &'c crate::config::Config,
    route: &'c crate::config::Route,
    stage: Stage,
) -> impl Iterator<Item = &'c GuardrailPolicy> {
    route
        .guardrails
        .iter()
        .filter(move |g| g.stage == stage)
        .filter_map(|g| config.guardrails.get(g.policy))
}

/// Whether answers of this endpoint carry text a model generated.
fn answers_with_text(e: Option<Endpoint>) -> bool {
    matches!(
        e,
        Some(
            Endpoint::ChatCompletions
                | Endpoint::Completions
                | Endpoint::Messages
                | Endpoint::Responses
        )
    )
}

/// Runs `policies` over `fields` in order, on the text as the ones before left
/// it, until a `block` fires: its policy's name. What fired is counted and added
/// to `outcomes`.
fn run<'p>(
    policies: impl Iterator<Item = &'p GuardrailPolicy>,
    stage: Stage,
    fields: &mut [TextField],
    outcomes: &mut Vec<String>,
    out: &mut Vec<Action>,
) -> Option<&'p str> {
    for policy in policies {
        let Some(finding) = policy.check(fields) else {
            continue;
        };
        out.push(Action::Count(policy.action.counter()));
        outcomes.push(format!(
            "{}:{}:{}:{}",
            policy.name,
            policy.action.name(),
            stage.name(),
            finding.detectors.join(",")
        ));
        if policy.action == GuardAction::Block {
            return Some(&policy.name);
        }
    }
    None
}

fn write_outcomes(outcomes: &[String], out: &mut Vec<Action>) {
    if !outcomes.is_empty() {
        out.push(Action::SetMetadata {
            key: METADATA_KEY.into(),
            value: MetadataValue::String(outcomes.join(";")),
        });
    }
}

/// Pipeline step: the route's request-stage policies, in the route's order, on the
/// text as the policies before left it. The first `block` that fires refuses the
/// request; masks rewrite the body once, at the end. A route that checks answers
/// gets them uncompressed, and not as streams (not checked yet: refused).
pub(crate) struct GuardrailStep;

impl BodyStep for GuardrailStep {
    fn on_body(&self, cx: &mut Cx<'_>, out: &mut Vec<Action>) -> Flow {
        let config = cx.config;
        let Some(route) = cx.req.route.map(|i| &config.routes[i]) else {
            return Flow::Next;
        };
        if cx.req.endpoint == Some(Endpoint::Passthrough) {
            // Another API's body: no prompt the gateway knows how to read.
            return Flow::Next;
        }
        if answers_with_text(cx.req.endpoint) {
            if let Some(p) = policies_at(config, route, Stage::Response).next() {
                if cx.req.stream {
                    return Flow::Reply(GatewayError::InvalidField {
                        field: "stream".into(),
                        reason: format!(
                            "this route checks answers with guardrail policy '{}', which the gateway does not do for streams yet: ask without stream",
                            crate::error::clip_quoted(&p.name, crate::error::MAX_QUOTED_NAME)
                        ),
                    });
                }
                out.push(Action::RemoveHeader {
                    name: "accept-encoding".into(),
                });
            }
        }
        let mut policies = policies_at(config, route, Stage::Request).peekable();
        if policies.peek().is_none() {
            return Flow::Next;
        }
        // Read here, on guarded routes only: other routes never look into the text
        // (a passthrough body's bytes are the provider's to judge).
        let fields = text::spans(&cx.req.body).and_then(|s| text::read(&cx.req.body, &s));
        let mut fields = match fields {
            Ok(f) => f,
            Err(e) => return Flow::Reply(e),
        };
        let mut outcomes = Vec::new();
        let blocked = run(policies, Stage::Request, &mut fields, &mut outcomes, out);
        write_outcomes(&outcomes, out);
        cx.req.guardrail_outcomes = outcomes;
        if let Some(policy) = blocked {
            return Flow::Reply(GatewayError::GuardrailBlocked {
                answer: false,
                policy: policy.to_string(),
            });
        }
        if fields.iter().any(|f| f.changed) {
            // The spans are the client's body's; no step before this one rewrites it.
            cx.req.rewritten = Some(text::rewrite(&cx.req.body, &fields));
        }
        Flow::Next
    }
}

/// Pipeline step: the route's response-stage policies on a successful answer
/// (chat, completions, Anthropic messages, Responses), held whole until its end:
/// `block` replaces it with a 400 in the client's schema, `mask` rewrites its text,
/// `log` lets it pass. An answer that cannot be read (not JSON, compressed, over
/// the size limit) is not let through: a 502.
pub(crate) struct GuardrailAnswer;

impl ResponseStep for GuardrailAnswer {
    fn on_headers(
        &self,
        cx: &mut Cx<'_>,
        _headers: &dyn Headers,
        end_of_stream: bool,
        _out: &mut Vec<Action>,
    ) -> Status {
        let Some(route) = cx.route() else {
            return Status::Continue;
        };
        let ok = (200..300).contains(&cx.resp.status);
        if end_of_stream
            || !ok
            || !answers_with_text(cx.req.endpoint)
            || policies_at(cx.config, route, Stage::Response)
                .next()
                .is_none()
        {
            return Status::Continue;
        }
        cx.resp.guarded = Some(Vec::new());
        Status::StopIteration
    }

    fn on_body(&self, cx: &mut Cx<'_>, chunk: &mut Chunk<'_>, out: &mut Vec<Action>) -> Status {
        let Some(held) = cx.resp.guarded.as_mut() else {
            return Status::Continue;
        };
        let limit = cx.config.limits.max_response_body_bytes as usize;
        if cx.resp.guarded_too_large {
            // Past the limit: nothing more is kept (a tail is no answer to check).
        } else if held.len() + chunk.bytes().len() <= limit {
            held.extend_from_slice(chunk.bytes());
        } else {
            cx.resp.guarded_too_large = true;
            *held = Vec::new();
        }
        if !chunk.end_of_stream {
            return Status::StopAndBuffer;
        }
        let Some(body) = cx.resp.guarded.take() else {
            return Status::Continue;
        };
        let schema = cx
            .req
            .endpoint
            .map_or(crate::error::ClientSchema::OpenAI, Endpoint::client_schema);
        let config = cx.config;
        let Some(route) = cx.req.route.map(|i| &config.routes[i]) else {
            return Status::Continue;
        };
        let read = match cx.resp.guarded_too_large {
            true => Err(format!("over limits.maxResponseBodyBytes ({limit})")),
            false => text::read_answer(&body).map_err(|e| e.to_string()),
        };
        let mut fields = match read {
            Ok(f) => f,
            Err(e) => {
                out.push(Action::Log {
                    level: crate::host::LogLevel::Warn,
                    message: format!(
                        "route '{}': the answer could not be read for its guardrails ({} bytes): {e}",
                        route.name,
                        body.len()
                    ),
                });
                let err = GatewayError::BadUpstreamResponse(
                    "the answer could not be checked by the route's guardrails".into(),
                );
                cx.resp.cache_key = None; // the client gets no answer: none to keep
                replace_answer(err.status(), err.body(schema), chunk, out);
                return Status::Continue;
            }
        };
        let mut outcomes = std::mem::take(&mut cx.req.guardrail_outcomes);
        let policies = policies_at(config, route, Stage::Response);
        let blocked = run(policies, Stage::Response, &mut fields, &mut outcomes, out);
        write_outcomes(&outcomes, out);
        if let Some(policy) = blocked {
            // The provider's answer was made (and is charged); the client gets none.
            cx.resp.cache_key = None;
            let err = GatewayError::GuardrailBlocked {
                answer: true,
                policy: policy.to_string(),
            };
            replace_answer(err.status(), err.body(schema), chunk, out);
        } else if fields.iter().any(|f| f.changed) {
            replace_answer(cx.resp.status, text::rewrite(&body, &fields), chunk, out);
        } else {
            // The bytes Envoy holds are the answer as it came: they pass.
            replace_answer(cx.resp.status, body, chunk, out);
        }
        Status::Continue
    }
}

/// The whole answer becomes `body`, with `status` (headers are still held).
fn replace_answer(status: u16, body: Vec<u8>, chunk: &mut Chunk<'_>, out: &mut Vec<Action>) {
    crate::machine::json_answer_headers(Some(status), body.len(), out);
    chunk.replace(body);
}
