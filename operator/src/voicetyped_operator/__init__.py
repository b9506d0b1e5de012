"""voicetyped Kubernetes operator: VoiceDeployment, Dialog and Integration reconciled with kopf."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("voicetyped-operator")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0.0.0"
