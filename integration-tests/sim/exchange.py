"""What every token service shares: the error it raises, the per-request context
(parsed form or JSON fields, the registry, the issued-token store, the exchange
record, the lifetime override of a fault) and small helpers."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from . import jws
from .core import Request
from .identity import Registry
from .issued import Issued, IssuedStore


class TokenError(Exception):
    """A failed exchange: each service renders it in its own format.

    `code`: the service's error code (OAuth `error`, AWS `Code`, Google `status`);
    `extra`: format details (Entra AADSTS number, AWS Type...)."""

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


FORM = "application/x-www-form-urlencoded"


def media_type(req: Request) -> str:
    return (req.header("content-type") or "").split(";")[0].strip().lower()


def host_of(req: Request) -> str:
    """The Host header, lower-case, without a port."""
    host = (req.header("host") or "").strip().lower()
    return host.rsplit(":", 1)[0] if ":" in host and not host.endswith("]") else host


def parse_form(body: bytes) -> tuple[dict[str, str], list[str]]:
    """(fields, names sent more than once); the last value wins."""
    q = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in q.items()}, sorted(k for k, v in q.items() if len(v) > 1)


def basic_auth(req: Request) -> tuple[str, str] | None:
    """(client id, secret) of `Authorization: Basic`, each form-decoded as RFC 6749
    §2.3.1 asks (golang.org/x/oauth2 query-escapes both); None without Basic. A
    header that does not decode gives ("", "")."""
    v = req.header("authorization") or ""
    if v[:6].lower() != "basic ":
        return None
    try:
        user, sep, pw = base64.b64decode(v[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return "", ""
    if not sep:
        return "", ""
    return unquote_plus(user), unquote_plus(pw)


def bearer(req: Request) -> str | None:
    v = req.header("authorization")
    if v and v[:7].lower() == "bearer ":
        return v[7:].strip() or None
    return None


SKEW = 60


def verify_trusted(reg: Registry, token: Any, now: float) -> tuple[dict, dict]:
    """(header, claims) of a JWT from a trusted issuer (the simulated IdP or one
    registered under trusted_issuers): RS256 signature with the issuer's key, `exp`
    present and in the future, `iat`/`nbf` not more than 60 s ahead. Raises
    jws.JwtError with reason malformed | alg | issuer | signature | expired |
    not_yet_valid."""
    _header, claims, _, _ = jws.decode(token)
    key = reg.trusted_key(claims.get("iss"))
    if key is None:
        raise jws.JwtError("issuer", f"the issuer {claims.get('iss')!r} is not a trusted OIDC issuer")
    header, claims = jws.verify(token, key)
    exp = jws.number(claims, "exp")
    if exp is None:
        raise jws.JwtError("malformed", "the JWT has no numeric exp claim")
    if now >= exp:
        raise jws.JwtError("expired", f"the JWT expired at {iso_z(exp)} (now {iso_z(now)})")
    for name in ("iat", "nbf"):
        t = jws.number(claims, name)
        if t is not None and t > now + SKEW:
            raise jws.JwtError("not_yet_valid", f"the JWT {name} {iso_z(t)} is in the future (now {iso_z(now)})")
    return header, claims


def iso_z(t: float) -> str:
    """RFC 3339 UTC without fractional seconds: 2014-10-02T15:01:23Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class TokenCtx:
    req: Request
    service: str
    reg: Registry
    store: IssuedStore
    record: dict                     # this exchange's entry in /_sim/exchanges
    now: float = field(default_factory=time.time)
    expires_in: int | None = None    # the lifetime a fault imposes on issued tokens
    _form: tuple[dict[str, str], list[str]] | None = None

    def form(self) -> dict[str, str]:
        if self._form is None:
            self._form = parse_form(self.req.body)
        return self._form[0]

    @property
    def repeated(self) -> list[str]:
        self.form()
        return self._form[1]

    def json_body(self) -> Any:
        return self.req.json()

    def lifetime(self, default: int) -> int:
        """Seconds an issued token lives: the fault's expires_in when set."""
        return self.expires_in if self.expires_in is not None else default

    def issue(self, item: Issued) -> Issued:
        self.store.add(item)
        self.record["issued"] = item.public()
        return item

    def note(self, **kw: Any) -> None:
        """Adds non-secret facts to the exchange record (matched registration...)."""
        self.record.setdefault("notes", {}).update(kw)
