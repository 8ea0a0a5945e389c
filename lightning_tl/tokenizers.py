"""open_clip tokenizers and model configs: what the data side and the model side of CLIP must agree on.

:func:`create_tokenizer` gives the tokenizer a datamodule encodes captions with; :func:`open_clip_config`
reads an open_clip model's config (by ``open_clip.list_models()`` name or ``hf-hub:org/name``), and
:func:`model_tokenizer` says which tokenizer its text tower reads, in the words :func:`tokenizer_kind`
uses for a tokenizer object, so :class:`~lightning_tl.modules.CLIP` can refuse a mismatched pair
before training. open_clip, transformers and huggingface_hub are imported inside the functions.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
from pathlib import Path
from typing import Any

from lightning_tl.weights import hf_cache_miss, is_cache_miss

#: Prefix of open_clip model names that live in a Hugging Face hub repo.
HF_HUB = "hf-hub:"
#: What :func:`tokenizer_kind` / :func:`model_tokenizer` call open_clip's CLIP byte-pair encoding.
CLIP_BPE = "open_clip's CLIP BPE"


def _hf_hub_config(model_name: str) -> dict[str, Any]:
    """The ``model_cfg`` of an ``hf-hub:org/name`` open_clip repo (its ``open_clip_config.json``)."""
    from huggingface_hub import hf_hub_download

    repo = model_name[len(HF_HUB) :]
    try:
        path = hf_hub_download(repo, "open_clip_config.json")
    except Exception as err:
        if is_cache_miss(err):
            raise hf_cache_miss(f"open_clip model {model_name!r}", repo, err) from err
        raise
    config = json.loads(Path(path).read_text(encoding="utf-8")).get("model_cfg")
    if not isinstance(config, dict):
        raise ValueError(f"{path!r} of {model_name!r} has no 'model_cfg': it is not an open_clip model repo")
    return config


def open_clip_config(model_name: str) -> dict[str, Any]:
    """The config of an ``open_clip.list_models()`` name (or ``hf-hub:org/name``) that CLIP can train.

    Raises:
        ValueError: unknown name (close matches listed), or a SigLIP model.
        ImportError: the model has a Hugging Face text tower or tokenizer and ``transformers`` is missing.
        WeightsNotCachedError: an ``hf-hub:`` config that is not cached (offline / no network).
    """
    import open_clip

    if model_name.startswith(HF_HUB):
        config = _hf_hub_config(model_name)
    else:
        names = open_clip.list_models()
        if model_name not in names:
            close = difflib.get_close_matches(model_name, names, n=5, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(
                f"unknown open_clip model {model_name!r}.{hint} open_clip.list_models() lists the "
                f"{len(names)} names ('hf-hub:org/name' loads one from the Hugging Face hub); or leave "
                "model_name unset for a create_backbone image tower."
            )
        config = open_clip.get_model_config(model_name) or {}
    if config.get("init_logit_bias") is not None or "siglip" in model_name.lower():
        raise ValueError(
            f"{model_name!r} is a SigLIP model (sigmoid loss with a logit bias); CLIP trains "
            "with the softmax contrastive loss: choose a CLIP model (e.g. 'ViT-B-32')"
        )
    text_cfg = config.get("text_cfg", {})
    hf_name = text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name")
    if hf_name and importlib.util.find_spec("transformers") is None:
        raise ImportError(
            f"{model_name!r} has a Hugging Face text tower / tokenizer ({hf_name!r}), which open_clip "
            "builds with the transformers library: pip install transformers (or lightning-tl[hf])"
        )
    return config


def create_tokenizer(name: str | None = None, context_length: int = 77) -> Any:
    """open_clip's tokenizer for a model: CLIP's byte-pair encoding (bundled with open_clip, offline) or,
    for models with a Hugging Face text tower, that model's Hugging Face tokenizer (from the HF cache).

    Args:
        name: an open_clip model name (or ``hf-hub:org/name``) whose tokenizer to use
            (``open_clip.get_tokenizer``), or None for CLIP's ``SimpleTokenizer``.
        context_length: tokens per caption (start and end tokens included; longer captions are cut).

    Raises:
        ValueError: unknown model name or too short ``context_length``.
        ImportError: the model's tokenizer needs ``transformers``, which is not installed.
        WeightsNotCachedError: a Hugging Face tokenizer that is not cached (offline / no network).

    Example::

        >>> tokenizer = create_tokenizer(context_length=8)
        >>> tuple(tokenizer(["a photo of a cat."]).shape), tokenizer_kind(tokenizer)
        ((1, 8), "open_clip's CLIP BPE")
    """
    import open_clip

    if context_length < 3:
        raise ValueError(f"context_length must be >= 3 (start, one token, end), got {context_length}")
    if name is None:
        return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)
    if not name.startswith(HF_HUB) and name not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip model {name!r} for the tokenizer; open_clip.list_models() lists them "
            "('hf-hub:org/name' for a model on the Hugging Face hub)"
        )
    config = open_clip_config(name)  # checks transformers is there for a Hugging Face tokenizer
    try:
        tokenizer = open_clip.get_tokenizer(name, context_length=context_length)
    except OSError as err:  # transformers' AutoTokenizer: not cached and offline / no network
        repo = str(config.get("text_cfg", {}).get("hf_tokenizer_name") or name)
        raise hf_cache_miss(f"the tokenizer of {name!r}", repo, err) from err
    return tokenizer


def tokenizer_kind(tokenizer: Any) -> str:
    """Which vocabulary ``tokenizer`` encodes with, in the words of :func:`model_tokenizer`."""
    inner = getattr(tokenizer, "tokenizer", None)
    if type(tokenizer).__name__ == "HFTokenizer" and inner is not None:
        return f"Hugging Face tokenizer {getattr(inner, 'name_or_path', '?')!r}"
    if type(tokenizer).__name__ == "SimpleTokenizer":
        return CLIP_BPE
    return type(tokenizer).__name__


def model_tokenizer(config: dict[str, Any]) -> str:
    """Which tokenizer an open_clip config's text tower reads, in the words of :func:`tokenizer_kind`."""
    hf_name = config.get("text_cfg", {}).get("hf_tokenizer_name")
    return f"Hugging Face tokenizer {hf_name!r}" if hf_name else CLIP_BPE
