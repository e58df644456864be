//! The per-request machines both hosts drive, behind one facade, [`HttpFilter`].
//!
//! A host creates one [`HttpFilter`] per HTTP stream and calls, in stream order,
//! `on_request_headers`, `on_request_body` (per chunk), `on_response_headers`,
//! `on_response_body` (per chunk) and, where the host has it, `on_stream_complete`.
//! Each call appends [`Action`]s to `out` and returns a [`Status`]; see
//! [`crate::host`] for the order the host applies them in. `now` is any monotonic
//! clock reading (only differences are used); the wall clock comes separately
//! ([`HttpFilter::set_unix_millis`]), for signing and for credentials' expiry.
//!
//! Two roles share the facade:
//! - [`FilterRole::Router`], before Envoy's router ([`router`]): the request and
//!   response pipelines ([`pipeline`]): validation, routing, guardrails, limits,
//!   cache, metering, metadata.
//! - [`FilterRole::Upstream`], in a backend cluster's upstream filters, once per
//!   attempt ([`upstream`]): prepares the request for the backend Envoy picked and
//!   turns the answer back into the client's schema.
//!
//! Either may wait: for a callout of its own ([`Action::Call`], resumed by
//! [`HttpFilter::on_callout_done`]) or for shared work ([`Action::Park`], resumed by
//! [`HttpFilter::on_wake`] once the host's waker fires). The facade keeps the
//! bookkeeping (call ids, the parked cell), the machines say what they wait for.

mod body;
pub(crate) mod credentials;
pub(crate) mod pipeline;
pub mod router;
pub(crate) mod steps;
pub mod upstream;

use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use crate::auth::exchange::WaitCell;
use crate::config::Config;
use crate::host::{Action, Callout, CalloutResult, Headers, Status};
pub(crate) use body::{begin_body, buffer_body, json_answer_headers, replace_request_body, Edited};
use router::Router;
use upstream::Upstream;

pub use upstream::{BACKEND_HEADER, MODEL_OVERRIDE_HEADER, SAVED_REQUEST_KEY};

/// Where in Envoy's filter chains an instance runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterRole {
    /// The HTTP connection manager's chain, before the router.
    Router,
    /// A backend cluster's upstream HTTP filters.
    Upstream,
}

/// What a machine waits for before it goes on.
#[derive(Debug)]
pub(crate) enum WaitFor {
    /// An HTTP call the host makes for this request.
    Call(Callout),
    /// Shared work (a credential another request or the process is fetching).
    Park(Arc<WaitCell>),
}

/// The per-request machine of either role.
#[derive(Debug)]
pub struct HttpFilter {
    config: Arc<Config>,
    machine: Machine,
    waits: Waits,
}

#[derive(Debug)]
enum Machine {
    Router(Box<Router>),
    Upstream(Box<Upstream>),
}

/// The request's current wait, if any.
#[derive(Debug, Default)]
struct Waits {
    next_id: u32,
    /// The call being waited for.
    call: Option<u32>,
    /// The cell parked in.
    parked: Option<Arc<WaitCell>>,
}

impl HttpFilter {
    pub fn new(config: Arc<Config>, role: FilterRole) -> Self {
        let machine = match role {
            FilterRole::Router => Machine::Router(Box::new(Router::new())),
            FilterRole::Upstream => Machine::Upstream(Box::new(Upstream::new())),
        };
        HttpFilter {
            config,
            machine,
            waits: Waits::default(),
        }
    }

    /// The wall-clock time, Unix milliseconds: request signing, the `created` of
    /// translated answers, credentials' expiry. Set it before each call that may
    /// need it (the upstream role also gets it from [`HttpFilter::bind_backend`]).
    pub fn set_unix_millis(&mut self, unix_ms: u64) {
        match &mut self.machine {
            Machine::Router(r) => r.set_unix_millis(unix_ms),
            Machine::Upstream(u) => u.set_unix_millis(unix_ms),
        }
    }

    /// Upstream role: names the backend Envoy picked for this attempt (from the
    /// selected host's or cluster's metadata), the wall-clock time (Unix ms) and
    /// what an earlier attempt of the same request saved in filter state under
    /// [`SAVED_REQUEST_KEY`]. Call before `on_request_headers`.
    pub fn bind_backend(
        &mut self,
        backend: Option<&str>,
        unix_ms: u64,
        saved_request: Option<&[u8]>,
    ) {
        if let Machine::Upstream(u) = &mut self.machine {
            u.bind(backend, unix_ms, saved_request);
        }
    }

    /// Whether the machine answered the stream itself (a local reply).
    pub fn replied(&self) -> bool {
        match &self.machine {
            Machine::Router(r) => r.replied(),
            Machine::Upstream(u) => u.replied(),
        }
    }

    /// Whether the request is held, waiting for a call or a wake.
    pub fn waiting(&self) -> bool {
        self.waits.call.is_some() || self.waits.parked.is_some()
    }

    pub fn on_request_headers(
        &mut self,
        headers: &dyn Headers,
        end_of_stream: bool,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        let status = match &mut self.machine {
            Machine::Router(r) => {
                r.on_request_headers(&self.config, headers, end_of_stream, now, out)
            }
            Machine::Upstream(u) => u.on_request_headers(&self.config, headers, end_of_stream, out),
        };
        self.after(status, out)
    }

    pub fn on_request_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        let status = match &mut self.machine {
            Machine::Router(r) => r.on_request_body(&self.config, chunk, end_of_stream, now, out),
            Machine::Upstream(u) => u.on_request_body(&self.config, chunk, end_of_stream, out),
        };
        self.after(status, out)
    }

    pub fn on_response_headers(
        &mut self,
        headers: &dyn Headers,
        end_of_stream: bool,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        match &mut self.machine {
            Machine::Router(r) => {
                r.on_response_headers(&self.config, headers, end_of_stream, now, out)
            }
            Machine::Upstream(u) => {
                u.on_response_headers(&self.config, headers, end_of_stream, out)
            }
        }
    }

    pub fn on_response_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        match &mut self.machine {
            Machine::Router(r) => r.on_response_body(&self.config, chunk, end_of_stream, now, out),
            Machine::Upstream(u) => u.on_response_body(&self.config, chunk, end_of_stream, out),
        }
    }

    /// The stream ended (completed, reset or aborted). Writes what is known if the
    /// response did not reach its end, and gives up any wait: a call still running
    /// is the host's to cancel, a credential exchange this request led is handed on.
    pub fn on_stream_complete(&mut self, now: Duration, out: &mut Vec<Action>) {
        self.waits.call = None;
        self.waits.parked = None;
        match &mut self.machine {
            Machine::Router(r) => r.on_stream_complete(&self.config, now, out),
            Machine::Upstream(u) => u.on_stream_complete(),
        }
    }

    /// The timer the machine asked for ([`Action::Timer`]) is due. A streamed answer
    /// whose provider stayed quiet for its `streamIdleTimeout` is ended here: an
    /// error event in the client's schema ([`Action::EndResponse`], after the
    /// metadata of what was seen); else the timer is asked for again, or nothing
    /// (the answer ended). Calls that come early, late or after the end are harmless.
    pub fn on_timer(&mut self, now: Duration, out: &mut Vec<Action>) {
        if let Machine::Router(r) = &mut self.machine {
            r.on_timer(&self.config, now, out);
        }
    }

    /// The call `id` ([`Action::Call`]) ended. A `Continue` means "resume the held
    /// request"; a stop, that it still waits (or was answered: see the actions).
    /// An id the machine no longer waits for is ignored.
    pub fn on_callout_done(
        &mut self,
        id: u32,
        result: CalloutResult,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        if self.waits.call != Some(id) {
            return Status::StopIteration;
        }
        self.waits.call = None;
        self.resume(Some(result), now, out)
    }

    /// The waker given for an [`Action::Park`] fired: the shared work ended.
    /// Statuses as for [`HttpFilter::on_callout_done`].
    pub fn on_wake(&mut self, now: Duration, out: &mut Vec<Action>) -> Status {
        match &self.waits.parked {
            Some(cell) if cell.is_woken() => self.waits.parked = None,
            // Spurious, or for a wait that is over.
            _ => return Status::StopIteration,
        }
        self.resume(None, now, out)
    }

    /// The waker for the current [`Action::Park`]. It may fire at once (the work
    /// ended before the host asked) and must be callable from any thread.
    pub fn set_waker(&mut self, waker: Waker) {
        if let Some(cell) = &self.waits.parked {
            cell.set_waker(waker);
        }
    }

    fn resume(
        &mut self,
        answer: Option<CalloutResult>,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        let status = match &mut self.machine {
            Machine::Router(r) => r.resume(&self.config, answer, now, out),
            Machine::Upstream(u) => u.resume(&self.config, answer, out),
        };
        // Resumed, or not (still held, or answered): nothing else for the host.
        match self.after(status, out) {
            Status::Continue => Status::Continue,
            _ => Status::StopIteration,
        }
    }

    /// Starts the wait a machine asked for, if any.
    fn after(&mut self, status: Status, out: &mut Vec<Action>) -> Status {
        let wait = match &mut self.machine {
            Machine::Router(r) => r.take_wait(),
            Machine::Upstream(u) => u.take_wait(),
        };
        match wait {
            None => {}
            Some(WaitFor::Call(call)) => {
                self.waits.next_id = self.waits.next_id.wrapping_add(1);
                let id = self.waits.next_id;
                self.waits.call = Some(id);
                out.push(Action::Call { id, call });
            }
            Some(WaitFor::Park(cell)) => {
                self.waits.parked = Some(cell);
                out.push(Action::Park);
            }
        }
        status
    }
}

impl Drop for HttpFilter {
    fn drop(&mut self) {
        if let Machine::Router(r) = &mut self.machine {
            r.release(&self.config);
        }
    }
}

#[cfg(test)]
mod router_tests;

#[cfg(test)]
mod wait_tests;

#[cfg(test)]
mod quota_tests;

#[cfg(test)]
mod idle_tests;

#[cfg(test)]
mod endpoint_tests;
#[cfg(test)]
mod guardrail_tests;
