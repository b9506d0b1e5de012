"""Dialogs written inline in tests: compiled, or the validation issues they raise."""

from __future__ import annotations

import textwrap

from voicetyped_specs.dialog.compiled import CompiledDialog, DialogError, load_dialog, parse_yaml


def load(text: str) -> CompiledDialog:
    """The dialog in ``text`` (indented YAML is fine), compiled."""
    return load_dialog(parse_yaml(textwrap.dedent(text), "test.yaml"))


def issues(text: str) -> list[str]:
    """Every issue validation finds in the dialog in ``text`` (it must be refused)."""
    try:
        load(text)
    except DialogError as exc:
        return [str(i) for i in exc.issues]
    raise AssertionError("the dialog was accepted; issues were expected")
