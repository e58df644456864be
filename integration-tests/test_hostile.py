"""Hostile input through a real Envoy with the filter, both builds: each case gets a
clear answer and nothing else. The answer is an error in the client's schema
(OpenAI's `{"error": {...}}` on /v1, Anthropic's `{"type": "error", ...}` on
/anthropic/v1/messages), or Envoy's own answer for what Envoy refuses before any
filter runs (oversized headers: 431), or, where the gateway does not read a field
and passes the body untouched to an OpenAI-compatible provider, the provider's own
answer, byte for byte what it sent, with the request byte for byte what the client
sent. After every case: nothing reached the provider when the gateway refused,
Envoy is alive, no request stays active (`http.aigw.downstream_rq_active` and every
cluster's `upstream_rq_active` back to 0) and the next ordinary request is served.

The gateway: routerOnly (the router-level instance does the upstream work, as on
Envoy Gateway), an OpenAI passthrough backend, Bedrock Converse and ConverseStream
(SigV4-signed, checked by the simulator with botocore), Anthropic, and a 16 MiB body
limit so that 100,000 messages fit.

Cases: JSON nested 100,000 deep; a 10 MB string in `model` (and in fields the
gateway reads); 100,000 messages; a million bytes of headers (one header, and many);
a stream that never ends (Envoy's memory, the provider paced or flooding); a
Bedrock frame whose prelude announces 4 GiB; invalid UTF-8 in `model`, message
content, a tool name and the Anthropic system prompt; `max_tokens` out of range.
Faults (resets, stalls, broken framing and gzip) are in test_faults.py, which uses
the helpers below."""

from __future__ import annotations

import hashlib
import json
import select
import socket
import struct
import time
import uuid
from pathlib import Path

import pytest
import requests

from conftest import AWS_CREDS, AWS_SIGV4, running_gateway, sse_events

MIB = 1 << 20
OPENAI_KEY = "sk-openai-hostile-test"
ANTHROPIC_KEY = "sk-ant-hostile-test"
BEDROCK_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
HOSTS = {"openai": "api.openai.com", "bedrock": "bedrock-runtime.us-east-1.amazonaws.com",
         "anthropic": "api.anthropic.com"}
# Backend (simulator listener) → the model a client asks for, and the provider the
# simulator records.
MODELS = {"openai": "gpt-4o-mini", "bedrock": "claude-bedrock", "anthropic": "claude-3-5-sonnet"}
PROVIDERS = {"openai": "openai", "bedrock": "bedrock-converse", "anthropic": "anthropic"}
BACKENDS = list(MODELS)
TRANSLATED = ["bedrock", "anthropic"]
# The client APIs: path, and the schema its errors come in.
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/anthropic/v1/messages"}
APIS = list(PATHS)
# Words of the prompt `chat_body` sends (the simulator's token rule counts words).
PROMPT = "Say hello"


def gateway_config(extra_routes: dict[str, str] | None = None) -> dict:
    """routerOnly, one route per backend (`extra_routes`: more models → backend)."""
    routes = [{"name": b, "models": [m], "backends": [{"name": b}]} for b, m in MODELS.items()]
    for model, backend in (extra_routes or {}).items():
        routes.append({"name": model, "models": [model], "backends": [{"name": backend}]})
    return {
        "version": "v1",
        "routerOnly": True,
        "backends": [
            {"name": "openai", "schema": {"name": "OpenAI"}, "host": HOSTS["openai"],
             "auth": {"apiKey": {"value": OPENAI_KEY}}},
            {"name": "bedrock", "schema": {"name": "AWSBedrock"}, "region": "us-east-1",
             "host": HOSTS["bedrock"], "modelNameOverride": BEDROCK_MODEL, "auth": AWS_SIGV4},
            {"name": "anthropic", "schema": {"name": "Anthropic"}, "host": HOSTS["anthropic"],
             "auth": {"apiKey": {"value": ANTHROPIC_KEY}}},
        ],
        "routes": routes,
        "llmRequestCosts": [{"metadataKey": "llm_input_token", "type": "InputToken"},
                            {"metadataKey": "llm_output_token", "type": "OutputToken"}],
        "limits": {"maxRequestBodyBytes": 16 * MIB},
    }


# The simulator checks what each backend gets: SigV4 (recomputed with botocore) and
# the API keys.
SIM_ARGS = ["--aws-credentials", f"bedrock={':'.join(AWS_CREDS)}",
            "--expect-api-key", f"openai={OPENAI_KEY}", "--expect-api-key", f"anthropic={ANTHROPIC_KEY}"]


def start_gateway(workdir: Path, build: str, name: str, extra_routes: dict[str, str] | None = None,
                  bootstrap=None):
    return running_gateway(gateway_config(extra_routes), BACKENDS, workdir / f"{name}-{build}", build, SIM_ARGS,
                           bootstrap=bootstrap)


@pytest.fixture(scope="module")
def gw(workdir, build):
    with start_gateway(workdir, build, "hostile") as g:
        yield g


# ---- requests and answers -----------------------------------------------------------

def chat_body(api: str, model: str, **extra) -> dict:
    """An ordinary request of the client API."""
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    if api == "anthropic":
        body["max_tokens"] = 50
    body.update(extra)
    return body


def send(gw, api: str, body: dict | None = None, *, data: bytes | None = None, headers: dict | None = None,
         stream: bool = False, timeout: float = 60) -> tuple[requests.Response, str]:
    """POSTs on a fresh connection (a refused request may leave Envoy closing the
    last one) with its own x-request-id."""
    rid = str(uuid.uuid4())
    h = {"x-request-id": rid, "content-type": "application/json"}
    h.update(headers or {})
    if data is None:
        data = json.dumps(body).encode()
    r = requests.post(gw.url + PATHS[api], data=data, headers=h, stream=stream, timeout=timeout)
    return r, rid


def openai_error(r: requests.Response, status: int, *, code: str | None = None, etype: str | None = None,
                 param: str | None = None) -> dict:
    """OpenAI's error document, exactly: `{"error": {message, type, param, code}}`."""
    assert r.status_code == status, r.text[:1000]
    assert r.headers["content-type"].startswith("application/json"), r.headers
    doc = r.json()
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert set(err) >= {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    if code is not None:
        assert err["code"] == code, err
    if etype is not None:
        assert err["type"] == etype, err
    if param is not None:
        assert err["param"] == param, err
    return err


def anthropic_error(r: requests.Response, status: int, etype: str) -> dict:
    """Anthropic's error document, exactly: `{"type": "error", "error": {type, message}}`."""
    assert r.status_code == status, r.text[:1000]
    assert r.headers["content-type"].startswith("application/json"), r.headers
    doc = r.json()
    assert set(doc) == {"type", "error"} and doc["type"] == "error", doc
    err = doc["error"]
    assert set(err) == {"type", "message"}, err
    assert err["type"] == etype, err
    assert isinstance(err["message"], str) and err["message"], err
    return err


def client_error(api: str, r: requests.Response, status: int, *, openai_code: str | None = None,
                 openai_type: str | None = None, param: str | None = None,
                 anthropic_type: str | None = None) -> str:
    """The error in the client's schema; returns its message."""
    if api == "openai":
        return openai_error(r, status, code=openai_code, etype=openai_type, param=param)["message"]
    return anthropic_error(r, status, anthropic_type or "invalid_request_error")["message"]


def error_event(api: str, body: bytes) -> dict:
    """The stream's last event, which must be an error in the client's schema (its
    `error` object); nothing follows it."""
    events = sse_events(body)
    assert events, body[-500:]
    last = events[-1]
    data = next((ln[5:].strip() for ln in last.split("\n") if ln.startswith("data:")), None)
    assert data is not None, last
    doc = json.loads(data)
    if api == "openai":
        assert set(doc) == {"error"}, doc
        return doc["error"]
    assert last.startswith("event: error\n"), last
    assert doc["type"] == "error", doc
    return doc["error"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- the gateway's health ------------------------------------------------------------------

def gauges(gw) -> dict[str, int]:
    """Envoy's active-request gauges: requests from clients (`http.aigw.`) and to
    each cluster."""
    text = requests.get(f"{gw.admin_url}/stats", timeout=5,
                        params={"filter": r"(^http\.aigw\.downstream_rq_active$|\.upstream_rq_active$)"}).text
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            out[name] = int(value)
    assert "http.aigw.downstream_rq_active" in out, text
    return out


def settle(gw, timeout: float = 10.0) -> None:
    """Every active-request gauge back to 0 (a request that ended leaves nothing)."""
    deadline = time.monotonic() + timeout
    while True:
        active = {k: v for k, v in gauges(gw).items() if v}
        if not active:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"requests still active {timeout}s after the case: {active}")
        time.sleep(0.05)


def assert_serving(gw, backend: str = "openai", api: str = "openai") -> None:
    """Envoy is alive, nothing is left active, and an ordinary request on that route
    gets the provider's answer."""
    assert gw.alive(), "Envoy died:\n" + gw.envoy_log.read_text(errors="replace")[-4000:]
    settle(gw)
    r, rid = send(gw, api, chat_body(api, MODELS[backend]))
    assert r.status_code == 200, r.text[:1000]
    (rec,) = gw.upstream(rid)
    assert rec["provider"] == PROVIDERS[backend] and rec["checks"] == [], rec["checks"]
    doc = r.json()
    text = doc["choices"][0]["message"]["content"] if api == "openai" else doc["content"][0]["text"]
    assert text == rec["sent_text"]
    settle(gw)


def refused(gw, rid: str) -> None:
    """The gateway answered itself: the provider saw nothing of the request."""
    assert gw.upstream(rid) == []


# ---- raw connections -------------------------------------------------------------------

def connect(gw) -> socket.socket:
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=30)


def reset(sock: socket.socket) -> None:
    """Closes with RST (SO_LINGER 0): a client that goes away mid-exchange."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_answer(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything until the peer closes (or `timeout`)."""
    sock.settimeout(timeout)
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk
    except (TimeoutError, ConnectionResetError):
        return got


def send_header_bytes(sock: socket.socket, head: bytes, block: bytes, rest: bytes) -> bytes:
    """Sends `head`, then `block` (header lines) 16 KiB at a time, waiting briefly
    for an answer after each piece, then `rest`; returns the answer. Envoy answers
    as soon as the headers exceed its limit and closes the connection: a client
    that kept sending would make that close a reset and lose the answer, so this one
    stops sending once an answer is there."""
    sock.sendall(head)
    for i in range(0, len(block), 16384):
        sock.sendall(block[i:i + 16384])
        readable, _, _ = select.select([sock], [], [], 0.05)
        if readable:
            return read_answer(sock)
    sock.sendall(rest)
    return read_answer(sock)


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def wait_upstream(gw, rid: str, check, timeout: float = 10.0) -> dict:
    """The simulator's record of a request once `check(record)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        got = gw.upstream(rid)
        if len(got) == 1 and check(got[0]):
            return got[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"upstream record of {rid}: {got}")
        time.sleep(0.05)


# ---- JSON nested 100,000 deep ----------------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


# Every route but OpenAI to OpenAI reads the whole body: translations, and an
# Anthropic client's body to Anthropic (read as a JSON object to set model and stream).
READ_WHOLE = [(api, backend) for api in APIS for backend in BACKENDS if (api, backend) != ("openai", "openai")]


@pytest.mark.parametrize("api,backend", READ_WHOLE, ids=[f"{a}-client-{b}" for a, b in READ_WHOLE])
def test_json_nested_100000_deep_is_refused_where_the_gateway_reads_the_body(gw, api, backend):
    """serde_json's recursion limit (128) stops the parse long before the stack is
    in danger (the wasm build's included), and the 400 names where: the path of the
    unknown field, cut short in the message and in `param`."""
    head = json.dumps(chat_body(api, MODELS[backend]))[:-1].encode()
    for where, data in [("unknown field", head + b', "x": ' + DEEP + b"}"),
                        ("messages", json.dumps(chat_body(api, MODELS[backend]))
                         .replace('"messages": [', '"messages": [' + "[" * 100_000 + "]" * 100_000 + ", ")
                         .encode())]:
        r, rid = send(gw, api, data=data)
        msg = client_error(api, r, 400, openai_code="invalid_request", openai_type="invalid_request_error")
        if where == "unknown field":
            assert "recursion limit exceeded" in msg, msg
            assert msg.startswith("Invalid 'x[0][0][0]") and "…" in msg, msg
            if api == "openai":
                param = r.json()["error"]["param"]
                assert param.startswith("x[0][0]") and "…" in param and len(param) <= 256, param
        else:
            assert msg.startswith("Invalid 'messages[0]"), msg
        refused(gw, rid)
    assert_serving(gw, backend, api)


def test_json_nested_100000_deep_in_model_is_refused(gw):
    """`model` is the field the gateway itself reads on every route."""
    for api in APIS:
        r, rid = send(gw, api, data=b'{"model": ' + DEEP + b', "messages": []}')
        msg = client_error(api, r, 400, openai_code="invalid_request", param="model")
        assert msg.startswith("Invalid 'model': invalid type: sequence, expected a string"), msg
        refused(gw, rid)
    assert_serving(gw)


def test_json_nested_100000_deep_passes_untouched_to_an_openai_compatible_provider(gw):
    """Passthrough (an OpenAI client, an OpenAI-compatible provider): the gateway
    reads `model`, `stream` and `stream_options` only, and skips everything else
    without recursion (serde_json ignores unknown values with a loop), so the depth
    cannot hurt it; validating every value of every passthrough body would cost a
    full parse of each request, and the provider reads the body anyway. The body
    reaches the provider byte for byte and the provider's 400 (its JSON parser
    gives up) reaches the client unchanged, in the client's own schema: the
    provider's schema is the client's."""
    data = json.dumps(chat_body("openai", MODELS["openai"]))[:-1].encode() + b', "x": ' + DEEP + b"}"
    r, rid = send(gw, "openai", data=data)
    (rec,) = gw.upstream(rid)
    assert (rec["body_bytes"], rec["body_sha256"]) == (len(data), sha256(data))
    assert rec["response"]["status"] == 400
    assert r.json() == {"error": {"message": "simulator: the body is not a JSON object",
                                  "type": "invalid_request_error", "param": None, "code": None}}
    openai_error(r, 400)
    assert_serving(gw)


# ---- a 10 MB string ------------------------------------------------------------------------------

BIG = "m" * (10 * 1000 * 1000)


@pytest.mark.parametrize("api", APIS)
def test_a_10_mb_model_is_404_without_the_10_mb(gw, api):
    """The model is not served: 404 naming it, as any unknown model, but quoting a
    bounded part of it (its start and end), not 10 MB back."""
    r, rid = send(gw, api, chat_body(api, BIG))
    msg = client_error(api, r, 404, openai_code="model_not_found", openai_type="invalid_request_error",
                       param="model", anthropic_type="not_found_error")
    assert len(r.content) < 2048, len(r.content)
    assert msg.startswith("The model `" + "m" * 100) and "…" in msg, msg[:300]
    assert msg.endswith("m` does not exist or is not served by this gateway"), msg[-300:]
    refused(gw, rid)
    assert_serving(gw)


@pytest.mark.parametrize("api,backend,field", [
    ("openai", "openai", "stream"),       # read by the gateway on every route
    ("openai", "bedrock", "max_tokens"),  # read by the translation
    ("anthropic", "bedrock", "max_tokens"),
    ("openai", "anthropic", "temperature"),
])
def test_a_10_mb_string_where_another_type_goes_is_400_without_the_10_mb(gw, api, backend, field):
    """serde's message quotes the value it refuses; the gateway quotes its start and
    end (what was expected, and where), never all of it."""
    r, rid = send(gw, api, chat_body(api, MODELS[backend], **{field: BIG}))
    msg = client_error(api, r, 400, openai_code="invalid_request", param=field)
    assert len(r.content) < 4096, len(r.content)
    assert msg.startswith(f"Invalid '{field}': invalid type: string \"mmm"), msg[:200]
    assert "…" in msg and " at line 1 column " in msg[-80:], msg[-200:]
    refused(gw, rid)
    assert_serving(gw, backend, api)


# ---- 100,000 messages -------------------------------------------------------------------------------

@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_100000_messages_are_carried_whole(gw, backend, api):
    """A valid request, only long (4 MB, under the 16 MiB limit): every message
    reaches the provider, translated or not, in seconds, and the answer comes back
    in the client's schema with the provider's count of the prompt."""
    n = 100_000
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(n)]
    messages.append({"role": "user", "content": "end"})
    body = chat_body(api, MODELS[backend], messages=messages)
    t0 = time.monotonic()
    r, rid = send(gw, api, body)
    took = time.monotonic() - t0
    assert r.status_code == 200, r.text[:1000]
    assert took < 20, f"{took:.1f}s"
    (rec,) = gw.upstream(rid)
    assert rec["checks"] == [], rec["checks"][:3]
    assert len(rec["body_json"]["messages"]) == n + 1
    if backend == "openai" and api == "openai":
        assert rec["body_sha256"] == sha256(json.dumps(body).encode())  # passthrough: untouched
    doc = r.json()
    prompt = doc["usage"]["prompt_tokens"] if api == "openai" else doc["usage"]["input_tokens"]
    assert prompt == n + 1  # one word each
    assert_serving(gw, backend, api)


# ---- a million bytes of headers --------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["one header", "many headers"])
def test_a_million_bytes_of_headers_get_envoys_431(gw, shape):
    """Envoy's HTTP/1 codec refuses headers over 60 KiB (max_request_headers_kb) or
    over 100 of them, before any filter runs: its own plain-text 431 (no client
    schema can apply: the filter never sees the request), the connection closed,
    nothing sent upstream."""
    rid = str(uuid.uuid4())
    body = json.dumps(chat_body("openai", MODELS["openai"])).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
            b"x-request-id: " + rid.encode() + b"\r\n")
    if shape == "one header":
        block = b"x-big: " + b"a" * MIB + b"\r\n"
    else:
        block = b"".join(b"x-h%05d: %s\r\n" % (i, b"v" * 90) for i in range(10_000))
    assert len(block) >= 1_000_000
    rest = b"content-length: %d\r\n\r\n" % len(body) + body
    sock = connect(gw)
    try:
        answer = send_header_bytes(sock, head, block, rest)
    finally:
        sock.close()
    status_line, _, rest_of = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large", answer[:300]
    headers, _, text = rest_of.partition(b"\r\n\r\n")
    lines = {ln.split(b":", 1)[0].lower(): ln.split(b":", 1)[1].strip() for ln in headers.split(b"\r\n")}
    assert lines[b"content-type"] == b"text/plain" and lines[b"connection"] == b"close", headers
    assert text == b"Request Header Fields Too Large"
    refused(gw, rid)
    assert_serving(gw)


# ---- a stream that never ends -----------------------------------------------------------------------

# Paced: the provider pauses 1 ms between 16 KiB pieces (about 10 MB/s, far beyond
# any model's pace), so Envoy's buffers never fill and what could grow is the
# gateway's own: a bound of a quarter of what passes after the warm-up. A gateway
# that kept the stream, or what it translates it into, would grow by all of it;
# one that keeps nothing grows by allocator noise (measured: 0 to 1 MiB on either
# build).
PACED = {"warm_up": 4 * MIB, "measured": 32 * MIB, "bound": 8 * MIB, "delay_ms": "1"}
# Flood: no pause, the provider outruns the client and Envoy's flow control holds
# it back. Envoy then hands the filter chunks as large as its buffers (1 MiB native;
# render.py gives wasm connections 17 MiB, for 16 MiB bodies), and the wasm VM's
# linear memory, which never shrinks, keeps the high-water mark of the chunks it
# copied in (measured on a fresh Envoy: about 110 MiB within the first 16 MiB, 35
# MiB more at most in the next 128 MiB, flat after; native: under 1 MiB). The bound
# is what passes: a gateway that kept the stream would grow by at least that.
FLOOD = {"warm_up": 16 * MIB, "measured": 128 * MIB, "bound": 128 * MIB, "delay_ms": None}


def open_endless(gw, api: str, backend: str, delay_ms: str | None) -> tuple[socket.socket, str, bytes]:
    """Starts a stream the provider never ends (16 KiB text pieces); returns the
    socket, the request id and the answer's head."""
    rid = str(uuid.uuid4())
    body = json.dumps(chat_body(api, MODELS[backend], stream=True)).encode()
    pace = b"" if delay_ms is None else b"x-sim-delay-ms: " + delay_ms.encode() + b"\r\n"
    sock = connect(gw)
    sock.sendall(b"POST " + PATHS[api].encode() + b" HTTP/1.1\r\nhost: gateway\r\n"
                 b"content-type: application/json\r\nx-request-id: " + rid.encode() + b"\r\n"
                 b"x-sim-endless: 16384\r\n" + pace + b"content-length: %d\r\n\r\n" % len(body) + body)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        assert chunk, head
        head += chunk
    return sock, rid, head


def read_bytes(sock: socket.socket, n: int, pid: int) -> int:
    """Reads `n` bytes, sampling Envoy's RSS every 2 MiB; returns the highest."""
    got, peak, next_sample = 0, 0, 0
    while got < n:
        chunk = sock.recv(1 << 18)
        assert chunk, f"the stream ended after {got} bytes"
        got += len(chunk)
        if got >= next_sample:
            peak = max(peak, rss_kib(pid))
            next_sample += 2 * MIB
    return peak


@pytest.mark.parametrize("mode", ["paced", "flood"])
@pytest.mark.parametrize("api,backend", [("openai", "openai"), ("openai", "bedrock"), ("anthropic", "bedrock"),
                                         ("openai", "anthropic")])
def test_a_stream_that_never_ends_holds_no_memory(gw, api, backend, mode):
    """The provider streams without end (passthrough; Bedrock's event stream and
    Anthropic's SSE translated and metered chunk by chunk); the client reads the
    warm-up and the measured bytes, then resets. Envoy's resident memory stays
    within the mode's bound of where it stood after the warm-up (see PACED and
    FLOOD), the provider's stream is cut when the client leaves, nothing stays
    active."""
    m = PACED if mode == "paced" else FLOOD
    pid = gw.envoy.pid
    sock, rid, head = open_endless(gw, api, backend, m["delay_ms"])
    try:
        assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head[:300]
        assert b"content-type: text/event-stream" in head.lower(), head
        read_bytes(sock, m["warm_up"], pid)
        base = rss_kib(pid)
        peak = read_bytes(sock, m["measured"], pid)
    finally:
        reset(sock)
    settle(gw)
    after = rss_kib(pid)
    grew = max(peak, after) - base
    print(f"\n{gw.build} {mode} {api}->{backend}: RSS {base} KiB after the warm-up, peak {peak}, after {after}: "
          f"+{grew} KiB while {m['measured'] // MIB} MiB passed")
    assert grew < m["bound"] // 1024, f"Envoy grew by {grew} KiB while {m['measured'] // MIB} MiB passed"
    # Envoy reset the provider's connection when the client left: the stream ended.
    wait_upstream(gw, rid, lambda rec: rec.get("client_disconnected") is True)
    assert_serving(gw, backend, api)


# ---- a frame announcing 4 GiB ------------------------------------------------------------------------

FOUR_GIB = 0xFFFF_FFF0  # what a u32 frame length can announce, near enough 4 GiB


@pytest.mark.parametrize("api", APIS)
def test_a_bedrock_frame_announcing_4_gib_ends_the_stream_with_an_error_event(gw, api):
    """ConverseStream: one good frame, then a prelude (its CRC valid) announcing a
    4 GiB frame, then 64 KiB and the end of the body. The gateway refuses the frame
    as soon as its prelude is in (no frame is above 16 MiB, AWS's own limit): the
    client gets the role chunk, then an error event in its schema naming the size,
    then a clean end of stream, at once, without the gateway buffering what
    follows."""
    t0 = time.monotonic()
    r, rid = send(gw, api, chat_body(api, MODELS["bedrock"], stream=True),
                  headers={"x-sim-frame-length": str(FOUR_GIB)}, stream=True)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream" and "content-encoding" not in r.headers
    body = b"".join(r.iter_content(None))  # a clean end: no reset, no truncated chunk
    assert time.monotonic() - t0 < 10
    err = error_event(api, body)
    want = f"The upstream response was invalid: event-stream message of {FOUR_GIB} bytes exceeds the limit of 16777216"
    if api == "openai":
        assert err == {"message": want, "type": "server_error", "param": None, "code": "bad_upstream_response"}
        assert b"[DONE]" not in body
    else:
        assert err == {"type": "api_error", "message": want}
        assert sse_events(body)[0].startswith("event: message_start")
    (rec,) = gw.upstream(rid)
    assert rec["fault"] == f"frame announcing {FOUR_GIB} bytes"
    assert_serving(gw, "bedrock", api)


@pytest.mark.parametrize("api", APIS)
def test_a_bedrock_frame_announcing_4_gib_instead_of_converse_json_is_502(gw, api):
    """Converse (not streamed) answered with that frame: not a Converse document,
    so a 502 in the client's schema."""
    r, rid = send(gw, api, chat_body(api, MODELS["bedrock"]), headers={"x-sim-frame-length": str(FOUR_GIB)})
    msg = client_error(api, r, 502, openai_code="bad_upstream_response", openai_type="server_error",
                       anthropic_type="api_error")
    assert msg.startswith("The upstream response was invalid: Converse response: "), msg
    assert gw.one_upstream(rid)["response"]["status"] == 200
    assert_serving(gw, "bedrock", api)


# ---- invalid UTF-8 ------------------------------------------------------------------------------------

BAD = b"\xff\xfe\xc3\x28"  # never UTF-8: 0xFF, 0xFE, and a lead byte without its continuation


def utf8_case(api: str, backend: str, field: str) -> bytes:
    """A request of `api` to `backend` with invalid UTF-8 in `field`, as raw bytes."""
    model = MODELS[backend].encode()
    content = b'"hi"'
    extra = b""
    if field == "model":
        model += BAD
    elif field == "content":
        content = b'"hi ' + BAD + b'"'
    elif field == "tool name":
        tool = (b'{"type":"function","function":{"name":"get' + BAD + b'","parameters":{"type":"object"}}}'
                if api == "openai" else b'{"name":"get' + BAD + b'","input_schema":{"type":"object"}}')
        extra = b',"tools":[' + tool + b"]"
    elif field == "system":
        extra = (b',"system":"be ' + BAD + b'"' if api == "anthropic" else b"")
        if api == "openai":
            return (b'{"model":"' + model + b'","messages":[{"role":"system","content":"be ' + BAD + b'"},'
                    b'{"role":"user","content":"hi"}]}')
    if api == "anthropic":
        extra += b',"max_tokens":50'
    return b'{"model":"' + model + b'","messages":[{"role":"user","content":' + content + b"}]" + extra + b"}"


# (api, backend, field) → what the client gets: a 400 of the gateway naming the
# field (`param` for OpenAI clients; in the message for Anthropic clients), or
# "passthrough" (the provider gets the bytes and answers).
#
# - `model`: the gateway reads it on every route to route the request; a model
#   name that is not UTF-8 is no JSON string, so the whole body is invalid JSON
#   (400 invalid_json), for both client APIs.
# - On translation routes (Bedrock, Anthropic for OpenAI clients; Bedrock and the
#   OpenAI backend for Anthropic clients, through the hub) the gateway reads every
#   field to rewrite it: a 400 naming the field, nothing sent.
# - An Anthropic client's body to the Anthropic backend is read as a JSON object
#   (the route rewrites `model` and `stream`), so it is checked too: a 400 naming
#   the field.
# - OpenAI client to the OpenAI-compatible backend: passthrough, the gateway does
#   not read these fields (see the nesting case for why), so the provider gets the
#   body byte for byte and its 400 reaches the client unchanged.
UTF8_CASES = []
for _field, _openai_param in [("content", "messages[0].content"), ("tool name", "tools[0].function.name"),
                              ("system", "messages[0].content")]:
    UTF8_CASES.append(("openai", "openai", _field, "passthrough"))
    for _backend in TRANSLATED:
        UTF8_CASES.append(("openai", _backend, _field, _openai_param))
for _field, _path in [("content", "messages[0].content"), ("tool name", "tools[0].name"), ("system", "system")]:
    for _backend in BACKENDS:
        UTF8_CASES.append(("anthropic", _backend, _field, _path))
for _api in APIS:
    for _backend in BACKENDS:
        UTF8_CASES.append((_api, _backend, "model", "invalid_json"))


@pytest.mark.parametrize("api,backend,field,expect", UTF8_CASES,
                         ids=[f"{a}-{b}-{f.replace(' ', '_')}" for a, b, f, _ in UTF8_CASES])
def test_invalid_utf8(gw, api, backend, field, expect):
    data = utf8_case(api, backend, field)
    r, rid = send(gw, api, data=data)
    if expect == "passthrough":
        (rec,) = gw.upstream(rid)
        assert (rec["body_bytes"], rec["body_sha256"]) == (len(data), sha256(data))
        assert rec["response"]["status"] == 400
        assert r.json() == {"error": {"message": "simulator: the body is not a JSON object",
                                      "type": "invalid_request_error", "param": None, "code": None}}
    elif expect == "invalid_json":
        msg = client_error(api, r, 400, openai_code="invalid_json", openai_type="invalid_request_error")
        assert msg.startswith("The request body is not valid JSON: invalid unicode code point"), msg
        refused(gw, rid)
    else:
        msg = client_error(api, r, 400, openai_code="invalid_request", openai_type="invalid_request_error",
                           param=expect)
        assert msg.startswith(f"Invalid '{expect}': invalid unicode code point at line 1 column "), msg
        refused(gw, rid)
    assert_serving(gw, backend, api)


# ---- max_tokens out of range ---------------------------------------------------------------------------

MAX_TOKENS = {"negative": b"-1", "2^64": b"18446744073709551616", "1e400": b"1e400", "a string": b'"100"',
              "a float": b"10.5"}
MAX_TOKENS_REASON = {"negative": "invalid value: integer `-1`, expected u64",
                     "2^64": "invalid type: floating point `1.8446744073709552e+19`, expected u64",
                     "1e400": "number out of range",
                     "a string": 'invalid type: string "100", expected u64',
                     "a float": "invalid type: floating point `10.5`, expected u64"}
# Translation routes: the OpenAI client to Bedrock and Anthropic, the Anthropic
# client to Bedrock and to the OpenAI backend (through the hub).
MAX_TOKENS_ROUTES = [("openai", "bedrock"), ("openai", "anthropic"), ("anthropic", "bedrock"),
                     ("anthropic", "openai")]


def max_tokens_body(api: str, backend: str, field: str, value: bytes) -> bytes:
    return (b'{"model":"' + MODELS[backend].encode() + b'","' + field.encode() + b'":' + value
            + b',"messages":[{"role":"user","content":"hi"}]}')


@pytest.mark.parametrize("value", list(MAX_TOKENS))
@pytest.mark.parametrize("api,backend", MAX_TOKENS_ROUTES)
def test_max_tokens_out_of_range_is_400_naming_it(gw, api, backend, value):
    fields = ["max_tokens", "max_completion_tokens"] if api == "openai" else ["max_tokens"]
    for field in fields:
        r, rid = send(gw, api, data=max_tokens_body(api, backend, field, MAX_TOKENS[value]))
        msg = client_error(api, r, 400, openai_code="invalid_request", openai_type="invalid_request_error",
                           param=field)
        assert msg.startswith(f"Invalid '{field}': {MAX_TOKENS_REASON[value]} at line 1 column "), msg
        refused(gw, rid)
    assert_serving(gw, backend, api)


@pytest.mark.parametrize("value", list(MAX_TOKENS))
def test_max_tokens_out_of_range_from_an_anthropic_client_to_anthropic(gw, value):
    """Not a translation: an Anthropic client's body goes to the Anthropic backend
    as the client wrote it (only `model` and `stream` are rewritten), so the
    provider checks max_tokens and its 400, in the client's own schema, comes back
    unchanged. The gateway does read the body as a JSON object, and no JSON number
    holds 1e400: that one is the gateway's 400, naming the field."""
    r, rid = send(gw, "anthropic", data=max_tokens_body("anthropic", "anthropic", "max_tokens", MAX_TOKENS[value]))
    if value == "1e400":
        msg = anthropic_error(r, 400, "invalid_request_error")["message"]
        assert msg.startswith("Invalid 'max_tokens': number out of range at line 1 column "), msg
        refused(gw, rid)
    else:
        assert r.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                       "message": "max_tokens: Field required (an integer >= 1)"}}
        assert r.status_code == 400
        assert gw.one_upstream(rid)["response"]["status"] == 400
    assert_serving(gw, "anthropic", "anthropic")
