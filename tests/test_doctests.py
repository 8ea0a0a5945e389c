"""Every ``Example::`` in the package's docstrings runs and prints what it shows (as Lightning's do)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import lightning_tl

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(lightning_tl.__path__, "lightning_tl.")
    if not m.name.endswith("__main__")  # running it would start the CLI
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"
