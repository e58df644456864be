//! The router-level machine: runs the pipelines of [`super::pipeline`] over one
//! HTTP stream, holding the request while it waits and passing what is not the
//! gateway's untouched.

use std::time::Duration;

use super::pipeline::{
    Chunk, Cx, Flow, Request, Response, ON_REQUEST_BODY, ON_REQUEST_HEADERS, ON_RESPONSE,
};
use super::{begin_body, buffer_body, replace_request_body, Edited, WaitFor};
use crate::config::Config;
use crate::endpoint::Endpoint;
use crate::error::{ClientSchema, GatewayError};
use crate::host::{Action, CalloutResult, Counter, Headers, LogLevel, Status};
use crate::translate::{stream_error_event, ProviderError};

pub use super::FilterRole;
pub use super::HttpFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing seen yet.
    Start,
    /// Not an AI request: everything passes untouched.
    PassThrough,
    /// Buffering the request body.
    RequestBody,
    /// Held at body step `at` until its call answers or it is woken.
    Waiting { at: usize },
    /// Request sent on; waiting for or streaming the response.
    Response,
    /// Metadata written; nothing more to do.
    Done,
    /// A local reply was sent; ignore the rest of the stream.
    Replied,
}

#[derive(Debug)]
pub(crate) struct Router {
    phase: Phase,
    req: Request,
    resp: Response,
    unix_ms: u64,
    wait: Option<WaitFor>,
    /// A streamed answer under the route's `streamIdleTimeout`.
    idle: Option<Idle>,
}

/// The idle limit of a streamed answer: when the provider last sent something, and
/// how the bytes the client has so far end (to close an event cut in the middle).
#[derive(Debug)]
struct Idle {
    timeout: Duration,
    last: Duration,
    /// The last few bytes sent on to the client.
    tail: Vec<u8>,
}

impl Idle {
    fn sent(&mut self, bytes: &[u8]) {
        self.tail
            .extend_from_slice(&bytes[bytes.len().saturating_sub(4)..]);
        let extra = self.tail.len().saturating_sub(4);
        self.tail.drain(..extra);
    }

    /// What closes the event the client has half of, if any: an SSE event ends at
    /// an empty line.
    fn closing(&self) -> &'static [u8] {
        let t = self.tail.as_slice();
        if t.is_empty() || t.ends_with(b"\n\n") || t.ends_with(b"\r\n\r\n") || t.ends_with(b"\r\r")
        {
            b""
        } else if t.ends_with(b"\n") || t.ends_with(b"\r") {
            b"\n"
        } else {
            b"\n\n"
        }
    }
}

impl Router {
    pub(crate) fn new() -> Self {
        Router {
            phase: Phase::Start,
            req: Request::default(),
            resp: Response::default(),
            unix_ms: 0,
            wait: None,
            idle: None,
        }
    }

    pub(crate) fn set_unix_millis(&mut self, unix_ms: u64) {
        self.unix_ms = unix_ms;
    }

    pub(crate) fn replied(&self) -> bool {
        self.phase == Phase::Replied
    }

    pub(crate) fn take_wait(&mut self) -> Option<WaitFor> {
        self.wait.take()
    }

    fn cx<'a>(&'a mut self, config: &'a Config, now: Duration) -> Cx<'a> {
        Cx {
            config,
            req: &mut self.req,
            resp: &mut self.resp,
            now,
            unix_ms: self.unix_ms,
        }
    }

    pub(crate) fn on_request_headers(
        &mut self,
        config: &Config,
        headers: &dyn Headers,
        end_of_stream: bool,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        if self.phase != Phase::Start {
            return Status::Continue;
        }
        self.req.started_at = now;
        let mut cx = self.cx(config, now);
        for step in ON_REQUEST_HEADERS {
            match step.on_headers(&mut cx, headers, out) {
                Flow::Next => {}
                Flow::PassThrough => {
                    self.phase = Phase::PassThrough;
                    return Status::Continue;
                }
                other => return self.settle(other, out),
            }
        }
        if end_of_stream {
            if self.req.endpoint == Some(Endpoint::Passthrough) {
                // A GET of another API: the body steps run on no body.
                return self.run_body_steps(config, 0, None, now, out);
            }
            return self.reply(GatewayError::InvalidJson("the body is empty".into()), out);
        }
        match begin_body(config, headers, &mut self.req.body, out) {
            Ok(()) => {
                self.phase = Phase::RequestBody;
                Status::StopIteration
            }
            Err(e) => self.reply(e, out),
        }
    }

    pub(crate) fn on_request_body(
        &mut self,
        config: &Config,
        chunk: &[u8],
        end_of_stream: bool,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        match self.phase {
            Phase::RequestBody => {}
            // Held: Envoy keeps what still arrives.
            Phase::Waiting { .. } => return Status::StopAndBuffer,
            _ => return Status::Continue,
        }
        match buffer_body(config, &mut self.req.body, chunk, end_of_stream) {
            Ok(Some(body)) => {
                self.req.body_len = body.len();
                self.req.body = body;
            }
            Ok(None) => return Status::StopAndBuffer,
            Err(e) => return self.reply(e, out),
        }
        self.run_body_steps(config, 0, None, now, out)
    }

    /// The wait at a body step ended: that step goes on, then the rest.
    pub(crate) fn resume(
        &mut self,
        config: &Config,
        answer: Option<CalloutResult>,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        let Phase::Waiting { at } = self.phase else {
            return Status::StopIteration;
        };
        self.run_body_steps(config, at, Some(answer), now, out)
    }

    /// Body steps from `from`; `resumed`: `from` waited, and this is how it ended.
    fn run_body_steps(
        &mut self,
        config: &Config,
        from: usize,
        mut resumed: Option<Option<CalloutResult>>,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        let mut cx = self.cx(config, now);
        for (at, step) in ON_REQUEST_BODY.iter().enumerate().skip(from) {
            let flow = match resumed.take() {
                Some(answer) => step.on_resume(&mut cx, answer, out),
                None => step.on_body(&mut cx, out),
            };
            match flow {
                Flow::Next => {}
                Flow::Call(call) => return self.hold(at, WaitFor::Call(call)),
                Flow::Park(cell) => return self.hold(at, WaitFor::Park(cell)),
                other => return self.settle(other, out),
            }
        }
        self.phase = Phase::Response;
        self.req.body = Vec::new();
        if let Some(body) = self.req.rewritten.take() {
            replace_request_body(body, out);
        }
        Status::Continue
    }

    fn hold(&mut self, at: usize, wait: WaitFor) -> Status {
        self.phase = Phase::Waiting { at };
        self.wait = Some(wait);
        // Whatever the hook, the body (whole, or still arriving) stays with Envoy.
        Status::StopAndBuffer
    }

    /// A flow that ends the request here.
    fn settle(&mut self, flow: Flow, out: &mut Vec<Action>) -> Status {
        match flow {
            Flow::Reply(e) => self.reply(e, out),
            Flow::Replied => {
                self.phase = Phase::Replied;
                Status::StopIteration
            }
            Flow::PassThrough => {
                self.phase = Phase::PassThrough;
                Status::Continue
            }
            Flow::Next | Flow::Call(_) | Flow::Park(_) => Status::Continue,
        }
    }

    fn reply(&mut self, err: GatewayError, out: &mut Vec<Action>) -> Status {
        self.phase = Phase::Replied;
        let schema = self
            .req
            .endpoint
            .map_or(ClientSchema::OpenAI, Endpoint::client_schema);
        out.push(Action::SendLocalReply {
            status: err.status(),
            content_type: "application/json",
            body: err.body(schema),
            details: err.code(),
            headers: err.headers(),
        });
        Status::StopIteration
    }

    pub(crate) fn on_response_headers(
        &mut self,
        config: &Config,
        headers: &dyn Headers,
        end_of_stream: bool,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        if self.phase != Phase::Response {
            return Status::Continue;
        }
        let mut status = Status::Continue;
        let mut edits: Vec<Action> = Vec::new();
        let mut cx = self.cx(config, now);
        for step in ON_RESPONSE {
            // Each step sees the headers as the steps before it left them.
            let mut own = Vec::new();
            let view = Edited {
                base: headers,
                edits: &edits,
            };
            let s = step.on_headers(&mut cx, &view, end_of_stream, &mut own);
            edits.extend(own);
            if status == Status::Continue {
                status = s;
            }
        }
        let idle = match status == Status::Continue && !end_of_stream {
            true => self.idle_timeout(
                config,
                &Edited {
                    base: headers,
                    edits: &edits,
                },
            ),
            false => None,
        };
        out.extend(edits);
        if let Some(timeout) = idle {
            self.idle = Some(Idle {
                timeout,
                last: now,
                tail: Vec::new(),
            });
            out.push(Action::Timer(timeout));
        }
        if status == Status::Continue && end_of_stream {
            self.end(config, true, now, out);
        }
        status
    }

    /// The idle limit of this answer as the client gets it: a 2xx event stream the
    /// client asked for, on a route with a `streamIdleTimeout`.
    fn idle_timeout(&self, config: &Config, headers: &dyn Headers) -> Option<Duration> {
        let ok = headers
            .get(":status")
            .and_then(|s| s.parse::<u16>().ok())
            .is_some_and(|s| (200..300).contains(&s));
        let sse = headers.get("content-type").is_some_and(|t| {
            t.trim_start()
                .get(..17)
                .is_some_and(|p| p.eq_ignore_ascii_case("text/event-stream"))
        });
        if !(self.req.stream && ok && sse) {
            return None;
        }
        match self.req.route {
            Some(i) => config.routes[i].stream_idle_timeout,
            None => config.stream_idle_timeout,
        }
    }

    /// The timer asked for by [`Action::Timer`]: the answer went quiet for its
    /// `streamIdleTimeout`, or not yet (then the timer is asked for again, for the
    /// rest). Quiet: the client gets an error event in its schema and the end of the
    /// stream; the metadata says what was seen. Nothing after the answer's end.
    pub(crate) fn on_timer(&mut self, config: &Config, now: Duration, out: &mut Vec<Action>) {
        let Some(idle) = self.idle.as_ref() else {
            return;
        };
        if self.phase != Phase::Response {
            self.idle = None;
            return;
        }
        let quiet = now.saturating_sub(idle.last);
        if quiet < idle.timeout {
            out.push(Action::Timer(idle.timeout - quiet));
            return;
        }
        let Some(idle) = self.idle.take() else {
            return;
        };
        let schema = self
            .req
            .endpoint
            .map_or(ClientSchema::OpenAI, Endpoint::client_schema);
        let e = ProviderError::new(
            504,
            Some("stream_idle_timeout".into()),
            format!(
                "the provider sent nothing for {:?} in the middle of the stream: the gateway ended it (streamIdleTimeout)",
                idle.timeout
            ),
        );
        let mut bytes = idle.closing().to_vec();
        bytes.extend(stream_error_event(schema, &e));
        let route = self
            .req
            .route
            .map_or("", |i| config.routes[i].name.as_str());
        out.push(Action::Log {
            level: LogLevel::Warn,
            message: format!(
                "route '{route}': the provider sent nothing for {quiet:?} mid-stream (streamIdleTimeout {:?}); ended the client's stream with an error event",
                idle.timeout
            ),
        });
        out.push(Action::Count(Counter::StreamIdleTimeout));
        self.end(config, false, now, out);
        out.push(Action::EndResponse(bytes));
    }

    pub(crate) fn on_response_body(
        &mut self,
        config: &Config,
        chunk: &[u8],
        end_of_stream: bool,
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Status {
        if self.phase != Phase::Response {
            return Status::Continue;
        }
        if let Some(idle) = self.idle.as_mut() {
            idle.last = now;
        }
        let mut piece = Chunk::new(chunk, end_of_stream);
        let mut cx = self.cx(config, now);
        for step in ON_RESPONSE {
            let status = step.on_body(&mut cx, &mut piece, out);
            if status != Status::Continue {
                return status;
            }
        }
        if let Some(idle) = self.idle.as_mut() {
            idle.sent(piece.bytes());
        }
        if let Some(bytes) = piece.into_replaced() {
            out.push(Action::ReplaceBody(bytes));
        }
        if end_of_stream {
            self.end(config, true, now, out);
        }
        Status::Continue
    }

    /// The stream ended (completed, reset or aborted): what is known is written if
    /// the answer did not reach its end; a wait is given up.
    pub(crate) fn on_stream_complete(
        &mut self,
        config: &Config,
        now: Duration,
        out: &mut Vec<Action>,
    ) {
        if self.phase == Phase::Response {
            self.end(config, false, now, out);
        }
        self.idle = None;
        if let Some(u) = self.resp.inline.as_mut() {
            u.on_stream_complete();
        }
        self.wait = None;
        self.req.body = Vec::new();
        self.resp.meter = None;
    }

    fn end(&mut self, config: &Config, complete: bool, now: Duration, out: &mut Vec<Action>) {
        self.phase = Phase::Done;
        self.idle = None;
        let mut cx = self.cx(config, now);
        for step in ON_RESPONSE {
            step.on_end(&mut cx, complete, out);
        }
    }

    /// Releases what the request holds of its route's limits.
    pub(crate) fn release(&mut self, config: &Config) {
        if let Some((i, mut admission)) = self.req.admitted.take() {
            config.routes[i]
                .rate_limit
                .release(config.counts(), &mut admission);
        }
    }
}
