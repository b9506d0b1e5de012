"""Fixtures and helpers of the operator's e2e tests (test_operator*.py).

The operator runs as a real process (``python -m voicetyped_operator``, the code the image
runs) against the cluster of the ``kube`` fixture, cluster-wide, with the CRDs generated in
``crds/`` applied first. Each test module gets its own CRDs and operator (module scope):
both are removed when the module ends, and the module fails if the operator died.

conftest.py loads this file by path (tests/ is no package) and exposes the fixtures; the
test modules take the helpers from ``sys.modules["voicetyped_e2e_operator_support"]``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from voicetyped_testkit.processes import free_port

if TYPE_CHECKING:
    from tests.e2e.kube import Kube, condition, wait_until
else:  # conftest.py loads kube.py (by path) before this module
    condition = sys.modules["voicetyped_e2e_kube"].condition
    wait_until = sys.modules["voicetyped_e2e_kube"].wait_until

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"
EXAMPLE_DIR = REPO / "examples" / "order-status"
GROUP = "voicetyped.io"
CRDS = [f"voicedeployments.{GROUP}", f"dialogs.{GROUP}", f"integrations.{GROUP}"]
VD = f"voicedeployments.v1alpha1.{GROUP}"
DIALOG = f"dialogs.v1alpha1.{GROUP}"
INTEGRATION = f"integrations.v1alpha1.{GROUP}"
VD_LABEL = f"{GROUP}/voicedeployment"
CHILD_KINDS = "deployments,services,configmaps,serviceaccounts,poddisruptionbudgets," \
    "networkpolicies,horizontalpodautoscalers"  # fmt: skip


wait_for = wait_until


@dataclass
class Operator:
    """The operator process."""

    proc: subprocess.Popen[bytes]
    log: Path
    liveness_port: int

    def alive(self) -> bool:
        return self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2
            ) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int:
        """SIGTERM and its exit code (a kill after 30 s counts as a failure: -9)."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return int(self.proc.returncode)

    def assert_clean_exit(self, code: int) -> None:
        """Exit 0 on SIGTERM, whatever was in flight, and no traceback on the way."""
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        assert code == 0, f"the operator exited {code}:\n{self.tail(120)}"
        assert "Traceback" not in log, self.tail(200)


def apply_crds(kube: Kube) -> None:
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    for name in CRDS:
        kube.wait_crd(name)


def delete_crds(kube: Kube) -> None:
    kube.kubectl("delete", "crd", *CRDS, "--ignore-not-found", "--wait=true", "--timeout=120s")


@pytest.fixture(scope="module")
def voicetyped_crds(kube: Kube) -> Iterator[list[str]]:
    apply_crds(kube)
    yield CRDS
    delete_crds(kube)


def start_operator(kube: Kube, log: Path, **env: str) -> Operator:
    port = free_port()
    environment = {
        **os.environ,
        "KUBECONFIG": kube.kubeconfig,
        "VOICETYPED_OPERATOR_LIVENESS_PORT": str(port),
        "VOICETYPED_OPERATOR_LOG_FORMAT": "plain",
        "VOICETYPED_OPERATOR_DEPENDENCY_RETRY_SECONDS": "3",
        "VOICETYPED_OPERATOR_IMAGE_TAG": os.environ.get("VOICETYPED_E2E_IMAGE_TAG", "0.1.0"),
        **env,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voicetyped_operator"],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    made = Operator(proc=proc, log=log, liveness_port=port)
    try:
        wait_for("the operator's /healthz", lambda: made.healthy() or not made.alive(), 60)
    except AssertionError:
        made.stop()
        raise
    if not made.alive():
        raise AssertionError(f"the operator exited at start:\n{made.tail()}")
    return made


@pytest.fixture(scope="module")
def operator(
    kube: Kube, voicetyped_crds: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    made = start_operator(kube, log)
    yield made
    crashed = not made.alive()
    code = made.stop()
    assert not crashed, f"the operator died (exit {code}):\n{made.tail()}"
    made.assert_clean_exit(code)


# ---- reading objects ---------------------------------------------------------------------


def get(kube: Kube, resource: str, name: str, namespace: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = kube.find(resource, name, "-n", namespace)
    return found


def wait_condition(
    kube: Kube,
    resource: str,
    name: str,
    namespace: str,
    kind: str,
    status: str = "True",
    reason: str | None = None,
    timeout_s: float = 90.0,
) -> dict[str, Any]:
    """Wait until ``kind`` has ``status`` (and ``reason``) for the current generation."""

    def probe() -> dict[str, Any] | None:
        obj = get(kube, resource, name, namespace)
        cond = condition(obj, kind)
        if obj is None or cond is None:
            return None
        current = cond.get("observedGeneration") == obj["metadata"]["generation"]
        if (
            cond.get("status") == status
            and current
            and (reason is None or cond["reason"] == reason)
        ):
            return obj
        return None

    try:
        return wait_for(
            f"{resource} {namespace}/{name} {kind}={status} ({reason})", probe, timeout_s
        )
    except AssertionError as err:
        obj = get(kube, resource, name, namespace)
        status = json.dumps((obj or {}).get("status"), indent=1)
        raise AssertionError(f"{err}\nstatus: {status}") from None


def children(kube: Kube, namespace: str, vd: str) -> list[dict[str, Any]]:
    return kube.items(CHILD_KINDS, "-n", namespace, "-l", f"{VD_LABEL}={vd}")


def events(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return kube.items("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")
