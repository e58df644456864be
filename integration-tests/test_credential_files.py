"""Credentials read from files (a rotated GCP or Azure token, an API key or an AWS
credentials file mounted from a Kubernetes Secret): the native module reads them at
load and again when they change; the wasm build has no file system and refuses them."""

from __future__ import annotations

import json
import time

import pytest
import requests

from conftest import running_gateway, validate_envoy_config

AWS = ("AKIDFROMFILE0001", "secret-from-file", "session-from-file")


def file_config(d) -> dict:
    return {
        "version": "v1",
        "backends": [
            {"name": "vertex", "schema": {"name": "GCPVertexAI"}, "project": "p", "region": "us-central1",
             "auth": {"bearerToken": {"file": str(d / "gcp-token")}}},
            {"name": "anthropic", "schema": {"name": "Anthropic"},
             "auth": {"apiKey": {"file": str(d / "anthropic-key")}}},
            {"name": "bedrock", "schema": {"name": "AWSBedrock"}, "region": "eu-west-1",
             "auth": {"awsSigV4": {"credentialsFile": str(d / "aws-credentials"), "profile": "prod"}}},
        ],
        "routes": [
            {"name": "v", "models": ["gemini-2.0-flash"], "backends": [{"name": "vertex"}]},
            {"name": "a", "models": ["claude-3-5-haiku"], "backends": [{"name": "anthropic"}]},
            {"name": "b", "models": ["nova-lite"], "backends": [{"name": "bedrock"}]},
        ],
    }


@pytest.fixture(scope="module")
def files_gateway(workdir, build):
    if build != "native":
        pytest.skip("credential files are read by the native build only (see test_wasm_refuses_credential_files)")
    d = workdir / "credential-files"
    d.mkdir(exist_ok=True)
    (d / "gcp-token").write_text("ya29.first\n")
    (d / "anthropic-key").write_text("sk-ant-from-file")
    (d / "aws-credentials").write_text(
        "[default]\naws_access_key_id = AKIDWRONG\naws_secret_access_key = wrong\n\n"
        f"[prod]\naws_access_key_id = {AWS[0]}\naws_secret_access_key = {AWS[1]}\n"
        f"aws_session_token = {AWS[2]}\n")
    sim_args = ["--expect-bearer", "vertex=ya29.first", "--expect-bearer", "vertex=ya29.second",
                "--expect-api-key", "anthropic=sk-ant-from-file", "--aws-credentials", f"bedrock={':'.join(AWS)}"]
    with running_gateway(file_config(d), ["vertex", "anthropic", "bedrock"], d / "run", build, sim_args) as gw:
        gw.files = d
        yield gw


def chat(gw, model: str) -> tuple[requests.Response, str]:
    return gw.post("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]})


def test_files_are_read_at_load(files_gateway):
    gw = files_gateway
    for model, header, value in [("gemini-2.0-flash", "authorization", "Bearer ya29.first"),
                                 ("claude-3-5-haiku", "x-api-key", "sk-ant-from-file")]:
        r, rid = chat(gw, model)
        assert r.status_code == 200, r.text
        rec = gw.one_upstream(rid)
        assert rec["checks"] == []
        assert dict(rec["headers"])[header] == value


def test_aws_credentials_file_profile_signs(files_gateway):
    r, rid = chat(files_gateway, "nova-lite")
    assert r.status_code == 200, r.text
    rec = files_gateway.one_upstream(rid)
    assert rec["checks"] == []  # the simulator recomputed the signature with botocore
    headers = dict(rec["headers"])
    assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AWS[0]}/")
    assert headers["x-amz-security-token"] == AWS[2]


def test_a_rotated_token_is_picked_up(files_gateway):
    gw = files_gateway
    (gw.files / "gcp-token").write_text("ya29.second\n")
    deadline = time.monotonic() + 10
    seen = None
    while time.monotonic() < deadline:
        r, rid = chat(gw, "gemini-2.0-flash")
        assert r.status_code == 200, r.text
        seen = dict(gw.one_upstream(rid)["headers"])["authorization"]
        if seen == "Bearer ya29.second":
            break
        time.sleep(0.2)
    assert seen == "Bearer ya29.second"


def test_a_missing_file_is_a_clear_error_without_secrets(files_gateway):
    gw = files_gateway
    key_file = gw.files / "anthropic-key"
    key_file.unlink()
    try:
        deadline = time.monotonic() + 10
        while True:
            r, rid = chat(gw, "claude-3-5-haiku")
            if r.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert "could not be read" in err["message"]
        assert "sk-ant-from-file" not in r.text
        assert gw.upstream(rid) == []
        assert "sk-ant-from-file" not in gw.envoy_log.read_text(errors="replace")
    finally:
        key_file.write_text("sk-ant-from-file")


def test_wasm_refuses_credential_files(workdir, build):
    if build != "wasm":
        pytest.skip("checks the wasm build; the native build reads credential files (tests above)")
    d = workdir / "wasm-files"
    d.mkdir(exist_ok=True)
    res = validate_envoy_config(json.dumps(file_config(d)), d, "wasm")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-2000:]
    assert "credential files cannot be read by the wasm build" in out
    assert str(d / "gcp-token") in out
