"""A throwaway PKI for the TLS tests, made with ``cryptography`` in a test's tmp dir: a CA, a
server certificate for 127.0.0.1/localhost, a client certificate (a carrier's), an expired
server certificate, and a second CA with its own client (one the gateway must not trust).

RSA 2048 with SHA-256: the pjsua2 wheel links OpenSSL 1.0.2, which has no Ed25519.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Issued
    server: Issued
    client: Issued
    expired: Issued
    other_ca: Issued
    stranger: Issued
    """A client certificate from ``other_ca``."""


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> Issued:
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,  # OpenSSL 1.0.2 reads it
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Issued(cert_path, key_path)


def _ca(
    directory: Path, stem: str, now: dt.datetime
) -> tuple[Issued, x509.Certificate, rsa.RSAPrivateKey]:
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"voicetyped test {stem}"))
        .issuer_name(_name(f"voicetyped test {stem}"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _write(directory, stem, cert, key), cert, key


def _leaf(
    directory: Path,
    stem: str,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey],
    usage: x509.ObjectIdentifier,
    valid: tuple[dt.datetime, dt.datetime],
) -> Issued:
    key = _key()
    ca_cert, ca_key = issuer
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{stem}.voicetyped.test"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return _write(directory, stem, cert, key)


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    valid = (now - dt.timedelta(hours=1), now + dt.timedelta(days=7))
    ca, ca_cert, ca_key = _ca(directory, "ca", now)
    other, other_cert, other_key = _ca(directory, "other-ca", now)
    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    return Pki(
        ca=ca,
        server=_leaf(directory, "server", (ca_cert, ca_key), server, valid),
        client=_leaf(directory, "client", (ca_cert, ca_key), client, valid),
        expired=_leaf(
            directory,
            "expired",
            (ca_cert, ca_key),
            server,
            (now - dt.timedelta(days=30), now - dt.timedelta(days=1)),
        ),
        other_ca=other,
        stranger=_leaf(directory, "stranger", (other_cert, other_key), client, valid),
    )
