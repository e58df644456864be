"""The official `openai` SDK against the gateway: what it parses must be what the
provider sent."""

from __future__ import annotations


from conftest import metadata_number, rid_headers




def test_chat(gateway, openai_client):
    rid, h = rid_headers()
    resp = openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], extra_headers=h)
    sent = gateway.one_upstream(rid)["response"]["usage"]
    assert resp.choices[0].message.content.startswith("Hello from primary")
    assert resp.usage.prompt_tokens == sent["prompt_tokens"]
    assert resp.usage.completion_tokens == sent["completion_tokens"]
    assert resp.usage.total_tokens == sent["total_tokens"]
    assert metadata_number(gateway.log_entry(rid), "llm_total_token") == sent["total_tokens"]


def test_chat_stream(gateway, openai_client):
    rid, h = rid_headers()
    stream = openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], stream=True,
        stream_options={"include_usage": True}, extra_headers={**h, "x-sim-tokens": "7"})
    text, usage = "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    sent = gateway.one_upstream(rid)["response"]["usage"]
    assert text.startswith("Hello from primary") and text.count("word") == 6
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        sent["prompt_tokens"], sent["completion_tokens"], sent["total_tokens"])


def test_chat_stream_without_usage_option(gateway, openai_client):
    rid, h = rid_headers()
    stream = openai_client.chat.completions.create(
        model="gpt-5-nano", messages=[{"role": "user", "content": "hello"}], stream=True, extra_headers=h)
    chunks = list(stream)
    assert chunks and all(c.usage is None for c in chunks)
    sent = gateway.one_upstream(rid)["response"]["usage"]
    assert metadata_number(gateway.log_entry(rid), "llm_output_token") == sent["completion_tokens"]


def test_completions(gateway, openai_client):
    rid, h = rid_headers()
    resp = openai_client.completions.create(model="babbage-002", prompt="Once upon", max_tokens=5,
                                            extra_headers=h)
    sent = gateway.one_upstream(rid)["response"]["usage"]
    assert resp.choices[0].text.startswith("Hello from primary")
    assert resp.usage.prompt_tokens == sent["prompt_tokens"]
    assert resp.usage.completion_tokens == sent["completion_tokens"]


def test_completions_stream(gateway, openai_client):
    rid, h = rid_headers()
    stream = openai_client.completions.create(model="babbage-002", prompt="Once upon", stream=True,
                                              stream_options={"include_usage": True}, extra_headers=h)
    usage = [c.usage for c in stream if c.usage]
    sent = gateway.one_upstream(rid)["response"]["usage"]
    assert len(usage) == 1 and usage[0].total_tokens == sent["total_tokens"]


def test_embeddings(gateway, openai_client):
    rid, h = rid_headers()
    resp = openai_client.embeddings.create(model="text-embedding-3-small", input=["a", "b"], dimensions=4,
                                           extra_headers=h)
    up = gateway.one_upstream(rid)
    sent = up["response"]["usage"]
    assert len(resp.data) == 2 and all(len(d.embedding) == 4 for d in resp.data)
    # The simulator's vectors are (index+1)*(j+1) % 17 / 17, whatever the encoding.
    want = [2 / 17, 4 / 17, 6 / 17, 8 / 17]
    assert [round(x, 5) for x in resp.data[1].embedding] == [round(x, 5) for x in want]
    assert resp.usage.prompt_tokens == sent["prompt_tokens"]
    entry = gateway.log_entry(rid)
    assert metadata_number(entry, "llm_input_token") == sent["prompt_tokens"]
    assert metadata_number(entry, "llm_output_token") == 0


def test_models(gateway, openai_client):
    ids = [m.id for m in openai_client.models.list()]
    assert ids == [m for r in gateway.config["routes"] for m in r["models"]]
