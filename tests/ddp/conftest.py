"""Multi-process tests: register the ``ddp`` marker (deselect with ``-m "not ddp"``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ddp: multi-process (gloo, CPU) test; starts subprocesses")
