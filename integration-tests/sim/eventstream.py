"""AWS event-stream framing (`application/vnd.amazon.eventstream`), encoder only.

    total length u32 BE | headers length u32 BE | prelude CRC32 (of those 8 bytes)
    headers | payload | message CRC32 (of everything before it)

A header is: name length u8, name, value type u8, value; type 7 (string) carries a
u16 BE length then UTF-8 bytes. CRC32 is the IEEE one (zlib.crc32).
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

STRING = 7


def frame(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    hdr = b""
    for name, value in headers:
        n, v = name.encode(), value.encode()
        hdr += struct.pack(">B", len(n)) + n + struct.pack(">BH", STRING, len(v)) + v
    total = 12 + len(hdr) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hdr))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + hdr + payload
    return head + struct.pack(">I", zlib.crc32(head))


def event(event_type: str, payload: Any) -> bytes:
    return frame([(":event-type", event_type), (":content-type", "application/json"), (":message-type", "event")],
                 json.dumps(payload, separators=(",", ":")).encode())


def exception(exception_type: str, message: str) -> bytes:
    return frame([(":exception-type", exception_type), (":content-type", "application/json"),
                  (":message-type", "exception")],
                 json.dumps({"message": message}, separators=(",", ":")).encode())


def split_chunks(frames: list[bytes]) -> tuple[list[bytes], list[int]]:
    """Cuts the byte stream of `frames` at odd places: 7 bytes into every frame
    (inside the prelude), at the start of even-numbered frames only (so a chunk holds
    the end of one frame and the start of the next), and in the middle of every third
    frame's body. Returns the chunks and, per chunk, how many frames are complete once
    it has been sent."""
    starts, ends, pos = [], [], 0
    for f in frames:
        starts.append(pos)
        pos += len(f)
        ends.append(pos)
    total = pos
    cuts = set()
    for k, (s, f) in enumerate(zip(starts, frames)):
        if k % 2 == 0:
            cuts.add(s)
        if len(f) > 7:
            cuts.add(s + 7)
        if k % 3 == 1 and len(f) > 40:
            cuts.add(s + len(f) // 2 + 1)
    points = sorted(c for c in cuts if 0 < c < total)
    data = b"".join(frames)
    chunks, done, prev = [], [], 0
    for c in points + [total]:
        chunks.append(data[prev:c])
        done.append(sum(1 for e in ends if e <= c))
        prev = c
    return chunks, done


def whole_frames(frames: list[bytes]) -> tuple[list[bytes], list[int]]:
    return list(frames), list(range(1, len(frames) + 1))


def padding(seed: int) -> str:
    """Bedrock pads stream events with a "p" field of letters of varying length."""
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return letters[: 1 + (seed * 7) % len(letters)]
