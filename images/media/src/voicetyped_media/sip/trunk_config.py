"""One carrier trunk the gateway registers to (``VOICETYPED_TRUNKS``, a JSON list of these).

Checked when the settings load, so a bad trunk stops the gateway at start-up with the field's
path (``trunks.0.registrars.1: ...``, exit 2). The password is never a setting: only the path of
a file holding it (a Kubernetes Secret mount), read when a REGISTER needs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aiosipua import parse_uri
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_USER = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+$")  # RFC 3261 user (unescaped subset)


@dataclass(frozen=True)
class Registrar:
    """A registrar URI as configured, and where its requests go."""

    uri: str
    host: str
    port: int

    @classmethod
    def parse(cls, uri: str) -> Registrar:
        if not uri.startswith("sip:"):
            raise ValueError(f"{uri!r} is not a sip: URI (sip:host[:port])")
        try:
            parsed = parse_uri(uri)
        except (ValueError, IndexError):
            raise ValueError(f"{uri!r} is not a SIP URI") from None
        if parsed.user or not parsed.host:
            raise ValueError(f"{uri!r}: a registrar URI is sip:host[:port], without a user")
        if parsed.port is not None and not 0 < parsed.port < 65536:
            raise ValueError(f"{uri!r}: port out of range")
        return cls(uri, parsed.host.strip("[]"), parsed.port or 5060)


class TrunkSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME, description="Names the trunk in status, metrics and logs.")
    registrars: list[str] = Field(
        min_length=1,
        max_length=4,
        description="Registrar URIs (sip:host[:port]) in order of preference: the first is "
        "used while it answers, the next when it fails or does not answer.",
    )
    username: str = Field(min_length=1, description="User of the address of record.")
    auth_username: str | None = Field(
        None, description="Digest user name when it differs from username."
    )
    password_file: Path = Field(description="File holding the digest password (Secret mount).")
    domain: str | None = Field(
        None, description="Host of the address of record; default: the first registrar's host."
    )
    expires_s: int = Field(300, ge=10, le=86400, description="Expires asked for.")
    transport: Literal["udp", "tcp"] = "udp"
    keepalive: Literal["options", "register", "off"] = Field(
        "options",
        description="Keeps the NAT binding to the registrar open between refreshes: an OPTIONS "
        "every keepalive_s, or a re-REGISTER at least every keepalive_s.",
    )
    keepalive_s: float = Field(25.0, ge=1, le=3600)
    contact_user: str | None = Field(
        None, description="User part of our Contact; default: username."
    )
    dids: list[str] = Field(
        default_factory=list,
        description="Called numbers (Request-URI users) the carrier delivers on this trunk.",
    )
    dialog: str = Field(
        "", description="Dialog for this trunk's calls (dialog_routes of a DID win); empty: dialog."
    )
    trust_registrar_source: bool = Field(
        False,
        description="INVITEs from a registrar's address are admitted without digest and "
        "outside allowed_cidrs (carriers do not answer our challenges).",
    )
    max_calls: int | None = Field(
        None,
        ge=1,
        le=100000,
        description="Calls at once from this trunk (its DIDs, its contact user, its registrars' "
        "addresses), the carrier's channel count; beyond, INVITEs get 503 with Retry-After. "
        "None: no ceiling of its own.",
    )
    timeout_s: float = Field(
        8.0, ge=0.5, le=32, description="A REGISTER unanswered this long fails over."
    )
    backoff_min_s: float = Field(2.0, ge=0.1, le=60, description="First retry after a failure.")
    backoff_max_s: float = Field(
        300.0, ge=1, le=3600, description="Retries back off to this; 403 and 404 wait this long."
    )

    @field_validator("registrars")
    @classmethod
    def _registrars(cls, value: list[str]) -> list[str]:
        for uri in value:
            Registrar.parse(uri)
        return value

    @field_validator("password_file")
    @classmethod
    def _password_file(cls, value: Path) -> Path:
        try:
            text = value.read_text("utf-8")
        except OSError as exc:
            raise ValueError(f"{value} cannot be read ({exc.strerror})") from None
        if not text.strip():
            raise ValueError(f"{value} is empty")
        return value

    @field_validator("username", "auth_username", "contact_user", "dids")
    @classmethod
    def _users(cls, value: str | list[str] | None) -> str | list[str] | None:
        for user in [value] if isinstance(value, str) else value or []:
            if not _USER.match(user):
                raise ValueError(f"{user!r} is not a SIP user part")
        return value

    @model_validator(mode="after")
    def _backoff(self) -> TrunkSettings:
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("backoff_max_s must be at least backoff_min_s")
        return self

    def parsed_registrars(self) -> list[Registrar]:
        return [Registrar.parse(uri) for uri in self.registrars]

    @property
    def aor_domain(self) -> str:
        return self.domain or self.parsed_registrars()[0].host

    @property
    def contact(self) -> str:
        return self.contact_user or self.username

    def password(self) -> str:
        """The password, read now (a rotated Secret is picked up at the next REGISTER)."""
        return self.password_file.read_text("utf-8").rstrip("\r\n")
