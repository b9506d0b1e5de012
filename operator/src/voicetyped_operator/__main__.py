"""``voicetyped-operator`` / ``python -m voicetyped_operator``: run the operator."""

from __future__ import annotations

import logging
import sys

import kopf

from voicetyped_operator import handlers
from voicetyped_operator.settings import OperatorSettings


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(
            "voicetyped-operator: reconciles VoiceDeployment, Dialog and Integration resources.\n"
            "Settings: VOICETYPED_OPERATOR_* environment variables (namespaces, image_registry,\n"
            "image_tag, resync_seconds, ...); the cluster from $KUBECONFIG or the pod's\n"
            "service account."
        )
        return
    settings: OperatorSettings = handlers.SETTINGS
    _logging(settings)
    liveness = (
        f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    )
    kopf.run(
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=liveness,
    )


def _logging(settings: OperatorSettings) -> None:
    from kopf._core.actions.loggers import configure

    debug = settings.log_level == "debug"
    configure(
        debug=debug,
        verbose=debug,
        quiet=settings.log_level in ("warning", "error"),
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.PLAIN,
        log_prefix=settings.log_format != "json",
    )
    if not debug:
        # Every handled watch event ("Handler 'child-deployment' succeeded.") and every HTTP
        # request would be an INFO line: keep those for debug; warnings and errors stay.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("httpx2").setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.WARNING)


if __name__ == "__main__":
    main()
