"""Checking a browser's SDP offer before anything is set up for it.

The offer must parse, carry an audio m-line that is not disabled (port 0) or ``inactive``, and
offer Opus on it: a browser call is Opus at 48 kHz end to end (aiortc would take PCMU too, but
a browser always offers Opus and narrowband audio from one is a misconfigured page). ICE
credentials and the DTLS fingerprint are checked by aiortc when the offer is applied.
"""

from __future__ import annotations

from aiortc.sdp import SessionDescription

MAX_SDP_BYTES = 64 * 1024


class OfferError(ValueError):
    """The offer cannot be answered; the message says why (for the 400 body)."""


def check_offer(sdp: str) -> None:
    if not sdp.strip():
        raise OfferError("the offer has no SDP")
    if len(sdp.encode()) > MAX_SDP_BYTES:
        raise OfferError(f"the SDP is larger than {MAX_SDP_BYTES} bytes")
    if not sdp.lstrip().startswith("v=0"):
        raise OfferError("malformed SDP: it does not start with v=0")
    try:
        parsed = SessionDescription.parse(sdp)
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        raise OfferError(f"malformed SDP: {exc}") from None
    audio = [m for m in parsed.media if m.kind == "audio" and m.port != 0]
    if not audio:
        raise OfferError("the offer has no audio m-line: a browser call needs the microphone")
    live = [m for m in audio if m.direction != "inactive"]
    if not live:
        raise OfferError("the offer's audio is inactive")
    codecs = {codec.mimeType.lower() for m in live for codec in m.rtp.codecs}
    if "audio/opus" not in codecs:
        names = ", ".join(sorted(c.removeprefix("audio/") for c in codecs)) or "none"
        raise OfferError(f"the offer has no Opus audio (offered: {names}); browser calls use Opus")
