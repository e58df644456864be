//! The proxy-wasm adapter: `aigw.wasm` for Envoy's `envoy.filters.http.wasm`.
//!
//! The proxy-wasm crate dispatches Envoy's calls to one [`Root`] per plugin
//! configuration and one [`Stream`] per HTTP stream; each hook converts what Envoy
//! passes, calls the core ([`HttpFilter`]) and applies the [`CoreAction`]s it answers.
//!
//! **Role.** The plugin configuration is the same JSON document the native module
//! reads; the plugin's `root_id` picks the role: `aigw` (or empty) is the router
//! instance in the HTTP connection manager, `aigw_upstream` the upstream instance in a
//! backend cluster's `http_filters`. Any other `root_id` is refused.
//!
//! **Envoy config.** Both roles need `allow_on_headers_stop_iteration: true` in the
//! plugin config (Envoy >= 1.35): otherwise Envoy turns `Pause` on request headers
//! into StopAllIteration, the body hook never runs and the request hangs. With it,
//! the headers wait while the body is delivered, so the router picks the route only
//! after `x-ai-eg-model` is set.
//!
//! **Host calls.** The SDK's own wrappers panic (a trap in wasm) on any host status
//! they do not expect, and read status codes into Rust enums. The few calls made here
//! go through [`host`], which returns every status as a value, so nothing in this
//! file can trap on a host answer.
//!
//! **What the wasm host lacks** compared with the native module, and what is done
//! instead:
//! - Dynamic metadata: the proxy-wasm ABI cannot write it (Envoy issue 15148). Each
//!   [`CoreAction::SetMetadata`] becomes the filter-state object
//!   `wasm.io.envoy.ai_gateway.KEY` (text; numbers as decimal text), read by access
//!   logs with `%FILTER_STATE(wasm.io.envoy.ai_gateway.KEY:PLAIN)%`.
//! - Buffer limit: there is no call to raise it; Envoy's connection buffer limit
//!   (`per_connection_buffer_limit_bytes`, 1 MiB by default) bounds the buffered
//!   request body and Envoy answers 413 itself past it.
//! - Clearing the route cache goes through Envoy's foreign function
//!   `clear_route_cache`.
//! - Stream idle timeout (`streamIdleTimeout`): none; [`CoreAction::Timer`] is
//!   ignored. A stalled stream ends at Envoy's route timeout with a reset, as it
//!   would without the gateway (see the comment where the action is applied).

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::{Arc, OnceLock};
use std::task::{Wake, Waker};
use std::time::Duration;

use aigw_filter::auth::exchange::{ExchangeJob, Registry, Step};
use aigw_filter::host::{Callout, CalloutResult, Counter, LogLevel};
use aigw_filter::machine::SAVED_REQUEST_KEY;
use aigw_filter::policy::ratelimit::CountStore;
use aigw_filter::{
    Action as CoreAction, Config, FilterRole, Headers, HttpFilter, MetadataValue,
    Status as CoreStatus, METADATA_NAMESPACE,
};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(Root::default()));
}}

/// `root_id` of the router-level instance.
pub const ROOT_ID_ROUTER: &str = "aigw";
/// `root_id` of the upstream (per backend cluster) instance.
pub const ROOT_ID_UPSTREAM: &str = "aigw_upstream";

/// Property paths tried, in order, for the backend name of the upstream attempt:
/// the selected endpoint's metadata, then the cluster's. Envoy 1.40 answers them
/// under `xds.`; the bare `upstream_host_metadata` is not found in upstream filters.
const BACKEND_PATHS: [[&str; 5]; 2] = [
    [
        "xds",
        "upstream_host_metadata",
        "filter_metadata",
        METADATA_NAMESPACE,
        "backend",
    ],
    [
        "xds",
        "cluster_metadata",
        "filter_metadata",
        METADATA_NAMESPACE,
        "backend",
    ],
];

/// One plugin configuration: the validated config and the role, shared by streams.
#[derive(Default)]
struct Root {
    config: Option<Arc<Config>>,
    role: Option<FilterRole>,
    /// The core's counters ([`Counter::ALL`] order), where the host defined them.
    counters: Counters,
    /// Background credential exchanges this root runs, by their call's token.
    background: HashMap<u32, ExchangeJob>,
}

type Counters = [Option<u32>; Counter::ALL.len()];

/// How often a root with exchanged credentials looks for queued background
/// exchanges and for requests woken in a hook that could not resume them.
const TICK: Duration = Duration::from_millis(100);

/// This VM's exchanged credentials, shared by its roots (router and upstream
/// plugins of one VM) and their streams. Each VM (one per worker) has its own: VMs
/// share no memory, so each fetches and refreshes its tokens itself.
fn registry() -> &'static Arc<Registry> {
    static REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Registry::new)
}

thread_local! {
    /// Every live stream of this VM, by context id: a wake or a call's answer may
    /// be for a stream other than the one whose hook runs.
    static STREAMS: RefCell<HashMap<u32, Weak<RefCell<StreamCore>>>> = RefCell::new(HashMap::new());
    /// Streams woken since the last delivery.
    static WOKEN: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// Calls made for streams: the host's token, the stream, the core's id.
    static CALLS: RefCell<HashMap<u32, (u32, u32)>> = RefCell::new(HashMap::new());
}

/// A parked stream's waker: notes the stream for delivery on this VM's thread.
struct WasmWake(u32);

impl Wake for WasmWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        WOKEN.with(|w| w.borrow_mut().push(self.0));
    }
}

/// Hands the woken streams their wake, each in its own context. Not from a hook of
/// a stream that is ending: a call a woken stream makes there would be registered
/// to the ending stream and its answer lost, so those wait for the root's tick.
fn deliver_wakes() {
    loop {
        let woken: Vec<u32> = WOKEN.with(|w| std::mem::take(&mut *w.borrow_mut()));
        if woken.is_empty() {
            return;
        }
        for id in woken {
            if let Some(core) = stream_core(id) {
                if host::set_effective_context(id).is_ok() {
                    if let Ok(mut c) = core.try_borrow_mut() {
                        c.wake();
                    }
                }
            }
        }
    }
}

fn stream_core(id: u32) -> Option<Rc<RefCell<StreamCore>>> {
    STREAMS.with(|s| s.borrow().get(&id).and_then(Weak::upgrade))
}

/// A call's answer, as the host holds it in the answer's hook.
fn call_result(num_headers: usize, body_size: usize) -> CalloutResult {
    if num_headers == 0 {
        return CalloutResult::Failed("no answer (refused, reset or timed out)");
    }
    let headers = host::headers(host::MapType::HttpCallResponse);
    let status = headers
        .iter()
        .find(|(n, _)| n == ":status")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let body = if body_size == 0 {
        Vec::new()
    } else {
        host::buffer(host::BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default()
    };
    CalloutResult::Response {
        status,
        headers,
        body,
    }
}

/// Delivers a call's answer to the stream it was made for.
fn answer_call(token: u32, result: CalloutResult) -> bool {
    let Some((ctx, id)) = CALLS.with(|c| c.borrow_mut().remove(&token)) else {
        return false;
    };
    if let Some(core) = stream_core(ctx) {
        if host::set_effective_context(ctx).is_ok() {
            if let Ok(mut c) = core.try_borrow_mut() {
                c.call_done(id, result);
            }
        }
    }
    true
}

/// Makes a call from the current context; the token, or why not.
fn dispatch(call: &Callout) -> Result<u32, &'static str> {
    let headers: Vec<(&str, &str)> = call
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let body = (!call.body.is_empty()).then_some(call.body.as_slice());
    proxy_wasm::hostcalls::dispatch_http_call(&call.cluster, headers, body, vec![], call.timeout)
        .map_err(|_| "the host refused the call (unknown cluster?)")
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let result = call_result(num_headers, body_size);
        if let Some(mut job) = self.background.remove(&token_id) {
            let step = job.on_result(&result, unix_millis());
            self.drive(job, step);
        } else {
            answer_call(token_id, result);
        }
        deliver_wakes();
    }
}

impl Root {
    /// Makes a background exchange's next call, or lets it end.
    fn drive(&mut self, mut job: ExchangeJob, mut step: Step) {
        loop {
            let call = match step {
                Step::Call(call) => call,
                Step::Done(Ok(())) => return,
                Step::Done(Err(e)) => {
                    host::log(
                        LogLevel::Warn,
                        &format!("background credential refresh failed: {e}"),
                    );
                    return;
                }
            };
            match dispatch(&call) {
                Ok(token) => {
                    self.background.insert(token, job);
                    return;
                }
                Err(why) => step = job.on_result(&CalloutResult::Failed(why), unix_millis()),
            }
        }
    }
}

/// Wall-clock Unix milliseconds, as the host tells them.
fn unix_millis() -> u64 {
    host::now().as_millis() as u64
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let root_id = host::property(&["plugin_root_id"]).unwrap_or_default();
        let role = match String::from_utf8_lossy(&root_id).as_ref() {
            "" | ROOT_ID_ROUTER => FilterRole::Router,
            ROOT_ID_UPSTREAM => FilterRole::Upstream,
            other => {
                host::log(
                    LogLevel::Error,
                    &format!(
                        "unknown root_id `{other}`: use `{ROOT_ID_ROUTER}` (router) \
                         or `{ROOT_ID_UPSTREAM}` (upstream cluster filter)"
                    ),
                );
                return false;
            }
        };
        let bytes = host::plugin_configuration().unwrap_or_default();
        match Config::from_json(&bytes).map(|mut c| {
            c.use_count_store(Arc::new(SharedCounts::for_config(&bytes)));
            c.share_exchanges(registry());
            c
        }) {
            Ok(config) if !config.secret_files().is_empty() => {
                host::log(
                    LogLevel::Error,
                    &format!(
                        "credential files cannot be read by the wasm build (no file system \
                         in Envoy's wasm runtime): {}; give the values inline",
                        config.secret_files().join(", ")
                    ),
                );
                false
            }
            Ok(config) => {
                self.counters = Counter::ALL.map(|c| host::define_counter(c.name()).ok());
                let hint = " (pass them to the VM: vm_config.environment_variables.host_env_keys; \
                            on Envoy Gateway, the wasm entry's env.hostKeys)";
                if let Err(e) = crate::secret_env::load(&config, hint) {
                    host::log(LogLevel::Error, &e);
                    return false;
                }
                if config.any_exchange() {
                    report(host::set_tick_period(TICK), "set the tick period");
                }
                self.config = Some(Arc::new(config));
                self.role = Some(role);
                true
            }
            Err(e) => {
                // Names the field path; Envoy then refuses the plugin.
                host::log(LogLevel::Error, &e.to_string());
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // The SDK traps on None: without a config (never, as Envoy refuses a failed
        // on_configure) the stream passes through.
        let filter = match (&self.config, self.role) {
            (Some(config), Some(role)) => Some(HttpFilter::new(config.clone(), role)),
            _ => None,
        };
        let core = Rc::new(RefCell::new(StreamCore {
            id: context_id,
            filter,
            counters: self.counters,
            role: self.role.unwrap_or(FilterRole::Router),
            out: Vec::new(),
            request_buffered: 0,
            response_buffered: 0,
            completed: false,
        }));
        STREAMS.with(|s| s.borrow_mut().insert(context_id, Rc::downgrade(&core)));
        Some(Box::new(Stream {
            id: context_id,
            core,
        }))
    }

    /// Background exchanges queued since the last tick, and wakes that could not
    /// be delivered in the hook that caused them.
    fn on_tick(&mut self) {
        for mut job in registry().take_queued() {
            let step = job.start(unix_millis());
            self.drive(job, step);
        }
        deliver_wakes();
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Rate-limit counts in the host's shared data, which every VM of the process sees
/// (each worker runs its own): key `aigw.<config>.<name>`, value the window and the
/// count (8 + 8 bytes, little-endian), changed by compare-and-swap.
#[derive(Debug)]
struct SharedCounts {
    /// `aigw.<hash of the config>.`: another config counts apart.
    prefix: String,
}

impl SharedCounts {
    fn for_config(config: &[u8]) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        config.hash(&mut h);
        SharedCounts {
            prefix: format!("aigw.{:016x}.", h.finish()),
        }
    }

    fn read(value: Option<&[u8]>, window: u64) -> u64 {
        let word = |b: &[u8]| b.try_into().map(u64::from_le_bytes).ok();
        match value {
            Some(v) if v.len() == 16 && word(&v[..8]) == Some(window) => word(&v[8..]).unwrap_or(0),
            _ => 0,
        }
    }
}

/// Compare-and-swap attempts before a count is left as it is (the request passes).
const CAS_ATTEMPTS: usize = 16;

impl CountStore for SharedCounts {
    fn get(&self, name: &str, window: u64) -> u64 {
        let (value, _) = host::shared_data(&format!("{}{name}", self.prefix));
        Self::read(value.as_deref(), window)
    }

    fn update(&self, name: &str, window: u64, next: &dyn Fn(u64) -> Option<u64>) -> Option<u64> {
        let key = format!("{}{name}", self.prefix);
        let mut new = None;
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = host::shared_data(&key);
            let n = next(Self::read(value.as_deref(), window))?;
            new = Some(n);
            let mut bytes = window.to_le_bytes().to_vec();
            bytes.extend_from_slice(&n.to_le_bytes());
            match host::set_shared_data(&key, &bytes, cas) {
                Err(host::CAS_MISMATCH) => continue,
                // Stored, or the host cannot store it: either way the request goes on.
                _ => break,
            }
        }
        new
    }

    fn adjust(&self, name: &str, window: u64, delta: i64) {
        let key = format!("{}{name}", self.prefix);
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = host::shared_data(&key);
            let Some(v) = value.filter(|v| v.len() == 16) else {
                return;
            };
            if v[..8] != window.to_le_bytes() {
                return;
            }
            let n = aigw_filter::policy::ratelimit::add_signed(Self::read(Some(&v), window), delta);
            let mut bytes = window.to_le_bytes().to_vec();
            bytes.extend_from_slice(&n.to_le_bytes());
            match host::set_shared_data(&key, &bytes, cas) {
                Err(host::CAS_MISMATCH) => continue,
                _ => return,
            }
        }
    }

    fn prepare(&self, name: &str) {
        let key = format!("{}{name}", self.prefix);
        if host::shared_data(&key).0.is_none() {
            let _ = host::set_shared_data(&key, &[0; 16], 0);
        }
    }
}

/// One HTTP stream, as the SDK holds it: its state lives in [`STREAMS`] too, so a
/// wake or a call's answer in another context's hook can reach it.
struct Stream {
    id: u32,
    core: Rc<RefCell<StreamCore>>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        STREAMS.with(|s| s.borrow_mut().remove(&self.id));
        // proxy-wasm cannot cancel a call: one still running answers into nothing.
        CALLS.with(|c| c.borrow_mut().retain(|_, (ctx, _)| *ctx != self.id));
    }
}

/// One HTTP stream's state.
struct StreamCore {
    id: u32,
    /// `None` only when the root has no config: everything passes through.
    filter: Option<HttpFilter>,
    counters: Counters,
    role: FilterRole,
    /// Reused action list.
    out: Vec<CoreAction>,
    /// Bytes at the front of Envoy's body buffer already fed to the core. After a
    /// `Pause` Envoy keeps the bytes and reports the buffered total on the next call;
    /// after a `Continue` the buffer holds only the next chunk.
    request_buffered: usize,
    response_buffered: usize,
    completed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

impl Direction {
    fn headers(self) -> host::MapType {
        match self {
            Direction::Request => host::MapType::Request,
            Direction::Response => host::MapType::Response,
        }
    }

    fn body(self) -> host::BufferType {
        match self {
            Direction::Request => host::BufferType::RequestBody,
            Direction::Response => host::BufferType::ResponseBody,
        }
    }
}

/// Envoy's body buffer as a body hook saw it: `size` bytes, kept ones included.
#[derive(Clone, Copy)]
struct BodyCall {
    size: usize,
}

/// The header map of one direction, fetched whole on the first lookup: a hook looks
/// up a dozen names, and every host call is a trip out of the VM.
struct HostHeaders {
    map: host::MapType,
    all: OnceCell<Vec<(String, String)>>,
}

impl HostHeaders {
    fn new(map: host::MapType) -> Self {
        HostHeaders {
            map,
            all: OnceCell::new(),
        }
    }
}

impl Headers for HostHeaders {
    fn get(&self, name: &str) -> Option<String> {
        self.all
            .get_or_init(|| host::headers(self.map))
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        self.all
            .get_or_init(|| host::headers(self.map))
            .iter()
            .for_each(|(n, v)| f(n, v));
    }
}

impl Context for Stream {
    fn on_done(&mut self) -> bool {
        // Wakes this causes (an exchange it led, handed on) wait for the tick.
        self.with(StreamCore::complete);
        true
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        answer_call(token_id, call_result(num_headers, body_size));
        deliver_wakes();
        let _ = host::set_effective_context(self.id);
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let action = self.with(|c| c.request_headers(end_of_stream));
        self.after_hook();
        action
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let action = self.with(|c| c.body(Direction::Request, body_size, end_of_stream));
        self.after_hook();
        action
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.with(|c| {
            let headers = HostHeaders::new(Direction::Response.headers());
            let now = host::now();
            let status = c.call(|f, out| f.on_response_headers(&headers, end_of_stream, now, out));
            c.apply(Direction::Response, None, status).0
        })
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.with(|c| c.body(Direction::Response, body_size, end_of_stream))
    }

    /// Envoy calls this while writing access logs, before `on_done`: metadata of a
    /// response that never reached its end still gets written.
    fn on_log(&mut self) {
        self.with(StreamCore::complete);
    }
}

impl Stream {
    /// Runs `f` on this stream's state. It is never borrowed elsewhere during a hook
    /// of its own (deliveries to other streams happen after), so the fallback, to
    /// let the stream pass, is never expected.
    fn with<R>(&mut self, f: impl FnOnce(&mut StreamCore) -> R) -> R
    where
        R: PassValue,
    {
        match self.core.try_borrow_mut() {
            Ok(mut c) => f(&mut c),
            Err(_) => R::pass(),
        }
    }

    /// Wakes this hook caused for other streams of the VM, delivered now.
    fn after_hook(&self) {
        if WOKEN.with(|w| !w.borrow().is_empty()) {
            deliver_wakes();
            let _ = host::set_effective_context(self.id);
        }
    }
}

/// What a hook answers when the stream's state cannot be had.
trait PassValue {
    fn pass() -> Self;
}

impl PassValue for Action {
    fn pass() -> Self {
        Action::Continue
    }
}

impl PassValue for () {
    fn pass() -> Self {}
}

impl StreamCore {
    fn request_headers(&mut self, end_of_stream: bool) -> Action {
        let ms = unix_millis();
        if self.role == FilterRole::Upstream {
            let backend = upstream_backend();
            let saved = host::property(&[SAVED_REQUEST_KEY]).filter(|v| !v.is_empty());
            if let Some(f) = self.filter.as_mut() {
                f.bind_backend(backend.as_deref(), ms, saved.as_deref());
            }
        } else if let Some(f) = self.filter.as_mut() {
            f.set_unix_millis(ms);
        }
        let headers = HostHeaders::new(Direction::Request.headers());
        let now = host::now();
        let status = self.call(|f, out| f.on_request_headers(&headers, end_of_stream, now, out));
        self.apply(Direction::Request, None, status).0
    }

    /// A call made for this stream ended.
    fn call_done(&mut self, id: u32, result: CalloutResult) {
        let now = host::now();
        let ms = unix_millis();
        let status = self.call(|f, out| {
            f.set_unix_millis(ms);
            f.on_callout_done(id, result, now, out)
        });
        self.resume(status);
    }

    /// The shared work this stream waited on ended.
    fn wake(&mut self) {
        let now = host::now();
        let ms = unix_millis();
        let status = self.call(|f, out| {
            f.set_unix_millis(ms);
            f.on_wake(now, out)
        });
        self.resume(status);
    }

    /// Applies what the core did outside a body hook of its own, and resumes the
    /// held request if the core let it go.
    fn resume(&mut self, status: Option<CoreStatus>) {
        let held = BodyCall {
            size: self.request_buffered,
        };
        let (action, size) = self.apply(Direction::Request, Some(held), status);
        self.request_buffered = size;
        if action == Action::Continue && status == Some(CoreStatus::Continue) {
            self.request_buffered = 0;
            report(host::continue_request(), "resume the request");
        }
    }
    /// Runs one core call with the reused action list; `None` when passing through.
    fn call(
        &mut self,
        f: impl FnOnce(&mut HttpFilter, &mut Vec<CoreAction>) -> CoreStatus,
    ) -> Option<CoreStatus> {
        let filter = self.filter.as_mut()?;
        self.out.clear();
        Some(f(filter, &mut self.out))
    }

    fn body(&mut self, dir: Direction, body_size: usize, end_of_stream: bool) -> Action {
        if self.filter.is_none() {
            return Action::Continue;
        }
        let start = match dir {
            Direction::Request => self.request_buffered,
            Direction::Response => self.response_buffered,
        }
        .min(body_size);
        let chunk = if body_size > start {
            host::buffer(dir.body(), start, body_size - start).unwrap_or_default()
        } else {
            Vec::new()
        };
        let now = host::now();
        let status = self.call(|f, out| match dir {
            Direction::Request => f.on_request_body(&chunk, end_of_stream, now, out),
            Direction::Response => f.on_response_body(&chunk, end_of_stream, now, out),
        });
        let call = BodyCall { size: body_size };
        let (action, size) = self.apply(dir, Some(call), status);
        let kept = if action == Action::Pause { size } else { 0 };
        match dir {
            Direction::Request => self.request_buffered = kept,
            Direction::Response => self.response_buffered = kept,
        }
        action
    }

    /// The stream ended: lets the core write what it knows, once.
    fn complete(&mut self) {
        if self.completed {
            return;
        }
        self.completed = true;
        let now = host::now();
        let status = self.call(|f, out| {
            f.on_stream_complete(now, out);
            CoreStatus::Continue
        });
        let _ = self.apply(Direction::Response, None, status);
    }

    /// Applies the queued actions in order, then maps the core's status. Returns the
    /// action for Envoy and the body buffer's size afterwards (for body hooks).
    fn apply(
        &mut self,
        dir: Direction,
        body: Option<BodyCall>,
        status: Option<CoreStatus>,
    ) -> (Action, usize) {
        let mut size = body.map_or(0, |b| b.size);
        let mut replied = false;
        let mut out = std::mem::take(&mut self.out);
        // Calls the host refused at once: the core hears of them after the rest.
        let mut refused = Vec::new();
        for action in out.drain(..) {
            match action {
                CoreAction::SetHeader { name, value } => {
                    report(host::set_header(dir.headers(), &name, &value), "set header");
                }
                CoreAction::RemoveHeader { name } => {
                    report(host::remove_header(dir.headers(), &name), "remove header");
                }
                CoreAction::ClearRouteCache => {
                    report(host::clear_route_cache(), "clear_route_cache");
                }
                // No proxy-wasm call: Envoy's connection buffer limit applies.
                CoreAction::SetBufferLimit(_) => {}
                CoreAction::ReplaceBody(bytes) => match body {
                    Some(call) => {
                        if let Some(new_size) = replace_body(dir, call, &bytes) {
                            size = new_size;
                        }
                    }
                    None => host::log(LogLevel::Warn, "body replaced outside a body hook"),
                },
                CoreAction::SetMetadata { key, value } => {
                    let text = match value {
                        MetadataValue::Number(n) => number_text(n),
                        MetadataValue::String(s) => s,
                    };
                    let name = format!("{METADATA_NAMESPACE}.{key}");
                    report(
                        host::set_property(&[&name], text.as_bytes()),
                        "set metadata",
                    );
                }
                CoreAction::SendLocalReply {
                    status,
                    content_type,
                    body,
                    details,
                    headers,
                } => {
                    replied = true;
                    let mut all = vec![("content-type", content_type)];
                    all.extend(headers.iter().map(|(n, v)| (*n, v.as_str())));
                    let headers = all;
                    report(
                        host::send_local_reply(status, details, &headers, &body),
                        "send local reply",
                    );
                }
                // Filter state `wasm.KEY`, read back with the property KEY.
                CoreAction::SetFilterState { key, value } => {
                    report(host::set_property(&[key], &value), "set filter state");
                }
                CoreAction::Log { level, message } => host::log(level, &message),
                CoreAction::Count(c) => {
                    if let Some(id) = self.counters[c as usize] {
                        report(host::increment_counter(id), "increment a counter");
                    }
                }
                CoreAction::Call { id, call } => match dispatch(&call) {
                    Ok(token) => CALLS.with(|c| {
                        c.borrow_mut().insert(token, (self.id, id));
                    }),
                    Err(why) => refused.push((id, why)),
                },
                CoreAction::Park => {
                    if let Some(f) = self.filter.as_mut() {
                        f.set_waker(Waker::from(Arc::new(WasmWake(self.id))));
                    }
                }
                // No stream idle timeout in this build: proxy-wasm has timers only
                // for the root context (ticks), and no call that adds response bytes
                // and ends the response outside the response-body hook, which Envoy
                // does not call while the provider is quiet (`send_local_response`
                // once the headers are out, and `close_stream`, reset the stream;
                // the body buffer is writable only during that hook, and resuming
                // a paused body does not end it). A stalled stream ends at Envoy's
                // route timeout, with a reset, as before.
                CoreAction::Timer(_) => {}
                // Only `on_timer` ends a response, and this build never calls it.
                CoreAction::EndResponse(_) => {
                    host::log(LogLevel::Warn, "ending a response is not possible here")
                }
            }
        }
        self.out = out;
        let mut status = status;
        for (id, why) in refused {
            let now = host::now();
            let next =
                self.call(|f, out| f.on_callout_done(id, CalloutResult::Failed(why), now, out));
            let (_, new_size) = self.apply(dir, body.map(|_| BodyCall { size }), next);
            size = new_size;
            // Answered here, or let go: this hook's own status says so.
            if next == Some(CoreStatus::Continue) {
                status = next;
            }
            replied |= self.filter.as_ref().is_some_and(HttpFilter::replied);
        }
        let action = match status {
            _ if replied => Action::Pause,
            None | Some(CoreStatus::Continue) => Action::Continue,
            Some(CoreStatus::StopIteration | CoreStatus::StopAndBuffer) => Action::Pause,
        };
        (action, size)
    }
}

/// Replaces everything the filter holds: the bytes it kept by pausing (a whole
/// request or answer) and the new chunk. Returns the new size.
fn replace_body(dir: Direction, call: BodyCall, bytes: &[u8]) -> Option<usize> {
    let result = host::set_buffer(dir.body(), 0, call.size, bytes).map(|()| bytes.len());
    match result {
        Ok(n) => Some(n),
        Err(e) => {
            report(Err(e), "replace body");
            None
        }
    }
}

/// The backend of this upstream attempt, from the selected host's metadata, else
/// from the cluster's.
fn upstream_backend() -> Option<String> {
    BACKEND_PATHS.iter().find_map(|path| {
        host::property(path)
            .filter(|v| !v.is_empty())
            .and_then(|v| String::from_utf8(v).ok())
    })
}

/// Metadata numbers as text: whole numbers without a fraction.
fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn report(result: Result<(), host::HostError>, what: &str) {
    if let Err(e) = result {
        host::log(
            LogLevel::Warn,
            &format!("{what} failed: host status {}", e.0),
        );
    }
}

/// The proxy-wasm host calls this adapter makes, each returning the host's status as a
/// value. Raw imports and `unsafe` live only here.
mod host {
    use std::ptr::{null, null_mut};
    use std::time::Duration;

    use aigw_filter::host::LogLevel;

    /// Header maps (proxy-wasm ABI numbering).
    #[derive(Clone, Copy)]
    #[repr(u32)]
    pub enum MapType {
        Request = 0,
        Response = 2,
        HttpCallResponse = 6,
    }

    /// Buffers (proxy-wasm ABI numbering).
    #[derive(Clone, Copy)]
    #[repr(u32)]
    pub enum BufferType {
        RequestBody = 0,
        ResponseBody = 1,
        HttpCallResponseBody = 4,
        PluginConfiguration = 7,
    }

    /// A status other than OK, as the host returned it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct HostError(pub u32);

    const OK: u32 = 0;

    // Statuses are read as plain integers: an unknown value is an error, not UB.
    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
        fn proxy_get_current_time_nanoseconds(ret: *mut u64) -> u32;
        fn proxy_get_buffer_bytes(
            buffer: u32,
            start: usize,
            max_size: usize,
            ret_data: *mut *mut u8,
            ret_size: *mut usize,
        ) -> u32;
        fn proxy_set_buffer_bytes(
            buffer: u32,
            start: usize,
            size: usize,
            data: *const u8,
            data_size: usize,
        ) -> u32;
        fn proxy_get_header_map_pairs(
            map: u32,
            ret_data: *mut *mut u8,
            ret_size: *mut usize,
        ) -> u32;
        fn proxy_replace_header_map_value(
            map: u32,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
        fn proxy_get_property(
            path: *const u8,
            path_size: usize,
            ret_data: *mut *mut u8,
            ret_size: *mut usize,
        ) -> u32;
        fn proxy_set_property(
            path: *const u8,
            path_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        #[allow(clippy::too_many_arguments)]
        fn proxy_send_local_response(
            status: u32,
            details: *const u8,
            details_size: usize,
            body: *const u8,
            body_size: usize,
            headers: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        fn proxy_get_shared_data(
            key: *const u8,
            key_size: usize,
            return_value: *mut *mut u8,
            return_value_size: *mut usize,
            return_cas: *mut u32,
        ) -> u32;
        fn proxy_set_shared_data(
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
            cas: u32,
        ) -> u32;
        fn proxy_define_metric(
            metric_type: u32,
            name: *const u8,
            name_size: usize,
            return_id: *mut u32,
        ) -> u32;
        fn proxy_increment_metric(id: u32, offset: i64) -> u32;
        fn proxy_set_effective_context(context_id: u32) -> u32;
        fn proxy_continue_stream(stream_type: u32) -> u32;
        fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        fn proxy_call_foreign_function(
            name: *const u8,
            name_size: usize,
            args: *const u8,
            args_size: usize,
            ret_data: *mut *mut u8,
            ret_size: *mut usize,
        ) -> u32;
    }

    fn check(status: u32) -> Result<(), HostError> {
        if status == OK {
            Ok(())
        } else {
            Err(HostError(status))
        }
    }

    /// Takes ownership of bytes the host returned.
    ///
    /// # Safety
    /// `data` is null or was allocated for exactly `size` bytes by the SDK's
    /// `proxy_on_memory_allocate` (a boxed `[u8]` from the global allocator), which the
    /// host calls for every returned value and then hands over.
    unsafe fn take(data: *mut u8, size: usize) -> Option<Vec<u8>> {
        if data.is_null() {
            return None;
        }
        // SAFETY: see above; layout `[u8; size]` matches the allocation.
        Some(unsafe { Vec::from_raw_parts(data, size, size) })
    }

    /// Calls a host function that returns an allocated value.
    fn returned(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Option<Vec<u8>> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        if call(&mut data, &mut size) != OK {
            return None;
        }
        // SAFETY: on OK the host set `data`/`size` to an allocation it made through
        // `proxy_on_memory_allocate` (or left `data` null).
        unsafe { take(data, size) }
    }

    pub fn log(level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Debug => 1,
            LogLevel::Info => 2,
            LogLevel::Warn => 3,
            LogLevel::Error => 4,
        };
        // SAFETY: the host reads `message` only during the call.
        let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
    }

    /// Wall-clock time since the UNIX epoch; zero if the host cannot tell.
    pub fn now() -> Duration {
        let mut ns: u64 = 0;
        // SAFETY: the host writes one u64 into `ns`.
        match unsafe { proxy_get_current_time_nanoseconds(&mut ns) } {
            OK => Duration::from_nanos(ns),
            _ => Duration::ZERO,
        }
    }

    pub fn buffer(buffer: BufferType, start: usize, max_size: usize) -> Option<Vec<u8>> {
        // SAFETY: out-pointers are valid for the call.
        returned(|d, s| unsafe { proxy_get_buffer_bytes(buffer as u32, start, max_size, d, s) })
    }

    pub fn plugin_configuration() -> Option<Vec<u8>> {
        buffer(BufferType::PluginConfiguration, 0, usize::MAX)
    }

    pub fn set_buffer(
        buffer: BufferType,
        start: usize,
        size: usize,
        data: &[u8],
    ) -> Result<(), HostError> {
        // SAFETY: the host copies `data` during the call.
        check(unsafe {
            proxy_set_buffer_bytes(buffer as u32, start, size, data.as_ptr(), data.len())
        })
    }

    /// Every header of a map, in order, lossily decoded if not UTF-8; empty if the
    /// host has no such map now.
    pub fn headers(map: MapType) -> Vec<(String, String)> {
        // SAFETY: out-pointers are valid for the call.
        returned(|d, s| unsafe { proxy_get_header_map_pairs(map as u32, d, s) })
            .map(|bytes| deserialize_pairs(&bytes))
            .unwrap_or_default()
    }

    pub fn set_header(map: MapType, name: &str, value: &str) -> Result<(), HostError> {
        // SAFETY: the host copies both strings during the call.
        check(unsafe {
            proxy_replace_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }

    pub fn remove_header(map: MapType, name: &str) -> Result<(), HostError> {
        // SAFETY: the host reads `name` during the call.
        check(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
    }

    /// Property path segments are joined with NUL bytes.
    fn path_bytes(path: &[&str]) -> Vec<u8> {
        path.join("\0").into_bytes()
    }

    pub fn property(path: &[&str]) -> Option<Vec<u8>> {
        let path = path_bytes(path);
        // SAFETY: `path` is read during the call; out-pointers are valid.
        returned(|d, s| unsafe { proxy_get_property(path.as_ptr(), path.len(), d, s) })
    }

    /// Envoy stores it as the filter-state object `wasm.<path>`.
    pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), HostError> {
        let path = path_bytes(path);
        // SAFETY: the host copies both buffers during the call.
        check(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
    }

    pub fn send_local_reply(
        status: u16,
        details: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        let headers = serialize_pairs(headers);
        // SAFETY: the host copies all buffers during the call; -1: not a gRPC reply.
        check(unsafe {
            proxy_send_local_response(
                u32::from(status),
                details.as_ptr(),
                details.len(),
                body.as_ptr(),
                body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            )
        })
    }

    /// The host's status for a compare-and-swap that lost to another writer.
    pub const CAS_MISMATCH: HostError = HostError(8);

    /// A shared-data value (seen by every VM of the process) and its version; a
    /// missing key reads as no value, version 0.
    pub fn shared_data(key: &str) -> (Option<Vec<u8>>, u32) {
        let mut cas = 0;
        let value = returned(|d, s| {
            // SAFETY: `key` is read during the call; out-pointers are valid.
            unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), d, s, &mut cas) }
        });
        let cas = if value.is_some() { cas } else { 0 };
        (value, cas)
    }

    /// Stores a shared-data value if its version is still `cas` (0: whatever it is).
    pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
        // SAFETY: the host copies both buffers during the call.
        check(unsafe {
            proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
        })
    }

    /// A counter (metric type 0), as the host names it (`wasmcustom.<name>`).
    pub fn define_counter(name: &str) -> Result<u32, HostError> {
        let mut id = 0;
        // SAFETY: `name` is read during the call; `id` is a valid out-pointer.
        check(unsafe { proxy_define_metric(0, name.as_ptr(), name.len(), &mut id) })?;
        Ok(id)
    }

    pub fn increment_counter(id: u32) -> Result<(), HostError> {
        // SAFETY: plain values.
        check(unsafe { proxy_increment_metric(id, 1) })
    }

    /// Makes `context_id` the stream later host calls act on.
    pub fn set_effective_context(context_id: u32) -> Result<(), HostError> {
        // SAFETY: plain values.
        check(unsafe { proxy_set_effective_context(context_id) })
    }

    /// Resumes the effective stream's held request (stream type 0: the request).
    pub fn continue_request() -> Result<(), HostError> {
        // SAFETY: plain values.
        check(unsafe { proxy_continue_stream(0) })
    }

    /// Calls the root's `on_tick` every `period`.
    pub fn set_tick_period(period: Duration) -> Result<(), HostError> {
        // SAFETY: plain values.
        check(unsafe { proxy_set_tick_period_milliseconds(period.as_millis() as u32) })
    }

    /// Envoy's foreign function `clear_route_cache` (no arguments, no result).
    pub fn clear_route_cache() -> Result<(), HostError> {
        let name = "clear_route_cache";
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: `name` is read during the call; out-pointers are valid.
        let status = unsafe {
            proxy_call_foreign_function(name.as_ptr(), name.len(), null(), 0, &mut data, &mut size)
        };
        check(status)?;
        // SAFETY: any result was allocated through `proxy_on_memory_allocate`.
        drop(unsafe { take(data, size) });
        Ok(())
    }

    /// Reads [`serialize_pairs`]'s encoding; a truncated map yields the pairs before
    /// the cut.
    fn deserialize_pairs(bytes: &[u8]) -> Vec<(String, String)> {
        let u32_at = |at: usize| -> Option<usize> {
            let b = bytes.get(at..at + 4)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let Some(count) = u32_at(0) else {
            return Vec::new();
        };
        let mut pairs = Vec::with_capacity(count.min(256));
        let mut data = 4 + count.saturating_mul(8);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        for i in 0..count {
            let (Some(klen), Some(vlen)) = (u32_at(4 + i * 8), u32_at(8 + i * 8)) else {
                break;
            };
            let key = bytes.get(data..data + klen);
            let value_at = data + klen + 1;
            let value = bytes.get(value_at..value_at + vlen);
            let (Some(key), Some(value)) = (key, value) else {
                break;
            };
            pairs.push((text(key), text(value)));
            data = value_at + vlen + 1;
        }
        pairs
    }

    /// proxy-wasm map encoding: count, (key length, value length) per pair, then each
    /// key and value followed by a NUL.
    fn serialize_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
        for (k, v) in pairs {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }
}
