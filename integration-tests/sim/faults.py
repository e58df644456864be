"""Faults of a broken or hostile provider, applied to an answer once it is built:
a stall before the headers or in the middle of a stream, a stream without end, an
AWS event-stream frame whose prelude announces more than any frame may hold, a
frame cut short, a gzip body that is not gzip past its header, and a connection
reset while the request is still arriving (that one is read in server.py, before
the body).

Every knob is a request header (they pass through Envoy), documented in
simulator.py's docstring."""

from __future__ import annotations

import json
import struct
import time
import zlib
from typing import Iterator

from . import eventstream
from .core import Ctx, Reject, Response, opt_int

# A gzip member header (RFC 1952: magic, deflate, no flags, no mtime, no extra
# flags, unknown OS): what a reader checks before it inflates anything.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
# Bytes that no inflater takes as a deflate stream (block type 3 is reserved).
GZIP_GARBAGE = b"\xff" * 64 + b"this is not deflate data " * 40
# Filler sent after an oversized frame's prelude, so a reader that waits for the
# announced length gets something to wait on.
FRAME_FILLER = 64 * 1024
# The longest stall: a stream that "stalls forever" ends when its peer goes, or
# after this many seconds so a forgotten test cannot leave the simulator busy.
MAX_STALL_S = 600.0


def reset_mid_request(req_headers: dict[str, str]) -> int | None:
    """x-sim-reset-mid-request: N (body bytes to read before the reset), read from
    the request's headers before its body."""
    return opt_int(req_headers.get("x-sim-reset-mid-request"))


def frames_of(data: bytes) -> list[bytes]:
    """The whole event-stream frames at the start of `data` (our own encoder's)."""
    out, pos = [], 0
    while pos + 12 <= len(data):
        (total,) = struct.unpack(">I", data[pos:pos + 4])
        if total < 16 or pos + total > len(data):
            break
        out.append(data[pos:pos + total])
        pos += total
    return out


def oversized_prelude(total: int) -> bytes:
    """A prelude announcing a frame of `total` bytes (clamped to u32), with a valid
    prelude CRC, so only the length gives it away."""
    total = max(16, min(total, 0xFFFFFFFF))
    prelude = struct.pack(">II", total, 0)
    return prelude + struct.pack(">I", zlib.crc32(prelude))


def apply(ctx: Ctx, family: str | None, provider: str | None, resp: Response) -> Response:
    """The answer as the faults the request asks for change it."""
    knobs = ctx.knobs
    if resp.status == 200:
        if knobs.endless is not None:
            resp = endless(ctx, family, provider, resp)
        if knobs.frame_length is not None:
            resp = oversized_frame(ctx, family, resp)
        if knobs.truncate_frame is not None:
            resp = truncated_frame(ctx, family, resp)
        if knobs.broken_gzip:
            resp = broken_gzip(resp)
        if knobs.stall_after is not None:
            resp.stall_after = max(0, knobs.stall_after)
            resp.on_stall_end = lambda: ctx.record.update(client_disconnected=True)
    if knobs.headers_delay_ms:
        resp.wait = knobs.headers_delay_ms / 1000.0
        resp.on_abandon = lambda: ctx.record.update(client_disconnected=True)
    return resp


# ---- a stream that never ends ---------------------------------------------------------

def endless(ctx: Ctx, family: str | None, provider: str | None, resp: Response) -> Response:
    """x-sim-endless: PIECE_BYTES: the stream's first events, then text pieces of
    that many characters forever (until the peer goes)."""
    if resp.chunks is None:
        raise Reject(400, "simulator: x-sim-endless needs a streamed answer")
    piece = "x" * max(1, min(ctx.knobs.endless or 1024, 1 << 20))
    model = ctx.record.get("model") or "sim-model"
    if family in ("openai", "azure"):
        chunks = _openai_endless(ctx.counter, model, piece)
    elif provider in ("anthropic", "vertex-anthropic"):
        chunks = _anthropic_endless(ctx.counter, model, piece)
    elif provider == "bedrock-converse":
        chunks = _converse_endless(piece)
    else:
        raise Reject(400, f"simulator: x-sim-endless is not supported for {provider}")
    out = Response(200, resp.content_type, chunks=chunks, extra_headers=resp.extra_headers,
                   delay=(ctx.knobs.delay if ctx.req.header("x-sim-delay-ms") is not None else 0.0))
    out.sent = {"sent_text": None, "sent_reasoning": "", "sent_tool_calls": [], "sent_usage": None}
    ctx.record["endless"] = True
    return out


def _openai_endless(counter: int, model: str, piece: str) -> Iterator[bytes]:
    head = {"id": f"sim-{counter}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "system_fingerprint": None}

    def chunk(delta: dict) -> bytes:
        return b"data: " + json.dumps(dict(head, choices=[{"index": 0, "delta": delta, "logprobs": None,
                                                           "finish_reason": None}])).encode() + b"\n\n"

    yield chunk({"role": "assistant", "content": ""})
    body = chunk({"content": piece})
    while True:
        yield body


def _anthropic_endless(counter: int, model: str, piece: str) -> Iterator[bytes]:
    def sse(name: str, data: dict) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    usage = {"input_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}
    yield sse("message_start", {"type": "message_start", "message": {
        "id": f"msg_sim{counter:08d}", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": usage}})
    yield sse("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}})
    body = sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": piece}})
    while True:
        yield body


def _converse_endless(piece: str) -> Iterator[bytes]:
    yield eventstream.event("messageStart", {"role": "assistant", "p": eventstream.padding(0)})
    body = eventstream.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece},
                                                   "p": eventstream.padding(1)})
    while True:
        yield body


# ---- event-stream frames ------------------------------------------------------------

def _bedrock_frames(family: str | None, resp: Response, knob: str) -> list[bytes]:
    if family != "bedrock" or resp.chunks is None:
        raise Reject(400, f"simulator: {knob} needs a Bedrock event stream")
    return frames_of(b"".join(resp.chunks))


def oversized_frame(ctx: Ctx, family: str | None, resp: Response) -> Response:
    """x-sim-frame-length: N: after x-sim-frame-after whole frames (default 1), a
    prelude announcing an N-byte frame, then 64 KiB of filler, then the end of the
    body. A non-streamed Bedrock answer becomes that prelude and filler alone, sent
    as an event stream."""
    length = ctx.knobs.frame_length or 0
    bad = oversized_prelude(length) + b"\x00" * FRAME_FILLER
    ctx.record["fault"] = f"frame announcing {length} bytes"
    if family == "bedrock" and resp.chunks is None:
        return Response(200, "application/vnd.amazon.eventstream", body=bad, extra_headers=resp.extra_headers)
    frames = _bedrock_frames(family, resp, "x-sim-frame-length")
    keep = frames[:max(0, ctx.knobs.frame_after)]
    # The prelude alone first, as a reader would first see it, then the filler.
    chunks = keep + [bad[:12], bad[12:]]
    return Response(200, resp.content_type, chunks=chunks, extra_headers=resp.extra_headers)


def truncated_frame(ctx: Ctx, family: str | None, resp: Response) -> Response:
    """x-sim-truncate-frame: N: N whole frames, then the first half of the next
    one, then the end of the body, and the connection is closed."""
    frames = _bedrock_frames(family, resp, "x-sim-truncate-frame")
    n = max(0, min(ctx.knobs.truncate_frame or 0, len(frames) - 1))
    cut = frames[n][: len(frames[n]) // 2]
    ctx.record["fault"] = f"frame {n} cut after {len(cut)} of {len(frames[n])} bytes"
    out = Response(200, resp.content_type, chunks=frames[:n] + [cut], extra_headers=resp.extra_headers)
    out.close_after = True
    return out


# ---- gzip -----------------------------------------------------------------------------

def broken_gzip(resp: Response) -> Response:
    """x-sim-broken-gzip: 1: content-encoding gzip, a valid gzip header, then bytes
    that are not deflate data (a whole body, or the stream's chunks)."""
    headers = [h for h in resp.extra_headers if h[0] != "content-encoding"] + [("content-encoding", "gzip")]
    if resp.chunks is None:
        out = Response(resp.status, resp.content_type, body=GZIP_HEADER + GZIP_GARBAGE, extra_headers=headers)
    else:
        out = Response(resp.status, resp.content_type, chunks=[GZIP_HEADER, GZIP_GARBAGE, GZIP_GARBAGE],
                       extra_headers=headers)
    out.usage = None
    return out

