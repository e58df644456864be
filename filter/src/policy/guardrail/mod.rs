//! Guardrails: named policies of in-proxy detectors (PII, secrets, custom patterns,
//! words, a prompt-size cap) attached to routes by stage, each with an action:
//! `block` refuses the request in the client's schema, `mask` replaces what was
//! found in the body the provider gets, `log` lets it pass. Whatever fires is
//! counted and written into dynamic metadata (`guardrail`): which policy, which
//! action, which stage, which detectors; never the text.
//!
//! Only the request stage runs today; a policy's stage is a value so that the
//! response stage (on the answer as it streams) fits beside it later.
//!
//! One module per concern: [`detect`] (patterns, one pass over a text),
//! [`checks`] (Luhn, mod-97 and the other checks that reject false positives),
//! [`text`] (the prompt text of each client schema, and writing it back).

pub mod checks;
pub mod detect;
pub(crate) mod text;

use crate::error::GatewayError;
use crate::host::{Action, Counter, MetadataValue};
use crate::machine::pipeline::{BodyStep, Cx, Flow};
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

/// Where a route runs a policy. Only `Request` exists yet: the configuration
/// refuses `response` and `both` rather than accept a guardrail it would not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Request,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Request => "request",
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

/// Pipeline step: the route's request-stage policies, in the route's order, on the
/// text as the policies before left it. The first `block` that fires refuses the
/// request; masks rewrite the body once, at the end.
pub(crate) struct GuardrailStep;

impl BodyStep for GuardrailStep {
    fn on_body(&self, cx: &mut Cx<'_>, out: &mut Vec<Action>) -> Flow {
        let config = cx.config;
        let Some(route) = cx.req.route.map(|i| &config.routes[i]) else {
            return Flow::Next;
        };
        if cx.req.endpoint == Some(crate::endpoint::Endpoint::Passthrough) {
            // Another API's body: no prompt the gateway knows how to read.
            return Flow::Next;
        }
        let mut policies = route
            .guardrails
            .iter()
            .filter(|g| g.stage == Stage::Request)
            .filter_map(|g| config.guardrails.get(g.policy))
            .peekable();
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
        let mut outcomes: Vec<String> = Vec::new();
        let mut blocked: Option<&str> = None;
        for policy in policies {
            let Some(finding) = policy.check(&mut fields) else {
                continue;
            };
            out.push(Action::Count(policy.action.counter()));
            outcomes.push(format!(
                "{}:{}:{}:{}",
                policy.name,
                policy.action.name(),
                Stage::Request.name(),
                finding.detectors.join(",")
            ));
            if policy.action == GuardAction::Block {
                blocked = Some(&policy.name);
                break;
            }
        }
        if !outcomes.is_empty() {
            out.push(Action::SetMetadata {
                key: METADATA_KEY.into(),
                value: MetadataValue::String(outcomes.join(";")),
            });
        }
        if let Some(policy) = blocked {
            return Flow::Reply(GatewayError::GuardrailBlocked {
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
