"""lightning-tl: PyTorch Lightning plugins for transfer learning.

The public API, flat::

    from lightning_tl import SimCLR, DigitsDataModule, KNNMonitor, create_backbone, nt_xent_loss

Every name in the ``__all__`` of the subpackages below is available here. Names load on first use
(PEP 562), so ``import lightning_tl.augment`` (or any one subpackage) imports only what that
subpackage needs.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

#: The subpackages whose ``__all__`` make up the flat API.
SUBPACKAGES = (
    "lightning_tl.augment",
    "lightning_tl.backbones",
    "lightning_tl.callbacks",
    "lightning_tl.datamodules",
    "lightning_tl.heads",
    "lightning_tl.losses",
    "lightning_tl.modules",
    "lightning_tl.nn",
)


def _public(module: str) -> list[str]:
    loaded = importlib.import_module(module)
    names = getattr(loaded, "__all__", None)
    if names is None:  # a plain module: its public classes and functions
        names = [
            n
            for n, v in vars(loaded).items()
            if not n.startswith("_") and getattr(v, "__module__", "") == module
        ]
    return list(names)


def __getattr__(name: str) -> Any:
    """Find ``name`` in the subpackages (importing them in order) on first access."""
    if name == "__all__":
        return ["__version__", *sorted({n for module in SUBPACKAGES for n in _public(module)})]
    if name.startswith("__"):
        raise AttributeError(name)
    if (
        importlib.util.find_spec(f"{__name__}.{name}") is not None
    ):  # a submodule: `from lightning_tl import nn`
        return importlib.import_module(f"{__name__}.{name}")
    for module in SUBPACKAGES:
        if name in _public(module):
            value = getattr(importlib.import_module(module), name)
            globals()[name] = value  # later lookups skip this function
            return value
    raise AttributeError(f"module 'lightning_tl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})
