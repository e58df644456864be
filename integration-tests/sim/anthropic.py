"""Anthropic Messages: direct (/v1/messages), on Vertex (rawPredict,
streamRawPredict) and the body/answer shared with Bedrock InvokeModel."""

from __future__ import annotations

import json
import re
from typing import Any

from .core import Answer, Ctx, Response, Stream, count_words, json_response, make_answer, signature

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error"}

VERSIONS = {"vertex": "vertex-2023-10-16", "bedrock": "bedrock-2023-05-31"}

TOP_LEVEL = {"model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature",
             "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier", "container", "mcp_servers",
             "context_management", "output_format", "output_config", "inference_geo"}
BLOCK_TYPES = {"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking",
               "search_result", "server_tool_use", "web_search_tool_result", "container_upload", "mcp_tool_use",
               "mcp_tool_result"}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str, etype: str | None = None) -> dict:
    return {"type": "error", "error": {"type": etype or error_type(status), "message": message}}


def error(status: int, message: str, etype: str | None = None) -> Response:
    return json_response(status, error_body(status, message, etype))


def declared_tools(doc: dict) -> dict[str, Any] | None:
    if "tools" not in doc:
        return None
    return {t["name"]: t.get("input_schema") for t in doc.get("tools") or []
            if isinstance(t, dict) and isinstance(t.get("name"), str)}


def _text_of(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for b in content:
            if not isinstance(b, dict):
                continue
            if b.get("type") == "text" and isinstance(b.get("text"), str):
                out.append(b["text"])
            elif b.get("type") == "tool_result":
                out += _text_of(b.get("content"))
    return out


def prompt_words(doc: dict) -> int:
    texts = _text_of(doc.get("system"))
    for m in doc.get("messages") or []:
        if isinstance(m, dict):
            texts += _text_of(m.get("content"))
    return count_words(texts)


def thinking_requested(doc: dict) -> bool:
    t = doc.get("thinking")
    return isinstance(t, dict) and t.get("type") in ("enabled", "adaptive")


def check(ctx: Ctx, doc: Any, transport: str) -> None:
    """transport: anthropic | vertex | bedrock."""
    if not isinstance(doc, dict):
        ctx.fail("simulator: the body is not a JSON object")
        return
    allowed = TOP_LEVEL | ({"anthropic_version", "anthropic_beta"} if transport != "anthropic" else set())
    for k in doc:
        if k not in allowed:
            ctx.fail(f"{k}: Extra inputs are not permitted")
    if transport == "anthropic":
        if not isinstance(doc.get("model"), str) or not doc.get("model"):
            ctx.fail("model: Field required")
    else:
        if "model" in doc:
            ctx.fail(f"model: not allowed in a {transport} body (the model is in the path)")
        # The platform's own version, or an API version date (anthropic SDK 2.x sends
        # its ANTHROPIC_API_VERSION there); never the other platform's.
        want, got = VERSIONS[transport], doc.get("anthropic_version")
        if got != want and not (isinstance(got, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", got)):
            ctx.fail(f"anthropic_version: must be {want!r} (or an API version date), got {got!r}")
    if transport == "bedrock" and "stream" in doc:
        ctx.fail("stream: not allowed in an InvokeModel body (the path decides)")
    mt = doc.get("max_tokens")
    if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
        ctx.fail("max_tokens: Field required (an integer >= 1)")
    msgs = doc.get("messages")
    if not isinstance(msgs, list) or not msgs:
        ctx.fail("messages: Field required (a non-empty list)")
        msgs = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            ctx.fail(f"messages.{i}: not an object")
            continue
        role = m.get("role")
        if role == "system":
            ctx.fail(f'messages.{i}: Unexpected role "system". The Messages API accepts a top-level `system` '
                     f'parameter, not "system" as an input message role.')
        elif role not in ("user", "assistant"):
            ctx.fail(f"messages.{i}.role: must be user or assistant, got {role!r}")
        c = m.get("content")
        last_assistant = i == len(msgs) - 1 and role == "assistant"
        if isinstance(c, str):
            if not c and not last_assistant:
                ctx.fail(f"messages.{i}: all messages must have non-empty content except for the optional "
                         f"final assistant message")
        elif isinstance(c, list):
            if not c and not last_assistant:
                ctx.fail(f"messages.{i}: all messages must have non-empty content except for the optional "
                         f"final assistant message")
            for j, b in enumerate(c):
                if not isinstance(b, dict) or b.get("type") not in BLOCK_TYPES:
                    bt = b.get("type") if isinstance(b, dict) else b
                    ctx.fail(f"messages.{i}.content.{j}.type: unknown content block type {bt!r}")
                elif b["type"] == "text" and (not isinstance(b.get("text"), str) or not b["text"]):
                    ctx.fail(f"messages.{i}.content.{j}: text content blocks must be non-empty")
                elif b["type"] == "tool_use" and not isinstance(b.get("input"), dict):
                    ctx.fail(f"messages.{i}.content.{j}.input: must be an object")
                elif b["type"] == "tool_result" and not isinstance(b.get("tool_use_id"), str):
                    ctx.fail(f"messages.{i}.content.{j}.tool_use_id: Field required")
        else:
            ctx.fail(f"messages.{i}.content: must be a string or a list of content blocks")
    system = doc.get("system")
    if system is not None and not isinstance(system, (str, list)):
        ctx.fail("system: must be a string or a list of text blocks")
    for i, t in enumerate(doc.get("tools") or []):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            ctx.fail(f"tools.{i}.name: Field required")
        elif "type" not in t or t.get("type") == "custom":
            if not isinstance(t.get("input_schema"), dict):
                ctx.fail(f"tools.{i}.input_schema: Field required")
        if isinstance(t, dict) and "function" in t:
            ctx.fail(f"tools.{i}.function: Extra inputs are not permitted")
    tc = doc.get("tool_choice")
    if tc is not None and (not isinstance(tc, dict) or tc.get("type") not in ("auto", "any", "tool", "none")):
        ctx.fail("tool_choice: must be an object with type auto, any, tool or none")
    th = doc.get("thinking")
    if th is not None:
        if not isinstance(th, dict) or th.get("type") not in ("enabled", "disabled", "adaptive"):
            ctx.fail("thinking.type: must be enabled, disabled or adaptive")
        elif th.get("type") == "enabled":
            b = th.get("budget_tokens")
            if not isinstance(b, int) or isinstance(b, bool) or b < 1024:
                ctx.fail("thinking.budget_tokens: Input should be greater than or equal to 1024")
            elif isinstance(mt, int) and b >= mt:
                ctx.fail("`max_tokens` must be greater than `thinking.budget_tokens`")


def answer(ctx: Ctx, doc: dict) -> Answer:
    return make_answer(knobs=ctx.knobs, listener=ctx.req.listener, words=prompt_words(doc),
                       tools=declared_tools(doc), thinking_requested=thinking_requested(doc),
                       max_tokens=doc.get("max_tokens"), tool_id_prefix="toolu_sim", id_seed=ctx.req.body)


STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}


def usage(ans: Answer, output: int | None = None) -> dict:
    u = ans.usage
    return {"input_tokens": u.uncached, "cache_creation_input_tokens": u.cache_write,
            "cache_read_input_tokens": u.cached,
            "output_tokens": (u.output + len(ans.thinking)) if output is None else output}


def message(ans: Answer, msg_id: str, model: str) -> dict:
    content: list[dict] = []
    if ans.thinking:
        content.append({"type": "thinking", "thinking": ans.full_thinking,
                        "signature": signature(msg_id, ans.full_thinking)})
    if ans.text:
        content.append({"type": "text", "text": ans.full_text})
    if ans.tool:
        content.append({"type": "tool_use", "id": ans.tool.id, "name": ans.tool.name, "input": ans.tool.args})
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": STOP[ans.stop], "stop_sequence": None, "usage": usage(ans)}


def events(ans: Answer, msg_id: str, model: str, ping: bool) -> list[tuple[str, dict, dict]]:
    """(event name, data, snapshot update) of a streamed answer, in order. The
    snapshot update says what the event adds: text, reasoning, tool, usage."""
    out: list[tuple[str, dict, dict]] = []
    start = message(ans, msg_id, model)
    start.update(content=[], stop_reason=None, stop_sequence=None, usage=usage(ans, output=1))
    out.append(("message_start", {"type": "message_start", "message": start}, {"usage": usage(ans, output=1)}))
    index = 0
    pinged = not ping

    def ping_once() -> None:
        nonlocal pinged
        if not pinged:
            out.append(("ping", {"type": "ping"}, {}))
            pinged = True

    if ans.thinking:
        out.append(("content_block_start", {"type": "content_block_start", "index": index,
                                            "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
                    {}))
        ping_once()
        for p in ans.thinking:
            out.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                "delta": {"type": "thinking_delta", "thinking": p}},
                        {"reasoning": p}))
        out.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                            "delta": {"type": "signature_delta",
                                                      "signature": signature(msg_id, ans.full_thinking)}}, {}))
        out.append(("content_block_stop", {"type": "content_block_stop", "index": index}, {}))
        index += 1
    if ans.text:
        out.append(("content_block_start", {"type": "content_block_start", "index": index,
                                            "content_block": {"type": "text", "text": ""}}, {}))
        ping_once()
        for p in ans.text:
            out.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                "delta": {"type": "text_delta", "text": p}}, {"text": p}))
        out.append(("content_block_stop", {"type": "content_block_stop", "index": index}, {}))
        index += 1
    if ans.tool:
        t = ans.tool
        out.append(("content_block_start", {"type": "content_block_start", "index": index,
                                            "content_block": {"type": "tool_use", "id": t.id, "name": t.name,
                                                              "input": {}}},
                    {"tool_start": {"id": t.id, "name": t.name}}))
        ping_once()
        for p in t.pieces:
            out.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                "delta": {"type": "input_json_delta", "partial_json": p}},
                        {"tool_args": p}))
        out.append(("content_block_stop", {"type": "content_block_stop", "index": index}, {}))
        index += 1
    ping_once()
    final = usage(ans)
    out.append(("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": STOP[ans.stop], "stop_sequence": None},
                                  "usage": {"output_tokens": final["output_tokens"]}},
                {"merge_usage": {"output_tokens": final["output_tokens"]}}))
    out.append(("message_stop", {"type": "message_stop"}, {}))
    return out


def add_event(st: Stream, data: bytes, snap: dict) -> None:
    kw: dict = {}
    if "text" in snap:
        kw["text"] = snap["text"]
    if "reasoning" in snap:
        kw["reasoning"] = snap["reasoning"]
    if "tool_start" in snap:
        kw["tool_start"] = snap["tool_start"]
    if "tool_args" in snap:
        kw["tool_args"] = snap["tool_args"]
    if "usage" in snap:
        kw["usage"] = snap["usage"]
    if "merge_usage" in snap:
        kw["merge_usage"] = snap["merge_usage"]
    st.add(data, **kw)


def sse(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def handle(ctx: Ctx, transport: str, model: str, stream: bool, counter: int) -> Response:
    """Direct Anthropic or Vertex (transport "anthropic" / "vertex")."""
    doc = ctx.req.json()
    check(ctx, doc, transport)
    ctx.reject_if_failed()
    ctx.record["model"] = model
    ans = answer(ctx, doc)
    msg_id = f"msg_sim{counter:08d}"
    headers = [("request-id", f"req_sim{counter:08d}")]
    if not stream:
        body = message(ans, msg_id, model)
        resp = json_response(200, body, gzip_body=ctx.knobs.gzip, extra_headers=headers)
        resp.sent = ans.sent(body["usage"])
        return resp
    st = Stream()
    for name, data, snap in events(ans, msg_id, model, ping=True):
        add_event(st, sse(name, data), snap)
    st.cut_with_error(ctx.knobs, lambda t: sse("error", error_body(529 if t == "overloaded_error" else 500,
                                                                    f"simulated stream error {t}", t)))
    return st.response("text/event-stream; charset=utf-8", ctx.knobs, extra_headers=headers)


def count_tokens(ctx: Ctx, transport: str, doc: Any) -> Response:
    """`count_tokens` (native, Vertex: the body names the model; Bedrock: the InvokeModel
    body bedrock.py unwrapped): the prompt's words, and one per tool, as input tokens."""
    if not isinstance(doc, dict):
        ctx.fail("simulator: the body is not a JSON object")
        ctx.reject_if_failed()
    if transport in ("anthropic", "vertex"):
        if not isinstance(doc.get("model"), str) or not doc.get("model"):
            ctx.fail("model: Field required")
        counted = dict(doc)
        counted.pop("model", None)
        counted.setdefault("max_tokens", 1)  # counting takes none; check() wants one
        if transport == "vertex":
            check(ctx, counted, "vertex")
        else:
            check(ctx, dict(counted, model=doc.get("model")), "anthropic")
    else:
        check(ctx, doc, "bedrock")
    ctx.reject_if_failed()
    tokens = max(1, prompt_words(doc)) + len(doc.get("tools") or [])
    key = "inputTokens" if transport == "bedrock" else "input_tokens"
    resp = json_response(200, {key: tokens})
    resp.sent = {"sent_count": tokens}
    return resp
