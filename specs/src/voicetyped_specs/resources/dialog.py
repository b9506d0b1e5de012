"""Dialog: the runtime's dialog document as the spec.

The schema is generated from ``voicetyped_specs.dialog.model.Dialog`` itself and the
operator validates with ``voicetyped_specs.dialog.compiled.load_dialog``: the same code
the runtime loads dialogs with, no second implementation. Only ``name`` differs: it may be
left out (metadata.name names the dialog) and must equal metadata.name when given.
"""

from __future__ import annotations

from voicetyped_specs.dialog.model import Dialog
from voicetyped_specs.resources.base import cel

MODEL = Dialog

# Descriptions for ``kubectl explain`` where the runtime's model has none.
DESCRIPTIONS = {
    "name": "Dialog name (calls and routes use it); default and only allowed value: metadata.name.",
    "description": "What the dialog does (for people).",
    "initial": "The state a call starts in (a key of states).",
    "settings": "Voice, timeouts, endpointing, transcript retention and the optional LLM.",
    "vars": "Dialog variables and their initial values.",
    "intents": "Intent name -> example phrases (matched by sentence embeddings).",
    "global_transitions": "Checked in every state after its own transitions.",
    "states": "State name -> what happens on entry and which events lead where.",
}

ROOT_RULES = [
    cel(
        "self.metadata.name.matches('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$')",
        "Dialog names are DNS labels of at most 63 characters (the runtime's dialog name)",
    ),
    cel(
        "!has(self.spec.name) || self.spec.name == self.metadata.name",
        "spec.name must equal metadata.name (or be left out)",
    ),
]

SPEC_RULES = [
    cel(
        "self.initial in self.states",
        "initial must name one of the states",
        ".initial",
    ),
    cel(
        "self.states.all(s, self.states[s].transitions.all(t, "
        "!has(t.target) || t.target in self.states))",
        "every transition target must name one of the states",
        ".states",
    ),
    cel(
        "self.global_transitions.all(t, !has(t.target) || t.target in self.states)",
        "every global transition target must name one of the states",
        ".global_transitions",
    ),
]
