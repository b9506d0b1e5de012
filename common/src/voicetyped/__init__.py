"""voicetyped's shared contracts and service scaffolding.

- ``voicetyped.v1``: generated protobuf/gRPC code for the inter-service contracts
  (source: ``proto/voicetyped/v1``; regenerate with ``make proto``).
- ``voicetyped.session``: the CallSession model (pydantic) and
  ``voicetyped.session_proto``: its lossless conversion to and from protobuf.
- ``voicetyped.service``: what every service process runs on (config, JSON
  logs, health/metrics HTTP, gRPC server and client helpers, graceful shutdown).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("voicetyped-common")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
