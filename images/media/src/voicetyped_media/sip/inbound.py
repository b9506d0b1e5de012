"""Who may call in: a source-address allowlist and/or SIP digest authentication.

Digest (RFC 3261 §22, RFC 7616/8760): the challenge offers SHA-256 and MD5 (many trunks only do
MD5), ``qop=auth``. Nonces are stateless: ``<issued time>.<HMAC of it with a per-process key>``,
accepted for ``nonce_ttl_s`` (an expired but genuine one is answered ``stale=true`` so the client
retries without asking its user). Passwords come from a file (a Kubernetes Secret mount): one
``user:password`` per line. Nothing here is ever logged.

No user enumeration: an unknown user and a wrong password get the same answer (a fresh 401
challenge, same headers, same Warning) after the same work (the digest of an unknown user is
computed against a random secret and compared like any other).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aiosipua import SipRequest
from voicetyped.service.logs import get_logger

from voicetyped_media.sip.validate import Problem

log = get_logger("voicetyped.media.auth")

_PARAM = re.compile(r'([A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}

Verdict = Literal["ok", "stale", "bad", "missing"]


@dataclass(frozen=True)
class Challenge(Problem):
    """A 401 with the digest challenge; ``failed`` when the request's credentials were wrong
    (not merely absent): what the scanner defence counts."""

    failed: bool = False


def load_users(path: Path) -> dict[str, str]:
    users: dict[str, str] = {}
    for line in path.read_text("utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            user, sep, password = line.partition(":")
            if not sep or not user:
                raise ValueError(f"{path}: lines must be user:password")
            users[user] = password
    return users


@dataclass
class DigestAuth:
    realm: str
    users: dict[str, str]
    nonce_ttl_s: float = 300.0

    def __post_init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._unknown_user_secret = secrets.token_urlsafe(24)

    def _sign(self, issued: str) -> str:
        return hmac.new(self._key, issued.encode(), hashlib.sha256).hexdigest()[:32]

    def nonce(self) -> str:
        issued = f"{time.time():.3f}"
        return f"{issued}.{self._sign(issued)}"

    def challenge(self, stale: bool = False) -> list[str]:
        nonce = self.nonce()
        extra = ", stale=true" if stale else ""
        return [
            f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={alg}, qop="auth"{extra}'
            for alg in ("MD5", "SHA-256")
        ]

    def verify(self, request: SipRequest) -> Verdict:
        """ "ok", "stale" (right credentials, genuine but expired nonce), "bad" (wrong
        credentials, whichever part) or "missing" (no Digest Authorization)."""
        header = request.get_header("authorization")
        if not header or not header.lower().startswith("digest "):
            if header:
                log.info("digest refused: not a Digest Authorization")
            return "missing"
        params = {
            m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
            for m in _PARAM.finditer(header[7:])
        }
        user, nonce = params.get("username", ""), params.get("nonce", "")
        known = self.users.get(user)
        password = known if known is not None else self._unknown_user_secret
        algorithm = params.get("algorithm", "MD5").upper()
        digest = _HASHES.get(algorithm)
        if digest is None or params.get("realm") != self.realm:
            log.info("digest refused: unknown algorithm or realm", algorithm=algorithm)
            return "bad"
        issued, _, signature = nonce.rpartition(".")
        if not issued or not hmac.compare_digest(signature.encode(), self._sign(issued).encode()):
            log.info("digest refused: not our nonce")
            return "bad"

        def h(text: str) -> str:
            return digest(text.encode()).hexdigest()

        ha1 = h(f"{user}:{self.realm}:{password}")
        ha2 = h(f"{request.method}:{params.get('uri', '')}")
        qop = params.get("qop")
        if qop == "auth":
            expected = h(
                f"{ha1}:{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:auth:{ha2}"
            )
        elif qop is None:
            expected = h(f"{ha1}:{nonce}:{ha2}")
        else:
            return "bad"
        response = params.get("response", "").encode()  # bytes: any text compares, no raise
        if not hmac.compare_digest(expected.encode(), response) or known is None:
            # One line for both: neither the answer nor the log tells a user from a password.
            log.info("digest refused: wrong credentials", algorithm=algorithm, qop=qop or "")
            return "bad"
        try:
            age = time.time() - float(issued)
        except ValueError:
            return "bad"
        if not -1.0 <= age <= self.nonce_ttl_s:  # -1: rounding and clock skew
            log.info("digest refused: stale nonce", age_s=round(age, 1))
            return "stale"
        return "ok"


@dataclass
class InboundPolicy:
    allowed: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    digest: DigestAuth | None = None

    @classmethod
    def build(cls, cidrs: list[str], users_file: Path | None, realm: str) -> InboundPolicy:
        networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        digest = DigestAuth(realm, load_users(users_file)) if users_file is not None else None
        return cls(networks, digest)

    def check(self, request: SipRequest, source: tuple[str, int]) -> Problem | None:
        """None when the INVITE may proceed, else the answer (403, or a 401
        :class:`Challenge`)."""
        if self.allowed:
            try:
                address = ipaddress.ip_address(source[0])
            except ValueError:
                address = None
            if address is None or not any(address in net for net in self.allowed):
                return Problem(403, "Forbidden", "source address is not allowed")
        if self.digest is not None:
            verdict = self.digest.verify(request)
            if verdict != "ok":
                return Challenge(
                    401,
                    "Unauthorized",
                    "authentication required",
                    {"WWW-Authenticate": "\n".join(self.digest.challenge(verdict == "stale"))},
                    failed=verdict == "bad",
                )
        return None
