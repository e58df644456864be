"""AWS Bedrock Runtime: Converse / ConverseStream, InvokeModel /
InvokeModelWithResponseStream for Anthropic models, Titan text embeddings."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from . import anthropic, eventstream
from .core import Answer, Ctx, Reject, Response, Stream, count_words, digest, json_response, make_answer, \
    signature

ERROR_TYPES = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
               408: "ModelTimeoutException", 409: "ConflictException", 424: "ModelErrorException",
               429: "ThrottlingException", 500: "InternalServerException", 503: "ServiceUnavailableException"}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "InternalServerException" if status >= 500 else "ValidationException")


def errortype_header(etype: str) -> tuple[str, str]:
    return ("x-amzn-errortype", f"{etype}:http://internal.amazon.com/coral/com.amazon.bedrock/")


def error(status: int, message: str, etype: str | None = None) -> Response:
    etype = etype or error_type(status)
    return json_response(status, {"message": message}, extra_headers=[errortype_header(etype)])


def request_id(counter: int) -> tuple[str, str]:
    return ("x-amzn-requestid", f"00000000-0000-4000-8000-{counter:012d}")


# ---- Converse -----------------------------------------------------------------------

TOP_LEVEL = {"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
             "additionalModelRequestFields", "additionalModelResponseFieldPaths", "promptVariables",
             "requestMetadata", "performanceConfig"}
INFERENCE = {"maxTokens", "temperature", "topP", "stopSequences"}
BLOCKS = {"text", "image", "document", "video", "toolUse", "toolResult", "guardContent", "cachePoint",
          "reasoningContent", "citationsContent", "searchResult"}
SYSTEM_BLOCKS = {"text", "guardContent", "cachePoint"}


def converse_tools(doc: dict) -> dict[str, Any] | None:
    tc = doc.get("toolConfig")
    if not isinstance(tc, dict):
        return None
    out = {}
    for t in tc.get("tools") or []:
        spec = t.get("toolSpec") if isinstance(t, dict) else None
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            schema = spec.get("inputSchema")
            out[spec["name"]] = schema.get("json") if isinstance(schema, dict) else None
    return out


def converse_words(doc: dict) -> int:
    texts: list[str] = []
    for b in doc.get("system") or []:
        if isinstance(b, dict) and isinstance(b.get("text"), str):
            texts.append(b["text"])
    for m in doc.get("messages") or []:
        for b in (m.get("content") or []) if isinstance(m, dict) else []:
            if not isinstance(b, dict):
                continue
            if isinstance(b.get("text"), str):
                texts.append(b["text"])
            tr = b.get("toolResult")
            if isinstance(tr, dict):
                texts += [c["text"] for c in tr.get("content") or [] if isinstance(c, dict)
                          and isinstance(c.get("text"), str)]
    return count_words(texts)


def converse_thinking(doc: dict) -> bool:
    extra = doc.get("additionalModelRequestFields")
    if not isinstance(extra, dict):
        return False
    th = extra.get("thinking")
    if isinstance(th, dict) and th.get("type") in ("enabled", "adaptive"):
        return True
    return any(k in extra for k in ("reasoning_config", "reasoningConfig"))


def check_converse(ctx: Ctx, doc: Any) -> None:
    if not isinstance(doc, dict):
        ctx.fail("simulator: the body is not a JSON object")
        return
    for k in doc:
        if k not in TOP_LEVEL:
            ctx.fail(f"Malformed input request: extraneous key [{k}] is not permitted")
    msgs = doc.get("messages")
    if not isinstance(msgs, list) or not msgs:
        ctx.fail("The model returned the following errors: messages: a non-empty list is required")
        msgs = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            ctx.fail(f"messages.{i}: not an object")
            continue
        if m.get("role") not in ("user", "assistant"):
            ctx.fail(f"messages.{i}.role: must be user or assistant, got {m.get('role')!r}")
        c = m.get("content")
        if not isinstance(c, list):
            ctx.fail(f"messages.{i}.content: must be a list of content blocks, got {type(c).__name__}")
            continue
        if not c:
            ctx.fail(f"messages.{i}.content: must not be empty")
        for j, b in enumerate(c):
            if not isinstance(b, dict) or len(b) != 1 or next(iter(b)) not in BLOCKS:
                ctx.fail(f"messages.{i}.content.{j}: a content block is an object with exactly one of "
                         f"{sorted(BLOCKS)}, got {sorted(b) if isinstance(b, dict) else b!r}")
            elif "text" in b and (not isinstance(b["text"], str) or not b["text"].strip()):
                ctx.fail(f"messages.{i}.content.{j}.text: must be a non-blank string")
            elif "toolUse" in b:
                tu = b["toolUse"]
                if not isinstance(tu, dict) or not isinstance(tu.get("toolUseId"), str) \
                        or not isinstance(tu.get("name"), str) or "input" not in tu:
                    ctx.fail(f"messages.{i}.content.{j}.toolUse: needs toolUseId, name and input")
            elif "toolResult" in b:
                tr = b["toolResult"]
                if not isinstance(tr, dict) or not isinstance(tr.get("toolUseId"), str) \
                        or not isinstance(tr.get("content"), list):
                    ctx.fail(f"messages.{i}.content.{j}.toolResult: needs toolUseId and a content list")
    system = doc.get("system")
    if system is not None:
        if not isinstance(system, list):
            ctx.fail("system: must be a list of system content blocks")
        else:
            for j, b in enumerate(system):
                if not isinstance(b, dict) or len(b) != 1 or next(iter(b)) not in SYSTEM_BLOCKS:
                    ctx.fail(f"system.{j}: a system block is an object with exactly one of {sorted(SYSTEM_BLOCKS)}")
    ic = doc.get("inferenceConfig")
    if ic is not None:
        if not isinstance(ic, dict):
            ctx.fail("inferenceConfig: must be an object")
        else:
            for k in ic:
                if k not in INFERENCE:
                    ctx.fail(f"inferenceConfig: extraneous key [{k}] is not permitted")
            mt = ic.get("maxTokens")
            if mt is not None and (not isinstance(mt, int) or isinstance(mt, bool) or mt < 1):
                ctx.fail("inferenceConfig.maxTokens: must be an integer >= 1")
    tc = doc.get("toolConfig")
    if tc is not None:
        tools = tc.get("tools") if isinstance(tc, dict) else None
        if not isinstance(tools, list) or not tools:
            ctx.fail("toolConfig.tools: a non-empty list is required")
        else:
            for j, t in enumerate(tools):
                spec = t.get("toolSpec") if isinstance(t, dict) else None
                if not (isinstance(t, dict) and len(t) == 1 and ("toolSpec" in t or "cachePoint" in t)):
                    ctx.fail(f"toolConfig.tools.{j}: must be {{toolSpec}} or {{cachePoint}}")
                elif spec is not None and (not isinstance(spec.get("name"), str)
                                           or not isinstance(spec.get("inputSchema"), dict)
                                           or "json" not in spec["inputSchema"]):
                    ctx.fail(f"toolConfig.tools.{j}.toolSpec: needs name and inputSchema.json")
        choice = tc.get("toolChoice") if isinstance(tc, dict) else None
        if choice is not None and not (isinstance(choice, dict) and len(choice) == 1
                                       and next(iter(choice)) in ("auto", "any", "tool")):
            ctx.fail("toolConfig.toolChoice: must be exactly one of auto, any, tool")


CONVERSE_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}


def converse_usage(ans: Answer) -> dict:
    """inputTokens excludes cache reads and writes; totalTokens adds them all up."""
    u = ans.usage
    out_tokens = u.output + len(ans.thinking)
    usage = {"inputTokens": u.uncached, "outputTokens": out_tokens,
             "totalTokens": u.uncached + out_tokens + u.cached + u.cache_write}
    if u.cached or u.cache_write:
        usage["cacheReadInputTokens"] = u.cached
        usage["cacheWriteInputTokens"] = u.cache_write
    return usage


def converse(ctx: Ctx, model: str, stream: bool, counter: int) -> Response:
    doc = ctx.req.json()
    check_converse(ctx, doc)
    ctx.reject_if_failed()
    ic = doc.get("inferenceConfig") or {}
    ans = make_answer(knobs=ctx.knobs, listener=ctx.req.listener, words=converse_words(doc),
                      tools=converse_tools(doc), thinking_requested=converse_thinking(doc),
                      max_tokens=ic.get("maxTokens"), tool_id_prefix="tooluse_sim", id_seed=ctx.req.body)
    usage = converse_usage(ans)
    metrics = {"latencyMs": 100 + counter % 50}
    sig = signature(model, ans.full_thinking)
    headers = [request_id(counter)]
    if not stream:
        content: list[dict] = []
        if ans.thinking:
            content.append({"reasoningContent": {"reasoningText": {"text": ans.full_thinking, "signature": sig}}})
        if ans.text:
            content.append({"text": ans.full_text})
        if ans.tool:
            content.append({"toolUse": {"toolUseId": ans.tool.id, "name": ans.tool.name, "input": ans.tool.args}})
        body = {"output": {"message": {"role": "assistant", "content": content}},
                "stopReason": CONVERSE_STOP[ans.stop], "usage": usage, "metrics": metrics}
        resp = json_response(200, body, gzip_body=ctx.knobs.gzip, extra_headers=headers)
        resp.sent = ans.sent(usage)
        return resp

    st = Stream()
    seq = 0

    def ev(name: str, payload: dict, **snap) -> None:
        nonlocal seq
        payload = dict(payload)
        payload["p"] = eventstream.padding(seq)
        seq += 1
        st.add(eventstream.event(name, payload), **snap)

    ev("messageStart", {"role": "assistant"})
    index = 0
    if ans.thinking:
        for p in ans.thinking:
            ev("contentBlockDelta", {"contentBlockIndex": index, "delta": {"reasoningContent": {"text": p}}},
               reasoning=p)
        ev("contentBlockDelta", {"contentBlockIndex": index, "delta": {"reasoningContent": {"signature": sig}}})
        ev("contentBlockStop", {"contentBlockIndex": index})
        index += 1
    if ans.text:
        for p in ans.text:
            ev("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": p}}, text=p)
        ev("contentBlockStop", {"contentBlockIndex": index})
        index += 1
    if ans.tool:
        t = ans.tool
        ev("contentBlockStart", {"contentBlockIndex": index,
                                 "start": {"toolUse": {"toolUseId": t.id, "name": t.name}}},
           tool_start={"id": t.id, "name": t.name})
        for p in t.pieces:
            ev("contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": p}}}, tool_args=p)
        ev("contentBlockStop", {"contentBlockIndex": index})
        index += 1
    ev("messageStop", {"stopReason": CONVERSE_STOP[ans.stop]})
    ev("metadata", {"usage": usage, "metrics": metrics}, usage=usage)
    st.cut_with_error(ctx.knobs, lambda t: eventstream.exception(t, f"simulated stream error {t}"))
    return st.response("application/vnd.amazon.eventstream", ctx.knobs, extra_headers=headers,
                       chunking=eventstream.split_chunks if ctx.knobs.split else eventstream.whole_frames)


# ---- InvokeModel ----------------------------------------------------------------------

def is_titan_embed(model: str) -> bool:
    return "titan-embed" in model


def invoke_kind(model: str, doc: Any) -> str | None:
    if is_titan_embed(model):
        return "titan"
    if "anthropic" in model or (isinstance(doc, dict) and "anthropic_version" in doc):
        return "anthropic"
    return None


def invoke_anthropic(ctx: Ctx, model: str, stream: bool, counter: int) -> Response:
    doc = ctx.req.json()
    anthropic.check(ctx, doc, "bedrock")
    ctx.reject_if_failed()
    ans = anthropic.answer(ctx, doc)
    msg_id = f"msg_bdrk_sim{counter:08d}"
    final = anthropic.usage(ans)
    headers = [request_id(counter)]
    if not stream:
        body = anthropic.message(ans, msg_id, model)
        headers += [("x-amzn-bedrock-input-token-count", str(final["input_tokens"])),
                    ("x-amzn-bedrock-output-token-count", str(final["output_tokens"])),
                    ("x-amzn-bedrock-invocation-latency", str(100 + counter % 50))]
        if final["cache_read_input_tokens"] or final["cache_creation_input_tokens"]:
            headers += [("x-amzn-bedrock-cache-read-input-token-count", str(final["cache_read_input_tokens"])),
                        ("x-amzn-bedrock-cache-write-input-token-count", str(final["cache_creation_input_tokens"]))]
        resp = json_response(200, body, gzip_body=ctx.knobs.gzip, extra_headers=headers)
        resp.sent = ans.sent(body["usage"])
        return resp
    st = Stream()
    for i, (_name, data, snap) in enumerate(anthropic.events(ans, msg_id, model, ping=False)):
        if data["type"] == "message_stop":
            metrics = {"inputTokenCount": final["input_tokens"], "outputTokenCount": final["output_tokens"],
                       "invocationLatency": 100 + counter % 50, "firstByteLatency": 50}
            if final["cache_read_input_tokens"] or final["cache_creation_input_tokens"]:
                metrics["cacheReadInputTokenCount"] = final["cache_read_input_tokens"]
                metrics["cacheWriteInputTokenCount"] = final["cache_creation_input_tokens"]
            data = dict(data)
            data["amazon-bedrock-invocationMetrics"] = metrics
        raw = json.dumps(data, separators=(",", ":")).encode()
        payload = {"bytes": base64.b64encode(raw).decode(), "p": eventstream.padding(i)}
        anthropic.add_event(st, eventstream.event("chunk", payload), snap)
    st.cut_with_error(ctx.knobs, lambda t: eventstream.exception(t, f"simulated stream error {t}"))
    return st.response("application/vnd.amazon.eventstream", ctx.knobs, extra_headers=headers,
                       chunking=eventstream.split_chunks if ctx.knobs.split else eventstream.whole_frames)


TITAN_KEYS = {"inputText", "dimensions", "normalize", "embeddingTypes"}


def titan(ctx: Ctx, model: str, counter: int) -> Response:
    doc = ctx.req.json()
    if not isinstance(doc, dict):
        ctx.fail("simulator: the body is not a JSON object")
    else:
        for k in doc:
            if k not in TITAN_KEYS:
                ctx.fail(f"Malformed input request: extraneous key [{k}] is not permitted")
        if not isinstance(doc.get("inputText"), str) or not doc.get("inputText"):
            ctx.fail("Malformed input request: required key [inputText] not found")
        dims = doc.get("dimensions", 1024)
        if dims not in (256, 512, 1024) or isinstance(dims, bool):
            ctx.fail("Malformed input request: dimensions must be one of 256, 512, 1024")
        norm = doc.get("normalize", True)
        if not isinstance(norm, bool):
            ctx.fail("Malformed input request: normalize must be a boolean")
    ctx.reject_if_failed()
    dims = doc.get("dimensions", 1024)
    text = doc["inputText"]
    tokens = max(1, count_words([text]))
    seed = int(digest(text, n=8), 16)
    vec = [((seed >> (j % 24)) % 97 - 48) / 97.0 + 0.001 * (j + 1) for j in range(dims)]
    if doc.get("normalize", True):
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        vec = [v / norm for v in vec]
    vec = [round(v, 6) for v in vec]
    body = {"embedding": vec, "embeddingsByType": {"float": vec}, "inputTextTokenCount": tokens}
    resp = json_response(200, body, gzip_body=ctx.knobs.gzip,
                         extra_headers=[request_id(counter), ("x-amzn-bedrock-input-token-count", str(tokens)),
                                        ("x-amzn-bedrock-invocation-latency", "20")])
    resp.sent = {"sent_text": "", "sent_reasoning": "", "sent_tool_calls": [],
                 "sent_usage": {"inputTextTokenCount": tokens}}
    return resp


def invoke(ctx: Ctx, model: str, stream: bool, counter: int) -> Response:
    kind = invoke_kind(model, ctx.req.json())
    if kind == "titan":
        ctx.record["provider"] = "bedrock-titan"
        if stream:
            raise Reject(400, "The model is unsupported for streaming")
        return titan(ctx, model, counter)
    if kind == "anthropic":
        ctx.record["provider"] = "bedrock-anthropic"
        return invoke_anthropic(ctx, model, stream, counter)
    raise Reject(400, f"simulator: no InvokeModel body schema for model {model!r} "
                      f"(Anthropic models and titan-embed only)")


def count_tokens(ctx: Ctx, model: str) -> Response:
    """CountTokens: `{"input": {"invokeModel": {"body": <base64 InvokeModel body>}}}`
    (or `converse`) for an Anthropic model; answers `{"inputTokens": n}`."""
    doc = ctx.req.json()
    inner: Any = None
    if isinstance(doc, dict) and set(doc) == {"input"} and isinstance(doc["input"], dict):
        invoke = doc["input"].get("invokeModel")
        if isinstance(invoke, dict) and isinstance(invoke.get("body"), str):
            try:
                inner = json.loads(base64.b64decode(invoke["body"], validate=True))
            except ValueError:
                inner = None
    if inner is None:
        ctx.fail("1 validation error detected: Value at 'input' failed to satisfy constraint: "
                 "an invokeModel body (base64 JSON) is required", 400, "ValidationException")
        ctx.reject_if_failed()
    if "anthropic" not in model:
        ctx.fail(f"The provided model {model} doesn't support counting tokens.", 400, "ValidationException")
    return anthropic.count_tokens(ctx, "bedrock", inner)
