"""The simulated OIDC identity provider whose tokens the cloud exchanges take:
discovery, JWKS, and the OAuth2 client-credentials grant issuing RS256 JWT access
tokens (iss, sub, aud, iat, nbf, exp, jti, client_id, scope)."""

from __future__ import annotations

import secrets

from .core import Response, json_response
from .exchange import FORM, TokenCtx, TokenError, basic_auth, media_type
from .issued import OIDC, Issued


def default_code(status: int) -> str:
    return {401: "invalid_client", 403: "access_denied", 429: "slow_down"}.get(
        status, "server_error" if status >= 500 else "invalid_request")


def render_error(e: TokenError, tc: TokenCtx) -> Response:
    """RFC 6749 §5.2: {"error", "error_description"}; 401 carries WWW-Authenticate."""
    headers = [("cache-control", "no-store")]
    if e.status == 401:
        headers.append(("www-authenticate", 'Basic realm="sim-idp"'))
    return json_response(e.status, {"error": e.code, "error_description": e.message}, extra_headers=headers)


def discovery(tc: TokenCtx) -> Response:
    reg = tc.reg
    if tc.req.method not in ("GET", "HEAD"):
        raise TokenError(405, "invalid_request", f"{tc.req.method} is not allowed here: use GET")
    if tc.req.path.endswith("/jwks"):
        return json_response(200, {"keys": [reg.idp_key.jwk()]})
    return json_response(200, {
        "issuer": reg.issuer,
        "token_endpoint": reg.issuer + "/oauth2/token",
        "jwks_uri": reg.issuer + "/jwks",
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": reg.scopes_supported,
        "claims_supported": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "client_id", "scope"],
    })


def token(tc: TokenCtx) -> Response:
    req, reg = tc.req, tc.reg
    if req.method != "POST":
        raise TokenError(405, "invalid_request", f"{req.method} is not allowed on the token endpoint: use POST")
    if media_type(req) != FORM:
        raise TokenError(400, "invalid_request", f"the body must be {FORM}, got {req.header('content-type')!r}")
    form = tc.form()
    if tc.repeated:
        raise TokenError(400, "invalid_request", f"parameters sent more than once: {', '.join(tc.repeated)}")
    grant = form.get("grant_type")
    if not grant:
        raise TokenError(400, "invalid_request", "missing grant_type")
    if grant != "client_credentials":
        raise TokenError(400, "unsupported_grant_type", f"grant_type {grant!r} is not supported: client_credentials")

    basic = basic_auth(req)
    if basic is not None:
        if "client_secret" in form:
            raise TokenError(400, "invalid_request", "more than one client authentication method (Basic and "
                                                     "client_secret)")
        client_id, secret = basic
        if form.get("client_id") not in (None, client_id):
            raise TokenError(400, "invalid_request", "client_id in the body differs from the Basic credentials")
    else:
        client_id, secret = form.get("client_id"), form.get("client_secret")
    if not client_id or secret is None:
        raise TokenError(401, "invalid_client", "client authentication failed: no client credentials")
    client = reg.oidc_clients.get(client_id)
    if client is None:
        raise TokenError(401, "invalid_client", f"client authentication failed: unknown client {client_id!r}")
    if not secrets.compare_digest(secret.encode(), client.client_secret.encode()):
        raise TokenError(401, "invalid_client", "client authentication failed: wrong client secret")
    tc.note(client_id=client_id, auth_style="basic" if basic is not None else "post")

    scopes = (form.get("scope") or "").split()
    if client.scopes is not None:
        bad = [s for s in scopes if s not in client.scopes and s not in reg.scopes_supported]
        if bad:
            raise TokenError(400, "invalid_scope", f"scope(s) not allowed for {client_id}: {' '.join(bad)}")

    lifetime = tc.lifetime(3600)
    now = int(tc.now)
    claims = {"iss": reg.issuer, "sub": client.subject,
              "aud": client.audience[0] if len(client.audience) == 1 else client.audience,
              "iat": now, "nbf": now, "exp": now + lifetime, "jti": secrets.token_hex(8), "client_id": client_id}
    if scopes:
        claims["scope"] = " ".join(scopes)
    claims.update(client.claims)
    jwt = reg.idp_key.sign(claims)
    tc.issue(Issued(tc.service, OIDC, jwt, tc.now, tc.now + lifetime, client.subject, audience=claims["aud"]
                    if isinstance(claims["aud"], str) else " ".join(claims["aud"]), scopes=scopes,
                    details={"client_id": client_id}))
    body = {"access_token": jwt, "token_type": "Bearer", "expires_in": lifetime}
    if scopes:
        body["scope"] = " ".join(scopes)
    return json_response(200, body, extra_headers=[("cache-control", "no-store"), ("pragma", "no-cache")])
