"""Gateway behaviour through a real Envoy: usage injection, bad inputs, routing,
upstream errors and resets, gzip, /v1/models, model override, token latencies."""

from __future__ import annotations

import gzip
import json
import socket
import struct
import threading

import pytest
import requests

from conftest import BODY_LIMIT, OVERRIDE_MODEL, metadata_number, metadata_string, sse_chunks

CHAT = "/v1/chat/completions"


def chat_body(model: str = "gpt-4o-mini", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "Say hello"}], **extra}


def assert_counts(entry: dict, usage: dict) -> None:
    prompt, completion = usage["prompt_tokens"], usage.get("completion_tokens", 0)
    assert metadata_number(entry, "llm_input_token") == prompt, entry
    assert metadata_number(entry, "llm_output_token") == completion, entry
    assert metadata_number(entry, "llm_total_token") == usage["total_tokens"], entry


def assert_openai_error(r: requests.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    return err


# ---- usage injection -------------------------------------------------------------

def test_stream_without_include_usage_is_metered_but_client_sees_no_usage(gateway):
    r, rid = gateway.post(CHAT, chat_body(stream=True))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks = sse_chunks(r.content)
    assert chunks, r.text
    assert all(c.get("choices") for c in chunks), "usage-only chunk reached the client"
    assert all(c.get("usage") is None for c in chunks)
    assert r.content.rstrip().endswith(b"data: [DONE]")

    up = gateway.one_upstream(rid)
    assert up["body_json"]["stream_options"] == {"include_usage": True}
    usage = up["response"]["usage"]
    assert usage, "simulator did not send usage"
    entry = gateway.log_entry(rid)
    assert_counts(entry, usage)


def test_stream_with_include_usage_keeps_the_usage_chunk(gateway):
    r, rid = gateway.post(CHAT, chat_body(stream=True, stream_options={"include_usage": True}))
    assert r.status_code == 200
    chunks = sse_chunks(r.content)
    up = gateway.one_upstream(rid)
    assert up["body"] == json.dumps(chat_body(stream=True, stream_options={"include_usage": True}))
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == up["response"]["usage"]
    assert_counts(gateway.log_entry(rid), up["response"]["usage"])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_cached_and_reasoning_tokens_are_metered(gateway, stream):
    extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    r, rid = gateway.post(CHAT, chat_body(**extra), headers={"x-sim-cached-tokens": "3",
                                                             "x-sim-reasoning-tokens": "2"})
    assert r.status_code == 200
    entry = gateway.log_entry(rid)
    assert metadata_number(entry, "llm_cached_input_token") == 3, entry
    assert metadata_number(entry, "llm_reasoning_token") == 2, entry
    assert_counts(entry, gateway.one_upstream(rid)["response"]["usage"])


def test_concurrent_streams_are_each_metered(gateway):
    results: list = [None] * 12

    def one(i: int) -> None:
        r, rid = gateway.post(CHAT, chat_body(stream=True), headers={"x-sim-tokens": str(3 + i),
                                                                        "x-sim-delay-ms": "10"})
        results[i] = (r.status_code, rid, len(sse_chunks(r.content)))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, (status, rid, n) in enumerate(results):
        assert status == 200
        assert n == 3 + i + 2  # role chunk + tokens + finish chunk
        assert metadata_number(gateway.log_entry(rid), "llm_output_token") == 3 + i


# ---- bad inputs ------------------------------------------------------------------

def test_invalid_json_is_400(gateway):
    r, rid = gateway.post(CHAT, data=b'{"model": "gpt-4o-mini", "messages": [')
    assert_openai_error(r, 400)
    assert gateway.upstream(rid) == []


def test_missing_model_is_400(gateway):
    r, rid = gateway.post(CHAT, {"messages": [{"role": "user", "content": "hi"}]})
    err = assert_openai_error(r, 400)
    assert "model" in err["message"]
    assert gateway.upstream(rid) == []


def test_non_object_body_is_400(gateway):
    r, rid = gateway.post(CHAT, data=b'["gpt-4o-mini"]')
    assert_openai_error(r, 400)
    assert gateway.upstream(rid) == []


def big_body() -> bytes:
    return json.dumps(chat_body(messages=[{"role": "user", "content": "x" * (BODY_LIMIT + 1024)}])).encode()


def test_body_over_limit_is_413(gateway):
    r, rid = gateway.post(CHAT, data=big_body())
    assert_openai_error(r, 413)
    assert gateway.upstream(rid) == []


def test_chunked_body_over_limit_is_413(gateway):
    """No content-length: the limit is enforced while buffering."""
    data = big_body()
    pieces = (data[i:i + 8192] for i in range(0, len(data), 8192))
    r = gateway.session.post(gateway.url + CHAT, data=pieces, headers={"content-type": "application/json",
                                                                         "x-request-id": "chunked-413"},
                             timeout=30)
    assert_openai_error(r, 413)
    assert gateway.upstream("chunked-413") == []


def test_body_under_limit_passes(gateway):
    body = chat_body(messages=[{"role": "user", "content": "x" * (BODY_LIMIT - 2048)}])
    r, rid = gateway.post(CHAT, body)
    assert r.status_code == 200, r.text
    assert gateway.one_upstream(rid)["body_json"] == body


def test_unknown_model_is_404_naming_it(gateway):
    r, rid = gateway.post(CHAT, chat_body("no-such-model-xyz"))
    err = assert_openai_error(r, 404)
    assert "no-such-model-xyz" in err["message"]
    assert gateway.upstream(rid) == []


def test_get_on_chat_completions_is_405(gateway):
    r = gateway.session.get(gateway.url + CHAT, timeout=10)
    assert_openai_error(r, 405)


def test_spoofed_routing_header_does_not_change_routing(gateway):
    # gpt-4o-mini is served by route `main` (backend primary); other-model by `secondary-only`.
    r, rid = gateway.post(CHAT, chat_body("gpt-4o-mini"), headers={"x-ai-eg-model": "other-model"})
    assert r.status_code == 200, r.text
    up = gateway.one_upstream(rid)
    assert up["listener"] == "primary"
    assert dict(up["headers"]).get("x-ai-eg-model") == "gpt-4o-mini"
    entry = gateway.log_entry(rid)
    assert metadata_string(entry, "route_name") == "main"
    assert metadata_string(entry, "backend_name") == "primary"


def test_spoofed_routing_header_on_unknown_model_is_still_404(gateway):
    r, rid = gateway.post(CHAT, chat_body("no-such-model"), headers={"x-ai-eg-model": "gpt-4o-mini"})
    assert_openai_error(r, 404)
    assert gateway.upstream(rid) == []


def test_client_internal_headers_are_not_trusted(gateway):
    r, rid = gateway.post(CHAT, chat_body("gpt-4o-mini"),
                          headers={"x-aigw-backend": "secondary", "x-aigw-model-override": "evil"})
    assert r.status_code == 200, r.text
    up = gateway.one_upstream(rid)
    assert up["listener"] == "primary"
    leaked = [k for k, _ in up["headers"] if k.startswith("x-aigw-")]
    assert leaked == [], f"internal headers reached the upstream: {leaked}"
    assert not [k for k in r.headers if k.lower().startswith("x-aigw-")]
    entry = gateway.log_entry(rid)
    assert metadata_string(entry, "backend_name") == "primary"
    assert metadata_string(entry, "model_name_override") is None


# ---- upstream errors, resets, gzip ------------------------------------------------

@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_upstream_error_passes_through(gateway, status):
    body = json.dumps({"error": {"message": f"upstream says {status}", "type": "x", "param": None,
                                 "code": "sim"}})
    r, rid = gateway.post(CHAT, chat_body(), headers={"x-sim-status": str(status), "x-sim-body": body})
    assert r.status_code == status
    assert r.text == body
    entry = gateway.log_entry(rid)
    assert entry["status"] == status
    assert metadata_number(entry, "llm_input_token") is None


def test_upstream_reset_mid_stream(gateway):
    r, rid = gateway.post(CHAT, chat_body(stream=True), headers={"x-sim-reset-after": "3"}, stream=True)
    assert r.status_code == 200
    with pytest.raises(requests.exceptions.RequestException):
        for _ in r.iter_content(None):
            pass
    entry = gateway.log_entry(rid)
    assert metadata_string(entry, "route_name") == "main"
    assert metadata_number(entry, "llm_input_token") is None  # no usage was seen
    assert gateway.alive()
    r2, _ = gateway.post(CHAT, chat_body())
    assert r2.status_code == 200


def test_client_reset_mid_stream_leaves_envoy_serving(gateway):
    host, port = gateway.url.removeprefix("http://").split(":")
    body = json.dumps(chat_body(stream=True)).encode()
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
              b"x-request-id: client-reset\r\nx-sim-tokens: 200\r\nx-sim-delay-ms: 20\r\n"
              b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while b"data:" not in got:
        chunk = s.recv(4096)
        assert chunk, "connection closed before the first event"
        got += chunk
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST mid-stream
    entry = gateway.log_entry("client-reset")
    assert metadata_string(entry, "route_name") == "main"
    assert gateway.alive()
    r, _ = gateway.post(CHAT, chat_body())
    assert r.status_code == 200


def test_gzip_response_is_metered(gateway):
    r, rid = gateway.post(CHAT, chat_body(), headers={"x-sim-gzip": "1"}, stream=True)
    raw = r.raw.read(decode_content=False)
    assert r.status_code == 200
    assert r.headers.get("content-encoding") == "gzip"
    doc = json.loads(gzip.decompress(raw))
    up = gateway.one_upstream(rid)
    assert doc["usage"] == up["response"]["usage"]
    assert_counts(gateway.log_entry(rid), up["response"]["usage"])


def test_gzip_stream_is_metered(gateway):
    r, rid = gateway.post(CHAT, chat_body(stream=True, stream_options={"include_usage": True}),
                          headers={"x-sim-gzip": "1"})
    assert r.status_code == 200
    chunks = sse_chunks(r.content)  # requests decodes gzip
    up = gateway.one_upstream(rid)
    assert chunks[-1]["usage"] == up["response"]["usage"]
    assert_counts(gateway.log_entry(rid), up["response"]["usage"])


# ---- /v1/models, override, weights, latencies -----------------------------------------

def test_models_list(gateway):
    r = gateway.session.get(gateway.url + "/v1/models", timeout=10)
    assert r.status_code == 200
    doc = r.json()
    assert doc["object"] == "list"
    routed = [m for route in gateway.config["routes"] for m in route["models"]]
    assert [m["id"] for m in doc["data"]] == routed
    for m in doc["data"]:
        assert m["object"] == "model"
        assert isinstance(m["created"], int)
        assert isinstance(m["owned_by"], str) and m["owned_by"]


def test_model_name_override(gateway):
    r, rid = gateway.post(CHAT, chat_body("mini-alias"))
    assert r.status_code == 200, r.text
    up = gateway.one_upstream(rid)
    assert up["listener"] == "pinned"
    assert up["body_json"]["model"] == OVERRIDE_MODEL
    assert up["body_json"]["messages"] == chat_body()["messages"]
    assert int(dict(up["headers"]).get("content-length", -1)) == len(up["body"].encode())
    entry = gateway.log_entry(rid)
    assert metadata_string(entry, "request_model") == "mini-alias"
    assert metadata_string(entry, "model_name_override") == OVERRIDE_MODEL
    assert metadata_string(entry, "backend_name") == "pinned"
    assert metadata_string(entry, "route_name") == "pinned"
    assert metadata_string(entry, "response_model") == OVERRIDE_MODEL


def test_weighted_backends_share_traffic_and_report_the_backend(gateway):
    seen = set()
    for _ in range(24):
        r, rid = gateway.post(CHAT, chat_body("split-model"))
        assert r.status_code == 200
        listener = gateway.one_upstream(rid)["listener"]
        seen.add(listener)
        assert metadata_string(gateway.log_entry(rid), "backend_name") == listener
    assert seen == {"primary", "secondary"}


def test_token_latencies_for_streams(gateway):
    r, rid = gateway.post(CHAT, chat_body(stream=True), headers={"x-sim-tokens": "6", "x-sim-delay-ms": "25"})
    assert r.status_code == 200
    entry = gateway.log_entry(rid)
    ttft = metadata_number(entry, "token_latency_ttft")
    itl = metadata_number(entry, "token_latency_itl")
    assert ttft is not None and 0 < ttft < 10_000, entry
    # Events are 25 ms apart; the inter-token latency must reflect it.
    assert itl is not None and 10 <= itl < 1_000, entry


def test_metadata_value_types_per_build(gateway):
    """What each build writes, before the log reader normalizes it. Native: dynamic
    metadata, numbers as JSON numbers. wasm: filter state (proxy-wasm cannot write
    metadata), every value as text, numbers in decimal."""
    r, rid = gateway.post(CHAT, chat_body(stream=True), headers={"x-sim-tokens": "4", "x-sim-delay-ms": "5"})
    assert r.status_code == 200
    raw = gateway.log_entry(rid, raw=True)
    usage = gateway.one_upstream(rid)["response"]["usage"]
    counts = {"llm_input_token": usage["prompt_tokens"], "llm_output_token": usage["completion_tokens"],
              "llm_total_token": usage["total_tokens"]}
    if gateway.build == "native":
        for key, want in counts.items():
            assert type(raw[key]) in (int, float) and raw[key] == want, raw
        assert isinstance(raw["token_latency_ttft"], (int, float)), raw
    else:
        for key, want in counts.items():
            assert raw[key] == str(want), raw
        assert isinstance(raw["token_latency_ttft"], str) and float(raw["token_latency_ttft"]) > 0, raw
    assert raw["route_name"] == "main" and raw["backend_name"] == "primary"


def test_no_token_latencies_without_stream(gateway):
    r, rid = gateway.post(CHAT, chat_body())
    assert r.status_code == 200
    entry = gateway.log_entry(rid)
    assert metadata_number(entry, "token_latency_ttft") is None
    assert metadata_number(entry, "llm_cel_cost") == (
        metadata_number(entry, "llm_input_token") * 3 + metadata_number(entry, "llm_output_token") * 15)


def test_non_ai_path_passes_through(gateway):
    r = gateway.session.get(gateway.url + "/healthz", headers={"x-request-id": "plain-path"}, timeout=10)
    # The simulator answers unknown GETs with its own 405/404; the gateway does not interfere.
    assert r.status_code in (404, 405)
    assert "simulator" in r.json()["error"]["message"]
    up = gateway.one_upstream("plain-path")
    assert up["listener"] == "default"
    entry = gateway.log_entry("plain-path")
    assert metadata_string(entry, "route_name") is None
