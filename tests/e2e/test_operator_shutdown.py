"""The operator stops cleanly on SIGTERM whatever it has in flight.

A rollout of the operator (or a node drain) sends SIGTERM while a VoiceDeployment's status
refresh waits out its debounce and another VoiceDeployment waits for its retry. The operator
must exit 0 without a traceback: a refresh that woke after the API client closed once made it
exit 1 (``Cannot send a request, as the client has been closed``).

Its own operators (this module does not use the shared ``operator`` fixture), run with debug
logs so the test can wait for "refresh scheduled" instead of guessing when it happens.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.e2e.kube import Kube

pytestmark = pytest.mark.e2e

s = sys.modules["voicetyped_e2e_operator_support"]  # conftest.py loads it, with its fixtures


def test_sigterm_with_a_refresh_and_a_retry_pending_exits_0(
    kube: Kube, namespace: str, voicetyped_crds: list[str], tmp_path: Path
) -> None:
    operator = s.start_operator(
        kube,
        tmp_path / "operator.log",
        VOICETYPED_OPERATOR_LOG_LEVEL="debug",
        # Long enough that SIGTERM lands while the refresh waits, short enough that it wakes
        # during kopf's shutdown (which waits up to 5 s for leftover tasks).
        VOICETYPED_OPERATOR_STATUS_DEBOUNCE_SECONDS="4",
        VOICETYPED_OPERATOR_DEPENDENCY_RETRY_SECONDS="60",
    )
    try:
        # A VoiceDeployment whose Dialog does not exist: stalled, its retry pending.
        kube.apply(
            {
                "apiVersion": "voicetyped.io/v1alpha1",
                "kind": "VoiceDeployment",
                "metadata": {"name": "waiting"},
                "spec": {
                    "dialogs": ["not-there-yet"],
                    "media": {"allowedSourceCIDRs": ["10.0.0.0/8"]},
                },
            },
            namespace,
        )
        s.wait_condition(
            kube, s.VD, "waiting", namespace, "Stalled", reason="DialogNotFound", timeout_s=60
        )
        # The example: its Deployments' first status changes schedule a status refresh. Its
        # Dialog and Integration (and the Secret that one needs) first and Ready, or with
        # this 60 s retry the VoiceDeployment waits for them past the wait below.
        for name in ("secret.yaml", "dialog.yaml", "integration.yaml"):
            kube.kubectl("apply", "-n", namespace, "-f", str(s.EXAMPLE_DIR / name))
        s.wait_condition(kube, s.DIALOG, "order-status", namespace, "Ready", timeout_s=60)
        s.wait_condition(kube, s.INTEGRATION, "shop", namespace, "Ready", timeout_s=60)
        kube.kubectl("apply", "-n", namespace, "-f", str(s.EXAMPLE_DIR / "voicedeployment.yaml"))
        scheduled = f"status refresh of {namespace}/order-status scheduled"
        s.wait_for(
            "a status refresh to be scheduled",
            lambda: scheduled in operator.log.read_text(),
            timeout_s=60,
        )
    finally:
        code = operator.stop()
    operator.assert_clean_exit(code)
    log = operator.log.read_text()
    assert "Signal SIGTERM is received" in log, operator.tail()
    assert "client has been closed" not in log, operator.tail(200)
