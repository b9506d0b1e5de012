"""The media gateway as a real process between real SIP peers (SIPp, PJSIP, baresip) and the
gateway's gRPC peers (a recording speech side, a recording runtime side)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from voicetyped_testkit.media import RuntimePeer, SpeechPeer, media_gateway
from voicetyped_testkit.processes import ServiceProcess, free_port, free_sip_port

_rtp_base = iter(range(32000, 60000, 400))


@dataclass
class Gateway:
    process: ServiceProcess
    sip_port: int
    http_port: int
    speech: SpeechPeer
    runtime: RuntimePeer
    tmp: Path

    @property
    def uri(self) -> str:
        return f"sip:bot@127.0.0.1:{self.sip_port}"

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics") as reply:
            return str(reply.read().decode())

    def logged(self, event: str) -> list[dict[str, Any]]:
        out = []
        for line in self.process.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == event:
                    out.append(record)
        return out


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[Any]:
    """Start the gateway process (with fresh peers); settings as extra environment."""
    started: list[Gateway] = []

    async def start(speech: SpeechPeer | None = None, **env: str) -> Gateway:
        """``speech``: a peer of the test's own, started here (one replica behind a Service,
        say); the gateway calls its service endpoint."""
        speech, runtime = speech or SpeechPeer(), RuntimePeer()
        await speech.server.start()
        await runtime.server.start()
        sip, http = free_sip_port(), free_port()
        rtp = next(_rtp_base)
        process = media_gateway(
            tmp_path / f"media-{sip}.log",
            speech,
            runtime,
            sip,
            http,
            **{
                "VOICETYPED_RTP_PORT_MIN": str(rtp),
                "VOICETYPED_RTP_PORT_MAX": str(rtp + 399),
                "VOICETYPED_SHUTDOWN_GRACE_S": "10",
                **env,  # a test's own settings win
            },
        )
        process.start()
        await process.wait_ready(http, 30)
        gw = Gateway(process, sip, http, speech, runtime, tmp_path)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.process.stop()
        await gw.speech.server.stop(0)
        await gw.runtime.server.stop(0)


@pytest.fixture(scope="session")
def voice() -> Any:
    """The bundled Piper voice (caller speech for the audio tests)."""
    from voicetyped_speech.models.prepare import locate_bundled
    from voicetyped_speech.models.verify import load_voice

    bundled = locate_bundled()
    return load_voice(bundled.voice_model, bundled.voice_config)
