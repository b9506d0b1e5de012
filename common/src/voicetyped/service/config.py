"""Service configuration: defaults < YAML file < environment (< explicit arguments).

Every service subclasses :class:`ServiceSettings`. Environment variables use
the ``VOICETYPED_`` prefix and ``__`` for nesting (``VOICETYPED_GRPC_PORT=50051``).
The YAML file comes from ``--config`` or ``VOICETYPED_CONFIG_FILE``. Secrets are
never given inline: settings hold file paths (Kubernetes Secret mounts) and
services read them when they need them.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

CONFIG_FILE_ENV = "VOICETYPED_CONFIG_FILE"

_config_file: ContextVar[Path | None] = ContextVar("voicetyped_config_file", default=None)


class ConfigError(Exception):
    """The configuration is unusable; the message says which file and field."""


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclasses add their own and set port defaults."""

    model_config = SettingsConfigDict(
        env_prefix="VOICETYPED_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    http_host: str = Field("0.0.0.0", description="Bind address of /healthz, /readyz, /metrics.")
    http_port: int = Field(8080, ge=0, le=65535, description="0 picks a free port.")
    grpc_host: str = Field("0.0.0.0", description="Bind address of the gRPC server.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="0 picks a free port.")
    advertise_host: str = Field(
        "",
        description="Host other services use to reach this replica directly (the pod IP in "
        "Kubernetes); empty means the grpc_host, or 127.0.0.1 when that is a wildcard.",
    )
    grpc_max_connection_age_s: float = Field(
        30.0,
        ge=0,
        le=86_400,
        description="Each client connection is asked to move (HTTP/2 GOAWAY) after about "
        "this long; its running streams (calls) continue on it to their end. Clients then "
        "reconnect and resolve the target again, so replicas added by scaling get new work. "
        "0: connections are kept for ever.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    shutdown_grace_s: float = Field(
        25.0, gt=0, description="After SIGTERM, how long in-flight work may take before exit."
    )
    trace_file: Path | None = Field(
        None, description="Write OpenTelemetry spans here as JSON lines (local runs, benchmarks)."
    )
    otlp_endpoint: str = Field(
        "", description="OpenTelemetry collector (OTLP/gRPC, e.g. otel-collector:4317) for spans."
    )
    shutdown_delay_s: float = Field(
        0.0,
        ge=0,
        description="After SIGTERM, keep serving (while /readyz fails) this long so load "
        "balancers stop routing here before new work is refused. Counts against the grace.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: Path | None = None) -> Self:
        """Build settings from the file (argument or $VOICETYPED_CONFIG_FILE) and environment."""
        if config_file is None and os.environ.get(CONFIG_FILE_ENV):
            config_file = Path(os.environ[CONFIG_FILE_ENV])
        if config_file is not None and not config_file.is_file():
            raise ConfigError(f"config file {config_file} does not exist")
        token = _config_file.set(config_file)
        try:
            return cls()
        except ValidationError as exc:
            where = f"config file {config_file} / environment" if config_file else "environment"
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"invalid configuration ({where}): {problems}") from None
        finally:
            _config_file.reset(token)

    def advertised_host(self) -> str:
        if self.advertise_host:
            return self.advertise_host
        if self.grpc_host in ("", "0.0.0.0", "::", "[::]"):
            return "127.0.0.1"
        return self.grpc_host


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def config_files(directory: Path) -> list[tuple[Path, float]]:
    """YAML/JSON documents in ``directory`` with their mtimes, sorted (blocking: use a thread).

    Dot-files are skipped: ConfigMap mounts keep their data behind ``..data`` symlinks.
    """
    return [
        (p, p.stat().st_mtime)
        for p in sorted(directory.iterdir())
        if p.suffix in CONFIG_SUFFIXES and not p.name.startswith(".")
    ]
