"""The documents voicetyped runs on, in one place: what a user writes (a Dialog, an
Integration, a VoiceDeployment), the rules and bounds it must meet, and the compiled form
the services run. The services load their documents with it, the operator validates the
custom resources and generates the CRDs from it."""
