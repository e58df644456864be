"""Google token services:

- OAuth 2.0 JWT-bearer grant (RFC 7523) of service-account keys: POST /token on
  oauth2.googleapis.com;
- workload identity federation STS (RFC 8693): POST /v1/token on sts.googleapis.com,
  form (snake_case) or JSON (camelCase) bodies, snake_case answers;
- service-account impersonation: POST /v1/projects/-/serviceAccounts/{email}
  :generateAccessToken on iamcredentials.googleapis.com, authorized by an STS token.

The first two answer OAuth errors {"error","error_description"}; iamcredentials the
Google API envelope {"error":{"code","message","status","details"}}."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from . import gemini, jws
from .core import Response, json_response
from .exchange import FORM, TokenCtx, TokenError, bearer, iso_z, media_type, verify_trusted
from .identity import GOOGLE_TOKEN_URI, POOL_AUDIENCE, WorkloadPool
from .issued import GOOGLE, Issued, random_token

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_TOKEN_TYPES = {"urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"}
# Audiences a service-account assertion may name: the key file's token_uri or these.
OAUTH_AUDIENCES = {GOOGLE_TOKEN_URI, "https://www.googleapis.com/oauth2/v4/token"}
MAX_ASSERTION_LIFETIME = 3600
SKEW = 60
IAM_PATH = re.compile(r"^/v1/projects/([^/]+)/serviceAccounts/([^/:]+):generateAccessToken$")
STS_FIELDS = {"grantType": "grant_type", "audience": "audience", "scope": "scope",
              "requestedTokenType": "requested_token_type", "subjectToken": "subject_token",
              "subjectTokenType": "subject_token_type", "options": "options"}
HOSTS = {"google-oauth": "oauth2.googleapis.com", "google-sts": "sts.googleapis.com",
         "iamcredentials": "iamcredentials.googleapis.com"}

UNAUTHENTICATED = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
                   "other valid authentication credential. See https://developers.google.com/identity/sign-in/web/"
                   "devconsole-project.")
MISSING_CREDENTIAL = ("Request is missing required authentication credential. Expected OAuth 2 access token, login "
                      "cookie or other valid authentication credential. See https://developers.google.com/identity/"
                      "sign-in/web/devconsole-project.")
PERMISSION = "iam.serviceAccounts.getAccessToken"


# ---- errors ---------------------------------------------------------------------------

def oauth_default_code(status: int) -> str:
    return {401: "invalid_client", 403: "access_denied"}.get(
        status, "internal_failure" if status >= 500 else "invalid_request")


def oauth_error(e: TokenError, tc: TokenCtx) -> Response:
    return json_response(e.status, {"error": e.code, "error_description": e.message},
                         extra_headers=[("cache-control", "no-cache, no-store, max-age=0, must-revalidate")])


def iam_default_code(status: int) -> str:
    return gemini.status_name(status)


def iam_error(e: TokenError, tc: TokenCtx) -> Response:
    body: dict[str, Any] = {"code": e.status, "message": e.message, "status": e.code}
    if e.extra.get("details"):
        body["details"] = e.extra["details"]
    return json_response(e.status, {"error": body})


def _error_info(reason: str, domain: str, **metadata: str) -> list[dict]:
    return [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": domain,
             "metadata": metadata}]


def _form_checks(tc: TokenCtx) -> dict[str, str]:
    req = tc.req
    if req.method != "POST":
        raise TokenError(405, "invalid_request", f"{req.method} is not allowed: use POST")
    if media_type(req) != FORM:
        raise TokenError(400, "invalid_request", f"the body must be {FORM}, got {req.header('content-type')!r}")
    if tc.repeated:
        raise TokenError(400, "invalid_request", f"parameters sent more than once: {', '.join(tc.repeated)}")
    return tc.form()


# ---- OAuth 2.0 JWT-bearer grant -------------------------------------------------------

def oauth(tc: TokenCtx) -> Response:
    form = _form_checks(tc)
    grant = form.get("grant_type")
    if not grant:
        raise TokenError(400, "invalid_request", "Missing required parameter: grant_type")
    if grant != JWT_BEARER_GRANT:
        raise TokenError(400, "unsupported_grant_type", f"Invalid grant_type: {grant}")
    assertion = form.get("assertion")
    if not assertion:
        raise TokenError(400, "invalid_request", "Missing required parameter: assertion")
    try:
        header, claims, _, _ = jws.decode(assertion)
    except jws.JwtError as e:
        raise TokenError(400, "invalid_grant", f"Invalid JWT: {e.message}") from None
    sa = tc.reg.service_accounts.get(claims.get("iss"))
    if sa is None:
        raise TokenError(401, "invalid_client", "The OAuth client was not found.")
    bad_signature = TokenError(400, "invalid_grant", "Invalid JWT Signature.")
    key = sa.keys.get(header.get("kid"))
    if header.get("alg") != "RS256" or key is None:
        tc.note(signature_problem="alg is not RS256" if header.get("alg") != "RS256" else
                f"kid {header.get('kid')!r} is not a private_key_id of {sa.client_email}")
        raise bad_signature
    try:
        jws.verify(assertion, key)
    except jws.JwtError:
        tc.note(signature_problem="the signature does not verify with the registered key")
        raise bad_signature from None
    if claims.get("aud") not in OAUTH_AUDIENCES | {sa.token_uri}:
        raise TokenError(400, "invalid_grant", f"Invalid JWT: Failed audience check. The expected value was "
                                               f"{sa.token_uri}, got {claims.get('aud')!r}.")
    iat, exp = jws.number(claims, "iat"), jws.number(claims, "exp")
    if iat is None or exp is None or exp - iat > MAX_ASSERTION_LIFETIME or iat > tc.now + SKEW or exp <= tc.now:
        raise TokenError(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                                               "reasonable timeframe. Check your iat and exp values in the JWT claim.")
    if claims.get("sub") not in (None, sa.client_email) and not sa.allow_subject:
        raise TokenError(401, "unauthorized_client", "Client is unauthorized to retrieve access tokens using this "
                                                     "method, or client not authorized for any of the scopes "
                                                     "requested.")
    scopes = claims.get("scope").split() if isinstance(claims.get("scope"), str) else []
    if not scopes:
        raise TokenError(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
    tc.note(client_email=sa.client_email, kid=header.get("kid"), subject=claims.get("sub"))
    lifetime = tc.lifetime(3599)
    token = "ya29.a0" + random_token(96)
    tc.issue(Issued(tc.service, GOOGLE, token, tc.now, tc.now + lifetime, claims.get("sub") or sa.client_email,
                    scopes=scopes, details={"client_email": sa.client_email}))
    return json_response(200, {"access_token": token, "expires_in": lifetime, "token_type": "Bearer"},
                         extra_headers=[("cache-control", "no-cache, no-store, max-age=0, must-revalidate")])


# ---- STS token exchange -------------------------------------------------------------------

def _sts_fields(tc: TokenCtx) -> dict[str, Any]:
    req = tc.req
    if req.method != "POST":
        raise TokenError(405, "invalid_request", f"{req.method} is not allowed: use POST")
    alt = req.query1("alt")
    if alt not in (None, "json"):
        raise TokenError(400, "invalid_request", f"unsupported alt={alt!r}: only json")
    ctype = media_type(req)
    if ctype == FORM:
        if tc.repeated:
            raise TokenError(400, "invalid_request", f"parameters sent more than once: {', '.join(tc.repeated)}")
        tc.note(encoding="form")
        return dict(tc.form())
    if ctype == "application/json":
        doc = tc.json_body()
        if not isinstance(doc, dict):
            raise TokenError(400, "invalid_request", "Invalid JSON payload received: the body is not a JSON object.")
        out: dict[str, Any] = {}
        for k, v in doc.items():
            # Proto JSON takes lowerCamelCase names and the original snake_case ones.
            name = STS_FIELDS.get(k) or (k if k in STS_FIELDS.values() else None)
            if name is None:
                raise TokenError(400, "invalid_request", f"Invalid JSON payload received. Unknown name \"{k}\": "
                                                         f"Cannot find field.")
            if v is not None and not isinstance(v, str):
                raise TokenError(400, "invalid_request", f"Invalid JSON payload received. Invalid value at '{k}' "
                                                         f"(TYPE_STRING).")
            out[name] = v
        tc.note(encoding="json")
        return out
    raise TokenError(400, "invalid_request", f"unsupported content type {req.header('content-type')!r}: "
                                             f"{FORM} or application/json")


def _pool(tc: TokenCtx, audience: str | None) -> WorkloadPool:
    if not audience:
        raise TokenError(400, "invalid_request", "Missing required parameter: \"audience\".")
    if not POOL_AUDIENCE.match(audience):
        raise TokenError(400, "invalid_request",
                         "Invalid value for \"audience\". This value should be the full resource name of the Identity "
                         "Provider. See https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token for "
                         "the list of possible formats.")
    pool = tc.reg.pools.get(audience)
    if pool is None:
        raise TokenError(400, "invalid_target",
                         "The target service indicated by the \"audience\" parameters is invalid. This might either be "
                         "because the pool or provider is disabled or deleted or because it doesn't exist.")
    return pool


def _subject_claims(tc: TokenCtx, pool: WorkloadPool, token: str) -> dict:
    try:
        _h, unverified, _, _ = jws.decode(token)
    except jws.JwtError as e:
        raise TokenError(400, "invalid_grant", f"The subject_token is not a valid JWT: {e.message}") from None
    if unverified.get("iss") != pool.issuer:
        raise TokenError(400, "invalid_grant", f"The issuer in ID Token {unverified.get('iss')} does not match the "
                                               f"expected ones: {pool.issuer}.")
    try:
        _h, claims = verify_trusted(tc.reg, token, tc.now)
    except jws.JwtError as e:
        messages = {"expired": f"The ID Token has expired: {e.message}.",
                    "not_yet_valid": f"The ID Token is not yet valid: {e.message}.",
                    "issuer": f"No key is known for the issuer {pool.issuer}.",
                    "alg": f"Invalid ID Token: {e.message}.",
                    "signature": "Invalid ID Token signature."}
        raise TokenError(400, "invalid_grant", messages.get(e.reason, f"Invalid ID Token: {e.message}.")) from None
    auds = jws.audiences(claims)
    if not set(auds) & set(pool.allowed_audiences):
        raise TokenError(400, "invalid_grant", f"The audience in ID Token {auds} does not match the expected "
                                               f"audience {pool.allowed_audiences[0]}.")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise TokenError(400, "invalid_grant", "The ID Token has no sub claim.")
    return claims


def sts(tc: TokenCtx) -> Response:
    if tc.req.header("authorization") is not None:
        raise TokenError(400, "invalid_request", "simulator: sts.googleapis.com takes no Authorization header (it "
                                                 "\"can cause the request to fail\"); the subject token is the "
                                                 "credential.")
    f = _sts_fields(tc)
    grant = f.get("grant_type")
    if grant != TOKEN_EXCHANGE:
        raise TokenError(400, "unsupported_grant_type", f"Invalid value for \"grant_type\": {grant!r}. Expected "
                                                        f"{TOKEN_EXCHANGE}.")
    if f.get("requested_token_type") != ACCESS_TOKEN_TYPE:
        raise TokenError(400, "invalid_request", f"Invalid value for \"requested_token_type\": "
                                                 f"{f.get('requested_token_type')!r}. Expected {ACCESS_TOKEN_TYPE}.")
    pool = _pool(tc, f.get("audience"))
    if f.get("subject_token_type") not in SUBJECT_TOKEN_TYPES:
        raise TokenError(400, "invalid_request", f"Invalid value for \"subject_token_type\": "
                                                 f"{f.get('subject_token_type')!r}. The simulator takes OIDC tokens: "
                                                 f"{' or '.join(sorted(SUBJECT_TOKEN_TYPES))}.")
    scopes = (f.get("scope") or "").split()
    if not scopes:
        raise TokenError(400, "invalid_request", "Scope(s) must be provided.")
    if not f.get("subject_token"):
        raise TokenError(400, "invalid_request", "Missing required parameter: \"subject_token\".")
    claims = _subject_claims(tc, pool, f["subject_token"])
    principal = pool.principal(claims["sub"])
    tc.note(pool=pool.audience, principal=principal)
    lifetime = tc.lifetime(3599)
    token = "ya29.d." + random_token(96)
    tc.issue(Issued(tc.service, GOOGLE, token, tc.now, tc.now + lifetime, principal, scopes=scopes,
                    details={"pool": pool.audience, "subject": claims["sub"]}))
    return json_response(200, {"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE,
                               "token_type": "Bearer", "expires_in": lifetime})


# ---- IAM credentials: generateAccessToken -------------------------------------------

def _bad_arg(message: str) -> TokenError:
    return TokenError(400, "INVALID_ARGUMENT", message)


def iamcredentials(tc: TokenCtx) -> Response:
    req = tc.req
    if req.method != "POST":
        raise TokenError(405, "INVALID_ARGUMENT", f"simulator: {req.method} is not allowed: use POST")
    project, email = IAM_PATH.match(req.path).groups()
    email = unquote(email)
    tok = bearer(req)
    if tok is None:
        raise TokenError(401, "UNAUTHENTICATED", MISSING_CREDENTIAL,
                         details=_error_info("CREDENTIALS_MISSING", "googleapis.com",
                                             service="iamcredentials.googleapis.com"))
    caller = tc.store.bearer(tok)
    if caller is None or caller.kind != GOOGLE or caller.expired(tc.now):
        expired = caller is not None and caller.expired(tc.now)
        reason = "ACCESS_TOKEN_EXPIRED" if expired else "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        raise TokenError(401, "UNAUTHENTICATED", UNAUTHENTICATED,
                         details=_error_info(reason, "googleapis.com", service="iamcredentials.googleapis.com"))
    if project != "-":
        raise _bad_arg(f"simulator: the project must be the '-' wildcard, got {project!r}")
    if media_type(req) != "application/json":
        raise _bad_arg(f"simulator: the body must be application/json, got {req.header('content-type')!r}")
    doc = tc.json_body()
    if not isinstance(doc, dict):
        raise _bad_arg("Invalid JSON payload received. The body is not a JSON object.")
    unknown = sorted(set(doc) - {"scope", "lifetime", "delegates"})
    if unknown:
        raise _bad_arg(f"Invalid JSON payload received. Unknown name \"{unknown[0]}\": Cannot find field.")
    scope = doc.get("scope")
    if not isinstance(scope, list) or not scope or not all(isinstance(s, str) and s for s in scope):
        raise _bad_arg("Scope required: `scope` must be a non-empty list of strings.")
    lifetime_s = doc.get("lifetime", "3600s")
    if not isinstance(lifetime_s, str) or not re.fullmatch(r"\d+s", lifetime_s):
        raise _bad_arg(f"Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration), Field "
                       f"'lifetime', Illegal duration format; duration must end with 's': {lifetime_s!r}")
    lifetime = int(lifetime_s[:-1])
    if lifetime > 3600 or lifetime < 1:
        raise _bad_arg(f"The lifetime {lifetime_s} is out of range: 1s..3600s.")
    if doc.get("delegates") not in (None, []):
        raise _bad_arg("simulator: delegation chains are not simulated: `delegates` must be absent, null or [].")
    pool = tc.reg.pools.get(caller.details.get("pool", ""))
    if caller.service != "google-sts" or pool is None or email not in pool.service_accounts:
        tc.note(denied=f"{caller.principal} may not impersonate {email}")
        raise TokenError(403, "PERMISSION_DENIED",
                         f"Permission '{PERMISSION}' denied on resource (or it may not exist).",
                         details=_error_info("IAM_PERMISSION_DENIED", "iam.googleapis.com", permission=PERMISSION))
    tc.note(service_account=email, caller=caller.principal)
    lifetime = tc.lifetime(lifetime)
    token = "ya29.c." + random_token(96)
    expires = tc.now + lifetime
    tc.issue(Issued(tc.service, GOOGLE, token, tc.now, expires, email, scopes=list(scope),
                    details={"caller": caller.principal}))
    return json_response(200, {"accessToken": token, "expireTime": iso_z(expires)})
