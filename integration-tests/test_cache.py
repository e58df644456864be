"""The exact-match answer cache (`routes[].cache`) in a real Envoy: the second identical
non-streamed request is answered by the gateway with the first answer (`x-cache: HIT`)
and reaches no provider; a different body, a stream, another route or an expired entry
goes to the provider; where the client's own key reaches the provider, answers are kept
per key. The requests share one client connection (one Envoy worker: the wasm build
keeps a cache per worker)."""

from __future__ import annotations

import time
import uuid

import pytest

from conftest import metadata_string, running_gateway

CONFIG = {
    "version": "v1",
    "backends": [
        {"name": "sim", "schema": {"name": "OpenAI"}},
        {"name": "byok", "schema": {"name": "OpenAI"}, "forwardClientCredentials": True},
    ],
    "routes": [
        {"name": "cached", "models": ["cached-model"], "backends": [{"name": "sim"}], "cache": {"ttlSeconds": 2}},
        {"name": "own-keys", "models": ["byok-model"], "backends": [{"name": "byok"}], "cache": {"ttlSeconds": 60}},
        {"name": "uncached", "models": ["plain-model"], "backends": [{"name": "sim"}]},
    ],
}


@pytest.fixture(scope="module")
def cached(workdir, build):
    with running_gateway(CONFIG, ["sim"], workdir / f"cache-{build}", build) as gw:
        yield gw


def client(gw, key: str = "sk-client"):
    import openai

    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=30)


def ask(c, model: str, text: str, **kw):
    rid = str(uuid.uuid4())
    raw = c.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], extra_headers={"x-request-id": rid}, **kw)
    return raw, rid


def test_second_identical_request_is_answered_by_the_gateway(cached):
    gw = cached
    c = client(gw)
    question = f"what is {uuid.uuid4()}?"
    first, rid1 = ask(c, "cached-model", question)
    assert first.headers.get("x-cache") == "MISS"
    assert len(gw.upstream(rid1)) == 1
    hits = gw.counter("aigw_cache_hits")
    second, rid2 = ask(c, "cached-model", question)
    assert second.headers.get("x-cache") == "HIT"
    assert gw.counter("aigw_cache_hits") == hits + 1
    assert gw.upstream(rid2) == []
    a, b = first.parse(), second.parse()
    assert (b.id, b.choices[0].message.content, b.usage) == (a.id, a.choices[0].message.content, a.usage)
    entry = gw.log_entry(rid2)
    assert entry["status"] == 200
    assert metadata_string(entry, "cache") == "hit"
    assert metadata_string(gw.log_entry(rid1), "cache") == "miss"

    # Another question, the uncached route, a stream: all go to the provider.
    other, rid = ask(c, "cached-model", question + " again")
    assert other.headers.get("x-cache") == "MISS" and len(gw.upstream(rid)) == 1
    for _ in range(2):
        plain, rid = ask(c, "plain-model", question)
        assert "x-cache" not in plain.headers and len(gw.upstream(rid)) == 1
    rid = str(uuid.uuid4())
    chunks = list(c.chat.completions.create(model="cached-model", stream=True,
                                            messages=[{"role": "user", "content": question}],
                                            extra_headers={"x-request-id": rid}))
    assert chunks and len(gw.upstream(rid)) == 1

    # Past the TTL (2 s) the provider answers again.
    time.sleep(2.2)
    again, rid = ask(c, "cached-model", question)
    assert again.headers.get("x-cache") == "MISS" and len(gw.upstream(rid)) == 1


def test_answers_are_per_key_where_the_clients_key_reaches_the_provider(cached):
    gw = cached
    question = f"mine {uuid.uuid4()}"
    # One connection per client: the same worker (and wasm VM) for each one's requests.
    alice, bob = client(gw, "sk-alice"), client(gw, "sk-bob")
    _, rid = ask(alice, "byok-model", question)
    assert len(gw.upstream(rid)) == 1
    raw, rid = ask(bob, "byok-model", question)
    assert raw.headers.get("x-cache") == "MISS" and len(gw.upstream(rid)) == 1
    raw, rid = ask(alice, "byok-model", question)
    assert raw.headers.get("x-cache") == "HIT" and gw.upstream(rid) == []
