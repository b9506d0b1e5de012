"""Changes to an answered call's session (RFC 3264 §8): a re-INVITE with a new offer (hold,
resume, a new address or codec), an offerless re-INVITE (we offer the session as it is; the
answer comes in the ACK), and what either does to the RTP stream, the playout and the runtime.

SRTP: a new offer is read under the call's policy (a plain one under ``required`` gets 488 and
the call goes on as it was); our key stays the call's (RFC 4568 §7.1.4 lets it), the caller's
may change, and the receiver then reads with the new one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiosipua import SipRequest, parse_sdp
from voicetyped.service.logs import get_logger
from voicetyped.v1 import runtime_pb2

from voicetyped_media.codecs.codec import open_codec
from voicetyped_media.rtp.srtp import SrtpSession
from voicetyped_media.sdp import Negotiated, SdpError, accept_answer, negotiate

if TYPE_CHECKING:
    from voicetyped_media.call.media_call import MediaCall

log = get_logger("voicetyped.media.call")


def reinvite(call: MediaCall, request: SipRequest) -> None:
    """Answer a re-INVITE and apply it."""
    if call.stream is None or call.port is None:
        call.sip.reject(491, "Request Pending")
        return
    if not request.body.strip() and call.negotiated is not None:
        call.reoffered = True
        call.sip.accept(parse_sdp(call.negotiated.answer))
        return
    current = call.negotiated.srtp if call.negotiated is not None else None
    try:
        negotiated = negotiate(
            request.text,
            call.config.advertised_ip,
            call.port,
            call.config.codecs,
            srtp=call.config.srtp,
            local_crypto=current.local if current is not None else None,
        )
    except SdpError as exc:
        log.info("re-INVITE refused", detail=str(exc))
        call.sip.reject(488, "Not Acceptable Here")
        call.sip.dialog.confirm()  # the call goes on as it was
        return
    apply(call, negotiated)
    call.sip.accept(parse_sdp(negotiated.answer))


def take_answer(call: MediaCall, ack: SipRequest) -> None:
    """The ACK of our 2xx to an offerless re-INVITE: the caller's answer to the session."""
    if not call.reoffered or call.stream is None or call.port is None:
        return
    call.reoffered = False
    current = call.negotiated.srtp if call.negotiated is not None else None
    try:
        negotiated = accept_answer(
            ack.text,
            call.config.advertised_ip,
            call.port,
            call.config.codecs,
            offered=current.local if current is not None else None,
        )
    except SdpError as exc:
        log.info("re-INVITE answer unusable; session unchanged", detail=str(exc))
        return
    apply(call, negotiated)


def apply(call: MediaCall, negotiated: Negotiated) -> None:
    """Take a renegotiated session: codec, remote address, telephone-event, hold."""
    assert call.stream is not None
    previous = call.negotiated
    call.negotiated = negotiated
    if previous is not None and negotiated.codec != previous.codec:
        call.stream.codec = open_codec(negotiated.codec)
    if previous is None or negotiated.remote != previous.remote:
        call.stream.remote = negotiated.remote
        call.stream.remote_rtcp = (negotiated.remote[0], negotiated.remote[1] + 1)
    call.stream.telephone_event = negotiated.telephone_event
    _set_srtp(call, negotiated)
    _set_held(call, negotiated.on_hold)


def _set_srtp(call: MediaCall, negotiated: Negotiated) -> None:
    assert call.stream is not None
    keys, session = negotiated.srtp, call.stream.srtp
    if keys is None:
        call.stream.srtp = None
    elif session is not None and session.keys.local == keys.local:
        session.rekey_inbound(keys)
    else:
        call.stream.srtp = SrtpSession(keys)


def _set_held(call: MediaCall, held: bool) -> None:
    if held == call.held:
        return
    call.held = held
    if call.playout is not None:
        call.playout.held = held
    if call.stream is not None:
        call.stream.flush()
    log.info("call held" if held else "call resumed")
    if call.runtime is not None:
        if held:
            call.runtime.send(held=runtime_pb2.CallHeld())
        else:
            call.runtime.send(resumed=runtime_pb2.CallResumed())
