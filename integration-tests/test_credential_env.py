"""Credentials from environment variables of the Envoy process (`apiKey.env`,
`bearerToken.env`, `awsSigV4.credentialsEnv`): read once at load by both builds (the
wasm VM gets them through `vm_config.environment_variables.host_env_keys`, which the
renderer writes from the config), sent upstream, never to the client; a variable
that is unset refuses the config at load, naming it."""

from __future__ import annotations

import json
import os

import pytest

from conftest import environment, running_gateway, validate_envoy_config

AWS = ("AKIDFROMENV00001", "secret-from-env", "session-from-env")
ENV = {
    "AIGW_TEST_ANTHROPIC_KEY": "sk-ant-from-env",
    "AIGW_TEST_AWS_CREDENTIALS": "[default]\naws_access_key_id = AKIDWRONG\naws_secret_access_key = wrong\n\n"
                                 f"[bedrock]\naws_access_key_id = {AWS[0]}\naws_secret_access_key = {AWS[1]}\n"
                                 f"aws_session_token = {AWS[2]}\n",
}
CONFIG = {
    "version": "v1",
    "backends": [
        {"name": "anthropic", "schema": {"name": "Anthropic"},
         "auth": {"apiKey": {"env": "AIGW_TEST_ANTHROPIC_KEY"}}},
        {"name": "bedrock", "schema": {"name": "AWSBedrock"}, "region": "us-west-2",
         "auth": {"awsSigV4": {"credentialsEnv": "AIGW_TEST_AWS_CREDENTIALS", "profile": "bedrock"}}},
    ],
    "routes": [
        {"name": "a", "models": ["claude-3-5-haiku"], "backends": [{"name": "anthropic"}]},
        {"name": "b", "models": ["nova-lite"], "backends": [{"name": "bedrock"}]},
    ],
}


@pytest.fixture(scope="module")
def env_gateway(workdir, build):
    sim_args = ["--expect-api-key", f"anthropic={ENV['AIGW_TEST_ANTHROPIC_KEY']}",
                "--aws-credentials", f"bedrock={':'.join(AWS)}"]
    with environment(ENV), running_gateway(CONFIG, ["anthropic", "bedrock"], workdir / f"credential-env-{build}",
                                           build, sim_args) as gw:
        yield gw


@pytest.mark.parametrize("model,listener", [("claude-3-5-haiku", "anthropic"), ("nova-lite", "bedrock")])
def test_credentials_from_the_environment_reach_the_provider(env_gateway, model, listener):
    gw = env_gateway
    r, rid = gw.post("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    (up,) = gw.upstream(rid)
    # The simulator checked the key, or the SigV4 signature made with the profile's keys.
    assert (up["listener"], up["checks"]) == (listener, [])
    assert "from-env" not in r.text


def test_an_unset_variable_refuses_the_config(tmp_path, build):
    doc = json.loads(json.dumps(CONFIG).replace("AIGW_TEST_ANTHROPIC_KEY", "AIGW_TEST_NEVER_SET"))
    os.environ.pop("AIGW_TEST_NEVER_SET", None)
    res = validate_envoy_config(json.dumps(doc), tmp_path, build)
    out = (res.stdout + res.stderr)[-3000:]
    assert res.returncode != 0, out
    assert "AIGW_TEST_NEVER_SET" in out and "not set or empty" in out, out
