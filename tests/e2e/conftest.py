"""Fixtures of the e2e suite: a real Kubernetes API server, never a mock.

* ``kube`` (session): kubectl/helm for the cluster in ``$KUBECONFIG`` when it is set
  (a kind cluster, say; one whose API server is not on this machine only with
  ``VOICETYPED_E2E_ALLOW_REMOTE=1``), else for the local control plane of tests/e2e/cluster
  (``make e2e`` starts it; when it is not up and its binaries are built, this
  fixture starts it and stops it again at the end of the session);
* ``cluster_info`` (session): the nodes, and whether pods really run (kind) or are
  simulated by KWOK (node annotation ``kwok.x-k8s.io/node=fake``);
* ``live_cluster``: skips the test where no kubelet runs containers (KWOK); such
  tests exist for kind (``make kind-e2e``);
* ``gpu_nodes``: the nodes advertising ``nvidia.com/gpu``; skips where there are none;
* ``namespace``: a fresh namespace per test, deleted afterwards (the session checks at
  its end that every one of them is gone);
* ``api``: an httpx client for the API server, authenticated from the kubeconfig.

tests/ is no package and pytest's importlib mode puts nothing on sys.path, so
the helpers (kube.py, cluster/cluster.py) are loaded by path; test modules get
their types with ``if TYPE_CHECKING: from tests.e2e.kube import Kube``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import os
import re
import shutil
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from tests.e2e.kube import ClusterInfo, Kube

HERE = Path(__file__).resolve().parent
SESSION = uuid.uuid4().hex[:6]
SESSION_LABEL = "voicetyped.io/e2e-session"


def load_helper(relpath: str) -> ModuleType:
    """Load ``<relpath>.py`` below this directory once (as ``voicetyped_e2e_<name>``)."""
    module_name = "voicetyped_e2e_" + relpath.replace("/", "_")
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / f"{relpath}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


# The operator's fixtures (module scope: each test module gets its own CRDs and operator)
# and helpers; the test_operator*.py modules use the helpers as sys.modules[...] entries.
load_helper("kube")  # operator_support takes its helpers from it
_operator_support = load_helper("operator_support")
voicetyped_crds = _operator_support.voicetyped_crds
operator = _operator_support.operator


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """kubectl and helm against the cluster under test (see the module docstring)."""
    cluster = load_helper("cluster/cluster")
    kube_mod = load_helper("kube")
    external = os.environ.get("KUBECONFIG", "")
    started_here = False
    if external:
        kubeconfig = external
    else:
        if cluster.is_up() is None:
            if cluster.bin_dir_if_built() is None:
                pytest.fail(
                    "no KUBECONFIG and the local control plane is not built: run `make e2e` "
                    "(or `make cluster-up` first; the first build compiles Kubernetes, which "
                    "takes a long while)",
                    pytrace=False,
                )
            cluster.up()
            started_here = True
        kubeconfig = str(cluster.kubeconfig_path())

    bin_dir = cluster.bin_dir_if_built()
    tools: dict[str, str] = {}
    for tool in ("kubectl", "helm"):
        # The cached build matches the server's version; a kind user may bring their own.
        built = bin_dir / tool if bin_dir is not None else None
        found = str(built) if built is not None and built.exists() else shutil.which(tool)
        if found is None:
            pytest.fail(f"no {tool}: run `make cluster-build` (it builds kubectl and helm)")
        tools[tool] = found
    # `make e2e` and `eval "$(make cluster-env)"` set KUBECONFIG to the local cluster's.
    local_config = cluster.kubeconfig_path().resolve()
    made: Kube = kube_mod.Kube(
        kubeconfig=kubeconfig,
        kubectl_bin=tools["kubectl"],
        helm_bin=tools["helm"],
        local=not external or Path(external).resolve() == local_config,
        workdir=tmp_path_factory.mktemp("kube"),
    )
    if not made.local:
        _refuse_remote(made)
    yield made
    # Every test's namespace was deleted by its ``namespace`` fixture; see they are gone.
    mine = ("namespaces", "-l", f"{SESSION_LABEL}={SESSION}", "-o", "name")
    leftovers: list[str] = []

    def all_gone() -> bool:
        leftovers[:] = made.kubectl("get", *mine, check=False).stdout.split()
        return not leftovers

    with contextlib.suppress(AssertionError):
        kube_mod.wait_until("the test namespaces to be deleted", all_gone, 120)
    if leftovers:
        for ns in leftovers:
            made.kubectl("delete", ns, "--wait=false", check=False)
    if started_here and os.environ.get("VOICETYPED_KEEP_CLUSTER") != "1":
        cluster.down()
    assert not leftovers, f"namespaces still there 2 minutes after the tests: {leftovers}"


def _refuse_remote(kube: Kube) -> None:
    """A KUBECONFIG left pointing at a real cluster must not get the test suite by accident."""
    server = kube.kubectl(
        "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
    ).stdout.strip()
    host = urllib.parse.urlsplit(server).hostname or ""
    loopback = host == "localhost" or _is_loopback(host)
    if not loopback and os.environ.get("VOICETYPED_E2E_ALLOW_REMOTE") != "1":
        pytest.fail(
            f"KUBECONFIG points at {server}, which is not on this machine: the e2e suite "
            "creates and deletes namespaces and CRDs there. Unset KUBECONFIG to use the local "
            "control plane, or set VOICETYPED_E2E_ALLOW_REMOTE=1 if that cluster is for tests.",
            pytrace=False,
        )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(scope="session")
def cluster_info(kube: Kube) -> ClusterInfo:
    info: ClusterInfo = load_helper("kube").ClusterInfo(kube.items("nodes"))
    return info


@pytest.fixture(scope="session")
def live_cluster(cluster_info: ClusterInfo) -> ClusterInfo:
    """Only where containers really run: KWOK nodes merely mark pods Running."""
    if cluster_info.simulated and os.environ.get("VOICETYPED_REAL_NODE") == "1":
        pytest.fail(
            "VOICETYPED_REAL_NODE=1 but every node is a KWOK fake: the cluster was started "
            "without its real node (make cluster-down, then make cluster-up as root)"
        )
    if cluster_info.simulated:
        pytest.skip(
            "every node is a KWOK fake (annotation kwok.x-k8s.io/node=fake): no kubelet runs "
            "containers here, so live traffic cannot be tested; this test runs on kind "
            "(make kind-e2e)"
        )
    return cluster_info


@pytest.fixture(scope="session")
def gpu_nodes(cluster_info: ClusterInfo) -> list[str]:
    nodes = cluster_info.gpu_nodes
    if not nodes:
        pytest.skip(
            "no node advertises nvidia.com/gpu (a plain kind cluster has none; the local "
            "control plane has a fake GPU pool)"
        )
    return nodes


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace for this test only; deleted when the test ends."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")
    stem = stem.removeprefix("test-")[:40].strip("-")
    name = f"e2e-{stem}-{uuid.uuid4().hex[:5]}"
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {SESSION_LABEL: SESSION}},
        }
    )
    # Pods are refused until the controller-manager has made the default ServiceAccount.
    load_helper("kube").wait_until(
        f"the default ServiceAccount in {name}",
        lambda: (
            kube.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode
            == 0
        ),
        timeout_s=60,
    )
    yield name
    # Deleting takes the namespace controller a few seconds; the session waits for all of
    # them at its end (see ``kube``) instead of each test waiting in turn.
    kube.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="session")
def api(kube: Kube) -> Iterator[httpx.Client]:
    with kube.http_client() as client:
        yield client
