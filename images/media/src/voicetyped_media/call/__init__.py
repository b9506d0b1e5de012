"""A call through the gateway (see :mod:`.media_call`)."""

from voicetyped_media.call.media_call import CallConfig, MediaCall, Services

__all__ = ["CallConfig", "MediaCall", "Services"]
