"""The speech gateway: VAD, local speech recognition and synthesis."""
