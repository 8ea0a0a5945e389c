"""Small objects given in recipes as ``class_path`` + ``init_args``, and saved as plain data.

View recipes, ``SupervisedAugment`` and caption sources are objects a recipe names in YAML.
Checkpoints must not hold pickled objects (they load with ``weights_only=True``), so hyper-parameters
keep each object as its :meth:`ConfigObject.config` dict instead.
"""

from __future__ import annotations

import inspect
from typing import Any


class ConfigObject:
    """Mixin: ``config()`` and ``repr()`` from the attributes that mirror the constructor's arguments."""

    @property
    def init_args(self) -> dict[str, Any]:
        """The arguments that rebuild this object: its attributes named like constructor arguments."""
        accepted = inspect.signature(type(self).__init__).parameters
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k in accepted}

    def config(self) -> dict[str, Any]:
        """``{"class_path", "init_args"}``: plain data, for hyper-parameters and YAML."""
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(self.init_args)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.init_args.items())
        return f"{type(self).__name__}({args})"
