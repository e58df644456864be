"""Per-route rate limits (`routes[].rateLimit`), enforced by the router-level filter in a
real Envoy: requests per minute, tokens per minute (from the usage the provider
reported) and requests in flight, each answered with an OpenAI-style 429 that reaches
no provider, while other routes are not limited.

The limits hold for the Envoy process in both builds (the wasm VMs, one per worker,
count in the host's shared data): the requests of a test use a new connection each,
so Envoy's two workers share them. The windows are minutes of the gateway's clock: a
test whose requests straddle a minute's end would see the counts restart."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import requests

from conftest import running_gateway

CONFIG = {
    "version": "v1",
    "backends": [{"name": "sim", "schema": {"name": "OpenAI"}}],
    "routes": [
        {"name": "rpm", "models": ["rpm-model"], "backends": [{"name": "sim"}],
         "rateLimit": {"requestsPerMinute": 3}},
        {"name": "tpm", "models": ["tpm-model"], "backends": [{"name": "sim"}],
         "rateLimit": {"tokensPerMinute": 10}},
        {"name": "one-at-a-time", "models": ["slow-model"], "backends": [{"name": "sim"}],
         "rateLimit": {"concurrency": 1}},
        {"name": "free", "models": ["free-model"], "backends": [{"name": "sim"}]},
    ],
}


@pytest.fixture(scope="module")
def limited(workdir, build):
    with running_gateway(CONFIG, ["sim"], workdir / f"rate-limits-{build}", build) as gw:
        yield gw


def chat(gw, model: str, headers: dict | None = None, stream: bool = False):
    """One request on a connection of its own (any worker may take it)."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    rid = str(uuid.uuid4())
    h = {"x-request-id": rid, "content-type": "application/json", "connection": "close", **(headers or {})}
    return requests.post(gw.url + "/v1/chat/completions", data=json.dumps(body), headers=h, timeout=30), rid


def test_requests_per_minute(limited):
    gw = limited
    refused_before = gw.counter("aigw_rate_limited")
    answers = [chat(gw, "rpm-model") for _ in range(4)]
    assert [r.status_code for r, _ in answers] == [200, 200, 200, 429], [r.text for r, _ in answers]
    r, rid = answers[-1]
    error = r.json()["error"]
    assert (error["code"], error["type"]) == ("rate_limit_exceeded", "requests")
    assert "requests per minute on this model's route (limit 3)" in error["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert gw.upstream(rid) == []
    assert gw.log_entry(rid)["status"] == 429
    assert gw.counter("aigw_rate_limited") == refused_before + 1
    assert chat(gw, "free-model")[0].status_code == 200


def test_tokens_per_minute_count_what_the_provider_reported(limited):
    """The simulator's answers take 5 to 9 tokens (6 here): the first two are admitted
    (none counted yet, then one answer's), the third is refused (two answers' worth);
    a streamed answer's usage counts as well."""
    gw = limited
    r, rid = chat(gw, "tpm-model", stream=True)
    assert r.status_code == 200
    usage = gw.upstream(rid)[0]["response"]["usage"]
    assert usage["total_tokens"] < 10 <= 2 * usage["total_tokens"], usage
    assert chat(gw, "tpm-model")[0].status_code == 200
    r, rid = chat(gw, "tpm-model")
    assert r.status_code == 429, r.text
    assert r.json()["error"]["type"] == "tokens"
    assert gw.upstream(rid) == []


def test_concurrency(limited):
    """While a slow stream is in flight, a second request on its route is refused;
    once the stream has ended, requests are admitted again."""
    import openai

    gw = limited
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client", max_retries=0, timeout=30)
    started = threading.Event()
    done = {}

    def slow():
        stream = c.chat.completions.create(model="slow-model", stream=True,
                                           messages=[{"role": "user", "content": "take your time"}],
                                           extra_headers={"x-sim-delay-ms": "300", "x-sim-tokens": "8"})
        for _ in stream:
            started.set()
        done["ok"] = True

    t = threading.Thread(target=slow)
    t.start()
    assert started.wait(10), "the slow stream never started"
    r, rid = chat(gw, "slow-model")
    assert r.status_code == 429, r.text
    assert "concurrent requests on this model's route (limit 1)" in r.json()["error"]["message"]
    t.join(30)
    assert done.get("ok")
    deadline = time.monotonic() + 5
    while (r := chat(gw, "slow-model")[0]).status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.05)  # the stream's end reaches the filter just after the client's
    assert r.status_code == 200, r.text


def test_anthropic_clients_get_their_schema(limited):
    gw = limited
    rid = str(uuid.uuid4())
    for _ in range(4):
        r, rid = gw.post("/anthropic/v1/messages", {"model": "rpm-model", "max_tokens": 16,
                                                    "messages": [{"role": "user", "content": "hi"}]})
        if r.status_code == 429:
            break
    assert r.status_code == 429
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "rate_limit_error"
