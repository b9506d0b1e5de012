"""The example backend as a pod (examples/order-status/backend.yaml, examples/backend/Dockerfile):
the Deployment and Service are what the Integration ``shop`` calls with the Secret it sends,
the container's command line really serves the probes and the API, and the image installs
the versions the repository's lock holds."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from voicetyped_testkit.processes import free_port

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "order-status"
DOCKERFILE = REPO / "examples" / "backend" / "Dockerfile"
SCRIPT = REPO / "examples" / "backend" / "example_backend.py"


def _objects() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((EXAMPLE / "backend.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLE / f"{name}.yaml").read_text())
    return loaded


def _container() -> dict[str, Any]:
    (container,) = _objects()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (op.upper(), rest.strip())
        for op, _, rest in (line.partition(" ") for line in lines)
        if op and not op.startswith("#")
    ]


def test_the_backend_is_what_the_integration_calls() -> None:
    objects = _objects()
    assert set(objects) == {"Deployment", "Service"}
    deployment, service = objects["Deployment"], objects["Service"]
    integration = _load("integration")["spec"]
    secret = _load("secret")
    url = urlsplit(integration["baseURL"])
    assert url.hostname == service["metadata"]["name"] == deployment["metadata"]["name"]
    (port,) = service["spec"]["ports"]
    assert port["port"] == url.port
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    container = _container()
    (http,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    assert str(http["containerPort"]) == _option(container["args"], "--port")
    # The key file is the Secret the integration gateway sends, mounted where --api-key-file is.
    ref = integration["auth"]["secretRef"]
    assert secret["metadata"]["name"] == ref["name"] and ref["key"] in secret["stringData"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    key_file = Path(_option(container["args"], "--api-key-file"))
    (mount,) = [m for m in container["volumeMounts"] if key_file.parent == Path(m["mountPath"])]
    source = volumes[mount["name"]]["secret"]
    assert source["secretName"] == ref["name"]
    assert {"key": ref["key"], "path": key_file.name} in source["items"]


def test_the_pod_is_locked_down_and_tagged_like_the_chart() -> None:
    deployment = _objects()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = _container()
    assert deployment["spec"]["replicas"] == 1
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["automountServiceAccountToken"] is False
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Like the services' default images: voicetyped/<name>:<the chart's appVersion>.
    chart = yaml.safe_load((REPO / "charts" / "voicetyped-operator" / "Chart.yaml").read_text())
    assert container["image"] == f"voicetyped/example-backend:{chart['appVersion']}"
    # The image's own default command line is the pod's (docker run gets the same backend).
    (cmd,) = [json.loads(rest) for op, rest in _instructions() if op == "CMD"]
    assert cmd == container["args"]
    (user,) = [rest for op, rest in _instructions() if op == "USER"]
    assert user == "10001:10001" == "{runAsUser}:{runAsGroup}".format(**pod["securityContext"])


def test_the_image_installs_the_locked_versions() -> None:
    """aiohttp and everything it needs, at uv.lock's versions (the RUN uses --no-deps)."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    packages = {p["name"]: p for p in lock["package"]}
    wanted: dict[str, str] = {}
    todo = ["aiohttp"]
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted[name] = packages[name]["version"]
            todo += [d["name"] for d in packages[name].get("dependencies", [])]
    (run,) = [rest for op, rest in _instructions() if op == "RUN" and "pip install" in rest]
    pinned = dict(re.findall(r"([A-Za-z0-9_.-]+)==(\S+)", run))
    assert "--no-deps" in run.split()
    assert pinned == wanted


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The script run with the pod's arguments; only the address and the key file differ."""
    key = "k-" + tmp_path.name
    (tmp_path / "api-key").write_text(key + "\n")  # as a Secret file may end
    port = free_port()
    args = list(_container()["args"])
    for name, value in (
        ("--host", "127.0.0.1"),
        ("--port", str(port)),
        ("--api-key-file", str(tmp_path / "api-key")),
    ):
        args[args.index(name) + 1] = value
    with (tmp_path / "backend.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=log, stderr=log)
    try:
        yield f"http://127.0.0.1:{port}", key
    finally:
        proc.terminate()
        proc.wait(10)


def _get(url: str, key: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_pod_command_serves_the_probe_and_the_api(backend: tuple[str, str]) -> None:
    base, key = backend
    deadline = time.monotonic() + 30
    while True:
        try:
            status, body = _get(f"{base}/healthz")  # the probes send no key
            break
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, "the backend did not answer within 30 s"
            time.sleep(0.2)
    assert (status, body) == (200, {"status": "ok"})
    path = urlsplit(_load("integration")["spec"]["baseURL"]).path
    assert _get(f"{base}{path}/orders/48213")[0] == 401
    status, order = _get(f"{base}{path}/orders/48213", key)
    assert status == 200 and order["status"] == "shipped"
