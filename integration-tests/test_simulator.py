"""The provider simulator by itself (no Envoy): every provider's paths, JSON and
streams, the AWS event-stream framing (parsed back here by an independent reader),
SigV4 checks against botocore-signed requests, API-key expectations, error injection
and the recorded requests."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import subprocess
import sys
import uuid
import zlib

import pytest
import requests

from conftest import HERE, sim_ports, stop, wait_for

AKID, SECRET, TOKEN = "AKIDSIMTEST", "sim/secret+key", "session-token-xyz"
LABELS = ["open", "auth", "aws-session"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    work = tmp_path_factory.mktemp("sim")
    ready = work / "ready.json"
    log = work / "sim.log"
    cmd = [sys.executable, str(HERE / "simulator.py"), "--ready-file", str(ready),
           "--expect-api-key", "auth=key-1", "--expect-bearer", "auth=ya29.token",
           "--aws-credentials", f"auth={AKID}:{SECRET}",
           "--aws-credentials", f"aws-session={AKID}:{SECRET}:{TOKEN}"]
    for label in LABELS:
        cmd += ["--listen", f"127.0.0.1:0={label}"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: sim_ports(ready, LABELS) is not None, 15, "simulator", proc, log)
        ports = sim_ports(ready, LABELS)
        yield Sim({k: f"http://127.0.0.1:{v}" for k, v in ports.items()})
    finally:
        stop(proc)


class Sim:
    def __init__(self, urls: dict[str, str]):
        self.urls = urls
        self.session = requests.Session()

    def post(self, path: str, body=None, *, headers: dict | None = None, listener: str = "open",
             data: bytes | None = None, stream: bool = False) -> tuple[requests.Response, dict]:
        rid = str(uuid.uuid4())
        h = {"content-type": "application/json", "x-request-id": rid, "x-sim-delay-ms": "0"}
        h.update(headers or {})
        if data is None:
            data = json.dumps(body).encode()
        r = self.session.post(self.urls[listener] + path, data=data, headers=h, stream=stream, timeout=10)
        if stream:
            return r, {"id": rid}
        return r, self.record(rid)

    def record(self, rid: str) -> dict:
        got = self.session.get(self.urls["open"] + "/_sim/requests", params={"id": rid}, timeout=5).json()
        assert len(got) == 1, got
        return got[0]


# ---- independent readers -------------------------------------------------------------

def sse(body: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) of each SSE event; CRLF or LF line ends."""
    out = []
    text = body.decode().replace("\r\n", "\n")
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        out.append((name, "\n".join(data)))
    return out


def read_frames(buf: bytes) -> list[tuple[dict, bytes]]:
    """AWS event-stream messages: checks both CRCs and every length; returns (headers,
    payload) of each."""
    out, pos = [], 0
    while pos < len(buf):
        assert len(buf) - pos >= 16, "truncated message"
        total, hlen, pcrc = struct.unpack(">III", buf[pos:pos + 12])
        assert zlib.crc32(buf[pos:pos + 8]) == pcrc, "prelude CRC"
        assert total >= 16 and pos + total <= len(buf) and hlen <= total - 16
        msg = buf[pos:pos + total]
        (mcrc,) = struct.unpack(">I", msg[-4:])
        assert zlib.crc32(msg[:-4]) == mcrc, "message CRC"
        headers, h = {}, 12
        while h < 12 + hlen:
            nlen = msg[h]
            name = msg[h + 1:h + 1 + nlen].decode()
            h += 1 + nlen
            htype = msg[h]
            h += 1
            assert htype == 7, f"header {name} has type {htype}, not string"
            (vlen,) = struct.unpack(">H", msg[h:h + 2])
            headers[name] = msg[h + 2:h + 2 + vlen].decode()
            h += 2 + vlen
        assert h == 12 + hlen
        out.append((headers, msg[12 + hlen:-4]))
        pos += total
    return out


def http_chunks(r: requests.Response) -> list[bytes]:
    """The body as the HTTP chunks it was sent in."""
    return [c for c in r.raw.read_chunked(decode_content=False) if c]


# ---- bodies -------------------------------------------------------------------------------

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "be brief"},
                                              {"role": "user", "content": "what is the weather"}]}
CHAT_WORDS = 6
WEATHER_TOOL = {"name": "get_weather", "params": {"type": "object", "properties": {"city": {"type": "string"}},
                                                   "required": ["city"]}}
ANTHROPIC = {"model": "claude-sonnet-4-5", "max_tokens": 4096, "system": "be brief",
             "messages": [{"role": "user", "content": "what is the weather"}]}
CONVERSE = {"system": [{"text": "be brief"}], "messages": [{"role": "user", "content": [{"text": "what is the weather"}]}],
            "inferenceConfig": {"maxTokens": 100}}
GEMINI = {"systemInstruction": {"parts": [{"text": "be brief"}]},
          "contents": [{"role": "user", "parts": [{"text": "what is the weather"}]}]}
CLAUDE_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"
CLAUDE_PATH = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0"
VERTEX = "/v1/projects/proj/locations/us-east5/publishers"


# ---- OpenAI and Azure -------------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["/v1", "/api/v1", "/v1beta/openai"])
def test_openai_paths_json_and_stream(sim, prefix):
    r, rec = sim.post(prefix + "/chat/completions", CHAT)
    assert r.status_code == 200
    doc = r.json()
    assert doc["choices"][0]["message"]["content"] == "Hello from open word1 word2 word3 word4"
    assert doc["usage"]["prompt_tokens"] == CHAT_WORDS and doc["usage"]["completion_tokens"] == 5
    assert rec["provider"] == "openai" and rec["checks"] == [] and rec["sent_usage"] == doc["usage"]
    assert rec["sent_text"] == doc["choices"][0]["message"]["content"]

    r, h = sim.post(prefix + "/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
                    headers={"x-sim-tokens": "3"}, stream=True)
    events = [json.loads(d) for _, d in sse(r.content) if d != "[DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in events if c["choices"])
    rec = sim.record(h["id"])
    assert text == rec["sent_text"] == "Hello from open word1 word2"
    assert events[-1]["usage"] == rec["sent_usage"] and rec["sent_usage"]["completion_tokens"] == 3


def test_openai_tool_call_stream_and_undeclared_tool(sim):
    body = {**CHAT, "stream": True, "tools": [{"type": "function", "function": {
        "name": WEATHER_TOOL["name"], "parameters": WEATHER_TOOL["params"]}}]}
    r, h = sim.post("/v1/chat/completions", body, headers={"x-sim-tool-call": "get_weather"}, stream=True)
    chunks = [json.loads(d) for _, d in sse(r.content) if d != "[DONE]"]
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    args = "".join(tc["function"].get("arguments", "") for tc in calls)
    assert json.loads(args) == {"city": "Paris"} and len(calls) == 4
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    rec = sim.record(h["id"])
    assert rec["sent_tool_calls"] == [{"id": calls[0]["id"], "name": "get_weather", "arguments": args}]

    r, rec = sim.post("/v1/chat/completions", {**body, "stream": False}, headers={"x-sim-tool-call": "other"})
    assert r.status_code == 400 and "other" in r.json()["error"]["message"]
    assert rec["checks"] and "other" in rec["checks"][0]


def test_openai_embeddings_and_max_tokens(sim):
    r, rec = sim.post("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a b", "c d e"]})
    assert r.status_code == 200 and len(r.json()["data"]) == 2 and r.json()["usage"]["prompt_tokens"] == 5
    r, _ = sim.post("/v1/chat/completions", {**CHAT, "max_tokens": 2})
    assert r.json()["choices"][0]["finish_reason"] == "length" and r.json()["usage"]["completion_tokens"] == 2


def test_azure(sim):
    path = "/openai/deployments/my-gpt4o/chat/completions"
    r, rec = sim.post(path, {"messages": CHAT["messages"]})
    assert r.status_code == 400
    assert r.json() == {"error": {"code": "MissingApiVersionParameter", "message":
                                  "The api-version query parameter (?api-version=) is required for all requests."}}
    assert rec["provider"] == "azure-openai" and rec["checks"]

    r, rec = sim.post(path + "?api-version=2024-10-21", {"messages": CHAT["messages"]})
    assert r.status_code == 200 and r.json()["model"] == "my-gpt4o" and "prompt_filter_results" in r.json()
    assert rec["query"] == {"api-version": ["2024-10-21"]} and rec["model"] == "my-gpt4o"

    r, _ = sim.post(path + "?api-version=2024-10-21", {"messages": CHAT["messages"], "stream": True}, stream=True)
    first = json.loads(sse(r.content)[0][1])
    assert first["choices"] == [] and first["model"] == "" and first["prompt_filter_results"]
    r, _ = sim.post("/openai/deployments/e/embeddings?api-version=2024-10-21", {"input": "x"})
    assert r.status_code == 200 and r.json()["data"][0]["embedding"]


# ---- Anthropic ---------------------------------------------------------------------------

def anthropic_stream(r: requests.Response) -> list[tuple[str, dict]]:
    out = []
    for name, data in sse(r.content):
        doc = json.loads(data)
        assert doc["type"] == name
        out.append((name, doc))
    return out


def test_anthropic_json(sim):
    h = {"anthropic-version": "2023-06-01", "x-sim-cached-tokens": "2", "x-sim-cache-write-tokens": "1"}
    r, rec = sim.post("/v1/messages", ANTHROPIC, headers=h)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["type"] == "message" and doc["stop_reason"] == "end_turn"
    assert doc["content"] == [{"type": "text", "text": "Hello from open word1 word2 word3 word4"}]
    # 6 words in all, 2 read from cache and 1 written: 3 uncached
    assert doc["usage"] == {"input_tokens": 3, "cache_creation_input_tokens": 1, "cache_read_input_tokens": 2,
                            "output_tokens": 5}
    assert rec["provider"] == "anthropic" and rec["sent_usage"] == doc["usage"] and rec["model"] == ANTHROPIC["model"]


def test_anthropic_stream_thinking_and_tool(sim):
    body = {**ANTHROPIC, "stream": True, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "tools": [{"name": "get_weather", "input_schema": WEATHER_TOOL["params"]}]}
    r, h = sim.post("/v1/messages", body, headers={"anthropic-version": "2023-06-01", "x-sim-tool-call": "get_weather",
                                                   "x-sim-tokens": "2", "x-sim-reasoning-tokens": "2"}, stream=True)
    events = anthropic_stream(r)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"] and "ping" in names
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use"]
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert "".join(d.get("thinking", "") for d in deltas) == "Let me think step1"
    assert any(d["type"] == "signature_delta" for d in deltas)
    assert "".join(d.get("text", "") for d in deltas) == "Hello from open word1"
    args = [d["partial_json"] for d in deltas if d["type"] == "input_json_delta"]
    assert len(args) == 3 and json.loads("".join(args)) == {"city": "Paris"}
    md = events[-2][1]
    assert md["delta"]["stop_reason"] == "tool_use" and md["usage"] == {"output_tokens": 2 + 3 + 2}
    rec = sim.record(h["id"])
    start_usage = events[0][1]["message"]["usage"]
    assert rec["sent_usage"] == {**start_usage, "output_tokens": 7} and start_usage["input_tokens"] == 6
    assert rec["sent_text"] == "Hello from open word1" and rec["sent_reasoning"] == "Let me think step1"


def test_anthropic_checks(sim):
    r, rec = sim.post("/v1/messages", ANTHROPIC)
    assert r.status_code == 400
    assert r.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                   "message": "anthropic-version: header is required"}}
    bad = {"model": "c", "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}],
           "stream_options": {}}
    r, rec = sim.post("/v1/messages", bad, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert any("max_tokens" in c for c in rec["checks"]) and any('"system"' in c for c in rec["checks"])
    assert any("stream_options" in c for c in rec["checks"])


def test_vertex_anthropic(sim):
    path = f"{VERTEX}/anthropic/models/claude-sonnet-4-5@20250929"
    body = {k: v for k, v in ANTHROPIC.items() if k != "model"} | {"anthropic_version": "vertex-2023-10-16"}
    r, rec = sim.post(path + ":rawPredict", body)
    assert r.status_code == 200 and r.json()["model"] == "claude-sonnet-4-5@20250929"
    assert rec["provider"] == "vertex-anthropic" and rec["operation"] == "rawPredict"
    r, _ = sim.post(path + ":streamRawPredict", {**body, "stream": True}, stream=True)
    assert [n for n, _ in anthropic_stream(r)][-1] == "message_stop"
    r, rec = sim.post(path + ":rawPredict", {**body, "model": "claude"})
    assert r.status_code == 400 and r.json()["type"] == "error" and any("model" in c for c in rec["checks"])


# ---- Bedrock --------------------------------------------------------------------------------

def test_converse_json(sim):
    r, rec = sim.post(CLAUDE_PATH + "/converse", CONVERSE, headers={"x-sim-cached-tokens": "2"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["output"]["message"] == {"role": "assistant",
                                        "content": [{"text": "Hello from open word1 word2 word3 word4"}]}
    assert doc["stopReason"] == "end_turn"
    assert doc["usage"] == {"inputTokens": 4, "outputTokens": 5, "totalTokens": 11, "cacheReadInputTokens": 2,
                            "cacheWriteInputTokens": 0}
    assert rec["provider"] == "bedrock-converse" and rec["model"] == CLAUDE_ID and rec["sent_usage"] == doc["usage"]
    assert r.headers["x-amzn-requestid"]


def test_converse_stream_frames(sim):
    body = {**CONVERSE, "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {
        "json": WEATHER_TOOL["params"]}}}]}, "additionalModelRequestFields": {"thinking": {
            "type": "enabled", "budget_tokens": 1024}}}
    r, h = sim.post(CLAUDE_PATH + "/converse-stream", body, stream=True,
                    headers={"x-sim-tool-call": "get_weather", "x-sim-tokens": "2", "x-sim-cache-write-tokens": "1"})
    assert r.headers["content-type"] == "application/vnd.amazon.eventstream"
    chunks = http_chunks(r)
    frames = read_frames(b"".join(chunks))
    # the chunks do not follow frame boundaries: some end inside a frame
    ends, pos = set(), 0
    for c in chunks:
        pos += len(c)
        ends.add(pos)
    frame_ends, pos = set(), 0
    for hd, payload in frames:
        pos += 16 + len(payload) + sum(4 + len(k) + len(v.encode()) for k, v in hd.items())
        frame_ends.add(pos)
    assert ends - frame_ends and len(chunks[0]) == 7
    assert all(hd[":message-type"] == "event" and hd[":content-type"] == "application/json" for hd, _ in frames)
    types = [hd[":event-type"] for hd, _ in frames]
    events = [json.loads(p) for _, p in frames]
    assert types[0] == "messageStart" and types[-2:] == ["messageStop", "metadata"]
    assert "contentBlockStart" in types and all("p" in e for e in events)
    deltas = [e["delta"] for t, e in zip(types, events) if t == "contentBlockDelta"]
    assert "".join(d.get("text", "") for d in deltas) == "Hello from open word1"
    assert "".join(d["reasoningContent"].get("text", "") for d in deltas if "reasoningContent" in d) == \
        "Let me think step1 step2"
    tool_args = "".join(d["toolUse"]["input"] for d in deltas if "toolUse" in d)
    assert json.loads(tool_args) == {"city": "Paris"}
    assert events[-2]["stopReason"] == "tool_use"
    usage = events[-1]["usage"]
    assert usage == {"inputTokens": 5, "outputTokens": 2 + 3 + 3, "totalTokens": 14, "cacheReadInputTokens": 0,
                     "cacheWriteInputTokens": 1}
    rec = sim.record(h["id"])
    assert rec["sent_usage"] == usage and rec["sent_tool_calls"][0]["arguments"] == tool_args


def test_converse_checks(sim):
    r, rec = sim.post(CLAUDE_PATH + "/converse", {"model": "x", "messages": [{"role": "user", "content": "hi"}],
                                                  "max_tokens": 5})
    assert r.status_code == 400 and set(r.json()) == {"message"}
    assert r.headers["x-amzn-errortype"].startswith("ValidationException:")
    assert any("[model]" in c for c in rec["checks"]) and any("content" in c for c in rec["checks"])
    r, rec = sim.post(CLAUDE_PATH + "/converse", CONVERSE, headers={"content-type": "text/plain"})
    assert r.status_code == 415


def test_invoke_anthropic(sim):
    body = {k: v for k, v in ANTHROPIC.items() if k != "model"} | {"anthropic_version": "bedrock-2023-05-31"}
    r, rec = sim.post(CLAUDE_PATH + "/invoke", body)
    assert r.status_code == 200 and r.json()["type"] == "message"
    assert r.headers["x-amzn-bedrock-input-token-count"] == "6" and rec["provider"] == "bedrock-anthropic"

    r, h = sim.post(CLAUDE_PATH + "/invoke-with-response-stream", body, stream=True)
    frames = read_frames(r.content)
    assert {hd[":event-type"] for hd, _ in frames} == {"chunk"}
    events = [json.loads(base64.b64decode(json.loads(p)["bytes"])) for _, p in frames]
    assert [e["type"] for e in events][0] == "message_start" and events[-1]["type"] == "message_stop"
    assert events[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 5

    r, rec = sim.post(CLAUDE_PATH + "/invoke", {**body, "stream": True, "model": "m"})
    assert r.status_code == 400 and len(rec["checks"]) == 2


def test_titan_embeddings(sim):
    r, rec = sim.post("/model/amazon.titan-embed-text-v2%3A0/invoke",
                      {"inputText": "one two three", "dimensions": 256, "normalize": True})
    assert r.status_code == 200
    doc = r.json()
    assert len(doc["embedding"]) == 256 and doc["inputTextTokenCount"] == 3
    assert abs(sum(v * v for v in doc["embedding"]) - 1) < 1e-3
    assert rec["provider"] == "bedrock-titan" and rec["sent_usage"] == {"inputTextTokenCount": 3}
    r, _ = sim.post("/model/amazon.titan-embed-text-v2%3A0/invoke", {"input": "x"})
    assert r.status_code == 400 and "message" in r.json()


def test_bedrock_reset_counts_frames(sim):
    r, h = sim.post(CLAUDE_PATH + "/converse-stream", CONVERSE, stream=True, headers={"x-sim-reset-after": "3"})
    got = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for c in r.iter_content(None):
            got += c
    complete, pos = 0, 0
    while pos + 4 <= len(got) and pos + struct.unpack(">I", got[pos:pos + 4])[0] <= len(got):
        pos += struct.unpack(">I", got[pos:pos + 4])[0]
        complete += 1
    assert complete == 3 and len(read_frames(got[:pos])) == 3
    rec = sim.record(h["id"])
    assert rec["sent_text"] == "Hello from open word1"  # messageStart + 2 text deltas


# ---- Gemini ---------------------------------------------------------------------------------

def test_gemini_studio_json_and_stream(sim):
    path = "/v1beta/models/gemini-2.5-flash"
    r, rec = sim.post(path + ":generateContent", GEMINI, headers={"x-sim-reasoning-tokens": "4"})
    assert r.status_code == 200, r.text
    doc = r.json()
    cand = doc["candidates"][0]
    assert cand["content"]["role"] == "model" and cand["finishReason"] == "STOP"
    assert cand["content"]["parts"] == [{"text": "Hello from open word1 word2 word3 word4"}]
    um = doc["usageMetadata"]
    assert (um["promptTokenCount"], um["candidatesTokenCount"], um["thoughtsTokenCount"], um["totalTokenCount"]) == \
        (6, 5, 4, 15)
    assert rec["provider"] == "gemini" and rec["sent_usage"] == um

    r, h = sim.post(path + ":streamGenerateContent?alt=sse", GEMINI, stream=True,
                    headers={"x-sim-cached-tokens": "2"})
    assert b"\r\n\r\n" in r.content
    chunks = [json.loads(d) for _, d in sse(r.content)]
    assert len(chunks) == 5
    text = "".join(p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"])
    counts = [c["usageMetadata"]["candidatesTokenCount"] for c in chunks]
    assert counts == [1, 2, 3, 4, 5] and chunks[-1]["usageMetadata"]["cachedContentTokenCount"] == 2
    rec = sim.record(h["id"])
    assert text == rec["sent_text"] and rec["sent_usage"] == chunks[-1]["usageMetadata"]
    assert rec["query"] == {"alt": ["sse"]}


def test_gemini_function_call_and_checks(sim):
    body = {**GEMINI, "tools": [{"functionDeclarations": [{"name": "get_weather",
                                                           "parameters": WEATHER_TOOL["params"]}]}]}
    r, h = sim.post("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", body, stream=True,
                    headers={"x-sim-tool-call": "get_weather"})
    chunks = [json.loads(d) for _, d in sse(r.content)]
    parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
    assert parts == [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]
    bad = {"contents": [{"role": "assistant", "parts": [{"type": "text", "text": "x"}]}], "temperature": 1}
    r, rec = sim.post("/v1beta/models/gemini-2.5-flash:generateContent", bad)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert any("valid role" in c for c in rec["checks"]) and any('"temperature"' in c for c in rec["checks"])
    assert any('"type"' in c for c in rec["checks"])


def test_gemini_embeddings(sim):
    body = {"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "a b"}]}},
                         {"model": "models/text-embedding-004", "content": {"parts": [{"text": "c"}]},
                          "outputDimensionality": 16}]}
    r, rec = sim.post("/v1beta/models/text-embedding-004:batchEmbedContents", body)
    assert r.status_code == 200
    assert [len(e["values"]) for e in r.json()["embeddings"]] == [768, 16]
    r, rec = sim.post(f"{VERTEX}/google/models/text-embedding-005:predict",
                      {"instances": [{"content": "one two"}, {"content": "three"}],
                       "parameters": {"outputDimensionality": 8}})
    preds = r.json()["predictions"]
    assert [p["embeddings"]["statistics"]["token_count"] for p in preds] == [2, 1]
    assert len(preds[0]["embeddings"]["values"]) == 8 and rec["provider"] == "vertex-gemini"


def test_vertex_gemini_stream(sim):
    r, h = sim.post(f"{VERTEX}/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
                    {**GEMINI, "generationConfig": {"thinkingConfig": {"includeThoughts": True}}}, stream=True)
    chunks = [json.loads(d) for _, d in sse(r.content)]
    parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
    assert [p.get("thought", False) for p in parts] == [True] * 3 + [False] * 5
    assert chunks[-1]["usageMetadata"]["thoughtsTokenCount"] == 3
    assert sim.record(h["id"])["sent_reasoning"] == "Let me think step1 step2"


# ---- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path,status,check", [
    ("/v1/chat/completions", 429, lambda r: r.json()["error"]["type"] == "rate_limit_exceeded"),
    ("/openai/deployments/d/chat/completions?api-version=1", 429, lambda r: r.json()["error"]["code"] == "429"),
    ("/v1/messages", 529, lambda r: r.json() == {"type": "error", "error": {
        "type": "overloaded_error", "message": "simulated error 529"}}),
    (CLAUDE_PATH + "/converse", 429, lambda r: r.json() == {"message": "simulated error 429"} and r.headers[
        "x-amzn-errortype"] == "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
    (CLAUDE_PATH + "/invoke", 503, lambda r: r.headers["x-amzn-errortype"].startswith("ServiceUnavailableException:")),
    ("/v1beta/models/g:generateContent", 429, lambda r: r.json() == {"error": {
        "code": 429, "message": "simulated error 429", "status": "RESOURCE_EXHAUSTED"}}),
    (f"{VERTEX}/google/models/g:generateContent", 500, lambda r: r.json()["error"]["status"] == "INTERNAL"),
])
def test_injected_errors(sim, path, status, check):
    r, rec = sim.post(path, {}, headers={"x-sim-status": str(status)})
    assert r.status_code == status and check(r), (r.headers, r.text)
    assert rec["response"]["status"] == status


def test_injected_error_type_and_body(sim):
    r, _ = sim.post(CLAUDE_PATH + "/converse", CONVERSE, headers={"x-sim-status": "424",
                                                                  "x-sim-error-type": "ModelErrorException"})
    assert r.status_code == 424 and r.headers["x-amzn-errortype"].startswith("ModelErrorException:")
    r, _ = sim.post("/v1/messages", ANTHROPIC, headers={"x-sim-status": "400", "x-sim-body": '{"x":1}'})
    assert r.status_code == 400 and r.json() == {"x": 1}


def test_stream_errors(sim):
    r, _ = sim.post(CLAUDE_PATH + "/converse-stream", CONVERSE, stream=True,
                    headers={"x-sim-stream-error": "throttlingException"})
    frames = read_frames(r.content)
    assert len(frames) == 4
    hd, payload = frames[-1]
    assert hd == {":exception-type": "throttlingException", ":content-type": "application/json",
                  ":message-type": "exception"}
    assert "message" in json.loads(payload)

    r, _ = sim.post("/v1/messages", {**ANTHROPIC, "stream": True}, stream=True,
                    headers={"anthropic-version": "2023-06-01", "x-sim-stream-error": "overloaded_error"})
    name, data = sse(r.content)[-1]
    assert name == "error" and json.loads(data)["error"]["type"] == "overloaded_error"

    r, _ = sim.post("/v1beta/models/g:streamGenerateContent?alt=sse", GEMINI, stream=True,
                    headers={"x-sim-stream-error": "UNAVAILABLE", "x-sim-stream-error-after": "1"})
    events = sse(r.content)
    assert len(events) == 2 and json.loads(events[-1][1])["error"] == {
        "code": 503, "message": "simulated stream error UNAVAILABLE", "status": "UNAVAILABLE"}

    r, _ = sim.post("/v1/chat/completions", {**CHAT, "stream": True}, stream=True,
                    headers={"x-sim-stream-error": "server_error"})
    assert json.loads(sse(r.content)[-1][1])["error"]["type"] == "server_error"


# ---- auth -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path,body,good,shape", [
    ("/v1/chat/completions", CHAT, {"authorization": "Bearer key-1"}, lambda d: d["error"]["message"]),
    ("/openai/deployments/d/chat/completions?api-version=1", CHAT, {"api-key": "key-1"},
     lambda d: d["error"]["code"] == "401"),
    ("/openai/deployments/d/chat/completions?api-version=1", CHAT, {"authorization": "Bearer ya29.token"},
     lambda d: d["error"]["code"] == "401"),
    ("/v1/messages", ANTHROPIC, {"x-api-key": "key-1"},
     lambda d: d["type"] == "error" and d["error"]["type"] == "authentication_error"),
    ("/v1beta/models/g:generateContent", GEMINI, {"x-goog-api-key": "key-1"},
     lambda d: d["error"]["status"] == "UNAUTHENTICATED" and d["error"]["code"] == 401),
    (f"{VERTEX}/google/models/g:generateContent", GEMINI, {"authorization": "Bearer ya29.token"},
     lambda d: d["error"]["status"] == "UNAUTHENTICATED"),
    (f"{VERTEX}/anthropic/models/c:rawPredict",
     {"anthropic_version": "vertex-2023-10-16", "max_tokens": 5, "messages": ANTHROPIC["messages"]},
     {"authorization": "Bearer ya29.token"}, lambda d: d["error"]["status"] == "UNAUTHENTICATED"),
])
def test_api_keys(sim, path, body, good, shape):
    base = {"anthropic-version": "2023-06-01"}
    r, rec = sim.post(path, body, headers=base, listener="auth")
    assert r.status_code == 401 and shape(r.json()), r.text
    assert rec["checks"]
    wrong = {k: v.replace("key-1", "key-2").replace("ya29.token", "nope") for k, v in good.items()}
    r, _ = sim.post(path, body, headers={**base, **wrong}, listener="auth")
    assert r.status_code == 401
    r, rec = sim.post(path, body, headers={**base, **good}, listener="auth")
    assert r.status_code == 200 and rec["checks"] == [], r.text
    r, _ = sim.post(path, body, headers=base, listener="open")  # no expectations there
    assert r.status_code == 200


def signed(sim, path: str, body: bytes, *, token: str | None = None, region: str = "us-east-1",
           listener: str = "auth", secret: str = SECRET, extra: dict | None = None) -> dict:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method="POST", url=sim.urls[listener] + path, data=body,
                     headers={"content-type": "application/json", **(extra or {})})
    SigV4Auth(Credentials(AKID, secret, token), "bedrock", region).add_auth(req)
    return dict(req.headers.items())


def test_sigv4_accepted_and_tampered(sim):
    path = CLAUDE_PATH + "/converse"
    body = json.dumps(CONVERSE).encode()
    h = signed(sim, path, body, extra={"x-amz-content-sha256": hashlib.sha256(body).hexdigest()})
    # Unsigned headers that a proxy adds do not matter.
    r, rec = sim.post(path, data=body, headers={**h, "x-forwarded-proto": "http", "x-envoy-expected-rq-timeout-ms": "1"},
                      listener="auth")
    assert r.status_code == 200, r.text
    assert rec["checks"] == []

    tampered = body.replace(b"weather", b"wEather")
    assert len(tampered) == len(body)
    h2 = {k: v for k, v in h.items() if k.lower() != "x-amz-content-sha256"}
    r, rec = sim.post(path, data=tampered, headers=h2, listener="auth")
    assert r.status_code == 403
    assert r.json()["message"].startswith("The request signature we calculated does not match the signature you "
                                          "provided")
    assert r.headers["x-amzn-errortype"].startswith("InvalidSignatureException:") and rec["checks"]
    r, _ = sim.post(path, data=tampered, headers=h, listener="auth")
    assert r.status_code == 403 and "x-amz-content-sha256" in r.json()["message"]

    r, _ = sim.post(path, data=body, headers=signed(sim, path, body, secret="wrong"), listener="auth")
    assert r.status_code == 403 and r.headers["x-amzn-errortype"].startswith("InvalidSignatureException:")
    r, _ = sim.post(path, data=body, listener="auth")
    assert r.status_code == 403 and r.headers["x-amzn-errortype"].startswith("MissingAuthenticationTokenException")


def test_sigv4_session_token_and_stream(sim):
    path = CLAUDE_PATH + "/converse-stream"
    body = json.dumps(CONVERSE).encode()
    r, _ = sim.post(path, data=body, headers=signed(sim, path, body, token=TOKEN, listener="aws-session",
                                                    region="eu-west-3"), listener="aws-session", stream=True)
    assert r.status_code == 200 and read_frames(r.content)[-1][0][":event-type"] == "metadata"
    r, _ = sim.post(path, data=body, headers=signed(sim, path, body, listener="aws-session"), listener="aws-session")
    assert r.status_code == 403 and r.headers["x-amzn-errortype"].startswith("UnrecognizedClientException:")


def test_lambda_invoke_signed_for_lambda(sim):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    path = "/2015-03-31/functions/chat-fn/invocations?Qualifier=live"
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()

    def headers(service: str = "lambda", host: str = "lambda.eu-west-1.amazonaws.com", **extra) -> dict:
        req = AWSRequest(method="POST", url=f"http://{host}{path}", data=body,
                         headers={"content-type": "application/json", "x-amz-invocation-type": "RequestResponse",
                                  **extra})
        SigV4Auth(Credentials(AKID, SECRET), service, "eu-west-1").add_auth(req)
        return {**dict(req.headers.items()), "host": host}  # signed for that host, sent to the simulator

    r, rec = sim.post(path, data=body, headers=headers(), listener="auth")
    assert r.status_code == 200 and rec["checks"] == [], r.text
    assert rec["provider"] == "lambda" and rec["lambda"]["qualifier"] == "live"
    assert r.json()["object"] == "chat.completion" and r.json()["usage"]["total_tokens"] > 0
    # Signed for Bedrock, or for another host: refused as Lambda refuses them.
    r, _ = sim.post(path, data=body, headers=headers(service="bedrock"), listener="auth")
    assert r.status_code == 403 and r.headers["x-amzn-errortype"] == "InvalidSignatureException"
    assert "Message" in r.json()
    r, rec = sim.post(path, data=body, headers=headers(host="bedrock-runtime.eu-west-1.amazonaws.com"),
                      listener="auth")
    assert r.status_code == 400 and rec["checks"], rec
    # The function raising: 200 with X-Amz-Function-Error; asynchronous: 202.
    r, _ = sim.post(path, data=body, headers=headers(**{"x-sim-function-error": "KeyError"}), listener="auth")
    assert r.status_code == 200 and r.headers["x-amz-function-error"] == "Unhandled"
    assert r.json()["errorType"] == "KeyError"
    r, rec = sim.post(path, data=body, headers=headers(**{"x-amz-invocation-type": "Event"}), listener="auth")
    assert r.status_code == 202 and r.content == b"" and rec["lambda"]["invocation_type"] == "Event"


def test_unknown_path_and_control(sim):
    r = sim.session.get(sim.urls["open"] + "/healthz", timeout=5)
    assert r.status_code == 405 and "simulator" in r.json()["error"]["message"]
    r, rec = sim.post("/nothing/here", {})
    assert r.status_code == 404 and rec["provider"] is None
    assert sim.session.get(sim.urls["open"] + "/_sim/health", timeout=5).text == "ok"


# ---- the official clients read what it sends ---------------------------------------------------

def test_botocore_client_converse_invoke_and_errors(sim):
    import botocore.session

    client = botocore.session.get_session().create_client(
        "bedrock-runtime", region_name="us-west-2", endpoint_url=sim.urls["auth"],
        aws_access_key_id=AKID, aws_secret_access_key=SECRET)
    # An inference-profile ARN: ':' and '/' travel percent-encoded in one segment.
    arn = "arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0"
    out = client.converse(modelId=arn, messages=[{"role": "user", "content": [{"text": "hi there"}]}])
    assert out["usage"] == {"inputTokens": 2, "outputTokens": 5, "totalTokens": 7}
    events = list(client.converse_stream(modelId=CLAUDE_ID, messages=[{"role": "user", "content": [
        {"text": "hi there"}]}])["stream"])
    assert list(events[0]) == ["messageStart"] and events[-1]["metadata"]["usage"]["outputTokens"] == 5
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10,
                       "messages": [{"role": "user", "content": "hi"}]})
    chunks = client.invoke_model_with_response_stream(modelId=CLAUDE_ID, body=body)["body"]
    types = [json.loads(e["chunk"]["bytes"])["type"] for e in chunks]
    assert types[0] == "message_start" and types[-1] == "message_stop"

    def inject(request, **_):
        request.headers["x-sim-stream-error"] = "throttlingException"

    client.meta.events.register("before-sign.bedrock-runtime.ConverseStream", inject)
    stream = client.converse_stream(modelId=CLAUDE_ID, messages=[{"role": "user", "content": [{"text": "x"}]}])
    with pytest.raises(Exception, match="throttlingException"):
        list(stream["stream"])

    from botocore.exceptions import ClientError
    bad = botocore.session.get_session().create_client(
        "bedrock-runtime", region_name="us-west-2", endpoint_url=sim.urls["auth"],
        aws_access_key_id=AKID, aws_secret_access_key="not-the-secret")
    with pytest.raises(ClientError) as e:
        bad.converse(modelId=CLAUDE_ID, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_anthropic_sdk_direct_and_vertex(sim):
    import anthropic

    client = anthropic.Anthropic(base_url=sim.urls["auth"], api_key="key-1", max_retries=0)
    tools = [{"name": "get_weather", "input_schema": WEATHER_TOOL["params"]}]
    with client.messages.stream(model="claude-sim-1", max_tokens=2048, messages=ANTHROPIC["messages"],
                                thinking={"type": "enabled", "budget_tokens": 1024}, tools=tools,
                                extra_headers={"x-sim-tool-call": "get_weather", "x-sim-tokens": "2"}) as s:
        msg = s.get_final_message()
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use"]
    assert msg.content[2].input == {"city": "Paris"} and msg.stop_reason == "tool_use"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (4, 2 + 3 + 3)
    with pytest.raises(anthropic.InternalServerError) as e:
        client.messages.create(model="c", max_tokens=5, messages=ANTHROPIC["messages"],
                               extra_headers={"x-sim-status": "529"})
    assert e.value.status_code == 529

    vertex = anthropic.AnthropicVertex(region="us-east5", project_id="proj", access_token="ya29.token",
                                       base_url=sim.urls["auth"] + "/v1", max_retries=0)
    with vertex.messages.stream(model="claude-sonnet-4-5@20250929", max_tokens=10,
                                messages=ANTHROPIC["messages"]) as s:
        assert s.get_final_message().usage.output_tokens == 5


def test_openai_sdk_azure(sim):
    import openai

    client = openai.AzureOpenAI(azure_endpoint=sim.urls["auth"], api_key="key-1", api_version="2024-10-21",
                                max_retries=0)
    stream = client.chat.completions.create(model="dep", messages=CHAT["messages"], stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Hello from auth word1 word2 word3 word4"
    assert chunks[-1].usage.prompt_tokens == CHAT_WORDS


def test_checks_recorded_under_injected_error(sim):
    r, rec = sim.post(CLAUDE_PATH + "/converse", {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                      headers={"x-sim-status": "503"})
    assert r.status_code == 503 and r.json() == {"message": "simulated error 503"}
    assert any("[model]" in c for c in rec["checks"])
