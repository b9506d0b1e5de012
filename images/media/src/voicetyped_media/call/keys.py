"""A call's key presses, whichever way they come (RFC 4733 events in the RTP, SIP INFO, or DTMF
tones in the audio when the caller offered no telephone-event), reported to the runtime."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from voicetyped.service.logs import get_logger
from voicetyped.v1 import common_pb2, runtime_pb2

from voicetyped_media.dtmf.inband import InbandDetector

if TYPE_CHECKING:
    from voicetyped_media.metrics import MediaMetrics

log = get_logger("voicetyped.media.call")

SOURCE = {
    "rfc4733": runtime_pb2.DtmfReceived.SOURCE_RFC4733,
    "sip_info": runtime_pb2.DtmfReceived.SOURCE_SIP_INFO,
    "inband": runtime_pb2.DtmfReceived.SOURCE_INBAND,
    # A browser call's keypad (digits on its data channel): no value of its own in the API.
    "webrtc": runtime_pb2.DtmfReceived.SOURCE_UNSPECIFIED,
}


class KeyRelay:
    def __init__(
        self,
        session_id: str,
        metrics: MediaMetrics,
        clock_ms: Callable[[], int],
        deliver: Callable[[runtime_pb2.DtmfReceived], None],
    ) -> None:
        self._session_id = session_id
        self._metrics = metrics
        self._clock_ms = clock_ms
        self._deliver = deliver
        self._inband: InbandDetector | None = None

    def listen_inband(self, mode: str, telephone_event: int | None) -> None:
        """Detect tones in the caller's audio: ``mode`` on, or auto without telephone-event."""
        if mode == "on" or (mode == "auto" and telephone_event is None):
            self._inband = InbandDetector(16000)

    def audio(self, pcm: bytes, start_ms: int) -> None:
        """The caller's 16 kHz audio, for in-band tones."""
        if self._inband is not None:
            for tone in self._inband.push(pcm, start_ms):
                self.key(tone.digit, tone.duration_ms, "inband", tone.start_ms)

    def key(self, digit: str, duration_ms: int, source: str, at_ms: int | None = None) -> None:
        self._metrics.dtmf.labels(source).inc()
        log.info(
            "dtmf", digit=digit, duration_ms=duration_ms, source=source, session_id=self._session_id
        )
        self._deliver(
            runtime_pb2.DtmfReceived(
                dtmf=common_pb2.DtmfEvent(digit=digit, duration_ms=duration_ms),
                source=SOURCE[source],
                at_ms=at_ms if at_ms is not None else self._clock_ms(),
            )
        )

    def flush(self) -> None:
        """The call ends: report a tone still sounding."""
        if self._inband is not None:
            for key in self._inband.flush():
                self.key(key.digit, key.duration_ms, "inband", key.start_ms)
