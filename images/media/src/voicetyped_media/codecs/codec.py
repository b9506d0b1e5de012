"""One interface over the codecs the gateway speaks.

G.711 (lookup tables) and G.722 come from aiortp's codec classes; Opus is aiortp's libopus
wrapper run at 16 kHz: libopus decodes any Opus stream straight to 16 kHz mono (and encodes from
it), so Opus calls need no resampling at all. The RTP clock is what SDP says (G.722 8000 by
RFC 3551's historical quirk, Opus 48000); the PCM rate is what the codec really carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiortp.codecs.g711 import PcmaCodec, PcmuCodec

from voicetyped_media.sdp import CodecChoice

FRAME_MS = 20


@dataclass
class AudioCodec:
    name: str
    payload_type: int
    clock_rate: int
    """RTP timestamp units per second."""
    pcm_rate: int
    """Sample rate of the PCM the codec encodes and decodes."""
    impl: Any

    @property
    def frame_samples(self) -> int:
        """PCM samples in one 20 ms frame."""
        return self.pcm_rate * FRAME_MS // 1000

    @property
    def timestamp_step(self) -> int:
        """RTP timestamp advance per 20 ms frame."""
        return self.clock_rate * FRAME_MS // 1000

    def decode(self, payload: bytes) -> bytes:
        return bytes(self.impl.decode(payload))

    def encode(self, pcm: bytes) -> bytes:
        return bytes(self.impl.encode(pcm))

    def conceal(self, samples: int) -> bytes | None:
        """Codec-native loss concealment (Opus), or None where the codec has none."""
        conceal = getattr(self.impl, "conceal", None)
        result = conceal(samples) if conceal is not None else None
        return bytes(result) if result is not None else None

    def silence(self) -> bytes:
        """One encoded frame of silence."""
        return self.encode(bytes(self.frame_samples * 2))


def open_codec(choice: CodecChoice) -> AudioCodec:
    """A fresh codec instance (codecs with state, G.722 and Opus, must not be shared)."""
    if choice.name == "PCMU":
        return AudioCodec("PCMU", choice.payload_type, 8000, 8000, PcmuCodec())
    if choice.name == "PCMA":
        return AudioCodec("PCMA", choice.payload_type, 8000, 8000, PcmaCodec())
    if choice.name == "G722":
        from aiortp.codecs.g722 import G722Codec

        return AudioCodec("G722", choice.payload_type, 8000, 16000, G722Codec())
    if choice.name == "opus":
        from aiortp.codecs.opus import OpusCodec

        return AudioCodec("opus", choice.payload_type, 48000, 16000, OpusCodec(16000, 1))
    raise ValueError(f"unsupported codec {choice.name!r}")
