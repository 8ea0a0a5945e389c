"""Weight files are read without unpickling arbitrary objects: pickle payloads never run, and are refused.

Every other kind of file gets a message saying what it is and what was expected.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import open_clip
import pytest
import timm
import torch
import torchvision
from hub_cache import fill_torch_hub

from lightning_tl.augment import SimCLRViews
from lightning_tl.backbones import create_backbone
from lightning_tl.datamodules import DigitsDataModule
from lightning_tl.modules import CLIP, ImageClassifier, SimCLR

REFUSED = r"was not loaded: .*unpickling can run arbitrary code.*torch\.save\(model\.state_dict\(\)"


class Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",)


def payload_file(folder: Path, name: str = "evil.pt") -> tuple[Path, Path]:
    """A torch.save file whose state dict carries a payload; and the marker it would write."""
    marker = folder / f"{name}.MARKER"
    state = {"conv1.weight": torch.zeros(64, 3, 7, 7), "payload": Payload(marker)}
    torch.save(state, folder / name)
    return folder / name, marker


def test_payload_never_runs_in_create_backbone_or_classifier(tmp_path: Path) -> None:
    path, marker = payload_file(tmp_path)
    with pytest.raises(ValueError, match=REFUSED) as info:
        create_backbone("resnet18", pretrained=str(path))
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match=REFUSED):
        ImageClassifier("resnet18", pretrained=str(path))
    with pytest.raises(ValueError, match=REFUSED):
        create_backbone("timm/resnet18", pretrained=str(path))
    assert not marker.exists()


def test_payload_in_the_torch_hub_cache_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "hub.MARKER"
    url = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url
    cached = fill_torch_hub(url, {"payload": Payload(marker)})  # type: ignore[dict-item]
    try:
        with pytest.raises(ValueError, match=REFUSED):
            create_backbone("resnet50", pretrained="IMAGENET1K_V2")
    finally:
        cached.unlink()
    assert not marker.exists()


def test_payload_in_the_hugging_face_cache_never_runs(tmp_path: Path) -> None:
    import io

    from hub_cache import fill_hf_file

    marker = tmp_path / "hf.MARKER"
    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(1), "payload": Payload(marker)}, buffer)
    fill_hf_file("timm/resnet18.a3_in1k", "pytorch_model.bin", buffer.getvalue())  # no model.safetensors
    with pytest.raises(ValueError, match=r"timm/resnet18\.a3_in1k.*was not loaded: .*unpickling can run"):
        create_backbone("timm/resnet18.a3_in1k", pretrained=True)
    assert not marker.exists()


def test_payload_never_runs_in_clip(tmp_path: Path) -> None:
    path, marker = payload_file(tmp_path)
    folder = tmp_path / "configs"
    folder.mkdir()
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (folder / "lightning-tl-safe-vit.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    with pytest.raises(ValueError, match=REFUSED):
        CLIP(model_name="lightning-tl-safe-vit", pretrained=str(path))
    with pytest.raises(ValueError, match=REFUSED):
        CLIP(image_backbone="resnet18", image_pretrained=str(path))
    assert not marker.exists()


def test_safetensors_file_loads(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = create_backbone("resnet18", small_input=True, in_chans=1)
    save_file(source.model.state_dict(), tmp_path / "r18.safetensors")
    loaded = create_backbone("resnet18", pretrained=str(tmp_path / "r18.safetensors"), in_chans=1)
    assert loaded.model.conv1.kernel_size == (3, 3)  # small_input=None: the file's own stem
    for key, value in source.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, rtol=0, atol=0)
    assert loaded.data_config is None


def test_other_files_say_what_was_expected(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("these are not weights\n")
    with pytest.raises(ValueError, match=r"notes\.txt' is not a weights file .*Expected a \.safetensors"):
        create_backbone("resnet18", pretrained=str(tmp_path / "notes.txt"))
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n")  # "n" is a pickle opcode weights_only refuses
    with pytest.raises(ValueError, match=r"notes\.ckpt' is not a weights file .*Expected a \.safetensors"):
        create_backbone("resnet18", pretrained=str(tmp_path / "notes.ckpt"))
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match=r"broken\.safetensors' is not a weights file"):
        create_backbone("resnet18", pretrained=str(tmp_path / "broken.safetensors"))
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="holds a list, not a mapping of names to tensors"):
        create_backbone("resnet18", pretrained=str(tmp_path / "list.pt"))


def test_timm_state_dict_with_classifier_loads(tmp_path: Path) -> None:
    full = timm.create_model("resnet18", num_classes=1000)  # what timm's pretrained state_dict() holds
    torch.save(full.state_dict(), tmp_path / "timm_r18.pth")
    backbone = create_backbone("timm/resnet18", pretrained=str(tmp_path / "timm_r18.pth"))
    torch.testing.assert_close(backbone.model.layer4[1].conv2.weight, full.layer4[1].conv2.weight)
    assert backbone.model.conv1.kernel_size == (7, 7)


def _fit_one_step(model: L.LightningModule, data: L.LightningDataModule, root: Path) -> Path:
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(model, data)
    (checkpoint,) = root.rglob("*.ckpt")
    return checkpoint


@pytest.mark.parametrize("module", ["simclr", "classifier"])
def test_our_lightning_checkpoints_load_with_weights_only(tmp_path: Path, module: str) -> None:
    if module == "simclr":
        model: L.LightningModule = SimCLR(
            backbone="resnet18", in_channels=1, hidden_dim=32, output_dim=16, lr=0.1, warmup_epochs=0
        )
        data = DigitsDataModule(batch_size=16, views=SimCLRViews(), image_size=8)
    else:
        model = ImageClassifier("resnet18", pretrained=False, in_channels=1, lr=0.01)
        data = DigitsDataModule(batch_size=16, image_size=8)
    checkpoint = _fit_one_step(model, data, tmp_path)
    torch.load(checkpoint, map_location="cpu", weights_only=True)  # the whole checkpoint, safely
    backbone = create_backbone("resnet18", pretrained=str(checkpoint), in_chans=1)
    assert backbone.model.conv1.kernel_size == (3, 3)  # the run's small-input stem, from the file
    trained: dict[str, torch.Tensor] = model.backbone.model.state_dict()  # type: ignore[union-attr]
    for key, value in backbone.model.state_dict().items():
        torch.testing.assert_close(value, trained[key], rtol=0, atol=0)
