"""Gemini: Google AI Studio (generativelanguage) and Vertex AI (publishers/google)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from .core import Answer, Ctx, Response, Stream, count_words, digest, json_response, make_answer

STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "NOT_IMPLEMENTED",
          503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
CODES = {v: k for k, v in STATUS.items()}


def status_name(code: int) -> str:
    return STATUS.get(code, "INTERNAL" if code >= 500 else "FAILED_PRECONDITION")


def error_body(code: int, message: str, status: str | None = None) -> dict:
    return {"error": {"code": code, "message": message, "status": status or status_name(code)}}


def error(code: int, message: str, status: str | None = None) -> Response:
    return json_response(code, error_body(code, message, status))


def camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


TOP_LEVEL = {"contents", "tools", "toolConfig", "safetySettings", "systemInstruction", "generationConfig",
             "cachedContent", "labels", "modelArmorConfig"}
GENERATION = {"temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences",
              "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema", "responseJsonSchema",
              "seed", "responseLogprobs", "logprobs", "thinkingConfig", "responseModalities", "speechConfig",
              "mediaResolution", "enableEnhancedCivicAnswers", "routingConfig", "audioTimestamp",
              "imageConfig", "enableAffectiveDialog", "modelSelectionConfig"}
PART_DATA = {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
             "codeExecutionResult"}
PART_META = {"thought", "thoughtSignature", "videoMetadata", "partMetadata", "mediaResolution"}
TOOL_KEYS = {"functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext",
             "retrieval", "computerUse", "fileSearch", "googleMaps", "enterpriseWebSearch"}


def _unknown(ctx: Ctx, obj: dict, allowed: set[str], where: str) -> None:
    for k in obj:
        if camel(k) not in allowed:
            at = f" at '{where}'" if where else ""
            ctx.fail(f'Invalid JSON payload received. Unknown name "{k}"{at}: Cannot find field.')


def get(obj: dict, name: str, default: Any = None) -> Any:
    """A field by its camelCase name, also accepted in snake_case (proto JSON)."""
    if name in obj:
        return obj[name]
    snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)
    return obj.get(snake, default)


def declared_tools(doc: dict) -> dict[str, Any] | None:
    tools = get(doc, "tools")
    if tools is None:
        return None
    out: dict[str, Any] = {}
    for t in tools if isinstance(tools, list) else []:
        for fd in (get(t, "functionDeclarations") or []) if isinstance(t, dict) else []:
            if isinstance(fd, dict) and isinstance(fd.get("name"), str):
                out[fd["name"]] = fd.get("parameters") or get(fd, "parametersJsonSchema")
    return out


def _texts(parts: Any) -> list[str]:
    return [p["text"] for p in parts or [] if isinstance(p, dict) and isinstance(p.get("text"), str)]


def prompt_words(doc: dict) -> int:
    texts: list[str] = []
    si = get(doc, "systemInstruction")
    if isinstance(si, dict):
        texts += _texts(si.get("parts"))
    for c in doc.get("contents") or []:
        if isinstance(c, dict):
            texts += _texts(c.get("parts"))
    return count_words(texts)


def thinking(doc: dict) -> tuple[bool, bool]:
    """(thinking asked for, thoughts included in the answer)."""
    gc = get(doc, "generationConfig") or {}
    tc = get(gc, "thinkingConfig") if isinstance(gc, dict) else None
    if not isinstance(tc, dict):
        return False, False
    include = get(tc, "includeThoughts") is True
    budget = get(tc, "thinkingBudget")
    return (include or (isinstance(budget, int) and budget != 0) or "thinkingLevel" in tc
            or "thinking_level" in tc), include


def check(ctx: Ctx, doc: Any) -> None:
    if not isinstance(doc, dict):
        ctx.fail("Invalid JSON payload received. Expected an object.")
        return
    _unknown(ctx, doc, TOP_LEVEL, "")
    contents = doc.get("contents")
    if not isinstance(contents, list) or not contents:
        ctx.fail("* GenerateContentRequest.contents: contents is not specified")
        contents = []
    for i, c in enumerate(contents):
        if not isinstance(c, dict):
            ctx.fail(f"contents[{i}]: not an object")
            continue
        _unknown(ctx, c, {"role", "parts"}, f"contents[{i}]")
        if "role" in c and c["role"] not in ("user", "model"):
            ctx.fail(f"Please use a valid role: user, model. (contents[{i}].role is {c['role']!r})")
        parts = c.get("parts")
        if not isinstance(parts, list) or not parts:
            ctx.fail(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
            continue
        for j, p in enumerate(parts):
            if not isinstance(p, dict):
                ctx.fail(f"contents[{i}].parts[{j}]: not an object")
                continue
            _unknown(ctx, p, PART_DATA | PART_META, f"contents[{i}].parts[{j}]")
            data = [k for k in p if camel(k) in PART_DATA]
            if len(data) != 1:
                ctx.fail(f"contents[{i}].parts[{j}]: a part must hold exactly one of {sorted(PART_DATA)}")
            fc = get(p, "functionCall")
            if fc is not None and (not isinstance(fc, dict) or not isinstance(fc.get("name"), str)):
                ctx.fail(f"contents[{i}].parts[{j}].functionCall: name is required")
            fr = get(p, "functionResponse")
            if fr is not None and (not isinstance(fr, dict) or not isinstance(fr.get("name"), str)
                                   or not isinstance(fr.get("response"), dict)):
                ctx.fail(f"contents[{i}].parts[{j}].functionResponse: name and a response object are required")
    si = get(doc, "systemInstruction")
    if si is not None:
        if not isinstance(si, dict) or not isinstance(si.get("parts"), list):
            ctx.fail("systemInstruction: must be a Content object with parts")
        elif "role" in si and si["role"] not in ("user", "system"):
            ctx.fail("systemInstruction.role: must be user (or absent)")
    gc = get(doc, "generationConfig")
    if gc is not None:
        if not isinstance(gc, dict):
            ctx.fail("generationConfig: must be an object")
        else:
            _unknown(ctx, gc, GENERATION, "generation_config")
    tools = get(doc, "tools")
    if tools is not None:
        if not isinstance(tools, list):
            ctx.fail("tools: must be a list")
        else:
            for i, t in enumerate(tools):
                if not isinstance(t, dict):
                    ctx.fail(f"tools[{i}]: not an object")
                    continue
                _unknown(ctx, t, TOOL_KEYS, f"tools[{i}]")
                for j, fd in enumerate(get(t, "functionDeclarations") or []):
                    if not isinstance(fd, dict) or not isinstance(fd.get("name"), str):
                        ctx.fail(f"tools[{i}].function_declarations[{j}].name: required")


FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool": "STOP"}


def usage_metadata(ans: Answer, candidates: int, thoughts: int, vertex: bool) -> dict:
    u = ans.usage
    m: dict = {"promptTokenCount": u.prompt, "candidatesTokenCount": candidates,
               "totalTokenCount": u.prompt + candidates + thoughts}
    if u.cached:
        m["cachedContentTokenCount"] = u.cached
    if thoughts:
        m["thoughtsTokenCount"] = thoughts
    m["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": u.prompt}]
    if u.cached:
        m["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": u.cached}]
    if vertex:
        m["candidatesTokensDetails"] = [{"modality": "TEXT", "tokenCount": candidates}]
        m["trafficType"] = "ON_DEMAND"
    return m


def _envelope(model: str, counter: int, vertex: bool) -> dict:
    env = {"modelVersion": model, "responseId": f"sim{digest(counter, n=20)}"}
    if vertex:
        env["createTime"] = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    return env


def _candidate(parts: list[dict], finish: str | None, vertex: bool) -> dict:
    c: dict = {"content": {"role": "model", "parts": parts}}
    if finish:
        c["finishReason"] = finish
    if not vertex:
        c["index"] = 0
    return c


def generate(ctx: Ctx, model: str, stream: bool, vertex: bool, counter: int) -> Response:
    doc = ctx.req.json()
    check(ctx, doc)
    ctx.reject_if_failed()
    asked, include = thinking(doc)
    gc = get(doc, "generationConfig") or {}
    ans = make_answer(knobs=ctx.knobs, listener=ctx.req.listener, words=prompt_words(doc),
                      tools=declared_tools(doc), thinking_requested=asked, max_tokens=get(gc, "maxOutputTokens"),
                      tool_id_prefix="", id_seed=ctx.req.body, reasoning_always=True)
    thoughts_count = ans.usage.reasoning
    if not include:
        ans.thinking = []
    total_out = ans.usage.output
    finish = FINISH[ans.stop]
    final_usage = usage_metadata(ans, total_out, thoughts_count, vertex)
    if not stream:
        parts: list[dict] = []
        if ans.thinking:
            parts.append({"text": ans.full_thinking, "thought": True})
        if ans.text:
            parts.append({"text": ans.full_text})
        if ans.tool:
            parts.append({"functionCall": {"name": ans.tool.name, "args": ans.tool.args}})
        body = {"candidates": [_candidate(parts, finish, vertex)], "usageMetadata": final_usage,
                **_envelope(model, counter, vertex)}
        resp = json_response(200, body, gzip_body=ctx.knobs.gzip)
        sent = ans.sent(final_usage)
        if ans.tool:
            sent["sent_tool_calls"] = [{"id": None, "name": ans.tool.name, "arguments": ans.tool.text}]
        resp.sent = sent
        return resp

    sse = ctx.req.query1("alt") == "sse"
    # The answer's pieces, one event each; the last carries finishReason. usageMetadata
    # is on every event, its counts cumulative (the last one is the answer's).
    pieces: list[tuple[dict, dict]] = []
    for p in ans.thinking:
        pieces.append(({"text": p, "thought": True}, {"reasoning": p}))
    for p in ans.text:
        pieces.append(({"text": p}, {"text": p}))
    if ans.tool:
        pieces.append(({"functionCall": {"name": ans.tool.name, "args": ans.tool.args}},
                       {"tool_start": {"id": None, "name": ans.tool.name}, "tool_args": ans.tool.text}))
    if not pieces:
        pieces.append(({"text": ""}, {}))
    st = Stream()
    env = _envelope(model, counter, vertex)
    out_so_far = 0
    thoughts_so_far = 0
    n = len(pieces)
    first = True
    for i, (part, snap) in enumerate(pieces):
        last = i == n - 1
        if "reasoning" in snap:
            thoughts_so_far += 1
        elif "text" in snap:
            out_so_far += 1
        elif "tool_args" in snap:
            out_so_far += len(ans.tool.pieces)
        if last:
            out_so_far, thoughts_so_far = total_out, thoughts_count
        elif not include and thoughts_count and first:
            thoughts_so_far = thoughts_count  # thinking happened before the first visible piece
        first = False
        um = usage_metadata(ans, out_so_far, thoughts_so_far, vertex)
        chunk = {"candidates": [_candidate([part], finish if last else None, vertex)], "usageMetadata": um, **env}
        data = json.dumps(chunk)
        if sse:
            raw = f"data: {data}\r\n\r\n".encode()
        else:
            raw = (("[" if i == 0 else ",\r\n") + data + ("]" if last else "")).encode()
        st.add(raw, usage=um, **snap)

    def err(status: str) -> bytes:
        code = CODES.get(status, 500)
        body = json.dumps(error_body(code, f"simulated stream error {status}", status))
        return f"data: {body}\r\n\r\n".encode() if sse else (",\r\n" + body + "]").encode()

    st.cut_with_error(ctx.knobs, err)
    return st.response("text/event-stream" if sse else "application/json; charset=UTF-8", ctx.knobs)


def _vector(text: str, dims: int) -> list[float]:
    seed = int(digest(text, n=8), 16)
    return [round(((seed >> (j % 24)) % 101 - 50) / 101.0, 6) for j in range(dims)]


def _dims(v: Any, default: int = 768) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 3072 else default


def embed(ctx: Ctx, model: str, op: str) -> Response:
    """AI Studio :batchEmbedContents / :embedContent."""
    doc = ctx.req.json()
    if not isinstance(doc, dict):
        ctx.fail("Invalid JSON payload received. Expected an object.")
        ctx.reject_if_failed()
    reqs = doc.get("requests") if op == "batchEmbedContents" else [doc]
    if op == "batchEmbedContents":
        _unknown(ctx, doc, {"requests"}, "")
    if not isinstance(reqs, list) or not reqs:
        ctx.fail("* BatchEmbedContentsRequest.requests: requests is not specified")
        reqs = []
    allowed = {"model", "content", "taskType", "title", "outputDimensionality"}
    for i, r in enumerate(reqs):
        if not isinstance(r, dict):
            ctx.fail(f"requests[{i}]: not an object")
            continue
        _unknown(ctx, r, allowed, f"requests[{i}]" if op == "batchEmbedContents" else "")
        if op == "batchEmbedContents" and r.get("model") != f"models/{model}":
            ctx.fail(f"* BatchEmbedContentsRequest.requests[{i}].model: the model of each request must be "
                     f"models/{model}, got {r.get('model')!r}")
        c = r.get("content")
        if not isinstance(c, dict) or not isinstance(c.get("parts"), list) or not c["parts"]:
            ctx.fail(f"requests[{i}].content: a Content with non-empty parts is required")
    ctx.reject_if_failed()
    vecs = [{"values": _vector(" ".join(_texts(r["content"]["parts"])), _dims(get(r, "outputDimensionality")))}
            for r in reqs]
    body: dict = {"embeddings": vecs} if op == "batchEmbedContents" else {"embedding": vecs[0]}
    resp = json_response(200, body, gzip_body=ctx.knobs.gzip)
    resp.sent = {"sent_text": "", "sent_reasoning": "", "sent_tool_calls": [], "sent_usage": None}
    return resp


def predict(ctx: Ctx, model: str) -> Response:
    """Vertex :predict for text embeddings."""
    doc = ctx.req.json()
    if not isinstance(doc, dict):
        ctx.fail("Invalid JSON payload received. Expected an object.")
        ctx.reject_if_failed()
    _unknown(ctx, doc, {"instances", "parameters"}, "")
    inst = doc.get("instances")
    if not isinstance(inst, list) or not inst:
        ctx.fail("instances: a non-empty list is required")
        inst = []
    for i, x in enumerate(inst):
        if not isinstance(x, dict) or not isinstance(x.get("content"), str):
            ctx.fail(f"instances[{i}].content: a string is required")
        else:
            for k in x:
                if k not in ("content", "task_type", "title", "taskType"):
                    ctx.fail(f"instances[{i}]: unknown field {k!r}")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        ctx.fail("parameters: must be an object")
        params = {}
    ctx.reject_if_failed()
    dims = _dims(get(params, "outputDimensionality"))
    preds, stats = [], []
    chars = 0
    for x in inst:
        tokens = max(1, count_words([x["content"]]))
        chars += len(x["content"].replace(" ", ""))
        st = {"truncated": False, "token_count": tokens}
        stats.append(st)
        preds.append({"embeddings": {"statistics": st, "values": _vector(x["content"], dims)}})
    meta = {"billableCharacterCount": chars}
    resp = json_response(200, {"predictions": preds, "metadata": meta}, gzip_body=ctx.knobs.gzip)
    resp.sent = {"sent_text": "", "sent_reasoning": "", "sent_tool_calls": [],
                 "sent_usage": {"predictions": stats, "metadata": meta}}
    return resp
