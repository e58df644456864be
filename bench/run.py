#!/usr/bin/env python3
"""Gateway overhead benchmark: plain Envoy vs Envoy + the aigw filter (native
libaigw.so and aigw.wasm), optionally LiteLLM.

One run starts a canned upstream (an Envoy answering with direct_response), one
process per gateway, checks that each gateway really works, then drives every
(workload, gateway) pair with wrk at saturation and writes a table of throughput,
latency and CPU per request with the ratios against the plain-Envoy baseline to
bench/out/latest.md. Then a second set of Envoy gateways in front of a paced SSE
upstream (bench/sse_upstream.py) gives the time to first token at low concurrency,
and a third set the gateway Envoy's resident memory while 1,000 streams are open.

Limits and budgets: the workload budget-1k goes to a route of aigw-config.json with a
token limit and a budget per identity (embedded mode, set far above what the bench
spends); the report gives each filter gateway's extra CPU per request over chat-1k,
measured in the same rounds, against GOAL_LIMITS_US. With BENCH_FLEET=1 (run.sh sets it
when redis-server is installed) three more gateways serve budget-1k in fleet mode:
plain Envoy, Envoy + libaigw.so and Envoy + aigw.wasm, each with Envoy's rate-limit
filter as `aigw compile --quota fleet` writes it, asking one rate-limit service
(integration-tests/rls, Python, over one Redis) that the bench starts; plain Envoy takes
its descriptors from generic keys and the x-api-key header instead of the filter's
metadata (see the fleet section below).

Python 3 standard library only (fleet mode: the rate-limit service runs with the repo's
.venv Python, which also reads the compiler's YAML). Settings come from the environment
(see SETTINGS). To add a row, add a Gateway to GATEWAYS or a Workload to WORKLOADS;
nothing else needs to change.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
import os
import re
import resource
import secrets
import shutil
import shlex
import signal
import socket
import statistics
import string
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Callable, Optional

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
RUN = OUT / "run"
FIXTURES = BENCH / "fixtures"

NS = "io.envoy.ai_gateway"

# The Envoy command, resolved in main() (see find_envoy).
ENVOY: list[str] = []


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        sys.exit(f"bench: {name} must be an integer")


# Settings (environment variables).
SETTINGS = {
    "duration_s": env_int("BENCH_DURATION", 10),  # measured wrk run per pair
    "warmup_s": env_int("BENCH_WARMUP", 3),  # unmeasured wrk run before each
    "connections": env_int("BENCH_CONNECTIONS", 32),
    "threads": env_int("BENCH_THREADS", 1),
    # Rounds per pair; gateways alternate order each round; the table shows medians
    # over rounds, which damps noise from other work on the machine.
    "rounds": env_int("BENCH_ROUNDS", 3),
    # Latency at a moderate rate: after each saturated run, wrk with this many
    # connections, each pausing paced_delay_ms after every answer (bench/post-paced.lua),
    # for paced_s seconds; p50/p99 in the table come from this run.
    "paced_connections": env_int("BENCH_PACED_CONNECTIONS", 4),
    "paced_delay_ms": env_int("BENCH_PACED_DELAY_MS", 2),
    "paced_s": env_int("BENCH_PACED_DURATION", 5),
    # Before measuring, wait up to this long for other work on the machine to stop.
    "quiet_wait_s": env_int("BENCH_QUIET_WAIT", 30),
    # 1: pin each gateway Envoy to CPU 0 and the upstream and wrk to the other CPUs.
    "pin": env_int("BENCH_PIN", 1 if (os.cpu_count() or 1) >= 2 else 0),
    # Niceness of the bench's processes (Envoys and wrk). Negative values (root only)
    # let them win the CPU over background work such as compiles.
    "nice": env_int("BENCH_NICE", -10 if os.geteuid() == 0 else 0),
    # Time to first token: sequential streaming requests per gateway (0: skip) against
    # bench/sse_upstream.py, which waits ttft_first_ms before the first event and
    # ttft_gap_ms between events.
    "ttft_requests": env_int("BENCH_TTFT", 40),
    "ttft_first_ms": env_int("BENCH_TTFT_FIRST_MS", 20),
    "ttft_gap_ms": env_int("BENCH_TTFT_GAP_MS", 5),
    # Memory under many open streams (~15 s; BENCH_MEMORY=0 skips it, =only runs it alone):
    # this many concurrent streaming requests per Envoy gateway, held open by a slow
    # upstream (first event after memory_first_ms, then one every memory_gap_ms).
    "memory_streams": env_int("BENCH_MEMORY_STREAMS", 1000),
    "memory_first_ms": env_int("BENCH_MEMORY_FIRST_MS", 200),
    "memory_gap_ms": env_int("BENCH_MEMORY_GAP_MS", 5000),
    # Fleet mode (1: on; run.sh turns it on when redis-server is installed): the
    # plain-fleet, native-fleet and wasm-fleet gateways on budget-1k, with one Redis and
    # the Python rate-limit service. The service, not the gateway, limits throughput
    # at saturation, so the latency that tells is at a rate well below its capacity:
    # fleet_paced_connections connections, each pausing fleet_paced_delay_ms.
    "fleet": env_int("BENCH_FLEET", 0),
    "fleet_paced_connections": env_int("BENCH_FLEET_PACED_CONNECTIONS", 1),
    "fleet_paced_delay_ms": env_int("BENCH_FLEET_PACED_DELAY_MS", 5),
    # Threads of the rate-limit service's gRPC server.
    "fleet_rls_workers": env_int("BENCH_FLEET_RLS_WORKERS", 8),
}
MEMORY = os.environ.get("BENCH_MEMORY", "1")
ONLY_WORKLOADS = [w for w in os.environ.get("BENCH_WORKLOADS", "").split(",") if w]
ONLY_GATEWAYS = [g for g in os.environ.get("BENCH_GATEWAYS", "").split(",") if g]

# The Responses API translated to Bedrock: at least this share of chat's ratio.
GOAL_RESPONSES_SHARE = 0.95
# A filter gateway may add less than this to the median time to first token.
GOAL_TTFT_MS = 1.0
# The native gateway against LiteLLM on the same upstream: throughput at least this much.
GOAL_NATIVE_OVER_LITELLM = 10.0

# What the canned upstream reports and what the bench's costs must turn it into.
EXPECTED_USAGE = {"in": "212", "out": "38", "total": "250", "cel": str(212 + 4 * 38)}
# Its cost in micro-USD at gpt-4o-mini's catalog price (0.15 and 0.60 USD per million
# input and output tokens), as the filter writes it (llm_cost) and charges it in fleet
# mode (rl_cost).
EXPECTED_COST_MICRO = "55"

# Limits and budgets (embedded mode): budget-1k may cost a filter gateway less than
# this many CPU µs per request more than chat-1k, the same request to the same backend
# on a route without limits, measured in the same round.
GOAL_LIMITS_US = 2.0
LIMITS_WORKLOAD, LIMITS_REFERENCE = "budget-1k", "chat-1k"
# Guardrails: a PII policy (every detector, mask) on both stages of a route may cost a
# filter gateway less than this many CPU µs per KiB of request more than the same
# request on a route without it (measured in the same round), and the guarded 1 KiB
# route keeps at least GOAL_GUARDRAILS_RATIO of plain Envoy's throughput.
GOAL_GUARDRAILS_US_PER_KIB = 1.0
GOAL_GUARDRAILS_RATIO = 0.8
GUARDRAIL_WORKLOADS = {"guardrails-1k": ("chat-1k", 1), "guardrails-64k": ("chat-64k", 64)}
# The identities budget-1k rotates through (x-api-key, one per request in turn).
BENCH_KEYS = tuple(f"sk-bench-key-{i}" for i in range(1, 5))



def log_format(field: Callable[[str], str]) -> str:
    """One access-log line per check request (only those carry x-bench-log: 1);
    `field` turns a metadata key into the Envoy command operator that reads it."""
    keys = [("model", "request_model"), ("route", "route_name"),
            ("backend", "backend_name"), ("in", "llm_input_token"),
            ("out", "llm_output_token"), ("total", "llm_total_token"),
            ("cel", "llm_cel_cost"), ("cost", "llm_cost"), ("identity", "identity")]
    return " ".join(["id=%REQ(X-BENCH-ID)%", "status=%RESPONSE_CODE%"]
                    + [f"{name}={field(key)}" for name, key in keys])


LOG_FORMAT = log_format(lambda key: f"%DYNAMIC_METADATA({NS}:{key})%")
# proxy-wasm cannot write dynamic metadata: the wasm build sets filter state instead.
WASM_LOG_FORMAT = log_format(lambda key: f"%FILTER_STATE(wasm.{NS}.{key}:PLAIN)%")


# Local requests never go through an HTTP proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(Exception):
    """The setup is broken: no number from this run can be trusted."""


# --------------------------------------------------------------------------- tools


def find_envoy() -> list[str]:
    """The Envoy command: ENVOY_BIN, else AIGW_ENVOY (set by the Makefile, may be
    `func-e run`), else the repo's .venv, else the setup venv, else PATH."""
    for var in ("ENVOY_BIN", "AIGW_ENVOY"):
        if os.environ.get(var, "").strip():
            return shlex.split(os.environ[var])
    for cand in (REPO / ".venv/bin/envoy", Path("/tmp/setup/venv/bin/envoy")):
        if cand.exists():
            return [str(cand)]
    found = shutil.which("envoy")
    if not found:
        raise BenchError("no Envoy binary: set ENVOY_BIN or run `make` to install .venv")
    return [found]


def aigw_so() -> Path:
    """AIGW_SO, else libaigw.so in AIGW_MODULE_DIR (Makefile), else target/release."""
    if os.environ.get("AIGW_SO"):
        return Path(os.environ["AIGW_SO"]).resolve()
    module_dir = os.environ.get("AIGW_MODULE_DIR") or REPO / "target/release"
    return (Path(module_dir) / "libaigw.so").resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(cpus: Optional[str]) -> list[str]:
    """Command prefix applying the bench's niceness and CPU pinning (both exec, so
    the pid stays the target's)."""
    pre = []
    if SETTINGS["nice"] and shutil.which("nice"):
        pre += ["nice", "-n", str(SETTINGS["nice"])]
    if cpus is not None:
        pre += ["taskset", "-c", cpus]
    return pre


class AutogroupNice:
    """With sched autogroup on, the kernel shares CPU between sessions first and nice
    values only order processes inside one session, so a compile started from another
    terminal still takes half the machine. Raising this session's autogroup priority
    (root only) for the run, and putting it back after, is what makes BENCH_NICE work."""

    PATH = Path("/proc/self/autogroup")

    def __init__(self, nice: int):
        self.nice, self.saved = nice, None

    def __enter__(self):
        if self.nice >= 0 or os.geteuid() != 0:
            return self
        try:
            self.saved = int(self.PATH.read_text().split("nice")[1])
            self.PATH.write_text(str(self.nice))
        except (OSError, ValueError, IndexError):
            self.saved = None
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            try:
                self.PATH.write_text(str(self.saved))
            except OSError:
                pass


def cpu_sets() -> tuple[Optional[str], Optional[str]]:
    """(gateway CPUs, upstream+load CPUs) for taskset, or (None, None) unpinned."""
    if not SETTINGS["pin"] or not shutil.which("taskset"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return str(cpus[0]), ",".join(str(c) for c in cpus[1:])


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its descendants (Envoy may run under a
    launcher such as func-e), in seconds; 0 for a process that is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for child in children_of(pid):
        total += proc_cpu_seconds(child)
    return total


def children_of(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in task.read_text().split()]
        except OSError:
            pass
    return out


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat, idle and iowait out)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_quiet(max_wait: float, ours: list[int]) -> float:
    """Waits (up to max_wait s) until other work on the machine uses < 0.3 CPU;
    returns the last CPU use seen, in cores."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, o0, t0 = machine_busy_seconds(), sum(map(proc_cpu_seconds, ours)), time.monotonic()
        time.sleep(1.0)
        b1, o1, t1 = machine_busy_seconds(), sum(map(proc_cpu_seconds, ours)), time.monotonic()
        other = max(0.0, ((b1 - b0) - (o1 - o0)) / (t1 - t0))
        if other < 0.3 or time.monotonic() >= deadline:
            return other


def proc_rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants, in MiB."""
    total = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    except OSError:
        return 0.0
    return total + sum(proc_rss_mib(c) for c in children_of(pid))



def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- envoy


def bench_routes() -> list[dict]:
    return json.loads((BENCH / "aigw-config.json").read_text())["routes"]


def routed_models() -> list[tuple[str, str]]:
    """(model, cluster) of every model in the bench's filter configuration: a route
    with one backend goes to that backend's cluster, one with several (fallback) to
    a cluster of its own, `route-<name>`."""
    def cluster(r: dict) -> str:
        if len(r["backends"]) == 1:
            return "backend-" + r["backends"][0]["name"]
        return "route-" + r["name"]
    return [(m, cluster(r)) for r in bench_routes() for m in r["models"]]


def repeat_items(marker: str) -> list[dict]:
    """The values a `# repeat per ...` block is written with, once per item."""
    routes = bench_routes()
    if marker.startswith("# repeat per model"):
        # A fallback route retries on the next priority; the others do not retry.
        return [{"MODEL": m, "CLUSTER": c,
                 "RETRY": "{retry_on: 5xx, num_retries: 1}" if c.startswith("route-") else "{}"}
                for m, c in routed_models()]
    if marker.startswith("# repeat per fallback route"):
        # A route with a primary and a fallback backend (priorities 0 and 1).
        return [{"ROUTE": r["name"], "PRIMARY": r["backends"][0]["name"],
                 "FALLBACK": r["backends"][1]["name"]}
                for r in routes if len(r["backends"]) == 2]
    single = [r["backends"][0]["name"] for r in routes if len(r["backends"]) == 1]
    return [{"BACKEND": b} for b in dict.fromkeys(single)]


def expand_repeats(text: str) -> str:
    """Writes each `# repeat per model` / `# repeat per backend` / `# repeat per
    fallback route` block of a template once per model (route), single backend or
    two-backend route of aigw-config.json, up to `# end repeat`."""
    out: list[str] = []
    lines = iter(text.splitlines(keepends=True))
    for line in lines:
        marker = line.strip()
        if not marker.startswith("# repeat per "):
            out.append(line)
            continue
        block = []
        for inner in lines:
            if inner.strip() == "# end repeat":
                break
            block.append(inner)
        for values in repeat_items(marker):
            for inner in block:
                for key, value in values.items():
                    inner = inner.replace("${" + key + "}", value)
                out.append(inner)
    return "".join(out)


def eventstream_message(event_type: str, payload: bytes) -> bytes:
    """One AWS event-stream message (string headers, CRC32s), as Bedrock streams them."""
    headers = b""
    for name, value in ((":event-type", event_type), (":content-type", "application/json"),
                        (":message-type", "event")):
        n, v = name.encode(), value.encode()
        headers += bytes([len(n)]) + n + b"\x07" + len(v).to_bytes(2, "big") + v
    total = 12 + len(headers) + len(payload) + 4
    prelude = total.to_bytes(4, "big") + len(headers).to_bytes(4, "big")
    prelude += zlib.crc32(prelude).to_bytes(4, "big")
    body = prelude + headers + payload
    return body + zlib.crc32(body).to_bytes(4, "big")


def write_bedrock_stream(path: Path) -> None:
    """The ConverseStream answer of the canned upstream: the same text and usage as
    fixtures/chat-completion.sse, in Bedrock's binary framing."""
    pieces = ["The capital", " of France", " is Paris.", " It sits on", " the Seine."]
    events = [("messageStart", {"role": "assistant"})]
    events += [("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": t}})
               for t in pieces]
    events += [("contentBlockStop", {"contentBlockIndex": 0}),
               ("messageStop", {"stopReason": "end_turn"}),
               ("metadata", {"usage": {"inputTokens": 212, "outputTokens": 38,
                                       "totalTokens": 250}, "metrics": {"latencyMs": 312}})]
    path.write_bytes(b"".join(eventstream_message(e, json.dumps(p).encode())
                              for e, p in events))


class Envoy:
    """One Envoy process from a template in bench/envoy/, with --concurrency 1.
    `edit`, when given, changes the bootstrap (parsed) before Envoy reads it."""

    def __init__(self, name: str, template: str, subs: dict, cpus: Optional[str],
                 extra_env: Optional[dict] = None, ready_timeout: float = 20.0,
                 edit: Optional[Callable[[dict], None]] = None):
        self.name = name
        self.port = free_port()
        self.admin_port = free_port()
        self.access_log = RUN / f"{name}.access.log"
        text = expand_repeats((BENCH / "envoy" / template).read_text())
        cfg = string.Template(text).substitute({
            "PORT": self.port,
            "ADMIN_PORT": self.admin_port,
            "ACCESS_LOG": self.access_log,
            "LOG_FORMAT": LOG_FORMAT,
            "FIXTURES": FIXTURES,
            "RUN": RUN,
            **subs,
        })
        if edit:
            doc = load_yaml(cfg)
            edit(doc)
            cfg = json.dumps(doc, indent=1)  # JSON is YAML
        self.config = RUN / f"{name}.yaml"
        self.config.write_text(cfg)
        self.log = RUN / f"{name}.log"
        cmd = ENVOY + [
            "-c", str(self.config), "--concurrency", "1",
            "--disable-hot-restart", "-l", "warn", "--log-path", str(self.log),
            # Check requests wait for their access-log line (default flush: 10 s).
            "--file-flush-interval-msec", "200",
        ]
        cmd = launcher(cpus) + cmd
        env = dict(os.environ, **(extra_env or {}))
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name}: Envoy exited with {self.proc.returncode}; "
                    f"log {self.log}:\n{tail(self.log)}")
            try:
                with HTTP.open(
                        f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise BenchError(f"{self.name}: Envoy not ready after {timeout}s; log {self.log}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc, 10)


LITELLM_VENV = BENCH / ".venv-litellm"


class LiteLLM:
    """LiteLLM proxy (bench/.venv-litellm, made by run.sh) with one worker, routing
    gpt-4o-mini to the canned upstream as an OpenAI-compatible backend."""

    def __init__(self, name: str, upstream_port: int, cpus: Optional[str]):
        self.name = name
        self.port = free_port()
        self.access_log = None
        self.config = RUN / f"{name}.yaml"
        self.config.write_text(
            "model_list:\n"
            "  - model_name: gpt-4o-mini\n"
            "    litellm_params:\n"
            "      model: openai/gpt-4o-mini\n"
            f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
            "      api_key: sk-bench-not-a-secret\n"
            "litellm_settings:\n"
            "  telemetry: false\n")
        self.log = RUN / f"{name}.log"
        exe = LITELLM_VENV / "bin" / "litellm"
        if not exe.exists():
            raise BenchError(f"{exe} is missing: run bench/run.sh with BENCH_LITELLM=1")
        cmd = launcher(cpus) + [str(exe), "--config", str(self.config), "--host",
                                "127.0.0.1", "--port", str(self.port), "--num_workers", "1"]
        # LiteLLM refuses to start without a master key: a random one per run, sent
        # by the bench's clients (check and wrk) as a bearer token.
        key = "sk-" + secrets.token_hex(16)
        self.headers = {"authorization": f"Bearer {key}"}
        env = dict(os.environ, LITELLM_LOG="ERROR", LITELLM_MODE="PRODUCTION",
                   LITELLM_MASTER_KEY=key, NO_PROXY="*", no_proxy="*")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{name}: LiteLLM exited: {tail(self.log)}")
            try:
                with HTTP.open(f"{self.url}/health/liveliness", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise BenchError(f"{name}: LiteLLM not ready after 180s; log {self.log}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc, 15)


def tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- cases


@dataclasses.dataclass
class Gateway:
    """A gateway under test. `metered`: its access log must show token counts."""

    name: str
    describe: str
    template: str
    metered: bool
    requires: list[Path] = dataclasses.field(default_factory=list)
    env: Callable[[], dict] = dict
    subs: Callable[[], dict] = dict
    # Its goals against its baseline (None: no such goal).
    goal_rps: Optional[float] = 0.9
    goal_p50: Optional[float] = 1.1
    # The gateway its ratios are against.
    baseline: str = "plain"
    # Fleet mode: limits counted by the bench's rate-limit service (see FleetSetup).
    fleet: bool = False
    # Seconds Envoy may take to get ready (V8 compiles aigw.wasm at startup).
    ready_timeout: float = 20.0
    # Not an Envoy: start(name, upstream_port, cpus) returns a process object with
    # url, port, proc, access_log (None: no log check) and stop().
    start: Optional[Callable] = None
    # Off unless named in BENCH_GATEWAYS (or BENCH_LITELLM=1 for litellm).
    default: bool = True
    # Workloads it can serve (the others are left out of its rows).
    serves: Callable[["Workload"], bool] = lambda wl: True


@dataclasses.dataclass
class Workload:
    """A request shape: body, headers, and what a correct answer looks like."""

    name: str
    describe: str
    body: bytes
    headers: dict
    stream: bool
    # Off by default; run with BENCH_WORKLOADS.
    default: bool = True
    # (header, values): each request under load carries the next value in turn; the
    # check request carries the first (it is also in `headers`).
    rotate: Optional[tuple[str, tuple[str, ...]]] = None
    # Access-log fields a metered gateway must show for the check request, beyond
    # the token counts (EXPECTED_USAGE).
    expect_log: dict = dataclasses.field(default_factory=dict)
    # The client API's path.
    path: str = "/v1/chat/completions"
    # A filter gateway's req/s ratio must be at least this share of its ratio on
    # the workload named (the same request in another client API).
    ratio_like: Optional[tuple[str, float]] = None


def filter_config_literal() -> str:
    """The bench's filter configuration, minified, as a YAML/JSON string literal."""
    doc = json.loads((BENCH / "aigw-config.json").read_text())
    return json.dumps(json.dumps(doc, separators=(",", ":")))


def native_env() -> dict:
    return {"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(aigw_so().parent)}


def aigw_wasm() -> Path:
    """AIGW_WASM, else target/wasm32-wasip1/release/aigw.wasm."""
    return Path(os.environ.get("AIGW_WASM")
                or REPO / "target/wasm32-wasip1/release/aigw.wasm").resolve()


GATEWAYS = [
    Gateway("plain", "Envoy, no filter (the limit)", "gateway-plain.yaml", metered=False),
    Gateway("native", "Envoy + libaigw.so (dynamic module)", "gateway-native.yaml",
            metered=True, requires=[aigw_so()], env=native_env,
            subs=lambda: {"AIGW_CONFIG": filter_config_literal()}),
    Gateway("wasm", "Envoy + aigw.wasm (proxy-wasm, V8)", "gateway-wasm.yaml",
            metered=True, requires=[aigw_wasm()], goal_rps=0.7, goal_p50=None,
            ready_timeout=90.0,
            subs=lambda: {"AIGW_CONFIG": filter_config_literal(),
                          "AIGW_WASM": aigw_wasm(), "LOG_FORMAT": WASM_LOG_FORMAT}),
    # LiteLLM does not forward the client's x-bench-stream header, so the canned
    # upstream would answer JSON to a streaming call: JSON workloads only, and only
    # the OpenAI passthrough ones (it is configured for one OpenAI backend).
    Gateway("litellm", "LiteLLM proxy (PyPI, 1 worker), OpenAI backend",
            "", metered=False, start=LiteLLM, default=False,
            goal_rps=0.0, goal_p50=None,
            serves=lambda wl: not wl.stream and wl.name.startswith("chat")),
    # Fleet mode (BENCH_FLEET=1): the same three Envoys with Envoy's rate-limit filter
    # and the bench's rate-limit service (FleetSetup), on the limited route only.
    Gateway("plain-fleet", "plain Envoy + Envoy's rate-limit filter, descriptors from "
            "generic keys and the x-api-key header (the fleet baseline)",
            "gateway-plain.yaml", metered=False, default=False, fleet=True,
            goal_rps=None, goal_p50=None, baseline="plain-fleet",
            start=lambda name, port, cpus: FLEET.envoy(name, "plain", port, cpus),
            serves=lambda wl: wl.name == LIMITS_WORKLOAD),
    Gateway("native-fleet", "Envoy + libaigw.so in fleet mode + Envoy's rate-limit filter",
            "gateway-native.yaml", metered=True, requires=[aigw_so()], env=native_env,
            default=False, fleet=True, goal_rps=None, goal_p50=None, baseline="plain-fleet",
            start=lambda name, port, cpus: FLEET.envoy(name, "native", port, cpus),
            serves=lambda wl: wl.name == LIMITS_WORKLOAD),
    Gateway("wasm-fleet", "Envoy + aigw.wasm in fleet mode + Envoy's rate-limit filter",
            "gateway-wasm.yaml", metered=True, requires=[aigw_wasm()], default=False,
            fleet=True, goal_rps=None, goal_p50=None, baseline="plain-fleet",
            ready_timeout=90.0,
            start=lambda name, port, cpus: FLEET.envoy(name, "wasm", port, cpus),
            serves=lambda wl: wl.name == LIMITS_WORKLOAD),
]
BASELINE = "plain"


def responses_body(size: int, model: str) -> bytes:
    """The Responses API form of chat_body's request, padded to exactly `size` bytes."""
    chat = json.loads(chat_body(size, False, model=model))
    doc = {"model": model, "instructions": chat["messages"][0]["content"],
           "input": [{"role": "user", "content": [{"type": "input_text", "text": ""}]}],
           "temperature": 0.2, "max_output_tokens": 256, "store": False}
    base = len(json.dumps(doc, separators=(",", ":")).encode())
    doc["input"][0]["content"][0]["text"] = chat["messages"][1]["content"][:size - base]
    body = json.dumps(doc, separators=(",", ":")).encode()
    assert len(body) == size, len(body)
    return body


def chat_body(size: int, stream: bool, include_usage: bool = False,
              model: str = "gpt-4o-mini") -> bytes:
    """A realistic chat request padded with user text to exactly `size` bytes."""
    doc = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant for a travel "
             "company. Answer in plain English, cite the city and country, and never "
             "invent opening hours."},
            {"role": "user", "content": ""},
        ],
        "temperature": 0.2,
        "max_tokens": 256,
        "user": "bench-user-0001",
    }
    if stream:
        doc["stream"] = True
    if include_usage:
        doc["stream_options"] = {"include_usage": True}
    filler = ("I am planning a long weekend in Europe and would like to know which "
              "capital is best for museums, food and walking. ")
    base = len(json.dumps(doc, separators=(",", ":")).encode())
    need = size - base
    if need < 0:
        raise BenchError(f"chat body of {size} bytes is too small for the template")
    text = "What is the capital of France? " + filler * (need // len(filler) + 1)
    doc["messages"][1]["content"] = text[:need]
    body = json.dumps(doc, separators=(",", ":")).encode()
    assert len(body) == size, len(body)
    return body


WORKLOADS = [
    Workload("chat-1k", "1 KiB chat request, JSON answer", chat_body(1024, False),
             {}, stream=False),
    # chat-1k to a route with a token limit and a budget per identity (x-api-key, 4
    # keys in turn), both far above what the bench spends. Plain Envoy proxies it
    # unchanged. Also the fleet gateways' workload.
    Workload("budget-1k", "1 KiB chat request, JSON answer, route with a token limit "
             f"and a budget per identity (x-api-key, {len(BENCH_KEYS)} keys in turn)",
             chat_body(1024, False, model="gpt-4o-mini-limited"),
             {"x-api-key": BENCH_KEYS[0]}, stream=False,
             rotate=("x-api-key", BENCH_KEYS),
             expect_log={"identity": hashlib.sha256(BENCH_KEYS[0].encode()).hexdigest()[:32],
                         "model": "gpt-4o-mini-limited", "cost": EXPECTED_COST_MICRO}),
    # chat-1k and chat-64k to a route whose PII policy masks prompts and answers: the
    # prompt text is read and checked, the answer held whole and checked.
    Workload("guardrails-1k", "1 KiB chat request, JSON answer, PII policy (mask) on "
             "prompt and answer", chat_body(1024, False, model="gpt-4o-mini-guarded"),
             {}, stream=False),
    Workload("guardrails-64k", "64 KiB chat request, JSON answer, PII policy (mask) on "
             "prompt and answer", chat_body(65536, False, model="gpt-4o-mini-guarded"),
             {}, stream=False),
    # No stream_options in the request: with costs configured the filter asks the
    # upstream for usage and strips the usage chunk again (the heavier path).
    Workload("chat-1k-stream", "1 KiB chat request, SSE answer (8 events + [DONE])",
             chat_body(1024, True), {"x-bench-stream": "1"}, stream=True),
    # The client asks for usage itself: no request rewrite, no usage-chunk removal.
    Workload("chat-1k-stream-usage", "as chat-1k-stream, client sets "
             "stream_options.include_usage", chat_body(1024, True, include_usage=True),
             {"x-bench-stream": "1"}, stream=True, default=False),
    # Big prompt: the filter buffers and parses 64 KiB before routing.
    Workload("chat-64k", "64 KiB chat request, JSON answer", chat_body(65536, False),
             {}, stream=False),
    # Translation: the same OpenAI request, sent by the filter to Bedrock Converse
    # (SigV4-signed) or Anthropic Messages, and the answer translated back. Plain
    # Envoy proxies the request as it is and gets the canned OpenAI answer.
    Workload("bedrock-1k", "1 KiB chat request, OpenAI → Bedrock Converse, JSON answer",
             chat_body(1024, False, model="bedrock-claude"), {}, stream=False),
    # The Responses API translated to Converse: the same work as bedrock-1k plus the
    # Responses request and answer shapes. Plain Envoy gets the canned chat answer.
    Workload("responses-bedrock-1k", "1 KiB Responses API request, → Bedrock Converse, "
             "JSON answer", responses_body(1024, model="bedrock-claude"), {}, stream=False,
             path="/v1/responses", ratio_like=("bedrock-1k", GOAL_RESPONSES_SHARE)),
    Workload("bedrock-1k-stream", "1 KiB chat request, OpenAI → Bedrock ConverseStream "
             "(event-stream → SSE)", chat_body(1024, True, model="bedrock-claude"),
             {"x-bench-stream": "1"}, stream=True),
    Workload("anthropic-1k", "1 KiB chat request, OpenAI → Anthropic Messages, JSON answer",
             chat_body(1024, False, model="claude-sonnet"), {}, stream=False),
    Workload("anthropic-1k-stream", "1 KiB chat request, OpenAI → Anthropic Messages, SSE",
             chat_body(1024, True, model="claude-sonnet"), {"x-bench-stream": "1"},
             stream=True, default=False),
    # A route with a fallback backend: its cluster carries the upstream instance,
    # which does the (here: passthrough) upstream work per attempt; the primary
    # answers, so no retry happens.
    Workload("fallback-1k", "1 KiB chat request to a route with a fallback backend "
             "(upstream instance on its cluster), JSON answer",
             chat_body(1024, False, model="ha-chat"), {}, stream=False),
    Workload("bedrock-64k", "64 KiB chat request, OpenAI → Bedrock Converse, JSON answer",
             chat_body(65536, False, model="bedrock-claude"), {}, stream=False),
    # Azure OpenAI with a static API key, and with an Entra ID token the gateway
    # exchanged itself (once: the canned token lives a day) and keeps: the two
    # should cost the same per request.
    Workload("azure-key-1k", "1 KiB chat request to Azure OpenAI, static API key",
             chat_body(1024, False, model="azure-key"), {}, stream=False),
    Workload("azure-entra-1k", "1 KiB chat request to Azure OpenAI, Entra ID token "
             "exchanged by the gateway (cached)",
             chat_body(1024, False, model="azure-entra"), {}, stream=False),
]


# --------------------------------------------------------------------------- checks


def check(gw: Gateway, envoy: Envoy, wl: Workload) -> str:
    """One request through the gateway; refuse the run unless it is right."""
    req_id = f"{gw.name}-{wl.name}-{time.monotonic_ns()}"
    headers = {"content-type": "application/json", "x-bench-log": "1",
               "x-bench-id": req_id, **wl.headers, **getattr(envoy, "headers", {})}
    req = urllib.request.Request(f"{envoy.url}{wl.path}", data=wl.body,
                                 headers=headers, method="POST")
    try:
        with HTTP.open(req, timeout=10) as r:
            status, ctype, body = r.status, r.headers.get("content-type", ""), r.read()
            verdict = r.headers.get("x-ratelimit-limit")
    except urllib.error.HTTPError as e:
        raise BenchError(f"{gw.name}/{wl.name}: HTTP {e.code}: {e.read()[:300]!r}")
    except (urllib.error.URLError, OSError) as e:
        raise BenchError(f"{gw.name}/{wl.name}: request failed: {e}")
    if status != 200:
        raise BenchError(f"{gw.name}/{wl.name}: status {status}")
    text = body.decode(errors="replace")
    if wl.stream:
        if not ctype.startswith("text/event-stream") or not text.rstrip().endswith(
                "data: [DONE]"):
            raise BenchError(f"{gw.name}/{wl.name}: not an SSE answer ending in [DONE]: "
                             f"{ctype} {text[-200:]!r}")
    else:
        try:
            doc = json.loads(text)
        except ValueError:
            raise BenchError(f"{gw.name}/{wl.name}: answer is not JSON: {text[:200]!r}")
        # A Responses API answer has output items (plain Envoy's canned answer is chat).
        if not (doc.get("choices") or doc.get("output")):
            raise BenchError(f"{gw.name}/{wl.name}: answer has no choices or output: "
                             f"{text[:200]!r}")
    # Envoy's rate-limit filter (enable_x_ratelimit_headers) puts x-ratelimit-limit on
    # an answer the service gave a verdict for: without it the request was not checked.
    if gw.fleet and not verdict:
        raise BenchError(f"{gw.name}/{wl.name}: no x-ratelimit-limit on the answer: the "
                         "rate-limit service gave no verdict (see its log in bench/out/run/)")

    if envoy.access_log is None:
        return "(no access log)"
    line = wait_log_line(envoy.access_log, req_id)
    fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    if fields.get("status") != "200":
        raise BenchError(f"{gw.name}/{wl.name}: access log says {line!r}")
    if gw.metered:
        got = {k: fields.get(k) for k in EXPECTED_USAGE}
        if got != EXPECTED_USAGE:
            raise BenchError(
                f"{gw.name}/{wl.name}: metering is not working: access log has {got}, "
                f"expected {EXPECTED_USAGE}\n  line: {line}")
        got = {k: fields.get(k) for k in wl.expect_log}
        if got != wl.expect_log:
            raise BenchError(f"{gw.name}/{wl.name}: access log has {got}, expected "
                             f"{wl.expect_log}\n  line: {line}")
    return line


def wait_log_line(path: Path, req_id: str, timeout: float = 8.0) -> str:
    """Envoy flushes file access logs about once a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if f"id={req_id} " in line:
                    return line
        time.sleep(0.2)
    raise BenchError(f"no access-log line for {req_id} in {path}")


# --------------------------------------------------------------------------- load


def wrk(url: str, wl: Workload, seconds: int, cpus: Optional[str],
        extra: Optional[dict] = None, paced: bool = False,
        pace: Optional[tuple[int, int]] = None) -> dict:
    """Saturation (SETTINGS connections, back to back), or `paced`: the moderate
    rate of the paced_* settings, or `pace` (connections, pause in ms) when given."""
    body_file = RUN / f"{wl.name}.body"
    if not body_file.exists():
        body_file.write_bytes(wl.body)
    conns, delay = pace or (SETTINGS["paced_connections"], SETTINGS["paced_delay_ms"])
    if not paced:
        conns = SETTINGS["connections"]
    threads = min(SETTINGS["threads"], conns)
    script = "post-paced.lua" if paced else "post.lua"
    cmd = ["wrk", f"-t{threads}", f"-c{conns}",
           f"-d{seconds}s", "--latency", "--timeout", "5s", "-s", str(BENCH / script),
           f"{url}{wl.path}", "--", str(body_file)]
    if paced:
        cmd.append(f"@delay={delay}")
    cmd += [f"{k}={v}" for k, v in {**wl.headers, **(extra or {})}.items()]
    if wl.rotate:
        cmd.append(f"@rotate={wl.rotate[0]}={','.join(wl.rotate[1])}")
    cmd = launcher(cpus) + cmd
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    for line in res.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    raise BenchError(f"wrk gave no summary (rc {res.returncode}):\n{res.stdout}\n{res.stderr}")


def measure(url: str, wl: Workload, cpus: Optional[str], pid: Optional[int],
            ours: list[int], extra: Optional[dict] = None,
            pace: Optional[tuple[int, int]] = None,
            counters: Optional[Callable[[], dict]] = None) -> dict:
    """Warm up, then one measured run. Reports the CPU per request of `pid` (the
    gateway) and how much CPU other work on the machine took meanwhile (`ours`: the
    bench's own processes; wrk is counted as a child), which says how noisy it was.
    `counters`: cumulative figures read before and after the measured run, reported
    per request as `<name>_per_req`."""
    if SETTINGS["warmup_s"] > 0:
        wrk(url, wl, SETTINGS["warmup_s"], cpus, extra)
    c0 = counters() if counters else {}
    cpu0 = proc_cpu_seconds(pid) if pid else 0.0
    busy0, ours0 = machine_busy_seconds(), sum(map(proc_cpu_seconds, ours))
    kids0, t0 = children_cpu_seconds(), time.monotonic()
    r = wrk(url, wl, SETTINGS["duration_s"], cpus, extra)
    busy1, ours1 = machine_busy_seconds(), sum(map(proc_cpu_seconds, ours))
    kids1, t1 = children_cpu_seconds(), time.monotonic()
    cpu1 = proc_cpu_seconds(pid) if pid else 0.0
    c1 = counters() if counters else {}
    other = ((busy1 - busy0) - (ours1 - ours0) - (kids1 - kids0)) / (t1 - t0)
    # Latency at the moderate rate (nothing queues), measured after the rest.
    p = wrk(url, wl, SETTINGS["paced_s"], cpus, extra, paced=True, pace=pace)
    errors = sum(x[k] for x in (r, p) for k in x if k.startswith("err_"))
    reqs = max(r["requests"], 1)
    counted = {k: c1[k] - c0[k] for k in c0}
    return {
        **{f"{k}_per_req": v / reqs for k, v in counted.items()},
        "counted": counted,
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "paced_rps": p["requests"] / (p["duration_us"] / 1e6),
        "p50_ms": p["lat_p50_us"] / 1000,
        "p99_ms": p["lat_p99_us"] / 1000,
        "cpu_us_per_req": (cpu1 - cpu0) * 1e6 / reqs if pid else None,
        "rss_mib": proc_rss_mib(pid) if pid else None,
        "other_cpu": max(0.0, other),
        "errors": errors,
        "requests": r["requests"],
    }


# --------------------------------------------------------------------------- fleet


def fleet_python() -> str:
    """The Python the rate-limit service runs with (grpcio, grpcio-tools, limits,
    redis, PyYAML: integration-tests/requirements.txt): BENCH_FLEET_PYTHON, else the
    repo's .venv, else this one."""
    for cand in (os.environ.get("BENCH_FLEET_PYTHON"), REPO / ".venv/bin/python"):
        if cand and Path(cand).exists():
            return str(cand)
    return sys.executable


def load_yaml(text: str):
    """YAML to Python objects: PyYAML when this Python has it, else the fleet Python."""
    try:
        import yaml
    except ImportError:
        res = subprocess.run(
            [fleet_python(), "-c", "import json, sys, yaml; "
             "json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
            input=text, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise BenchError(f"cannot read YAML (needs PyYAML: `make venv`): {res.stderr[-500:]}")
        return json.loads(res.stdout)
    return yaml.safe_load(text)


def aigw_cli() -> Path:
    """AIGW_CLI, else `aigw` next to libaigw.so (target/release)."""
    return Path(os.environ.get("AIGW_CLI") or aigw_so().parent / "aigw").resolve()


def limited_route(doc: dict) -> dict:
    """The bench's route with limits and budgets (budget-1k's model)."""
    model = json.loads(next(w for w in WORKLOADS if w.name == LIMITS_WORKLOAD).body)["model"]
    return next(r for r in doc["routes"] if model in r["models"])


def hcm_of(boot: dict) -> dict:
    return boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]


def period_value(period: str) -> str:
    """A budget's calendar period now, as the filter writes it (rl_period_<budget>)."""
    pattern = {"daily": "%Y-%m-%d", "weekly": "%G-W%V", "monthly": "%Y-%m"}[period]
    return time.strftime(pattern, time.gmtime())


@dataclasses.dataclass
class FleetPieces:
    """What `aigw compile --quota fleet` wrote for the limited route, per build."""

    filter_route: dict  # the route in the compiled filter config (name, limits, budgets)
    identity: dict  # the compiled filter config's `identity`
    quota: dict  # and its `quota`
    ratelimit_filter: dict  # envoy.filters.http.ratelimit, from bootstrap.yaml
    local_reply: Optional[dict]  # the listener's local-reply mappers
    cluster: dict  # aigw_rate_limit_service
    per_route: dict  # build -> the route's typed_per_filter_config
    ratelimit_config: str  # ratelimit-config.yaml (envoyproxy/ratelimit format)


def compile_fleet(out: Path) -> FleetPieces:
    """Compiles the bench's limited route (its token limit and budget, per identity)
    as a generic route with `aigw compile --quota fleet` and takes the pieces the
    fleet gateways need from its bootstraps, exactly as written."""
    cli = aigw_cli()
    if not cli.exists():
        raise BenchError(f"fleet: {cli} is missing (make build-cli, or set AIGW_CLI)")
    doc = json.loads((BENCH / "aigw-config.json").read_text())
    route = limited_route(doc)
    limit, (budget,) = route["rateLimit"], route["budgets"]
    if set(limit) - {"tokensPerMinute", "per"} or limit.get("per") != "identity" \
            or budget.get("per") != "identity":
        raise BenchError("fleet: the limited route of aigw-config.json must have "
                         "rateLimit.tokensPerMinute and one budget, both per identity")
    out.mkdir(parents=True, exist_ok=True)
    src = out / "input.yaml"
    src.write_text(json.dumps({  # JSON is YAML
        "name": route["name"], "modelAlias": route["models"][0],
        "backends": [{"provider": "openai", "model": "gpt-4o-mini",
                      "credentialRef": "bench-openai"}],
        "rateLimit": {"tokensPerMinute": limit["tokensPerMinute"]},
        "budget": {k: budget[k] for k in ("currency", "limit", "period", "action")},
    }) + "\n---\n" + json.dumps({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bench-openai", "namespace": "default"},
        "stringData": {"apiKey": "sk-bench-not-a-secret"}}) + "\n")
    cmd = [str(cli), "compile", "-q", "-o", str(out), "--quota", "fleet",
           "--rate-limit-service", "127.0.0.1:9", "--limits-per", "identity",
           "--identity-header", doc["identity"]["header"],
           "--wasm-path", str(aigw_wasm()), str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise BenchError(f"fleet: {shlex.join(cmd)} failed:\n{res.stderr}")
    config = json.loads((out / "config.json").read_text())
    (froute,) = config["routes"]
    pieces = FleetPieces(
        filter_route=froute, identity=config["identity"], quota=config["quota"],
        ratelimit_filter={}, local_reply=None, cluster={}, per_route={},
        ratelimit_config=(out / "ratelimit-config.yaml").read_text())
    for build, name in (("native", "bootstrap.yaml"), ("wasm", "bootstrap-wasm.yaml")):
        boot = load_yaml((out / name).read_text())
        hcm = hcm_of(boot)
        (vhost,) = hcm["route_config"]["virtual_hosts"]
        pieces.per_route[build] = next(r for r in vhost["routes"]
                                       if r.get("name") == froute["name"])[
            "typed_per_filter_config"]
        if build == "native":
            pieces.ratelimit_filter = next(f for f in hcm["http_filters"]
                                           if f["name"] == "envoy.filters.http.ratelimit")
            pieces.local_reply = hcm.get("local_reply_config")
            pieces.cluster = next(c for c in boot["static_resources"]["clusters"]
                                  if c["name"] == "aigw_rate_limit_service")
    pieces.per_route["plain"] = plain_rate_limits(
        pieces.per_route["native"], froute, doc["identity"]["header"])
    return pieces


def plain_rate_limits(per_route: dict, froute: dict, identity_header: str) -> dict:
    """The compiled per-route rate limits for plain Envoy, which has no aigw metadata:
    the same descriptors, checks and charges, each metadata action replaced by a
    generic key (route, budget period) or the identity header (unhashed), and each
    charge read from the metadata by the number the filter writes there for a
    budget-1k answer (a constant is a `number`: Envoy wants a `format` to start with
    a command operator)."""
    out = copy.deepcopy(per_route)
    ns = "io.envoy.ai_gateway"
    periods = {f"rl_period_{b['name']}": period_value(b["period"])
               for b in froute.get("budgets", [])}
    charges = {"rl_tokens": EXPECTED_USAGE["total"], "rl_cost": EXPECTED_COST_MICRO}

    def action(a: dict) -> dict:
        if "metadata" not in a:
            return a
        md = a["metadata"]
        key, dk = md["metadata_key"]["path"][0]["key"], md["descriptor_key"]
        if md["metadata_key"]["key"] != ns:
            raise BenchError(f"fleet: unexpected metadata action {a}")
        if key == "rl_route":
            return {"generic_key": {"descriptor_key": dk, "descriptor_value": froute["name"]}}
        if key == "rl_identity":
            return {"request_headers": {"header_name": identity_header, "descriptor_key": dk}}
        if key in periods:
            return {"generic_key": {"descriptor_key": dk, "descriptor_value": periods[key]}}
        raise BenchError(f"fleet: no plain-Envoy equivalent of metadata key {key}")

    for rl in out["envoy.filters.http.ratelimit"]["rate_limits"]:
        rl["actions"] = [action(a) for a in rl["actions"]]
        addend = rl.get("hits_addend", {}).get("format")
        if addend is not None:
            key = re.fullmatch(rf"%DYNAMIC_METADATA\({re.escape(ns)}:(\w+)\)%", addend)
            if not key or key.group(1) not in charges:
                raise BenchError(f"fleet: no plain-Envoy equivalent of hits_addend {addend}")
            rl["hits_addend"] = {"number": int(charges[key.group(1)])}
    return out


def wait_port(port: int, probe: bytes, expect: bytes, proc: subprocess.Popen,
              what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}: {tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(probe)
                if s.recv(64).startswith(expect):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{what} not ready after {timeout}s; log {log}")


class RedisServer:
    """Debian's redis-server on a free loopback port, nothing on disk."""

    def __init__(self, cpus: Optional[str]):
        exe = shutil.which("redis-server")
        if not exe:
            raise BenchError("fleet: redis-server is not installed (apt-get install "
                             "redis-server), or run without BENCH_FLEET=1")
        self.port = free_port()
        workdir = RUN / "redis"
        workdir.mkdir(exist_ok=True)
        self.log = RUN / "redis.log"
        cmd = launcher(cpus) + [exe, "--bind", "127.0.0.1", "--port", str(self.port),
                                "--save", "", "--appendonly", "no", "--dir", str(workdir),
                                "--protected-mode", "yes", "--daemonize", "no"]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_port(self.port, b"PING\r\n", b"+PONG", self.proc, "redis-server", self.log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop_process(self.proc, 5)


class RateLimitService:
    """integration-tests/rls (Envoy's RLS v3 API; `limits` fixed windows in Redis),
    without its request log."""

    def __init__(self, config: Path, redis_port: int, cpus: Optional[str]):
        python = fleet_python()
        probe = subprocess.run([python, "-c", "import grpc, grpc_tools, limits, redis, yaml"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            raise BenchError(f"fleet: {python} lacks the rate-limit service's modules "
                             f"(`make venv`, or BENCH_FLEET_PYTHON): {probe.stderr[-300:]}")
        ready = RUN / "rls.port"
        ready.unlink(missing_ok=True)
        self.log = RUN / "rls.log"
        cmd = launcher(cpus) + [
            python, "-m", "rls", "--config", str(config),
            "--redis", f"redis://127.0.0.1:{redis_port}/0", "--port", "0",
            "--ready-file", str(ready), "--workers", str(SETTINGS["fleet_rls_workers"]),
            "--log-level", "WARNING"]
        self.proc = subprocess.Popen(cmd, cwd=REPO / "integration-tests",
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60  # it compiles its protos at start-up
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"rate-limit service did not start: {tail(self.log)}")
            time.sleep(0.1)
        self.port = int(ready.read_text())

    def stop(self) -> None:
        stop_process(self.proc, 10)


def envoy_stats(admin_port: int, pattern: str) -> dict[str, int]:
    url = f"http://127.0.0.1:{admin_port}/stats?filter={urllib.parse.quote(pattern)}"
    with HTTP.open(url, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            out[name] = int(value)
    return out


class FleetSetup:
    """Fleet mode for the bench: the compiled pieces (compile_fleet), one Redis and
    one rate-limit service for all fleet gateways, and their Envoys: the bench's
    templates, with the filter config in fleet mode (the limited route as compiled)
    and the compiled rate-limit filter (before the router), local-reply mappers,
    rate-limit cluster and the limited route's rate limits edited in."""

    def __init__(self):
        self.pieces: Optional[FleetPieces] = None
        self.redis: Optional[RedisServer] = None
        self.rls: Optional[RateLimitService] = None

    def start(self, cpus: Optional[str], procs: list) -> None:
        self.pieces = compile_fleet(RUN / "fleet-compiled")
        config = RUN / "ratelimit-config.yaml"
        config.write_text(self.pieces.ratelimit_config)
        self.redis = RedisServer(cpus)
        procs.append(self.redis)
        self.rls = RateLimitService(config, self.redis.port, cpus)
        procs.append(self.rls)
        print(f"fleet: redis on {self.redis.port}, rate-limit service on {self.rls.port} "
              f"({self.pieces.filter_route['name']}: {self.pieces.filter_route['rateLimit']}, "
              f"{self.pieces.filter_route['budgets']})", flush=True)

    def filter_config_literal(self) -> str:
        doc = json.loads((BENCH / "aigw-config.json").read_text())
        p = self.pieces
        route = limited_route(doc)
        route.update({k: p.filter_route[k] for k in ("name", "rateLimit", "budgets")})
        doc.update(identity=p.identity, quota=p.quota)
        return json.dumps(json.dumps(doc, separators=(",", ":")))

    def edit(self, boot: dict, build: str) -> None:
        p = self.pieces
        hcm = hcm_of(boot)
        filters = hcm["http_filters"]
        router = next(i for i, f in enumerate(filters)
                      if f["name"] == "envoy.filters.http.router")
        filters.insert(router, copy.deepcopy(p.ratelimit_filter))
        if p.local_reply:
            hcm["local_reply_config"] = copy.deepcopy(p.local_reply)
        cluster = copy.deepcopy(p.cluster)
        for locality in cluster["load_assignment"]["endpoints"]:
            for lb in locality["lb_endpoints"]:
                lb["endpoint"]["address"]["socket_address"].update(
                    address="127.0.0.1", port_value=self.rls.port)
        boot["static_resources"]["clusters"].append(cluster)
        (vhost,) = hcm["route_config"]["virtual_hosts"]
        model = p.filter_route["models"][0]
        # Plain Envoy has one route, which budget-1k takes; the filter gateways one per
        # model, named after it.
        routes = [r for r in vhost["routes"] if build == "plain" or r.get("name") == model]
        if not routes:
            raise BenchError(f"fleet: no route for {model} in the {build} bootstrap")
        for r in routes:
            r["typed_per_filter_config"] = copy.deepcopy(p.per_route[build])

    def envoy(self, name: str, build: str, upstream_port: int, cpus: Optional[str]) -> Envoy:
        g = next(g for g in GATEWAYS if g.name == build)
        subs = {"UPSTREAM_PORT": upstream_port, **g.subs()}
        if "AIGW_CONFIG" in subs:
            subs["AIGW_CONFIG"] = self.filter_config_literal()
        env = Envoy(name, g.template, subs, cpus, g.env(), g.ready_timeout,
                    edit=lambda boot: self.edit(boot, build))
        env.pace = (SETTINGS["fleet_paced_connections"], SETTINGS["fleet_paced_delay_ms"])
        env.counters = lambda: self.counters(env)
        return env

    def counters(self, env: Envoy) -> dict:
        """Cumulative: CPU µs of the service (rate-limit service and Redis), its calls
        (gRPC requests on the rate-limit cluster) and the rate-limit filter's errors,
        fail-open passes and refusals."""
        stats = envoy_stats(env.admin_port,
                            r"ratelimit|aigw_rate_limit_service\.upstream_rq_total")

        def total(suffix: str) -> int:
            return sum(v for k, v in stats.items() if k.endswith(suffix))

        return {
            "svc_cpu_us": (proc_cpu_seconds(self.rls.proc.pid)
                           + proc_cpu_seconds(self.redis.proc.pid)) * 1e6,
            "rls_calls": total("aigw_rate_limit_service.upstream_rq_total"),
            "rls_failures": (total(".ratelimit.error")
                             + total(".ratelimit.failure_mode_allowed")),
            "rls_over_limit": total(".ratelimit.over_limit"),
        }


FLEET = FleetSetup()


# --------------------------------------------------------------------------- ttft


class SseUpstream:
    """bench/sse_upstream.py: a paced streaming upstream (one event at a time)."""

    def __init__(self, cpus: Optional[str], first_ms: Optional[int] = None,
                 gap_ms: Optional[int] = None):
        self.port = free_port()
        first = SETTINGS["ttft_first_ms"] if first_ms is None else first_ms
        gap = SETTINGS["ttft_gap_ms"] if gap_ms is None else gap_ms
        cmd = launcher(cpus) + [
            sys.executable, str(BENCH / "sse_upstream.py"), str(self.port),
            "--first-ms", str(first), "--gap-ms", str(gap)]
        self.log = RUN / "sse-upstream.log"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                     stderr=self.log.open("wb"))
        line = self.proc.stdout.readline() if self.proc.stdout else b""
        if line.strip() != b"ready":
            self.stop()
            raise BenchError(f"sse_upstream.py did not start: {tail(self.log)}")

    def stop(self) -> None:
        stop_process(self.proc, 5)


def stream_once(port: int, body: bytes) -> tuple[float, float]:
    """One streaming chat request on a new connection: (ms to the first `data:`
    event, ms to the end of the answer). Raises BenchError on a wrong answer."""
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode()
    buf, first = b"", None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        sock.sendall(head + body)
        while True:
            data = sock.recv(65536)
            if not data:
                break
            buf += data
            if first is None and b"\r\n\r\n" in buf and b"data:" in buf.split(
                    b"\r\n\r\n", 1)[1]:
                first = time.perf_counter()
        end = time.perf_counter()
    if not buf.startswith(b"HTTP/1.1 200") or b"data: [DONE]" not in buf or first is None:
        raise BenchError(f"ttft: wrong streaming answer on port {port}: {buf[:300]!r}")
    return (first - t0) * 1000, (end - t0) * 1000


def measure_ttft(ports: dict[str, int], body: bytes) -> dict[str, dict]:
    """Sequential requests, one gateway after the other per step (so drift on the
    machine hits all alike); medians and p90 per gateway."""
    samples: dict[str, list[tuple[float, float]]] = {g: [] for g in ports}
    for name, port in ports.items():  # warm-up: connections, VM, caches
        for _ in range(3):
            stream_once(port, body)
    for _ in range(SETTINGS["ttft_requests"]):
        for name, port in ports.items():
            samples[name].append(stream_once(port, body))
    out = {}
    for name, ss in samples.items():
        ttft = sorted(s[0] for s in ss)
        total = sorted(s[1] for s in ss)
        out[name] = {"ttft_p50_ms": statistics.median(ttft),
                     "ttft_p90_ms": ttft[int(0.9 * (len(ttft) - 1))],
                     "total_p50_ms": statistics.median(total)}
    return out


def render_ttft(res: dict[str, dict]) -> list[str]:
    base = res[BASELINE]
    out = [
        "",
        "## Streaming: time to first token",
        "",
        f"{SETTINGS['ttft_requests']} sequential streaming requests per gateway (1 KiB "
        "chat request, new connection each) to a paced upstream (bench/sse_upstream.py: "
        f"first event after {SETTINGS['ttft_first_ms']} ms, then one event every "
        f"{SETTINGS['ttft_gap_ms']} ms, 8 events, the last with usage, and [DONE]); "
        "TTFT is the time from sending the request to the first `data:` event. Goal: a filter gateway adds "
        f"< {GOAL_TTFT_MS} ms to the median TTFT of `{BASELINE}`.",
        "",
        "| gateway | TTFT p50 ms | TTFT p90 ms | total p50 ms | TTFT added ms "
        "| total added ms | goal |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in res.items():
        d_ttft = r["ttft_p50_ms"] - base["ttft_p50_ms"]
        d_total = r["total_p50_ms"] - base["total_p50_ms"]
        goal = ("baseline" if name == BASELINE else
                f"{'PASS' if d_ttft < GOAL_TTFT_MS else 'FAIL'}")
        out.append(f"| {name} | {r['ttft_p50_ms']:.2f} | {r['ttft_p90_ms']:.2f} "
                   f"| {r['total_p50_ms']:.2f} "
                   f"| {'-' if name == BASELINE else format(d_ttft, '+.2f')} "
                   f"| {'-' if name == BASELINE else format(d_total, '+.2f')} | {goal} |")
    return out


# --------------------------------------------------------------------------- memory


def raise_fd_limit(need: int) -> None:
    """Each held stream costs the client one fd and Envoy two: lift the soft limit
    (inherited by the Envoys and the upstream started after this)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = hard if hard == resource.RLIM_INFINITY else min(hard, max(need, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        raise BenchError(f"memory: need {need} open files, ulimit -n is {soft}")


async def hold_streams(port: int, body: bytes, n: int, timeout: float):
    """Opens `n` streaming requests at once and waits until every one has its first
    `data:` event; returns their (reader, writer) pairs, still open. Only a small
    read buffer per stream: the client must stay cheap next to the gateway."""
    import asyncio

    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode()
    gate = asyncio.Semaphore(200)  # connects in flight, not streams held

    async def one():
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=4096)
            writer.write(head + body)
            await writer.drain()
        buf = b""
        while b"data:" not in buf.partition(b"\r\n\r\n")[2]:
            data = await reader.read(4096)
            if not data:
                break
            buf += data
        if not buf.startswith(b"HTTP/1.1 200") or b"data:" not in buf:
            writer.close()
            raise BenchError(f"memory: wrong streaming answer on port {port}: {buf[:300]!r}")
        return reader, writer

    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    try:
        return await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    except BaseException:
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception() is None:
                t.result()[1].close()
            else:
                t.cancel()
        raise


def measure_memory(gateways: list[Gateway], gw_cpus: Optional[str],
                   load_cpus: Optional[str], procs: list) -> dict[str, dict]:
    """Per Envoy gateway: RSS after a warm-up, then RSS while `memory_streams`
    streaming requests are all open at once (max of a few samples)."""
    import asyncio

    n = SETTINGS["memory_streams"]
    raise_fd_limit(3 * n + 512)
    # Every stream must still be open when the last one gets its first event.
    upstream = SseUpstream(load_cpus, SETTINGS["memory_first_ms"], SETTINGS["memory_gap_ms"])
    procs.append(upstream)
    body = chat_body(1024, True)
    events = (FIXTURES / "chat-completion.sse").read_bytes().count(b"data:")
    lasts_ms = SETTINGS["memory_first_ms"] + (events - 1) * SETTINGS["memory_gap_ms"]
    out = {}
    for g in gateways:
        if g.start:  # not an Envoy
            continue
        subs = {"UPSTREAM_PORT": upstream.port, **g.subs()}
        env = Envoy(f"{g.name}-memory", g.template, subs, gw_cpus, g.env(), g.ready_timeout)
        procs.append(env)
        try:
            async def warm_up():  # first-request allocations, VM, caches
                for _, w in await hold_streams(env.port, body, 3, timeout=30):
                    w.close()
                await asyncio.sleep(0.5)

            asyncio.run(warm_up())
            idle = proc_rss_mib(env.proc.pid)
            t0 = time.monotonic()

            async def sample() -> float:
                samples = []
                for _ in range(5):
                    samples.append(proc_rss_mib(env.proc.pid))
                    await asyncio.sleep(0.1)
                return max(samples)

            async def run():
                # Half first, then the rest: the slope between the two is the cost
                # of one more stream once the allocator has warmed up.
                held = await hold_streams(env.port, body, n // 2, timeout=60)
                half = await sample()
                held += await hold_streams(env.port, body, n - n // 2, timeout=60)
                opened = time.monotonic() - t0
                full = await sample()
                for _, w in held:
                    w.close()
                return opened, half, full

            opened, half, loaded = asyncio.run(run())
        finally:
            env.stop()
        if opened * 1000 > lasts_ms:
            raise BenchError(f"memory: {g.name} took {opened:.1f}s to open {n} streams, "
                             "longer than one stream lasts: raise BENCH_MEMORY_GAP_MS")
        out[g.name] = {"idle_mib": idle, "half_mib": half, "loaded_mib": loaded,
                       "open_s": opened, "kib_per_stream": (loaded - idle) * 1024 / n,
                       "kib_per_stream_slope": (loaded - half) * 1024 / (n - n // 2)}
        print(f"memory    {g.name:8} idle {idle:.1f} MiB, {n // 2} streams {half:.1f} MiB, "
              f"{n} streams {loaded:.1f} MiB "
              f"({out[g.name]['kib_per_stream']:.1f} KiB/stream from idle, "
              f"{out[g.name]['kib_per_stream_slope']:.1f} from {n // 2} to {n}; all open "
              f"after {opened:.1f}s)", flush=True)
    upstream.stop()
    return out


def render_memory(res: dict[str, dict]) -> list[str]:
    base = res.get(BASELINE)
    n = SETTINGS["memory_streams"]
    out = [
        "",
        f"## Memory: {n} concurrent streams",
        "",
        f"Resident memory (VmRSS) of the gateway Envoy (--concurrency 1) after 3 warm-up "
        f"requests (idle), and the highest of 5 samples taken while {n} streaming chat "
        "requests (1 KiB each, one connection each) are all open at once against "
        f"bench/sse_upstream.py (first event after {SETTINGS['memory_first_ms']} ms, then one "
        f"every {SETTINGS['memory_gap_ms']} ms); samples start once every stream has "
        f"its first event. The streams open in two halves: `KiB/stream` is (RSS under "
        f"load - RSS idle) / {n}; `slope` is the growth from {n // 2} to {n} streams per "
        "stream, which leaves out memory the allocator already held after the warm-up "
        "(the V8 gateway holds much). Ratios are against `plain`.",
        "",
        f"| gateway | RSS idle MiB | RSS {n // 2} streams MiB | RSS {n} streams MiB "
        "| KiB/stream | slope KiB/stream | RSS ratio | KiB/stream ratio | slope ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def ratio(r: dict, key: str) -> str:
        if not base or r is base or base[key] <= 0:
            return "-"
        return format(r[key] / base[key], ".2f")

    for name, r in res.items():
        out.append(f"| {name} | {r['idle_mib']:.1f} | {r['half_mib']:.1f} "
                   f"| {r['loaded_mib']:.1f} | {r['kib_per_stream']:.1f} "
                   f"| {r['kib_per_stream_slope']:.1f} | {ratio(r, 'loaded_mib')} "
                   f"| {ratio(r, 'kib_per_stream')} | {ratio(r, 'kib_per_stream_slope')} |")
    return out


def memory_only(gateways: list[Gateway]) -> int:
    """BENCH_MEMORY=only: just the memory table, to bench/out/memory.md."""
    gw_cpus, load_cpus = cpu_sets()
    procs: list = []
    try:
        res = measure_memory(gateways, gw_cpus, load_cpus, procs)
    finally:
        for p in reversed(procs):
            p.stop()
    table = "\n".join(["# aigw bench: gateway memory", "",
                       f"- when: {datetime.datetime.now().isoformat(timespec='seconds')}  "
                       f"commit: {git_commit()}"] + render_memory(res)) + "\n"
    OUT.mkdir(exist_ok=True)
    (OUT / "memory.md").write_text(table)
    print()
    print(table)
    print(f"written to {OUT / 'memory.md'}")
    return 0


# --------------------------------------------------------------------------- report


METRICS = ("rps", "paced_rps", "p50_ms", "p99_ms", "cpu_us_per_req", "rss_mib", "other_cpu",
           "svc_cpu_us_per_req", "rls_calls_per_req")


def median_run(rs: list[dict]) -> dict:
    """Per-metric median over rounds."""
    out = {}
    for k in METRICS:
        vals = [r[k] for r in rs if r.get(k) is not None]
        out[k] = statistics.median(vals) if vals else None
    return out


def summarize(runs: dict, workloads: list[Workload], gateways: list[Gateway],
              meta: dict) -> list[dict]:
    """Table rows: medians over rounds; each ratio is the median of the ratios of
    runs of the same round, which were measured next to each other."""
    rows = []
    for wl in workloads:
        base = median_run(runs[(wl.name, BASELINE)])
        up = median_run(runs[(wl.name, "upstream")])
        rows.append({"workload": wl.name, "gateway": "upstream", **up})
        if up["rps"] < 1.2 * base["rps"]:
            meta["notes"].append(
                f"{wl.name}: the upstream alone ({up['rps']:.0f} req/s) is not clearly "
                f"faster than the plain gateway ({base['rps']:.0f}); ratios are "
                "compressed.")
        for g in gateways:
            if not g.serves(wl):
                continue
            g_runs = runs[(wl.name, g.name)]
            r = dict(median_run(g_runs), workload=wl.name, gateway=g.name)
            if g.fleet:
                r["rls_failures"] = sum(x["counted"]["rls_failures"] for x in g_runs)
                r["rls_over_limit"] = sum(x["counted"]["rls_over_limit"] for x in g_runs)
            goals = []
            if g.name == g.baseline:
                goals.append("baseline")
            else:
                pairs = list(zip(g_runs, runs[(wl.name, g.baseline)]))
                r["rps_ratio"] = statistics.median(a["rps"] / b["rps"] for a, b in pairs)
                r["p50_ratio"] = statistics.median(a["p50_ms"] / b["p50_ms"] for a, b in pairs)
                r["cpu_ratio"] = statistics.median(
                    a["cpu_us_per_req"] / b["cpu_us_per_req"] for a, b in pairs)
                if g.goal_rps is not None:
                    ok_rps = r["rps_ratio"] >= g.goal_rps
                    goals.append(f"req/s >= {g.goal_rps}: {'PASS' if ok_rps else 'FAIL'}")
                if g.goal_p50 is not None:
                    ok_p50 = r["p50_ratio"] <= g.goal_p50
                    goals.append(f"p50 <= {g.goal_p50}: {'PASS' if ok_p50 else 'FAIL'}")
            if wl.ratio_like and g.metered and "rps_ratio" in r:
                other, share = wl.ratio_like
                ref = next((x for x in rows if x["workload"] == other and x["gateway"] == g.name
                            and "rps_ratio" in x), None)
                if ref is not None:
                    ok = r["rps_ratio"] >= share * ref["rps_ratio"]
                    goals.append(f"req/s ratio {r['rps_ratio']:.2f} vs {other} "
                                 f"{ref['rps_ratio']:.2f}, goal >= {share:g}x: "
                                 f"{'PASS' if ok else 'FAIL'}")
            guard = guardrails_extra(runs, g, wl)
            if guard is not None and g.metered:
                per_kib, _ = guard
                r["guardrails_us_per_kib"] = per_kib
                goals.append(f"{per_kib:+.2f} µs per KiB over {GUARDRAIL_WORKLOADS[wl.name][0]}, "
                             f"goal < {GOAL_GUARDRAILS_US_PER_KIB:g}: "
                             f"{'PASS' if per_kib < GOAL_GUARDRAILS_US_PER_KIB else 'FAIL'}")
            if wl.name == "guardrails-1k" and g.metered and "rps_ratio" in r:
                ok = r["rps_ratio"] >= GOAL_GUARDRAILS_RATIO
                goals.append(f"req/s >= {GOAL_GUARDRAILS_RATIO:g} of plain: {'PASS' if ok else 'FAIL'}")
            extra = limits_extra(runs, g, wl)
            if extra is not None:
                r["limits_extra_us"], r["limits_extra_rounds"] = extra
                x = extra[0]
                if g.metered:
                    goals.append(f"{x:+.1f} µs/req over {LIMITS_REFERENCE}, goal < "
                                 f"{GOAL_LIMITS_US:g}: {'PASS' if x < GOAL_LIMITS_US else 'FAIL'}")
                else:
                    goals.append(f"{x:+.1f} µs/req over {LIMITS_REFERENCE} (reference)")
            if g.fleet and r["rls_failures"]:
                goals.append(f"{r['rls_failures']} rate-limit calls failed "
                             "(requests passed unchecked): void")
            r["goals"] = ", ".join(goals)
            rows.append(r)
        by_gw = {r["gateway"]: r for r in rows if r["workload"] == wl.name}
        if "litellm" in by_gw and "native" in by_gw:
            x = by_gw["native"]["rps"] / by_gw["litellm"]["rps"]
            by_gw["litellm"]["goals"] = (f"native = {x:.1f}x litellm, goal >= "
                                         f"{GOAL_NATIVE_OVER_LITELLM}x: "
                                         f"{'PASS' if x >= GOAL_NATIVE_OVER_LITELLM else 'FAIL'}")
    return rows


def limits_extra(runs: dict, g: Gateway, wl: Workload) -> Optional[tuple[float, list]]:
    """Limits and budgets (embedded): CPU µs per request of LIMITS_WORKLOAD minus
    LIMITS_REFERENCE on gateway `g`, per round (measured in the same round) and
    their median; None unless both were measured on `g` (not a fleet gateway)."""
    if wl.name != LIMITS_WORKLOAD or g.fleet:
        return None
    limited, reference = runs.get((LIMITS_WORKLOAD, g.name)), runs.get((LIMITS_REFERENCE, g.name))
    if not limited or not reference:
        return None
    per_round = [a["cpu_us_per_req"] - b["cpu_us_per_req"] for a, b in zip(limited, reference)
                 if a["cpu_us_per_req"] is not None and b["cpu_us_per_req"] is not None]
    if not per_round:
        return None
    return statistics.median(per_round), per_round


def guardrails_extra(runs: dict, g: Gateway, wl: Workload) -> Optional[tuple[float, list]]:
    """Guardrails: CPU µs per request of a guarded workload minus its unguarded twin on
    gateway `g`, per KiB of request, per round and their median."""
    if wl.name not in GUARDRAIL_WORKLOADS or g.fleet:
        return None
    twin, kib = GUARDRAIL_WORKLOADS[wl.name]
    guarded, reference = runs.get((wl.name, g.name)), runs.get((twin, g.name))
    if not guarded or not reference:
        return None
    per_round = [(a["cpu_us_per_req"] - b["cpu_us_per_req"]) / kib for a, b in zip(guarded, reference)
                 if a["cpu_us_per_req"] is not None and b["cpu_us_per_req"] is not None]
    if not per_round:
        return None
    return statistics.median(per_round), per_round


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def render(rows: list[dict], meta: dict, gateways: list[Gateway],
           workloads: list[Workload]) -> str:
    pinning = (f"gateway pinned to CPU {meta['gw_cpus']}, upstream and wrk to CPU "
               f"{meta['load_cpus']}" if meta["gw_cpus"] else "unpinned")
    out = [
        "# aigw bench: gateway overhead",
        "",
        f"- when: {meta['when']}  commit: {meta['commit']}",
        f"- envoy: {meta['envoy']}",
        f"- machine: {meta['cpus']} CPUs, load average before the run {meta['load']}",
        f"- load: wrk -t{SETTINGS['threads']} -c{SETTINGS['connections']} "
        f"-d{SETTINGS['duration_s']}s after a {SETTINGS['warmup_s']}s warm-up, "
        f"median of {SETTINGS['rounds']} rounds (ratios: median of same-round ratios); "
        f"every Envoy runs with --concurrency 1; bench processes at nice "
        f"{SETTINGS['nice']}; {pinning}",
        "- upstream: Envoy direct_response with canned OpenAI answers "
        "(usage 212/38/250 tokens); the filter runs with 3 token costs and 1 CEL cost",
        "",
        "| workload | gateway | req/s | paced req/s | p50 ms | p99 ms | gateway CPU µs/req "
        "| other CPU | req/s ratio | p50 ratio | CPU ratio | goals |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        out.append(
            f"| {r['workload']} | {r['gateway']} | {r['rps']:.0f} | {fmt(r['paced_rps'], '.0f')} "
            f"| {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {fmt(r['cpu_us_per_req'], '.1f')} "
            f"| {r['other_cpu']:.2f} "
            f"| {fmt(r.get('rps_ratio'), '.3f')} | {fmt(r.get('p50_ratio'), '.3f')} "
            f"| {fmt(r.get('cpu_ratio'), '.3f')} "
            f"| {r.get('goals', '')} |")
    out += [
        "",
        f"Goals (ratios against `{BASELINE}` on the same workload; fleet gateways "
        "against `plain-fleet`) are in the goals column. "
        "`upstream` rows hit the canned upstream directly: the ceiling of the setup "
        "(it must be well above the `plain` row, or the upstream is the bottleneck). "
        f"`req/s` is at saturation ({SETTINGS['connections']} connections back to back). "
        f"p50/p99 are at a moderate rate, `paced req/s` ({SETTINGS['paced_connections']} "
        f"connections, each pausing {SETTINGS['paced_delay_ms']} ms after every answer, "
        f"{SETTINGS['paced_s']} s), so nothing queues: they are the time a request spends "
        "in the gateway plus the upstream and wrk. "
        "`gateway CPU µs/req`: CPU time of the gateway Envoy per request, the least "
        "noise-sensitive cost figure. `other CPU`: CPUs used by work outside the bench "
        "during the measured run (the bench runs at a higher priority, so such work "
        "mostly fills idle time, but a high value means a noisier row).",
    ]
    out += render_limits(rows)
    out += render_fleet(rows)
    out.append("")
    out += [f"- gateway `{g.name}`: {g.describe}" for g in gateways]
    out += [f"- workload `{w.name}`: {w.describe} ({len(w.body)} B request)"
            for w in workloads]
    for note in meta["notes"]:
        out.append(f"\nNote: {note}")
    return "\n".join(out) + "\n"


def render_limits(rows: list[dict]) -> list[str]:
    """Limits and budgets in embedded mode: budget-1k against chat-1k per gateway."""
    lines = [r for r in rows if r.get("limits_extra_us") is not None]
    if not lines:
        return []
    by = {(r["workload"], r["gateway"]): r for r in rows}
    out = [
        "",
        "## Limits and budgets (embedded mode)",
        "",
        f"`{LIMITS_WORKLOAD}` is `{LIMITS_REFERENCE}` sent to a route with a token limit "
        "and a budget (block) per identity, both far above what the bench spends, with "
        f"an x-api-key header ({len(BENCH_KEYS)} keys in turn), which the filter hashes "
        f"into the identity. `extra` is its gateway CPU per request minus `{LIMITS_REFERENCE}`'s "
        "on the same gateway, measured in the same round (median of the rounds; each "
        "round's difference listed). Goal: a filter gateway's extra < "
        f"{GOAL_LIMITS_US:g} µs. The `plain` row is the reference: what Envoy itself pays "
        "for the other request (one more header to parse, the other model name); "
        "its spread is the noise of the figure. `p50 added`: the difference of the "
        "moderate-rate p50s.",
        "",
        f"| gateway | {LIMITS_REFERENCE} CPU µs/req | {LIMITS_WORKLOAD} CPU µs/req "
        "| extra µs/req | per round | p50 added µs | goal |",
        "| --- | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for r in lines:
        ref = by[(LIMITS_REFERENCE, r["gateway"])]
        x = r["limits_extra_us"]
        goal = (f"< {GOAL_LIMITS_US:g}: {'PASS' if x < GOAL_LIMITS_US else 'FAIL'}"
                if r["gateway"] != BASELINE else "reference")
        out.append(f"| {r['gateway']} | {fmt(ref['cpu_us_per_req'], '.1f')} "
                   f"| {fmt(r['cpu_us_per_req'], '.1f')} | {x:+.1f} "
                   f"| {', '.join(format(v, '+.1f') for v in r['limits_extra_rounds'])} "
                   f"| {(r['p50_ms'] - ref['p50_ms']) * 1000:+.0f} | {goal} |")
    return out


def render_fleet(rows: list[dict]) -> list[str]:
    """Fleet mode: the fleet gateways' rows with the service's figures."""
    lines = [r for r in rows if "rls_failures" in r]
    if not lines:
        return []
    conns, delay = SETTINGS["fleet_paced_connections"], SETTINGS["fleet_paced_delay_ms"]
    out = [
        "",
        "## Fleet mode: limits counted by a rate-limit service",
        "",
        f"`{LIMITS_WORKLOAD}` through Envoy's rate-limit filter asking one rate-limit "
        "service (integration-tests/rls: Python, grpcio, `limits` fixed windows in one "
        "Redis; started by the bench, pinned with the upstream and wrk) with the filter "
        "config, rate-limit filter, cluster, per-route rate limits and local-reply "
        "mappers `aigw compile --quota fleet` writes for the same limits. Per request "
        "Envoy makes two calls: a check (hits_addend 0) before routing and a charge "
        "(tokens and cost) when the answer ends. `plain-fleet` is plain Envoy with the "
        "same filter, cluster and rate limits, its descriptors from generic keys and the "
        "x-api-key header instead of the filter's metadata and its charges constant (250 "
        f"tokens, {EXPECTED_COST_MICRO} micro-USD, as the filter charges). At saturation the "
        "Python service is the bottleneck (see `service CPUs`: about one CPU means "
        "saturated), so the req/s ratio mostly measures the service, not the gateway. "
        f"p50/p99 are at a rate well below its capacity: {conns} connection(s), each "
        f"pausing {delay} ms after every answer; `p50 added` is the difference to "
        "`plain-fleet`'s, the filter's own latency in fleet mode. `gateway CPU µs/req` "
        "is at the service's pace, a few hundred requests a second, where Envoy's "
        "per-wake-up costs dominate: compare it between these rows only. "
        "`service CPU µs/req`: the rate-limit service and Redis together. `RLS "
        "calls/req`: gRPC calls on the rate-limit cluster per request (2 expected; a "
        "little more when requests cut off at the end of a wrk run are charged too). "
        "`failed calls`: rate-limit calls that failed or timed out (the compiled filter "
        "fails open: those requests passed unchecked); any makes the row void.",
        "",
        "| gateway | req/s | paced req/s | p50 ms | p99 ms | p50 added ms "
        "| gateway CPU µs/req | service CPU µs/req | service CPUs | RLS calls/req "
        "| failed calls | req/s ratio | p50 ratio | CPU ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: |",
    ]
    base = next((r for r in lines if r["gateway"] == "plain-fleet"), None)
    for r in lines:
        svc = r.get("svc_cpu_us_per_req")
        busy = svc * r["rps"] / 1e6 if svc is not None else None
        added = (f"{r['p50_ms'] - base['p50_ms']:+.3f}" if base and r is not base else "-")
        out.append(
            f"| {r['gateway']} | {r['rps']:.0f} | {fmt(r['paced_rps'], '.0f')} "
            f"| {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {added} "
            f"| {fmt(r['cpu_us_per_req'], '.1f')} "
            f"| {fmt(svc, '.0f')} | {fmt(busy, '.2f')} "
            f"| {fmt(r.get('rls_calls_per_req'), '.2f')} | {r['rls_failures']} "
            f"| {fmt(r.get('rps_ratio'), '.3f')} | {fmt(r.get('p50_ratio'), '.3f')} "
            f"| {fmt(r.get('cpu_ratio'), '.3f')} |")
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


# --------------------------------------------------------------------------- main


def run_ttft(gateways: list[Gateway], gw_cpus: Optional[str], load_cpus: Optional[str],
             procs: list) -> dict[str, dict]:
    """Second set of gateways in front of the paced upstream; `procs` collects what
    it starts so the caller stops it."""
    upstream = SseUpstream(load_cpus)
    procs.append(upstream)
    ports = {}
    for g in gateways:
        if g.start:  # not an Envoy (LiteLLM): left out of the streaming test
            continue
        subs = {"UPSTREAM_PORT": upstream.port, **g.subs()}
        env = Envoy(f"{g.name}-ttft", g.template, subs, gw_cpus, g.env(), g.ready_timeout)
        procs.append(env)
        ports[g.name] = env.port
    body = chat_body(1024, True)
    res = measure_ttft(ports, body)
    for name, r in res.items():
        print(f"ttft      {name:8} p50 {r['ttft_p50_ms']:.2f} ms p90 {r['ttft_p90_ms']:.2f} ms "
              f"total p50 {r['total_p50_ms']:.2f} ms", flush=True)
    return res


def selected_gateways(workloads: Optional[list[Workload]] = None) -> list[Gateway]:
    """BENCH_GATEWAYS (else the default ones) and the baseline; with BENCH_FLEET=1 the
    fleet twin of each selected Envoy gateway (or a fleet gateway named in
    BENCH_GATEWAYS) and their baseline; only gateways serving one of `workloads`."""
    with_litellm = os.environ.get("BENCH_LITELLM") == "1"
    gateways = [g for g in GATEWAYS if not g.fleet and (
                g.name in ONLY_GATEWAYS or g.name == BASELINE
                or (not ONLY_GATEWAYS and g.default)
                or (g.name == "litellm" and with_litellm))]
    names = {g.name for g in gateways}
    fleet = [g for g in GATEWAYS if g.fleet and (
             g.name in ONLY_GATEWAYS
             or (SETTINGS["fleet"] == 1 and g.name.removesuffix("-fleet") in names))]
    if fleet:
        gateways += [g for g in GATEWAYS
                     if g.fleet and (g in fleet or g.name == g.baseline)]
    if workloads is not None:
        gateways = [g for g in gateways
                    if g.name == BASELINE or any(g.serves(w) for w in workloads)]
    for g in gateways:
        for p in g.requires:
            if not p.exists():
                raise BenchError(f"gateway {g.name} needs {p} (cargo build --release "
                                 "-p aigw-shim [--target wasm32-wasip1])")
    return gateways


def main() -> int:
    global ENVOY
    ENVOY = find_envoy()
    if MEMORY == "only":
        if RUN.exists():
            shutil.rmtree(RUN)
        RUN.mkdir(parents=True)
        return memory_only(selected_gateways())
    if not shutil.which("wrk"):
        raise BenchError("wrk is not installed (apt-get install -y wrk)")
    if RUN.exists():
        shutil.rmtree(RUN)
    RUN.mkdir(parents=True)

    workloads = [w for w in WORKLOADS
                 if w.name in ONLY_WORKLOADS or (not ONLY_WORKLOADS and w.default)]
    if not workloads:
        raise BenchError(f"no workload selected; known: {[w.name for w in WORKLOADS]}")
    gateways = selected_gateways(workloads)

    gw_cpus, load_cpus = cpu_sets()
    version = subprocess.run(ENVOY + ["--version"], capture_output=True,
                             text=True).stdout.strip().split("version:")[-1].strip()
    meta = {
        "when": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": git_commit(), "envoy": f"{' '.join(ENVOY)} ({version})",
        "cpus": os.cpu_count(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "gw_cpus": gw_cpus, "load_cpus": load_cpus, "notes": [],
    }
    print(f"bench: envoy {' '.join(ENVOY)}; pinning gateway={gw_cpus} "
          f"load={load_cpus}; nice {SETTINGS['nice']}", flush=True)

    procs: list[Envoy] = []
    try:
        RUN.mkdir(parents=True, exist_ok=True)
        write_bedrock_stream(RUN / "bedrock-converse-stream.bin")
        upstream = Envoy("upstream", "upstream.yaml", {}, load_cpus)
        procs.append(upstream)
        if any(g.fleet for g in gateways):
            FLEET.start(load_cpus, procs)
        envoys = {}
        for g in gateways:
            subs = {"UPSTREAM_PORT": upstream.port, **g.subs()}
            if g.start:
                envoys[g.name] = g.start(g.name, upstream.port, gw_cpus)
            else:
                envoys[g.name] = Envoy(g.name, g.template, subs, gw_cpus, g.env(),
                                       g.ready_timeout)
            procs.append(envoys[g.name])

        # A broken setup must not produce a number: check every pair first.
        for g in gateways:
            for wl in workloads:
                if not g.serves(wl):
                    continue
                line = check(g, envoys[g.name], wl)
                print(f"check ok  {g.name:12} {wl.name:16} {line}", flush=True)

        pids = [p.proc.pid for p in procs]
        other = wait_quiet(SETTINGS["quiet_wait_s"], pids)
        if other >= 0.3:
            meta["notes"].append(f"the machine was busy before the run ({other:.1f} CPUs "
                                 "of other work); see the `other CPU` column.")
        runs: dict[tuple[str, str], list[dict]] = {}
        for wl in workloads:
            r = measure(upstream.url, wl, load_cpus, None, pids)
            runs[(wl.name, "upstream")] = [r]
            print(f"measured  {'upstream':12} {wl.name:16} {r['rps']:8.0f} req/s", flush=True)
        for rnd in range(SETTINGS["rounds"]):
            wait_quiet(5, pids)
            order = gateways if rnd % 2 == 0 else list(reversed(gateways))
            for wl in workloads:
                for g in order:
                    if not g.serves(wl):
                        continue
                    env = envoys[g.name]
                    r = measure(env.url, wl, load_cpus, env.proc.pid, pids,
                                getattr(env, "headers", None), getattr(env, "pace", None),
                                getattr(env, "counters", None))
                    service = ""
                    if "svc_cpu_us_per_req" in r:
                        service = (f"service {r['svc_cpu_us_per_req']:.0f} us/req "
                                   f"{r['rls_calls_per_req']:.2f} calls/req "
                                   f"{r['counted']['rls_failures']} failed ")
                    print(f"round {rnd + 1}   {g.name:12} {wl.name:16} {r['rps']:8.0f} req/s "
                          f"paced p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms "
                          f"cpu {fmt(r['cpu_us_per_req'], '.1f')} us/req {service}"
                          f"other {r['other_cpu']:.2f} CPUs "
                          f"errors {r['errors']}", flush=True)
                    if r["errors"]:
                        raise BenchError(f"{g.name}/{wl.name}: {r['errors']} errors under "
                                         "load (see wrk summary); numbers are void")
                    runs.setdefault((wl.name, g.name), []).append(r)

        ttft = None
        if SETTINGS["ttft_requests"] > 0:
            ttft = run_ttft(gateways, gw_cpus, load_cpus, procs)
        memory = None
        if MEMORY == "1":
            memory = measure_memory(gateways, gw_cpus, load_cpus, procs)
    finally:
        for p in reversed(procs):
            p.stop()

    rows = summarize(runs, workloads, gateways, meta)

    table = render(rows, meta, gateways, workloads)
    if ttft:
        table += "\n".join(render_ttft(ttft)) + "\n"
    if memory:
        table += "\n".join(render_memory(memory)) + "\n"
    OUT.mkdir(exist_ok=True)
    (OUT / "latest.md").write_text(table)
    (OUT / "latest.json").write_text(json.dumps({"meta": meta, "settings": SETTINGS,
                                                  "rows": rows, "ttft": ttft,
                                                  "memory": memory},
                                                 indent=2))
    print()
    print(table)
    print(f"written to {OUT / 'latest.md'}")
    return 0


if __name__ == "__main__":
    # SIGTERM (e.g. make interrupted) unwinds like Ctrl-C, so the Envoys are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with AutogroupNice(SETTINGS["nice"]):
            rc = main()
        sys.exit(rc)
    except BenchError as e:
        print(f"bench: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
