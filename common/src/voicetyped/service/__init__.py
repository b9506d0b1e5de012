"""What every voicetyped service process runs on.

A service describes itself as a :class:`~voicetyped.service.app.ServiceApp`
(its gRPC servicers, readiness checks and drain hooks) and hands it to
:func:`~voicetyped.service.runner.run`, which serves gRPC (with the standard
health and reflection services), ``/healthz``, ``/readyz`` and ``/metrics``,
logs JSON, and shuts down gracefully on SIGTERM.
"""

import os

# gRPC's C core prints INFO lines of its own to stderr, in plain text (a peer shutting down:
# "Got goaway ... Cancelling all calls"), which would break the JSON log. Errors stay; set
# GRPC_VERBOSITY yourself to see more. Set before anything imports grpc: every service
# process imports this package first.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
