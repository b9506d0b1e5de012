"""SDP offer/answer for one audio stream (RFC 3264), with the codecs the gateway decodes.

Why not aiosipua's negotiation: it answers Opus only at payload type 111 and as ``opus/48000``
(no ``/2``, which RFC 7587 requires), always answers telephone-event at 101 whatever the offer
used, and raises (no answer at all) on offers it cannot read. Here:

- the offerer's codec order decides (RFC 3264 §6.1), among the enabled codecs;
- dynamic payload types are taken from the offer (Opus, telephone-event at any PT 96-127);
- every m-line of the offer gets one in the answer (others rejected with port 0, §6);
- direction mirrors the offer (sendonly -> recvonly ...), ``c=0.0.0.0`` counts as hold
  (RFC 2543 style);
- anything unusable raises :class:`SdpError` with a reason for the 488 Warning.

SRTP (RFC 4568 SDES, :mod:`.rtp.srtp`) by policy: ``required`` takes only an RTP/SAVP(F)
stream with a crypto suite we support, ``off`` only plain RTP/AVP(F), ``optional`` the first usable
audio stream of either kind. The answer to SRTP carries our own fresh key in ``a=crypto`` (same
tag and suite as the line taken). An RTP/AVP offer with ``a=crypto`` (pjsip's "optional" mode)
is plain RTP here: the answer has no ``a=crypto``.

An INVITE without SDP (delayed offer, RFC 3261 §13.2.1) is answered with our own offer
(:func:`make_offer`: every enabled codec, telephone-event at 8 kHz and, with Opus, 48 kHz); the
caller's answer comes in the ACK and is read by :func:`accept_answer`.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from aiosipua import SdpMessage, parse_sdp
from aiosipua.sdp import MediaDescription

from voicetyped_media.rtp.srtp import SAVP, SUITES, SdesCrypto, SrtpKeys, choose_crypto
from voicetyped_media.rtp.srtp import SrtpPolicy as Srtp

CODEC_NAMES = ("opus", "G722", "PCMU", "PCMA")
STATIC = {0: ("PCMU", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000)}
_AVP = ("RTP/AVP", "RTP/AVPF")
_SRTP_PROTOS: dict[str, tuple[str, ...]] = {
    "required": SAVP,
    "optional": _AVP + SAVP,
    "off": _AVP,
}
_session_version = itertools.count(int(time.time()))


class SdpError(ValueError):
    """The offer cannot be used; the message names why (for a 488 Warning)."""


class SrtpPolicyError(SdpError):
    """The offer is usable, but not under the SRTP policy (required, or off)."""


@dataclass(frozen=True)
class CodecChoice:
    name: str  # opus | G722 | PCMU | PCMA
    payload_type: int
    clock_rate: int  # RTP clock (G.722: 8000 by RFC 3551; Opus: 48000)
    channels: int = 1


@dataclass(frozen=True)
class Negotiated:
    codec: CodecChoice
    telephone_event: int | None
    """The offer's telephone-event payload type at the codec's clock rate, if it had one."""
    remote: tuple[str, int]
    direction: str
    """The offer's direction: sendrecv, sendonly (the caller holds), recvonly or inactive."""
    answer: str = field(repr=False)  # with SRTP it holds our key
    ptime: int
    srtp: SrtpKeys | None = None
    """The SDES keys agreed (None: plain RTP)."""

    @property
    def on_hold(self) -> bool:
        """Whether we must not send audio (the caller put us on hold)."""
        return self.direction in ("sendonly", "inactive")


def parse_offer(text: str) -> SdpMessage:
    """Parse with the checks aiosipua leaves out (raises :class:`SdpError`)."""
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or lines[0] != "v=0":
        raise SdpError("SDP must start with v=0")
    if not any(line.startswith("o=") for line in lines):
        raise SdpError("SDP has no o= line")
    for line in lines:
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"malformed SDP line {line[:40]!r}")
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise SdpError(f"malformed m= line {line[:60]!r}")
    try:
        return parse_sdp(text)
    except (ValueError, IndexError) as exc:
        raise SdpError(f"malformed SDP: {exc}") from None


def _rtpmaps(media: MediaDescription) -> dict[int, tuple[str, int, int]]:
    """payload type -> (encoding, clock rate, channels) from a=rtpmap and the static table."""
    out: dict[int, tuple[str, int, int]] = {}
    for fmt in media.formats:
        if fmt.isdigit() and int(fmt) in STATIC:
            name, rate = STATIC[int(fmt)]
            out[int(fmt)] = (name, rate, 1)
    for value in media.attributes.get("rtpmap", []):
        pt_text, _, rest = value.partition(" ")
        fields = rest.strip().split("/")
        if not pt_text.isdigit() or len(fields) < 2 or not fields[1].isdigit():
            continue
        channels = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 1
        out[int(pt_text)] = (fields[0], int(fields[1]), channels)
    return out


def _remote(sdp: SdpMessage, media: MediaDescription) -> tuple[str, str]:
    """The peer's address and direction; ``c=0.0.0.0`` counts as hold (RFC 2543 style)."""
    conn = media.connection or sdp.connection
    if conn is None:
        raise SdpError("no c= line for the audio stream")
    address = conn.address.split("/")[0]
    direction = media.direction
    if address == "0.0.0.0" and direction == "sendrecv":
        direction = "sendonly"
    return address, direction


@dataclass(frozen=True)
class Offer:
    """A caller's SDP offer, read once (at admission): the codec we take from it and where its
    audio goes. :func:`answer_offer` builds our answer once the RTP port is known."""

    sdp: SdpMessage
    audio_index: int
    codec: CodecChoice
    telephone_event: int | None
    remote: tuple[str, int]
    direction: str
    crypto: SdesCrypto | None = None
    """The caller's ``a=crypto`` we take (an RTP/SAVP stream), None for plain RTP."""


def read_offer(
    offer_text: str, enabled: tuple[str, ...] = CODEC_NAMES, srtp: Srtp = "optional"
) -> Offer:
    """Parse an offer and choose a codec from it (raises :class:`SdpError`)."""
    offer = parse_offer(offer_text)
    audio_index = _audio_index(offer, "offered", srtp)
    audio = offer.media[audio_index]
    choice, telephone_event = _choose(audio, enabled, "offered")
    address, direction = _remote(offer, audio)
    return Offer(
        offer,
        audio_index,
        choice,
        telephone_event,
        (address, audio.port),
        direction,
        _crypto(audio),
    )


def answer_offer(
    offer: Offer,
    local_ip: str,
    local_port: int,
    ptime: int = 20,
    local_crypto: SdesCrypto | None = None,
) -> Negotiated:
    """The session agreed from ``offer``, with our answer on ``local_ip:local_port``.

    With SRTP our key is ``local_crypto`` when it fits the offer (a renegotiation keeps the
    call's key), else a fresh one."""
    keys = None
    if offer.crypto is not None:
        ours = local_crypto
        if ours is None or (ours.tag, ours.suite) != (offer.crypto.tag, offer.crypto.suite):
            ours = SdesCrypto.fresh(offer.crypto.tag, offer.crypto.suite)
        keys = SrtpKeys(local=ours, remote=offer.crypto)
    answer = _answer(
        offer.sdp,
        offer.audio_index,
        offer.codec,
        offer.telephone_event,
        local_ip,
        local_port,
        offer.direction,
        ptime,
        keys.local if keys is not None else None,
    )
    return Negotiated(
        offer.codec, offer.telephone_event, offer.remote, offer.direction, answer, ptime, keys
    )


def negotiate(
    offer_text: str,
    local_ip: str,
    local_port: int,
    enabled: tuple[str, ...] = CODEC_NAMES,
    ptime: int = 20,
    srtp: Srtp = "optional",
    local_crypto: SdesCrypto | None = None,
) -> Negotiated:
    """Choose a codec from the offer and build the answer (raises :class:`SdpError`)."""
    return answer_offer(
        read_offer(offer_text, enabled, srtp), local_ip, local_port, ptime, local_crypto
    )


def _crypto(media: MediaDescription) -> SdesCrypto | None:
    """The ``a=crypto`` taken from an RTP/SAVP stream (None for plain RTP/AVP)."""
    if media.proto.upper() not in SAVP:
        return None
    return choose_crypto(media.attributes.get("crypto", []))


def _audio_index(sdp: SdpMessage, what: str, srtp: Srtp = "optional") -> int:
    """The first audio stream the policy lets us take (raises :class:`SdpError` naming why
    there is none)."""
    audio = [(i, m) for i, m in enumerate(sdp.media) if m.media == "audio" and m.port > 0]
    allowed = _SRTP_PROTOS[srtp]
    for i, m in audio:
        proto = m.proto.upper()
        if proto in allowed and (proto not in SAVP or _crypto(m) is not None):
            return i
    protos = {m.proto.upper() for _, m in audio}
    if not audio:
        raise SdpError(f"no audio stream {what}")
    if srtp == "required" and not protos & set(SAVP):
        raise SrtpPolicyError(f"plain RTP {what}; SRTP is required here (RTP/SAVP with a=crypto)")
    if srtp == "off" and not protos & set(_AVP) and protos & set(SAVP):
        raise SrtpPolicyError(f"only SRTP {what}; SRTP is off here")
    if protos & set(SAVP):
        raise SdpError(f"no SRTP crypto suite we support {what} (we take {', '.join(SUITES)})")
    raise SdpError(f"no RTP/AVP or RTP/SAVP audio stream {what}")


def _choose(
    audio: MediaDescription, enabled: tuple[str, ...], what: str
) -> tuple[CodecChoice, int | None]:
    """The first of ``audio``'s formats we take, and its telephone-event payload type."""
    maps = _rtpmaps(audio)
    wanted = {name.lower() for name in enabled}
    choice: CodecChoice | None = None
    for fmt in audio.formats:
        if not fmt.isdigit() or int(fmt) not in maps:
            continue
        name, rate, _channels = maps[int(fmt)]
        canonical = next((c for c in CODEC_NAMES if c.lower() == name.lower()), None)
        if canonical is None or canonical.lower() not in wanted:
            continue
        if canonical == "opus" and rate != 48000:
            continue
        if canonical in ("PCMU", "PCMA", "G722") and rate != 8000:
            continue
        choice = CodecChoice(canonical, int(fmt), rate, 2 if canonical == "opus" else 1)
        break
    if choice is None:
        named = ", ".join(
            f"{maps[int(f)][0]}" for f in audio.formats if f.isdigit() and int(f) in maps
        )
        raise SdpError(f"no common codec ({what}: {named or 'none'}; we take {', '.join(enabled)})")
    telephone_event = next(
        (
            pt
            for pt, (name, rate, _) in maps.items()
            if name.lower() == "telephone-event"
            and rate == choice.clock_rate
            and str(pt) in audio.formats
        ),
        None,
    )
    return choice, telephone_event


_MIRROR = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


OFFER_PAYLOAD_TYPES = {"opus": 111, "G722": 9, "PCMU": 0, "PCMA": 8}
OFFER_CLOCK = {"opus": 48000, "G722": 8000, "PCMU": 8000, "PCMA": 8000}
OFFER_TELEPHONE_EVENT = {8000: 101, 48000: 102}


def make_offer(
    local_ip: str,
    local_port: int,
    enabled: tuple[str, ...] = CODEC_NAMES,
    ptime: int = 20,
    crypto: SdesCrypto | None = None,
) -> str:
    """Our offer for an INVITE that had none: the enabled codecs in our order of preference;
    with ``crypto`` as RTP/SAVP (SRTP required)."""
    codecs = [
        CodecChoice(name, OFFER_PAYLOAD_TYPES[name], OFFER_CLOCK[name], 2 if name == "opus" else 1)
        for name in (next(c for c in CODEC_NAMES if c.lower() == e.lower()) for e in enabled)
    ]
    events = [
        (OFFER_TELEPHONE_EVENT[rate], rate)
        for rate in sorted({c.clock_rate for c in codecs})
        if rate in OFFER_TELEPHONE_EVENT
    ]
    proto = "RTP/SAVP" if crypto is not None else "RTP/AVP"
    return _description(
        local_ip, [_audio_lines(local_port, proto, codecs, events, "sendrecv", ptime, crypto)]
    )


def accept_answer(
    answer_text: str,
    local_ip: str,
    local_port: int,
    enabled: tuple[str, ...] = CODEC_NAMES,
    ptime: int = 20,
    offered: SdesCrypto | None = None,
) -> Negotiated:
    """Read the caller's answer to :func:`make_offer` (raises :class:`SdpError`); ``offered``:
    our ``a=crypto`` when the offer was RTP/SAVP (the answer must take it, with its key).

    ``Negotiated.answer`` is then our side of the session as agreed (the chosen codec only),
    which is what an offerless re-INVITE is offered later."""
    answer = parse_offer(answer_text)
    audio = answer.media[
        _audio_index(answer, "in the answer", "required" if offered is not None else "off")
    ]
    choice, telephone_event = _choose(audio, enabled, "answered")
    address, direction = _remote(answer, audio)
    keys = None
    if offered is not None:
        theirs = _crypto(audio)
        if theirs is None or (theirs.tag, theirs.suite) != (offered.tag, offered.suite):
            raise SdpError("the answer's a=crypto does not take the one offered")
        keys = SrtpKeys(local=offered, remote=theirs)
    events = [(telephone_event, choice.clock_rate)] if telephone_event is not None else []
    ours = _description(
        local_ip,
        [
            _audio_lines(
                local_port, audio.proto, [choice], events, _MIRROR[direction], ptime, offered
            )
        ],
    )
    return Negotiated(choice, telephone_event, (address, audio.port), direction, ours, ptime, keys)


def _description(ip: str, media: list[list[str]]) -> str:
    family = "IP6" if ":" in ip else "IP4"
    version = next(_session_version)
    lines = [
        "v=0",
        f"o=voicetyped {version} {version} IN {family} {ip}",
        "s=voicetyped",
        f"c=IN {family} {ip}",
        "t=0 0",
    ]
    for block in media:
        lines += block
    return "\r\n".join(lines) + "\r\n"


def _audio_lines(
    port: int,
    proto: str,
    codecs: list[CodecChoice],
    events: list[tuple[int, int]],
    direction: str,
    ptime: int,
    crypto: SdesCrypto | None = None,
) -> list[str]:
    """An audio m= section: ``codecs`` in order, then ``events`` (payload type, clock rate),
    and our SRTP key when there is one."""
    pts = [str(c.payload_type) for c in codecs] + [str(pt) for pt, _ in events]
    lines = [f"m=audio {port} {proto} {' '.join(pts)}"]
    for codec in codecs:
        if codec.name == "opus":
            lines.append(f"a=rtpmap:{codec.payload_type} opus/48000/2")
            lines.append(f"a=fmtp:{codec.payload_type} useinbandfec=1;stereo=0;sprop-stereo=0")
        else:
            lines.append(f"a=rtpmap:{codec.payload_type} {codec.name}/{codec.clock_rate}")
    for pt, rate in events:
        lines.append(f"a=rtpmap:{pt} telephone-event/{rate}")
        lines.append(f"a=fmtp:{pt} 0-16")
    if crypto is not None:
        lines.append(f"a=crypto:{crypto.attribute()}")
    lines.append(f"a=ptime:{ptime}")
    lines.append(f"a={direction}")
    return lines


def _answer(
    offer: SdpMessage,
    audio_index: int,
    codec: CodecChoice,
    telephone_event: int | None,
    ip: str,
    port: int,
    direction: str,
    ptime: int,
    crypto: SdesCrypto | None = None,
) -> str:
    media: list[list[str]] = []
    for i, m in enumerate(offer.media):
        if i != audio_index:
            media.append([f"m={m.media} 0 {m.proto} {' '.join(m.formats) or '0'}"])
            continue
        events = [(telephone_event, codec.clock_rate)] if telephone_event is not None else []
        media.append(
            _audio_lines(port, m.proto, [codec], events, _MIRROR[direction], ptime, crypto)
        )
    return _description(ip, media)
