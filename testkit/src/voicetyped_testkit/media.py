"""gRPC peers of the media gateway for its tests and benchmarks: the speech gateway's
``StreamAudio`` side as a recorder and player of audio, and the runtime's ``StreamCall`` side
as a recorder of call events that can send commands. They speak the voicetyped.v1 contracts;
end-to-end tests run the real speech gateway and runtime instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np
from voicetyped.v1 import runtime_pb2, runtime_pb2_grpc, session_pb2, speech_pb2, speech_pb2_grpc

from voicetyped_testkit.processes import ServiceProcess, free_port, free_sip_port


@dataclass
class Chunk:
    pcm: bytes
    start_ms: int
    sequence: int
    arrived: float


@dataclass
class AudioStream:
    session_id: str
    playback_rate: int
    resumed: bool = False
    """AudioStreamStart.resumed: a running call's stream moved here."""
    chunks: list[Chunk] = field(default_factory=list)
    outbox: asyncio.Queue[speech_pb2.AudioDownlink | None] = field(default_factory=asyncio.Queue)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    opened: float = field(default_factory=time.perf_counter)

    def pcm(self) -> bytes:
        return b"".join(c.pcm for c in self.chunks)


class SpeechPeer(speech_pb2_grpc.SpeechGatewayServicer):
    """Records every call's 16 kHz audio; plays given PCM back down the stream.

    With ``service_port`` it is one replica behind a Service: it also listens on that port,
    which other peers share (SO_REUSEPORT, gRPC's default), and names its own port in
    AudioStreamReady; stopping it leaves the others to take new connections there.

    With ``max_streams`` it answers a new call's stream beyond that many open with
    RESOURCE_EXHAUSTED, as a speech gateway at capacity does (a resumed one is taken)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        record: bool = True,
        service_port: int = 0,
        max_streams: int = 0,
    ) -> None:
        self.streams: dict[str, AudioStream] = {}
        self.record = record
        self.max_streams = max_streams
        self.refused = 0
        """New streams refused at max_streams."""
        self.server = grpc.aio.server()
        speech_pb2_grpc.add_SpeechGatewayServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(f"{host}:0")
        if service_port:
            self.server.add_insecure_port(f"{host}:{service_port}")
        self.host = host
        self.service_endpoint = f"{host}:{service_port or self.port}"
        self.changed = asyncio.Event()

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    async def StreamAudio(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[speech_pb2.AudioUplink], context: Any
    ) -> AsyncIterator[speech_pb2.AudioDownlink]:
        requests = aiter(request_iterator)
        first = await anext(requests)
        start = first.start
        open_now = sum(1 for s in self.streams.values() if not s.ended.is_set())
        if self.max_streams and not start.resumed and open_now >= self.max_streams:
            self.refused += 1
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "at capacity (max_streams)")
        stream = AudioStream(
            start.session_id, start.playback_format.sample_rate_hz, resumed=start.resumed
        )
        self.streams[stream.session_id] = stream
        self.changed.set()

        async def read() -> None:
            try:
                async for msg in requests:
                    if msg.HasField("audio") and self.record:
                        a = msg.audio
                        stream.chunks.append(
                            Chunk(a.pcm, a.start_ms, a.sequence, time.perf_counter())
                        )
                    elif msg.HasField("audio"):  # count only (benchmarks)
                        a = msg.audio
                        stream.chunks.append(
                            Chunk(b"", a.start_ms, a.sequence, time.perf_counter())
                        )
            finally:
                stream.ended.set()
                stream.outbox.put_nowait(None)
                self.changed.set()

        reader = asyncio.create_task(read())
        try:
            yield speech_pb2.AudioDownlink(
                ready=speech_pb2.AudioStreamReady(endpoint=self.endpoint)
            )
            while (item := await stream.outbox.get()) is not None:
                yield item
        finally:
            reader.cancel()

    async def Converse(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[speech_pb2.SpeechCommand], context: Any
    ) -> AsyncIterator[speech_pb2.SpeechUpdate]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this peer is the media side only")
        yield speech_pb2.SpeechUpdate()  # pragma: no cover - abort raises

    async def wait_stream(self, timeout_s: float = 10.0, count: int = 1) -> list[AudioStream]:
        async with asyncio.timeout(timeout_s):
            while len(self.streams) < count:
                self.changed.clear()
                await self.changed.wait()
        return list(self.streams.values())

    def play(self, session_id: str, request_id: str, pcm: bytes) -> None:
        """Queue ``pcm`` (the stream's playback rate) in 20 ms chunks, the last one marked."""
        stream = self.streams[session_id]
        step = stream.playback_rate // 50 * 2
        chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)] or [b""]
        for n, chunk in enumerate(chunks):
            stream.outbox.put_nowait(
                speech_pb2.AudioDownlink(
                    playback=speech_pb2.PlaybackAudio(
                        request_id=request_id, pcm=chunk, sequence=n, last=n == len(chunks) - 1
                    )
                )
            )

    def stop(self, session_id: str, request_id: str = "") -> None:
        self.streams[session_id].outbox.put_nowait(
            speech_pb2.AudioDownlink(
                control=speech_pb2.PlaybackControl(
                    action=speech_pb2.PlaybackControl.ACTION_STOP, request_id=request_id
                )
            )
        )


@dataclass
class CallRecord:
    session_id: str
    started: runtime_pb2.CallStarted
    events: list[runtime_pb2.CallEvent] = field(default_factory=list)
    outbox: asyncio.Queue[runtime_pb2.CallCommand | None] = field(default_factory=asyncio.Queue)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    streams: int = 1

    def kinds(self) -> list[str]:
        return [str(e.WhichOneof("event")) for e in self.events]

    def digits(self) -> list[tuple[str, int]]:
        return [(e.dtmf.dtmf.digit, e.dtmf.source) for e in self.events if e.HasField("dtmf")]

    async def wait_for(
        self, kind: str, timeout_s: float = 10.0, count: int = 1
    ) -> list[runtime_pb2.CallEvent]:
        async with asyncio.timeout(timeout_s):
            while True:
                found = [e for e in self.events if e.WhichOneof("event") == kind]
                if len(found) >= count:
                    return found
                self.changed.clear()
                await self.changed.wait()


class RuntimePeer(runtime_pb2_grpc.ConversationRuntimeServicer):
    """Records each call's events; :meth:`hangup` / :meth:`transfer` send commands."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.calls: dict[str, CallRecord] = {}
        self.server = grpc.aio.server()
        runtime_pb2_grpc.add_ConversationRuntimeServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(f"{host}:0")
        self.host = host
        self.changed = asyncio.Event()
        self._commands = 0

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    async def StreamCall(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[runtime_pb2.CallEvent], context: Any
    ) -> AsyncIterator[runtime_pb2.CallCommand]:
        requests = aiter(request_iterator)
        first = await anext(requests)
        record = self.calls.get(first.session_id)
        if record is None:
            record = CallRecord(first.session_id, first.started)
            self.calls[first.session_id] = record
        else:
            record.streams += 1
        self.changed.set()

        async def read() -> None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for event in requests:
                    record.events.append(event)
                    record.changed.set()
                    if event.HasField("ended"):
                        break
            record.outbox.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (command := await record.outbox.get()) is not None:
                yield command
        finally:
            reader.cancel()

    async def wait_call(self, timeout_s: float = 10.0, count: int = 1) -> list[CallRecord]:
        async with asyncio.timeout(timeout_s):
            while len(self.calls) < count:
                self.changed.clear()
                await self.changed.wait()
        return list(self.calls.values())

    def _send(self, session_id: str, **command: Any) -> str:
        self._commands += 1
        cid = f"cmd-{self._commands}"
        self.calls[session_id].outbox.put_nowait(runtime_pb2.CallCommand(command_id=cid, **command))
        return cid

    def hangup(self, session_id: str) -> str:
        return self._send(session_id, hangup=session_pb2.Hangup(reason_code=16))

    def transfer(self, session_id: str, target: str) -> str:
        return self._send(session_id, transfer=session_pb2.Transfer(target_uri=target))


def media_gateway(
    log: Path,
    speech: SpeechPeer,
    runtime: RuntimePeer,
    sip_port: int,
    http_port: int,
    **settings: str,
) -> ServiceProcess:
    """A media gateway process (``python -m voicetyped_media``, not started yet) on loopback:
    SIP on ``sip_port``, HTTP (/readyz, /metrics, /v1/trunks) on ``http_port``, a gRPC port
    of its own, calling ``speech`` (its service endpoint) and ``runtime``; output to ``log``;
    ``settings``: more ``VOICETYPED_*`` variables (they win)."""
    env = {
        **os.environ,
        "VOICETYPED_SIP_HOST": "127.0.0.1",
        "VOICETYPED_SIP_PORT": str(sip_port),
        "VOICETYPED_RTP_HOST": "127.0.0.1",
        "VOICETYPED_HTTP_HOST": "127.0.0.1",
        "VOICETYPED_HTTP_PORT": str(http_port),
        "VOICETYPED_GRPC_HOST": "127.0.0.1",
        "VOICETYPED_GRPC_PORT": str(free_port()),
        "VOICETYPED_SPEECH_TARGET": speech.service_endpoint,
        "VOICETYPED_RUNTIME_TARGET": runtime.endpoint,
        **settings,
    }
    return ServiceProcess("voicetyped_media", env, log)


# -- real SIP peers as processes ---------------------------------------------------------------

SIPP_PCAP = Path("/usr/share/sip-tester")


class SipTarget(Protocol):
    """Where the peers call: the gateway's SIP URI, and a scratch directory."""

    @property
    def uri(self) -> str: ...

    @property
    def sip_port(self) -> int: ...

    @property
    def tmp(self) -> Path: ...


# -- raw SIP over loopback -------------------------------------------------------------------


def sip_invite(port: int, call_id: str, extra: str = "", sdp: str | None = None) -> bytes:
    """An INVITE to the gateway on loopback ``port`` (a PCMU offer unless ``sdp``)."""
    body = (
        sdp
        if sdp is not None
        else (
            "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 0\r\n"
        )
    )
    return (
        f"INVITE sip:bot@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port + 1};rport;branch=z9hG4bK{call_id}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\n"
        f"To: <sip:bot@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:t@127.0.0.1:{port + 1}>\r\n{extra}"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def exchange(
    port: int,
    data: bytes,
    timeout_s: float = 3.0,
    transport: str = "udp",
    local_ip: str = "127.0.0.1",
) -> list[str]:
    """Send one message from ``local_ip``; the responses (final one last). Blocking."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(timeout_s)
        s.bind((local_ip, 0))
        if transport == "udp":
            s.sendto(data, ("127.0.0.1", port))
        else:
            s.connect(("127.0.0.1", port))
            s.sendall(data)
        replies: list[str] = []
        try:
            while True:
                reply = s.recv(65535).decode(errors="replace")
                if not reply:
                    break
                replies.append(reply)
                status = int(reply.split(" ", 2)[1])
                if status >= 200:
                    break
        except TimeoutError:
            pass
    return replies


# -- peers -------------------------------------------------------------------------------------


@dataclass
class Finished:
    code: int
    output: str

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output.splitlines() if line.startswith("{")]


async def run(cmd: list[str], cwd: Path | None = None, timeout_s: float = 60) -> Finished:
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    return Finished(proc.returncode or 0, out.decode(errors="replace"))


SIPP_OFFER = """v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""


def sipp_request(
    method: str,
    cseq: int,
    *,
    body: str = "",
    branch: str = "[branch]",
    in_dialog: bool = True,
    user: str = "sipp",
    headers: str = "",
    retrans: bool = False,
    callee: str = "bot",
) -> str:
    """A SIPp ``<send>`` of a request from the caller: ``in_dialog`` puts the gateway's tag in
    To; ``body`` is SDP; ``headers`` are extra lines (``[authentication]``, say); ``callee`` is
    the Request-URI and To user."""
    to_tag = "[peer_tag_param]" if in_dialog else ""
    content = (
        f"Content-Type: application/sdp\nContent-Length: [len]\n\n{body}"
        if body
        else ("Content-Length: 0\n\n")
    )
    return f"""  <send{' retrans="500"' if retrans else ""}><![CDATA[
{method} sip:{callee}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}
From: sipp <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{callee}@[remote_ip]:[remote_port]>{to_tag}
Call-ID: [call_id]
CSeq: {cseq} {method}
Contact: sip:{user}@[local_ip]:[local_port]
{headers}Max-Forwards: 70
{content}]]></send>
"""


def sipp_scenario(name: str, steps: str) -> str:
    """A SIPp scenario of ``steps``; variables their actions assign are referenced (SIPp
    insists)."""
    assigned = re.findall(r'assign_to="([^"]+)"', steps)
    reference = f'  <Reference variables="{",".join(assigned)}"/>\n' if assigned else ""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="{name}">
{steps}{reference}</scenario>
"""


def sipp_call_scenario(
    name: str,
    after_ack: str,
    *,
    offer: bool = True,
    on_200: str = "",
    ack_body: str = "",
    callee: str = "bot",
) -> str:
    """A SIPp caller's scenario: INVITE (with a PCMU offer, or none: a delayed offer) to
    ``callee``, its 200 (``on_200``: the recv's actions), ACK (``ack_body``: the answer to a
    delayed offer), then ``after_ack``."""
    invite = SIPP_OFFER if offer else ""
    return sipp_scenario(
        name,
        sipp_request("INVITE", 1, body=invite, in_dialog=False, retrans=True, callee=callee)
        + '  <recv response="100" optional="true"/>\n'
        + '  <recv response="180" optional="true"/>\n'
        + f'  <recv response="200">{on_200}</recv>\n'
        + sipp_request("ACK", 1, body=ack_body, callee=callee)
        + after_ack
        + "\n",
    )


def sipp_auth_call_scenario(user: str, hold_ms: int = 500) -> str:
    """A SIPp caller that answers the gateway's 401 (``-au``/``-ap`` give the credentials, MD5),
    holds the call ``hold_ms`` and hangs up."""
    return sipp_scenario(
        "INVITE with digest authentication",
        sipp_request("INVITE", 1, body=SIPP_OFFER, user=user, in_dialog=False, retrans=True)
        + '  <recv response="401" auth="true"/>\n'
        + sipp_request("ACK", 1, user=user, branch="[branch-1]")
        + sipp_request(
            "INVITE",
            2,
            body=SIPP_OFFER,
            user=user,
            in_dialog=False,
            headers="[authentication]\n",
            retrans=True,
        )
        + """  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
"""
        + sipp_request("ACK", 2, user=user)
        + f'  <pause milliseconds="{hold_ms}"/>\n'
        + sipp_request("BYE", 3, user=user, retrans=True)
        + '  <recv response="200"/>\n',
    )


def sipp_expect_bye(timeout_ms: int = 0) -> str:
    """Scenario steps: the gateway's BYE (within ``timeout_ms`` if set) answered with 200."""
    timeout = f' timeout="{timeout_ms}"' if timeout_ms else ""
    return f"""  <recv request="BYE"{timeout}/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>"""


def sipp_dir(tmp: Path) -> Path:
    """A working directory where SIPp finds its pcap/ files."""
    work = tmp / "sipp"
    if not work.exists():
        work.mkdir()
        (work / "pcap").symlink_to(SIPP_PCAP)
    return work


async def sipp(
    gw: SipTarget,
    scenario: str,
    *args: str,
    calls: int = 1,
    timeout_s: float = 60,
    local_ip: str = "127.0.0.1",
) -> Finished:
    """SIPp calls the gateway from ``local_ip`` (any loopback address: a caller of its own)."""
    which = ["-sf", scenario] if scenario.endswith(".xml") else ["-sn", scenario]
    cmd = [
        "sipp",
        *which,
        f"127.0.0.1:{gw.sip_port}",
        "-i",
        local_ip,
        "-p",
        str(free_sip_port()),
        "-m",
        str(calls),
        "-nostdin",
        "-timeout",
        f"{int(timeout_s)}s",
        "-timeout_error",
        "-max_recv_loops",
        "1000",
        *args,
    ]
    return await run(cmd, cwd=sipp_dir(gw.tmp), timeout_s=timeout_s + 10)


async def pjsua(
    gw: SipTarget,
    *,
    play: Path | None = None,
    record: Path | None = None,
    codec: str = "PCMU/8000",
    seconds: float = 8.0,
    actions: list[dict[str, Any]] | None = None,
    target: str | None = None,
    start: asyncio.Event | None = None,
    transfer_status: int = 202,
    options: Sequence[str] = (),
) -> Finished:
    """pjsua calls the gateway. Its actions' clock starts at the INVITE, or, given ``start``,
    when the test sets it (its timeline anchored to the test's own event). It answers a REFER
    with ``transfer_status`` (202: accepted). ``options``: more of the caller's arguments
    (TLS, SRTP: see :mod:`voicetyped_testkit.pjsua_caller`)."""
    cmd = [
        sys.executable,
        "-m",
        "voicetyped_testkit.pjsua_caller",
        "--target",
        target or gw.uri,
        "--codec",
        codec,
        "--seconds",
        str(seconds),
        "--actions",
        json.dumps(actions or []),
        "--transfer-status",
        str(transfer_status),
        *options,
    ]
    if play is not None:
        cmd += ["--play", str(play)]
    if record is not None:
        cmd += ["--record", str(record)]
    if start is None:
        return await run(cmd, timeout_s=seconds + 30)
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        "--start-on-stdin",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def go() -> None:
        await start.wait()
        stdin.write(b"go\n")
        await stdin.drain()

    # Not communicate(): it would close stdin at once, which pjsua reads as the start line.
    starter = asyncio.ensure_future(go())
    try:
        async with asyncio.timeout(seconds + 90):
            out = await stdout.read()
            await proc.wait()
    except TimeoutError:
        proc.kill()
        out = await stdout.read()
        await proc.wait()
    finally:
        starter.cancel()
        stdin.close()
    return Finished(proc.returncode or 0, out.decode(errors="replace"))


async def baresip(
    gw: SipTarget, source: Path, codec: str, record_dir: Path, seconds: int = 10
) -> Finished:
    """baresip calls with ``source`` as its microphone and records what it hears."""
    if shutil.which("baresip") is None:
        raise RuntimeError("baresip is not installed (make test installs it)")
    conf = gw.tmp / f"baresip-{codec}"
    conf.mkdir(exist_ok=True)
    rate = {"g711": 8000, "g722": 16000, "opus": 48000}[codec]
    (conf / "config").write_text(
        "\n".join(
            [
                f"sip_listen 127.0.0.1:{free_sip_port()}",
                f"audio_source aufile,{source}",
                f"audio_srate {rate}",
                "audio_channels 1",
                "module_path /usr/lib/baresip/modules",
                f"module {codec}.so",
                "module aufile.so",
                "module sndfile.so",
                "module account.so",
                "module menu.so",
                f"snd_path {record_dir}",
                "opus_stereo no",
                "opus_sprop_stereo no",
                "",
            ]
        )
    )
    (conf / "accounts").write_text(
        f"<sip:baresip@127.0.0.1>;regint=0;audio_codecs={_codec_name(codec)}\n"
    )
    (conf / "contacts").write_text("")
    return await run(
        ["baresip", "-f", str(conf), "-e", f"/dial {gw.uri}", "-t", str(seconds)],
        timeout_s=seconds + 20,
    )


def _codec_name(codec: str) -> str:
    return {"g711": "PCMU/8000", "g722": "G722/16000", "opus": "opus/48000/2"}[codec]


# -- audio -------------------------------------------------------------------------------------


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels)[:, 0]
    return data, rate


def best_correlation(signal: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """Max normalised cross-correlation of ``reference`` inside ``signal`` and its lag."""
    a = signal.astype(np.float64)
    b = reference.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    lag = int(np.argmax(corr[: len(a)]))
    seg = a[lag : lag + len(b)]
    ref = b[: len(seg)]
    denom = np.linalg.norm(seg) * np.linalg.norm(ref)
    return (float(np.dot(seg, ref) / denom) if denom else 0.0), lag


@dataclass
class Heard:
    """Where each voiced piece of a reference was found in a recording (``heard_pieces``)."""

    pieces: list[tuple[float, int]]  # (correlation, lag) per voiced piece, in order
    piece_len: int
    min_corr: float

    @property
    def fraction(self) -> float:
        """Share of the reference's voiced pieces found in the recording."""
        return sum(c > self.min_corr for c, _ in self.pieces) / len(self.pieces)

    @property
    def last_heard(self) -> bool:
        return self.pieces[-1][0] > self.min_corr

    @property
    def in_order(self) -> bool:
        lags = [lag for c, lag in self.pieces if c > self.min_corr]
        return lags == sorted(lags)

    @property
    def end(self) -> int:
        """Sample just after the reference's last voiced piece in the recording."""
        return self.pieces[-1][1] + self.piece_len


def heard_pieces(
    signal: np.ndarray,
    reference: np.ndarray,
    rate: int,
    piece_s: float = 0.25,
    min_corr: float = 0.9,
) -> Heard:
    """Find each voiced ``piece_s`` piece of ``reference`` in ``signal`` on its own.

    A SIP phone's adaptive jitter buffer drops or stretches a frame now and then under load,
    which shifts everything after it: one correlation over the whole clip then falls to ~0.6
    though every word was played. Piece by piece, only the piece holding the shift suffers.
    """
    size = int(rate * piece_s)
    loudest = float(np.max(np.abs(reference.astype(np.float64)))) or 1.0
    pieces = [
        best_correlation(signal, reference[i : i + size])
        for i in range(0, len(reference) - size + 1, size)
        if np.sqrt(np.mean(reference[i : i + size].astype(np.float64) ** 2)) > loudest / 20
    ]
    assert pieces, "the reference has no voiced piece"
    return Heard(pieces, size, min_corr)
