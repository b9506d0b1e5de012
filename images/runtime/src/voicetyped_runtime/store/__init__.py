"""Durable storage of live call sessions (SQLite embedded, Redis in cluster)."""
