"""Authenticators and the backend client against real backends on 127.0.0.1 (HTTP and mTLS)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import ssl
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote_plus, unquote_plus

import httpx
import pytest
from voicetyped_integration.auth import (
    ApiKeyAuthenticator,
    Authenticator,
    AuthError,
    NoAuthenticator,
    OAuth2Authenticator,
    build_authenticator,
    build_client,
    build_ssl_context,
    redact_url,
)
from voicetyped_specs.integration import Integration

if TYPE_CHECKING:  # mypy runs from the repository root and names these modules so
    from images.integration.tests.backend_server import Backend, TokenFailure
    from images.integration.tests.certs import TestCerts

API_KEY = "test-api-key-0123456789"
OPS = {"get_order": {"path": "/orders/{order_id}"}}


def _integration(base_url: str, auth: dict[str, Any] | None = None, **more: Any) -> Integration:
    spec: dict[str, Any] = {"name": "shop", "baseURL": base_url, "operations": OPS, **more}
    if auth is not None:
        spec["auth"] = auth
    return Integration.model_validate(spec)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _rotate(path: Path, text: str) -> None:
    """Replace the file the way Kubernetes updates a Secret mount: a new file, swapped in."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    os.replace(fresh, path)


async def _get(
    http: httpx.AsyncClient, auth: Authenticator, path: str = "/orders/48213"
) -> tuple[httpx.Request, httpx.Response]:
    request = http.build_request("GET", path, timeout=5.0)
    await auth.apply(request)
    response = await http.send(request)
    await response.aread()
    return request, response


async def _get_with_reauth(
    http: httpx.AsyncClient, auth: Authenticator, path: str = "/orders/48213"
) -> httpx.Response:
    """What the executor does: one more attempt when the authenticator renewed credentials."""
    request, response = await _get(http, auth, path)
    if response.status_code == 401 and await auth.on_unauthorized(request):
        _, response = await _get(http, auth, path)
    return response


@pytest.fixture
async def http(backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    async with build_client(_integration(backend.base_url)) as client:
        yield client


# ---- none -------------------------------------------------------------------------


async def test_no_auth_adds_nothing(backend: Backend, http: httpx.AsyncClient) -> None:
    auth = build_authenticator(_integration(backend.base_url), http)
    assert isinstance(auth, NoAuthenticator)
    request, response = await _get(http, auth)
    assert response.status_code == 200
    assert "Authorization" not in backend.requests[-1].headers
    assert await auth.on_unauthorized(request) is False


# ---- API key ----------------------------------------------------------------------


async def test_api_key_in_a_header(
    backend: Backend, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    backend.auth = "api_key"
    key_file = _write(tmp_path / "api-key", f"  {API_KEY}\n")
    auth = build_authenticator(
        _integration(
            backend.base_url,
            {"type": "apiKey", "header": "X-API-Key", "valueFile": str(key_file)},
        ),
        http,
    )
    assert isinstance(auth, ApiKeyAuthenticator)
    request, response = await _get(http, auth)
    assert response.status_code == 200
    assert backend.requests[-1].headers["X-API-Key"] == API_KEY  # stripped
    assert await auth.on_unauthorized(request) is False
    _, unauthenticated = await _get(http, NoAuthenticator())
    assert unauthenticated.status_code == 401


async def test_api_key_header_with_prefix(
    backend: Backend, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    backend.auth = "api_key"
    backend.api_key_header = "Authorization"
    backend.api_key_prefix = "Token "
    key_file = _write(tmp_path / "api-key", API_KEY)
    auth = ApiKeyAuthenticator(str(key_file), header="Authorization", prefix="Token ")
    _, response = await _get(http, auth)
    assert response.status_code == 200
    assert backend.requests[-1].headers["Authorization"] == f"Token {API_KEY}"


async def test_api_key_in_the_query(
    backend: Backend, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    backend.auth = "api_key"
    backend.api_key_query = "api_key"
    key_file = _write(tmp_path / "api-key", API_KEY)
    auth = build_authenticator(
        _integration(
            backend.base_url, {"type": "apiKey", "query": "api_key", "valueFile": str(key_file)}
        ),
        http,
    )
    _, response = await _get(http, auth, "/orders/48213?lang=en")
    assert response.status_code == 200
    received = backend.requests[-1]
    assert dict(received.query) == {"lang": "en", "api_key": API_KEY}
    assert "X-API-Key" not in received.headers


async def test_api_key_rotation_is_picked_up(
    backend: Backend, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    backend.auth = "api_key"
    key_file = _write(tmp_path / "api-key", "key-one-aaaa")
    backend.api_keys = {"key-one-aaaa"}
    auth = ApiKeyAuthenticator(str(key_file), header="X-API-Key")
    assert (await _get(http, auth))[1].status_code == 200

    # Kubernetes style: a new file swapped in.
    _rotate(key_file, "key-two-bbbb\n")
    backend.api_keys = {"key-two-bbbb"}
    assert (await _get(http, auth))[1].status_code == 200
    assert backend.requests[-1].headers["X-API-Key"] == "key-two-bbbb"

    # Rewritten in place, same length: noticed by the mtime.
    stat = key_file.stat()
    key_file.write_text("key-six-cccc\n")
    os.utime(key_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    backend.api_keys = {"key-six-cccc"}
    assert (await _get(http, auth))[1].status_code == 200
    assert backend.requests[-1].headers["X-API-Key"] == "key-six-cccc"


async def test_api_key_file_caught_mid_rotation_keeps_the_last_key(
    backend: Backend, http: httpx.AsyncClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend.auth = "api_key"
    key_file = _write(tmp_path / "api-key", API_KEY)
    auth = ApiKeyAuthenticator(str(key_file), header="X-API-Key")
    _rotate(key_file, "")  # empty for a moment
    assert (await _get(http, auth))[1].status_code == 200
    key_file.unlink()  # gone for a moment
    assert (await _get(http, auth))[1].status_code == 200
    assert backend.requests[-1].headers["X-API-Key"] == API_KEY
    _rotate(key_file, "key-after-rotation")
    backend.api_keys = {"key-after-rotation"}
    assert (await _get(http, auth))[1].status_code == 200
    assert "keeping the last value" in caplog.text
    assert API_KEY not in caplog.text
    assert "key-after-rotation" not in caplog.text


async def test_api_key_file_missing_or_empty(tmp_path: Path, http: httpx.AsyncClient) -> None:
    with pytest.raises(AuthError, match=r"cannot read api key file .*missing-key"):
        ApiKeyAuthenticator(str(tmp_path / "missing-key"), header="X-API-Key")
    empty = _write(tmp_path / "empty", "\n")
    with pytest.raises(AuthError, match="or it is empty"):
        ApiKeyAuthenticator(str(empty), header="X-API-Key")
    with pytest.raises(ValueError, match="exactly one of header or query"):
        ApiKeyAuthenticator(str(empty), header="X-API-Key", query="k")


# ---- OAuth2 -----------------------------------------------------------------------


@pytest.fixture
def client_files(tmp_path: Path, backend: Backend) -> tuple[Path, Path]:
    return (
        _write(tmp_path / "client-id", backend.client_id + "\n"),
        _write(tmp_path / "client-secret", backend.client_secret + "\n"),
    )


def _oauth(
    backend: Backend,
    http: httpx.AsyncClient,
    client_files: tuple[Path, Path],
    **options: Any,
) -> OAuth2Authenticator:
    client_id_file, client_secret_file = client_files
    return OAuth2Authenticator(
        http,
        token_url=backend.token_url,
        client_id_file=str(client_id_file),
        client_secret_file=str(client_secret_file),
        **options,
    )


def _issued_tokens(backend: Backend) -> list[str]:
    return [
        r.headers["Authorization"].removeprefix("Bearer ")
        for r in backend.requests
        if r.headers.get("Authorization", "").startswith("Bearer ")
    ]


async def test_oauth2_token_is_fetched_once_and_cached(
    backend: Backend, http: httpx.AsyncClient, client_files: tuple[Path, Path]
) -> None:
    backend.auth = "bearer"
    client_id_file, client_secret_file = client_files
    auth = build_authenticator(
        _integration(
            backend.base_url,
            {
                "type": "oauth2",
                "tokenURL": backend.token_url,
                "clientIdFile": str(client_id_file),
                "clientSecretFile": str(client_secret_file),
                "scopes": ["orders:read", "orders:write"],
                "audience": "https://shop.example/api",
            },
        ),
        http,
    )
    assert isinstance(auth, OAuth2Authenticator)
    for _ in range(3):
        assert (await _get(http, auth))[1].status_code == 200
    assert backend.tokens_issued == 1
    [token_request] = backend.requests_to("/oauth/token")
    assert token_request.method == "POST"
    assert token_request.form == {
        "grant_type": "client_credentials",
        "scope": "orders:read orders:write",
        "audience": "https://shop.example/api",
    }
    # RFC 6749 §2.3.1: Basic of the form-urlencoded id and secret.
    basic = token_request.headers["Authorization"].removeprefix("Basic ")
    encoded_id, _, encoded_secret = base64.b64decode(basic).decode().partition(":")
    assert encoded_secret != backend.client_secret  # it has characters that need encoding
    assert (unquote_plus(encoded_id), unquote_plus(encoded_secret)) == (
        backend.client_id,
        backend.client_secret,
    )
    assert len(set(_issued_tokens(backend))) == 1


async def test_oauth2_client_credentials_in_the_body(
    backend: Backend, http: httpx.AsyncClient, client_files: tuple[Path, Path]
) -> None:
    backend.auth = "bearer"
    auth = _oauth(backend, http, client_files, client_auth="body")
    assert (await _get(http, auth))[1].status_code == 200
    [token_request] = backend.requests_to("/oauth/token")
    assert "Authorization" not in token_request.headers
    assert token_request.form == {
        "grant_type": "client_credentials",
        "client_id": backend.client_id,
        "client_secret": backend.client_secret,
    }


async def test_oauth2_token_is_renewed_after_expiry(
    backend: Backend, http: httpx.AsyncClient, client_files: tuple[Path, Path]
) -> None:
    backend.auth = "bearer"
    backend.token_ttl_s = 0.3  # the backend rejects it after that
    auth = _oauth(backend, http, client_files, refresh_before_s=0)
    assert (await _get(http, auth))[1].status_code == 200
    assert (await _get(http, auth))[1].status_code == 200
    assert backend.tokens_issued == 1
    await asyncio.sleep(0.35)
    assert (await _get(http, auth))[1].status_code == 200
    assert backend.tokens_issued == 2
    first, second, third = _issued_tokens(backend)
    assert first == second != third


async def test_oauth2_token_is_renewed_refresh_before_seconds_early(
    backend: Backend, http: httpx.AsyncClient, client_files: tuple[Path, Path]
) -> None:
    backend.auth = "bearer"
    backend.token_ttl_s = 100
    now = [1000.0]
    auth = _oauth(backend, http, client_files, refresh_before_s=30, clock=lambda: now[0])
    await _get(http, auth)
    now[0] += 69.9
    await _get(http, auth)
    assert backend.tokens_issued == 1
    now[0] += 0.2  # 70.1 s: within 30 s of the expiry
    await _get(http, auth)
    assert backend.tokens_issued == 2


async def test_oauth2_short_lived_token_is_reused_for_half_its_life(
    backend: Backend, http: httpx.AsyncClient, client_files: tuple[Path, Path]
) -> None:
    backend.auth = "bearer"
    backend.token_ttl_s = 20  # shorter than refresh_before_s
    now = [0.0]
    auth = _oauth(backend, http, client_files, refresh_before_s=30, clock=lambda: now[0])
    await _get(http, auth)
    now[0] = 9.9
    await _get(http, auth)
    assert backend.tokens_issued == 1
    now[0] = 10.1
    await _get(http, auth)
    assert backend.tokens_issued == 2


async def test_oauth2_failed_early_renewal_keeps_the_unexpired_token(
    backend: Backend, http: httpx.AsyncClient, client_files: tuple[Path, Path]
) -> None:
    backend.auth = "bearer"
    backend.token_ttl_s = 100
    now = [0.0]
    auth = _oauth(backend, http, client_files, refresh_before_s=30, clock=lambda: now[0])
    await _get(http, auth)
    backend.token_failure = "error_500"
    now[0] = 80  # time to renew, but the token is good for 20 s more
    assert (await _get(http, auth))[1].status_code == 200
    assert (await _get(http, auth))[1].status_code == 200
    assert len(backend.requests_to("/oauth/token")) == 3  # renewal tried on every call
    now[0] = 100.5  # expired: the failure is the caller's
    with pytest.raises(AuthError, match="answered 500"):
        await _get(http, auth)
    backend.token_failure = None
    assert (await _get(http, auth))[1].status_code == 200
    assert backend.tokens_issued == 2


async def test_oauth2_token_without_expires_in_uses_the_default(
    backend: Backend, http: httpx.AsyncClient, client_files: tuple[Path, Path]
) -> None:
    backend.auth = "bearer"
    backend.token_ttl_s = None
    now = [0.0]
    auth = _oauth(
        backend,
        http,
        client_files,
        refresh_before_s=0,
        default_expires_in_s=60,
        clock=lambda: now[0],
    )
    await _get(http, auth)
    now[0] = 59
    await _get(http, auth)
    now[0] = 61
    await _get(http, auth)
    assert backend.tokens_issued == 2


async def test_oauth2_401_renews_the_token_once(
    backend: Backend, http: httpx.AsyncClient, client_files: tuple[Path, Path]
) -> None:
    backend.auth = "bearer"
    auth = _oauth(backend, http, client_files)
    assert (await _get_with_reauth(http, auth)).status_code == 200
    backend.revoke_tokens()
    assert (await _get_with_reauth(http, auth)).status_code == 200
    assert backend.tokens_issued == 2
    statuses = [r.headers.get("Authorization") for r in backend.requests_to("/orders/48213")]
    assert len(statuses) == 3  # ok, 401 with the revoked token, ok with the new one


async def test_oauth2_401_with_an_old_token_keeps_the_current_one(
    backend: Backend, http: httpx.AsyncClient, client_files: tuple[Path, Path]
) -> None:
    backend.auth = "bearer"
    auth = _oauth(backend, http, client_files)
    first, response = await _get(http, auth)
    second, _ = await _get(http, auth)
    backend.revoke_tokens()
    assert await auth.on_unauthorized(first) is True  # invalidates token A
    _, response = await _get(http, auth)  # fetches token B
    assert response.status_code == 200
    assert await auth.on_unauthorized(second) is True  # A again: B stays
    _, response = await _get(http, auth)
    assert response.status_code == 200
    assert backend.tokens_issued == 2
    # A request the authenticator did not prepare: no retry.
    assert await auth.on_unauthorized(http.build_request("GET", "/orders/1")) is False


async def test_oauth2_fifty_concurrent_callers_share_one_token_request(
    backend: Backend, http: httpx.AsyncClient, client_files: tuple[Path, Path]
) -> None:
    backend.auth = "bearer"
    backend.token_delay_s = 0.2
    auth = _oauth(backend, http, client_files)
    responses = await asyncio.gather(*(_get(http, auth) for _ in range(50)))
    assert [r.status_code for _, r in responses] == [200] * 50
    assert backend.tokens_issued == 1
    assert len(backend.requests_to("/oauth/token")) == 1
    assert auth.tokens_fetched == 1

    backend.revoke_tokens()  # all 50 meet a 401 at once: still one new token
    again = await asyncio.gather(*(_get_with_reauth(http, auth) for _ in range(50)))
    assert [r.status_code for r in again] == [200] * 50
    assert backend.tokens_issued == 2


async def test_oauth2_cancelled_caller_does_not_cancel_the_shared_token_request(
    backend: Backend, http: httpx.AsyncClient, client_files: tuple[Path, Path]
) -> None:
    backend.auth = "bearer"
    backend.token_delay_s = 0.2
    auth = _oauth(backend, http, client_files)
    impatient = asyncio.create_task(_get(http, auth))
    patient = asyncio.create_task(_get(http, auth))
    await asyncio.sleep(0.05)
    impatient.cancel()
    _, response = await patient
    assert response.status_code == 200
    assert impatient.cancelled()
    assert backend.tokens_issued == 1


async def test_oauth2_token_failure_is_shared_and_not_cached(
    backend: Backend, http: httpx.AsyncClient, client_files: tuple[Path, Path]
) -> None:
    backend.auth = "bearer"
    backend.token_failure = "error_500"
    backend.token_delay_s = 0.1
    auth = _oauth(backend, http, client_files)
    results = await asyncio.gather(*(_get(http, auth) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, AuthError) for r in results)
    assert "answered 500 (server_error)" in str(results[0])
    assert len(backend.requests_to("/oauth/token")) == 1
    backend.token_failure = None
    assert (await _get(http, auth))[1].status_code == 200  # tried again, not a cached failure
    assert backend.tokens_issued == 1


def _basic(client_id: str, secret: str) -> str:
    return base64.b64encode(f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()).decode()


def _assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ("error_500", r"answered 500 \(server_error\)$"),
        ("leaky_400", r"answered 400$"),  # the echoing error code and description are dropped
        ("invalid_json", "a body that is not JSON"),
        ("no_token", "no usable access_token"),
        ("reset", "failed: (ReadError|RemoteProtocolError)"),
        ("wrong_secret", r"answered 401 \(invalid_client\)$"),
        ("unreachable", "failed: ConnectError"),
    ],
)
async def test_oauth2_token_endpoint_failures_never_reveal_secrets(
    backend: Backend,
    http: httpx.AsyncClient,
    client_files: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
    failure: str,
    message: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    backend.auth = "bearer"
    if failure == "wrong_secret":
        backend.client_secret = "the-one-the-backend-expects"
    elif failure != "unreachable":
        backend.token_failure = cast("TokenFailure", failure)
    token_url = backend.token_url
    if failure == "unreachable":
        with socket.socket() as sock:  # a port nobody listens on
            sock.bind(("127.0.0.1", 0))
            token_url = f"http://127.0.0.1:{sock.getsockname()[1]}/oauth/token"
    client_id_file, client_secret_file = client_files
    auth = OAuth2Authenticator(
        http,
        token_url=token_url,
        client_id_file=str(client_id_file),
        client_secret_file=str(client_secret_file),
        label="shop",
    )
    with pytest.raises(AuthError, match=message) as caught:
        await _get(http, auth)
    assert str(caught.value).startswith("shop: token ")
    secret = client_files[1].read_text().strip()
    secrets = (secret, _basic(client_files[0].read_text().strip(), secret))
    text = "".join(traceback.format_exception(caught.value))
    _assert_no_secret(text, *secrets)
    _assert_no_secret(caplog.text, *secrets)
    for record in caplog.records:
        _assert_no_secret(record.getMessage(), *secrets)


async def test_oauth2_missing_client_secret_file(
    backend: Backend, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    client_id_file = _write(tmp_path / "client-id", "id")
    with pytest.raises(AuthError, match="cannot read oauth2 client secret file"):
        OAuth2Authenticator(
            http,
            token_url=backend.token_url,
            client_id_file=str(client_id_file),
            client_secret_file=str(tmp_path / "nope"),
        )


# ---- secrets in logs --------------------------------------------------------------------


async def test_secrets_never_reach_logs_or_errors(
    backend: Backend,
    http: httpx.AsyncClient,
    client_files: tuple[Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included
    # API key in the query: httpx logs every request URL.
    backend.auth = "api_key"
    backend.api_key_query = "api_key"
    key_auth = ApiKeyAuthenticator(str(_write(tmp_path / "key", API_KEY)), query="api_key")
    request, response = await _get(http, key_auth)
    assert response.status_code == 200
    assert API_KEY in str(request.url)  # the key is in the URL sent...
    assert "api_key=%5BREDACTED%5D" in redact_url(request.url)  # ...not in the URL logged
    assert API_KEY not in redact_url(str(request.url))
    assert "HTTP Request: GET" in caplog.text
    assert "/orders/48213?api_key=%5BREDACTED%5D" in caplog.text  # httpx's line, filtered
    # OAuth2: a token, a revocation, a renewal.
    backend.auth = "bearer"
    oauth = _oauth(backend, http, client_files)
    await _get_with_reauth(http, oauth)
    backend.revoke_tokens()
    await _get_with_reauth(http, oauth)
    tokens = set(_issued_tokens(backend))
    assert len(tokens) == 2
    secrets = (API_KEY, backend.client_secret, _basic(backend.client_id, backend.client_secret))
    _assert_no_secret(caplog.text, *secrets, *tokens)
    for record in caplog.records:
        _assert_no_secret(record.getMessage(), *secrets, *tokens)


def test_redact_url_leaves_other_parameters() -> None:
    assert redact_url("http://h/x?a=1") == "http://h/x?a=1"


# ---- the client and mTLS --------------------------------------------------------------


def _mtls(tls_backend: Backend, certs: TestCerts, **tls: Any) -> Integration:
    return _integration(
        tls_backend.base_url,
        {"type": "mtls", "certFile": str(certs.client_cert), "keyFile": str(certs.client_key)},
        tls={"caFile": str(certs.ca), **tls},
    )


async def test_client_settings(backend: Backend) -> None:
    async with build_client(_integration(f"{backend.base_url}/api"), max_connections=7) as http:
        assert http.base_url == httpx.URL(f"{backend.base_url}/api/")
        assert http.follow_redirects is False
        assert http.timeout == httpx.Timeout(None)
        pool = http._transport._pool  # type: ignore[attr-defined]
        assert pool._max_connections == 7
        assert pool._http2 is False
        # Cookies are never kept: calls of different sessions share the client.
        response = await http.get(f"{backend.base_url}/status/302", timeout=5)
        assert response.status_code == 302  # not followed
        response = await http.get(f"{backend.base_url}/cookie", timeout=5)
        assert "set-cookie" in response.headers
        assert len(http.cookies.jar) == 0


async def test_mtls_trusted_client_certificate_is_accepted(
    tls_backend: Backend, certs: TestCerts
) -> None:
    integration = _mtls(tls_backend, certs)
    async with build_client(integration) as http:
        auth = build_authenticator(integration, http)
        assert isinstance(auth, NoAuthenticator)
        _, response = await _get(http, auth)
    assert response.status_code == 200
    assert response.json()["status"] == "shipped"
    assert tls_backend.requests[-1].client_cert_cn == "voicetyped-integration"


async def test_mtls_untrusted_client_certificate_is_rejected(
    tls_backend: Backend, certs: TestCerts
) -> None:
    integration = _integration(
        tls_backend.base_url,
        {
            "type": "mtls",
            "certFile": str(certs.untrusted_client_cert),
            "keyFile": str(certs.untrusted_client_key),
        },
        tls={"caFile": str(certs.ca)},
    )
    async with build_client(integration) as http:
        with pytest.raises(httpx.TransportError):
            await _get(http, NoAuthenticator())
    assert tls_backend.requests == []


async def test_no_client_certificate_is_rejected(tls_backend: Backend, certs: TestCerts) -> None:
    integration = _integration(tls_backend.base_url, tls={"caFile": str(certs.ca)})
    async with build_client(integration) as http:
        with pytest.raises(httpx.TransportError):
            await _get(http, NoAuthenticator())
    assert tls_backend.requests == []


async def test_server_is_verified_with_the_ca_file(tls_backend: Backend, certs: TestCerts) -> None:
    for integration in (
        _mtls(tls_backend, certs, caFile=str(certs.other_ca)),  # a CA that did not sign it
        _integration(  # the system CAs
            tls_backend.base_url,
            {"type": "mtls", "certFile": str(certs.client_cert), "keyFile": str(certs.client_key)},
        ),
    ):
        async with build_client(integration) as http:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await _get(http, NoAuthenticator())
    assert tls_backend.requests == []


def test_ssl_context(certs: TestCerts, tmp_path: Path) -> None:
    context = build_ssl_context(
        _integration("https://backend.example", tls={"caFile": str(certs.ca)})
    )
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("organizationName", "voicetyped tests"),), (("commonName", "voicetyped test CA"),))
    ]


def test_unreadable_tls_material_is_an_auth_error(certs: TestCerts, tmp_path: Path) -> None:
    with pytest.raises(AuthError, match=r"cannot load tls\.caFile .*/missing\.pem"):
        build_client(
            _integration("https://b.example", tls={"caFile": str(tmp_path / "missing.pem")})
        )
    wrong_key = _integration(
        "https://b.example",
        {"type": "mtls", "certFile": str(certs.client_cert), "keyFile": str(certs.server_key)},
    )
    with pytest.raises(AuthError, match="cannot load the client certificate") as caught:
        build_client(wrong_key)
    assert "PRIVATE KEY" not in str(caught.value)
