"""Hypothesis strategies for the CallSession model."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from voicetyped.session import (
    UINT32_MAX,
    UINT64_MAX,
    BackendResultEvent,
    CallerInfo,
    CallHook,
    CallSession,
    DTMFEvent,
    Hangup,
    PlayTTS,
    SipHeader,
    SpeechEvent,
    SpeechTiming,
    TimeoutEvent,
    Transfer,
)

# Any Unicode text that UTF-8 can carry (no lone surrogates): what SIP and JSON allow.
text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
nonempty = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=20)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(text, json_values, max_size=5)


@st.composite
def timings(draw: st.DrawFn) -> SpeechTiming:
    start = draw(st.integers(0, UINT64_MAX))
    end = draw(st.integers(start, UINT64_MAX))
    return SpeechTiming(start_ms=start, end_ms=end)


events = st.one_of(
    st.builds(
        SpeechEvent,
        transcript=text,
        confidence=st.floats(0.0, 1.0),
        timing=timings(),
    ),
    st.builds(
        DTMFEvent,
        digit=st.sampled_from(list("0123456789*#ABCD")),
        duration_ms=st.integers(0, UINT32_MAX),
    ),
    st.builds(TimeoutEvent, elapsed_ms=st.integers(0, UINT64_MAX)),
    st.builds(BackendResultEvent, response=json_values),
)

sip_uris = st.builds(
    lambda scheme, rest: f"{scheme}:{rest}",
    st.sampled_from(["sip", "sips", "tel"]),
    st.from_regex(r"\A[!-~]{1,30}\Z"),
)

actions = st.one_of(
    st.builds(PlayTTS, text=text, voice=st.none() | text),
    st.builds(Transfer, target=sip_uris),
    st.builds(Hangup, reason_code=st.integers(1, 127)),
    st.builds(CallHook, service=nonempty, method=nonempty, payload=json_objects),
)

callers = st.builds(
    CallerInfo,
    caller_id=text,
    sip_headers=st.lists(st.builds(SipHeader, name=nonempty, value=text), max_size=5),
)

sessions = st.builds(
    CallSession,
    session_id=nonempty,
    caller=callers,
    state=text,
    events=st.lists(events, max_size=6),
    actions=st.lists(actions, max_size=6),
)
