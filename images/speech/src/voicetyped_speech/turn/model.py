"""Smart Turn v3.2 (CPU ONNX): the probability that the caller has finished their turn, from
the sound of the last seconds of it (intonation, the way a phrase trails off).

Where it comes from: the ``pipecat-ai`` 1.14.0 wheel ships the model as
``pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx`` (8.7 MB; Smart Turn by Daily,
BSD-2-Clause, the licence in the wheel's ``licenses/LICENSE``). The project installs that wheel
without any of its dependencies (the root pyproject's ``tool.uv.dependency-metadata``) and never
imports it: only the file is read, and refused unless its sha256 is the one recorded here.

Input, as Pipecat's own analyzer prepares it: the last 8 s of 16 kHz audio (zeros in front when
shorter), normalised to zero mean and unit variance, as Whisper's 80-bin log-mel features; the
output is one probability. faster-whisper's feature extractor (already a dependency) computes
the same features as the Transformers one Pipecat copies (within 3e-7 on test audio; a unit test
checks it against Pipecat's copy). One inference takes ~45 ms on one core.
"""

from __future__ import annotations

import hashlib
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

MODEL_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
MODEL_SIZE = 8_679_182
_DIST = "pipecat-ai"
_FILE = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
SAMPLE_RATE = 16000
WINDOW_S = 8
_WINDOW = WINDOW_S * SAMPLE_RATE


class TurnModelError(RuntimeError):
    """The model file is missing or not the expected one."""


def model_path() -> Path:
    """The installed model file (not yet verified)."""
    try:
        dist = metadata.distribution(_DIST)
    except metadata.PackageNotFoundError:
        raise TurnModelError(
            f"Smart Turn model not installed: the {_DIST} package (1.14.0) is missing"
        ) from None
    return Path(str(dist.locate_file(_FILE)))


def verify(path: Path) -> None:
    """Refuse a file that is not the recorded Smart Turn v3.2 model."""
    if not path.is_file():
        raise TurnModelError(f"Smart Turn model not found at {path}")
    size = path.stat().st_size
    if size != MODEL_SIZE:
        raise TurnModelError(f"Smart Turn model at {path} has {size} bytes, not {MODEL_SIZE}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MODEL_SHA256:
        raise TurnModelError(f"Smart Turn model at {path} has sha256 {digest}, not {MODEL_SHA256}")


class SmartTurn:
    """One ONNX session; :meth:`probability` blocks (~45 ms), so call it from a worker thread.
    Thread-safe (one inference at a time)."""

    def __init__(self, path: Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        self.path = path or model_path()
        verify(self.path)
        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session: Any = ort.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._features = FeatureExtractor(
            feature_size=80,
            sampling_rate=SAMPLE_RATE,
            hop_length=160,
            chunk_length=WINDOW_S,
            n_fft=400,
        )
        self._lock = threading.Lock()

    def features(self, audio: NDArray[np.float32]) -> NDArray[np.float32]:
        """(1, 80, 800) model input for 16 kHz float audio (the last 8 s of it)."""
        window = np.asarray(audio, dtype=np.float32)[-_WINDOW:]
        if len(window) < _WINDOW:
            window = np.pad(window, (_WINDOW - len(window), 0))
        window = (window - window.mean()) / np.sqrt(window.var() + 1e-7)
        mel = self._features(window, padding=0)
        return np.asarray(mel[None, :, :800], dtype=np.float32)

    def probability(self, audio: NDArray[np.float32]) -> float:
        """How likely the turn is complete, 0..1, for the turn's 16 kHz audio up to now."""
        x = self.features(audio)
        with self._lock:
            out = self._session.run(None, {"input_features": x})
        return float(np.asarray(out[0]).reshape(-1)[0])
