"""Audio codecs behind one interface: G.711 mu/A-law, G.722, Opus; resampling to 16 kHz."""
