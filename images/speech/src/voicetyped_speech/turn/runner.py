"""Smart Turn off the event loop: one thread of its own, a bounded queue.

Its own thread, not the recognition pool's: an inference takes ~45 ms and must not wait behind
a second-long Whisper decode (the caller is waiting in silence while it does). When more than
``max_waiting`` calls' inferences are queued the answer is None (no verdict: the decision then
waits for the longer silence), so a burst of pauses can never build an unbounded backlog.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from voicetyped.service.logs import get_logger

from voicetyped_speech.turn.model import SmartTurn

log = get_logger("voicetyped.speech.turn")


class TurnModelRunner:
    def __init__(
        self,
        model: SmartTurn,
        max_waiting: int = 8,
        on_inference: Callable[[float], None] | None = None,
    ) -> None:
        self.model = model
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="smart-turn")
        self._max_waiting = max_waiting
        self._waiting = 0
        self._on_inference = on_inference

    async def probability(self, audio: NDArray[np.float32]) -> float | None:
        """The turn model's probability that the turn is complete; None when overloaded or
        the inference failed (logged)."""
        if self._waiting >= self._max_waiting:
            return None
        self._waiting += 1
        try:
            began = time.perf_counter()
            loop = asyncio.get_running_loop()
            p = await loop.run_in_executor(self._executor, self.model.probability, audio)
            if self._on_inference is not None:
                self._on_inference(time.perf_counter() - began)
            return p
        except Exception as exc:  # onnxruntime errors have no common base class
            log.error("turn model failed", error=str(exc))
            return None
        finally:
            self._waiting -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
