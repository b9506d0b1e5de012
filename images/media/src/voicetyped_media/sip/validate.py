"""Strict checks of incoming SIP requests, before the stack parses them.

aiosipua parses leniently: a negative Content-Length, ``SIP/7.0``, an unterminated quote or a
CSeq of 2^65 all pass, a broken SDP gets no answer at all. A gateway on a public trunk must answer
such requests the way RFC 3261 and RFC 4475 ("SIP Torture Test Messages") expect, and keep
serving. :func:`check_request` reads the raw bytes and returns the :class:`Problem` to answer
with (status, reason, extra headers), or None when the request may go on. It accepts everything
RFC 4475 calls valid (folded lines, odd whitespace around colons, escaped URIs, unknown headers,
long values, compact forms, a second message after the Content-Length, multipart bodies).

Hand-written on purpose: no maintained Python SIP parser checks requests strictly enough, and the
grammar needed here is small (the start line and the headers a UAS relies on).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_HEADER_BYTES = 16 * 1024
"""Header sections larger than this are refused with 513 (RFC 3261 §21.5.14)."""
MAX_BODY_BYTES = 64 * 1024
"""Bodies (declared or received) larger than this are refused with 413."""

IMPLEMENTED = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "NOTIFY", "UPDATE", "PRACK")
"""Methods this UAS handles (its Allow header)."""
KNOWN_NOT_ALLOWED = frozenset({"REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "REFER"})
"""Methods we know but do not serve (405 Method Not Allowed, RFC 3261 §8.2.1)."""
SUPPORTED_EXTENSIONS = frozenset({"timer"})
"""Option tags a Require header may name (anything else: 420 Bad Extension)."""
URI_SCHEMES = frozenset({"sip", "sips", "tel"})
BODY_TYPES = {
    "INVITE": ("application/sdp", "multipart/mixed"),
    "UPDATE": ("application/sdp", "multipart/mixed"),
    "INFO": ("application/dtmf-relay", "application/dtmf"),
}
"""Content types understood per method; INVITE/UPDATE bodies of other types get 415."""

COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "u": "allow-events",
    "x": "session-expires",
    "b": "referred-by",
}
SINGLE = ("call-id", "cseq", "from", "to", "content-length", "content-type", "max-forwards")
REQUIRED = ("via", "from", "to", "call-id", "cseq")

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_METHOD = re.compile(_TOKEN)
_HEADER_NAME = re.compile(rf"({_TOKEN})[ \t]*:")
_VERSION = re.compile(r"SIP/(\d+)\.(\d+)", re.IGNORECASE)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_CSEQ = re.compile(r"(\d{1,20})[ \t]+(" + _TOKEN + r")")
_DIGITS = re.compile(r"\d{1,20}")
_VIA = re.compile(
    r"SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*[A-Za-z0-9\-]+[ \t]+[^ \t;,]+[ \t]*"
    r"(?:;[ \t]*[^;, \t][^;,]*)*",
    re.IGNORECASE,
)
_DISPLAY_TOKENS = re.compile(rf"(?:{_TOKEN}|[ \t])*")
_CONTENT_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})", re.IGNORECASE)
_CSEQ_MAX = 2**31 - 1
_EXPIRES_MAX = 2**32 - 1


@dataclass(frozen=True)
class Problem:
    status: int
    reason: str
    detail: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def warning(self) -> str:
        """A Warning header value (RFC 3261 §20.43, code 399: miscellaneous) with the detail."""
        text = self.detail.replace("\\", "\\\\").replace('"', '\\"')
        return f'399 voicetyped "{text}"'


@dataclass
class Headers:
    """Header values by lower-case full name, in order (one entry per header line)."""

    values: dict[str, list[str]] = field(default_factory=dict)

    def all(self, name: str) -> list[str]:
        return self.values.get(name, [])

    def first(self, name: str) -> str | None:
        found = self.values.get(name)
        return found[0] if found else None


@dataclass(frozen=True)
class Parsed:
    """What the checks learned of a message (also used to answer it)."""

    is_request: bool
    method: str
    uri: str
    headers: Headers
    body: bytes


class Invalid(Exception):  # noqa: N818 - carries the Problem, not an error condition of ours
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem
        self.parsed: Parsed | None = None


def _bad(detail: str, status: int = 400, reason: str = "Bad Request", **headers: str) -> Invalid:
    return Invalid(
        Problem(status, reason, detail, {k.replace("_", "-"): v for k, v in headers.items()})
    )


def allow_header() -> str:
    return ", ".join(IMPLEMENTED)


def split_message(data: bytes) -> tuple[bytes, bytes]:
    """(header section, body) at the first empty line (CRLF CRLF, or bare LF LF)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        head, found, body = data.partition(sep)
        if found:
            return head, body
    return data, b""


def parse(data: bytes) -> Parsed:
    """Split and unfold a message into start line and headers (raises :class:`Invalid`)."""
    head, body = split_message(data.lstrip(b"\r\n"))  # RFC 3261 §7.5: leading CRLFs
    too_large: Invalid | None = None
    if len(head) > MAX_HEADER_BYTES:  # still parsed (once, at most 64 KiB): to answer it
        too_large = _bad(
            f"header section of {len(head)} bytes exceeds {MAX_HEADER_BYTES}",
            513,
            "Message Too Large",
        )
    deferred = too_large
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("utf-8", errors="replace")  # parsed anyway: to answer it
        deferred = deferred or _bad("header section is not UTF-8")
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():  # RFC 3261 §7.5: ignore leading CRLFs
        lines.pop(0)
    if not lines:
        raise _bad("empty message")
    start = lines[0]
    unfolded: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not unfolded:
                raise _bad("continuation line before the first header")
            unfolded[-1] += " " + line.strip()
        elif line:
            unfolded.append(line)
    headers = Headers()
    bad_line: str | None = None
    for line in unfolded:
        match = _HEADER_NAME.match(line)
        if match is None:
            bad_line = bad_line or line
            continue
        name = match.group(1).lower()
        name = COMPACT.get(name, name)
        headers.values.setdefault(name, []).append(line[match.end() :].strip())
    if start.startswith(("SIP/", "sip/")):
        return Parsed(False, "", "", headers, body)
    try:
        method, uri = _request_line(start)
        if deferred is not None:
            raise deferred
        if bad_line is not None:
            raise _bad(f"malformed header line {bad_line[:60]!r}")
    except Invalid as exc:  # keep the headers: the answer needs them
        exc.parsed = Parsed(True, start.split(" ", 1)[0], "", headers, body)
        raise
    return Parsed(True, method, uri, headers, body)


def _request_line(start: str) -> tuple[str, str]:
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        if len(start.split()) == 3:
            raise _bad("Request-Line elements must be separated by single spaces")
        if len(start.split()) == 2:
            raise _bad("Request-Line has no SIP-Version")
        raise _bad(f"malformed Request-Line {start[:80]!r}")
    method, uri, version = parts
    if not _METHOD.fullmatch(method):
        raise _bad(f"method {method[:40]!r} is not a token")
    found = _VERSION.fullmatch(version)
    if found is None:
        raise _bad(f"malformed SIP-Version {version[:20]!r}")
    if (int(found.group(1)), int(found.group(2))) != (2, 0):
        raise _bad(
            f"SIP version {version} is not supported",
            505,
            "Version Not Supported",
        )
    if uri.startswith("<"):
        raise _bad("Request-URI must not be enclosed in <>")
    scheme = _SCHEME.match(uri)
    if scheme is None:
        raise _bad(f"Request-URI {uri[:60]!r} has no scheme")
    if scheme.group(1).lower() not in URI_SCHEMES:
        raise _bad(
            f"Request-URI scheme {scheme.group(1)!r} is not supported",
            416,
            "Unsupported URI Scheme",
        )
    if scheme.group(1).lower() in ("sip", "sips") and "?" in uri:
        raise _bad("Request-URI must not carry headers")
    return method, uri


def _check_quotes(name: str, value: str) -> None:
    """Balanced double quotes (backslash escapes inside) and <>."""
    quoted = False
    escaped = False
    angle = 0
    for ch in value:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            angle += 1
        elif not quoted and ch == ">":
            angle -= 1
            if angle < 0:
                break
    if quoted:
        raise _bad(f"unterminated quoted string in {name}")
    if angle != 0:
        raise _bad(f"unbalanced <> in {name}")


def _check_address(name: str, value: str) -> None:
    """name-addr or addr-spec (From, To, Contact entries)."""
    _check_quotes(name, value)
    if value.strip() == "*" and name == "Contact":
        return
    if "<" in value:
        display = value[: value.index("<")].strip()
        if display and not display.startswith('"') and not _DISPLAY_TOKENS.fullmatch(display):
            raise _bad(f"{name} display name has characters that need quotes")
        uri = value[value.index("<") + 1 : value.index(">")]
    else:
        spec = value.split(";", 1)[0].strip()
        if " " in spec or "\t" in spec:
            raise _bad(f"{name} URI must be enclosed in <> or contain no spaces")
        if "?" in spec or "," in spec:
            raise _bad(f"{name} URI with headers or commas must be enclosed in <>")
        uri = spec
    if _SCHEME.match(uri.strip()) is None:
        raise _bad(f"{name} has no URI")


def _split_commas(value: str) -> list[str]:
    """Comma-separated entries, ignoring commas inside quotes and <>."""
    parts: list[str] = []
    current: list[str] = []
    quoted, angle = False, 0
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            angle += 1
        elif not quoted and ch == ">":
            angle -= 1
        if ch == "," and not quoted and angle == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def _media_type(value: str) -> str:
    found = _CONTENT_TYPE.match(value.strip())
    if found is None:
        raise _bad(f"malformed Content-Type {value[:60]!r}")
    return f"{found.group(1)}/{found.group(2)}".lower()


def check_headers(parsed: Parsed) -> None:
    """The header checks of :func:`check_request` (raises :class:`Invalid`)."""
    h = parsed.headers
    for name in REQUIRED:
        if not h.all(name):
            raise _bad(f"missing {name} header")
    for name in SINGLE:
        if len(h.all(name)) > 1:
            raise _bad(f"more than one {name} header")
    for via in h.all("via"):
        for entry in _split_commas(via):
            if not _VIA.fullmatch(entry):
                raise _bad(f"malformed Via {entry[:80]!r}")
    for name in ("from", "to"):
        value = h.first(name) or ""
        if len(_split_commas(value)) != 1:
            raise _bad(f"{name} must hold exactly one address")
        _check_address(name.capitalize(), value)
    for contact in h.all("contact"):
        for entry in _split_commas(contact):
            _check_address("Contact", entry)
            expires = re.search(r";\s*expires\s*=\s*([^;\s]*)", entry, re.IGNORECASE)
            if expires and (
                not _DIGITS.fullmatch(expires.group(1)) or int(expires.group(1)) > _EXPIRES_MAX
            ):
                raise _bad("Contact expires parameter out of range")
    if not (h.first("call-id") or "").strip():
        raise _bad("empty Call-ID")
    cseq = _CSEQ.fullmatch((h.first("cseq") or "").strip())
    if cseq is None:
        raise _bad("malformed CSeq")
    if int(cseq.group(1)) > _CSEQ_MAX:
        raise _bad("CSeq number is larger than 2^31 - 1")
    if parsed.is_request and cseq.group(2) != parsed.method:
        raise _bad(f"CSeq method {cseq.group(2)!r} does not match {parsed.method!r}")
    for name, limit in (("max-forwards", 255), ("expires", _EXPIRES_MAX)):
        scalar = h.first(name)
        if scalar is not None and (not _DIGITS.fullmatch(scalar) or int(scalar) > limit):
            raise _bad(f"{name} must be a number from 0 to {limit}")
    length = h.first("content-length")
    if length is not None:
        if not _DIGITS.fullmatch(length):
            raise _bad(f"Content-Length {length[:20]!r} is not a non-negative number")
        declared = int(length)
        if declared > MAX_BODY_BYTES:
            raise _bad(
                f"body of {declared} bytes exceeds {MAX_BODY_BYTES}",
                413,
                "Request Entity Too Large",
            )
        if declared > len(parsed.body):
            raise _bad(f"Content-Length {declared} is larger than the {len(parsed.body)}-byte body")
    elif len(parsed.body) > MAX_BODY_BYTES:
        raise _bad(
            f"body of {len(parsed.body)} bytes exceeds {MAX_BODY_BYTES}",
            413,
            "Request Entity Too Large",
        )
    if h.first("content-type") is not None:
        _media_type(h.first("content-type") or "")


def body_of(parsed: Parsed) -> bytes:
    """The body as Content-Length delimits it (the whole rest when absent)."""
    length = parsed.headers.first("content-length")
    return parsed.body if length is None else parsed.body[: int(length)]


def check_request(data: bytes) -> tuple[Parsed | None, Problem | None]:
    """Check one datagram / framed message. Returns what was parsed (None when nothing could
    be) and the problem to answer (None: let the stack handle it). Responses are only parsed
    (a malformed response is dropped by the caller: there is nothing to answer)."""
    try:
        parsed = parse(data)
    except Invalid as exc:
        return exc.parsed, exc.problem
    if not parsed.is_request:
        return parsed, None
    try:
        check_headers(parsed)
    except Invalid as exc:
        return parsed, exc.problem
    method = parsed.method
    if method == "ACK":
        return parsed, None
    if method not in IMPLEMENTED:
        if method in KNOWN_NOT_ALLOWED:
            return parsed, Problem(
                405, "Method Not Allowed", f"{method} is not served here", {"Allow": allow_header()}
            )
        return parsed, Problem(
            501, "Not Implemented", f"method {method} is not implemented", {"Allow": allow_header()}
        )
    if method != "CANCEL":
        required = {
            tag.strip().lower()
            for value in parsed.headers.all("require")
            for tag in value.split(",")
            if tag.strip()
        }
        unsupported = sorted(required - SUPPORTED_EXTENSIONS)
        if unsupported:
            return parsed, Problem(
                420,
                "Bad Extension",
                f"unsupported extension {', '.join(unsupported)}",
                {"Unsupported": ", ".join(unsupported)},
            )
    content_type = parsed.headers.first("content-type")
    if (
        body_of(parsed).strip()
        and method in BODY_TYPES
        and content_type is not None
        and _media_type(content_type) not in BODY_TYPES[method]
    ):
        accept = ", ".join(t for t in BODY_TYPES[method] if t != "multipart/mixed")
        return parsed, Problem(
            415,
            "Unsupported Media Type",
            f"{method} body of type {_media_type(content_type)} is not understood",
            {"Accept": accept},
        )
    return parsed, None
