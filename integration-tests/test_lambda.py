"""AWS Lambda backends through a real Envoy (both builds): the gateway invokes a
function (sim/awslambda.py: a function implementing an OpenAI chat model behind
Lambda's Invoke API) with SigV4 for service `lambda`, which the simulator recomputes
with botocore and refuses when it does not match.

Covered: the OpenAI SDK's chat answer and usage as the function sent them (metered);
the invocation as Lambda takes it (path, Host, invocation type, qualifier, ARN); a
wrong key refused by the simulator (so a passing test means a verified signature);
a failed function as a 502 in the client's schema without its message; Lambda's own
errors mapped; a stream refused with a 422 before anything is sent; asynchronous
invocation (202); keys from STS AssumeRole; an Anthropic client through the hub; a
route with a fallback, where the upstream instance does the work per attempt."""

from __future__ import annotations

import json

import pytest
import requests

from conftest import AWS_CREDS, TOKEN_KEYS, metadata_number, running_gateway

ROLE = "arn:aws:iam::123456789012:role/invoker"
BASE_KEYS = ("AKIDBASELAMBDA01", "base-secret-not-real")
ARN = "arn:aws:lambda:us-west-2:123456789012:function:chat-fn"
STATIC = {"awsSigV4": {"accessKeyId": AWS_CREDS[0], "secretAccessKey": AWS_CREDS[1],
                       "sessionToken": AWS_CREDS[2]}}


def fn(name: str, region: str = "us-east-1", auth: dict = STATIC, **lam) -> dict:
    return {"name": name, "schema": {"name": "OpenAI"}, "region": region,
            "lambda": {"functionName": "chat-fn", **lam}, "auth": auth}


BACKENDS = [
    fn("fn"),
    fn("fn-arn", region="us-west-2", functionName=ARN, qualifier="live"),
    fn("fn-async", invocationMode="Async"),
    fn("fn-badkey", auth={"awsSigV4": {"accessKeyId": AWS_CREDS[0], "secretAccessKey": "not-the-secret",
                                       "sessionToken": AWS_CREDS[2]}}),
    fn("fn-assume", auth={"awsSigV4": {"accessKeyId": BASE_KEYS[0], "secretAccessKey": BASE_KEYS[1],
                                       "assumeRole": {"roleArn": ROLE, "sts": {"cluster": "sts"}}}}),
    {"name": "openai", "schema": {"name": "OpenAI"}},
]
ROUTES = [{"name": b["name"], "models": [b["name"]], "backends": [{"name": b["name"]}]}
          for b in BACKENDS if b["name"] != "openai"]
# Two priorities: the cluster's upstream instance invokes the function per attempt.
ROUTES.append({"name": "fallback", "models": ["fn-fallback"],
               "backends": [{"name": "fn", "priority": 0}, {"name": "openai", "priority": 1}]})
CONFIG = {"version": "v1", "routerOnly": True, "backends": BACKENDS, "routes": ROUTES,
          "llmRequestCosts": [{"metadataKey": k, "type": t} for k, t in TOKEN_KEYS.items()]}
IDENTITIES = {"aws_roles": [{"role_arn": ROLE, "base_credentials": [":".join(BASE_KEYS)]}]}
MESSAGES = [{"role": "user", "content": "say hi"}]
FUNCTION_SECRET = "hunter2"  # in the simulated function's error message


@pytest.fixture(scope="module")
def gw(workdir, build):
    labels = [b["name"] for b in BACKENDS] + ["sts"]
    sim_args = ["--expect-issued", "fn-assume"]
    for label in ("fn", "fn-arn", "fn-async", "fn-badkey"):
        sim_args += ["--aws-credentials", f"{label}={':'.join(AWS_CREDS)}"]
    with running_gateway(CONFIG, labels, workdir / f"lambda-{build}", build, sim_args) as g:
        requests.post(g.sim_url + "/_sim/identities", json=IDENTITIES, timeout=5).raise_for_status()
        yield g


@pytest.fixture(scope="module")
def client(gw):
    import openai

    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client-not-a-secret", max_retries=0, timeout=30)


def chat(client, model: str, rid: str, **headers):
    return client.chat.completions.create(model=model, messages=MESSAGES,
                                          extra_headers={"x-request-id": rid, **headers})


def test_chat_answer_and_usage_are_the_functions(gw, client):
    rid = "lambda-chat-1"
    got = chat(client, "fn", rid, **{"x-amz-log-type": "Tail"})
    up = gw.one_upstream(rid)
    assert up["checks"] == [], up["checks"]  # signature, Host, name, invocation type, body
    assert up["provider"] == "lambda" and up["listener"] == "fn"
    assert up["path"] == "/2015-03-31/functions/chat-fn/invocations"
    assert up["lambda"] == {"function": "chat-fn", "qualifier": None, "invocation_type": "RequestResponse",
                            "region": "us-east-1", "host": "lambda.us-east-1.amazonaws.com"}
    headers = dict(up["headers"])
    assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AWS_CREDS[0]}/")
    assert "/us-east-1/lambda/aws4_request" in headers["authorization"]
    assert "x-amz-invocation-type" in headers["authorization"]  # signed too
    assert "authorization" not in {k for k, v in up["headers"] if v == "Bearer sk-client-not-a-secret"}
    # The function's event is the client's chat request.
    assert up["body_json"]["messages"] == MESSAGES and up["body_json"]["model"] == "fn"
    assert got.choices[0].message.content == up["sent_text"]
    usage = up["response"]["usage"]
    assert got.usage.prompt_tokens == usage["prompt_tokens"]
    assert got.usage.completion_tokens == usage["completion_tokens"]
    entry = gw.log_entry(rid)
    assert metadata_number(entry, "llm_input_token") == usage["prompt_tokens"]
    assert metadata_number(entry, "llm_output_token") == usage["completion_tokens"]


def test_qualifier_and_arn_reach_lambda(gw, client):
    rid = "lambda-arn-1"
    got = chat(client, "fn-arn", rid)
    up = gw.one_upstream(rid)
    assert up["checks"] == [], up["checks"]
    assert up["query"] == {"Qualifier": ["live"]}
    assert up["lambda"]["function"] == ARN and up["lambda"]["qualifier"] == "live"
    assert up["lambda"]["host"] == "lambda.us-west-2.amazonaws.com"
    assert got.choices[0].message.content == up["sent_text"]


def test_a_bad_signature_is_refused(gw, client):
    import openai

    with pytest.raises(openai.AuthenticationError) as e:
        chat(client, "fn-badkey", "lambda-badkey-1")
    up = gw.one_upstream("lambda-badkey-1")
    assert any("signature" in c.lower() for c in up["checks"]), up["checks"]
    assert e.value.status_code == 401
    assert e.value.body["code"] == "InvalidSignatureException"


def test_a_failed_function_is_a_502_in_openais_schema(gw, client):
    import openai

    with pytest.raises(openai.InternalServerError) as e:
        chat(client, "fn", "lambda-fails-1", **{"x-sim-function-error": "DatabaseError"})
    assert e.value.status_code == 502
    err = e.value.body
    assert err["type"] == "server_error" and err["code"] == "lambda_function_error"
    assert "DatabaseError" in err["message"]
    raw = json.dumps(e.value.response.json())
    assert FUNCTION_SECRET not in raw and "handler.py" not in raw
    assert gw.one_upstream("lambda-fails-1")["checks"] == []


def test_lambda_errors_are_mapped(gw, client):
    import openai

    with pytest.raises(openai.RateLimitError) as e:
        chat(client, "fn", "lambda-429-1", **{"x-sim-status": "429"})
    assert e.value.body["code"] == "TooManyRequestsException"
    with pytest.raises(openai.NotFoundError) as e:
        chat(client, "fn", "lambda-404-1", **{"x-sim-status": "404"})
    assert e.value.body["code"] == "ResourceNotFoundException"


def test_a_stream_is_refused_before_anything_is_sent(gw, client):
    import openai

    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.chat.completions.create(model="fn", messages=MESSAGES, stream=True,
                                       extra_headers={"x-request-id": "lambda-stream-1"})
    assert e.value.body["code"] == "unsupported_by_provider"
    assert "Lambda" in e.value.body["message"]
    assert gw.upstream("lambda-stream-1") == []


def test_asynchronous_invocation_is_accepted(gw):
    r, rid = gw.post("/v1/chat/completions", {"model": "fn-async", "messages": MESSAGES})
    assert r.status_code == 202, r.text
    assert r.content == b""
    up = gw.one_upstream(rid)
    assert up["checks"] == [] and up["lambda"]["invocation_type"] == "Event"


def test_assumed_role_keys_sign_the_invocation(gw, client):
    rid = "lambda-assume-1"
    got = chat(client, "fn-assume", rid)
    up = gw.one_upstream(rid)
    assert up["checks"] == [], up["checks"]
    assert up["credential"]["service"] == "aws-sts" and not up["credential"]["expired"]
    assert BASE_KEYS[0] not in dict(up["headers"])["authorization"]
    assert got.choices[0].message.content == up["sent_text"]
    exchanges = requests.get(gw.sim_url + "/_sim/exchanges", params={"service": "aws-sts"}, timeout=5).json()
    assert exchanges and all(e["outcome"] == "ok" for e in exchanges)


def test_an_anthropic_client_reaches_the_function_through_the_hub(gw):
    import anthropic

    c = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="sk-ant-client", max_retries=0, timeout=30)
    got = c.messages.create(model="fn", max_tokens=64, messages=MESSAGES,
                            extra_headers={"x-request-id": "lambda-anthropic-1"})
    up = gw.one_upstream("lambda-anthropic-1")
    assert up["checks"] == [] and up["body_json"]["messages"][0]["role"] == "user"
    assert got.content[0].text == up["sent_text"]
    assert got.usage.output_tokens == up["response"]["usage"]["completion_tokens"]


def test_a_route_with_a_fallback_invokes_per_attempt(gw, client):
    got = chat(client, "fn-fallback", "lambda-fallback-1")
    up = gw.one_upstream("lambda-fallback-1")
    assert up["listener"] == "fn" and up["checks"] == [], up
    assert got.choices[0].message.content == up["sent_text"]
    # Lambda fails: Envoy retries on the next priority, an OpenAI server, which gets
    # an OpenAI request, not the invocation.
    got = chat(client, "fn-fallback", "lambda-fallback-2", **{"x-sim-fail-on": "fn=500"})
    attempts = gw.upstream("lambda-fallback-2")
    assert [a["listener"] for a in attempts] == ["fn", "openai"], attempts
    assert attempts[1]["path"] == "/v1/chat/completions"
    headers = {k for k, _ in attempts[1]["headers"]}
    assert "x-amz-invocation-type" not in headers and "authorization" not in headers
    assert got.choices[0].message.content == attempts[1]["sent_text"]
