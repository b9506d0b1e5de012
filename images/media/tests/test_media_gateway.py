"""The media gateway with real SIP peers on loopback: SIPp (basic and pcap audio scenarios),
PJSIP (pjsua2: plays and records audio, DTMF by SIP INFO and RFC 4733, hold/resume, REFER) and
baresip (G.722 and Opus with a WAV source). Audio is compared with its source; call lifecycle
and DTMF are checked at the runtime's side of the contract."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import struct
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from piper import SynthesisConfig
from voicetyped.v1 import runtime_pb2
from voicetyped_media.codecs.resample import Resampler
from voicetyped_media.dtmf.inband import tone
from voicetyped_speech.models.verify import synthesize_16k
from voicetyped_testkit.media import (
    SIPP_OFFER,
    SIPP_PCAP,
    SpeechPeer,
    best_correlation,
    exchange,
    heard_pieces,
    pjsua,
    read_wav,
    sip_invite,
    sipp,
    sipp_auth_call_scenario,
    sipp_call_scenario,
    sipp_expect_bye,
    sipp_request,
    sipp_scenario,
    write_wav,
)
from voicetyped_testkit.processes import eventually, free_sip_port
from voicetyped_testkit.speech import resample, to_pcm
from voicetyped_testkit.speech_client import MediaSide

ENDED = runtime_pb2.CallEnded
SOURCE = runtime_pb2.DtmfReceived
QUIET = SynthesisConfig(noise_scale=0, noise_w_scale=0)
SENTENCE = "I would like to check the status of my order, please."


@pytest.fixture(scope="module")
def speech_16k(voice: Any) -> np.ndarray:
    return to_pcm(synthesize_16k(voice, SENTENCE, QUIET))


def wav_8k(tmp: Path, pcm16k: np.ndarray, name: str = "caller.wav") -> Path:
    return write_wav(
        tmp / name, to_pcm(resample(pcm16k.astype(np.float32) / 32768, 16000, 8000)), 8000
    )


def received(gw: Any) -> np.ndarray:
    (stream,) = gw.speech.streams.values()
    return np.frombuffer(stream.pcm(), dtype="<i2")


# -- SIPp ------------------------------------------------------------------------------------


async def test_sipp_call_starts_and_the_caller_hangs_up(start_gateway: Any) -> None:
    gw = await start_gateway()
    result = await sipp(gw, "uac", "-d", "1500")
    assert result.code == 0, result.output[-2000:]
    (call,) = await gw.runtime.wait_call()
    started = call.started
    assert started.caller.caller_id == "sipp"
    assert started.called_uri.startswith("sip:service@127.0.0.1")
    assert started.speech_endpoint == gw.speech.endpoint
    (ended,) = await call.wait_for("ended")
    assert ended.ended.reason == ENDED.REASON_CALLER_HANGUP
    (stream,) = gw.speech.streams.values()
    await asyncio.wait_for(stream.ended.wait(), 5)


def _pcap_payloads(path: Path, payload_type: int) -> list[bytes]:
    """RTP payloads of one payload type from a libpcap file (Ethernet/IPv4/UDP)."""
    data = path.read_bytes()
    little = data[:4] == b"\xd4\xc3\xb2\xa1"
    fmt = "<" if little else ">"
    offset, out = 24, []
    while offset + 16 <= len(data):
        _, _, length, _ = struct.unpack_from(fmt + "IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + length]
        offset += 16 + length
        ip = frame[14:]
        udp = ip[(ip[0] & 0x0F) * 4 :]
        rtp = udp[8:]
        if len(rtp) > 12 and rtp[1] & 0x7F == payload_type:
            out.append(rtp[12 + 4 * (rtp[0] & 0x0F) :])
    return out


async def test_sipp_pcap_audio_arrives_bit_exact_with_its_rfc4733_digit(start_gateway: Any) -> None:
    gw = await start_gateway()
    result = await sipp(gw, "uac_pcap")
    assert result.code == 0, result.output[-2000:]
    (call,) = await gw.runtime.wait_call()
    await call.wait_for("ended")
    assert call.digits() == [("1", SOURCE.SOURCE_RFC4733)]
    assert_received_sipp_alaw_pcap(gw)


def assert_received_sipp_alaw_pcap(gw: Any) -> None:
    """The speech stream got SIPp's g711a.pcap: its A-law payloads decoded and resampled the
    way the gateway must, bit for bit, all of it up to one frame."""
    from aiortp.codecs.g711 import PcmaCodec

    alaw = PcmaCodec()
    upsample = Resampler(8000, 16000)
    expected = np.frombuffer(
        b"".join(upsample(alaw.decode(p)) for p in _pcap_payloads(SIPP_PCAP / "g711a.pcap", 8)),
        dtype="<i2",
    )
    got = received(gw)
    assert len(got) >= len(expected) - 320
    n = min(len(got), len(expected))
    assert np.array_equal(got[:n], expected[:n]), "decoded audio differs from the source"


DELAYED_OFFER_IN_200 = """
    <action>
      <ereg regexp="m=audio [0-9]+ RTP/AVP 111 9 0 8 101 102" search_in="body"
            check_it="true" assign_to="offer"/>
      <ereg regexp="a=rtpmap:111 opus/48000/2" search_in="body" check_it="true"
            assign_to="opus"/>
    </action>
  """


def _delayed_offer_scenario(ack_body: str, after_ack: str) -> str:
    """An INVITE without SDP (RFC 3261 §13.2.1): the offer must come in the 200."""
    return sipp_call_scenario(
        "delayed offer", after_ack, offer=False, on_200=DELAYED_OFFER_IN_200, ack_body=ack_body
    )


DELAYED_ANSWER = """v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
"""

PLAY_THEN_BYE = (
    """  <nop><action><exec play_pcap_audio="pcap/g711a.pcap"/></action></nop>
  <pause milliseconds="8000"/>
  <nop><action><exec play_pcap_audio="pcap/dtmf_2833_1.pcap"/></action></nop>
  <pause milliseconds="1000"/>
"""
    + sipp_request("BYE", 2, retrans=True)
    + '  <recv response="200"/>'
)

EXPECT_BYE = sipp_expect_bye()


async def test_delayed_offer_gets_our_offer_and_the_ack_answer_is_used(
    start_gateway: Any, tmp_path: Path
) -> None:
    gw = await start_gateway()
    scenario = tmp_path / "delayed.xml"
    scenario.write_text(_delayed_offer_scenario(DELAYED_ANSWER, PLAY_THEN_BYE))
    result = await sipp(gw, str(scenario))
    assert result.code == 0, result.output[-2500:]
    (call,) = await gw.runtime.wait_call()
    (ended,) = await call.wait_for("ended")
    assert ended.ended.reason == ENDED.REASON_CALLER_HANGUP
    # The answer chose A-law (last in our offer) and telephone-event 101: both are used.
    assert call.digits() == [("1", SOURCE.SOURCE_RFC4733)]
    assert_received_sipp_alaw_pcap(gw)
    assert 'voicetyped_media_calls_answered_total{codec="PCMA"} 1.0' in gw.metrics()


async def test_delayed_offer_without_an_answer_in_the_ack_is_hung_up(
    start_gateway: Any, tmp_path: Path
) -> None:
    gw = await start_gateway()
    scenario = tmp_path / "no-answer.xml"
    scenario.write_text(_delayed_offer_scenario("", EXPECT_BYE))
    result = await sipp(gw, str(scenario), timeout_s=20)
    assert result.code == 0, result.output[-2500:]  # the gateway sent BYE at once
    assert not gw.runtime.calls, "no call reached the runtime"
    # The gateway goes on serving, and its RTP port is free again.
    assert (await sipp(gw, "uac", "-d", "300")).code == 0


# -- PJSIP -----------------------------------------------------------------------------------


async def test_pjsua_g711_both_ways_dtmf_by_info_and_rfc4733_hold_and_resume(
    start_gateway: Any, tmp_path: Path, speech_16k: np.ndarray
) -> None:
    gw = await start_gateway()
    caller_wav = wav_8k(tmp_path, speech_16k)
    recording = tmp_path / "heard.wav"
    bot = to_pcm(resample(speech_16k.astype(np.float32) / 32768, 16000, 8000))
    actions = [
        {"at": 4.0, "do": "dtmf_info", "digits": "5"},
        {"at": 4.6, "do": "dtmf_rfc", "digits": "7"},
        {"at": 5.5, "do": "hold"},
        {"at": 8.0, "do": "unhold"},
        {"at": 12.5, "do": "hangup"},
    ]
    # The actions' clock starts with the greeting, not at the INVITE: however long set-up
    # takes, the greeting ends before the hold.
    greeting_queued = asyncio.Event()
    peer = asyncio.ensure_future(
        pjsua(
            gw,
            play=caller_wav,
            record=recording,
            seconds=14,
            actions=actions,
            start=greeting_queued,
        )
    )
    (call,) = await gw.runtime.wait_call(timeout_s=15)
    (stream,) = await gw.speech.wait_stream()
    gw.speech.play(stream.session_id, "greeting", bot.tobytes())  # 0.0 s - ~3.5 s
    greeting_queued.set()
    await call.wait_for("held", timeout_s=15)
    gw.speech.play(stream.session_id, "while-held", bot.tobytes())  # waits for the resume
    result = await peer
    assert result.code == 0, result.output[-3000:]
    await call.wait_for("ended", timeout_s=10)
    kinds = call.kinds()
    assert kinds.index("held") < kinds.index("resumed") < kinds.index("ended")
    assert call.digits() == [("5", SOURCE.SOURCE_SIP_INFO), ("7", SOURCE.SOURCE_RFC4733)]
    assert call.events[-1].ended.reason == ENDED.REASON_CALLER_HANGUP

    # Caller -> gateway: the speech WAV, through G.711, at 16 kHz.
    corr, _ = best_correlation(received(gw), speech_16k)
    assert corr > 0.9, corr
    # Gateway -> caller: the greeting, then silence while held, then the rest after resume.
    heard, rate = read_wav(recording)
    assert rate in (8000, 16000)
    bot_at = resample(bot.astype(np.float32) / 32768, 8000, rate)
    # The recording starts with the media, before the actions' clock: shift by set-up time.
    (begun,) = [e["after_s"] for e in result.events() if e["event"] == "started"]
    greeting = heard_pieces(heard[: int(rate * (begun + 5))], to_pcm(bot_at), rate)
    assert greeting.fraction >= 0.8 and greeting.last_heard, greeting.pieces
    states = [e for e in result.events() if e["event"] == "action"]
    assert [s["do"] for s in states] == ["dtmf_info", "dtmf_rfc", "hold", "unhold", "hangup"]
    # Nothing was sent while held (PJSIP's packet count stood still), and the prompt queued
    # during the hold was played after the resume, whole.
    rx = {e["do"]: e["rx_packets"] for e in states}
    assert rx["hold"] > 100, rx
    assert rx["unhold"] - rx["hold"] <= 3, f"audio was sent while the caller held: {rx}"
    after = heard_pieces(heard[int(rate * (begun + 4.5)) :], to_pcm(bot_at), rate)
    assert after.fraction >= 0.8 and after.last_heard and after.in_order, after.pieces


async def test_runtime_hangup_sends_bye_after_the_last_prompt_played(
    start_gateway: Any, tmp_path: Path, speech_16k: np.ndarray
) -> None:
    """The runtime hangs up once the speech gateway has handed over the goodbye; the caller
    still hears all of it before the BYE (it was cut off under load)."""
    spans = tmp_path / "media-spans.jsonl"
    gw = await start_gateway(VOICETYPED_TRACE_FILE=str(spans))
    recording = tmp_path / "heard.wav"
    peer = asyncio.ensure_future(pjsua(gw, record=recording, seconds=20))
    (call,) = await gw.runtime.wait_call(timeout_s=15)
    (stream,) = await gw.speech.wait_stream()
    goodbye = to_pcm(resample(speech_16k.astype(np.float32) / 32768, 16000, 8000))
    gw.speech.play(stream.session_id, "goodbye", goodbye.tobytes())  # ~3.5 s, handed over at once
    await eventually(  # its first RTP went out: every chunk has reached the gateway
        lambda: spans.exists() and "media.first_rtp" in spans.read_text(), 10, "the first RTP"
    )
    command = gw.runtime.hangup(call.session_id)
    (result,) = await call.wait_for("command_result", timeout_s=15)
    assert result.command_result.command_id == command and result.command_result.success
    (ended,) = await call.wait_for("ended")
    assert ended.ended.reason == ENDED.REASON_BOT_HANGUP
    out = await peer
    states = [e["state"] for e in out.events() if e["event"] == "state"]
    assert states[-1] == "DISCONNECTED", out.output[-2000:]
    heard, rate = read_wav(recording)
    expected = to_pcm(resample(goodbye.astype(np.float32) / 32768, 8000, rate))
    got = heard_pieces(heard, expected, rate)
    # Its last words above all: the BYE used to cut them off.
    assert got.last_heard and got.end <= len(heard), "the recording stops inside the goodbye"
    assert got.fraction >= 0.8 and got.in_order, got.pieces


async def test_transfer_refers_the_caller_and_leaves(start_gateway: Any) -> None:
    gw = await start_gateway()
    target_port = free_sip_port()
    target = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            "sipp",
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            str(target_port),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "30s",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    )
    target_proc = await target
    peer = asyncio.ensure_future(pjsua(gw, seconds=14))
    (call,) = await gw.runtime.wait_call(timeout_s=15)
    await asyncio.sleep(0.5)
    uri = f"sip:agent@127.0.0.1:{target_port}"
    command = gw.runtime.transfer(call.session_id, uri)
    (result,) = await call.wait_for("command_result", timeout_s=20)
    assert result.command_result.command_id == command
    assert result.command_result.success, result.command_result
    (ended,) = await call.wait_for("ended")
    assert ended.ended.reason == ENDED.REASON_TRANSFERRED
    out = await peer
    transfers = [e for e in out.events() if e["event"] == "transfer"]
    assert transfers and transfers[0]["target"].strip("<>") == uri
    target_proc.terminate()
    await target_proc.wait()
    assert 'voicetyped_media_transfers_total{outcome="ok"} 1.0' in gw.metrics()


@pytest.mark.parametrize(("status", "phrase"), [(486, "Busy Here"), (501, "Not Implemented")])
async def test_a_refused_transfer_is_reported_and_the_call_stays(
    start_gateway: Any, status: int, phrase: str
) -> None:
    """pjsua refuses the REFER: the runtime gets the status to decide on, the gateway logs it,
    and the caller is still connected (the dialog decides what happens next)."""
    gw = await start_gateway()
    peer = asyncio.ensure_future(pjsua(gw, seconds=12, transfer_status=status))
    (call,) = await gw.runtime.wait_call(timeout_s=15)
    uri = "sip:pharmacist@127.0.0.1:5999"
    command = gw.runtime.transfer(call.session_id, uri)
    (result,) = await call.wait_for("command_result", timeout_s=20)
    r = result.command_result
    assert (r.command_id, r.success, r.sip_status) == (command, False, status), r
    assert r.detail == f"REFER answered {status} {phrase}"
    (failed,) = gw.logged("transfer failed")
    assert (failed["sip_status"], failed["target"]) == (status, uri)
    assert failed["reason"] == r.detail and failed["session_id"] == call.session_id
    assert 'voicetyped_media_transfers_total{outcome="failed"} 1.0' in gw.metrics()
    assert "ended" not in call.kinds(), "the call must stay up after a refused transfer"
    gw.runtime.hangup(call.session_id)
    (ended,) = await call.wait_for("ended")
    assert ended.ended.reason == ENDED.REASON_BOT_HANGUP
    out = await peer
    assert [e["target"].strip("<>") for e in out.events() if e["event"] == "transfer"] == [uri]


async def test_inband_dtmf_is_detected(start_gateway: Any, tmp_path: Path) -> None:
    gw = await start_gateway(VOICETYPED_INBAND_DTMF="on")
    gap = np.zeros(4000, dtype=np.int16)
    keys = np.concatenate([gap, tone("4", 120, 8000), gap, tone("2", 120, 8000), gap, gap])
    wav = write_wav(tmp_path / "keys.wav", keys, 8000)
    result = await pjsua(gw, play=wav, seconds=5)
    assert result.code == 0
    (call,) = await gw.runtime.wait_call()
    await call.wait_for("ended", timeout_s=10)
    assert call.digits() == [("4", SOURCE.SOURCE_INBAND), ("2", SOURCE.SOURCE_INBAND)]


# -- baresip (wideband codecs) ---------------------------------------------------------------


@pytest.mark.parametrize("codec", ["g722", "opus"])
async def test_baresip_wideband_audio_matches_the_source(
    start_gateway: Any, tmp_path: Path, speech_16k: np.ndarray, codec: str
) -> None:
    from voicetyped_testkit.media import baresip

    gw = await start_gateway()
    rate = 48000 if codec == "opus" else 16000
    source = write_wav(
        tmp_path / "source.wav",
        to_pcm(resample(speech_16k.astype(np.float32) / 32768, 16000, rate))
        if rate != 16000
        else speech_16k,
        rate,
    )
    recordings = tmp_path / "rec"
    recordings.mkdir()
    result = await baresip(gw, source, codec, recordings, seconds=8)
    (call,) = await gw.runtime.wait_call(timeout_s=15)
    await call.wait_for("ended", timeout_s=15)
    assert gw.logged("call answered")[0]["codec"] == {"g722": "G722", "opus": "opus"}[codec]
    corr, _ = best_correlation(received(gw), speech_16k)
    assert corr > (0.8 if codec == "opus" else 0.9), (corr, result.output[-1500:])


# -- SIP behaviour at the edges --------------------------------------------------------------


async def test_malformed_requests_are_answered_and_calls_still_work(start_gateway: Any) -> None:
    # The cases of the validation tests (tests/ is no package: load by path).
    spec = importlib.util.spec_from_file_location(
        "sip_cases", Path(__file__).with_name("test_sip_validate.py")
    )
    assert spec is not None and spec.loader is not None
    cases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cases)
    INVALID = cases.INVALID  # noqa: N806

    gw = await start_gateway()
    for name, data, status in INVALID:
        replies = await asyncio.to_thread(exchange, gw.sip_port, data)
        assert replies, f"{name}: no answer"
        assert replies[-1].startswith(f"SIP/2.0 {status} "), (name, replies[-1][:200])
    # Garbage, binary and a truncated message: no answer possible, the gateway stays up.
    for junk in (b"\x00\xff" * 300, b"INVITE", b"SIP/2.0 200 OK\r\n\r\n", b"\r\n\r\n"):
        await asyncio.to_thread(exchange, gw.sip_port, junk, 0.3)
    # Over TCP too, on the same connection.
    replies = await asyncio.to_thread(exchange, gw.sip_port, INVALID[0][1], 3.0, "tcp")
    assert replies and replies[-1].startswith("SIP/2.0 400 ")
    # A broken SDP gets 488 with the reason; OPTIONS gets 200 with Allow.
    bad_sdp = sip_invite(gw.sip_port, "bad-sdp", sdp="v=0\r\nm=audio x RTP/AVP 0\r\n")
    replies = await asyncio.to_thread(exchange, gw.sip_port, bad_sdp)
    assert replies[-1].startswith("SIP/2.0 488 ") and "Warning: 399" in replies[-1]
    assert 'voicetyped_media_sip_rejected_total{status="400"}' in gw.metrics()
    # And a normal call still goes through.
    result = await sipp(gw, "uac", "-d", "500")
    assert result.code == 0, result.output[-2000:]


async def test_options_answers_with_allow(start_gateway: Any) -> None:
    gw = await start_gateway()
    options = (
        f"OPTIONS sip:bot@127.0.0.1:{gw.sip_port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKopt\r\nMax-Forwards: 70\r\n"
        "From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:bot@127.0.0.1>\r\nCall-ID: opt1\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    (reply,) = await asyncio.to_thread(exchange, gw.sip_port, options)
    assert reply.startswith("SIP/2.0 200 ")
    allow = next(line for line in reply.split("\r\n") if line.startswith("Allow:"))
    for method in ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO"):
        assert method in allow


async def test_cancel_while_ringing_gets_487(start_gateway: Any, tmp_path: Path) -> None:
    gw = await start_gateway(VOICETYPED_RING_MS="3000")
    scenario = tmp_path / "cancel.xml"
    scenario.write_text(CANCEL_SCENARIO)
    result = await sipp(gw, str(scenario))
    assert result.code == 0, result.output[-2500:]
    await asyncio.sleep(0.5)
    assert not gw.runtime.calls, "a cancelled call never reaches the runtime"
    assert 'voicetyped_media_calls_ended_total{reason="caller_hangup"} 1.0' in gw.metrics()


async def test_at_capacity_new_calls_get_503_with_retry_after(start_gateway: Any) -> None:
    gw = await start_gateway(VOICETYPED_MAX_CALLS="1", VOICETYPED_RETRY_AFTER_S="7")
    peer = asyncio.ensure_future(pjsua(gw, seconds=5))
    await gw.runtime.wait_call(timeout_s=15)
    replies = await asyncio.to_thread(exchange, gw.sip_port, sip_invite(gw.sip_port, "second"))
    assert replies[-1].startswith("SIP/2.0 503 "), replies
    assert "Retry-After: 7" in replies[-1]
    await peer
    assert 'voicetyped_media_calls_refused_total{reason="capacity"} 1.0' in gw.metrics()


async def test_speech_at_capacity_gets_the_new_call_503_and_the_running_one_goes_on(
    start_gateway: Any,
) -> None:
    gw = await start_gateway(speech=SpeechPeer(max_streams=1), VOICETYPED_RETRY_AFTER_S="6")
    peer = asyncio.ensure_future(pjsua(gw, seconds=6, actions=[{"at": 5.0, "do": "hangup"}]))
    (call,) = await gw.runtime.wait_call(timeout_s=15)
    replies = await asyncio.to_thread(exchange, gw.sip_port, sip_invite(gw.sip_port, "beyond"))
    final = replies[-1]
    assert final.startswith("SIP/2.0 503 "), replies
    assert "Retry-After: 6" in final
    assert 'Warning: 399 voicetyped "speech recognition at capacity"' in final
    out = await peer
    assert out.code == 0
    (ended,) = await call.wait_for("ended")
    assert ended.ended.reason == ENDED.REASON_CALLER_HANGUP
    assert len(gw.runtime.calls) == 1, "the refused call never reached the runtime"
    assert 'voicetyped_media_calls_refused_total{reason="speech_capacity"} 1.0' in gw.metrics()


async def test_a_new_call_refused_by_a_full_speech_replica_goes_to_another(
    start_gateway: Any,
) -> None:
    full, roomy = SpeechPeer(max_streams=1), SpeechPeer(max_streams=2)
    await roomy.server.start()
    try:
        gw = await start_gateway(
            speech=full, VOICETYPED_SPEECH_TARGET=f"ipv4:{full.endpoint},{roomy.endpoint}"
        )
        async with grpc.aio.insecure_channel(full.endpoint) as channel:
            filler = MediaSide(channel, "already-here")
            await filler.open()  # the first replica is at capacity from now on
            statuses = []
            for n in range(3):
                invite = sip_invite(gw.sip_port, f"spread-{n}")
                replies = await asyncio.to_thread(exchange, gw.sip_port, invite)
                statuses.append(replies[-1].split("\r\n", 1)[0] if replies else "")
            # Round-robin over the two: an attempt that met the full one went on to the other.
            assert statuses == ["SIP/2.0 200 OK"] * 2 + ["SIP/2.0 503 Service Unavailable"]
            assert list(full.streams) == ["already-here"]
            assert len(roomy.streams) == 2
            assert full.refused >= 1 and roomy.refused >= 1, "the third call tried both"
            await filler.close()
    finally:
        await roomy.server.stop(0)
    assert 'voicetyped_media_calls_refused_total{reason="speech_capacity"} 1.0' in gw.metrics()


async def test_sigterm_refuses_new_calls_and_lets_active_ones_finish(start_gateway: Any) -> None:
    gw = await start_gateway()
    peer = asyncio.ensure_future(pjsua(gw, seconds=6, actions=[{"at": 5.0, "do": "hangup"}]))
    (call,) = await gw.runtime.wait_call(timeout_s=15)
    assert gw.process.proc is not None
    gw.process.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    replies = await asyncio.to_thread(exchange, gw.sip_port, sip_invite(gw.sip_port, "late"))
    assert replies[-1].startswith("SIP/2.0 503 "), replies
    assert gw.process.proc.poll() is None, "the active call keeps the gateway up"
    out = await peer
    assert out.code == 0
    (ended,) = await call.wait_for("ended")
    assert ended.ended.reason == ENDED.REASON_CALLER_HANGUP
    code = await asyncio.to_thread(gw.process.proc.wait, 10)
    assert code == 0


async def test_source_allowlist_and_digest_authentication(
    start_gateway: Any, tmp_path: Path
) -> None:
    gw = await start_gateway(VOICETYPED_ALLOWED_CIDRS='["10.0.0.0/8"]')
    replies = await asyncio.to_thread(exchange, gw.sip_port, sip_invite(gw.sip_port, "nope"))
    assert replies[-1].startswith("SIP/2.0 403 ")
    users = tmp_path / "users"
    users.write_text("pjsua:s3cret\n")
    gw2 = await start_gateway(VOICETYPED_DIGEST_USERS_FILE=str(users))
    replies = await asyncio.to_thread(exchange, gw2.sip_port, sip_invite(gw2.sip_port, "noauth"))
    assert replies[-1].startswith("SIP/2.0 401 ")
    assert replies[-1].count("WWW-Authenticate: Digest") == 2
    # SIPp answers the challenge (MD5) and the call goes through; wrong credentials do not.
    # (The pjsua2 wheel refuses every digest algorithm, so SIPp is the independent client.)
    scenario = tmp_path / "auth.xml"
    scenario.write_text(sipp_auth_call_scenario("pjsua"))
    good = await sipp(gw2, str(scenario), "-au", "pjsua", "-ap", "s3cret")
    assert good.code == 0, good.output[-2500:]
    bad = await sipp(gw2, str(scenario), "-au", "pjsua", "-ap", "wrong", timeout_s=15)
    assert bad.code != 0
    (call,) = await gw2.runtime.wait_call()
    await call.wait_for("ended")
    assert "s3cret" not in gw2.process.log.read_text()


async def test_session_timer_is_negotiated(start_gateway: Any) -> None:
    gw = await start_gateway()
    invite = sip_invite(
        gw.sip_port, "timer", extra="Supported: timer\r\nSession-Expires: 1200;refresher=uac\r\n"
    )
    replies = await asyncio.to_thread(exchange, gw.sip_port, invite)
    assert replies[-1].startswith("SIP/2.0 200 "), replies
    assert "Session-Expires: 1200;refresher=uac" in replies[-1]
    assert "Require: timer" in replies[-1]


CANCEL_BRANCH = "z9hG4bK-[pid]-[call_number]"  # the INVITE's, which the CANCEL names
CANCEL_SCENARIO = sipp_scenario(
    "INVITE then CANCEL while ringing",
    sipp_request("INVITE", 1, body=SIPP_OFFER, branch=CANCEL_BRANCH, in_dialog=False, retrans=True)
    + """  <recv response="100" optional="true"/>
  <recv response="180"/>
"""
    + sipp_request("CANCEL", 1, branch=CANCEL_BRANCH, in_dialog=False)
    + """  <recv response="200"/>
  <recv response="487"/>
"""
    + sipp_request("ACK", 1, branch=CANCEL_BRANCH),
)
