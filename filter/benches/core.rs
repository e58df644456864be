//! Micro-benchmarks of the core's hot paths, per KiB of input, each set against a bare
//! `serde_json::from_slice::<serde_json::Value>` of the same bytes: parsing the body
//! once is the least any JSON-aware gateway does, so the ratio says what the filter
//! costs on top of that. The `bedrock` group is the exception: a Responses API
//! request translated to Bedrock Converse (and its answer back) against the same work
//! for the same chat request, so its ratio is what the Responses API costs more.
//!
//! Run: `cargo bench -p aigw-filter --bench core -- --quick` (see bench/README.md).
//! After criterion's groups the binary prints its own ratio table, timed with
//! `Instant` over interleaved batches (criterion's estimates are not reachable from
//! code without its JSON output files).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aigw_filter::config::Config;
use aigw_filter::host::{Action, Status};
use aigw_filter::machine::router::{FilterRole, HttpFilter};
use aigw_filter::metering::usage::{BodyFormat, MeterOptions, ResponseMeter};
use aigw_filter::schema::openai::ChatCompletionRequest;
use aigw_filter::translate::bedrock;
use aigw_filter::translate::plan::{self, Attempt, ClientApi};
use criterion::{Criterion, Throughput};

/// The bench gateway's configuration (bench/aigw-config.json): one route, four costs.
const CONFIG: &str = r#"{
  "version": "v1",
  "backends": [{"name": "openai", "schema": {"name": "OpenAI"}}],
  "identity": {"header": "x-api-key"},
  "routes": [
    {"name": "gpt-4o-mini", "models": ["gpt-4o-mini"], "backends": [{"name": "openai"}]},
    {"name": "limited", "models": ["gpt-4o-mini-limited"], "backends": [{"name": "openai"}],
     "rateLimit": {"tokensPerMinute": 1000000000, "per": "identity"},
     "budgets": [{"name": "monthly", "limit": 4000, "currency": "USD", "period": "monthly",
                  "action": "block", "per": "identity"}]}
  ],
  "llmRequestCosts": [
    {"metadataKey": "llm_input_token", "type": "InputToken"},
    {"metadataKey": "llm_output_token", "type": "OutputToken"},
    {"metadataKey": "llm_total_token", "type": "TotalToken"},
    {"metadataKey": "llm_cel_cost", "type": "CEL", "cel": "model == 'gpt-4o-mini' ? input_tokens + 4 * output_tokens : total_tokens"}
  ],
  "limits": {"maxRequestBodyBytes": 1048576}
}"#;

/// One Bedrock backend (bench/aigw-config.json's), for the translation cases.
const BEDROCK: &str = r#"{
  "version": "v1",
  "backends": [{"name": "bedrock", "schema": {"name": "AWSBedrock"}, "region": "us-east-1",
    "modelNameOverride": "anthropic.claude-3-5-haiku-20241022-v1:0",
    "auth": {"awsSigV4": {"accessKeyId": "AKIDBENCHEXAMPLE",
                          "secretAccessKey": "bench-secret-not-real"}}}]
}"#;

const HEADERS: [(&str, &str); 3] = [
    (":method", "POST"),
    (":path", "/v1/chat/completions"),
    ("content-type", "application/json"),
];

const JSON_RESPONSE: &[u8] = include_bytes!("../testdata/chat-basic.json");
const SSE_RESPONSE: &[u8] = include_bytes!("../testdata/chat-streaming.sse");
/// A Converse answer and a ConverseStream answer (AWS event-stream framing).
const BEDROCK_JSON: &[u8] = include_bytes!("../testdata/bedrock/response_text.bedrock.json");
const BEDROCK_STREAM: &[u8] = include_bytes!("../testdata/bedrock/stream_text.bin");

/// A chat request padded with user text to exactly `size` bytes (as bench/run.py's
/// `chat_body`, non-streaming).
fn chat_body(size: usize) -> Vec<u8> {
    let mut doc = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a concise assistant for a travel company. \
              Answer in plain English, cite the city and country, and never invent opening hours."},
            {"role": "user", "content": ""}
        ],
        "temperature": 0.2,
        "max_tokens": 256,
        "user": "bench-user-0001"
    });
    let base = serde_json::to_vec(&doc).map_or(0, |v| v.len());
    assert!(size > base, "chat body of {size} bytes is too small");
    let filler = "I am planning a long weekend in Europe and would like to know which \
                  capital is best for museums, food and walking. ";
    let mut text = String::from("What is the capital of France? ");
    while text.len() < size - base {
        text.push_str(filler);
    }
    text.truncate(size - base);
    doc["messages"][1]["content"] = text.into();
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    assert_eq!(body.len(), size);
    body
}

/// The Responses API form of `chat_body(size)` (as bench/run.py's `responses_body`):
/// the system message as `instructions`, the user text as one `input_text` part.
fn responses_body(size: usize) -> Vec<u8> {
    let chat: serde_json::Value = serde_json::from_slice(&chat_body(size)).unwrap_or_default();
    let mut doc = serde_json::json!({
        "model": "gpt-4o-mini",
        "instructions": chat["messages"][0]["content"],
        "input": [{"role": "user", "content": [{"type": "input_text", "text": ""}]}],
        "temperature": 0.2,
        "max_output_tokens": 256,
        "store": false
    });
    let base = serde_json::to_vec(&doc).map_or(0, |v| v.len());
    let text = chat["messages"][1]["content"].as_str().unwrap_or_default();
    doc["input"][0]["content"][0]["text"] = text[..size - base].into();
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    assert_eq!(body.len(), size);
    body
}

/// The streamed forms of both.
fn streamed(body: &[u8]) -> Vec<u8> {
    let mut doc: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    doc["stream"] = true.into();
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// What the upstream instance does with one attempt to Bedrock, in the client's API
/// (`Chat` or `Responses`): the request translated, then the answer, whole or
/// streamed, translated back. Returns the bytes written both ways.
fn attempt(bedrock: &Config, api: ClientApi, body: &[u8], answer: Answer) -> usize {
    let a = Attempt {
        api,
        backend: &bedrock.backends[0],
        path: if api == ClientApi::Chat {
            "/v1/chat/completions"
        } else {
            "/v1/responses"
        },
        client_model: "gpt-4o-mini",
        request_id: "0f3c2a8e-bench",
        unix_seconds: 1_796_000_000,
        max_event_bytes: 1 << 20,
        anthropic_beta: None,
    };
    let Ok(p) = plan::prepare(&a, body) else {
        return 0;
    };
    let sent = p.body.as_ref().map_or(0, Vec::len);
    let back = match answer {
        Answer::None => 0,
        Answer::Json => p.response.body(BEDROCK_JSON).map_or(0, |b| b.len()),
        Answer::Stream => {
            let mut out = Vec::new();
            if let Some(mut s) = p.response.stream() {
                s.feed(BEDROCK_STREAM, true, &mut out);
            }
            out.len()
        }
    };
    sent + back
}

#[derive(Clone, Copy, PartialEq)]
enum Answer {
    None,
    Json,
    Stream,
}

/// One request through a router instance, headers then the whole body.
fn route(config: &Arc<Config>, body: &[u8], out: &mut Vec<Action>) -> Status {
    out.clear();
    let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
    let _ = f.on_request_headers(&HEADERS, false, Duration::ZERO, out);
    f.on_request_body(body, true, Duration::ZERO, out)
}

/// A whole exchange through a router instance: the request, then the JSON answer and
/// the end of the stream; `limited` sends it to the route with a token limit and a
/// budget per identity, from one of four API keys.
fn exchange(
    config: &Arc<Config>,
    body: &[u8],
    limited: Option<&str>,
    out: &mut Vec<Action>,
) -> Status {
    out.clear();
    let mut f = HttpFilter::new(config.clone(), FilterRole::Router);
    f.set_unix_millis(1_796_000_000_000);
    let mut headers = HEADERS.to_vec();
    if let Some(key) = limited {
        headers.push(("x-api-key", key));
    }
    let _ = f.on_request_headers(&headers.as_slice(), false, Duration::ZERO, out);
    let status = f.on_request_body(body, true, Duration::ZERO, out);
    let rh = [(":status", "200"), ("content-type", "application/json")];
    let _ = f.on_response_headers(&rh, false, Duration::ZERO, out);
    let _ = f.on_response_body(JSON_RESPONSE, true, Duration::ZERO, out);
    f.on_stream_complete(Duration::ZERO, out);
    status
}

/// The 1 KiB chat body sent to the limited route.
fn limited_body() -> Vec<u8> {
    let body = chat_body(1024);
    let text =
        String::from_utf8_lossy(&body).replacen("\"gpt-4o-mini\"", "\"gpt-4o-mini-limited\"", 1);
    text.into_bytes()
}

const KEYS: [&str; 4] = ["sk-bench-1", "sk-bench-2", "sk-bench-3", "sk-bench-4"];

/// Parse and translate, as the upstream filter does with a client's body.
fn translate(body: &[u8]) -> usize {
    serde_json::from_slice::<ChatCompletionRequest>(body)
        .ok()
        .and_then(|req| bedrock::chat_request(&req, "anthropic.claude-3-haiku-20240307-v1:0").ok())
        .map_or(0, |up| up.body.len())
}

fn meter(format: BodyFormat, body: &[u8]) -> ResponseMeter {
    let mut m = ResponseMeter::new(MeterOptions {
        format,
        gzip: false,
        strip_usage_chunk: false,
        max_buffered: 1 << 20,
    });
    let _ = m.feed(body, true, Duration::ZERO);
    m
}

fn parse(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok()
}

/// The baseline of an event stream: every `data:` payload parsed on its own.
fn parse_events(body: &[u8]) -> usize {
    body.split(|&b| b == b'\n')
        .filter_map(|line| line.strip_prefix(b"data: "))
        .filter(|d| *d != b"[DONE]")
        .filter(|d| parse(d))
        .count()
}

/// One measured case: the operation and its baseline on the same bytes.
struct Case {
    name: String,
    bytes: usize,
    op: Box<dyn Fn()>,
    base: Box<dyn Fn()>,
}

/// The translation cases: the same 1 KiB request to Bedrock sent as a Responses API
/// request (the op) and as a chat request (its baseline), through the upstream
/// instance's plan: the request alone, then with its JSON or streamed answer.
fn bedrock_cases(cases: &mut Vec<Case>) {
    let bedrock = match Config::from_json(BEDROCK.as_bytes()) {
        Ok(c) => Arc::new(c),
        Err(e) => panic!("bedrock config: {e}"),
    };
    for (kind, answer) in [
        ("request", Answer::None),
        ("json", Answer::Json),
        ("stream", Answer::Stream),
    ] {
        let (mut chat, mut resp) = (chat_body(1024), responses_body(1024));
        if answer == Answer::Stream {
            (chat, resp) = (streamed(&chat), streamed(&resp));
        }
        let (b, cfg) = (bedrock.clone(), bedrock.clone());
        cases.push(Case {
            name: format!("bedrock/{kind}"),
            bytes: resp.len(),
            op: Box::new(move || {
                black_box(attempt(&b, ClientApi::Responses, black_box(&resp), answer));
            }),
            base: Box::new(move || {
                black_box(attempt(&cfg, ClientApi::Chat, black_box(&chat), answer));
            }),
        });
    }
}

fn cases(config: &Arc<Config>) -> Vec<Case> {
    let mut cases = Vec::new();
    for size in [1024, 64 * 1024] {
        let body = chat_body(size);
        let (cfg, b) = (config.clone(), body.clone());
        cases.push(Case {
            name: format!("request/router/{}k", size / 1024),
            bytes: size,
            op: Box::new(move || {
                let mut out = Vec::new();
                let _ = black_box(route(&cfg, black_box(&b), &mut out));
            }),
            base: Box::new({
                let b = body.clone();
                move || {
                    black_box(parse(black_box(&b)));
                }
            }),
        });
        let b = body.clone();
        cases.push(Case {
            name: format!("request/bedrock/{}k", size / 1024),
            bytes: size,
            op: Box::new(move || {
                black_box(translate(black_box(&b)));
            }),
            base: Box::new(move || {
                black_box(parse(black_box(&body)));
            }),
        });
    }
    // Limits: the same exchange with and without a token limit and a budget per
    // identity (the goal: under 2 µs more).
    let (cfg, plain, limited) = (config.clone(), chat_body(1024), limited_body());
    let next = std::cell::Cell::new(0usize);
    cases.push(Case {
        name: "exchange/limits".into(),
        bytes: limited.len(),
        op: Box::new(move || {
            let mut out = Vec::new();
            let key = KEYS[next.get() % KEYS.len()];
            next.set(next.get() + 1);
            let _ = black_box(exchange(&cfg, black_box(&limited), Some(key), &mut out));
        }),
        base: Box::new({
            let cfg = config.clone();
            move || {
                let mut out = Vec::new();
                let _ = black_box(exchange(&cfg, black_box(&plain), None, &mut out));
            }
        }),
    });
    cases.push(Case {
        name: "response/meter-json".into(),
        bytes: JSON_RESPONSE.len(),
        op: Box::new(|| {
            black_box(meter(BodyFormat::Json, black_box(JSON_RESPONSE)).usage());
        }),
        base: Box::new(|| {
            black_box(parse(black_box(JSON_RESPONSE)));
        }),
    });
    cases.push(Case {
        name: "response/meter-sse".into(),
        bytes: SSE_RESPONSE.len(),
        op: Box::new(|| {
            black_box(meter(BodyFormat::EventStream, black_box(SSE_RESPONSE)).content_events());
        }),
        base: Box::new(|| {
            black_box(parse_events(black_box(SSE_RESPONSE)));
        }),
    });
    bedrock_cases(&mut cases);
    cases
}

/// Refuses to time a path that does not do the real work (an error reply is cheap).
fn check(config: &Arc<Config>) {
    for size in [1024, 64 * 1024] {
        let body = chat_body(size);
        let mut out = Vec::new();
        let status = route(config, &body, &mut out);
        assert_eq!(status, Status::Continue, "router did not pass the request");
        assert!(
            out.iter().any(|a| matches!(a, Action::ClearRouteCache)),
            "router did not route: {out:?}"
        );
        assert!(translate(&body) > 0, "bedrock translation failed");
    }
    let mut out = Vec::new();
    assert_eq!(
        exchange(config, &limited_body(), Some(KEYS[0]), &mut out),
        Status::Continue
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::SetMetadata { key, .. } if key == "identity")),
        "the limited route did not count: {out:?}"
    );
    assert!(meter(BodyFormat::Json, JSON_RESPONSE).usage().is_some());
    assert!(meter(BodyFormat::EventStream, SSE_RESPONSE).content_events() > 0);
    assert!(parse_events(SSE_RESPONSE) > 0);
    let bedrock = match Config::from_json(BEDROCK.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("bedrock config: {e}"),
    };
    let (chat, resp) = (chat_body(1024), responses_body(1024));
    for api in [ClientApi::Chat, ClientApi::Responses] {
        let body = if api == ClientApi::Chat { &chat } else { &resp };
        let sent = attempt(&bedrock, api, body, Answer::None);
        assert!(sent > 0, "{api:?} to Bedrock was not translated");
        assert!(
            attempt(&bedrock, api, body, Answer::Json) > sent,
            "{api:?} JSON answer"
        );
        let s = streamed(body);
        let sent = attempt(&bedrock, api, &s, Answer::None);
        assert!(
            attempt(&bedrock, api, &s, Answer::Stream) > sent,
            "{api:?} stream"
        );
    }
}

/// Nanoseconds per call of `f`, over `iters` calls.
fn time_ns(f: &dyn Fn(), iters: u32) -> f64 {
    let t0 = Instant::now();
    for _ in 0..iters {
        f();
    }
    t0.elapsed().as_nanos() as f64 / f64::from(iters)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Op and baseline alternate in batches of ~`batch` each, so drift on a shared
/// machine hits both; medians over the batches.
fn ratios(cases: &[Case], batch: Duration, rounds: usize) {
    println!();
    println!("core cost per KiB against serde_json::from_slice::<Value> of the same bytes");
    println!(
        "{:<22} {:>8} {:>12} {:>12} {:>7}",
        "case", "bytes", "ns/KiB", "base ns/KiB", "ratio"
    );
    let mut limits = None;
    let mut bedrock = Vec::new();
    for c in cases {
        // Calibrate the batch size on the op.
        let one = time_ns(&*c.op, 3).max(1.0);
        let iters = ((batch.as_nanos() as f64 / one) as u32).max(1);
        let (mut op, mut base) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            op.push(time_ns(&*c.op, iters));
            base.push(time_ns(&*c.base, iters));
        }
        let (op, base) = (median(op), median(base));
        if c.name.starts_with("exchange/") {
            limits = Some((op, base));
        }
        if let Some(kind) = c.name.strip_prefix("bedrock/") {
            bedrock.push((kind, op, base));
        }
        let kib = c.bytes as f64 / 1024.0;
        println!(
            "{:<22} {:>8} {:>12.0} {:>12.0} {:>7.2}",
            c.name,
            c.bytes,
            op / kib,
            base / kib,
            op / base
        );
    }
    if let Some((op, base)) = limits {
        println!(
            "\nexchange with a token limit and a budget per identity: {op:.0} ns, without: \
             {base:.0} ns, limits add {:.0} ns (goal: under 2000)",
            op - base
        );
    }
    if !bedrock.is_empty() {
        println!("\n1 KiB to Bedrock Converse, Responses API against chat (goal: ratio <= 1.05)");
        println!(
            "{:<22} {:>12} {:>12} {:>7}",
            "work", "responses ns", "chat ns", "ratio"
        );
        for (kind, op, base) in bedrock {
            println!("{kind:<22} {op:>12.0} {base:>12.0} {:>7.2}", op / base);
        }
    }
}

/// `--count CASE op|base N`: only runs one side of one case N times, for counting
/// instructions on a busy machine, where time is too noisy to compare:
/// `perf stat -e instructions:u core --count bedrock/json op 20000`, the same with
/// `base`, and with `0` for the setup to subtract.
fn count_run(cases: &[Case]) -> Option<Box<dyn FnOnce() + '_>> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == "--count")?;
    let (name, side, n) = match &args[at + 1..] {
        [name, side, n, ..] => (name, side, n.parse::<u32>().unwrap_or(0)),
        _ => panic!("--count CASE op|base N"),
    };
    let case = cases
        .iter()
        .find(|c| &c.name == name)
        .unwrap_or_else(|| panic!("no case {name}"));
    let f = if side == "base" { &case.base } else { &case.op };
    Some(Box::new(move || {
        for _ in 0..n {
            f();
        }
    }))
}

fn main() {
    let config = match Config::from_json(CONFIG.as_bytes()) {
        Ok(c) => Arc::new(c),
        Err(e) => panic!("bench config: {e}"),
    };
    check(&config);
    let cases = cases(&config);
    if let Some(run) = count_run(&cases) {
        return run();
    }

    let mut c = Criterion::default().configure_from_args();
    for group in ["request", "exchange", "response", "bedrock"] {
        let mut g = c.benchmark_group(group);
        for case in cases.iter().filter(|k| k.name.starts_with(group)) {
            g.throughput(Throughput::Bytes(case.bytes as u64));
            let id = &case.name[group.len() + 1..];
            let op = if group == "bedrock" {
                format!("{id}/responses")
            } else {
                id.to_string()
            };
            g.bench_function(op, |b| b.iter(|| (case.op)()));
            // The exchange's baseline is the same exchange without limits, a
            // Responses translation's the same work for a chat request; every
            // other case's is a serde_json parse of the same bytes.
            let base = match group {
                "exchange" => "no-limits",
                "bedrock" => "chat",
                _ => "serde_json-baseline",
            };
            g.bench_function(format!("{id}/{base}"), |b| b.iter(|| (case.base)()));
        }
        g.finish();
    }
    c.final_summary();

    // Profiling one case (`--profile-time`) wants that case alone.
    if std::env::args().any(|a| a == "--profile-time") {
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not and only wants a
    // smoke run.
    let (batch, rounds) = if std::env::args().any(|a| a == "--bench") {
        (Duration::from_millis(50), 7)
    } else {
        (Duration::from_micros(1), 1)
    };
    ratios(&cases, batch, rounds);
}
