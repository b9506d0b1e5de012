"""Strict request checks on messages modelled on RFC 4475's torture tests: what is invalid gets
the answer RFC 3261 asks for, what is valid (however odd) passes untouched."""

from __future__ import annotations

import pytest
from voicetyped_media.sdp import SdpError, accept_answer, make_offer, negotiate, parse_offer
from voicetyped_media.sip.responses import error_response
from voicetyped_media.sip.transport import normalize, sdp_from_multipart
from voicetyped_media.sip.validate import check_request

HEAD = "v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\n"
SDP = (
    "v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def request(
    method: str = "OPTIONS",
    *,
    start: str | None = None,
    headers: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
    body: str = "",
    content_length: str | None = None,
    extra: list[str] | None = None,
) -> bytes:
    base = {
        "Via": "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
        "Max-Forwards": "70",
        "To": "<sip:bot@gw.example.com>",
        "From": '"Alice" <sip:alice@example.com>;tag=1928301774',
        "Call-ID": "a84b4c76e66710@pc33.example.com",
        "CSeq": f"314159 {method}",
        "Contact": "<sip:alice@192.0.2.1>",
    }
    base.update(headers or {})
    lines = [start or f"{method} sip:bot@gw.example.com SIP/2.0"]
    lines += [f"{k}: {v}" for k, v in base.items() if k not in drop]
    lines += extra or []
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {content_length if content_length is not None else len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


INVALID = [
    ("negative Content-Length", request(content_length="-999"), 400),
    ("non-numeric Content-Length", request(content_length="abc"), 400),
    ("Content-Length larger than the body", request(body="v=0\r\n", content_length="9999"), 400),
    ("Content-Length beyond the body cap", request(content_length="99999999999"), 413),
    ("unknown SIP version", request(start="OPTIONS sip:bot@gw.example.com SIP/7.0"), 505),
    ("no SIP version", request(start="OPTIONS sip:bot@gw.example.com"), 400),
    (
        "two spaces in the request line",
        request(start="OPTIONS  sip:bot@gw.example.com SIP/2.0"),
        400,
    ),
    (
        "trailing space in the request line",
        request(start="OPTIONS sip:bot@gw.example.com SIP/2.0 "),
        400,
    ),
    ("Request-URI in <>", request(start="OPTIONS <sip:bot@gw.example.com> SIP/2.0"), 400),
    ("unknown URI scheme", request(start="OPTIONS nope:bot@gw.example.com SIP/2.0"), 416),
    (
        "headers in the Request-URI",
        request(start="OPTIONS sip:bot@gw.example.com?Route=x SIP/2.0"),
        400,
    ),
    ("unterminated quote", request(headers={"From": '"Alice <sip:alice@example.com>;tag=1'}), 400),
    ("unbalanced <>", request(headers={"To": "<sip:bot@gw.example.com"}), 400),
    (
        "display name needs quotes",
        request(headers={"From": "Al@ice <sip:a@example.com>;tag=1"}),
        400,
    ),
    ("space in addr-spec", request(headers={"To": "sip:bot@gw.example.com x"}), 400),
    ("CSeq beyond 2^31", request(headers={"CSeq": "36893488147419103232 OPTIONS"}), 400),
    ("CSeq method mismatch", request(headers={"CSeq": "1 INVITE"}), 400),
    ("malformed CSeq", request(headers={"CSeq": "OPTIONS"}), 400),
    ("Max-Forwards 300", request(headers={"Max-Forwards": "300"}), 400),
    ("Expires too large", request(headers={"Expires": "10000000000000"}), 400),
    ("missing Call-ID", request(drop=("Call-ID",)), 400),
    ("missing CSeq", request(drop=("CSeq",)), 400),
    ("missing From", request(drop=("From",)), 400),
    ("two Call-IDs", request(extra=["Call-ID: second@example.com"]), 400),
    ("extraneous Via separators", request(headers={"Via": "SIP/2.0/UDP 192.0.2.1;;,;,,"}), 400),
    (
        "a Via that is not SIP/2.0",
        request(headers={"Via": "SIP/3.0/UDP 192.0.2.1;branch=z9hG4bK1"}),
        400,
    ),
    ("header line without colon", request(extra=["This is not a header"]), 400),
    ("header section over 16 KiB", request(extra=[f"X-Pad: {'a' * 17000}"]), 513),
    ("unknown method", request("NEWMETHOD"), 501),
    ("unknown method with CSeq mismatch", request("NEWMETHOD", headers={"CSeq": "1 INVITE"}), 400),
    ("REGISTER is not served", request("REGISTER"), 405),
    ("unsupported Require", request(headers={"Require": "nothingsupportsthis"}), 420),
    (
        "INVITE with a body we cannot read",
        request(
            "INVITE", body="<xml/>", headers={"Content-Type": "application/xml"}, drop=()
        ).replace(b"Content-Type: application/sdp\r\n", b""),
        415,
    ),
    ("not UTF-8", request().replace(b"Max-Forwards: 70", b"Subject: \xff\xfe"), 400),
]


@pytest.mark.parametrize(("name", "data", "status"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_requests_get_the_rfc_answer(name: str, data: bytes, status: int) -> None:
    parsed, problem = check_request(data)
    assert problem is not None, name
    assert problem.status == status, problem
    if parsed is not None and parsed.headers.all("via"):
        reply = error_response(parsed, problem)
        assert reply is not None
        assert reply.startswith(f"SIP/2.0 {status} ".encode())
        assert b"\r\nWarning: 399 voicetyped " in reply
        assert b"Call-ID:" in reply or b"missing call-id" in reply.lower()


def test_501_and_405_carry_allow() -> None:
    for method in ("NEWMETHOD", "SUBSCRIBE"):
        _, problem = check_request(request(method))
        assert problem is not None and "INVITE" in problem.headers["Allow"]
    _, problem = check_request(request(headers={"Require": "foo, timer"}))
    assert problem is not None and problem.headers["Unsupported"] == "foo"


VALID = [
    ("plain OPTIONS", request()),
    (
        "folded header and odd whitespace",
        (
            b"INVITE sip:bot@gw.example.com SIP/2.0\r\n"
            b"To :\r\n <sip:bot@gw.example.com>\r\n"
            b'From   : "J Rosenberg \\\\\\""   <sip:jdrosen@example.com>\r\n'
            b"  ;\r\n  tag = 98asjd8\r\n"
            b"MaX-fOrWaRdS: 0068\r\n"
            b"Call-ID: wsinv.ndaksdj@192.0.2.1\r\n"
            b"Content-Length   : 0\r\n"
            b"cseq: 0009\r\n  INVITE\r\n"
            b"Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\n"
            b"s :\r\n"
            b"NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n"
            b"UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"
            b"v:  SIP/2.0/TCP spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n"
            b" SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\n"
            b'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\r\n'
            b"      newvalue ;\r\n  secondparam ; q = 0.33\r\n\r\n"
        ),
    ),
    (
        "compact headers",
        (
            b"OPTIONS sip:bot@gw.example.com SIP/2.0\r\n"
            b"v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"
            b"t: <sip:bot@gw.example.com>\r\nf: <sip:a@example.com>;tag=1\r\ni: compact@x\r\n"
            b"CSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"
        ),
    ),
    ("unusual method token", request("!interesting-Method0123456789_*+`.%indeed'~")),
    ("escaped URI", request(start="OPTIONS sip:sips%3Auser%40example.com@example.net SIP/2.0")),
    ("Max-Forwards 0", request(headers={"Max-Forwards": "0"})),
    ("tel URI", request(start="OPTIONS tel:+15551234567 SIP/2.0")),
    ("second message after the body", request(extra=[]) + request("BYE")),
    ("supported Require", request(headers={"Require": "timer"})),
    ("long values", request(extra=[f"X-Long: {'v' * 4000}"] * 2)),
    ("bare LF line ends", request().replace(b"\r\n", b"\n")),
    ("leading CRLF", b"\r\n\r\n" + request()),
]


@pytest.mark.parametrize(("name", "data"), VALID, ids=[c[0] for c in VALID])
def test_valid_torture_messages_pass(name: str, data: bytes) -> None:
    parsed, problem = check_request(data)
    if name == "unusual method token":
        assert problem is not None and problem.status == 501  # valid, just not implemented
        return
    assert problem is None, problem
    assert parsed is not None and parsed.is_request


def test_multipart_offer_is_reduced_to_its_sdp() -> None:
    body = (
        "--boundary42\r\nContent-Type: application/sdp\r\n\r\n"
        + SDP
        + "--boundary42\r\nContent-Type: image/gif\r\n\r\nGIF89a\r\n--boundary42--\r\n"
    )
    data = request("INVITE", body=body).replace(
        b"Content-Type: application/sdp", b'Content-Type: multipart/mixed;boundary="boundary42"', 1
    )
    parsed, problem = check_request(data)
    assert problem is None and parsed is not None
    assert sdp_from_multipart('multipart/mixed;boundary="boundary42"', body.encode()) is not None
    normalized = normalize(data, parsed)
    assert b"Content-Type: application/sdp" in normalized
    assert normalized.endswith(SDP.encode())


def test_responses_are_left_to_the_stack() -> None:
    parsed, problem = check_request(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n")
    assert problem is None and parsed is not None and not parsed.is_request


@pytest.mark.parametrize(
    ("sdp", "message"),
    [
        ("garbage", "v=0"),
        ("v=0\r\ns=-\r\n", "o= line"),
        (
            "v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n",
            "malformed m=",
        ),
        (
            HEAD + "m=video 5000 RTP/AVP 96\r\n",
            "no audio",
        ),
        (
            HEAD + "m=audio 5000 RTP/SAVP 0\r\n",
            "no SRTP crypto suite we support",
        ),
        (
            HEAD + "m=audio 5000 RTP/AVP 18\r\n",
            "no common codec",
        ),
        ("v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 5000 RTP/AVP 0\r\n", "no c= line"),
    ],
)
def test_unusable_offers_are_refused_with_a_reason(sdp: str, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        negotiate(sdp, "10.0.0.1", 20000)


def test_negotiation_follows_the_offer() -> None:
    offer = (
        "v=0\r\no=a 1 1 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 107 0 9 96\r\na=rtpmap:107 opus/48000/2\r\n"
        "a=rtpmap:96 telephone-event/48000\r\na=rtpmap:97 telephone-event/8000\r\na=sendonly\r\n"
        "m=video 4002 RTP/AVP 100\r\na=rtpmap:100 VP8/90000\r\n"
    )
    n = negotiate(offer, "10.0.0.1", 20000)
    assert (n.codec.name, n.codec.payload_type, n.telephone_event) == ("opus", 107, 96)
    assert n.remote == ("10.9.9.9", 4000) and n.on_hold
    assert "a=rtpmap:107 opus/48000/2" in n.answer
    assert "a=rtpmap:96 telephone-event/48000" in n.answer
    assert "a=recvonly" in n.answer and "m=video 0 RTP/AVP 100" in n.answer
    g711 = negotiate(offer, "10.0.0.1", 20000, enabled=("PCMU",))
    assert (g711.codec.name, g711.telephone_event) == ("PCMU", None)
    held = negotiate(SDP.replace("c=IN IP4 192.0.2.1", "c=IN IP4 0.0.0.0"), "10.0.0.1", 20000)
    assert held.on_hold and held.telephone_event == 101


def test_delayed_offer_is_ours_and_the_answer_is_read_back() -> None:
    offer = make_offer("10.0.0.1", 20000, ("PCMU", "opus"))
    assert "m=audio 20000 RTP/AVP 0 111 101 102\r\n" in offer
    assert "a=rtpmap:111 opus/48000/2" in offer and "a=sendrecv" in offer
    assert "a=rtpmap:101 telephone-event/8000" in offer
    assert "a=rtpmap:102 telephone-event/48000" in offer
    assert parse_offer(offer).media[0].port == 20000  # our offer parses as SDP
    # The answer may pick any offered codec, at its own payload type, and put us on hold.
    answer = HEAD + (
        "m=audio 7000 RTP/AVP 96 97\r\na=rtpmap:96 opus/48000/2\r\n"
        "a=rtpmap:97 telephone-event/48000\r\na=sendonly\r\n"
    )
    n = accept_answer(answer, "10.0.0.1", 20000, ("PCMU", "opus"))
    assert (n.codec.name, n.codec.payload_type, n.telephone_event) == ("opus", 96, 97)
    assert n.remote == ("1.2.3.4", 7000) and n.on_hold
    # What an offerless re-INVITE offers later: the agreed codec only, mirrored direction.
    assert "m=audio 20000 RTP/AVP 96 97\r\n" in n.answer and "a=recvonly" in n.answer
    for bad, reason in [
        ("", "v=0"),
        (HEAD + "m=audio 0 RTP/AVP 0\r\n", "no audio stream in the answer"),
        (HEAD + "m=audio 7000 RTP/AVP 18\r\n", "no common codec .answered: none"),
    ]:
        with pytest.raises(SdpError, match=reason):
            accept_answer(bad, "10.0.0.1", 20000, ("PCMU", "opus"))
