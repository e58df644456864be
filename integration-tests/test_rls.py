"""The fleet-mode rate-limit service (rls/) against a real Redis, alone through a Python
gRPC client, then behind a plain Envoy 1.40 (no filter of ours) whose
envoy.filters.http.ratelimit calls it.

What Envoy 1.40 was seen to do (asserted in the Envoy tests below):
- `RateLimitPerRoute.rate_limits` (typed_per_filter_config) sends each descriptor's
  `hits_addend`: `number: 0` arrives as a set hits_addend of 0 (a check that counts
  nothing), `format: "%DYNAMIC_METADATA(ns:key)%"` as the metadata's value, read when
  the rate limit is applied (`apply_on_stream_done: true`: after the response, so
  metadata written from response headers counts). The request's own hits_addend is 0.
- The route's own `rate_limits` (RouteAction.rate_limits) accepts `hits_addend` but does
  not send it: the descriptor arrives without hits_addend (cost 1 here, as in
  envoyproxy/ratelimit). `apply_on_stream_done` is honoured there too.
- A request refused at request time has no stream-done call when its hits_addend format
  has no value (Envoy logs "Invalid hits_addend" and skips the descriptor).
- Redis down: the service answers UNAVAILABLE and Envoy, with failure_mode_deny, 500.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
import requests

from conftest import envoy_command, free_port, stop, wait_for
from fleet import rate_limit_service, redis_server
from rls import protos
from rls.config import Config, ConfigError, Limit
from rls.counters import WINDOWS, identifiers, window_item

pb = protos.load()
Response = pb.rls.RateLimitResponse
OK, OVER = Response.OK, Response.OVER_LIMIT

SERVICE_CONFIG = """
domain: svc
descriptors:
  - key: tenant
    rate_limit: {unit: hour, requests_per_unit: 10}
  - key: tenant
    value: vip
    rate_limit: {unit: hour, requests_per_unit: 1000}
  - key: tenant
    value: blocked
    rate_limit: {unit: hour, requests_per_unit: 0}
  - key: route
    value: chat-*
    rate_limit: {unit: hour, requests_per_unit: 5}
  - key: route
    rate_limit: {unit: hour, requests_per_unit: 50}
  - key: shadow
    rate_limit: {unit: hour, requests_per_unit: 2}
    shadow_mode: true
  - key: fast
    rate_limit: {unit: second, requests_per_unit: 2}
  - key: open
    rate_limit: {unlimited: true}
  - key: budget
    descriptors:
      - key: period
        rate_limit: {unit: month, requests_per_unit: 100}
---
domain: other
descriptors:
  - key: tenant
    rate_limit: {unit: hour, requests_per_unit: 1}
"""


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def descriptor(*entries: tuple[str, str], hits: int | None = None):
    d = pb.common.RateLimitDescriptor(entries=[{"key": k, "value": v} for k, v in entries])
    if hits is not None:
        d.hits_addend.value = hits
    return d


def ask(stub, *descriptors, domain: str = "svc", hits: int = 0):
    return stub.ShouldRateLimit(pb.rls.RateLimitRequest(domain=domain, descriptors=descriptors, hits_addend=hits),
                                timeout=5)


def counter_value(redis, domain: str, entries: list[tuple[str, str]], limit: Limit) -> int:
    """The Redis counter behind a descriptor, read directly (limits' key layout)."""
    return int(redis.client().get(f"LIMITS:{window_item(limit).key_for(*identifiers(domain, entries))}") or 0)


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def rls(redis, tmp_path_factory):
    with rate_limit_service(SERVICE_CONFIG, redis.url, tmp_path_factory.mktemp("rls")) as service:
        yield service


@pytest.fixture(scope="module")
def stub(rls):
    with grpc.insecure_channel(rls.address) as channel:
        yield pb.grpc.RateLimitServiceStub(channel)


# ---- the service alone -------------------------------------------------------------

def test_counts_each_request_until_over_limit(stub):
    tenant = uid()
    for expected_remaining in range(9, -1, -1):
        r = ask(stub, descriptor(("tenant", tenant)))
        assert r.overall_code == OK
        assert r.statuses[0].limit_remaining == expected_remaining
    r = ask(stub, descriptor(("tenant", tenant)))
    assert r.overall_code == OVER
    status = r.statuses[0]
    assert (status.code, status.limit_remaining) == (OVER, 0)
    assert (status.current_limit.requests_per_unit, status.current_limit.unit) == (10, Response.RateLimit.HOUR)
    assert 0 < status.duration_until_reset.seconds <= 3600


def test_cost_is_the_request_hits_addend_else_one(stub):
    tenant = uid()
    assert ask(stub, descriptor(("tenant", tenant)), hits=4).statuses[0].limit_remaining == 6
    assert ask(stub, descriptor(("tenant", tenant))).statuses[0].limit_remaining == 5


def test_zero_hits_addend_checks_without_counting(stub, redis):
    tenant = uid()
    for _ in range(3):  # the descriptor's 0 wins over the request's 5
        r = ask(stub, descriptor(("tenant", tenant), hits=0), hits=5)
        assert (r.overall_code, r.statuses[0].limit_remaining) == (OK, 10)
    assert counter_value(redis, "svc", [("tenant", tenant)], Limit(10, "hour")) == 0
    ask(stub, descriptor(("tenant", tenant), hits=10))
    # At the limit is not over it (envoyproxy/ratelimit: over when counter > limit).
    r = ask(stub, descriptor(("tenant", tenant), hits=0))
    assert (r.overall_code, r.statuses[0].limit_remaining) == (OK, 0)
    ask(stub, descriptor(("tenant", tenant), hits=1))
    assert ask(stub, descriptor(("tenant", tenant), hits=0)).overall_code == OVER
    assert counter_value(redis, "svc", [("tenant", tenant)], Limit(10, "hour")) == 11


def test_each_descriptor_has_its_own_hits_addend(stub):
    a, b, c = uid(), uid(), uid()
    r = ask(stub, descriptor(("tenant", a), hits=3), descriptor(("tenant", b)), descriptor(("tenant", c), hits=0),
            hits=2)
    assert [s.limit_remaining for s in r.statuses] == [7, 8, 10]


def test_a_charge_crossing_the_limit_is_recorded_in_full(stub, redis):
    tenant = uid()
    assert ask(stub, descriptor(("tenant", tenant), hits=8)).overall_code == OK
    r = ask(stub, descriptor(("tenant", tenant), hits=5))  # 13 of 10: over, and all 5 counted
    assert (r.overall_code, r.statuses[0].limit_remaining) == (OVER, 0)
    assert counter_value(redis, "svc", [("tenant", tenant)], Limit(10, "hour")) == 13
    assert ask(stub, descriptor(("tenant", tenant), hits=0)).overall_code == OVER


def test_shadow_mode_counts_and_logs_but_answers_ok(stub, rls, redis):
    key = uid("s")
    for _ in range(4):
        r = ask(stub, descriptor(("shadow", key)))
        assert r.overall_code == OK and r.statuses[0].code == OK
    assert r.statuses[0].limit_remaining == 0
    assert counter_value(redis, "svc", [("shadow", key)], Limit(2, "hour")) == 4
    wait_for(lambda: f"shadow mode: svc [('shadow', '{key}')]" in rls.log.read_text(), 5, "shadow-mode log line")


def test_specific_value_before_wildcard_before_key_only(stub):
    def limit_of(key, value):
        status = ask(stub, descriptor((key, value), hits=0)).statuses[0]
        return status.current_limit.requests_per_unit

    assert limit_of("tenant", "vip") == 1000
    assert limit_of("tenant", uid()) == 10
    assert limit_of("route", "chat-completions") == 5
    assert limit_of("route", "embeddings") == 50
    # requests_per_unit 0 refuses every counted request
    assert ask(stub, descriptor(("tenant", "blocked"))).overall_code == OVER


def test_key_only_rule_counts_each_value_apart(stub):
    a, b = uid(), uid()
    ask(stub, descriptor(("tenant", a), hits=10))
    assert ask(stub, descriptor(("tenant", a))).overall_code == OVER
    assert ask(stub, descriptor(("tenant", b))).overall_code == OK


def test_nested_rule_matches_only_at_its_depth(stub):
    budget, period = uid("b"), "2026-12"
    r = ask(stub, descriptor(("budget", budget), ("period", period), hits=30))
    status = r.statuses[0]
    assert (status.limit_remaining, status.current_limit.unit) == (70, Response.RateLimit.MONTH)
    # A month window outlives any calendar month.
    assert 30 * 86400 < status.duration_until_reset.seconds <= 31 * 86400
    # Another period is another counter.
    assert ask(stub, descriptor(("budget", budget), ("period", "2027-01"), hits=0)).statuses[0].limit_remaining == 100
    # Fewer or more entries than the rule's depth: no limit, nothing counted.
    for d in (descriptor(("budget", budget)), descriptor(("budget", budget), ("period", period), ("x", "y"))):
        status = ask(stub, d).statuses[0]
        assert status.code == OK and not status.HasField("current_limit")


def test_unmatched_unknown_domain_and_unlimited_are_ok(stub):
    for r in (ask(stub, descriptor(("nothing", "here"))), ask(stub, descriptor(("tenant", "x")), domain="nope")):
        assert r.overall_code == OK and not r.statuses[0].HasField("current_limit")
    r = ask(stub, descriptor(("open", "x"), hits=10**6))
    assert (r.overall_code, r.statuses[0].limit_remaining) == (OK, 2**32 - 1)


def test_domains_have_separate_rules_and_counters(stub):
    tenant = uid()
    assert ask(stub, descriptor(("tenant", tenant)), domain="other").statuses[0].limit_remaining == 0
    assert ask(stub, descriptor(("tenant", tenant)), domain="other").overall_code == OVER
    assert ask(stub, descriptor(("tenant", tenant))).statuses[0].limit_remaining == 9


def test_overall_code_is_over_when_any_descriptor_is(stub):
    ok, over, shadow = uid(), uid(), uid("s")
    ask(stub, descriptor(("tenant", over), hits=11))
    ask(stub, descriptor(("shadow", shadow), hits=3))
    r = ask(stub, descriptor(("tenant", ok)), descriptor(("tenant", over), hits=0))
    assert r.overall_code == OVER and [s.code for s in r.statuses] == [OK, OVER]
    r = ask(stub, descriptor(("tenant", ok)), descriptor(("shadow", shadow), hits=0))
    assert r.overall_code == OK and [s.code for s in r.statuses] == [OK, OK]


def test_window_resets(stub):
    key = uid("f")
    assert [ask(stub, descriptor(("fast", key))).overall_code for _ in range(3)] == [OK, OK, OVER]
    wait_for(lambda: ask(stub, descriptor(("fast", key), hits=0)).overall_code == OK, 4, "a new 1-second window")
    assert ask(stub, descriptor(("fast", key))).statuses[0].limit_remaining == 1


def test_invalid_requests(stub):
    with pytest.raises(grpc.RpcError) as e:
        ask(stub, descriptor(("tenant", "a")), domain="")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        ask(stub)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_redis_down_is_unavailable_and_recovers(tmp_path):
    with redis_server(tmp_path) as redis, rate_limit_service(SERVICE_CONFIG, redis.url, tmp_path) as rls, \
            grpc.insecure_channel(rls.address) as channel:
        stub = pb.grpc.RateLimitServiceStub(channel)
        assert ask(stub, descriptor(("tenant", "a"))).overall_code == OK
        redis.stop()
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as e:
                ask(stub, descriptor(("tenant", "a")))
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 3
        redis.start()  # same port, empty: the counters start again
        r = ask(stub, descriptor(("tenant", "a")))
        assert (r.overall_code, r.statuses[0].limit_remaining) == (OK, 9)


# ---- configuration ---------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("domain: d\ndescriptors: [{key: k, rate_limit: {unit: fortnight, requests_per_unit: 1}}]",
     "invalid rate limit unit"),
    ("domain: d\ndescriptors: [{key: k, rate_limit: {unit: hour}}]", "requests_per_unit"),
    ("domain: d\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: 1, replaces: [{name: x}]}}]",
     "not supported"),
    ("domain: d\ndescriptors: [{key: k, value: v, share_threshold: true}]", "not supported"),
    ("domain: d\ndescriptors: [{key: k}, {key: k}]", "duplicate descriptor"),
    ("domain: d\ndescriptors: [{key: k, rate_limit: {unlimited: true, unit: hour}}]", "unlimited"),
    ("domain: d\ndescriptors: [{key: k, limit: 3}]", "unknown key"),
    ("domain: d\n---\ndomain: d\n", "duplicate domain"),
])
def test_config_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_yaml(text)


def test_config_units_and_metric_keys():
    config = Config.from_yaml("""
domain: d
descriptors:
  - key: k
    detailed_metric: true
    rate_limit: {unit: WEEK, requests_per_unit: 7, name: weekly}
""")
    assert config.limit_for("d", [("k", "x")]) == Limit(7, "week", name="weekly")
    for unit, seconds in [("week", 7 * 86400), ("month", 31 * 86400), ("year", 366 * 86400)]:
        assert window_item(Limit(1, unit)).get_expiry() == seconds
    assert set(WINDOWS) == {"second", "minute", "hour", "day", "week", "month", "year"}


def test_bad_config_stops_the_service(redis, tmp_path):
    with pytest.raises(RuntimeError, match="invalid rate limit unit"):
        with rate_limit_service("domain: d\ndescriptors: [{key: k, rate_limit: {unit: eon, requests_per_unit: 1}}]",
                                redis.url, tmp_path):
            pass


# ---- behind a real Envoy -----------------------------------------------------------

ENVOY_CONFIG = """
domain: aigw-test
descriptors:
  - key: tenant
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: policy
    descriptors:
      - key: tenant
        rate_limit: {unit: hour, requests_per_unit: 100}
"""
UPSTREAM_DELAY = 0.4  # seconds: tells request-time calls from stream-done ones


class Upstream(BaseHTTPRequestHandler):
    """200 with `x-usage: <x-test-usage>` after UPSTREAM_DELAY; records arrival times."""
    arrivals: list[tuple[str, float]] = []

    def do_GET(self):
        Upstream.arrivals.append((self.headers.get("x-request-id", ""), time.time()))
        time.sleep(UPSTREAM_DELAY)
        self.send_response(200)
        if self.headers.get("x-test-usage"):
            self.send_header("x-usage", self.headers["x-test-usage"])
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def tenant_action() -> dict:
    return {"metadata": {"descriptor_key": "tenant", "metadata_key": {"key": "aigw", "path": [{"key": "tenant"}]}}}


def policy_action(name: str) -> dict:
    return {"generic_key": {"descriptor_key": "policy", "descriptor_value": name}}


CHARGE = {"format": "%DYNAMIC_METADATA(aigw:usage)%"}


def cluster(name: str, port: int, http2: bool = False) -> dict:
    c = {"name": name, "type": "STATIC", "connect_timeout": "1s",
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
             {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}
    if http2:
        c["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    return c


def envoy_bootstrap(listen: int, admin: int, upstream: int, rls: int) -> dict:
    """header_to_metadata (request `x-tenant` -> aigw.tenant, response `x-usage` ->
    aigw.usage), envoy.filters.http.ratelimit (failure_mode_deny), router. /per-route:
    RateLimitPerRoute.rate_limits, a zero-charge check and a stream-done charge of
    aigw.usage; /route-level: the same two in the route's own rate_limits."""
    check = {"actions": [tenant_action()], "hits_addend": {"number": 0}}
    charge = {"actions": [tenant_action()], "hits_addend": CHARGE, "apply_on_stream_done": True}
    routes = [
        {"match": {"prefix": "/per-route"}, "route": {"cluster": "upstream"},
         "typed_per_filter_config": {"envoy.filters.http.ratelimit": {
             "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
             "rate_limits": [check, charge]}}},
        {"match": {"prefix": "/route-level"}, "route": {"cluster": "upstream", "rate_limits": [
            {"actions": [policy_action("route-check"), tenant_action()], "hits_addend": {"number": 0}},
            {"actions": [policy_action("route-charge"), tenant_action()], "hits_addend": CHARGE,
             "apply_on_stream_done": True}]}},
    ]
    http_filters = [
        {"name": "envoy.filters.http.header_to_metadata", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config",
            "request_rules": [{"header": "x-tenant", "on_header_present": {
                "metadata_namespace": "aigw", "key": "tenant", "type": "STRING"}}],
            "response_rules": [{"header": "x-usage", "on_header_present": {
                "metadata_namespace": "aigw", "key": "usage", "type": "STRING"}}]}},
        {"name": "envoy.filters.http.ratelimit", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": "aigw-test", "failure_mode_deny": True, "timeout": "2s",
            "rate_limit_service": {"grpc_service": {"envoy_grpc": {"cluster_name": "rls"}},
                                   "transport_api_version": "V3"}}},
        {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
    ]
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                    ".HttpConnectionManager",
           "stat_prefix": "fleet", "http_filters": http_filters, "preserve_external_request_id": True,
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]}}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "fleet",
                           "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": hcm}]}]}],
            "clusters": [cluster("upstream", upstream), cluster("rls", rls, http2=True)],
        },
    }


class FleetEnvoy:
    def __init__(self, base: str, redis, rls):
        self.base, self.redis, self.rls = base, redis, rls

    def get(self, path: str, tenant: str, usage: str | None = None) -> tuple[requests.Response, str]:
        rid = uuid.uuid4().hex
        headers = {"x-tenant": tenant, "x-request-id": rid}
        if usage is not None:
            headers["x-test-usage"] = usage
        return requests.get(self.base + path, headers=headers, timeout=10), rid

    def calls(self, tenant: str, count: int, timeout: float = 5.0) -> list[dict]:
        """The RLS calls for `tenant`, once there are `count` (stream-done calls come after
        the response)."""
        def mine():
            return [c for c in self.rls.requests()
                    if any(["tenant", tenant] in d["entries"] for d in c["descriptors"])]
        wait_for(lambda: len(mine()) >= count, timeout, f"{count} RLS calls for {tenant}")
        time.sleep(0.2)  # and no more
        return mine()

    def counter(self, *entries: tuple[str, str]) -> int:
        """Read from Redis: asking the service would add calls to its request log."""
        return counter_value(self.redis, "aigw-test", list(entries), Limit(100, "hour"))


def start_envoy(workdir: Path, bootstrap_for) -> tuple[subprocess.Popen, int]:
    """Plain Envoy on free ports (`bootstrap_for(listen, admin)`); a start that lost a
    port to another process is retried on new ones. Returns the process and its port."""
    log = workdir / "envoy.log"
    for attempt in range(3):
        listen, admin = free_port(), free_port()
        boot = workdir / "envoy.json"
        boot.write_text(json.dumps(bootstrap_for(listen, admin), indent=1))
        with open(log, "w") as out:
            envoy = subprocess.Popen(envoy_command() + ["-c", str(boot), "--use-dynamic-base-id", "--concurrency", "1",
                                                        "--log-level", "info"],
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: requests.get(f"http://127.0.0.1:{admin}/ready", timeout=1).text.strip() == "LIVE",
                     60, "envoy", envoy, log)
            return envoy, listen
        except RuntimeError:
            stop(envoy)
            if attempt == 2 or "already in use" not in log.read_text(errors="replace"):
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def fleet_envoy(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fleet-envoy")
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        with redis_server(workdir) as redis, rate_limit_service(ENVOY_CONFIG, redis.url, workdir) as rls:
            envoy, listen = start_envoy(workdir, lambda listen, admin: envoy_bootstrap(
                listen, admin, upstream.server_address[1], rls.port))
            try:
                yield FleetEnvoy(f"http://127.0.0.1:{listen}", redis, rls)
            finally:
                stop(envoy)
    finally:
        upstream.shutdown()


def test_envoy_checks_at_request_time_and_charges_at_stream_done(fleet_envoy):
    env, tenant = fleet_envoy, uid()
    for usage, total in [("60", 60), ("60", 120)]:  # the second charge crosses 100: all 60 recorded
        resp, rid = env.get("/per-route", tenant, usage)
        assert resp.status_code == 200 and resp.headers["x-usage"] == usage
        wait_for(lambda: env.counter(("tenant", tenant)) == total, 5, f"a counter of {total} after the charge")
    calls = env.calls(tenant, 4)
    assert [[d["hits_addend"] for d in c["descriptors"]] for c in calls] == [[0], [60], [0], [60]]
    assert all(c["hits_addend"] == 0 for c in calls)  # the request-level field is not used
    assert [c["overall_code"] for c in calls] == ["OK", "OK", "OK", "OVER_LIMIT"]
    assert env.counter(("tenant", tenant)) == 120

    # The zero-charge check now refuses; the refused request has no usage, so no charge.
    resp, rid = env.get("/per-route", tenant, "60")
    assert resp.status_code == 429 and resp.headers.get("x-envoy-ratelimited") == "true"
    calls = env.calls(tenant, 5)
    assert len(calls) == 5 and calls[-1]["descriptors"][0]["hits_addend"] == 0
    assert calls[-1]["overall_code"] == "OVER_LIMIT"
    assert env.counter(("tenant", tenant)) == 120
    # Another tenant is not affected.
    assert env.get("/per-route", uid(), "1")[0].status_code == 200


def test_envoy_stream_done_charge_comes_after_the_response(fleet_envoy):
    env, tenant = fleet_envoy, uid()
    resp, rid = env.get("/per-route", tenant, "7")
    assert resp.status_code == 200
    check, charge = env.calls(tenant, 2)
    arrived = dict(Upstream.arrivals)[rid]
    assert check["time"] < arrived  # the check gates the request
    assert charge["time"] >= arrived + UPSTREAM_DELAY  # the charge follows the response
    assert charge["descriptors"][0]["hits_addend"] == 7
    assert env.counter(("tenant", tenant)) == 7


def test_envoy_route_level_rate_limits_do_not_send_hits_addend(fleet_envoy):
    env, tenant = fleet_envoy, uid()
    resp, rid = env.get("/route-level", tenant, "25")
    assert resp.status_code == 200
    check, charge = env.calls(tenant, 2)
    assert check["descriptors"][0]["entries"] == [["policy", "route-check"], ["tenant", tenant]]
    assert charge["descriptors"][0]["entries"] == [["policy", "route-charge"], ["tenant", tenant]]
    # hits_addend {number: 0} and {format: ...} are both dropped: no per-descriptor
    # hits_addend, so each call costs 1 (the check counts too, the usage is lost).
    assert check["descriptors"][0]["hits_addend"] is None
    assert charge["descriptors"][0]["hits_addend"] is None
    assert env.counter(("policy", "route-check"), ("tenant", tenant)) == 1
    assert env.counter(("policy", "route-charge"), ("tenant", tenant)) == 1
    # apply_on_stream_done is honoured at route level: the charge follows the response.
    assert charge["time"] >= dict(Upstream.arrivals)[rid] + UPSTREAM_DELAY


def test_envoy_failure_mode_deny_when_redis_is_down(fleet_envoy):
    env = fleet_envoy
    env.redis.stop()
    try:
        resp, _ = env.get("/per-route", uid(), "1")
        assert resp.status_code == 500  # failure_mode_deny: the RLS call failed (UNAVAILABLE)
        assert any(c.get("error", "").startswith("UNAVAILABLE") for c in env.rls.requests())
    finally:
        env.redis.start()
    assert env.get("/per-route", uid(), "1")[0].status_code == 200
