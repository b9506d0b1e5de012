"""Answering a call: ring, open its RTP and speech stream, send the 200 with our SDP, hand the
call to the runtime.

With an offer in the INVITE (read once, at admission: :class:`~voicetyped_media.sdp.Offer`) our
answer goes in the 200. Without one (delayed offer, RFC 3261 §13.2.1) our offer goes in the 200
and the caller's answer comes in the ACK; media opens once that answer names the codec, and an
answer that is missing or unusable ends the call with a BYE (§13.3.1.4). Under SRTP ``required``
our offer is RTP/SAVP with our key and the answer must take it.

SRTP keys travel in the SDP (SDES): over TLS they are as private as the signalling; over UDP or
TCP anyone on the path can read them, which is logged as a warning per call.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from aiosipua import parse_sdp
from opentelemetry import trace
from voicetyped.service import tracing
from voicetyped.service.logs import get_logger
from voicetyped.v1 import common_pb2, runtime_pb2

from voicetyped_media.codecs.codec import open_codec
from voicetyped_media.rtp.pacer import Playout
from voicetyped_media.rtp.srtp import SdesCrypto, SrtpSession
from voicetyped_media.rtp.stream import MediaStream
from voicetyped_media.runtime_link import RuntimeLink
from voicetyped_media.sdp import Negotiated, SdpError, accept_answer, answer_offer, make_offer
from voicetyped_media.sip.server import via_transport
from voicetyped_media.speech_audio import (
    SpeechAtCapacity,
    SpeechAudioStream,
    SpeechUnavailable,
    open_new_call,
)

if TYPE_CHECKING:
    from voicetyped_media.call.media_call import MediaCall

log = get_logger("voicetyped.media.call")
tracer = tracing.tracer("voicetyped.media")

ENDED = runtime_pb2.CallEnded
ACK_TIMEOUT_S = 32.0  # 64 x T1: how long a delayed offer's answer (the ACK) may take


async def answer(call: MediaCall) -> None:
    port, rtp_sock, rtcp_sock = call.services.ports.acquire()
    call.port = port
    call.unopened = (rtp_sock, rtcp_sock)
    if call.offer is None:
        await _with_delayed_offer(call, port, rtp_sock, rtcp_sock)
        return
    negotiated = answer_offer(call.offer, call.config.advertised_ip, port)
    _start_trace(call, negotiated)
    call.sip.ringing()
    endpoint = await _open_media(call, negotiated, rtp_sock, rtcp_sock)
    if isinstance(endpoint, SpeechUnavailable):
        if isinstance(endpoint, SpeechAtCapacity):
            retry = {"Retry-After": str(call.config.retry_after_s)}
            call.reject(503, "Service Unavailable", "speech recognition at capacity", retry)
        else:
            call.reject(503, "Service Unavailable", "speech recognition unavailable")
        await call.end(ENDED.REASON_FAILED, 503)
        return
    if call.ended:  # CANCEL while we were setting up
        return
    if call.config.ring_ms:
        await asyncio.sleep(call.config.ring_ms / 1000)
        if call.ended:
            return
    call.sip.accept(parse_sdp(negotiated.answer))
    call.answered = True
    _start_call(call, negotiated)


async def _with_delayed_offer(
    call: MediaCall, port: int, rtp_sock: socket.socket, rtcp_sock: socket.socket
) -> None:
    _start_trace(call, None)
    call.sip.ringing()
    if call.config.ring_ms:
        await asyncio.sleep(call.config.ring_ms / 1000)
    if call.ended:
        return
    call.awaiting_answer = asyncio.get_running_loop().create_future()
    crypto = (
        SdesCrypto.fresh(1, "AES_CM_128_HMAC_SHA1_80") if call.config.srtp == "required" else None
    )
    ours = make_offer(call.config.advertised_ip, port, call.config.codecs, crypto=crypto)
    call.sip.accept(parse_sdp(ours))
    call.answered = True
    try:
        async with asyncio.timeout(ACK_TIMEOUT_S):
            ack = await call.awaiting_answer
        if not ack.body.strip():
            raise SdpError("the ACK carried no SDP answer")
        negotiated = accept_answer(
            ack.text, call.config.advertised_ip, port, call.config.codecs, offered=crypto
        )
    except (SdpError, TimeoutError) as exc:
        if not call.ended:
            detail = str(exc) or "no SDP answer in the ACK"
            log.info("delayed offer: no usable answer; hanging up", detail=detail)
            await call.hang_up()
            await call.end(ENDED.REASON_FAILED, 488)
        return
    finally:
        call.awaiting_answer = None
    if call.ended:
        return
    if call.span is not None:
        call.span.set_attribute("codec", negotiated.codec.name)
    endpoint = await _open_media(call, negotiated, rtp_sock, rtcp_sock)
    if isinstance(endpoint, SpeechUnavailable):  # answered already: no 503 any more
        await call.hang_up()
        await call.end(ENDED.REASON_FAILED, 503)
        return
    if not call.ended:
        _start_call(call, negotiated)


def _start_trace(call: MediaCall, negotiated: Negotiated | None) -> None:
    # The call's trace: the speech gateway and the runtime record its stages under it.
    attributes = {"session_id": call.session_id, "sip.call_id": call.sip.call_id}
    if negotiated is not None:
        attributes["codec"] = negotiated.codec.name
    call.span = tracer.start_span("call", attributes=attributes)
    call.trace = trace.set_span_in_context(call.span)


async def _open_media(
    call: MediaCall, negotiated: Negotiated, rtp_sock: socket.socket, rtcp_sock: socket.socket
) -> str | SpeechUnavailable:
    """Start RTP and open the speech stream: its replica's endpoint, or why there is none
    (:class:`SpeechAtCapacity`: the speech replica takes no new call)."""
    m = call.services.metrics
    call.negotiated = negotiated
    codec = open_codec(negotiated.codec)
    call.stream = MediaStream(
        codec,
        negotiated.remote,
        negotiated.telephone_event,
        call.on_audio,
        lambda digit, ms: call.keys.key(digit, ms, "rfc4733"),
        call.call_time_ms,
        symmetric=call.config.symmetric_rtp,
        srtp=SrtpSession(negotiated.srtp) if negotiated.srtp is not None else None,
    )
    if negotiated.srtp is not None and not call.config.encrypted_signalling:
        log.warning(
            "SRTP keyed over unencrypted SIP: the SDES keys can be read on the path; use TLS",
            transport=via_transport(call.sip.transport) if call.sip.transport else "",
        )
    call.unopened = None
    await call.stream.start(rtp_sock, rtcp_sock)
    call.keys.listen_inband(call.config.inband_dtmf, negotiated.telephone_event)

    def attempt() -> SpeechAudioStream:
        call.speech = call.new_speech_stream()  # (so that a CANCEL meanwhile closes it)
        return call.speech

    try:
        return (await open_new_call(attempt, call.config.speech_attempts)).endpoint
    except SpeechAtCapacity as exc:
        log.warning("speech at capacity; refusing the call", error=str(exc))
        m.refused.labels("speech_capacity").inc()
        return exc
    except Exception as exc:
        log.warning("no speech stream; refusing the call", error=str(exc))
        m.refused.labels("speech_unavailable").inc()
        return exc if isinstance(exc, SpeechUnavailable) else SpeechUnavailable(str(exc))


def _start_call(call: MediaCall, negotiated: Negotiated) -> None:
    """The call is answered and its media flows: play out, and hand it to the runtime."""
    assert call.stream is not None
    call.playout = Playout(call.stream, on_started=call.first_rtp)
    call.playout.held = negotiated.on_hold
    call.held = negotiated.on_hold
    call.services.pacer.playouts.add(call.playout)
    call.services.metrics.calls_answered.labels(negotiated.codec.name).inc()
    assert call.speech is not None
    # The stream's replica now: reopened elsewhere if it failed while the call was set up.
    endpoint = call.speech.endpoint
    call.runtime = RuntimeLink(
        call.services.runtime,
        call.session_id,
        runtime_pb2.CallStarted(
            caller=_caller_info(call),
            called_uri=call.sip.invite.uri,
            speech_endpoint=endpoint,
            dialog=call.config.dialog,
        ),
        call.on_command,
        call.on_runtime_refused,
        metadata=tracing.metadata(call.trace),
    )
    call.runtime.start()
    log.info(
        "call answered",
        codec=negotiated.codec.name,
        srtp=negotiated.srtp.suite if negotiated.srtp is not None else "",
        tls=call.config.encrypted_signalling,
        telephone_event=negotiated.telephone_event,
        remote=f"{negotiated.remote[0]}:{negotiated.remote[1]}",
        rtp_port=call.port,
        speech=endpoint,
    )


def _caller_info(call: MediaCall) -> common_pb2.CallerInfo:
    invite = call.sip.invite
    identity = invite.get_header("p-asserted-identity") or invite.get_header("from") or ""
    wanted = {h.lower() for h in call.config.passed_headers}
    headers = [
        common_pb2.SipHeader(name=name, value=value)
        for name, values in invite.headers.items()
        if name.lower() in wanted
        for value in values
    ]
    return common_pb2.CallerInfo(caller_id=caller_id_from(identity), sip_headers=headers)


def caller_id_from(header: str) -> str:
    """The user part of a From / P-Asserted-Identity URI, or the whole URI without a user."""
    value = header.strip()
    if "<" in value and ">" in value:
        value = value[value.index("<") + 1 : value.index(">")]
    value = value.split(";", 1)[0].strip()
    scheme, _, rest = value.partition(":")
    if scheme.lower() == "tel":
        return rest
    user, at, _host = rest.partition("@")
    return user if at and user else value
