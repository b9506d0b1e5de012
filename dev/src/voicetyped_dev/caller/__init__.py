"""A scriptable SIP caller: `voicetyped call`."""
