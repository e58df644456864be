"""Rerank, Anthropic's token counting and a route's passthrough of other APIs, through
a real Envoy with the official SDKs (`cohere`, `anthropic`, `openai`; raw HTTP where
there is none): what the provider receives (paths, credentials, bodies, checked by the
simulator), what the client gets, and what is metered."""

from __future__ import annotations

import json

import anthropic
import cohere
import pytest
import requests

from conftest import API_KEYS, checked, metadata_number, metadata_string, rid_headers

DOCUMENTS = ["the cat sat on the mat", "stock prices rose today", "a cat and a dog"]






def headers_of(up: dict) -> dict:
    return {k.lower(): v for k, v in up["headers"]}


@pytest.fixture(scope="module")
def cohere_client(gateway):
    return cohere.ClientV2(api_key="client-key-not-a-secret", base_url=gateway.url, timeout=30)


# ---- rerank -------------------------------------------------------------------------

def test_rerank_with_the_cohere_sdk_reaches_cohere_with_the_gateways_key(gateway, cohere_client):
    rid, h = rid_headers()
    resp = cohere_client.rerank(model="rerank-v3.5", query="where is the cat", documents=DOCUMENTS, top_n=2,
                                request_options={"additional_headers": h})
    up = checked(gateway, rid)
    assert (up["listener"], up["path"]) == ("cohere", "/v2/rerank")
    assert headers_of(up)["authorization"] == f"Bearer {API_KEYS['cohere']}"
    assert [r.index for r in resp.results] == up["sent_ranking"]
    assert len(resp.results) == 2 and resp.results[0].relevance_score >= resp.results[1].relevance_score
    entry = gateway.log_entry(rid)
    assert metadata_string(entry, "route_name") == "p-cohere"
    assert metadata_number(entry, "llm_input_token") == up["response"]["usage"]["input_tokens"]


def test_rerank_to_an_openai_compatible_server_keeps_the_body(gateway):
    rid, h = rid_headers()
    body = {"model": "bge-reranker-v2-m3", "query": "cat", "documents": DOCUMENTS}
    r = requests.post(f"{gateway.url}/v1/rerank", json=body, headers=h, timeout=30)
    assert r.status_code == 200, r.text
    up = checked(gateway, rid)
    assert (up["listener"], up["path"]) == ("compat", "/api/v1/rerank")
    sent = json.loads(up["body"])
    assert sent["documents"] == DOCUMENTS and sent["query"] == "cat"
    assert [x["index"] for x in r.json()["results"]] == up["sent_ranking"]
    assert metadata_number(gateway.log_entry(rid), "llm_total_token") == up["response"]["usage"]["total_tokens"]


def test_rerank_to_a_chat_only_provider_is_refused_before_it(gateway):
    rid, h = rid_headers()
    body = {"model": "claude-3-5-sonnet", "query": "cat", "documents": DOCUMENTS}
    r = requests.post(f"{gateway.url}/v1/rerank", json=body, headers=h, timeout=30)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "unsupported_by_provider"
    assert gateway.upstream(rid) == []


# ---- count_tokens -------------------------------------------------------------------

@pytest.mark.parametrize("model,listener,path", [
    ("claude-3-5-sonnet", "anthropic", "/v1/messages/count_tokens"),
    ("claude-vertex", "vertex-claude",
     "/v1/projects/aigw-test/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict"),
    ("claude-bedrock", "bedrock-claude", "/model/anthropic.claude-3-haiku-20240307-v1%3A0/count-tokens"),
])
def test_count_tokens_on_every_anthropic_flavor(gateway, anthropic_client, model, listener, path):
    rid, h = rid_headers()
    resp = anthropic_client.messages.count_tokens(
        model=model, system="answer in one word",
        messages=[{"role": "user", "content": "how many tokens is this prompt"}],
        tools=[{"name": "lookup", "description": "look up", "input_schema": {"type": "object"}}],
        extra_headers=h)
    up = checked(gateway, rid)
    assert (up["listener"], up["path"]) == (listener, path)
    assert resp.input_tokens == up["sent_count"]
    entry = gateway.log_entry(rid)
    # A count generates nothing: no tokens metered, nothing charged.
    assert metadata_number(entry, "llm_input_token") is None
    assert metadata_number(entry, "llm_cost") in (None, 0)


def test_count_tokens_to_an_openai_backend_is_refused_in_anthropics_schema(gateway, anthropic_client):
    rid, h = rid_headers()
    with pytest.raises(anthropic.UnprocessableEntityError) as e:
        anthropic_client.messages.count_tokens(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                               extra_headers=h)
    assert e.value.body["type"] == "error"
    assert gateway.upstream(rid) == []


# ---- passthrough --------------------------------------------------------------------

def test_the_files_api_passes_through_with_the_backends_credentials(gateway, openai_client):
    data = b"{\"custom_id\": \"1\"}\n" * 50
    rid, h = rid_headers()
    created = openai_client.files.create(file=("batch.jsonl", data, "application/jsonl"), purpose="batch",
                                         extra_headers=h)
    up = checked(gateway, rid)
    assert (up["listener"], up["path"]) == ("compat", "/api/v1/files")
    sent = headers_of(up)
    # The client's key never reaches the provider; the backend's does, with its mutation.
    assert sent["authorization"] == f"Bearer {API_KEYS['compat']}"
    assert sent["x-tenant"] == "blue"
    assert up["uploaded"] == {"filename": "batch.jsonl", "bytes": len(data)}
    assert created.bytes == len(data)
    assert metadata_string(gateway.log_entry(rid), "route_name") == "p-compat"

    rid, h = rid_headers()
    listed = openai_client.files.list(extra_headers=h)
    assert created.id in [f.id for f in listed.data]
    assert checked(gateway, rid)["method"] == "GET"

    rid, h = rid_headers()
    got = openai_client.files.retrieve(created.id, extra_headers=h)
    assert got.filename == "batch.jsonl"
    assert checked(gateway, rid)["path"] == f"/api/v1/files/{created.id}"

    rid, h = rid_headers()
    assert openai_client.files.delete(created.id, extra_headers=h).deleted
    assert checked(gateway, rid)["method"] == "DELETE"


def test_a_passthrough_answer_with_usage_is_metered(gateway):
    rid, h = rid_headers()
    body = {"model": "codestral-latest", "prompt": "def add(a, b):", "suffix": "print(add(1, 2))"}
    r = requests.post(f"{gateway.url}/v1/fim/completions", json=body, headers=h, timeout=30)
    assert r.status_code == 200, r.text
    up = checked(gateway, rid)
    assert up["path"] == "/api/v1/fim/completions"
    # Passed as sent: the backend's body mutation is for the APIs the gateway knows.
    assert json.loads(up["body"]) == body
    usage = up["response"]["usage"]
    assert r.json()["usage"] == usage
    entry = gateway.log_entry(rid)
    assert metadata_number(entry, "llm_input_token") == usage["prompt_tokens"]
    assert metadata_number(entry, "llm_output_token") == usage["completion_tokens"]


def test_paths_no_route_passes_go_on_untouched(gateway):
    for path in ("/v1/batches", "/v1/filesystem"):
        rid, h = rid_headers()
        h["authorization"] = "Bearer the-clients-own"
        r = requests.post(f"{gateway.url}{path}", json={"x": 1}, headers=h, timeout=30)
        # Envoy's catch-all route, as before: here the simulator's 404 for a path it
        # does not serve, with the client's request as it was sent.
        assert r.status_code == 404, (path, r.text)
        up = gateway.one_upstream(rid)
        assert (up["listener"], up["path"]) == ("default", path)
        assert headers_of(up)["authorization"] == "Bearer the-clients-own"
    # Uploads past the body limit are refused, not cut.
    big = b"x" * (3 * 1024 * 1024)
    r = requests.post(f"{gateway.url}/v1/files", files={"file": ("big.bin", big)}, data={"purpose": "batch"},
                      timeout=30)
    assert r.status_code == 413
