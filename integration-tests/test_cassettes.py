"""Recorded OpenAI interactions replayed through Envoy and the filter.

Where no translation applies, the client must get exactly what the provider sent,
and the access log must carry the token counts of the recorded `usage`.
"""

from __future__ import annotations

import json

import pytest

from conftest import CASSETTE_LIST, CASSETTES, Cassette, metadata_number, metadata_string, sse_chunks, sse_events

if not CASSETTE_LIST:
    pytest.skip(f"no cassettes found in {CASSETTES}", allow_module_level=True)


def expected_counts(usage: dict) -> dict[str, int]:
    prompt = usage.get("prompt_tokens", 0)
    completion = usage.get("completion_tokens", 0)
    return {
        "llm_input_token": prompt,
        "llm_output_token": completion,
        "llm_total_token": usage.get("total_tokens", prompt + completion),
        "llm_cached_input_token": (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
        "llm_reasoning_token": (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0),
        "llm_cel_cost": prompt * 3 + completion * 15,
    }


@pytest.mark.cassette
@pytest.mark.parametrize("cassette", CASSETTE_LIST, ids=[c.name for c in CASSETTE_LIST])
def test_replay(gateway, cassette: Cassette):
    r, rid = gateway.post(cassette.path, data=cassette.request_body, headers={"x-sim-cassette": cassette.name})
    assert r.status_code == cassette.status, r.text
    assert r.headers.get("content-type", "").split(";")[0] == cassette.content_type.split(";")[0]
    if cassette.is_sse:
        assert sse_events(r.content) == sse_events(cassette.body)
    else:
        assert r.content == cassette.body

    # The request reached the backend of its route, unchanged but for usage injection.
    up = gateway.one_upstream(rid)
    assert up["listener"] == "primary"
    sent = dict(cassette.request_json)
    got = up["body_json"]
    if cassette.request_json.get("stream") is True and not (sent.get("stream_options") or {}).get("include_usage"):
        # Costs are configured: the gateway asked for the usage chunk.
        assert got["stream_options"]["include_usage"] is True
        got = {k: v for k, v in got.items() if k != "stream_options"}
        sent.pop("stream_options", None)
        assert got == sent
    else:
        assert up["body"].encode() == cassette.request_body, "request body changed on the way"

    entry = gateway.log_entry(rid)
    assert entry["status"] == cassette.status
    assert metadata_string(entry, "request_model") == cassette.model
    assert metadata_string(entry, "route_name") == "main"
    assert metadata_string(entry, "backend_name") == "primary"
    usage = cassette.usage() if cassette.status == 200 else None
    if usage is None:
        for key in expected_counts({}):
            assert metadata_number(entry, key) is None, f"{key} written without usage: {entry}"
        return
    for key, want in expected_counts(usage).items():
        assert metadata_number(entry, key) == want, f"{key}: {entry}"
    model = (json.loads(cassette.body) if not cassette.is_sse else sse_chunks(cassette.body)[0]).get("model")
    assert metadata_string(entry, "response_model") == model
