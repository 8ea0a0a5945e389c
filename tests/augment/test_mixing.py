"""mixup / CutMix / Gaussian noise per batch: soft labels, lambda distribution, loss, datamodule hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from lightning_tl.augment import SeededBatch, SimCLRViews, SupervisedAugment
from lightning_tl.augment.mixing import BatchMixing, cutmix, cutmix_box, mixup
from lightning_tl.datamodules import DigitsDataModule


def _batch(b: int = 16, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, 3, 12, 10, generator=g), torch.randint(0, k, (b,), generator=g)


@pytest.mark.parametrize(
    "kwargs", [{"mixup_alpha": 0.4}, {"cutmix_alpha": 1.0}, {"mixup_alpha": 1, "cutmix_alpha": 1}]
)
def test_mixed_labels_are_distributions_and_match_the_images(kwargs: dict[str, float]) -> None:
    x, y = _batch()
    for seed in range(20):
        mixed, targets = BatchMixing(10, **kwargs)(x, y, seed)
        assert mixed.shape == x.shape and targets.shape == (16, 10)
        assert torch.allclose(targets.sum(1), torch.ones(16)) and (targets >= 0).all()
        # each mixed image is lam * x_i + (1 - lam) * x_j (mixup) or a pixelwise pick (CutMix): the weight
        # of the own label equals the own image's share of the pixels' "mass" in both cases
        own = targets[torch.arange(16), y]
        assert (own >= 0.0).all() and (own <= 1.0 + 1e-6).all()


def test_mixup_by_hand() -> None:
    x, y = _batch(4, 3)
    onehot = F.one_hot(y, 3).float()
    perm = torch.tensor([2, 0, 3, 1])
    mixed, targets = mixup(x, onehot, 0.3, perm)
    for i in range(4):
        assert torch.allclose(mixed[i], 0.3 * x[i] + 0.7 * x[perm[i]])
        assert torch.allclose(targets[i], 0.3 * onehot[i] + 0.7 * onehot[perm[i]])


def test_cutmix_area_gives_lambda() -> None:
    x, y = _batch(4, 3)
    onehot = F.one_hot(y, 3).float()
    perm = torch.tensor([1, 0, 3, 2])
    for lam, u in [(0.7, (0.5, 0.5)), (0.2, (0.05, 0.9)), (0.99, (0.3, 0.3)), (0.0, (0.5, 0.5))]:
        mixed, targets, eff = cutmix(x, onehot, lam, perm, u)
        top, bottom, left, right = cutmix_box(lam, 12, 10, u)
        pasted = torch.zeros(12, 10, dtype=torch.bool)
        pasted[top:bottom, left:right] = True
        assert eff == pytest.approx(1 - pasted.float().mean().item())
        assert torch.equal(mixed[:, :, pasted], x[perm][:, :, pasted])
        assert torch.equal(mixed[:, :, ~pasted], x[:, :, ~pasted])
        assert torch.allclose(targets, eff * onehot + (1 - eff) * onehot[perm])


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mixup_lambda_is_beta_distributed(alpha: float) -> None:
    x = torch.zeros(2, 1, 2, 2)
    x[0] = 1.0  # image 0 is all ones, image 1 all zeros: the mixed pixel of a swapped pair is lam or 1 - lam
    y = torch.tensor([0, 1])
    lams = []
    for seed in range(3000):
        mixed, targets = BatchMixing(2, mixup_alpha=alpha)(x, y, seed)
        lams.append(float(targets[0, 0]))
        assert float(mixed[0, 0, 0, 0]) == pytest.approx(lams[-1], abs=1e-6)  # image mix = label mix
    lam = np.array(lams)
    lam = lam[lam < 1 - 1e-9]  # drop identity pairings (perm[0] == 0: weight 1 whatever lam)
    # Given a swap, the own weight is lam ~ Beta(a, a); identity pairings happen half the time.
    assert stats.kstest(lam, stats.beta(alpha, alpha).cdf).pvalue > 1e-3
    assert 0.4 < len(lam) / len(lams) < 0.6


def test_mix_prob_and_switch_prob() -> None:
    x, y = _batch()
    unmixed = sum(
        torch.equal(BatchMixing(10, mixup_alpha=1, mix_prob=0.3)(x, y, s)[0], x) for s in range(400)
    )
    assert 0.62 < unmixed / 400 < 0.78
    cut = 0
    for s in range(400):
        mixed, _ = BatchMixing(10, mixup_alpha=1, cutmix_alpha=1, switch_prob=0.25)(x, y, s)
        untouched = (mixed == x).all(dim=0).all(dim=0)  # (H, W): pixel positions no image changed
        cut += int(bool(untouched.any()))  # CutMix leaves the pixels outside its box alone, mixup none
    assert 0.17 < cut / 400 < 0.33


def test_seeded_and_noise() -> None:
    x, y = _batch()
    mixing = BatchMixing(10, mixup_alpha=0.4, cutmix_alpha=1.0, noise_std=0.1)
    a, b, c = mixing(x, y, 5), mixing(x, y, 5), mixing(x, y, 6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    noisy, labels = BatchMixing(10, noise_std=0.5)(torch.zeros(64, 3, 16, 16), y.repeat(4), 0)
    assert torch.equal(labels, y.repeat(4)) and noisy.std().item() == pytest.approx(0.5, rel=0.03)


def test_bad_options_and_labels_raise() -> None:
    with pytest.raises(ValueError, match="mixup_alpha and cutmix_alpha"):
        BatchMixing(10, mixup_alpha=-1)
    with pytest.raises(ValueError, match="noise_std"):
        BatchMixing(10, noise_std=-0.1)
    with pytest.raises(ValueError, match="unlabelled"):
        BatchMixing(3, mixup_alpha=1)(torch.zeros(2, 1, 2, 2), torch.tensor([0, -1]), 0)
    with pytest.raises(ValueError, match="mix_prob and switch_prob must be probabilities"):
        BatchMixing(10, mixup_alpha=1, mix_prob=1.5)
    with pytest.raises(ValueError, match="need num_classes >= 1"):
        BatchMixing(0, cutmix_alpha=1)
    for augment in (SupervisedAugment("trivialaugment"), SupervisedAugment(mixup_alpha=0.2)):
        with pytest.raises(ValueError, match=r"with views=.* the view recipe is the augmentation\. Drop one"):
            DigitsDataModule(views=SimCLRViews(), augment=augment)
    with pytest.raises(ValueError, match="token 'foo'"):
        SupervisedAugment("foo")


def test_soft_target_loss_equals_hand_computation() -> None:
    from lightning_tl.modules import ImageClassifier  # the loss that consumes mixed batches

    with pytest.warns(UserWarning, match="randomly initialised"):
        model = ImageClassifier(
            backbone="resnet18", small_input=True, in_channels=1, num_classes=10, label_smoothing=0.1
        )
    x = torch.randn(4, 1, 16, 16)
    targets = torch.softmax(torch.randn(4, 10), dim=1)  # soft targets, rows sum to 1
    model.log = lambda *a, **k: None  # type: ignore[method-assign]  # no trainer attached
    loss = model._step((x, targets), "train")
    with torch.no_grad():
        logits = model(x)
    smoothed = 0.9 * targets + 0.1 / 10
    hand = sum(-(smoothed[i] * torch.log_softmax(logits[i], 0)).sum() for i in range(4)) / 4
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)
    with pytest.raises(ValueError, match="soft targets must be"):
        model._step((x, targets[:, :5]), "train")
    with pytest.raises(ValueError, match="on_after_batch_transfer"):
        model._step(SeededBatch(x, torch.zeros(4), torch.zeros(4)), "train")


def test_datamodule_mixes_on_the_device_hook_deterministically() -> None:
    def first_batch() -> list[torch.Tensor]:
        augment = SupervisedAugment("rand-m9-mstd0.5-inc1", cutmix_alpha=1.0, mixup_alpha=0.4)
        dm = DigitsDataModule(batch_size=16, augment=augment)
        raw = next(iter(dm.train_dataloader()))
        assert isinstance(raw, SeededBatch) and raw.images.dtype == torch.float32
        return dm.on_after_batch_transfer(raw, 0)

    (x1, t1), (x2, t2) = first_batch(), first_batch()
    assert torch.equal(x1, x2) and torch.equal(t1, t2)
    assert t1.shape == (16, 10) and torch.allclose(t1.sum(1), torch.ones(16))
    plain = DigitsDataModule(batch_size=16, augment=SupervisedAugment("trivialaugment"))
    x, y = next(iter(plain.train_dataloader()))  # no VRM: ordinary (images, int labels) batches
    assert x.shape == (16, 1, 16, 16) and y.dtype == torch.int64
