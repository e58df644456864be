"""What the token services issued: bearer tokens (Entra, Google, the IdP) and AWS
temporary credentials, each with its expiry, so the provider routes can accept them
(and reject them once expired). Listed without their values: a token shows as its
fingerprint, the first 16 hex digits of its SHA-256."""

from __future__ import annotations

import base64
import hashlib
import secrets
import string
import time
from dataclasses import dataclass, field

from .sigv4 import AwsCredentials

# kinds: what a provider route accepts
ENTRA, GOOGLE, AWS, OIDC = "entra", "google", "aws", "oidc"


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def random_token(n: int) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(n)).rstrip(b"=").decode()


def access_key_id() -> str:
    return "ASIA" + "".join(secrets.choice(string.ascii_uppercase + "234567") for _ in range(16))


@dataclass
class Issued:
    service: str               # the token service that issued it (entra, google-oauth, ...)
    kind: str                  # entra | google | aws | oidc
    token: str                 # the bearer token; for AWS, the access key id
    issued_at: float
    expires_at: float
    principal: str             # client id, service account, workload principal, assumed-role ARN...
    audience: str | None = None        # Entra: the resource; the IdP: its aud
    scopes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    secret_key: str | None = None      # AWS
    session_token: str | None = None   # AWS

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    def aws_credentials(self) -> AwsCredentials:
        return AwsCredentials(self.token, self.secret_key, self.session_token)

    def public(self) -> dict:
        """Everything but the secret values."""
        out = {"service": self.service, "kind": self.kind, "issued_at": self.issued_at,
               "expires_at": self.expires_at, "expired": self.expired(), "principal": self.principal,
               "audience": self.audience, "scopes": self.scopes, "details": self.details}
        if self.kind == AWS:
            out["access_key_id"] = self.token
        else:
            out["fingerprint"] = fingerprint(self.token)
        return out


class IssuedStore:
    def __init__(self):
        self.bearers: dict[str, Issued] = {}
        self.aws: dict[str, Issued] = {}

    def add(self, item: Issued) -> Issued:
        (self.aws if item.kind == AWS else self.bearers)[item.token] = item
        return item

    def bearer(self, token: str | None) -> Issued | None:
        return self.bearers.get(token) if token else None

    def aws_key(self, akid: str | None) -> Issued | None:
        return self.aws.get(akid) if akid else None

    def all(self) -> list[Issued]:
        return sorted(list(self.bearers.values()) + list(self.aws.values()), key=lambda i: i.issued_at)

    def expire(self, service: str | None = None, now: float | None = None) -> int:
        """Makes every token (of `service`, or all) expire now; returns how many."""
        now = time.time() if now is None else now
        n = 0
        for item in self.all():
            if (service is None or item.service == service) and item.expires_at > now:
                item.expires_at = now
                n += 1
        return n

    def clear(self) -> None:
        self.bearers.clear()
        self.aws.clear()
