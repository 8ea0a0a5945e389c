"""Recipes by name: ``lightning-tl recipes`` lists them, ``--recipe simclr/digits`` runs one.

A recipe is a LightningCLI YAML file, ``<method>/<data>.yaml``; its first line is a ``# `` comment
with its one-line purpose. The repository keeps the one copy under ``recipes/``; the wheel carries
it inside the package (``lightning_tl/_recipes/``, put there by the build), so an installed package
finds its recipes without a checkout.

Example::

    lightning-tl recipes                        # every recipe with its purpose
    lightning-tl recipes simclr/digits          # print one recipe (to copy and edit)
    lightning-tl fit --recipe simclr/digits --trainer.max_epochs=5
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
SUFFIX = ".yaml"
#: Where the build puts ``recipes/`` inside the package (not ``recipes/``: that name is this module's).
PACKAGED = "_recipes"


def recipes_dir() -> Path:
    """The folder that holds the recipes: inside the installed package, else the checkout's ``recipes/``."""
    for folder in (_PACKAGE / PACKAGED, _PACKAGE.parent / "recipes"):
        if folder.is_dir():
            return folder
    raise FileNotFoundError(
        f"no recipes found: neither {_PACKAGE / PACKAGED} (installed package) nor "
        f"{_PACKAGE.parent / 'recipes'} (repository checkout) exists; reinstall lightning-tl"
    )


def list_recipes() -> dict[str, str]:
    """Every recipe name (``"simclr/digits"``) with its one-line purpose, sorted by name."""
    root = recipes_dir()
    out = {}
    for path in sorted(root.rglob(f"*{SUFFIX}")):
        name = path.relative_to(root).with_suffix("").as_posix()
        out[name] = purpose(path)
    return out


def purpose(path: Path) -> str:
    """The first line of a recipe without its ``# `` (empty if the recipe does not start with a comment)."""
    with path.open(encoding="utf-8") as file:
        first = file.readline().strip()
    return first[1:].strip() if first.startswith("#") else ""


def resolve_recipe(name: str) -> Path:
    """The file of recipe ``name`` (``"simclr/digits"``; ``".yaml"`` and a ``recipes/`` prefix are optional).

    Raises:
        ValueError: no such recipe; close names are listed, and ``lightning-tl recipes`` lists all.
    """
    root = recipes_dir()
    clean = name.strip().removeprefix("recipes/").removesuffix(SUFFIX)
    path = root / f"{clean}{SUFFIX}"
    if clean and path.is_file():
        return path
    names = list(list_recipes())
    close = difflib.get_close_matches(clean, names, n=4, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown recipe {name!r}.{hint} `lightning-tl recipes` lists the {len(names)} recipes; "
        "for a YAML file of your own use --config PATH"
    )


def expand_recipe_args(argv: list[str]) -> list[str]:
    """Replace ``--recipe NAME`` / ``--recipe=NAME`` in ``argv`` by ``--config <file of NAME>``."""
    out: list[str] = []
    items = iter(argv)
    for arg in items:
        if arg == "--recipe":
            name = next(items, None)
            if name is None or name.startswith("-"):
                raise ValueError("--recipe needs a recipe name, e.g. --recipe simclr/digits")
            out += ["--config", str(resolve_recipe(name))]
        elif arg.startswith("--recipe="):
            out += ["--config", str(resolve_recipe(arg.split("=", 1)[1]))]
        else:
            out.append(arg)
    return out


def main(argv: list[str]) -> None:
    """``lightning-tl recipes [NAME]``: list every recipe, or print recipe NAME."""
    parser = argparse.ArgumentParser(
        prog="lightning-tl recipes",
        description="List the packaged recipes, or print one. Run one with `lightning-tl fit --recipe NAME`.",
    )
    parser.add_argument("name", nargs="?", help="a recipe to print, e.g. simclr/digits")
    args = parser.parse_args(argv)
    if args.name:
        print(resolve_recipe(args.name).read_text(encoding="utf-8"), end="")
        return
    recipes = list_recipes()
    width = max(map(len, recipes))
    for name, text in recipes.items():
        print(f"{name:<{width}}  {text}")
    print(f"\nRun one with `lightning-tl fit --recipe NAME [--key=value ...]`; files under {recipes_dir()}.")
