"""The token services hub: which path (and Host) is which token service, injected
faults (error, delay before answering, lifetime of issued tokens), the log of
exchanges (GET /_sim/exchanges; secrets recorded by presence only) and the control
paths that register identities and inspect or expire issued tokens."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from . import aws_sts, entra, google_auth, jws, oidc
from .core import Request, Response, json_response
from .exchange import FORM, TokenCtx, TokenError, basic_auth, host_of, media_type, parse_form
from .identity import Registry
from .issued import IssuedStore, fingerprint

ENTRA_PATH = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
REDACTED = "<redacted>"
# Field names (any case) whose values are credentials: recorded by presence only.
SECRET_FIELDS = {"client_secret", "client_assertion", "assertion", "subject_token", "subjecttoken", "actor_token",
                 "actortoken", "webidentitytoken", "access_token", "id_token", "refresh_token", "password",
                 "x-amz-security-token", "x-amz-signature", "secretaccesskey", "sessiontoken"}
# Of those, the JWTs whose header and claims are recorded (they are not secret).
JWT_FIELDS = {"client_assertion", "assertion", "subject_token", "subjecttoken", "webidentitytoken"}


# ---- services -------------------------------------------------------------------------

@dataclass
class Service:
    handle: Callable[[TokenCtx], Response]
    render_error: Callable[[TokenError, TokenCtx], Response]
    default_code: Callable[[int], str]
    host: Callable[[Registry], str]          # the host it serves, for messages
    host_ok: Callable[[Request, Registry], bool]


def _fixed(name: str) -> tuple[Callable, Callable]:
    host = google_auth.HOSTS[name]
    return (lambda reg: host), (lambda req, reg: host_of(req) == host)


def _issuer_host(reg: Registry) -> str:
    return urlsplit(reg.issuer).netloc.lower()


def _issuer_host_ok(req: Request, reg: Registry) -> bool:
    u = urlsplit(reg.issuer)
    if u.port is not None:  # the issuer names a port: the Host header carries it too
        return (req.header("host") or "").strip().lower() == u.netloc.lower()
    return host_of(req) == (u.hostname or "")


SERVICES: dict[str, Service] = {
    "entra": Service(entra.handle, entra.render_error, entra.default_code, lambda reg: "login.microsoftonline.com",
                     lambda req, reg: host_of(req) in entra.HOSTS),
    "google-oauth": Service(google_auth.oauth, google_auth.oauth_error, google_auth.oauth_default_code,
                            *_fixed("google-oauth")),
    "google-sts": Service(google_auth.sts, google_auth.oauth_error, google_auth.oauth_default_code,
                          *_fixed("google-sts")),
    "iamcredentials": Service(google_auth.iamcredentials, google_auth.iam_error, google_auth.iam_default_code,
                              *_fixed("iamcredentials")),
    "aws-sts": Service(aws_sts.handle, aws_sts.render_error, aws_sts.default_code,
                       lambda reg: "sts.amazonaws.com or sts.<region>.amazonaws.com",
                       lambda req, reg: aws_sts.host_region(host_of(req)) is not None),
    "oidc": Service(oidc.token, oidc.render_error, oidc.default_code, _issuer_host, _issuer_host_ok),
    "oidc-discovery": Service(oidc.discovery, oidc.render_error, oidc.default_code, _issuer_host, _issuer_host_ok),
}
MISDIRECTED = {"aws-sts": "MisdirectedRequest", "iamcredentials": "FAILED_PRECONDITION"}


def route(req: Request, reg: Registry) -> str | None:
    """The token service a path belongs to, or None (a provider path)."""
    path = req.path
    if ENTRA_PATH.match(path):
        return "entra"
    if path == "/token":
        return "google-oauth"
    if path == "/v1/token":
        return "google-sts"
    if google_auth.IAM_PATH.match(path):
        return "iamcredentials"
    base = urlsplit(reg.issuer).path.rstrip("/")
    if path in (base + "/.well-known/openid-configuration", base + "/jwks"):
        return "oidc-discovery"
    if path == base + "/oauth2/token":
        return "oidc"
    if path == "/":
        if aws_sts.host_region(host_of(req)) is not None or "Action" in req.query:
            return "aws-sts"
        if req.method == "POST" and media_type(req) == FORM and "Action" in parse_form(req.body)[0]:
            return "aws-sts"
    return None


# ---- faults ---------------------------------------------------------------------------

def _opt_int(d: dict, name: str, lo: int, hi: int) -> int | None:
    v = d.get(name)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError(f"`{name}` must be an integer in {lo}..{hi}")
    return v


@dataclass
class Fault:
    """What one service does instead of (or besides) answering normally."""
    service: str
    status: int | None = None          # answer this status...
    error: str | None = None           # ...with this error code (default: the service's for the status)
    error_description: str | None = None
    aadsts: int | None = None          # Entra: the AADSTS number
    body: str | None = None            # ...or exactly this body
    content_type: str = "application/json"
    delay_ms: int = 0                  # wait this long before answering
    count: int | None = None           # status and delay apply to the next N requests only (None: all)
    expires_in: int | None = None      # lifetime of the tokens it issues (every request, not counted)

    FIELDS = ("service", "status", "error", "error_description", "aadsts", "body", "content_type", "delay_ms",
              "count", "expires_in")

    @classmethod
    def parse(cls, d: Any) -> "Fault":
        if not isinstance(d, dict):
            raise ValueError("a fault is a JSON object")
        unknown = sorted(set(d) - set(cls.FIELDS))
        if unknown:
            raise ValueError(f"unknown fault fields {unknown}: expected some of {list(cls.FIELDS)}")
        service = d.get("service")
        if service not in SERVICES:
            raise ValueError(f"`service` must be one of {sorted(SERVICES)}, got {service!r}")
        for name in ("error", "error_description", "body", "content_type"):
            if d.get(name) is not None and not isinstance(d[name], str):
                raise ValueError(f"`{name}` must be a string")
        f = cls(service, status=_opt_int(d, "status", 100, 599), error=d.get("error"),
                error_description=d.get("error_description"), aadsts=_opt_int(d, "aadsts", 1, 99999999),
                body=d.get("body"), content_type=d.get("content_type") or "application/json",
                delay_ms=_opt_int(d, "delay_ms", 0, 600000) or 0, count=_opt_int(d, "count", 0, 1 << 30),
                expires_in=_opt_int(d, "expires_in", 0, 12 * 3600))
        if f.body is not None and f.status is None:
            raise ValueError("`body` needs a `status`")
        return f

    def take(self) -> bool:
        """Whether status and delay apply to this request (counting it)."""
        if self.status is None and not self.delay_ms:
            return False
        if self.count is not None:
            if self.count <= 0:
                return False
            self.count -= 1
        return True

    def public(self) -> dict:
        return {k: getattr(self, k) for k in self.FIELDS}


# ---- the exchange record ---------------------------------------------------------------

def _redact(fields: dict, present: list[str], jwts: dict) -> dict:
    out = {}
    for k, v in fields.items():
        if isinstance(k, str) and k.lower() in SECRET_FIELDS:
            present.append(k)
            out[k] = REDACTED
            if k.lower() in JWT_FIELDS:
                seen = jws.peek(v)
                if seen is not None:
                    jwts[k] = seen
        else:
            out[k] = v
    return out


def _auth(req: Request) -> dict | None:
    v = req.header("authorization")
    if v is None:
        return None
    scheme, _, rest = v.strip().partition(" ")
    if scheme.lower() == "basic":
        b = basic_auth(req)
        return {"scheme": "basic", "client_id": b[0] if b else None}
    if scheme.lower() == "bearer":
        return {"scheme": "bearer", "fingerprint": fingerprint(rest.strip())}
    if scheme == "AWS4-HMAC-SHA256":
        m = re.search(r"Credential=([^/,\s]*)/([^/]*)/([^/]*)/([^/]*)/", rest)
        sh = re.search(r"SignedHeaders=([^,\s]*)", rest)
        return {"scheme": "sigv4", "access_key_id": m.group(1) if m else None, "region": m.group(3) if m else None,
                "service": m.group(4) if m else None, "signed_headers": sh.group(1).split(";") if sh else [],
                "session_token_present": req.header("x-amz-security-token") is not None}
    return {"scheme": scheme}


def new_record(req: Request, service: str, n: int) -> dict:
    present: list[str] = []
    jwts: dict = {}
    query = _redact({k: v[-1] if len(v) == 1 else v for k, v in req.query.items()}, present, jwts)
    ctype = media_type(req)
    if ctype == FORM:
        fields: Any = _redact(parse_form(req.body)[0], present, jwts)
    elif ctype == "application/json" and isinstance(req.json(), dict):
        fields = _redact(req.json(), present, jwts)
    else:
        fields = None
    return {"id": n, "service": service, "listener": req.listener, "method": req.method, "host": req.header("host"),
            "path": req.path, "query": query, "content_type": req.header("content-type"),
            "accept": req.header("accept"), "body_bytes": len(req.body), "fields": fields,
            "secrets_present": sorted(set(present)), "auth": _auth(req), "jwt": jwts, "time": time.time(),
            "status": None, "outcome": None, "message": None, "issued": None, "notes": {}, "fault": False,
            "delay_ms": 0, "client_disconnected": False}


# ---- the hub ----------------------------------------------------------------------------

def _body(req: Request) -> Any:
    if not req.body:
        return {}
    doc = req.json()
    if doc is None:
        raise ValueError("the body is not JSON")
    return doc


class TokenServices:
    def __init__(self, registry: Registry | None = None):
        self.reg = registry or Registry()
        self.store = IssuedStore()
        self.faults: dict[str, Fault] = {}
        self.exchanges: list[dict] = []
        self.counter = 0

    def route(self, req: Request) -> str | None:
        return route(req, self.reg)

    def handle(self, req: Request, name: str) -> Response:
        svc = SERVICES[name]
        self.counter += 1
        record = new_record(req, name, self.counter)
        self.exchanges.append(record)
        tc = TokenCtx(req, name, self.reg, self.store, record)
        delay = 0
        try:
            if not svc.host_ok(req, self.reg):
                raise TokenError(421, MISDIRECTED.get(name, "misdirected_request"),
                                 f"simulator: {req.path} is the {name} endpoint of {svc.host(self.reg)}, but the "
                                 f"Host header is {req.header('host')!r}")
            fault = self.faults.get(name)
            if fault is not None:
                tc.expires_in = fault.expires_in
                if fault.take():
                    delay = fault.delay_ms
                    if fault.status is not None:
                        record["fault"] = True
                        if fault.body is not None:
                            raise _RawFault(Response(fault.status, fault.content_type, fault.body.encode()))
                        extra = {"aadsts": fault.aadsts} if fault.aadsts is not None else {}
                        raise TokenError(fault.status, fault.error or svc.default_code(fault.status),
                                         fault.error_description or f"simulated error {fault.status}", **extra)
            resp = svc.handle(tc)
            record["outcome"] = "ok"
        except TokenError as e:
            resp = svc.render_error(e, tc)
            record.update(outcome=e.code, message=e.message)
        except _RawFault as f:
            resp = f.response
            record.update(outcome="fault", message="the fault's body")
        record["status"] = resp.status
        if delay:
            record["delay_ms"] = delay
            resp.wait = delay / 1000.0
        resp.on_abandon = lambda: record.update(client_disconnected=True)
        return resp

    # ---- control paths -----------------------------------------------------

    def control(self, req: Request) -> Response | None:
        """Answers /_sim/identities, /_sim/token-faults, /_sim/exchanges and
        /_sim/tokens[/expire]; None for any other path."""
        handlers = {"/_sim/identities": self._identities, "/_sim/token-faults": self._faults,
                    "/_sim/exchanges": self._exchanges, "/_sim/tokens": self._tokens,
                    "/_sim/tokens/expire": self._expire}
        h = handlers.get(req.path)
        if h is None:
            return None
        try:
            return h(req)
        except ValueError as e:
            return json_response(400, {"error": str(e)})

    def _identities(self, req: Request) -> Response:
        if req.method == "GET":
            return json_response(200, self.reg.public())
        if req.method == "POST":
            counts = self.reg.load(_body(req))
            return json_response(200, {"registered": counts, "idp": self.reg.idp_public()})
        if req.method == "DELETE":
            self.reg.clear()
            return json_response(200, {"cleared": True})
        return _not_allowed(req)

    def _faults(self, req: Request) -> Response:
        if req.method == "GET":
            return json_response(200, [f.public() for f in self.faults.values()])
        if req.method == "POST":
            doc = _body(req)
            faults = [Fault.parse(d) for d in (doc if isinstance(doc, list) else [doc])]
            for f in faults:
                self.faults[f.service] = f
            return json_response(200, [f.public() for f in self.faults.values()])
        if req.method == "DELETE":
            service = req.query1("service")
            if service is None:
                self.faults.clear()
            else:
                self.faults.pop(service, None)
            return json_response(200, {"cleared": service or "all"})
        return _not_allowed(req)

    def _exchanges(self, req: Request) -> Response:
        if req.method == "GET":
            service = req.query1("service")
            return json_response(200, [r for r in self.exchanges if service is None or r["service"] == service])
        if req.method == "DELETE":
            self.exchanges.clear()
            return json_response(200, {"cleared": True})
        return _not_allowed(req)

    def _tokens(self, req: Request) -> Response:
        if req.method == "GET":
            service = req.query1("service")
            return json_response(200, [i.public() for i in self.store.all() if service in (None, i.service)])
        if req.method == "DELETE":
            self.store.clear()
            return json_response(200, {"cleared": True})
        return _not_allowed(req)

    def _expire(self, req: Request) -> Response:
        if req.method != "POST":
            return _not_allowed(req)
        doc = _body(req)
        service = doc.get("service") if isinstance(doc, dict) else None
        if service is not None and service not in SERVICES:
            raise ValueError(f"`service` must be one of {sorted(SERVICES)}")
        return json_response(200, {"expired": self.store.expire(service)})


class _RawFault(Exception):
    def __init__(self, response: Response):
        self.response = response


def _not_allowed(req: Request) -> Response:
    return json_response(405, {"error": f"{req.method} is not allowed on {req.path}"})
