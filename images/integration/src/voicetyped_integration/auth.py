"""Credentials for customer backends, and the HTTP client that carries them.

An :class:`Authenticator` adds the credential to each outgoing request
(:meth:`~Authenticator.apply`) and is told when the backend answered 401
(:meth:`~Authenticator.on_unauthorized`); only OAuth2 can do something about a
401 (fetch a new token), so only it asks for the one retry.

Secrets are files (Kubernetes Secret mounts, see :mod:`voicetyped_specs.integration`).
They are read when the authenticator is built and read again whenever the
file changes (Kubernetes rotates a mounted Secret by swapping a symlink, which
changes the file's inode and mtime), so rotating a key needs no restart.

mTLS needs no authenticator: the client certificate lives in the
:class:`ssl.SSLContext` of the client made by :func:`build_client`.

No secret (API key, client secret, access token, Authorization header) ever
goes into a log line or an exception message. An API key sent as a query
parameter is part of ``request.url``: log URLs through :func:`redact_url`;
httpx's own "HTTP Request: ..." lines are redacted by a filter this module
installs on the ``httpx`` logger.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import http.cookiejar
import logging
import math
import os
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Literal, Protocol
from urllib.parse import quote_plus

import httpx
from voicetyped_specs.integration import Integration

log = logging.getLogger(__name__)

REDACTED = "[REDACTED]"

# RFC 6749 §5.2 error codes: the only part of a token endpoint's error answer
# that goes into an AuthError (a description could echo anything, secrets included).
_OAUTH_ERROR_CODES = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "access_denied",
        "server_error",
        "temporarily_unavailable",
    }
)


class AuthError(Exception):
    """Credentials or TLS material cannot be loaded, or no access token can be obtained.

    The message names files, URLs and status codes, never a secret.
    """


class Authenticator(Protocol):
    async def apply(self, request: httpx.Request) -> None:
        """Add the credential to ``request`` (a header or a query parameter)."""
        ...

    async def on_unauthorized(self, request: httpx.Request) -> bool:
        """The backend answered ``request`` with 401.

        True: the credentials were renewed, so sending the request once more
        (after :meth:`apply` again) makes sense. False: it would fail the same way.
        """
        ...


# ---- secrets in files -----------------------------------------------------------


class SecretFile:
    """A secret held in a file, re-read when the file changes.

    The file is checked (one ``stat``) on every :meth:`get`. A change is
    noticed by inode, size or mtime; Kubernetes' symlink swap always changes
    the inode. When a changed file cannot be read or is empty (caught mid-
    rotation), the last good value is kept and the file is read again next time.
    """

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self._what = what
        try:
            self._signature = self._stat()
        except OSError as exc:
            raise AuthError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
        value = self._read()
        if value is None:
            raise AuthError(f"cannot read {what} file {path}, or it is empty")
        self._value = value

    def _stat(self) -> tuple[int, int, int, int]:
        st = os.stat(self.path)
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

    def _read(self) -> str | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                value = f.read().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return value or None

    def get(self) -> str:
        try:
            signature = self._stat()
        except OSError:
            log.warning("%s file %s is gone; keeping the last value read", self._what, self.path)
            return self._value
        if signature != self._signature:
            value = self._read()
            if value is None:
                log.warning(
                    "%s file %s changed but cannot be read or is empty; keeping the last value",
                    self._what,
                    self.path,
                )
                return self._value
            if value != self._value:
                log.info("%s file %s changed; using the new value", self._what, self.path)
            self._value = value
            self._signature = signature
        return self._value


# ---- authenticators -------------------------------------------------------------


class NoAuthenticator:
    """No credential in the request (auth type none, and mtls: the certificate is in the client)."""

    async def apply(self, request: httpx.Request) -> None:
        return None

    async def on_unauthorized(self, request: httpx.Request) -> bool:
        return False


# Query parameters that carry API keys; their values are masked in httpx's log lines.
_SECRET_QUERY_PARAMS: set[str] = set()


class ApiKeyAuthenticator:
    """A static key in a header (optionally prefixed, e.g. ``"Bearer "``) or a query parameter."""

    def __init__(
        self,
        value_file: str,
        *,
        header: str | None = None,
        query: str | None = None,
        prefix: str = "",
    ) -> None:
        if (header is None) == (query is None):
            raise ValueError("set exactly one of header or query")
        self._secret = SecretFile(value_file, "api key")
        self._header = header
        self._query = query
        self._prefix = prefix
        if query is not None:
            _SECRET_QUERY_PARAMS.add(query)
            _install_httpx_log_filter()

    async def apply(self, request: httpx.Request) -> None:
        key = self._secret.get()
        if self._header is not None:
            request.headers[self._header] = self._prefix + key
        else:
            assert self._query is not None
            request.url = request.url.copy_set_param(self._query, self._prefix + key)

    async def on_unauthorized(self, request: httpx.Request) -> bool:
        return False


class _Token:
    __slots__ = ("expires_at", "refresh_at", "value")

    def __init__(self, value: str, refresh_at: float, expires_at: float) -> None:
        self.value = value
        self.refresh_at = refresh_at
        self.expires_at = expires_at


class OAuth2Authenticator:
    """OAuth2 client credentials grant (RFC 6749 §4.4) with a cached bearer token.

    * The token is cached until ``expires_in - refresh_before_s`` after it was
      requested (half its lifetime when that would be less than that); a token
      answer without ``expires_in`` is cached for ``default_expires_in_s``.
    * When renewing fails before the token has actually expired, the current
      token is used meanwhile (and renewal tried again by the next caller).
    * Concurrent callers that need a token share one token request; it runs in
      its own task, so a caller that gives up (cancelled, deadline) does not
      cancel it for the others, and a failure is reported to all of them.
    * A 401 from the backend invalidates the token the request carried (unless
      it was already replaced), so the next :meth:`apply` fetches a new one.
    * Client authentication is HTTP Basic (RFC 6749 §2.3.1: id and secret
      form-urlencoded, then base64) by default, or ``client_auth="body"``
      (``client_id`` / ``client_secret`` form fields) for servers that want that.
    * The id and secret files are re-read when they change.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        token_url: str,
        client_id_file: str,
        client_secret_file: str,
        scopes: Sequence[str] = (),
        audience: str | None = None,
        refresh_before_s: float = 30.0,
        timeout_s: float = 10.0,
        client_auth: Literal["basic", "body"] = "basic",
        default_expires_in_s: float = 300.0,
        label: str = "oauth2",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._token_url = token_url
        self._client_id = SecretFile(client_id_file, "oauth2 client id")
        self._client_secret = SecretFile(client_secret_file, "oauth2 client secret")
        self._scopes = list(scopes)
        self._audience = audience
        self._refresh_before_s = refresh_before_s
        self._timeout_s = timeout_s
        self._client_auth = client_auth
        self._default_expires_in_s = default_expires_in_s
        self._label = label
        self._clock = clock
        self._token: _Token | None = None
        self._inflight: asyncio.Task[_Token] | None = None
        self.tokens_fetched = 0  # token requests that succeeded (for tests and metrics)

    async def apply(self, request: httpx.Request) -> None:
        token = await self._current()
        request.headers["Authorization"] = f"Bearer {token.value}"

    async def on_unauthorized(self, request: httpx.Request) -> bool:
        used = request.headers.get("Authorization")
        if used is None or not used.startswith("Bearer "):
            return False  # not a request this authenticator prepared
        token = self._token
        if token is not None and hmac.compare_digest(
            used.encode(), f"Bearer {token.value}".encode()
        ):
            log.info("%s: the backend rejected the access token; fetching a new one", self._label)
            self._token = None
        return True

    def invalidate(self) -> None:
        """Forget the cached token (the next :meth:`apply` fetches one)."""
        self._token = None

    async def _current(self) -> _Token:
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return token
        if self._inflight is None:
            self._inflight = asyncio.get_running_loop().create_task(
                self._refresh(), name=f"oauth2-token-{self._label}"
            )
            # Every waiter may have given up: the outcome is still retrieved (no warning).
            self._inflight.add_done_callback(_retrieve)
        try:
            # shield: a cancelled caller must not cancel the request the others wait for.
            return await asyncio.shield(self._inflight)
        except AuthError:
            if token is not None and token is self._token and self._clock() < token.expires_at:
                log.warning(
                    "%s: cannot renew the access token yet; using the current one until it expires",
                    self._label,
                )
                return token
            raise

    async def _refresh(self) -> _Token:
        try:
            token = await self._fetch()
            self._token = token
            self.tokens_fetched += 1
            return token
        finally:
            self._inflight = None

    async def _fetch(self) -> _Token:
        client_id = self._client_id.get()
        secret = self._client_secret.get()
        form = {"grant_type": "client_credentials"}
        if self._scopes:
            form["scope"] = " ".join(self._scopes)
        if self._audience:
            form["audience"] = self._audience
        headers = {"Accept": "application/json"}
        if self._client_auth == "basic":
            pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        else:
            form["client_id"] = client_id
            form["client_secret"] = secret
        started = self._clock()
        try:
            response = await self._http.post(
                self._token_url, data=form, headers=headers, timeout=self._timeout_s
            )
        except httpx.HTTPError as exc:
            # Transport errors name the failure (refused, timed out), never the request's content.
            raise AuthError(
                f"{self._label}: token request to {self._token_url} failed: {type(exc).__name__}"
            ) from exc
        if response.status_code != 200:
            raise AuthError(
                f"{self._label}: token endpoint {self._token_url} answered "
                f"{response.status_code}{_oauth_error(response)}"
            )
        try:
            data = response.json()
        except ValueError:
            raise AuthError(
                f"{self._label}: token endpoint {self._token_url} answered a body that is not JSON"
            ) from None
        if not isinstance(data, dict):
            raise AuthError(f"{self._label}: token endpoint answered JSON that is not an object")
        value = data.get("access_token")
        if not isinstance(value, str) or not value or not value.isascii():
            raise AuthError(f"{self._label}: token endpoint answered no usable access_token")
        token_type = data.get("token_type", "bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise AuthError(
                f"{self._label}: token endpoint answered an unsupported token_type "
                "(only bearer tokens are supported)"
            )
        lifetime = _expires_in(data.get("expires_in"), self._default_expires_in_s)
        if lifetime is None:
            raise AuthError(f"{self._label}: token endpoint answered an invalid expires_in")
        reuse_for = lifetime - self._refresh_before_s
        if reuse_for < lifetime / 2:  # a short-lived token: do not fetch on every call
            reuse_for = lifetime / 2
        log.info("%s: access token obtained, expires in %.0f s", self._label, lifetime)
        return _Token(value, refresh_at=started + reuse_for, expires_at=started + lifetime)


def _retrieve(task: asyncio.Task[_Token]) -> None:
    if not task.cancelled():
        task.exception()


def _oauth_error(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    code = data.get("error") if isinstance(data, dict) else None
    return f" ({code})" if code in _OAUTH_ERROR_CODES else ""


def _expires_in(raw: object, default: float) -> float | None:
    if raw is None:
        return default
    if isinstance(raw, bool):
        return None
    try:
        value = float(raw) if isinstance(raw, int | float | str) else math.nan
    except ValueError:
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return value


def build_authenticator(integration: Integration, http: httpx.AsyncClient) -> Authenticator:
    """The authenticator for ``integration.auth``; ``http`` is used for the OAuth2 token endpoint.

    Raises :class:`AuthError` when a secret file cannot be read.
    """
    auth = integration.auth
    if auth.type == "apiKey":
        return ApiKeyAuthenticator(
            auth.file("valueFile"), header=auth.header, query=auth.query, prefix=auth.prefix
        )
    if auth.type == "oauth2":
        assert auth.token_url is not None  # the model requires it for oauth2
        return OAuth2Authenticator(
            http,
            token_url=auth.token_url,
            client_id_file=auth.file("clientIdFile"),
            client_secret_file=auth.file("clientSecretFile"),
            scopes=auth.scopes,
            audience=auth.audience,
            refresh_before_s=auth.refresh_before_s,
            timeout_s=integration.timeout_ms / 1000,
            label=integration.name,
        )
    return NoAuthenticator()  # none, and mtls (the certificate is in the client)


# ---- the HTTP client --------------------------------------------------------------


def build_ssl_context(integration: Integration) -> ssl.SSLContext:
    """Verifies servers with the system CAs (or ``tls.caFile`` only); holds the mTLS client cert."""
    ca_file = integration.tls.ca_file
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise AuthError(
            f"{integration.name}: cannot load tls.caFile {ca_file}: {_reason(exc)}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    auth = integration.auth
    if auth.type == "mtls":
        cert_file, key_file = auth.file("certFile"), auth.file("keyFile")
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise AuthError(
                f"{integration.name}: cannot load the client certificate {cert_file} "
                f"with key {key_file}: {_reason(exc)}"
            ) from None
    return context


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    return exc.strerror or type(exc).__name__


def build_client(integration: Integration, *, max_connections: int = 100) -> httpx.AsyncClient:
    """The client for one integration's backend.

    ``base_url`` is the integration's; TLS verification and the mTLS client
    certificate come from :func:`build_ssl_context`; HTTP/1.1 only; redirects
    are not followed (a 3xx is an answer, and credentials must not travel to
    another host); cookies are never stored (calls of different sessions
    share the client); there is no default timeout: set one per request
    (``client.send(request, ...)`` after ``request.extensions["timeout"] =
    httpx.Timeout(...).as_dict()``, or ``timeout=`` on the convenience methods).
    """
    return httpx.AsyncClient(
        base_url=integration.base_url,
        verify=build_ssl_context(integration),
        http2=False,
        follow_redirects=False,
        timeout=None,
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            # Below Node.js' 5 s keep-alive default, so an idle connection is not
            # reused just as the server closes it.
            keepalive_expiry=4.0,
        ),
        cookies=http.cookiejar.CookieJar(
            policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
        ),
        headers={"User-Agent": "voicetyped-integration"},
    )


# ---- keeping query-parameter keys out of logs ---------------------------------------


def redact_url(url: httpx.URL | str) -> str:
    """``url`` as text, with the values of API-key query parameters masked."""
    parsed = httpx.URL(url) if isinstance(url, str) else url
    secret = [name for name in parsed.params if name in _SECRET_QUERY_PARAMS]
    for name in secret:
        parsed = parsed.copy_set_param(name, REDACTED)
    return str(parsed)


class _RedactQueryKeys(logging.Filter):
    """Masks API-key query parameters in the URLs httpx logs ("HTTP Request: GET <url> ...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(arg, httpx.URL) for arg in record.args
        ):
            record.args = tuple(
                redact_url(arg) if isinstance(arg, httpx.URL) else arg for arg in record.args
            )
        return True


_httpx_filter_installed = False


def _install_httpx_log_filter() -> None:
    global _httpx_filter_installed
    if not _httpx_filter_installed:
        logging.getLogger("httpx").addFilter(_RedactQueryKeys())
        _httpx_filter_installed = True
