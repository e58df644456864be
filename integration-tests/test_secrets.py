"""Credentials stay out of what the gateway writes, and clients cannot steer it.

One Envoy per build on `make run`'s example compiled by `aigw compile` (the
credentials apart: files for the native build, `secrets.env` for wasm), with the
simulator checking them as `make run` does, run with `--log-level trace`. A set of
requests goes through: plain (OpenAI), translated (Anthropic), signed (Bedrock, JSON
and streamed, OpenAI and Anthropic clients), fallback, and errors (bad JSON, unknown
model, a provider's 401/403/500, wrong method), every one carrying the client's own
credentials in each header a provider reads. Then:

- no line the filter writes (Envoy's `dynamic_modules` logger for the native module,
  `wasm` for the wasm one) holds a configured secret or a client credential; Envoy's
  own debug and trace lines print request headers, the credentials the filter set
  included (README says which level to run in production);
- no error body echoes a configured or a client credential;
- internal headers a client sends (`x-aigw-*`, the routing header `x-ai-eg-model`) pick
  no route, backend, model or identity, reach no provider and no client.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "envoy-configs"))
import sim_expectations  # noqa: E402

from conftest import HERE, environment, sim_ports, start_envoy, stop, wait_for, wait_log_entry  # noqa: E402
from test_examples import BOOTSTRAPS, compile_example, secret_values, secrets_env, to_simulator  # noqa: E402

CLIENT_SECRETS = {
    "authorization": "Bearer sk-client-secret-0001",
    "x-api-key": "sk-ant-client-secret-0002",
    "api-key": "azure-client-secret-0003",
    "x-goog-api-key": "goog-client-secret-0004",
}
CLIENT_VALUES = ["sk-client-secret-0001", "sk-ant-client-secret-0002", "azure-client-secret-0003",
                 "goog-client-secret-0004"]
# Envoy's log line: [time][thread][level][logger] [file:line] message
LOGGER = re.compile(r"^\[[^\]]*\]\[[^\]]*\]\[[^\]]*\]\[([a-z_]+)\]")
FILTER_LOGGERS = {"native": "dynamic_modules", "wasm": "wasm"}


@pytest.fixture(scope="module")
def traced(workdir: Path, build: str):
    work = workdir / f"secrets-{build}"
    work.mkdir(parents=True, exist_ok=True)
    access_log = work / "access.log"
    res = compile_example("aigateway", work / "compiled", access_log)
    assert res.returncode == 0, res.stderr
    out = work / "compiled"
    boot = yaml.safe_load((out / BOOTSTRAPS[build]).read_text())
    ready, sim_log = work / "sim-ready.json", work / "simulator.log"
    with open(sim_log, "w") as log:
        sim = subprocess.Popen([sys.executable, str(HERE / "simulator.py"), "--listen", "127.0.0.1:0=simulator",
                                "--ready-file", str(ready)] + sim_expectations.expectations(out, "simulator"),
                               stdout=log, stderr=subprocess.STDOUT)
    envoy = None
    try:
        wait_for(lambda: sim_ports(ready, ["simulator"]) is not None, 15, "simulator", sim, sim_log)
        port = (sim_ports(ready, ["simulator"]) or {})["simulator"]

        def boot_for(listen: int, admin: int) -> dict:
            b = to_simulator(boot, port)
            b["admin"]["address"]["socket_address"]["port_value"] = admin
            b["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listen
            return b

        # start_envoy runs at info level; restart at trace on the same bootstrap.
        with environment(secrets_env(out) if build == "wasm" else {}):
            envoy, listen, admin = start_envoy(boot_for, work, build)
            stop(envoy)
            log_path = work / "envoy-trace.log"
            from conftest import envoy_command, envoy_env, STARTUP_TIMEOUT
            with open(log_path, "w") as f:
                envoy = subprocess.Popen(envoy_command() + ["-c", str(work / "envoy.yaml"), "--concurrency", "2",
                                                            "--use-dynamic-base-id", "--log-level", "trace"],
                                         stdout=f, stderr=subprocess.STDOUT, env=envoy_env())
            wait_for(lambda: requests.get(f"http://127.0.0.1:{admin}/ready", timeout=1).text.strip() == "LIVE",
                     STARTUP_TIMEOUT[build], f"envoy ({build}, trace)", envoy, log_path)
        yield {"url": f"http://127.0.0.1:{listen}", "sim": f"http://127.0.0.1:{port}", "log": log_path,
               "access_log": access_log, "secrets": secret_values(out), "build": build, "config":
               json.loads((out / "config.json").read_text())}
        assert envoy.poll() is None, "Envoy died"
    finally:
        if envoy is not None:
            stop(envoy)
        stop(sim)


def send(gw: dict, path: str, body, headers: dict | None = None, method: str = "POST") -> tuple[requests.Response, str]:
    rid = str(uuid.uuid4())
    h = {"x-request-id": rid, "content-type": "application/json", **CLIENT_SECRETS, **(headers or {})}
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    r = requests.request(method, gw["url"] + path, data=data, headers=h, timeout=30)
    return r, rid


def chat(model: str, **kw) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **kw}


def upstream(gw: dict, rid: str) -> list[dict]:
    return requests.get(f"{gw['sim']}/_sim/requests", params={"id": rid}, timeout=5).json()


# (path, body, extra headers, expected status)
REQUESTS = [
    ("/v1/chat/completions", chat("gpt-4o-mini"), {}, 200),
    ("/v1/chat/completions", chat("gpt-4o-mini", stream=True), {}, 200),
    ("/v1/chat/completions", chat("claude-sonnet"), {}, 200),
    ("/v1/chat/completions", chat("bedrock-claude"), {}, 200),
    ("/v1/chat/completions", chat("bedrock-claude", stream=True), {}, 200),
    ("/anthropic/v1/messages", {"model": "bedrock-claude", "max_tokens": 20,
                                "messages": [{"role": "user", "content": "hi"}]}, {"anthropic-version": "2023-06-01"}, 200),
    ("/v1/chat/completions", chat("ha-chat"), {}, 200),
    ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi"}, {}, 200),
    ("/v1/chat/completions", "{not json", {}, 400),
    ("/v1/chat/completions", chat("no-such-model"), {}, 404),
    ("/v1/chat/completions", {"messages": []}, {}, 400),
    ("/v1/chat/completions", chat("gpt-4o-mini"), {"x-sim-status": "401"}, 401),
    ("/v1/chat/completions", chat("claude-sonnet"), {"x-sim-status": "401"}, 401),
    ("/v1/chat/completions", chat("bedrock-claude"), {"x-sim-status": "403"}, 403),
    ("/v1/chat/completions", chat("bedrock-claude"), {"x-sim-status": "500"}, 502),
    ("/anthropic/v1/messages", {"model": "claude-sonnet"}, {"anthropic-version": "2023-06-01"}, 400),
]


@pytest.fixture(scope="module")
def answers(traced):
    out = []
    for path, body, headers, want in REQUESTS:
        r, rid = send(traced, path, body, headers)
        out.append((path, body, headers, want, r, rid))
    r, rid = send(traced, "/v1/chat/completions", None, method="GET")
    out.append(("/v1/chat/completions GET", None, {}, 405, r, rid))
    return out


def test_requests_answer_as_expected(answers):
    for path, body, headers, want, r, rid in answers:
        if want == 502:  # the provider's 500, as each client's schema maps it
            assert r.status_code >= 500, (path, headers, r.status_code, r.text[:300])
        else:
            assert r.status_code == want, (path, body, headers, r.status_code, r.text[:300])


def test_no_error_body_echoes_a_credential(traced, answers):
    secrets = traced["secrets"] + CLIENT_VALUES
    assert traced["secrets"], "the example configures credentials"
    for path, body, headers, want, r, rid in answers:
        if r.status_code < 400:
            continue
        leaked = [s for s in secrets if s in r.text or any(s in v for v in r.headers.values())]
        assert leaked == [], (path, r.status_code, "echoes a credential")


def test_no_filter_log_line_holds_a_secret(traced, answers):
    log = traced["log"]
    for _ in range(50):  # Envoy flushes its log asynchronously
        text = log.read_text(errors="replace")
        if answers[-1][5] in text:
            break
        import time
        time.sleep(0.1)
    lines = text.splitlines()
    logger = FILTER_LOGGERS[traced["build"]]
    ours = [line for line in lines if (m := LOGGER.match(line)) and m.group(1) == logger]
    assert ours, f"no line of the {logger} logger in a trace-level log"
    secrets = traced["secrets"] + CLIENT_VALUES
    leaked = [(i, s) for i, line in enumerate(ours) for s in secrets if s in line]
    assert leaked == [], f"{len(leaked)} filter log line(s) hold a secret"
    # The config Envoy prints at debug names the credentials and holds none.
    assert not [s for s in traced["secrets"] if s in text.split("starting main dispatch loop")[0]]


def test_client_routing_and_internal_headers_are_not_trusted(traced):
    """Routing is the body's model: a client's x-ai-eg-model, x-aigw-backend or
    x-aigw-model-override picks no other route, backend or model, and the
    gateway's internal headers reach neither the provider nor the client. The
    identity sent upstream is the configured one, never the client's."""
    gw = traced
    spoof = {"x-ai-eg-model": "bedrock-claude", "x-aigw-backend": "bedrock.default@anthropic.claude-3-5-haiku-20241022-v1:0",
             "x-aigw-model-override": "evil-model", "x-aigw-route": "default/providers/rule/1"}
    for model, provider in (("gpt-4o-mini", "openai"), ("claude-sonnet", "anthropic"),
                            ("bedrock-claude", "bedrock-converse"), ("ha-chat", "openai")):
        r, rid = send(gw, "/v1/chat/completions", chat(model), spoof)
        assert r.status_code == 200, r.text
        (up,) = upstream(gw, rid)
        assert up["provider"] == provider, (model, up["provider"])
        assert up["model"] != "evil-model" and (up["body_json"] or {}).get("model") != "evil-model"
        names = [k for k, _ in up["headers"]]
        assert not [k for k in names if k.startswith("x-aigw-")], names
        routed = [v for k, v in up["headers"] if k == "x-ai-eg-model"]
        assert routed in ([], [model]), routed
        assert not any(s in v for _, v in up["headers"] for s in CLIENT_VALUES), up["headers"]
        assert up["checks"] == [], up["checks"]
        assert not [k for k in r.headers if k.lower().startswith("x-aigw-")]
        entry = wait_log_entry(gw["access_log"], rid)
        assert entry["request_model"] == model and entry["routed_model"] == model, entry
    # An unknown model stays unknown whatever the routing header says.
    r, rid = send(gw, "/v1/chat/completions", chat("no-such-model"), {"x-ai-eg-model": "gpt-4o-mini"})
    assert r.status_code == 404 and upstream(gw, rid) == []


# ---- what a provider answers: its x-aigw-* headers say nothing ----------------------

class _SpoofingProvider:
    """An OpenAI-compatible upstream whose every answer carries the gateway's
    internal header names, as a hostile or misconfigured provider (or a proxy in
    front of it) could."""

    HEADERS = {"x-aigw-backend": "evil-backend", "x-aigw-model-override": "evil-model",
               "x-aigw-anything": "1"}

    def __init__(self):
        import http.server
        import threading

        spoof = self.HEADERS

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length") or 0))
                body = json.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": "hi"}}],
                                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                for k, v in spoof.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _spoof_resources(port: int) -> str:
    docs = [
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "Backend",
         "metadata": {"name": "provider", "namespace": "default"},
         "spec": {"endpoints": [{"ip": {"address": "127.0.0.1", "port": port}}]}},
    ]
    for name in ("one", "two"):
        docs.append({"apiVersion": "aigateway.envoyproxy.io/v1alpha1", "kind": "AIServiceBackend",
                     "metadata": {"name": name, "namespace": "default"},
                     "spec": {"schema": {"name": "OpenAI"},
                              "backendRef": {"name": "provider", "kind": "Backend",
                                             "group": "gateway.envoyproxy.io"}}})
    rules = [
        # One backend: the router-level instance does the upstream work (routerOnly).
        {"matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": "single"}]}],
         "backendRefs": [{"name": "one"}]},
        # Two: the upstream instance of the rule's cluster does it.
        {"matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": "fallback"}]}],
         "backendRefs": [{"name": "one", "priority": 0}, {"name": "two", "priority": 1}]},
    ]
    docs.append({"apiVersion": "aigateway.envoyproxy.io/v1alpha1", "kind": "AIGatewayRoute",
                 "metadata": {"name": "spoof", "namespace": "default"},
                 "spec": {"schema": {"name": "OpenAI"}, "rules": rules}})
    return yaml.safe_dump_all(docs)


def test_provider_internal_headers_are_not_trusted(workdir: Path, build: str):
    """A provider's x-aigw-backend or x-aigw-model-override names no backend or model
    in the metadata (the access log shows the configured backend, and no override),
    and no x-aigw-* header it sends reaches the client: with the upstream work done
    by the router-level instance (routerOnly) and by the upstream instance alike."""
    from test_examples import CLI

    work = workdir / f"provider-spoof-{build}"
    work.mkdir(parents=True, exist_ok=True)
    provider = _SpoofingProvider()
    envoy = None
    try:
        (work / "input.yaml").write_text(_spoof_resources(provider.port))
        access_log = work / "access.log"
        res = subprocess.run([str(CLI), "compile", "-q", "-o", str(work / "out"), "--listen-address", "127.0.0.1",
                              "--access-log", str(access_log), "--wasm-path",
                              str(Path(__import__("conftest").WASM).resolve()), str(work / "input.yaml")],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        boot = yaml.safe_load((work / "out" / BOOTSTRAPS[build]).read_text())

        def boot_for(listen: int, admin: int) -> dict:
            boot["admin"]["address"]["socket_address"]["port_value"] = admin
            boot["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listen
            return boot

        envoy, listen, _ = start_envoy(boot_for, work, build)
        for model, backend in (("single", "one.default"), ("fallback", "one.default")):
            rid = str(uuid.uuid4())
            r = requests.post(f"http://127.0.0.1:{listen}/v1/chat/completions", timeout=30,
                              headers={"x-request-id": rid, "content-type": "application/json"},
                              data=json.dumps(chat(model)))
            assert r.status_code == 200, r.text
            assert not [k for k in r.headers if k.lower().startswith("x-aigw-")], dict(r.headers)
            entry = wait_log_entry(access_log, rid)
            got = {k: entry.get(k) for k in ("backend_name", "model_name_override")}
            assert got["backend_name"] == backend, (model, entry)
            assert got["model_name_override"] in (None, "-", ""), (model, entry)
    finally:
        if envoy is not None:
            stop(envoy)
        provider.close()
