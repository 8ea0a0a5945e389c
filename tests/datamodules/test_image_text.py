"""ImageTextDataModule: built-in captions, caption files, tar shards (ranks, workers, resume), errors."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from own_data import captions_csv, truncate
from torchvision.io import encode_png

from lightning_tl.augment import SimCLRViews, SupervisedAugment
from lightning_tl.datamodules import ImageTextDataModule
from lightning_tl.datamodules.caption_file import CaptionFile
from lightning_tl.datamodules.caption_shards import CaptionShards
from lightning_tl.datamodules.tar_shards import ShardLoader, TarShards, delivered_per_worker

CONTEXT = 12
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def _png(value: int) -> bytes:
    image = torch.full((3, 10, 12), value, dtype=torch.uint8)
    image[:, : value % 10] = 255 - value
    return encode_png(image).numpy().tobytes()


def _folder(tmp_path: Path, n: int = 10) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        (tmp_path / f"img{i}.png").write_bytes(_png(10 * i))
        rows.append({"filepath": f"img{i}.png", "caption": f"a photo number {i}", "label": str(i % 2)})
    return rows


def _csv(path: Path, rows: list[dict[str, str]]) -> None:
    lines = ["filepath,caption,label"] + [f"{r['filepath']},{r['caption']},{r['label']}" for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_captioned_digits_batches_and_templates() -> None:
    dm = ImageTextDataModule("digits", image_size=8, context_length=CONTEXT, batch_size=16)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (16, 1, 8, 8) and batch["text"].shape == (16, CONTEXT)
    assert batch["text"].dtype == torch.int64 and batch["label"].shape == (16,)
    decoded = [dm.tokenizer.decode(t[t > 0].tolist()) for t in batch["text"]]
    names = dm.class_names
    assert all(names[int(y)] in text for y, text in zip(batch["label"], decoded, strict=True))
    assert len({text.split(names[int(y)])[0] for y, text in zip(batch["label"], decoded, strict=True)}) > 1
    assert dm.num_classes == 10 and dm.num_channels == 1
    val = next(iter(dm.val_dataloader()))
    assert set(val) == {"image", "text", "label"}


def test_csv_and_jsonl_annotation_files(tmp_path: Path) -> None:
    rows = _folder(tmp_path)
    _csv(tmp_path / "pairs.csv", rows)
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    for name in ("pairs.csv", "pairs.jsonl"):
        dm = ImageTextDataModule(
            CaptionFile(str(tmp_path / name), label_column="label", class_names=["even", "odd"]),
            image_size=8,
            context_length=CONTEXT,
            batch_size=4,
            holdout=(0.2, 0.0),
        )
        batch = next(iter(dm.train_dataloader()))
        assert batch["image"].shape == (4, 3, 8, 8) and batch["text"].shape == (4, CONTEXT)
        assert len(dm.labelled_dataset("val")) == 2 and dm.num_classes == 2
        assert dm.mean == pytest.approx([0.48145466, 0.4578275, 0.40821073])


def test_empty_caption_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text("filepath,caption\n")
    with pytest.raises(ValueError, match="has no rows"):
        ImageTextDataModule(CaptionFile(str(tmp_path / "pairs.csv")), image_size=8)
    _folder(tmp_path, 2)
    (tmp_path / "blank.csv").write_text("filepath,caption\nimg0.png,a photo\nimg1.png,  \n")
    with pytest.raises(ValueError, match=r"empty captions in rows \[2\]"):
        ImageTextDataModule(CaptionFile(str(tmp_path / "blank.csv")), image_size=8)


def test_missing_image_paths_are_named(tmp_path: Path) -> None:
    gone = [{"filepath": f"gone{i}.png", "caption": "x", "label": "0"} for i in (1, 2)]
    rows = [*_folder(tmp_path, 3), *gone]
    _csv(tmp_path / "pairs.csv", rows)
    with pytest.raises(ValueError, match=r"2 image file\(s\) .* do not exist.*gone1\.png.*gone2\.png"):
        ImageTextDataModule(CaptionFile(str(tmp_path / "pairs.csv")), image_size=8)


def test_bad_sources_and_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"dataset must be one of .* a CaptionFile .* or CaptionShards"):
        ImageTextDataModule("imagenet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dataset must be one of"):
        ImageTextDataModule(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image_size is required for CaptionFile pairs"):
        ImageTextDataModule(CaptionFile("x.csv"))
    with pytest.raises(FileNotFoundError, match=r"annotation file 'x\.csv' does not exist"):
        ImageTextDataModule(CaptionFile("x.csv"), image_size=8)
    with pytest.raises(ValueError, match=r"must be a file ending in one of \('.csv', '.tsv', '.jsonl'\)"):
        CaptionFile("pairs.txt")
    with pytest.raises(ValueError, match=r"class_names .* set label_column too"):
        CaptionFile("pairs.csv", class_names=["cat", "dog"])
    with pytest.raises(ValueError, match="train must be a shard path"):
        CaptionShards([])
    _csv(tmp_path / "pairs.csv", _folder(tmp_path, 2))
    with pytest.raises(ValueError, match=r"no column\(s\) \['text'\]"):
        ImageTextDataModule(CaptionFile(str(tmp_path / "pairs.csv"), caption_column="text"), image_size=8)
    with pytest.raises(ValueError, match="context_length must be >= 3"):
        ImageTextDataModule("digits", context_length=2)


def test_arguments_a_source_does_not_read_are_refused(tmp_path: Path) -> None:
    _shards(tmp_path, [2])
    shards = CaptionShards(str(tmp_path / "*.tar"))
    with pytest.raises(ValueError, match="root is an argument of the Fashion-MNIST pairs; dataset='digits'"):
        ImageTextDataModule("digits", root=str(tmp_path))
    with pytest.raises(
        ValueError, match=r"val_size .* dataset='CaptionShards' .*validation pairs: the CaptionShards' val"
    ):
        ImageTextDataModule(shards, image_size=8, val_size=10)
    with pytest.raises(ValueError, match=r"dataset='CaptionShards' holds out no fractions.*val shards"):
        ImageTextDataModule(shards, image_size=8, holdout=(0.1, 0.0))
    with pytest.raises(ValueError, match=r"dataset='fashion_mnist' holds out no fractions: .* use val_size"):
        ImageTextDataModule("fashion_mnist", holdout=(0.1, 0.0))
    with pytest.raises(ValueError, match=r"val_size must be in \[0, 60000\)"):
        ImageTextDataModule("fashion_mnist", val_size=60_000)
    with pytest.raises(ValueError, match=r"mixes batches .* set mixup_alpha, cutmix_alpha and noise_std"):
        ImageTextDataModule("digits", augment=SupervisedAugment(mixup_alpha=0.2))
    with pytest.raises(TypeError, match="no argument 'views': multi-view SSL recipes do not apply"):
        ImageTextDataModule("digits", views=SimCLRViews())
    with pytest.raises(TypeError, match="no argument 'train_subset'"):
        ImageTextDataModule("digits", train_subset=100)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"annotations": "pairs.csv"}, "dataset: {class_path: .*CaptionFile, init_args: {path: ...}}"),
        ({"caption_column": "title"}, "CaptionFile, init_args: {caption_column: ...}"),
        ({"class_names": ["a"]}, "CaptionFile, init_args: {class_names: ...}} or .*CaptionShards"),
        ({"shards": "a.tar"}, "dataset: {class_path: .*CaptionShards, init_args: {train: ...}}"),
        ({"val_shards": "b.tar"}, "CaptionShards, init_args: {val: ...}}"),
        ({"val_fraction": 0.1}, r"holdout: \[val_fraction, test_fraction\]"),
        ({"hflip": False}, "augment: {class_path: lightning_tl.augment.SupervisedAugment"),
    ],
)
def test_old_flat_keys_name_their_new_place(old: dict, new: str) -> None:
    with pytest.raises(
        TypeError, match=f"ImageTextDataModule has no argument '{next(iter(old))}' any more; .*{new}"
    ):
        ImageTextDataModule("digits", **old)


def test_hyperparameters_hold_the_source_as_plain_data(tmp_path: Path) -> None:
    """Checkpoints load with weights_only=True: the source is saved as a class_path dict, not an object."""
    _csv(tmp_path / "pairs.csv", _folder(tmp_path))
    source = CaptionFile(str(tmp_path / "pairs.csv"), label_column="label", class_names=["even", "odd"])
    _shards(tmp_path, [3])
    shards = CaptionShards([str(tmp_path / "shard-000.tar")], class_names=["a"])
    for dataset in (source, shards, "digits"):
        dm = ImageTextDataModule(dataset, image_size=8, augment=SupervisedAugment(hflip=False))
        saved = dm.hparams["dataset"]
        if isinstance(dataset, str):
            assert saved == "digits"
        else:
            assert saved["class_path"] == f"{type(dataset).__module__}.{type(dataset).__name__}"
            assert repr(type(dataset)(**saved["init_args"])) == repr(dataset)  # rebuilds the same source
        assert "views" not in dm.hparams and dm.hparams_initial["dataset"] == saved
        torch.save(dict(dm.hparams), tmp_path / "hparams.pt")
        assert torch.load(tmp_path / "hparams.pt", weights_only=True) == dict(dm.hparams)


def test_csv_of_photos_of_any_size_with_an_image_root(tmp_path: Path) -> None:
    csv_path = captions_csv(tmp_path / "pairs")  # 12 PNGs and JPEGs from 20x30 to 90x70 px
    moved = tmp_path / "elsewhere" / "captions.csv"
    moved.parent.mkdir()
    csv_path.rename(moved)  # the paths in the file are now relative to image_root, not to its folder
    dm = ImageTextDataModule(
        CaptionFile(str(moved), image_root=str(tmp_path / "pairs")), image_size=16, batch_size=4
    )
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and all(b["image"].shape == (4, 3, 16, 16) for b in batches)  # 11 train pairs
    assert next(iter(dm.val_dataloader()))["image"].shape == (1, 3, 16, 16)
    assert batches[0]["label"].tolist() == [-1] * 4 and dm.num_classes == 0


def test_truncated_image_in_a_csv_is_named(tmp_path: Path) -> None:
    csv_path = captions_csv(tmp_path)
    truncate(tmp_path / "images" / "003.jpg")
    dm = ImageTextDataModule(CaptionFile(str(csv_path)), image_size=16, batch_size=2, holdout=(0, 0))
    with pytest.raises(RuntimeError, match=r"image file \S*images/003\.jpg: it is truncated"):
        list(dm.train_dataloader())


# ------------------------------------------------------------------------------------------ shards
def _shards(tmp_path: Path, sizes: list[int], cut: int | None = None) -> list[str]:
    """Shards of ``sizes`` samples (png, txt, cls); sample ``cut`` gets a truncated PNG."""
    paths, k = [], 0
    for s, size in enumerate(sizes):
        path = tmp_path / f"shard-{s:03d}.tar"
        with tarfile.open(path, "w") as tar:
            for _ in range(size):
                for ext, data in (
                    ("png", _png(k % 250)[: None if k != cut else 60]),
                    ("txt", f"caption {k}".encode()),
                    ("cls", str(k).encode()),
                ):
                    info = tarfile.TarInfo(f"{k:05d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                k += 1
        paths.append(str(path))
    return paths


def _labels(batches: list[dict]) -> list[int]:
    return [int(y) for b in batches for y in b["label"]]


def test_shards_cover_every_sample_once_with_workers(tmp_path: Path) -> None:
    paths = _shards(tmp_path, [5, 5, 4, 6])
    dm = ImageTextDataModule(
        CaptionShards(str(tmp_path / "shard-{000..003}.tar")),
        image_size=8,
        context_length=CONTEXT,
        batch_size=3,
        num_workers=2,
    )
    assert len(paths) == 4
    loader = dm.train_dataloader()
    epoch0 = list(loader)
    assert sorted(_labels(epoch0)) == list(range(20)) and len(epoch0) == len(loader)
    epoch1 = list(loader)  # the next pass is the next epoch: another shard order
    assert sorted(_labels(epoch1)) == list(range(20)) and _labels(epoch1) != _labels(epoch0)
    assert epoch0[0]["text"].shape == (3, CONTEXT) and epoch0[0]["image"].shape == (3, 3, 8, 8)


def test_shards_split_across_ranks() -> None:
    data = TarShards([f"s{i}" for i in range(6)], lambda x: x, None, shuffle=True, seed=3)
    taken = [data.worker_shards(r, 2, w, 2) for r in range(2) for w in range(2)]
    assert sorted(s for part in taken for s in part) == list(range(6))


@pytest.mark.parametrize("workers", [0, 2])
def test_shard_stream_resumes_mid_epoch_exactly(tmp_path: Path, workers: int) -> None:
    _shards(tmp_path, [7, 3, 5, 5])

    def loader() -> ShardLoader:
        dm = ImageTextDataModule(
            CaptionShards(str(tmp_path / "*.tar")),
            image_size=8,
            context_length=CONTEXT,
            batch_size=2,
            num_workers=workers,
            seed=1,
        )
        return dm.train_dataloader()

    full = loader()
    reference = list(full) + list(full)  # two epochs
    first = loader()
    seen = []
    for i, batch in enumerate(first):
        seen.append(batch)
        if i == 4:
            break
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    rest = list(resumed) + list(resumed)
    got = seen + rest
    assert len(got) == len(reference)
    for a, b in zip(got, reference, strict=True):
        assert torch.equal(a["label"], b["label"]) and torch.equal(a["image"], b["image"])


def test_delivered_per_worker_follows_round_robin_with_exhausted_workers() -> None:
    assert delivered_per_worker([3, 1, 2], 0) == ([0, 0, 0], 0)
    assert delivered_per_worker([3, 1, 2], 4) == ([2, 1, 1], 1)  # worker 1 is done: worker 2 goes next
    assert delivered_per_worker([3, 1, 2], 6) == ([3, 1, 2], 1)
    with pytest.raises(ValueError):
        delivered_per_worker([1], 2)


def test_truncated_image_in_a_shard_is_named(tmp_path: Path) -> None:
    _shards(tmp_path, [3], cut=1)
    dm = ImageTextDataModule(CaptionShards(str(tmp_path / "*.tar")), image_size=8, batch_size=3)
    dm.setup("fit")
    with pytest.raises(RuntimeError, match=r"sample '00001' of shard .*shard-000\.tar.*png image is trunc"):
        next(iter(dm.train_dataloader()))


def test_bad_shards(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no files found"):
        ImageTextDataModule(CaptionShards(str(tmp_path / "none-*.tar")), image_size=8)
    _shards(tmp_path, [2])
    dm = ImageTextDataModule(CaptionShards(str(tmp_path / "*.tar")), image_size=8, num_workers=2)
    with pytest.raises(ValueError, match="1 shards cannot feed 1 process"):
        dm.train_dataloader()
