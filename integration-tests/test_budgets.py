"""Spend budgets and token limits counted in the Envoy process (embedded mode), both
builds, through a real Envoy: every answer's cost in the access log; per-identity
budgets that block (429 in the client's schema with retry-after), throttle or alert
(a header, a counter, metadata); one identity's spent budget leaving another's
alone; a burst of concurrent streams against a nearly spent budget overshooting by
at most one request's estimate; a daily budget starting over when its day ends
(the calendar's midnight put one to two minutes away with a UTC offset)."""

from __future__ import annotations

import datetime
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import running_gateway, validate_envoy_config

# 1 micro-dollar per input token and 2 per output token: costs are easy to predict.
PRICE = {"currency": "USD", "input": 1.0, "output": 2.0}
# The simulator's answers: prompt tokens = words of the prompt, 5 output tokens.
PROMPT = "one two three four"  # 4 words: an answer costs 4 + 2 * 5 = 14 micro-dollars


def backend(name: str) -> dict:
    return {"name": name, "schema": {"name": "OpenAI"}, "prices": [PRICE]}


def route(name: str, **extra) -> dict:
    return {"name": name, "models": [name], "backends": [{"name": "openai"}], **extra}


def budget(name: str, limit: float, **extra) -> dict:
    return {"name": name, "limit": limit, "currency": "USD", "period": "monthly", "per": "identity", **extra}


def midnight_soon() -> str:
    """A UTC offset whose local midnight is one to two minutes away: local time is
    23:58 now, so a gateway that takes its time to start (the wasm build on a
    loaded machine) still spends its budget before the day turns."""
    now = datetime.datetime.now(datetime.timezone.utc)
    minutes = now.hour * 60 + now.minute
    offset = (23 * 60 + 58) - minutes  # local time 23:58 now
    if offset > 14 * 60:
        offset -= 24 * 60
    if offset < -12 * 60:
        offset += 24 * 60
    sign = "+" if offset >= 0 else "-"
    return f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"


def config() -> dict:
    return {
        "version": "v1",
        "identity": {"header": "x-api-key"},
        "backends": [backend("openai")],
        "routes": [
            route("blocked", budgets=[budget("b", 0.0001)]),  # 100 micro-dollars
            route("throttled", budgets=[budget("t", 0.0001, action="throttle",
                                               throttleRequestsPerMinute=2)]),
            route("alerted", budgets=[budget("a", 0.0001, action="alert", alertAtPercent=[50, 100])]),
            route("burst", budgets=[budget("burst", 0.0005)]),
            route("tokens", rateLimit={"tokensPerMinute": 100, "per": "identity"}),
            route("costed"),
        ],
        "llmRequestCosts": [{"metadataKey": "llm_total_token", "type": "TotalToken"}],
    }


@pytest.fixture(scope="module")
def gw(workdir, build):
    cfg = config()
    with running_gateway(cfg, ["openai"], workdir / f"budgets-{build}", build) as g:
        yield g


def ask(gw, model: str, key: str, *, stream: bool = False, anthropic: bool = False, max_tokens: int = 10):
    body = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": PROMPT}]}
    path = "/anthropic/v1/messages" if anthropic else "/v1/chat/completions"
    if stream:
        body["stream"] = True
    r, rid = gw.post(path, body, headers={"x-api-key": key}, stream=stream)
    if stream:
        r._content = b"".join(r.iter_content(None))  # read it all, as a client does
    return r, rid


def test_every_answer_gets_its_cost_and_identity(gw):
    r, rid = ask(gw, "costed", "sk-client-1")
    assert r.status_code == 200, r.text
    e = gw.log_entry(rid, raw=True)
    assert float(e["llm_cost"]) == 14, e
    assert e["llm_cost_currency"] == "USD"
    ident = e["identity"]
    assert len(ident) == 32 and "sk-client" not in ident
    # The same key is the same identity; another key another.
    _, rid2 = ask(gw, "costed", "sk-client-1")
    _, rid3 = ask(gw, "costed", "sk-client-2")
    assert gw.log_entry(rid2, raw=True)["identity"] == ident
    assert gw.log_entry(rid3, raw=True)["identity"] != ident


def spend(gw, model: str, key: str, times: int) -> list[int]:
    return [ask(gw, model, key)[0].status_code for _ in range(times)]


def test_a_spent_budget_blocks_its_identity_only(gw):
    # 14 micro-dollars an answer, 100 allowed: admitted while under (0, 14, ..., 98).
    assert spend(gw, "blocked", "alice", 8) == [200] * 8
    r, rid = ask(gw, "blocked", "alice")
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["code"] == "insufficient_quota" and err["type"] == "insufficient_quota"
    assert "Budget 'b'" in err["message"] and "per month" in err["message"]
    reset = datetime.datetime.now(datetime.timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (reset + datetime.timedelta(days=32)).replace(day=1)
    assert next_month.strftime("%Y-%m-%dT00:00:00Z") in err["message"]
    retry = int(r.headers["retry-after"])
    assert abs(retry - (next_month - datetime.datetime.now(datetime.timezone.utc)).total_seconds()) < 30
    assert gw.upstream(rid) == []
    # Anthropic clients get it in their schema.
    r, _ = ask(gw, "blocked", "alice", anthropic=True)
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error", r.text
    # Bob's budget is his own.
    assert ask(gw, "blocked", "bob")[0].status_code == 200
    assert gw.counter("aigw_budget_blocked") >= 2


def test_a_spent_throttled_budget_lets_two_a_minute_through(gw):
    assert spend(gw, "throttled", "carol", 8) == [200] * 8
    statuses = spend(gw, "throttled", "carol", 4)
    # Two more this minute (unless the minute turned between them: then up to four).
    assert statuses.count(200) in (2, 3, 4) and statuses.count(429) == 4 - statuses.count(200), statuses
    if statuses.count(429):
        r, _ = ask(gw, "throttled", "carol")
        if r.status_code == 429:
            assert "throttled" in r.json()["error"]["message"]
    assert gw.counter("aigw_budget_throttled") >= 2


def test_alerts_pass_and_say_so(gw):
    seen = []
    for _ in range(10):
        r, rid = ask(gw, "alerted", "dave")
        assert r.status_code == 200, r.text
        seen.append((r.headers.get("x-aigw-budget-alert"), gw.log_entry(rid, raw=True).get("budget_alert")))
    # 14 each: 50% reached when the 5th starts (56 spent), 100% at the 9th (112).
    assert seen[:4] == [(None, "-")] * 4 or seen[:4] == [(None, None)] * 4, seen
    assert seen[4][0] == "a:50%" and seen[4][1] == "a:50%", seen
    assert seen[8][0] == "a:100%", seen
    assert gw.counter("aigw_budget_alerts") >= 6


def test_a_burst_overshoots_by_at_most_one_estimate(gw):
    # 500 allowed; spend 420 first (30 answers of 14).
    assert spend(gw, "burst", "erin", 30) == [200] * 30
    spent = 30 * 14
    # Each streamed request reserves about its prompt's bytes / 4 + 10 tokens × 2.
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: ask(gw, "burst", "erin", stream=True), range(20)))
    admitted = [rid for r, rid in results if r.status_code == 200]
    refused = [r for r, _ in results if r.status_code == 429]
    assert len(admitted) + len(refused) == 20
    assert refused, "the budget ran out during the burst"
    costs = [float(gw.log_entry(rid, raw=True)["llm_cost"]) for rid in admitted]
    estimate = max(len(json.dumps({"model": "burst", "max_tokens": 10, "stream": True,
                                   "messages": [{"role": "user", "content": PROMPT}]})) // 4 + 1 + 20, 14)
    assert spent + sum(costs) <= 500 + estimate, (spent, costs, estimate)


def test_token_limits_per_identity(gw):
    # 100 tokens a minute; each answer uses 4 + 5 (its reservation, about 30 while
    # it runs, is settled to that): the 12th is admitted at 99, then it is spent
    # (unless the minute turns meanwhile).
    statuses = [ask(gw, "tokens", "frank")[0].status_code for _ in range(20)]
    assert 200 in statuses and 429 in statuses, statuses
    r, _ = ask(gw, "tokens", "frank")
    if r.status_code == 429:
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert "tokens per minute" in r.json()["error"]["message"]
    assert ask(gw, "tokens", "grace")[0].status_code == 200


def test_a_daily_budget_starts_over_at_midnight(workdir, build):
    # A gateway of its own, started now: its calendar's midnight is one to two minutes away.
    cfg = {"version": "v1", "identity": {"header": "x-api-key"}, "backends": [backend("openai")],
           "routes": [route("daily", budgets=[budget("d", 0.00003, period="daily",
                                                      utcOffset=midnight_soon())])]}
    with running_gateway(cfg, ["openai"], workdir / f"budgets-daily-{build}", build) as g:
        # 30 micro-dollars a day: spent after 3 answers (0, 14, 28 admitted).
        assert spend(g, "daily", "heidi", 3) == [200] * 3
        r, _ = ask(g, "daily", "heidi")
        assert r.status_code == 429, r.text
        wait = int(r.headers["retry-after"])
        assert 0 < wait <= 121, wait
        time.sleep(wait + 1)
        assert ask(g, "daily", "heidi")[0].status_code == 200


# A bad budget, the quota mode it is in, and the field Envoy's refusal must name.
BAD_BUDGETS = {
    "unknown-currency": ({"currency": "XYZ"}, "embedded", "routes[0].budgets[0].currency"),
    "negative-limit": ({"limit": -5}, "embedded", "routes[0].budgets[0].limit"),
    "hourly-period": ({"period": "hourly"}, "embedded", "routes[0].budgets[0].period"),
    "named-time-zone": ({"utcOffset": "Europe/Paris"}, "embedded", "routes[0].budgets[0].utcOffset"),
    # The rate-limit service cannot express these.
    "fleet-throttle": ({"action": "throttle"}, "fleet", "routes[0].budgets[0].action"),
    "fleet-alert-threshold": ({"action": "alert", "alertAtPercent": [80]}, "fleet",
                              "routes[0].budgets[0].alertAtPercent"),
}


@pytest.mark.parametrize("name", BAD_BUDGETS)
def test_envoy_refuses_a_bad_budget_naming_its_field(tmp_path, build, name):
    change, mode, path = BAD_BUDGETS[name]
    cfg = {"version": "v1", "identity": {"header": "x-api-key"}, "quota": {"mode": mode},
           "backends": [backend("openai")], "routes": [route("r", budgets=[{**budget("b", 1), **change}])]}
    res = validate_envoy_config(json.dumps(cfg), tmp_path, build)
    out = res.stdout + res.stderr
    assert res.returncode != 0, f"Envoy accepted {name}:\n{out[-3000:]}"
    assert path in out, f"the refusal does not name {path}:\n{out[-3000:]}"
