"""The images as `make images` builds them, run in the local container engine.

First the content digest by which unchanged builds are skipped (no engine needed). Then the
module fixture runs the same code as `make images` (tests/e2e/cluster/images.py): it starts
the project's engine (even where a Docker daemon of the user's answers: the images must reach
the node's containerd), builds what changed (an unchanged tree builds nothing) and imports
the images into containerd. Each image then runs as it would in a pod: as its numeric
non-root user, with a read-only root filesystem and tmpfs only where the Dockerfile declares
a volume, with no network. The sizes are written to bench/results/images.json.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HELPERS = REPO / "tests" / "e2e" / "cluster"


def _helper(name: str) -> ModuleType:
    """tests/e2e/cluster/<name>.py, loaded by path under the name the e2e suite gives it."""
    module_name = f"voicetyped_e2e_cluster_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, HELPERS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


if TYPE_CHECKING:
    from tests.e2e.cluster import engine, images
else:
    engine = _helper("engine")
    images = _helper("images")

# A cold build (base from Debian packages, five images) takes minutes, not the default 300 s.
pytestmark = [pytest.mark.images, pytest.mark.timeout(3600)]

# The project's distributions in each image: its own and the libraries it needs, never the
# dev tools, the test kit or another service. The example backend ships none.
SHIPS = {
    "media": {"voicetyped-media", "voicetyped-common"},
    "speech": {"voicetyped-speech", "voicetyped-common"},
    "runtime": {"voicetyped-runtime", "voicetyped-common", "voicetyped-specs"},
    "integration": {"voicetyped-integration", "voicetyped-common", "voicetyped-specs"},
    "operator": {"voicetyped-operator", "voicetyped-common", "voicetyped-specs"},
    "example-backend": set(),
}
SERVICES = ["media", "speech", "runtime", "integration"]  # the operator needs an API server
DEV_TOOLS = {"pytest", "mypy", "ruff", "hypothesis", "voicetyped-dev", "voicetyped-testkit"}
UID = "10001"
RESULTS = REPO / "bench" / "results" / "images.json"


class Built:
    def __init__(self, eng: engine.Engine, results: list[images.Built]) -> None:
        self.engine = eng
        self.by_name = {r.name: r for r in results}

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [engine.docker_cli(), *args],
            env=self.engine.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def config(self, name: str) -> dict[str, Any]:
        inspected = self.docker("image", "inspect", self.by_name[name].image)
        assert inspected.returncode == 0, inspected.stderr
        config: dict[str, Any] = json.loads(inspected.stdout)[0]["Config"]
        return config


# --------------------------------------------------------------------- the content digest


def test_dockerignore_patterns_follow_docker() -> None:
    rules = [(False, images._ignore_regex(p)) for p in ("**/__pycache__", "images/*/tests")]
    rules.append((True, images._ignore_regex("images/media/tests/keep.py")))
    assert images.ignored("common/src/voicetyped/__pycache__/x.pyc", rules)
    assert images.ignored("__pycache__/x.pyc", rules)
    assert images.ignored("images/speech/tests/test_x.py", rules)
    assert not images.ignored("images/media/tests/keep.py", rules)  # an exception (!)
    assert not images.ignored("images/speech/src/voicetyped_speech/tests.py", rules)
    assert not images.ignored("images/speech/src/x.py", rules)


def test_the_repository_images_digest_their_sources_not_their_tests() -> None:
    media = next(i for i in images.images() if i.name == "media")
    files = images.context_files(media.dockerfile)
    assert {"uv.lock", "pyproject.toml", "images/speech/pyproject.toml"} <= set(files)
    assert any(f.startswith("images/media/src/voicetyped_media/") for f in files)
    assert any(f.startswith("common/src/voicetyped/") for f in files)
    assert not [f for f in files if "/tests/" in f or "__pycache__" in f]
    assert not [
        f
        for f in files
        if f.startswith(("images/speech/", "specs/src", "dev/src"))
        and not f.endswith("/pyproject.toml")
    ]


def test_digest_changes_with_what_the_build_copies_only(tmp_path: Path) -> None:
    (tmp_path / "app" / "src").mkdir(parents=True)
    (tmp_path / "app" / "tests").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / ".dockerignore").write_text("app/tests\n")
    dockerfile = tmp_path / "app" / "Dockerfile"
    dockerfile.write_text(
        "ARG BASE=x\nFROM ${BASE} AS build\nCOPY app app\nCOPY --from=build /a /a\n"
    )
    source = tmp_path / "app" / "src" / "main.py"
    source.write_text("print('hi')\n")
    (tmp_path / "app" / "tests" / "test_main.py").write_text("x = 1\n")
    (tmp_path / "other" / "unrelated.py").write_text("y = 1\n")
    image = images.Image("app", dockerfile)

    def digest(base_id: str = "sha256:1", base: str = "x") -> str:
        return images.content_digest(image, base_id, {"BASE": base}, context=tmp_path)

    first = digest()
    assert images.context_files(dockerfile, tmp_path) == ["app/Dockerfile", "app/src/main.py"]
    (tmp_path / "app" / "tests" / "test_main.py").write_text("x = 2\n")
    (tmp_path / "other" / "unrelated.py").write_text("y = 2\n")
    assert digest() == first  # neither is in the build context the Dockerfile uses
    source.write_text("print('hello')\n")
    second = digest()
    assert second != first
    source.chmod(0o755)
    assert digest() != second  # the mode is part of what is copied
    assert digest(base_id="sha256:2") != digest()
    assert digest(base="y") != digest()


# --------------------------------------------------------------------- the built images


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    was_up = all(engine.running().values())
    # The project's engine even where a Docker daemon of the user's answers: the images must
    # reach the local node's containerd.
    eng, results = images.make_images(own=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record = {
        r.image: {"id": r.id, "size_bytes": r.size, "size_mb": round(r.size / 1e6, 1)}
        for r in results
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print("\n" + images.report(results))
    yield Built(eng, results)
    if eng.own and not was_up:
        engine.down()


def test_every_dockerfile_is_built_and_in_containerd(built: Built) -> None:
    assert set(built.by_name) == {*SHIPS, "redis"}  # Redis: tests/e2e tests it on the node
    assert built.engine.own
    in_containerd = engine.containerd_image_ids()
    for result in built.by_name.values():
        assert in_containerd.get(engine.containerd_ref(result.image)) == result.id, result.image
    assert engine.PAUSE_IMAGE in in_containerd


@pytest.mark.parametrize("name", list(SHIPS))
def test_runs_as_its_non_root_user(built: Built, name: str) -> None:
    assert built.config(name)["User"] == f"{UID}:{UID}"
    ran = built.docker(
        "run", "--rm", "--network", "none", "--read-only",
        "--entrypoint", "python3", built.by_name[name].image,
        "-c", "import os; print(os.getuid(), os.getgid())",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == [UID, UID]


@pytest.mark.parametrize("name", list(SHIPS))
def test_help_answers(built: Built, name: str) -> None:
    ran = built.docker("run", "--rm", "--network", "none", "--read-only",
                       built.by_name[name].image, "--help")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("usage:" if name != "operator" else "voicetyped-operator:")
    assert f"voicetyped-{name}" in ran.stdout or name == "example-backend"


@pytest.mark.parametrize("name", list(SHIPS))
def test_holds_only_its_own_distributions(built: Built, name: str) -> None:
    listing = (
        "import importlib.metadata as m, json; "
        "print(json.dumps(sorted({d.metadata['Name'].lower() for d in m.distributions()})))"
    )
    ran = built.docker("run", "--rm", "--network", "none", "--read-only",
                       "--entrypoint", "python3", built.by_name[name].image,
                       "-c", listing)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    installed = set(json.loads(ran.stdout))
    assert {d for d in installed if d.startswith("voicetyped-")} == SHIPS[name]
    assert not installed & DEV_TOOLS
    if name == "example-backend":
        assert "aiohttp" in installed


@pytest.mark.parametrize("name", SERVICES)
def test_serves_its_health_probe_on_a_read_only_root(built: Built, name: str) -> None:
    config = built.config(name)
    volumes = sorted(config["Volumes"] or {})
    assert volumes == ["/tmp", "/var/lib/voicetyped"]
    # Only the declared volumes are writable, as tmpfs (the pod's emptyDirs), owned by the
    # image's user where the service keeps its data.
    tmpfs = [
        "--tmpfs", "/tmp",
        "--tmpfs", f"/var/lib/voicetyped:uid={UID},gid={UID},mode=0750",
    ]  # fmt: skip
    container = f"voicetyped-image-test-{name}-{uuid.uuid4().hex[:6]}"
    started = built.docker("run", "--detach", "--name", container, "--network", "none",
                           "--read-only", *tmpfs, built.by_name[name].image)  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        # The image's own HEALTHCHECK command, run inside the container until it passes
        # (within the start period the Dockerfile allows).
        probe = config["Healthcheck"]["Test"]
        assert probe[0] == "CMD" and "/healthz" in probe[-1]
        deadline = time.monotonic() + config["Healthcheck"]["StartPeriod"] / 1e9
        while True:
            checked = built.docker("exec", container, *probe[1:], timeout=30)
            if checked.returncode == 0:
                break
            state = built.docker("inspect", "--format", "{{.State.Status}}", container)
            logs = built.docker("logs", "--tail", "20", container)
            assert state.stdout.strip() == "running", logs.stdout + logs.stderr
            assert time.monotonic() < deadline, checked.stderr + logs.stdout + logs.stderr
            time.sleep(0.5)
        write = built.docker("exec", container, "/opt/voicetyped/bin/python", "-c",
                             "open('/opt/voicetyped/written', 'w')")  # fmt: skip
        assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
        # SIGTERM (as the kubelet sends it): the service drains and exits 0.
        stopped = built.docker("stop", "--time", "20", container, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        code = built.docker("inspect", "--format", "{{.State.ExitCode}}", container)
        logs = built.docker("logs", "--tail", "5", container)
        assert code.stdout.strip() == "0", logs.stdout + logs.stderr
    finally:
        built.docker("rm", "--force", "--volumes", container)


@pytest.mark.parametrize("name", list(SHIPS))
def test_the_build_ca_bundle_is_in_no_layer(built: Built, name: str) -> None:
    """The machine's CA bundle reaches the build as a secret only: no file of the image has
    its content (files of its size are hashed), and nothing is left in /run/secrets (where a
    single-stage build leaves the empty mount point)."""
    bundle = images.CA_BUNDLE
    if not bundle.exists():
        pytest.fail(f"{bundle} is missing: the builds had no CA bundle to leak, nothing to check")
    search = (
        "import hashlib, os, sys\n"
        "size, digest = int(sys.argv[1]), sys.argv[2]\n"
        "for root, dirs, files in os.walk('/'):\n"
        "    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ('/proc', '/sys')]\n"
        "    for f in files:\n"
        "        p = os.path.join(root, f)\n"
        "        if not os.path.islink(p) and os.path.getsize(p) == size:\n"
        "            with open(p, 'rb') as fh:\n"
        "                if hashlib.sha256(fh.read()).hexdigest() == digest:\n"
        "                    print(p)\n"
        "left = os.listdir('/run/secrets') if os.path.isdir('/run/secrets') else []\n"
        "print(*left) if left else print('clean')\n"
    )
    data = bundle.read_bytes()
    ran = built.docker("run", "--rm", "--network", "none", "--read-only",
                       "--entrypoint", "python3", built.by_name[name].image, "-c", search,
                       str(len(data)), hashlib.sha256(data).hexdigest())  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["clean"]


def test_a_rebuild_leaves_no_replaced_image_behind(built: Built, tmp_path: Path) -> None:
    """The image a rebuild replaces (untagged, our content label) is removed, so a cache kept
    between runs does not grow by a full image set per source change; another untagged image
    on the same daemon stays."""

    def build(tag: str, label: str, value: str) -> str:
        # A one-file image from nothing (any base of ours already carries the content label).
        (tmp_path / "value").write_text(value)
        with tarfile.open(tmp_path / "rootfs.tar", "w") as rootfs:
            rootfs.add(tmp_path / "value", arcname="value")
        ran = built.docker(
            "import", "--change", f"LABEL {label}={value}", str(tmp_path / "rootfs.tar"), tag
        )
        assert ran.returncode == 0, ran.stderr
        return ran.stdout.strip()

    ours, theirs = f"voicetyped.test/replaced:{uuid.uuid4().hex[:8]}", "voicetyped.test/theirs:1"
    replaced = build(ours, images.CONTENT_LABEL, "first")
    current = build(ours, images.CONTENT_LABEL, "second")
    unrelated = build(theirs, "org.example.other", "first")
    build(theirs, "org.example.other", "second")
    try:
        images.prune_replaced(built.engine)
        left = built.docker("images", "--all", "--quiet", "--no-trunc").stdout.split()
        assert replaced not in left
        assert current in left
        assert unrelated in left
    finally:
        built.docker("rmi", "--force", ours, theirs, unrelated)
