"""Unit tests of the operator (a package: its directory name would shadow stdlib operator)."""
