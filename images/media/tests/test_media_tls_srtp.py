"""SIP over TLS and SRTP (SDES) with real peers: PJSIP (pjsua2) places the calls.

Not SIPp: Debian's sip-tester is built without TLS (``-t l1`` is refused), so the independent
TLS + SRTP caller is pjsua2, which links its own OpenSSL and libsrtp. The test PKI (CA, server,
client, expired and foreign certificates) is made per test in a tmp dir
(:mod:`voicetyped_testkit.pki`). Audio is checked on the wire: the UDP datagrams on loopback
are captured (:mod:`voicetyped_testkit.capture`, a raw socket: the tests run as root), decrypted
here with libsrtp and the key each side put in its SDP, and compared bit for bit with what the
gateway handed the speech side (caller -> gateway) and with the audio the gateway was given to
play (gateway -> caller).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortp.codecs.g711 import PcmuCodec
from aiortp.packet import RtpPacket
from pylibsrtp import Policy, Session
from voicetyped_media.codecs.resample import Resampler
from voicetyped_media.rtp.srtp import SdesCrypto, SrtpKeys, SrtpSession, parse_crypto
from voicetyped_media.sdp import SdpError, SrtpPolicyError, accept_answer, make_offer, negotiate
from voicetyped_testkit.capture import LoopbackCapture
from voicetyped_testkit.media import (
    Finished,
    best_correlation,
    heard_pieces,
    pjsua,
    read_wav,
    write_wav,
)
from voicetyped_testkit.pki import Pki, make_pki
from voicetyped_testkit.processes import free_sip_port

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 10),
    "AES_CM_128_HMAC_SHA1_32": (Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 4),
}


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def tls_env(pki: Pki, **more: str) -> dict[str, str]:
    return {
        "VOICETYPED_SIP_TRANSPORTS": '["udp", "tls"]',
        "VOICETYPED_SIP_TLS_PORT": str(free_sip_port()),
        "VOICETYPED_TLS_CERT_FILE": str(pki.server.cert),
        "VOICETYPED_TLS_KEY_FILE": str(pki.server.key),
        **more,
    }


def tls_target(gw: Any, user: str = "bot", scheme: str = "sip") -> str:
    port = gw.process.env["VOICETYPED_SIP_TLS_PORT"]
    return (
        f"sips:{user}@127.0.0.1:{port}"
        if scheme == "sips"
        else f"sip:{user}@127.0.0.1:{port};transport=tls"
    )


def tls_options(pki: Pki, srtp: str = "mandatory", client: Any = None) -> list[str]:
    options = ["--transport", "tls", "--tls-ca", str(pki.ca.cert), "--srtp", srtp, "--emit-sdp"]
    if client is not None:
        options += ["--tls-cert", str(client.cert), "--tls-key", str(client.key)]
    return options


def probe_signal(rate: int = 8000, seconds: float = 3.0) -> np.ndarray:
    """A loud, changing signal (two tones, one gliding, in bursts): cheap to make, and each
    stretch of it is unlike the others, so a correlation finds where it is."""
    t = np.arange(int(rate * seconds)) / rate
    glide = np.sin(2 * np.pi * (300 * t + 200 * t**2))
    bursts = (np.sin(2 * np.pi * 1.5 * t) > -0.3).astype(np.float64)
    signal = 0.45 * glide * bursts + 0.25 * np.sin(2 * np.pi * 1100 * t)
    return (signal * 32767 * 0.8).astype(np.int16)


def answered(result: Finished) -> str:
    """The 200 OK pjsua got for its INVITE (whole)."""
    finals = [
        e["message"]
        for e in result.events()
        if e["event"] == "response" and e["message"].startswith("SIP/2.0 200")
    ]
    assert finals, result.output[-3000:]
    return str(finals[0])


def final_code(result: Finished) -> int:
    codes = [e["code"] for e in result.events() if e["event"] == "state"]
    assert codes, result.output[-3000:]
    return int(codes[-1])


def sdp_media(sdp: str) -> tuple[int, str, str, bytes]:
    """(RTP port, protocol, crypto suite, master key + salt) of the audio stream."""
    m = re.search(r"^m=audio (\d+) (\S+)", sdp, re.M)
    c = re.search(r"^a=crypto:\d+ (\S+) inline:([A-Za-z0-9+/=]+)", sdp, re.M)
    assert m is not None and c is not None, sdp
    return int(m.group(1)), m.group(2), c.group(1), base64.b64decode(c.group(2))


def decrypt(packets: list[bytes], suite: str, key: bytes) -> list[RtpPacket]:
    """SRTP packets from the wire in clear, each checked to be encrypted and authenticated."""
    profile, tag = PROFILES[suite]
    session = Session(Policy(key, Policy.SSRC_ANY_INBOUND, srtp_profile=profile))
    out = []
    for data in packets:
        clear = session.unprotect(data)  # raises when not authentic
        assert len(data) == len(clear) + tag
        assert data[12:-tag] != clear[12:], "an RTP payload went in clear"
        out.append(RtpPacket.parse(clear))
    return out


def body(message: str) -> str:
    return message.replace("\r\n", "\n").split("\n\n", 1)[1]


@pytest.mark.parametrize("suite", list(PROFILES))
async def test_tls_srtp_call_audio_is_bit_exact_both_ways(
    start_gateway: Any, pki: Pki, tmp_path: Path, suite: str
) -> None:
    gw = await start_gateway(
        **tls_env(pki, VOICETYPED_SRTP="required", VOICETYPED_CODECS='["PCMU"]')
    )
    caller = probe_signal()
    bot = probe_signal(seconds=2.0)[::-1].copy()
    source = write_wav(tmp_path / "caller.wav", caller, 8000)
    recording = tmp_path / "heard.wav"
    queued = asyncio.Event()
    with LoopbackCapture() as wire:
        peer = asyncio.ensure_future(
            pjsua(
                gw,
                target=tls_target(gw),
                play=source,
                record=recording,
                seconds=5,
                start=queued,
                options=[*tls_options(pki), "--srtp-suite", suite],
            )
        )
        (call,) = await gw.runtime.wait_call(timeout_s=20)
        (stream,) = await gw.speech.wait_stream()
        gw.speech.play(stream.session_id, "bot", bot.tobytes())
        queued.set()
        result = await peer
        await call.wait_for("ended", timeout_s=10)
    assert result.code == 0, result.output[-3000:]

    (logged,) = gw.logged("call answered")
    assert (logged["srtp"], logged["tls"]) == (suite, True)
    assert not gw.logged(
        "SRTP keyed over unencrypted SIP: the SDES keys can be read on the path; use TLS"
    )
    # Signalling: the 200 came over TLS and says how to reach us (TLS) in its Contact.
    ok = answered(result)
    assert re.search(r"^Contact: <sip:127\.0\.0\.1:\d+;transport=tls>", ok, re.M | re.I), ok
    (offer,) = [e["sdp"] for e in result.events() if e["event"] == "offer"]
    pjsua_port, offer_proto, offer_suite, pjsua_key = sdp_media(offer)
    gw_port, answer_proto, answer_suite, gw_key = sdp_media(body(ok))
    assert (offer_proto, answer_proto) == ("RTP/SAVP", "RTP/SAVP")
    assert answer_suite == offer_suite == suite
    assert gw_key != pjsua_key and len(gw_key) == 30

    # Caller -> gateway: what pjsua encrypted, decrypted with its key, decoded as the gateway
    # must: the gateway gave the speech side exactly that.
    uplink = sorted(
        decrypt(wire.between(pjsua_port, gw_port), suite, pjsua_key),
        key=lambda p: p.sequence_number,
    )
    assert len(uplink) > 150, len(uplink)
    pcmu, upsample = PcmuCodec(), Resampler(8000, 16000)
    expected = np.frombuffer(
        b"".join(upsample(pcmu.decode(p.payload)) for p in uplink if p.payload_type == 0),
        dtype="<i2",
    )
    got = np.frombuffer(stream.pcm(), dtype="<i2")
    assert len(got) >= len(expected) - 320, (len(got), len(expected))
    n = min(len(got), len(expected))
    assert np.array_equal(got[:n], expected[:n]), "decoded audio differs from what was sent"
    corr, _ = best_correlation(got, upsample_16k(caller))
    assert corr > 0.9, corr

    # Gateway -> caller: the bot audio, G.711-encoded frame by frame, is in the SRTP stream
    # bit for bit, in order.
    downlink = [p.payload for p in decrypt(wire.between(gw_port, pjsua_port), suite, gw_key)]
    frames = [pcmu.encode(bot[i : i + 160].tobytes()) for i in range(0, len(bot) - 159, 160)]
    start = downlink.index(frames[0])
    assert downlink[start : start + len(frames)] == frames
    # And pjsua decrypted it: what it heard is the bot audio.
    heard, rate = read_wav(recording)
    assert heard_pieces(heard, resample_to(bot, rate), rate).fraction >= 0.8


def upsample_16k(pcm8k: np.ndarray) -> np.ndarray:
    return np.frombuffer(Resampler(8000, 16000)(pcm8k.tobytes(), last=True), dtype="<i2")


def resample_to(pcm8k: np.ndarray, rate: int) -> np.ndarray:
    if rate == 8000:
        return pcm8k
    return np.frombuffer(Resampler(8000, rate)(pcm8k.tobytes(), last=True), dtype="<i2")


async def test_srtp_policy_per_deployment_and_per_dialog(start_gateway: Any, pki: Pki) -> None:
    """optional by default; a route's dialog may require SRTP or turn it off. Refusals are 488
    with a Warning naming the policy; SRTP over plain UDP SIP works and is warned about."""
    gw = await start_gateway(
        **tls_env(
            pki,
            VOICETYPED_DIALOG_ROUTES=json.dumps({"secure": "vault", "plain": "lobby"}),
            VOICETYPED_DIALOG_SRTP=json.dumps({"vault": "required", "lobby": "off"}),
        )
    )

    async def call(user: str, srtp: str, transport: str = "tls") -> Finished:
        options = tls_options(pki, srtp) if transport == "tls" else ["--srtp", srtp, "--emit-sdp"]
        target = (
            tls_target(gw, user) if transport == "tls" else f"sip:{user}@127.0.0.1:{gw.sip_port}"
        )
        return await pjsua(gw, target=target, seconds=1.5, options=options)

    plain_to_vault = await call("secure", "disabled")
    assert final_code(plain_to_vault) == 488, plain_to_vault.output[-2000:]
    savp_to_lobby = await call("plain", "mandatory")
    assert final_code(savp_to_lobby) == 488, savp_to_lobby.output[-2000:]
    refusals = [
        e["message"]
        for r in (plain_to_vault, savp_to_lobby)
        for e in r.events()
        if e["event"] == "response" and e["message"].startswith("SIP/2.0 488")
    ]
    assert len(refusals) == 2, (plain_to_vault.output[-3000:], savp_to_lobby.output[-3000:])
    assert "SRTP is required here" in refusals[0] and "SRTP is off here" in refusals[1], refusals
    assert 'voicetyped_media_calls_refused_total{reason="srtp_policy"} 2.0' in gw.metrics()

    plain_to_bot = await call("bot", "disabled")
    srtp_over_udp = await call("bot", "mandatory", transport="udp")
    for result in (plain_to_bot, srtp_over_udp):
        assert result.code == 0 and final_code(result) == 200, result.output[-2000:]
        body_sdp = body(answered(result))
        assert ("a=crypto:" in body_sdp) == (result is srtp_over_udp), body_sdp
    await gw.runtime.wait_call(timeout_s=15, count=2)
    answers = gw.logged("call answered")
    assert sorted((a["srtp"], a["tls"]) for a in answers) == [
        ("", True),
        ("AES_CM_128_HMAC_SHA1_80", False),
    ]
    (warning,) = gw.logged(
        "SRTP keyed over unencrypted SIP: the SDES keys can be read on the path; use TLS"
    )
    assert warning["transport"] == "UDP"
    assert "inline:" not in gw.process.log.read_text(), "an SRTP key was logged"


async def test_client_certificate_is_required_when_a_client_ca_is_set(
    start_gateway: Any, pki: Pki
) -> None:
    gw = await start_gateway(**tls_env(pki, VOICETYPED_TLS_CLIENT_CA_FILE=str(pki.ca.cert)))
    carrier = await pjsua(
        gw,
        target=tls_target(gw, scheme="sips"),
        seconds=1.5,
        options=tls_options(pki, client=pki.client),
    )
    assert final_code(carrier) == 200, carrier.output[-2000:]
    # sips: Request-URI -> our Contact is a SIPS URI (RFC 3261 §12.1.1).
    assert re.search(r"^Contact: <sips:127\.0\.0\.1:\d+>", answered(carrier), re.M | re.I)
    for client in (pki.stranger, None):
        refused = await pjsua(
            gw, target=tls_target(gw), seconds=1.5, options=tls_options(pki, client=client)
        )
        assert final_code(refused) != 200, refused.output[-2000:]
        assert not [e for e in refused.events() if e["event"] == "response"], refused.output
    await gw.runtime.wait_call(timeout_s=10)
    assert len(gw.runtime.calls) == 1


@pytest.mark.parametrize(
    ("cert", "key", "says"),
    [
        ("expired", "expired", "certificate expired on"),
        ("server", "client", "the key does not match the certificate"),
        ("server", "missing", "cannot be read"),
    ],
)
def test_a_bad_certificate_or_key_refuses_to_start(
    pki: Pki, tmp_path: Path, cert: str, key: str, says: str
) -> None:
    cert_file = getattr(pki, cert).cert
    key_file = getattr(pki, key).key if key != "missing" else tmp_path / "none.key"
    env = {
        **os.environ,
        **tls_env(pki),
        "VOICETYPED_TLS_CERT_FILE": str(cert_file),
        "VOICETYPED_TLS_KEY_FILE": str(key_file),
        "VOICETYPED_SIP_PORT": str(free_sip_port()),
        "VOICETYPED_HTTP_PORT": "0",
        "VOICETYPED_GRPC_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "voicetyped_media"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voicetyped-media: tls_"), done.stderr
    assert says in lines[0], lines[0]


# -- SDES and the SRTP policy, without a peer ------------------------------------------------

KEY = base64.b64encode(bytes(range(30))).decode()
SAVP_OFFER = (
    "v=0\r\no=a 1 1 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\n"
    "m=audio 4000 RTP/SAVP 0\r\n"
    f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2:4\r\n"  # an MKI: skipped
    f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY} UNENCRYPTED_SRTP\r\n"  # skipped
    f"a=crypto:3 AES_256_CM_HMAC_SHA1_80 inline:{KEY}\r\n"  # another suite: skipped
    f"a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:{KEY}|2^31\r\n"
)


def test_the_first_usable_crypto_line_is_answered_with_our_own_key() -> None:
    n = negotiate(SAVP_OFFER, "10.0.0.1", 20000, srtp="required")
    assert n.srtp is not None
    assert (n.srtp.remote.tag, n.srtp.remote.suite, n.srtp.remote.key) == (
        4,
        "AES_CM_128_HMAC_SHA1_32",
        bytes(range(30)),
    )
    (line,) = [x for x in n.answer.splitlines() if x.startswith("a=crypto:")]
    assert line.startswith("a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:")
    assert parse_crypto(line[len("a=crypto:") :]) == n.srtp.local != n.srtp.remote
    assert "m=audio 20000 RTP/SAVP 0" in n.answer
    assert KEY not in repr(n) and base64.b64encode(n.srtp.local.key).decode() not in repr(n)
    # A re-INVITE keeps our key (and a new key of the caller's is taken).
    again = negotiate(
        SAVP_OFFER.replace(KEY, base64.b64encode(bytes(30)).decode()),
        "10.0.0.1",
        20000,
        local_crypto=n.srtp.local,
    )
    assert again.srtp is not None and again.srtp.local == n.srtp.local
    assert again.srtp.remote.key == bytes(30)


@pytest.mark.parametrize(
    ("policy", "proto", "refusal"),
    [
        ("required", "RTP/AVP", "SRTP is required here"),
        ("off", "RTP/SAVP", "SRTP is off here"),
    ],
)
def test_the_policy_refuses_what_it_excludes(policy: str, proto: str, refusal: str) -> None:
    offer = SAVP_OFFER.replace("RTP/SAVP", proto)
    with pytest.raises(SrtpPolicyError, match=refusal):
        negotiate(offer, "10.0.0.1", 20000, srtp=policy)  # type: ignore[arg-type]


def test_optional_answers_plain_rtp_to_plain_rtp_even_with_crypto_lines() -> None:
    n = negotiate(SAVP_OFFER.replace("RTP/SAVP", "RTP/AVP"), "10.0.0.1", 20000)
    assert n.srtp is None and "a=crypto" not in n.answer


def test_delayed_offer_under_required_offers_savp_and_needs_the_key_taken() -> None:
    ours = SdesCrypto.fresh(1, "AES_CM_128_HMAC_SHA1_80")
    offer = make_offer("10.0.0.1", 20000, ("PCMU",), crypto=ours)
    assert "m=audio 20000 RTP/SAVP 0 101" in offer and f"a=crypto:{ours.attribute()}" in offer
    answer = (
        "v=0\r\no=a 1 1 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\n"
        f"m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n"
    )
    n = accept_answer(answer, "10.0.0.1", 20000, ("PCMU",), offered=ours)
    assert n.srtp == SrtpKeys(
        local=ours, remote=SdesCrypto(1, "AES_CM_128_HMAC_SHA1_80", bytes(range(30)))
    )
    with pytest.raises(SdpError, match="a=crypto"):
        accept_answer(SAVP_OFFER, "10.0.0.1", 20000, ("PCMU",), offered=ours)
    with pytest.raises(SdpError):
        accept_answer(
            SAVP_OFFER.replace("RTP/SAVP", "RTP/AVP"), "10.0.0.1", 20000, ("PCMU",), offered=ours
        )


def test_srtp_session_protects_for_the_peer_and_drops_forgeries() -> None:
    ours, theirs = (SdesCrypto.fresh(1, "AES_CM_128_HMAC_SHA1_80") for _ in range(2))
    gateway = SrtpSession(SrtpKeys(local=ours, remote=theirs))
    peer = SrtpSession(SrtpKeys(local=theirs, remote=ours))
    rtp = bytes([0x80, 0, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4]) + bytes(range(160))
    wire = gateway.protect(rtp)
    assert len(wire) == len(rtp) + 10 and wire[12:172] != rtp[12:]
    assert peer.unprotect(wire) == rtp
    assert peer.unprotect(wire) is None  # a replay
    forged = peer.protect(rtp[:12] + bytes(160))
    assert gateway.unprotect(forged[:-1] + bytes([forged[-1] ^ 1])) is None
    assert gateway.unprotect(forged) == rtp[:12] + bytes(160)
    assert (gateway.rejected, peer.rejected) == (1, 1)
