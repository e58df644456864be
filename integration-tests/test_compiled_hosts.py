"""The Host a provider receives is the one the filter signed for, whatever the
Envoy Gateway `Backend` holds (an IP address or a host name), through `aigw compile`.

Resources written here: AWS Bedrock (SigV4, model id
`anthropic.claude-3-haiku-20240307-v1:0`, which the path percent-encodes and SigV4
encodes again), Anthropic and OpenAI backends, each behind a Backend naming an IP
address (127.0.0.1) or a host name (localhost), on two simulator listeners; rules with
one backend (the router-level instance does the upstream work, `routerOnly`, and the
route rewrites Host) and with two (fallback across an IP and a host-name endpoint: the
upstream instance sets and signs Host per attempt). The simulator checks every API key
and recomputes every SigV4 signature with botocore over the Host it received, so a
Host other than the signed one is a 403 there. Both builds: the native bootstrap reads
the credentials from the files the compiler wrote apart, the wasm one from the
environment of `secrets.env`.

The Envoy Gateway output is checked too: a rule with one backendRef rewrites Host to
the host its EnvoyExtensionPolicy config signs for (a patched rule rewrites none: see
the envoy-gateway-patch golden and test_envoy_gateway.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from conftest import HERE, REPO, environment, free_port, sim_ports, start_envoy, stop, wait_for, wait_log_entry

CLI = Path(os.environ.get("AIGW_CLI", REPO / "target" / "release" / "aigw"))
MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
AWS = ("AKIDHOSTTEST0001", "host-test-secret-not-real")
OPENAI_KEY = "sk-host-test-openai"
ANTHROPIC_KEY = "sk-ant-host-test"
CLIENT_HOST = "gateway.client.example"

# (model, [(backend, listener that serves it)] in priority order)
RULES = {
    "bedrock-ip": ["bedrock-ip"],
    "bedrock-name": ["bedrock-name"],
    "anthropic-ip": ["anthropic-ip"],
    "openai-ip": ["openai-ip"],
    "openai-name": ["openai-name"],
    "fallback-ip-to-name": ["openai-ip", "bedrock-name"],
    "fallback-name-to-ip": ["bedrock-name", "bedrock-ip"],
}
# backend -> (schema, EG Backend, security policy)
BACKENDS = {
    "bedrock-ip": ("AWSBedrock", "ip-a", "aws"),
    "bedrock-name": ("AWSBedrock", "name-b", "aws"),
    "anthropic-ip": ("Anthropic", "ip-a", "anthropic-key"),
    "openai-ip": ("OpenAI", "ip-a", "openai-key"),
    "openai-name": ("OpenAI", "name-b", "openai-key"),
}
LISTENER = {"ip-a": "a", "name-b": "b"}


def resources(port_a: int, port_b: int) -> str:
    docs = [
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "Backend",
         "metadata": {"name": "ip-a", "namespace": "default"},
         "spec": {"endpoints": [{"ip": {"address": "127.0.0.1", "port": port_a}}]}},
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "Backend",
         "metadata": {"name": "name-b", "namespace": "default"},
         "spec": {"endpoints": [{"fqdn": {"hostname": "localhost", "port": port_b}}]}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aws", "namespace": "default"},
         "stringData": {"credentials": f"[default]\naws_access_key_id = {AWS[0]}\n"
                                       f"aws_secret_access_key = {AWS[1]}\n"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "openai-key", "namespace": "default"},
         "stringData": {"apiKey": OPENAI_KEY}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "anthropic-key", "namespace": "default"},
         "stringData": {"apiKey": ANTHROPIC_KEY}},
        {"apiVersion": "aigateway.envoyproxy.io/v1alpha1", "kind": "BackendSecurityPolicy",
         "metadata": {"name": "aws", "namespace": "default"},
         "spec": {"type": "AWSCredentials", "awsCredentials": {
             "region": "us-east-1", "credentialsFile": {"secretRef": {"name": "aws"}}}}},
    ]
    for key in ("openai-key", "anthropic-key"):
        docs.append({"apiVersion": "aigateway.envoyproxy.io/v1alpha1", "kind": "BackendSecurityPolicy",
                     "metadata": {"name": key, "namespace": "default"},
                     "spec": {"type": "APIKey", "apiKey": {"secretRef": {"name": key}}}})
    for name, (schema, backend, policy) in BACKENDS.items():
        docs.append({"apiVersion": "aigateway.envoyproxy.io/v1alpha1", "kind": "AIServiceBackend",
                     "metadata": {"name": name, "namespace": "default"},
                     "spec": {"schema": {"name": schema},
                              "backendRef": {"name": backend, "kind": "Backend", "group": "gateway.envoyproxy.io"},
                              "backendSecurityPolicyRef": {"name": policy, "kind": "BackendSecurityPolicy",
                                                           "group": "aigateway.envoyproxy.io"}}})
    rules = []
    for model, backends in RULES.items():
        refs = []
        for i, b in enumerate(backends):
            ref = {"name": b, "priority": i}
            if BACKENDS[b][0] == "AWSBedrock":
                ref["modelNameOverride"] = MODEL_ID
            refs.append(ref)
        rules.append({"matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": model}]}],
                      "backendRefs": refs})
    docs.append({"apiVersion": "aigateway.envoyproxy.io/v1alpha1", "kind": "AIGatewayRoute",
                 "metadata": {"name": "hosts", "namespace": "default"},
                 "spec": {"schema": {"name": "OpenAI"},
                          "targetRefs": [{"name": "aigw", "kind": "Gateway", "group": "gateway.networking.k8s.io"}],
                          "rules": rules}})
    return yaml.safe_dump_all(docs)


def expected_host(backend: str, ports: dict[str, int]) -> str:
    """The host the filter signs for: the provider's own behind an IP address, the
    Backend's host name (with its port) otherwise, the address for an OpenAI server."""
    schema, eg, _ = BACKENDS[backend]
    if eg == "name-b":
        return f"localhost:{ports['b']}"
    return {"AWSBedrock": "bedrock-runtime.us-east-1.amazonaws.com", "Anthropic": "api.anthropic.com",
            "OpenAI": f"127.0.0.1:{ports['a']}"}[schema]


def env_file(path: Path) -> dict[str, str]:
    """The variables a shell sets from `secrets.env`, as `make run` loads it."""
    out = subprocess.run(["bash", "-c", 'set -a; . "$1"; env -0', "_", str(path)], env={},
                         capture_output=True, check=True).stdout
    return dict(kv.split("=", 1) for kv in out.decode().split("\0") if "=" in kv and not kv.startswith("_="))


@pytest.fixture(scope="module")
def compiled_gateway(workdir: Path, build: str):
    if not CLI.exists():
        pytest.fail(f"{CLI} not found: run `make build-cli` first (or set AIGW_CLI)")
    work = workdir / f"compiled-hosts-{build}"
    work.mkdir(parents=True, exist_ok=True)
    ready, sim_log = work / "sim-ready.json", work / "simulator.log"
    sim_cmd = [sys.executable, str(HERE / "simulator.py"), "--ready-file", str(ready),
               "--listen", "127.0.0.1:0=a", "--listen", "127.0.0.1:0=b",
               "--aws-credentials", f"*={AWS[0]}:{AWS[1]}",
               "--expect-api-key", f"*={OPENAI_KEY}", "--expect-api-key", f"*={ANTHROPIC_KEY}"]
    with open(sim_log, "w") as log:
        sim = subprocess.Popen(sim_cmd, stdout=log, stderr=subprocess.STDOUT)
    envoy = None
    try:
        wait_for(lambda: sim_ports(ready, ["a", "b"]) is not None, 15, "simulator", sim, sim_log)
        ports = sim_ports(ready, ["a", "b"]) or {}
        (work / "input.yaml").write_text(resources(ports["a"], ports["b"]))
        out = work / "out"
        access_log = work / "access.log"
        res = subprocess.run([str(CLI), "compile", "-q", "-o", str(out), "--listen-address", "127.0.0.1",
                              "--access-log", str(access_log), "--wasm-path",
                              os.environ.get("AIGW_WASM", str(REPO / "target/wasm32-wasip1/release/aigw.wasm")),
                              str(work / "input.yaml")], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        boot = yaml.safe_load((out / ("bootstrap.yaml" if build == "native" else "bootstrap-wasm.yaml")).read_text())
        env = env_file(out / "secrets.env") if build == "wasm" else {}

        def boot_for(listen: int, admin: int) -> dict:
            boot["admin"]["address"]["socket_address"]["port_value"] = admin
            boot["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listen
            return boot

        with environment(env):
            envoy, listen, _ = start_envoy(boot_for, work, build)
        yield {"url": f"http://127.0.0.1:{listen}", "sim": f"http://127.0.0.1:{ports['a']}", "ports": ports,
               "out": out, "access_log": access_log}
        assert envoy.poll() is None, "Envoy died:\n" + (work / "envoy.log").read_text(errors="replace")[-4000:]
    finally:
        if envoy is not None:
            stop(envoy)
        stop(sim)


def chat(gw: dict, model: str, *, stream: bool = False, headers: dict | None = None) -> tuple[requests.Response, str]:
    rid = str(uuid.uuid4())
    body = {"model": model, "messages": [{"role": "user", "content": "Which host?"}]}
    if stream:
        body["stream"] = True
    h = {"x-request-id": rid, "content-type": "application/json", "host": CLIENT_HOST,
         "authorization": "Bearer sk-client-not-for-upstream"}
    h.update(headers or {})
    r = requests.post(gw["url"] + "/v1/chat/completions", data=json.dumps(body), headers=h, timeout=30)
    return r, rid


def attempts(gw: dict, rid: str) -> list[dict]:
    r = requests.get(f"{gw['sim']}/_sim/requests", params={"id": rid}, timeout=5)
    r.raise_for_status()
    return r.json()


def hosts(rec: dict) -> list[str]:
    return [v for k, v in rec["headers"] if k == "host"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("model", [m for m, b in RULES.items() if len(b) == 1])
def test_single_backend_rule_sends_the_signed_host(compiled_gateway, model: str, stream: bool):
    gw = compiled_gateway
    (backend,) = RULES[model]
    r, rid = chat(gw, model, stream=stream)
    assert r.status_code == 200, r.text
    (rec,) = attempts(gw, rid)
    assert rec["listener"] == LISTENER[BACKENDS[backend][1]]
    assert hosts(rec) == [expected_host(backend, gw["ports"])], rec["headers"]
    assert rec["checks"] == [], rec["checks"]
    if BACKENDS[backend][0] == "AWSBedrock":
        assert rec["model"] == MODEL_ID
        assert "%3A" in rec["path"], rec["path"]
    assert not any("sk-client-not-for-upstream" in v for _, v in rec["headers"])
    assert wait_log_entry(gw["access_log"], rid)["status"] == 200


@pytest.mark.parametrize("model", [m for m, b in RULES.items() if len(b) == 2])
def test_fallback_across_ip_and_host_name_sends_each_signed_host(compiled_gateway, model: str):
    """The primary fails (500 from its listener); the retry reaches the other Backend,
    translated and signed for its own host, and so did the first attempt."""
    gw = compiled_gateway
    first, second = RULES[model]
    failing = LISTENER[BACKENDS[first][1]]
    for stream in (False, True):
        r, rid = chat(gw, model, stream=stream, headers={"x-sim-fail-on": f"{failing}=500"})
        assert r.status_code == 200, r.text
        recs = attempts(gw, rid)
        assert [rec["listener"] for rec in recs] == [failing, LISTENER[BACKENDS[second][1]]], recs
        for rec, backend in zip(recs, (first, second)):
            assert hosts(rec) == [expected_host(backend, gw["ports"])], (backend, rec["headers"])
            assert rec["checks"] == [], (backend, rec["checks"])
        assert recs[1]["response"]["status"] == 200


def test_healthy_fallback_rule_sends_the_primary_signed_host(compiled_gateway):
    gw = compiled_gateway
    for model, backends in RULES.items():
        if len(backends) != 2:
            continue
        for _ in range(3):  # new and reused upstream connections alike
            r, rid = chat(gw, model)
            assert r.status_code == 200, r.text
            (rec,) = attempts(gw, rid)
            assert hosts(rec) == [expected_host(backends[0], gw["ports"])], rec["headers"]
            assert rec["checks"] == []


def test_anthropic_clients_reach_bedrock_with_the_signed_host(compiled_gateway):
    gw = compiled_gateway
    for model in ("bedrock-ip", "bedrock-name"):
        rid = str(uuid.uuid4())
        r = requests.post(gw["url"] + "/anthropic/v1/messages", timeout=30, headers={
            "x-request-id": rid, "content-type": "application/json", "host": CLIENT_HOST,
            "anthropic-version": "2023-06-01"},
            data=json.dumps({"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}))
        assert r.status_code == 200, r.text
        (rec,) = attempts(gw, rid)
        assert hosts(rec) == [expected_host(model, gw["ports"])] and rec["checks"] == [], rec


def test_envoy_gateway_routes_rewrite_host_to_the_signed_host(compiled_gateway):
    """On Envoy Gateway, a rule with one backendRef rewrites Host (Gateway API
    URLRewrite) to exactly the host its EnvoyExtensionPolicy config signs for, an IP
    Backend included (the provider's host, or the address of an OpenAI server)."""
    docs = [d for d in yaml.safe_load_all((compiled_gateway["out"] / "envoy-gateway.yaml").read_text()) if d]
    (policy,) = [d for d in docs if d["kind"] == "EnvoyExtensionPolicy"]
    config = policy["spec"]["dynamicModule"][0]["config"]
    signed = {b["name"]: b.get("host") for b in config["backends"]}
    route_backends = {r["models"][0]: [b["name"] for b in r["backends"]] for r in config["routes"]}
    seen = set()
    for route in (d for d in docs if d["kind"] == "HTTPRoute"):
        for rule in route["spec"]["rules"]:
            models = [h["value"] for m in rule["matches"] for h in m.get("headers", []) if h["name"] == "x-ai-eg-model"]
            if not models:
                continue
            (model,) = models
            seen.add(model)
            rewrites = [f["urlRewrite"]["hostname"] for f in rule.get("filters", []) if f["type"] == "URLRewrite"]
            if len(RULES[model]) == 1:
                (backend,) = route_backends[model]
                assert rewrites == [signed[backend]] and signed[backend], (model, rule, signed[backend])
                want = expected_host(RULES[model][0], compiled_gateway["ports"]).rsplit(":", 1)[0] \
                    if RULES[model][0].endswith("name") or BACKENDS[RULES[model][0]][0] == "OpenAI" \
                    else expected_host(RULES[model][0], compiled_gateway["ports"])
                assert signed[backend] == want, (model, signed[backend])
            else:
                # These rules mix an IP and a host-name Backend: Envoy Gateway makes a
                # cluster per backendRef, no EnvoyPatchPolicy can add the upstream
                # instance (a warning says so), nothing is translated or signed there,
                # and the Host is the Backend's (Envoy Gateway's own rewrite).
                assert [f["type"] for f in rule.get("filters", [])] == ["ExtensionRef"], (model, rule)
    assert seen == set(RULES)


def test_client_retry_headers_pick_no_backend(compiled_gateway):
    """Envoy's own request headers that steer retries (`x-envoy-retry-on`,
    `x-envoy-retriable-status-codes`, `x-envoy-max-retries`) cannot move a client's
    request to a rule's fallback backend: a 400 from the primary stays the answer."""
    gw = compiled_gateway
    steer = {"x-envoy-retry-on": "retriable-status-codes,4xx,retriable-4xx", "x-envoy-retriable-status-codes": "400",
             "x-envoy-max-retries": "3", "x-sim-fail-on": "a=400"}
    r, rid = chat(gw, "fallback-ip-to-name", headers=steer)
    assert r.status_code == 400, r.text
    recs = attempts(gw, rid)
    assert [rec["listener"] for rec in recs] == ["a"], recs
