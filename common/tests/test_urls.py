from __future__ import annotations

import pytest
from voicetyped.urls import redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:s3cret@host:6379/0", "redis://***@host:6379/0"),
        ("rediss://user:s3cret@host/1", "rediss://***@host/1"),
        ("redis://user:p%40ss@host", "redis://***@host"),
        ("redis://host/0?password=s3cret&db=1", "redis://host/0?password=***&db=1"),
        ("https://api.example/x?Token=abc", "https://api.example/x?Token=***"),
        ("https://api.example/x?page=2", "https://api.example/x?page=2"),
        ("sqlite:///relative.db", "sqlite:///relative.db"),
        ("http://u:p@[::1", "***"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
