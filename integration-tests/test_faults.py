"""Faults through a real Envoy with the filter, both builds: a provider that resets
while the request arrives and in the middle of a stream, stalls before its headers
and in the middle of a stream, cuts an event-stream frame short, or sends a gzip
header and then garbage; a client that goes away while it sends its body and while
it reads a stream. Each ends in a way a client can handle: a status and error in
its schema, an error event ending the stream cleanly, or a clean reset where Envoy
allows nothing else (said where, and why). After each, nothing stays active in
Envoy (its active-request gauges are back to 0) and the next request is served.

The gateway is test_hostile.py's (routerOnly; OpenAI passthrough, Bedrock
Converse/ConverseStream with SigV4, Anthropic), with one more route per backend
whose route timeout is 2 s (the `bootstrap` hook of `running_gateway`) and whose
`streamIdleTimeout` is 1 s: the models `gpt-slow`, `bedrock-slow` and
`claude-slow`."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

from sim.faults import GZIP_GARBAGE, GZIP_HEADER
from conftest import metadata_number, metadata_string, running_gateway, sse_chunks, sse_events
from test_hostile import (APIS, BACKENDS, MIB, MODELS, PATHS, PROVIDERS, SIM_ARGS, assert_serving, chat_body,
                          client_error, connect, error_event, gateway_config, gauges, refused, reset, send, settle,
                          wait_upstream)

ROUTE_TIMEOUT = 2.0
# The slow routes' `streamIdleTimeout`: below their route timeout, so that it is the
# gateway, not Envoy's reset, that ends a stalled stream (native build).
IDLE_TIMEOUT = 1.0
SLOW = {"openai": "gpt-slow", "bedrock": "bedrock-slow", "anthropic": "claude-slow"}
ROUTES = [(api, backend) for api in APIS for backend in BACKENDS]
IDS = [f"{api}-client-{backend}" for api, backend in ROUTES]


def route_timeouts(rendered: dict, ports: dict) -> dict:
    """The slow models' routes time out after ROUTE_TIMEOUT (render.py gives every
    route 300 s): Envoy's route timeout, from the end of the request to the end of
    the answer."""
    hcm = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    slow = [r for r in routes if r.get("name") in SLOW.values()]
    assert len(slow) == len(SLOW), [r.get("name") for r in routes]
    for r in slow:
        r["route"]["timeout"] = f"{ROUTE_TIMEOUT}s"
    return rendered


def faults_config() -> dict:
    """test_hostile.py's gateway, plus the slow routes with their idle timeout."""
    cfg = gateway_config({SLOW[b]: b for b in BACKENDS})
    for r in cfg["routes"]:
        if r["name"] in SLOW.values():
            r["streamIdleTimeout"] = f"{int(IDLE_TIMEOUT * 1000)}ms"
    return cfg


@pytest.fixture(scope="module")
def gw(workdir, build):
    with running_gateway(faults_config(), BACKENDS, workdir / f"faults-{build}", build, SIM_ARGS,
                         bootstrap=route_timeouts) as g:
        yield g


def passes_untranslated(api: str, backend: str) -> bool:
    """Routes whose successful answer passes as the provider sent it: OpenAI to
    OpenAI, and Anthropic to Anthropic (only the request is rewritten)."""
    return (api, backend) in (("openai", "openai"), ("anthropic", "anthropic"))


def upstream_error_prefix(backend: str, status: int) -> str:
    """How the gateway words an error answer it could not read as the provider's
    JSON (Envoy's own plain text, here): per provider reader."""
    return {"openai": f"the upstream returned HTTP {status}",
            "bedrock": f"Bedrock returned HTTP {status}",
            "anthropic": f"the Anthropic provider answered HTTP {status}"}[backend]


def read_stream(r: requests.Response) -> tuple[bytes, Exception | None]:
    """The body as it arrives, and how reading it ended (None: a clean end)."""
    got = b""
    try:
        for chunk in r.iter_content(None):
            got += chunk
    except requests.exceptions.RequestException as e:
        return got, e
    return got, None


# ---- the provider resets -------------------------------------------------------------------------

@pytest.mark.parametrize("api,backend", ROUTES, ids=IDS)
def test_provider_resets_mid_request(gw, api, backend):
    """The provider reads the headers and 1 KiB of a 256 KiB body, then resets the
    connection: not one byte of an answer. Envoy answers 503 (`upstream connect
    error or disconnect/reset before headers`), which reaches the client in its
    schema: translated by the provider's reader on translation routes, and, on the
    passthrough route, by the gateway's step for Envoy's plain-text errors."""
    body = chat_body(api, MODELS[backend], messages=[{"role": "user", "content": "x " * (128 * 1024)}])
    r, rid = send(gw, api, body, headers={"x-sim-reset-mid-request": "1024"})
    msg = client_error(api, r, 503, openai_type="server_error", anthropic_type="overloaded_error")
    assert msg.startswith(upstream_error_prefix(backend, 503)), msg
    if backend != "anthropic":  # the Anthropic reader does not quote a non-JSON body
        assert "upstream connect error or disconnect/reset before headers" in msg, msg
    (rec,) = gw.upstream(rid)
    assert (rec["fault"], rec["body_bytes"], rec["response"]["status"]) == ("reset after 1024 body bytes", 1024, None)
    assert rec["provider"] == PROVIDERS[backend]
    assert_serving(gw, backend, api)


@pytest.mark.parametrize("api,backend", ROUTES, ids=IDS)
def test_provider_resets_mid_stream(gw, api, backend):
    """The provider resets the connection after three events. The answer's headers
    are out by then, so Envoy can only reset the client's stream (Envoy's
    FilterManager resets rather than answer once headers were sent, and calls no
    filter to write anything more): a clean reset, every event before it whole and
    in the client's schema."""
    r, rid = send(gw, api, chat_body(api, MODELS[backend], stream=True), stream=True,
                  headers={"x-sim-reset-after": "3", "x-sim-tokens": "50"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    body, ended = read_stream(r)
    assert isinstance(ended, requests.exceptions.ChunkedEncodingError), (ended, body[-300:])
    events = sse_events(body)
    assert events and body.endswith(b"\n\n"), body[-300:]
    if api == "openai":
        assert all(c["object"] == "chat.completion.chunk" for c in sse_chunks(body))
    else:
        assert events[0].startswith("event: message_start")
    settle(gw)
    (rec,) = gw.upstream(rid)
    assert rec["response"]["status"] == 200
    assert_serving(gw, backend, api)


# ---- the provider stalls ---------------------------------------------------------------------------

@pytest.mark.parametrize("api,backend", ROUTES, ids=IDS)
def test_provider_stalls_before_its_headers(gw, api, backend):
    """The provider sends nothing for 10 s; the route times out after 2 s. Envoy's
    504 (`upstream request timeout`) comes in the client's schema, at the timeout,
    and Envoy has left the provider (the simulator saw the connection close)."""
    t0 = time.monotonic()
    r, rid = send(gw, api, chat_body(api, SLOW[backend]), headers={"x-sim-headers-delay-ms": "10000"})
    took = time.monotonic() - t0
    msg = client_error(api, r, 504, openai_type="server_error", anthropic_type="timeout_error")
    assert msg.startswith(upstream_error_prefix(backend, 504)), msg
    if backend != "anthropic":
        assert msg.endswith(": upstream request timeout"), msg
    assert ROUTE_TIMEOUT - 0.1 < took < ROUTE_TIMEOUT + 3, took
    wait_upstream(gw, rid, lambda rec: rec.get("client_disconnected") is True)
    assert_serving(gw, backend, api)


@pytest.mark.parametrize("api,backend", ROUTES, ids=IDS)
def test_provider_stalls_mid_stream(gw, api, backend):
    """The provider sends two events, then nothing, forever.

    Native: after the route's `streamIdleTimeout` (1 s, below the 2 s route timeout)
    without a byte, the gateway ends the stream itself: the events so far, whole and
    in the client's schema, then an error event in that schema, then a clean end.
    Envoy then abandons the provider's request (the simulator sees its connection
    go), the metadata says what was seen, and the stall is counted.

    wasm: the same timeout is configured but cannot act. proxy-wasm has timers only
    for the root context, and no call that adds response bytes and ends the response
    outside the response-body hook, which Envoy does not call while the provider is
    quiet (`send_local_response` once the headers are out, and `close_stream`, reset
    the stream). So Envoy's route timeout gives up on the provider; the answer's
    headers are out, so Envoy resets the client's stream (no filter may write after
    that): a clean reset at the route timeout, never a hang, the events before it
    whole."""
    counted = gw.counter("aigw_stream_idle_timeouts")
    t0 = time.monotonic()
    r, rid = send(gw, api, chat_body(api, SLOW[backend], stream=True), stream=True,
                  headers={"x-sim-stall-after": "2"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    body, ended = read_stream(r)
    took = time.monotonic() - t0
    events = sse_events(body)
    if gw.build == "native":
        assert ended is None, (ended, body[-300:])
        assert body.endswith(b"\n\n"), body[-300:]
        assert IDLE_TIMEOUT - 0.1 < took < ROUTE_TIMEOUT - 0.3, took
        err = error_event(api, body)
        want = ("the provider sent nothing for 1s in the middle of the stream: "
                "the gateway ended it (streamIdleTimeout)")
        if api == "openai":
            assert err == {"message": want, "type": "server_error", "param": None, "code": "stream_idle_timeout"}
        else:
            assert err == {"type": "timeout_error", "message": want}
        before = events[:-1]
        assert before and not any("error" in ev.split("\n", 1)[0] for ev in before), events
        assert gw.counter("aigw_stream_idle_timeouts") == counted + 1
    else:
        assert isinstance(ended, requests.exceptions.ChunkedEncodingError), (ended, body[-300:])
        # Envoy closes an HTTP/1 connection it resets after its delayed-close timeout (1 s).
        assert ROUTE_TIMEOUT - 0.1 < took < ROUTE_TIMEOUT + 3, took
        before = events
        assert before, body
        assert gw.counter("aigw_stream_idle_timeouts") == counted
    if api == "openai":
        assert all(c["object"] == "chat.completion.chunk" for c in sse_chunks("\n\n".join(before)))
    else:
        assert before[0].startswith("event: message_start"), before
    wait_upstream(gw, rid, lambda rec: rec.get("client_disconnected") is True)
    if gw.build == "native":
        entry = gw.log_entry(rid)
        assert metadata_string(entry, "route_name") == SLOW[backend], entry
    assert_serving(gw, backend, api)


@pytest.mark.parametrize("api,backend", ROUTES, ids=IDS)
def test_provider_stalls_after_the_headers_of_a_whole_answer(gw, api, backend):
    """Not streamed: the provider sends its headers, then never its body. Where the
    answer passes untranslated, its headers are already with the client: a clean
    reset at the timeout. Where it is translated, the gateway holds the headers
    until the body is in (it rewrites status, type and length); Envoy then sends its
    504 straight to the client, past every filter (FilterManager's direct local
    reply, for headers that started through the filters but were not sent), so it
    is Envoy's plain text: no filter can rewrite it. Only Envoy's local reply
    configuration (`local_reply_config` in the bootstrap) could."""
    t0 = time.monotonic()
    r, rid = send(gw, api, chat_body(api, SLOW[backend]), headers={"x-sim-stall-after": "0"}, stream=True)
    if passes_untranslated(api, backend):
        assert r.status_code == 200
        body, ended = read_stream(r)
        assert body == b"" and isinstance(ended, requests.exceptions.ChunkedEncodingError), ended
    else:
        assert r.status_code == 504
        assert r.headers["content-type"] == "text/plain"
        assert r.content == b"upstream request timeout"
    assert ROUTE_TIMEOUT - 0.1 < time.monotonic() - t0 < ROUTE_TIMEOUT + 3
    wait_upstream(gw, rid, lambda rec: rec.get("client_disconnected") is True)
    assert_serving(gw, backend, api)


# ---- broken framing and encoding ---------------------------------------------------------------------

@pytest.mark.parametrize("api", APIS)
def test_truncated_event_stream_frame_ends_with_an_error_event(gw, api):
    """ConverseStream: three whole frames, then half of the fourth, then the end of
    the body and the connection. What the three frames said reaches the client,
    then an error event in its schema, then a clean end."""
    r, rid = send(gw, api, chat_body(api, MODELS["bedrock"], stream=True), stream=True,
                  headers={"x-sim-truncate-frame": "3"})
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    body, ended = read_stream(r)
    assert ended is None, ended
    err = error_event(api, body)
    want = "The upstream response was invalid: event stream ended inside a message"
    texts = []
    for ev in sse_events(body)[:-1]:
        data = json.loads(ev.split("data: ", 1)[1])
        if api == "openai":
            texts += [c["delta"].get("content") or "" for c in data["choices"]]
        elif data["type"] == "content_block_delta":
            texts.append(data["delta"]["text"])
    # messageStart, then two text frames: "Hello from bedrock", " word1".
    assert "".join(texts) == "Hello from bedrock word1"
    if api == "openai":
        assert err == {"message": want, "type": "server_error", "param": None, "code": "bad_upstream_response"}
    else:
        assert err == {"type": "api_error", "message": want}
    (rec,) = gw.upstream(rid)
    assert rec["fault"].startswith("frame 3 cut after ")
    assert_serving(gw, "bedrock", api)


GZIP_CASES = [(api, backend, stream) for api, backend in ROUTES for stream in (False, True)]


@pytest.mark.parametrize("api,backend,stream", GZIP_CASES,
                         ids=[f"{a}-client-{b}-{'sse' if s else 'json'}" for a, b, s in GZIP_CASES])
def test_broken_gzip(gw, api, backend, stream):
    """`content-encoding: gzip`, a valid gzip header, then bytes no inflater takes.
    Where the answer passes untranslated, the client gets the provider's bytes as
    they were (the gateway's meter cannot read them, counts nothing and does not
    fail). Where it is translated: a whole answer is a 502 in the client's schema;
    a stream is the translator's plain SSE (its content-encoding removed: the
    gateway asked for none) ending in an error event."""
    r, rid = send(gw, api, chat_body(api, MODELS[backend], stream=stream), stream=True,
                  headers={"x-sim-broken-gzip": "1"})
    sent = GZIP_HEADER + GZIP_GARBAGE * (2 if stream else 1)
    if passes_untranslated(api, backend):
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
        assert r.raw.read(decode_content=False) == sent
        entry = gw.log_entry(rid)
        assert metadata_number(entry, "llm_input_token") is None, entry
        assert metadata_number(entry, "llm_output_token") is None, entry
    elif not stream:
        msg = client_error(api, r, 502, openai_code="bad_upstream_response", openai_type="server_error",
                           anthropic_type="api_error")
        assert msg.startswith("The upstream response was invalid: "), msg
        assert "content-encoding" not in r.headers
    else:
        assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
        assert "content-encoding" not in r.headers, r.headers
        body, ended = read_stream(r)
        assert ended is None, ended
        err = error_event(api, body)
        assert err["message"].startswith("The upstream response was invalid: "), err
    assert gw.one_upstream(rid)["response"]["status"] == 200
    assert_serving(gw, backend, api)


# ---- the client goes away ----------------------------------------------------------------------------

@pytest.mark.parametrize("api,backend", ROUTES, ids=IDS)
def test_client_resets_mid_body(gw, api, backend):
    """The client announces 4 MiB, sends 1 MiB, and resets. The gateway was still
    reading the body (held in Envoy): nothing reaches the provider, and the request
    is gone from Envoy."""
    rid = str(uuid.uuid4())
    sock = connect(gw)
    try:
        sock.sendall(b"POST " + PATHS[api].encode() + b" HTTP/1.1\r\nhost: gateway\r\n"
                     b"content-type: application/json\r\nx-request-id: " + rid.encode() + b"\r\n"
                     b"content-length: %d\r\n\r\n" % (4 * MIB))
        sock.sendall(b'{"model": "' + MODELS[backend].encode() + b'", "max_tokens": 5, "messages": [{"role": '
                     b'"user", "content": "' + b"a" * MIB)
        deadline = time.monotonic() + 5
        while gauges(gw)["http.aigw.downstream_rq_active"] != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gauges(gw)["http.aigw.downstream_rq_active"] == 1
    finally:
        reset(sock)
    settle(gw)
    refused(gw, rid)
    assert_serving(gw, backend, api)


@pytest.mark.parametrize("api,backend", ROUTES, ids=IDS)
def test_client_resets_mid_stream(gw, api, backend):
    """The client reads three events of a long stream and resets: Envoy resets the
    provider's stream too (the simulator sees its connection go), and the request
    is gone from Envoy."""
    rid = str(uuid.uuid4())
    body = json.dumps(chat_body(api, MODELS[backend], stream=True)).encode()
    sock = connect(gw)
    try:
        sock.sendall(b"POST " + PATHS[api].encode() + b" HTTP/1.1\r\nhost: gateway\r\n"
                     b"content-type: application/json\r\nx-request-id: " + rid.encode() + b"\r\n"
                     b"x-sim-tokens: 2000\r\nx-sim-delay-ms: 20\r\n"
                     b"content-length: %d\r\n\r\n" % len(body) + body)
        got = b""
        while got.count(b"data:") < 3:
            chunk = sock.recv(65536)
            assert chunk, got
            got += chunk
        assert got.startswith(b"HTTP/1.1 200 OK\r\n"), got[:200]
    finally:
        reset(sock)
    settle(gw)
    wait_upstream(gw, rid, lambda rec: rec.get("client_disconnected") is True)
    assert_serving(gw, backend, api)
