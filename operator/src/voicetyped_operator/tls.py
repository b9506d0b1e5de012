"""The media gateway's TLS Secret, checked before it is rolled out (pure, no API calls).

The gateway refuses to start with an expired, not yet valid or mismatched certificate
(exit 2); the operator sees the same in the Secret first and reports it (``Stalled``,
``InvalidTLSSecret``) instead of rolling pods that would crash-loop. Messages name the
problem and dates, never any key material; the rollout hash covers the certificate and the
*public* key only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class TlsCheck:
    problem: str
    """Empty when the pair is usable; else what is wrong, for a condition message."""
    digest: str = ""
    """Of the certificate chain and public key (what rolls the media pods on renewal)."""


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _private_key(pem: bytes) -> PrivateKeyTypes | None:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):  # not PEM, encrypted, unsupported
        return None


def check_server_pair(cert_pem: bytes, key_pem: bytes, now: datetime) -> TlsCheck:
    """``tls.crt`` (leaf first, then its chain) and ``tls.key`` of a kubernetes.io/tls Secret."""
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        return TlsCheck("tls.crt holds no PEM certificate")
    leaf = chain[0]
    key = _private_key(key_pem)
    if key is None:
        return TlsCheck("tls.key holds no unencrypted PEM private key")
    subject = leaf.subject.rfc4514_string() or "(no subject)"
    if now < leaf.not_valid_before_utc:
        return TlsCheck(
            f"certificate {subject} is not valid before {_when(leaf.not_valid_before_utc)}"
        )
    if now > leaf.not_valid_after_utc:
        return TlsCheck(f"certificate {subject} expired on {_when(leaf.not_valid_after_utc)}")
    public = leaf.public_key().public_bytes(*_SPKI)
    if key.public_key().public_bytes(*_SPKI) != public:
        return TlsCheck(f"tls.key is not the key of certificate {subject}")
    digest = hashlib.sha256()
    for cert in chain:
        digest.update(cert.public_bytes(serialization.Encoding.DER))
    digest.update(public)
    return TlsCheck("", digest.hexdigest()[:16])


def check_ca_bundle(pem: bytes, key: str) -> str:
    """A client CA bundle: empty when it holds PEM certificates, else the problem."""
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError:
        return f"{key} holds no PEM certificate"
    return ""
