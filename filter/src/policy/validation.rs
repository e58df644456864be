//! Request validation: CEL rules over a request's attributes, checked when its
//! headers arrive, before anything else the gateway does (kgateway's
//! HTTPListenerPolicy `celValidation`; Envoy has no filter that takes CEL text).
//!
//! Rules run in order and the first whose expression is `true` decides: `Deny`
//! answers 403, `Allow` lets the request on without looking further. A request no
//! rule matches goes on. An expression that fails (indexing a header the request
//! lacks) or gives something other than a bool does not match: test presence with
//! `'x-team' in request.headers`.
//!
//! The variable is `request`, with Envoy's attribute names: `method`, `path` (with
//! the query), `url_path`, `query`, `host`, `scheme`, `id` (`x-request-id`),
//! `useragent` and `headers` (lower-case names; a repeated header's values joined
//! with `,`; no pseudo-headers, nor the gateway's own, which clients cannot set).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use cel::objects::{Key, Value};
use cel::{Context, ExecutionError, Program};

use crate::expr;
use crate::host::Headers;
use crate::host::{Action, Counter, LogLevel};
use crate::machine::pipeline::{Cx, Flow, HeaderStep};
use crate::machine::steps::CLIENT_FORBIDDEN_HEADERS;

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    Allow,
    Deny,
}

/// The compiled rules, in order.
#[derive(Default)]
pub struct RequestRules {
    rules: Vec<Rule>,
}

struct Rule {
    source: String,
    program: Program,
    action: RuleAction,
}

impl std::fmt::Debug for RequestRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.rules.iter().map(|r| (&r.source, r.action)))
            .finish()
    }
}

/// The outcome for one request.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The index of the `Deny` rule that matched.
    pub denied_by: Option<usize>,
    /// Rules that could not be evaluated (index, why), for the log.
    pub failures: Vec<(usize, String)>,
}

const VARIABLES: [&str; 1] = ["request"];

impl RequestRules {
    /// Compiles `(expression, action)` pairs; an error names the index of the rule
    /// and the message for its expression.
    pub fn compile(rules: &[(&str, RuleAction)]) -> Result<RequestRules, (usize, String)> {
        let mut out = Vec::with_capacity(rules.len());
        for (i, (src, action)) in rules.iter().enumerate() {
            let program = expr::compile(src, &VARIABLES).map_err(|e| (i, e))?;
            out.push(Rule {
                source: src.to_string(),
                program,
                action: *action,
            });
        }
        Ok(RequestRules { rules: out })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Runs the rules on a request's headers.
    pub fn check(&self, headers: &dyn Headers) -> Verdict {
        let mut verdict = Verdict {
            denied_by: None,
            failures: Vec::new(),
        };
        if self.rules.is_empty() {
            return verdict;
        }
        let mut ctx = Context::with_env(expr::env());
        ctx.add_variable_from_value("request", request(headers));
        for (i, rule) in self.rules.iter().enumerate() {
            // A bug in the interpreter must fail one rule, not the request.
            let result = catch_unwind(AssertUnwindSafe(|| rule.program.execute(&ctx)));
            match result {
                Ok(Ok(Value::Bool(true))) => {
                    if rule.action == RuleAction::Deny {
                        verdict.denied_by = Some(i);
                    }
                    return verdict;
                }
                Ok(Ok(Value::Bool(false))) => {}
                Ok(Ok(other)) => verdict.failures.push((
                    i,
                    format!("the result is a {}, not a bool", other.type_of()),
                )),
                Ok(Err(e)) => verdict.failures.push((i, describe(&e))),
                Err(_) => verdict
                    .failures
                    .push((i, "the CEL interpreter panicked".into())),
            }
        }
        verdict
    }
}

/// Why a rule failed, without the request's values (a header may hold a secret).
fn describe(e: &ExecutionError) -> String {
    match e {
        ExecutionError::NoSuchKey(_)
        | ExecutionError::UndeclaredReference(_)
        | ExecutionError::NoSuchOverload(_)
        | ExecutionError::UnexpectedType { .. }
        | ExecutionError::InvalidArgumentCount { .. }
        | ExecutionError::MissingArgumentOrTarget => e.to_string(),
        _ => "an operation does not apply to the request's values".into(),
    }
}

/// The `request` attributes of `headers`.
fn request(headers: &dyn Headers) -> Value {
    let mut all: HashMap<Key, Value> = HashMap::new();
    let mut joined: HashMap<String, String> = HashMap::new();
    headers.for_each(&mut |name, value| {
        if name.starts_with(':') || CLIENT_FORBIDDEN_HEADERS.contains(&name) {
            return;
        }
        joined
            .entry(name.to_ascii_lowercase())
            .and_modify(|v| {
                v.push(',');
                v.push_str(value);
            })
            .or_insert_with(|| value.to_string());
    });
    let get = |name: &str| headers.get(name).unwrap_or_default();
    let path = get(":path");
    let (url_path, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
    let mut attr = |k: &str, v: &str| {
        all.insert(Key::from(k), Value::from(v.to_string()));
    };
    attr("method", &get(":method"));
    attr("url_path", url_path);
    attr("query", query);
    attr("host", &get(":authority"));
    attr("scheme", &get(":scheme"));
    attr("id", &get("x-request-id"));
    attr("useragent", &get("user-agent"));
    attr("path", &path);
    all.insert(Key::from("headers"), Value::from(joined));
    Value::from(all)
}

/// The pipeline step: the gateway's CEL rules, on every request's headers (any
/// path), before anything else decides.
pub(crate) struct Validation;

impl HeaderStep for Validation {
    fn on_headers(&self, cx: &mut Cx<'_>, headers: &dyn Headers, out: &mut Vec<Action>) -> Flow {
        let rules = &cx.config.request_rules;
        if rules.is_empty() {
            return Flow::Next;
        }
        let verdict = rules.check(headers);
        for (i, why) in verdict.failures {
            out.push(Action::Log {
                level: LogLevel::Debug,
                message: format!("requestValidation.rules[{i}] did not match: {why}"),
            });
        }
        match verdict.denied_by {
            Some(rule) => {
                out.push(Action::Count(Counter::RequestDenied));
                Flow::Reply(crate::error::GatewayError::Denied { rule })
            }
            None => Flow::Next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(r: &[(&str, RuleAction)]) -> RequestRules {
        RequestRules::compile(r).unwrap_or_else(|e| panic!("{e:?}"))
    }

    const REQ: [(&str, &str); 7] = [
        (":method", "POST"),
        (":path", "/v1/chat/completions?trace=1"),
        (":authority", "llm.example.com"),
        (":scheme", "https"),
        ("x-team", "search"),
        ("x-team", "ads"),
        ("x-ai-eg-model", "spoofed"),
    ];

    #[test]
    fn first_matching_rule_decides() {
        use RuleAction::*;
        let r = rules(&[
            ("request.headers['x-team'] == 'search,ads'", Allow),
            ("true", Deny),
        ]);
        assert_eq!(r.check(&REQ).denied_by, None);
        let r = rules(&[
            ("request.method == 'GET'", Allow),
            (
                "request.url_path.startsWith('/v1/chat') && request.query == 'trace=1'",
                Deny,
            ),
        ]);
        assert_eq!(r.check(&REQ).denied_by, Some(1));
        let r = rules(&[("request.host == 'other' || request.scheme == 'http'", Deny)]);
        assert_eq!(
            r.check(&REQ),
            Verdict {
                denied_by: None,
                failures: vec![]
            }
        );
    }

    #[test]
    fn failures_do_not_match_and_are_reported() {
        use RuleAction::*;
        let r = rules(&[
            ("request.headers['x-missing'] == 'a'", Deny),
            ("request.path", Deny),
            ("!('x-missing' in request.headers) && request.path == '/v1/chat/completions?trace=1'", Deny),
        ]);
        let v = r.check(&REQ);
        assert_eq!(v.denied_by, Some(2));
        assert_eq!(
            v.failures,
            [
                (0, "No such key: x-missing".to_string()),
                (1, "the result is a string, not a bool".to_string())
            ]
        );
    }

    #[test]
    fn gateway_headers_and_pseudo_headers_are_not_request_headers() {
        let r = rules(&[(
            "'x-ai-eg-model' in request.headers || ':path' in request.headers",
            RuleAction::Deny,
        )]);
        assert_eq!(r.check(&REQ).denied_by, None);
    }

    #[test]
    fn bad_expressions_are_refused_with_their_index() {
        use RuleAction::*;
        let err = |r: &[(&str, RuleAction)]| RequestRules::compile(r).err();
        assert_eq!(err(&[("true", Deny), ("", Deny)]).map(|e| e.0), Some(1));
        assert!(err(&[("headers['a'] == 'b'", Deny)])
            .is_some_and(|e| e.1.contains("unknown variable(s) headers")));
        assert!(err(&[("request.method ==", Deny)]).is_some_and(|e| e.1.contains("syntax")));
    }
}
