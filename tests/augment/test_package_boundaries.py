"""Package boundaries: ``lightning_tl.augment`` is a leaf, and the LightningModules do not import datamodules.

Each check imports in a fresh interpreter, whose ``sys.modules`` holds only what those imports pulled in,
and names the module that asked for each forbidden import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import lightning_tl

PACKAGE = Path(lightning_tl.__file__).parent

_IMPORT = """
import importlib, json, sys

watched, modules = tuple(sys.argv[1].split(",")), sys.argv[2:]
culprits = {}


class Watch:  # records the lightning_tl modules importing a watched one; the usual finders then find it
    def find_spec(self, name, path=None, target=None):
        if name.startswith(watched) and name not in culprits:
            chain, frame = [], sys._getframe(1)
            while frame is not None:
                module = frame.f_globals.get("__name__", "")
                if module.split(".")[0] == "lightning_tl" and module not in chain:
                    chain.append(module)
                frame = frame.f_back
            culprits[name] = " <- ".join(chain)


sys.meta_path.insert(0, Watch())
for name in modules:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.startswith(watched))
print(json.dumps({m: culprits.get(m, "?") for m in loaded}))
"""


def imported_under(modules: list[str], watched: tuple[str, ...]) -> dict[str, str]:
    """Import ``modules`` in a fresh interpreter: ``{module under watched: the chain of lightning_tl modules
    that imported it, innermost first}``."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT, ",".join(watched), *modules],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:  # not a boundary verdict: the imports themselves fail
        pytest.fail(f"importing {modules} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def test_augment_imports_neither_datamodules_nor_modules() -> None:
    loaded = imported_under(["lightning_tl.augment"], ("lightning_tl.",))
    assert "lightning_tl.augment.views" in loaded  # the whole package, seen by the check
    forbidden = ("lightning_tl.datamodules", "lightning_tl.modules")
    assert {m: who for m, who in loaded.items() if m.startswith(forbidden)} == {}


def test_modules_do_not_import_datamodules() -> None:
    """The package, then every module file under lightning_tl/modules (private ones too)."""
    files = sorted(p.stem for p in (PACKAGE / "modules").glob("*.py") if p.stem != "__init__")
    assert {"simclr", "clip", "classifier"} <= set(files)
    modules = ["lightning_tl.modules", *(f"lightning_tl.modules.{f}" for f in files)]
    assert imported_under(modules, ("lightning_tl.datamodules",)) == {}
