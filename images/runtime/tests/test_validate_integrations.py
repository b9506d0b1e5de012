"""`voicetyped dialog validate --integration`: call_hook targets against Integration files."""

from __future__ import annotations

import textwrap
from pathlib import Path

from typer.testing import CliRunner
from voicetyped_runtime.cli import app

REPO = Path(__file__).resolve().parents[3]
INTEGRATIONS = REPO / "examples" / "integrations"


def _dialog(tmp_path: Path, service: str, method: str) -> Path:
    path = tmp_path / "d.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: d
            initial: a
            states:
              a:
                on_enter: [{{call_hook: {{service: {service}, method: {method}}}}}]
                transitions: [{{event: backend_result, target: b}}]
              b: {{terminal: true}}
            """
        )
    )
    return path


def test_dangling_call_hooks_fail_with_their_path(tmp_path: Path) -> None:
    dialog = _dialog(tmp_path, "shop", "get_ordr")
    result = CliRunner().invoke(app, ["validate", str(dialog), "--integration", str(INTEGRATIONS)])
    assert result.exit_code == 1, result.output
    assert "states.a.on_enter[0].call_hook.method: Integration 'shop' has no operation " in (
        result.output
    )
    assert "(did you mean 'get_order'?)" in result.output
    # Without --integration the targets are not checked (nothing to check them against).
    assert CliRunner().invoke(app, ["validate", str(dialog)]).exit_code == 0


def test_resolved_call_hooks_pass_and_each_option_adds_integrations(tmp_path: Path) -> None:
    dialog = _dialog(tmp_path, "clinic", "confirm")
    only_shop = ["--integration", str(INTEGRATIONS / "shop.yaml")]
    refused = CliRunner().invoke(app, ["validate", str(dialog), *only_shop])
    assert refused.exit_code == 1
    assert "call_hook.service: no Integration 'clinic' (loaded: shop)" in refused.output
    both = [*only_shop, "-i", str(INTEGRATIONS / "clinic.yaml")]
    result = CliRunner().invoke(app, ["validate", str(dialog), *both])
    assert result.exit_code == 0, result.output
    assert "integrations: clinic (4 operations), shop (2 operations)" in result.output


def test_an_invalid_integration_file_is_reported_with_field_paths(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: shop\nbaseURL: http://x\noperations: {get_order: {pth: /o}}\n")
    dialog = _dialog(tmp_path, "shop", "get_order")
    result = CliRunner().invoke(app, ["validate", str(dialog), "-i", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}: operations.get_order.path: required field missing" in result.output
    assert f"{bad}: operations.get_order.pth: unknown field" in result.output
