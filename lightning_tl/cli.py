"""The ``lightning-tl`` command: LightningCLI in subclass mode over our modules and datamodules.

``lightning-tl fit --recipe simclr/digits`` runs a packaged recipe (``lightning-tl recipes`` lists
them), ``lightning-tl fit --config my.yaml`` a file of your own; any module or datamodule, ours or
the user's (``class_path: my_pkg.MyModule``), can be named in it. What the datamodule knows
(``num_classes``, ``num_channels``) is linked into the model's ``num_classes`` / ``in_channels``.
The resolved config is written next to each run's logs and checkpoints.

``fit`` always writes ``<default_root_dir>/checkpoints/last.ckpt`` after every training epoch
(:class:`~lightning_tl.callbacks.LastCheckpoint`), whatever the recipe's validation interval, so
``--ckpt_path=last`` resumes an interrupted run from its last epoch. A checkpoint of another module
class than the recipe's is refused. Mistakes in the arguments are reported as one short message
(the root cause, without the parser's usage text); ``LIGHTNING_TL_TRACEBACK=1`` shows the full
traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_tl.callbacks.last_checkpoint import LastCheckpoint
from lightning_tl.cli_errors import root_cause
from lightning_tl.recipes import expand_recipe_args
from lightning_tl.weights import load_file

#: Subcommands that are not LightningCLI's: name -> module with ``main(argv)``.
TOOLS = {
    "recipes": "lightning_tl.recipes",
    "preview": "lightning_tl.preview",
    "augsearch": "lightning_tl.augsearch",
}
#: LightningCLI's subcommands.
SUBCOMMANDS = ("fit", "validate", "test", "predict")


class LightningTLCLI(LightningCLI):
    """LightningCLI with our defaults: subclass mode, data -> model links, ``last.ckpt`` every epoch."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.num_channels", "model.init_args.in_channels", apply_on="instantiate")

    def _subcommand_config(self) -> Namespace:
        return self.config.get(self.config.subcommand) if self.config.get("subcommand") else self.config

    def _checkpoint_dir(self) -> Path:
        """Where ``fit`` keeps ``last.ckpt``: ``<trainer.default_root_dir>/checkpoints`` (same every run)."""
        return Path(self._subcommand_config().trainer.default_root_dir or os.getcwd()) / "checkpoints"

    def _parse_ckpt_path(self) -> None:
        """Resolve ``ckpt_path=last`` to this recipe's ``last.ckpt`` and refuse another module's checkpoint.

        Lightning then reads the checkpoint's hyper-parameters into the model config (its own step).
        """
        config = self._subcommand_config()
        ckpt_path = config.get("ckpt_path") if self.config.get("subcommand") else None
        if ckpt_path == "last":
            last = self._checkpoint_dir() / "last.ckpt"
            if last.is_file():
                config.ckpt_path = ckpt_path = str(last)
        if ckpt_path and ckpt_path != "last":
            _check_checkpoint_class(ckpt_path, config.model)
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        """Log to CSV under ``trainer.default_root_dir`` unless the config names a logger.

        Lightning's own default depends on whether TensorBoard happens to be installed; a recipe's
        metrics should land in the same place (``<default_root_dir>/lightning_logs/version_N/metrics.csv``)
        on every machine, and follow ``--trainer.default_root_dir``.
        """
        trainer = self._subcommand_config().trainer
        if trainer.logger is None or trainer.logger is True:
            trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.CSVLogger",
                init_args=Namespace(save_dir=trainer.default_root_dir or "."),
            )

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """The trainer, with a :class:`LastCheckpoint` in ``fit`` unless checkpointing is switched off."""
        trainer_config = self._get(self.config_init, "trainer", default={})
        wanted = self.subcommand == "fit" and trainer_config.get("enable_checkpointing") is not False
        configured = trainer_config.get("callbacks") or []
        if wanted and not any(isinstance(c, LastCheckpoint) for c in configured):
            kwargs["callbacks"] = [*configured, LastCheckpoint(self._checkpoint_dir())]
        return super().instantiate_trainer(**kwargs)

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except Exception as error:
            error._lightning_tl_while_running = True  # type: ignore[attr-defined]
            raise


def _check_checkpoint_class(ckpt_path: str, model_config: Namespace) -> None:
    """Raise if the checkpoint was written by another module class than the config's ``model``."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path!r} is not a file; pass a checkpoint file or ckpt_path=last "
            "(<trainer.default_root_dir>/checkpoints/last.ckpt)"
        )
    checkpoint = load_file(ckpt_path, mmap=True)  # no unpickling; a foreign file is refused with its cause
    saved = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    wanted = model_config.get("class_path") if isinstance(model_config, Namespace) else None
    if saved and wanted and _qualified(saved) != _qualified(wanted):
        raise ValueError(
            f"checkpoint {ckpt_path} holds a {saved} model, but this config trains {wanted}; resume with "
            f"the config that wrote the checkpoint (its config.yaml), or load only weights through the "
            "module's pretrained= argument"
        )


def _qualified(class_path: str) -> str:
    """``module.Class`` as the class's own module and name, so re-exports compare equal."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return class_path
    return f"{cls.__module__}.{cls.__qualname__}"


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lightning-tl`` console script and ``python -m lightning_tl``.

    ``recipes``, ``preview`` and ``augsearch`` are tools of their own; every other subcommand goes
    to LightningCLI. ``--recipe NAME`` stands for ``--config <packaged recipe NAME>`` everywhere.
    """
    full_traceback = os.environ.get("LIGHTNING_TL_TRACEBACK", "0") not in ("", "0")
    try:
        argv = expand_recipe_args(sys.argv[1:] if args is None else list(args))
        if args is None:  # DDP re-runs sys.argv for the other ranks: give them the resolved recipe path
            sys.argv[1:] = argv
        if argv and argv[0] in TOOLS:
            importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
            return
        if not argv or argv[0] in ("-h", "--help"):  # LightningCLI's help lists only its own subcommands
            print(
                f"lightning-tl also has: {', '.join(TOOLS)} (`lightning-tl <tool> --help`); "
                "`--recipe NAME` runs a packaged recipe (`lightning-tl recipes` lists them)\n"
            )
        build_cli(None if args is None else argv, exit_on_error=full_traceback)
    except Exception as error:
        if full_traceback or getattr(error, "_lightning_tl_while_running", False):
            raise  # a failure while training: Python's traceback ends with its root cause
        hint = "" if isinstance(error, ValueError | OSError) else _HELP_HINT
        sys.stderr.write(f"lightning-tl: error: {root_cause(error)}{hint}\n")
        raise SystemExit(2) from None


_HELP_HINT = (
    "\n(`lightning-tl fit --help` lists the arguments; `--print_config` shows a recipe's keys and values; "
    "LIGHTNING_TL_TRACEBACK=1 shows the full traceback)"
)


def build_cli(args: list[str] | None = None, run: bool = True, exit_on_error: bool = True) -> LightningTLCLI:
    """Parse ``args`` (default: ``sys.argv``), instantiate, and run the subcommand unless ``run=False``.

    ``exit_on_error=False`` raises parse errors instead of printing the usage and exiting.
    """
    import lightning_tl.datamodules
    import lightning_tl.modules  # noqa: F401

    parser_kwargs: dict[str, Any] = {"exit_on_error": exit_on_error}
    parser_kwargs.update({name: {"exit_on_error": exit_on_error} for name in SUBCOMMANDS})
    kwargs: dict[str, Any] = {
        "model_class": L.LightningModule,
        "datamodule_class": L.LightningDataModule,
        "subclass_mode_model": True,
        "subclass_mode_data": True,
        "save_config_kwargs": {"overwrite": True},
        "parser_kwargs": parser_kwargs,
        "args": args,
        "run": run,
    }
    return LightningTLCLI(**kwargs)
