"""Reconcilers: the logic behind the thin kopf handlers."""
