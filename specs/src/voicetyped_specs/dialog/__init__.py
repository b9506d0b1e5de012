"""Dialogs: the YAML document, its CEL expressions, validation and rendering."""
