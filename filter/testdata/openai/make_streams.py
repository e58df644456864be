"""Writes the hand-made OpenAI-schema stream fixtures (*.sse, not *.hub.sse) in the
shapes Mistral, Magistral, Azure OpenAI and vLLM-like servers send, and extracts two
recorded bodies from shared/conformance/openai-cassettes (Apache-2.0 envoyproxy/
ai-gateway recordings).

Run: python3 make_streams.py [path to openai-cassettes] (needs PyYAML for the
extraction; the streams need nothing).
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def ev(obj):
    return "data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n\n"


def chunk(base, delta, finish=None, **kw):
    d = dict(base)
    d["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    d.update(kw)
    return d


def write(name, text):
    with open(os.path.join(HERE, name), "w") as f:
        f.write(text)


# Mistral: role chunk, text, a whole tool call in one piece, usage on the finish chunk.
b = {"id": "8d2f4b0e6a1c4e2f9b7a3c5d1e0f2a4b", "object": "chat.completion.chunk",
     "created": 1750000000, "model": "mistral-small-latest"}
write("mistral-stream.sse", "".join([
    ev(chunk(b, {"role": "assistant", "content": ""})),
    ev(chunk(b, {"content": "Let me check "})),
    ev(chunk(b, {"content": "the weather."})),
    ev(chunk(b, {"tool_calls": [{"id": "Xq3tPz9aB", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}, "index": 0}]})),
    ev(chunk(b, {"content": ""}, "tool_calls", usage={"prompt_tokens": 84, "total_tokens": 115, "completion_tokens": 31})),
    "data: [DONE]\n\n",
]))

# Magistral: content as a list of parts, thinking first, a reference part in text.
b = {"id": "3a9c", "object": "chat.completion.chunk", "created": 1750000001, "model": "magistral-medium-latest"}
write("magistral-stream.sse", "".join([
    ev(chunk(b, {"role": "assistant", "content": ""})),
    ev(chunk(b, {"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "The user greets me. "}]}]})),
    ev(chunk(b, {"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "Answer briefly."}]}]})),
    ev(chunk(b, {"content": [{"type": "text", "text": "Hello"}, {"type": "reference", "reference_ids": [1]}, {"type": "text", "text": "!"}]})),
    ev(chunk(b, {"content": ""}, "stop", usage={"prompt_tokens": 12, "total_tokens": 40, "completion_tokens": 28})),
    "data: [DONE]\n\n",
]))

# Azure OpenAI: a prompt-filter chunk without choices first, content filter results
# on the choices, a usage-only chunk (include_usage), [DONE].
cf = {k: {"filtered": False, "severity": "safe"} for k in ("hate", "self_harm", "sexual", "violence")}
b = {"id": "chatcmpl-AzUre1", "object": "chat.completion.chunk", "created": 1759396900,
     "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_b705f0c291"}


def az(delta, finish=None):
    d = dict(b)
    d["choices"] = [{"content_filter_results": cf if delta.get("content") else {}, "delta": delta,
                     "finish_reason": finish, "index": 0, "logprobs": None}]
    d["usage"] = None
    return d


usage_only = dict(b, choices=[], usage={"completion_tokens": 3, "prompt_tokens": 8, "total_tokens": 11,
                                        "prompt_tokens_details": {"cached_tokens": 0}})
write("azure-stream.sse", "".join([
    ev({"choices": [], "created": 0, "id": "", "model": "", "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": cf}], "usage": None}),
    ev(az({"content": "", "refusal": None, "role": "assistant"})),
    ev(az({"content": "Hi"})),
    ev(az({"content": " there."})),
    ev(az({}, "stop")),
    ev(usage_only),
    "data: [DONE]\n\n",
]))

# A compatible server (vLLM-like): CRLF lines, comments, `reasoning` instead of
# reasoning_content, no role, no `object`, tool-call pieces without index, usage
# without total_tokens, and no [DONE].
b = {"id": "cmpl-7f1", "created": 1750000002, "model": "qwen3-8b"}
crlf = lambda s: s.replace("\n", "\r\n")
write("compat-no-done.sse", "".join([
    ": ping\r\n\r\n",
    crlf(ev(chunk(b, {"reasoning": "Need a tool."}))),
    crlf(ev(chunk(b, {"tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "lookup", "arguments": ""}}]}))),
    crlf(ev(chunk(b, {"tool_calls": [{"function": {"arguments": "{\"q\":"}}]}))),
    crlf(ev(chunk(b, {"tool_calls": [{"function": {"arguments": "\"x\"}"}}]}))),
    ": ping\r\n\r\n",
    crlf(ev(chunk(b, {}, "tool_calls"))),
    crlf(ev(dict(b, choices=[], usage={"prompt_tokens": 20, "completion_tokens": 9}))),
]))

if len(sys.argv) > 1:
    import yaml

    for src, dst in [("azure-chat-basic.yaml", "azure-chat-basic.json"),
                     ("chat-parallel-tools.yaml", "chat-parallel-tools.json")]:
        with open(os.path.join(sys.argv[1], src)) as f:
            body = yaml.safe_load(f)["interactions"][0]["response"]["body"]
        write(dst, json.dumps(json.loads(body), indent=2, ensure_ascii=False) + "\n")
