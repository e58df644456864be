"""What the token services know: the simulated OIDC IdP (issuer and RSA key), other
trusted JWT issuers, OIDC clients, Entra apps, Google service accounts, workload
identity pools and AWS roles. Filled from JSON (POST /_sim/identities or
--identities FILE); `public()` shows it with every secret replaced by its presence."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .jws import RsaKey, load_public_key
from .sigv4 import AwsCredentials

DEFAULT_ISSUER = "https://oidc.sim.test"
AZURE_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
POOL_AUDIENCE = re.compile(r"^//iam\.googleapis\.com/projects/(\d+)/locations/global/workloadIdentityPools/"
                           r"([a-z0-9-]+)/providers/([a-z0-9-]+)$")
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/((?:[\w+=,.@-]+/)*)([\w+=,.@-]{1,64})$")


def _str(doc: dict, name: str, where: str, default: Any = None, required: bool = True) -> Any:
    v = doc.get(name, default)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v:
        raise ValueError(f"{where}: `{name}` must be a non-empty string")
    return v


def _strs(v: Any, name: str, where: str) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and all(isinstance(x, str) and x for x in v):
        return list(v)
    raise ValueError(f"{where}: `{name}` must be a string or a list of strings")


def _items(doc: dict, name: str) -> list[dict]:
    v = doc.get(name) or []
    if isinstance(v, dict):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise ValueError(f"`{name}` must be an object or a list of objects")
    return v


PRESENT = "<present>"


# ---- registrations ----------------------------------------------------------------

@dataclass
class TrustedIssuer:
    """A JWT issuer whose tokens the exchanges accept (the simulated IdP is always one)."""
    issuer: str
    key: Any  # RSAPublicKey
    pem: str

    def public(self) -> dict:
        return {"issuer": self.issuer, "public_key_pem": self.pem}


@dataclass
class OidcClient:
    client_id: str
    client_secret: str
    subject: str                 # the `sub` of its tokens
    audience: list[str]          # the `aud` of its tokens (one string when one)
    scopes: list[str] | None     # scopes it may ask for (None: any)
    claims: dict                 # extra claims

    @classmethod
    def parse(cls, d: dict) -> "OidcClient":
        w = "oidc_clients"
        cid = _str(d, "client_id", w)
        extra = d.get("claims") or {}
        if not isinstance(extra, dict):
            raise ValueError(f"{w}: `claims` must be an object")
        scopes = d.get("scopes")
        return cls(cid, _str(d, "client_secret", w), _str(d, "subject", w, cid), _strs(d.get("audience", cid),
                   "audience", w), None if scopes is None else _strs(scopes, "scopes", w), extra)

    def public(self) -> dict:
        return {"client_id": self.client_id, "client_secret": PRESENT, "subject": self.subject,
                "audience": self.audience, "scopes": self.scopes, "claims": self.claims}


@dataclass
class FederatedCredential:
    issuer: str
    subject: str
    audience: str = AZURE_EXCHANGE_AUDIENCE


@dataclass
class EntraApp:
    tenant: str
    tenant_aliases: list[str]
    client_id: str
    secrets: list[str]
    federated: list[FederatedCredential]

    @classmethod
    def parse(cls, d: dict) -> "EntraApp":
        w = "entra_apps"
        secrets = _strs(d.get("client_secret"), "client_secret", w) + _strs(d.get("client_secrets"),
                                                                             "client_secrets", w)
        feds = []
        for f in _items(d, "federated"):
            feds.append(FederatedCredential(_str(f, "issuer", w + ".federated"), _str(f, "subject", w + ".federated"),
                                            _str(f, "audience", w + ".federated", AZURE_EXCHANGE_AUDIENCE)))
        if not secrets and not feds:
            raise ValueError(f"{w}: an app needs `client_secret` and/or `federated` credentials")
        return cls(_str(d, "tenant", w), _strs(d.get("tenant_aliases"), "tenant_aliases", w),
                   _str(d, "client_id", w), secrets, feds)

    def has_tenant(self, tenant: str) -> bool:
        return tenant.lower() in {t.lower() for t in [self.tenant] + self.tenant_aliases}

    def public(self) -> dict:
        return {"tenant": self.tenant, "tenant_aliases": self.tenant_aliases, "client_id": self.client_id,
                "client_secrets": [PRESENT] * len(self.secrets),
                "federated": [f.__dict__ for f in self.federated]}


@dataclass
class ServiceAccount:
    client_email: str
    keys: dict[str, Any]          # private_key_id -> RSAPublicKey
    pems: dict[str, str]
    token_uri: str
    allow_subject: bool           # domain-wide delegation (a `sub` claim)

    @classmethod
    def parse(cls, d: dict) -> "ServiceAccount":
        w = "google_service_accounts"
        keys, pems = {}, {}
        entries = _items(d, "keys") or [d]
        for k in entries:
            kid = _str(k, "private_key_id", w)
            pem = _str(k, "public_key_pem", w)
            try:
                keys[kid] = load_public_key(pem)
            except ValueError as e:
                raise ValueError(f"{w}: key {kid}: {e}") from None
            pems[kid] = pem
        return cls(_str(d, "client_email", w), keys, pems, _str(d, "token_uri", w, GOOGLE_TOKEN_URI),
                   bool(d.get("allow_subject", False)))

    def public(self) -> dict:
        return {"client_email": self.client_email, "token_uri": self.token_uri, "allow_subject": self.allow_subject,
                "keys": [{"private_key_id": k, "public_key_pem": p} for k, p in self.pems.items()]}


@dataclass
class WorkloadPool:
    audience: str                 # //iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/Q
    project_number: str
    pool: str
    provider: str
    issuer: str
    allowed_audiences: list[str]  # what the subject token's aud must hold one of
    service_accounts: list[str]   # which service accounts its principals may impersonate

    @classmethod
    def parse(cls, d: dict) -> "WorkloadPool":
        w = "workload_pools"
        aud = _str(d, "audience", w)
        m = POOL_AUDIENCE.match(aud)
        if not m:
            raise ValueError(f"{w}: audience {aud!r} is not //iam.googleapis.com/projects/<number>/locations/global/"
                             f"workloadIdentityPools/<pool>/providers/<provider>")
        allowed = _strs(d.get("allowed_audiences"), "allowed_audiences", w) or ["https:" + aud, aud]
        return cls(aud, m.group(1), m.group(2), m.group(3), _str(d, "issuer", w), allowed,
                   _strs(d.get("service_accounts"), "service_accounts", w))

    def principal(self, sub: str) -> str:
        return (f"principal://iam.googleapis.com/projects/{self.project_number}/locations/global/"
                f"workloadIdentityPools/{self.pool}/subject/{sub}")

    def public(self) -> dict:
        return dict(self.__dict__)


@dataclass
class WebIdentityTrust:
    issuer: str
    audience: str
    subject: str | None = None


@dataclass
class AwsRole:
    role_arn: str
    account: str
    name: str
    web_identity: list[WebIdentityTrust]
    base_credentials: list[AwsCredentials]
    max_session_duration: int
    external_id: str | None

    @classmethod
    def parse(cls, d: dict) -> "AwsRole":
        w = "aws_roles"
        arn = _str(d, "role_arn", w)
        m = ROLE_ARN.match(arn)
        if not m:
            raise ValueError(f"{w}: {arn!r} is not arn:aws:iam::<12 digits>:role/<name>")
        trusts = [WebIdentityTrust(_str(t, "issuer", w + ".web_identity"), _str(t, "audience", w + ".web_identity"),
                                   _str(t, "subject", w + ".web_identity", required=False))
                  for t in _items(d, "web_identity")]
        creds = []
        for c in d.get("base_credentials") or []:
            if isinstance(c, str):
                creds.append(AwsCredentials.parse(c))
            elif isinstance(c, dict):
                creds.append(AwsCredentials(_str(c, "access_key_id", w), _str(c, "secret_access_key", w),
                                            _str(c, "session_token", w, required=False)))
            else:
                raise ValueError(f"{w}: base_credentials are AKID:SECRET[:TOKEN] strings or objects")
        msd = d.get("max_session_duration", 3600)
        if not isinstance(msd, int) or not 3600 <= msd <= 43200:
            raise ValueError(f"{w}: max_session_duration must be an integer in 3600..43200")
        return cls(arn, m.group(1), m.group(3), trusts, creds, msd, _str(d, "external_id", w, required=False))

    def public(self) -> dict:
        return {"role_arn": self.role_arn, "web_identity": [t.__dict__ for t in self.web_identity],
                "base_credentials": [{"access_key_id": c.access_key, "secret_access_key": PRESENT,
                                      "session_token": PRESENT if c.session_token else None}
                                     for c in self.base_credentials],
                "max_session_duration": self.max_session_duration, "external_id": self.external_id}


# ---- the registry ---------------------------------------------------------------------

@dataclass
class Registry:
    issuer: str = DEFAULT_ISSUER
    scopes_supported: list[str] = field(default_factory=lambda: ["openid"])
    idp_key: RsaKey = field(default_factory=lambda: RsaKey.generate("sim-idp-1"))
    # Signs the Entra access tokens (JWTs, as the real ones are; nobody verifies them).
    entra_key: RsaKey = field(default_factory=lambda: RsaKey.generate("sim-entra-1"))
    extra_issuers: dict[str, TrustedIssuer] = field(default_factory=dict)
    oidc_clients: dict[str, OidcClient] = field(default_factory=dict)
    entra_apps: dict[str, EntraApp] = field(default_factory=dict)            # by client_id
    service_accounts: dict[str, ServiceAccount] = field(default_factory=dict)  # by client_email
    pools: dict[str, WorkloadPool] = field(default_factory=dict)             # by audience
    roles: dict[str, AwsRole] = field(default_factory=dict)                  # by role_arn

    def __post_init__(self):
        self.default_issuer = self.issuer

    def trusted_key(self, issuer: Any) -> Any:
        """The public key that signs `issuer`'s tokens, or None."""
        if issuer == self.issuer:
            return self.idp_key.public
        t = self.extra_issuers.get(issuer) if isinstance(issuer, str) else None
        return t.key if t else None

    def load(self, doc: Any) -> dict:
        """Adds (or replaces, by key) what `doc` registers; returns counts. All or
        nothing: a ValueError leaves the registry as it was."""
        if not isinstance(doc, dict):
            raise ValueError("the identities document must be a JSON object")
        known = {"idp", "trusted_issuers", "oidc_clients", "entra_apps", "google_service_accounts",
                 "workload_pools", "aws_roles"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValueError(f"unknown keys {unknown}: expected some of {sorted(known)}")
        idp = doc.get("idp") or {}
        if not isinstance(idp, dict):
            raise ValueError("`idp` must be an object")
        issuer = _str(idp, "issuer", "idp", self.issuer)
        if not re.match(r"^https?://[^/?#]+(/[^?#]*)?$", issuer) or issuer.endswith("/"):
            raise ValueError(f"idp: issuer {issuer!r} must be an http(s) URL without a trailing slash")
        scopes = _strs(idp.get("scopes_supported", self.scopes_supported), "scopes_supported", "idp")
        trusted = {}
        for t in _items(doc, "trusted_issuers"):
            iss, pem = _str(t, "issuer", "trusted_issuers"), _str(t, "public_key_pem", "trusted_issuers")
            try:
                trusted[iss] = TrustedIssuer(iss, load_public_key(pem), pem)
            except ValueError as e:
                raise ValueError(f"trusted_issuers: {iss}: {e}") from None
        clients = {c.client_id: c for c in map(OidcClient.parse, _items(doc, "oidc_clients"))}
        apps = {a.client_id: a for a in map(EntraApp.parse, _items(doc, "entra_apps"))}
        sas = {s.client_email: s for s in map(ServiceAccount.parse, _items(doc, "google_service_accounts"))}
        pools = {p.audience: p for p in map(WorkloadPool.parse, _items(doc, "workload_pools"))}
        roles = {r.role_arn: r for r in map(AwsRole.parse, _items(doc, "aws_roles"))}
        self.issuer, self.scopes_supported = issuer, scopes
        self.extra_issuers.update(trusted)
        self.oidc_clients.update(clients)
        self.entra_apps.update(apps)
        self.service_accounts.update(sas)
        self.pools.update(pools)
        self.roles.update(roles)
        return {"trusted_issuers": len(trusted), "oidc_clients": len(clients), "entra_apps": len(apps),
                "google_service_accounts": len(sas), "workload_pools": len(pools), "aws_roles": len(roles)}

    def clear(self) -> None:
        """Forgets every registration and restores the start-up issuer (keys stay)."""
        self.issuer = self.default_issuer
        self.scopes_supported = ["openid"]
        for table in (self.extra_issuers, self.oidc_clients, self.entra_apps, self.service_accounts, self.pools,
                      self.roles):
            table.clear()

    def idp_public(self) -> dict:
        return {"issuer": self.issuer, "scopes_supported": self.scopes_supported, "kid": self.idp_key.kid,
                "public_key_pem": self.idp_key.public_pem(), "jwks": {"keys": [self.idp_key.jwk()]}}

    def public(self) -> dict:
        return {
            "idp": self.idp_public(),
            "trusted_issuers": [t.public() for t in self.extra_issuers.values()],
            "oidc_clients": [c.public() for c in self.oidc_clients.values()],
            "entra_apps": [a.public() for a in self.entra_apps.values()],
            "google_service_accounts": [s.public() for s in self.service_accounts.values()],
            "workload_pools": [p.public() for p in self.pools.values()],
            "aws_roles": [r.public() for r in self.roles.values()],
        }
