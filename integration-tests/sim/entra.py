"""Azure Entra ID v2.0 token endpoint, client-credentials grant:
POST /{tenant}/oauth2/v2.0/token with a client secret (form or HTTP Basic) or a
federated client assertion (a JWT from a trusted OIDC issuer matching one of the
app's federated identity credentials). Errors in the AADSTS shape."""

from __future__ import annotations

import secrets
import time
import uuid

from . import jws
from .core import Response, json_response
from .exchange import FORM, TokenCtx, TokenError, basic_auth, media_type, verify_trusted
from .identity import EntraApp
from .issued import ENTRA, Issued

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# MSAL appends these to every request, client credentials included: ignored.
OIDC_SCOPES = {"openid", "offline_access", "profile"}
HOSTS = {"login.microsoftonline.com", "login.microsoftonline.us", "login.partner.microsoftonline.cn",
         "login.chinacloudapi.cn"}


def default_code(status: int) -> str:
    return {401: "invalid_client", 403: "access_denied"}.get(
        status, "temporarily_unavailable" if status >= 500 else "invalid_request")


def render_error(e: TokenError, tc: TokenCtx) -> Response:
    code = int(e.extra.get("aadsts", 50000))
    now = time.time()
    ts = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(now))
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    msg = e.message if e.message.startswith("AADSTS") else f"AADSTS{code}: {e.message}"
    return json_response(e.status, {
        "error": e.code,
        "error_description": f"{msg}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {ts}",
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }, extra_headers=[("cache-control", "no-store, no-cache"), ("x-ms-request-id", trace)])


def _fail(status: int, error: str, aadsts: int, message: str) -> TokenError:
    return TokenError(status, error, f"AADSTS{aadsts}: {message}", aadsts=aadsts)


def _missing(name: str, note: str = "") -> TokenError:
    return _fail(400, "invalid_request", 900144, f"The request body must contain the following parameter: "
                                                 f"'{name}'.{note}")


def _resource(scope: str) -> str:
    """The one resource of a client-credentials scope (`<resource>/.default`)."""
    wanted = [s for s in scope.split() if s not in OIDC_SCOPES]
    if not wanted:
        raise _fail(400, "invalid_scope", 70011, f"The provided value for the input parameter 'scope' is not valid. "
                                                 f"The scope {scope} is not valid.")
    for s in wanted:
        if not s.endswith("/.default") or s == "/.default":
            raise _fail(400, "invalid_scope", 1002012,
                        f"The provided value for scope {s} is not valid. Client credential flows must have a scope "
                        f"value with /.default suffixed to the resource identifier (application ID URI).")
    resources = {s[:-len("/.default")] for s in wanted}
    if len(resources) > 1:
        raise _fail(400, "invalid_scope", 70011, f"The provided value for the input parameter 'scope' is not valid. "
                                                 f"The scope {scope} is not valid: scopes of several resources "
                                                 f"({', '.join(sorted(resources))}).")
    return resources.pop()


def _check_assertion(tc: TokenCtx, app: EntraApp, form: dict) -> str:
    """Verifies the federated client assertion; returns its subject."""
    if form.get("client_assertion_type") != JWT_BEARER:
        raise _fail(400, "invalid_request", 9002313,
                    f"Invalid request. Request is malformed or invalid. client_assertion_type must be "
                    f"{JWT_BEARER}, got {form.get('client_assertion_type')!r}.")
    assertion = form.get("client_assertion")
    if not assertion:
        raise _missing("client_assertion")
    try:
        _h, unverified, _, _ = jws.decode(assertion)
    except jws.JwtError:
        raise _fail(400, "invalid_request", 50027, "JWT token is invalid or malformed.") from None
    iss = unverified.get("iss")
    feds = [f for f in app.federated if f.issuer == iss]
    if not feds:
        raise _fail(401, "invalid_client", 700211,
                    f"No matching federated identity record found for presented assertion issuer '{iss}'. Please "
                    f"note that the matching is done using a case-sensitive comparison. Check your federated "
                    f"identity credential Subject, Audience and Issuer against the presented assertion.")
    try:
        _header, claims = verify_trusted(tc.reg, assertion, tc.now)
    except jws.JwtError as e:
        if e.reason in ("expired", "not_yet_valid"):
            exp, nbf = jws.number(unverified, "exp"), jws.number(unverified, "nbf") or jws.number(unverified, "iat")
            raise _fail(401, "invalid_client", 700024,
                        f"Client assertion is not within its valid time range. Current time: "
                        f"{_ts(tc.now)}, assertion valid from {_ts(nbf)}, expiry time of assertion {_ts(exp)}. "
                        f"Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/"
                        f"active-directory-certificate-credentials .") from None
        if e.reason == "malformed":
            raise _fail(400, "invalid_request", 50027, f"JWT token is invalid or malformed. ({e.message})") from None
        reason = ("The key was not found." if e.reason == "issuer" else
                  "The provided signature value did not match the expected signature value.")
        raise _fail(401, "invalid_client", 50013, f"Assertion failed signature validation. [Reason - {reason}]") \
            from None
    sub, auds = claims.get("sub"), jws.audiences(claims)
    if not any(f.subject == sub and f.audience in auds for f in feds):
        raise _fail(400, "invalid_request", 70021,
                    f"No matching federated identity record found for presented assertion. Assertion Issuer: "
                    f"'{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{','.join(auds)}'. "
                    f"https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation")
    return sub


def _ts(t: float | None) -> str:
    return "unknown" if t is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


def handle(tc: TokenCtx) -> Response:
    req = tc.req
    if req.method != "POST":
        raise _fail(405, "invalid_request", 900561, f"The endpoint only accepts POST requests. Received a "
                                                    f"{req.method} request.")
    tenant = req.path.split("/")[1]
    is_form = media_type(req) == FORM
    form = tc.form() if is_form else {}
    note = "" if is_form else f" (simulator: the body is not {FORM} but {req.header('content-type')!r})"
    if is_form and tc.repeated:
        raise _fail(400, "invalid_request", 9002313, f"Invalid request. Request is malformed or invalid. "
                                                     f"Repeated parameters: {', '.join(tc.repeated)}.")
    apps = [a for a in tc.reg.entra_apps.values() if a.has_tenant(tenant)]
    if not apps:
        raise _fail(400, "invalid_request", 90002,
                    f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
                    f"into the correct cloud. Check with your subscription administrator, this may happen if there "
                    f"are no active subscriptions for the tenant.")
    grant = form.get("grant_type")
    if not grant:
        raise _missing("grant_type", note)
    if grant != "client_credentials":
        raise _fail(400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'.")

    basic = basic_auth(req)
    client_id = form.get("client_id") or (basic[0] if basic else None)
    if not client_id:
        raise _missing("client_id")
    if basic is not None and basic[0] != client_id:
        raise _fail(401, "invalid_client", 7000215, "Invalid client secret provided: the Basic credentials name "
                                                    "another client than client_id.")
    app = next((a for a in apps if a.client_id == client_id), None)
    if app is None:
        raise _fail(400, "unauthorized_client", 700016,
                    f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can "
                    f"happen if the application has not been installed by the administrator of the tenant or "
                    f"consented to by any user in the tenant. You may have sent your authentication request to the "
                    f"wrong tenant.")
    scope = form.get("scope")
    if not scope:
        raise _missing("scope")
    resource = _resource(scope)

    secret = form.get("client_secret")
    if basic is not None:
        if secret is not None:
            raise _fail(400, "invalid_request", 9002313, "Invalid request. Request is malformed or invalid. The "
                                                         "client secret was sent both in Basic and in the body.")
        secret = basic[1]
    has_assertion = "client_assertion" in form or "client_assertion_type" in form
    if secret is not None and has_assertion:
        raise _fail(400, "invalid_request", 9002313, "Invalid request. Request is malformed or invalid. Both "
                                                     "client_secret and client_assertion were sent.")
    if secret is None and not has_assertion:
        raise _fail(401, "invalid_client", 7000218, "The request body must contain the following parameter: "
                                                    "'client_assertion' or 'client_secret'.")
    if secret is not None:
        if not any(secrets.compare_digest(secret.encode(), s.encode()) for s in app.secrets):
            raise _fail(401, "invalid_client", 7000215,
                        f"Invalid client secret provided. Ensure the secret being sent in the request is the client "
                        f"secret value, not the client secret ID, for a secret added to app '{client_id}'.")
        credential, subject = ("basic" if basic is not None else "secret"), None
    else:
        credential, subject = "federated", _check_assertion(tc, app, form)
    tc.note(tenant=tenant, client_id=client_id, resource=resource, credential=credential, assertion_subject=subject)

    lifetime = tc.lifetime(3599)
    now = int(tc.now)
    oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{app.tenant}/{client_id}"))
    token = tc.reg.entra_key.sign({
        "aud": resource, "iss": f"https://sts.windows.net/{app.tenant}/", "iat": now, "nbf": now,
        "exp": now + lifetime, "appid": client_id, "appidacr": "2" if credential == "federated" else "1",
        "idtyp": "app", "oid": oid, "sub": oid, "tid": app.tenant, "ver": "1.0", "uti": secrets.token_hex(8),
    })
    tc.issue(Issued(tc.service, ENTRA, token, tc.now, tc.now + lifetime, client_id, audience=resource,
                    scopes=scope.split(), details={"tenant": app.tenant, "credential": credential}))
    return json_response(200, {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                               "access_token": token},
                         extra_headers=[("cache-control", "no-store, no-cache"),
                                        ("x-ms-request-id", str(uuid.uuid4()))])
