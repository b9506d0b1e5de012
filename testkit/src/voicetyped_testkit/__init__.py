"""What the tests and benchmarks run against, never in an image: real peers (Redis, SIPp,
baresip, pjsua, gRPC stand-ins for a neighbouring service), audio helpers, service
processes."""
