"""The operator's status models (the specs live in voicetyped_specs.resources)."""
