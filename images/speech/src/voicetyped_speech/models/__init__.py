"""Model preparation: CTranslate2 -> whisper.cpp ggml conversion, verification, manifest."""
