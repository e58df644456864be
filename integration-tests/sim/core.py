"""What every provider shares: the request, the response, the control headers, the
token rule, the generated content and the stream builder that remembers what was
sent."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit


class BadRequest(Exception):
    """The HTTP request itself could not be read."""


class Reject(Exception):
    """A check failed: answer `status` in the provider's error format."""

    def __init__(self, status: int, message: str, etype: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.etype = etype


class Request:
    def __init__(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, listener: str):
        self.method = method
        self.target = target
        split = urlsplit(target)
        self.path = split.path  # as sent: still percent-encoded
        self.raw_query = split.query
        self.query = parse_qs(split.query, keep_blank_values=True)
        self.headers = headers
        self.body = body
        self.listener = listener
        self._json: Any = _UNSET

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def int_header(self, name: str, default: int) -> int:
        try:
            return int(self.header(name, str(default)))
        except ValueError:
            return default

    def query1(self, name: str) -> str | None:
        v = self.query.get(name)
        return v[-1] if v else None

    def json(self) -> Any:
        if self._json is _UNSET:
            try:
                self._json = json.loads(self.body)
            except (ValueError, RecursionError):
                # Not JSON, not UTF-8, or nested deeper than Python's parser goes:
                # a provider answers 400 for each.
                self._json = None
        return self._json

    def record(self) -> dict:
        text = self.body.decode("utf-8", errors="replace")
        return {
            "listener": self.listener,
            "method": self.method,
            "path": self.target,
            "query": self.query,
            "headers": [[k, v] for k, v in self.headers],
            "body": text,
            # The bytes as received (`body` replaces what is not UTF-8).
            "body_bytes": len(self.body),
            "body_sha256": hashlib.sha256(self.body).hexdigest(),
            "body_json": self.json(),
            "received_at": time.time(),
            "provider": None,
            "operation": None,
            "model": None,
            "checks": [],
            "sent_text": None,
            "sent_reasoning": None,
            "sent_tool_calls": [],
            "sent_usage": None,
            "credential": None,
        }


_UNSET = object()


class Response:
    """What to send: a whole body, or chunks streamed with a delay between them.

    `snapshots[i]`, when set, is merged into the request's record once chunk i has
    been written: what the client has been sent so far (text, usage...)."""

    def __init__(self, status: int, content_type: str, body: bytes = b"", chunks: list[bytes] | None = None,
                 delay: float = 0.0, reset_after: int | None = None, gzip_body: bool = False,
                 extra_headers: list[tuple[str, str]] | None = None):
        self.status = status
        self.content_type = content_type
        self.body = body
        self.chunks = chunks
        self.delay = delay
        self.reset_after = reset_after
        self.gzip = gzip_body
        self.extra_headers = extra_headers or []
        # The usage the generated answer carries (OpenAI terms for OpenAI paths), set
        # before sending; shown as response.usage by /_sim/requests.
        self.usage: dict | None = None
        # What the whole answer sends (non-streamed), merged into the record at once.
        self.sent: dict | None = None
        self.snapshots: list[dict | None] | None = None
        # When set, reset_after counts these (frames) instead of chunks: the index of
        # the chunk after which the first N frames are complete.
        self.events_done: list[int] | None = None
        # Seconds to wait before sending anything (token-service faults); when the client
        # goes away meanwhile, nothing is sent and `on_abandon()` runs.
        self.wait: float = 0.0
        self.on_abandon: Callable[[], None] | None = None
        # Faults (sim/faults.py): after this many chunks, send nothing more until the
        # peer goes (then `on_stall_end()` runs); close the connection once sent.
        self.stall_after: int | None = None
        self.on_stall_end: Callable[[], None] | None = None
        self.close_after: bool = False


def json_response(status: int, obj: Any, **kw) -> Response:
    return Response(status, "application/json", json.dumps(obj).encode(), **kw)


# ---- control headers ------------------------------------------------------------

def opt_int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


@dataclass
class Knobs:
    """The x-sim-* headers of a request, read once."""
    tokens: int | None
    cached: int
    cache_write: int
    reasoning: int | None
    delay: float
    reset_after: int | None
    gzip: bool
    tool_call: str | None
    stream_error: str | None
    stream_error_after: int
    split: bool
    status: int | None
    body: str | None
    error_type: str | None
    # Faults (sim/faults.py).
    headers_delay_ms: int = 0
    stall_after: int | None = None
    endless: int | None = None
    frame_length: int | None = None
    frame_after: int = 1
    truncate_frame: int | None = None
    broken_gzip: bool = False

    @classmethod
    def of(cls, req: Request) -> "Knobs":
        status = req.header("x-sim-status")
        # x-sim-fail-on: LABEL=CODE[,LABEL=CODE]: the error only on those listeners
        # (a fallback test fails one backend and lets the next answer).
        for spec in (req.header("x-sim-fail-on") or "").split(","):
            label, _, code = spec.strip().partition("=")
            if label and label == req.listener:
                status = code or "500"
        return cls(
            tokens=opt_int(req.header("x-sim-tokens")),
            cached=max(0, req.int_header("x-sim-cached-tokens", 0)),
            cache_write=max(0, req.int_header("x-sim-cache-write-tokens", 0)),
            reasoning=opt_int(req.header("x-sim-reasoning-tokens")),
            delay=max(0, req.int_header("x-sim-delay-ms", 5)) / 1000.0,
            reset_after=opt_int(req.header("x-sim-reset-after")),
            gzip=req.header("x-sim-gzip") == "1",
            tool_call=req.header("x-sim-tool-call") or None,
            stream_error=req.header("x-sim-stream-error") or None,
            stream_error_after=max(0, req.int_header("x-sim-stream-error-after", 3)),
            split=req.header("x-sim-split", "1") != "0",
            status=(opt_int(status) or 500) if status is not None else None,
            body=req.header("x-sim-body"),
            error_type=req.header("x-sim-error-type") or None,
            headers_delay_ms=max(0, req.int_header("x-sim-headers-delay-ms", 0)),
            stall_after=opt_int(req.header("x-sim-stall-after")),
            endless=opt_int(req.header("x-sim-endless")),
            frame_length=opt_int(req.header("x-sim-frame-length")),
            frame_after=max(0, req.int_header("x-sim-frame-after", 1)),
            truncate_frame=opt_int(req.header("x-sim-truncate-frame")),
            broken_gzip=req.header("x-sim-broken-gzip") == "1",
        )


# ---- the token rule ---------------------------------------------------------------

def count_words(texts: list[str]) -> int:
    return sum(len(t.split()) for t in texts if isinstance(t, str))


@dataclass
class Usage:
    """Provider-neutral counts of one answer.

    prompt: every prompt token, cached ones included (max(1, words), raised to
    cached + cache_write when those are larger); cached / cache_write: the parts read
    from / written to the cache; output: visible text pieces plus tool-argument pieces;
    reasoning: thinking pieces."""
    prompt: int
    cached: int
    cache_write: int
    output: int
    reasoning: int

    @property
    def uncached(self) -> int:
        return self.prompt - self.cached - self.cache_write


def prompt_tokens(words: int, knobs: Knobs) -> int:
    return max(1, words, knobs.cached + knobs.cache_write)


# ---- generated content ------------------------------------------------------------

def text_pieces(n: int, listener: str) -> list[str]:
    """n pieces whose concatenation is the answer: "Hello from LISTENER word1 ..."."""
    return [f"Hello from {listener}" if i == 0 else f" word{i}" for i in range(n)]


def thinking_pieces(n: int) -> list[str]:
    return [("Let me think" if i == 0 else f" step{i}") for i in range(n)]


def split3(s: str) -> list[str]:
    """Three pieces (fewer for strings under 3 characters), cut at fixed places."""
    if len(s) < 3:
        return [s] if s else []
    k = -(-len(s) // 3)
    return [s[:k], s[k:2 * k], s[2 * k:]]


def digest(*parts: Any, n: int = 24) -> str:
    h = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).hexdigest()
    return h[:n]


def signature(*parts: Any) -> str:
    return base64.b64encode(hashlib.sha256(("sig\x00" + "\x00".join(map(str, parts))).encode()).digest()).decode()


def tool_arguments(schema: Any) -> dict:
    """Deterministic arguments for a tool: {"city": "Paris"} unless the declared JSON
    schema names other properties, which then get typed placeholders (the first enum
    value, "Paris" for strings, 1, 1.5, true, [], {})."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict) or not schema["properties"]:
        return {"city": "Paris"}
    props: dict = schema["properties"]
    required = [p for p in (schema.get("required") or []) if p in props]
    names = required or list(props)
    out: dict = {}
    for name in names:
        p = props[name] if isinstance(props[name], dict) else {}
        t = p.get("type")
        if isinstance(t, list):
            t = next((x for x in t if x != "null"), "string")
        if isinstance(p.get("enum"), list) and p["enum"]:
            out[name] = p["enum"][0]
        elif t in ("integer",):
            out[name] = 1
        elif t == "number":
            out[name] = 1.5
        elif t == "boolean":
            out[name] = True
        elif t == "array":
            out[name] = []
        elif t == "object":
            out[name] = {}
        else:
            out[name] = "Paris"
    return out


@dataclass
class ToolCall:
    name: str
    id: str
    args: dict
    text: str           # compact JSON of args
    pieces: list[str]   # text cut in pieces (streamed argument deltas)


@dataclass
class Answer:
    """What a generated answer says, before any provider's format."""
    text: list[str]
    thinking: list[str]
    tool: ToolCall | None
    usage: Usage
    stop: str  # "stop" | "length" | "tool"

    @property
    def full_text(self) -> str:
        return "".join(self.text)

    @property
    def full_thinking(self) -> str:
        return "".join(self.thinking)

    def sent(self, usage: Any) -> dict:
        """The record fields of the whole answer."""
        return {
            "sent_text": self.full_text,
            "sent_reasoning": self.full_thinking,
            "sent_tool_calls": ([{"id": self.tool.id, "name": self.tool.name, "arguments": self.tool.text}]
                                if self.tool else []),
            "sent_usage": usage,
        }


def make_answer(*, knobs: Knobs, listener: str, words: int, tools: dict[str, Any] | None,
                thinking_requested: bool, max_tokens: int | None, tool_id_prefix: str,
                id_seed: Any, reasoning_always: bool = False) -> Answer:
    """Builds the answer, or raises Reject(400) when x-sim-tool-call names a tool the
    request does not declare.

    Text pieces: x-sim-tokens (default 5, at least 1; with x-sim-tool-call, default 0).
    Thinking pieces: x-sim-reasoning-tokens, default 3 when the request asks for
    thinking; none when it does not (unless `reasoning_always`, for usage-only
    reasoning counts). A max-tokens field below the text pieces truncates the text to
    it, drops the tool call and stops with "length"."""
    tool = None
    if knobs.tool_call:
        name = knobs.tool_call
        if tools is not None and name not in tools:
            declared = ", ".join(sorted(tools)) or "none"
            raise Reject(400, f"simulator: x-sim-tool-call names tool {name!r}, which the request does not "
                              f"declare (declared: {declared})")
        args = tool_arguments((tools or {}).get(name))
        text = json.dumps(args, separators=(",", ":"))
        tool = ToolCall(name=name, id=tool_id_prefix + digest(name, text, id_seed), args=args, text=text,
                        pieces=split3(text))
    if knobs.tokens is None:
        n = 0 if tool else 5
    else:
        n = max(0 if tool else 1, knobs.tokens)
    if knobs.reasoning is not None:
        r = max(0, knobs.reasoning) if (thinking_requested or reasoning_always) else 0
    else:
        r = 3 if thinking_requested else 0
    stop = "tool" if tool else "stop"
    if max_tokens is not None and isinstance(max_tokens, int) and not isinstance(max_tokens, bool) \
            and 0 <= max_tokens < n:
        n, tool, stop = max_tokens, None, "length"
    text = text_pieces(n, listener)
    thinking = thinking_pieces(r) if (thinking_requested and r) else []
    t = len(tool.pieces) if tool else 0
    usage = Usage(prompt=prompt_tokens(words, knobs), cached=knobs.cached, cache_write=knobs.cache_write,
                  output=n + t, reasoning=r)
    return Answer(text=text, thinking=thinking, tool=tool, usage=usage, stop=stop)


# ---- streams ------------------------------------------------------------------------

class Stream:
    """Events of a streamed answer, each with a snapshot of what the client has been
    sent once it is written (text, thinking, tool calls, usage)."""

    def __init__(self):
        self.events: list[bytes] = []
        self.snaps: list[dict] = []
        self._text = ""
        self._reasoning = ""
        self._tools: list[dict] = []
        self._usage: Any = None

    def add(self, data: bytes, *, text: str = "", reasoning: str = "", usage: Any = _UNSET,
            merge_usage: dict | None = None, tool_start: dict | None = None, tool_args: str = "") -> None:
        self._text += text
        self._reasoning += reasoning
        if tool_start is not None:
            self._tools.append({"id": tool_start.get("id"), "name": tool_start["name"], "arguments": ""})
        if tool_args:
            self._tools[-1]["arguments"] += tool_args
        if usage is not _UNSET:
            self._usage = copy.deepcopy(usage)
        if merge_usage is not None:
            base = dict(self._usage or {})
            base.update(merge_usage)
            self._usage = copy.deepcopy(base)
        self.events.append(data)
        self.snaps.append({"sent_text": self._text, "sent_reasoning": self._reasoning,
                           "sent_tool_calls": copy.deepcopy(self._tools), "sent_usage": copy.deepcopy(self._usage)})

    def cut_with_error(self, knobs: Knobs, error_event: Callable[[str], bytes]) -> None:
        """x-sim-stream-error: keep the first N events, then the error event, then end."""
        if not knobs.stream_error:
            return
        keep = min(knobs.stream_error_after, len(self.events))
        self.events = self.events[:keep]
        self.snaps = self.snaps[:keep]
        last = self.snaps[-1] if self.snaps else {"sent_text": "", "sent_reasoning": "", "sent_tool_calls": [],
                                                   "sent_usage": None}
        self.events.append(error_event(knobs.stream_error))
        self.snaps.append(dict(last))

    def response(self, content_type: str, knobs: Knobs, extra_headers: list[tuple[str, str]] | None = None,
                 chunking: Callable[[list[bytes]], tuple[list[bytes], list[int]]] | None = None) -> Response:
        """One chunk per event, or `chunking(events)` -> (chunks, events complete after
        each chunk) for framed streams cut at odd places."""
        if chunking is None:
            chunks, done = list(self.events), list(range(1, len(self.events) + 1))
        else:
            chunks, done = chunking(self.events)
        snaps: list[dict | None] = []
        for d in done:
            snaps.append(self.snaps[d - 1] if d else None)
        resp = Response(200, content_type, chunks=chunks, delay=knobs.delay, gzip_body=knobs.gzip,
                        extra_headers=extra_headers)
        resp.snapshots = snaps
        if knobs.reset_after is not None:
            if chunking is None:
                resp.reset_after = knobs.reset_after
            else:
                # the first chunk after which reset_after events are complete
                n = max(0, knobs.reset_after)
                idx = next((i + 1 for i, d in enumerate(done) if d >= n), len(chunks)) if n else 0
                resp.reset_after = idx
        resp.sent = {"sent_text": "", "sent_reasoning": "", "sent_tool_calls": [], "sent_usage": None}
        return resp


# ---- request helpers ----------------------------------------------------------------

def is_json_content_type(req: Request) -> bool:
    ct = (req.header("content-type") or "").split(";")[0].strip().lower()
    return ct == "application/json"


@dataclass
class Ctx:
    """One request's handling: its record and the checks that failed."""
    req: Request
    knobs: Knobs
    record: dict
    checks: list[tuple[int, str, str | None]] = field(default_factory=list)
    counter: int = 0

    def fail(self, message: str, status: int = 400, etype: str | None = None) -> None:
        self.checks.append((status, message, etype))
        self.record["checks"].append(message)

    def reject_if_failed(self) -> None:
        if self.checks:
            status, _msg, etype = self.checks[0]
            raise Reject(status, "; ".join(m for _, m, _ in self.checks), etype)
