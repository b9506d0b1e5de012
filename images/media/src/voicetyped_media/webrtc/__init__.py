"""Browser calls: WebRTC ingress into the same media pipeline as SIP calls
(docs/browser-calling.md)."""
