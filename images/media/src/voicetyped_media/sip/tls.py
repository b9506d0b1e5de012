"""SIP over TLS (RFC 3261 §26.2, RFC 5630): the server's TLS context, built once at start-up.

The certificate and key are files (a Kubernetes Secret mount). Everything that would make the
listener useless is found here, before anything listens, and raised as :class:`ConfigError` with
one line naming the file and the problem (the service then exits 2): an unreadable or non-PEM
file, a certificate that has expired or is not valid yet, a key that is not the certificate's,
an unreadable client CA. With ``tls_client_ca_file`` a client must present a certificate issued
by one of those CAs (a carrier's), checked in the handshake; ``ssl`` does it (OpenSSL), with no
protocol code of ours.
"""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

from cryptography import x509
from voicetyped.service.config import ConfigError

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None


def check_certificate(cert_file: Path, now: dt.datetime | None = None) -> x509.Certificate:
    """The leaf certificate of ``cert_file`` (raises :class:`ConfigError` when unusable)."""
    data = _read(cert_file, "tls_cert_file")
    try:
        leaf = x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        raise ConfigError(f"tls_cert_file {cert_file}: not a PEM certificate") from None
    now = now or dt.datetime.now(dt.UTC)
    if now > leaf.not_valid_after_utc:
        raise ConfigError(
            f"tls_cert_file {cert_file}: certificate expired on "
            f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({leaf.subject.rfc4514_string()})"
        )
    if now < leaf.not_valid_before_utc:
        raise ConfigError(
            f"tls_cert_file {cert_file}: certificate not valid before "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC ({leaf.subject.rfc4514_string()})"
        )
    return leaf


def server_context(
    cert_file: Path,
    key_file: Path,
    client_ca_file: Path | None = None,
    min_version: str = "TLSv1.2",
) -> ssl.SSLContext:
    """The TLS server context for the SIP listener (raises :class:`ConfigError`)."""
    check_certificate(cert_file)
    _read(key_file, "tls_key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[min_version]
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        detail = (
            "the key does not match the certificate"
            if "KEY_VALUES_MISMATCH" in str(exc)
            else "not a usable PEM private key"
        )
        raise ConfigError(f"tls_key_file {key_file}: {detail} ({cert_file})") from None
    if client_ca_file is not None:
        _read(client_ca_file, "tls_client_ca_file")
        try:
            context.load_verify_locations(cafile=str(client_ca_file))
        except ssl.SSLError:
            raise ConfigError(
                f"tls_client_ca_file {client_ca_file}: no PEM CA certificate in it"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context
