"""Running the whole pipeline on one machine (`voicetyped up`)."""
