"""What the operator renders for the console and browser calling is what the runtime and the
media gateway read: the VoiceDeployment's ``spec.console`` / ``spec.webrtc`` become environment
and mounted token files, and those load into the services' own settings with the same values
(the two sides are written apart; this is where they meet)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from voicetyped_media.config import MediaSettings
from voicetyped_operator.render import Dependencies, Owner, ServedDialog, render
from voicetyped_operator.settings import OperatorSettings
from voicetyped_runtime.config import RuntimeSettings
from voicetyped_specs.resources.voicedeployment import VoiceDeploymentSpec

REPO = Path(__file__).resolve().parents[1]
OWNER = Owner(name="order-status", namespace="shop", uid="uid-1")


def _containers(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = Dependencies(
        dialogs=(ServedDialog("order-status", "voicetyped-dialog-order-status", "h1"),)
    )
    settings = OperatorSettings(image_registry="registry.local/voicetyped", image_tag="1.2.3")
    children = [
        c.to_dict() for c in render(OWNER, VoiceDeploymentSpec.model_validate(spec), deps, settings)
    ]
    out = {}
    for child in children:
        if child.get("kind") == "Deployment" or "template" in (child.get("spec") or {}):
            pod = child["spec"]["template"]["spec"]
            out[child["metadata"]["name"].removeprefix("order-status-")] = pod
    return out


def _environment(pod: dict[str, Any], prefix: str) -> dict[str, str]:
    return {
        e["name"]: e["value"]
        for e in pod["containers"][0]["env"]
        if e["name"].startswith(prefix) and "value" in e
    }


def _mounted_files(pod: dict[str, Any]) -> set[str]:
    """Every file path a Secret volume puts in the container."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = set()
    for mount in pod["containers"][0].get("volumeMounts", []):
        volume = volumes[mount["name"]]
        items = (volume.get("secret") or {}).get("items") or []
        for item in items:
            files.add(f"{mount['mountPath'].rstrip('/')}/{item['path']}")
    return files


def test_rendered_settings_load_into_the_services(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    document = yaml.safe_load((REPO / "examples/order-status/voicedeployment.yaml").read_text())
    spec = document["spec"]
    spec["integrations"] = []
    spec["console"] = {
        "enabled": True,
        "tokenSecretRef": {"name": "console-token", "key": "token"},
        "allowedSourceCIDRs": ["10.20.0.0/16"],
    }
    spec["webrtc"] = {
        "enabled": True,
        "tokenSecretRef": {"name": "webrtc-token", "key": "secret"},
        "allowedSourceCIDRs": ["192.168.1.0/24"],
        "tokenTtlSeconds": 120,
        "maxCalls": 7,
    }
    pods = _containers(spec)

    runtime_env = _environment(pods["runtime"], "VOICETYPED_CONSOLE__")
    media_env = _environment(pods["media"], "VOICETYPED_WEBRTC__")
    # The token files the services are told about are files the pods really mount.
    assert runtime_env["VOICETYPED_CONSOLE__TOKEN_FILE"] in _mounted_files(pods["runtime"])
    assert media_env["VOICETYPED_WEBRTC__TOKEN_FILE"] in _mounted_files(pods["media"])

    for name, value in {**runtime_env, **media_env}.items():
        monkeypatch.setenv(name, value)
    runtime = RuntimeSettings().console
    media = MediaSettings().webrtc
    assert runtime.enabled
    assert runtime.mask_callers  # maskCallerNumbers defaults to true in a cluster
    assert str(runtime.token_file) == runtime_env["VOICETYPED_CONSOLE__TOKEN_FILE"]
    assert media.enabled
    assert media.token_ttl_s == 120
    assert media.max_calls == 7
    assert media.dialog == "order-status"  # the media dialog when webrtc.dialog is empty
    assert str(media.token_file) == media_env["VOICETYPED_WEBRTC__TOKEN_FILE"]
