"""Freeze strategies by name: ``FreezeSchedule(strategy="bitfit")`` and strategies users add.

Example::

    >>> list_freeze_strategies()
    ['auto', 'bitfit', 'full', 'linear_probe', 'norm_only', 'partial']
    >>> create_freeze_strategy("bitfit").name
    'bitfit'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning_tl.callbacks.freeze_auto import AutoBySize
from lightning_tl.callbacks.freeze_strategies import (
    BitFit,
    FreezeStrategy,
    FullFinetune,
    LinearProbe,
    NormOnly,
    PartialFinetune,
)

_STRATEGIES: dict[str, Callable[..., FreezeStrategy]] = {}


def register_freeze_strategy(
    name: str, factory: Callable[..., FreezeStrategy], *, overwrite: bool = False
) -> None:
    """Make ``FreezeSchedule(strategy=name)`` (and ``strategy: name`` in YAML) build ``factory()``.

    ``factory`` is a :class:`~lightning_tl.callbacks.freeze_strategies.FreezeStrategy` subclass or any
    callable returning one. Example: ``register_freeze_strategy("top_norms", TopNorms)``.

    Raises:
        ValueError: an empty name, a factory that is not callable, or a name already registered
            (pass ``overwrite=True`` to replace it).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a freeze strategy name must be a non-empty string, got {name!r}.")
    if not callable(factory):
        raise ValueError(f"factory for {name!r} must be a FreezeStrategy class or callable, got {factory!r}.")
    if name in _STRATEGIES and not overwrite:
        raise ValueError(
            f"freeze strategy {name!r} is already registered ({_STRATEGIES[name]!r}); pick another name "
            "or pass overwrite=True."
        )
    _STRATEGIES[name] = factory


def list_freeze_strategies() -> list[str]:
    """Registered strategy names, sorted: the built-ins and those of :func:`register_freeze_strategy`."""
    return sorted(_STRATEGIES)


def create_freeze_strategy(name: str, **kwargs: Any) -> FreezeStrategy:
    """The strategy registered as ``name``, built with ``kwargs``.

    Raises:
        ValueError: an unknown name (the known ones are listed), or a factory that returned something
            other than a FreezeStrategy.
    """
    if name not in _STRATEGIES:
        known = ", ".join(map(repr, list_freeze_strategies()))
        raise ValueError(
            f"unknown strategy {name!r}; use one of {known}, a FreezeStrategy instance, or "
            "register_freeze_strategy(name, factory) first."
        )
    strategy = _STRATEGIES[name](**kwargs)
    if not isinstance(strategy, FreezeStrategy):
        raise ValueError(
            f"the factory registered as {name!r} returned {type(strategy).__name__}, not a FreezeStrategy."
        )
    return strategy


for _factory in (LinearProbe, PartialFinetune, FullFinetune, AutoBySize, BitFit, NormOnly):
    register_freeze_strategy(_factory.name, _factory)
