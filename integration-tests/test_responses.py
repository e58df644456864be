"""OpenAI's Responses API (`/v1/responses`) through the gateway with the official
`openai` SDK: to OpenAI and Azure OpenAI backends as the client sent it, to every
other backend schema translated through the hub (text, streams in OpenAI's event
order, function calls and their results), metered from the answer's usage; stateful
requests to a translated backend get a 422 that says why, before any provider is
called."""

from __future__ import annotations

import json

import openai
import pytest

from conftest import API_KEYS, metadata_number, rid_headers
from test_providers import route, sent_counts




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


# Through the hub: one model per backend schema that does not speak the Responses API.
TRANSLATED = ["claude-3-5-sonnet", "claude-vertex", "claude-bedrock", "claude-bedrock-converse",
              "gemini-2.0-flash", "gemini-2.0-flash-001", "mistral-small-latest"]
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def usage_of(gateway, rid: str) -> tuple[dict, tuple[int, int]]:
    rec = gateway.one_upstream(rid)
    assert rec["checks"] == [], rec["checks"]
    return rec, sent_counts(rec)


@pytest.mark.parametrize("model", TRANSLATED)
def test_responses_translated(gateway, openai_client, model):
    rid, h = rid_headers()
    resp = openai_client.responses.create(model=model, input="hello there", instructions="be brief",
                                          max_output_tokens=100, extra_headers=h)
    rec, (prompt, completion) = usage_of(gateway, rid)
    assert rec["listener"] == route(model)[0]
    assert resp.object == "response" and resp.status == "completed" and resp.model == model
    assert resp.output_text == rec["sent_text"]
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (prompt, completion)
    assert resp.usage.total_tokens == prompt + completion
    entry = gateway.log_entry(rid)
    assert metadata_number(entry, "llm_input_token") == prompt
    assert metadata_number(entry, "llm_output_token") == completion


@pytest.mark.parametrize("model", TRANSLATED)
def test_responses_translated_stream(gateway, openai_client, model):
    rid, h = rid_headers(**{"x-sim-tokens": "6"})
    kinds, text, completed, seqs = [], "", None, []
    for event in openai_client.responses.create(model=model, input="hello", stream=True, extra_headers=h):
        kinds.append(event.type)
        seqs.append(event.sequence_number)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.completed":
            completed = event.response
    rec, (prompt, completion) = usage_of(gateway, rid)
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert seqs == list(range(len(seqs)))
    assert text == rec["sent_text"] and completed.output_text == text
    assert (completed.usage.input_tokens, completed.usage.output_tokens) == (prompt, completion)
    assert metadata_number(gateway.log_entry(rid), "llm_output_token") == completion


@pytest.mark.parametrize("model", ["claude-3-5-sonnet", "claude-bedrock-converse", "gemini-2.0-flash"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_responses_function_calls_round_trip(gateway, openai_client, model, stream):
    rid, h = rid_headers(**{"x-sim-tool-call": "get_weather"})
    kw = dict(model=model, input="Weather in Paris?", tools=[WEATHER], extra_headers=h)
    if stream:
        args, call = "", None
        for event in openai_client.responses.create(stream=True, **kw):
            if event.type == "response.function_call_arguments.delta":
                args += event.delta
            if event.type == "response.output_item.done" and event.item.type == "function_call":
                call = event.item
        assert call is not None and call.arguments == args
    else:
        resp = openai_client.responses.create(**kw)
        call = next(o for o in resp.output if o.type == "function_call")
    rec = gateway.one_upstream(rid)
    assert rec["checks"] == [], rec["checks"]
    expected = rec["sent_tool_calls"][0]["arguments"]
    assert call.name == "get_weather" and call.call_id
    assert json.loads(call.arguments) == (json.loads(expected) if isinstance(expected, str) else expected)
    # The result goes back as a function_call_output; the provider gets a tool turn.
    rid2, h2 = rid_headers()
    resp2 = openai_client.responses.create(
        model=model, tools=[WEATHER], extra_headers=h2,
        input=[{"role": "user", "content": "Weather in Paris?"},
               {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
               {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}])
    rec2 = gateway.one_upstream(rid2)
    assert rec2["checks"] == [], rec2["checks"]
    assert "sunny, 21 C" in json.dumps(rec2["body_json"])
    assert resp2.output_text == rec2["sent_text"]


@pytest.mark.parametrize("field,value", [("previous_response_id", "resp_123"), ("store", True)])
def test_stateful_responses_to_other_schemas_are_refused_before_the_provider(gateway, openai_client,
                                                                                field, value):
    rid, h = rid_headers()
    with pytest.raises(openai.UnprocessableEntityError) as e:
        openai_client.responses.create(model="claude-3-5-sonnet", input="hello", extra_headers=h,
                                       **{field: value})
    assert e.value.status_code == 422
    assert e.value.code == "unsupported_by_provider"
    assert field in e.value.message
    assert gateway.upstream(rid) == []
