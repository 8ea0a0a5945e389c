"""The "your own data" recipes train on generated folders and CSVs; a truncated image stops them by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from own_data import OWN_DATA_RECIPE_ARGS, captions_csv, labelled_folder

from lightning_tl.cli import build_cli, main

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# the tests shrink images to 32 px, so the ImageNet-weight recipes warn that the weights saw 224 px
pytestmark = pytest.mark.filterwarnings("ignore:.*were trained at 224x224:UserWarning")


def _fit(name: str, tmp_path: Path, *extra: str) -> Any:
    """``lightning-tl fit`` of recipe ``name`` as shipped, on data generated under ``tmp_path``."""
    overrides = OWN_DATA_RECIPE_ARGS[name](tmp_path)
    args = [
        "fit",
        "--config",
        str(RECIPES / name),
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *overrides,
        *extra,
    ]
    return build_cli(args)


@pytest.mark.parametrize("name", sorted(OWN_DATA_RECIPE_ARGS))
def test_recipe_trains_on_own_data(name: str, tmp_path: Path) -> None:
    cli = _fit(
        name,
        tmp_path,
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
    )
    trainer = cli.trainer
    assert trainer.state.finished and trainer.global_step == 2
    metrics = trainer.callback_metrics
    if name.startswith("dann/"):  # unlabelled target: no target accuracy, the domain accuracy instead
        assert "val_source_acc" in metrics and "val_domain_acc" in metrics
        assert not any("target" in key for key in metrics)


def test_every_own_data_recipe_is_covered() -> None:
    names = {"finetune/imagefolder.yaml", "simclr/imagefolder.yaml", "dann/imagefolders.yaml"}
    assert names | {"clip/captions_csv.yaml"} == set(OWN_DATA_RECIPE_ARGS)
    for name in OWN_DATA_RECIPE_ARGS:
        text = (RECIPES / name).read_text()
        first, command = text.splitlines()[0], text.split("lightning-tl fit --recipe ")[1].split()[0]
        assert first.startswith("# ") and len(first) > 20  # the purpose `lightning-tl recipes` lists
        assert command == name.removesuffix(".yaml")


def test_simclr_recipe_with_knn_monitor_on_a_labelled_folder(tmp_path: Path) -> None:
    root = labelled_folder(tmp_path / "labelled", per_class=8)
    cli = _fit(
        "simclr/imagefolder.yaml",
        tmp_path,
        f"--data.init_args.root={root}",  # the documented additions for a labelled folder
        "--data.init_args.labelled=true",
        "--data.init_args.holdout=[0.25, 0.0]",
        "--trainer.callbacks+=lightning_tl.callbacks.KNNMonitor",
        "--trainer.callbacks.k=5",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
    )
    assert "knn_acc" in cli.trainer.callback_metrics


@pytest.mark.parametrize("workers", [0, 1])
def test_truncated_image_stops_the_run_naming_the_file(tmp_path: Path, workers: int) -> None:
    labelled_folder(tmp_path / "photos", corrupt=True)  # the recipe's overrides reuse this folder
    with pytest.raises(RuntimeError, match=r"cannot decode image file \S*eel/broken\.png: it is truncated"):
        _fit(
            "finetune/imagefolder.yaml",
            tmp_path,
            f"--data.init_args.num_workers={workers}",
            "--trainer.max_epochs=1",  # one epoch reads every file (train and val)
        )


def test_captions_recipe_names_the_new_place_of_an_old_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The caption file is now a ``dataset: CaptionFile`` object; the old flat key says so."""
    csv_path = captions_csv(tmp_path / "pairs")
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--config",
                str(RECIPES / "clip/captions_csv.yaml"),
                f"--data.init_args.annotations={csv_path}",
            ]
        )
    err = capsys.readouterr().err
    new = "dataset: {class_path: lightning_tl.datamodules.CaptionFile, init_args: {path: ...}}"
    assert f"'annotations' moved: set it as (ImageTextDataModule) {new}" in err
