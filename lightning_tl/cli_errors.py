"""Errors of the ``lightning-tl`` command as one short message: the root cause, not the parser's dumps.

A bad value in a recipe reaches the user through jsonargparse, which wraps the error of our own
validation in union-type reports, ``Namespace(...)`` dumps of every argument and a usage text of
40-110 lines. :func:`root_cause` finds the error our code raised, or strips the parser's report to
the lines that say what was wrong.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from types import TracebackType

from lightning_tl.datamodules.moved_args import MOVED
from lightning_tl.modules.backbone_module import RENAMED

_PACKAGE = str(Path(__file__).resolve().parent)
#: Lines of jsonargparse's reports that say nothing about the mistake.
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "- Expected a <class 'NoneType'>",
    "Given value type:",
    "Given value:",
)


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and its causes / contexts, outermost first (each once)."""
    out: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in out):
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def _raised_here(error: BaseException) -> bool:
    """Whether the innermost frame of ``error``'s traceback is in lightning_tl's own code."""
    tb: TracebackType | None = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(_PACKAGE)


def root_cause(error: BaseException) -> str:
    """The message to show for ``error``: ``"<Type>: <message>"`` of the innermost error raised by
    lightning_tl's own validation, else the parser's message without its union/value dumps."""
    ours = [e for e in _chain(error) if _raised_here(e)]
    if ours:
        inner = ours[-1]
        return f"{type(inner).__name__}: {inner}"
    lines = [line for line in str(error).splitlines() if line.strip()]
    kept = [line for line in lines if not line.strip().startswith(_NOISE)]
    message = textwrap.dedent("\n".join(kept or lines)).strip()
    # the parser names a refused dict value by its first key: 'model_kwargs.channels'
    refused = set(re.findall(r"Option '(\w+)[\w.]*' is not accepted", message))
    hints = [f"'{key}' moved: set it as {MOVED[key]}" for key in sorted(refused & set(MOVED))]
    hints += [f"'{key}' is now called '{RENAMED[key]}'" for key in sorted(refused & set(RENAMED))]
    return "\n".join([message, *hints])
