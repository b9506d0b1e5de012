"""Argo CD health checks of the three kinds: run them, and render the argocd-cm snippet.

The three kinds report the same kstatus conditions, so one Lua script serves them
(``charts/voicetyped-operator/argocd/voicetyped.io/health.lua``); each kind keeps Argo CD's
test layout, ``<Kind>/health_test.yaml`` and ``<Kind>/testdata/``. Argo CD runs the script
under gopher-lua (Lua 5.1); :func:`health` runs it the same way with lupa's ``lua51`` (a
development dependency: the operator never runs Lua itself).

``python -m voicetyped_operator.argocd --root charts/voicetyped-operator/argocd`` writes
``argocd-cm-patch.yaml`` there: the ``resource.customizations.health.voicetyped.io_<Kind>``
keys to merge into ``argocd-cm`` (``--check`` exits 1 when it is stale).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

GROUP = "voicetyped.io"
KINDS = ("VoiceDeployment", "Dialog", "Integration")
SNIPPET = "argocd-cm-patch.yaml"


def health(lua: str, obj: Mapping[str, Any]) -> dict[str, str]:
    """``{"status": ..., "message": ...}`` as Argo CD would compute it for ``obj``."""
    from lupa import lua51

    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = runtime.table_from(dict(obj), recursive=True)
    result = runtime.execute(lua)
    if result is None:
        raise ValueError("the health script returned nothing")
    return {str(k): str(v) for k, v in dict(result).items()}


def script(root: Path) -> str:
    """The health script (the same for every kind)."""
    return (root / GROUP / "health.lua").read_text()


def scripts(root: Path) -> dict[str, str]:
    """What argocd-cm gets: one key per kind (wildcard keys need a recent Argo CD)."""
    text = script(root)
    return {kind: text for kind in KINDS}


def snippet(root: Path) -> str:
    data = {f"resource.customizations.health.{GROUP}_{k}": v for k, v in scripts(root).items()}
    header = (
        "# Argo CD health checks of the voicetyped.io kinds. Generated from voicetyped.io/\n"
        "# health.lua beside this file by `python -m voicetyped_operator.argocd` (make crds).\n"
        "# Merge into argocd-cm:\n"
        "#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file "
        f"{SNIPPET}\n"
    )
    return header + yaml.dump({"data": data}, Dumper=_Literal, sort_keys=False, width=100)


class _Literal(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks (readable Lua in the ConfigMap)."""


def _literal(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Literal.add_representer(str, _literal)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voicetyped_operator.argocd")
    parser.add_argument("--root", type=Path, required=True, help="the chart's argocd/ directory")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when stale")
    args = parser.parse_args(argv)
    root: Path = args.root
    text = snippet(root)
    target = root / SNIPPET
    if args.check:
        if not target.is_file() or target.read_text() != text:
            print(f"{target} is stale: run `make crds`", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
