"""The token-endpoint simulators by themselves (no Envoy): the OIDC IdP, Entra ID,
Google OAuth / STS / iamcredentials and AWS STS driven with plain `requests`, JWTs
signed here with `cryptography` (not with sim/jws.py), SigV4 with botocore; the
provider paths accepting (and, once expired, refusing) what they issued; faults,
delays, the exchange log and the control paths."""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from urllib.parse import quote, urlencode

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from conftest import HERE, sim_ports, stop, wait_for

LABELS = ["tok", "azure", "vertex", "bedrock", "strict"]
ISSUER = "https://oidc.sim.test"
K8S_ISSUER = "https://k8s.sim.test"
TENANT = "11111111-2222-3333-4444-555555555555"
ENTRA_HOST = "login.microsoftonline.com"
AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"
SA_EMAIL = "sim-sa@proj.iam.gserviceaccount.com"
SA_KID = "0123456789abcdef0123456789abcdef01234567"
TOKEN_URI = "https://oauth2.googleapis.com/token"
POOL = ("//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/sim-pool/providers/"
        "sim-prov")
TARGET_SA = "vertex-user@proj.iam.gserviceaccount.com"
ROLE = "arn:aws:iam::123456789012:role/sim-bedrock"
OTHER_ROLE = "arn:aws:iam::123456789012:role/picky"
BASE_AKID, BASE_SECRET = "AKIDBASE0001", "base/secret+key"
OTHER_AKID, OTHER_SECRET = "AKIDOTHER002", "other-secret"
STATIC_AKID, STATIC_SECRET = "AKIDSTATIC01", "static-secret"
STS_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GRANT_JWT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
SECRETS = {  # client id -> (secret, sub, aud)
    "gw-azure": ("s3cr3t/azure+&=%", "system:serviceaccount:ns:gw", "api://AzureADTokenExchange"),
    "gw-gcp": ("gcp-client-secret", "system:serviceaccount:ns:gw", "gcp-aud"),
    "gw-aws": ("aws-client-secret", "system:serviceaccount:ns:gw", "sts.amazonaws.com"),
    "other": ("other-secret", "someone-else", "api://AzureADTokenExchange"),
}
ENTRA_SECRET = "entra~secret.1"
AZURE_PATH = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]}
VERTEX_PATH = "/v1/projects/proj/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent"
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}
CONVERSE_PATH = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
CONVERSE = {"messages": [{"role": "user", "content": [{"text": "hello there"}]}]}


# ---- test-side crypto (independent of sim/jws.py) ---------------------------------

def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_jwt(key: rsa.RSAPrivateKey, claims: dict, kid: str | None = None, alg: str = "RS256") -> str:
    header = {"typ": "JWT", "alg": alg}
    if kid is not None:
        header["kid"] = kid
    signing_input = b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())
    return signing_input + "." + b64u(key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))


def jwt_parts(token: str) -> tuple[dict, dict]:
    head, body, _ = token.split(".")
    return json.loads(unb64u(head)), json.loads(unb64u(body))


def sa_assertion(key, **over) -> str:
    now = int(time.time())
    claims = {"iss": SA_EMAIL, "scope": "https://www.googleapis.com/auth/cloud-platform", "aud": TOKEN_URI,
              "iat": now, "exp": now + 3600}
    claims.update(over)
    kid = claims.pop("_kid", SA_KID)
    return make_jwt(key, {k: v for k, v in claims.items() if v is not None}, kid=kid)


def k8s_token(key, **over) -> str:
    now = int(time.time())
    claims = {"iss": K8S_ISSUER, "sub": "system:serviceaccount:ns:gw", "aud": "sts.amazonaws.com", "iat": now,
              "exp": now + 600}
    claims.update(over)
    return make_jwt(key, claims, kid="k8s-1")


# ---- the simulator -----------------------------------------------------------------

KEYS: dict[str, rsa.RSAPrivateKey] = {}


def key(name: str) -> rsa.RSAPrivateKey:
    if name not in KEYS:
        KEYS[name] = new_key()
    return KEYS[name]


def identities() -> dict:
    return {
        "trusted_issuers": [{"issuer": K8S_ISSUER, "public_key_pem": public_pem(key("k8s"))}],
        "oidc_clients": [{"client_id": cid, "client_secret": s, "subject": sub, "audience": aud}
                         for cid, (s, sub, aud) in SECRETS.items()],
        "entra_apps": [{"tenant": TENANT, "tenant_aliases": ["contoso.onmicrosoft.com"], "client_id": "app-1",
                        "client_secret": ENTRA_SECRET,
                        "federated": [{"issuer": ISSUER, "subject": "system:serviceaccount:ns:gw"},
                                      {"issuer": K8S_ISSUER, "subject": "system:serviceaccount:ns:gw"}]}],
        "google_service_accounts": [{"client_email": SA_EMAIL, "private_key_id": SA_KID,
                                     "public_key_pem": public_pem(key("sa"))}],
        "workload_pools": [{"audience": POOL, "issuer": ISSUER, "allowed_audiences": ["gcp-aud"],
                            "service_accounts": [TARGET_SA]}],
        "aws_roles": [{"role_arn": ROLE, "base_credentials": [f"{BASE_AKID}:{BASE_SECRET}"],
                       "web_identity": [{"issuer": ISSUER, "audience": "sts.amazonaws.com"},
                                        {"issuer": K8S_ISSUER, "audience": "sts.amazonaws.com"}]},
                      {"role_arn": OTHER_ROLE, "max_session_duration": 7200,
                       "base_credentials": [{"access_key_id": OTHER_AKID, "secret_access_key": OTHER_SECRET}],
                       "web_identity": [{"issuer": ISSUER, "audience": "sts.amazonaws.com", "subject": "nobody"}]}],
    }


def start_simulator(tmp, labels: list[str], extra: list[str]) -> tuple[subprocess.Popen, dict[str, str]]:
    ready, log = tmp / "ready.json", tmp / "sim.log"
    cmd = [sys.executable, str(HERE / "simulator.py"), "--ready-file", str(ready)] + extra
    for label in labels:
        cmd += ["--listen", f"127.0.0.1:0={label}"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: sim_ports(ready, labels) is not None, 20, "simulator", proc, log)
    except Exception:
        stop(proc)
        raise
    return proc, {k: f"http://127.0.0.1:{v}" for k, v in sim_ports(ready, labels).items()}


class TokenSim:
    def __init__(self, urls: dict[str, str]):
        self.urls = urls
        self.s = requests.Session()

    def url(self, path: str, listener: str = "tok") -> str:
        return self.urls[listener] + path

    def call(self, method: str, path: str, host: str, *, listener: str = "tok", **kw) -> requests.Response:
        headers = {"Host": host, **kw.pop("headers", {})}
        return self.s.request(method, self.url(path, listener), headers=headers, timeout=10, **kw)

    def form(self, path: str, host: str, fields: dict, **kw) -> requests.Response:
        return self.call("POST", path, host, data=fields, **kw)

    def control(self, method: str, path: str, body=None) -> requests.Response:
        return self.s.request(method, self.url(path), json=body, timeout=10)

    def fault(self, **f) -> None:
        r = self.control("POST", "/_sim/token-faults", f)
        assert r.status_code == 200, r.text

    def exchanges(self, service: str | None = None) -> list[dict]:
        return self.control("GET", "/_sim/exchanges" + (f"?service={service}" if service else "")).json()

    def last(self, service: str) -> dict:
        return self.exchanges(service)[-1]

    # -- the services, successful paths --

    def idp_token(self, client: str = "gw-azure", **kw) -> str:
        r = self.form("/oauth2/token", "oidc.sim.test", {"grant_type": "client_credentials",
                                                          "client_id": client, "client_secret": SECRETS[client][0]},
                      **kw)
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def entra(self, fields: dict, tenant: str = TENANT, **kw) -> requests.Response:
        base = {"grant_type": "client_credentials", "client_id": "app-1", "scope": AZURE_SCOPE}
        return self.form(f"/{tenant}/oauth2/v2.0/token", ENTRA_HOST, {**base, **fields}, **kw)

    def sts(self, subject: str, **over) -> requests.Response:
        fields = {"grant_type": TOKEN_EXCHANGE, "audience": POOL, "scope": "https://www.googleapis.com/auth/iam",
                  "requested_token_type": ACCESS_TOKEN_TYPE, "subject_token": subject, "subject_token_type": JWT_TYPE}
        fields.update(over)
        return self.form("/v1/token", "sts.googleapis.com", {k: v for k, v in fields.items() if v is not None})

    def sts_token(self) -> str:
        r = self.sts(self.idp_token("gw-gcp"))
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def generate(self, token: str | None, body: dict, email: str = TARGET_SA, project: str = "-") -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.call("POST", f"/v1/projects/{project}/serviceAccounts/{quote(email)}:generateAccessToken",
                         "iamcredentials.googleapis.com", json=body, headers=headers)

    def web_identity(self, token: str, *, host: str = "sts.amazonaws.com", accept_json: bool = False,
                     get: bool = False, **over) -> requests.Response:
        params = {"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15", "RoleArn": ROLE,
                  "RoleSessionName": "ai-gateway-policy", "WebIdentityToken": token}
        params.update(over)
        params = {k: v for k, v in params.items() if v is not None}
        headers = {"Accept": "application/json"} if accept_json else {}
        if get:
            return self.call("GET", "/?" + urlencode(params), host, headers=headers)
        return self.form("/", host, params, headers=headers)

    def provider(self, listener: str, path: str, body: dict, headers: dict | None = None,
                 data: bytes | None = None) -> tuple[requests.Response, dict]:
        rid = str(uuid.uuid4())
        h = {"content-type": "application/json", "x-request-id": rid, "x-sim-delay-ms": "0", **(headers or {})}
        r = self.s.post(self.url(path, listener), data=data if data is not None else json.dumps(body).encode(),
                        headers=h, timeout=10)
        recs = self.s.get(self.url("/_sim/requests"), params={"id": rid}, timeout=5).json()
        assert len(recs) == 1, recs
        return r, recs[0]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    proc, urls = start_simulator(tmp_path_factory.mktemp("tokensim"), LABELS,
                                 ["--expect-api-key", "azure=key-1", "--expect-bearer", "vertex=ya29.static",
                                  "--aws-credentials", f"bedrock={STATIC_AKID}:{STATIC_SECRET}",
                                  "--expect-issued", "strict"])
    try:
        t = TokenSim(urls)
        r = t.control("POST", "/_sim/identities", identities())
        assert r.status_code == 200, r.text
        yield t
    finally:
        stop(proc)


@pytest.fixture(autouse=True)
def clean(sim):
    sim.control("DELETE", "/_sim/token-faults")
    sim.control("DELETE", "/_sim/exchanges")
    yield


# ---- the OIDC IdP -------------------------------------------------------------------------

def test_oidc_discovery_jwks_and_host(sim):
    r = sim.call("GET", "/.well-known/openid-configuration", "oidc.sim.test")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["issuer"] == ISSUER and doc["token_endpoint"] == ISSUER + "/oauth2/token"
    assert doc["jwks_uri"] == ISSUER + "/jwks" and doc["scopes_supported"] == ["openid"]
    jwk = sim.call("GET", "/jwks", "oidc.sim.test").json()["keys"][0]
    pub = rsa.RSAPublicNumbers(int.from_bytes(unb64u(jwk["e"]), "big"),
                               int.from_bytes(unb64u(jwk["n"]), "big")).public_key()
    token = sim.idp_token()
    head, body, sig = token.split(".")
    pub.verify(unb64u(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())  # raises if bad
    assert jwt_parts(token)[0] == {"alg": "RS256", "typ": "JWT", "kid": jwk["kid"]}

    r = sim.call("GET", "/.well-known/openid-configuration", "idp.elsewhere.test")
    assert r.status_code == 421 and r.json()["error"] == "misdirected_request"
    assert sim.last("oidc-discovery")["outcome"] == "misdirected_request"


def test_oidc_client_credentials(sim):
    now = time.time()
    r = sim.form("/oauth2/token", "oidc.sim.test", {"grant_type": "client_credentials", "scope": "openid api",
                                                     "client_id": "gw-azure", "client_secret": SECRETS["gw-azure"][0]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["scope"] == "openid api"
    _, claims = jwt_parts(body["access_token"])
    assert claims["iss"] == ISSUER and claims["sub"] == "system:serviceaccount:ns:gw"
    assert claims["aud"] == "api://AzureADTokenExchange" and claims["client_id"] == "gw-azure"
    assert abs(claims["iat"] - now) < 5 and claims["exp"] - claims["iat"] == 3600

    # HTTP Basic with form-encoded id and secret, as golang.org/x/oauth2 sends them.
    secret = SECRETS["gw-azure"][0]
    basic = base64.b64encode(f"gw-azure:{quote(secret, safe='')}".encode()).decode()
    r = sim.form("/oauth2/token", "oidc.sim.test", {"grant_type": "client_credentials"},
                 headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 200, r.text
    assert sim.last("oidc")["notes"]["auth_style"] == "basic"

    r = sim.form("/oauth2/token", "oidc.sim.test", {"grant_type": "client_credentials", "client_id": "gw-azure",
                                                     "client_secret": "nope"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client" and "www-authenticate" in r.headers
    r = sim.form("/oauth2/token", "oidc.sim.test", {"grant_type": "password", "client_id": "gw-azure",
                                                     "client_secret": secret})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = sim.form("/oauth2/token", "oidc.sim.test", {"grant_type": "client_credentials", "client_secret": secret},
                 headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = sim.call("POST", "/oauth2/token", "oidc.sim.test", json={"grant_type": "client_credentials"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


# ---- Entra ID ------------------------------------------------------------------------------

def aadsts(r: requests.Response, status: int, error: str, code: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error and body["error_codes"] == [code], body
    assert body["error_description"].startswith(f"AADSTS{code}: ") and "\r\nTrace ID: " in body["error_description"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", body["timestamp"])
    assert body["error_uri"].endswith(f"?code={code}") and body["trace_id"] and body["correlation_id"]
    return body


def test_entra_client_secret(sim):
    r = sim.entra({"client_secret": ENTRA_SECRET})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3599 and body["ext_expires_in"] == 3599
    _, claims = jwt_parts(body["access_token"])
    assert claims["aud"] == "https://cognitiveservices.azure.com" and claims["tid"] == TENANT
    assert claims["appid"] == "app-1"

    # HTTP Basic, a tenant alias and MSAL's extra scopes.
    basic = base64.b64encode(f"app-1:{ENTRA_SECRET}".encode()).decode()
    r = sim.entra({"scope": AZURE_SCOPE + " openid offline_access profile", "client_info": "1"},
                  tenant="contoso.onmicrosoft.com", headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 200, r.text
    assert sim.last("entra")["notes"]["credential"] == "basic"

    aadsts(sim.entra({"client_secret": "wrong"}), 401, "invalid_client", 7000215)
    aadsts(sim.entra({"client_secret": ENTRA_SECRET}, tenant="99999999-0000-0000-0000-000000000000"), 400,
           "invalid_request", 90002)
    aadsts(sim.entra({"client_secret": ENTRA_SECRET, "client_id": "app-2"}), 400, "unauthorized_client", 700016)
    aadsts(sim.entra({"client_secret": ENTRA_SECRET, "scope": "https://cognitiveservices.azure.com/user.read"}),
           400, "invalid_scope", 1002012)
    aadsts(sim.entra({"client_secret": ENTRA_SECRET,
                      "scope": AZURE_SCOPE + " https://graph.microsoft.com/.default"}), 400, "invalid_scope", 70011)
    aadsts(sim.entra({"client_secret": ENTRA_SECRET, "grant_type": "password"}), 400, "unsupported_grant_type",
           70003)
    aadsts(sim.entra({"client_secret": ENTRA_SECRET, "grant_type": ""}), 400, "invalid_request", 900144)
    aadsts(sim.entra({}), 401, "invalid_client", 7000218)
    r = sim.entra({"client_secret": ENTRA_SECRET}, headers={"Host": "login.example.com"})
    assert r.status_code == 421


def test_entra_federated_assertion(sim):
    assertion = sim.idp_token("gw-azure")
    r = sim.entra({"client_assertion_type": JWT_BEARER, "client_assertion": assertion})
    assert r.status_code == 200, r.text
    rec = sim.last("entra")
    assert rec["notes"]["credential"] == "federated" and rec["jwt"]["client_assertion"]["claims"]["sub"] == \
        "system:serviceaccount:ns:gw"

    # Subject mismatch: the IdP's token of another client.
    body = aadsts(sim.entra({"client_assertion_type": JWT_BEARER, "client_assertion": sim.idp_token("other")}),
                  400, "invalid_request", 70021)
    assert "Assertion Subject: 'someone-else'" in body["error_description"]
    # Audience mismatch.
    body = aadsts(sim.entra({"client_assertion_type": JWT_BEARER, "client_assertion": sim.idp_token("gw-aws")}),
                  400, "invalid_request", 70021)
    assert "Assertion Audience: 'sts.amazonaws.com'" in body["error_description"]
    # Bad signature: right claims, another key.
    now = int(time.time())
    forged = make_jwt(key("intruder"), {"iss": ISSUER, "sub": "system:serviceaccount:ns:gw",
                                        "aud": "api://AzureADTokenExchange", "iat": now, "exp": now + 600})
    aadsts(sim.entra({"client_assertion_type": JWT_BEARER, "client_assertion": forged}), 401, "invalid_client", 50013)
    # Expired assertion from the trusted test issuer.
    expired = k8s_token(key("k8s"), aud="api://AzureADTokenExchange", iat=now - 900, exp=now - 300)
    aadsts(sim.entra({"client_assertion_type": JWT_BEARER, "client_assertion": expired}), 401, "invalid_client",
           700024)
    fresh = k8s_token(key("k8s"), aud="api://AzureADTokenExchange")
    assert sim.entra({"client_assertion_type": JWT_BEARER, "client_assertion": fresh}).status_code == 200
    # Unknown issuer, malformed, wrong assertion type, secret and assertion together.
    aadsts(sim.entra({"client_assertion_type": JWT_BEARER,
                      "client_assertion": make_jwt(key("intruder"), {"iss": "https://evil.test", "sub": "x",
                                                                     "aud": "api://AzureADTokenExchange",
                                                                     "exp": now + 60})}),
           401, "invalid_client", 700211)
    aadsts(sim.entra({"client_assertion_type": JWT_BEARER, "client_assertion": "not-a-jwt"}), 400,
           "invalid_request", 50027)
    aadsts(sim.entra({"client_assertion_type": "urn:other", "client_assertion": assertion}), 400,
           "invalid_request", 9002313)
    aadsts(sim.entra({"client_assertion_type": JWT_BEARER, "client_assertion": assertion,
                      "client_secret": ENTRA_SECRET}), 400, "invalid_request", 9002313)


def test_azure_route_accepts_entra_tokens_until_they_expire(sim):
    token = sim.entra({"client_secret": ENTRA_SECRET}).json()["access_token"]
    for listener in ("azure", "tok", "strict"):
        r, rec = sim.provider(listener, AZURE_PATH, CHAT, {"authorization": f"Bearer {token}"})
        assert r.status_code == 200, (listener, r.text)
        assert rec["credential"]["service"] == "entra" and rec["credential"]["audience"] == \
            "https://cognitiveservices.azure.com"
    # The static API key still works where expected; the strict listener wants an issued token.
    assert sim.provider("azure", AZURE_PATH, CHAT, {"api-key": "key-1"})[0].status_code == 200
    r, _ = sim.provider("strict", AZURE_PATH, CHAT, {"api-key": "key-1"})
    assert r.status_code == 401
    r, _ = sim.provider("strict", AZURE_PATH, CHAT, {"authorization": "Bearer made-up"})
    assert r.status_code == 401 and "Access token is missing, invalid" in r.json()["error"]["message"]
    # A token for another resource.
    graph = sim.entra({"client_secret": ENTRA_SECRET, "scope": "https://graph.microsoft.com/.default"})
    r, rec = sim.provider("azure", AZURE_PATH, CHAT, {"authorization": f"Bearer {graph.json()['access_token']}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "401" and rec["checks"]

    # Short-lived tokens expire by themselves.
    sim.fault(service="entra", expires_in=1)
    short = sim.entra({"client_secret": ENTRA_SECRET}).json()
    assert short["expires_in"] == 1 and short["ext_expires_in"] == 1
    assert sim.provider("azure", AZURE_PATH, CHAT, {"authorization": f"Bearer {short['access_token']}"})[0] \
        .status_code == 200
    time.sleep(1.2)
    r, _ = sim.provider("azure", AZURE_PATH, CHAT, {"authorization": f"Bearer {short['access_token']}"})
    assert r.status_code == 401
    assert r.json() == {"error": {"code": "401", "message": "Unauthorized. Access token is missing, invalid, audience "
                                                            "is incorrect (https://cognitiveservices.azure.com), or "
                                                            "have expired."}}
    # ...even on a listener that expects nothing.
    assert sim.provider("tok", AZURE_PATH, CHAT, {"authorization": f"Bearer {short['access_token']}"})[0] \
        .status_code == 401
    # Forced expiry of every Entra token.
    assert sim.control("POST", "/_sim/tokens/expire", {"service": "entra"}).json()["expired"] >= 1
    assert sim.provider("azure", AZURE_PATH, CHAT, {"authorization": f"Bearer {token}"})[0].status_code == 401


# ---- Google OAuth (service-account JWT) -------------------------------------------------------

def test_google_oauth_jwt_bearer(sim):
    sa = key("sa")

    def grant(assertion: str, grant_type: str = GRANT_JWT) -> requests.Response:
        return sim.form("/token", "oauth2.googleapis.com", {"grant_type": grant_type, "assertion": assertion})

    r = grant(sa_assertion(sa))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3599 and body["access_token"].startswith("ya29.")
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert grant(sa_assertion(sa, iat=int(time.time()) - 10, exp=int(time.time()) + 3590)).status_code == 200

    def invalid(r: requests.Response, status: int, error: str, text: str = "") -> None:
        assert r.status_code == status and r.json()["error"] == error, r.text
        assert text in r.json()["error_description"]

    invalid(grant(sa_assertion(key("intruder"))), 400, "invalid_grant", "Invalid JWT Signature.")
    invalid(grant(sa_assertion(sa, _kid="ffff")), 400, "invalid_grant", "Invalid JWT Signature.")
    invalid(grant(sa_assertion(sa, iss="ghost@proj.iam.gserviceaccount.com")), 401, "invalid_client",
            "The OAuth client was not found.")
    now = int(time.time())
    invalid(grant(sa_assertion(sa, iat=now, exp=now + 3601)), 400, "invalid_grant", "short-lived token")
    invalid(grant(sa_assertion(sa, iat=now + 300, exp=now + 900)), 400, "invalid_grant", "short-lived token")
    invalid(grant(sa_assertion(sa, iat=now - 4000, exp=now - 400)), 400, "invalid_grant", "short-lived token")
    invalid(grant(sa_assertion(sa, aud="https://example.com/token")), 400, "invalid_grant", "audience")
    invalid(grant(sa_assertion(sa, scope=None)), 400, "invalid_scope")
    invalid(grant(sa_assertion(sa, sub="user@example.com")), 401, "unauthorized_client")
    invalid(grant(sa_assertion(sa), grant_type="client_credentials"), 400, "unsupported_grant_type")
    invalid(sim.form("/token", "oauth2.googleapis.com", {"grant_type": GRANT_JWT}), 400, "invalid_request")
    assert sim.form("/token", "oauth2.googleapis.com.evil", {"grant_type": GRANT_JWT}).status_code == 421
    rec = sim.last("google-oauth")
    assert rec["status"] == 421


def test_vertex_route_accepts_google_tokens(sim):
    token = sim.form("/token", "oauth2.googleapis.com",
                     {"grant_type": GRANT_JWT, "assertion": sa_assertion(key("sa"))}).json()["access_token"]
    for listener in ("vertex", "tok", "strict"):
        r, rec = sim.provider(listener, VERTEX_PATH, GEMINI, {"authorization": f"Bearer {token}"})
        assert r.status_code == 200, (listener, r.text)
        assert rec["credential"]["service"] == "google-oauth" and rec["credential"]["principal"] == SA_EMAIL
    assert sim.provider("vertex", VERTEX_PATH, GEMINI, {"authorization": "Bearer ya29.static"})[0].status_code == 200
    assert sim.provider("strict", VERTEX_PATH, GEMINI, {"authorization": "Bearer ya29.static"})[0].status_code == 401
    # An Entra token is not a Google token.
    entra = sim.entra({"client_secret": ENTRA_SECRET}).json()["access_token"]
    r, _ = sim.provider("vertex", VERTEX_PATH, GEMINI, {"authorization": f"Bearer {entra}"})
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
    sim.control("POST", "/_sim/tokens/expire", {"service": "google-oauth"})
    r, _ = sim.provider("vertex", VERTEX_PATH, GEMINI, {"authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"


# ---- Google STS and iamcredentials ------------------------------------------------------------

def test_google_sts_form_and_json(sim):
    subject = sim.idp_token("gw-gcp")
    r = sim.sts(subject)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == {"access_token": body["access_token"], "issued_token_type": ACCESS_TOKEN_TYPE,
                    "token_type": "Bearer", "expires_in": 3599}
    rec = sim.last("google-sts")
    assert rec["notes"]["encoding"] == "form" and rec["fields"]["subject_token"] == "<redacted>"
    assert rec["notes"]["principal"].endswith("/workloadIdentityPools/sim-pool/subject/system:serviceaccount:ns:gw")

    # JSON, camelCase, as google-api-go's sts/v1 posts it.
    doc = {"grantType": TOKEN_EXCHANGE, "audience": POOL, "scope": "https://www.googleapis.com/auth/iam",
           "requestedTokenType": ACCESS_TOKEN_TYPE, "subjectToken": subject, "subjectTokenType": JWT_TYPE}
    r = sim.call("POST", "/v1/token?alt=json&prettyPrint=false", "sts.googleapis.com", json=doc)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"access_token", "issued_token_type", "token_type", "expires_in"}
    assert sim.last("google-sts")["notes"]["encoding"] == "json"
    r = sim.call("POST", "/v1/token", "sts.googleapis.com", json={**doc, "subjectTokenTypo": "x"})
    assert r.status_code == 400 and "Unknown name" in r.json()["error_description"]

    def bad(r: requests.Response, error: str, text: str = "") -> None:
        assert r.status_code == 400 and r.json()["error"] == error, r.text
        assert text in r.json()["error_description"]

    bad(sim.form("/v1/token", "sts.googleapis.com", {"grant_type": TOKEN_EXCHANGE},
                 headers={"Authorization": "Bearer x"}), "invalid_request", "Authorization")
    bad(sim.sts(subject, audience="//iam.googleapis.com/projects/my-project/pools/x"), "invalid_request",
        'Invalid value for "audience"')
    bad(sim.sts(subject, audience=POOL.replace("sim-prov", "other-prov")), "invalid_target")
    bad(sim.sts(subject, subject_token_type="urn:ietf:params:oauth:token-type:saml2"), "invalid_request",
        "subject_token_type")
    bad(sim.sts(subject, scope=None), "invalid_request", "Scope")
    bad(sim.sts(subject, requested_token_type=JWT_TYPE), "invalid_request", "requested_token_type")
    bad(sim.sts(subject, grant_type="client_credentials"), "unsupported_grant_type")
    bad(sim.sts(sim.idp_token("gw-azure")), "invalid_grant", "audience")  # aud api://AzureADTokenExchange
    now = int(time.time())
    expired = make_jwt(key("intruder"), {"iss": ISSUER, "sub": "s", "aud": "gcp-aud", "exp": now + 60})
    bad(sim.sts(expired), "invalid_grant", "signature")
    bad(sim.sts(k8s_token(key("k8s"), aud="gcp-aud")), "invalid_grant", "issuer")
    sim.fault(service="oidc", expires_in=0)
    bad(sim.sts(sim.idp_token("gw-gcp")), "invalid_grant", "expired")


def test_iamcredentials_generate_access_token(sim):
    sts_token = sim.sts_token()
    now = time.time()
    r = sim.generate(sts_token, {"scope": ["https://www.googleapis.com/auth/cloud-platform"], "lifetime": "600s",
                                 "delegates": None})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"accessToken", "expireTime"} and body["accessToken"].startswith("ya29.")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["expireTime"])
    expire = time.mktime(time.strptime(body["expireTime"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(expire - (now + 600)) < 5
    assert sim.generate(sts_token, {"scope": ["x"]}).status_code == 200  # default lifetime, no delegates
    assert sim.generate(sts_token, {"scope": ["x"], "delegates": []}).status_code == 200

    # The impersonated token opens Vertex.
    r, rec = sim.provider("vertex", VERTEX_PATH, GEMINI, {"authorization": f"Bearer {body['accessToken']}"})
    assert r.status_code == 200 and rec["credential"]["principal"] == TARGET_SA
    # So does the STS token itself (no impersonation).
    assert sim.provider("strict", VERTEX_PATH, GEMINI, {"authorization": f"Bearer {sts_token}"})[0].status_code == 200

    def google_error(r: requests.Response, code: int, status: str) -> dict:
        assert r.status_code == code, r.text
        err = r.json()["error"]
        assert err["code"] == code and err["status"] == status and err["message"]
        return err

    google_error(sim.generate(None, {"scope": ["x"]}), 401, "UNAUTHENTICATED")
    google_error(sim.generate("ya29.unknown", {"scope": ["x"]}), 401, "UNAUTHENTICATED")
    err = google_error(sim.generate(sts_token, {"scope": ["x"]}, email="stranger@proj.iam.gserviceaccount.com"),
                       403, "PERMISSION_DENIED")
    assert err["message"] == ("Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not "
                              "exist).")
    assert err["details"][0]["reason"] == "IAM_PERMISSION_DENIED"
    oauth_token = sim.form("/token", "oauth2.googleapis.com",
                           {"grant_type": GRANT_JWT, "assertion": sa_assertion(key("sa"))}).json()["access_token"]
    google_error(sim.generate(oauth_token, {"scope": ["x"]}), 403, "PERMISSION_DENIED")
    for bad_body in ({"scope": []}, {"lifetime": "600s"}, {"scope": ["x"], "lifetime": "3601s"},
                     {"scope": ["x"], "lifetime": "1h"}, {"scope": ["x"], "lifetime": "600.5s"},
                     {"scope": ["x"], "delegates": ["projects/-/serviceAccounts/a@b"]},
                     {"scope": ["x"], "other": 1}):
        google_error(sim.generate(sts_token, bad_body), 400, "INVALID_ARGUMENT")
    google_error(sim.generate(sts_token, {"scope": ["x"]}, project="proj"), 400, "INVALID_ARGUMENT")
    sim.control("POST", "/_sim/tokens/expire", {"service": "google-sts"})
    err = google_error(sim.generate(sts_token, {"scope": ["x"]}), 401, "UNAUTHENTICATED")
    assert err["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED"


# ---- AWS STS ------------------------------------------------------------------------------------

def xml_creds(r: requests.Response, action: str) -> dict:
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml"), r.text
    root = ET.fromstring(r.content)
    assert root.tag == f"{STS_NS}{action}Response"
    result = root.find(f"{STS_NS}{action}Result")
    creds = {c.tag.replace(STS_NS, ""): c.text for c in result.find(f"{STS_NS}Credentials")}
    creds["_arn"] = result.find(f"{STS_NS}AssumedRoleUser/{STS_NS}Arn").text
    creds["_result"] = {c.tag.replace(STS_NS, ""): c.text for c in result}
    assert root.find(f"{STS_NS}ResponseMetadata/{STS_NS}RequestId").text
    return creds


def aws_error(r: requests.Response, status: int, code: str, json_body: bool = False) -> str:
    assert r.status_code == status, r.text
    if json_body:
        doc = r.json()
        assert doc["Error"]["Code"] == code and doc["Error"]["Type"] == "Sender" and doc["RequestId"], doc
        return doc["Error"]["Message"]
    root = ET.fromstring(r.content)
    assert root.tag == f"{STS_NS}ErrorResponse", r.text
    assert root.find(f"{STS_NS}Error/{STS_NS}Code").text == code, r.text
    assert root.find(f"{STS_NS}Error/{STS_NS}Type").text == "Sender"
    assert root.find(f"{STS_NS}RequestId").text
    return root.find(f"{STS_NS}Error/{STS_NS}Message").text


def test_aws_web_identity_xml_and_json(sim):
    token = sim.idp_token("gw-aws")
    now = time.time()
    creds = xml_creds(sim.web_identity(token), "AssumeRoleWithWebIdentity")
    assert re.fullmatch(r"ASIA[A-Z2-7]{16}", creds["AccessKeyId"]) and creds["SecretAccessKey"] and \
        len(creds["SessionToken"]) > 100
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", creds["Expiration"])
    assert creds["_arn"] == "arn:aws:sts::123456789012:assumed-role/sim-bedrock/ai-gateway-policy"
    assert creds["_result"]["SubjectFromWebIdentityToken"] == "system:serviceaccount:ns:gw"
    assert creds["_result"]["Audience"] == "sts.amazonaws.com" and creds["_result"]["Provider"] == ISSUER

    # Envoy's way: GET with the query string, Accept: application/json.
    r = sim.web_identity(token, get=True, accept_json=True, DurationSeconds="900")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
    assert re.search(r'"Expiration": \d\.\d+E9', r.text), r.text  # scientific notation, as STS sends it
    result = r.json()["AssumeRoleWithWebIdentityResponse"]["AssumeRoleWithWebIdentityResult"]
    assert isinstance(result["Credentials"]["Expiration"], float)
    assert abs(result["Credentials"]["Expiration"] - (now + 900)) < 5
    assert result["Credentials"]["AccessKeyId"].startswith("ASIA")
    assert r.json()["AssumeRoleWithWebIdentityResponse"]["ResponseMetadata"]["RequestId"]
    rec = sim.last("aws-sts")
    assert rec["method"] == "GET" and rec["query"]["WebIdentityToken"] == "<redacted>"
    assert rec["jwt"]["WebIdentityToken"]["claims"]["aud"] == "sts.amazonaws.com"

    # Regional endpoint; a test-side issuer (a Kubernetes projected token).
    assert xml_creds(sim.web_identity(k8s_token(key("k8s")), host="sts.eu-west-3.amazonaws.com"),
                     "AssumeRoleWithWebIdentity")["AccessKeyId"].startswith("ASIA")

    msg = aws_error(sim.web_identity(token, RoleSessionName="has space"), 400, "ValidationError")
    assert msg.startswith("1 validation error detected: Value 'has space' at 'roleSessionName' failed to satisfy "
                          "constraint: Member must satisfy regular expression pattern")
    aws_error(sim.web_identity(token, RoleSessionName="a"), 400, "ValidationError")
    aws_error(sim.web_identity(token, RoleSessionName="x" * 65), 400, "ValidationError")
    msg = aws_error(sim.web_identity(token, RoleSessionName=None, RoleArn=None), 400, "ValidationError")
    assert msg.startswith("2 validation errors detected") and "Value null at 'roleSessionName'" in msg
    aws_error(sim.web_identity(token, DurationSeconds="899"), 400, "ValidationError")
    msg = aws_error(sim.web_identity(token, DurationSeconds="7200"), 400, "ValidationError")
    assert "MaxSessionDuration" in msg
    aws_error(sim.web_identity(token, Version=None), 400, "MissingParameter")
    aws_error(sim.web_identity(token, Version="2011-06-16"), 400, "InvalidAction")
    aws_error(sim.web_identity(token, ProviderId="www.amazon.com"), 400, "ValidationError")
    msg = aws_error(sim.web_identity(sim.idp_token("gw-azure")), 400, "InvalidIdentityToken")
    assert msg == "Incorrect token audience"
    aws_error(sim.web_identity(token, RoleArn="arn:aws:iam::123456789012:role/unknown"), 403, "AccessDenied")
    aws_error(sim.web_identity(token, RoleArn=OTHER_ROLE), 403, "AccessDenied")  # trusts sub "nobody" only
    now = int(time.time())
    aws_error(sim.web_identity(k8s_token(key("k8s"), iat=now - 700, exp=now - 100)), 400, "ExpiredTokenException")
    aws_error(sim.web_identity(k8s_token(key("intruder"))), 400, "InvalidIdentityToken")
    aws_error(sim.web_identity(make_jwt(key("intruder"), {"iss": "https://unknown.test", "aud": "x",
                                                           "exp": now + 60})), 400, "InvalidIdentityToken")
    msg = aws_error(sim.web_identity(token, RoleSessionName="a", accept_json=True), 400, "ValidationError",
                    json_body=True)
    assert "roleSessionName" in msg
    assert sim.web_identity(token, host="sts.amazonaws.example.com").status_code == 421


def signed_sts(sim: TokenSim, params: dict, *, akid: str = BASE_AKID, secret: str = BASE_SECRET,
               host: str = "sts.amazonaws.com", region: str = "us-east-1", get: bool = False,
               accept_json: bool = False) -> requests.Response:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = {"Action": "AssumeRole", "Version": "2011-06-15", **params}
    headers = {"Accept": "application/json"} if accept_json else {}
    if get:
        req = AWSRequest(method="GET", url=f"https://{host}/?{urlencode(body)}", headers=headers)
    else:
        headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
        req = AWSRequest(method="POST", url=f"https://{host}/", data=urlencode(body), headers=headers)
    SigV4Auth(Credentials(akid, secret), "sts", region).add_auth(req)
    path = "/?" + urlencode(body) if get else "/"
    return sim.call(req.method, path, host, headers=dict(req.headers.items()), data=None if get else req.data)


def test_aws_assume_role_sigv4(sim):
    params = {"RoleArn": ROLE, "RoleSessionName": "gw"}
    creds = xml_creds(signed_sts(sim, params), "AssumeRole")
    assert creds["AccessKeyId"].startswith("ASIA") and "SubjectFromWebIdentityToken" not in creds["_result"]
    assert sim.last("aws-sts")["auth"] == {"scheme": "sigv4", "access_key_id": BASE_AKID, "region": "us-east-1",
                                           "service": "sts", "signed_headers": ["content-type", "host",
                                                                                "x-amz-date"],
                                           "session_token_present": False}
    r = signed_sts(sim, params, get=True, accept_json=True, host="sts.eu-west-1.amazonaws.com", region="eu-west-1")
    assert r.status_code == 200, r.text
    assert r.json()["AssumeRoleResponse"]["AssumeRoleResult"]["AssumedRoleUser"]["Arn"] == \
        "arn:aws:sts::123456789012:assumed-role/sim-bedrock/gw"

    assert "signature" in aws_error(signed_sts(sim, params, secret="wrong"), 403, "SignatureDoesNotMatch")
    aws_error(signed_sts(sim, params, host="sts.eu-west-1.amazonaws.com"), 403, "SignatureDoesNotMatch")
    aws_error(signed_sts(sim, params, akid="AKIDNOBODY"), 403, "InvalidClientTokenId")
    aws_error(signed_sts(sim, params, akid=OTHER_AKID, secret=OTHER_SECRET), 403, "AccessDenied")
    aws_error(signed_sts(sim, {"RoleArn": ROLE, "RoleSessionName": "bad name"}), 400, "ValidationError")
    aws_error(sim.form("/", "sts.amazonaws.com", {"Action": "AssumeRole", "Version": "2011-06-15", **params}), 403,
              "MissingAuthenticationToken")
    aws_error(sim.form("/", "sts.amazonaws.com", {"Action": "GetCallerIdentity", "Version": "2011-06-15"}), 400,
              "InvalidAction")


def sign_bedrock(sim: TokenSim, body: bytes, akid: str, secret: str, token: str | None,
                 listener: str = "bedrock") -> dict:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method="POST", url=sim.url(CONVERSE_PATH, listener), data=body,
                     headers={"content-type": "application/json"})
    SigV4Auth(Credentials(akid, secret, token), "bedrock", "us-east-1").add_auth(req)
    return dict(req.headers.items())


def test_bedrock_accepts_sts_credentials_until_they_expire(sim):
    r = sim.web_identity(sim.idp_token("gw-aws"), accept_json=True)
    c = r.json()["AssumeRoleWithWebIdentityResponse"]["AssumeRoleWithWebIdentityResult"]["Credentials"]
    body = json.dumps(CONVERSE).encode()
    for listener in ("bedrock", "tok", "strict"):
        h = sign_bedrock(sim, body, c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"], listener)
        r, rec = sim.provider(listener, CONVERSE_PATH, {}, h, data=body)
        assert r.status_code == 200, (listener, r.text)
        assert rec["credential"]["access_key_id"] == c["AccessKeyId"] and rec["credential"]["kind"] == "aws"
        assert "SecretAccessKey" not in json.dumps(rec["credential"]) and c["SecretAccessKey"] not in json.dumps(rec)
    # The static credentials still work where expected, not on the strict listener.
    h = sign_bedrock(sim, body, STATIC_AKID, STATIC_SECRET, None)
    assert sim.provider("bedrock", CONVERSE_PATH, {}, h, data=body)[0].status_code == 200
    h = sign_bedrock(sim, body, STATIC_AKID, STATIC_SECRET, None, "strict")
    assert sim.provider("strict", CONVERSE_PATH, {}, h, data=body)[0].status_code == 403
    # Without (or with another) session token.
    for token in (None, "other-token"):
        h = sign_bedrock(sim, body, c["AccessKeyId"], c["SecretAccessKey"], token)
        r, _ = sim.provider("bedrock", CONVERSE_PATH, {}, h, data=body)
        assert r.status_code == 403 and r.headers["x-amzn-errortype"].startswith("UnrecognizedClientException")
    h = sign_bedrock(sim, body, c["AccessKeyId"], "wrong-secret", c["SessionToken"])
    r, _ = sim.provider("bedrock", CONVERSE_PATH, {}, h, data=body)
    assert r.status_code == 403 and r.headers["x-amzn-errortype"].startswith("InvalidSignatureException")

    # Short-lived credentials (DurationSeconds cannot go below 900: the fault's expires_in can).
    sim.fault(service="aws-sts", expires_in=1)
    c = xml_creds(sim.web_identity(sim.idp_token("gw-aws")), "AssumeRoleWithWebIdentity")
    time.sleep(1.2)
    h = sign_bedrock(sim, body, c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    r, rec = sim.provider("bedrock", CONVERSE_PATH, {}, h, data=body)
    assert r.status_code == 403 and r.headers["x-amzn-errortype"].startswith("ExpiredTokenException"), r.text
    assert r.json() == {"message": "The security token included in the request is expired"}
    # An expired issued key cannot sign AssumeRole either.
    r = signed_sts(sim, {"RoleArn": ROLE, "RoleSessionName": "gw"}, akid=c["AccessKeyId"],
                   secret=c["SecretAccessKey"])
    aws_error(r, 403, "ExpiredToken")


# ---- faults, delays, the exchange log, the control paths -----------------------------------

def test_error_faults_count_and_body(sim):
    sim.fault(service="entra", status=503, count=1)
    r = sim.entra({"client_secret": ENTRA_SECRET})
    aadsts(r, 503, "temporarily_unavailable", 50000)
    assert sim.entra({"client_secret": ENTRA_SECRET}).status_code == 200
    faults = sim.control("GET", "/_sim/token-faults").json()
    assert faults[0]["service"] == "entra" and faults[0]["count"] == 0

    sim.fault(service="aws-sts", status=400, error="Throttling", error_description="Rate exceeded")
    token = sim.idp_token("gw-aws")
    msg = aws_error(sim.web_identity(token), 400, "Throttling")
    assert msg == "Rate exceeded"
    assert aws_error(sim.web_identity(token, accept_json=True), 400, "Throttling", json_body=True) == "Rate exceeded"
    rec = sim.last("aws-sts")
    assert rec["fault"] is True and rec["outcome"] == "Throttling"
    sim.control("DELETE", "/_sim/token-faults?service=aws-sts")
    assert sim.web_identity(token).status_code == 200

    sim.fault(service="google-oauth", status=500, body="upstream exploded", content_type="text/plain")
    r = sim.form("/token", "oauth2.googleapis.com", {"grant_type": GRANT_JWT, "assertion": sa_assertion(key("sa"))})
    assert r.status_code == 500 and r.text == "upstream exploded" and r.headers["content-type"] == "text/plain"
    sim.fault(service="iamcredentials", status=429)
    r = sim.generate("x", {"scope": ["x"]})
    assert r.status_code == 429 and r.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    sim.fault(service="oidc", status=400, error="invalid_scope")
    r = sim.form("/oauth2/token", "oidc.sim.test", {"grant_type": "client_credentials"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"

    for bad in ({"service": "nope"}, {"service": "entra", "status": "500"}, {"service": "entra", "delay": 5},
                {"service": "entra", "body": "x"}):
        assert sim.control("POST", "/_sim/token-faults", bad).status_code == 400


def test_delay_does_not_block_and_disconnect_is_recorded(sim):
    sim.fault(service="oidc", delay_ms=2000, count=1)
    slow: dict = {}

    def call():
        t0 = time.monotonic()
        slow["r"] = sim.form("/oauth2/token", "oidc.sim.test", {
            "grant_type": "client_credentials", "client_id": "gw-aws", "client_secret": SECRETS["gw-aws"][0]})
        slow["t"] = time.monotonic() - t0

    th = threading.Thread(target=call)
    th.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    other = requests.post(sim.url(f"/{TENANT}/oauth2/v2.0/token"), headers={"Host": ENTRA_HOST}, timeout=5,
                          data={"grant_type": "client_credentials", "client_id": "app-1", "scope": AZURE_SCOPE,
                                "client_secret": ENTRA_SECRET})
    assert other.status_code == 200 and time.monotonic() - t0 < 1.0  # not after the 2 s wait
    th.join(10)
    assert slow["r"].status_code == 200 and slow["t"] >= 1.9
    assert sim.last("oidc")["delay_ms"] == 2000
    assert sim.last("oidc")["client_disconnected"] is False

    # A client that gives up while the simulator waits: nothing is sent, the exchange says so.
    sim.fault(service="google-sts", delay_ms=3000)
    form = urlencode({"grant_type": TOKEN_EXCHANGE})
    raw = (f"POST /v1/token HTTP/1.1\r\nHost: sts.googleapis.com\r\nContent-Type: application/x-www-form-urlencoded"
           f"\r\nContent-Length: {len(form)}\r\n\r\n{form}").encode()
    port = int(sim.urls["tok"].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(raw)
        time.sleep(0.3)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not sim.last("google-sts")["client_disconnected"]:
        time.sleep(0.05)
    rec = sim.last("google-sts")
    assert rec["client_disconnected"] is True and rec["delay_ms"] == 3000
    # Timeouts of a client library look the same.
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(sim.url("/v1/token"), headers={"Host": "sts.googleapis.com"}, data={"grant_type": "x"},
                      timeout=0.3)


def test_exchange_log_keeps_no_secrets(sim):
    idp = sim.idp_token("gw-azure")
    entra_token = sim.entra({"client_assertion_type": JWT_BEARER, "client_assertion": idp}).json()["access_token"]
    entra_basic = base64.b64encode(f"app-1:{ENTRA_SECRET}".encode()).decode()
    sim.entra({}, headers={"Authorization": f"Basic {entra_basic}"})
    assertion = sa_assertion(key("sa"))
    g = sim.form("/token", "oauth2.googleapis.com", {"grant_type": GRANT_JWT, "assertion": assertion}).json()
    sts_token = sim.sts_token()
    aws = sim.web_identity(sim.idp_token("gw-aws"), accept_json=True).json()
    c = aws["AssumeRoleWithWebIdentityResponse"]["AssumeRoleWithWebIdentityResult"]["Credentials"]
    signed_sts(sim, {"RoleArn": ROLE, "RoleSessionName": "gw"})

    log = sim.exchanges()
    text = json.dumps(log) + sim.control("GET", "/_sim/identities").text + sim.control("GET", "/_sim/tokens").text
    for secret in [idp, entra_token, ENTRA_SECRET, entra_basic, assertion, g["access_token"], sts_token,
                   c["SecretAccessKey"], c["SessionToken"], BASE_SECRET, SECRETS["gw-azure"][0],
                   quote(SECRETS["gw-azure"][0], safe="")]:
        assert secret not in text
    services = [r["service"] for r in log]
    assert {"oidc", "entra", "google-oauth", "google-sts", "aws-sts"} <= set(services)
    entra_recs = [r for r in log if r["service"] == "entra"]
    assert entra_recs[0]["secrets_present"] == ["client_assertion"]
    assert entra_recs[0]["jwt"]["client_assertion"]["claims"]["iss"] == ISSUER
    assert entra_recs[0]["fields"]["client_id"] == "app-1" and entra_recs[0]["host"] == ENTRA_HOST
    assert entra_recs[0]["issued"]["expires_at"] > time.time() and entra_recs[0]["issued"]["fingerprint"]
    assert entra_recs[1]["auth"] == {"scheme": "basic", "client_id": "app-1"}
    oidc_rec = next(r for r in log if r["service"] == "oidc")
    assert oidc_rec["fields"]["client_secret"] == "<redacted>" and oidc_rec["outcome"] == "ok"
    assert all(isinstance(r["time"], float) and r["status"] == 200 for r in log)
    assert [r["service"] for r in sim.exchanges("aws-sts")] == ["aws-sts", "aws-sts"]
    assert sim.control("DELETE", "/_sim/exchanges").status_code == 200 and sim.exchanges() == []


def test_identities_tokens_and_expect_issued_controls(sim):
    doc = sim.control("GET", "/_sim/identities").json()
    assert doc["idp"]["issuer"] == ISSUER and "BEGIN PUBLIC KEY" in doc["idp"]["public_key_pem"]
    app = doc["entra_apps"][0]
    assert app["client_secrets"] == ["<present>"] and app["federated"][0]["audience"] == "api://AzureADTokenExchange"
    assert doc["workload_pools"][0]["project_number"] == "123456789"

    # All or nothing: a bad entry registers nothing.
    r = sim.control("POST", "/_sim/identities", {"oidc_clients": [{"client_id": "new", "client_secret": "s"}],
                                                 "aws_roles": [{"role_arn": "not-an-arn"}]})
    assert r.status_code == 400 and "role" in r.json()["error"]
    assert "new" not in [c["client_id"] for c in sim.control("GET", "/_sim/identities").json()["oidc_clients"]]
    assert sim.control("POST", "/_sim/identities", {"unknown": []}).status_code == 400
    assert sim.control("POST", "/_sim/identities", {"workload_pools": [{"audience": "//iam.googleapis.com/x",
                                                                        "issuer": ISSUER}]}).status_code == 400
    # Registering later works at once.
    r = sim.control("POST", "/_sim/identities", {"oidc_clients": [{"client_id": "late", "client_secret": "s2",
                                                                   "audience": ["a", "b"], "scopes": ["read"]}]})
    assert r.status_code == 200 and r.json()["registered"]["oidc_clients"] == 1
    r = sim.form("/oauth2/token", "oidc.sim.test", {"grant_type": "client_credentials", "client_id": "late",
                                                     "client_secret": "s2", "scope": "read openid"})
    assert r.status_code == 200 and jwt_parts(r.json()["access_token"])[1]["aud"] == ["a", "b"]
    r = sim.form("/oauth2/token", "oidc.sim.test", {"grant_type": "client_credentials", "client_id": "late",
                                                     "client_secret": "s2", "scope": "write"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"

    tokens = sim.control("GET", "/_sim/tokens?service=oidc").json()
    assert tokens and all(t["service"] == "oidc" and len(t["fingerprint"]) == 16 for t in tokens)
    assert sim.control("POST", "/_sim/tokens/expire", {"service": "nope"}).status_code == 400

    assert sim.control("GET", "/_sim/expect-issued").json() == {"listeners": ["strict"]}
    assert sim.control("POST", "/_sim/expect-issued", {"listeners": ["vertex"]}).json() == \
        {"listeners": ["strict", "vertex"]}
    try:
        r, _ = sim.provider("vertex", VERTEX_PATH, GEMINI, {"authorization": "Bearer ya29.static"})
        assert r.status_code == 200  # --expect-bearer still satisfied
        r, _ = sim.provider("vertex", VERTEX_PATH, GEMINI)
        assert r.status_code == 401
    finally:
        sim.control("DELETE", "/_sim/expect-issued")
        sim.control("POST", "/_sim/expect-issued", {"listeners": ["strict"]})


def test_command_line_identities_and_issuer(tmp_path):
    doc = {"oidc_clients": [{"client_id": "cli", "client_secret": "cli-secret", "audience": "sts.amazonaws.com"}],
           "aws_roles": [{"role_arn": ROLE, "web_identity": [{"issuer": "http://idp.local:9000/realms/x",
                                                              "audience": "sts.amazonaws.com"}]}]}
    (tmp_path / "ids.json").write_text(json.dumps(doc))
    proc, urls = start_simulator(tmp_path, ["only"], ["--oidc-issuer", "http://idp.local:9000/realms/x",
                                                      "--identities", str(tmp_path / "ids.json")])
    try:
        t = TokenSim({"tok": urls["only"]})
        r = t.call("GET", "/realms/x/.well-known/openid-configuration", "idp.local:9000")
        assert r.status_code == 200 and r.json()["token_endpoint"] == "http://idp.local:9000/realms/x/oauth2/token"
        assert t.call("GET", "/realms/x/.well-known/openid-configuration", "idp.local").status_code == 421
        r = t.form("/realms/x/oauth2/token", "idp.local:9000", {"grant_type": "client_credentials",
                                                                 "client_id": "cli", "client_secret": "cli-secret"})
        assert r.status_code == 200, r.text
        assert jwt_parts(r.json()["access_token"])[1]["iss"] == "http://idp.local:9000/realms/x"
        creds = xml_creds(t.web_identity(r.json()["access_token"]), "AssumeRoleWithWebIdentity")
        assert creds["AccessKeyId"].startswith("ASIA")
        # DELETE /_sim/identities keeps the command line's issuer.
        t.control("DELETE", "/_sim/identities")
        assert t.control("GET", "/_sim/identities").json()["idp"]["issuer"] == "http://idp.local:9000/realms/x"
    finally:
        stop(proc)
