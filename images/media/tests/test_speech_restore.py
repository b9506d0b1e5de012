"""The speech replica of a call goes away mid-call (its pod deleted): the gateway process reopens
the call's audio stream through the speech Service on another replica and the runtime is told
where it went, or, with no replica to take it within the window, hangs up with a reason.

The speech replicas are gRPC peers sharing one "Service" port (SO_REUSEPORT), each naming its
own port in AudioStreamReady; stopping one is the pod going away. The callers are real SIP
peers (PJSIP with audio both ways, SIPp reading the BYE)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from piper import SynthesisConfig
from voicetyped.v1 import runtime_pb2
from voicetyped_speech.models.verify import synthesize_16k
from voicetyped_testkit.media import (
    SpeechPeer,
    heard_pieces,
    pjsua,
    read_wav,
    sipp,
    sipp_call_scenario,
    sipp_expect_bye,
    write_wav,
)
from voicetyped_testkit.processes import eventually, free_port
from voicetyped_testkit.speech import resample, to_pcm

ENDED = runtime_pb2.CallEnded
QUIET = SynthesisConfig(noise_scale=0, noise_w_scale=0)


@pytest.fixture(scope="module")
def prompt_8k(voice: Any) -> np.ndarray:
    pcm = to_pcm(synthesize_16k(voice, "Sorry, where were we? Your order has shipped.", QUIET))
    return to_pcm(resample(pcm.astype(np.float32) / 32768, 16000, 8000))


async def test_speech_replica_lost_the_stream_reopens_on_another_and_the_call_goes_on(
    start_gateway: Any, tmp_path: Path, prompt_8k: np.ndarray
) -> None:
    service = free_port()
    first = SpeechPeer(service_port=service)
    spans = tmp_path / "media-spans.jsonl"
    gw = await start_gateway(speech=first, VOICETYPED_TRACE_FILE=str(spans))
    recording = tmp_path / "heard.wav"
    caller_audio = write_wav(tmp_path / "caller.wav", np.zeros(8000 * 20, dtype=np.int16), 8000)
    caller = asyncio.ensure_future(pjsua(gw, play=caller_audio, record=recording, seconds=40))
    second: SpeechPeer | None = None
    try:
        (call,) = await gw.runtime.wait_call(timeout_s=15)
        assert call.started.speech_endpoint == first.endpoint
        (before,) = await first.wait_stream()
        await eventually(lambda: len(before.chunks) > 10, 10, "caller audio at the first replica")
        second = SpeechPeer(service_port=service)  # binds the Service port: made only now
        await second.server.start()
        await first.server.stop(0)  # the call's replica is gone; the Service has the other

        (moved,) = await call.wait_for("speech_moved", timeout_s=10)
        assert moved.speech_moved.speech_endpoint == second.endpoint != first.endpoint
        (after,) = await second.wait_stream()
        assert after.session_id == before.session_id == call.session_id
        assert after.resumed and not before.resumed, "a capacity check must not refuse it"
        await eventually(lambda: len(after.chunks) > 25, 10, "caller audio at the new replica")
        assert "ended" not in call.kinds()

        # The new replica's playback reaches the caller; then the bot hangs up as usual.
        second.play(call.session_id, "after-restore", prompt_8k.tobytes())
        await eventually(
            lambda: spans.exists() and "after-restore" in spans.read_text(), 10, "its first RTP"
        )
        gw.runtime.hangup(call.session_id)
        (ended,) = await call.wait_for("ended", timeout_s=15)
        assert ended.ended.reason == ENDED.REASON_BOT_HANGUP
        out = await caller
    finally:
        caller.cancel()
        if second is not None:
            await second.server.stop(0)
    states = [e["state"] for e in out.events() if e["event"] == "state"]
    assert states[-1] == "DISCONNECTED", out.output[-2000:]
    heard, rate = read_wav(recording)
    expected = to_pcm(resample(prompt_8k.astype(np.float32) / 32768, 8000, rate))
    got = heard_pieces(heard, expected, rate)
    assert got.fraction >= 0.8 and got.in_order and got.last_heard, got.pieces

    metrics = gw.metrics()
    assert 'voicetyped_media_speech_restores_total{outcome="restored"} 1.0' in metrics
    assert 'voicetyped_media_speech_restores_total{outcome="failed"}' not in metrics
    (restored,) = gw.logged("speech stream restored")
    assert restored["session_id"] == call.session_id
    assert restored["speech"] == second.endpoint


async def test_speech_lost_with_no_replica_to_take_it_the_caller_gets_bye_with_a_reason(
    start_gateway: Any, tmp_path: Path
) -> None:
    window_s = 2.0
    only = SpeechPeer(service_port=free_port())
    gw = await start_gateway(speech=only, VOICETYPED_SPEECH_RESTORE_S=str(window_s))
    scenario = tmp_path / "bye.xml"
    scenario.write_text(CALL_UNTIL_BYE)
    caller = asyncio.ensure_future(sipp(gw, str(scenario), "-trace_msg", timeout_s=30))
    (call,) = await gw.runtime.wait_call(timeout_s=15)
    await only.wait_stream()
    stopped = time.monotonic()
    await only.server.stop(0)  # the only replica is gone: nothing to reconnect to

    (ended,) = await call.wait_for("ended", timeout_s=window_s + 10)
    took = time.monotonic() - stopped
    assert ended.ended.reason == ENDED.REASON_SPEECH_UNAVAILABLE
    assert ended.ended.code == 41
    # Retried for the whole window, then hung up without delay (slack for a loaded machine).
    assert window_s <= took < window_s + 3, took
    result = await caller
    assert result.code == 0, result.output[-2000:]
    (trace,) = (tmp_path / "sipp").glob("*_messages.log")
    bye = next(m for m in trace.read_text().split("\n\n") if "BYE sip:" in m)
    assert 'Reason: Q.850;cause=41;text="speech unavailable"' in bye, bye

    assert "speech_moved" not in call.kinds()
    # The gateway's summary line comes once the runtime has its CallEnded, then the counters.
    (summary,) = await eventually(lambda: gw.logged("call ended"), 5, "the call's summary")
    assert summary["reason"] == "REASON_SPEECH_UNAVAILABLE" and summary["code"] == 41
    (line,) = gw.logged("speech unavailable; hanging up")
    assert line["session_id"] == call.session_id and line["level"] == "warning"
    metrics = gw.metrics()
    assert 'voicetyped_media_calls_ended_total{reason="speech_unavailable"} 1.0' in metrics
    assert 'voicetyped_media_speech_restores_total{outcome="failed"} 1.0' in metrics


CALL_UNTIL_BYE = sipp_call_scenario("call until the gateway hangs up", sipp_expect_bye(25000))
