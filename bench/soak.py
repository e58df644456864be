#!/usr/bin/env python3
"""Soak: each filter build under a long, steady, mixed load. Nothing may fail and
the gateway's memory must stay flat.

For each build (SOAK_BUILDS: native, wasm) one gateway Envoy (bench/run.py's
bootstraps and filter configuration, --concurrency 1) runs for SOAK_SECONDS (default
600) under, at the same time:

- wrk driving a mix of 1 KiB chat requests against bench/run.py's canned upstream
  (bench/soak-mix.lua sends them in turn on every connection and checks each answer):
  JSON and SSE, OpenAI passthrough and translated (OpenAI -> Bedrock Converse and
  ConverseStream, OpenAI -> Anthropic Messages, Azure with a key and with an
  exchanged Entra ID token, a route with a fallback backend). wrk runs in segments of
  SOAK_SEGMENT seconds, so throughput is known per segment;
- a stream client (this file, `--stream-client`, in its own process) holding
  SOAK_STREAMS (default 1,000) streaming chat requests open at once, one connection
  each, against the paced SSE upstream bench/sse_upstream.py (first event after
  SOAK_STREAM_FIRST_MS, then one every SOAK_STREAM_GAP_MS: about 8 s a stream by
  default); each stream is checked (200, SSE, chunked body complete, `data: [DONE]`)
  and opened again when it ends. They reach the slow upstream through a route of
  their own (header `x-soak-slow: 1`, added to the bench bootstrap here) after the
  filter has done its work for model gpt-4o-mini.

Every SOAK_SAMPLE seconds (default 10) the gateway Envoy's resident memory (VmRSS)
is read from /proc. At the end: the least-squares slope of RSS over the second half
of the run (the first half is warm-up) and the growth it makes over that half, in %
of the fitted value at its start; throughput; errors (wrk's socket errors and non-2xx,
answers soak-mix.lua found bad, the stream client's failures, the gateway exiting).
Prints a table and writes bench/out/soak.md (and soak.json). Exits 1 on any error or
a growth of SOAK_GROWTH_LIMIT % (default 1) or more, 2 when the setup is broken.

Settings (environment): SOAK_SECONDS, SOAK_BUILDS, SOAK_STREAMS,
SOAK_STREAM_FIRST_MS, SOAK_STREAM_GAP_MS, SOAK_CONNECTIONS (wrk, default 16),
SOAK_DELAY_MS (each wrk connection pauses this long after every answer, default 2,
which keeps the rate steady and leaves the shared machine some room; 0 = back to
back), SOAK_WORKLOADS (names of bench/run.py's WORKLOADS), SOAK_SEGMENT, SOAK_SAMPLE,
SOAK_GROWTH_LIMIT, SOAK_NICE (default 0: a long run should not starve the
machine's other work), SOAK_PIN (1: the gateway on the first CPU, the load on the
others; default 0). The Envoy command and the modules are found as
bench/run.py finds them (ENVOY_BIN / AIGW_ENVOY, AIGW_SO / AIGW_MODULE_DIR,
AIGW_WASM). Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import run  # noqa: E402  (bench/run.py: Envoy, gateways, workloads, /proc readers)

OUT = run.OUT
RUN_DIR = OUT / "soak-run"
MIX_SCRIPT = BENCH / "soak-mix.lua"
SLOW_HEADER = "x-soak-slow"
# The model the slow streams ask for (routed by the filter, then to the slow upstream).
SLOW_MODEL = "gpt-4o-mini"


def env_int(name: str, default: int) -> int:
    return run.env_int(name, default)


def env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        sys.exit(f"soak: {name} must be a number")


DEFAULT_WORKLOADS = ["chat-1k", "chat-1k-stream", "bedrock-1k", "bedrock-1k-stream",
                     "anthropic-1k", "anthropic-1k-stream", "azure-key-1k",
                     "azure-entra-1k", "fallback-1k"]

SETTINGS = {
    "seconds": env_int("SOAK_SECONDS", 600),
    "builds": [b for b in re.split(r"[,\s]+", os.environ.get("SOAK_BUILDS", "native,wasm")) if b],
    "streams": env_int("SOAK_STREAMS", 1000),
    "stream_first_ms": env_int("SOAK_STREAM_FIRST_MS", 200),
    "stream_gap_ms": env_int("SOAK_STREAM_GAP_MS", 1000),
    "connections": env_int("SOAK_CONNECTIONS", 16),
    "delay_ms": env_int("SOAK_DELAY_MS", 2),
    "workloads": [w for w in re.split(r"[,\s]+", os.environ.get("SOAK_WORKLOADS", "")) if w]
    or DEFAULT_WORKLOADS,
    "segment_s": env_int("SOAK_SEGMENT", 60),
    "sample_s": env_int("SOAK_SAMPLE", 10),
    "growth_limit_pct": env_float("SOAK_GROWTH_LIMIT", 1.0),
    "nice": env_int("SOAK_NICE", 0),
    # 1: the gateway on the first CPU, the load (upstreams, wrk, stream client) on the
    # others, as bench/run.py does. Off by default: the soak's figures are errors and
    # memory, and the load (two Python processes among them) needs more than one CPU.
    "pin": env_int("SOAK_PIN", 0),
}


class SoakError(Exception):
    """The setup is broken: no figure of this run can be trusted."""


# --------------------------------------------------------------------------- stream client
# Runs in its own process (`soak.py --stream-client ...`), pinned with the load.

def dechunk(data: bytes) -> Optional[bytes]:
    """The body of a chunked transfer encoding, or None when it is incomplete."""
    out, pos = [], 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(data[pos:eol].split(b";", 1)[0], 16)
        except ValueError:
            return None
        pos = eol + 2
        if size == 0:
            return b"".join(out)
        if len(data) < pos + size + 2:
            return None
        out.append(data[pos:pos + size])
        pos += size + 2


def check_stream(raw: bytes) -> Optional[str]:
    """What is wrong with one streamed answer (None: nothing)."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return "incomplete: no response head"
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "200":
        return f"status {status[1] if len(status) > 1 else '?'}: {rest[:160]!r}"
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if not headers.get("content-type", "").startswith("text/event-stream"):
        return f"not SSE: {headers.get('content-type')!r}"
    if "chunked" in headers.get("transfer-encoding", ""):
        body = dechunk(rest)
        if body is None:
            return f"incomplete chunked body ({len(rest)} bytes)"
    elif "content-length" in headers:
        body = rest
        if len(body) != int(headers["content-length"]):
            return "incomplete body"
    else:
        body = rest
    if b"choices" not in body or not body.rstrip().endswith(b"data: [DONE]"):
        return f"no [DONE] at the end: {body[-120:]!r}"
    return None


async def stream_client(port: int, n: int, seconds: float, first_ms: int, gap_ms: int,
                        progress_s: float) -> dict:
    loop = asyncio.get_running_loop()
    body = run.chat_body(1024, True, model=SLOW_MODEL)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
            f"content-type: application/json\r\n{SLOW_HEADER}: 1\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    events = (run.FIXTURES / "chat-completion.sse").read_bytes().count(b"data:")
    lasts = (first_ms + (events - 1) * gap_ms) / 1000
    timeout = lasts + 30
    st = {"opened": 0, "completed": 0, "errors": 0, "kinds": {}, "samples": [],
          "open": 0, "max_open": 0, "durations": []}
    t0 = loop.time()
    stop_at = t0 + seconds
    gate = asyncio.Semaphore(100)  # connects in flight

    def fail(kind: str, msg: str) -> None:
        st["errors"] += 1
        st["kinds"][kind] = st["kinds"].get(kind, 0) + 1
        if len(st["samples"]) < 8:
            st["samples"].append(f"t={loop.time() - t0:.1f}s {msg}")

    async def one() -> None:
        writer = None
        started = loop.time()
        try:
            async with gate:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, limit=8192), 10)
                writer.write(head + body)
                await writer.drain()
            st["opened"] += 1
            st["open"] += 1
            st["max_open"] = max(st["max_open"], st["open"])
            try:
                chunks = []
                while True:
                    data = await asyncio.wait_for(reader.read(8192),
                                                  max(0.1, started + timeout - loop.time()))
                    if not data:
                        break
                    chunks.append(data)
            finally:
                st["open"] -= 1
            problem = check_stream(b"".join(chunks))
            if problem:
                fail(problem.split(":")[0].split(" ")[0], problem)
            else:
                st["completed"] += 1
                if len(st["durations"]) < 100000:
                    st["durations"].append(loop.time() - started)
        except asyncio.TimeoutError:
            fail("timeout", f"no complete answer within {timeout:.0f}s")
        except (OSError, asyncio.IncompleteReadError) as e:
            fail("socket", f"{type(e).__name__}: {e}")
        finally:
            if writer is not None:
                writer.close()

    async def worker() -> None:
        # Spread the starts over one stream's length, so that re-opens are even.
        await asyncio.sleep(random.uniform(0, lasts))
        while loop.time() < stop_at:
            errors = st["errors"]
            await one()
            if st["errors"] != errors:
                await asyncio.sleep(0.5)  # no hot loop against a gateway that is down

    async def progress() -> None:
        while True:
            await asyncio.sleep(progress_s)
            print(json.dumps({"progress": {k: st[k] for k in
                                           ("opened", "completed", "errors", "open")}}),
                  flush=True)

    reporter = asyncio.ensure_future(progress())
    await asyncio.gather(*(worker() for _ in range(n)))
    reporter.cancel()
    d = sorted(st.pop("durations"))
    st["duration_p50_s"] = d[len(d) // 2] if d else None
    st["duration_max_s"] = d[-1] if d else None
    st["elapsed_s"] = loop.time() - t0
    return st


def stream_client_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stream-client", action="store_true")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--streams", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--first-ms", type=int, required=True)
    ap.add_argument("--gap-ms", type=int, required=True)
    ap.add_argument("--progress-s", type=float, default=5.0)
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    st = asyncio.run(stream_client(a.port, a.streams, a.seconds, a.first_ms, a.gap_ms,
                                   a.progress_s))
    print(json.dumps({"summary": st}), flush=True)
    return 0


class StreamClient:
    """The stream client process; its progress lines are read by a thread."""

    def __init__(self, port: int, seconds: float, cpus: Optional[str]):
        cmd = run.launcher(cpus) + [
            sys.executable, str(Path(__file__).resolve()), "--stream-client",
            "--port", str(port), "--streams", str(SETTINGS["streams"]),
            "--seconds", str(seconds), "--first-ms", str(SETTINGS["stream_first_ms"]),
            "--gap-ms", str(SETTINGS["stream_gap_ms"])]
        self.log = RUN_DIR / "stream-client.log"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log.open("wb"),
                                     text=True)
        self.progress: dict = {}
        self.summary: Optional[dict] = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "progress" in msg:
                self.progress = msg["progress"]
            elif "summary" in msg:
                self.summary = msg["summary"]

    def wait(self, timeout: float) -> dict:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise SoakError(f"stream client did not finish within {timeout:.0f}s")
        self.reader.join(5)
        if self.summary is None:
            raise SoakError(f"stream client exited with {self.proc.returncode} and no summary: "
                            f"{run.tail(self.log)}")
        return self.summary

    def stop(self) -> None:
        run.stop_process(self.proc, 5)


# --------------------------------------------------------------------------- gateway


def soak_template(template: str) -> Path:
    """bench/run.py's gateway bootstrap plus a route for the slow streams (header
    x-soak-slow: 1, once the filter has set the model header) to a cluster at
    ${SLOW_PORT}, the paced SSE upstream. Written to the run directory; run.Envoy
    takes an absolute template path as it is."""
    text = (BENCH / "envoy" / template).read_text()
    lines = text.splitlines(keepends=True)
    marker = next((i for i, ln in enumerate(lines)
                   if ln.strip().startswith("# repeat per model")), None)
    clusters = next((i for i, ln in enumerate(lines) if ln.rstrip() == "  clusters:"), None)
    if marker is None or clusters is None:
        raise SoakError(f"bench/envoy/{template}: no `# repeat per model` or `clusters:` line")
    ind = " " * (len(lines[marker]) - len(lines[marker].lstrip()))
    route = [
        f"{ind}# soak.py: the slow streams, to the paced SSE upstream\n",
        f"{ind}- name: soak-slow\n",
        f"{ind}  match:\n",
        f"{ind}    prefix: /\n",
        f"{ind}    headers:\n",
        f"{ind}    - {{name: x-ai-eg-model, present_match: true}}\n",
        f"{ind}    - {{name: {SLOW_HEADER}, string_match: {{exact: \"1\"}}}}\n",
        f"{ind}  route: {{cluster: soak-slow, timeout: 120s}}\n",
    ]
    cluster = """\
  # soak.py: the paced SSE upstream of the slow streams
  - name: soak-slow
    type: STATIC
    connect_timeout: 2s
    circuit_breakers:
      thresholds:
      - {max_connections: 100000, max_pending_requests: 100000, max_requests: 100000}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http_protocol_options: {}}
    load_assignment:
      cluster_name: soak-slow
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {socket_address: {address: 127.0.0.1, port_value: ${SLOW_PORT}}}
""".splitlines(keepends=True)
    out = lines[:marker] + route + lines[marker:clusters + 1] + cluster + lines[clusters + 1:]
    path = RUN_DIR / f"soak-{template}"
    path.write_text("".join(out))
    return path


def envoy_stats(admin_port: int) -> dict[str, int]:
    """The gateway's counters the report quotes (admin /stats, text)."""
    want = re.compile(r"^(http\.gateway\.downstream_rq_(total|[1-5]xx|rx_reset|tx_reset|timeout)"
                      r"|http\.gateway\.downstream_cx_total"
                      r"|cluster\.[^.]+\.upstream_rq_(total|retry|timeout|rx_reset|tx_reset"
                      r"|pending_overflow)"
                      r"|cluster\.[^.]+\.upstream_cx_(connect_fail|destroy_remote_with_active_rq)"
                      r"|(dynamicmodulescustom|wasmcustom)\..*|wasm\..*)$")
    try:
        with run.HTTP.open(f"http://127.0.0.1:{admin_port}/stats", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if want.match(name) and value.strip().isdigit():
            out[name] = int(value)
    return out


# --------------------------------------------------------------------------- wrk


def wrk_mix_args(workloads: list) -> list[str]:
    args = []
    if SETTINGS["delay_ms"] > 0:
        args.append(f"@delay={SETTINGS['delay_ms']}")
    for wl in workloads:
        body = RUN_DIR / f"{wl.name}.body"
        body.write_bytes(wl.body)
        args.append(f"@req={body}")
        args += [f"{k}={v}" for k, v in wl.headers.items()]
    return args


class WrkLoop(threading.Thread):
    """wrk in segments of SOAK_SEGMENT seconds until `seconds` have passed."""

    def __init__(self, url: str, mix: list[str], seconds: float, cpus: Optional[str]):
        super().__init__(daemon=True)
        self.url, self.mix, self.seconds, self.cpus = url, mix, seconds, cpus
        self.segments: list[dict] = []
        self.failure: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None
        self.stopping = False

    def run(self) -> None:
        end = time.monotonic() + self.seconds
        while not self.stopping:
            left = end - time.monotonic()
            if left < 1:
                break
            d = int(min(SETTINGS["segment_s"], left))
            cmd = run.launcher(self.cpus) + [
                "wrk", "-t1", f"-c{SETTINGS['connections']}", f"-d{d}s", "--timeout", "10s",
                "-s", str(MIX_SCRIPT), f"{self.url}/v1/chat/completions", "--"] + self.mix
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True)
            out, err = self.proc.communicate()
            for line in out.splitlines():
                if line.startswith("SOAK_JSON "):
                    seg = json.loads(line[len("SOAK_JSON "):])
                    seg["seconds"] = d
                    self.segments.append(seg)
                    break
            else:
                if not self.stopping:
                    self.failure = f"wrk gave no summary (rc {self.proc.returncode}): {out} {err}"
                return

    def stop(self) -> None:
        self.stopping = True
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()


# --------------------------------------------------------------------------- one build


def least_squares(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(intercept, slope) of y over x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - slope * mx, slope


def rss_summary(samples: list[dict], seconds: float) -> dict:
    half = [(s["t"], s["rss_mib"]) for s in samples if s["t"] >= seconds / 2]
    if len(half) < 2:
        half = [(s["t"], s["rss_mib"]) for s in samples[-2:]]
    a, b = least_squares(half)
    t_start, t_end = half[0][0], half[-1][0]
    fit_start, fit_end = a + b * t_start, a + b * t_end
    rss = [s["rss_mib"] for s in samples]
    return {
        "start_mib": rss[0], "end_mib": rss[-1], "max_mib": max(rss), "min_mib": min(rss),
        "half_start_mib": half[0][1], "half_max_mib": max(y for _, y in half),
        "half_min_mib": min(y for _, y in half),
        "slope_mib_per_min": b * 60,
        "growth_pct": (fit_end - fit_start) / fit_start * 100 if fit_start else 0.0,
        "raw_growth_pct": (half[-1][1] - half[0][1]) / half[0][1] * 100 if half[0][1] else 0.0,
        "half_samples": len(half), "half_from_s": t_start, "half_to_s": t_end,
    }


def soak_build(name: str, upstream: run.Envoy, slow: run.SseUpstream,
               workloads: list, gw_cpus: Optional[str], load_cpus: Optional[str]) -> dict:
    """One build's run; returns its figures."""
    gw = next(g for g in run.GATEWAYS if g.name == name)
    for p in gw.requires:
        if not p.exists():
            raise SoakError(f"{name} needs {p}: run `make build`")
    seconds = SETTINGS["seconds"]
    template = soak_template(gw.template)
    subs = {"UPSTREAM_PORT": upstream.port, "SLOW_PORT": slow.port, **gw.subs()}
    t_start = time.monotonic()
    try:
        envoy = run.Envoy(f"soak-{name}", str(template), subs, gw_cpus, gw.env(),
                          gw.ready_timeout)
    except run.BenchError as e:
        raise SoakError(str(e))
    ready_s = time.monotonic() - t_start
    pid = envoy.proc.pid
    procs: list = [envoy]
    try:
        # A broken setup must not produce a number: every request of the mix, once.
        for wl in workloads:
            try:
                line = run.check(gw, envoy, wl)
            except run.BenchError as e:
                raise SoakError(str(e))
            print(f"check ok  {name:6} {wl.name:20} {line}", flush=True)

        load_avg0 = os.getloadavg()
        # Other work on the machine meanwhile: busy CPU time less this run's (the
        # Envoys, the SSE upstream, and the reaped children: wrk, the stream client).
        ours = [pid, upstream.proc.pid, slow.proc.pid]
        busy0 = run.machine_busy_seconds()
        ours0 = sum(map(run.proc_cpu_seconds, ours)) + run.children_cpu_seconds()
        cpu0 = run.proc_cpu_seconds(pid)
        samples = [{"t": 0.0, "rss_mib": run.proc_rss_mib(pid), "open": 0, "completed": 0,
                    "stream_errors": 0, "requests": 0}]
        print(f"soak      {name:6} start: RSS {samples[0]['rss_mib']:.1f} MiB; "
              f"{seconds}s of load", flush=True)
        client = StreamClient(envoy.port, seconds, load_cpus)
        procs.append(client)
        wrk = WrkLoop(envoy.url, wrk_mix_args(workloads), seconds, load_cpus)
        procs.append(wrk)
        t0 = time.monotonic()
        wrk.start()
        k = 1
        died = None
        while True:
            due = t0 + k * SETTINGS["sample_s"]
            if due > t0 + seconds + 0.5:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            if envoy.proc.poll() is not None:
                died = f"the gateway Envoy exited with {envoy.proc.returncode}: {run.tail(envoy.log)}"
                break
            p = client.progress
            s = {"t": round(time.monotonic() - t0, 1), "rss_mib": run.proc_rss_mib(pid),
                 "open": p.get("open", 0), "completed": p.get("completed", 0),
                 "stream_errors": p.get("errors", 0),
                 "requests": sum(x["requests"] for x in wrk.segments)}
            samples.append(s)
            print(f"soak      {name:6} t={s['t']:6.0f}s RSS {s['rss_mib']:7.1f} MiB  "
                  f"streams open {s['open']:5}  done {s['completed']:7}  "
                  f"stream errors {s['stream_errors']}  wrk requests {s['requests']} "
                  f"(finished segments)", flush=True)
            k += 1
            if wrk.failure:
                break
        wrk.join(SETTINGS["segment_s"] + 30)
        if wrk.failure:
            raise SoakError(wrk.failure)
        events = 9
        lasts = (SETTINGS["stream_first_ms"] + (events - 1) * SETTINGS["stream_gap_ms"]) / 1000
        streams = client.wait(lasts + 90)
        elapsed = time.monotonic() - t0
        cpu1 = run.proc_cpu_seconds(pid)
        busy1 = run.machine_busy_seconds()
        ours1 = sum(map(run.proc_cpu_seconds, ours)) + run.children_cpu_seconds()
        stats = envoy_stats(envoy.admin_port)
        if died is None and envoy.proc.poll() is not None:
            died = f"the gateway Envoy exited with {envoy.proc.returncode}"
    finally:
        for p in reversed(procs):
            p.stop()

    segs = wrk.segments
    wrk_requests = sum(s["requests"] for s in segs)
    wrk_seconds = sum(s["duration_us"] for s in segs) / 1e6
    seg_rps = [s["requests"] / (s["duration_us"] / 1e6) for s in segs if s["duration_us"]]
    wrk_err = {k: sum(s[k] for s in segs) for k in
               ("err_connect", "err_read", "err_write", "err_status", "err_timeout", "bad")}
    bad_sample = next((s["bad_sample"] for s in segs if s.get("bad_sample")), "")
    # err_status (wrk: status >= 400) is part of `bad` (not a 200, or a bad body).
    wrk_errors = (wrk_err["err_connect"] + wrk_err["err_read"] + wrk_err["err_write"]
                  + wrk_err["err_timeout"] + wrk_err["bad"])
    errors = wrk_errors + streams["errors"] + (1 if died else 0)
    rss = rss_summary(samples, seconds)
    mix_requests = wrk_requests + streams["completed"] + streams["errors"]
    other_cpu = max(0.0, ((busy1 - busy0) - (ours1 - ours0)) / elapsed)
    return {
        "build": name, "ready_s": ready_s, "seconds": seconds, "elapsed_s": elapsed,
        "wrk": {"requests": wrk_requests, "seconds": wrk_seconds,
                "rps": wrk_requests / wrk_seconds if wrk_seconds else 0.0,
                "segment_rps_min": min(seg_rps) if seg_rps else 0.0,
                "segment_rps_max": max(seg_rps) if seg_rps else 0.0,
                "segments": len(segs),
                "p50_ms": max((s["lat_p50_us"] for s in segs), default=0) / 1000,
                "p99_ms_max": max((s["lat_p99_us"] for s in segs), default=0) / 1000,
                **wrk_err, "bad_sample": bad_sample},
        "streams": streams,
        "stream_rate": streams["completed"] / streams["elapsed_s"] if streams["elapsed_s"] else 0,
        "gateway_cpu_s": cpu1 - cpu0,
        "cpu_us_per_req": (cpu1 - cpu0) * 1e6 / mix_requests if mix_requests else None,
        "other_cpu": other_cpu,
        "load_avg_start": load_avg0, "load_avg_end": os.getloadavg(),
        "envoy_stats": stats,
        "gateway_5xx": stats.get("http.gateway.downstream_rq_5xx", 0),
        "panics": sum(v for k, v in stats.items() if k.endswith(".aigw_panics")),
        "died": died, "errors": errors, "wrk_errors": wrk_errors,
        "rss": rss, "samples": samples,
        "pass_errors": errors == 0,
        "pass_growth": rss["growth_pct"] < SETTINGS["growth_limit_pct"],
    }


# --------------------------------------------------------------------------- report


def fmt_load(t) -> str:
    return " ".join(f"{x:.2f}" for x in t)


def render(results: list[dict], meta: dict) -> str:
    s = SETTINGS
    events = 9
    lasts = (s["stream_first_ms"] + (events - 1) * s["stream_gap_ms"]) / 1000
    rate = (f"each connection pausing {s['delay_ms']} ms after every answer"
            if s["delay_ms"] > 0 else "back to back")
    out = [
        "# aigw soak",
        "",
        f"- when: {meta['when']}  commit: {meta['commit']}",
        f"- envoy: {meta['envoy']}",
        f"- machine: {meta['cpus']} CPUs, {meta['machine']}; load average before the run "
        f"{meta['load_before']}, after {meta['load_after']}",
        f"- placement: {meta['placement']}; niceness {s['nice']}",
        f"- per build: {s['seconds']} s of load on one gateway Envoy (--concurrency 1): "
        f"wrk -t1 -c{s['connections']} ({rate}) sending in turn "
        f"{', '.join(s['workloads'])} (1 KiB requests, bench/run.py's canned upstream), "
        f"and {s['streams']} streams held open at once by a client that re-opens each "
        f"when it ends (paced SSE upstream: first event after {s['stream_first_ms']} ms, "
        f"then one every {s['stream_gap_ms']} ms, {lasts:.1f} s a stream)",
        f"- RSS: VmRSS of the gateway Envoy every {s['sample_s']} s; slope and growth by "
        f"least squares over the second half of the run (the first is warm-up); growth = "
        f"fitted rise over that half / fitted value at its start. Goals: 0 errors, "
        f"growth < {s['growth_limit_pct']}%",
        "",
        "| build | wrk req/s | wrk requests | req/s per segment (min-max) | streams done "
        "| streams/s | open streams (mean of samples) | errors | gateway 5xx | RSS start MiB "
        "| RSS at half MiB | RSS end MiB | RSS max MiB | slope MiB/min | growth % "
        "| gateway CPU µs/req | other CPU | result |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        w, st, rss = r["wrk"], r["streams"], r["rss"]
        opens = [x["open"] for x in r["samples"][1:]]
        ok = r["pass_errors"] and r["pass_growth"]
        verdict = "PASS" if ok else "FAIL (" + ", ".join(
            ([f"{r['errors']} errors"] if not r["pass_errors"] else [])
            + ([f"growth {rss['growth_pct']:.2f}%"] if not r["pass_growth"] else [])) + ")"
        out.append(
            f"| {r['build']} | {w['rps']:.0f} | {w['requests']} "
            f"| {w['segment_rps_min']:.0f}-{w['segment_rps_max']:.0f} | {st['completed']} "
            f"| {r['stream_rate']:.1f} | {sum(opens) / len(opens) if opens else 0:.0f} "
            f"| {r['errors']} | {r['gateway_5xx']} | {rss['start_mib']:.1f} "
            f"| {rss['half_start_mib']:.1f} | {rss['end_mib']:.1f} | {rss['max_mib']:.1f} "
            f"| {rss['slope_mib_per_min']:+.3f} | {rss['growth_pct']:+.2f} "
            f"| {run.fmt(r['cpu_us_per_req'], '.0f')} | {r['other_cpu']:.2f} | {verdict} |")
    out += ["", "Errors by source:", ""]
    for r in results:
        w, st = r["wrk"], r["streams"]
        out.append(
            f"- {r['build']}: wrk connect {w['err_connect']}, read {w['err_read']}, write "
            f"{w['err_write']}, timeout {w['err_timeout']}, status >= 400 {w['err_status']}, "
            f"bad answers {w['bad']}{' (' + w['bad_sample'] + ')' if w['bad_sample'] else ''}; "
            f"streams {st['errors']} failed of {st['opened']} opened"
            f"{' ' + json.dumps(st['kinds']) + ': ' + '; '.join(st['samples']) if st['errors'] else ''}"
            f"; gateway 5xx {r['gateway_5xx']}, panics caught {r['panics']}; gateway "
            f"{'exited: ' + r['died'] if r['died'] else 'alive to the end'}; "
            f"started in {r['ready_s']:.1f} s; stream length p50 "
            f"{run.fmt(st['duration_p50_s'], '.2f')} s, max {run.fmt(st['duration_max_s'], '.2f')} s; "
            f"wrk p50 (worst segment) {w['p50_ms']:.2f} ms, p99 {w['p99_ms_max']:.2f} ms; "
            f"load average {fmt_load(r['load_avg_start'])} -> {fmt_load(r['load_avg_end'])}")
    out += ["", f"RSS samples (MiB, every {s['sample_s']} s from the start of the load):", ""]
    for r in results:
        vals = " ".join(f"{x['rss_mib']:.1f}" for x in r["samples"])
        rss = r["rss"]
        out.append(f"- {r['build']}: {vals}  (second half: {rss['half_samples']} samples, "
                   f"{rss['half_min_mib']:.1f}-{rss['half_max_mib']:.1f} MiB, first to last "
                   f"{rss['raw_growth_pct']:+.2f}%)")
    return "\n".join(out) + "\n"


def git_commit() -> str:
    c = run.git_commit()
    dirty = subprocess.run(["git", "-C", str(run.REPO), "status", "--porcelain", "-uno", "--",
                            "filter", "sdk-shim", "Cargo.lock"],
                           capture_output=True, text=True).stdout.strip()
    return c + (" (filter/shim sources modified)" if dirty else "")


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
        return f"{model}, {int(mem) // 1024 // 1024 + 1} GiB RAM"
    except (OSError, IndexError, ValueError):
        return model or "?"


def main() -> int:
    if not shutil.which("wrk"):
        raise SoakError("wrk is not installed (apt-get install wrk)")
    unknown = [b for b in SETTINGS["builds"] if b not in ("native", "wasm")]
    if unknown or not SETTINGS["builds"]:
        raise SoakError(f"SOAK_BUILDS: unknown build(s) {unknown}; choose native, wasm")
    by_name = {w.name: w for w in run.WORKLOADS}
    missing = [w for w in SETTINGS["workloads"] if w not in by_name]
    if missing:
        raise SoakError(f"SOAK_WORKLOADS: unknown {missing}; known: {sorted(by_name)}")
    workloads = [by_name[w] for w in SETTINGS["workloads"]]
    if SETTINGS["seconds"] < 2 * SETTINGS["sample_s"]:
        raise SoakError("SOAK_SECONDS must cover at least two samples")

    run.ENVOY = run.find_envoy()
    run.SETTINGS["nice"] = SETTINGS["nice"]
    if RUN_DIR.exists():
        shutil.rmtree(RUN_DIR)
    RUN_DIR.mkdir(parents=True)
    run.RUN = RUN_DIR  # run.Envoy, run.SseUpstream write their files there
    run.raise_fd_limit(3 * SETTINGS["streams"] + 1024)

    run.SETTINGS["pin"] = SETTINGS["pin"]
    gw_cpus, load_cpus = run.cpu_sets()
    version = subprocess.run(run.ENVOY + ["--version"], capture_output=True,
                             text=True).stdout.strip().split("version:")[-1].strip()
    meta = {
        "when": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": git_commit(), "envoy": f"{' '.join(run.ENVOY)} ({version})",
        "cpus": os.cpu_count(), "machine": machine(),
        "load_before": fmt_load(os.getloadavg()),
        "placement": (f"gateway pinned to CPU {gw_cpus}, upstreams, wrk and the stream "
                      f"client to CPU {load_cpus}" if gw_cpus else "unpinned"),
    }
    print(f"soak: {SETTINGS['seconds']}s per build, builds {SETTINGS['builds']}, "
          f"{meta['placement']}; load average {meta['load_before']}", flush=True)

    results = []
    procs: list = []
    try:
        run.write_bedrock_stream(RUN_DIR / "bedrock-converse-stream.bin")
        try:
            upstream = run.Envoy("upstream", "upstream.yaml", {}, load_cpus)
            procs.append(upstream)
            slow = run.SseUpstream(load_cpus, SETTINGS["stream_first_ms"],
                                   SETTINGS["stream_gap_ms"])
            procs.append(slow)
        except run.BenchError as e:
            raise SoakError(str(e))
        for name in SETTINGS["builds"]:
            r = soak_build(name, upstream, slow, workloads, gw_cpus, load_cpus)
            results.append(r)
            print(f"soak      {name:6} {r['wrk']['rps']:.0f} req/s, "
                  f"{r['streams']['completed']} streams, errors {r['errors']}, RSS slope "
                  f"{r['rss']['slope_mib_per_min']:+.3f} MiB/min, growth "
                  f"{r['rss']['growth_pct']:+.2f}% over the second half", flush=True)
    finally:
        for p in reversed(procs):
            p.stop()

    meta["load_after"] = fmt_load(os.getloadavg())
    table = render(results, meta)
    OUT.mkdir(exist_ok=True)
    (OUT / "soak.md").write_text(table)
    (OUT / "soak.json").write_text(json.dumps({"meta": meta, "settings": SETTINGS,
                                                "results": results}, indent=2))
    print()
    print(table)
    print(f"written to {OUT / 'soak.md'}")
    failed = [r["build"] for r in results if not (r["pass_errors"] and r["pass_growth"])]
    if failed:
        print(f"soak: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if "--stream-client" in sys.argv[1:]:
        sys.exit(stream_client_main(sys.argv[1:]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with run.AutogroupNice(SETTINGS["nice"]):
            rc = main()
        sys.exit(rc)
    except SoakError as e:
        print(f"soak: FAILED (setup): {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
