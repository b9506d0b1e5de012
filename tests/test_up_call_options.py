"""`voicetyped up` and `voicetyped call` without a running stack: what `up` refuses before it
starts anything (dangling call_hooks, a --dialog-name that is not loaded), its port layout, how
`call` finds the stack it dials, and a call the gateway refuses failing the caller."""

from __future__ import annotations

import asyncio
import os
import textwrap
from pathlib import Path
from typing import Any, cast

import pytest
from aiosipua import SipUAS, parse_sdp
from aiosipua.dialog import DialogState
from typer.testing import CliRunner
from voicetyped_dev import running
from voicetyped_dev.caller import cli as caller_cli
from voicetyped_dev.caller.run import Voices, run_call
from voicetyped_dev.caller.script import Listen, ListenStep, Press, Step
from voicetyped_dev.stack import Ports, Stack, StackConfig, fixed_ports
from voicetyped_dev.up import app as up_app
from voicetyped_media.sip.transport import GuardedUdpTransport
from voicetyped_testkit.hostile import HOSTILE, REFUSED_WITH

REPO = Path(__file__).resolve().parents[1]
INTEGRATIONS = REPO / "examples" / "integrations"


def _dialog(directory: Path, name: str, service: str = "shop", method: str = "get_order") -> None:
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.yaml").write_text(
        textwrap.dedent(
            f"""
            name: {name}
            initial: a
            states:
              a:
                on_enter: [{{call_hook: {{service: {service}, method: {method}}}}}]
                transitions: [{{event: backend_result, target: b}}]
              b: {{terminal: true}}
            """
        )
    )


def _up(*args: str) -> Any:
    return CliRunner().invoke(up_app, [*args, "--no-prepare", "--integration", str(INTEGRATIONS)])


def test_up_refuses_a_dangling_call_hook_naming_it(tmp_path: Path) -> None:
    _dialog(tmp_path / "d", "refill", "pharmacy", "lookup")
    result = _up("--dialog", str(tmp_path / "d"), "--run-dir", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert "not starting: 1 problem(s)" in result.output
    assert (
        f"{tmp_path}/d/refill.yaml: states.a.on_enter[0].call_hook.service: no Integration "
        "'pharmacy' (loaded: clinic, shop)" in " ".join(result.output.split())
    )
    assert not (tmp_path / "run").exists()  # nothing was started


def test_up_refuses_a_dialog_name_that_is_not_loaded(tmp_path: Path) -> None:
    _dialog(tmp_path / "d", "refill")
    _dialog(tmp_path / "d", "other")
    result = _up("--dialog", str(tmp_path / "d"), "--dialog-name", "refil")
    assert result.exit_code == 2, result.output
    assert "--dialog-name refil: no such dialog (loaded: other, refill)" in result.output
    unnamed = _up("--dialog", str(tmp_path / "d"))
    assert unnamed.exit_code == 2
    assert "2 dialogs loaded (other, refill): name the one for incoming calls with " in (
        " ".join(unnamed.output.split())
    )


@pytest.mark.parametrize("kind", ["dialog", "integration"])
def test_up_refuses_hostile_documents_with_one_line_each(tmp_path: Path, kind: str) -> None:
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    for name, data in HOSTILE.items():
        (hostile / f"{name}.yaml").write_bytes(data)
    _dialog(tmp_path / "d", "refill")
    where = ["--dialog", str(hostile)] if kind == "dialog" else ["--dialog", str(tmp_path / "d")]
    args = [*where, "--run-dir", str(tmp_path / "run"), "--no-prepare"]
    args += ["--integration", str(hostile if kind == "integration" else INTEGRATIONS)]
    result = CliRunner().invoke(up_app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # the terminal wraps long lines
    for name, refused in REFUSED_WITH.items():
        path = f"{hostile}/{name}.yaml"
        assert f"{path}: {refused}" in text and text.count(path) == 1, text
    assert not (tmp_path / "run").exists()


def test_base_port_moves_every_port(tmp_path: Path) -> None:
    assert fixed_ports()["runtime"] == Ports(8083, 50063)
    config = StackConfig(
        run_dir=tmp_path, dialogs=[], integrations=[], backend_script=None,
        backend_key_file=None, base_port=9100, sip_port=5070,
    )  # fmt: skip
    stack = Stack(config)
    assert {n: (p.http, p.grpc) for n, p in stack.ports.items()} == {
        "media": (9100, 9104),
        "speech": (9101, 9105),
        "runtime": (9102, 9106),
        "integration": (9103, 9107),
    }
    assert stack.backend_port == 9108 and stack.sip_port == 5070
    env = stack._environments()
    assert env["runtime"]["VOICETYPED_HTTP_PORT"] == "9102"
    assert env["media"]["VOICETYPED_RUNTIME_TARGET"] == "127.0.0.1:9106"
    assert env["runtime"]["VOICETYPED_INTEGRATION_TARGET"] == "127.0.0.1:9107"


def test_call_finds_the_stack_it_dials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICETYPED_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stack = running.RunningStack(
        pid=os.getpid(), sip_port=5071, run_dir=run_dir, runtime_admin="http://127.0.0.1:9102"
    )
    running.register(stack, tmp_path / "cache")
    assert caller_cli.stack_called("sip:bot@127.0.0.1:5071", None) == stack
    assert caller_cli.stack_called(None, run_dir) == stack
    assert caller_cli.stack_called("sip:bot@127.0.0.1:5072", None) is None
    assert caller_cli.stack_called(None, None) is None  # 5060: not registered
    dead = stack.model_copy(update={"pid": 2**22 + 1})  # above the kernel's pid_max
    running.register(dead, tmp_path / "cache")
    assert caller_cli.stack_called("sip:bot@127.0.0.1:5071", None) is None
    running.register(stack, tmp_path / "cache")
    running.unregister(stack, tmp_path / "cache")
    assert caller_cli.stack_called(None, run_dir) is None
    result = CliRunner().invoke(caller_cli.app, ["--run-dir", str(run_dir)])
    assert result.exit_code == 2
    assert "no running `voicetyped up` in" in result.output


class _RefusingGateway:
    """A SIP peer that answers and hangs up at once with a Reason, as the media gateway does
    when the runtime refuses the call (the BYE can arrive before the caller's media is up)."""

    REASON = "Q.850;cause=21;text=\"runtime refused the call: NOT_FOUND: no dialog 'x'\""

    def __init__(self) -> None:
        self.transport = GuardedUdpTransport(local_addr=("127.0.0.1", 0))
        self.uas = SipUAS(self.transport)
        self.uas.on_invite = self._invite
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        await self.uas.start()
        udp = self.transport._udp_transport
        assert udp is not None
        port = int(udp.get_extra_info("sockname")[1])
        self.transport.local_addr = ("127.0.0.1", port)
        return port

    def _invite(self, call: Any) -> None:
        answer = (
            "v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
        )
        call.accept(parse_sdp(answer))
        task = asyncio.get_running_loop().create_task(self._bye(call))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _bye(self, call: Any) -> None:
        for _ in range(5000):  # aiosipua reports no ACK: look for it, hang up at once
            if call.dialog.state == DialogState.CONFIRMED:
                break
            await asyncio.sleep(0.002)
        bye = call.dialog.create_request(
            "BYE", via_host="127.0.0.1", via_port=self.transport.local_addr[1]
        )
        bye.headers.set_single("Reason", self.REASON)
        call.dialog.terminate()
        self.transport.send(bye, call.source_addr)

    async def stop(self) -> None:
        await self.uas.stop()


async def test_a_refused_call_is_a_failure_with_the_reason() -> None:
    gateway = _RefusingGateway()
    port = await gateway.start()
    try:
        steps: list[Step] = [ListenStep(listen=Listen(timeout_s=3)), Press(press="1")]
        log = await asyncio.wait_for(
            run_call(f"sip:bot@127.0.0.1:{port}", steps, cast(Voices, None), transcribe=False),
            20,
        )
    finally:
        await gateway.stop()
    assert log.failures[0] == (
        f"the gateway hung up before the bot said anything ({_RefusingGateway.REASON})"
    )
    assert log.ended_by_bot


def test_the_step_format_is_in_call_help_and_in_the_docs() -> None:
    from voicetyped_dev.caller.script import _KINDS

    docs = (REPO / "docs" / "testing.md").read_text()
    section = docs.split("### The script format", 1)[1].split("\n## ", 1)[0]
    help_text = " ".join(CliRunner().invoke(caller_cli.app, ["--help"]).output.split())
    for kind in _KINDS:
        assert f"| `{kind}:" in section, kind
        assert f"- {kind}:" in help_text, kind
    for option in ("timeout_s", "quiet_ms", "barge_in_after_ms", "pauses_ms", "gap_ms"):
        assert option in section and option in help_text, option
    assert "caller.script" not in help_text  # the format itself, not a module to read
