"""Call tokens (mint, spend once, expire) and the settings that guard browser calls."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from voicetyped_media.config import MediaSettings
from voicetyped_media.webrtc.tokens import CallTokens, TokenError, derive_key


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_spent_once_and_expires() -> None:
    clock = Clock()
    tokens = CallTokens(derive_key("access"), ttl_s=60, clock=clock)
    token, expires = tokens.mint()
    assert expires == 1_800_000_060
    tokens.spend(token)
    with pytest.raises(TokenError, match="already used"):
        tokens.spend(token)
    later, _ = tokens.mint()
    clock.now += 60
    with pytest.raises(TokenError, match="expired"):
        tokens.spend(later)


def test_replicas_with_the_same_access_token_accept_each_others_tokens() -> None:
    minted, _ = CallTokens(derive_key("shared"), 60).mint()
    CallTokens(derive_key("shared"), 60).spend(minted)
    with pytest.raises(TokenError, match="invalid call token"):
        CallTokens(derive_key("another"), 60).spend(minted)
    with pytest.raises(TokenError, match="invalid call token"):
        CallTokens(derive_key(None), 60).spend(CallTokens(derive_key(None), 60).mint()[0])


def test_spent_tokens_are_forgotten_once_expired() -> None:
    clock = Clock()
    tokens = CallTokens(derive_key("access"), ttl_s=10, clock=clock)
    for _ in range(5):
        tokens.spend(tokens.mint()[0])
    clock.now += 11
    tokens.spend(tokens.mint()[0])
    assert len(tokens._spent) == 1


def test_enabled_on_a_non_loopback_port_needs_a_token_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"webrtc\.token_file is required"):
        MediaSettings(http_host="0.0.0.0", webrtc={"enabled": True})
    secret = tmp_path / "token"
    secret.write_text("x")
    settings = MediaSettings(
        http_host="0.0.0.0", dialog="main", webrtc={"enabled": True, "token_file": secret}
    )
    assert settings.webrtc_dialog() == "main"
    assert MediaSettings(http_host="127.0.0.1", webrtc={"enabled": True}).webrtc.token_ttl_s == 60
    assert MediaSettings(webrtc={"dialog": "web"}).webrtc_dialog() == "web"


@pytest.mark.parametrize(
    ("env", "said"),
    [
        (
            {"VOICETYPED_HTTP_HOST": "0.0.0.0"},
            "webrtc.token_file is required",
        ),
        (
            {"VOICETYPED_WEBRTC__TOKEN_FILE": "/nonexistent/webrtc-token"},
            "webrtc.token_file /nonexistent/webrtc-token: No such file or directory",
        ),
        ({"VOICETYPED_WEBRTC__TOKEN_FILE": "EMPTY"}, "is empty"),
    ],
)
def test_the_gateway_refuses_to_start_without_a_usable_token(
    env: dict[str, str], said: str, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    if env.get("VOICETYPED_WEBRTC__TOKEN_FILE") == "EMPTY":
        env = {**env, "VOICETYPED_WEBRTC__TOKEN_FILE": str(empty)}
    done = subprocess.run(
        [sys.executable, "-m", "voicetyped_media"],
        env={
            **os.environ,
            "VOICETYPED_HTTP_HOST": "127.0.0.1",
            "VOICETYPED_HTTP_PORT": "0",
            "VOICETYPED_GRPC_PORT": "0",
            "VOICETYPED_SIP_PORT": "0",
            "VOICETYPED_WEBRTC__ENABLED": "true",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert said in done.stderr, done.stderr[-2000:]
