"""Short-lived, single-use call tokens for browser calls.

A token is ``<payload>.<mac>`` (URL-safe base64): the payload holds its expiry (Unix seconds)
and a random nonce, the MAC is HMAC-SHA256 under a key derived from the access token (the
``webrtc.token_file`` content), so every replica with the same Secret accepts a token another
minted. Without a file (loopback only) the key is random per process.

Single use is kept per replica (the nonces seen, until they expire; bounded): a token is spent
by the first call it places on a replica.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

KEY_LABEL = b"voicetyped webrtc call tokens v1"
MAX_SPENT = 100_000
"""Nonces remembered at most (the expired are forgotten first): a bound on memory."""


class TokenError(Exception):
    """The call token is not acceptable; the message says why (for the 401 body)."""


def derive_key(access_token: str | None) -> bytes:
    """The MAC key: derived from the access token, else random (this process only)."""
    if access_token is None:
        return secrets.token_bytes(32)
    return hmac.new(access_token.encode(), KEY_LABEL, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class CallTokens:
    key: bytes
    ttl_s: int
    clock: Callable[[], float] = time.time
    _spent: dict[str, float] = field(default_factory=dict)

    def mint(self) -> tuple[str, int]:
        """A fresh token and its expiry (Unix seconds)."""
        expires = int(self.clock()) + self.ttl_s
        payload = f"{expires}:{secrets.token_hex(16)}".encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}", expires

    def spend(self, token: str) -> None:
        """Accept ``token`` once: raises :class:`TokenError` when it is malformed, forged,
        expired or already used."""
        head, dot, tail = token.partition(".")
        try:
            payload, mac = _unb64(head), _unb64(tail)
            expires_text, _, nonce = payload.decode().partition(":")
            expires = int(expires_text)
        except (ValueError, UnicodeDecodeError):
            raise TokenError("malformed call token") from None
        if not dot or not nonce or not hmac.compare_digest(mac, self._mac(payload)):
            raise TokenError("invalid call token")
        now = self.clock()
        if expires <= now:
            raise TokenError("call token expired")
        if nonce in self._spent:
            raise TokenError("call token already used")
        self._forget_expired(now)
        if len(self._spent) >= MAX_SPENT:
            raise TokenError("too many call tokens in flight; mint a new one shortly")
        self._spent[nonce] = expires

    def _forget_expired(self, now: float) -> None:
        for nonce in [n for n, exp in self._spent.items() if exp <= now]:
            del self._spent[nonce]

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.key, payload, hashlib.sha256).digest()
