"""The operator's Helm chart on the real API server.

``helm lint --strict`` with the values schema; the rendered chart (cluster-wide and
namespaced) admitted by ``kubectl apply --dry-run=server``; and the chart's RBAC proven
sufficient *and* narrow: the chart is installed, the operator process runs with a token of
the chart's ServiceAccount (not the admin certificate), and the order-status example still
becomes Ready; the same identity may not list Secrets, delete CRDs or touch Pods.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:
    from tests.e2e.kube import Kube

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parents[2] / "charts" / "voicetyped-operator"
RELEASE = "vt"


s = sys.modules["voicetyped_e2e_operator_support"]  # conftest.py loads it, with its fixtures


def test_chart_lints_and_its_values_are_checked(kube: Kube) -> None:
    result = kube.helm("lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout
    for bad in ("operator.logLevel=loud", "operator.livenessPort=0", "rbac.create=maybe"):
        refused = kube.helm("lint", "--strict", str(CHART), "--set", bad, check=False)
        key = bad.split("=")[0].split(".")[-1]
        assert refused.returncode != 0 and key in refused.stdout + refused.stderr, (bad, refused)


@pytest.mark.parametrize(
    "values", [(), ("--set", "watchNamespaces={team-a,team-b},rbac.secretNames={shop-api}")]
)
def test_rendered_chart_is_admitted_by_the_server(
    kube: Kube, namespace: str, voicetyped_crds: list[str], values: tuple[str, ...]
) -> None:
    manifests = kube.helm(
        "template", RELEASE, str(CHART), "--namespace", namespace, "--include-crds", *values
    ).stdout
    docs = [d for d in yaml.safe_load_all(manifests) if d]
    kinds = sorted({d["kind"] for d in docs})
    scoped = bool(values)
    expected = {"CustomResourceDefinition", "Deployment", "ServiceAccount"}
    expected |= {"Role", "RoleBinding"} if scoped else {"ClusterRole", "ClusterRoleBinding"}
    assert set(kinds) == expected, kinds
    if scoped:
        # One Role per watched namespace, nothing cluster-wide; Secrets only by name.
        roles = [d for d in docs if d["kind"] == "Role"]
        assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
        secret_rules = [r for r in roles[0]["rules"] if "secrets" in r["resources"]]
        assert secret_rules == [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
             "resourceNames": ["shop-api"]}
        ]  # fmt: skip
        # The Roles live in namespaces that do not exist here: admit the rest.
        docs = [d for d in docs if d["kind"] not in ("Role", "RoleBinding")]
    result = kube.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-",
        stdin="\n---\n".join(yaml.safe_dump(d) for d in docs),
    )  # fmt: skip
    assert result.stdout.count("(server dry run)") == len(docs), result.stdout
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.fixture
def installed(kube: Kube, namespace: str, voicetyped_crds: list[str]) -> Iterator[str]:
    """The chart installed into ``namespace`` (CRDs come from the module fixture)."""
    kube.helm("install", RELEASE, str(CHART), "--namespace", namespace, "--skip-crds")
    yield f"system:serviceaccount:{namespace}:{RELEASE}-voicetyped-operator"
    kube.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "60s")


def _token_kubeconfig(kube: Kube, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as ``account`` with a TokenRequest token."""
    token = kube.kubectl(
        "create", "token", account, "-n", namespace, "--duration=1h"
    ).stdout.strip()
    view = json.loads(
        kube.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout
    )
    cluster = view["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "e2e", "user": account}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _can(kube: Kube, user: str, *what: str) -> bool:
    answer = kube.kubectl("auth", "can-i", *what, f"--as={user}", check=False)
    return answer.stdout.strip() == "yes"


def test_the_charts_rbac_runs_the_operator_and_no_more(
    kube: Kube, namespace: str, installed: str, tmp_path: Path
) -> None:
    user = installed
    account = user.rsplit(":", 1)[1]
    # Narrow: what the operator never needs.
    for what in (
        ("list", "secrets", "-A"),
        ("watch", "secrets", "-A"),
        ("create", "secrets", "-n", "default"),
        ("delete", "customresourcedefinitions"),
        ("create", "pods", "-n", "default"),
        ("delete", "voicedeployments.voicetyped.io", "-n", "default"),
        ("update", "nodes"),
    ):
        assert not _can(kube, user, *what), what
    for what in (
        ("get", "secrets", "-n", "default"),
        ("patch", "voicedeployments.voicetyped.io/status", "-n", "default"),
        ("create", "deployments.apps", "-n", "default"),
    ):
        assert _can(kube, user, *what), what

    # Sufficient: the operator, as that ServiceAccount, reconciles the example to Ready.
    config = _token_kubeconfig(kube, namespace, account, tmp_path / "operator.kubeconfig")
    app = f"{namespace}-app"[:63]
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": app}})
    proc = s.start_operator(kube, tmp_path / "operator.log", KUBECONFIG=str(config))
    try:
        s.wait_for(
            f"the default ServiceAccount in {app}",
            lambda: kube.kubectl("get", "sa", "default", "-n", app, check=False).returncode == 0,
        )
        kube.kubectl("apply", "-n", app, "-f", str(s.EXAMPLE_DIR))
        waited = kube.kubectl(
            "wait", "--for=condition=Ready", "voicedeployment/order-status", "-n", app,
            "--timeout=120s", check=False,
        )  # fmt: skip
        assert "condition met" in waited.stdout, (waited.stdout, waited.stderr, proc.tail())
        forbidden = [line for line in proc.tail(400).splitlines() if "forbidden" in line.lower()]
        assert forbidden == [], forbidden
        assert proc.alive(), proc.tail()
    finally:
        kube.kubectl("delete", "namespace", app, "--wait=false", check=False)
        code = proc.stop()
    proc.assert_clean_exit(code)
