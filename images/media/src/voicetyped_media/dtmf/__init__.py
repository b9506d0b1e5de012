"""DTMF: RFC 4733 events, SIP INFO and in-band tones, all as one DtmfEvent."""
