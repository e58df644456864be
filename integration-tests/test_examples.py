"""The examples under envoy-configs/examples/, compiled by the `aigw` CLI.

Each folder is compiled with the built binary (AIGW_CLI, default
target/release/aigw; `make test` builds it), its bootstraps are checked with
`envoy --mode validate`, and then it is served: the simulator on a free port,
Envoy on the generated bootstrap, and a chat completion (plain and streamed)
through the `openai` SDK whose token counts must appear in the access log, with
the credentials the example configures on the upstream request.

Both builds: `bootstrap.yaml` loads libaigw.so (the dynamic module),
`bootstrap-wasm.yaml` loads aigw.wasm (written unless credentials come from
files, which the wasm build cannot read).

The only change made to a generated bootstrap is in a copy: every upstream
endpoint is pointed at the simulator's free port (the examples name 127.0.0.1:8081,
which `make run` may be using). An example whose backends are remote (the generic
route's `openai` provider is always api.openai.com:443 with TLS: the generic schema
has no address field and the CLI no option for one) is also served, but only after
its clusters are rewritten to plain HTTP on the simulator, so for it these tests
check the compiled routes, filter config and access log, not the upstream TLS.

An example with a login (basic auth) is driven with it; without it, or with a wrong
password, requests must stop at Envoy.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "envoy-configs"))
import sim_expectations  # noqa: E402  (envoy-configs/sim_expectations.py, as `make run` uses it)

from conftest import (  # noqa: E402
    HERE,
    MODULE,
    REPO,
    STARTUP_TIMEOUT,
    WASM,
    envoy_command,
    envoy_env,
    environment,
    free_port,
    selected_builds,
    sim_ports,
    start_envoy,
    stop,
    wait_for,
    wait_log_entry,
)

EXAMPLES_DIR = REPO / "envoy-configs" / "examples"
EXAMPLES = sorted(p.name for p in EXAMPLES_DIR.iterdir() if p.is_dir()) if EXAMPLES_DIR.is_dir() else []
CLI = Path(os.environ.get("AIGW_CLI", REPO / "target" / "release" / "aigw"))
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
TOKEN_KEYS = ("llm_input_token", "llm_output_token", "llm_total_token")


BOOTSTRAPS = {"native": "bootstrap.yaml", "wasm": "bootstrap-wasm.yaml"}


@pytest.fixture(scope="module", autouse=True)
def cli_built():
    if not CLI.exists():
        pytest.fail(f"{CLI} not found: run `make build-cli` first (or set AIGW_CLI)")


def require_build(config, build: str) -> None:
    """Skips a build not selected; fails when its artifact is missing."""
    if build not in selected_builds(config):
        pytest.skip(f"the {build} build is not selected (AIGW_BUILDS)")
    artifact = MODULE if build == "native" else WASM
    if not artifact.exists():
        pytest.fail(f"{artifact} not found: run `make build-{build}` first")


def compile_example(name: str, out: Path, access_log: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), "compile", "-o", str(out), "--listen-address", "127.0.0.1",
         "--listen-port", str(free_port()), "--admin-port", str(free_port()),
         "--access-log", str(access_log), "--wasm-path", str(WASM.resolve()), str(EXAMPLES_DIR / name)],
        capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Compiles each example once: name -> output folder."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"example-{name}")
            res = compile_example(name, out / "compiled", out / "access.log")
            assert res.returncode == 0, f"aigw compile {name} failed:\n{res.stderr}"
            cache[name] = out
        return cache[name]

    return get


def endpoints(boot: dict) -> list[dict]:
    """Every upstream socket_address of the bootstrap's clusters."""
    out = []
    for cluster in boot["static_resources"]["clusters"]:
        for locality in cluster["load_assignment"]["endpoints"]:
            for lb in locality["lb_endpoints"]:
                out.append(lb["endpoint"]["address"]["socket_address"])
    return out


def is_local(boot: dict) -> bool:
    return all(sa["address"] in LOCAL_HOSTS for sa in endpoints(boot))


def to_simulator(boot: dict, port: int) -> dict:
    """A copy of `boot` whose upstreams are the simulator on 127.0.0.1:`port`, in
    plain HTTP (TLS and DNS resolution removed for remote backends)."""
    boot = copy.deepcopy(boot)
    for cluster in boot["static_resources"]["clusters"]:
        cluster["type"] = "STATIC"
        cluster.pop("dns_lookup_family", None)
        cluster.pop("transport_socket_matches", None)
        cluster.pop("transport_socket", None)
    for sa in endpoints(boot):
        sa["address"], sa["port_value"] = "127.0.0.1", port
    return boot


# Not `build`: conftest parametrizes every test that names that fixture.
@pytest.mark.parametrize("flavor", list(BOOTSTRAPS))
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_compiles_and_validates(name: str, flavor: str, compiled, request):
    build = flavor
    require_build(request.config, build)
    out = compiled(name) / "compiled"
    assert (out / "config.json").is_file(), f"config.json not written for {name}"
    path = out / BOOTSTRAPS[build]
    if not path.is_file():
        config = json.loads((out / "config.json").read_text())
        assert build == "wasm" and credential_files(config), f"{path.name} not written for {name}"
        pytest.skip(f"{name} reads credentials from files: no wasm bootstrap")
    boot = yaml.safe_load(path.read_text())
    listener = boot["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener["address"] == "127.0.0.1"
    # The wasm build reads its credentials from the environment at load.
    env = dict(envoy_env(), **(secrets_env(out) if build == "wasm" else {}))
    res = subprocess.run(envoy_command() + ["--mode", "validate", "-c", str(path), "--log-level", "info"],
                         env=env, capture_output=True, text=True, timeout=STARTUP_TIMEOUT[build])
    assert res.returncode == 0, f"envoy rejected the {name} {build} bootstrap:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


def credential_files(config: dict) -> list[str]:
    """Credential files the config names other than those the compiler wrote
    apart (`secrets/`, which the wasm bootstrap reads from the environment)."""
    files = []
    for b in config["backends"]:
        for mech in (b.get("auth") or {}).values():
            files += [mech[k] for k in ("file", "credentialsFile") if k in mech]
    return [f for f in files if "/secrets/" not in f]


def secrets_env(compiled: Path) -> dict[str, str]:
    """The variables `make run` loads from secrets.env for the wasm build (a shell
    sources it, as run-local.sh does)."""
    path = compiled / "secrets.env"
    if not path.is_file():
        return {}
    out = subprocess.run(["bash", "-c", 'set -a; . "$1"; env -0', "_", str(path)], env={},
                         capture_output=True, check=True).stdout
    return dict(kv.split("=", 1) for kv in out.decode().split("\0") if "=" in kv and not kv.startswith("_="))


def secret_values(compiled: Path) -> list[str]:
    """Every credential the compiler wrote apart, and each key of an AWS
    credentials file on its own."""
    values = []
    for f in sorted((compiled / "secrets").glob("*")):
        text = f.read_text()
        values.append(text.strip())
        for line in text.splitlines():
            k, _, v = line.partition("=")
            if v.strip() and k.strip() in ("aws_secret_access_key", "aws_session_token"):
                values.append(v.strip())
    return [v for v in values if v]


def test_aigateway_example_is_local(compiled):
    """`make run` serves this example from the simulator on 127.0.0.1:8081."""
    boot = yaml.safe_load((compiled("aigateway") / "compiled" / "bootstrap.yaml").read_text())
    assert {(sa["address"], sa["port_value"]) for sa in endpoints(boot)} == {("127.0.0.1", 8081)}
    assert {c["type"] for c in boot["static_resources"]["clusters"]} == {"STATIC"}


class Served:
    """Simulator + Envoy on a copy of an example's bootstrap."""

    def __init__(self, url: str, sim_url: str, access_log: Path, config: dict, build: str, login: dict,
                 admin_url: str = "", compiled: Path | None = None, envoy_log: Path | None = None):
        self.url, self.sim_url, self.access_log, self.config = url, sim_url, access_log, config
        self.build, self.login = build, login
        self.admin_url, self.compiled, self.envoy_log = admin_url, compiled, envoy_log

    def log_entry(self, request_id: str, timeout: float = 10.0) -> dict:
        """The access-log line; wasm metadata is filter state, so its numbers come
        as decimal text and are turned into numbers here."""
        entry = wait_log_entry(self.access_log, request_id, timeout)
        if self.build == "wasm":
            for k, v in entry.items():
                if isinstance(v, str) and v.lstrip("-").isdigit():
                    entry[k] = int(v)
        return entry

    def upstream(self, request_id: str) -> list[dict]:
        r = requests.get(f"{self.sim_url}/_sim/requests", params={"id": request_id}, timeout=5)
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="module", params=[(n, b) for n in EXAMPLES for b in BOOTSTRAPS],
                ids=[f"{n}-{b}" for n in EXAMPLES for b in BOOTSTRAPS])
def served(request, compiled):
    name, build = request.param
    require_build(request.config, build)
    base = compiled(name)
    path = base / "compiled" / BOOTSTRAPS[build]
    if not path.is_file():
        pytest.skip(f"{name} has no {path.name} (credentials from files)")
    boot = yaml.safe_load(path.read_text())
    config = json.loads((base / "compiled" / "config.json").read_text())
    local = is_local(boot)
    work = base / f"serve-{build}"
    work.mkdir()
    ready = work / "sim-ready.json"
    sim_log = work / "simulator.log"
    # The simulator checks the example's credentials as `make run`'s does, unless a
    # backend has none (one listener serves them all here).
    unchecked = sim_expectations.unchecked(base / "compiled")
    checks = [] if unchecked else sim_expectations.expectations(base / "compiled", "sim")
    with open(sim_log, "w") as log:
        sim = subprocess.Popen([sys.executable, str(HERE / "simulator.py"), "--listen", "127.0.0.1:0=sim",
                                "--ready-file", str(ready)] + checks, stdout=log, stderr=subprocess.STDOUT)
    envoy = None
    try:
        wait_for(lambda: sim_ports(ready, ["sim"]) is not None, 15, "simulator", sim, sim_log)
        sim_port = (sim_ports(ready, ["sim"]) or {})["sim"]
        access_log = work / "access.log"

        def boot_for(listen: int, admin: int) -> dict:
            b = to_simulator(boot, sim_port)
            b["admin"]["address"]["socket_address"]["port_value"] = admin
            listener = b["static_resources"]["listeners"][0]
            listener["address"]["socket_address"]["port_value"] = listen
            hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
            for al in hcm["access_log"]:
                al["typed_config"]["path"] = str(access_log)
            return b

        # The wasm build reads the credentials from Envoy's environment (secrets.env).
        with environment(secrets_env(base / "compiled") if build == "wasm" else {}):
            envoy, listen, admin = start_envoy(boot_for, work, build)
        yield name, local, Served(f"http://127.0.0.1:{listen}", f"http://127.0.0.1:{sim_port}", access_log, config,
                                  build, login_header(name), f"http://127.0.0.1:{admin}", base / "compiled",
                                  work / "envoy.log")
        assert envoy.poll() is None, "Envoy died:\n" + (work / "envoy.log").read_text(errors="replace")[-4000:]
    finally:
        if envoy is not None:
            stop(envoy)
        stop(sim)


# Examples whose gateway asks for a login (basic auth): the user and password their
# input documents beside the htpasswd Secret.
LOGINS = {"kgateway": ("demo", "not-a-real-password")}


def login_header(name: str) -> dict[str, str]:
    if name not in LOGINS:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(":".join(LOGINS[name]).encode()).decode()}


def client(gw: "Served"):
    """An SDK client with the example's login, if it has one, in place of the API key's
    Authorization header."""
    import openai

    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test-not-a-secret", max_retries=0, timeout=30,
                         default_headers=gw.login)


def costs(config: dict, model: str) -> dict[str, dict]:
    """The llmRequestCosts that apply to `model` (top level and its route), by key."""
    out = {c["metadataKey"]: c for c in config.get("llmRequestCosts", [])}
    for route in config["routes"]:
        if model in route["models"]:
            out.update({c["metadataKey"]: c for c in route.get("llmRequestCosts", [])})
    return out


def check_tokens(gw: "Served", entry: dict, model: str, usage) -> None:
    """The access-log line carries the counts the simulator reported, under every
    token cost the example configures for `model` (an example without costs logs
    none; the aigateway example has all three plus a CEL cost)."""
    counts = {"InputToken": usage.prompt_tokens, "OutputToken": usage.completion_tokens,
              "TotalToken": usage.total_tokens}
    for key, cost in costs(gw.config, model).items():
        if cost["type"] in counts:
            assert entry[key] == counts[cost["type"]], (key, entry)
        elif cost["type"] == "CEL" and cost["cel"] == "input_tokens * 3 + output_tokens * 15":
            assert entry[key] == usage.prompt_tokens * 3 + usage.completion_tokens * 15, (key, entry)


def first_chat_model(config: dict) -> str:
    """The first model of the first route whose backend has no override."""
    overridden = {b["name"] for b in config["backends"] if b.get("modelNameOverride")}
    for route in config["routes"]:
        if not any(b["name"] in overridden for b in route["backends"]):
            return route["models"][0]
    return config["routes"][0]["models"][0]


def test_example_serves_chat(served):
    """A chat completion through Envoy on the compiled bootstrap (for a remote
    example, with its upstream replaced by the simulator: see the module doc)."""
    name, local, gw = served
    model = first_chat_model(gw.config)
    rid = str(uuid.uuid4())
    resp = client(gw).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello from the examples test"}],
        extra_headers={"x-request-id": rid})
    assert resp.choices[0].message.content, resp
    assert resp.usage is not None and resp.usage.total_tokens > 0
    entry = gw.log_entry(rid)
    assert entry["status"] == 200, entry
    assert entry["request_model"] == model, entry
    check_tokens(gw, entry, model, resp.usage)
    upstream = gw.upstream(rid)
    assert len(upstream) == 1, upstream
    assert upstream[0]["response"]["usage"]["prompt_tokens"] == resp.usage.prompt_tokens


def test_aigateway_example_limits_tokens_per_user(served):
    """`make run`'s example carries a BackendTrafficPolicy limiting chat tokens per
    `x-user-id`: compiled into a token limit per identity, it counts each user apart,
    and the access log names the user by hash, never by value."""
    name, local, gw = served
    if name != "aigateway":
        pytest.skip(f"{name} has no limits")
    assert gw.config["identity"] == {"header": "x-user-id"}, gw.config.get("identity")
    chat = [r for r in gw.config["routes"] if r["name"].startswith("default/chat/")]
    assert chat and all(r["rateLimit"] == {"tokensPerMinute": 20000, "per": "identity"} for r in chat), chat
    ids = {}
    for user in ("alice", "bob"):
        rid = str(uuid.uuid4())
        client(gw).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-request-id": rid, "x-user-id": user})
        entry = gw.log_entry(rid)
        assert entry["status"] == 200, entry
        ids[user] = entry["identity"]
        assert ids[user] == hashlib.sha256(user.encode()).hexdigest()[:32], entry
        assert user not in json.dumps(entry), entry
    assert ids["alice"] != ids["bob"]


def test_example_serves_streamed_chat(served):
    name, local, gw = served
    model = first_chat_model(gw.config)
    rid = str(uuid.uuid4())
    stream = client(gw).chat.completions.create(
        model=model, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Stream please"}], extra_headers={"x-request-id": rid})
    text, usage = "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert text and usage is not None
    check_tokens(gw, gw.log_entry(rid), model, usage)


def test_example_model_overrides(served):
    """Backends with a model override send the upstream model, log the client's."""
    name, local, gw = served
    overrides = {b["name"]: b["modelNameOverride"] for b in gw.config["backends"] if b.get("modelNameOverride")}
    routes = [r for r in gw.config["routes"] if r["backends"][0]["name"] in overrides]
    if not routes:
        pytest.skip(f"{name} has no model override")
    route = routes[0]
    want = overrides[route["backends"][0]["name"]]
    model = route["models"][0]
    rid = str(uuid.uuid4())
    resp = client(gw).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], extra_headers={"x-request-id": rid})
    assert resp.choices[0].message.content
    (up,) = gw.upstream(rid)
    assert up["body_json"]["model"] == want, up["body_json"]
    entry = gw.log_entry(rid)
    assert entry["request_model"] == model and entry["model_name_override"] == want, entry
    check_tokens(gw, entry, model, resp.usage)


def test_example_lists_models(served):
    name, local, gw = served
    got = client(gw).models.list()
    assert sorted(m.id for m in got.data) == sorted(m["id"] for m in gw.config["models"])


def test_example_sends_configured_credentials(served):
    """A backend's configured API key reaches the provider in the schema's header,
    and the client's own key does not (the examples' simulator takes any key)."""
    name, local, gw = served
    keyed = {b["name"]: Path(b["auth"]["apiKey"]["file"]).read_text().strip() for b in gw.config["backends"]
             if b["schema"]["name"] == "OpenAI" and "file" in (b.get("auth") or {}).get("apiKey", {})
             and b["auth"]["apiKey"].get("header", "authorization") == "authorization"}
    routes = [r for r in gw.config["routes"] if r["backends"] and all(b["name"] in keyed for b in r["backends"])]
    if not routes:
        pytest.skip(f"{name} configures no OpenAI API key")
    route = routes[0]
    rid = str(uuid.uuid4())
    resp = client(gw).chat.completions.create(
        model=route["models"][0], messages=[{"role": "user", "content": "Hi"}], extra_headers={"x-request-id": rid})
    assert resp.choices[0].message.content
    (up,) = gw.upstream(rid)
    auth = [v for k, v in up["headers"] if k == "authorization"]
    want = {f"Bearer {keyed[b['name']]}" for b in route["backends"]}
    assert len(auth) == 1 and auth[0] in want, auth
    assert not any("sk-test-not-a-secret" in v or v.startswith("Basic ") for _, v in up["headers"]), up["headers"]


# Examples with request validation (kgateway's celValidation, run by the filter):
# headers its Deny rule refuses, and headers its earlier Allow rule lets through anyway.
DENIED = {"kgateway": ({"x-internal-debug": "1"}, {"x-team": "platform"})}


def test_example_request_validation(served):
    """The filter's CEL rules: a request the Deny rule matches gets a 403 in OpenAI's
    error schema and reaches no provider; the Allow rule before it wins when it matches."""
    import openai

    name, local, gw = served
    if name not in DENIED:
        pytest.skip(f"{name} has no request validation")
    denied, allowed = DENIED[name]
    model = first_chat_model(gw.config)
    rid = str(uuid.uuid4())
    with pytest.raises(openai.PermissionDeniedError) as e:
        client(gw).chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                           extra_headers={"x-request-id": rid, **denied})
    assert e.value.body["code"] == "request_denied", e.value.body
    assert gw.upstream(rid) == []
    assert gw.log_entry(rid)["status"] == 403
    rid = str(uuid.uuid4())
    resp = client(gw).chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                              extra_headers={"x-request-id": rid, **denied, **allowed})
    assert resp.choices[0].message.content
    assert len(gw.upstream(rid)) == 1


def test_example_login_is_required(served):
    """A gateway with basic auth (kgateway's HTTPListenerPolicy, Envoy's basic_auth
    filter) refuses requests without the login or with a wrong password before they
    reach the filter or a provider."""
    import openai

    name, local, gw = served
    if not gw.login:
        pytest.skip(f"{name} asks for no login")
    user = LOGINS[name][0]
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{user}:wrong".encode()).decode()}
    model = first_chat_model(gw.config)
    for headers in ({}, wrong):
        rid = str(uuid.uuid4())
        c = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test-not-a-secret", max_retries=0, timeout=30,
                          default_headers=headers)
        with pytest.raises(openai.AuthenticationError):
            c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                      extra_headers={"x-request-id": rid})
        assert gw.upstream(rid) == []
        assert gw.log_entry(rid)["status"] == 401


# The simulator's family for each backend schema (what it must have seen).
SCHEMA_FAMILY = {"OpenAI": "openai", "Mistral": "openai", "AzureOpenAI": "azure-openai",
                 "AWSBedrock": "bedrock-converse", "AWSAnthropic": "bedrock-anthropic",
                 "Anthropic": "anthropic", "GCPAnthropic": "vertex-anthropic",
                 "GCPVertexAI": "vertex-gemini", "Gemini": "gemini"}


def test_example_serves_every_model_in_its_providers_api(served):
    """Every chat model an example routes answers, streamed and not, each request
    reaching the simulator in its backend's own API (Bedrock, Anthropic, ...), and a
    fallback route answers from its first healthy priority."""
    name, local, gw = served
    schemas = {b["name"]: b["schema"]["name"] for b in gw.config["backends"]}
    embedding = ("embed", "babbage", "davinci", "instruct")
    checked = 0
    for route in gw.config["routes"]:
        for model in route["models"]:
            if any(m in model for m in embedding):
                continue
            for stream in (False, True):
                rid = str(uuid.uuid4())
                kw = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
                resp = client(gw).chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "Hi there"}],
                    extra_headers={"x-request-id": rid}, **kw)
                if stream:
                    chunks = list(resp)
                    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                    usage = next((c.usage for c in chunks if c.usage), None)
                else:
                    text, usage = resp.choices[0].message.content, resp.usage
                ups = gw.upstream(rid)
                assert ups, (model, "nothing reached the simulator")
                first = sorted(route["backends"], key=lambda b: b.get("priority", 0))[0]["name"]
                assert ups[-1]["provider"] == SCHEMA_FAMILY[schemas[first]], (model, ups[-1]["provider"])
                assert ups[-1]["checks"] == [], (model, ups[-1]["checks"])
                assert text == ups[-1]["sent_text"], (model, text)
                assert usage is not None and usage.completion_tokens > 0, model
                checked += 1
    assert checked >= 2


def test_example_keeps_secrets_out_of_config_dump(served):
    """The compiled config and bootstraps name the credentials (files, or variables
    for wasm) and hold none: Envoy's admin /config_dump, with EDS too, shows no
    configured secret, and neither do the config and bootstraps on disk."""
    name, local, gw = served
    secrets = secret_values(gw.compiled)
    if not secrets:
        pytest.skip(f"{name} configures no credential")
    for path in ("/config_dump", "/config_dump?include_eds"):
        r = requests.get(gw.admin_url + path, timeout=10)
        assert r.status_code == 200, r.text[:500]
        assert "aigw" in r.text
        leaked = [s for s in secrets if s in r.text]
        assert leaked == [], f"{path} shows {len(leaked)} configured secret(s)"
    for f in ("config.json", "bootstrap.yaml", "bootstrap-wasm.yaml", "envoy-gateway.yaml"):
        p = gw.compiled / f
        if p.is_file():
            text = p.read_text()
            assert not [s for s in secrets if s in text], f
    for f in [gw.compiled / "secrets.env", *(gw.compiled / "secrets").glob("*")]:
        assert f.stat().st_mode & 0o077 == 0, f"{f} is readable by others"


# README's quickstart, and the curls `make run` prints: every one must answer 200
# on the compiled aigateway example, the simulator checking credentials and SigV4.
QUICKSTART_PORT = "1975"


def quickstart_curls() -> list[list[str]]:
    """The curl commands of README's quickstart block and of run-local.sh's banner."""
    import shlex

    commands = []
    readme = (REPO / "README.md").read_text()
    block = readme.split("Once `make run` is up:", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    banner = (REPO / "envoy-configs" / "run-local.sh").read_text().split("cat <<EOF", 1)[1].split("\nEOF", 1)[0]
    banner = banner.replace("$URL", f"http://localhost:{QUICKSTART_PORT}").replace("\\\\\n", "\\\n")
    for text in (block, banner):
        joined = text.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith("curl "):
                commands.append(shlex.split(line))
    return commands


def test_quickstart_curls_are_found():
    curls = quickstart_curls()
    assert len(curls) >= 8, curls
    assert any("bedrock-claude" in " ".join(c) for c in curls)


@pytest.mark.parametrize("flavor", list(BOOTSTRAPS))
def test_quickstart_answers_every_curl(flavor: str, compiled, request, tmp_path):
    """`make run`'s example, compiled by `aigw compile`, with the simulator checking
    every credential and signature as `make run` starts it: each curl of README's
    quickstart and of the banner answers 200, and every request the simulator got
    passed its checks (SigV4 over the Host it received, the API keys)."""
    build = flavor
    require_build(request.config, build)
    base = compiled("aigateway")
    out = base / "compiled"
    checks = sim_expectations.expectations(out, "simulator")
    assert "--aws-credentials" in checks and "--expect-api-key" in checks, checks
    boot = yaml.safe_load((out / BOOTSTRAPS[build]).read_text())
    ready, sim_log = tmp_path / "ready.json", tmp_path / "simulator.log"
    with open(sim_log, "w") as log:
        sim = subprocess.Popen([sys.executable, str(HERE / "simulator.py"), "--listen", "127.0.0.1:0=simulator",
                                "--ready-file", str(ready)] + checks, stdout=log, stderr=subprocess.STDOUT)
    envoy = None
    try:
        wait_for(lambda: sim_ports(ready, ["simulator"]) is not None, 15, "simulator", sim, sim_log)
        sim_port = (sim_ports(ready, ["simulator"]) or {})["simulator"]

        def boot_for(listen: int, admin: int) -> dict:
            b = to_simulator(boot, sim_port)
            b["admin"]["address"]["socket_address"]["port_value"] = admin
            b["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listen
            return b

        with environment(secrets_env(out) if build == "wasm" else {}):
            envoy, listen, _admin = start_envoy(boot_for, tmp_path, build)
        failures = []
        for cmd in quickstart_curls():
            cmd = [a.replace(f"localhost:{QUICKSTART_PORT}", f"127.0.0.1:{listen}") for a in cmd]
            res = subprocess.run(cmd + ["-sS", "-w", "\nHTTP %{http_code}"], capture_output=True, text=True,
                                 timeout=60)
            status = res.stdout.rsplit("HTTP ", 1)[-1].strip()
            # An error body or event (a Responses object's `"error": null` is none).
            failed = re.search(r'"error"\s*:\s*\{|^event: error', res.stdout, re.M)
            if res.returncode != 0 or status != "200" or failed:
                failures.append((" ".join(cmd), status, res.stdout[-400:], res.stderr[-400:]))
        assert failures == [], failures
        recs = requests.get(f"http://127.0.0.1:{sim_port}/_sim/requests", timeout=5).json()
        assert recs, "nothing reached the simulator"
        bad = [(r["path"], r["checks"], r["response"]["status"]) for r in recs
               if r["checks"] or r["response"]["status"] != 200]
        assert bad == [], bad
        bedrock = [r for r in recs if r["provider"] and r["provider"].startswith("bedrock")]
        assert bedrock and all(dict(r["headers"])["host"] == "bedrock-runtime.us-east-1.amazonaws.com"
                               for r in bedrock)
    finally:
        if envoy is not None:
            stop(envoy)
        stop(sim)
