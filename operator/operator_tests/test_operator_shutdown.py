"""Shutdown order: every background task stops before the API client closes.

kopf runs the cleanup handler once its watchers and handlers are gone, then gives leftover tasks
5 s before cancelling them. A status refresh still waiting out its debounce then woke up, wrote
with the closed client (``RuntimeError: Cannot send a request, as the client has been
closed``), and kopf re-raised it: the operator exited 1 on SIGTERM. The e2e suite sends the
real SIGTERM (tests/e2e/test_operator_shutdown.py); this pins the order itself.
"""

from __future__ import annotations

import asyncio

import pytest
from lightkube import AsyncClient, KubeConfig
from voicetyped_operator.kube import Kube
from voicetyped_operator.reconcile.voicedeployment import schedule_refresh
from voicetyped_operator.render import Dependencies
from voicetyped_operator.settings import OperatorSettings
from voicetyped_operator.state import OperatorState, Reconciled

KEY = ("shop", "order-status")


def _state(debounce_s: float) -> OperatorState:
    # A real client for an address nothing listens on: any request it sends fails.
    config = KubeConfig.from_dict(
        {
            "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )
    client = AsyncClient(config, field_manager="test")
    state = OperatorState(
        kube=Kube(client, "test", 2),
        settings=OperatorSettings(status_debounce_seconds=debounce_s),
    )
    state.reconciled[KEY] = Reconciled("uid-1", 1, Dependencies(), ("media",))
    return state


async def test_close_cancels_a_pending_refresh_before_closing_the_client() -> None:
    state = _state(debounce_s=0.3)
    schedule_refresh(state, KEY)
    pending = state.refreshes[KEY]
    assert not pending.done()
    await state.close()
    assert pending.cancelled()
    assert state.tasks == set()
    # What the refresh would have met had it run now:
    with pytest.raises(RuntimeError, match="client has been closed"):
        await state.kube.patch_status("VoiceDeployment", *KEY, {"summary": "0/1"})
    schedule_refresh(state, KEY)  # a late Deployment event after close starts nothing
    assert state.refreshes[KEY] is pending
    assert state.tasks == set()


async def test_a_refresh_that_fails_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    state = _state(debounce_s=0.0)
    schedule_refresh(state, KEY)
    task = state.refreshes[KEY]
    await asyncio.wait({task}, timeout=10)
    assert task.done() and not task.cancelled() and task.exception() is None
    assert "status refresh of shop/order-status failed" in caplog.text
    await state.close()
