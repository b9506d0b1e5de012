"""Settings come from defaults, then the YAML file, then the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from voicetyped.service.config import ConfigError, ServiceSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOICETYPED_CONFIG_FILE", raising=False)
    s = ServiceSettings.load()
    assert (s.http_port, s.grpc_port, s.log_format) == (8080, 50051, "json")
    assert s.advertised_host() == "127.0.0.1"


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "svc.yaml"
    cfg.write_text("grpc_port: 6000\nhttp_port: 7000\nlog_level: debug\n")
    monkeypatch.setenv("VOICETYPED_HTTP_PORT", "7100")
    s = ServiceSettings.load(cfg)
    assert (s.grpc_port, s.http_port, s.log_level) == (6000, 7100, "debug")
    monkeypatch.setenv("VOICETYPED_CONFIG_FILE", str(cfg))
    assert ServiceSettings.load().grpc_port == 6000


def test_bad_values_name_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "svc.yaml"
    cfg.write_text("grpc_port: 70000\n")
    with pytest.raises(
        ConfigError, match=r"grpc_port: Input should be less than or equal to 65535"
    ):
        ServiceSettings.load(cfg)
    cfg.write_text("grcp_port: 6000\n")
    with pytest.raises(ConfigError, match="grcp_port: Extra inputs are not permitted"):
        ServiceSettings.load(cfg)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        ServiceSettings.load(tmp_path / "nope.yaml")


def test_advertised_host() -> None:
    assert ServiceSettings(advertise_host="10.1.2.3").advertised_host() == "10.1.2.3"
    assert ServiceSettings(grpc_host="192.0.2.7").advertised_host() == "192.0.2.7"
