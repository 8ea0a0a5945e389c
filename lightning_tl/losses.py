"""Losses as pure functions on tensors, with thin ``nn.Module`` wrappers.

Contrastive (NT-Xent, InfoNCE, CLIP) and domain adaptation (MCC, and the entropy weights it shares
with CDAN+E). Shapes: N is the per-rank batch, W the world size, D the embedding dimension, C the
number of classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_tl import distributed as dist


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; SimCLR uses 0.1-0.5, MoCo 0.07-0.2.")


def _check_pair(a: Tensor, b: Tensor, names: tuple[str, str]) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must both have shape (N, D); "
            f"got {tuple(a.shape)} and {tuple(b.shape)}."
        )


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.5, gather: bool = False) -> Tensor:
    """NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

    Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020,
    Algorithm 1: for each of the 2N augmented views, the positive is the other view of the same image
    and the negatives are the remaining 2N - 2 views; the loss is averaged over all 2N anchors.

    Args:
        z1: (N, D) projections of the first views; L2-normalised here.
        z2: (N, D) projections of the second views, row i pairs with ``z1[i]``.
        temperature: tau > 0 dividing the cosine similarities.
        gather: take negatives from every rank. The anchors stay this rank's 2N views and gradients
            flow back through the gather, so with DDP's gradient averaging the update equals the
            single-process update on the global batch; the value returned is this rank's share, whose
            mean over ranks (what ``self.log(..., sync_dist=True)`` reports) is the global loss.

    Returns:
        Scalar loss.
    """
    _check_pair(z1, z2, ("z1", "z2"))
    _check_temperature(temperature)
    n = z1.shape[0]
    if n < 2 and not (gather and dist.world_size() > 1):
        raise ValueError(f"NT-Xent needs at least 2 images per batch to have negatives, got N={n}.")
    # Similarities in float32 even under autocast: exp(1/tau) overflows fp16 at small tau.
    z = torch.cat([z1, z2])
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    local = F.normalize(z, dim=1)  # (2N, D) rows: view-1 block, then view-2 block
    if gather and dist.world_size() > 1:
        w, r = dist.world_size(), dist.rank()
        both = dist.gather(local.view(2, n, -1).transpose(0, 1).contiguous(), with_grad=True)  # (W*N, 2, D)
        both = both.view(w, n, 2, -1).permute(2, 0, 1, 3).reshape(2 * w * n, -1)  # (2WN, D) view-major
        offset = r * n
    else:
        w, offset, both = 1, 0, local
    total = w * n
    logits = local @ both.T / temperature  # (2N, 2WN)
    # Each anchor must not count itself as a candidate.
    rows = torch.arange(2 * n, device=local.device)
    own = torch.cat([rows[:n] + offset, rows[n:] - n + total + offset])  # anchor's own column, (2N,)
    positive = torch.cat([rows[n:] - n + total + offset, rows[:n] + offset])  # its partner's column
    logits = logits.masked_fill(F.one_hot(own, 2 * total).bool(), float("-inf"))
    return F.cross_entropy(logits, positive)


class NTXentLoss(nn.Module):
    """Module wrapper of :func:`nt_xent_loss` holding ``temperature`` and ``gather``."""

    def __init__(self, temperature: float = 0.5, gather: bool = False) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature
        self.gather = gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return nt_xent_loss(z1, z2, self.temperature, self.gather)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather={self.gather}"


def info_nce_loss(
    query: Tensor, key: Tensor, queue: Tensor | None = None, temperature: float = 0.2
) -> Tensor:
    """InfoNCE of MoCo: each query must pick its own key among the negatives.

    He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020, Eq. 1
    and Algorithm 1: logits ``[q . k+, q . queue_1, ..., q . queue_K] / tau`` with the positive in
    column 0, and cross-entropy with label 0, averaged over the N queries. Computed with
    ``cross_entropy`` (a log-sum-exp), so small temperatures do not overflow.

    Args:
        query: (N, D) L2-normalised query projections (they are not normalised here).
        key: (N, D) L2-normalised keys, row i the positive of ``query[i]``; treated as constants by
            MoCo (computed without gradient), but gradients do flow if they require it.
        queue: (K, D) L2-normalised negatives. None takes the other N - 1 keys of the batch as the
            negatives (MoCo v3's in-batch form, Chen et al. 2021, without its 2 tau factor).
        temperature: tau > 0 (0.07 in MoCo, 0.2 in MoCo v2).

    Returns:
        Scalar loss.
    """
    _check_pair(query, key, ("query", "key"))
    _check_temperature(temperature)
    if queue is not None and (queue.ndim != 2 or queue.shape[1] != query.shape[1]):
        raise ValueError(
            f"queue must have shape (K, {query.shape[1]}) to match query (N, D); got {tuple(queue.shape)}."
        )
    if query.dtype in (torch.float16, torch.bfloat16):  # logits in float32: exp(1/tau) overflows fp16
        query, key = query.float(), key.float()
    key = key.to(query.dtype)
    if queue is None:
        # row i: positive key_i, then the other keys; cross-entropy over q @ k.T with target i
        # is the same sum with the positive moved to column 0.
        logits = query @ key.T / temperature  # (N, N)
        target = torch.arange(query.shape[0], device=query.device)
        return F.cross_entropy(logits, target)
    positive = (query * key).sum(dim=1, keepdim=True)  # (N, 1)
    negatives = query @ queue.to(query.dtype).T  # (N, K)
    logits = torch.cat([positive, negatives], dim=1) / temperature  # (N, 1 + K)
    return F.cross_entropy(logits, torch.zeros(query.shape[0], dtype=torch.long, device=query.device))


class InfoNCELoss(nn.Module):
    """Module wrapper of :func:`info_nce_loss` holding ``temperature``."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature

    def forward(self, query: Tensor, key: Tensor, queue: Tensor | None = None) -> Tensor:
        return info_nce_loss(query, key, queue, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


def clip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    gather: bool = False,
    local_loss: bool = False,
) -> Tensor:
    """Symmetric image-text contrastive loss of CLIP.

    Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML
    2021, Figure 3: logits ``scale * I @ T.T`` over the N paired embeddings, cross-entropy with the
    diagonal as target along rows (image -> text) and columns (text -> image), averaged.

    Under DDP with ``gather=True`` the candidates come from every rank and gradients flow back
    through the gather (so every rank's towers learn from every negative):

    - ``local_loss=False`` (global): every rank scores the whole (WN, WN) matrix; the value is the
      loss of the global batch on every rank.
    - ``local_loss=True``: each rank scores only its own N rows against the WN gathered columns, in
      both directions ((N, WN) twice, W times less memory); the value is this rank's share, whose
      mean over ranks is the global loss.

    With DDP's gradient averaging both modes give the gradients of the global-batch loss. Values and
    gradients equal ``open_clip.loss.ClipLoss(local_loss=..., gather_with_grad=True)``.

    Args:
        image_features: (N, D) L2-normalised image embeddings (not normalised here, as in open_clip).
        text_features: (N, D) L2-normalised text embeddings, row i the caption of image i.
        logit_scale: the multiplier of the cosine similarities (already exponentiated), a scalar
            tensor (learnable) or a number; 1 / 0.07 at CLIP's initialisation, at most 100.
        gather: take candidates from every rank (no-op without a process group).
        local_loss: score only this rank's rows (see above); needs ``gather``.

    Returns:
        Scalar loss.
    """
    _check_pair(image_features, text_features, ("image_features", "text_features"))
    if isinstance(logit_scale, Tensor) and logit_scale.numel() != 1:
        raise ValueError(f"logit_scale must be a scalar, got shape {tuple(logit_scale.shape)}.")
    if local_loss and not gather:
        raise ValueError("local_loss=True scores local rows against gathered columns; it needs gather=True.")
    if image_features.dtype in (torch.float16, torch.bfloat16):  # logits in float32 under autocast
        image_features, text_features = image_features.float(), text_features.float()
    text_features = text_features.to(image_features.dtype)
    n = image_features.shape[0]
    if gather and dist.world_size() > 1:
        all_images = dist.gather(image_features, with_grad=True)  # (WN, D)
        all_texts = dist.gather(text_features, with_grad=True)  # (WN, D)
        if local_loss:
            per_image = logit_scale * image_features @ all_texts.T  # (N, WN)
            per_text = logit_scale * text_features @ all_images.T  # (N, WN)
            target = torch.arange(n, device=image_features.device) + dist.rank() * n  # (N,)
        else:
            per_image = logit_scale * all_images @ all_texts.T  # (WN, WN)
            per_text = per_image.T
            target = torch.arange(per_image.shape[0], device=image_features.device)  # (WN,)
    else:
        per_image = logit_scale * image_features @ text_features.T  # (N, N)
        per_text = per_image.T
        target = torch.arange(n, device=image_features.device)  # (N,)
    return (F.cross_entropy(per_image, target) + F.cross_entropy(per_text, target)) / 2


class CLIPLoss(nn.Module):
    """Module wrapper of :func:`clip_loss` holding ``gather`` and ``local_loss``."""

    def __init__(self, gather: bool = False, local_loss: bool = False) -> None:
        super().__init__()
        if local_loss and not gather:
            raise ValueError("local_loss=True needs gather=True.")
        self.gather = gather
        self.local_loss = local_loss

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float) -> Tensor:
        return clip_loss(image_features, text_features, logit_scale, self.gather, self.local_loss)

    def extra_repr(self) -> str:
        return f"gather={self.gather}, local_loss={self.local_loss}"


#: Added to probabilities inside the log of :func:`certainty_weights`, as the MCC and CDAN authors do.
ENTROPY_EPS = 1e-5


def certainty_weights(probs: Tensor) -> Tensor:
    """``1 + exp(-H(p))`` per row: the entropy-aware weight of CDAN+E and MCC, from ``1 + 1/C`` to about 2.

    Long et al., "Conditional Adversarial Domain Adaptation", NeurIPS 2018 (entropy conditioning,
    CDAN+E) and Jin et al., "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020
    (uncertainty reweighting): confident predictions (low entropy) weigh up to 2, uniform ones
    ``1 + 1/C``. The entropy is ``H(p) = -sum_c p_c log(p_c + 1e-5)``, with the small constant both
    papers' released code puts in the log (it moves H by at most ``C * 1e-5`` and keeps it finite at
    ``p_c = 0``). No gradient flows through the weights: they are computed from ``probs.detach()``.

    Args:
        probs: (N, C) class probabilities, each row summing to 1.

    Returns:
        (N,) weights.

    Example::

        >>> certainty_weights(torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
        tensor([2.0000, 1.5000])
    """
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (N, C), got {tuple(probs.shape)}.")
    p = probs.detach()
    if p.dtype in (torch.float16, torch.bfloat16):
        p = p.float()
    entropy = -(p * torch.log(p + ENTROPY_EPS)).sum(dim=1)  # (N,)
    return 1.0 + torch.exp(-entropy)


def _check_mcc_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f"temperature must be a finite number > 0 (it divides the logits), got {temperature}; "
            "the MCC paper uses temperature=2.5"
        )


def mcc_loss(logits: Tensor, temperature: float = 2.5) -> Tensor:
    """Minimum Class Confusion on a batch of (unlabelled, target-domain) predictions.

    Jin, Wang, Long, Wang, "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020,
    Sec. 3: with ``Y = softmax(logits / T)`` (N, C), entropy weights
    ``W_i = N (1 + exp(-H(Y_i))) / sum_j (1 + exp(-H(Y_j)))`` (:func:`certainty_weights`, constants
    for the gradient), the class correlation ``C = Y^T diag(W) Y`` (C, C) is normalised so that each
    row sums to 1, and the loss is the mass off its diagonal, averaged over classes:
    ``(sum_jj' C_jj' - trace C) / C``. Minimising it pushes the classifier not to share a sample
    between two classes. Equal, value and gradient, to the authors' code on the same logits (their
    column normalisation of the symmetric ``C`` has the same sum and trace).

    The weights and the correlation are per batch by definition, so under DDP each rank computes the
    loss of its own batch (no gather); DDP then averages the per-rank gradients.

    Args:
        logits: (N, C) class logits of the target images, C >= 2.
        temperature: T > 0 (2.5 in the paper).

    Returns:
        Scalar loss in [0, 1): ``1 - (mean diagonal of the row-normalised C)``.

    Example::

        >>> round(float(mcc_loss(torch.tensor([[9.0, 0.0], [0.0, 9.0]]))), 4)
        0.0518
    """
    if logits.ndim != 2 or logits.shape[0] < 1 or logits.shape[1] < 2:
        raise ValueError(
            f"logits must have shape (N, C) with N >= 1 and C >= 2 classes, got {tuple(logits.shape)}."
        )
    _check_mcc_temperature(temperature)
    if logits.dtype in (torch.float16, torch.bfloat16):  # the correlation in float32 under autocast
        logits = logits.float()
    n, num_classes = logits.shape
    probs = F.softmax(logits / temperature, dim=1)  # (N, C)
    weights = certainty_weights(probs).to(probs.dtype)  # (N,)
    weights = n * weights / weights.sum()  # (N,) summing to N
    confusion = (probs * weights[:, None]).T @ probs  # (C, C), symmetric
    rows = confusion.sum(dim=1, keepdim=True).clamp_min(torch.finfo(confusion.dtype).tiny)  # (C, 1)
    confusion = confusion / rows  # (C, C), rows sum to 1
    return (confusion.sum() - confusion.trace()) / num_classes


class MCCLoss(nn.Module):
    """Module wrapper of :func:`mcc_loss` holding ``temperature``."""

    def __init__(self, temperature: float = 2.5) -> None:
        super().__init__()
        _check_mcc_temperature(temperature)
        self.temperature = temperature

    def forward(self, logits: Tensor) -> Tensor:
        return mcc_loss(logits, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
