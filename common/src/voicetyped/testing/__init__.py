"""Helpers that start real local peers (Redis, ...) for tests, benchmarks and demos."""
