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


# ---- the Responses API (/v1/responses; Azure /openai/v1/responses) -----------------

def responses_words(doc: dict) -> int:
    """Words of `instructions` and of every text in `input` (a string, or items whose
    content is a string or input_text parts)."""
    texts: list[str] = []
    if isinstance(doc.get("instructions"), str):
        texts.append(doc["instructions"])
    items = doc.get("input")
    for it in items if isinstance(items, list) else [items]:
        if isinstance(it, str):
            texts.append(it)
        elif isinstance(it, dict):
            c = it.get("content")
            if isinstance(c, str):
                texts.append(c)
            elif isinstance(c, list):
                texts += [p.get("text") for p in c if isinstance(p, dict) and isinstance(p.get("text"), str)]
            elif isinstance(it.get("output"), str):
                texts.append(it["output"])
    return count_words(texts)


def check_responses(ctx: Ctx, doc: dict, azure: bool) -> None:
    if not isinstance(doc.get("model"), str) or not doc.get("model"):
        # Azure's v1 path names the deployment in the body too.
        ctx.fail("simulator: you must provide a model parameter")
    items = doc.get("input")
    if not isinstance(items, (str, list)) or not items:
        ctx.fail("simulator: 'input' must be a non-empty string or array")
    for bad in ("messages", "stream_options"):
        if bad in doc and not (bad == "stream_options" and set(doc[bad] or {}) <= {"include_obfuscation"}):
            ctx.fail(f"simulator: Unknown parameter: '{bad}'.", 400)


def handle_responses(ctx: Ctx, azure: bool, counter: int) -> Response:
    doc = ctx.req.json()
    check_responses(ctx, doc, azure)
    ctx.reject_if_failed()
    model = doc["model"]
    ctx.record["model"] = model
    knobs = ctx.knobs
    if knobs.tool_call:
        raise Reject(400, "simulator: x-sim-tool-call is not simulated on /responses")
    ans = make_answer(knobs=knobs, listener=ctx.req.listener, words=responses_words(doc), tools=None,
                      thinking_requested=False, max_tokens=doc.get("max_output_tokens"), tool_id_prefix="fc_",
                      id_seed=ctx.req.body, reasoning_always=True)
    reasoning = max(0, knobs.reasoning or 0)
    usage = {"input_tokens": ans.usage.prompt, "input_tokens_details": {"cached_tokens": ans.usage.cached},
             "output_tokens": ans.usage.output, "output_tokens_details": {"reasoning_tokens": reasoning},
             "total_tokens": ans.usage.prompt + ans.usage.output}
    rid, mid = f"resp_sim{counter:08d}", f"msg_sim{counter:08d}"
    text = ans.full_text
    incomplete = ans.stop == "length"

    def message(status: str, content: list) -> dict:
        return {"id": mid, "type": "message", "status": status, "role": "assistant", "content": content}

    def part(t: str) -> dict:
        return {"type": "output_text", "text": t, "annotations": [], "logprobs": []}

    def response(status: str, output: list, u: dict | None) -> dict:
        return {"id": rid, "object": "response", "created_at": int(time.time()), "status": status,
                "background": False, "error": None,
                "incomplete_details": {"reason": "max_output_tokens"} if incomplete and u else None,
                "instructions": doc.get("instructions"), "max_output_tokens": doc.get("max_output_tokens"),
                "model": model, "output": output, "parallel_tool_calls": True,
                "previous_response_id": doc.get("previous_response_id"),
                "reasoning": {"effort": None, "summary": None}, "store": doc.get("store", True),
                "temperature": doc.get("temperature", 1.0), "text": {"format": {"type": "text"}},
                "tool_choice": "auto", "tools": [], "top_p": doc.get("top_p", 1.0), "truncation": "disabled",
                "usage": u, "user": None, "metadata": doc.get("metadata") or {}}

    final_status = "incomplete" if incomplete else "completed"
    if doc.get("stream") is not True:
        body = response(final_status, [message("completed", [part(text)])], usage)
        resp = json_response(200, body, gzip_body=knobs.gzip)
        resp.usage = usage
        resp.sent = ans.sent(usage)
        return resp

    st = Stream()
    seq = 0

    def event(etype: str, snap: dict | None = None, **fields) -> None:
        nonlocal seq
        data = {"type": etype, "sequence_number": seq, **fields}
        seq += 1
        st.add(f"event: {etype}\ndata: ".encode() + json.dumps(data).encode() + b"\n\n", **(snap or {}))

    event("response.created", response=response("in_progress", [], None))
    event("response.in_progress", response=response("in_progress", [], None))
    event("response.output_item.added", output_index=0, item=message("in_progress", []))
    where = {"item_id": mid, "output_index": 0, "content_index": 0}
    event("response.content_part.added", **where, part=part(""))
    for w in ans.text:
        event("response.output_text.delta", {"text": w}, **where, delta=w, logprobs=[])
    event("response.output_text.done", **where, text=text, logprobs=[])
    event("response.content_part.done", **where, part=part(text))
    event("response.output_item.done", output_index=0, item=message("completed", [part(text)]))
    event(f"response.{final_status}", {"usage": usage},
          response=response(final_status, [message("completed", [part(text)])], usage))

    def err(etype: str) -> bytes:
        data = {"type": "error", "sequence_number": seq, "code": etype,
                "message": f"simulated stream error {etype}", "param": None}
        return b"event: error\ndata: " + json.dumps(data).encode() + b"\n\n"

    st.cut_with_error(knobs, err)
    resp = st.response("text/event-stream; charset=utf-8", knobs)
    resp.usage = usage
    return resp
