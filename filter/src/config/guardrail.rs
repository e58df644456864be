//! The configuration of guardrails: named policies (`guardrails[]`) and the routes
//! that run them (`routes[].guardrails[]`).

use std::collections::HashMap;

use serde::Deserialize;

use super::backend::err;
use super::ConfigError;
use crate::policy::guardrail::detect::{Detectors, Kind};
use crate::policy::guardrail::{GuardAction, GuardrailPolicy, RouteGuardrail, Stage};

/// `guardrails[]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawGuardrail {
    name: String,
    detectors: RawDetectors,
    action: String,
}

/// `guardrails[].detectors`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDetectors {
    #[serde(default)]
    pii: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    regex: Vec<RawPattern>,
    #[serde(default)]
    words: Vec<String>,
    #[serde(default)]
    max_prompt_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPattern {
    name: String,
    pattern: String,
}

/// `routes[].guardrails[]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawRouteGuardrail {
    policy: String,
    stage: String,
}

/// Names of policies and custom patterns go into metadata, between separators
/// (`:`, `;`, `,`): they keep to a plain alphabet.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Names a custom pattern cannot take: the built-in detectors' and the others'.
const RESERVED: [&str; 11] = [
    "email",
    "phone",
    "card",
    "ssn",
    "iban",
    "ip",
    "awsAccessKey",
    "privateKey",
    "apiKey",
    "words",
    "maxPromptBytes",
];

impl RawGuardrail {
    fn compile(self, p: &str) -> Result<GuardrailPolicy, ConfigError> {
        if !plain_name(&self.name) {
            return Err(err(
                format!("{p}.name"),
                "must be letters, digits, '-', '_' or '.' (it names the policy in metadata and errors)",
            ));
        }
        let action = match self.action.as_str() {
            "block" => GuardAction::Block,
            "mask" => GuardAction::Mask,
            "log" => GuardAction::Log,
            other => {
                return Err(err(
                    format!("{p}.action"),
                    format!("'{other}' is not an action: block, mask or log"),
                ))
            }
        };
        let d = self.detectors;
        let dp = format!("{p}.detectors");
        // The detectors in order, each with the path that names it.
        let mut list: Vec<(Kind, Option<String>)> = Vec::new();
        let mut paths: Vec<String> = Vec::new();
        let mut add = |kind: Kind, pattern: Option<String>, path: String| {
            if list.iter().any(|(k, _)| *k == kind) {
                return Err(err(path, format!("'{}' is listed twice", kind.name())));
            }
            list.push((kind, pattern));
            paths.push(path);
            Ok(())
        };
        for (i, name) in d.pii.iter().enumerate() {
            let path = format!("{dp}.pii[{i}]");
            let kind = Kind::pii(name).ok_or_else(|| {
                err(
                    &path,
                    format!("'{name}' is not a PII detector: email, phone, card, ssn, iban or ip"),
                )
            })?;
            add(kind, None, path)?;
        }
        for (i, name) in d.secrets.iter().enumerate() {
            let path = format!("{dp}.secrets[{i}]");
            let kind = Kind::secret(name).ok_or_else(|| {
                err(
                    &path,
                    format!(
                        "'{name}' is not a secret detector: awsAccessKey, privateKey or apiKey"
                    ),
                )
            })?;
            add(kind, None, path)?;
        }
        for (i, r) in d.regex.into_iter().enumerate() {
            let rp = format!("{dp}.regex[{i}]");
            if !plain_name(&r.name) || RESERVED.contains(&r.name.as_str()) {
                return Err(err(
                    format!("{rp}.name"),
                    "must be letters, digits, '-', '_' or '.', and not a built-in detector's name",
                ));
            }
            add(
                Kind::Custom(r.name),
                Some(r.pattern),
                format!("{rp}.pattern"),
            )?;
        }
        if !d.words.is_empty() {
            for (i, w) in d.words.iter().enumerate() {
                let w = w.trim();
                let wordish = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                if !wordish(w.chars().next()) || !wordish(w.chars().last()) {
                    return Err(err(
                        format!("{dp}.words[{i}]"),
                        "must begin and end with a letter or digit (words match whole)",
                    ));
                }
            }
            let pattern = Detectors::words_pattern(&d.words);
            add(Kind::Words, Some(pattern), format!("{dp}.words"))?;
        }
        let max_prompt_bytes = match d.max_prompt_bytes {
            Some(0) => {
                return Err(err(
                    format!("{dp}.maxPromptBytes"),
                    "must be at least 1 (leave it out for no cap)",
                ))
            }
            Some(_) if action == GuardAction::Mask => {
                return Err(err(
                    format!("{dp}.maxPromptBytes"),
                    "a prompt that is too long cannot be masked: put the cap in a policy whose action is block or log",
                ))
            }
            other => other,
        };
        if list.is_empty() && max_prompt_bytes.is_none() {
            return Err(err(dp, "must name at least one detector"));
        }
        let detectors = Detectors::compile(list).map_err(|e| {
            let path = paths.get(e.index).cloned().unwrap_or_else(|| dp.clone());
            err(path, e.message)
        })?;
        Ok(GuardrailPolicy {
            name: self.name,
            action,
            detectors,
            max_prompt_bytes,
        })
    }
}

/// Compiles `guardrails[]`; the map finds a policy's index by name.
pub(crate) fn compile_policies(
    raw: Vec<RawGuardrail>,
) -> Result<(Vec<GuardrailPolicy>, HashMap<String, usize>), ConfigError> {
    let mut policies = Vec::with_capacity(raw.len());
    let mut index = HashMap::new();
    for (i, r) in raw.into_iter().enumerate() {
        let p = format!("guardrails[{i}]");
        let policy = r.compile(&p)?;
        if let Some(first) = index.insert(policy.name.clone(), i) {
            return Err(err(
                format!("{p}.name"),
                format!(
                    "duplicate guardrail policy '{}' (also guardrails[{first}])",
                    policy.name
                ),
            ));
        }
        policies.push(policy);
    }
    Ok((policies, index))
}

/// Compiles a route's `guardrails` (at path `p`).
pub(crate) fn compile_route(
    raw: &[RawRouteGuardrail],
    policies: &HashMap<String, usize>,
    p: &str,
) -> Result<Vec<RouteGuardrail>, ConfigError> {
    let mut out: Vec<RouteGuardrail> = Vec::with_capacity(raw.len());
    for (j, g) in raw.iter().enumerate() {
        let gp = format!("{p}[{j}]");
        let Some(&policy) = policies.get(&g.policy) else {
            return Err(err(
                format!("{gp}.policy"),
                format!(
                    "unknown guardrail policy '{}'",
                    crate::error::clip_quoted(&g.policy, 64)
                ),
            ));
        };
        let stages: &[Stage] = match g.stage.as_str() {
            "request" => &[Stage::Request],
            "response" => &[Stage::Response],
            "both" => &[Stage::Request, Stage::Response],
            other => {
                return Err(err(
                    format!("{gp}.stage"),
                    format!(
                        "'{}' is not a stage: request, response or both",
                        crate::error::clip_quoted(other, 64)
                    ),
                ))
            }
        };
        for &stage in stages {
            if out.iter().any(|o| o.policy == policy && o.stage == stage) {
                return Err(err(
                    format!("{gp}.policy"),
                    format!("policy '{}' is attached twice at this stage", g.policy),
                ));
            }
            out.push(RouteGuardrail { policy, stage });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::config::{Config, ConfigError};

    fn load(policies: Value, attached: Value) -> Result<Config, ConfigError> {
        let doc = json!({
            "version": "v1",
            "guardrails": policies,
            "backends": [{"name": "b", "schema": {"name": "OpenAI"}}],
            "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "b"}],
                        "guardrails": attached}]
        });
        Config::from_json(doc.to_string().as_bytes())
    }

    fn pii() -> Value {
        json!([{"name": "pii", "action": "mask", "detectors": {"pii": ["email"]}}])
    }

    #[test]
    fn a_valid_policy_loads() {
        let c = load(
            json!([{"name": "all", "action": "log", "detectors": {
                "pii": ["email", "phone", "card", "ssn", "iban", "ip"],
                "secrets": ["awsAccessKey", "privateKey", "apiKey"],
                "regex": [{"name": "ticket", "pattern": "TICKET-[0-9]+"}],
                "words": ["falcon", "project x"],
                "maxPromptBytes": 10000}}]),
            json!([{"policy": "all", "stage": "request"}]),
        )
        .unwrap();
        assert_eq!(c.guardrails.len(), 1);
        assert_eq!(c.routes[0].guardrails.len(), 1);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                json!([{"name": "p", "action": "mask", "detectors": {"pii": ["email", "dna"]}}]),
                json!([]),
                "guardrails[0].detectors.pii[1]",
            ),
            (
                json!([{"name": "p", "action": "mask", "detectors": {"secrets": ["password"]}}]),
                json!([]),
                "guardrails[0].detectors.secrets[0]",
            ),
            (
                json!([{"name": "p", "action": "log", "detectors": {
                    "regex": [{"name": "ok", "pattern": "a+"}, {"name": "bad", "pattern": "(a"}]}}]),
                json!([]),
                "guardrails[0].detectors.regex[1].pattern",
            ),
            (
                json!([{"name": "p", "action": "log", "detectors": {
                    "regex": [{"name": "lookahead", "pattern": "a(?=b)"}]}}]),
                json!([]),
                "guardrails[0].detectors.regex[0].pattern",
            ),
            (
                json!([{"name": "p", "action": "log", "detectors": {
                    "regex": [{"name": "email", "pattern": "x"}]}}]),
                json!([]),
                "guardrails[0].detectors.regex[0].name",
            ),
            (
                json!([{"name": "p", "action": "log", "detectors": {"words": ["ok", "c++"]}}]),
                json!([]),
                "guardrails[0].detectors.words[1]",
            ),
            (
                json!([{"name": "p", "action": "mask", "detectors": {"maxPromptBytes": 100}}]),
                json!([]),
                "guardrails[0].detectors.maxPromptBytes",
            ),
            (
                json!([{"name": "p", "action": "warn", "detectors": {"pii": ["email"]}}]),
                json!([]),
                "guardrails[0].action",
            ),
            (
                json!([{"name": "p", "action": "log", "detectors": {}}]),
                json!([]),
                "guardrails[0].detectors",
            ),
            (
                json!([{"name": "p", "action": "log", "detectors": {"pii": ["email"], "dna": []}}]),
                json!([]),
                "guardrails[0].detectors.dna",
            ),
            (
                json!([{"name": "a:b", "action": "log", "detectors": {"pii": ["email"]}}]),
                json!([]),
                "guardrails[0].name",
            ),
            (
                {
                    let mut v = pii();
                    let first = v[0].clone();
                    v.as_array_mut().unwrap().push(first);
                    v
                },
                json!([]),
                "guardrails[1].name",
            ),
            (
                pii(),
                json!([{"policy": "pii", "stage": "request"}, {"policy": "nope", "stage": "request"}]),
                "routes[0].guardrails[1].policy",
            ),
            (
                pii(),
                json!([{"policy": "pii", "stage": "both"}, {"policy": "pii", "stage": "response"}]),
                "routes[0].guardrails[1].policy",
            ),
            (
                pii(),
                json!([{"policy": "pii", "stage": "answers"}]),
                "routes[0].guardrails[0].stage",
            ),
            (pii(), json!([{"policy": "pii"}]), "routes[0].guardrails[0]"),
        ];
        for (policies, attached, path) in cases {
            let e = load(policies.clone(), attached.clone())
                .expect_err(&format!("{policies} {attached}"));
            assert_eq!(e.path, path, "{e}");
        }
        let c = load(pii(), json!([{"policy": "pii", "stage": "both"}])).unwrap();
        let stages: Vec<crate::policy::guardrail::Stage> =
            c.routes[0].guardrails.iter().map(|g| g.stage).collect();
        assert_eq!(
            stages,
            [
                crate::policy::guardrail::Stage::Request,
                crate::policy::guardrail::Stage::Response
            ]
        );
    }
}
