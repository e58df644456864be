#!/usr/bin/env python3
"""A provider simulator: an OpenAI-schema upstream for `make run` and the tests.

Standard library only (PyYAML is needed for cassette replay alone). One asyncio
process serves HTTP/1.1 with keep-alive on one or more listeners; each listener has a
label (the backend name in the tests), so a recorded request shows which backend
Envoy sent it to.

What it answers, decided per request by headers (they pass through Envoy):

    x-sim-cassette: NAME     replay NAME.yaml from the cassette directory: recorded
                             status, content-type and body; SSE bodies are sent one
                             event per chunk, each flushed separately.
    x-sim-status: CODE       answer CODE with x-sim-body (or an OpenAI-style error).
    x-sim-body: TEXT         the body for x-sim-status.
    x-sim-reset-after: N     stream N events, then reset the connection (TCP RST).
    x-sim-gzip: 1            gzip the response body (per event for streams).
    x-sim-delay-ms: MS       pause between streamed events (default 5).
    x-sim-tokens: N          content chunks / completion tokens generated (default 5).
    x-sim-cached-tokens: N   report N cached prompt tokens in generated usage.
    x-sim-reasoning-tokens: N  report N reasoning tokens in generated usage.

Without x-sim-cassette or x-sim-status, it generates an answer for any model on
/v1/chat/completions, /v1/completions and /v1/embeddings, streaming or not, and sends
the usage chunk only when `stream_options.include_usage` is true, as OpenAI does.

Control endpoints (never recorded):

    GET    /_sim/health            200 "ok"
    GET    /_sim/requests[?id=X]   JSON list of recorded requests (all, or those whose
                                   x-request-id is X): listener, method, path, headers
                                   (lower-case names), body (text) and body_json.
    DELETE /_sim/requests          forget them.

Usage: simulator.py --listen 127.0.0.1:8081[=label] [--listen ...]
                    [--cassettes DIR] [--ready-file PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import os
import re
import socket
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parent.parent
# In a CI clone the shared test data lives beside the repository.
DEFAULT_CASSETTES = REPO.parent / "shared" / "conformance" / "openai-cassettes"

MAX_BODY = 64 * 1024 * 1024
REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


class BadRequest(Exception):
    pass


class Request:
    def __init__(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, listener: str):
        self.method = method
        self.target = target
        split = urlsplit(target)
        self.path = split.path
        self.query = parse_qs(split.query)
        self.headers = headers
        self.body = body
        self.listener = listener

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def int_header(self, name: str, default: int) -> int:
        try:
            return int(self.header(name, str(default)))
        except ValueError:
            return default

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def record(self) -> dict:
        text = self.body.decode("utf-8", errors="replace")
        return {
            "listener": self.listener,
            "method": self.method,
            "path": self.target,
            "headers": [[k, v] for k, v in self.headers],
            "body": text,
            "body_json": self.json(),
            "received_at": time.time(),
        }


class Response:
    """What to send: either a whole body or a list of chunks streamed with delays."""

    def __init__(self, status: int, content_type: str, body: bytes = b"", chunks: list[bytes] | None = None,
                 delay: float = 0.0, reset_after: int | None = None, gzip_body: bool = False,
                 extra_headers: list[tuple[str, str]] | None = None):
        self.status = status
        self.content_type = content_type
        self.body = body
        self.chunks = chunks
        self.delay = delay
        self.reset_after = reset_after
        self.gzip = gzip_body
        self.extra_headers = extra_headers or []
        # The usage reported to the client, if any (shown by /_sim/requests).
        self.usage: dict | None = None


def json_response(status: int, obj: Any, **kw) -> Response:
    return Response(status, "application/json", json.dumps(obj).encode(), **kw)


def openai_error(status: int, message: str, etype: str = "invalid_request_error", code: str | None = None) -> Response:
    return json_response(status, {"error": {"message": message, "type": etype, "param": None, "code": code}})


class Simulator:
    def __init__(self, cassette_dir: Path):
        self.cassette_dir = cassette_dir
        self.cassettes: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.counter = 0

    # ---- cassettes -------------------------------------------------------

    def cassette(self, name: str) -> dict | None:
        if name in self.cassettes:
            return self.cassettes[name]
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            return None
        path = self.cassette_dir / f"{name}.yaml"
        if not path.is_file():
            return None
        import yaml  # only needed for replay

        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        self.cassettes[name] = doc["interactions"][0]
        return self.cassettes[name]

    def replay(self, req: Request, name: str) -> Response:
        inter = self.cassette(name)
        if inter is None:
            return openai_error(599, f"simulator: no cassette named {name!r} in {self.cassette_dir}")
        resp = inter["response"]
        headers = {k.lower(): v for k, v in (resp.get("headers") or {}).items()}
        ctype = (headers.get("content-type") or ["application/json"])[0]
        body = resp.get("body") or ""
        delay = req.int_header("x-sim-delay-ms", 2) / 1000.0
        if ctype.startswith("text/event-stream"):
            events = [e.encode() for e in re.split(r"(?<=\n\n)", body) if e]
            return Response(resp["code"], ctype, chunks=events, delay=delay,
                            reset_after=_opt_int(req.header("x-sim-reset-after")),
                            gzip_body=req.header("x-sim-gzip") == "1")
        return Response(resp["code"], ctype, body.encode(), gzip_body=req.header("x-sim-gzip") == "1")

    # ---- generated answers ----------------------------------------------

    def generate(self, req: Request) -> Response:
        if req.method != "POST":
            return openai_error(405, f"simulator: {req.method} not allowed on {req.path}")
        doc = req.json()
        if not isinstance(doc, dict):
            return openai_error(400, "simulator: request body is not a JSON object")
        model = doc.get("model")
        if not isinstance(model, str) or not model:
            return openai_error(400, "simulator: you must provide a model parameter")
        self.counter += 1
        ident = f"sim-{self.counter}"
        created = int(time.time())
        ntok = max(1, req.int_header("x-sim-tokens", 5))
        cached = req.int_header("x-sim-cached-tokens", 0)
        reasoning = req.int_header("x-sim-reasoning-tokens", 0)
        delay = req.int_header("x-sim-delay-ms", 5) / 1000.0
        reset_after = _opt_int(req.header("x-sim-reset-after"))
        gz = req.header("x-sim-gzip") == "1"
        prompt_tokens = max(1, len(req.body) // 16)
        words = [f"word{i} " if i else f"Hello from {req.listener} " for i in range(ntok)]

        def usage(completion: int) -> dict:
            u = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                 "total_tokens": prompt_tokens + completion,
                 "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0}}
            if completion:
                u["completion_tokens_details"] = {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                                  "accepted_prediction_tokens": 0,
                                                  "rejected_prediction_tokens": 0}
            return u

        if req.path == "/v1/embeddings":
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
            resp = json_response(200, {"object": "list", "data": data, "model": model,
                                       "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}},
                                 gzip_body=gz)
            resp.usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
            return resp

        chat = req.path == "/v1/chat/completions"
        if not chat and req.path != "/v1/completions":
            return openai_error(404, f"simulator: unknown path {req.path}")
        stream = doc.get("stream") is True
        include_usage = stream and bool((doc.get("stream_options") or {}).get("include_usage"))
        obj = "chat.completion" if chat else "text_completion"
        if not stream:
            text = "".join(words).strip()
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                          "logprobs": None, "finish_reason": "stop"}
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
            resp = json_response(200, {"id": ident, "object": obj, "created": created, "model": model,
                                       "choices": [choice], "usage": usage(ntok),
                                       "system_fingerprint": None}, gzip_body=gz)
            resp.usage = usage(ntok)
            return resp

        chunk_obj = "chat.completion.chunk" if chat else "text_completion"
        events: list[bytes] = []

        def event(choices: list, u: Any = None, with_usage_field: bool = include_usage) -> None:
            c = {"id": ident, "object": chunk_obj, "created": created, "model": model,
                 "system_fingerprint": None, "choices": choices}
            if with_usage_field:
                c["usage"] = u
            events.append(b"data: " + json.dumps(c).encode() + b"\n\n")

        if chat:
            event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None}])
        for w in words:
            if chat:
                event([{"index": 0, "delta": {"content": w}, "logprobs": None, "finish_reason": None}])
            else:
                event([{"index": 0, "text": w, "logprobs": None, "finish_reason": None}])
        if chat:
            event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
        else:
            event([{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}])
        if include_usage:
            event([], usage(ntok))
        events.append(b"data: [DONE]\n\n")
        resp = Response(200, "text/event-stream; charset=utf-8", chunks=events, delay=delay,
                        reset_after=reset_after, gzip_body=gz)
        resp.usage = usage(ntok) if include_usage else None
        return resp

    # ---- dispatch -------------------------------------------------------

    def control(self, req: Request) -> Response:
        if req.path == "/_sim/health":
            return Response(200, "text/plain", b"ok")
        if req.path == "/_sim/requests":
            if req.method == "DELETE":
                self.requests.clear()
                return json_response(200, {"cleared": True})
            want = (req.query.get("id") or [None])[0]
            out = [r for r in self.requests
                   if want is None or any(k == "x-request-id" and v == want for k, v in r["headers"])]
            return json_response(200, out)
        return openai_error(404, f"simulator: unknown control path {req.path}")

    def handle(self, req: Request) -> Response:
        if req.path.startswith("/_sim/"):
            return self.control(req)
        record = req.record()
        self.requests.append(record)
        resp = self.answer(req)
        record["response"] = {"status": resp.status, "usage": resp.usage}
        return resp

    def answer(self, req: Request) -> Response:
        status = req.header("x-sim-status")
        if status is not None:
            body = req.header("x-sim-body")
            code = _opt_int(status) or 500
            if body is None:
                return openai_error(code, f"simulated error {code}", "server_error" if code >= 500 else
                                    "invalid_request_error", "simulated")
            return Response(code, "application/json", body.encode())
        name = req.header("x-sim-cassette")
        if name:
            return self.replay(req, name)
        return self.generate(req)


def _opt_int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


# ---- HTTP/1.1 plumbing ------------------------------------------------------

async def read_request(reader: asyncio.StreamReader, listener: str) -> Request | None:
    try:
        line = await reader.readline()
    except (ConnectionError, asyncio.LimitOverrunError, ValueError):
        return None
    if not line:
        return None
    parts = line.decode("latin-1").strip().split(" ")
    if len(parts) != 3:
        raise BadRequest(f"bad request line {line!r}")
    method, target, _version = parts
    headers: list[tuple[str, str]] = []
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.decode("latin-1").partition(":")
        headers.append((name.strip().lower(), value.strip()))
    hmap = dict(headers)
    body = b""
    if "chunked" in hmap.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size_line = await reader.readline()
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
            if sum(map(len, chunks)) > MAX_BODY:
                raise BadRequest("body too large")
        body = b"".join(chunks)
    elif "content-length" in hmap:
        n = int(hmap["content-length"])
        if n > MAX_BODY:
            raise BadRequest("body too large")
        body = await reader.readexactly(n)
    return Request(method, target, headers, body, listener)


def reset_connection(writer: asyncio.StreamWriter) -> None:
    """Closes the socket with RST instead of FIN: a crashed upstream."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


async def write_response(writer: asyncio.StreamWriter, resp: Response, head_only: bool) -> bool:
    """Sends `resp`; returns False when the connection must not be reused."""
    status_line = f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Status')}\r\n"
    headers = [("content-type", resp.content_type), ("server", "aigw-simulator")] + resp.extra_headers
    if resp.gzip:
        headers.append(("content-encoding", "gzip"))
    if resp.chunks is None:
        body = gzip.compress(resp.body) if resp.gzip else resp.body
        headers.append(("content-length", str(len(body))))
        writer.write((status_line + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        await writer.drain()
        return True

    headers.append(("transfer-encoding", "chunked"))
    headers.append(("cache-control", "no-cache"))
    writer.write((status_line + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1"))
    await writer.drain()
    comp = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS) if resp.gzip else None
    for i, ev in enumerate(resp.chunks):
        if resp.reset_after is not None and i >= resp.reset_after:
            reset_connection(writer)
            return False
        data = comp.compress(ev) + comp.flush(zlib.Z_SYNC_FLUSH) if comp else ev
        if data:
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
        if resp.delay:
            await asyncio.sleep(resp.delay)
    if comp:
        tail = comp.flush(zlib.Z_FINISH)
        writer.write(b"%x\r\n%s\r\n" % (len(tail), tail))
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


def make_handler(sim: Simulator, listener: str):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    req = await read_request(reader, listener)
                except (BadRequest, ValueError, asyncio.IncompleteReadError) as e:
                    await write_response(writer, openai_error(400, f"simulator: {e}"), False)
                    break
                if req is None:
                    break
                resp = sim.handle(req)
                if not await write_response(writer, resp, req.method == "HEAD"):
                    return
                if (req.header("connection") or "").lower() == "close":
                    break
        except (ConnectionError, OSError):
            return  # the peer went away mid-answer: nothing to clean up
        finally:
            if not writer.transport.is_closing():
                writer.close()
    return handle


async def serve(listens: list[tuple[str, int, str]], sim: Simulator, ready_file: str | None) -> None:
    servers = []
    for host, port, label in listens:
        servers.append(await asyncio.start_server(make_handler(sim, label), host, port, limit=1 << 20,
                                                  reuse_address=True))
    bound = [s.sockets[0].getsockname()[1] for s in servers]
    msg = "simulator listening on " + ", ".join(f"{h}:{p} ({label})" for (h, _, label), p in zip(listens, bound))
    print(msg, flush=True)
    if ready_file:
        Path(ready_file).write_text(json.dumps(bound))
    await asyncio.gather(*(s.serve_forever() for s in servers))


def parse_listen(spec: str) -> tuple[str, int, str]:
    addr, _, label = spec.partition("=")
    host, _, port = addr.rpartition(":")
    return host or "127.0.0.1", int(port), label or "default"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", action="append", default=[], help="HOST:PORT[=label], repeatable")
    ap.add_argument("--cassettes", default=os.environ.get("AIGW_CASSETTES", str(DEFAULT_CASSETTES)))
    ap.add_argument("--ready-file", help="write the bound ports here (JSON) once listening")
    args = ap.parse_args()
    listens = [parse_listen(s) for s in (args.listen or ["127.0.0.1:8081"])]
    try:
        asyncio.run(serve(listens, Simulator(Path(args.cassettes)), args.ready_file))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
