"""Fixtures for the integration gateway's tests: real backends on 127.0.0.1 (no mocked transports).

* ``backend``: a plain-HTTP :class:`backend_server.Backend`, started for the test;
* ``certs``: the test PKI (:mod:`certs`), generated once per session;
* ``tls_backend``: an HTTPS backend that requires a client certificate signed
  by the test CA (``ssl.CERT_REQUIRED``).

tests/ is no package and pytest's importlib mode puts nothing on sys.path, so
the helper modules are loaded by path (:func:`load_helper`). Test modules get
their types with ``if TYPE_CHECKING: from images.integration.tests.backend_server
import Backend`` (mypy runs from the repository root) and their instances from
these fixtures.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from images.integration.tests.backend_server import Backend
    from images.integration.tests.certs import TestCerts


def load_helper(name: str) -> ModuleType:
    """Load ``<name>.py`` next to this file once (as ``voicetyped_integration_tests_<name>``)."""
    module_name = f"voicetyped_integration_tests_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(
        module_name, Path(__file__).with_name(f"{name}.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCerts:
    """CA, server and client certificates in a temporary directory (see certs.py)."""
    made: TestCerts = load_helper("certs").make_certs(tmp_path_factory.mktemp("certs"))
    return made


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    """A running plain-HTTP test backend (see backend_server.py for routes and faults)."""
    server: Backend = load_helper("backend_server").Backend()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def tls_backend(certs: TestCerts) -> AsyncIterator[Backend]:
    """A running HTTPS test backend that demands a client certificate from the test CA."""
    server: Backend = load_helper("backend_server").Backend()
    await server.start(ssl_context=certs.server_context(require_client_cert=True))
    yield server
    await server.stop()
