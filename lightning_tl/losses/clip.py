"""The symmetric image-text contrastive loss of CLIP, global or local under DDP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_tl import distributed as dist
from lightning_tl.losses._checks import check_pair


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
    check_pair(image_features, text_features, ("image_features", "text_features"))
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
