"""SRTP (RFC 3711) keyed by SDES (RFC 4568 ``a=crypto``), with libsrtp2 through ``pylibsrtp``.

Crypto suites: AES_CM_128_HMAC_SHA1_80 and AES_CM_128_HMAC_SHA1_32 (a 30-byte master key and
salt each). A line we cannot honour is skipped, as RFC 4568 §7.1.1 has the answerer do: another
suite, an MKI, several keys, session parameters (UNENCRYPTED_SRTP, KDR, ...). The answer takes
the offerer's tag and suite with a fresh key of ours from :mod:`secrets`.

Each direction has its own libsrtp session (:class:`SrtpSession`): ours protects what the
sender sends with our key, the caller's unprotects what the receiver receives with theirs. Keys
never appear in a repr or a log line.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session

SUITES = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
KEY_LENGTH = 30  # 16-byte master key + 14-byte master salt
SAVP = ("RTP/SAVP", "RTP/SAVPF")
SrtpPolicy = Literal["required", "optional", "off"]
"""required: plain RTP offers get 488; optional: SRTP when offered; off: never (SRTP-only
offers get 488)."""

__all__ = [
    "SUITES",
    "SdesCrypto",
    "SrtpError",
    "SrtpKeys",
    "SrtpPolicy",
    "SrtpSession",
    "choose_crypto",
]


@dataclass(frozen=True)
class SdesCrypto:
    """One ``a=crypto`` attribute: tag, suite and the master key + salt (never shown)."""

    tag: int
    suite: str
    key: bytes = field(repr=False)

    @classmethod
    def fresh(cls, tag: int, suite: str) -> SdesCrypto:
        return cls(tag, suite, secrets.token_bytes(KEY_LENGTH))

    def attribute(self) -> str:
        """The value of the ``a=crypto:`` line."""
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.key).decode()}"


def parse_crypto(value: str) -> SdesCrypto | None:
    """An ``a=crypto`` value we can use, or None (unsupported or malformed: skipped)."""
    parts = value.split()
    if len(parts) != 3 or not parts[0].isdigit() or parts[1] not in SUITES:
        return None  # another suite, or session parameters after the key
    params = parts[2]
    if ";" in params or not params.startswith("inline:"):
        return None  # several keys
    key_text, *rest = params[len("inline:") :].split("|")
    if any(":" in piece for piece in rest):
        return None  # an MKI
    try:
        key = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(key) != KEY_LENGTH:
        return None
    return SdesCrypto(int(parts[0]), parts[1], key)


def choose_crypto(values: list[str]) -> SdesCrypto | None:
    """The first usable of an offer's ``a=crypto`` values (the offerer's preference)."""
    for value in values:
        crypto = parse_crypto(value)
        if crypto is not None:
            return crypto
    return None


@dataclass(frozen=True)
class SrtpKeys:
    """An agreed SRTP session: what we send is keyed by ``local``, what we get by ``remote``."""

    local: SdesCrypto
    remote: SdesCrypto

    @property
    def suite(self) -> str:
        return self.local.suite


class SrtpSession:
    """One call's SRTP: an outbound libsrtp session for the sender, an inbound one for the
    receiver (RTP and RTCP each)."""

    def __init__(self, keys: SrtpKeys) -> None:
        self.keys = keys
        self._outbound = Session(
            Policy(keys.local.key, Policy.SSRC_ANY_OUTBOUND, srtp_profile=SUITES[keys.local.suite])
        )
        self._inbound = self._receiver(keys.remote)
        self.rejected = 0
        """Packets that failed authentication or replay checks (dropped)."""

    @staticmethod
    def _receiver(remote: SdesCrypto) -> Session:
        return Session(
            Policy(remote.key, Policy.SSRC_ANY_INBOUND, srtp_profile=SUITES[remote.suite])
        )

    def rekey_inbound(self, keys: SrtpKeys) -> None:
        """A renegotiation changed the caller's key: what arrives is read with the new one."""
        if keys.remote != self.keys.remote:
            self._inbound = self._receiver(keys.remote)
        self.keys = keys

    def protect(self, packet: bytes) -> bytes:
        return self._outbound.protect(packet)

    def protect_rtcp(self, packet: bytes) -> bytes:
        return self._outbound.protect_rtcp(packet)

    def unprotect(self, packet: bytes) -> bytes | None:
        """The RTP packet in clear, or None when it is not authentic (or replayed)."""
        return self._checked(self._inbound.unprotect, packet)

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        return self._checked(self._inbound.unprotect_rtcp, packet)

    def _checked(self, unprotect: Callable[[bytes], bytes], packet: bytes) -> bytes | None:
        try:
            return unprotect(packet)
        except (SrtpError, ValueError):
            self.rejected += 1
            return None
