//! Our binding over Envoy's dynamic-module C ABI (`abi.h`, as shipped in Envoy 1.40,
//! ABI "v0.2.0"): the `#[repr(C)]` vocabulary, the callbacks Envoy implements, and one
//! safe wrapper each. Every `unsafe` block of the native build lives in this file.
//!
//! Soundness rests on three handle types that only Envoy creates, by passing them to
//! our exported hooks (their fields are private, so Rust code cannot forge them):
//! - [`HttpFilterHandle`]: Envoy's per-stream filter object, valid during the hook
//!   that received it (the lifetime parameter keeps it from escaping the hook);
//! - [`FilterConfigHandle`]: Envoy's filter-config object, during `config_new`;
//! - [`ModulePtr`]: a box of ours that Envoy holds as an opaque pointer and hands back
//!   to every hook until the matching `destroy` hook.
//!
//! Mutating calls take `&mut self` and reads that borrow Envoy memory take `&self`,
//! so the borrow checker enforces the header's rule that an Envoy buffer stays valid
//! only "until a setter callback is called".

use std::borrow::Cow;
use std::ffi::{c_char, c_void};
use std::marker::PhantomData;

// ------------------------------------------------------------------------------------
// Types (abi.h "Common Types" and "HTTP Filter Types")
// ------------------------------------------------------------------------------------

/// A byte range owned by Envoy (`envoy_dynamic_module_type_envoy_buffer`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer<'a> {
    ptr: *const u8,
    length: usize,
    _owner: PhantomData<&'a [u8]>,
}

impl<'a> EnvoyBuffer<'a> {
    const EMPTY: Self = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
        _owner: PhantomData,
    };

    /// The bytes; empty when Envoy passed a null buffer.
    pub fn as_bytes(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            return &[];
        }
        // SAFETY: Envoy guarantees `ptr` points to `length` readable bytes for as long
        // as the hook or the borrow that produced this buffer (`'a`).
        unsafe { std::slice::from_raw_parts(self.ptr, self.length) }
    }
}

/// A byte range owned by the module (`envoy_dynamic_module_type_module_buffer`).
#[repr(C)]
#[derive(Clone, Copy)]
struct ModuleBuffer<'a> {
    ptr: *const u8,
    length: usize,
    _owner: PhantomData<&'a [u8]>,
}

impl<'a> ModuleBuffer<'a> {
    /// A null buffer: "remove" for `set_header`, "absent" for optional arguments.
    const NULL: ModuleBuffer<'static> = ModuleBuffer {
        ptr: std::ptr::null(),
        length: 0,
        _owner: PhantomData,
    };

    fn new(bytes: &'a [u8]) -> Self {
        ModuleBuffer {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
            _owner: PhantomData,
        }
    }

    fn str(s: &'a str) -> Self {
        Self::new(s.as_bytes())
    }
}

/// A header owned by the module (`envoy_dynamic_module_type_module_http_header`).
#[repr(C)]
struct ModuleHttpHeader<'a> {
    key: ModuleBuffer<'a>,
    value: ModuleBuffer<'a>,
}

/// An array Envoy passes to a hook (its length is a separate argument), valid for
/// that hook. Only Envoy creates one.
#[repr(transparent)]
pub struct EnvoyArray<'a, T> {
    ptr: *const T,
    _owner: PhantomData<&'a [T]>,
}

impl<'a, T> EnvoyArray<'a, T> {
    /// The `len` elements Envoy passed with this array.
    pub fn as_slice(&self, len: usize) -> &'a [T] {
        if self.ptr.is_null() || len == 0 {
            return &[];
        }
        // SAFETY: Envoy passes `len` initialized elements at `ptr`, valid for the hook
        // (`'a`); the hook signature pairs this array with that length.
        unsafe { std::slice::from_raw_parts(self.ptr, len) }
    }
}

/// A header owned by Envoy (`envoy_dynamic_module_type_envoy_http_header`: key
/// pointer and length, then value pointer and length, which is two [`EnvoyBuffer`]s).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHttpHeader<'a> {
    pub name: EnvoyBuffer<'a>,
    pub value: EnvoyBuffer<'a>,
}

/// `envoy_dynamic_module_type_http_header_type`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderType {
    Request = 0,
    Response = 2,
}

/// `envoy_dynamic_module_type_http_body_type`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyType {
    ReceivedRequest = 0,
    BufferedRequest = 1,
    ReceivedResponse = 2,
    BufferedResponse = 3,
}

/// `envoy_dynamic_module_type_log_level`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

/// `envoy_dynamic_module_type_metadata_source`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataSource {
    Cluster = 2,
    /// The selected upstream host (an `LbEndpoint`'s metadata).
    Host = 3,
}

/// `envoy_dynamic_module_type_on_http_filter_{request,response}_headers_status`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadersStatus {
    Continue = 0,
    StopIteration = 1,
}

/// `envoy_dynamic_module_type_on_http_filter_{request,response}_body_status`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyStatus {
    Continue = 0,
    StopIterationAndBuffer = 1,
    /// After a local reply or a reset: nothing more should move or be kept.
    StopIterationNoBuffer = 3,
}

/// `envoy_dynamic_module_type_on_http_filter_{request,response}_trailers_status`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrailersStatus {
    Continue = 0,
    /// After a local reply.
    StopIteration = 1,
}

/// Why Envoy did not start a call (`envoy_dynamic_module_type_http_callout_init_result`
/// other than Success, read from a plain integer: an unknown value is not undefined
/// behaviour).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalloutInit {
    MissingRequiredHeaders,
    ClusterNotFound,
    CannotCreateRequest,
}

impl CalloutInit {
    fn check(result: u32) -> Result<(), CalloutInit> {
        match result {
            0 => Ok(()),
            1 => Err(CalloutInit::MissingRequiredHeaders),
            2 => Err(CalloutInit::ClusterNotFound),
            _ => Err(CalloutInit::CannotCreateRequest),
        }
    }
}

/// `envoy_dynamic_module_type_http_callout_result`, as Envoy passes it to the done
/// hooks (read as a plain integer: an unknown value must not be undefined behaviour).
pub const CALLOUT_SUCCESS: u32 = 0;
pub const CALLOUT_RESET: u32 = 1;
pub const CALLOUT_EXCEED_RESPONSE_BUFFER_LIMIT: u32 = 2;

/// `envoy_dynamic_module_type_metrics_result`: 0 is Success.
type MetricsResult = u32;
const METRICS_SUCCESS: MetricsResult = 0;

/// `envoy_dynamic_module_type_http_filter_stream_reset_reason`: 0 is LocalReset.
const RESET_LOCAL: u32 = 0;

// ------------------------------------------------------------------------------------
// Callbacks Envoy implements (resolved against the Envoy binary at dlopen)
// ------------------------------------------------------------------------------------

type RawFilter = *mut c_void;
type RawConfig = *mut c_void;

extern "C" {
    fn envoy_dynamic_module_callback_log(level: LogLevel, message: ModuleBuffer<'_>);

    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: RawConfig,
        name: ModuleBuffer<'_>,
        label_names: *const ModuleBuffer<'_>,
        label_names_length: usize,
        counter_id: *mut usize,
    ) -> MetricsResult;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: RawFilter,
        id: usize,
        label_values: *const ModuleBuffer<'_>,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: RawFilter,
        header_type: HeaderType,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        filter: RawFilter,
        header_type: HeaderType,
        result_headers: *mut EnvoyHttpHeader<'_>,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter: RawFilter,
        header_type: HeaderType,
        key: ModuleBuffer<'_>,
        value: ModuleBuffer<'_>,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_send_response(
        filter: RawFilter,
        status_code: u32,
        headers: *const ModuleHttpHeader<'_>,
        headers_size: usize,
        body: ModuleBuffer<'_>,
        details: ModuleBuffer<'_>,
    );
    // Older headers spell the data as `(const char* ptr, size_t length)`, 1.40's
    // implementation as `envoy_dynamic_module_type_module_buffer data` (a `{ptr,
    // length}` struct by value): the C calling conventions of x86-64 and aarch64 pass
    // both the same way, in two registers.
    fn envoy_dynamic_module_callback_http_send_response_data(
        filter: RawFilter,
        data: ModuleBuffer<'_>,
        end_stream: bool,
    );
    fn envoy_dynamic_module_callback_http_filter_reset_stream(
        filter: RawFilter,
        reason: u32,
        details: ModuleBuffer<'_>,
    );

    fn envoy_dynamic_module_callback_http_get_body_size(
        filter: RawFilter,
        body_type: BodyType,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter: RawFilter,
        body_type: BodyType,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: RawFilter,
        body_type: BodyType,
        result: *mut EnvoyBuffer<'_>,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_append_body(
        filter: RawFilter,
        body_type: BodyType,
        data: ModuleBuffer<'_>,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_drain_body(
        filter: RawFilter,
        body_type: BodyType,
        number_of_bytes: usize,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_set_dynamic_metadata_number(
        filter: RawFilter,
        ns: ModuleBuffer<'_>,
        key: ModuleBuffer<'_>,
        value: f64,
    );
    fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter: RawFilter,
        ns: ModuleBuffer<'_>,
        key: ModuleBuffer<'_>,
        value: ModuleBuffer<'_>,
    );
    fn envoy_dynamic_module_callback_http_get_metadata_string(
        filter: RawFilter,
        source: MetadataSource,
        ns: ModuleBuffer<'_>,
        key: ModuleBuffer<'_>,
        result: *mut EnvoyBuffer<'_>,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: RawFilter,
        key: ModuleBuffer<'_>,
        value: ModuleBuffer<'_>,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
        filter: RawFilter,
        key: ModuleBuffer<'_>,
        result: *mut EnvoyBuffer<'_>,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_clear_route_cache(filter: RawFilter);
    fn envoy_dynamic_module_callback_http_get_buffer_limit(filter: RawFilter) -> u64;
    fn envoy_dynamic_module_callback_http_set_buffer_limit(filter: RawFilter, limit: u64);

    fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: RawFilter,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer<'_>,
        headers: *const ModuleHttpHeader<'_>,
        headers_size: usize,
        body: ModuleBuffer<'_>,
        timeout_milliseconds: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: RawConfig,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer<'_>,
        headers: *const ModuleHttpHeader<'_>,
        headers_size: usize,
        body: ModuleBuffer<'_>,
        timeout_milliseconds: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: RawFilter);
    fn envoy_dynamic_module_callback_http_filter_scheduler_new(filter: RawFilter) -> RawScheduler;
    fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: RawScheduler,
        event_id: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: RawScheduler);
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: RawConfig,
    ) -> RawScheduler;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: RawScheduler,
        event_id: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: RawScheduler);
}

type RawScheduler = *mut c_void;

// ------------------------------------------------------------------------------------
// Safe wrappers
// ------------------------------------------------------------------------------------

/// The ABI version Envoy 1.40 expects from `envoy_dynamic_module_on_program_init`.
pub fn abi_version() -> *const c_char {
    c"v0.2.0".as_ptr()
}

/// Writes a line to Envoy's log under the `dynamic_modules` logger id.
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: the callback only reads the message for the duration of the call.
    unsafe { envoy_dynamic_module_callback_log(level, ModuleBuffer::str(message)) }
}

/// Envoy's filter-config object (`http_filter_config_envoy_ptr`), received by
/// `config_new`. Only Envoy creates one.
#[repr(transparent)]
pub struct FilterConfigHandle<'a> {
    raw: RawConfig,
    _hook: PhantomData<&'a mut ()>,
}

impl FilterConfigHandle<'_> {
    /// Defines a counter without labels; `None` if Envoy refuses (stats frozen).
    pub fn define_counter(&mut self, name: &str) -> Option<usize> {
        let mut id = 0usize;
        // SAFETY: `raw` is the live config object of this `config_new` call; the name
        // is read during the call; `id` is a valid out-pointer; no labels.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_config_define_counter(
                self.raw,
                ModuleBuffer::str(name),
                std::ptr::null(),
                0,
                &mut id,
            )
        };
        (result == METRICS_SUCCESS).then_some(id)
    }

    /// A scheduler that runs `on_http_filter_config_scheduled` on the main thread,
    /// committed from any thread; `None` if Envoy gave none.
    pub fn new_scheduler(&mut self) -> Option<Scheduler> {
        // SAFETY: `raw` is the live config object of this hook.
        let raw =
            unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(self.raw) };
        (!raw.is_null()).then_some(Scheduler { raw, config: true })
    }

    /// An HTTP call not tied to a request (main thread only: call it from a config
    /// hook); its outcome comes to `on_http_filter_config_http_callout_done`.
    pub fn http_callout(
        &mut self,
        cluster: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, CalloutInit> {
        let headers = module_headers(headers);
        let mut id = 0u64;
        // SAFETY: `raw` is the live config object of this hook; Envoy copies the
        // cluster name, headers and body during the call; `id` is a valid out-pointer.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.raw,
                &mut id,
                ModuleBuffer::str(cluster),
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::new(body),
                timeout_ms,
            )
        };
        CalloutInit::check(result).map(|()| id)
    }
}

/// An Envoy scheduler of ours (per stream or per config): Envoy allocates it, we
/// delete it. Committing from any thread is safe, and a no-op once its stream or
/// config is gone; committing and deleting must not race (its owner keeps it
/// behind a lock).
#[derive(Debug)]
pub struct Scheduler {
    raw: RawScheduler,
    config: bool,
}

// SAFETY: Envoy documents commit as callable from any thread; delete is called once,
// by the owner, under its lock.
unsafe impl Send for Scheduler {}
// SAFETY: as above: `commit` takes `&self` and is thread-safe on Envoy's side.
unsafe impl Sync for Scheduler {}

impl Scheduler {
    /// Runs the scheduled hook with `event_id` on the owner's thread, later.
    pub fn commit(&self, event_id: u64) {
        // SAFETY: `raw` came from `*_scheduler_new` and is not yet deleted (`drop`
        // takes it by value).
        unsafe {
            if self.config {
                envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                    self.raw, event_id,
                )
            } else {
                envoy_dynamic_module_callback_http_filter_scheduler_commit(self.raw, event_id)
            }
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `*_scheduler_new`; this is its one delete.
        unsafe {
            if self.config {
                envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.raw)
            } else {
                envoy_dynamic_module_callback_http_filter_scheduler_delete(self.raw)
            }
        }
    }
}

fn module_headers(headers: &[(String, String)]) -> Vec<ModuleHttpHeader<'_>> {
    headers
        .iter()
        .map(|(k, v)| ModuleHttpHeader {
            key: ModuleBuffer::str(k),
            value: ModuleBuffer::str(v),
        })
        .collect()
}

/// Envoy's per-stream filter object (`http_filter_envoy_ptr`), valid during the hook
/// that received it. Only Envoy creates one.
#[repr(transparent)]
pub struct HttpFilterHandle<'a> {
    raw: RawFilter,
    _hook: PhantomData<&'a mut ()>,
}

impl HttpFilterHandle<'_> {
    /// Every header of one map, in order, as views into Envoy's memory. One call
    /// instead of one lookup per name: Envoy's by-name lookup allocates a lower-cased
    /// key and scans its list each time. The views last until a setter runs, which
    /// `&mut self` on the setters rules out while they are borrowed.
    pub fn headers(&self, kind: HeaderType) -> Vec<EnvoyHttpHeader<'_>> {
        // SAFETY: `raw` is live for this hook.
        let count = unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.raw, kind) };
        if count == 0 {
            return Vec::new();
        }
        let mut headers = Vec::with_capacity(count);
        // SAFETY: `raw` is live; Envoy writes exactly `count` entries (the size it just
        // reported for the same map, unchanged since) into the reserved capacity.
        let filled = unsafe {
            envoy_dynamic_module_callback_http_get_headers(self.raw, kind, headers.as_mut_ptr())
        };
        if filled {
            // SAFETY: Envoy initialized `count` entries above.
            unsafe { headers.set_len(count) };
        }
        headers
    }

    /// Replaces every value of `name` with `value`.
    pub fn set_header(&mut self, kind: HeaderType, name: &str, value: &str) -> bool {
        if value.is_empty() {
            // Envoy treats an empty value as "remove"; say so instead of surprising.
            return self.remove_header(kind, name);
        }
        // SAFETY: `raw` is live for this hook; both buffers are read during the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.raw,
                kind,
                ModuleBuffer::str(name),
                ModuleBuffer::str(value),
            )
        }
    }

    /// Removes every value of `name`.
    pub fn remove_header(&mut self, kind: HeaderType, name: &str) -> bool {
        // SAFETY: `raw` is live for this hook; a null value means "remove".
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.raw,
                kind,
                ModuleBuffer::str(name),
                ModuleBuffer::NULL,
            )
        }
    }

    /// The body of `kind` as one slice: borrowed when Envoy holds it in one slice,
    /// copied otherwise. `None` when that body is not available in this hook.
    pub fn body(&self, kind: BodyType) -> Option<Cow<'_, [u8]>> {
        // SAFETY: `raw` is live for this hook.
        let count =
            unsafe { envoy_dynamic_module_callback_http_get_body_chunks_size(self.raw, kind) };
        if count == 0 {
            return (self.body_size(kind) == 0).then_some(Cow::Borrowed(&[][..]));
        }
        let mut chunks = vec![EnvoyBuffer::EMPTY; count];
        // SAFETY: `chunks` has room for the `count` slices Envoy just reported; they
        // stay valid until a setter is called, which `&self` here rules out.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_body_chunks(self.raw, kind, chunks.as_mut_ptr())
        };
        if !ok {
            return None;
        }
        Some(match chunks.as_slice() {
            [one] => Cow::Borrowed(one.as_bytes()),
            many => {
                let mut joined = Vec::with_capacity(many.iter().map(|c| c.as_bytes().len()).sum());
                for c in many {
                    joined.extend_from_slice(c.as_bytes());
                }
                Cow::Owned(joined)
            }
        })
    }

    /// Size of the body of `kind`; 0 when absent.
    pub fn body_size(&self, kind: BodyType) -> usize {
        // SAFETY: `raw` is live for this hook.
        unsafe { envoy_dynamic_module_callback_http_get_body_size(self.raw, kind) }
    }

    /// Appends `data` to the body of `kind`; false if that body is not available.
    pub fn append_body(&mut self, kind: BodyType, data: &[u8]) -> bool {
        // SAFETY: `raw` is live for this hook; Envoy copies `data` during the call.
        unsafe {
            envoy_dynamic_module_callback_http_append_body(self.raw, kind, ModuleBuffer::new(data))
        }
    }

    /// Drains the whole body of `kind`; false if that body is not available.
    pub fn drain_body(&mut self, kind: BodyType) -> bool {
        let size = self.body_size(kind);
        // SAFETY: `raw` is live for this hook.
        unsafe { envoy_dynamic_module_callback_http_drain_body(self.raw, kind, size) }
    }

    /// Sets a number in the stream's dynamic metadata.
    pub fn set_metadata_number(&mut self, ns: &str, key: &str, value: f64) {
        // SAFETY: `raw` is live for this hook; the strings are read during the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_dynamic_metadata_number(
                self.raw,
                ModuleBuffer::str(ns),
                ModuleBuffer::str(key),
                value,
            )
        }
    }

    /// Sets a string in the stream's dynamic metadata.
    pub fn set_metadata_string(&mut self, ns: &str, key: &str, value: &str) {
        // SAFETY: `raw` is live for this hook; the strings are read during the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
                self.raw,
                ModuleBuffer::str(ns),
                ModuleBuffer::str(key),
                ModuleBuffer::str(value),
            )
        }
    }

    /// A string from the metadata of `source` (cluster, selected host), copied out.
    pub fn metadata_string(&self, source: MetadataSource, ns: &str, key: &str) -> Option<String> {
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: `raw` is live for this hook; `value` is a valid out-pointer.
        let found = unsafe {
            envoy_dynamic_module_callback_http_get_metadata_string(
                self.raw,
                source,
                ModuleBuffer::str(ns),
                ModuleBuffer::str(key),
                &mut value,
            )
        };
        found.then(|| String::from_utf8_lossy(value.as_bytes()).into_owned())
    }

    /// Stores bytes in the stream's filter state (upstream filters share the
    /// downstream request's). False when Envoy refused.
    pub fn set_filter_state_bytes(&mut self, key: &str, value: &[u8]) -> bool {
        // SAFETY: `raw` is live for this hook; Envoy copies both buffers during the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.raw,
                ModuleBuffer::str(key),
                ModuleBuffer::new(value),
            )
        }
    }

    /// Bytes of a filter-state object, copied out.
    pub fn filter_state_bytes(&self, key: &str) -> Option<Vec<u8>> {
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: `raw` is live for this hook; `value` is a valid out-pointer.
        let found = unsafe {
            envoy_dynamic_module_callback_http_get_filter_state_bytes(
                self.raw,
                ModuleBuffer::str(key),
                &mut value,
            )
        };
        found.then(|| value.as_bytes().to_vec())
    }

    /// Makes Envoy pick the route again (the routing header changed).
    pub fn clear_route_cache(&mut self) {
        // SAFETY: `raw` is live for this hook; a no-op in the wrong phase.
        unsafe { envoy_dynamic_module_callback_http_clear_route_cache(self.raw) }
    }

    /// The stream's body buffer limit in bytes; 0 means unlimited.
    pub fn buffer_limit(&self) -> u64 {
        // SAFETY: `raw` is live for this hook.
        unsafe { envoy_dynamic_module_callback_http_get_buffer_limit(self.raw) }
    }

    /// Sets the stream's body buffer limit in bytes.
    pub fn set_buffer_limit(&mut self, limit: u64) {
        // SAFETY: `raw` is live for this hook.
        unsafe { envoy_dynamic_module_callback_http_set_buffer_limit(self.raw, limit) }
    }

    /// Answers the client locally; `details` becomes the response-code details.
    pub fn send_response(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
        details: &str,
    ) {
        let headers: Vec<ModuleHttpHeader<'_>> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader {
                key: ModuleBuffer::str(k),
                value: ModuleBuffer::str(v),
            })
            .collect();
        // SAFETY: `raw` is live for this hook; the header array, body and details are
        // read (copied) by Envoy during the call.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.raw,
                u32::from(status),
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::new(body),
                ModuleBuffer::str(details),
            )
        }
    }

    /// Sends response body bytes to the client, after what it already has, and ends
    /// the response with them if `end_stream`. Envoy runs them through the encoder
    /// filters from the first one, this filter included (its response-body hook is
    /// called again, re-entrantly, with these bytes). Ending the stream may complete
    /// it during this call: stream-complete and destroy hooks may have run when it
    /// returns, after which neither this handle nor the stream may be used.
    pub fn send_response_data(&mut self, data: &[u8], end_stream: bool) {
        // SAFETY: `raw` is live for this hook; Envoy copies the bytes during the call.
        unsafe {
            envoy_dynamic_module_callback_http_send_response_data(
                self.raw,
                ModuleBuffer::new(data),
                end_stream,
            )
        }
    }

    /// Resets the stream (used when a response is already under way and cannot be
    /// answered with an error any more).
    pub fn reset_stream(&mut self, details: &str) {
        // SAFETY: `raw` is live for this hook; details are read during the call.
        unsafe {
            envoy_dynamic_module_callback_http_filter_reset_stream(
                self.raw,
                RESET_LOCAL,
                ModuleBuffer::str(details),
            )
        }
    }

    /// An HTTP call for this stream; its outcome comes to
    /// `on_http_filter_http_callout_done` on this stream's thread, unless the stream
    /// ends first (Envoy then cancels it). Returns Envoy's id of the call.
    pub fn http_callout(
        &mut self,
        cluster: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, CalloutInit> {
        let headers = module_headers(headers);
        let mut id = 0u64;
        // SAFETY: `raw` is live for this hook; Envoy copies the cluster name, headers
        // and body during the call; `id` is a valid out-pointer.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_http_callout(
                self.raw,
                &mut id,
                ModuleBuffer::str(cluster),
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::new(body),
                timeout_ms,
            )
        };
        CalloutInit::check(result).map(|()| id)
    }

    /// Resumes a request the filter stopped (a no-op if it is not stopped).
    pub fn continue_decoding(&mut self) {
        // SAFETY: `raw` is live for this hook.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.raw) }
    }

    /// A scheduler that runs `on_http_filter_scheduled` on this stream's worker
    /// thread, committed from any thread; `None` if Envoy gave none.
    pub fn new_scheduler(&mut self) -> Option<Scheduler> {
        // SAFETY: `raw` is live for this hook, on the stream's worker thread.
        let raw = unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(self.raw) };
        (!raw.is_null()).then_some(Scheduler { raw, config: false })
    }

    /// Adds `by` to a counter defined in `config_new`.
    pub fn increment_counter(&mut self, id: usize, by: u64) -> bool {
        // SAFETY: `raw` is live for this hook; no labels.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(
                self.raw,
                id,
                std::ptr::null(),
                0,
                by,
            )
        };
        result == METRICS_SUCCESS
    }
}

/// A box of ours held by Envoy as an opaque `*_module_ptr`: created by [`ModulePtr::new`]
/// in a `*_new` hook, handed back by Envoy to every later hook of that object, freed
/// by [`ModulePtr::destroy`] in the matching `*_destroy` hook.
///
/// Envoy never calls two hooks of one stream at once, but a callback such as
/// `send_response` may re-enter another hook of the same stream, so `get` hands out
/// shared references only; per-stream state uses a `RefCell`. Such a callback may
/// also complete the stream and run its destroy hook before returning: the owner
/// must then defer `destroy` until its outer hook is done (`native.rs` does).
#[repr(transparent)]
pub struct ModulePtr<T> {
    raw: *const c_void,
    _owns: PhantomData<*const T>,
}

impl<T> ModulePtr<T> {
    /// Boxes `value` for Envoy to hold.
    pub fn new(value: T) -> Self {
        ModulePtr {
            raw: Box::into_raw(Box::new(value)) as *const c_void,
            _owns: PhantomData,
        }
    }

    /// The null pointer: tells Envoy that creation failed.
    pub fn null() -> Self {
        ModulePtr {
            raw: std::ptr::null(),
            _owns: PhantomData,
        }
    }

    /// The boxed value, or `None` for a null pointer.
    pub fn get(&self) -> Option<&T> {
        // SAFETY: a non-null `raw` came from `Box::into_raw` in `new` (Envoy only hands
        // back pointers we returned, to hooks of the same object type), and `destroy`
        // does not run while a hook of this object runs (for streams, `native.rs`
        // defers it past the outermost hook).
        unsafe { (self.raw as *const T).as_ref() }
    }

    /// Frees the boxed value; Envoy calls no hook with this pointer afterwards.
    pub fn destroy(self) {
        if self.raw.is_null() {
            return;
        }
        // SAFETY: `raw` came from `Box::into_raw` in `new` and this is the one
        // `destroy` hook Envoy calls for it.
        drop(unsafe { Box::from_raw(self.raw as *mut T) })
    }
}
