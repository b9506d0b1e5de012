"""Browser calls (WebRTC) into the media gateway as a real process, placed by a real aiortc peer
(voicetyped_testkit.webrtc_peer), with the gateway's real gRPC peers (a recording speech side,
a recording runtime side): signalling, audio both ways, keys, runtime commands, refusals,
capacity and SIGTERM with a call in flight."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc import RTCRtpSender
from voicetyped.v1 import runtime_pb2
from voicetyped_testkit.media import SpeechPeer
from voicetyped_testkit.processes import eventually
from voicetyped_testkit.webrtc_peer import WebRtcPeer, http_json

WEBRTC = {"VOICETYPED_WEBRTC__ENABLED": "true", "VOICETYPED_WEBRTC__DIALOG": "order-status"}
ENDED = runtime_pb2.CallEnded


def tone(rate: int, seconds: float, hz: float = 440.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * hz * t) * 12000).astype("<i2").tobytes()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def base(gw: Any) -> str:
    return f"http://127.0.0.1:{gw.http_port}"


async def post(
    url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    return await asyncio.to_thread(http_json, "POST", url, body, headers)


def metric(gw: Any, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    found = re.search(pattern, gw.metrics(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_a_browser_call_goes_through_the_same_pipeline(start_gateway: Any) -> None:
    gw = await start_gateway(**WEBRTC)
    peer = WebRtcPeer()
    try:
        await peer.call(base(gw))
        assert peer.session_id.startswith("webrtc-") and len(peer.session_id) == 31
        (record,) = await gw.runtime.wait_call()
        assert record.session_id == peer.session_id
        assert record.started.caller.caller_id == "webrtc:127.0.0.1"
        assert record.started.dialog == "order-status"
        (stream,) = await gw.speech.wait_stream()
        assert stream.playback_rate == 16000 and record.started.speech_endpoint

        # Up: what the caller says reaches the speech stream, 16 kHz, loud while said.
        peer.say(tone(16000, 0.6))
        await peer.said()
        loud = await eventually(
            lambda: (
                sum(np.abs(np.frombuffer(c.pcm, "<i2")).max() > 3000 for c in stream.chunks) >= 20
            ),
            5,
            "the caller's tone at the speech gateway",
        )
        assert loud
        # Down: the bot's audio reaches the browser.
        sent = asyncio.get_running_loop().time()
        gw.speech.play(peer.session_id, "prompt-1", tone(16000, 0.5, 330))
        await eventually(lambda: peer.first_loud_after(0), 5, "the prompt at the browser")
        assert asyncio.get_running_loop().time() - sent < 2
        # Keys from the page's keypad (the data channel) to the runtime.
        peer.press("5")
        peer.press("#")
        peer.press("not a key")
        await record.wait_for("dtmf", count=2)
        assert [d for d, _ in record.digits()] == ["5", "#"]
        # A transfer cannot be done for a browser: the runtime is told so.
        command = gw.runtime.transfer(peer.session_id, "sip:agents@pbx.example.com")
        (result,) = await record.wait_for("command_result")
        assert result.command_result.command_id == command
        assert not result.command_result.success
        assert "cannot be transferred" in result.command_result.detail
        # The runtime hangs up: the browser's connection closes, the call ends once.
        gw.runtime.hangup(peer.session_id)
        (ended,) = await record.wait_for("ended")
        assert ended.ended.reason == ENDED.REASON_BOT_HANGUP
        await eventually(lambda: peer.pc.connectionState == "closed", 10, "the browser hung up")
    finally:
        await peer.close()
    assert metric(gw, "voicetyped_media_calls_answered_total", 'codec="opus"') == 1
    assert metric(gw, "voicetyped_media_calls_ended_total", 'reason="bot_hangup"') == 1
    assert metric(gw, "voicetyped_media_dtmf_total", 'source="webrtc"') == 2
    assert metric(gw, "voicetyped_media_active_calls") == 0


async def test_the_browser_hanging_up_ends_the_call(start_gateway: Any) -> None:
    gw = await start_gateway(**WEBRTC)
    peer = WebRtcPeer()
    try:
        await peer.call(base(gw))
        (record,) = await gw.runtime.wait_call()
        status, body = await asyncio.to_thread(
            http_json, "DELETE", f"{base(gw)}/v1/webrtc/calls/{peer.session_id}"
        )
        assert (status, body) == (200, {"session_id": peer.session_id, "ended": True})
        (ended,) = await record.wait_for("ended")
        assert ended.ended.reason == ENDED.REASON_CALLER_HANGUP
        status, body = await asyncio.to_thread(
            http_json, "DELETE", f"{base(gw)}/v1/webrtc/calls/{peer.session_id}"
        )
        assert (status, body) == (404, {"error": "no such call"})
    finally:
        await peer.close()
    # A page that just closes its peer connection (DTLS close_notify) hangs up at once too.
    closing = WebRtcPeer()
    try:
        await closing.call(base(gw))
        record = (await gw.runtime.wait_call(count=2))[-1]
        assert record.session_id == closing.session_id
    finally:
        await closing.close()
    (ended,) = await record.wait_for("ended", timeout_s=5)
    assert ended.ended.reason == ENDED.REASON_CALLER_HANGUP
    await eventually(
        lambda: metric(gw, "voicetyped_media_calls_ended_total", 'reason="caller_hangup"') == 2,
        5,
        "both calls counted as hung up by the caller",
    )


OPUS_ATTRIBUTES = ("rtpmap", "fmtp", "rtcp-fb")


def pcmu_only(sdp: str) -> str:
    """The offer with Opus taken out of its audio m-line (PCMU left)."""
    lines = sdp.splitlines()
    opus = {ln.split(":")[1].split()[0] for ln in lines if re.match(r"a=rtpmap:\d+ opus/", ln)}
    kept = []
    for line in lines:
        if line.startswith("m=audio"):
            head, formats = line.split()[:3], line.split()[3:]
            line = " ".join(head + [f for f in formats if f not in opus])
        elif any(line.startswith(f"a={a}:{pt} ") for a in OPUS_ATTRIBUTES for pt in opus):
            continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n"


def fake_codec_only(sdp: str) -> str:
    """The offer's audio m-line with one made-up codec and nothing else."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("m=audio"):
            line = " ".join([*line.split()[:3], "120"])
        elif line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
            continue
        out.append(line)
        if line.startswith("m=audio"):
            out.append("a=rtpmap:120 NOTACODEC/48000/2")
    return "\r\n".join(out) + "\r\n"


async def test_bad_offers_and_tokens_get_clear_errors_and_the_gateway_keeps_serving(
    start_gateway: Any,
) -> None:
    gw = await start_gateway(**WEBRTC)
    url = f"{base(gw)}/v1/webrtc/calls"
    peer = WebRtcPeer()
    no_audio = WebRtcPeer(offer_audio=False)
    try:
        sdp = await peer.offer()

        async def refused(offer_sdp: str) -> tuple[int, Any]:
            token = await peer.token(base(gw))
            return await post(url, {"token": token, "sdp": offer_sdp, "type": "offer"})

        status, body = await refused(await no_audio.offer())
        assert status == 400 and "no audio m-line" in body["error"], body
        status, body = await refused(pcmu_only(sdp))
        assert (status, body["error"]) == (
            400,
            "the offer has no Opus audio (offered: g722, pcma, pcmu); browser calls use Opus",
        )
        status, body = await refused(fake_codec_only(sdp))
        assert (status, body["error"]) == (
            400,
            "the offer has no Opus audio (offered: notacodec); browser calls use Opus",
        )
        status, body = await refused("hello")
        assert (status, body["error"]) == (400, "malformed SDP: it does not start with v=0")
        # Malformed bodies.
        for bad in ({"sdp": sdp, "type": "offer"}, {"token": "x", "sdp": sdp, "type": "answer"}):
            status, body = await post(url, bad)
            assert status == 400 and body["error"].startswith("malformed call request"), body
        status, body = await asyncio.to_thread(http_json, "POST", url, None)
        assert status == 400 and "malformed call request" in body["error"], body
        # Tokens: made up, tampered with, spent.
        status, body = await post(url, {"token": "not-a.token", "sdp": sdp, "type": "offer"})
        assert (status, body) == (401, {"error": "malformed call token"})
        forged = b64(b"9999999999:" + b"ab" * 16) + "." + b64(bytes(32))
        status, body = await post(url, {"token": forged, "sdp": sdp, "type": "offer"})
        assert (status, body) == (401, {"error": "invalid call token"})
        good = await peer.token(base(gw))
        tampered = ("A" if good[0] != "A" else "B") + good[1:]
        status, body = await post(url, {"token": tampered, "sdp": sdp, "type": "offer"})
        assert status == 401, body
        status, body = await peer.place(base(gw), good, sdp)
        assert status == 200, body
        await peer.connected()
        status, body = await post(url, {"token": good, "sdp": sdp, "type": "offer"})
        assert (status, body) == (401, {"error": "call token already used"})
        # Still serving: the call placed among the refusals is up, and the probes answer.
        (record,) = await gw.runtime.wait_call()
        assert record.session_id == peer.session_id
        assert (await asyncio.to_thread(http_json, "GET", f"{base(gw)}/readyz"))[0] == 200
    finally:
        await peer.close()
        await no_audio.close()
    assert metric(gw, "voicetyped_media_calls_refused_total", 'reason="sdp"') == 4


async def test_minting_needs_the_access_token_from_the_file(
    start_gateway: Any, tmp_path: Path
) -> None:
    secret = tmp_path / "webrtc-token"
    secret.write_text("s3cret-access\n")
    gw = await start_gateway(**WEBRTC, VOICETYPED_WEBRTC__TOKEN_FILE=str(secret))
    tokens = f"{base(gw)}/v1/webrtc/tokens"
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, body = await post(tokens, headers=headers)
        assert status == 401 and "access token" in body["error"], body
    peer = WebRtcPeer()
    try:
        await peer.call(base(gw), access="s3cret-access")
        await gw.runtime.wait_call()
    finally:
        await peer.close()
    assert "s3cret-access" not in gw.process.log.read_text()


async def test_beyond_max_calls_a_browser_call_gets_503(start_gateway: Any) -> None:
    gw = await start_gateway(**WEBRTC, VOICETYPED_WEBRTC__MAX_CALLS="1")
    first, second = WebRtcPeer(), WebRtcPeer()
    try:
        await first.call(base(gw))
        token = await second.token(base(gw))
        status, body = await second.place(base(gw), token, await second.offer())
        assert (status, body) == (503, {"error": "at browser call capacity"})
    finally:
        await first.close()
        await second.close()


async def test_a_browser_call_refused_by_speech_at_capacity_gets_503_with_retry_after(
    start_gateway: Any,
) -> None:
    speech = SpeechPeer(max_streams=1)
    gw = await start_gateway(speech=speech, **WEBRTC, VOICETYPED_RETRY_AFTER_S="9")
    first, second = WebRtcPeer(), WebRtcPeer()
    try:
        await first.call(base(gw))
        await gw.runtime.wait_call()
        token = await second.token(base(gw))
        offer = await second.offer()
        request = urllib.request.Request(
            f"{base(gw)}/v1/webrtc/calls",
            data=json.dumps({"token": token, "sdp": offer, "type": "offer"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
        assert refused.value.code == 503
        assert refused.value.headers["Retry-After"] == "9"
        assert json.loads(refused.value.read()) == {"error": "speech recognition at capacity"}
        assert metric(gw, "voicetyped_media_calls_refused_total", 'reason="speech_capacity"') == 1
        assert len(gw.runtime.calls) == 1, "the refused call never reached the runtime"
    finally:
        await first.close()
        await second.close()


async def test_sigterm_with_a_browser_call_in_flight_exits_0(start_gateway: Any) -> None:
    gw = await start_gateway(**WEBRTC, VOICETYPED_SHUTDOWN_GRACE_S="3")
    peer = WebRtcPeer()
    try:
        await peer.call(base(gw))
        (record,) = await gw.runtime.wait_call()
        code = await asyncio.to_thread(gw.process.stop, 15)
        assert code == 0, gw.process.tail()
        (ended,) = await record.wait_for("ended")
        assert ended.ended.reason == ENDED.REASON_FAILED and ended.ended.code == 503
        await eventually(lambda: peer.pc.connectionState == "closed", 10, "the browser told")
    finally:
        await peer.close()


def test_the_opus_capability_is_there() -> None:
    # The gateway answers with Opus only: the library must have it.
    codecs = RTCRtpSender.getCapabilities("audio").codecs
    assert any(c.mimeType.lower() == "audio/opus" and c.clockRate == 48000 for c in codecs)
