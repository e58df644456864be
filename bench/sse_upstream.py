#!/usr/bin/env python3
"""Slow streaming upstream for the bench's time-to-first-token measurement.

Answers every HTTP/1.1 POST with the events of bench/fixtures/chat-completion.sse,
sent one by one (chunked) with a delay before the first event and between events,
like a model generating tokens. The canned Envoy upstream cannot pace its answer.
Python 3 standard library only; one asyncio task per stream, so it also holds
the memory bench's 1,000 slow streams.

Usage: sse_upstream.py PORT [--first-ms 20] [--gap-ms 10]
Prints "ready" on stdout once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "chat-completion.sse"


def events() -> list[bytes]:
    """Each `data:` event of the fixture with its blank-line terminator."""
    text = FIXTURE.read_bytes()
    return [e.strip() + b"\n\n" for e in text.split(b"\n\n") if e.strip()]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 evs: list[bytes], first: float, gap: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
            await writer.drain()
            for i, ev in enumerate(evs):
                await asyncio.sleep(first if i == 0 else gap)
                writer.write(chunk(ev))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--first-ms", type=float, default=20.0)
    ap.add_argument("--gap-ms", type=float, default=10.0)
    args = ap.parse_args()
    evs = events()
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, evs, args.first_ms / 1000, args.gap_ms / 1000),
        "127.0.0.1", args.port, backlog=4096)  # the memory bench opens 1,000 at once
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
