//! The hooks Envoy calls (`envoy_dynamic_module_on_*`), in the proxy-wasm SDK's shape:
//! a root type per filter config ([`Root`]), a per-request type ([`Stream`]), and
//! exported hooks that convert, call the core, and apply its actions.
//!
//! No panic unwinds into Envoy: every hook body runs under `catch_unwind`. A panic in
//! a stream hook answers the client with a JSON 500 if no response has started (a
//! reset otherwise), is logged and counted, and leaves the stream dead: its later
//! hooks just let traffic pass.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use aigw_filter::auth::exchange::{ExchangeJob, Registry, Step};
use aigw_filter::error::ClientSchema;
use aigw_filter::host::{CalloutResult, Counter, LogLevel as CoreLogLevel};
use aigw_filter::machine::SAVED_REQUEST_KEY;
use aigw_filter::{
    Action, Config, FilterRole, GatewayError, Headers, HttpFilter, MetadataValue, Status,
    METADATA_NAMESPACE,
};

use crate::abi::{
    self, BodyStatus, BodyType, CalloutInit, EnvoyArray, EnvoyBuffer, EnvoyHttpHeader,
    FilterConfigHandle, HeaderType, HeadersStatus, HttpFilterHandle, LogLevel, MetadataSource,
    ModulePtr, Scheduler, TrailersStatus,
};

/// `filter_name` of the instance before Envoy's router.
const ROUTER_FILTER_NAME: &str = "aigw";
/// `filter_name` of the instance in a backend cluster's upstream HTTP filters.
const UPSTREAM_FILTER_NAME: &str = "aigw_upstream";
/// Host/cluster metadata key naming the backend (namespace [`METADATA_NAMESPACE`]).
const BACKEND_METADATA_KEY: &str = "backend";

/// One filter configuration: shared by every stream it creates, on any worker.
pub struct Root {
    config: Arc<Config>,
    role: FilterRole,
    /// Counter of panics caught in stream hooks, if Envoy let us define it.
    panics: Option<usize>,
    /// The core's counters ([`Counter::ALL`] order), where Envoy let us define them.
    counters: Counters,
    /// Background credential exchanges this config runs on the main thread, by
    /// Envoy's id of their current call.
    background: Mutex<HashMap<u64, ExchangeJob>>,
    /// This config's entry in [`DRIVERS`], when it has exchanged credentials.
    driver: Option<u64>,
}

/// Scheduler event of a stream: the shared work it waits on ended.
const EVENT_WAKE: u64 = 1;
/// Scheduler event of a stream: the timer the core asked for is due.
const EVENT_TIMER: u64 = 2;
/// Scheduler event of a config: background exchanges are queued.
const EVENT_RUN_EXCHANGES: u64 = 1;

/// The process's exchanged credentials: one registry for every config, so the
/// router and upstream instances and every worker share each token.
fn registry() -> &'static Arc<Registry> {
    static REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let registry = Registry::new();
        registry.set_kick(Waker::from(Arc::new(Kick)));
        registry
    })
}

/// Configs able to run background exchanges (those with exchanged credentials):
/// their main-thread schedulers, by config id. Committed to and deleted under the
/// lock, so a commit never races a delete.
static DRIVERS: Mutex<Vec<(u64, Scheduler)>> = Mutex::new(Vec::new());

/// Wakes a live config on the main thread to run queued background exchanges.
struct Kick;

impl Wake for Kick {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some((_, scheduler)) = lock(&DRIVERS).first() {
            scheduler.commit(EVENT_RUN_EXCHANGES);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Some(id) = self.driver {
            lock(&DRIVERS).retain(|(d, _)| *d != id);
        }
    }
}

/// Wakes one stream from any thread: commits to its scheduler, which Envoy turns
/// into `on_http_filter_scheduled` on the stream's worker. Also the target of the
/// stream's timers ([`crate::timers`]).
#[derive(Default)]
struct StreamWaker {
    scheduler: Mutex<Option<Scheduler>>,
}

impl crate::timers::Due for StreamWaker {
    /// From the timer thread. The stream takes its scheduler out under this lock
    /// when it is destroyed, so this commits to a live one or to none.
    fn due(&self) {
        if let Some(s) = lock(&self.scheduler).as_ref() {
            s.commit(EVENT_TIMER);
        }
    }
}

impl Wake for StreamWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(s) = lock(&self.scheduler).as_ref() {
            s.commit(EVENT_WAKE);
        }
    }
}

type Counters = [Option<usize>; Counter::ALL.len()];

/// One HTTP stream. Lives in a `RefCell`: a callback into Envoy (a local reply) may
/// re-enter another hook of the same stream, which then finds it borrowed and passes.
pub struct Stream {
    core: HttpFilter,
    role: FilterRole,
    panics: Option<usize>,
    counters: Counters,
    /// A panic was caught: the core's state is unknown, leave the stream alone.
    dead: bool,
    /// Response headers reached this filter: a local reply is no longer possible.
    response_started: bool,
    /// A local reply was sent (by the core or after a panic).
    replied: bool,
    /// Calls of this stream: Envoy's id, the core's.
    calls: Vec<(u64, u32)>,
    /// Created at the stream's first wait on shared work.
    waker: Option<Arc<StreamWaker>>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Deleted under its lock: a wake from another thread either committed
        // already or finds no scheduler.
        if let Some(w) = &self.waker {
            lock(&w.scheduler).take();
        }
    }
}

/// Which header map and body the current hook works on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

impl Direction {
    fn headers(self) -> HeaderType {
        match self {
            Direction::Request => HeaderType::Request,
            Direction::Response => HeaderType::Response,
        }
    }
}

/// Monotonic time since the first call, the `now` the core expects.
fn now() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// Wall-clock time (Unix ms): request signing, the `created` of translated
/// answers, credentials' expiry.
fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs a hook body; a panic becomes `on_panic` instead of unwinding into Envoy.
fn guard<R>(name: &str, on_panic: R, body: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        abi::log(LogLevel::Error, &format!("aigw: panic caught in {name}"));
        on_panic
    })
}

// ------------------------------------------------------------------------------------
// Program and filter config
// ------------------------------------------------------------------------------------

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const std::ffi::c_char {
    abi::abi_version()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    mut envoy: FilterConfigHandle<'_>,
    name: EnvoyBuffer<'_>,
    config: EnvoyBuffer<'_>,
) -> ModulePtr<Root> {
    guard("config_new", ModulePtr::null(), || {
        match Root::new(&mut envoy, name.as_bytes(), config.as_bytes()) {
            Ok(root) => ModulePtr::new(root),
            Err(message) => {
                abi::log(LogLevel::Error, &format!("aigw: {message}"));
                ModulePtr::null()
            }
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(root: ModulePtr<Root>) {
    guard("config_destroy", (), || root.destroy())
}

/// Per-route config is not supported: refuse it loudly rather than ignore it.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    name: EnvoyBuffer<'_>,
    _config: EnvoyBuffer<'_>,
) -> ModulePtr<()> {
    guard("per_route_config_new", ModulePtr::null(), || {
        let name = String::from_utf8_lossy(name.as_bytes());
        abi::log(
            LogLevel::Error,
            &format!("aigw: per-route config ('{name}') is not supported; configure routes in the filter config"),
        );
        ModulePtr::null()
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    config: ModulePtr<()>,
) {
    guard("per_route_config_destroy", (), || config.destroy())
}

impl Root {
    /// Validates the whole config; an error names the bad field by its path.
    fn new(envoy: &mut FilterConfigHandle<'_>, name: &[u8], config: &[u8]) -> Result<Root, String> {
        let role = role_for(name)?;
        let mut config = Config::from_json(config).map_err(|e| e.to_string())?;
        config.share_exchanges(registry());
        let config = Arc::new(config);
        crate::secret_env::load(&config, "")?;
        crate::secret_files::watch(&config);
        let driver = if config.any_exchange() {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            let scheduler = envoy
                .new_scheduler()
                .ok_or("Envoy gave no scheduler for background credential exchanges")?;
            let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            lock(&DRIVERS).push((id, scheduler));
            Some(id)
        } else {
            None
        };
        Ok(Root {
            config,
            role,
            panics: envoy.define_counter("aigw_panics"),
            counters: Counter::ALL.map(|c| envoy.define_counter(c.name())),
            background: Mutex::new(HashMap::new()),
            driver,
        })
    }
}

/// The role a `filter_name` selects.
fn role_for(name: &[u8]) -> Result<FilterRole, String> {
    match name {
        n if n == ROUTER_FILTER_NAME.as_bytes() => Ok(FilterRole::Router),
        n if n == UPSTREAM_FILTER_NAME.as_bytes() => Ok(FilterRole::Upstream),
        other => Err(format!(
            "unknown filter_name '{}': expected '{ROUTER_FILTER_NAME}' or '{UPSTREAM_FILTER_NAME}'",
            String::from_utf8_lossy(other)
        )),
    }
}

// ------------------------------------------------------------------------------------
// Stream lifecycle
// ------------------------------------------------------------------------------------

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    root: ModulePtr<Root>,
    _envoy: HttpFilterHandle<'_>,
) -> ModulePtr<RefCell<Stream>> {
    guard("filter_new", ModulePtr::null(), || match root.get() {
        Some(root) => ModulePtr::new(RefCell::new(Stream {
            core: HttpFilter::new(Arc::clone(&root.config), root.role),
            role: root.role,
            panics: root.panics,
            counters: root.counters,
            dead: false,
            response_started: false,
            replied: false,
            calls: Vec::new(),
            waker: None,
        })),
        None => ModulePtr::null(),
    })
}

/// Frees the stream, unless one of its hooks is under way on this thread: a call
/// into Envoy that completes the stream (a local reply, the end of a response) runs
/// the stream-complete and destroy hooks before it returns, and the hook that made
/// it still holds the stream. Then the outermost hook frees it as it returns.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(stream: ModulePtr<RefCell<Stream>>) {
    guard("filter_destroy", (), || {
        if HOOK_DEPTH.with(Cell::get) > 0 {
            DOOMED.with(|d| d.borrow_mut().push(stream));
        } else {
            stream.destroy();
        }
    })
}

thread_local! {
    /// Stream hooks under way on this thread (nested when a callback into Envoy
    /// runs another hook).
    static HOOK_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Streams Envoy destroyed during a hook, freed when the outermost one returns.
    static DOOMED: RefCell<Vec<ModulePtr<RefCell<Stream>>>> = const { RefCell::new(Vec::new()) };
}

/// Runs a stream hook's body, counted in [`HOOK_DEPTH`]; the outermost frees the
/// streams destroyed meanwhile (see the destroy hook).
fn in_hook<R>(body: impl FnOnce() -> R) -> R {
    struct Depth;
    impl Drop for Depth {
        fn drop(&mut self) {
            let outermost = HOOK_DEPTH.with(|d| {
                let n = d.get().saturating_sub(1);
                d.set(n);
                n == 0
            });
            if outermost {
                for stream in DOOMED.with(|d| std::mem::take(&mut *d.borrow_mut())) {
                    stream.destroy();
                }
            }
        }
    }
    HOOK_DEPTH.with(|d| d.set(d.get() + 1));
    let _depth = Depth;
    body()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    mut envoy: HttpFilterHandle<'_>,
    stream: ModulePtr<RefCell<Stream>>,
    end_of_stream: bool,
) -> HeadersStatus {
    let status = run(&mut envoy, &stream, Direction::Request, |s, envoy, out| {
        if s.role == FilterRole::Upstream {
            let saved = envoy.filter_state_bytes(SAVED_REQUEST_KEY);
            s.core.bind_backend(
                backend_of(envoy).as_deref(),
                unix_millis(),
                saved.as_deref(),
            );
        } else {
            s.core.set_unix_millis(unix_millis());
        }
        let headers = HostHeaders::new(envoy, HeaderType::Request);
        s.core
            .on_request_headers(&headers, end_of_stream, now(), out)
    });
    headers_status(status)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    mut envoy: HttpFilterHandle<'_>,
    stream: ModulePtr<RefCell<Stream>>,
    end_of_stream: bool,
) -> BodyStatus {
    let status = run(&mut envoy, &stream, Direction::Request, |s, envoy, out| {
        let chunk = envoy.body(BodyType::ReceivedRequest).unwrap_or_default();
        s.core.on_request_body(&chunk, end_of_stream, now(), out)
    });
    body_status(status)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    mut envoy: HttpFilterHandle<'_>,
    stream: ModulePtr<RefCell<Stream>>,
) -> TrailersStatus {
    // Trailers end the body: the core sees an empty last chunk.
    let status = run(&mut envoy, &stream, Direction::Request, |s, _, out| {
        s.core.on_request_body(&[], true, now(), out)
    });
    trailers_status(status)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    mut envoy: HttpFilterHandle<'_>,
    stream: ModulePtr<RefCell<Stream>>,
    end_of_stream: bool,
) -> HeadersStatus {
    let status = run(&mut envoy, &stream, Direction::Response, |s, envoy, out| {
        s.response_started = true;
        let headers = HostHeaders::new(envoy, HeaderType::Response);
        s.core
            .on_response_headers(&headers, end_of_stream, now(), out)
    });
    headers_status(status)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    mut envoy: HttpFilterHandle<'_>,
    stream: ModulePtr<RefCell<Stream>>,
    end_of_stream: bool,
) -> BodyStatus {
    let status = run(&mut envoy, &stream, Direction::Response, |s, envoy, out| {
        let chunk = envoy.body(BodyType::ReceivedResponse).unwrap_or_default();
        s.core.on_response_body(&chunk, end_of_stream, now(), out)
    });
    body_status(status)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    mut envoy: HttpFilterHandle<'_>,
    stream: ModulePtr<RefCell<Stream>>,
) -> TrailersStatus {
    let status = run(&mut envoy, &stream, Direction::Response, |s, _, out| {
        s.core.on_response_body(&[], true, now(), out)
    });
    trailers_status(status)
}

/// Called before access logs are written (router role; Envoy 1.40 does not call it
/// on upstream filters): the place to write what is known of an unfinished response.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    mut envoy: HttpFilterHandle<'_>,
    stream: ModulePtr<RefCell<Stream>>,
) {
    run(&mut envoy, &stream, Direction::Response, |s, _, out| {
        s.core.on_stream_complete(now(), out);
        Status::Continue
    });
}

/// A call of this stream ended: the core goes on with its outcome, and a request
/// it no longer holds is resumed.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    mut envoy: HttpFilterHandle<'_>,
    stream: ModulePtr<RefCell<Stream>>,
    callout_id: u64,
    result: u32,
    headers: EnvoyArray<'_, EnvoyHttpHeader<'_>>,
    headers_size: usize,
    body_chunks: EnvoyArray<'_, EnvoyBuffer<'_>>,
    body_chunks_size: usize,
) {
    let outcome = callout_result(
        result,
        headers.as_slice(headers_size),
        body_chunks.as_slice(body_chunks_size),
    );
    in_hook(|| {
        let status = run(&mut envoy, &stream, Direction::Request, |s, _, out| {
            // An id the stream does not know (answered before Envoy said its id, or
            // for a call already given up) is ignored.
            let Some(i) = s.calls.iter().position(|(e, _)| *e == callout_id) else {
                return Status::StopIteration;
            };
            let (_, id) = s.calls.swap_remove(i);
            s.core.on_callout_done(id, outcome, now(), out)
        });
        resume_if(&mut envoy, &stream, status);
    })
}

/// The shared work a stream waited on ended, or its timer is due.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    mut envoy: HttpFilterHandle<'_>,
    stream: ModulePtr<RefCell<Stream>>,
    event_id: u64,
) {
    in_hook(|| match event_id {
        EVENT_WAKE => {
            let status = run(&mut envoy, &stream, Direction::Request, |s, _, out| {
                s.core.set_unix_millis(unix_millis());
                s.core.on_wake(now(), out)
            });
            resume_if(&mut envoy, &stream, status);
        }
        EVENT_TIMER => {
            // The core may end the response here (`EndResponse`), which can complete
            // the stream (Envoy runs its stream-complete and destroy hooks) before
            // `run` returns.
            run(&mut envoy, &stream, Direction::Response, |s, _, out| {
                s.core.on_timer(now(), out);
                Status::Continue
            });
        }
        _ => {}
    })
}

/// A held request the core let go of continues (unless it was answered).
fn resume_if(
    envoy: &mut HttpFilterHandle<'_>,
    stream: &ModulePtr<RefCell<Stream>>,
    status: Option<Status>,
) {
    let replied = stream
        .get()
        .and_then(|c| c.try_borrow().ok())
        .is_none_or(|s| s.replied || s.dead);
    if status == Some(Status::Continue) && !replied {
        envoy.continue_decoding();
    }
}

/// The outcome of a call, as the core reads it.
fn callout_result(
    result: u32,
    headers: &[EnvoyHttpHeader<'_>],
    chunks: &[EnvoyBuffer<'_>],
) -> CalloutResult {
    match result {
        abi::CALLOUT_SUCCESS => {
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|h| {
                    (
                        String::from_utf8_lossy(h.name.as_bytes()).into_owned(),
                        String::from_utf8_lossy(h.value.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let status = headers
                .iter()
                .find(|(n, _)| n == ":status")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = Vec::with_capacity(chunks.iter().map(|c| c.as_bytes().len()).sum());
            for c in chunks {
                body.extend_from_slice(c.as_bytes());
            }
            CalloutResult::Response {
                status,
                headers,
                body,
            }
        }
        abi::CALLOUT_RESET => CalloutResult::Failed("the connection failed or was reset"),
        abi::CALLOUT_EXCEED_RESPONSE_BUFFER_LIMIT => {
            CalloutResult::Failed("the answer was too large")
        }
        _ => CalloutResult::Failed("unknown outcome"),
    }
}

/// Queued background exchanges run here, on the main thread.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    mut envoy: FilterConfigHandle<'_>,
    root: ModulePtr<Root>,
    event_id: u64,
) {
    guard("config_scheduled", (), || {
        let Some(root) = root.get() else { return };
        if event_id != EVENT_RUN_EXCHANGES {
            return;
        }
        for mut job in registry().take_queued() {
            let step = job.start(unix_millis());
            root.drive(&mut envoy, job, step);
        }
    })
}

/// A background exchange's call ended.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    mut envoy: FilterConfigHandle<'_>,
    root: ModulePtr<Root>,
    callout_id: u64,
    result: u32,
    headers: EnvoyArray<'_, EnvoyHttpHeader<'_>>,
    headers_size: usize,
    body_chunks: EnvoyArray<'_, EnvoyBuffer<'_>>,
    body_chunks_size: usize,
) {
    guard("config_callout_done", (), || {
        let Some(root) = root.get() else { return };
        let Some(mut job) = lock(&root.background).remove(&callout_id) else {
            return;
        };
        let outcome = callout_result(
            result,
            headers.as_slice(headers_size),
            body_chunks.as_slice(body_chunks_size),
        );
        let step = job.on_result(&outcome, unix_millis());
        root.drive(&mut envoy, job, step);
    })
}

impl Root {
    /// Makes a background exchange's next call, or lets it end.
    fn drive(&self, envoy: &mut FilterConfigHandle<'_>, mut job: ExchangeJob, mut step: Step) {
        loop {
            let call = match step {
                Step::Call(call) => call,
                Step::Done(Ok(())) => return,
                Step::Done(Err(e)) => {
                    abi::log(
                        LogLevel::Warn,
                        &format!("aigw: background credential refresh failed: {e}"),
                    );
                    return;
                }
            };
            let timeout = call.timeout.as_millis() as u64;
            match envoy.http_callout(&call.cluster, &call.headers, &call.body, timeout) {
                Ok(id) => {
                    lock(&self.background).insert(id, job);
                    return;
                }
                Err(e) => {
                    step = job.on_result(&CalloutResult::Failed(init_failure(e)), unix_millis())
                }
            }
        }
    }
}

/// Why Envoy refused to start a call.
fn init_failure(e: CalloutInit) -> &'static str {
    match e {
        CalloutInit::ClusterNotFound => "the cluster is not configured in Envoy",
        CalloutInit::MissingRequiredHeaders => "the call lacks :method, :path or host",
        _ => "Envoy could not start the call",
    }
}

// Hooks for features the gateway does not use (streaming calls, watermarks of
// terminal filters). Envoy requires the symbols; they do nothing.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _envoy: HttpFilterHandle<'_>,
    _stream: ModulePtr<RefCell<Stream>>,
    _stream_id: u64,
    _headers: *const EnvoyHttpHeader<'_>,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _envoy: HttpFilterHandle<'_>,
    _stream: ModulePtr<RefCell<Stream>>,
    _stream_id: u64,
    _data: *const EnvoyBuffer<'_>,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _envoy: HttpFilterHandle<'_>,
    _stream: ModulePtr<RefCell<Stream>>,
    _stream_id: u64,
    _trailers: *const EnvoyHttpHeader<'_>,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _envoy: HttpFilterHandle<'_>,
    _stream: ModulePtr<RefCell<Stream>>,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _envoy: HttpFilterHandle<'_>,
    _stream: ModulePtr<RefCell<Stream>>,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _envoy: HttpFilterHandle<'_>,
    _stream: ModulePtr<RefCell<Stream>>,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _envoy: HttpFilterHandle<'_>,
    _stream: ModulePtr<RefCell<Stream>>,
) {
}

// ------------------------------------------------------------------------------------
// Glue
// ------------------------------------------------------------------------------------

/// The core's view of one of Envoy's header maps: fetched whole on the first lookup
/// (a hook looks up a dozen names; see [`HttpFilterHandle::headers`]).
struct HostHeaders<'h> {
    envoy: &'h HttpFilterHandle<'h>,
    kind: HeaderType,
    all: OnceCell<Vec<EnvoyHttpHeader<'h>>>,
}

impl<'h> HostHeaders<'h> {
    fn new(envoy: &'h HttpFilterHandle<'h>, kind: HeaderType) -> Self {
        HostHeaders {
            envoy,
            kind,
            all: OnceCell::new(),
        }
    }
}

impl Headers for HostHeaders<'_> {
    fn get(&self, name: &str) -> Option<String> {
        let all = self.all.get_or_init(|| self.envoy.headers(self.kind));
        all.iter()
            .find(|h| h.name.as_bytes() == name.as_bytes())
            .map(|h| String::from_utf8_lossy(h.value.as_bytes()).into_owned())
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        let all = self.all.get_or_init(|| self.envoy.headers(self.kind));
        for h in all {
            f(
                &String::from_utf8_lossy(h.name.as_bytes()),
                &String::from_utf8_lossy(h.value.as_bytes()),
            );
        }
    }

    fn for_each_name(&self, f: &mut dyn FnMut(&str)) {
        let all = self.all.get_or_init(|| self.envoy.headers(self.kind));
        for h in all {
            f(&String::from_utf8_lossy(h.name.as_bytes()));
        }
    }
}

/// What a stream hook answers when it does nothing (dead stream, re-entered, null).
const PASS: Option<Status> = None;
/// What a stream hook answers after a panic: stop, the stream was answered or reset.
const STOP: Option<Status> = Some(Status::StopIteration);

/// Drives one stream hook: borrows the stream, calls the core via `step`, releases
/// the borrow, then applies the actions in order. `None` means "let it pass".
///
/// Calls and parks need the stream again once applied: a call's id is recorded, a
/// park gets its waker, and a call Envoy refuses at once is handed back to the core
/// as failed, whose answer decides the hook's status.
fn run(
    envoy: &mut HttpFilterHandle<'_>,
    stream: &ModulePtr<RefCell<Stream>>,
    dir: Direction,
    step: impl FnOnce(&mut Stream, &HttpFilterHandle<'_>, &mut Vec<Action>) -> Status,
) -> Option<Status> {
    in_hook(|| run_hook(envoy, stream, dir, step))
}

fn run_hook(
    envoy: &mut HttpFilterHandle<'_>,
    stream: &ModulePtr<RefCell<Stream>>,
    dir: Direction,
    step: impl FnOnce(&mut Stream, &HttpFilterHandle<'_>, &mut Vec<Action>) -> Status,
) -> Option<Status> {
    let Some(cell) = stream.get() else {
        return PASS;
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        // Re-entered from our own callback (e.g. a local reply's response headers).
        let Ok(mut s) = cell.try_borrow_mut() else {
            return PASS;
        };
        if s.dead {
            return PASS;
        }
        let mut actions = Vec::new();
        let mut status = step(&mut s, envoy, &mut actions);
        loop {
            if actions
                .iter()
                .any(|a| matches!(a, Action::SendLocalReply { .. }))
            {
                s.replied = true;
            }
            let counters = s.counters;
            drop(s);
            let mut after = Vec::new();
            for action in actions.drain(..) {
                match apply(envoy, dir, &counters, action) {
                    // The last action: the stream is complete (and destroyed, its
                    // memory kept until the outermost hook returns).
                    Some(After::Ended) => return Some(status),
                    Some(a) => after.push(a),
                    None => {}
                }
            }
            let Ok(again) = cell.try_borrow_mut() else {
                return Some(status);
            };
            s = again;
            let mut refused = None;
            for a in after {
                match a {
                    After::Called {
                        id,
                        envoy_id: Ok(e),
                    } => s.calls.push((e, id)),
                    After::Called {
                        id,
                        envoy_id: Err(e),
                    } => refused = Some((id, e)),
                    After::Park => {
                        let waker = s.waker(envoy);
                        match waker {
                            Some(w) => s.core.set_waker(Waker::from(w)),
                            None => abi::log(
                                LogLevel::Error,
                                "aigw: no scheduler to wake a held request",
                            ),
                        }
                    }
                    After::Timer(delay) => {
                        let armed = s.waker(envoy).is_some_and(|w| {
                            let weak: Weak<StreamWaker> = Arc::downgrade(&w);
                            crate::timers::after(delay, weak)
                        });
                        if !armed {
                            abi::log(
                                LogLevel::Error,
                                "aigw: no timer for a stream (streamIdleTimeout does not apply to it)",
                            );
                        }
                    }
                    After::Ended => {}
                }
            }
            let Some((id, e)) = refused else {
                return Some(status);
            };
            let failed = CalloutResult::Failed(init_failure(e));
            let next = s.core.on_callout_done(id, failed, now(), &mut actions);
            // Answered here, or let go: the hook's own status says so.
            if next == Status::Continue {
                status = Status::Continue;
            }
        }
    }));
    result.unwrap_or_else(|payload| {
        on_panic(envoy, cell, panic_message(payload.as_ref()));
        STOP
    })
}

/// What applying an action leaves for the stream to record.
enum After {
    Called {
        id: u32,
        envoy_id: Result<u64, CalloutInit>,
    },
    Park,
    /// Call the core's `on_timer` after this long.
    Timer(Duration),
    /// The response was ended: the stream may be gone.
    Ended,
}

impl Stream {
    /// This stream's waker, its scheduler made at the first use (here, on its worker
    /// thread, as Envoy requires).
    fn waker(&mut self, envoy: &mut HttpFilterHandle<'_>) -> Option<Arc<StreamWaker>> {
        if self.waker.is_none() {
            let scheduler = envoy.new_scheduler()?;
            self.waker = Some(Arc::new(StreamWaker {
                scheduler: Mutex::new(Some(scheduler)),
            }));
        }
        self.waker.clone()
    }
}

/// After a panic: mark the stream dead, count it, answer 500 if no response has
/// started, reset the stream if one has (never half-translated output).
fn on_panic(envoy: &mut HttpFilterHandle<'_>, cell: &RefCell<Stream>, message: &str) {
    let Ok(mut s) = cell.try_borrow_mut() else {
        return;
    };
    s.dead = true;
    if let Some(id) = s.panics {
        envoy.increment_counter(id, 1);
    }
    let (replied, response_started) = (s.replied, s.response_started);
    s.replied = true;
    drop(s);
    let err = GatewayError::Internal;
    let outcome = if replied {
        "already answered"
    } else if response_started {
        envoy.reset_stream(err.code());
        "stream reset"
    } else {
        envoy.send_response(
            err.status(),
            &[("content-type", "application/json")],
            &err.body(ClientSchema::OpenAI),
            err.code(),
        );
        "answered 500"
    };
    abi::log(
        LogLevel::Error,
        &format!("aigw: panic in a stream hook ({message}); {outcome}"),
    );
}

/// The text of a panic payload (`panic!` with a literal or a format string).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string payload")
}

/// Applies one action of the core to Envoy's stream.
fn apply(
    envoy: &mut HttpFilterHandle<'_>,
    dir: Direction,
    counters: &Counters,
    action: Action,
) -> Option<After> {
    match action {
        Action::SetHeader { name, value } => {
            envoy.set_header(dir.headers(), &name, &value);
        }
        Action::RemoveHeader { name } => {
            envoy.remove_header(dir.headers(), &name);
        }
        Action::ClearRouteCache => envoy.clear_route_cache(),
        Action::SetBufferLimit(wanted) => {
            // Raise only: 0 is "unlimited", and another filter may need more.
            let current = envoy.buffer_limit();
            if current != 0 && current < wanted {
                envoy.set_buffer_limit(wanted);
            }
        }
        Action::ReplaceBody(body) => replace_body(envoy, dir, &body),
        Action::SetMetadata { key, value } => match value {
            MetadataValue::Number(n) => envoy.set_metadata_number(METADATA_NAMESPACE, &key, n),
            MetadataValue::String(v) => envoy.set_metadata_string(METADATA_NAMESPACE, &key, &v),
        },
        Action::SendLocalReply {
            status,
            content_type,
            body,
            details,
            headers,
        } => {
            let mut all = vec![("content-type", content_type)];
            all.extend(headers.iter().map(|(n, v)| (*n, v.as_str())));
            envoy.send_response(status, &all, &body, details)
        }
        Action::SetFilterState { key, value } => {
            if !envoy.set_filter_state_bytes(key, &value) {
                abi::log(
                    LogLevel::Warn,
                    &format!("aigw: could not set filter state {key}"),
                );
            }
        }
        Action::Log { level, message } => abi::log(log_level(level), &message),
        Action::Count(c) => {
            if let Some(id) = counters[c as usize] {
                envoy.increment_counter(id, 1);
            }
        }
        Action::Call { id, call } => {
            let timeout = call.timeout.as_millis() as u64;
            let envoy_id = envoy.http_callout(&call.cluster, &call.headers, &call.body, timeout);
            return Some(After::Called { id, envoy_id });
        }
        Action::Park => return Some(After::Park),
        Action::Timer(delay) => return Some(After::Timer(delay)),
        Action::EndResponse(bytes) => {
            envoy.send_response_data(&bytes, true);
            return Some(After::Ended);
        }
    }
    None
}

/// Envoy has no "replace": drain, then append. The core replaces everything this
/// filter holds: what it buffered so far (a whole request or answer) and the chunk
/// just received (a stream's chunk, when nothing is buffered). In a trailers hook
/// there is no received chunk: the new bytes go to the buffered body instead.
fn replace_body(envoy: &mut HttpFilterHandle<'_>, dir: Direction, body: &[u8]) {
    let (received, buffered) = match dir {
        Direction::Request => (BodyType::ReceivedRequest, BodyType::BufferedRequest),
        Direction::Response => (BodyType::ReceivedResponse, BodyType::BufferedResponse),
    };
    envoy.drain_body(buffered);
    envoy.drain_body(received);
    if !envoy.append_body(received, body) {
        envoy.append_body(buffered, body);
    }
}

/// The upstream instance's backend: `io.envoy.ai_gateway/backend` in the selected
/// host's metadata, else in the cluster's.
fn backend_of(envoy: &HttpFilterHandle<'_>) -> Option<String> {
    let key = (METADATA_NAMESPACE, BACKEND_METADATA_KEY);
    envoy
        .metadata_string(MetadataSource::Host, key.0, key.1)
        .or_else(|| envoy.metadata_string(MetadataSource::Cluster, key.0, key.1))
}

fn headers_status(status: Option<Status>) -> HeadersStatus {
    match status {
        None | Some(Status::Continue) => HeadersStatus::Continue,
        Some(Status::StopIteration | Status::StopAndBuffer) => HeadersStatus::StopIteration,
    }
}

fn trailers_status(status: Option<Status>) -> TrailersStatus {
    match status {
        None | Some(Status::Continue) => TrailersStatus::Continue,
        Some(Status::StopIteration | Status::StopAndBuffer) => TrailersStatus::StopIteration,
    }
}

fn body_status(status: Option<Status>) -> BodyStatus {
    match status {
        None | Some(Status::Continue) => BodyStatus::Continue,
        Some(Status::StopAndBuffer) => BodyStatus::StopIterationAndBuffer,
        // A local reply was sent or the stream reset: keep nothing.
        Some(Status::StopIteration) => BodyStatus::StopIterationNoBuffer,
    }
}

fn log_level(level: CoreLogLevel) -> LogLevel {
    match level {
        CoreLogLevel::Debug => LogLevel::Debug,
        CoreLogLevel::Info => LogLevel::Info,
        CoreLogLevel::Warn => LogLevel::Warn,
        CoreLogLevel::Error => LogLevel::Error,
    }
}

// Only host-free parts are tested here: the hooks themselves need Envoy's symbols
// and are exercised against a real Envoy (see the integration tests).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_names_select_roles() {
        assert_eq!(role_for(b"aigw"), Ok(FilterRole::Router));
        assert_eq!(role_for(b"aigw_upstream"), Ok(FilterRole::Upstream));
        let err = role_for(b"aigw_router").unwrap_err();
        assert!(err.contains("'aigw_router'"), "{err}");
    }

    #[test]
    fn statuses_map_to_envoy_enums() {
        assert_eq!(headers_status(None), HeadersStatus::Continue);
        assert_eq!(
            headers_status(Some(Status::Continue)),
            HeadersStatus::Continue
        );
        assert_eq!(
            headers_status(Some(Status::StopIteration)),
            HeadersStatus::StopIteration
        );
        assert_eq!(body_status(None), BodyStatus::Continue);
        assert_eq!(
            body_status(Some(Status::StopAndBuffer)),
            BodyStatus::StopIterationAndBuffer
        );
        // After a local reply nothing may be buffered.
        assert_eq!(
            body_status(Some(Status::StopIteration)),
            BodyStatus::StopIterationNoBuffer
        );
        // The numeric values are the header's.
        assert_eq!(BodyStatus::StopIterationNoBuffer as u32, 3);
        assert_eq!(HeaderType::Response as u32, 2);
    }

    #[test]
    fn panic_messages_are_recovered() {
        let literal = catch_unwind(|| panic!("boom")).unwrap_err();
        assert_eq!(panic_message(literal.as_ref()), "boom");
        let formatted = catch_unwind(|| panic!("bad {}", 42)).unwrap_err();
        assert_eq!(panic_message(formatted.as_ref()), "bad 42");
        let other = catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(other.as_ref()), "non-string payload");
    }

    #[test]
    fn module_ptr_owns_its_value() {
        struct Flag(std::rc::Rc<std::cell::Cell<bool>>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let dropped = std::rc::Rc::new(std::cell::Cell::new(false));
        let ptr = ModulePtr::new(Flag(dropped.clone()));
        assert!(ptr.get().is_some());
        assert!(!dropped.get());
        ptr.destroy();
        assert!(dropped.get());
        assert!(ModulePtr::<Flag>::null().get().is_none());
        ModulePtr::<Flag>::null().destroy();
    }
}
