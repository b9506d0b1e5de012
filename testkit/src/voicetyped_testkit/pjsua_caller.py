"""An independent SIP caller built on PJSIP (pjsua2), run as its own process by the tests.

    python pjsua_caller.py --target sip:bot@127.0.0.1:5060 --play in.wav --record out.wav \
        --codec PCMU/8000 --seconds 8 --actions '[{"at": 2, "do": "dtmf_info", "digits": "12"}]'

Plays a WAV into the call, records what it hears, performs timed actions (``dtmf_info``,
``dtmf_rfc``, ``hold``, ``unhold``, ``hangup``) and prints one JSON object per line for what
happens (call states, a transfer request and its target, errors). A REFER from the gateway is
accepted the PJSIP way: pjsua calls the target and reports progress back with NOTIFYs.

SIP over TLS (``--transport tls``, the server checked against ``--tls-ca``, a client certificate
with ``--tls-cert``/``--tls-key``) and SRTP by SDES (``--srtp optional|mandatory``, suites with
``--srtp-suite``); ``--emit-sdp`` prints the SDP offered and each response to the INVITE whole
(with the keys: the tests decrypt captured packets with them).

With ``--start-on-stdin`` the actions' clock (and ``--seconds``) starts when a line arrives on
stdin instead of at the INVITE: a test starts it at the moment its own timeline begins (say,
when the gateway has the prompt to play), so set-up time on a loaded machine shifts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import pjsua2 as pj


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


class Call(pj.Call):  # type: ignore[misc]
    def __init__(self, account: pj.Account, args: argparse.Namespace, call_id: int = -1) -> None:
        super().__init__(account, call_id)
        self.args = args
        self.player: pj.AudioMediaPlayer | None = None
        self.recorder: pj.AudioMediaRecorder | None = None
        self.state = ""
        self.disconnected = False
        self.responses: set[str] = set()

    def onCallState(self, prm: Any) -> None:  # noqa: N802 - pjsua2 callback
        info = self.getInfo()
        self.state = info.stateText
        self.disconnected = info.state == pj.PJSIP_INV_STATE_DISCONNECTED
        self._emit_response(prm.e)
        emit(event="state", state=info.stateText, code=info.lastStatusCode, reason=info.lastReason)

    def onCallMediaState(self, prm: Any) -> None:  # noqa: N802
        info = self.getInfo()
        for i, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            emit(event="media", status=int(media.status))
            if media.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            audio = self.getAudioMedia(i)
            # (Re)connect after every media change: a re-INVITE gives the call a new port.
            if self.args.play:
                if self.player is None:
                    self.player = pj.AudioMediaPlayer()
                    self.player.createPlayer(self.args.play, pj.PJMEDIA_FILE_NO_LOOP)
                self.player.startTransmit(audio)
            if self.args.record:
                if self.recorder is None:
                    self.recorder = pj.AudioMediaRecorder()
                    self.recorder.createRecorder(self.args.record)
                audio.startTransmit(self.recorder)

    def onCallSdpCreated(self, prm: Any) -> None:  # noqa: N802
        if self.args.emit_sdp:
            emit(event="offer", sdp=prm.sdp.wholeSdp)

    def onCallTsxState(self, prm: Any) -> None:  # noqa: N802
        self._emit_response(prm.e)

    def _emit_response(self, e: Any) -> None:
        """With --emit-sdp, a response received to the INVITE, whole (the answer in it). A final
        error comes with the call's state change (the transaction's event does not)."""
        if not self.args.emit_sdp or e.type != pj.PJSIP_EVENT_TSX_STATE:
            return
        if e.body.tsxState.type != pj.PJSIP_EVENT_RX_MSG:
            return
        message = e.body.tsxState.src.rdata.wholeMsg
        invite = " INVITE" in message.split("CSeq:", 1)[-1][:40]
        if message.startswith("SIP/2.0 ") and invite and message not in self.responses:
            self.responses.add(message)
            emit(event="response", message=message)

    def onCallTransferRequest(self, prm: Any) -> None:  # noqa: N802
        emit(event="transfer", target=prm.dstUri)
        prm.statusCode = self.args.transfer_status  # 202 accepts; 3xx-6xx refuses

    def onCallTransferStatus(self, prm: Any) -> None:  # noqa: N802
        emit(event="transfer_status", code=prm.statusCode, final=bool(prm.finalNotify))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--play", default="")
    parser.add_argument("--record", default="")
    parser.add_argument("--codec", default="PCMU/8000")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--actions", default="[]")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--start-on-stdin", action="store_true")
    parser.add_argument(
        "--transfer-status", type=int, default=202, help="answer a REFER with this status"
    )
    parser.add_argument("--start-timeout", type=float, default=60.0)
    parser.add_argument("--transport", choices=["udp", "tls"], default="udp")
    parser.add_argument("--tls-ca", default="", help="CA file the server must be issued by")
    parser.add_argument("--tls-cert", default="", help="client certificate (PEM)")
    parser.add_argument("--tls-key", default="", help="its private key (PEM)")
    parser.add_argument("--srtp", choices=["disabled", "optional", "mandatory"], default="disabled")
    parser.add_argument(
        "--srtp-suite", action="append", default=[], help="e.g. AES_CM_128_HMAC_SHA1_32"
    )
    parser.add_argument("--emit-sdp", action="store_true")
    args = parser.parse_args()
    actions = sorted(json.loads(args.actions), key=lambda a: a["at"])

    ep = pj.Endpoint()
    ep.libCreate()
    config = pj.EpConfig()
    config.logConfig.level = 1
    config.logConfig.consoleLevel = 1
    config.uaConfig.maxCalls = 4
    config.medConfig.clockRate = 16000
    config.medConfig.noVad = True
    ep.libInit(config)
    transport = pj.TransportConfig()
    transport.port = args.port
    transport.boundAddress = "127.0.0.1"
    if args.transport == "tls":
        tls = transport.tlsConfig
        tls.method = pj.PJSIP_TLSV1_2_METHOD
        tls.CaListFile = args.tls_ca
        tls.verifyServer = bool(args.tls_ca)
        tls.certFile = args.tls_cert
        tls.privKeyFile = args.tls_key
        ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, transport)
    else:
        ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
    ep.libStart()
    ep.audDevManager().setNullDev()
    for codec in ep.codecEnum2():
        ep.codecSetPriority(codec.codecId, 255 if codec.codecId.startswith(args.codec) else 0)

    account_config = pj.AccountConfig()
    account_config.idUri = "sip:pjsua@127.0.0.1"
    account_config.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    media = account_config.mediaConfig
    media.srtpUse = {
        "disabled": pj.PJMEDIA_SRTP_DISABLED,
        "optional": pj.PJMEDIA_SRTP_OPTIONAL,
        "mandatory": pj.PJMEDIA_SRTP_MANDATORY,
    }[args.srtp]
    media.srtpSecureSignaling = 0  # the tests also try SRTP over plain UDP SIP
    keyings = pj.IntVector()
    keyings.append(pj.PJMEDIA_SRTP_KEYING_SDES)
    media.srtpOpt.keyings = keyings
    if args.srtp_suite:
        cryptos = pj.SrtpCryptoVector()
        for name in args.srtp_suite:
            crypto = pj.SrtpCrypto()
            crypto.name = name
            cryptos.append(crypto)
        media.srtpOpt.cryptos = cryptos
    account = pj.Account()
    account.create(account_config)

    call = Call(account, args)
    prm = pj.CallOpParam(True)
    try:
        call.makeCall(args.target, prm)
    except pj.Error as exc:
        emit(event="error", reason=exc.info())
        return 1
    go = threading.Event()
    if args.start_on_stdin:
        # A thread, because pjsua's event loop must keep running while we wait for the line.
        def wait_for_line() -> None:
            sys.stdin.readline()
            go.set()

        threading.Thread(target=wait_for_line, daemon=True).start()
    else:
        go.set()
    started = time.monotonic()
    clock: float | None = started if go.is_set() else None
    try:
        while clock is None or time.monotonic() - clock < args.seconds:
            ep.libHandleEvents(10)
            if clock is None:
                if go.is_set():
                    clock = time.monotonic()
                    emit(event="started", after_s=round(clock - started, 3))
                elif time.monotonic() - started > args.start_timeout:
                    emit(event="error", reason="no start line on stdin")
                    break
                if call.disconnected:
                    break
                continue
            now = time.monotonic() - clock
            while actions and actions[0]["at"] <= now:
                action = actions.pop(0)
                emit(event="action", do=action["do"], rx_packets=received_packets(call))
                try:
                    run(call, action)
                except pj.Error as exc:
                    emit(event="error", reason=exc.info())
            if call.disconnected:
                break
        if call.state and not call.disconnected:
            call.hangup(pj.CallOpParam())
        for _ in range(50):  # let the BYE/200 and recorder finish
            ep.libHandleEvents(10)
    finally:
        call.player = call.recorder = None
        del call
        ep.libDestroy()
    return 0


def received_packets(call: Call) -> int:
    """RTP packets received on the call's audio stream so far (-1 when there is no stream)."""
    try:
        return int(call.getStreamStat(0).rtcp.rxStat.pkt)
    except pj.Error:
        return -1


def run(call: Call, action: dict[str, Any]) -> None:
    kind = action["do"]
    if kind in ("dtmf_info", "dtmf_rfc"):
        dtmf = pj.CallSendDtmfParam()
        dtmf.digits = action["digits"]
        dtmf.duration = action.get("duration", 160)
        dtmf.method = (
            pj.PJSUA_DTMF_METHOD_SIP_INFO if kind == "dtmf_info" else pj.PJSUA_DTMF_METHOD_RFC2833
        )
        call.sendDtmf(dtmf)
    elif kind == "hold":
        call.setHold(pj.CallOpParam(True))
    elif kind == "unhold":
        prm = pj.CallOpParam(True)
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD
        call.reinvite(prm)
    elif kind == "hangup":
        call.hangup(pj.CallOpParam())


if __name__ == "__main__":
    sys.exit(main())
