"""DomainAdaptationDataModule: no target labels in training (or at all), shapes checked, resumable, cycled."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from own_data import labelled_folder, unlabelled_folder

from lightning_tl.augment import SimCLRViews
from lightning_tl.datamodules import DigitsDataModule, DomainAdaptationDataModule, ImageFolderDataModule
from lightning_tl.datamodules.blended import DigitsMDataModule
from lightning_tl.datamodules.datasets import ImageSource, InMemoryImages


class LabelsForbidden:
    """A source whose labels must not be read: ``label`` fails the test."""

    def __init__(self, source: InMemoryImages) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def image(self, index: int) -> torch.Tensor:
        return self.source.image(index)

    def label(self, index: int) -> int:
        raise AssertionError("a target train label was read")


def _domains(**target_kwargs: object) -> DomainAdaptationDataModule:
    source = DigitsDataModule(rgb=True, batch_size=100, seed=1)
    return DomainAdaptationDataModule(source, DigitsMDataModule(batch_size=60, seed=1, **target_kwargs))  # type: ignore[arg-type]


def test_training_batches_hold_no_target_labels() -> None:
    dm = _domains()
    dm.setup("fit")
    splits = dm.target.splits()
    splits["train"] = LabelsForbidden(splits["train"])  # type: ignore[arg-type,index]
    loader = dm.train_dataloader()
    batches = [batch for batch, _, _ in loader]
    assert len(batches) == len(loader) == 21  # ceil(1,257 / 60) target batches; the source is cycled
    for batch in batches:
        assert set(batch) == {"source", "target"}
        x_s, y_s = batch["source"]
        assert isinstance(batch["target"], torch.Tensor)  # images only
        assert batch["target"].shape[1:] == x_s.shape[1:] == (3, 16, 16)
        assert y_s.dtype == torch.int64 and bool((y_s >= 0).all())
    # target labels exist for evaluation
    x, y = next(iter(dm.val_dataloader()[1]))
    assert x.shape[1] == 3 and bool((y >= 0).all())
    assert len(dm.test_dataloader()) == 2


def test_domains_are_not_drawn_in_the_same_order() -> None:
    dm = _domains()
    batch = next(iter(dm.train_dataloader()))[0]
    source, target = dm.source.splits()["train"], dm.target.splits()["train"]
    assert len(source) == len(target)  # the same 1,257 images, blended
    # the first source and target images are not the same underlying digit in the same place
    assert not torch.equal(batch["source"][1][:60], torch.tensor([target.label(i) for i in range(60)]))


def test_shorter_domain_is_cycled() -> None:
    dm = _domains(train_subset=150)  # 3 target batches of 60 per 13 source batches
    loader = dm.train_dataloader()
    targets = [batch["target"] for batch, _, _ in loader]
    assert len(targets) == 13
    assert torch.equal(targets[0], targets[3])  # the cycle restarts within the epoch with the same order


def test_state_round_trip_resumes_both_domains() -> None:
    dm = _domains(train_subset=150)
    loader = dm.train_dataloader()
    batches = [batch for batch, _, _ in loader]
    it = iter(loader)
    for _ in range(5):
        next(it)
    state = dm.state_dict()
    assert state["source"]["batches"] == 5 and state["target"]["batches"] == 2  # target: 5 - one full cycle
    resumed = _domains(train_subset=150)
    resumed.load_state_dict(state)
    rest = [batch for batch, _, _ in resumed.train_dataloader()]
    assert len(rest) == 8
    for a, b in zip(rest, batches[5:], strict=True):
        assert torch.equal(a["source"][0], b["source"][0]) and torch.equal(a["target"], b["target"])


def test_channel_mismatch_is_rejected_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"1 channel\(s\), target images 3.*rgb: true on the source"):
        DomainAdaptationDataModule(DigitsDataModule(), DigitsMDataModule())


def test_size_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"16 px, target images 28 px.*same image_size"):
        DomainAdaptationDataModule(DigitsDataModule(rgb=True), DigitsMDataModule(image_size=28))


def test_multi_view_domains_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"source datamodule makes multi-view batches.*set its views: null"):
        DomainAdaptationDataModule(DigitsDataModule(rgb=True, views=SimCLRViews()), DigitsMDataModule())
    with pytest.raises(ValueError, match=r"target datamodule makes multi-view batches \(num_views=6\)"):
        DomainAdaptationDataModule(
            DigitsDataModule(rgb=True), DigitsMDataModule(views=SimCLRViews(local_views=4))
        )
    with pytest.raises(TypeError, match="VisionDataModule"):
        DomainAdaptationDataModule(DigitsDataModule(rgb=True), object())  # type: ignore[arg-type]


class EmptyTrainDigitsM(DigitsMDataModule):
    def _load_splits(self) -> dict[str, ImageSource]:
        splits = super()._load_splits()
        train = splits["train"]
        assert isinstance(train, InMemoryImages)
        return {**splits, "train": train.subset(torch.zeros(0, dtype=torch.long))}


def test_empty_target_is_rejected() -> None:
    dm = DomainAdaptationDataModule(DigitsDataModule(rgb=True), EmptyTrainDigitsM())
    with pytest.raises(ValueError, match="target domain's train split is empty"):
        dm.setup("fit")


# ----------------------------------------------------------------- users' folders
def _folders(
    tmp_path: Path, target_labelled: bool = False, **source_kwargs: object
) -> DomainAdaptationDataModule:
    common = {"image_size": 24, "rgb": True, "batch_size": 4}
    source = ImageFolderDataModule(str(labelled_folder(tmp_path / "source")), **common, **source_kwargs)  # type: ignore[arg-type]
    target_root = (
        labelled_folder(tmp_path / "labelled_target")
        if target_labelled
        else unlabelled_folder(tmp_path / "target")
    )
    target = ImageFolderDataModule(str(target_root), labelled=target_labelled, **common)  # type: ignore[arg-type]
    return DomainAdaptationDataModule(source, target)


def test_unlabelled_target_folder_trains_and_reports_no_target_labels(tmp_path: Path) -> None:
    dm = _folders(tmp_path)
    dm.setup("fit")
    assert not dm.target_labelled and dm.num_classes == 3
    batches = [batch for batch, _, _ in dm.train_dataloader()]
    assert len(batches) == 4  # 15 source train images in batches of 4 (the longer domain); 11 target cycle
    for batch in batches:
        assert batch["source"][0].shape[1:] == batch["target"].shape[1:] == (3, 24, 24)
    source_val, target_val = dm.val_dataloader()
    assert bool((next(iter(source_val))[1] >= 0).all())
    assert next(iter(target_val))[1].tolist() == [-1]  # no labels: DANN logs no target accuracy


def test_labelled_target_folder_must_name_the_same_classes(tmp_path: Path) -> None:
    dm = _folders(tmp_path, target_labelled=True)
    dm.setup("fit")
    assert dm.target_labelled and bool((next(iter(dm.val_dataloader()[1]))[1] >= 0).all())
    (tmp_path / "labelled_target" / "eel").rename(tmp_path / "labelled_target" / "fish")
    renamed = ImageFolderDataModule(str(tmp_path / "labelled_target"), image_size=24, rgb=True)
    dm = DomainAdaptationDataModule(dm.source, renamed)
    with pytest.raises(ValueError, match=r"classes \['cat', 'dog', 'eel'\] differ from target classes"):
        dm.setup("fit")


def test_unlabelled_source_is_rejected(tmp_path: Path) -> None:
    dm = _folders(tmp_path, labelled=False)
    with pytest.raises(ValueError, match="source domain has no labels"):
        dm.setup("fit")
