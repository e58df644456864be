"""OpenAI's Responses API (`/v1/responses`) through the gateway with the official
`openai` SDK: to OpenAI and Azure OpenAI backends as the client sent it, metered from
the answer's usage; to backends of other schemas a 422 that says why, before any
provider is called."""

from __future__ import annotations

import uuid

import openai
import pytest

from conftest import API_KEYS, metadata_number


def rid_headers(**extra: str) -> tuple[str, dict]:
    rid = str(uuid.uuid4())
    return rid, {"x-request-id": rid, **extra}


def test_responses(gateway, openai_client):
    rid, h = rid_headers()
    resp = openai_client.responses.create(model="gpt-4o-mini", input="hello there", instructions="be brief",
                                          extra_headers=h)
    up = gateway.one_upstream(rid)
    sent = up["response"]["usage"]
    assert (up["listener"], up["path"]) == ("primary", "/v1/responses")
    assert up["body_json"]["input"] == "hello there" and "stream_options" not in up["body_json"]
    assert resp.output_text.startswith("Hello from primary")
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens) == (
        sent["input_tokens"], sent["output_tokens"], sent["total_tokens"])
    entry = gateway.log_entry(rid)
    assert metadata_number(entry, "llm_input_token") == sent["input_tokens"]
    assert metadata_number(entry, "llm_output_token") == sent["output_tokens"]
    assert metadata_number(entry, "llm_total_token") == sent["total_tokens"]


def test_responses_stream(gateway, openai_client):
    rid, h = rid_headers(**{"x-sim-tokens": "6"})
    stream = openai_client.responses.create(
        model="gpt-4o-mini",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "count to six"}]}],
        stream=True, extra_headers=h)
    kinds, text, completed = [], "", None
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.completed":
            completed = event.response
    up = gateway.one_upstream(rid)
    sent = up["response"]["usage"]
    # The gateway adds nothing to the request (no stream_options: the API refuses it).
    assert "stream_options" not in up["body_json"]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert text == up["sent_text"] and text.startswith("Hello from primary")
    assert completed is not None and completed.output_text == text
    assert completed.usage.output_tokens == sent["output_tokens"]
    entry = gateway.log_entry(rid)
    assert metadata_number(entry, "llm_output_token") == sent["output_tokens"]
    assert metadata_number(entry, "llm_input_token") == sent["input_tokens"]


def test_responses_to_azure_take_the_v1_path(gateway, openai_client):
    rid, h = rid_headers()
    resp = openai_client.responses.create(model="azure-gpt-4o", input="hello", extra_headers=h)
    up = gateway.one_upstream(rid)
    assert up["path"] == "/openai/v1/responses" and up["checks"] == []
    headers = {k.lower(): v for k, v in up["headers"]}
    assert headers["api-key"] == API_KEYS["azure"] and "authorization" not in headers
    assert up["body_json"]["model"] == "azure-gpt-4o"
    assert resp.usage.total_tokens == up["response"]["usage"]["total_tokens"]


@pytest.mark.parametrize("model", ["claude-3-5-sonnet", "claude-bedrock-converse", "gemini-2.0-flash",
                                   "mistral-small-latest"])
def test_responses_to_other_schemas_are_refused_before_the_provider(gateway, openai_client, model):
    rid, h = rid_headers()
    with pytest.raises(openai.UnprocessableEntityError) as e:
        openai_client.responses.create(model=model, input="hello", extra_headers=h)
    assert e.value.status_code == 422
    assert e.value.code == "unsupported_by_provider"
    assert "Responses API" in e.value.message
    assert gateway.upstream(rid) == []
