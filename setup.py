"""Build hook: the wheel carries the repository's one copy of ``recipes/`` as ``lightning_tl/_recipes/``.

Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithRecipes(build_py):
    """``build_py`` that also copies ``recipes/**/*.yaml`` into the built package."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads recipes/ from the checkout itself
            return
        source = ROOT / "recipes"
        if not source.is_dir():
            raise FileNotFoundError(f"{source} is missing: the package cannot be built without its recipes")
        target = Path(self.build_lib) / "lightning_tl" / "_recipes"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=lambda folder, names: [n for n in names if n.startswith(".")])


setup(cmdclass={"build_py": BuildWithRecipes})
