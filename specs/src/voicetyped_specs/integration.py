"""The Integration: how the integration gateway reaches one customer backend.

One definition, two forms. Everything but the credentials (base URL, timeouts, retries,
rate limits, the circuit breaker, operations, and every rule and bound on them) is declared
once, in :class:`IntegrationBase`. The forms differ only in how a credential is named:

* :class:`Integration`, the gateway's document (``voicetyped up``, the rendered ConfigMap):
  credentials are *file paths* (``valueFile``, ``clientIdFile``...; Secret mounts);
* :class:`IntegrationSpec`, the Integration custom resource's spec: credentials are
  *Secret references* (``secretRef``, ``clientIdSecretRef``...), never values.

:data:`CREDENTIALS` pairs the two names of each credential; the per-scheme rules, the CEL
rules of the CRD, :meth:`IntegrationSpec.secret_refs` and :meth:`IntegrationSpec.to_document`
(reference -> mounted file) are all derived from it.

The gateway's document, for example::

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
        extractDefaults: {eta_days: null}   # optional: null when the answer has none
        notFoundStatus: [404]
        idempotent: true
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from voicetyped_specs.resources.base import ObjectName, SecretKeyRef, cel, validations

NAME_PATTERN = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

# Header and query names that carry credentials: never allowed as literal values.
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token")
CREDENTIAL_PARAMS = ("api_key", "apikey", "access_token", "token", "password", "secret", "key")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


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
    extract_defaults: dict[str, JsonValue] = Field(
        default_factory=dict,
        alias="extractDefaults",
        description="Optional extract fields: result field -> the value it takes when its path "
        "is not in the response (null allowed). Fields not listed here are required: a missing "
        "one is an invalid_response error.",
    )
    timeout_ms: int | None = Field(None, alias="timeoutMs", gt=0)
    idempotent: bool | None = Field(
        None, description="Safe to repeat; default: true for GET, PUT, DELETE."
    )

    @model_validator(mode="after")
    def _defaults_extracted(self) -> Operation:
        unknown = sorted(set(self.extract_defaults) - set(self.extract))
        if unknown:
            raise ValueError(
                f"extractDefaults names {', '.join(map(repr, unknown))}, not extracted "
                f"(extract has: {', '.join(sorted(self.extract)) or 'nothing'})"
            )
        return self

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


# ---- credentials: one table, two names each ------------------------------------------------

AuthType = Literal["none", "apiKey", "oauth2", "mtls"]


@dataclass(frozen=True)
class Credential:
    """One secret an auth scheme needs: its file in the document, its Secret reference in the
    resource. mTLS names one kubernetes.io/tls Secret for two files (``secret_key``)."""

    scheme: AuthType
    file_field: str
    """Alias in the document (a file path)."""
    ref_field: str
    """Alias in the resource (a SecretKeyRef, or a Secret name when ``secret_key`` is set)."""
    secret_key: str | None = None


CREDENTIALS = (
    Credential("apiKey", "valueFile", "secretRef"),
    Credential("oauth2", "clientIdFile", "clientIdSecretRef"),
    Credential("oauth2", "clientSecretFile", "clientSecretSecretRef"),
    Credential("mtls", "certFile", "tlsSecretName", "tls.crt"),
    Credential("mtls", "keyFile", "tlsSecretName", "tls.key"),
)

# Settings that belong to one scheme (beside its credentials); set under another: refused.
SCHEME_SETTINGS: dict[str, AuthType] = {
    "header": "apiKey",
    "query": "apiKey",
    "prefix": "apiKey",
    "tokenURL": "oauth2",
    "scopes": "oauth2",
    "audience": "oauth2",
    "refreshBeforeSeconds": "oauth2",
}
# What the scheme needs beside its credentials, in words.
_SCHEME_NEEDS = {"oauth2": ("tokenURL",)}


def _needs(scheme: str, names: list[str]) -> str:
    return f"{scheme} auth needs " + (
        " and ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " and " + names[-1]
    )


class AuthBase(_Spec):
    """How the gateway authenticates to the backend (``type`` picks the scheme)."""

    type: AuthType = Field("none", description="Scheme: none, apiKey, oauth2 or mtls.")
    header: str | None = Field(None, max_length=256, description="apiKey: header name.")
    query: str | None = Field(None, max_length=256, description="apiKey: query parameter name.")
    prefix: str = Field("", max_length=64, description='apiKey: prepended, e.g. "Bearer ".')
    token_url: str | None = Field(
        None,
        alias="tokenURL",
        max_length=2048,
        pattern=r"^https?://",
        description="oauth2: the token endpoint.",
    )
    scopes: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=64, description="oauth2 scopes."
    )
    audience: str | None = Field(None, max_length=1024, description="oauth2 audience.")
    refresh_before_s: int = Field(
        30,
        alias="refreshBeforeSeconds",
        ge=0,
        le=3600,
        description="oauth2: renew the token this long before it expires.",
    )

    @abstractmethod
    def _credential_set(self, credential: Credential) -> bool:
        """Whether this form holds ``credential`` (a file or a Secret reference)."""

    @model_validator(mode="after")
    def _scheme_rules(self) -> AuthBase:
        fields = type(self).model_fields
        for name in sorted(self.model_fields_set):
            alias = fields[name].alias or name
            scheme = SCHEME_SETTINGS.get(alias)
            # A default counts as unset: the API server writes the schema's defaults in.
            default = fields[name].get_default(call_default_factory=True)
            if scheme is not None and scheme != self.type and getattr(self, name) != default:
                raise ValueError(f"auth.{alias} belongs to {scheme} auth, not {self.type}")
        missing = list(_SCHEME_NEEDS.get(self.type, ()))
        missing = [m for m in missing if getattr(self, _attr(type(self), m)) is None]
        for credential in CREDENTIALS:
            if credential.scheme != self.type:
                if self._credential_set(credential):
                    raise ValueError(
                        f"auth.{self._name_of(credential)} belongs to {credential.scheme} auth, "
                        f"not {self.type}"
                    )
            elif not self._credential_set(credential):
                name = self._name_of(credential)
                if name not in missing:
                    missing.append(name)
        if missing:
            raise ValueError(_needs(self.type, missing))
        if self.type == "apiKey" and (self.header is None) == (self.query is None):
            raise ValueError("apiKey auth needs exactly one of header or query")
        return self

    @abstractmethod
    def _name_of(self, credential: Credential) -> str:
        """The field that names ``credential`` in this form (for messages)."""


def _attr(model: type[BaseModel], alias: str) -> str:
    for name, info in model.model_fields.items():
        if (info.alias or name) == alias:
            return name
    raise KeyError(alias)


class FileAuth(AuthBase):
    """The document's auth: every credential is a file (a mounted Secret key)."""

    value_file: str | None = Field(None, alias="valueFile", description="apiKey: the key.")
    client_id_file: str | None = Field(
        None, alias="clientIdFile", description="oauth2: the client id."
    )
    client_secret_file: str | None = Field(
        None, alias="clientSecretFile", description="oauth2: the client secret."
    )
    cert_file: str | None = Field(None, alias="certFile", description="mtls: the certificate.")
    key_file: str | None = Field(None, alias="keyFile", description="mtls: its private key.")

    def _credential_set(self, credential: Credential) -> bool:
        return getattr(self, _attr(FileAuth, credential.file_field)) is not None

    def _name_of(self, credential: Credential) -> str:
        return credential.file_field

    def file(self, alias: str) -> str:
        """The path of a credential the scheme requires (validation made sure it is set)."""
        value = getattr(self, _attr(FileAuth, alias))
        if value is None:
            raise ValueError(f"auth.{alias} is not set")
        return str(value)


# Fields the resource refuses, in its schema only so that the API server answers with a clear
# message instead of dropping them: the resource has no field that could carry a secret or a
# file path (the operator writes the paths into the document the gateway reads).
INLINE_FIELDS = {
    "value": "Refused: use secretRef.",
    "token": "Refused: use secretRef.",
    "password": "Refused: use a Secret.",
    "clientSecret": "Refused: use clientSecretSecretRef.",
    "clientId": "Refused: use clientIdSecretRef.",
    "privateKey": "Refused: use tlsSecretName.",
}
FILE_FIELDS = tuple(dict.fromkeys(c.file_field for c in CREDENTIALS))
REFUSED_FIELDS = INLINE_FIELDS | dict.fromkeys(FILE_FIELDS, "Set by the operator.")


def _refused_in_schema(schema: dict[str, Any]) -> None:
    for alias, description in REFUSED_FIELDS.items():
        schema["properties"][alias] = {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "default": None,
            "description": description,
        }
    schema.update(
        validations(
            cel(
                " && ".join(f"!has(self.{f})" for f in INLINE_FIELDS),
                "inline secrets are refused: store the value in a Secret and reference it "
                "(secretRef, clientIdSecretRef, clientSecretSecretRef, tlsSecretName)",
            ),
            cel(
                " && ".join(f"!has(self.{f})" for f in FILE_FIELDS),
                "file paths are set by the operator: reference a Secret instead",
            ),
            *_scheme_cel_rules(),
        )
    )


def _cel_list(names: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{n}'" for n in names) + "]"


def _scheme_cel_rules() -> list[dict[str, str]]:
    rules = []
    for scheme in ("apiKey", "oauth2", "mtls"):
        needs = list(_SCHEME_NEEDS.get(scheme, ()))
        needs += list(dict.fromkeys(c.ref_field for c in CREDENTIALS if c.scheme == scheme))
        condition = " && ".join(f"has(self.{n})" for n in needs)
        message = _needs(scheme, needs)
        if scheme == "apiKey":
            condition = f"{condition} && (has(self.header) != has(self.query))"
            message += " and exactly one of header or query"
        rules.append(cel(f"self.type != '{scheme}' || ({condition})", message))
    return rules


class SecretAuth(AuthBase):
    """The resource's auth: every credential is a Secret reference."""

    model_config = ConfigDict(json_schema_extra=_refused_in_schema)

    secret_ref: SecretKeyRef | None = Field(None, alias="secretRef", description="apiKey: the key.")
    client_id_secret_ref: SecretKeyRef | None = Field(
        None, alias="clientIdSecretRef", description="oauth2: the client id."
    )
    client_secret_secret_ref: SecretKeyRef | None = Field(
        None, alias="clientSecretSecretRef", description="oauth2: the client secret."
    )
    tls_secret_name: ObjectName | None = Field(
        None, alias="tlsSecretName", description="mtls: Secret with tls.crt and tls.key."
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_inline(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for alias in REFUSED_FIELDS:
                if alias in data:
                    raise ValueError(
                        f"auth.{alias}: inline secrets and file paths are refused; "
                        "reference a Secret"
                    )
        return data

    def _credential_set(self, credential: Credential) -> bool:
        return self.ref(credential) is not None

    def _name_of(self, credential: Credential) -> str:
        return credential.ref_field

    def ref(self, credential: Credential) -> SecretKeyRef | None:
        """The Secret key holding ``credential``, when set."""
        value = getattr(self, _attr(SecretAuth, credential.ref_field))
        if value is None or isinstance(value, SecretKeyRef):
            return value
        assert credential.secret_key is not None  # a Secret's name: the key is fixed
        return SecretKeyRef(name=value, key=credential.secret_key)


class FileTls(_Spec):
    """How the backend's server certificate is verified (https base URLs)."""

    ca_file: str | None = Field(None, alias="caFile", description="CA bundle; default: system.")


class SecretTls(_Spec):
    """How the backend's server certificate is verified (https base URLs)."""

    ca_secret_ref: SecretKeyRef | None = Field(
        None, alias="caSecretRef", description="CA bundle (a Secret key); default: the system CAs."
    )


# ---- the integration -------------------------------------------------------------------------

OperationName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$", max_length=63)]


class IntegrationBase(_Spec):
    """What both forms share: every field but the credentials, with its rules and bounds."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!self.baseURL.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*@')",
                "baseURL must not carry credentials (user:password@): use auth with a Secret",
                ".baseURL",
            ),
            cel(
                "self.operations.all(o, self.operations[o].headers.all(h, "
                f"!(h.lowerAscii() in {_cel_list(CREDENTIAL_HEADERS)})))",
                "operations.*.headers must not carry credentials (Authorization, Cookie, "
                "X-API-Key...): use auth with a Secret reference",
                ".operations",
            ),
            cel(
                "self.operations.all(o, self.operations[o].query.all(q, "
                f"!(q.lowerAscii() in {_cel_list(CREDENTIAL_PARAMS)})))",
                "operations.*.query must not carry credentials (api_key, token, password...): "
                "use auth with a Secret reference",
                ".operations",
            ),
            cel(
                "self.auth.type != 'mtls' || self.baseURL.startsWith('https://')",
                "mtls auth needs an https:// baseURL",
                ".baseURL",
            ),
        )
    )

    name: str | None = Field(
        None,
        max_length=63,
        pattern=NAME_PATTERN,
        description="Name the dialogs' call_hook.service uses.",
    )
    base_url: str = Field(
        alias="baseURL",
        max_length=2048,
        pattern=r"^https?://[^\s/]+.*$",
        description="http(s) base URL of the backend API.",
    )
    auth: AuthBase
    timeout_ms: int = Field(
        3000, alias="timeoutMs", gt=0, le=600000, description="Per-request timeout."
    )
    retry: Retry = Field(default_factory=Retry)
    rate_limit: RateLimit = Field(
        default_factory=RateLimit,
        alias="rateLimit",
        description="Requests per second per integration and per call; wait at most maxWaitMs.",
    )
    circuit_breaker: CircuitBreaker = Field(
        default_factory=CircuitBreaker,
        alias="circuitBreaker",
        description="Stop calling a failing backend for openSeconds once the failure rate "
        "over windowSeconds passes failureRateThreshold.",
    )
    redact: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list,
        max_length=256,
        description="Payload/response field names masked in logs (auth headers always are).",
    )
    operations: dict[OperationName, Operation] = Field(
        min_length=1, max_length=128, description="Operation name -> backend call."
    )

    @model_validator(mode="after")
    def _no_credentials_outside_auth(self) -> IntegrationBase:
        if "@" in self.base_url.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError("baseURL must not carry credentials (user:password@)")
        for name, op in self.operations.items():
            for header in op.headers:
                if header.lower() in CREDENTIAL_HEADERS:
                    raise ValueError(f"operations.{name}.headers.{header}: credentials refused")
            for param in op.query:
                if param.lower() in CREDENTIAL_PARAMS:
                    raise ValueError(f"operations.{name}.query.{param}: credentials refused")
        if self.auth.type == "mtls" and not self.base_url.startswith("https://"):
            raise ValueError("mtls auth needs an https:// baseURL")
        return self


class Integration(IntegrationBase):
    """The gateway's document: credentials are files."""

    name: str = Field(
        max_length=63,
        pattern=NAME_PATTERN,
        description="Name the dialogs' call_hook.service uses.",
    )
    auth: FileAuth = Field(default_factory=FileAuth)
    tls: FileTls = Field(default_factory=FileTls)


class IntegrationSpec(IntegrationBase):
    """The Integration resource's spec: credentials are Secret references."""

    name: str | None = Field(
        None,
        max_length=63,
        pattern=NAME_PATTERN,
        description="Name the dialogs' call_hook.service uses; default: metadata.name.",
    )
    auth: SecretAuth = Field(default_factory=SecretAuth)
    tls: SecretTls = Field(default_factory=SecretTls)

    def secret_refs(self) -> list[tuple[str, SecretKeyRef]]:
        """(field path, reference) of every key this integration mounts."""
        refs: list[tuple[str, SecretKeyRef]] = []
        for credential in CREDENTIALS:
            if credential.scheme == self.auth.type:
                ref = self.auth.ref(credential)
                if ref is not None:
                    refs.append((f"spec.auth.{credential.ref_field}", ref))
        if self.tls.ca_secret_ref is not None:
            refs.append(("spec.tls.caSecretRef", self.tls.ca_secret_ref))
        return refs

    def to_document(self, name: str, file_of: Callable[[SecretKeyRef], str]) -> Integration:
        """The gateway's document: each Secret reference replaced by the file it is mounted
        as (``file_of``); everything else carried over as it is."""
        data = self.model_dump(mode="json", by_alias=True, exclude={"auth", "tls"})
        settings = self.auth.model_dump(mode="json", by_alias=True, exclude_none=True)
        auth: dict[str, Any] = {"type": self.auth.type} | {
            alias: settings[alias]
            for alias, scheme in SCHEME_SETTINGS.items()
            if scheme == self.auth.type and alias in settings
        }
        for credential in CREDENTIALS:
            ref = self.auth.ref(credential) if credential.scheme == self.auth.type else None
            if ref is not None:
                auth[credential.file_field] = file_of(ref)
        tls = {"caFile": file_of(self.tls.ca_secret_ref)} if self.tls.ca_secret_ref else {}
        return Integration.model_validate({**data, "name": name, "auth": auth, "tls": tls})
