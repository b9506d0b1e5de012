"""A call's speech stream failed mid-call: reopen it, or hang up with a reason.

The stream fails when its speech replica goes away (pod deleted or restarted, the process
killed) or breaks it; not when the call closed it. The call then:

1. drops the playback audio still queued from the failed stream (the caller hears silence);
2. reopens ``StreamAudio`` for the same session through the speech channel, i.e. the speech
   Service, which connects to a ready replica (marked ``resumed``: a replica at capacity
   refuses new calls, never a running one's stream): attempts of at most ``ATTEMPT_TIMEOUT_S`` that
   wait for the channel to connect, with backoff from ``FIRST_BACKOFF_S`` to ``MAX_BACKOFF_S``,
   until ``speech_restore_s`` (media setting, 10 s by default) has passed;
3. restored: caller audio goes to the new stream, and the runtime is told the new replica's
   endpoint (``CallEvent.speech_moved``), where its ``Converse`` stream moves and replays the
   prompts that had not finished playing; what the caller said meanwhile is lost;
4. not restored in time: BYE with ``Reason: Q.850;cause=41;text="speech unavailable"``,
   ``CallEnded`` with ``REASON_SPEECH_UNAVAILABLE`` (code 41) to the runtime, the call counted
   as ended with reason ``speech_unavailable``, one warning log line.

Every failure counts in ``voicetyped_media_speech_restores_total{outcome=restored|failed}``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from voicetyped.service.logs import get_logger, session_context
from voicetyped.v1 import runtime_pb2

from voicetyped_media.speech_audio import SpeechUnavailable

if TYPE_CHECKING:
    from voicetyped_media.call.media_call import MediaCall

log = get_logger("voicetyped.media.call")

ENDED = runtime_pb2.CallEnded
SPEECH_UNAVAILABLE_CAUSE = 41  # Q.850 temporary failure
SPEECH_UNAVAILABLE_REASON = f'Q.850;cause={SPEECH_UNAVAILABLE_CAUSE};text="speech unavailable"'
ATTEMPT_TIMEOUT_S = 2.0
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 2.0


async def restore(call: MediaCall) -> None:
    """Reopen the call's failed speech stream within its window, or hang up."""
    with session_context(call.session_id):
        started = time.monotonic()
        deadline = started + call.config.speech_restore_s
        failed, metrics = call.speech, call.services.metrics
        if call.playout is not None:
            call.playout.flush()  # the rest of a prompt that will not be finished
        if failed is not None:
            await failed.close()
        attempts, backoff = 0, FIRST_BACKOFF_S
        while not call.ended and (left := deadline - time.monotonic()) > 0:
            attempts += 1
            stream = call.new_speech_stream(resumed=True)
            try:
                endpoint = await stream.open(min(ATTEMPT_TIMEOUT_S, left), wait_for_ready=True)
            except SpeechUnavailable as exc:
                log.info("speech stream not restored yet", attempt=attempts, error=str(exc))
                await asyncio.sleep(max(min(backoff, deadline - time.monotonic()), 0))
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            except asyncio.CancelledError:  # the call ended meanwhile
                await stream.close()
                raise
            if call.ended:
                await stream.close()
                return
            call.speech = stream
            metrics.speech_restores.labels("restored").inc()
            log.info(
                "speech stream restored",
                speech=endpoint,
                attempts=attempts,
                seconds=round(time.monotonic() - started, 2),
            )
            if call.runtime is not None:
                call.runtime.speech_moved(endpoint)
            return
        if call.ended:
            return
        metrics.speech_restores.labels("failed").inc()
        log.warning(
            "speech unavailable; hanging up",
            attempts=attempts,
            window_s=call.config.speech_restore_s,
        )
        await call.hang_up(SPEECH_UNAVAILABLE_REASON)
        await call.end(ENDED.REASON_SPEECH_UNAVAILABLE, SPEECH_UNAVAILABLE_CAUSE)
