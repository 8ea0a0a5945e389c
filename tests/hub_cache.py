"""Fill the real caches the hub loaders read, with weights a test creates (no network, no mocks).

The Hugging Face layout is what ``hf_hub_download`` resolves offline: ``<HF_HUB_CACHE>/models--org--name/
refs/main`` holds a commit hash and ``snapshots/<hash>/<file>`` the file. torch.hub's is
``<TORCH_HOME>/hub/checkpoints/<file name of the URL>``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

#: The commit every filled repo pretends to be at.
REVISION = "0123456789abcdef0123456789abcdef01234567"


def hf_repo_folder(repo_id: str) -> Path:
    """``<HF_HUB_CACHE>/models--org--name`` as huggingface_hub names it."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def fill_hf_file(repo_id: str, filename: str, data: bytes | str) -> Path:
    """Write one file of ``repo_id`` into the Hugging Face cache; return its snapshot path."""
    folder = hf_repo_folder(repo_id)
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(REVISION)
    path = folder / "snapshots" / REVISION / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def fill_hf_safetensors(repo_id: str, filename: str, state: Mapping[str, Tensor]) -> Path:
    """Write ``state`` as a safetensors file of ``repo_id`` into the Hugging Face cache."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    return fill_hf_file(repo_id, filename, save(tensors))


def fill_torch_hub(url: str, state: Mapping[str, Tensor]) -> Path:
    """``torch.save`` ``state`` where ``torch.hub.load_state_dict_from_url(url)`` finds it cached."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / os.path.basename(url)
    torch.save(dict(state), path)
    return path


def half(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Floating tensors in fp16 (half the bytes to write); others unchanged."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
