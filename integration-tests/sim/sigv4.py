"""Checks an AWS Signature Version 4 (Authorization header) on a received request,
recomputing it with botocore's SigV4Auth over what arrived: method, path (as sent,
percent-encoded once), query, the headers named in SignedHeaders and the body."""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

from .core import Reject, Request

MAX_SKEW = 15 * 60
SIG_MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS "
                "Secret Access Key and signing method. Consult the service documentation for details.")


@dataclass(frozen=True)
class AwsCredentials:
    access_key: str
    secret_key: str
    session_token: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "AwsCredentials":
        parts = spec.split(":", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ValueError(f"AWS credentials must be AKID:SECRET[:SESSION_TOKEN], got {spec!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 and parts[2] else None)


class SigError(Reject):
    def __init__(self, etype: str, message: str, status: int = 403):
        super().__init__(status, message, etype)


_AUTH = re.compile(r"AWS4-HMAC-SHA256\s+(.*)$", re.S)


def _params(rest: str) -> dict[str, str]:
    out = {}
    for piece in rest.split(","):
        k, _, v = piece.strip().partition("=")
        if k:
            out[k.strip()] = v.strip()
    return out


def verify(req: Request, creds: list[AwsCredentials], service: str = "bedrock", now: float | None = None) -> str:
    """Returns the region of a valid signature; raises SigError otherwise."""
    auth = req.header("authorization")
    if not auth:
        raise SigError("MissingAuthenticationTokenException", "Missing Authentication Token")
    m = _AUTH.match(auth.strip())
    if not m:
        raise SigError("IncompleteSignatureException",
                       f"Authorization header requires the AWS4-HMAC-SHA256 scheme, got {auth.split(' ')[0]!r}")
    p = _params(m.group(1))
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in p]
    if missing:
        raise SigError("IncompleteSignatureException",
                       f"Authorization header requires '{missing[0]}' parameter. Authorization={auth}")
    scope = p["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise SigError("IncompleteSignatureException", f"Credential is not AKID/DATE/REGION/SERVICE/aws4_request: "
                                                       f"{p['Credential']!r}")
    akid, date, region, svc, _ = scope
    known = {c.access_key: c for c in creds}
    cred = known.get(akid)
    if cred is None:
        raise SigError("UnrecognizedClientException", "The security token included in the request is invalid.")
    if svc != service:
        raise SigError("InvalidSignatureException", f"Credential should be scoped to correct service: '{service}'.")
    if not region:
        raise SigError("InvalidSignatureException", "Credential should be scoped to a valid region.")
    amz_date = req.header("x-amz-date")
    if not amz_date or not re.fullmatch(r"\d{8}T\d{6}Z", amz_date):
        raise SigError("IncompleteSignatureException",
                       "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
    if amz_date[:8] != date:
        raise SigError("InvalidSignatureException",
                       f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                       f"'{date}' != '{amz_date[:8]}', from '{amz_date}'.")
    signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    now = time.time() if now is None else now
    if abs(now - signed_at) > MAX_SKEW:
        fmt = lambda t: time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))  # noqa: E731
        raise SigError("InvalidSignatureException",
                       f"Signature expired: {amz_date} is now earlier than {fmt(now - MAX_SKEW)} "
                       f"({fmt(now)} - 15 min.)" if signed_at < now else
                       f"Signature not yet current: {amz_date} is still later than {fmt(now + MAX_SKEW)} "
                       f"({fmt(now)} + 15 min.)")
    token = req.header("x-amz-security-token")
    if cred.session_token is not None and token != cred.session_token:
        raise SigError("UnrecognizedClientException", "The security token included in the request is invalid.")
    if cred.session_token is None and token is not None:
        raise SigError("UnrecognizedClientException", "The security token included in the request is invalid.")
    body_hash = hashlib.sha256(req.body).hexdigest()
    declared = req.header("x-amz-content-sha256")
    if declared is not None and declared != body_hash:
        raise SigError("InvalidSignatureException",
                       "The provided 'x-amz-content-sha256' header does not match what was computed.")
    signed = [h for h in p["SignedHeaders"].split(";") if h]
    if signed != sorted(set(signed)) or any(h != h.lower() for h in signed):
        raise SigError("InvalidSignatureException", SIG_MISMATCH)
    if "host" not in signed:
        raise SigError("InvalidSignatureException", "'Host' must be a 'SignedHeader' in the AWS Authorization.")
    absent = [h for h in signed if not req.header_all(h)]
    if absent:
        raise SigError("InvalidSignatureException", SIG_MISMATCH + f" (signed header {absent[0]!r} is absent)")
    want = recompute(req, signed, cred, region, service, amz_date)
    if not hmac.compare_digest(want, p["Signature"]):
        raise SigError("InvalidSignatureException", SIG_MISMATCH)
    return region


def recompute(req: Request, signed: list[str], cred: AwsCredentials, region: str, service: str,
              amz_date: str) -> str:
    """The signature botocore computes for what arrived."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest, HTTPHeaders
    from botocore.credentials import Credentials

    host = req.header("host")
    url = f"http://{host}{req.target}"  # plain http: botocore then always hashes the body
    request = AWSRequest(method=req.method, url=url, data=req.body)
    request.context["timestamp"] = amz_date
    auth = SigV4Auth(Credentials(cred.access_key, cred.secret_key, cred.session_token), service, region)
    # The headers of the canonical request are exactly those listed in SignedHeaders,
    # with the values received (repeated headers joined by botocore), even those
    # botocore itself never signs.
    headers = HTTPHeaders()
    for name in signed:
        for v in req.header_all(name):
            headers[name] = v
    canonical = "\n".join([
        req.method.upper(),
        auth._normalize_url_path(req.path),
        auth.canonical_query_string(request),
        auth.canonical_headers(headers) + "\n",
        auth.signed_headers(headers),
        auth.payload(request),
    ])
    sts = auth.string_to_sign(request, canonical)
    return auth.signature(sts, request)
