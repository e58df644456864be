"""Rerank in Cohere's shape: Cohere's own API (`POST /v2/rerank`, its errors
`{"id", "message"}`) and the OpenAI-compatible servers that serve the same body
(vLLM, Jina: `POST {prefix}/rerank`, usage as `usage.total_tokens`)."""

from __future__ import annotations

import uuid
from typing import Any

from .core import Ctx, Response, count_words, json_response


def error(status: int, message: str) -> Response:
    return json_response(status, {"id": str(uuid.uuid4()), "message": message})


def check(ctx: Ctx, doc: Any) -> None:
    if not isinstance(doc, dict):
        ctx.fail("simulator: the body is not a JSON object")
        return
    if not isinstance(doc.get("model"), str) or not doc["model"]:
        ctx.fail("model: a model is required")
    if not isinstance(doc.get("query"), str) or not doc["query"]:
        ctx.fail("query: a non-empty string is required")
    docs = doc.get("documents")
    if not isinstance(docs, list) or not docs or not all(isinstance(d, str) and d for d in docs):
        ctx.fail("documents: a non-empty list of non-empty strings is required")
    top_n = doc.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        ctx.fail("top_n: must be a positive integer")


def score(query: str, document: str) -> float:
    """Words shared with the query, as a share of the document's: deterministic."""
    q = set(query.lower().split())
    words = document.lower().split()
    return round(sum(1 for w in words if w in q) / max(1, len(words)), 6)


def rerank(ctx: Ctx, openai_compatible: bool) -> Response:
    doc = ctx.req.json()
    check(ctx, doc)
    ctx.reject_if_failed()
    docs: list[str] = doc["documents"]
    ranked = sorted(range(len(docs)), key=lambda i: (-score(doc["query"], docs[i]), i))
    top_n = doc.get("top_n") or len(docs)
    results: list[dict] = []
    for i in ranked[:top_n]:
        r: dict[str, Any] = {"index": i, "relevance_score": score(doc["query"], docs[i])}
        if openai_compatible:
            r["document"] = {"text": docs[i]}
        results.append(r)
    tokens = count_words([doc["query"]]) * len(docs) + count_words(docs)
    ident = f"rerank-sim-{ctx.counter}"
    if openai_compatible:
        body = {"id": ident, "model": doc["model"], "usage": {"total_tokens": tokens}, "results": results}
        usage = {"total_tokens": tokens}
    else:
        body = {"id": ident, "results": results,
                "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1},
                         "tokens": {"input_tokens": tokens}}}
        usage = {"input_tokens": tokens}
    ctx.record["model"] = doc["model"]
    resp = json_response(200, body)
    resp.usage = usage
    resp.sent = {"sent_ranking": [r["index"] for r in results]}
    return resp
