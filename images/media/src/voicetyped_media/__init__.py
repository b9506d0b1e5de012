"""The media gateway: SIP and RTP at the edge, 16 kHz PCM to the speech gateway."""
