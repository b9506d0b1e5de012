"""Integration: the integration gateway's document, with auth material as Secret references.

The spec is :class:`voicetyped_specs.integration.IntegrationSpec`: the same definition as the
gateway's document, with Secret references where the document has file paths. Inline secrets
are refused by CEL (and again by the model): there is no field that could carry one.
"""

from __future__ import annotations

from voicetyped_specs.integration import IntegrationSpec
from voicetyped_specs.resources.base import cel

MODEL = IntegrationSpec

ROOT_RULES = [
    cel(
        "self.metadata.name.matches('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$')",
        "Integration names are DNS labels of at most 63 characters (call_hook.service)",
    ),
    cel(
        "!has(self.spec.name) || self.spec.name == self.metadata.name",
        "spec.name must equal metadata.name (or be left out)",
    ),
]
