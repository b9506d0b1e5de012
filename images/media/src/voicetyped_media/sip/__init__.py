"""SIP signalling: strict request checks in front of aiosipua, the UAS, outgoing requests."""
