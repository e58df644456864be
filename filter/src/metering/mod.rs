//! Metering: token usage read from answers, the costs computed from it, and the
//! dynamic metadata every served request gets (the pipeline's `Meter` and `Report`
//! steps).

pub mod cost;
pub mod prices;
pub mod usage;

use std::time::Duration;

use crate::config::Route;
use crate::host::{Action, Headers, LogLevel, MetadataValue, Status};
use crate::machine::pipeline::{Chunk, Cx, ResponseStep};
use cost::CostInputs;
use usage::{BodyFormat, MeterOptions, ResponseMeter};

/// Pipeline step: reads token usage from a 2xx answer as the client gets it (JSON
/// or SSE, gzip included), whatever the chunk boundaries, and removes the usage
/// chunk the gateway asked for on the client's behalf.
pub(crate) struct Meter;

impl ResponseStep for Meter {
    fn on_headers(
        &self,
        cx: &mut Cx<'_>,
        headers: &dyn Headers,
        _end_of_stream: bool,
        out: &mut Vec<Action>,
    ) -> Status {
        if !(200..300).contains(&cx.resp.status) {
            return Status::Continue;
        }
        let content_type = headers.get("content-type");
        let event_stream = content_type
            .as_deref()
            .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
        // Audio, images, plain text: bytes with no usage in them, not kept to parse.
        let json = content_type.as_deref().is_none_or(|ct| {
            ct.as_bytes()
                .windows(4)
                .any(|w| w.eq_ignore_ascii_case(b"json"))
        });
        if !(event_stream || json) {
            return Status::Continue;
        }
        let gzip = headers
            .get("content-encoding")
            .is_some_and(|ce| ce.to_ascii_lowercase().contains("gzip"));
        let strip_usage_chunk = cx.req.injected_usage && event_stream && !gzip;
        if strip_usage_chunk {
            out.push(Action::RemoveHeader {
                name: "content-length".into(),
            });
        }
        cx.resp.meter = Some(ResponseMeter::new(MeterOptions {
            format: if event_stream {
                BodyFormat::EventStream
            } else {
                BodyFormat::Json
            },
            gzip,
            strip_usage_chunk,
            max_buffered: cx.config.limits.max_response_body_bytes as usize,
        }));
        Status::Continue
    }

    fn on_body(&self, cx: &mut Cx<'_>, chunk: &mut Chunk<'_>, _out: &mut Vec<Action>) -> Status {
        if let Some(meter) = cx.resp.meter.as_mut() {
            if let Some(rewritten) = meter.feed(chunk.bytes(), chunk.end_of_stream, cx.now) {
                chunk.replace(rewritten);
            }
        }
        Status::Continue
    }

    /// The answer's cost, for the steps after: its usage at its backend's price for
    /// the model it names, else the model sent, else the model asked for.
    fn on_end(&self, cx: &mut Cx<'_>, _complete: bool, _out: &mut Vec<Action>) {
        let Some(meter) = cx.resp.meter.as_ref() else {
            return;
        };
        let Some(usage) = meter.usage() else { return };
        let backend = cx.resp.backend.clone().or_else(|| {
            let route = cx.route()?;
            (route.backends.len() == 1).then(|| route.backends[0].name.clone())
        });
        let models = [
            meter.response_model().unwrap_or(""),
            cx.resp.model_override.as_deref().unwrap_or(""),
            cx.req.model.as_str(),
        ];
        cx.resp.cost = cx
            .config
            .price(backend.as_deref(), &models)
            .map(|p| p.cost(&usage));
    }
}

/// Pipeline step: at the end of the stream, writes the request's dynamic metadata:
/// names, the answer's model, streaming latencies and costs.
pub(crate) struct Report;

impl ResponseStep for Report {
    fn on_end(&self, cx: &mut Cx<'_>, _complete: bool, out: &mut Vec<Action>) {
        let Some(route) = cx.route() else { return };
        let backend = cx.resp.backend.clone().or_else(|| {
            // One backend: no need for the upstream instance to say which.
            (route.backends.len() == 1).then(|| route.backends[0].name.clone())
        });
        route_metadata(route, &cx.req.model, cx.req.identity.as_deref(), out);
        let mut set = |key: &str, value: MetadataValue| {
            out.push(Action::SetMetadata {
                key: key.to_string(),
                value,
            })
        };
        if let Some(b) = &backend {
            set("backend_name", MetadataValue::String(b.clone()));
        }
        if let Some(m) = &cx.resp.model_override {
            set("model_name_override", MetadataValue::String(m.clone()));
        }
        if cx.resp.cache_key.is_some() {
            set("cache", MetadataValue::String("miss".into()));
        }
        if let Some(cost) = &cx.resp.cost {
            set(COST_KEY, MetadataValue::Number(cost.micro as f64));
            set(
                COST_CURRENCY_KEY,
                MetadataValue::String(cost.currency.clone()),
            );
        }
        let Some(meter) = cx.resp.meter.as_ref() else {
            return;
        };
        if let Some(m) = meter.response_model() {
            set("response_model", MetadataValue::String(m.to_string()));
        }
        let usage = meter.usage();
        if cx.req.stream {
            if let Some(first) = meter.first_event_at() {
                let ttft = first.saturating_sub(cx.req.started_at);
                set("token_latency_ttft", MetadataValue::Number(ms(ttft)));
                let last = meter.last_event_at().unwrap_or(first);
                let steps = usage
                    .map(|u| u.output_tokens)
                    .filter(|&n| n > 1)
                    .unwrap_or(meter.content_events())
                    .saturating_sub(1);
                let itl = if steps == 0 {
                    0.0
                } else {
                    ms(last.saturating_sub(first)) / steps as f64
                };
                set("token_latency_itl", MetadataValue::Number(itl));
            }
        }
        let Some(usage) = usage else { return };
        let mut logs = Vec::new();
        let inputs = CostInputs {
            model: &cx.req.model,
            backend: backend.as_deref().unwrap_or(""),
            route_name: &route.name,
            usage: &usage,
        };
        for cost in &route.costs {
            match cost.evaluate(&inputs) {
                Ok(v) => set(&cost.metadata_key, MetadataValue::Number(v as f64)),
                Err(e) => logs.push(Action::Log {
                    level: LogLevel::Warn,
                    message: format!("cost '{}' not written: {e}", cost.metadata_key),
                }),
            }
        }
        out.extend(logs);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The metadata key of a request's cost in micro-units of its currency (1 USD is
/// 1,000,000), whether or not the route has costs of its own.
pub const COST_KEY: &str = "llm_cost";
/// The currency of [`COST_KEY`].
pub const COST_CURRENCY_KEY: &str = "llm_cost_currency";

/// The metadata of every request a route served: its name, its fixed metadata and
/// the model asked for.
pub(crate) fn route_metadata(
    route: &Route,
    model: &str,
    identity: Option<&str>,
    out: &mut Vec<Action>,
) {
    let fixed = route.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let identity = identity.map(|i| ("identity", i));
    for (key, value) in [
        ("route_name", route.name.as_str()),
        ("request_model", model),
    ]
    .into_iter()
    .chain(identity)
    .chain(fixed)
    {
        out.push(Action::SetMetadata {
            key: key.into(),
            value: MetadataValue::String(value.into()),
        });
    }
}
