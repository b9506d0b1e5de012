#!/usr/bin/env python3
"""``make images``: the images from the repository's Dockerfiles, cached by content.

    images.py [--tag dev] [--base IMAGE] [--no-import] [--own]

1. The engine: a Docker daemon that already answers is used; otherwise the project's own
   (engine.py: containerd + dockerd from Debian's packages) is started.
2. The base. ``--base`` (or ``$VOICETYPED_IMAGE_BASE``) when given; else, on a Docker
   daemon of the user's, the Dockerfiles' default ``python:3.11-slim-bookworm`` (pulled as
   users would); else, on the project's own engine (machines with no image registry), a base
   made from Debian's packages: ``debootstrap --variant=minbase bookworm`` with python3 and
   pip, imported as ``voicetyped.local/debian-python:bookworm`` and rebuilt only when its
   recipe (:data:`BASE_RECIPE`) changes. Debian bookworm's python3 is 3.11, the project's.
3. Each image ``voicetyped/<name>:<tag>`` (name from the Dockerfile's entrypoint
   ``voicetyped-<name>``; and :data:`SUPPORT_IMAGES`, the example shop backend and Redis
   for the local node) is built with ``DOCKER_BUILDKIT=1 docker
   build --network host --build-arg BASE=... --secret id=ca-bundle,src=<the machine's CA
   bundle>`` unless the image already carries the same content digest (label
   ``voicetyped.content``): the digest of exactly the files the Dockerfile's COPY
   instructions take from the context (less .dockerignore), the Dockerfile, the base
   image's ID and the build arguments. An unchanged tree builds nothing.
4. On the project's engine the images are imported into containerd's ``k8s.io`` namespace
   (for the local node; skipped when containerd already has the same image ID).

Build logs go to ``$VOICETYPED_CACHE/node/logs/build-<name>.log``. Only the Python
standard library is used (the node code, run with any python3, builds images with it).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def _sibling(name: str) -> ModuleType:
    """Load ``<name>.py`` beside this file once, by path (tests/ is no package), under the
    name tests/e2e/conftest.py's ``load_helper`` gives it."""
    module_name = f"voicetyped_e2e_cluster_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    from tests.e2e.cluster import engine
else:
    engine = _sibling("engine")

TAG = "dev"
DEFAULT_BASE = "python:3.11-slim-bookworm"
DEBIAN_BASE = "voicetyped.local/debian-python:bookworm"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CA_SECRET = "ca-bundle"
CONTENT_LABEL = engine.CONTENT_LABEL
DEFAULT_MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class BaseRecipe:
    """How the Debian-made base is made; its digest names the build (change it, and the base
    is made again)."""

    version: int
    """Bump when the steps of :func:`debian_base` change in a way the fields do not show."""
    suite: str
    variant: str
    include: tuple[str, ...]
    remove: tuple[str, ...]
    """Globs under the root filesystem, removed before the import."""
    changes: tuple[str, ...]
    """``docker import --change`` lines."""

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


# What the Dockerfiles need from a base, as python:3.11-slim-bookworm has it: python3 (3.11)
# and pip (they `pip install uv`), the CA certificates, netbase and tzdata; useradd and
# groupadd (passwd) are in minbase. pip may install into the system (the build stage installs
# uv with it), as on the python image; apt's downloads and lists, docs, man pages and
# translations are left out.
BASE_RECIPE = BaseRecipe(
    version=1,
    suite="bookworm",
    variant="minbase",
    include=("python3", "python3-pip", "python-is-python3", "ca-certificates", "netbase",
             "tzdata"),
    remove=("usr/lib/python3.11/EXTERNALLY-MANAGED", "var/cache/apt/archives/*.deb",
            "var/lib/apt/lists/*", "usr/share/doc/*", "usr/share/man/*", "usr/share/locale/*",
            "usr/share/info/*"),
    changes=("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "ENV LANG=C.UTF-8", 'CMD ["python3"]'),
)  # fmt: skip


class ImagesError(Exception):
    """Something the user has to act on; the message says what."""


def log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- Dockerfiles


@dataclass(frozen=True)
class Image:
    name: str
    dockerfile: Path
    repository: str = ""
    """Default ``voicetyped/<name>``."""
    tag: str | None = None
    """A fixed tag (one a manifest names), else ``make images``' tag."""

    def ref(self, tag: str = TAG) -> str:
        return f"{self.repository or 'voicetyped/' + self.name}:{self.tag or tag}"


# Images the examples and the local node run besides the five, under the names they use:
# the example shop backend (examples/order-status/backend.yaml) and Redis for the managed
# Redis on the real node (no registry to pull redis:7.4-alpine from).
SUPPORT_IMAGES = (
    Image("example-backend", REPO / "examples" / "backend" / "Dockerfile", tag="0.1.0"),
    Image("redis", REPO / "tests" / "e2e" / "images" / "redis" / "Dockerfile",
          repository="voicetyped.local/redis", tag="7"),
)  # fmt: skip


def dockerfiles(repo: Path = REPO) -> list[Path]:
    """The five Dockerfiles of the project's own images (voicetyped_dev.dockerfiles)."""
    return [*sorted(repo.glob("images/*/Dockerfile")), repo / "operator" / "Dockerfile"]


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            result.append((op.upper(), rest.strip()))
    return result


def images(repo: Path = REPO) -> list[Image]:
    """The five images (named by their entrypoint ``voicetyped-<name>``), then
    :data:`SUPPORT_IMAGES`."""
    found = []
    for dockerfile in dockerfiles(repo):
        entrypoints = [rest for op, rest in instructions(dockerfile) if op == "ENTRYPOINT"]
        match = re.fullmatch(r'\["voicetyped-([a-z]+)"(?:, .*)?\]', entrypoints[-1])
        if match is None:
            raise ImagesError(f"{dockerfile}: ENTRYPOINT is not voicetyped-<name>")
        found.append(Image(match.group(1), dockerfile))
    return [*found, *SUPPORT_IMAGES]


def default_base(dockerfile: Path) -> str:
    """The ``ARG BASE=`` default of a Dockerfile."""
    for op, rest in instructions(dockerfile):
        if op == "ARG" and rest.startswith("BASE="):
            return rest.removeprefix("BASE=")
    raise ImagesError(f"{dockerfile} has no ARG BASE=<default>")


def copy_sources(dockerfile: Path) -> list[str]:
    """What the Dockerfile's COPY/ADD instructions take from the build context."""
    sources = []
    for op, rest in instructions(dockerfile):
        if op not in ("COPY", "ADD"):
            continue
        words = shlex.split(rest)
        if any(w.startswith("--from=") for w in words):
            continue  # from another stage, not the context
        *src, _dest = [w for w in words if not w.startswith("--")]
        sources.extend(src)
    return sources


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regular expression."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def ignore_rules(context: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """The context's .dockerignore: (is an exception ``!``, pattern) in order."""
    path = context / ".dockerignore"
    rules = []
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
            rules.append((negate, _ignore_regex(pattern)))
    return rules


def ignored(rel: str, rules: Sequence[tuple[bool, re.Pattern[str]]]) -> bool:
    """docker's rule: a path is excluded when the last pattern matching it or one of its
    parent directories is not an exception."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


def context_files(dockerfile: Path, context: Path = REPO) -> list[str]:
    """Exactly the context files the build uses (relative paths, sorted)."""
    rules = ignore_rules(context)
    files: set[str] = set()
    for source in copy_sources(dockerfile):
        matches = sorted(context.glob(source)) if any(c in source for c in "*?[") else []
        for start in matches or [context / source]:
            if not start.exists():
                raise ImagesError(f"{dockerfile}: COPY source {source} does not exist")
            if start.is_dir() and not start.is_symlink():
                for root, dirs, names in os.walk(start):
                    base = Path(root).relative_to(context).as_posix()
                    dirs[:] = sorted(d for d in dirs if not ignored(f"{base}/{d}", rules))
                    files.update(f"{base}/{n}" for n in names if not ignored(f"{base}/{n}", rules))
            else:
                rel = start.relative_to(context).as_posix()
                if not ignored(rel, rules):
                    files.add(rel)
    return sorted(files)


def content_digest(
    image: Image, base_id: str, build_args: dict[str, str], context: Path = REPO
) -> str:
    """sha256 of the Dockerfile, each context file it uses (path, mode, content), the base
    image's ID and the build arguments."""
    digest = hashlib.sha256()

    def add(*fields: str | bytes) -> None:
        for item in fields:
            data = item.encode() if isinstance(item, str) else item
            digest.update(len(data).to_bytes(8, "big") + data)

    add("dockerfile", image.dockerfile.read_bytes(), "base", base_id)
    for key in sorted(build_args):
        add("arg", key, build_args[key])
    for rel in context_files(image.dockerfile, context):
        path = context / rel
        if path.is_symlink():
            add("link", rel, os.readlink(path))
        else:
            add("file", rel, oct(path.stat().st_mode & 0o777), path.read_bytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- base


def debian_mirror() -> str:
    """The machine's Debian mirror (apt sources), so debootstrap goes where apt goes."""
    texts = [p.read_text() for p in sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    for text in texts:
        for stanza in text.split("\n\n"):
            fields = dict(
                (k.strip(), v.strip())
                for k, _, v in (line.partition(":") for line in stanza.splitlines())
                if not k.startswith("#")
            )
            if "bookworm" in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    with contextlib.suppress(OSError):
        for line in Path("/etc/apt/sources.list").read_text().splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == "bookworm":
                return next(w for w in words[1:] if "://" in w)
    return DEFAULT_MIRROR


def debian_base(eng: engine.Engine) -> str:
    """``voicetyped.local/debian-python:bookworm``, made once per recipe from Debian packages."""
    digest = BASE_RECIPE.digest()
    if engine.image_label(eng, DEBIAN_BASE) == digest:
        return DEBIAN_BASE
    debootstrap = shutil.which("debootstrap", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if debootstrap is None:
        raise ImagesError("no `debootstrap`: apt-get install debootstrap (make system-deps)")
    started = time.monotonic()
    work = engine.node_dir() / "base"
    shutil.rmtree(work, ignore_errors=True)
    rootfs = work / "rootfs"
    rootfs.mkdir(parents=True)
    mirror = debian_mirror()
    logfile = engine.logs_dir() / "debootstrap.log"
    log(f"making {DEBIAN_BASE} from Debian packages ({mirror}; log: {logfile})")
    try:
        with logfile.open("w") as out:
            subprocess.run(
                ["nice", debootstrap, f"--variant={BASE_RECIPE.variant}",
                 f"--include={','.join(BASE_RECIPE.include)}", BASE_RECIPE.suite, str(rootfs),
                 mirror],
                stdout=out, stderr=subprocess.STDOUT, check=True,
            )  # fmt: skip
        for pattern in BASE_RECIPE.remove:
            for path in rootfs.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        changes = [*BASE_RECIPE.changes, f"LABEL {CONTENT_LABEL}={digest}"]
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
        )
        assert tar.stdout is not None
        imported = subprocess.run(
            [engine.docker_cli(), "import", *(f"--change={c}" for c in changes), "-", DEBIAN_BASE],
            stdin=tar.stdout, env=eng.env, capture_output=True, text=True,
        )  # fmt: skip
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise ImagesError(f"docker import of {rootfs} failed: {imported.stderr.strip()}")
    except subprocess.CalledProcessError as err:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-20:])
        raise ImagesError(f"debootstrap failed ({err.returncode}):\n{tail}") from err
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"made {DEBIAN_BASE} in {time.monotonic() - started:.0f} s")
    return DEBIAN_BASE


def choose_base(eng: engine.Engine, requested: str | None) -> str:
    """The rule of the module docstring: given > the user's Docker: default > Debian-made."""
    if requested:
        return requested
    if not eng.own:
        return default_base(dockerfiles()[0])
    return debian_base(eng)


def base_id(eng: engine.Engine, base: str) -> str:
    if engine.image_label(eng, base) is None:
        log(f"pulling {base}")
        engine.docker(eng, "pull", "--quiet", base)
    return engine.image_id(eng, base)


# --------------------------------------------------------------------------- build


@dataclass(frozen=True)
class Built:
    name: str
    image: str
    id: str
    size: int
    built: bool
    """False when the image was already there with the same content digest."""
    seconds: float


def build(eng: engine.Engine, image: Image, ref: str, base: str, base_image_id: str) -> Built:
    started = time.monotonic()
    args = {"BASE": base}
    digest = content_digest(image, base_image_id, args)
    built = engine.image_label(eng, ref) != digest
    if built:
        logfile = engine.logs_dir() / f"build-{image.name}.log"
        command = [
            engine.docker_cli(), "build", "--network", "host", "--progress", "plain",
            "-f", str(image.dockerfile.relative_to(REPO)), "-t", ref,
            "--label", f"{CONTENT_LABEL}={digest}",
            *(f"--build-arg={key}={value}" for key, value in args.items()),
        ]  # fmt: skip
        if CA_BUNDLE.exists():  # a build secret: never in a layer
            command += ["--secret", f"id={CA_SECRET},src={CA_BUNDLE}"]
        log(f"building {ref} (log: {logfile})")
        env = {**eng.env, "DOCKER_BUILDKIT": "1"}
        with logfile.open("w") as out:
            out.write("$ " + shlex.join(command) + "\n")
            out.flush()
            result = subprocess.run(
                [*command, "."], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        if result.returncode != 0:
            tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-40:])
            raise ImagesError(f"building {ref} failed ({result.returncode}):\n{tail}")
        if engine.image_label(eng, ref) != digest:
            raise ImagesError(f"{ref} does not carry the content digest after its build")
    inspect = engine.docker(eng, "image", "inspect", "--format", "{{.Id}} {{.Size}}", ref)
    image_id, size = inspect.split()
    return Built(image.name, ref, image_id, int(size), built, time.monotonic() - started)


def prune_replaced(eng: engine.Engine) -> None:
    """Remove the images a rebuild replaced (untagged, carrying our content label) so a
    long-lived cache does not grow by a full image set per source change; other images on
    a shared daemon are never touched."""
    engine.docker(eng, "image", "prune", "--force", "--filter", f"label={CONTENT_LABEL}")


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One `make images` at a time (a shell and the test suite may both ask)."""
    engine.node_dir().mkdir(parents=True, exist_ok=True)
    with (engine.node_dir() / ".images.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def make_images(
    tag: str = TAG, base: str | None = None, to_containerd: bool = True, own: bool = False
) -> tuple[engine.Engine, list[Built]]:
    """Build (or find cached) every image; on the project's engine import them into
    containerd. ``own``: the project's engine even where another Docker daemon answers.
    Returns the engine and what was built."""
    eng = engine.up(own=own)
    with _locked():
        chosen = choose_base(eng, base or os.environ.get("VOICETYPED_IMAGE_BASE"))
        chosen_id = base_id(eng, chosen)
        log(f"base {chosen} ({chosen_id[7:19]})")
        results = [build(eng, image, image.ref(tag), chosen, chosen_id) for image in images()]
        if any(r.built for r in results):
            prune_replaced(eng)
        if to_containerd and eng.own:
            started = time.monotonic()
            imported = engine.import_to_containerd([r.image for r in results])
            if imported:
                log(
                    f"imported into containerd ({engine.NAMESPACE}) in "
                    f"{time.monotonic() - started:.0f} s: {', '.join(imported)}"
                )
    return eng, results


def report(results: Sequence[Built]) -> str:
    lines = [f"{'image':32} {'id':12} {'size':>9}  {'':7} seconds"]
    for r in results:
        what = "built" if r.built else "cached"
        lines.append(
            f"{r.image:32} {r.id[7:19]:12} {r.size / 1e6:7.1f}MB  {what:7} {r.seconds:.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tag", default=TAG)
    parser.add_argument("--base", help="base image (default: see above)")
    parser.add_argument(
        "--no-import", action="store_true", help="leave containerd's k8s.io namespace alone"
    )
    parser.add_argument(
        "--own", action="store_true", help="the project's engine even where a Docker answers"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        eng, results = make_images(args.tag, args.base, not args.no_import, args.own)
    except (ImagesError, engine.EngineError) as err:
        log(str(err))
        return 2
    print(report(results))
    log(f"done in {time.monotonic() - started:.1f} s (DOCKER_HOST={eng.docker_host})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
