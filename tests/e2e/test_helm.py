"""helm against the real API server, with the fixture chart (the real chart comes later).

``helm lint``, ``helm template | kubectl apply --dry-run=server -f -`` (the API server
validates and admits every rendered object but stores nothing) and a real
``helm install --wait``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.e2e.kube import Kube

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parent / "fixtures" / "minimal-chart"
KINDS = ("ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Service", "ServiceAccount")


def test_helm_lint(kube: Kube) -> None:
    result = kube.helm("lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout
    # The values schema is enforced: lint catches a wrong type.
    bad = kube.helm("lint", "--strict", str(CHART), "--set", "replicaCount=many", check=False)
    assert bad.returncode != 0 and "replicaCount" in bad.stdout + bad.stderr


def _render(kube: Kube, namespace: str, *values: str) -> str:
    return kube.helm("template", "demo", str(CHART), "--namespace", namespace, *values).stdout


@pytest.mark.parametrize("values", [(), ("--set", "gpu.enabled=true,autoscaling.enabled=false")])
def test_rendered_chart_passes_server_side_dry_run(
    kube: Kube, namespace: str, values: tuple[str, ...]
) -> None:
    manifests = _render(kube, namespace, *values)
    result = kube.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=manifests)
    created = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(created) == len(KINDS) - (1 if values else 0), result.stdout
    # Nothing was stored.
    left = kube.kubectl("get", "deploy,svc,cm,hpa", "-n", namespace, "-l",
                        "app.kubernetes.io/instance=demo", "-o", "name").stdout  # fmt: skip
    assert left.strip() == ""


def test_server_side_dry_run_rejects_what_only_the_server_checks(
    kube: Kube, namespace: str
) -> None:
    # The values schema allows any string, the API server does not: names are DNS labels.
    manifests = _render(kube, namespace, "--set-string", "nameOverride=Not_A_DNS_Name")
    result = kube.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=manifests, check=False
    )
    assert result.returncode != 0
    assert "Not_A_DNS_Name" in result.stderr and "RFC 1123" in result.stderr, result.stderr


def test_helm_install_and_uninstall(kube: Kube, namespace: str) -> None:
    kube.helm(
        "install", "demo", str(CHART), "--namespace", namespace,
        "--wait", "--timeout", "120s", "--set", "autoscaling.enabled=false,replicaCount=2",
    )  # fmt: skip
    deployment = kube.get("deployment", "demo", "-n", namespace)
    assert deployment["status"].get("readyReplicas") == 2, deployment["status"]
    status = kube.helm("status", "demo", "--namespace", namespace).stdout
    assert "STATUS: deployed" in status, status
    kube.helm("uninstall", "demo", "--namespace", namespace, "--wait", "--timeout", "120s")
    gone = kube.kubectl("get", "deployment", "demo", "-n", namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
