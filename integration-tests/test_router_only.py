"""`routerOnly`: no upstream filter instance (Envoy Gateway's EnvoyExtensionPolicy
attaches only the router-level one), so the router-level instance translates,
authenticates and rewrites for single-backend routes before routing, and meters the
translated answer. The bootstrap has no `aigw_upstream` filter at all."""

from __future__ import annotations

import uuid

import pytest

from conftest import AWS_CREDS, AWS_SIGV4, metadata_number, metadata_string, running_gateway, virtual_host_for

CONFIG = {
    "version": "v1",
    "routerOnly": True,
    "backends": [
        {"name": "bedrock", "schema": {"name": "AWSBedrock"}, "region": "us-east-1",
         "host": "bedrock-runtime.us-east-1.amazonaws.com",
         "modelNameOverride": "amazon.nova-lite-v1:0", "auth": AWS_SIGV4},
        {"name": "anthropic", "schema": {"name": "Anthropic"}, "host": "api.anthropic.com",
         "auth": {"apiKey": {"value": "sk-ant-router-only"}}},
        {"name": "openai", "schema": {"name": "OpenAI"}, "host": "api.openai.com",
         "auth": {"apiKey": {"value": "sk-openai-router-only"}}},
    ],
    "routes": [
        {"name": "b", "models": ["nova"], "backends": [{"name": "bedrock"}]},
        {"name": "a", "models": ["claude"], "backends": [{"name": "anthropic"}]},
        {"name": "o", "models": ["gpt-4o-mini"], "backends": [{"name": "openai"}]},
        {"name": "cached-bedrock", "models": ["nova-cached"], "backends": [{"name": "bedrock"}],
         "cache": {"ttlSeconds": 60}},
    ],
    "llmRequestCosts": [{"metadataKey": "llm_input_token", "type": "InputToken"},
                        {"metadataKey": "llm_output_token", "type": "OutputToken"}],
}
FAMILY = {"nova": ("bedrock", "bedrock-converse"), "claude": ("anthropic", "anthropic"),
          "gpt-4o-mini": ("openai", "openai")}
HOSTS = {b["name"]: b["host"] for b in CONFIG["backends"]}


@pytest.fixture(scope="module")
def router_only(workdir, build):
    sim_args = ["--aws-credentials", f"bedrock={':'.join(AWS_CREDS)}",
                "--expect-api-key", "anthropic=sk-ant-router-only",
                "--expect-api-key", "openai=sk-openai-router-only"]
    # Routes only for the client's Host: the filter leaves Host to the route's rewrite.
    with running_gateway(CONFIG, ["bedrock", "anthropic", "openai"], workdir / f"router-only-{build}",
                         build, sim_args, bootstrap=virtual_host_for("127.0.0.1")) as gw:
        yield gw


def test_bootstrap_has_no_upstream_filter(router_only):
    text = (router_only.envoy_log.parent / "envoy.yaml").read_text()
    assert "aigw_upstream" not in text


@pytest.mark.parametrize("model", list(FAMILY))
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_openai_sdk(router_only, model, stream):
    import openai

    gw = router_only
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client", max_retries=0, timeout=30)
    rid = str(uuid.uuid4())
    kw = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    resp = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello there"}],
                                     extra_headers={"x-request-id": rid}, **kw)
    if stream:
        chunks = list(resp)
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        usage = next(ch.usage for ch in chunks if ch.usage)
    else:
        text, usage = resp.choices[0].message.content, resp.usage
    (rec,) = gw.upstream(rid)
    backend, family = FAMILY[model]
    assert (rec["listener"], rec["provider"], rec["checks"]) == (backend, family, [])
    assert [v for k, v in rec["headers"] if k.lower() == "host"] == [HOSTS[backend]]
    assert text == rec["sent_text"]
    assert not any(v == "Bearer sk-client" for _, v in rec["headers"])
    entry = gw.log_entry(rid)
    assert metadata_string(entry, "backend_name") == backend
    assert metadata_number(entry, "llm_input_token") == usage.prompt_tokens
    assert metadata_number(entry, "llm_output_token") == usage.completion_tokens


def test_anthropic_sdk_to_bedrock(router_only):
    import anthropic

    gw = router_only
    c = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="sk-client", max_retries=0, timeout=30)
    rid = str(uuid.uuid4())
    with c.messages.stream(model="nova", max_tokens=100, messages=[{"role": "user", "content": "Hi"}],
                           extra_headers={"x-request-id": rid}) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    (rec,) = gw.upstream(rid)
    assert rec["provider"] == "bedrock-converse" and rec["checks"] == []
    assert text == rec["sent_text"]
    assert metadata_number(gw.log_entry(rid), "llm_output_token") == final.usage.output_tokens


def test_errors_and_refusals(router_only):
    gw = router_only
    r, rid = gw.post("/v1/chat/completions", {"model": "nova", "n": 2, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "n"
    assert gw.upstream(rid) == []
    r, rid = gw.post("/v1/chat/completions", {"model": "nova", "messages": [{"role": "user", "content": "x"}]},
                     headers={"x-sim-status": "429"})
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"


def test_cache_keeps_the_translated_answer(router_only):
    """The router-level instance translates (Bedrock here) and caches what the client
    got: the repeated question is answered in OpenAI's schema, from the gateway."""
    import openai

    gw = router_only
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client", max_retries=0, timeout=30)
    question = f"cache me {uuid.uuid4()}"
    answers = []
    for _ in range(2):
        rid = str(uuid.uuid4())
        raw = c.chat.completions.with_raw_response.create(
            model="nova-cached", messages=[{"role": "user", "content": question}], extra_headers={"x-request-id": rid})
        answers.append((raw.headers.get("x-cache"), raw.parse(), gw.upstream(rid)))
    (miss, first, ups), (hit, second, none) = answers
    assert (miss, hit) == ("MISS", "HIT")
    assert len(ups) == 1 and ups[0]["provider"] == "bedrock-converse" and none == []
    assert second.object == "chat.completion"
    assert second.choices[0].message.content == first.choices[0].message.content == ups[0]["sent_text"]
