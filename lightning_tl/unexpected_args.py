"""A constructor's refusal of keyword arguments it does not take, naming where an old one went.

Datamodules take ``**removed`` for their flat augmentation keys that moved into objects, modules for
their renamed arguments; both refuse every such keyword the same way, with the new place where known.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def refuse_unexpected_args(owner: str, given: Mapping[str, Any], hints: Mapping[str, str]) -> None:
    """Raise TypeError for the first (by name) of ``given``, the keywords ``owner`` does not take;
    ``hints[key]`` says where an argument that moved or was renamed is set now."""
    if not given:
        return
    key = min(given)
    if key in hints:
        raise TypeError(f"{owner} has no argument {key!r} any more; {hints[key]}")
    raise TypeError(f"{owner} got an unexpected keyword argument {key!r}")
