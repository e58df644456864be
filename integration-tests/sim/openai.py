"""OpenAI (and OpenAI-compatible servers under any path prefix) and Azure OpenAI: chat,
completions, embeddings, responses, images and audio."""

from __future__ import annotations

import base64
import hashlib
import json
import re
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


# ---- images and audio (/v1/images/..., /v1/audio/...; Azure under deployments) -----

MEDIA_OPS = {"images/generations", "images/edits", "audio/speech", "audio/transcriptions",
             "audio/translations"}
FORM_OPS = {"images/edits", "audio/transcriptions", "audio/translations"}
# A 1x1 PNG: what every generated or edited image is.
PNG_1X1 = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def parse_form(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]] | None:
    """multipart/form-data: (text fields, files by field name: (filename, bytes))."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        return None
    delim = b"--" + m.group(1).encode()
    if not body.startswith(delim):
        return None
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    sections = body.split(delim)
    if sections[0] != b"":
        return None
    for sec in sections[1:]:
        if sec.startswith(b"--"):
            break
        if not sec.startswith(b"\r\n") or not sec.endswith(b"\r\n"):
            return None
        head, sep, value = sec[2:-2].partition(b"\r\n\r\n")
        if not sep:
            return None
        disp = next((h for h in head.decode("utf-8", "replace").split("\r\n")
                     if h.lower().startswith("content-disposition:")), "")
        name = re.search(r'\bname="([^"]*)"', disp)
        fname = re.search(r'\bfilename="([^"]*)"', disp)
        if not name:
            return None
        if fname:
            files[name.group(1)] = (fname.group(1), value)
        else:
            fields[name.group(1)] = value.decode("utf-8", "replace")
    else:
        return None  # no closing delimiter
    return fields, files


def media_fields(ctx: Ctx, op: str, deployment: str | None) -> dict[str, Any] | None:
    """The request's fields (JSON or form), checked as OpenAI checks them; files under
    "_files"."""
    req = ctx.req
    if op in FORM_OPS and (req.header("content-type") or "").startswith("multipart/form-data"):
        parsed = parse_form(req.body, req.header("content-type") or "")
        if parsed is None:
            ctx.fail("simulator: malformed multipart/form-data body")
            return None
        fields, files = parsed
        doc: dict[str, Any] = dict(fields)
        doc["_files"] = {k: {"filename": f, "bytes": len(b)} for k, (f, b) in files.items()}
        ctx.record["form"] = doc
        need_file = "image" if op == "images/edits" else "file"
        if not any(k == need_file or k.startswith(need_file + "[") for k in files):
            ctx.fail(f"simulator: the {need_file!r} file is required")
    elif op in FORM_OPS and op != "images/edits":
        ctx.fail("simulator: this endpoint takes multipart/form-data")
        return None
    else:
        doc = req.json()
        if not isinstance(doc, dict):
            ctx.fail("simulator: the body is not a JSON object")
            return None
    if not doc.get("model") and deployment is None:
        ctx.fail("simulator: you must provide a model parameter")
    for field in {"images/generations": ["prompt"], "images/edits": ["prompt"],
                  "audio/speech": ["input", "voice"]}.get(op, []):
        if not doc.get(field):
            ctx.fail(f"simulator: '{field}' is required")
    return doc


def handle_media(ctx: Ctx, op: str, deployment: str | None, counter: int) -> Response:
    doc = media_fields(ctx, op, deployment)
    ctx.reject_if_failed()
    model = doc.get("model") or deployment
    ctx.record["model"] = model
    words = count_words([doc.get("prompt") or doc.get("input") or ""])
    if op.startswith("images/"):
        n = int(doc.get("n") or 1)
        images_in = len(doc.get("_files") or {})
        usage = {"input_tokens": words + 65 * images_in, "output_tokens": 272 * n,
                 "input_tokens_details": {"text_tokens": words, "image_tokens": 65 * images_in}}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        data = [{"b64_json": base64.b64encode(PNG_1X1).decode()} for _ in range(n)]
        resp = json_response(200, {"created": int(time.time()), "data": data, "usage": usage})
        resp.usage = usage
        resp.sent = {"sent_text": "", "sent_reasoning": "", "sent_tool_calls": [], "sent_usage": usage}
        return resp
    if op == "audio/speech":
        # Bytes that look like an MP3 frame, fixed per input.
        audio = b"ID3\x04\x00\x00\x00\x00\x00\x00" + hashlib.sha256(doc["input"].encode()).digest() * 8
        resp = Response(200, "audio/mpeg", audio)
        resp.sent = {"sent_text": "", "sent_reasoning": "", "sent_tool_calls": [], "sent_usage": None,
                     "sent_audio_sha256": hashlib.sha256(audio).hexdigest()}
        return resp
    audio_bytes = sum(f["bytes"] for f in (doc.get("_files") or {}).values())
    text = f"Transcript {counter} of {audio_bytes} bytes."
    body: dict[str, Any] = {"text": text}
    usage = None
    if op == "audio/transcriptions" and model != "whisper-1":
        usage = {"type": "tokens", "input_tokens": 10 + audio_bytes // 100,
                 "input_token_details": {"text_tokens": 0, "audio_tokens": 10 + audio_bytes // 100},
                 "output_tokens": len(text.split())}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        body["usage"] = usage
    resp = json_response(200, body)
    resp.usage = usage
    resp.sent = {"sent_text": text, "sent_reasoning": "", "sent_tool_calls": [], "sent_usage": usage}
    return resp


# ---- APIs the gateway passes through (a route's `passthrough`) ----------------------

def handle_files(ctx: Ctx, store: dict[str, dict], file_id: str | None) -> Response:
    """A small Files API: upload (multipart), list, retrieve, content, delete."""
    req = ctx.req
    if file_id is None and req.method == "GET":
        return json_response(200, {"object": "list", "data": list(store.values()), "has_more": False})
    if file_id is None and req.method == "POST":
        parsed = parse_form(req.body, req.header("content-type") or "")
        if parsed is None:
            raise Reject(400, "simulator: a multipart/form-data upload is required")
        fields, files = parsed
        if "file" not in files or not fields.get("purpose"):
            raise Reject(400, "simulator: the upload needs a file and a purpose")
        name, data = files["file"]
        ident = f"file-sim{len(store) + 1}"
        store[ident] = {"id": ident, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                        "filename": name, "purpose": fields["purpose"], "status": "processed",
                        "_sha256": hashlib.sha256(data).hexdigest()}
        ctx.record["uploaded"] = {"filename": name, "bytes": len(data)}
        return json_response(200, {k: v for k, v in store[ident].items() if not k.startswith("_")})
    obj = store.get(file_id or "")
    if obj is None:
        raise Reject(404, f"No such File object: {file_id}")
    public = {k: v for k, v in obj.items() if not k.startswith("_")}
    if req.method == "GET":
        return json_response(200, public)
    if req.method == "DELETE":
        del store[file_id]
        return json_response(200, {"id": file_id, "object": "file", "deleted": True})
    raise Reject(405, f"simulator: {req.method} not allowed on {req.path}")


def handle_fim(ctx: Ctx, counter: int) -> Response:
    """Mistral's fill-in-the-middle (`/v1/fim/completions`): a chat-completion-shaped
    answer with usage, for an API the gateway does not know."""
    doc = ctx.req.json()
    if not isinstance(doc, dict) or not isinstance(doc.get("prompt"), str) or not doc.get("model"):
        raise Reject(422, "simulator: fim needs a model and a prompt")
    prompt = max(1, count_words([doc["prompt"], doc.get("suffix") or ""]))
    text = "return a + b"
    usage = {"prompt_tokens": prompt, "completion_tokens": 4, "total_tokens": prompt + 4}
    body = {"id": f"fim-sim-{counter}", "object": "chat.completion", "model": doc["model"],
            "created": int(time.time()),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage}
    resp = json_response(200, body)
    resp.usage = dict(usage)
    resp.sent = {"sent_text": text}
    return resp
