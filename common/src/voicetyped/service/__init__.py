"""What every voicetyped service process runs on.

A service describes itself as a :class:`~voicetyped.service.app.ServiceApp`
(its gRPC servicers, readiness checks and drain hooks) and hands it to
:func:`~voicetyped.service.runner.run`, which serves gRPC (with the standard
health and reflection services), ``/healthz``, ``/readyz`` and ``/metrics``,
logs JSON, and shuts down gracefully on SIGTERM.
"""
