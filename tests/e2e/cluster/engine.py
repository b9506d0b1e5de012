#!/usr/bin/env python3
"""The project's own container engine: containerd and dockerd from Debian's packages.

    engine.py up [--own]   start it (unless a Docker daemon already answers; --own starts
                           ours anyway), build the pause image and import it into containerd
    engine.py down         stop dockerd and containerd; images and containers' content stay
    engine.py status       what runs (exit 1 unless the engine answers)
    engine.py env          shell lines: DOCKER_HOST, CONTAINERD_ADDRESS, CONTAINERD_NAMESPACE

Images are built with docker (BuildKit) and run on the local node by containerd, so
one containerd serves both: dockerd runs its containers through it (namespace ``moby``),
the kubelet through its CRI plugin (namespace ``k8s.io``), where :func:`import_to_containerd`
copies built images (``docker save | ctr images import``).

Persistent content lives in ``$VOICETYPED_CACHE/node`` (default
``${XDG_CACHE_HOME:-~/.cache}/voicetyped/node``), so images survive a restart::

    containerd/config.toml   `containerd config default` + what this machine needs
    containerd/root/         containerd's content and snapshots
    docker/                  dockerd's data-root (its images: the build cache)
    cni/                     the CRI's CNI conf_dir (the node owner writes the conflist)
    logs/                    containerd.log, dockerd.log (and the previous run's .1)
    pause/                   the pause binary and its build context
    state.json               the pids of the running daemons

Sockets and runtime state are under ``/run/voicetyped/`` (``containerd/containerd.sock``,
``docker.sock``). dockerd runs with no bridge, no iptables rules and no masquerading:
builds use ``--network host``, containers ``--network none`` or ``host``; this module
adds no NAT rule to the machine. Needs root. Only the Python standard library is used.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAUSE_SOURCE = HERE / "pause"

RUN = Path("/run/voicetyped")
CONTAINERD_STATE = RUN / "containerd"
CONTAINERD_SOCKET = CONTAINERD_STATE / "containerd.sock"
DOCKER_SOCKET = RUN / "docker.sock"
DOCKER_EXEC_ROOT = RUN / "docker"
DEFAULT_DOCKER_SOCKET = Path("/var/run/docker.sock")

NAMESPACE = "k8s.io"  # the CRI plugin's namespace: what the kubelet sees
PAUSE_IMAGE = "voicetyped.local/pause:3.10"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
CONTENT_LABEL = "voicetyped.content"
"""Image label holding the digest of what an image was built from (skip unchanged builds)."""

DAEMONS = ("containerd", "dockerd")


class EngineError(Exception):
    """Something the user has to act on; the message says what."""


def log(message: str) -> None:
    print(f"engine: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- paths


def cache_root() -> Path:
    explicit = os.environ.get("VOICETYPED_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "voicetyped"


def node_dir() -> Path:
    return cache_root() / "node"


def cni_conf_dir() -> Path:
    return node_dir() / "cni"


def logs_dir() -> Path:
    return node_dir() / "logs"


def containerd_socket() -> Path:
    return CONTAINERD_SOCKET


def docker_env() -> dict[str, str]:
    """Environment for docker and ctr commands against the project's own engine."""
    return {
        "DOCKER_HOST": f"unix://{DOCKER_SOCKET}",
        "DOCKER_BUILDKIT": "1",
        "CONTAINERD_ADDRESS": str(CONTAINERD_SOCKET),
        "CONTAINERD_NAMESPACE": NAMESPACE,
    }


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """One up/down at a time (make images, the test suite and the node may all ask)."""
    node_dir().mkdir(parents=True, exist_ok=True)
    with (node_dir() / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class Engine:
    """The Docker engine builds go to, and the containerd images are imported into."""

    docker_host: str
    own: bool
    """True for the project's engine; False for a Docker daemon that was already answering."""

    @property
    def env(self) -> dict[str, str]:
        """``os.environ`` plus what docker (with BuildKit) and ctr need for this engine."""
        env = dict(os.environ)
        if self.own:
            env.update(docker_env())
        else:
            env.update({"DOCKER_HOST": self.docker_host, "DOCKER_BUILDKIT": "1"})
        return env

    @property
    def containerd(self) -> Path | None:
        """containerd's socket where the node's images go (only the project's engine)."""
        return CONTAINERD_SOCKET if self.own else None


def _binary(name: str) -> Path:
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/bin:/sbin")
    if found is None:
        package = {"dockerd": "docker.io", "ctr": "containerd"}.get(name, name)
        raise EngineError(f"no `{name}`: install Debian's {package} (make system-deps)")
    return Path(found).resolve()


def docker_cli() -> str:
    """The docker client to drive the engine with.

    BuildKit builds need a client that has the builder built in: Debian's docker.io
    client does; a newer client without the buildx plug-in refuses ``DOCKER_BUILDKIT=1``.
    """
    debian = Path("/usr/bin/docker")
    if debian.exists() and _owned_by_docker_io(debian):
        return str(debian)
    found = shutil.which("docker")
    if found is None:
        raise EngineError("no `docker` client: install Debian's docker.io (make system-deps)")
    return found


def _owned_by_docker_io(path: Path) -> bool:
    listing = Path("/var/lib/dpkg/info/docker.io.list")
    try:
        return str(path) in listing.read_text().split("\n")
    except OSError:
        return False


def alive(pid: int, binary: Path) -> bool:
    """pid runs ``binary`` (a reused pid is never mistaken for ours) and is no zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state != "Z" and Path(exe.removesuffix(" (deleted)")) == binary


def stop_process(pid: int, binary: Path, name: str, grace_s: float = 30.0) -> None:
    """SIGTERM the process (if it still runs ``binary``), wait, SIGKILL after ``grace_s``."""
    if not alive(pid, binary):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive(pid, binary) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid, binary):
        log(f"{name} (pid {pid}) ignored SIGTERM for {grace_s:.0f} s: killing it")
        os.kill(pid, signal.SIGKILL)
        while alive(pid, binary):
            time.sleep(0.05)


def _load_pids() -> dict[str, int]:
    try:
        data = json.loads((node_dir() / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return {name: int(pid) for name, pid in data.get("pids", {}).items()}


def _save_pids(pids: dict[str, int]) -> None:
    path = node_dir() / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pids": pids, "started": time.time()}, indent=2) + "\n")
    tmp.rename(path)


def _ping(sock: Path) -> bool:
    """A Docker daemon answers ``GET /_ping`` on the unix socket ``sock``."""
    conn = http.client.HTTPConnection("localhost", timeout=3)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect(str(sock))
        conn.sock = s
        conn.request("GET", "/_ping")
        response = conn.getresponse()
        return response.status == 200 and response.read().strip() == b"OK"
    except OSError:
        return False
    finally:
        conn.close()


def _containerd_answers() -> bool:
    if not CONTAINERD_SOCKET.exists():
        return False
    result = subprocess.run(
        [str(_binary("ctr")), "--address", str(CONTAINERD_SOCKET), "version"],
        capture_output=True,
        timeout=30,
    )
    return result.returncode == 0


def running() -> dict[str, bool]:
    """Each of the project's daemons: started by us, still alive and answering."""
    pids = _load_pids()
    live = {name: name in pids and alive(pids[name], _binary(name)) for name in DAEMONS}
    return {
        "containerd": live["containerd"] and _containerd_answers(),
        "dockerd": live["dockerd"] and _ping(DOCKER_SOCKET),
    }


def other_docker() -> str | None:
    """The DOCKER_HOST of a Docker daemon that answers and is not ours, else None."""
    host = os.environ.get("DOCKER_HOST", "")
    if host and host != f"unix://{DOCKER_SOCKET}":
        if host.startswith("unix://"):
            return host if _ping(Path(host.removeprefix("unix://"))) else None
        probe = subprocess.run(
            [docker_cli(), "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            timeout=30,
        )
        return host if probe.returncode == 0 else None
    if not host and _ping(DEFAULT_DOCKER_SOCKET):
        return f"unix://{DEFAULT_DOCKER_SOCKET}"
    return None


def up(own: bool = False) -> Engine:
    """The engine to build with, started if needed (idempotent).

    A Docker daemon that already answers on ``$DOCKER_HOST`` or the default socket is
    used as it is, unless ``own``: then (and when none answers) the project's containerd
    and dockerd are started, and the pause image is built and imported into containerd.
    """
    with locked():
        if not all(running().values()):
            external = None if own else other_docker()
            if external is not None:
                log(f"using the Docker engine that answers at {external}")
                return Engine(external, own=False)
            if os.geteuid() != 0:
                raise EngineError("starting containerd and dockerd needs root")
            _start_locked()
        engine = Engine(f"unix://{DOCKER_SOCKET}", own=True)
        build_pause_image(engine)
        import_to_containerd([PAUSE_IMAGE])
        return engine


def _start_locked() -> None:
    started = time.monotonic()
    if _load_pids():
        log("the engine is partly running: stopping it first")
        _stop_locked()
    node = node_dir()
    for sub in ("containerd/root", "docker", "cni", "logs"):
        (node / sub).mkdir(parents=True, exist_ok=True)
    CONTAINERD_STATE.mkdir(parents=True, exist_ok=True)
    config = node / "containerd" / "config.toml"
    config.write_text(containerd_config(node))
    daemon_json = node / "docker" / "daemon.json"  # not /etc/docker/daemon.json
    daemon_json.write_text("{}\n")
    pids: dict[str, int] = {}
    try:
        pids["containerd"] = _start(
            "containerd", [str(_binary("containerd")), "--config", str(config)]
        )
        _save_pids(pids)
        _wait("containerd", _containerd_answers, 60, pids["containerd"])
        DOCKER_SOCKET.unlink(missing_ok=True)
        pids["dockerd"] = _start("dockerd", dockerd_command(node))
        _save_pids(pids)
        _wait("dockerd", lambda: _ping(DOCKER_SOCKET), 120, pids["dockerd"])
    except BaseException:
        log(f"start-up failed; logs are in {logs_dir()}")
        _stop_locked()
        raise
    log(
        f"up in {time.monotonic() - started:.1f} s: DOCKER_HOST=unix://{DOCKER_SOCKET} "
        f"(`{sys.executable} {__file__} down` stops it)"
    )


def containerd_config(node: Path) -> str:
    """`containerd config default` with this machine's changes (FACTS: a real node)."""
    default = subprocess.run(
        [str(_binary("containerd")), "config", "default"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    changes = {
        r"^root = .*$": f'root = "{node / "containerd" / "root"}"',
        r"^state = .*$": f'state = "{CONTAINERD_STATE}"',
        r'^(\s*)address = "/run/containerd/containerd.sock"$': (
            rf'\g<1>address = "{CONTAINERD_SOCKET}"'
        ),
        # Nothing can be pulled: the sandbox image is the one up() builds and imports.
        r"^(\s*)sandbox_image = .*$": rf'\g<1>sandbox_image = "{PAUSE_IMAGE}"',
        # Lowering oom_score_adj needs a capability this kind of machine lacks; without
        # this every pod sandbox fails ("can't get final child's PID from pipe: EOF").
        r"^(\s*)restrict_oom_score_adj = .*$": r"\g<1>restrict_oom_score_adj = true",
        r"^(\s*)bin_dir = .*$": rf'\g<1>bin_dir = "{CNI_BIN_DIR}"',
        r"^(\s*)conf_dir = .*$": rf'\g<1>conf_dir = "{cni_conf_dir()}"',
        r"^(\s*)SystemdCgroup = .*$": r"\g<1>SystemdCgroup = false",  # cgroupfs: no systemd
    }
    text = default
    for pattern, replacement in changes.items():
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if count != 1:
            raise EngineError(
                f"`containerd config default` has {count} lines matching {pattern!r} (expected 1)"
            )
    return text


def dockerd_command(node: Path) -> list[str]:
    return [
        str(_binary("dockerd")),
        f"--containerd={CONTAINERD_SOCKET}",
        f"--host=unix://{DOCKER_SOCKET}",
        f"--data-root={node / 'docker'}",
        f"--exec-root={DOCKER_EXEC_ROOT}",
        f"--pidfile={RUN / 'docker.pid'}",
        f"--config-file={node / 'docker' / 'daemon.json'}",
        "--exec-opt=native.cgroupdriver=cgroupfs",
        # No bridge and no rules on the machine: builds use --network host.
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
        "--userland-proxy=false",
    ]


def start_logged(argv: list[str], log: Path, cwd: Path) -> int:
    """Start a daemon in a session of its own (no terminal signal reaches it; its `down`
    stops it), its output appended to ``log`` after a header line; its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
            start_new_session=True,
        )  # fmt: skip
    return proc.pid


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout_s: float,
    logfile: Path | None,
    process: tuple[int, Path] | None = None,
) -> str | None:
    """Poll ``check`` until it holds (None), or the timeout or the exit of ``process``
    (pid, binary): then what went wrong, with the last lines of ``logfile``."""
    deadline = time.monotonic() + timeout_s
    failure = f"timed out after {timeout_s:.0f} s waiting for {what}"
    while time.monotonic() < deadline:
        if check():
            return None
        if process is not None and not alive(*process):
            failure = f"{process[1].name} exited while waiting for {what}"
            break
        time.sleep(0.2)
    if logfile is not None and logfile.exists():
        lines = logfile.read_text(errors="replace").splitlines()[-25:]
        failure += f"\nlast lines of {logfile}:\n" + "\n".join(lines)
    return failure


def _start(name: str, argv: list[str]) -> int:
    current = logs_dir() / f"{name}.log"
    if current.exists():  # keep the previous run's log, one generation
        current.replace(logs_dir() / f"{name}.log.1")
    return start_logged(argv, current, node_dir())


def _wait(name: str, check: Callable[[], bool], timeout_s: float, pid: int) -> None:
    logfile = logs_dir() / f"{name}.log"
    failure = wait_for(f"{name} to answer", check, timeout_s, logfile, (pid, _binary(name)))
    if failure is not None:
        raise EngineError(failure)


def down() -> None:
    """Stop dockerd, then containerd (SIGTERM, wait); their content stays in the cache."""
    with locked():
        _stop_locked()


def _stop_locked() -> None:
    pids = _load_pids()
    for name in reversed(DAEMONS):
        if name in pids:
            stop_process(pids[name], _binary(name), name)
    (node_dir() / "state.json").unlink(missing_ok=True)
    log("down" if pids else "down (nothing was running)")


# --------------------------------------------------------------------------- images


def docker(engine: Engine, *args: str, capture: bool = True) -> str:
    """Run the docker client against ``engine``; its stdout (when captured)."""
    result = subprocess.run(
        [docker_cli(), *args],
        env=engine.env,
        capture_output=capture,
        text=True,
    )
    if result.returncode != 0:
        detail = (result.stderr or "").strip()
        raise EngineError(f"docker {' '.join(args)} failed ({result.returncode}): {detail}")
    return result.stdout or ""


def image_label(engine: Engine, image: str, label: str = CONTENT_LABEL) -> str | None:
    """The image's ``label`` ('' when unset), or None when the engine has no such image."""
    result = subprocess.run(
        [docker_cli(), "image", "inspect", "--format", "{{json .Config.Labels}}", image],
        env=engine.env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return None
    labels = json.loads(result.stdout) or {}
    return str(labels.get(label, ""))


def image_id(engine: Engine, image: str) -> str:
    return docker(engine, "image", "inspect", "--format", "{{.Id}}", image).strip()


def build_pause_image(engine: Engine) -> None:
    """``voicetyped.local/pause:3.10`` from pause.c (static) and a FROM scratch Dockerfile."""
    sources = [PAUSE_SOURCE / "pause.c", PAUSE_SOURCE / "Dockerfile"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
    if image_label(engine, PAUSE_IMAGE) == digest:
        return
    context = node_dir() / "pause"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    gcc = shutil.which("gcc")
    if gcc is None:
        raise EngineError("no `gcc`: the pause image is compiled here (apt-get install gcc)")
    subprocess.run(
        [gcc, "-static", "-s", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(context / "pause"),
         str(PAUSE_SOURCE / "pause.c")],
        check=True,
    )  # fmt: skip
    shutil.copy2(PAUSE_SOURCE / "Dockerfile", context / "Dockerfile")
    docker(engine, "build", "--quiet", "--label", f"{CONTENT_LABEL}={digest}",
           "-t", PAUSE_IMAGE, str(context))  # fmt: skip
    log(f"built {PAUSE_IMAGE}")


def containerd_ref(image: str) -> str:
    """The name containerd (and the kubelet) give ``image``: docker.io/library/x:latest."""
    name, _, digest = image.partition("@")
    first, slash, _ = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name if slash else 'library/' + name}"
    if not digest and ":" not in name.rpartition("/")[2]:
        name += ":latest"
    return f"{name}@{digest}" if digest else name


def _ctr(*args: str, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_binary("ctr")), "--address", str(CONTAINERD_SOCKET), "--namespace", NAMESPACE,
         *args],
        stdin=stdin,
        capture_output=True,
        text=True,
    )  # fmt: skip


def containerd_image_ids() -> dict[str, str]:
    """Each image in containerd's k8s.io namespace: ref -> image ID (its config digest)."""
    listing = _ctr("images", "list")
    if listing.returncode != 0:
        raise EngineError(f"ctr images list failed: {listing.stderr.strip()}")
    ids = {}
    for line in listing.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[2].startswith("sha256:"):
            ids[fields[0]] = _config_digest(fields[2])
    return ids


def _config_digest(digest: str) -> str:
    """The config digest (docker's image ID) of a manifest, or of an index's first one."""
    for _ in range(3):
        content = _ctr("content", "get", digest)
        if content.returncode != 0:
            return ""
        document = json.loads(content.stdout)
        if "config" in document:
            return str(document["config"]["digest"])
        manifests = document.get("manifests") or [{}]
        digest = str(manifests[0].get("digest", ""))
    return ""


def import_to_containerd(images: Sequence[str]) -> list[str]:
    """Copy ``images`` from the project's dockerd into containerd's k8s.io namespace.

    Images containerd already has with the same ID are skipped; returns those imported.
    """
    engine = Engine(f"unix://{DOCKER_SOCKET}", own=True)
    present = containerd_image_ids()
    missing = [i for i in images if present.get(containerd_ref(i)) != image_id(engine, i)]
    if not missing:
        return []
    save = subprocess.Popen(
        [docker_cli(), "save", *missing], env=engine.env, stdout=subprocess.PIPE
    )
    assert save.stdout is not None
    imported = _ctr("images", "import", "-", stdin=save.stdout.fileno())
    save.stdout.close()
    if save.wait() != 0 or imported.returncode != 0:
        raise EngineError(
            f"docker save | ctr images import of {', '.join(missing)} failed: "
            f"{imported.stderr.strip()}"
        )
    present = containerd_image_ids()
    for image in missing:
        if present.get(containerd_ref(image)) != image_id(engine, image):
            raise EngineError(f"{image} is not in containerd's {NAMESPACE} namespace after import")
    return missing


# --------------------------------------------------------------------------- main


def status() -> int:
    health = running()
    pids = _load_pids()
    for name in DAEMONS:
        print(f"{name:12} {'up' if health[name] else 'DOWN':5} pid={pids.get(name)}")
    print(f"DOCKER_HOST=unix://{DOCKER_SOCKET} CONTAINERD_ADDRESS={CONTAINERD_SOCKET}")
    print(f"content: {node_dir()}")
    return 0 if all(health.values()) else 1


def env_lines() -> str:
    return "".join(f"export {key}={value}\n" for key, value in docker_env().items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up")
    up_parser.add_argument(
        "--own", action="store_true", help="start ours even when another Docker answers"
    )
    for name in ("down", "status", "env"):
        sub.add_parser(name)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            engine = up(own=args.own)
            print(engine.docker_host)
        elif args.command == "down":
            down()
        elif args.command == "status":
            return status()
        elif args.command == "env":
            sys.stdout.write(env_lines())
    except EngineError as err:
        log(str(err))
        return 2
    except subprocess.CalledProcessError as err:
        log(f"command failed ({err.returncode}): {' '.join(str(a) for a in err.cmd)}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
