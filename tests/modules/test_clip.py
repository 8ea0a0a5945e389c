"""CLIP module: temperature clamp, LiT locking, open_clip checkpoints, resume, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import open_clip
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_tl.datamodules import ImageTextDataModule
from lightning_tl.modules import CLIP

CONTEXT = 12
TINY_TOWERS: dict[str, Any] = {
    "image_backbone": "timm/resnet18",
    "backbone_kwargs": {"channels": [8, 8, 16, 16], "stem_width": 8},
    "in_channels": 1,
    "embed_dim": 16,
    "text_width": 32,
    "text_layers": 2,
    "text_heads": 2,
    "context_length": CONTEXT,
}
#: A small architecture in open_clip's config format, registered under a list_models() name.
TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": CONTEXT, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def tiny_clip(**kwargs: Any) -> CLIP:
    return CLIP(**{**TINY_TOWERS, "warmup_epochs": 0, **kwargs})


def digits(**kwargs: Any) -> ImageTextDataModule:
    return ImageTextDataModule(
        "digits", **{"image_size": 8, "context_length": CONTEXT, "batch_size": 32, **kwargs}
    )


def trainer(steps: int, **kwargs: Any) -> L.Trainer:
    defaults: dict[str, Any] = {
        "accelerator": "cpu",
        "max_steps": steps,
        "limit_val_batches": 0,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def tiny_open_clip_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / "lightning-tl-tiny-vit.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(folder)
    return "lightning-tl-tiny-vit"


class RecordScale(Callback):
    def __init__(self) -> None:
        self.scales: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        self.scales.append(float(module.logit_scale.detach()))


def test_logit_scale_starts_at_clip_value_and_is_clamped_after_steps() -> None:
    model = tiny_clip(optimizer="adamw", lr=0.5, weight_decay=0.0)
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(99.0))  # one big step away from the bound
    model.logit_scale.register_hook(lambda g: torch.full_like(g, -1.0))  # every step pushes it up
    record = RecordScale()
    trainer(4, callbacks=[record]).fit(model, digits())
    assert len(record.scales) == 4
    assert all(0.0 <= s <= math.log(100.0) + 1e-6 for s in record.scales)
    assert max(record.scales) == pytest.approx(math.log(100.0))  # the bound was hit, and held


def _image_state(model: CLIP) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.model.visual.state_dict().items()}


def test_lit_leaves_image_tower_parameters_and_bn_statistics_unchanged() -> None:
    model = tiny_clip(lock_image=True)
    before = _image_state(model)
    text_before = {k: v.clone() for k, v in model.model.text.state_dict().items()}
    assert any("running_mean" in k for k in before) and any("num_batches_tracked" in k for k in before)
    trainer(3, limit_val_batches=1, num_sanity_val_steps=1).fit(model, digits())
    after = _image_state(model)
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert any(not torch.equal(v, model.model.text.state_dict()[k]) for k, v in text_before.items())
    # eval mode survived Lightning's train() calls; an optimizer never saw the image tower
    assert not any(m.training for m in model.model.visual.modules())
    assert all(m.training for m in model.model.text.modules())
    model.train()
    assert not model.model.visual.training


def test_partial_unlocking_keeps_the_last_groups_trainable() -> None:
    model = tiny_clip(lock_image=True, unlocked_image_groups=2, lock_text=True, unlocked_text_layers=1)
    trainable = {n for n, p in model.model.named_parameters() if p.requires_grad}
    assert "visual.proj.weight" in trainable
    assert any(n.startswith("visual.backbone.model.layer4.") for n in trainable)
    assert not any(n.startswith("visual.backbone.model.layer3.") for n in trainable)
    assert trainable & {n for n in trainable if n.startswith("text.")} == {"text.text_projection"}
    model.train()  # the frozen stem/stages are in eval mode, layer4 trains its BN statistics
    assert model.model.visual.backbone.model.layer4.training
    assert not model.model.visual.backbone.model.layer3.training


def test_open_clip_checkpoint_gives_identical_embeddings(tiny_open_clip_name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = open_clip.create_model(tiny_open_clip_name).eval()
    # open_clip's training script saves {"epoch", "name", "state_dict" (DDP "module." keys), "optimizer"}
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    path = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "name": "run", "state_dict": state, "optimizer": {}}, path)
    torch.manual_seed(1)  # a different random init, overwritten by the checkpoint
    model = CLIP(model_name=tiny_open_clip_name, pretrained=str(path)).eval()
    images = torch.randn(3, 3, 32, 32)
    tokens = open_clip.tokenizer.SimpleTokenizer(context_length=CONTEXT)(["a cat", "a dog", "two birds"])
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), reference.encode_image(images, normalize=True))
        torch.testing.assert_close(model.encode_text(tokens), reference.encode_text(tokens, normalize=True))
    assert model.context_length == CONTEXT


def test_resume_mid_epoch_continues_exactly(tmp_path: Path) -> None:
    class Losses(Callback):
        def __init__(self) -> None:
            self.values: list[float] = []

        def on_train_batch_end(self, trainer: L.Trainer, module: Any, outputs: Any, *args: Any) -> None:
            self.values.append(float(outputs["loss"]))

    class StopAt(Callback):  # stop early with the schedule of the full run (its total step count)
        def __init__(self, step: int) -> None:
            self.step = step

        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            if trainer.global_step >= self.step:
                trainer.should_stop = True

    def run(stop: int | None = None, ckpt: str | None = None) -> tuple[list[float], CLIP]:
        L.seed_everything(0)
        model, losses = tiny_clip(), Losses()
        callbacks: list[Callback] = [losses]
        if stop is not None:
            callbacks += [
                StopAt(stop),
                ModelCheckpoint(tmp_path, filename="{step}", every_n_train_steps=stop),
            ]
        trainer(6, callbacks=callbacks, enable_checkpointing=stop is not None).fit(
            model, digits(batch_size=64, num_workers=0), ckpt_path=ckpt
        )
        return losses.values, model

    full, full_model = run()
    first, _ = run(stop=3)
    rest, resumed = run(ckpt=str(tmp_path / "step=3.ckpt"))
    assert len(first) == 3 and len(rest) == 3
    assert first + rest == full
    for a, b in zip(full_model.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_unknown_open_clip_name_lists_close_matches() -> None:
    with pytest.raises(ValueError, match=r"unknown open_clip model 'ViT-B-23'.*Did you mean: .*ViT-B-32"):
        CLIP(model_name="ViT-B-23")


def test_context_length_mismatch_is_reported_before_training() -> None:
    model = tiny_clip()
    with pytest.raises(ValueError, match=r"context_length=16 but the model's text tower takes 12"):
        trainer(1).fit(model, digits(context_length=16))
    with pytest.raises(ValueError, match="text tokens must be"):
        model.encode_text(torch.zeros(2, 16, dtype=torch.long))


def test_other_bad_arguments() -> None:
    with pytest.raises(ValueError, match="takes RGB images"):
        CLIP(model_name="ViT-B-32", in_channels=1)
    with pytest.raises(ValueError, match="need lock_image"):
        tiny_clip(unlocked_image_groups=1)
    with pytest.raises(FileNotFoundError, match="is not a file"):
        CLIP(model_name="ViT-B-32", pretrained="/nonexistent/ViT-B-32.pt")
    with pytest.raises(ValueError, match="SigLIP"):
        CLIP(model_name="ViT-B-16-SigLIP")


# ---- Hugging Face text towers and hf-hub: models, from a Hugging Face cache the test fills ----------
TINY_BERT = "lightning-tl/tiny-bert"
BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "the", "digit", "."]
TINY_HF_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {
        "hf_model_name": TINY_BERT,
        "hf_tokenizer_name": TINY_BERT,
        "hf_proj_type": "linear",
        "hf_pooler_type": "cls_pooler",
        "context_length": 16,
    },
}


@pytest.fixture(scope="module")
def tiny_hf_clip_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CLIP with a 1-layer BERT text tower: BERT config and WordPiece tokenizer in the HF cache."""
    pytest.importorskip("transformers")
    from hub_cache import fill_hf_file

    vocab = BERT_VOCAB + list("abcdefghijklmnopqrstuvwxyz0123456789")
    fill_hf_file(TINY_BERT, "vocab.txt", "\n".join(vocab) + "\n")
    tokenizer_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 16}
    fill_hf_file(TINY_BERT, "tokenizer_config.json", json.dumps(tokenizer_config))
    bert = {
        "model_type": "bert",
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 32,
        "pad_token_id": 0,
    }
    fill_hf_file(TINY_BERT, "config.json", json.dumps(bert))
    folder = tmp_path_factory.mktemp("open_clip_hf_configs")
    (folder / "lightning-tl-tiny-hf.json").write_text(json.dumps(TINY_HF_CLIP))
    open_clip.add_model_config(folder)
    return "lightning-tl-tiny-hf"


def test_hf_text_tower_loads_a_checkpoint_with_its_own_tokenizer(
    tiny_hf_clip_name: str, tmp_path: Path
) -> None:
    from lightning_tl.tokenizers import create_tokenizer

    reference = open_clip.create_model(tiny_hf_clip_name, pretrained_text=False).eval()
    torch.save(reference.state_dict(), tmp_path / "tiny_hf.pt")
    model = CLIP(model_name=tiny_hf_clip_name, pretrained=str(tmp_path / "tiny_hf.pt")).eval()
    tokenizer = create_tokenizer(tiny_hf_clip_name, context_length=16)
    assert type(tokenizer).__name__ == "HFTokenizer"
    tokens = tokenizer(["a photo of the digit 3.", "the digit 7"])  # (2, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens), reference.encode_text(tokens, normalize=True))
    # the datamodule must tokenize as the model reads: CLIP's BPE does not fit a BERT text tower
    with pytest.raises(
        ValueError, match=r"tokenizes with open_clip's CLIP BPE.*set data tokenizer: lightning"
    ):
        trainer(1).fit(model, digits(context_length=16, image_size=32, rgb=True))
    # a random init starts the text tower from its language model: not cached here
    with pytest.raises(FileNotFoundError, match=r"models--lightning-tl--tiny-bert.*hf download"):
        CLIP(model_name=tiny_hf_clip_name)


def test_hf_hub_model_loads_config_and_weights_from_the_cache(tiny_open_clip_name: str) -> None:
    from hub_cache import fill_hf_file, fill_hf_safetensors

    reference = open_clip.create_model(tiny_open_clip_name)
    fill_hf_file("lightning-tl/tiny-clip", "open_clip_config.json", json.dumps({"model_cfg": TINY_OPEN_CLIP}))
    fill_hf_safetensors("lightning-tl/tiny-clip", "open_clip_model.safetensors", reference.state_dict())
    for kwargs in (
        {"model_name": "hf-hub:lightning-tl/tiny-clip"},
        {"pretrained": "hf-hub:lightning-tl/tiny-clip"},
    ):
        model = CLIP(**kwargs)  # type: ignore[arg-type]
        assert model.context_length == CONTEXT
        for key, value in reference.state_dict().items():
            torch.testing.assert_close(model.model.state_dict()[key], value, rtol=0, atol=0)
    with pytest.raises(
        FileNotFoundError, match=r"models--lightning-tl--absent.*hf download lightning-tl/absent"
    ):
        CLIP(model_name="hf-hub:lightning-tl/absent")
