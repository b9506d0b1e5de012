"""Developer tools, never in an image: ``voicetyped up`` (the four services and the example
backend as local processes), ``voicetyped call`` (a scripted SIP caller with a voice and
ears) and ``make demo``."""
