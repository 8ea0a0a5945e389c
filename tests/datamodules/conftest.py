"""Register the ``ddp`` marker here too, so ``tests/datamodules`` runs on its own with --strict-markers."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ddp: multi-process (gloo, CPU) test; starts subprocesses")
