"""Writes the ConverseStream fixtures (*.bin) from the event lists below, with an
encoder independent of the Rust one, and checks each file decodes with botocore.

Run: python3 make_streams.py (needs botocore)
"""
import binascii
import json
import os
import struct

from botocore.eventstream import EventStreamBuffer

HERE = os.path.dirname(os.path.abspath(__file__))


def header(name, value):
    n = name.encode()
    v = value.encode()
    return bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v


def frame(headers, payload):
    h = b"".join(header(k, v) for k, v in headers)
    total = 16 + len(h) + len(payload)
    pre = struct.pack(">II", total, len(h))
    pre += struct.pack(">I", binascii.crc32(pre) & 0xFFFFFFFF)
    body = pre + h + payload
    return body + struct.pack(">I", binascii.crc32(body) & 0xFFFFFFFF)


def event(kind, payload):
    return frame(
        [(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")],
        json.dumps(payload, separators=(",", ":")).encode(),
    )


def exception(kind, message):
    return frame(
        [(":exception-type", kind), (":content-type", "application/json"), (":message-type", "exception")],
        json.dumps({"message": message}).encode(),
    )


STREAMS = {
    "stream_text": [
        event("messageStart", {"p": "abcdefghij", "role": "assistant"}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hello"}, "p": "abcd"}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": ", wörld"}, "p": "ab"}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "!"}, "p": "abcdef"}),
        event("contentBlockStop", {"contentBlockIndex": 0, "p": "abc"}),
        event("messageStop", {"p": "abcdefgh", "stopReason": "max_tokens"}),
        event("metadata", {"metrics": {"latencyMs": 412}, "p": "ab",
                           "usage": {"inputTokens": 12, "outputTokens": 4, "totalTokens": 16}}),
    ],
    "stream_tools": [
        event("messageStart", {"role": "assistant"}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "The user wants weather."}}}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "c2lnbmF0dXJl"}}}),
        event("contentBlockStop", {"contentBlockIndex": 0}),
        event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Checking both cities."}}),
        event("contentBlockStop", {"contentBlockIndex": 1}),
        event("contentBlockStart", {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tooluse_paris", "name": "get_weather"}}}),
        event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": ""}}}),
        event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{\"city\": \"Pa"}}}),
        event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "ris\"}"}}}),
        event("contentBlockStop", {"contentBlockIndex": 2}),
        event("contentBlockStart", {"contentBlockIndex": 3, "start": {"toolUse": {"toolUseId": "tooluse_rome", "name": "get_weather"}}}),
        event("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{\"city\": \"Rome\"}"}}}),
        event("contentBlockStop", {"contentBlockIndex": 3}),
        event("messageStop", {"stopReason": "tool_use"}),
        event("metadata", {"metrics": {"latencyMs": 900},
                           "usage": {"inputTokens": 30, "outputTokens": 41, "totalTokens": 171,
                                     "cacheReadInputTokens": 100, "cacheWriteInputTokens": 0}}),
    ],
    # Claude 3.7 with thinking: signed and redacted reasoning, a prompt cache read and
    # write in the usage.
    "stream_reasoning": [
        event("messageStart", {"role": "assistant"}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Paris is "}}}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "the capital."}}}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "RXFvQkNrZ0lBUkFCR0FJ"}}}),
        event("contentBlockStop", {"contentBlockIndex": 0}),
        event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"reasoningContent": {"redactedContent": "cmVkYWN0ZWQ="}}}),
        event("contentBlockStop", {"contentBlockIndex": 1}),
        event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"text": "Paris."}}),
        event("contentBlockStop", {"contentBlockIndex": 2}),
        event("messageStop", {"stopReason": "end_turn"}),
        event("metadata", {"metrics": {"latencyMs": 700},
                           "usage": {"inputTokens": 10, "outputTokens": 30, "totalTokens": 2040,
                                     "cacheReadInputTokens": 1500, "cacheWriteInputTokens": 500}}),
    ],
    "stream_exception": [
        event("messageStart", {"role": "assistant"}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Partial"}}),
        exception("throttlingException", "Too many tokens, please wait before trying again."),
    ],
}

for name, frames in STREAMS.items():
    data = b"".join(frames)
    with open(os.path.join(HERE, name + ".bin"), "wb") as f:
        f.write(data)
    buf = EventStreamBuffer()
    buf.add_data(data)
    n = sum(1 for _ in buf)
    assert n == len(frames), (name, n)
    print(name, len(data), "bytes,", n, "messages")
