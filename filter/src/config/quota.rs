//! The configuration of who is asking, what answers cost and what they may spend:
//! `identity`, `prices` (top level and per backend), `quota` (embedded or fleet
//! counting) and `routes[].budgets`, with `routes[].rateLimit.per`.

use serde::Deserialize;

use super::backend::err;
use super::ConfigError;
use crate::metering::prices::{normalize, ModelPrice, Price, CURRENCIES};
use crate::policy::budget::{Budget, BudgetAction, Period, Scope};
use crate::policy::identity::IdentitySource;

/// `identity`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawIdentity {
    header: String,
    #[serde(default)]
    hash: Option<bool>,
}

impl RawIdentity {
    pub(crate) fn compile(self, p: &str) -> Result<IdentitySource, ConfigError> {
        let header = self.header.trim().to_ascii_lowercase();
        if header.is_empty()
            || !header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(err(format!("{p}.header"), "must be a header name"));
        }
        Ok(IdentitySource {
            header,
            hash: self.hash.unwrap_or(true),
        })
    }
}

/// How limits and budgets are counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QuotaMode {
    /// In the Envoy process (the default).
    #[default]
    Embedded,
    /// By a rate-limit service Envoy's rate-limit filter asks (see
    /// [`crate::policy::fleet`]).
    Fleet,
}

/// `quota`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawQuota {
    mode: String,
}

impl RawQuota {
    pub(crate) fn compile(self, p: &str) -> Result<QuotaMode, ConfigError> {
        match self.mode.as_str() {
            "embedded" => Ok(QuotaMode::Embedded),
            "fleet" => Ok(QuotaMode::Fleet),
            other => Err(err(
                format!("{p}.mode"),
                format!("'{other}' is not a mode: embedded or fleet"),
            )),
        }
    }
}

/// A price, in `prices[]` or `backends[].prices[]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawPrice {
    #[serde(default)]
    model: Option<String>,
    currency: String,
    input: f64,
    #[serde(default)]
    cached_input: Option<f64>,
    #[serde(default)]
    cache_write: Option<f64>,
    output: f64,
}

fn currency(code: &str, p: &str) -> Result<String, ConfigError> {
    if CURRENCIES.binary_search(&code).is_err() {
        return Err(err(
            p,
            format!("'{code}' is not an ISO 4217 currency code the gateway knows (USD, EUR, ...)"),
        ));
    }
    Ok(code.to_string())
}

impl RawPrice {
    /// `model_required`: a top-level price names its model; a backend's may not
    /// (then it prices every model of the backend).
    pub(crate) fn compile(self, model_required: bool, p: &str) -> Result<ModelPrice, ConfigError> {
        let model = match self.model {
            Some(m) if !m.trim().is_empty() => Some(normalize(&m)),
            Some(_) => return Err(err(format!("{p}.model"), "must not be empty")),
            None if model_required => return Err(err(p, "missing field `model`")),
            None => None,
        };
        let currency = currency(&self.currency, &format!("{p}.currency"))?;
        let amount = |v: f64, field: &str| {
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(err(
                    format!("{p}.{field}"),
                    "must be a price per million tokens, 0 or more",
                ))
            }
        };
        let input = amount(self.input, "input")?;
        Ok(ModelPrice {
            model,
            price: Price {
                currency,
                input,
                cached_input: amount(self.cached_input.unwrap_or(input), "cachedInput")?,
                cache_write: amount(self.cache_write.unwrap_or(input), "cacheWrite")?,
                output: amount(self.output, "output")?,
            },
        })
    }
}

/// `routes[].budgets[]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawBudget {
    name: String,
    limit: f64,
    currency: String,
    period: String,
    #[serde(default)]
    utc_offset: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    alert_at_percent: Vec<u32>,
    #[serde(default)]
    throttle_requests_per_minute: Option<u64>,
    #[serde(default)]
    per: Option<String>,
}

pub(crate) fn scope(per: Option<&str>, p: &str) -> Result<Scope, ConfigError> {
    match per.unwrap_or("route") {
        "route" => Ok(Scope::Route),
        "tenant" => Ok(Scope::Tenant),
        "identity" => Ok(Scope::Identity),
        other => Err(err(
            p,
            format!("'{other}' is not a scope: route, tenant or identity"),
        )),
    }
}

/// `+02:00`, `-05:30`, `UTC` or `Z` → seconds east of UTC.
fn utc_offset(s: &str, p: &str) -> Result<i64, ConfigError> {
    let bad = || {
        err(
            p,
            format!("'{s}' is not a UTC offset (+HH:MM or -HH:MM, or UTC); named time zones are not supported"),
        )
    };
    if matches!(s, "UTC" | "Z" | "+00:00" | "-00:00") {
        return Ok(0);
    }
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (i64, i64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

impl RawBudget {
    pub(crate) fn compile(self, fleet: bool, p: &str) -> Result<Budget, ConfigError> {
        let name = self.name.trim().to_string();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(err(
                format!("{p}.name"),
                "must be letters, digits, '-', '_' or '.' (it names the budget in counts and descriptors)",
            ));
        }
        if !self.limit.is_finite() || self.limit <= 0.0 {
            return Err(err(format!("{p}.limit"), "must be an amount above 0"));
        }
        let limit = (self.limit * 1_000_000.0).round();
        if limit >= u64::MAX as f64 / 2.0 {
            return Err(err(format!("{p}.limit"), "is too large"));
        }
        let currency = currency(&self.currency, &format!("{p}.currency"))?;
        let period = match self.period.as_str() {
            "daily" => Period::Daily,
            "weekly" => Period::Weekly,
            "monthly" => Period::Monthly,
            other => {
                return Err(err(
                    format!("{p}.period"),
                    format!("'{other}' is not a period: daily, weekly or monthly"),
                ))
            }
        };
        let utc_offset_secs = match &self.utc_offset {
            Some(o) => utc_offset(o.trim(), &format!("{p}.utcOffset"))?,
            None => 0,
        };
        let action = match self.action.as_deref().unwrap_or("block") {
            "block" => BudgetAction::Block,
            "throttle" => {
                if fleet {
                    return Err(err(
                        format!("{p}.action"),
                        "fleet mode cannot throttle (a rate-limit service has no limit that starts when another is spent): use block or alert, or embedded mode",
                    ));
                }
                let rpm = self.throttle_requests_per_minute.unwrap_or(1);
                if rpm == 0 {
                    return Err(err(
                        format!("{p}.throttleRequestsPerMinute"),
                        "must be at least 1 (use block to refuse every request)",
                    ));
                }
                BudgetAction::Throttle {
                    requests_per_minute: rpm,
                }
            }
            "alert" => {
                let mut at = self.alert_at_percent.clone();
                if at.is_empty() {
                    at.push(100);
                }
                if let Some(bad) = at.iter().position(|&v| v == 0 || v > 1000) {
                    return Err(err(
                        format!("{p}.alertAtPercent[{bad}]"),
                        "must be between 1 and 1000",
                    ));
                }
                if fleet && at != [100] {
                    return Err(err(
                        format!("{p}.alertAtPercent"),
                        "fleet mode alerts when the budget is spent (the rate-limit service's shadow mode), not at other thresholds",
                    ));
                }
                at.sort_unstable();
                at.dedup();
                BudgetAction::Alert { at_percent: at }
            }
            other => {
                return Err(err(
                    format!("{p}.action"),
                    format!("'{other}' is not an action: block, throttle or alert"),
                ))
            }
        };
        Ok(Budget {
            name,
            limit: limit as u64,
            currency,
            period,
            utc_offset_secs,
            action,
            scope: scope(self.per.as_deref(), &format!("{p}.per"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        assert_eq!(utc_offset("+02:00", "p"), Ok(7200));
        assert_eq!(utc_offset("-05:30", "p"), Ok(-(5 * 3600 + 1800)));
        assert_eq!(utc_offset("UTC", "p"), Ok(0));
        for bad in ["Europe/Paris", "+2", "+15:00", "+02:60", "02:00", "+002:00"] {
            assert!(utc_offset(bad, "p").is_err(), "{bad}");
        }
    }
}
