"""A generic AIGatewayRoute with `strategy: shadow`, compiled by `aigw compile` and run by
Envoy: the first backend (OpenAI) answers the client, and Envoy mirrors every request
to the other (Anthropic), whose own upstream instance translates and authenticates
the copy; its answer is dropped. The simulator sees both requests (one listener, as in
test_examples: the compiled provider clusters are pointed at it in plain HTTP)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
import yaml

from conftest import HERE, WASM, environment, free_port, selected_builds, sim_ports, start_envoy, stop, wait_for
from test_examples import BOOTSTRAPS, CLI, secrets_env, to_simulator

ROUTE = """\
name: shadowed
modelAlias: shadowed
strategy: shadow
backends:
  - provider: openai
    model: gpt-4o-mini
    credentialRef: openai-key
  - provider: anthropic
    model: claude-3-5-haiku-latest
    credentialRef: anthropic-key
---
apiVersion: v1
kind: Secret
metadata: {name: openai-key, namespace: default}
stringData: {apiKey: sk-openai-primary}
---
apiVersion: v1
kind: Secret
metadata: {name: anthropic-key, namespace: default}
stringData: {apiKey: sk-ant-shadow}
"""


@pytest.fixture(scope="module")
def shadowed(request, tmp_path_factory, build):
    if build not in selected_builds(request.config):
        pytest.skip(f"the {build} build is not selected (AIGW_BUILDS)")
    work = tmp_path_factory.mktemp(f"shadow-{build}")
    (work / "input.yaml").write_text(ROUTE)
    res = subprocess.run([str(CLI), "compile", "-o", str(work / "out"), "--wasm-path", str(WASM.resolve()),
                          str(work / "input.yaml")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "mirror" in res.stderr, "the compiler warns that Envoy Gateway does not mirror"
    boot = yaml.safe_load((work / "out" / BOOTSTRAPS[build]).read_text())
    ready = work / "sim-ready.json"
    with open(work / "simulator.log", "w") as log:
        sim = subprocess.Popen([sys.executable, str(HERE / "simulator.py"), "--listen", "127.0.0.1:0=sim",
                                "--ready-file", str(ready)], stdout=log, stderr=subprocess.STDOUT)
    envoy = None
    try:
        wait_for(lambda: sim_ports(ready, ["sim"]) is not None, 15, "simulator", sim, work / "simulator.log")
        port = (sim_ports(ready, ["sim"]) or {})["sim"]

        def boot_for(listen: int, admin: int) -> dict:
            b = to_simulator(boot, port)
            b["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}}
            b["static_resources"]["listeners"][0]["address"]["socket_address"].update(
                address="127.0.0.1", port_value=listen)
            return b

        # The wasm build reads the compiled credentials from the environment.
        with environment(secrets_env(work / "out") if build == "wasm" else {}):
            envoy, listen, _ = start_envoy(boot_for, work, build)
        yield f"http://127.0.0.1:{listen}", f"http://127.0.0.1:{port}"
    finally:
        if envoy is not None:
            stop(envoy)
        stop(sim)


def test_primary_answers_and_the_shadow_gets_a_translated_copy(shadowed):
    import openai
    import requests

    url, sim_url = shadowed
    rid = str(uuid.uuid4())
    c = openai.OpenAI(base_url=url + "/v1", api_key="sk-client", max_retries=0, timeout=30)
    resp = c.chat.completions.create(model="shadowed", messages=[{"role": "user", "content": "hello"}],
                                     extra_headers={"x-request-id": rid})
    deadline = time.monotonic() + 10
    while True:
        seen = requests.get(f"{sim_url}/_sim/requests", params={"id": rid}, timeout=5).json()
        if len(seen) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    by_provider = {r["provider"]: r for r in seen}
    assert sorted(by_provider) == ["anthropic", "openai"], seen
    primary, shadow = by_provider["openai"], by_provider["anthropic"]
    # The client got the primary's answer.
    assert resp.choices[0].message.content == primary["sent_text"]
    assert primary["body_json"]["model"] == "gpt-4o-mini"
    assert [v for k, v in primary["headers"] if k.lower() == "authorization"] == ["Bearer sk-openai-primary"]
    # The copy went out in Anthropic's API, with Anthropic's key and model.
    assert shadow["path"] == "/v1/messages" and shadow["checks"] == []
    assert shadow["body_json"]["model"] == "claude-3-5-haiku-latest"
    assert [v for k, v in shadow["headers"] if k.lower() == "x-api-key"] == ["sk-ant-shadow"]
    assert not any(v.endswith("sk-client") for _, v in shadow["headers"])
