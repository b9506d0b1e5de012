"""The whole pipeline on one machine: the four services (and the example backend) as supervised
local processes, wired to each other, with the same Dialog and Integration YAML a cluster gets.

Used by ``voicetyped up``, by the end-to-end tests and by the turn-latency benchmark. Every
service runs as its real process (``python -m voicetyped_<service>``) with its settings in the
environment; logs go to ``<run dir>/logs/<service>.log`` and, for ``voicetyped up``, to the
terminal prefixed by service; spans go to ``<run dir>/traces/<service>.jsonl``.

The example integrations point at the example backend on ``127.0.0.1:8090``; when the stack
runs the backend on another port, that address is rewritten in its copy of the documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from voicetyped.service.config import CONFIG_SUFFIXES
from voicetyped_testkit.processes import free_port, free_sip_port

EXAMPLE_BACKEND_ADDRESS = "127.0.0.1:8090"


def examples_dir() -> Path:
    """The checkout's ``examples/``: ``./examples`` when run from the checkout, else the one
    beside this (editable) install, so ``voicetyped up`` and ``call`` work from a directory of
    the user's own."""
    here = Path("examples")
    if here.is_dir():
        return here
    checkout = Path(__file__).resolve().parents[3] / "examples"
    return checkout if checkout.is_dir() else here


SERVICES = ("integration", "runtime", "speech", "media")
BACKEND_OFFSET = 8
"""With a base port: the example backend's port is base + 8 (after the services' eight)."""


@dataclass
class StackConfig:
    run_dir: Path
    dialogs: list[Path]
    integrations: list[Path]
    backend_script: Path | None
    backend_key_file: Path | None
    sip_port: int = 5060
    backend_port: int = 8090
    store_url: str = ""
    """Empty: SQLite in the run directory."""
    dialog: str = ""
    """The dialog for incoming calls (empty: the runtime's default, when just one is loaded)."""
    fixed_ports: bool = True
    """The services' default ports (8081-8084, 50061-50064) or those from ``base_port``;
    False: free ones (tests)."""
    base_port: int | None = None
    """With ``fixed_ports``: HTTP on base..base+3 (media, speech, runtime, integration), gRPC
    on base+4..base+7, the example backend on base+8 (another stack beside the default one)."""
    prepare_models: bool = True
    """Run ``voicetyped models prepare`` (a no-op once done) before any service starts: the
    speech gateway refuses to start without its prepared model."""
    log_format: str = "json"
    console: bool = False
    """Serve the runtime's live call console (``console_url``; loopback like every service)."""
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Extra environment per service (``{"speech": {"VOICETYPED_VAD__HANGOVER_MS": "250"}}``)."""
    cwd: Path = field(default_factory=Path.cwd)

    @classmethod
    def with_example_backend(
        cls,
        repo: Path,
        run_dir: Path,
        dialogs: list[Path] | None = None,
        env: dict[str, dict[str, str]] | None = None,
        store_url: str = "",
        console: bool = False,
    ) -> StackConfig:
        """A stack for tests and benchmarks: free ports, the repository's example backend and
        shop integration (the integration gateway is ready only with one loaded), and
        ``dialogs`` (default: the order-status example)."""
        examples = repo / "examples"
        return cls(
            run_dir=run_dir,
            dialogs=dialogs or [examples / "dialogs" / "order-status.yaml"],
            integrations=[examples / "integrations" / "shop.yaml"],
            backend_script=examples / "backend" / "example_backend.py",
            backend_key_file=examples / "backend" / "demo-api-key",
            fixed_ports=False,
            store_url=store_url,
            console=console,
            env=env or {},
            cwd=repo,
        )


def models_prepare_argv(speech_env: Mapping[str, str]) -> list[str]:
    """``voicetyped models prepare`` for the directory the speech gateway will read: its own
    ``VOICETYPED_ASR__MODELS_DIR`` wins over ``$VOICETYPED_MODELS_DIR`` (which the command
    reads from the same environment)."""
    argv = [sys.executable, "-m", "voicetyped.cli", "models", "prepare"]
    if models_dir := speech_env.get("VOICETYPED_ASR__MODELS_DIR"):
        argv += ["--models-dir", models_dir]
    return argv


@dataclass
class Ports:
    http: int
    grpc: int


def fixed_ports(base: int | None = None) -> dict[str, Ports]:
    """Each service's HTTP and gRPC port: the defaults (8081-8084, 50061-50064), or HTTP on
    ``base``..base+3 and gRPC on base+4..base+7 (see :attr:`StackConfig.base_port`)."""
    names = ("media", "speech", "runtime", "integration")
    if base is None:
        return {name: Ports(8081 + i, 50061 + i) for i, name in enumerate(names)}
    return {name: Ports(base + i, base + len(names) + i) for i, name in enumerate(names)}


@dataclass
class Service:
    name: str
    module: str
    env: dict[str, str]
    ports: Ports
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    pump: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class StackError(RuntimeError):
    """A service did not start; the message names it and ends with its log."""


class Stack:
    def __init__(
        self, config: StackConfig, on_line: Callable[[str, str], None] | None = None
    ) -> None:
        self.config = config
        self.on_line = on_line
        self.services: dict[str, Service] = {}
        self.backend: Service | None = None
        self.models_ready = asyncio.Event()
        """Set by :meth:`start` once the speech models are prepared (services start next)."""
        c = config
        self.run_dir = c.run_dir
        self.dialogs_dir = c.run_dir / "dialogs"
        self.integrations_dir = c.run_dir / "integrations"
        self.trace_dir = c.run_dir / "traces"
        self.log_dir = c.run_dir / "logs"
        self.ports = {
            name: (p if c.fixed_ports else Ports(free_port(), free_port()))
            for name, p in fixed_ports(c.base_port).items()
        }
        self.sip_port = c.sip_port if c.fixed_ports else free_sip_port()
        self.backend_port = c.backend_port if c.fixed_ports else free_port()
        if c.fixed_ports and c.base_port is not None:
            self.backend_port = c.base_port + BACKEND_OFFSET

    # -- configuration -----------------------------------------------------------------------

    def _copy_documents(self, sources: list[Path], target: Path) -> list[Path]:
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        copied = []
        for source in sources:
            files = (
                sorted(p for p in source.iterdir() if p.suffix in CONFIG_SUFFIXES)
                if source.is_dir()
                else [source]
            )
            for path in files:
                text = path.read_text("utf-8")
                if self.backend_port != 8090:
                    text = text.replace(EXAMPLE_BACKEND_ADDRESS, f"127.0.0.1:{self.backend_port}")
                dest = target / path.name
                dest.write_text(text, "utf-8")
                copied.append(dest)
        return copied

    @property
    def browser_calls(self) -> str:
        """The call page (WebRTC into the dialog), served by the media gateway."""
        return f"http://127.0.0.1:{self.ports['media'].http}/call/"

    @property
    def console_url(self) -> str:
        """The live call console's page (served when ``config.console``)."""
        return f"http://127.0.0.1:{self.ports['runtime'].http}/console/"

    def target(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service].grpc}"

    def _environments(self) -> dict[str, dict[str, str]]:
        c = self.config
        store = c.store_url or f"sqlite:///{self.run_dir / 'runtime.db'}"
        common = {
            "VOICETYPED_HTTP_HOST": "127.0.0.1",
            "VOICETYPED_GRPC_HOST": "127.0.0.1",
            "VOICETYPED_LOG_FORMAT": c.log_format,
            "VOICETYPED_SHUTDOWN_GRACE_S": "10",
            "PYTHONUNBUFFERED": "1",
        }
        envs = {
            "integration": {
                "VOICETYPED_INTEGRATIONS_DIR": str(self.integrations_dir),
                "VOICETYPED_STORE_URL": f"sqlite:///{self.run_dir / 'idempotency.db'}",
            },
            "runtime": {
                "VOICETYPED_DIALOGS_DIR": str(self.dialogs_dir),
                "VOICETYPED_STORE_URL": store,
                "VOICETYPED_INTEGRATION_TARGET": self.target("integration"),
                "VOICETYPED_CONSOLE__ENABLED": "true" if c.console else "false",
            },
            "speech": {
                "VOICETYPED_TTS__WARMUP_DIALOGS_DIR": str(self.dialogs_dir),
                # G.711 calls play at 8 kHz; browser (and Opus SIP) calls at 16 kHz.
                "VOICETYPED_TTS__WARMUP_RATES": "[8000, 16000]",
            },
            "media": {
                "VOICETYPED_SIP_HOST": "127.0.0.1",
                "VOICETYPED_SIP_PORT": str(self.sip_port),
                "VOICETYPED_RTP_HOST": "127.0.0.1",
                "VOICETYPED_SPEECH_TARGET": self.target("speech"),
                "VOICETYPED_RUNTIME_TARGET": self.target("runtime"),
                "VOICETYPED_DIALOG": c.dialog,
                # Browser calls (the page at /call/): loopback only, so minting tokens is open.
                "VOICETYPED_WEBRTC__ENABLED": "true",
            },
        }
        out = {}
        for name, env in envs.items():
            ports = self.ports[name]
            out[name] = {
                **os.environ,
                **common,
                "VOICETYPED_HTTP_PORT": str(ports.http),
                "VOICETYPED_GRPC_PORT": str(ports.grpc),
                "VOICETYPED_TRACE_FILE": str(self.trace_dir / f"{name}.jsonl"),
                **env,
                **c.env.get(name, {}),
            }
        return out

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        c = self.config
        for d in (self.run_dir, self.trace_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        for f in self.trace_dir.glob("*.jsonl"):
            f.unlink()
        self._copy_documents(c.dialogs, self.dialogs_dir)
        self._copy_documents(c.integrations, self.integrations_dir)
        envs = self._environments()
        if c.prepare_models:
            await self._prepare_models(envs["speech"])
        self.models_ready.set()
        if c.backend_script is not None and c.backend_key_file is not None:
            self.backend = Service(
                "backend",
                "",
                {**os.environ, "PYTHONUNBUFFERED": "1"},
                Ports(self.backend_port, 0),
                self.log_dir / "backend.log",
            )
            self._spawn(
                self.backend,
                [
                    sys.executable,
                    str(c.backend_script),
                    "--port",
                    str(self.backend_port),
                    "--api-key-file",
                    str(c.backend_key_file),
                ],
            )
            await self._wait_http(self.backend, "/healthz")
        for name in SERVICES:
            self.services[name] = Service(
                name,
                f"voicetyped_{name}",
                envs[name],
                self.ports[name],
                self.log_dir / f"{name}.log",
            )
        # The integration gateway first (the runtime calls it), speech and runtime together
        # (models take a few seconds), the media gateway last: it takes calls once up.
        await self._start_service("integration")
        await asyncio.gather(self._start_service("speech"), self._start_service("runtime"))
        await self._start_service("media")

    async def _prepare_models(self, env: dict[str, str]) -> None:
        """``voicetyped models prepare`` in the speech gateway's environment (so it prepares
        the directory the gateway reads), before anything starts. Its progress goes to the
        terminal, or line by line to ``on_line`` as service "models"."""
        argv = models_prepare_argv(env)
        log_path = self.log_dir / "models.log"
        if self.on_line is None:
            # The terminal's own stdout: rich draws its progress bar when it is a terminal.
            code = await asyncio.to_thread(
                subprocess.call, argv, env=env, cwd=self.config.cwd, stdin=subprocess.DEVNULL
            )
        else:
            prep = Service("models", "", env, Ports(0, 0), log_path)
            self._spawn(prep, argv)
            assert prep.proc is not None and prep.pump is not None
            code = await asyncio.to_thread(prep.proc.wait)
            await prep.pump
        if code != 0:
            raise StackError(
                f"`voicetyped models prepare` exited {code}"
                + (
                    f":\n{log_path.read_text(errors='replace')[-3000:]}"
                    if log_path.exists()
                    else ""
                )
            )

    async def _start_service(self, name: str) -> None:
        service = self.services[name]
        self._spawn(service, [sys.executable, "-m", service.module])
        await self._wait_http(service, "/readyz")

    def _spawn(self, service: Service, argv: list[str]) -> None:
        service.proc = subprocess.Popen(
            argv,
            env=service.env,
            cwd=self.config.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        service.pump = asyncio.get_running_loop().create_task(self._pump(service))

    async def _pump(self, service: Service) -> None:
        assert service.proc is not None and service.proc.stdout is not None
        stdout = service.proc.stdout
        with service.log_path.open("ab") as log:
            while True:
                line = await asyncio.to_thread(stdout.readline)
                if not line:
                    return
                log.write(line)
                log.flush()
                if self.on_line is not None:
                    self.on_line(service.name, line.decode(errors="replace").rstrip("\n"))

    async def _wait_http(self, service: Service, path: str, timeout_s: float = 120.0) -> None:
        url = f"http://127.0.0.1:{service.ports.http}{path}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if service.proc is not None and service.proc.poll() is not None:
                raise StackError(
                    f"{service.name} exited {service.proc.returncode}:\n{self.tail(service.name)}"
                )
            if await asyncio.to_thread(_ok, url):
                return
            await asyncio.sleep(0.1)
        raise StackError(
            f"{service.name} not ready after {timeout_s:.0f} s:\n{self.tail(service.name)}"
        )

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def kill(self, name: str) -> None:
        """SIGKILL, as in a crash or an OOM kill."""
        service = self.services[name]
        assert service.proc is not None
        service.proc.send_signal(signal.SIGKILL)
        service.proc.wait(10)

    def terminate(self, name: str) -> None:
        service = self.services[name]
        if service.running:
            assert service.proc is not None
            service.proc.send_signal(signal.SIGTERM)

    async def restart(self, name: str) -> None:
        await self._start_service(name)

    async def wait_exit(self, name: str, timeout_s: float) -> int:
        proc = self.services[name].proc
        assert proc is not None
        return await asyncio.to_thread(proc.wait, timeout_s)

    async def stop(self, grace_s: float = 15.0) -> dict[str, int | None]:
        """SIGTERM in reverse start order (media first: it ends the calls), then wait."""
        codes: dict[str, int | None] = {}
        order = [*reversed(SERVICES), "backend"]
        for name in order:
            service = self.backend if name == "backend" else self.services.get(name)
            if service is None or service.proc is None:
                continue
            if service.proc.poll() is None:
                service.proc.send_signal(signal.SIGTERM)
                try:
                    codes[name] = await asyncio.to_thread(service.proc.wait, grace_s)
                except subprocess.TimeoutExpired:
                    service.proc.kill()
                    codes[name] = await asyncio.to_thread(service.proc.wait, 5)
            else:
                codes[name] = service.proc.returncode
            if service.pump is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await service.pump
        return codes


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False
