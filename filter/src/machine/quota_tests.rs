//! Identities, prices, budgets and limits driven through `HttpFilter` as a host
//! would: what a request reserves, what its answer settles, what is refused, and
//! what fleet mode writes for the rate-limit service instead of counting.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::config::Config;
use crate::host::{Action, Counter, MetadataValue, Status};

/// 2026-12-07T12:00:00Z.
const NOW_MS: u64 = 1_796_644_800_000;

/// One OpenAI route priced at 1 micro-dollar per input token and 2 per output
/// token, with `budgets` and `rate_limit`, identities from `x-api-key`.
fn config(budgets: Value, rate_limit: Value, quota: &str) -> Arc<Config> {
    let doc = json!({
        "version": "v1",
        "identity": {"header": "x-api-key"},
        "quota": {"mode": quota},
        "backends": [{"name": "b", "schema": {"name": "OpenAI"},
                      "prices": [{"currency": "USD", "input": 1.0, "output": 2.0}]}],
        "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "b"}],
                    "metadata": {"tenant": "team-a"},
                    "budgets": budgets, "rateLimit": rate_limit}]
    });
    Arc::new(Config::from_json(doc.to_string().as_bytes()).unwrap())
}

fn budget(action: Value) -> Value {
    let mut b = json!({"name": "monthly", "limit": 0.0001, "currency": "USD",
                       "period": "monthly", "per": "identity"});
    b.as_object_mut()
        .unwrap()
        .extend(action.as_object().unwrap().clone());
    json!([b])
}

fn t(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// 69 bytes: an estimate of 18 input tokens and 10 output tokens, 38 micro-dollars.
const BODY: &[u8] = br#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"x"}]}"#;

struct Done {
    status: Status,
    out: Vec<Action>,
    filter: HttpFilter,
}

/// A request from `key` at `now_ms`; when admitted, answered with `usage` (prompt,
/// completion tokens) unless `answer` is false (the filter then still waits).
fn request(config: &Arc<Config>, key: &str, now_ms: u64, usage: Option<(u64, u64)>) -> Done {
    let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
    f.set_unix_millis(now_ms);
    let mut out = Vec::new();
    let h = [
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        ("x-api-key", key),
    ];
    let _ = f.on_request_headers(&h, false, t(0), &mut out);
    let status = f.on_request_body(BODY, true, t(1), &mut out);
    if status == Status::Continue {
        if let Some((p, c)) = usage {
            let _ = f.on_response_headers(
                &[(":status", "200"), ("content-type", "application/json")],
                false,
                t(2),
                &mut out,
            );
            let body = json!({"model": "m", "choices": [],
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}});
            let _ = f.on_response_body(body.to_string().as_bytes(), true, t(3), &mut out);
        }
    }
    Done {
        status,
        out,
        filter: f,
    }
}

fn refused(d: &Done) -> Option<(u16, Value)> {
    match d.out.last() {
        Some(Action::SendLocalReply { status, body, .. }) => {
            Some((*status, serde_json::from_slice(body).unwrap()))
        }
        _ => None,
    }
}

fn metadata<'a>(d: &'a Done, key: &str) -> Option<&'a MetadataValue> {
    d.out.iter().rev().find_map(|a| match a {
        Action::SetMetadata { key: k, value } if k == key => Some(value),
        _ => None,
    })
}

#[test]
fn every_answer_gets_its_cost() {
    let c = config(json!([]), json!({}), "embedded");
    let d = request(&c, "k", NOW_MS, Some((10, 5)));
    // 10 input tokens × 1 + 5 output tokens × 2.
    assert_eq!(metadata(&d, "llm_cost"), Some(&MetadataValue::Number(20.0)));
    assert_eq!(
        metadata(&d, "llm_cost_currency"),
        Some(&MetadataValue::String("USD".into()))
    );
    // The identity, hashed: never the key itself.
    let Some(MetadataValue::String(id)) = metadata(&d, "identity") else {
        panic!("{:?}", d.out)
    };
    assert_eq!(id.len(), 32);
    assert!(!d.out.iter().any(|a| format!("{a:?}").contains("\"k\"")));
}

#[test]
fn a_spent_budget_blocks_until_its_period_ends_per_identity() {
    let c = config(budget(json!({"action": "block"})), json!({}), "embedded");
    // 100 micro-dollars: 20 per answer; admitted while under.
    for _ in 0..5 {
        assert_eq!(
            request(&c, "alice", NOW_MS, Some((10, 5))).status,
            Status::Continue
        );
    }
    let d = request(&c, "alice", NOW_MS, Some((10, 5)));
    let (status, body) = refused(&d).expect("refused");
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert_eq!(body["error"]["type"], "insufficient_quota");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("'monthly'")
            && msg.contains("0.000100 USD per month")
            && msg.contains("2027-01-01T00:00:00Z"),
        "{msg}"
    );
    assert!(d.out.contains(&Action::Count(Counter::BudgetBlocked)));
    let Some(Action::SendLocalReply { headers, .. }) = d.out.last() else {
        unreachable!()
    };
    let retry: u64 = headers[0].1.parse().unwrap();
    assert_eq!(retry, 24 * 86_400 + 12 * 3600, "until 2027-01-01");
    // Another identity has its own budget.
    assert_eq!(
        request(&c, "bob", NOW_MS, Some((10, 5))).status,
        Status::Continue
    );
    // The next month starts over.
    let january = 1_798_761_600_000; // 2027-01-01T00:00:00Z
    assert_eq!(
        request(&c, "alice", january, Some((10, 5))).status,
        Status::Continue
    );
}

#[test]
fn a_burst_overshoots_by_at_most_one_estimate() {
    let c = config(budget(json!({"action": "block"})), json!({}), "embedded");
    // 20 requests in flight at once, none answered yet: each reserves its 38
    // micro-dollar estimate, so only those that find room are admitted.
    let burst: Vec<Done> = (0..20)
        .map(|_| request(&c, "alice", NOW_MS, None))
        .collect();
    let admitted: Vec<&Done> = burst
        .iter()
        .filter(|d| d.status == Status::Continue)
        .collect();
    assert_eq!(
        admitted.len(),
        3,
        "0, 38, 76 < 100: three admitted, the rest refused"
    );
    // The reservations are what is counted: at most one estimate over the limit.
    let alice = c.identity.as_ref().unwrap().identify("alice").unwrap();
    let month = crate::policy::budget::Period::Monthly
        .at(NOW_MS / 1000, 0)
        .index;
    let counted = c.counts().get(&format!("budget/r/monthly/{alice}"), month);
    assert_eq!(counted, 3 * 38);
    assert!(counted <= 100 + 38);
}

#[test]
fn answers_settle_their_reservation() {
    let c = config(budget(json!({"action": "block"})), json!({}), "embedded");
    let mut a = request(&c, "alice", NOW_MS, None);
    assert_eq!(a.status, Status::Continue);
    // 38 reserved; the answer costs 4: 96 left for others.
    let mut out = Vec::new();
    let _ = a.filter.on_response_headers(
        &[(":status", "200"), ("content-type", "application/json")],
        false,
        t(2),
        &mut out,
    );
    let body = json!({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}});
    let _ = a
        .filter
        .on_response_body(body.to_string().as_bytes(), true, t(3), &mut out);
    // Three 38-micro estimates fit in 96 (0, 4+38, 4+76 are under 100 when each arrives).
    let more: usize = (0..5)
        .map(|_| request(&c, "alice", NOW_MS, None))
        .filter(|d| d.status == Status::Continue)
        .count();
    assert_eq!(more, 3);
}

#[test]
fn alerts_pass_and_say_so_from_their_threshold() {
    let c = config(
        budget(json!({"action": "alert", "alertAtPercent": [50, 100]})),
        json!({}),
        "embedded",
    );
    let first = request(&c, "alice", NOW_MS, Some((10, 5)));
    assert!(!first
        .out
        .iter()
        .any(|a| matches!(a, Action::Count(Counter::BudgetAlert))));
    // 20 + 20 + 20 = 60 spent: the fourth request starts at 60% of the limit.
    for _ in 0..2 {
        let _ = request(&c, "alice", NOW_MS, Some((10, 5)));
    }
    let d = request(&c, "alice", NOW_MS, Some((10, 5)));
    assert_eq!(d.status, Status::Continue);
    assert!(d.out.contains(&Action::Count(Counter::BudgetAlert)));
    assert!(d.out.contains(&Action::SetHeader {
        name: crate::policy::budget::BUDGET_ALERT_HEADER.into(),
        value: "monthly:50%".into()
    }));
    assert_eq!(
        metadata(&d, "budget_alert"),
        Some(&MetadataValue::String("monthly:50%".into()))
    );
    for _ in 0..2 {
        let _ = request(&c, "alice", NOW_MS, Some((10, 5)));
    }
    let d = request(&c, "alice", NOW_MS, Some((10, 5)));
    assert_eq!(d.status, Status::Continue, "alerts never refuse");
    assert_eq!(
        metadata(&d, "budget_alert"),
        Some(&MetadataValue::String("monthly:100%".into()))
    );
}

#[test]
fn a_spent_throttled_budget_lets_a_few_through() {
    let c = config(
        budget(json!({"action": "throttle", "throttleRequestsPerMinute": 2})),
        json!({}),
        "embedded",
    );
    for _ in 0..5 {
        assert_eq!(
            request(&c, "alice", NOW_MS, Some((10, 5))).status,
            Status::Continue
        );
    }
    // Spent: two a minute, then 429 until the next minute.
    let ok: Vec<Status> = (0..4)
        .map(|_| request(&c, "alice", NOW_MS, Some((10, 5))).status)
        .collect();
    assert_eq!(ok.iter().filter(|s| **s == Status::Continue).count(), 2);
    let d = request(&c, "alice", NOW_MS, None);
    let (status, body) = refused(&d).unwrap();
    assert_eq!(status, 429);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("throttled"));
    assert_eq!(
        request(&c, "alice", NOW_MS + 60_000, None).status,
        Status::Continue
    );
}

#[test]
fn token_limits_per_identity_reserve_too() {
    let c = config(
        json!([]),
        json!({"tokensPerMinute": 60, "per": "identity"}),
        "embedded",
    );
    // Each request reserves 18 + 10 = 28 tokens; one is admitted while the count is
    // under the limit (0, 28, 56), so the fourth is refused before any answer.
    let burst: Vec<Status> = (0..4)
        .map(|_| request(&c, "alice", NOW_MS, None).status)
        .collect();
    assert_eq!(
        burst,
        [
            Status::Continue,
            Status::Continue,
            Status::Continue,
            Status::StopIteration
        ]
    );
    assert_eq!(request(&c, "bob", NOW_MS, None).status, Status::Continue);
}

#[test]
fn fleet_mode_writes_descriptors_and_charges_and_counts_nothing() {
    let c = config(
        budget(json!({"action": "block"})),
        json!({"tokensPerMinute": 10}),
        "fleet",
    );
    for _ in 0..10 {
        let d = request(&c, "alice", NOW_MS, Some((10, 5)));
        assert_eq!(d.status, Status::Continue, "the rate-limit service decides");
        assert_eq!(
            metadata(&d, "rl_route"),
            Some(&MetadataValue::String("r".into()))
        );
        assert_eq!(
            metadata(&d, "rl_tenant"),
            Some(&MetadataValue::String("team-a".into()))
        );
        assert!(
            matches!(metadata(&d, "rl_identity"), Some(MetadataValue::String(s)) if s.len() == 32)
        );
        assert_eq!(
            metadata(&d, "rl_period_monthly"),
            Some(&MetadataValue::String("2026-12".into()))
        );
        assert_eq!(
            metadata(&d, "rl_tokens"),
            Some(&MetadataValue::Number(15.0))
        );
        assert_eq!(metadata(&d, "rl_cost"), Some(&MetadataValue::Number(20.0)));
    }
    // A stream that ends early is charged its estimate.
    let mut d = request(&c, "alice", NOW_MS, None);
    let mut out = Vec::new();
    d.filter.on_stream_complete(t(9), &mut out);
    d.out = out;
    assert_eq!(
        metadata(&d, "rl_tokens"),
        Some(&MetadataValue::Number(28.0))
    );
    assert_eq!(metadata(&d, "rl_cost"), Some(&MetadataValue::Number(38.0)));
}

#[test]
fn bad_budgets_name_the_field() {
    let refuse = |budgets: Value, quota: &str| {
        let doc = json!({"version": "v1", "identity": {"header": "x-api-key"}, "quota": {"mode": quota},
            "backends": [{"name": "b", "schema": {"name": "OpenAI"}}],
            "routes": [{"name": "r", "models": ["m"], "backends": [{"name": "b"}], "budgets": budgets}]});
        Config::from_json(doc.to_string().as_bytes())
            .map(|_| "accepted".to_string())
            .unwrap_or_else(|e| e.to_string())
    };
    let b = |extra: Value| {
        let mut b = json!({"name": "m", "limit": 10, "currency": "USD", "period": "monthly"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!([b])
    };
    for (budgets, quota, path, why) in [
        (
            b(json!({"currency": "XYZ"})),
            "embedded",
            "routes[0].budgets[0].currency",
            "ISO 4217",
        ),
        (
            b(json!({"limit": -5})),
            "embedded",
            "routes[0].budgets[0].limit",
            "above 0",
        ),
        (
            b(json!({"period": "hourly"})),
            "embedded",
            "routes[0].budgets[0].period",
            "daily, weekly or monthly",
        ),
        (
            b(json!({"action": "throttle"})),
            "fleet",
            "routes[0].budgets[0].action",
            "fleet mode cannot throttle",
        ),
        (
            b(json!({"action": "alert", "alertAtPercent": [80]})),
            "fleet",
            "routes[0].budgets[0].alertAtPercent",
            "fleet mode",
        ),
        (
            b(json!({"utcOffset": "Europe/Paris"})),
            "embedded",
            "routes[0].budgets[0].utcOffset",
            "named time zones",
        ),
        (
            b(json!({"per": "tenant"})),
            "embedded",
            "routes[0].metadata.tenant",
            "is required",
        ),
        (
            b(json!({"name": "a b"})),
            "embedded",
            "routes[0].budgets[0].name",
            "letters, digits",
        ),
    ] {
        let e = refuse(budgets.clone(), quota);
        assert!(
            e.contains(&format!("`{path}`")) && e.contains(why),
            "{budgets}\n{e}"
        );
    }
}

#[test]
fn a_failed_answer_is_charged_nothing() {
    // Fleet: the rate-limit service's own 429 (or a provider's error) charges 0.
    let c = config(
        budget(json!({"action": "block"})),
        json!({"tokensPerMinute": 10}),
        "fleet",
    );
    let mut d = request(&c, "alice", NOW_MS, None);
    let mut out = Vec::new();
    let _ = d.filter.on_response_headers(
        &[(":status", "429"), ("x-envoy-ratelimited", "true")],
        true,
        t(2),
        &mut out,
    );
    d.out = out;
    assert_eq!(metadata(&d, "rl_tokens"), Some(&MetadataValue::Number(0.0)));
    assert_eq!(metadata(&d, "rl_cost"), Some(&MetadataValue::Number(0.0)));
    // Embedded: a provider's 500 gives back what was reserved.
    let c = config(budget(json!({"action": "block"})), json!({}), "embedded");
    let alice = c.identity.as_ref().unwrap().identify("alice").unwrap();
    let name = format!("budget/r/monthly/{alice}");
    let month = crate::policy::budget::Period::Monthly
        .at(NOW_MS / 1000, 0)
        .index;
    let mut d = request(&c, "alice", NOW_MS, None);
    assert_eq!(c.counts().get(&name, month), 38);
    let mut out = Vec::new();
    let _ = d
        .filter
        .on_response_headers(&[(":status", "500")], false, t(2), &mut out);
    let _ = d
        .filter
        .on_response_body(br#"{"error":{}}"#, true, t(3), &mut out);
    assert_eq!(c.counts().get(&name, month), 0);
}

#[test]
fn fleet_mode_flags_an_answer_without_the_services_verdict() {
    let c = config(
        budget(json!({"action": "block"})),
        json!({"tokensPerMinute": 10}),
        "fleet",
    );
    let answer = |verdict: bool| {
        let mut f = HttpFilter::new(c.clone(), FilterRole::Router);
        f.set_unix_millis(NOW_MS);
        let mut out = Vec::new();
        let h = [(":method", "POST"), (":path", "/v1/chat/completions")];
        let _ = f.on_request_headers(&h, false, t(0), &mut out);
        let _ = f.on_request_body(BODY, true, t(1), &mut out);
        let limit = if verdict {
            "x-ratelimit-limit"
        } else {
            "x-other"
        };
        let rh = [
            (":status", "200"),
            ("content-type", "application/json"),
            (limit, "10, 10;w=60"),
        ];
        let _ = f.on_response_headers(&rh, false, t(2), &mut out);
        let body = json!({"model": "m", "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}});
        let _ = f.on_response_body(body.to_string().as_bytes(), true, t(3), &mut out);
        Done {
            status: Status::Continue,
            out,
            filter: f,
        }
    };
    let checked = answer(true);
    assert_eq!(metadata(&checked, "rl_unchecked"), None);
    assert!(!checked
        .out
        .iter()
        .any(|a| matches!(a, Action::Count(Counter::FleetUnchecked))));
    let unchecked = answer(false);
    assert_eq!(
        metadata(&unchecked, "rl_unchecked"),
        Some(&MetadataValue::String("true".into()))
    );
    assert!(unchecked
        .out
        .iter()
        .any(|a| matches!(a, Action::Count(Counter::FleetUnchecked))));
    // The charge is still written: the service may be back for the stream's end.
    assert_eq!(
        metadata(&unchecked, "rl_tokens"),
        Some(&MetadataValue::Number(2.0))
    );
}
