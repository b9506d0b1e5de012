"""RTP media: port pool, receive path (reorder, conceal, resample), paced sending."""
