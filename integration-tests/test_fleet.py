"""Fleet mode end to end, both builds: limits and budgets that hold across two Envoys.

Everything here is what a user runs. `aigw compile --quota fleet` compiles a generic
route input (a token limit per minute and a daily budget, per identity); its
`ratelimit-config.yaml` configures the rate-limit service (rls/: Envoy's RLS v3 API
over a real Redis), and two Envoy processes run the same compiled bootstrap (the
filter writes the descriptors and charges, Envoy's own rate-limit filter asks the
service). The only change made to the bootstrap is in a copy: ports, the access log,
the provider clusters pointed at the simulator in plain HTTP, and the rate-limit
cluster at the service's port.

What is checked:
- a token limit and a budget of one identity hold for the pair: requests alternate
  between the Envoys, and once the shared count is over, both refuse, 429 in the
  client's schema (OpenAI and Anthropic SDKs) with retry-after; another identity is
  not affected; every charge the service received is the answer's real count/cost;
- a provider's failed answer is charged nothing;
- the token limit lets the identity through again in the next minute;
- faults, Redis stopped or the rate-limit service stopped: the compiled default (fail
  open) lets requests through, counted by Envoy (ratelimit.failure_mode_allowed) and
  the filter (aigw_fleet_unchecked, `rl_unchecked` in the access log, a warning in
  Envoy's log); compiled with `--rate-limit-failure closed`, Envoy answers 503 in the
  client's schema; both count again once it is back.

Not checked (not achievable in fleet mode, see README): a bound on the overshoot of
concurrent requests, which all pass the request-time check before any is charged.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import requests
import yaml

from conftest import HERE, WASM, envoy_command, start_envoy, stop, wait_for, wait_log_entry, environment, sim_ports
from fleet import rate_limit_service, redis_server
from test_examples import CLI, secrets_env

import sys

sys.path.insert(0, str(HERE.parent / "envoy-configs"))
import sim_expectations  # noqa: E402

TOKENS_PER_MINUTE = 120
BUDGET_MICRO_USD = 25  # $0.000025 a day
# 45 words: 45 prompt tokens and the simulator's 5 output tokens, 50 in all; at
# gpt-4o-mini's list price (0.15 and 0.60 USD per million) 9.75 micro-dollars.
PROMPT = " ".join(f"w{i}" for i in range(45))
TOKENS_PER_ANSWER = 50

INPUT = f"""
name: tokens
modelAlias: tokens
backends:
  - provider: openai
    model: gpt-4o-mini
    credentialRef: openai-key
rateLimit:
  tokensPerMinute: {TOKENS_PER_MINUTE}
---
name: spend
modelAlias: spend
backends:
  - provider: openai
    model: gpt-4o-mini
    credentialRef: openai-key
budget:
  currency: USD
  limit: {BUDGET_MICRO_USD / 1e6:.6f}
  period: daily
  action: block
---
apiVersion: v1
kind: Secret
metadata: {{name: openai-key, namespace: default}}
stringData:
  apiKey: sk-fleet-test-provider-key
"""

BOOTSTRAPS = {"native": "bootstrap.yaml", "wasm": "bootstrap-wasm.yaml"}
RLS_CLUSTER = "aigw_rate_limit_service"


def compile_input(out: Path, *options: str) -> Path:
    src = out.parent / "input.yaml"
    src.write_text(INPUT)
    res = subprocess.run(
        [str(CLI), "compile", "-q", "-o", str(out), "--listen-address", "127.0.0.1", "--quota", "fleet",
         "--rate-limit-service", "127.0.0.1:9", "--identity-header", "x-api-key", "--limits-per", "identity",
         "--access-log", str(out / "access.log"), "--wasm-path", str(WASM.resolve()), *options, str(src)],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return out


def served_copy(boot: dict, listen: int, admin: int, sim: int, rls: int, access_log: Path) -> dict:
    """The compiled bootstrap on these ports: providers on the simulator (plain HTTP),
    the rate-limit cluster on the service."""
    boot = copy.deepcopy(boot)
    boot["admin"]["address"]["socket_address"]["port_value"] = admin
    listener = boot["static_resources"]["listeners"][0]
    listener["address"]["socket_address"]["port_value"] = listen
    for al in listener["filter_chains"][0]["filters"][0]["typed_config"]["access_log"]:
        al["typed_config"]["path"] = str(access_log)
    for cluster in boot["static_resources"]["clusters"]:
        port = rls if cluster["name"] == RLS_CLUSTER else sim
        if cluster["name"] != RLS_CLUSTER:
            cluster["type"] = "STATIC"
            cluster.pop("dns_lookup_family", None)
            cluster.pop("transport_socket", None)
            cluster.pop("transport_socket_matches", None)
        for locality in cluster["load_assignment"]["endpoints"]:
            for lb in locality["lb_endpoints"]:
                lb["endpoint"]["address"]["socket_address"].update(address="127.0.0.1", port_value=port)
    return boot


@dataclass
class Replica:
    """One Envoy of the fleet."""
    name: str
    url: str
    admin_url: str
    access_log: Path
    envoy_log: Path
    build: str
    proc: subprocess.Popen

    def openai(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="sk-unused", max_retries=0, timeout=30,
                             default_headers={"x-api-key": key})

    def ask(self, model: str, key: str, **headers) -> tuple[requests.Response, str]:
        rid = str(uuid.uuid4())
        body = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
        r = requests.post(self.url + "/v1/chat/completions", json=body, timeout=30,
                          headers={"x-request-id": rid, "x-api-key": key, **headers})
        return r, rid

    def entry(self, rid: str) -> dict:
        return wait_log_entry(self.access_log, rid)

    def stat(self, suffix: str) -> int:
        text = requests.get(f"{self.admin_url}/stats", params={"filter": suffix}, timeout=5).text
        return sum(int(v) for line in text.splitlines() for k, _, v in [line.partition(": ")]
                   if k.endswith(suffix) and v.strip().isdigit())


@dataclass
class Fleet:
    a: Replica
    b: Replica
    closed: Replica  # compiled with --rate-limit-failure closed
    rls: object
    redis: object
    sim_url: str
    token_refused_at: float = 0.0
    alice: str = ""  # the key of the identity over its token limit

    def charges(self, identity: str, kind: str) -> list[int]:
        """The non-zero charges the service received for `identity` on descriptors of
        `kind` (tokens, budget_spend)."""
        out = []
        for call in self.rls.requests():
            for d in call.get("descriptors", []):
                entries = dict(map(tuple, d["entries"]))
                if entries.get("aigw") == kind and entries.get("identity") == identity and d["hits_addend"]:
                    out.append(d["hits_addend"])
        return out

    def wait_charged(self, identity: str, kind: str, count: int) -> list[int]:
        wait_for(lambda: len(self.charges(identity, kind)) >= count, 10, f"{count} charges of {kind}")
        return self.charges(identity, kind)


@pytest.fixture(scope="module")
def fleet(build, tmp_path_factory):
    work = tmp_path_factory.mktemp(f"fleet-{build}")
    opened = compile_input(work / "open")
    closed = compile_input(work / "closed", "--rate-limit-failure", "closed")
    names = ("a", "b", "closed")
    with ExitStack() as stack:
        redis = stack.enter_context(redis_server(work))
        rls = stack.enter_context(rate_limit_service((opened / "ratelimit-config.yaml").read_text(), redis.url,
                                                     work))
        ready, sim_log = work / "sim-ready.json", work / "simulator.log"
        checks = sim_expectations.expectations(opened, "sim")
        with open(sim_log, "w") as log:
            sim = subprocess.Popen([sys.executable, str(HERE / "simulator.py"), "--listen", "127.0.0.1:0=sim",
                                    "--ready-file", str(ready)] + checks, stdout=log, stderr=subprocess.STDOUT)
        stack.callback(stop, sim)
        wait_for(lambda: sim_ports(ready, ["sim"]) is not None, 15, "simulator", sim, sim_log)
        sim_port = sim_ports(ready, ["sim"])["sim"]
        replicas = {}
        for name in names:
            compiled = closed if name == "closed" else opened
            boot = yaml.safe_load((compiled / BOOTSTRAPS[build]).read_text())
            rdir = work / f"envoy-{name}"
            rdir.mkdir()
            access_log = rdir / "access.log"
            with environment(secrets_env(compiled) if build == "wasm" else {}):
                proc, listen, admin = start_envoy(
                    lambda listen, admin: served_copy(boot, listen, admin, sim_port, rls.port, access_log),
                    rdir, build)
            stack.callback(stop, proc)
            replicas[name] = Replica(name, f"http://127.0.0.1:{listen}", f"http://127.0.0.1:{admin}", access_log,
                                     rdir / "envoy.log", build, proc)
        yield Fleet(replicas["a"], replicas["b"], replicas["closed"], rls, redis, f"http://127.0.0.1:{sim_port}")
        for r in replicas.values():
            assert r.proc.poll() is None, f"Envoy {r.name} died:\n" + \
                (work / f"envoy-{r.name}" / "envoy.log").read_text(errors="replace")[-4000:]


def identity_of(replica: Replica, rid: str) -> str:
    ident = replica.entry(rid)["rl_identity"]
    assert len(ident) == 32, ident  # the hash of the key, never the key
    return ident


def test_a_token_limit_holds_across_the_fleet(fleet):
    key = f"sk-alice-{uuid.uuid4().hex[:8]}"
    # 50 tokens an answer, 120 a minute: the shared count is 0, 50, 100 when the
    # first three arrive (each charged before the next is sent), 150 at the fourth.
    order = [fleet.a, fleet.b, fleet.a]
    # The limit counts in minutes from the epoch: start early in one, so that the
    # refusals below see the same minute as the charges.
    if time.time() % 60 > 40:
        time.sleep(60.5 - time.time() % 60)
    rids = []
    for i, replica in enumerate(order):
        r, rid = replica.ask("tokens", key)
        assert r.status_code == 200, r.text
        rids.append((replica, rid))
        identity = identity_of(replica, rid)
        charges = fleet.wait_charged(identity, "tokens", i + 1)
    assert charges == [TOKENS_PER_ANSWER] * 3, charges
    for (replica, rid) in rids:
        e = replica.entry(rid)
        assert int(e["rl_tokens"]) == TOKENS_PER_ANSWER, e
    # Over: both Envoys refuse, through the OpenAI SDK...
    for replica in (fleet.b, fleet.a):
        with pytest.raises(openai.RateLimitError) as refused:
            replica.openai(key).chat.completions.create(model="tokens",
                                                        messages=[{"role": "user", "content": PROMPT}])
        resp = refused.value.response
        assert resp.status_code == 429
        assert refused.value.code == "rate_limit_exceeded", refused.value.body
        assert 0 < int(resp.headers["retry-after"]) <= 60, resp.headers
    fleet.token_refused_at, fleet.alice = time.time(), key
    # ... and the Anthropic SDK, in its schema.
    import anthropic

    # (the Anthropic SDK sends its key as a bearer token: the identity header is set apart)
    client = anthropic.Anthropic(base_url=fleet.b.url + "/anthropic", api_key="sk-unused", max_retries=0,
                                 default_headers={"x-api-key": key})
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.create(model="tokens", max_tokens=10, messages=[{"role": "user", "content": PROMPT}])
    assert refused.value.body["error"]["type"] == "rate_limit_error", refused.value.body
    # No refused request reached the provider, none was charged.
    assert fleet.charges(identity, "tokens") == [TOKENS_PER_ANSWER] * 3
    # Another identity has its own count, on either Envoy.
    assert fleet.b.ask("tokens", f"sk-bob-{uuid.uuid4().hex[:8]}")[0].status_code == 200
    assert fleet.a.stat("ratelimit.over_limit") + fleet.b.stat("ratelimit.over_limit") >= 3


def test_a_budget_holds_across_the_fleet(fleet):
    key = f"sk-carol-{uuid.uuid4().hex[:8]}"
    replicas = [fleet.a, fleet.b]
    # Each answer costs 9.75 micro-dollars, counted as 10 (micro-units, rounded up);
    # 25 a day: admitted at 0, 10 and 20.
    for i in range(3):
        replica = replicas[i % 2]
        r, rid = replica.ask("spend", key)
        assert r.status_code == 200, r.text
        e = replica.entry(rid)
        assert e["llm_cost_currency"] == "USD" and int(e["llm_cost"]) == int(e["rl_cost"]) == 10, e
        charges = fleet.wait_charged(identity_of(replica, rid), "budget_spend", i + 1)
    assert charges == [10, 10, 10], charges
    for replica in (fleet.b, fleet.a):
        r, rid = replica.ask("spend", key)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(r.headers["retry-after"]) > 0
        assert fleet_upstream(fleet, rid) == []
    assert fleet.b.ask("spend", f"sk-dave-{uuid.uuid4().hex[:8]}")[0].status_code == 200


def fleet_upstream(fleet: Fleet, rid: str) -> list[dict]:
    r = requests.get(f"{fleet.sim_url}/_sim/requests", params={"id": rid}, timeout=5)
    r.raise_for_status()
    return r.json()


def test_a_failed_answer_is_charged_nothing(fleet):
    key = f"sk-erin-{uuid.uuid4().hex[:8]}"
    r, rid = fleet.a.ask("tokens", key, **{"x-sim-status": "500"})
    assert r.status_code == 500, r.text
    identity = identity_of(fleet.a, rid)
    e = fleet.a.entry(rid)
    assert int(e["rl_tokens"]) == 0 and int(e["rl_cost"]) == 0, e
    r, rid = fleet.b.ask("tokens", key)
    assert r.status_code == 200
    assert fleet.wait_charged(identity, "tokens", 1) == [TOKENS_PER_ANSWER]


def unchecked_lines(replica: Replica) -> int:
    return replica.envoy_log.read_text(errors="replace").count("has no verdict of the rate-limit service")


@pytest.mark.parametrize("fault", ["redis", "service"])
def test_faults_fail_open_by_default_and_closed_when_compiled_so(fleet, fault):
    """Redis stopped (the service answers UNAVAILABLE), or the service itself stopped
    (Envoy cannot connect): the same for Envoy."""
    key = f"sk-frank-{uuid.uuid4().hex[:8]}"
    down = fleet.redis if fault == "redis" else fleet.rls
    allowed_before = fleet.a.stat("ratelimit.failure_mode_allowed")
    unchecked_before = fleet.a.stat("aigw_fleet_unchecked")
    down.stop()
    try:
        # The default: the failed call lets the request through, counted by Envoy and
        # by the filter, flagged in the access log, and logged.
        for replica in (fleet.a, fleet.b):
            r, rid = replica.ask("tokens", key)
            assert r.status_code == 200, r.text
            assert replica.entry(rid).get("rl_unchecked") == "true"
        assert fleet.a.stat("ratelimit.failure_mode_allowed") > allowed_before
        assert fleet.a.stat("aigw_fleet_unchecked") > unchecked_before
        wait_for(lambda: unchecked_lines(fleet.a) > 0, 5, "the filter's warning in Envoy's log")
        if fault == "redis":
            assert any(c.get("error", "").startswith("UNAVAILABLE") for c in fleet.rls.requests())
        # --rate-limit-failure closed: 503 in the client's schema, nothing sent on.
        r, rid = fleet.closed.ask("tokens", key)
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "rate_limit_service_unavailable" and err["type"] == "server_error", err
        assert fleet_upstream(fleet, rid) == []
        import anthropic

        client = anthropic.Anthropic(base_url=fleet.closed.url + "/anthropic", api_key="sk-unused", max_retries=0,
                                     default_headers={"x-api-key": key})
        with pytest.raises(anthropic.APIStatusError) as refused:
            client.messages.create(model="tokens", max_tokens=10, messages=[{"role": "user", "content": PROMPT}])
        assert refused.value.status_code == 503 and refused.value.body["type"] == "error", refused.value.body
    finally:
        down.start()
    # Back: both modes ask and count again (Redis restarts empty).
    for replica in (fleet.closed, fleet.a):
        r, rid = replica.ask("tokens", key)
        assert r.status_code == 200, r.text
        assert replica.entry(rid).get("rl_unchecked") is None
    identity = identity_of(fleet.a, rid)
    wait_for(lambda: fleet.charges(identity, "tokens")[-2:] == [TOKENS_PER_ANSWER] * 2, 10, "the charges counted")


def test_the_token_limit_starts_over_the_next_minute(fleet):
    """Runs last: waits for the minute after the refusals of the first test."""
    if not fleet.token_refused_at:
        pytest.skip("the token limit was not reached (see test_a_token_limit_holds_across_the_fleet)")
    next_minute = (int(fleet.token_refused_at) // 60 + 1) * 60
    time.sleep(max(0.0, next_minute - time.time()) + 0.5)
    key_of_alice = fleet.alice
    for replica in (fleet.a, fleet.b):
        r, _ = replica.ask("tokens", key_of_alice)
        assert r.status_code == 200, r.text
