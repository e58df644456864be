"""Every provider behind one API: the official `openai` and `anthropic` SDKs through a
real Envoy with the filter, against the simulator speaking each provider's own wire
format (Bedrock Converse and InvokeModel with SigV4 and binary event streams,
Anthropic native and on Vertex, Gemini on AI Studio and Vertex, Azure OpenAI, Mistral,
an OpenAI-compatible server). The simulator checks what it receives (path, host,
auth, SigV4 recomputed with botocore, body shape) and records what it sent, so every
assertion compares what the client parsed with what the provider said."""

from __future__ import annotations

import json
import uuid

import anthropic
import openai
import pytest

from conftest import (API_KEYS, BEDROCK_CLAUDE_MODEL, BEDROCK_MODEL, EMBEDDING_ROUTES, GCP_TOKEN,
                      PROVIDER_ROUTES, TITAN_MODEL, VERTEX_CLAUDE_MODEL, metadata_number,
                      metadata_string)

PROVIDER_IDS = [m for m, _, _ in PROVIDER_ROUTES]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
]


def new_id() -> tuple[str, dict]:
    rid = str(uuid.uuid4())
    return rid, {"x-request-id": rid}


def header(rec: dict, name: str) -> str | None:
    for k, v in rec["headers"]:
        if k == name:
            return v
    return None


def sent_counts(rec: dict) -> tuple[int, int]:
    """(all input tokens, output tokens) of what the provider reported, in OpenAI's
    sense: input counts cache reads and writes."""
    u = rec["sent_usage"]
    fam = rec["provider"]
    if fam in ("openai", "azure-openai"):
        return u["prompt_tokens"], u["completion_tokens"]
    if fam in ("anthropic", "vertex-anthropic", "bedrock-anthropic"):
        return (u["input_tokens"] + u.get("cache_read_input_tokens", 0)
                + u.get("cache_creation_input_tokens", 0), u["output_tokens"])
    if fam == "bedrock-converse":
        return (u["inputTokens"] + u.get("cacheReadInputTokens", 0)
                + u.get("cacheWriteInputTokens", 0), u["outputTokens"])
    if fam in ("gemini", "vertex-gemini"):
        return u["promptTokenCount"], u.get("candidatesTokenCount", 0) + u.get("thoughtsTokenCount", 0)
    raise AssertionError(f"no usage rule for {fam}")


def route(model: str) -> tuple[str, str]:
    for m, backend, fam in PROVIDER_ROUTES + EMBEDDING_ROUTES:
        if m == model:
            return backend, fam
    raise KeyError(model)


def one(gateway, rid: str, backend: str, family: str) -> dict:
    rec = gateway.one_upstream(rid)
    assert rec["listener"] == backend
    assert rec["provider"] == family
    assert rec["checks"] == [], rec["checks"]
    return rec


@pytest.mark.parametrize("model", PROVIDER_IDS)
def test_chat(gateway, openai_client, model):
    backend, fam = route(model)
    rid, h = new_id()
    resp = openai_client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=100,
                                                 extra_headers={**h, "x-sim-cached-tokens": "2"})
    rec = one(gateway, rid, backend, fam)
    prompt, completion = sent_counts(rec)
    assert resp.object == "chat.completion"
    assert resp.model == model
    assert resp.choices[0].message.content == rec["sent_text"]
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (prompt, completion)
    assert resp.usage.total_tokens == prompt + completion
    assert resp.usage.prompt_tokens_details.cached_tokens == 2
    entry = gateway.log_entry(rid)
    assert metadata_string(entry, "backend_name") == backend
    assert metadata_number(entry, "llm_input_token") == prompt
    assert metadata_number(entry, "llm_output_token") == completion
    assert metadata_number(entry, "llm_cached_input_token") == 2


@pytest.mark.parametrize("model", PROVIDER_IDS)
def test_chat_stream(gateway, openai_client, model):
    backend, fam = route(model)
    rid, h = new_id()
    stream = openai_client.chat.completions.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True},
        extra_headers={**h, "x-sim-tokens": "6"})
    text, usage, finish, roles = "", None, None, []
    for chunk in stream:
        if chunk.choices:  # Azure opens with a choice-less prompt-filter chunk
            assert chunk.object == "chat.completion.chunk"
            d = chunk.choices[0].delta
            text += d.content or ""
            roles += [d.role] if d.role else []
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    rec = one(gateway, rid, backend, fam)
    assert text == rec["sent_text"] and text.count("word") == 5
    assert roles == ["assistant"]
    assert finish == "stop"
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == sent_counts(rec)
    assert metadata_number(gateway.log_entry(rid), "llm_total_token") == sum(sent_counts(rec))


@pytest.mark.parametrize("model", ["claude-bedrock-converse", "claude-3-5-sonnet", "gemini-2.0-flash-001"])
def test_stream_without_usage_option_is_metered_silently(gateway, openai_client, model):
    rid, h = new_id()
    chunks = list(openai_client.chat.completions.create(model=model, messages=MESSAGES, stream=True,
                                                        extra_headers=h))
    assert chunks and all(c.usage is None for c in chunks)
    rec = gateway.one_upstream(rid)
    assert metadata_number(gateway.log_entry(rid), "llm_output_token") == sent_counts(rec)[1]


@pytest.mark.parametrize("model", PROVIDER_IDS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_tool_calls(gateway, openai_client, model, stream):
    backend, fam = route(model)
    rid, h = new_id()
    kw = dict(model=model, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL],
              tool_choice="auto", extra_headers={**h, "x-sim-tool-call": "get_weather"})
    if stream:
        calls: dict[int, dict] = {}
        finish = None
        for chunk in openai_client.chat.completions.create(stream=True, **kw):
            for c in chunk.choices:
                finish = c.finish_reason or finish
                for tc in c.delta.tool_calls or []:
                    slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                    slot["id"] = slot["id"] or tc.id
                    slot["name"] = slot["name"] or tc.function.name
                    slot["arguments"] += tc.function.arguments or ""
        got = [calls[i] for i in sorted(calls)]
    else:
        resp = openai_client.chat.completions.create(**kw)
        finish = resp.choices[0].finish_reason
        got = [{"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
               for t in resp.choices[0].message.tool_calls]
    rec = one(gateway, rid, backend, fam)
    assert finish == "tool_calls"
    assert [g["name"] for g in got] == ["get_weather"]
    assert got[0]["id"]
    expected_args = rec["sent_tool_calls"][0]["arguments"]
    if isinstance(expected_args, str):
        expected_args = json.loads(expected_args)
    assert json.loads(got[0]["arguments"]) == expected_args


def test_tool_results_round_trip(gateway, openai_client):
    """A conversation with a tool call and its result reaches Bedrock as toolUse and
    toolResult blocks, and the answer comes back."""
    rid, h = new_id()
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
    ]
    resp = openai_client.chat.completions.create(model="claude-bedrock-converse", messages=messages,
                                                 tools=[WEATHER_TOOL], extra_headers=h)
    rec = one(gateway, rid, "bedrock", "bedrock-converse")
    body = rec["body_json"]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"][0]["toolUse"]["input"] == {"city": "Paris"}
    assert body["messages"][2]["content"][0]["toolResult"]["toolUseId"] == "call_1"
    assert resp.choices[0].message.content == rec["sent_text"]


def test_requests_reach_each_provider_as_it_expects(gateway, openai_client):
    """Path, host and credentials per provider; the client's own key never leaves."""
    expect = {
        "claude-bedrock-converse": ("bedrock-runtime.us-east-1.amazonaws.com",
                                    f"/model/{BEDROCK_MODEL.replace(':', '%3A')}/converse"),
        "claude-bedrock": ("bedrock-runtime.us-west-2.amazonaws.com",
                           f"/model/{BEDROCK_CLAUDE_MODEL.replace(':', '%3A')}/invoke"),
        "claude-3-5-sonnet": ("api.anthropic.com", "/v1/messages"),
        "claude-vertex": ("us-east5-aiplatform.googleapis.com",
                          f"/v1/projects/aigw-test/locations/us-east5/publishers/anthropic/models/"
                          f"{VERTEX_CLAUDE_MODEL}:rawPredict"),
        "gemini-2.0-flash": ("generativelanguage.googleapis.com",
                             "/v1beta/models/gemini-2.0-flash:generateContent"),
        "gemini-2.0-flash-001": ("us-central1-aiplatform.googleapis.com",
                                 "/v1/projects/aigw-test/locations/us-central1/publishers/google/models/"
                                 "gemini-2.0-flash-001:generateContent"),
        "azure-gpt-4o": ("aigw-test.openai.azure.com",
                         "/openai/deployments/azure-gpt-4o/chat/completions?api-version=2024-10-21"),
        "mistral-small-latest": ("api.mistral.ai", "/v1/chat/completions"),
    }
    auth = {
        "claude-3-5-sonnet": ("x-api-key", API_KEYS["anthropic"]),
        "claude-vertex": ("authorization", f"Bearer {GCP_TOKEN}"),
        "gemini-2.0-flash": ("x-goog-api-key", API_KEYS["gemini"]),
        "gemini-2.0-flash-001": ("authorization", f"Bearer {GCP_TOKEN}"),
        "azure-gpt-4o": ("api-key", API_KEYS["azure"]),
        "mistral-small-latest": ("authorization", f"Bearer {API_KEYS['mistral']}"),
    }
    for model, (host, path) in expect.items():
        rid, h = new_id()
        openai_client.chat.completions.create(model=model, messages=MESSAGES, extra_headers=h)
        rec = one(gateway, rid, *route(model))
        assert (header(rec, "host"), rec["path"]) == (host, path), model
        values = [v for k, v in rec["headers"] if k in ("authorization", "x-api-key", "api-key", "x-goog-api-key")]
        assert "Bearer sk-test-not-a-secret" not in values, model
        if model in auth:
            name, value = auth[model]
            assert header(rec, name) == value, model
        else:  # SigV4, checked by the simulator with botocore
            assert header(rec, "authorization").startswith("AWS4-HMAC-SHA256 Credential=AKIDAIGWTEST0001/")
            assert header(rec, "x-amz-security-token") == "aigw-test-session-token"


def test_header_and_body_mutations_and_path_prefix(gateway, openai_client):
    rid, h = new_id()
    openai_client.chat.completions.create(model="compat-model", messages=MESSAGES, user="someone",
                                          extra_headers={**h, "x-debug": "1"})
    rec = one(gateway, rid, "compat", "openai")
    assert rec["path"] == "/api/v1/chat/completions"
    assert header(rec, "x-tenant") == "blue"
    assert header(rec, "x-debug") is None
    assert rec["body_json"]["service_tier"] == "flex"
    assert "user" not in rec["body_json"]
    assert header(rec, "content-length") == str(len(rec["body"].encode()))


def test_per_request_credentials(gateway, openai_client):
    rid, h = new_id()
    openai_client.chat.completions.create(model="byok-model", messages=MESSAGES,
                                          extra_headers={**h, "x-upstream-api-key": "sk-user-own"})
    rec = gateway.one_upstream(rid)
    assert header(rec, "authorization") == "Bearer sk-user-own"
    assert header(rec, "x-upstream-api-key") is None
    rid, h = new_id()
    with pytest.raises(openai.AuthenticationError) as e:
        openai_client.chat.completions.create(model="byok-model", messages=MESSAGES, extra_headers=h)
    assert "x-upstream-api-key" in str(e.value)
    assert gateway.upstream(rid) == []


@pytest.mark.parametrize("model", [m for m, _, _ in EMBEDDING_ROUTES])
def test_embeddings(gateway, openai_client, model):
    backend, fam = route(model)
    rid, h = new_id()
    resp = openai_client.embeddings.create(model=model, input="the quick brown fox", extra_headers=h)
    rec = one(gateway, rid, backend, fam)
    assert len(resp.data) == 1 and len(resp.data[0].embedding) >= 4
    assert all(isinstance(x, float) for x in resp.data[0].embedding)
    if fam != "gemini":  # AI Studio reports no token counts
        assert resp.usage.prompt_tokens == 4
    if fam == "bedrock-titan":
        assert rec["path"] == f"/model/{TITAN_MODEL.replace(':', '%3A')}/invoke"
        assert rec["body_json"]["inputText"] == "the quick brown fox"
    # Floats as asked (the SDK asks for base64 by default: both must decode the same).
    rid2, h2 = new_id()
    floats = openai_client.embeddings.create(model=model, input="the quick brown fox",
                                             encoding_format="float", extra_headers=h2)
    assert floats.data[0].embedding == pytest.approx(resp.data[0].embedding)


@pytest.mark.parametrize("model", PROVIDER_IDS)
@pytest.mark.parametrize("status,error", [(429, openai.RateLimitError), (400, openai.BadRequestError),
                                          (500, openai.InternalServerError)])
def test_provider_errors_become_openai_errors(gateway, openai_client, model, status, error):
    rid, h = new_id()
    with pytest.raises(error) as e:
        openai_client.chat.completions.create(model=model, messages=MESSAGES,
                                              extra_headers={**h, "x-sim-status": str(status)})
    assert e.value.status_code == status
    body = e.value.body
    assert isinstance(body, dict) and body.get("message"), body
    assert "sk-" not in json.dumps(body)


def test_anthropic_overloaded_is_503_for_openai_clients(gateway, openai_client):
    rid, h = new_id()
    with pytest.raises(openai.InternalServerError) as e:
        openai_client.chat.completions.create(model="claude-3-5-sonnet", messages=MESSAGES,
                                              extra_headers={**h, "x-sim-status": "529"})
    assert e.value.status_code == 503
    assert e.value.body["type"] == "server_error"


@pytest.mark.parametrize("model", ["claude-bedrock-converse", "claude-3-5-sonnet", "gemini-2.0-flash"])
def test_stream_error_mid_stream(gateway, openai_client, model):
    rid, h = new_id()
    got = ""
    with pytest.raises(openai.APIError):
        for chunk in openai_client.chat.completions.create(
                model=model, messages=MESSAGES, stream=True,
                extra_headers={**h, "x-sim-stream-error": "throttlingException", "x-sim-tokens": "8",
                               "x-sim-stream-error-after": "5"}):
            if chunk.choices:
                got += chunk.choices[0].delta.content or ""
    # Some text arrived before the error, not all of it.
    assert got and got.startswith("Hello from") and "word7" not in got
    assert gateway.alive()


def test_unsupported_request_is_422_before_the_provider(gateway, openai_client):
    rid, h = new_id()
    with pytest.raises(openai.UnprocessableEntityError) as e:
        openai_client.chat.completions.create(model="claude-bedrock-converse", messages=MESSAGES, n=2,
                                              extra_headers=h)
    assert e.value.body["param"] == "n"
    assert gateway.upstream(rid) == []
    rid, h = new_id()
    with pytest.raises(openai.UnprocessableEntityError):
        openai_client.completions.create(model="gemini-2.0-flash", prompt="hi", extra_headers=h)
    assert gateway.upstream(rid) == []


# ---- fallback ---------------------------------------------------------------------

@pytest.mark.parametrize("model,fail,first", [
    ("fallback-5xx", "primary=500", "primary"),
    ("fallback-429", "anthropic=429", "anthropic"),
    ("fallback-refused", None, None),
])
def test_fallback_to_another_provider(gateway, openai_client, model, fail, first):
    rid, h = new_id()
    if fail:
        h["x-sim-fail-on"] = fail
    resp = openai_client.chat.completions.create(model=model, messages=MESSAGES, extra_headers=h)
    attempts = gateway.upstream(rid)
    second = attempts[-1]
    assert [a["listener"] for a in attempts] == ([first] if first else []) + [second["listener"]]
    assert second["checks"] == []
    assert resp.choices[0].message.content == second["sent_text"]
    assert resp.usage.prompt_tokens == sent_counts(second)[0]
    entry = gateway.log_entry(rid)
    assert metadata_string(entry, "backend_name") == second["listener"]
    assert metadata_number(entry, "llm_output_token") == sent_counts(second)[1]


def test_fallback_of_a_stream(gateway, openai_client):
    rid, h = new_id()
    text = ""
    for chunk in openai_client.chat.completions.create(
            model="fallback-5xx", messages=MESSAGES, stream=True,
            extra_headers={**h, "x-sim-fail-on": "primary=503"}):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    attempts = gateway.upstream(rid)
    assert [a["listener"] for a in attempts] == ["primary", "bedrock"]
    assert attempts[1]["provider"] == "bedrock-converse"
    assert text == attempts[1]["sent_text"]


# ---- the Anthropic Messages API ------------------------------------------------------

ANTHROPIC_MODELS = ["claude-3-5-sonnet", "claude-vertex", "claude-bedrock", "claude-bedrock-converse",
                    "gemini-2.0-flash", "azure-gpt-4o"]


@pytest.mark.parametrize("model", ANTHROPIC_MODELS)
def test_anthropic_sdk(gateway, anthropic_client, model):
    backend, fam = route(model)
    rid, h = new_id()
    msg = anthropic_client.messages.create(model=model, max_tokens=200, system="You are terse.",
                                           messages=[{"role": "user", "content": "Capital of France?"}],
                                           extra_headers={**h, "x-sim-cached-tokens": "2"})
    rec = one(gateway, rid, backend, fam)
    prompt, completion = sent_counts(rec)
    assert msg.type == "message" and msg.role == "assistant"
    assert "".join(b.text for b in msg.content if b.type == "text") == rec["sent_text"]
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens == completion
    assert msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0) + (
        msg.usage.cache_creation_input_tokens or 0) == prompt
    assert msg.usage.cache_read_input_tokens == 2
    entry = gateway.log_entry(rid)
    assert metadata_number(entry, "llm_input_token") == prompt
    assert metadata_string(entry, "backend_name") == backend


@pytest.mark.parametrize("model", ANTHROPIC_MODELS)
def test_anthropic_sdk_stream(gateway, anthropic_client, model):
    backend, fam = route(model)
    rid, h = new_id()
    with anthropic_client.messages.stream(model=model, max_tokens=200,
                                          messages=[{"role": "user", "content": "Capital of France?"}],
                                          extra_headers={**h, "x-sim-tokens": "4"}) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    rec = one(gateway, rid, backend, fam)
    prompt, completion = sent_counts(rec)
    assert text == rec["sent_text"]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == completion
    entry = gateway.log_entry(rid)
    assert metadata_number(entry, "llm_input_token") == prompt
    assert metadata_number(entry, "llm_output_token") == completion


@pytest.mark.parametrize("model", ["claude-3-5-sonnet", "claude-bedrock", "claude-bedrock-converse"])
def test_anthropic_sdk_tools(gateway, anthropic_client, model):
    rid, h = new_id()
    msg = anthropic_client.messages.create(
        model=model, max_tokens=200, messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[{"name": "get_weather", "description": "weather", "input_schema": WEATHER_TOOL["function"]["parameters"]}],
        extra_headers={**h, "x-sim-tool-call": "get_weather"})
    rec = gateway.one_upstream(rid)
    assert rec["checks"] == []
    uses = [b for b in msg.content if b.type == "tool_use"]
    expected = rec["sent_tool_calls"][0]["arguments"]
    if isinstance(expected, str):
        expected = json.loads(expected)
    assert [u.name for u in uses] == ["get_weather"] and uses[0].input == expected
    assert msg.stop_reason == "tool_use"


def test_anthropic_errors_in_anthropic_shape(gateway, anthropic_client):
    rid, h = new_id()
    with pytest.raises(anthropic.RateLimitError) as e:
        anthropic_client.messages.create(model="claude-bedrock-converse", max_tokens=10,
                                         messages=[{"role": "user", "content": "hi"}],
                                         extra_headers={**h, "x-sim-status": "429"})
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.NotFoundError) as e:
        anthropic_client.messages.create(model="no-such-model", max_tokens=10,
                                         messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.InternalServerError) as e:
        anthropic_client.messages.create(model="claude-3-5-sonnet", max_tokens=10,
                                         messages=[{"role": "user", "content": "hi"}],
                                         extra_headers={"x-sim-status": "529"})
    assert e.value.status_code == 529
    assert e.value.body["error"]["type"] == "overloaded_error"
