"""OpenAI (and OpenAI-compatible servers under any path prefix) and Azure OpenAI."""

from __future__ import annotations

import base64
import json
import struct
import time
from typing import Any

from .core import Answer, Ctx, Reject, Response, Stream, count_words, json_response, make_answer

CHAT_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def error(status: int, message: str, etype: str | None = None, code: str | None = None) -> Response:
    if etype is None:
        etype = {401: "invalid_request_error", 403: "permission_denied", 404: "invalid_request_error",
                 429: "rate_limit_exceeded"}.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return json_response(status, {"error": {"message": message, "type": etype, "param": None, "code": code}})


def azure_error(status: int, message: str, code: str | None = None) -> Response:
    return json_response(status, {"error": {"code": code or str(status), "message": message}})


def declared_tools(doc: dict) -> dict[str, Any] | None:
    tools: dict[str, Any] = {}
    seen = False
    for t in doc.get("tools") or []:
        seen = True
        fn = t.get("function") if isinstance(t, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            tools[fn["name"]] = fn.get("parameters")
    for fn in doc.get("functions") or []:
        seen = True
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            tools[fn["name"]] = fn.get("parameters")
    return tools if seen else None


def prompt_words(op: str, doc: dict) -> int:
    """Words of the text the model reads (token arrays count one per token)."""
    texts: list[str] = []
    ints = 0
    if op == "chat":
        for m in doc.get("messages") or []:
            c = m.get("content") if isinstance(m, dict) else None
            if isinstance(c, str):
                texts.append(c)
            elif isinstance(c, list):
                texts += [p.get("text") for p in c if isinstance(p, dict) and isinstance(p.get("text"), str)]
    else:
        key = "prompt" if op == "completions" else "input"
        v = doc.get(key)
        items = v if isinstance(v, list) else [v]
        for it in items:
            if isinstance(it, str):
                texts.append(it)
            elif isinstance(it, int):
                ints += 1
            elif isinstance(it, list):
                ints += sum(1 for x in it if isinstance(x, int))
    return count_words(texts) + ints


def check(ctx: Ctx, op: str, doc: Any, azure: bool) -> None:
    if not isinstance(doc, dict):
        ctx.fail("simulator: request body is not a JSON object")
        return
    model = doc.get("model")
    if not azure and (not isinstance(model, str) or not model):
        ctx.fail("simulator: you must provide a model parameter")
    if op == "chat":
        msgs = doc.get("messages")
        if not isinstance(msgs, list) or not msgs:
            ctx.fail("simulator: 'messages' must be a non-empty array")
        else:
            for i, m in enumerate(msgs):
                if not isinstance(m, dict) or m.get("role") not in CHAT_ROLES:
                    ctx.fail(f"simulator: messages[{i}].role must be one of {sorted(CHAT_ROLES)}")
    elif op == "completions":
        if "prompt" not in doc:
            ctx.fail("simulator: 'prompt' is required")
    elif "input" not in doc:
        ctx.fail("simulator: 'input' is required")


def handle(ctx: Ctx, op: str, model: str | None, azure: bool, counter: int) -> Response:
    """op: chat | completions | embeddings. `model`: the Azure deployment (the body
    model wins when present)."""
    doc = ctx.req.json()
    check(ctx, op, doc, azure)
    ctx.reject_if_failed()
    model = doc.get("model") or model
    ctx.record["model"] = model
    knobs = ctx.knobs
    listener = ctx.req.listener
    ident = f"sim-{counter}"
    created = int(time.time())
    words = prompt_words(op, doc)

    if op == "embeddings":
        inputs = doc.get("input")
        n = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
        dims = doc.get("dimensions") or 8
        data = []
        for i in range(n):
            vec = [round(((i + 1) * (j + 1) % 17) / 17.0, 6) for j in range(dims)]
            if doc.get("encoding_format") == "base64":
                emb: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            else:
                emb = vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        prompt = max(1, words)
        usage = {"prompt_tokens": prompt, "total_tokens": prompt}
        resp = json_response(200, {"object": "list", "data": data, "model": model, "usage": usage},
                             gzip_body=knobs.gzip)
        resp.usage = dict(usage)
        resp.sent = {"sent_text": "", "sent_reasoning": "", "sent_tool_calls": [], "sent_usage": dict(usage)}
        return resp

    chat = op == "chat"
    tools = declared_tools(doc) if chat else None
    if not chat and knobs.tool_call:
        raise Reject(400, "simulator: x-sim-tool-call needs /chat/completions")
    limit = doc.get("max_completion_tokens", doc.get("max_tokens"))
    ans = make_answer(knobs=knobs, listener=listener, words=words, tools=tools, thinking_requested=False,
                      max_tokens=limit, tool_id_prefix="call_", id_seed=ctx.req.body, reasoning_always=True)
    reasoning = max(0, knobs.reasoning or 0)
    finish = {"stop": "stop", "length": "length", "tool": "tool_calls"}[ans.stop]

    def usage(completion: int) -> dict:
        u = {"prompt_tokens": ans.usage.prompt, "completion_tokens": completion,
             "total_tokens": ans.usage.prompt + completion,
             "prompt_tokens_details": {"cached_tokens": ans.usage.cached, "audio_tokens": 0}}
        if completion:
            u["completion_tokens_details"] = {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        return u

    full_usage = usage(ans.usage.output)
    stream = doc.get("stream") is True
    include_usage = stream and bool((doc.get("stream_options") or {}).get("include_usage"))
    obj = "chat.completion" if chat else "text_completion"
    tool_calls = ([{"id": ans.tool.id, "type": "function",
                    "function": {"name": ans.tool.name, "arguments": ans.tool.text}}] if ans.tool else None)
    if not stream:
        text = ans.full_text
        if chat:
            msg: dict = {"role": "assistant", "content": text if (text or not ans.tool) else None, "refusal": None}
            if tool_calls:
                msg["tool_calls"] = tool_calls
            choice: dict = {"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        if azure:
            choice["content_filter_results"] = _azure_filter()
        body = {"id": ident, "object": obj, "created": created, "model": model, "choices": [choice],
                "usage": full_usage, "system_fingerprint": None}
        if azure:
            body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _azure_filter()}]
        resp = json_response(200, body, gzip_body=knobs.gzip)
        resp.usage = full_usage
        resp.sent = ans.sent(full_usage)
        return resp

    return _stream(ctx, ans, chat, azure, ident, created, model, finish, include_usage, full_usage)


def _azure_filter() -> dict:
    return {k: {"filtered": False, "severity": "safe"} for k in ("hate", "self_harm", "sexual", "violence")}


def _stream(ctx: Ctx, ans: Answer, chat: bool, azure: bool, ident: str, created: int, model: str,
            finish: str, include_usage: bool, full_usage: dict) -> Response:
    chunk_obj = "chat.completion.chunk" if chat else "text_completion"
    st = Stream()

    def event(choices: list, u: Any = None, **snap) -> None:
        c = {"id": ident, "object": chunk_obj, "created": created, "model": model,
             "system_fingerprint": None, "choices": choices}
        if include_usage:
            c["usage"] = u
        st.add(b"data: " + json.dumps(c).encode() + b"\n\n", **snap)

    if azure and chat:
        # Azure's first event: no choices, empty id and model, the prompt filter results.
        first = {"choices": [], "created": 0, "id": "", "model": "", "object": "",
                 "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _azure_filter()}]}
        st.add(b"data: " + json.dumps(first).encode() + b"\n\n")
    if chat:
        event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                "finish_reason": None}])
    for w in ans.text:
        if chat:
            event([{"index": 0, "delta": {"content": w}, "logprobs": None, "finish_reason": None}], text=w)
        else:
            event([{"index": 0, "text": w, "logprobs": None, "finish_reason": None}], text=w)
    if ans.tool:
        t = ans.tool
        event([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": t.id, "type": "function",
                                                      "function": {"name": t.name, "arguments": ""}}]},
                "logprobs": None, "finish_reason": None}], tool_start={"id": t.id, "name": t.name})
        for piece in t.pieces:
            event([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]},
                    "logprobs": None, "finish_reason": None}], tool_args=piece)
    if chat:
        event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}])
    else:
        event([{"index": 0, "text": "", "logprobs": None, "finish_reason": finish}])
    if include_usage:
        event([], full_usage, usage=full_usage)
    st.add(b"data: [DONE]\n\n")

    def err(etype: str) -> bytes:
        return b"data: " + json.dumps({"error": {"message": f"simulated stream error {etype}", "type": etype,
                                                 "param": None, "code": None}}).encode() + b"\n\n"

    st.cut_with_error(ctx.knobs, err)
    resp = st.response("text/event-stream; charset=utf-8", ctx.knobs)
    resp.usage = full_usage if include_usage else None
    return resp
