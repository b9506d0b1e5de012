"""Integration: the integration gateway's document, with auth material as Secret references.

The document (``voicetyped_specs.integration.Integration``) holds *file paths* for keys and
credentials; this resource holds *Secret references* instead, and the operator turns each
into a mounted file and the path into the rendered document. Inline secrets are refused
by CEL (and again here): there is no field that could carry one.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from voicetyped_specs.integration import (
    NAME_PATTERN,
    CircuitBreaker,
    Operation,
    RateLimit,
    Retry,
)
from voicetyped_specs.resources.base import ObjectName, SecretKeyRef, Spec, cel, validations

# Header and query names that carry credentials: never allowed as literal values.
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token")
CREDENTIAL_PARAMS = ("api_key", "apikey", "access_token", "token", "password", "secret", "key")
INLINE_FIELDS = ("value", "token", "password", "clientSecret", "clientId", "privateKey")
FILE_FIELDS = ("valueFile", "clientIdFile", "clientSecretFile", "certFile", "keyFile")


def _cel_list(names: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{n}'" for n in names) + "]"


class IntegrationAuth(Spec):
    """How the gateway authenticates to the backend. Every secret is a Secret reference."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                " && ".join(f"!has(self.{f})" for f in INLINE_FIELDS),
                "inline secrets are refused: store the value in a Secret and reference it "
                "(secretRef, clientIdSecretRef, clientSecretSecretRef, tlsSecretName)",
            ),
            cel(
                " && ".join(f"!has(self.{f})" for f in FILE_FIELDS),
                "file paths are set by the operator: reference a Secret instead",
            ),
            cel(
                "self.type != 'apiKey' || (has(self.secretRef) && "
                "(has(self.header) != has(self.query)))",
                "apiKey auth needs secretRef and exactly one of header or query",
            ),
            cel(
                "self.type != 'oauth2' || (has(self.tokenURL) && has(self.clientIdSecretRef) "
                "&& has(self.clientSecretSecretRef))",
                "oauth2 auth needs tokenURL, clientIdSecretRef and clientSecretSecretRef",
            ),
            cel(
                "self.type != 'mtls' || has(self.tlsSecretName)",
                "mtls auth needs tlsSecretName (a kubernetes.io/tls Secret)",
            ),
        )
    )

    type: Literal["none", "apiKey", "oauth2", "mtls"] = Field("none", description="Scheme.")
    header: str | None = Field(None, max_length=256, description="apiKey: header name.")
    query: str | None = Field(None, max_length=256, description="apiKey: query parameter name.")
    prefix: str = Field("", max_length=64, description='apiKey: prepended, e.g. "Bearer ".')
    secret_ref: SecretKeyRef | None = Field(None, description="apiKey: the key.")
    token_url: str | None = Field(
        None, alias="tokenURL", max_length=2048, pattern=r"^https?://", description="oauth2."
    )
    client_id_secret_ref: SecretKeyRef | None = Field(
        None, alias="clientIdSecretRef", description="oauth2: the client id."
    )
    client_secret_secret_ref: SecretKeyRef | None = Field(
        None, alias="clientSecretSecretRef", description="oauth2: the client secret."
    )
    scopes: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=64, description="oauth2 scopes."
    )
    audience: str | None = Field(None, max_length=1024, description="oauth2 audience.")
    refresh_before_seconds: int = Field(30, ge=0, le=3600, description="oauth2: renew early.")
    tls_secret_name: ObjectName | None = Field(
        None, alias="tlsSecretName", description="mtls: Secret with tls.crt and tls.key."
    )
    # Declared so that the API server answers with a clear message instead of dropping them.
    value: str | None = Field(None, description="Refused: use secretRef.")
    token: str | None = Field(None, description="Refused: use secretRef.")
    password: str | None = Field(None, description="Refused: use a Secret.")
    client_secret: str | None = Field(
        None, alias="clientSecret", description="Refused: clientSecretSecretRef."
    )
    client_id: str | None = Field(
        None, alias="clientId", description="Refused: use clientIdSecretRef."
    )
    private_key: str | None = Field(
        None, alias="privateKey", description="Refused: use tlsSecretName."
    )
    value_file: str | None = Field(None, alias="valueFile", description="Set by the operator.")
    client_id_file: str | None = Field(
        None, alias="clientIdFile", description="Set by the operator."
    )
    client_secret_file: str | None = Field(
        None, alias="clientSecretFile", description="Set by the operator."
    )
    cert_file: str | None = Field(None, alias="certFile", description="Set by the operator.")
    key_file: str | None = Field(None, alias="keyFile", description="Set by the operator.")

    @model_validator(mode="after")
    def _refs(self) -> IntegrationAuth:
        fields = type(self).model_fields
        refused = [
            fields[name].alias or name
            for name in self.model_fields_set
            if (fields[name].alias or name) in INLINE_FIELDS + FILE_FIELDS
        ]
        if refused:
            raise ValueError(
                f"auth.{refused[0]}: inline secrets and file paths are refused; reference a Secret"
            )
        if self.type == "apiKey":
            if self.secret_ref is None:
                raise ValueError("apiKey auth needs secretRef")
            if (self.header is None) == (self.query is None):
                raise ValueError("apiKey auth needs exactly one of header or query")
        if self.type == "oauth2" and (
            self.token_url is None
            or self.client_id_secret_ref is None
            or self.client_secret_secret_ref is None
        ):
            raise ValueError(
                "oauth2 auth needs tokenURL, clientIdSecretRef and clientSecretSecretRef"
            )
        if self.type == "mtls" and self.tls_secret_name is None:
            raise ValueError("mtls auth needs tlsSecretName")
        return self


class IntegrationTls(Spec):
    """How the backend's server certificate is verified (https base URLs)."""

    ca_secret_ref: SecretKeyRef | None = Field(
        None, description="CA bundle (a Secret key); default: the system CAs."
    )


class IntegrationSpec(Spec):
    """One customer backend the dialogs may call (the integration gateway's document)."""

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
        description="Name the dialogs' call_hook.service uses; default: metadata.name.",
    )
    base_url: str = Field(
        alias="baseURL",
        max_length=2048,
        pattern=r"^https?://[^\s/]+.*$",
        description="http(s) base URL of the backend API.",
    )
    auth: IntegrationAuth = Field(default_factory=IntegrationAuth)
    tls: IntegrationTls = Field(default_factory=IntegrationTls)
    timeout_ms: int = Field(3000, gt=0, le=600000, description="Per-request timeout.")
    retry: Retry = Field(default_factory=Retry)
    rate_limit: RateLimit = Field(
        default_factory=RateLimit,
        description="Requests per second per integration and per call; wait at most maxWaitMs.",
    )
    circuit_breaker: CircuitBreaker = Field(
        default_factory=CircuitBreaker,
        description="Stop calling a failing backend for openSeconds once the failure rate "
        "over windowSeconds passes failureRateThreshold.",
    )
    redact: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=256, description="Field names masked in logs."
    )
    operations: dict[
        Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$", max_length=63)], Operation
    ] = Field(min_length=1, max_length=128, description="Operation name -> backend call.")

    @model_validator(mode="after")
    def _no_inline_credentials(self) -> IntegrationSpec:
        if "@" in self.base_url.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError("baseURL must not carry credentials (user:password@)")
        for name, op in self.operations.items():
            for header in op.headers:
                if header.lower() in CREDENTIAL_HEADERS:
                    raise ValueError(f"operations.{name}.headers.{header}: credentials refused")
            for param in op.query:
                if param.lower() in CREDENTIAL_PARAMS:
                    raise ValueError(f"operations.{name}.query.{param}: credentials refused")
        return self

    def secret_refs(self) -> list[tuple[str, SecretKeyRef]]:
        """(field path, reference) of every key this integration mounts."""
        refs: list[tuple[str, SecretKeyRef]] = []
        auth = self.auth
        if auth.type == "apiKey" and auth.secret_ref is not None:
            refs.append(("spec.auth.secretRef", auth.secret_ref))
        if auth.type == "oauth2":
            if auth.client_id_secret_ref is not None:
                refs.append(("spec.auth.clientIdSecretRef", auth.client_id_secret_ref))
            if auth.client_secret_secret_ref is not None:
                refs.append(("spec.auth.clientSecretSecretRef", auth.client_secret_secret_ref))
        if auth.type == "mtls" and auth.tls_secret_name is not None:
            for key in ("tls.crt", "tls.key"):
                refs.append(
                    ("spec.auth.tlsSecretName", SecretKeyRef(name=auth.tls_secret_name, key=key))
                )
        if self.tls.ca_secret_ref is not None:
            refs.append(("spec.tls.caSecretRef", self.tls.ca_secret_ref))
        return refs


ROOT_RULES = [
    cel(
        "self.metadata.name.matches('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$')",
        "Integration names are DNS labels of at most 63 characters (call_hook.service)",
    ),
    cel(
        "!has(self.spec.name) || self.spec.name == self.metadata.name",
        "spec.name must equal metadata.name (or be left out)",
    ),
]
