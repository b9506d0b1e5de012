"""The conversation runtime: the deterministic dialog FSM of every call."""
