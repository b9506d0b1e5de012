"""Speech recognition backends (whisper.cpp, faster-whisper) behind one small interface."""
