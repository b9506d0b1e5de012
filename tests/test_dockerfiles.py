"""The service Dockerfiles: run as non-root, and their install step really works.

The build stage is replayed on the host (the Dockerfile's COPY instructions into a scratch
context, then its `uv sync`): seconds, where tests/images builds the images for real.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from voicetyped_dev import dockerfiles
from voicetyped_dev.up import cache_dir

REPO = Path(__file__).resolve().parents[1]
SERVICES = ["media", "speech", "runtime", "integration"]
# Services that load documents (dialogs, integrations) with the specs.
SPECS_USERS = {"runtime": {"voicetyped_specs"}, "integration": {"voicetyped_specs"}}


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            result.append((op.upper(), rest.strip()))
    return result


def _stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for op, rest in _instructions(dockerfile):
        if op == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((op, rest))
    return stages


@pytest.mark.parametrize("service", SERVICES)
def test_final_image_runs_the_service_as_non_root(service: str) -> None:
    final = _stages(REPO / "images" / service / "Dockerfile")[-1]
    users = [rest for op, rest in final if op == "USER"]
    assert users, "final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "USER must be numeric so runAsNonRoot can verify it"
    assert int(uid) != 0
    entrypoint = [rest for op, rest in final if op == "ENTRYPOINT"]
    assert entrypoint == [f'["voicetyped-{service}"]']


def _replay(dockerfile: Path, tmp_path: Path) -> tuple[Path, list[list[str]], int]:
    """Replay the build stage on the host: COPY into a scratch context, then its uv sync."""
    # make puts its uv on PATH; a plain `.venv/bin/pytest` finds it where make installed it.
    made = sorted(cache_dir().glob("tools/uv-*/bin/uv"))
    uv = shutil.which("uv") or (str(made[-1]) if made else None)
    if uv is None:
        pytest.fail("no uv on PATH nor in $VOICETYPED_CACHE/tools: run `make install`")
    build = _stages(dockerfile)[0]
    context = tmp_path / "src"
    context.mkdir()
    env_dir = tmp_path / "venv"
    syncs = 0
    build_env = dict(os.environ)
    replayed: list[list[str]] = []
    for op, rest in build:
        if op == "COPY":
            *sources, dest = shlex.split(rest)
            target = context / dest
            for src in sources:
                origin = REPO / src
                to = target / origin.name if dest.endswith("/") or len(sources) > 1 else target
                to.parent.mkdir(parents=True, exist_ok=True)
                if origin.is_dir():
                    shutil.copytree(
                        origin,
                        to,
                        dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "tests"),
                    )
                else:
                    shutil.copy2(origin, to)
        elif op == "RUN" and _command(rest).startswith("uv sync"):
            syncs += 1
            env = {
                **os.environ,
                "UV_PROJECT_ENVIRONMENT": str(env_dir),
                "UV_PYTHON_DOWNLOADS": "never",
                "UV_COMPILE_BYTECODE": "0",
            }
            subprocess.run(
                [uv, *shlex.split(_command(rest))[1:]],
                cwd=context,
                env=env,
                check=True,
                capture_output=True,
            )
        elif op == "RUN" and rest.startswith("/opt/voicetyped/bin/"):
            # A build step with the installed tools (speech: prepare the models, then drop
            # what they no longer need), as the image's shell runs it.
            script = rest.replace("/opt/voicetyped", str(env_dir))
            subprocess.run(
                ["sh", "-c", script], cwd=context, env=build_env, check=True, capture_output=True
            )
            replayed.append(shlex.split(script.split(" && ")[0]))
        elif op == "ENV":
            build_env.update(_env_pairs(rest))
    return env_dir, replayed, syncs


@pytest.mark.parametrize("service", SERVICES)
def test_build_stage_installs_only_this_service(service: str, tmp_path: Path) -> None:
    env_dir, replayed, syncs = _replay(REPO / "images" / service / "Dockerfile", tmp_path)
    assert syncs == 1
    assert (env_dir / "bin" / f"voicetyped-{service}").exists()
    installed = _installed(env_dir)
    others = {f"voicetyped_{s}" for s in SERVICES if s != service}
    assert f"voicetyped_{service}" in installed
    assert "voicetyped_common" in installed
    assert not installed & others, f"image would ship other services: {installed & others}"
    # Exactly the workspace members this service needs: never the dev tools or the test kit.
    ours = {name for name in installed if name.startswith("voicetyped_")}
    assert ours == {"voicetyped_common", f"voicetyped_{service}"} | SPECS_USERS.get(service, set())
    assert not installed & {"pytest", "mypy", "ruff", "hypothesis"}, "dev tools in the image"
    result = subprocess.run(
        [env_dir / "bin" / f"voicetyped-{service}", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert f"voicetyped-{service}" in result.stdout
    if service == "speech":  # models prepared at build time, where the image looks for them
        assert [c[1:3] for c in replayed] == [["models", "prepare"]]
        final_env = dict(
            pair
            for op, rest in _stages(REPO / "images" / service / "Dockerfile")[-1]
            if op == "ENV"
            for pair in _env_pairs(rest)
        )
        models = Path(
            final_env["VOICETYPED_ASR__MODELS_DIR"].replace("/opt/voicetyped", str(env_dir))
        )
        manifest = json.loads((models / "manifest.json").read_text())
        assert set(manifest["asr"]) == {"tiny.en", "base"}
        for asr in manifest["asr"].values():
            assert asr["verification"]["passed"] is True
            assert (models / asr["file"]).is_file()
        assert final_env["GGML_NO_BACKTRACE"] == "1" and final_env["HF_HUB_OFFLINE"] == "1"
    else:
        assert not replayed


def _command(run: str) -> str:
    """The command of a RUN instruction, without its BuildKit mounts and the CA preamble."""
    words = run.split(" ")
    while words and words[0].startswith("--mount="):
        words.pop(0)
    return " ".join(words).rpartition(" && ")[2].strip()


def _installed(env_dir: Path) -> set[str]:
    """The distributions installed in a replayed image environment (normalised names)."""
    return {
        p.name.split("-")[0] for p in (env_dir / "lib").glob("python3*/site-packages/*.dist-info")
    }


def _env_pairs(rest: str) -> list[tuple[str, str]]:
    """``ENV A=1 B=2`` as pairs."""
    return [tuple(p.split("=", 1)) for p in shlex.split(rest)]  # type: ignore[misc]


def test_operator_image(tmp_path: Path) -> None:
    """The operator image: non-root, the operator with the specs (the validators the services
    load their documents with) as a library, no service, no dev tools."""
    dockerfile = REPO / "operator" / "Dockerfile"
    final = _stages(dockerfile)[-1]
    users = [rest for op, rest in final if op == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) != 0
    assert [rest for op, rest in final if op == "ENTRYPOINT"] == ['["voicetyped-operator"]']
    assert any(op == "HEALTHCHECK" for op, _ in final)
    env_dir, replayed, syncs = _replay(dockerfile, tmp_path)
    assert syncs == 1 and not replayed
    installed = _installed(env_dir)
    assert {"voicetyped_operator", "voicetyped_specs"} <= installed
    assert not installed & {"voicetyped_media", "voicetyped_speech"}
    # common and the specs only: no service (their dependencies stay out), no dev tools.
    ours = {name for name in installed if name.startswith("voicetyped_")}
    assert ours == {"voicetyped_common", "voicetyped_specs", "voicetyped_operator"}
    assert not installed & {"pytest", "mypy", "ruff", "hypothesis", "lupa"}, (
        "dev tools in the image"
    )
    result = subprocess.run(
        [env_dir / "bin" / "voicetyped-operator", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "voicetyped-operator" in result.stdout


@pytest.mark.parametrize("service", SERVICES)
def test_service_images_have_a_healthcheck_and_a_writable_workdir(service: str) -> None:
    final = _stages(REPO / "images" / service / "Dockerfile")[-1]
    checks = [rest for op, rest in final if op == "HEALTHCHECK"]
    assert len(checks) == 1 and "/healthz" in checks[0]
    assert ("WORKDIR", "/var/lib/voicetyped") in final


def test_dockerfiles_are_generated_from_the_one_template(tmp_path: Path) -> None:
    assert dockerfiles.main(["--check"]) == 0, "run `make dockerfiles`"
    # Every member's metadata is copied (uv sync --locked reads them all), so a new member
    # reaches every image; each image copies its own directory and what it ships.
    members = dockerfiles.workspace_members()
    for image in dockerfiles.IMAGES:
        text = (REPO / image.directory / "Dockerfile").read_text()
        for member in members:
            if member != "common":
                assert f"COPY {member}/pyproject.toml {member}/\n" in text, (image.name, member)
        assert f"COPY {image.directory} {image.directory}\n" in text


@pytest.mark.parametrize("image", dockerfiles.IMAGES, ids=lambda i: i.name)
def test_dockerfiles_build_on_any_base_without_a_registry(image: dockerfiles.Image) -> None:
    """The base is a build argument (python:3.11-slim-bookworm by default) for both stages;
    no `# syntax=` line (the builder would fetch a frontend image); every step that reaches
    the package index takes the optional CA bundle secret, and uv keeps its downloads in a
    cache mount."""
    dockerfile = REPO / image.directory / "Dockerfile"
    assert "# syntax" not in dockerfile.read_text()
    instructions = _instructions(dockerfile)
    assert instructions[0] == ("ARG", "BASE=python:3.11-slim-bookworm")
    assert [rest for op, rest in instructions if op == "FROM"] == ["${BASE} AS build", "${BASE}"]
    network = [rest for op, rest in instructions if op == "RUN" and re.search(r"\b(pip|uv) ", rest)]
    assert [_command(rest).split()[:2] for rest in network] == [["pip", "install"], ["uv", "sync"]]
    for rest in network:
        assert rest.startswith("--mount=type=secret,id=ca-bundle "), rest
        assert 'export SSL_CERT_FILE="$ca" PIP_CERT="$ca"' in rest
    assert "--mount=type=cache,target=/root/.cache/uv" in network[1]
    build_env = dict(
        pair for op, rest in _stages(dockerfile)[0] if op == "ENV" for pair in _env_pairs(rest)
    )
    assert build_env["UV_CACHE_DIR"] == "/root/.cache/uv"
