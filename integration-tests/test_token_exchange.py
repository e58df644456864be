"""Credentials the gateway exchanges itself, through a real Envoy (both builds) and
the simulated token endpoints (sim/tokens.py), which check what they receive as the
real ones do (form fields, RS256 signatures, SigV4) and whose tokens the simulated
providers accept only while they are valid.

Covered: every exchange kind reaching its provider with the credential it issued
(Azure Entra ID with a client secret and with a federated OIDC token, Google service
accounts and workload identity with impersonation, AWS web identity and AssumeRole);
a request waiting on a call being resumed (routerOnly and through the upstream
instance of a route with a fallback); one exchange for a burst of concurrent
requests; refresh ahead of expiry with no failed request; failures, timeouts and
refused connections answered 503 in the client's schema; a client that disconnects
while its request waits (the call is cancelled, Envoy's active-request gauge goes
back to zero, the next request is served).

The wasm build keeps tokens per VM (one per worker): a burst may see one exchange
per worker, not one per process."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import running_gateway

TENANT = "5f2b1c7e-0000-4000-8000-aigwtenant01"
IDP = "https://oidc.sim.test"
ROLE = "arn:aws:iam::123456789012:role/gateway"
LAMBDA_ROLE = "arn:aws:iam::123456789012:role/invoker"
BASE_KEYS = ("AKIDBASEAIGW0001", "base-secret-not-real")
POOL = ("//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/aigw/"
        "providers/sim")
SERVICE_ACCOUNT = "vertex@aigw-test.iam.gserviceaccount.com"
SA_EMAIL = "gateway@aigw-test.iam.gserviceaccount.com"
BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
# The token services, each its own simulator listener and Envoy cluster.
TOKEN_CLUSTERS = ["entra", "google", "gsts", "iam", "sts", "idp"]


def _sa_key() -> tuple[dict, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    doc = {"type": "service_account", "project_id": "aigw-test", "private_key_id": "kid-aigw-1",
           "private_key": pem, "client_email": SA_EMAIL, "token_uri": "https://oauth2.googleapis.com/token"}
    return doc, public


SA_KEY, SA_PUBLIC = _sa_key()


def entra(client_id: str, secret: str = "az-secret", **extra) -> dict:
    return {"azureEntraId": {"tenantId": TENANT, "clientId": client_id, "clientSecret": {"value": secret},
                             "token": {"cluster": "entra"}, **extra}}


def idp_client(client_id: str, **where) -> dict:
    return {"clientCredentials": {"cluster": "idp", "clientId": client_id,
                                  "clientSecret": {"value": f"{client_id}-secret"}, **where}}


def azure(name: str, auth: dict) -> dict:
    return {"name": name, "schema": {"name": "AzureOpenAI", "version": "2024-10-21"},
            "host": "aigw-test.openai.azure.com", "modelNameOverride": "gpt-4o", "auth": auth}


BACKENDS = [
    azure("azure-secret", entra("app-secret")),
    azure("azure-fed", {"azureEntraId": {
        "tenantId": TENANT, "clientId": "app-fed", "token": {"cluster": "entra"},
        "federatedToken": idp_client("gw-azure", issuer=IDP)}}),
    {"name": "vertex-sa", "schema": {"name": "GCPVertexAI"}, "project": "aigw-test", "region": "us-central1",
     "auth": {"gcpServiceAccount": {"key": {"value": json.dumps(SA_KEY)}, "token": {"cluster": "google"}}}},
    {"name": "vertex-wif", "schema": {"name": "GCPVertexAI"}, "project": "aigw-test", "region": "us-central1",
     "auth": {"gcpWorkloadIdentity": {
         "audience": POOL, "subjectToken": idp_client("gw-gcp", tokenUrl=f"{IDP}/oauth2/token"),
         "sts": {"cluster": "gsts"},
         "impersonate": {"serviceAccount": SERVICE_ACCOUNT, "iam": {"cluster": "iam"}}}}},
    {"name": "bedrock-wif", "schema": {"name": "AWSBedrock"}, "region": "us-east-1",
     "host": "bedrock-runtime.us-east-1.amazonaws.com", "modelNameOverride": BEDROCK_MODEL,
     "auth": {"awsSigV4": {"webIdentity": {"roleArn": ROLE, "sessionName": "aigw-test",
                                           "token": idp_client("gw-aws", tokenUrl=f"{IDP}/oauth2/token"),
                                           "sts": {"cluster": "sts"}}}}},
    {"name": "bedrock-assume", "schema": {"name": "AWSBedrock"}, "region": "us-east-1",
     "host": "bedrock-runtime.us-east-1.amazonaws.com", "modelNameOverride": BEDROCK_MODEL,
     "auth": {"awsSigV4": {"accessKeyId": BASE_KEYS[0], "secretAccessKey": BASE_KEYS[1],
                           "assumeRole": {"roleArn": LAMBDA_ROLE, "sts": {"cluster": "sts"}}}}},
    # One app each, so each test starts from a slot with no token.
    azure("azure-up", entra("app-up")),
    azure("azure-burst", entra("app-burst")),
    azure("azure-refresh", entra("app-refresh")),
    azure("azure-fail", entra("app-fail", secret="wrong-secret")),
    azure("azure-timeout", entra("app-timeout", timeoutMs=400)),
    azure("azure-dead", {"azureEntraId": {"tenantId": TENANT, "clientId": "app-dead",
                                          "clientSecret": {"value": "az-secret"},
                                          "token": {"cluster": "entra-dead"}}}),
    azure("azure-leave", entra("app-leave")),
    {"name": "openai", "schema": {"name": "OpenAI"}},
]
# A route per backend (model = backend name), and one whose upstream instance does
# the exchange: a fallback route.
ROUTES = [{"name": b["name"], "models": [b["name"]], "backends": [{"name": b["name"]}]}
          for b in BACKENDS if b["name"] not in ("azure-up", "openai")]
ROUTES.append({"name": "fallback", "models": ["azure-up"],
               "backends": [{"name": "azure-up"}, {"name": "openai", "priority": 1}]})
CONFIG = {"version": "v1", "routerOnly": True, "backends": BACKENDS, "routes": ROUTES}
PROVIDERS = [b["name"] for b in BACKENDS]

IDENTITIES = {
    "oidc_clients": [
        {"client_id": "gw-azure", "client_secret": "gw-azure-secret", "subject": "system:serviceaccount:ai:gw",
         "audience": "api://AzureADTokenExchange"},
        {"client_id": "gw-aws", "client_secret": "gw-aws-secret", "subject": "system:serviceaccount:ai:gw",
         "audience": "sts.amazonaws.com"},
        {"client_id": "gw-gcp", "client_secret": "gw-gcp-secret", "subject": "system:serviceaccount:ai:gw",
         "audience": "https:" + POOL},
    ],
    "entra_apps": [{"tenant": TENANT, "client_id": f"app-{n}", "client_secret": "az-secret"}
                   for n in ("secret", "up", "burst", "refresh", "fail", "timeout", "dead", "leave")]
    + [{"tenant": TENANT, "client_id": "app-fed",
        "federated": [{"issuer": IDP, "subject": "system:serviceaccount:ai:gw"}]}],
    "google_service_accounts": [{"client_email": SA_EMAIL, "private_key_id": "kid-aigw-1",
                                 "public_key_pem": SA_PUBLIC}],
    "workload_pools": [{"audience": POOL, "issuer": IDP, "service_accounts": [SERVICE_ACCOUNT]}],
    "aws_roles": [
        {"role_arn": ROLE, "web_identity": [{"issuer": IDP, "audience": "sts.amazonaws.com"}]},
        {"role_arn": LAMBDA_ROLE, "base_credentials": [":".join(BASE_KEYS)]},
    ],
}
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


class Tokens:
    """The simulator's token services, through its control paths."""

    def __init__(self, sim_url: str):
        self.url = sim_url

    def exchanges(self, **query) -> list[dict]:
        r = requests.get(self.url + "/_sim/exchanges", params=query, timeout=5)
        r.raise_for_status()
        return r.json()

    def fault(self, service: str, **fault) -> None:
        requests.post(self.url + "/_sim/token-faults", json={"service": service, **fault},
                      timeout=5).raise_for_status()

    def clear_faults(self) -> None:
        requests.delete(self.url + "/_sim/token-faults", timeout=5).raise_for_status()

    def for_client(self, client_id: str) -> list[dict]:
        return [e for e in self.exchanges(service="entra") if (e.get("fields") or {}).get("client_id") == client_id]


@pytest.fixture(scope="module")
def gw(workdir, build):
    labels = PROVIDERS + TOKEN_CLUSTERS
    sim_args = []
    for name in PROVIDERS:
        if name != "openai":
            sim_args += ["--expect-issued", name]
    with running_gateway(CONFIG, labels, workdir / f"token-exchange-{build}", build, sim_args,
                         closed=["entra-dead"]) as g:
        requests.post(g.sim_url + "/_sim/identities", json=IDENTITIES, timeout=5).raise_for_status()
        g.tokens = Tokens(g.sim_url)
        yield g


def chat(gw, model: str, **kw):
    return gw.post("/v1/chat/completions", {"model": model, **CHAT}, **kw)


@pytest.mark.parametrize("model,services,issuer_service", [
    ("azure-secret", ["entra"], "entra"),
    ("azure-fed", ["oidc-discovery", "oidc", "entra"], "entra"),
    ("vertex-sa", ["google-oauth"], "google-oauth"),
    ("vertex-wif", ["oidc", "google-sts", "iamcredentials"], "iamcredentials"),
    ("bedrock-wif", ["oidc", "aws-sts"], "aws-sts"),
    ("bedrock-assume", ["aws-sts"], "aws-sts"),
])
def test_each_exchange_gives_the_provider_the_credential_it_issued(gw, model, services, issuer_service):
    before = len(gw.tokens.exchanges())
    r, rid = chat(gw, model)
    assert r.status_code == 200, r.text
    up = gw.one_upstream(rid)
    assert up["checks"] == [], up["checks"]
    cred = up["credential"]
    assert cred is not None and cred["service"] == issuer_service and not cred["expired"], cred
    new = gw.tokens.exchanges()[before:]
    assert [e["service"] for e in new] == services, new
    assert all(e["outcome"] == "ok" for e in new), new
    # Secrets travel only where they belong: never to the client, never in the log.
    assert "az-secret" not in r.text and "-secret\"" not in r.text
    # A second request uses the token held, with no exchange.
    r2, rid2 = chat(gw, model)
    assert r2.status_code == 200, r2.text
    assert gw.one_upstream(rid2)["credential"] == cred
    assert len(gw.tokens.exchanges()) == before + len(services)


def test_the_upstream_instance_waits_for_its_backends_token(gw):
    r, rid = chat(gw, "azure-up")
    assert r.status_code == 200, r.text
    up = gw.one_upstream(rid)
    assert up["listener"] == "azure-up" and (up["credential"] or {}).get("service") == "entra", up
    assert len(gw.tokens.for_client("app-up")) == 1


def test_one_exchange_for_a_burst_of_requests(gw):
    gw.tokens.fault("entra", delay_ms=600, count=4)
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(lambda _: chat(gw, "azure-burst", timeout=30), range(20)))
    finally:
        gw.tokens.clear_faults()
    assert [r.status_code for r, _ in results] == [200] * 20, [r.text for r, _ in results if r.status_code != 200]
    exchanges = gw.tokens.for_client("app-burst")
    # One per process natively; the wasm build keeps a token per VM (2 workers).
    assert 1 <= len(exchanges) <= (1 if gw.build == "native" else 2), exchanges
    fingerprints = {gw.one_upstream(rid)["credential"]["fingerprint"] for _, rid in results}
    assert len(fingerprints) == len(exchanges)


def test_tokens_are_refreshed_before_they_expire_with_no_failed_request(gw):
    # Tokens for 6 s: refreshed in the background 2 s before expiry.
    gw.tokens.fault("entra", expires_in=6)
    try:
        statuses, rids = [], []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            r, rid = chat(gw, "azure-refresh")
            statuses.append(r.status_code)
            rids.append(rid)
            time.sleep(0.1)
    finally:
        gw.tokens.clear_faults()
    assert set(statuses) == {200}, statuses
    exchanges = gw.tokens.for_client("app-refresh")
    per_worker = 1 if gw.build == "native" else 2
    # 15 s of 6 s tokens: refreshed at least twice, never waited for.
    assert 3 <= len(exchanges) <= 4 * per_worker, [e["time"] for e in exchanges]
    times = sorted(e["time"] for e in exchanges)
    if gw.build == "native":
        # Each refresh began before the token it replaced expired.
        assert all(b - a < 6 for a, b in zip(times, times[1:])), times
    used = {gw.one_upstream(rid)["credential"]["fingerprint"] for rid in rids}
    assert len(used) >= 3


def error_message(r: requests.Response) -> str:
    return r.json()["error"]["message"]


def test_a_failing_exchange_is_a_503_in_the_clients_schema(gw):
    before = gw.counter("aigw_credential_exchange_failures")
    r, rid = chat(gw, "azure-fail")
    assert r.status_code == 503, r.text
    msg = error_message(r)
    assert "could not obtain a credential" in msg and "Entra ID answered 401 (invalid_client)" in msg, msg
    assert "wrong-secret" not in r.text
    assert gw.upstream(rid) == [], "no request without a credential"
    time.sleep(1.1)  # past the backoff
    r2, _ = gw.post("/anthropic/v1/messages", {"model": "azure-fail", "max_tokens": 5, **CHAT})
    assert r2.status_code == 503, r2.text
    body = r2.json()
    assert body["type"] == "error" and "invalid_client" in body["error"]["message"], body
    assert gw.counter("aigw_credential_exchange_failures") >= before + 2


def test_a_call_that_times_out_or_is_refused_is_a_503(gw):
    gw.tokens.fault("entra", delay_ms=3000, count=1)
    try:
        t0 = time.monotonic()
        r, rid = chat(gw, "azure-timeout")
        took = time.monotonic() - t0
    finally:
        gw.tokens.clear_faults()
    assert r.status_code == 503, r.text
    assert took < 2.5, f"the gateway's 400 ms timeout, not the token endpoint's 3 s: {took:.2f}s"
    assert "could not obtain a credential" in error_message(r)
    assert gw.upstream(rid) == []
    r, _ = chat(gw, "azure-dead")
    assert r.status_code == 503, r.text
    assert "Entra ID" in error_message(r)


def active_requests(gw) -> int:
    text = requests.get(f"{gw.admin_url}/stats", params={"filter": r"^http\.aigw\.downstream_rq_active$"},
                        timeout=5).text
    return int(text.split(":")[1]) if ":" in text else -1


def test_a_client_that_leaves_while_its_request_waits_leaves_nothing_behind(gw):
    gw.tokens.fault("entra", delay_ms=2500, count=1)
    try:
        with pytest.raises(requests.exceptions.ReadTimeout):
            chat(gw, "azure-leave", timeout=0.5)
        # The request is gone from Envoy.
        deadline = time.monotonic() + 5
        while active_requests(gw) != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert active_requests(gw) == 0
        # Natively the call it made was cancelled (the token endpoint sees the
        # connection close); proxy-wasm cannot cancel a call, whose answer is dropped.
        # The simulator records its outcome when the request arrives, before the
        # delay: wait until the connection is seen to close, or until the delayed
        # answer must have been sent.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ex = gw.tokens.for_client("app-leave")
            if ex and (ex[0]["client_disconnected"]
                       or time.time() > ex[0]["time"] + ex[0]["delay_ms"] / 1000 + 0.5):
                break
            time.sleep(0.1)
        assert ex and ex[0]["client_disconnected"] == (gw.build == "native"), json.dumps(ex)[:1500]
    finally:
        gw.tokens.clear_faults()
    # The next request leads a new exchange and is served.
    r, _ = chat(gw, "azure-leave")
    assert r.status_code == 200, r.text
    assert gw.alive()
