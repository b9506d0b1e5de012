"""The Integration document: how to reach one customer backend.

The same document is the ``spec`` of the Integration custom resource, so it
follows Kubernetes naming (camelCase) and never holds a secret inline: API
keys, OAuth2 client credentials and TLS keys are *file paths* (Secret mounts);
the operator turns Secret references into those mounts.

Example::

    name: shop
    baseURL: http://shop-backend.shop.svc:8080/api
    auth:
      type: apiKey
      header: X-API-Key
      valueFile: /var/run/secrets/voicetyped/shop/api-key
    operations:
      get_order:
        method: GET
        path: /orders/{order_id}
        expectedStatus: [200]
        extract: {status: status, eta_days: delivery.eta_days}
        notFoundStatus: [404]
        idempotent: true
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

NAME_PATTERN = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---- authentication --------------------------------------------------------


class NoAuth(_Spec):
    type: Literal["none"] = "none"


class ApiKeyAuth(_Spec):
    """An API key sent in a header or a query parameter."""

    type: Literal["apiKey"]
    header: str | None = Field(None, description="Header name, e.g. X-API-Key.")
    query: str | None = Field(None, description="Query parameter name (when not a header).")
    prefix: str = Field("", description='Prepended to the key, e.g. "Bearer ".')
    value_file: str = Field(alias="valueFile", description="File holding the key.")

    @model_validator(mode="after")
    def _one_place(self) -> ApiKeyAuth:
        if (self.header is None) == (self.query is None):
            raise ValueError("set exactly one of header or query")
        return self


class OAuth2Auth(_Spec):
    """OAuth2 client credentials; tokens are cached until shortly before they expire."""

    type: Literal["oauth2"]
    token_url: str = Field(alias="tokenURL")
    client_id_file: str = Field(alias="clientIdFile")
    client_secret_file: str = Field(alias="clientSecretFile")
    scopes: list[str] = Field(default_factory=list)
    audience: str | None = None
    refresh_before_s: int = Field(
        30, alias="refreshBeforeSeconds", ge=0, description="Renew this long before expiry."
    )


class MtlsAuth(_Spec):
    """A client certificate presented to the backend."""

    type: Literal["mtls"]
    cert_file: str = Field(alias="certFile")
    key_file: str = Field(alias="keyFile")


Auth = Annotated[NoAuth | ApiKeyAuth | OAuth2Auth | MtlsAuth, Field(discriminator="type")]


class Tls(_Spec):
    """How the backend's server certificate is verified (https base URLs)."""

    ca_file: str | None = Field(None, alias="caFile", description="CA bundle; default: system.")


# ---- resilience --------------------------------------------------------------


class Retry(_Spec):
    """Exponential backoff with full jitter on connect errors, timeouts, 5xx and 429."""

    max_attempts: int = Field(3, alias="maxAttempts", ge=1, le=10)
    initial_backoff_ms: int = Field(100, alias="initialBackoffMs", ge=1)
    max_backoff_ms: int = Field(2000, alias="maxBackoffMs", ge=1)


class Rate(_Spec):
    rps: float = Field(gt=0, description="Sustained requests per second.")
    burst: int = Field(1, ge=1, description="Requests allowed at once.")


class RateLimit(_Spec):
    per_integration: Rate | None = Field(None, alias="perIntegration")
    per_call: Rate | None = Field(None, alias="perCall")
    max_wait_ms: int = Field(
        250, alias="maxWaitMs", ge=0, description="Wait this long for capacity, then fail fast."
    )


class CircuitBreaker(_Spec):
    failure_rate_threshold: float = Field(0.5, alias="failureRateThreshold", gt=0, le=1)
    minimum_calls: int = Field(10, alias="minimumCalls", ge=1)
    window_s: float = Field(30, alias="windowSeconds", gt=0)
    open_s: float = Field(15, alias="openSeconds", gt=0)
    half_open_probes: int = Field(2, alias="halfOpenProbes", ge=1)


# ---- operations --------------------------------------------------------------


class Operation(_Spec):
    """One backend call the dialogs may make."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = Field(
        description="Appended to baseURL; {field} is replaced by the payload's field (URL-encoded)."
    )
    query: dict[str, str] = Field(
        default_factory=dict, description="Query parameters; values may use {field}."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    body: JsonValue = Field(
        None,
        description="Request body template; strings that are exactly {field} take the field's "
        "value and type. Absent: POST/PUT/PATCH send the payload fields not used in path/query.",
    )
    expected_status: list[int] = Field(
        default_factory=lambda: [200, 201, 202, 204], alias="expectedStatus"
    )
    not_found_status: list[int] = Field(
        default_factory=list,
        alias="notFoundStatus",
        description="Statuses answered as error code not_found (dialogs branch on it).",
    )
    extract: dict[str, str] = Field(
        default_factory=dict,
        description="Result field -> dotted path in the response JSON (items[0].id); "
        "empty: the whole response.",
    )
    timeout_ms: int | None = Field(None, alias="timeoutMs", gt=0)
    idempotent: bool | None = Field(
        None, description="Safe to repeat; default: true for GET, PUT, DELETE."
    )

    @property
    def is_idempotent(self) -> bool:
        if self.idempotent is not None:
            return self.idempotent
        return self.method in ("GET", "PUT", "DELETE")

    def placeholders(self) -> set[str]:
        names = set(_PLACEHOLDER.findall(self.path))
        for value in self.query.values():
            names.update(_PLACEHOLDER.findall(value))
        return names


class Integration(_Spec):
    name: str = Field(pattern=NAME_PATTERN)
    base_url: str = Field(alias="baseURL", pattern=r"^https?://[^\s/]+.*$")
    auth: Auth = Field(default_factory=NoAuth)
    tls: Tls = Field(default_factory=Tls)
    timeout_ms: int = Field(3000, alias="timeoutMs", gt=0)
    retry: Retry = Field(default_factory=Retry)
    rate_limit: RateLimit = Field(default_factory=RateLimit, alias="rateLimit")
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker, alias="circuitBreaker")
    redact: list[str] = Field(
        default_factory=list,
        description="Payload/response field names masked in logs (auth headers always are).",
    )
    operations: dict[
        Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")], Operation
    ] = Field(min_length=1)

    @model_validator(mode="after")
    def _mtls_needs_https(self) -> Integration:
        if isinstance(self.auth, MtlsAuth) and not self.base_url.startswith("https://"):
            raise ValueError("mtls auth needs an https:// baseURL")
        return self
