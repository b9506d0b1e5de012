"""The media path's parts on their own: reorder buffer, resampler, port pool, playout queue,
SIP INFO bodies, digest authentication."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from aiosipua import SipMessage
from voicetyped_media.codecs.codec import open_codec
from voicetyped_media.codecs.resample import Resampler
from voicetyped_media.dtmf.sip_info import InfoDtmfError, parse_info_dtmf
from voicetyped_media.rtp.jitter import ReorderBuffer
from voicetyped_media.rtp.pacer import Playout
from voicetyped_media.rtp.ports import PortPool, PortsExhausted
from voicetyped_media.rtp.stream import MediaStream
from voicetyped_media.sdp import CodecChoice
from voicetyped_media.sip.inbound import DigestAuth, InboundPolicy, load_users


def collect() -> tuple[ReorderBuffer, list[tuple[bytes | None, int]]]:
    out: list[tuple[bytes | None, int]] = []
    return ReorderBuffer(lambda p, ts: out.append((p, ts)), 160, window=3), out


def test_in_order_frames_pass_without_delay() -> None:
    buf, out = collect()
    for seq in range(10):
        buf.add(seq, seq * 160, bytes([seq]))
        assert len(out) == seq + 1, "released at once"
    assert buf.stats.lost == buf.stats.late == 0


def test_reordered_frames_come_out_in_order() -> None:
    buf, out = collect()
    for seq in (0, 2, 1, 3, 5, 4):
        buf.add(seq, seq * 160, bytes([seq]))
    assert [p for p, _ in out] == [bytes([i]) for i in range(6)]
    assert buf.stats.lost == 0


def test_a_lost_frame_is_concealed_after_the_window() -> None:
    buf, out = collect()
    for seq in (0, 1, 3, 4):
        buf.add(seq, seq * 160, bytes([seq]))
    assert len(out) == 2, "waiting for 2"
    buf.add(5, 5 * 160, b"\x05")  # third frame after the gap: give up on 2
    assert out[2] == (None, 320)
    assert [p for p, _ in out[3:]] == [b"\x03", b"\x04", b"\x05"]
    assert buf.stats.lost == 1
    buf.add(2, 320, b"\x02")  # too late now
    assert buf.stats.late == 1 and len(out) == 6


def test_flush_releases_the_tail_and_skips_are_not_loss() -> None:
    buf, out = collect()
    buf.add(65534, 0, b"a")
    buf.skip(65535)  # a telephone-event packet
    buf.add(1, 320, b"c")  # across the 16-bit wrap, 0 missing
    assert [p for p, _ in out] == [b"a"]
    buf.flush()
    assert [p for p, _ in out] == [b"a", None, b"c"]
    assert buf.stats.lost == 1


def test_upsampling_is_flat_in_the_phone_band_and_chunking_does_not_matter() -> None:
    rate = 8000
    t = np.arange(rate) / rate
    tone = (np.sin(2 * np.pi * 3000 * t) * 10000).astype("<i2")
    whole = np.frombuffer(Resampler(8000, 16000)(tone.tobytes()), dtype="<i2")
    r = Resampler(8000, 16000)
    chunked = np.frombuffer(
        b"".join(r(tone[i : i + 160].tobytes()) for i in range(0, len(tone), 160)), dtype="<i2"
    )
    assert np.array_equal(whole, chunked)
    assert len(whole) == 2 * len(tone)
    steady = whole[400:-400].astype(float)
    assert abs(np.sqrt(np.mean(steady**2)) - 10000 / np.sqrt(2)) < 150  # within ~0.2 dB
    down = np.frombuffer(Resampler(16000, 8000)(whole.tobytes()), dtype="<i2")
    assert len(down) == len(tone)
    with pytest.raises(ValueError, match="integer ratio"):
        Resampler(8000, 44100)


def test_port_pool_rests_released_pairs_and_skips_taken_ones() -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", 0))
    taken = blocker.getsockname()[1] & ~1
    try:
        pool = PortPool("127.0.0.1", taken, taken + 6, quarantine_s=0.2)
        port, rtp, rtcp = pool.acquire()
        assert port != taken and port % 2 == 0
        assert rtcp.getsockname()[1] == port + 1
        rtp.close()
        rtcp.close()
        pool.release(port)
        second, a, b = pool.acquire()
        assert second != port, "a released pair rests first"
        a.close()
        b.close()
        with pytest.raises(PortsExhausted):
            pool.acquire()
        time.sleep(0.25)
        again, c, d = pool.acquire()
        assert again == port
        c.close()
        d.close()
    finally:
        blocker.close()


async def test_playout_paces_frames_stops_at_once_and_holds() -> None:
    """A real stream on loopback: what the far end receives, tick by tick."""
    codec = open_codec(CodecChoice("PCMU", 0, 8000))
    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.1", 0))
    far.settimeout(0.05)
    pool = PortPool("127.0.0.1", 39000, 39010)
    port, rtp, rtcp = pool.acquire()
    stream = MediaStream(
        codec,
        far.getsockname(),
        None,
        lambda pcm, ms: None,
        lambda d, ms: None,
        lambda: 0,
        symmetric=False,
    )
    await stream.start(rtp, rtcp)

    def heard() -> list[bytes]:
        """The decoded payloads that arrived since the last look."""
        out: list[bytes] = []
        while True:
            try:
                data = far.recv(2048)
            except TimeoutError:
                return out
            out.append(codec.decode(data[12:]))

    try:
        played: list[str] = []
        playout = Playout(stream, played.append)
        tone = (np.sin(np.arange(160) / 3) * 8000).astype("<i2").tobytes()
        playout.add("a", tone * 5, last=True)  # the call was idle: a's first frame goes at once
        (first,) = heard()
        assert (
            np.abs(np.frombuffer(first, "<i2").astype(int) - np.frombuffer(tone, "<i2")).max() < 300
        )
        assert not playout.tick() and heard() == [], "that tick's frame went out already"
        playout.add("b", tone * 3, last=False)
        assert heard() == [], "audio behind other audio waits for the clock"
        assert playout.flush("a") == 5, "four queued frames and the end marker"
        assert playout.tick()
        (next_frame,) = heard()
        assert next_frame == first, "b plays at the very next frame: a stopped at once"
        playout.held = True
        assert not playout.tick() and heard() == [], "nothing is sent while held"
        playout.held = False
        playout.tick()
        playout.tick()
        assert heard() == [first, first], "b's last two frames after the hold"
        assert playout.tick()
        (idle,) = heard()
        assert np.abs(np.frombuffer(idle, "<i2")).max() < 10, "idle: silence"
        playout.add("c", tone, last=True)
        playout.tick()
        playout.tick()
        assert played == ["c"]
    finally:
        await stream.close()
        pool.release(port)
        far.close()


async def test_playout_drain_waits_for_the_queued_frames_to_go_out() -> None:
    codec = open_codec(CodecChoice("PCMU", 0, 8000))
    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.1", 0))
    pool = PortPool("127.0.0.1", 39020, 39030)
    port, rtp, rtcp = pool.acquire()
    stream = MediaStream(
        codec, far.getsockname(), None, lambda p, m: None, lambda d, m: None, lambda: 0
    )
    await stream.start(rtp, rtcp)
    try:
        playout = Playout(stream)
        assert await playout.drain(0.01), "nothing queued: drained"
        frame = bytes(320)
        playout.add("bye", frame * 4, last=True)  # the first frame goes out at once
        waiting = asyncio.ensure_future(playout.drain(5.0))
        for _ in range(4):  # the early frame's own tick, then the three other frames
            await asyncio.sleep(0)
            assert not waiting.done()
            playout.tick()
        playout.tick()  # the end marker: nothing left
        assert await waiting
        playout.add("held", frame * 4, last=True)
        playout.held = True
        assert not await playout.drain(5.0), "held: nothing goes out, no point waiting"
        playout.held = False
        assert not await playout.drain(0.05), "the clock never ticked: gives up at the timeout"
        late = asyncio.ensure_future(playout.drain(5.0))
        await asyncio.sleep(0)
        playout.flush()  # the call ended
        assert await late
    finally:
        await stream.close()
        pool.release(port)
        far.close()


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n", ("5", 160)),
        ("application/dtmf-relay", "Signal= #\nDuration= 250", ("#", 250)),
        ("application/dtmf-relay", "Signal=11\r\n", ("#", 0)),
        ("application/dtmf", "9", ("9", 0)),
        ("application/dtmf;charset=utf-8", "*\nDuration=100", ("*", 100)),
    ],
)
def test_sip_info_bodies(content_type: str, body: str, expected: tuple[str, int]) -> None:
    assert parse_info_dtmf(content_type, body) == expected


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/dtmf-relay", "Duration=160"),
        ("application/dtmf-relay", "Signal=X"),
        ("application/dtmf", ""),
        ("text/plain", "5"),
    ],
)
def test_sip_info_bodies_without_a_digit(content_type: str, body: str) -> None:
    with pytest.raises(InfoDtmfError):
        parse_info_dtmf(content_type, body)


def _authorized(auth: DigestAuth, password: str, algorithm: str = "MD5") -> SipMessage:
    challenge = auth.challenge()[1 if algorithm == "MD5" else 0]
    nonce = challenge.split('nonce="', 1)[1].split('"', 1)[0]
    h = hashlib.md5 if algorithm == "MD5" else hashlib.sha256
    ha1 = h(f"carol:{auth.realm}:{password}".encode()).hexdigest()
    ha2 = h(b"INVITE:sip:bot@gw").hexdigest()
    response = h(f"{ha1}:{nonce}:00000001:abc:auth:{ha2}".encode()).hexdigest()
    header = (
        f'Digest username="carol", realm="{auth.realm}", nonce="{nonce}", uri="sip:bot@gw", '
        f'response="{response}", algorithm={algorithm}, qop=auth, nc=00000001, cnonce="abc"'
    )
    return SipMessage.parse(
        "INVITE sip:bot@gw SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\n"
        f"Authorization: {header}\r\nCSeq: 1 INVITE\r\n\r\n"
    )


def test_digest_authentication(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("# trunk credentials\ncarol:pa:ss\n")
    assert load_users(users) == {"carol": "pa:ss"}
    auth = DigestAuth("voicetyped", load_users(users))
    for algorithm in ("MD5", "SHA-256"):
        assert auth.verify(_authorized(auth, "pa:ss", algorithm)) == "ok"  # type: ignore[arg-type]
    assert auth.verify(_authorized(auth, "wrong")) == "bad"  # type: ignore[arg-type]
    stale = DigestAuth("voicetyped", {"carol": "pa:ss"}, nonce_ttl_s=-1)
    assert stale.verify(_authorized(stale, "pa:ss")) == "stale"  # type: ignore[arg-type]
    policy = InboundPolicy([], auth)
    problem = policy.check(_authorized(auth, "wrong"), ("10.0.0.1", 5060))  # type: ignore[arg-type]
    assert problem is not None and problem.status == 401
    assert problem.headers["WWW-Authenticate"].count("Digest") == 2


def test_source_allowlist() -> None:
    policy = InboundPolicy.build(["10.0.0.0/8", "2001:db8::/32"], None, "r")
    request = SipMessage.parse("OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n")
    assert policy.check(request, ("10.1.2.3", 5060)) is None  # type: ignore[arg-type]
    assert policy.check(request, ("2001:db8::1", 5060)) is None  # type: ignore[arg-type]
    denied = policy.check(request, ("192.0.2.1", 5060))  # type: ignore[arg-type]
    assert denied is not None and denied.status == 403
