"""AWS STS, Query protocol version 2011-06-15, on sts.amazonaws.com and
sts.{region}.amazonaws.com: POST / (form) or GET /?... with

- Action=AssumeRoleWithWebIdentity (unsigned): a WebIdentityToken from a trusted
  OIDC issuer that a registered role trusts (issuer, audience, optional subject);
- Action=AssumeRole: SigV4 (service sts, the endpoint's region) with a role's base
  credentials.

Answers XML, or JSON for `Accept: application/json` (Expiration then an epoch-seconds
number in scientific notation, as STS sends it); errors in the ErrorResponse
envelope or {"Error":{...},"RequestId"}."""

from __future__ import annotations

import base64
import json
import re
import secrets
import string
import uuid
from decimal import Decimal
from xml.sax.saxutils import escape

from . import jws
from .core import Response
from .exchange import FORM, TokenCtx, TokenError, host_of, iso_z, media_type, parse_form, verify_trusted
from .identity import AwsRole
from .issued import AWS, Issued, access_key_id, random_token
from .sigv4 import AwsCredentials, SigError, verify

VERSION = "2011-06-15"
NS = "https://sts.amazonaws.com/doc/2011-06-15/"
HOST = re.compile(r"^sts(?:\.([a-z0-9-]+))?\.amazonaws\.com(?:\.cn)?$")
SESSION_NAME = re.compile(r"[\w+=,.@-]*", re.ASCII)
ACTIONS = ("AssumeRoleWithWebIdentity", "AssumeRole")
# sigv4.verify's error types (Bedrock's names) -> STS's Query-protocol codes.
SIG_CODES = {"MissingAuthenticationTokenException": (403, "MissingAuthenticationToken"),
             "IncompleteSignatureException": (400, "IncompleteSignature"),
             "UnrecognizedClientException": (403, "InvalidClientTokenId"),
             "InvalidSignatureException": (403, "SignatureDoesNotMatch")}


def host_region(host: str) -> str | None:
    """The signing region of an STS host name (None: not an STS host)."""
    m = HOST.match(host)
    if not m:
        return None
    return m.group(1) or "us-east-1"


def default_code(status: int) -> str:
    return {403: "AccessDenied", 429: "Throttling", 503: "ServiceUnavailable"}.get(
        status, "InternalFailure" if status >= 500 else "ValidationError")


def wants_json(tc: TokenCtx) -> bool:
    return "application/json" in (tc.req.header("accept") or "").lower()


def render_error(e: TokenError, tc: TokenCtx) -> Response:
    rid = str(uuid.uuid4())
    etype = e.extra.get("type") or ("Receiver" if e.status >= 500 else "Sender")
    headers = [("x-amzn-requestid", rid)]
    if wants_json(tc):
        body = json.dumps({"Error": {"Code": e.code, "Message": e.message, "Type": etype}, "RequestId": rid})
        return Response(e.status, "application/json", body.encode(), extra_headers=headers)
    xml = (f'<ErrorResponse xmlns="{NS}">\n  <Error>\n    <Type>{etype}</Type>\n    <Code>{escape(e.code)}</Code>\n'
           f'    <Message>{escape(e.message)}</Message>\n  </Error>\n  <RequestId>{rid}</RequestId>\n'
           f'</ErrorResponse>\n')
    return Response(e.status, "text/xml", xml.encode(), extra_headers=headers)


def java_double(n: float) -> str:
    """A number as Java's Double.toString writes it at this magnitude: 1.514869445E9."""
    sign, digits, exp = Decimal(repr(float(n))).normalize().as_tuple()
    mantissa = "".join(map(str, digits))
    rest = mantissa[1:] or "0"
    return f"{'-' if sign else ''}{mantissa[0]}.{rest}E{len(digits) - 1 + exp}"


# ---- parameters and validation --------------------------------------------------------

def _params(tc: TokenCtx) -> dict[str, str]:
    req = tc.req
    if req.method not in ("GET", "POST"):
        raise TokenError(405, "InvalidAction", f"simulator: {req.method} is not allowed: GET or POST /")
    params = {k: v[-1] for k, v in req.query.items()}
    repeated = [k for k, v in req.query.items() if len(v) > 1]
    if req.method == "POST" and req.body:
        if media_type(req) != FORM:
            raise TokenError(400, "ValidationError", f"simulator: a POST body must be {FORM}, got "
                                                     f"{req.header('content-type')!r}")
        form, rep = parse_form(req.body)
        repeated += rep + [k for k in form if k in params]
        params.update(form)
    if repeated:
        raise TokenError(400, "ValidationError", f"simulator: parameters sent more than once: "
                                                 f"{', '.join(sorted(set(repeated)))}")
    return params


class Validation:
    """Collects "Value X at 'field' failed to satisfy constraint" messages."""

    def __init__(self):
        self.errors: list[str] = []

    def add(self, value: str | None, field: str, constraint: str, secret: bool = False) -> None:
        shown = "null" if value is None else "'*** (redacted)'" if secret else f"'{value}'"
        self.errors.append(f"Value {shown} at '{field}' failed to satisfy constraint: {constraint}")

    def length(self, value: str | None, field: str, lo: int, hi: int, secret: bool = False) -> None:
        if value is None:
            self.add(None, field, "Member must not be null")
        elif len(value) < lo:
            self.add(value, field, f"Member must have length greater than or equal to {lo}", secret)
        elif len(value) > hi:
            self.add(value, field, f"Member must have length less than or equal to {hi}", secret)

    def check(self) -> None:
        if self.errors:
            n = len(self.errors)
            raise TokenError(400, "ValidationError", f"{n} validation error{'s' if n > 1 else ''} detected: "
                                                     + "; ".join(self.errors))


def _validate(p: dict[str, str], web_identity: bool) -> int | None:
    """Field constraints of the service model; returns DurationSeconds (None when absent)."""
    v = Validation()
    v.length(p.get("RoleArn"), "roleArn", 20, 2048)
    name = p.get("RoleSessionName")
    v.length(name, "roleSessionName", 2, 64)
    if name is not None and not SESSION_NAME.fullmatch(name):
        v.add(name, "roleSessionName", r"Member must satisfy regular expression pattern: [\w+=,.@-]*")
    if web_identity:
        v.length(p.get("WebIdentityToken"), "webIdentityToken", 4, 20000, secret=True)
    duration = None
    raw = p.get("DurationSeconds")
    if raw is not None:
        if not re.fullmatch(r"\d{1,9}", raw):
            v.add(raw, "durationSeconds", "Member must be an integer")
        else:
            duration = int(raw)
            if duration < 900:
                v.add(raw, "durationSeconds", "Member must have value greater than or equal to 900")
            elif duration > 43200:
                v.add(raw, "durationSeconds", "Member must have value less than or equal to 43200")
    v.check()
    return duration


def _duration(role: AwsRole, duration: int | None) -> int:
    if duration is not None and duration > role.max_session_duration:
        raise TokenError(400, "ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set "
                                                 "for this role.")
    return duration or 3600


# ---- the two actions -------------------------------------------------------------------

def _web_identity(tc: TokenCtx, p: dict[str, str]) -> tuple[AwsRole, dict, int]:
    if "ProviderId" in p:
        raise TokenError(400, "ValidationError", "simulator: ProviderId is for the OAuth 2.0 providers "
                                                 "www.amazon.com and graph.facebook.com, never for OIDC tokens")
    duration = _validate(p, web_identity=True)
    token = p["WebIdentityToken"]
    try:
        _h, unverified, _, _ = jws.decode(token)
    except jws.JwtError as e:
        raise TokenError(400, "InvalidIdentityToken", f"Couldn't parse the web identity token: {e.message}") \
            from None
    iss = unverified.get("iss")
    trusts = [t for r in tc.reg.roles.values() for t in r.web_identity if t.issuer == iss]
    if not trusts:
        raise TokenError(400, "InvalidIdentityToken", f"No OpenIDConnect provider found in your account for {iss}")
    try:
        _h, claims = verify_trusted(tc.reg, token, tc.now)
    except jws.JwtError as e:
        if e.reason == "expired":
            exp = jws.number(unverified, "exp")
            raise TokenError(400, "ExpiredTokenException", f"Token expired: current date/time {iso_z(tc.now)} must "
                                                           f"be before the expiration date/time {iso_z(exp)}") \
                from None
        raise TokenError(400, "InvalidIdentityToken", {
            "alg": "The web identity token must be signed with RS256",
            "signature": "The web identity token's signature could not be verified with the provider's keys",
            "issuer": f"No keys are known for the OpenIDConnect provider {iss}",
        }.get(e.reason, f"Invalid web identity token: {e.message}")) from None
    auds = jws.audiences(claims)
    if not any(t.audience in auds for t in trusts):
        raise TokenError(400, "InvalidIdentityToken", "Incorrect token audience")
    role = tc.reg.roles.get(p["RoleArn"])
    if role is None or not any(t.issuer == iss and t.audience in auds and t.subject in (None, claims.get("sub"))
                               for t in role.web_identity):
        tc.note(denied="unknown role" if role is None else "the role does not trust this issuer/audience/subject")
        raise TokenError(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
    return role, claims, _duration(role, duration)


def _signed(tc: TokenCtx, p: dict[str, str], region: str) -> tuple[AwsRole, AwsCredentials, int]:
    req = tc.req
    akid = _credential_akid(req.header("authorization"))
    issued = tc.store.aws_key(akid)
    if issued is not None and issued.expired(tc.now):
        raise TokenError(403, "ExpiredToken", "The security token included in the request is expired")
    creds = [c for r in tc.reg.roles.values() for c in r.base_credentials]
    if issued is not None:
        creds.append(issued.aws_credentials())
    try:
        signed_region = verify(req, creds, service="sts", now=tc.now)
    except SigError as e:
        status, code = SIG_CODES.get(e.etype, (403, "SignatureDoesNotMatch"))
        if code == "InvalidClientTokenId":
            e.message = "The security token included in the request is invalid."
        raise TokenError(status, code, e.message) from None
    if signed_region != region:
        raise TokenError(403, "SignatureDoesNotMatch", f"Credential should be scoped to a valid region, not "
                                                       f"'{signed_region}'. ")
    duration = _validate(p, web_identity=False)
    cred = next(c for c in creds if c.access_key == akid)
    role = tc.reg.roles.get(p["RoleArn"])
    if role is None or akid not in {c.access_key for c in role.base_credentials}:
        account = role.account if role else p["RoleArn"].split(":")[4] if p["RoleArn"].count(":") >= 5 else "?"
        raise TokenError(403, "AccessDenied", f"User: arn:aws:iam::{account}:user/sim-{akid} is not authorized to "
                                              f"perform: sts:AssumeRole on resource: {p['RoleArn']}")
    if role.external_id is not None and p.get("ExternalId") != role.external_id:
        raise TokenError(403, "AccessDenied", f"User: arn:aws:iam::{role.account}:user/sim-{akid} is not "
                                              f"authorized to perform: sts:AssumeRole on resource: {role.role_arn} "
                                              f"(ExternalId)")
    return role, cred, _duration(role, duration)


def _credential_akid(auth: str | None) -> str | None:
    m = re.search(r"Credential=([^/,\s]+)/", auth or "")
    return m.group(1) if m else None


def handle(tc: TokenCtx) -> Response:
    region = host_region(host_of(tc.req)) or "us-east-1"
    p = _params(tc)
    action, version = p.get("Action"), p.get("Version")
    if not action:
        raise TokenError(400, "MissingAction", "Missing Action")
    if not version:
        raise TokenError(400, "MissingParameter", "The request must contain the parameter Version")
    if version != VERSION or action not in ACTIONS:
        raise TokenError(400, "InvalidAction", f"Could not find operation {action} for version {version}")
    tc.note(action=action, region=region)
    if action == "AssumeRoleWithWebIdentity":
        role, claims, duration = _web_identity(tc, p)
        source = {"subject": claims.get("sub"), "issuer": claims.get("iss")}
    else:
        role, cred, duration = _signed(tc, p, region)
        source = {"signer": cred.access_key}
    session = p["RoleSessionName"]
    lifetime = tc.lifetime(duration)
    expires = tc.now + lifetime
    arn = f"arn:aws:sts::{role.account}:assumed-role/{role.name}/{session}"
    role_id = "AROA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(17))
    akid = access_key_id()
    secret = base64.b64encode(secrets.token_bytes(30)).decode()
    session_token = "IQoJb3JpZ2luX2VjE" + random_token(300)
    tc.issue(Issued(tc.service, AWS, akid, tc.now, expires, arn, secret_key=secret, session_token=session_token,
                    details={"role_arn": role.role_arn, "session_name": session, "action": action, **source}))
    result = {"AssumedRoleUser": {"Arn": arn, "AssumedRoleId": f"{role_id}:{session}"},
              "Credentials": {"AccessKeyId": akid, "SecretAccessKey": secret, "SessionToken": session_token,
                              "Expiration": expires}}
    if action == "AssumeRoleWithWebIdentity":
        aud = jws.audiences(claims)
        result.update(SubjectFromWebIdentityToken=claims.get("sub"), Audience=aud[0] if aud else None,
                      Provider=claims.get("iss"))
    return _answer(tc, action, result)


def _answer(tc: TokenCtx, action: str, result: dict) -> Response:
    rid = str(uuid.uuid4())
    headers = [("x-amzn-requestid", rid)]
    expires = result["Credentials"]["Expiration"]
    if wants_json(tc):
        result = {**result, "Credentials": {**result["Credentials"], "Expiration": "@EXPIRATION@"},
                  "PackedPolicySize": None, "SourceIdentity": None}
        doc = {f"{action}Response": {f"{action}Result": result, "ResponseMetadata": {"RequestId": rid}}}
        body = json.dumps(doc).replace('"@EXPIRATION@"', java_double(int(expires)))
        return Response(200, "application/json", body.encode(), extra_headers=headers)
    creds = result["Credentials"]
    user = result["AssumedRoleUser"]
    parts = []
    if "SubjectFromWebIdentityToken" in result:
        parts.append(f"    <SubjectFromWebIdentityToken>{escape(str(result['SubjectFromWebIdentityToken']))}"
                     f"</SubjectFromWebIdentityToken>\n    <Audience>{escape(str(result['Audience']))}</Audience>\n")
    parts.append(f"    <AssumedRoleUser>\n      <Arn>{escape(user['Arn'])}</Arn>\n"
                 f"      <AssumedRoleId>{escape(user['AssumedRoleId'])}</AssumedRoleId>\n    </AssumedRoleUser>\n"
                 f"    <Credentials>\n      <SessionToken>{creds['SessionToken']}</SessionToken>\n"
                 f"      <SecretAccessKey>{escape(creds['SecretAccessKey'])}</SecretAccessKey>\n"
                 f"      <Expiration>{iso_z(expires)}</Expiration>\n"
                 f"      <AccessKeyId>{creds['AccessKeyId']}</AccessKeyId>\n    </Credentials>\n")
    if "Provider" in result:
        parts.append(f"    <Provider>{escape(str(result['Provider']))}</Provider>\n")
    xml = (f'<{action}Response xmlns="{NS}">\n  <{action}Result>\n{"".join(parts)}  </{action}Result>\n'
           f'  <ResponseMetadata>\n    <RequestId>{rid}</RequestId>\n  </ResponseMetadata>\n</{action}Response>\n')
    return Response(200, "text/xml", xml.encode(), extra_headers=headers)
