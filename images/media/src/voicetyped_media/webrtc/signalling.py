"""Browser calls' signalling on the media gateway's HTTP port, and the page.

    GET    /call/                        the call page (static HTML and plain JS)
    POST   /v1/webrtc/tokens             Authorization: Bearer <webrtc.token_file content>
                                         -> {"token", "expires_at"}: a short-lived call token
    POST   /v1/webrtc/calls              {"token", "sdp", "type": "offer"}
                                         -> {"session_id", "sdp", "type": "answer"}
    DELETE /v1/webrtc/calls/{session_id} hang up

Errors are JSON ``{"error": "..."}``: 401 (no, bad, expired or used token), 400 (malformed
body, SDP that cannot be answered: no audio, no Opus), 404 (no such call), 503 (at
``webrtc.max_calls``, draining, speech unavailable). The offer is answered whole, every ICE
candidate in the answer (no trickle).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Literal

from aiohttp import web
from aiortc.exceptions import InvalidAccessError, InvalidStateError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from voicetyped.service.config import ConfigError
from voicetyped.service.http import require_bearer, static_page
from voicetyped.service.logs import get_logger
from voicetyped.v1 import runtime_pb2

from voicetyped_media.call.media_call import Services
from voicetyped_media.config import MediaSettings
from voicetyped_media.metrics import MediaMetrics
from voicetyped_media.speech_audio import SpeechAtCapacity, SpeechUnavailable
from voicetyped_media.webrtc.call import WebRtcCall
from voicetyped_media.webrtc.offer import MAX_SDP_BYTES, OfferError, check_offer
from voicetyped_media.webrtc.tokens import CallTokens, TokenError, derive_key

log = get_logger("voicetyped.media.webrtc")
ENDED = runtime_pb2.CallEnded
PAGE_FILES = {"": "index.html", "call.js": "call.js"}
PAGE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def read_access_token(path: Path | None) -> str | None:
    """The access token (None: no file); a missing, unreadable or empty file stops the start
    with one line naming it (never its content)."""
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"webrtc.token_file {path}: {exc.strerror or exc}") from None
    if not token:
        raise ConfigError(f"webrtc.token_file {path} is empty")
    return token


class CallOffer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=512)
    sdp: str = Field(min_length=1, max_length=MAX_SDP_BYTES)
    type: Literal["offer"]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class WebRtcIngress:
    """The browser calls of one media gateway: signalling, admission, drain."""

    def __init__(self, settings: MediaSettings, metrics: MediaMetrics) -> None:
        w = settings.webrtc
        self.settings = settings
        self.metrics = metrics
        self._access = read_access_token(w.token_file)
        self.tokens = CallTokens(derive_key(self._access), w.token_ttl_s)
        self.calls: dict[str, WebRtcCall] = {}
        self._setting_up = 0
        self.services: Services | None = None
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/call", self._redirect),
            web.get(
                "/call/{name:[a-z.]*}",
                static_page("voicetyped_media.webrtc", "page", PAGE_FILES, PAGE_HEADERS),
            ),
            web.post(
                "/v1/webrtc/tokens",
                require_bearer(
                    self._access, "a valid access token (Authorization: Bearer) is required"
                )(self._mint),
            ),
            web.post("/v1/webrtc/calls", self._place),
            web.delete("/v1/webrtc/calls/{session_id}", self._hang_up),
        ]

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, services: Services) -> None:
        self.services = services

    async def drain(self, remaining_s: float) -> None:
        """Refuse new browser calls; let those up finish within the grace, then end them."""
        self.draining = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(remaining_s - 1.0, 0.0)):
                await self._idle.wait()
        await self.stop()

    async def stop(self) -> None:
        calls = list(self.calls.values())
        if calls:
            log.warning("ending browser calls", calls=len(calls))
        await asyncio.gather(
            *(c.end(ENDED.REASON_FAILED, 503) for c in calls), return_exceptions=True
        )

    def _ended(self, call: WebRtcCall) -> None:
        if self.calls.get(call.session_id) is call:
            del self.calls[call.session_id]
        if not self.calls:
            self._idle.set()

    # -- handlers ----------------------------------------------------------------------------

    async def _redirect(self, _: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/call/")

    async def _mint(self, _: web.Request) -> web.Response:
        """A call token; behind the access token when there is one (see routes)."""
        token, expires_at = self.tokens.mint()
        return web.json_response({"token": token, "expires_at": expires_at})

    async def _place(self, request: web.Request) -> web.Response:
        try:
            offer = CallOffer.model_validate_json(await request.read())
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            return _error(400, f"malformed call request: {problems}")
        try:
            self.tokens.spend(offer.token)
        except TokenError as exc:
            return _error(401, str(exc))
        try:
            check_offer(offer.sdp)
        except OfferError as exc:
            self.metrics.refused.labels("sdp").inc()
            return _error(400, str(exc))
        if self.draining or self.services is None:
            self.metrics.refused.labels("draining").inc()
            return _error(503, "shutting down")
        if len(self.calls) + self._setting_up >= self.settings.webrtc.max_calls:
            self.metrics.refused.labels("capacity").inc()
            return _error(503, "at browser call capacity")
        return await self._answer(offer.sdp, request.remote or "unknown")

    async def _answer(self, sdp: str, remote: str) -> web.Response:
        assert self.services is not None
        call = WebRtcCall(remote, self.settings.webrtc_dialog(), self.services, self._ended)
        self._setting_up += 1
        try:
            answer = await call.answer(sdp, self.settings.speech_attempts)
        except SpeechAtCapacity:
            retry = {"Retry-After": str(self.settings.retry_after_s)}
            return _error(503, "speech recognition at capacity", retry)
        except SpeechUnavailable:
            return _error(503, "speech recognition unavailable")
        except (ValueError, InvalidAccessError, InvalidStateError) as exc:  # aiortc refused it
            await call.end(ENDED.REASON_FAILED, 400)
            return _error(400, f"the offer cannot be answered: {exc}")
        finally:
            self._setting_up -= 1
        if self.draining or call.ended:  # the drain began while it was set up
            await call.end(ENDED.REASON_FAILED, 503)
            return _error(503, "shutting down")
        self.calls[call.session_id] = call
        self._idle.clear()
        log.info("browser call set up", session_id=call.session_id, remote=remote)
        return web.json_response({"session_id": call.session_id, "sdp": answer, "type": "answer"})

    async def _hang_up(self, request: web.Request) -> web.Response:
        call = self.calls.get(request.match_info["session_id"])
        if call is None:
            return _error(404, "no such call")
        await call.end(ENDED.REASON_CALLER_HANGUP, 200)
        return web.json_response({"session_id": call.session_id, "ended": True})
