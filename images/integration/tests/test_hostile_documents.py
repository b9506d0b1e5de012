"""The integration gateway fed hostile Integration files: each rejected with one line, quickly
and without growing, and the other integrations in the directory still loaded."""

from __future__ import annotations

import shutil
from pathlib import Path

from voicetyped_testkit.footprint import measure
from voicetyped_testkit.hostile import GROWTH_BYTES, HOSTILE, REFUSED_WITH, SECONDS

SHOP = Path(__file__).resolve().parents[3] / "examples" / "integrations" / "shop.yaml"


def test_hostile_integration_files_are_rejected_and_the_others_loaded(tmp_path: Path) -> None:
    directories = {}
    for kind, data in HOSTILE.items():
        directory = tmp_path / kind
        directory.mkdir()
        shutil.copy(SHOP, directory / "shop.yaml")
        (directory / f"{kind}.yaml").write_bytes(data)
        directories[kind] = directory
    found = measure(
        """
        import asyncio
        from pathlib import Path
        from prometheus_client import CollectorRegistry
        from voicetyped_integration.metrics import GatewayMetrics
        from voicetyped_integration.registry import IntegrationRegistry

        def _sync(directory):
            async def run():
                registry = IntegrationRegistry(GatewayMetrics(CollectorRegistry()))
                await registry.sync_directory(Path(directory))
                await registry.close()
                return registry.names(), registry.file_errors
            return asyncio.run(run())
        """,
        {kind: f"_sync({str(directory)!r})" for kind, directory in directories.items()},
        cwd=SHOP.parents[2],  # the example's key file is relative to the repository
    )
    for kind, footprint in found.items():
        path = directories[kind] / f"{kind}.yaml"
        assert footprint.outcome == repr((["shop"], {str(path): f"{path}: {REFUSED_WITH[kind]}"}))
        assert footprint.seconds < SECONDS, (kind, footprint)
        assert footprint.grew_bytes < GROWTH_BYTES, (kind, footprint)
