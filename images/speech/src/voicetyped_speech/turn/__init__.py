"""End of turn: when a caller's pause ends their turn (semantic endpointing).

:mod:`.model` runs Smart Turn v3.2 on the audio of the turn, :mod:`.hints` reads the transcript
so far against what the dialog state expects, :mod:`.decision` combines the two. The streaming
recogniser (:mod:`voicetyped_speech.streaming`) asks at each pause of ``min_ms``.
"""
