"""Request guardrails through a real Envoy, both builds, with the official `openai`
and `anthropic` SDKs: a masking policy's prompt reaches the provider (the
simulator records what it got) with the e-mail and the card replaced, and nothing
else of the body changed; a blocking policy's prompt never reaches it and the SDK
raises its BadRequestError (code content_policy_violation); a logging policy lets
the prompt through unchanged. Each says so in the access log (`guardrail`) and in
the aigw_guardrail_* counters."""

from __future__ import annotations


import pytest

from conftest import rid_headers, running_gateway

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"  # a test card: passes Luhn
NOT_A_CARD = "4111 1111 1111 1112"  # fails Luhn: left alone
IBAN = "DE89 3704 0044 0532 0130 00"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


def config() -> dict:
    def route(name: str, backend: str, *policies: str, stage: str = "request") -> dict:
        return {"name": name, "models": [name], "backends": [{"name": backend}],
                "guardrails": [{"policy": p, "stage": stage} for p in policies]}

    return {
        "version": "v1",
        "guardrails": [
            {"name": "pii", "action": "mask", "detectors": {"pii": ["email", "card", "iban"]}},
            {"name": "no-secrets", "action": "block", "detectors": {"secrets": ["awsAccessKey", "apiKey"]}},
            {"name": "tickets", "action": "log",
             "detectors": {"regex": [{"name": "ticket", "pattern": "TICKET-[0-9]+"}]}},
        ],
        "backends": [
            {"name": "openai", "schema": {"name": "OpenAI"}},
            {"name": "anthropic", "schema": {"name": "Anthropic"}},
        ],
        "routes": [
            route("gpt-guarded", "openai", "no-secrets", "pii"),
            route("gpt-logged", "openai", "tickets"),
            route("claude-guarded", "anthropic", "no-secrets", "pii"),
            route("gpt-plain", "openai"),
            route("gpt-answers", "openai", "no-secrets", "pii", stage="both"),
            route("claude-answers", "anthropic", "no-secrets", "pii", stage="response"),
        ],
    }


@pytest.fixture(scope="module")
def gw(workdir, build):
    with running_gateway(config(), ["openai", "anthropic"], workdir / f"guardrails-{build}", build) as g:
        yield g


@pytest.fixture(scope="module")
def openai_client(gw):
    import openai

    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test-not-a-secret", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def anthropic_client(gw):
    import anthropic

    return anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="sk-ant-client-not-a-secret",
                               max_retries=0, timeout=30)




def test_openai_prompt_reaches_the_provider_masked(gw, openai_client):
    before = gw.counter("aigw_guardrail_masked")
    rid, h = rid_headers()
    resp = openai_client.chat.completions.create(
        model="gpt-guarded", temperature=0.5, user="u-1",
        messages=[
            {"role": "system", "content": f"The user's e-mail is {EMAIL}."},
            {"role": "user", "content": [
                {"type": "text", "text": f"Charge card {CARD}, not {NOT_A_CARD}, then wire to {IBAN}."}]},
        ],
        extra_headers=h)
    assert resp.choices[0].message.content
    got = gw.one_upstream(rid)["body_json"]
    assert got["messages"][0]["content"] == "The user's e-mail is [EMAIL]."
    assert got["messages"][1]["content"][0]["text"] == \
        f"Charge card [CARD], not {NOT_A_CARD}, then wire to [IBAN]."
    # Nothing but the prompt text changed.
    assert (got["temperature"], got["user"], got["model"]) == (0.5, "u-1", "gpt-guarded")
    body = gw.one_upstream(rid)["body"]
    assert EMAIL not in body and CARD not in body
    entry = gw.log_entry(rid, raw=True)
    assert entry["guardrail"] == "pii:mask:request:email,card,iban", entry
    assert entry["status"] in (200, "200")
    assert gw.counter("aigw_guardrail_masked") == before + 1


def test_anthropic_prompt_reaches_the_provider_masked(gw, anthropic_client):
    rid, h = rid_headers()
    msg = anthropic_client.messages.create(
        model="claude-guarded", max_tokens=20, system=f"Reply to {EMAIL}",
        messages=[
            {"role": "user", "content": [{"type": "text", "text": f"my card: {CARD}"}]},
        ],
        extra_headers=h)
    assert msg.content
    got = gw.one_upstream(rid)["body_json"]
    assert got["system"] == "Reply to [EMAIL]"
    assert got["messages"][0]["content"][0]["text"] == "my card: [CARD]"
    assert got["max_tokens"] == 20
    assert gw.log_entry(rid, raw=True)["guardrail"] == "pii:mask:request:email,card"


def test_openai_blocked_prompt_never_reaches_the_provider(gw, openai_client):
    import openai

    before = gw.counter("aigw_guardrail_blocked")
    rid, h = rid_headers()
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(
            model="gpt-guarded",
            messages=[{"role": "user", "content": f"my key is {AWS_KEY} and my mail {EMAIL}"}],
            extra_headers=h)
    e = caught.value
    assert e.status_code == 400
    assert e.code == "content_policy_violation"
    assert e.type == "invalid_request_error"
    assert "no-secrets" in e.message
    assert AWS_KEY not in e.response.text and EMAIL not in e.response.text
    assert gw.upstream(rid) == []
    entry = gw.log_entry(rid, raw=True)
    assert entry["guardrail"] == "no-secrets:block:request:awsAccessKey", entry
    assert gw.counter("aigw_guardrail_blocked") == before + 1


def test_anthropic_blocked_tool_result_never_reaches_the_provider(gw, anthropic_client):
    import anthropic

    rid, h = rid_headers()
    with pytest.raises(anthropic.BadRequestError) as caught:
        anthropic_client.messages.create(
            model="claude-guarded", max_tokens=20,
            messages=[
                {"role": "user", "content": "read the config"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                              "content": [{"type": "text", "text": f"aws_key={AWS_KEY}"}]}]},
            ],
            extra_headers=h)
    e = caught.value
    assert e.status_code == 400
    assert e.body["error"]["type"] == "invalid_request_error"
    assert "no-secrets" in e.body["error"]["message"]
    assert AWS_KEY not in e.response.text
    assert gw.upstream(rid) == []


def test_logged_prompt_passes_unchanged(gw, openai_client):
    before = gw.counter("aigw_guardrail_logged")
    rid, h = rid_headers()
    prompt = f"Status of TICKET-4711 for {EMAIL}?"
    openai_client.chat.completions.create(
        model="gpt-logged", messages=[{"role": "user", "content": prompt}], extra_headers=h)
    got = gw.one_upstream(rid)["body_json"]
    assert got["messages"][0]["content"] == prompt
    assert gw.log_entry(rid, raw=True)["guardrail"] == "tickets:log:request:ticket"
    assert gw.counter("aigw_guardrail_logged") == before + 1


def test_clean_and_unguarded_prompts_pass_untouched(gw, openai_client):
    for model, prompt in (("gpt-guarded", "hello there"), ("gpt-plain", f"mail {EMAIL}")):
        rid, h = rid_headers()
        openai_client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], extra_headers=h)
        assert gw.one_upstream(rid)["body_json"]["messages"][0]["content"] == prompt
        assert gw.log_entry(rid, raw=True).get("guardrail") in (None, "", "-")


def test_a_streamed_prompt_is_masked_too(gw, openai_client):
    rid, h = rid_headers()
    stream = openai_client.chat.completions.create(
        model="gpt-guarded", messages=[{"role": "user", "content": f"mail {EMAIL}"}], stream=True,
        extra_headers=h)
    assert list(stream)
    assert gw.one_upstream(rid)["body_json"]["messages"][0]["content"] == "mail [EMAIL]"


def test_responses_api_prompts_are_masked_as_is_and_translated(gw, openai_client):
    """The Responses API carries prompt text in `instructions` and input items: both
    are read, whether the backend takes the body as is (OpenAI) or translated
    (Anthropic)."""
    for model in ("gpt-guarded", "claude-guarded"):
        rid, h = rid_headers()
        resp = openai_client.responses.create(
            model=model, instructions=f"Answer {EMAIL}", extra_headers=h,
            input=[{"role": "user", "content": [{"type": "input_text", "text": f"card {CARD}"}]},
                   {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"},
                   {"type": "function_call_output", "call_id": "c1", "output": f"iban {IBAN}"}])
        assert resp.output_text
        body = gw.one_upstream(rid)["body"]
        assert EMAIL not in body and CARD not in body and IBAN not in body, model
        assert "[EMAIL]" in body and "[CARD]" in body and "[IBAN]" in body, model
        assert gw.log_entry(rid, raw=True)["guardrail"] == "pii:mask:request:email,card,iban"


def test_responses_api_blocked_prompt_never_reaches_the_provider(gw, openai_client):
    import openai

    rid, h = rid_headers()
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.responses.create(model="claude-guarded", input=[{"role": "user", "content": AWS_KEY}],
                                       extra_headers=h)
    assert caught.value.code == "content_policy_violation"
    assert gw.upstream(rid) == []


# ---- the response stage --------------------------------------------------------------

def canned(body: dict) -> dict:
    """The simulator answers 200 with exactly this body."""
    import json

    return {"x-sim-status": "200", "x-sim-body": json.dumps(body)}


def chat_answer(text: str) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-answers",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}


def test_an_answer_reaches_the_client_masked(gw, openai_client):
    rid, h = rid_headers()
    resp = openai_client.chat.completions.create(
        model="gpt-answers", messages=[{"role": "user", "content": "who do I write to?"}],
        extra_headers={**h, **canned(chat_answer(f"write to {EMAIL} or pay with {CARD}"))})
    assert resp.choices[0].message.content == "write to [EMAIL] or pay with [CARD]"
    assert resp.usage.total_tokens == 12
    entry = gw.log_entry(rid)
    assert entry["guardrail"] == "pii:mask:response:email,card"


def test_an_answer_a_policy_blocks_never_reaches_the_client(gw, openai_client, anthropic_client):
    import anthropic
    import openai

    before = gw.counter("aigw_guardrail_blocked")
    rid, h = rid_headers()
    with pytest.raises(openai.BadRequestError) as e:
        openai_client.chat.completions.create(
            model="gpt-answers", messages=[{"role": "user", "content": "a key please"}],
            extra_headers={**h, **canned(chat_answer(f"here: {AWS_KEY}"))})
    assert e.value.code == "content_policy_violation"
    assert AWS_KEY not in str(e.value.body)
    assert gw.log_entry(rid)["guardrail"] == "no-secrets:block:response:awsAccessKey"
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-answers",
               "content": [{"type": "text", "text": f"the key is {AWS_KEY}"}], "stop_reason": "end_turn",
               "usage": {"input_tokens": 3, "output_tokens": 6}}
    with pytest.raises(anthropic.BadRequestError) as e:
        anthropic_client.messages.create(model="claude-answers", max_tokens=50,
                                         messages=[{"role": "user", "content": "a key please"}],
                                         extra_headers=canned(message))
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert gw.counter("aigw_guardrail_blocked") == before + 2


def test_a_route_that_checks_answers_refuses_a_stream_before_the_provider(gw, openai_client):
    import openai

    rid, h = rid_headers()
    with pytest.raises(openai.BadRequestError) as e:
        openai_client.chat.completions.create(model="gpt-answers", stream=True, extra_headers=h,
                                              messages=[{"role": "user", "content": "hi"}])
    assert "stream" in str(e.value)
    assert gw.upstream(rid) == []
