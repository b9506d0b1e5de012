"""Test PKI for TLS and mTLS tests, made with ``cryptography`` (EC P-256, fast to generate).

:func:`make_certs` writes into a directory:

* ``ca.pem``: the test CA (trusted by the TLS backend for client certs, and
  the ``tls.caFile`` that verifies the backend);
* ``server.pem`` / ``server-key.pem``: the backend, for ``127.0.0.1`` and ``localhost``;
* ``client.pem`` / ``client-key.pem``: a client certificate the CA signed;
* ``untrusted-client.pem`` / ``untrusted-client-key.pem``: a self-signed one;
* ``other-ca.pem``: an unrelated CA (verifying the backend with it must fail).

and returns their paths as :class:`TestCerts`, whose :meth:`~TestCerts.server_context`
is the SSL context for a backend.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_CN = "voicetyped-integration"
UNTRUSTED_CLIENT_CN = "mallory"


@dataclass(frozen=True)
class TestCerts:
    __test__ = False  # not a test class, whatever pytest thinks of the name

    dir: Path
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    untrusted_client_cert: Path
    untrusted_client_key: Path

    def server_context(self, *, require_client_cert: bool = True) -> ssl.SSLContext:
        """A server context with the backend's certificate; with ``require_client_cert``
        a client must present a certificate signed by the test CA (``CERT_REQUIRED``)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=self.ca)
        return context


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "voicetyped tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer is not None else _name(subject))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path = path.with_name(path.name.replace(".pem", "-key.pem"))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)


def make_certs(directory: Path) -> TestCerts:
    """Generate the test PKI into ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert("voicetyped test CA", ca_key, None, ca_key, ca=True)
    other_ca_key = _key()
    other_ca = _cert("unrelated test CA", other_ca_key, None, other_ca_key, ca=True)
    server_key = _key()
    server = _cert("localhost", server_key, ca, ca_key, server=True)
    client_key = _key()
    client = _cert(CLIENT_CN, client_key, ca, ca_key, client=True)
    untrusted_key = _key()
    untrusted = _cert(UNTRUSTED_CLIENT_CN, untrusted_key, None, untrusted_key, client=True)

    _write(directory / "ca.pem", ca, None)
    _write(directory / "other-ca.pem", other_ca, None)
    _write(directory / "server.pem", server, server_key)
    _write(directory / "client.pem", client, client_key)
    _write(directory / "untrusted-client.pem", untrusted, untrusted_key)
    return TestCerts(
        dir=directory,
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
        untrusted_client_cert=directory / "untrusted-client.pem",
        untrusted_client_key=directory / "untrusted-client-key.pem",
    )
