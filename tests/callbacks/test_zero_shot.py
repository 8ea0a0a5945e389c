"""Zero-shot classifier: hand-computed weights and logits; the callback logs torchmetrics top-1/top-5."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from lightning_tl.callbacks import ZeroShotEvaluator, zero_shot_classifier
from lightning_tl.datamodules import ImageTextDataModule
from lightning_tl.modules import CLIP

#: Text embedding of each prompt, by hand (E = 2).
PROMPTS = {
    "a cat.": [3.0, 4.0],  # normalised (0.6, 0.8)
    "the cat!": [1.0, 0.0],  # (1, 0)
    "a dog.": [0.0, -2.0],  # (0, -1)
    "the dog!": [-1.0, 0.0],  # (-1, 0)
}


class LookupTokenizer:
    context_length = 4

    def __init__(self) -> None:
        self.ids = {text: i for i, text in enumerate(PROMPTS)}

    def __call__(self, texts: list[str]) -> Tensor:
        return torch.tensor([[self.ids[t]] * self.context_length for t in texts])


class LookupTextModel(nn.Module):
    context_length = 4

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.tensor(list(PROMPTS.values())))

    def encode_text(self, tokens: Tensor) -> Tensor:
        return self.table[tokens[:, 0]]


def test_classifier_matches_hand_computation() -> None:
    weights = zero_shot_classifier(LookupTextModel(), LookupTokenizer(), ["cat", "dog"], ["a {}.", "the {}!"])
    # cat: mean of (0.6, 0.8) and (1, 0) = (0.8, 0.4), norm sqrt(0.8) -> (2, 1) / sqrt(5)
    # dog: mean of (0, -1) and (-1, 0) = (-0.5, -0.5) -> (-1, -1) / sqrt(2)
    expected = torch.tensor([[2 / 5**0.5, 1 / 5**0.5], [-(0.5**0.5), -(0.5**0.5)]])
    torch.testing.assert_close(weights, expected)
    image = torch.tensor([[0.0, 3.0]])  # normalised (0, 1): cat 1/sqrt(5) = 0.447, dog -0.707
    logits = torch.nn.functional.normalize(image, dim=1) @ weights.T
    torch.testing.assert_close(logits, torch.tensor([[5**-0.5, -(0.5**0.5)]]))


def test_classifier_rejects_bad_input() -> None:
    model, tok = LookupTextModel(), LookupTokenizer()
    with pytest.raises(ValueError, match="classnames is empty"):
        zero_shot_classifier(model, tok, [], ["a {}."])
    with pytest.raises(ValueError, match="each contain"):
        zero_shot_classifier(model, tok, ["cat"], ["a photo"])
    tok.context_length = 77
    with pytest.raises(ValueError, match="tokenizer makes 77 tokens but the model's text tower takes 4"):
        zero_shot_classifier(model, tok, ["cat"], ["a {}."])


def test_callback_logs_accuracy_equal_to_direct_computation() -> None:
    torch.manual_seed(0)
    model = CLIP(
        image_backbone="timm/resnet18",
        backbone_kwargs={"channels": [8, 8, 16, 16], "stem_width": 8},
        in_channels=1,
        embed_dim=16,
        text_width=32,
        text_layers=1,
        text_heads=2,
        context_length=12,
    )
    dm = ImageTextDataModule("digits", image_size=8, context_length=12, batch_size=64)
    templates = ["a photo of the digit {}.", "a handwritten {}."]
    callback = ZeroShotEvaluator(templates=templates)
    trainer = L.Trainer(
        accelerator="cpu",
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    metrics = trainer.validate(model, dm, verbose=False)[0]
    # direct: every val image against the classifier
    weights = zero_shot_classifier(model, dm.tokenizer, dm.class_names, templates)
    model.eval()
    with torch.no_grad():
        batches = list(dm.val_dataloader())
        logits = torch.cat([model.encode_image(b["image"]) for b in batches]) @ weights.T
    labels = torch.cat([b["label"] for b in batches])
    top1 = (logits.argmax(1) == labels).float().mean().item()
    top5 = (logits.topk(5, 1).indices == labels[:, None]).any(1).float().mean().item()
    assert metrics["zero_shot_top1"] == pytest.approx(top1, abs=1e-6)
    assert metrics["zero_shot_top5"] == pytest.approx(top5, abs=1e-6)
    assert callback.history == [(0, metrics["zero_shot_top1"], metrics["zero_shot_top5"])]
