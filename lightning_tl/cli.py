"""The ``lightning-tl`` command: LightningCLI in subclass mode over our modules and datamodules.

``lightning-tl fit --config recipes/simclr/digits.yaml`` reads a recipe; any module or datamodule,
ours or the user's (``class_path: my_pkg.MyModule``), can be named in it. What the datamodule knows
(``num_classes``, ``num_channels``) is linked into the model's ``num_classes`` / ``in_channels``.
The resolved config is written next to each run's logs and checkpoints.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI


class LightningTLCLI(LightningCLI):
    """LightningCLI with our defaults: subclass mode for model and data, data -> model links."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.num_channels", "model.init_args.in_channels", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Log to CSV under ``trainer.default_root_dir`` unless the config names a logger.

        Lightning's own default depends on whether TensorBoard happens to be installed; a recipe's
        metrics should land in the same place (``<default_root_dir>/lightning_logs/version_N/metrics.csv``)
        on every machine, and follow ``--trainer.default_root_dir``.
        """
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        trainer = config.trainer
        if trainer.logger is None or trainer.logger is True:
            trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.CSVLogger",
                init_args=Namespace(save_dir=trainer.default_root_dir or "."),
            )


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lightning-tl`` console script and ``python -m lightning_tl``.

    ``preview`` and ``augsearch`` are tools of their own (:mod:`lightning_tl.preview`,
    :mod:`lightning_tl.augsearch`); every other subcommand goes to LightningCLI.
    """
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] in TOOLS:
        importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
        return
    if not argv or argv[0] in ("-h", "--help"):  # LightningCLI's help lists only its own subcommands
        print(f"lightning-tl also has: {', '.join(TOOLS)} (`lightning-tl <tool> --help`)\n")
    build_cli(args)


#: Subcommands that are not LightningCLI's: name -> module with ``main(argv)``.
TOOLS = {"preview": "lightning_tl.preview", "augsearch": "lightning_tl.augsearch"}


def build_cli(args: list[str] | None = None, run: bool = True) -> LightningTLCLI:
    """Parse ``args`` (default: ``sys.argv``), instantiate, and run the subcommand unless ``run=False``."""
    import lightning_tl.datamodules
    import lightning_tl.modules  # noqa: F401

    kwargs: dict[str, Any] = {
        "model_class": L.LightningModule,
        "datamodule_class": L.LightningDataModule,
        "subclass_mode_model": True,
        "subclass_mode_data": True,
        "save_config_kwargs": {"overwrite": True},
        "args": args,
        "run": run,
    }
    return LightningTLCLI(**kwargs)
