"""RS256 JSON Web Tokens with `cryptography`: base64url without padding, signing,
unverified decoding (for the exchange log), verification against a public key, PEM
and JWK forms of a key."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class JwtError(Exception):
    """A token that is not a well-formed RS256 JWT, or whose signature fails.

    `reason`: malformed | alg | signature."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str) or any(c in text for c in "=+/ \n"):
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_b64(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


@dataclass
class RsaKey:
    """A private RSA key and the key id its tokens carry in the header."""
    private: rsa.RSAPrivateKey
    kid: str

    @classmethod
    def generate(cls, kid: str, bits: int = 2048) -> "RsaKey":
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits), kid)

    @property
    def public(self) -> rsa.RSAPublicKey:
        return self.private.public_key()

    def public_pem(self) -> str:
        return self.public.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def jwk(self) -> dict:
        nums = self.public.public_numbers()
        return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": _int_b64(nums.n),
                "e": _int_b64(nums.e)}

    def sign(self, claims: dict, header: dict | None = None) -> str:
        return sign(self.private, claims, {"alg": "RS256", "typ": "JWT", "kid": self.kid, **(header or {})})


def sign(private: rsa.RSAPrivateKey, claims: dict, header: dict) -> str:
    """header.claims.signature, RSASSA-PKCS1-v1_5 with SHA-256 over the first two parts."""
    head = b64url(json.dumps(header, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{head}.{body}".encode("ascii")
    return f"{head}.{body}.{b64url(private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256()))}"


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    """An RSA public key from a PEM public key (SPKI or PKCS#1) or an X.509 certificate."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"BEGIN CERTIFICATE" in data:
        from cryptography import x509
        key = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def decode(token: Any) -> tuple[dict, dict, bytes, bytes]:
    """(header, claims, signing input, signature), not verified; JwtError("malformed")
    when it is not three base64url parts holding two JSON objects."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise JwtError("malformed", "not a JWT: expected three dot-separated base64url parts")
    head, body, sig = token.split(".")
    try:
        header = json.loads(b64url_decode(head))
        claims = json.loads(b64url_decode(body))
        signature = b64url_decode(sig)
    except ValueError as e:
        raise JwtError("malformed", f"not a JWT: {e}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtError("malformed", "not a JWT: the header and claims must be JSON objects")
    return header, claims, f"{head}.{body}".encode("ascii"), signature


def peek(token: Any) -> dict | None:
    """{"header", "claims"} of a JWT without verifying it (for the exchange log)."""
    try:
        header, claims, _, _ = decode(token)
    except JwtError:
        return None
    return {"header": header, "claims": claims}


def verify(token: str, key: rsa.RSAPublicKey) -> tuple[dict, dict]:
    """(header, claims) of an RS256 JWT signed by `key`; JwtError otherwise. Claims
    (iss, aud, exp...) are the caller's business."""
    header, claims, signing_input, signature = decode(token)
    if header.get("alg") != "RS256":
        raise JwtError("alg", f"unsupported JWT algorithm {header.get('alg')!r}: only RS256 is accepted")
    try:
        key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise JwtError("signature", "the JWT signature does not verify") from None
    return header, claims


def audiences(claims: dict) -> list[str]:
    """The `aud` claim as a list (a string or an array)."""
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []


def number(claims: dict, name: str) -> float | None:
    v = claims.get(name)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
