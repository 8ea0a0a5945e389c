"""Pretrained weights: safe reading of local files, hub weights through each library's own loader and cache.

* :func:`read_state_dict` reads a local ``.safetensors`` file or a ``torch.save`` file with
  ``torch.load(weights_only=True)``; a file that needs pickle to load is refused, never unpickled.
* :func:`torchvision_weights` / :func:`load_torchvision_weights` resolve a torchvision weights name
  (``True`` = ``DEFAULT``, ``"IMAGENET1K_V2"``, ``"ResNet50_Weights.IMAGENET1K_V2"``) and load it
  through torchvision's loader and its cache ``TORCH_HOME/hub/checkpoints/`` (with ``weights_only=True``).
* :func:`cache_miss` turns the libraries' offline / no-network errors into :class:`WeightsNotCachedError`,
  which names the model, the cache folder and how to fill it.

``HF_HUB_OFFLINE=1`` keeps every hub offline: Hugging Face's own clients honour it, and torchvision
weights are then read from the cache only.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.error import URLError

import torch
from torch import Tensor

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

#: Keys under which trainers nest the weights of a checkpoint.
_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "module")
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class DataConfig:
    """How images must look for a set of pretrained weights (from timm's ``pretrained_cfg`` /
    torchvision's ``weights.transforms()`` / open_clip's preprocess config).

    Attributes:
        mean, std: per-channel normalisation the weights were trained with (RGB).
        input_size: (H, W) of the images the weights were trained / evaluated at.
        source: the weights' name, for messages.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int]
    source: str


class WeightsNotCachedError(FileNotFoundError):
    """Hub weights are not in the local cache and cannot be downloaded (offline or no network)."""


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network access."""
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.strip().lower() in _TRUE


def hf_cache_dir() -> str:
    """The Hugging Face hub cache folder that ``hf_hub_download`` reads (``HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def torch_hub_checkpoints() -> str:
    """``TORCH_HOME/hub/checkpoints``: where ``torch.hub.load_state_dict_from_url`` caches files."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def hf_cache_miss(what: str, repo_id: str, err: BaseException) -> WeightsNotCachedError:
    """The error for a Hugging Face hub file that is neither cached nor downloadable."""
    folder = os.path.join(hf_cache_dir(), "models--" + repo_id.replace("/", "--"))
    return WeightsNotCachedError(
        f"{what}: the weights are not in the Hugging Face cache {folder!r} and could not be downloaded "
        f"({type(err).__name__}: {str(err)[:300]}). Fill the cache on a machine with internet: run the "
        f"same call once there, or `hf download {repo_id}` (older huggingface_hub: `huggingface-cli "
        f"download {repo_id}`), then copy the folder {Path(folder).name!r} into {hf_cache_dir()!r} "
        "here (HF_HUB_CACHE / HF_HOME choose that folder; HF_HUB_OFFLINE=1 then needs no network)."
    )


def url_cache_miss(what: str, url: str, err: BaseException | None) -> WeightsNotCachedError:
    """The error for a ``torch.hub`` URL file that is neither cached nor downloadable."""
    folder = torch_hub_checkpoints()
    name = os.path.basename(url)
    why = "HF_HUB_OFFLINE is set" if err is None else f"{type(err).__name__}: {str(err)[:300]}"
    return WeightsNotCachedError(
        f"{what}: {name!r} is not in the torch hub cache {folder!r} and could not be downloaded ({why}). "
        f"Fill the cache on a machine with internet: run the same call once there and copy {name!r}, or "
        f"download {url} into {folder!r} (TORCH_HOME chooses that folder)."
    )


def is_cache_miss(err: BaseException) -> bool:
    """Whether ``err`` is how huggingface_hub or torch.hub fail offline / without network."""
    if isinstance(err, URLError):
        return True
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
    except ImportError:  # pragma: no cover - huggingface_hub ships with timm and open_clip
        return False
    return isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled))


# ---------------------------------------------------------------------------------- local files
def refuse_pickle(path: str, err: BaseException) -> ValueError:
    """The error for a weights file that needs pickle: it was not loaded, and how to re-save it."""
    return ValueError(
        f"{path!r} was not loaded: it holds pickled Python objects besides tensors, and unpickling can run "
        f"arbitrary code ({type(err).__name__}: {str(err).splitlines()[0][:200]}). If you trust the file, "
        "re-save its weights as a plain state dict: `torch.save(model.state_dict(), 'weights.pt')`, or as "
        "safetensors: `safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')`."
    )


def _not_weights(path: str, detail: str) -> ValueError:
    return ValueError(
        f"{path!r} is not a weights file ({detail}). Expected a .safetensors file or a torch.save file "
        "holding a state dict (names -> tensors), a timm/torchvision checkpoint, or a Lightning .ckpt."
    )


def load_file(path: str, mmap: bool = False) -> Any:
    """The object in ``path``, read without unpickling arbitrary objects.

    ``.safetensors`` files are read by safetensors; anything else with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file needs pickle (it is not loaded; the message says how to re-save it), or
            it is not a weights file at all.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"weights file {path!r} does not exist")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file as load_safetensors

        try:
            return load_safetensors(path, device="cpu")
        except SafetensorError as err:
            raise _not_weights(path, f"safetensors cannot read it: {err}") from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        # weights_only refuses a pickled object at its class or function ("Unsupported global: ...");
        # other failures ("Unsupported operand 110" for the byte "n" of a text file) are foreign bytes
        if "global" in str(err).lower():
            raise refuse_pickle(path, err) from err
        raise _not_weights(path, f"{type(err).__name__}: {str(err)[:200]}") from err
    except Exception as err:  # torch.load fails in many ways on foreign bytes (KeyError, EOFError, ...)
        if mmap and "mmap" in str(err):  # legacy (non-zip) torch.save format: read it whole
            return load_file(path)
        first = str(err).splitlines()[0][:200] if str(err) else ""
        raise _not_weights(path, f"torch.load cannot read it: {type(err).__name__} {first}") from err


def read_state_dict(path: str) -> dict[str, Tensor]:
    """The state dict in a local weights file (safely; see :func:`load_file`).

    Accepts a plain state dict, or one nested under ``state_dict`` / ``model`` / ``model_state_dict`` /
    ``module`` (Lightning, timm and torchvision training checkpoints).
    """
    obj = load_file(path)
    for key in _NESTED_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise _not_weights(path, f"it holds a {type(obj).__name__}, not a mapping of names to tensors")
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise _not_weights(path, f"none of its {len(obj)} entries is a tensor")
    return tensors


# ---------------------------------------------------------------------------------- torchvision
def torchvision_weights(name: str, pretrained: bool | str) -> WeightsEnum:
    """The torchvision weights ``pretrained`` names for model ``name``.

    ``True`` is the model's ``DEFAULT`` weights; a string is a member of its weights enum, with or
    without the class name (``"IMAGENET1K_V2"``, ``"ResNet50_Weights.IMAGENET1K_V2"``).

    Raises:
        ValueError: the model has no weights, or no weights of that name (its names are listed).
    """
    import torchvision

    try:
        enum: Any = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError) as err:
        raise ValueError(f"torchvision model {name!r} has no pretrained weights") from err
    names = [n for n in enum.__members__ if n != "DEFAULT"]
    if not names:
        raise ValueError(f"torchvision model {name!r} has no pretrained weights")
    if pretrained is True:
        return enum.DEFAULT
    wanted = str(pretrained)
    prefix = enum.__name__ + "."
    if wanted.startswith(prefix):
        wanted = wanted[len(prefix) :]
    if wanted not in enum.__members__:
        raise ValueError(
            f"{pretrained!r} is neither a file nor a weights name of torchvision's {name!r}; its weights "
            f"are {names} (or DEFAULT / pretrained=True), e.g. pretrained={names[0]!r}"
        )
    return enum[wanted]


def torchvision_build_kwargs(name: str, weights: WeightsEnum) -> dict[str, Any]:
    """Constructor arguments torchvision's builder sets when it loads ``weights`` into model ``name``."""
    meta = weights.meta
    kwargs: dict[str, Any] = {}
    if meta.get("categories"):
        kwargs["num_classes"] = len(meta["categories"])
    if name in ("inception_v3", "googlenet"):
        kwargs.update(transform_input=True, aux_logits=True, init_weights=False)
    if name.startswith("vit_") and meta.get("min_size"):
        kwargs["image_size"] = int(meta["min_size"][0])
    return kwargs


def load_torchvision_weights(name: str, weights: WeightsEnum) -> dict[str, Tensor]:
    """The state dict of ``weights`` through torchvision's loader and cache, ``weights_only=True``.

    Raises:
        WeightsNotCachedError: not cached and offline (``HF_HUB_OFFLINE=1``) or the download failed.
        ValueError: the cached file needs pickle (not loaded).
    """
    what = f"torchvision {name!r} weights {weights}"
    cached = os.path.join(torch_hub_checkpoints(), os.path.basename(weights.url))
    if hub_offline() and not os.path.isfile(cached):
        raise url_cache_miss(what, weights.url, None)
    try:
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except pickle.UnpicklingError as err:
        raise refuse_pickle(cached, err) from err
    except URLError as err:
        raise url_cache_miss(what, weights.url, err) from err


def torchvision_data_config(weights: WeightsEnum) -> DataConfig | None:
    """Mean, std and input size of torchvision ``weights`` (from ``weights.transforms()``)."""
    transform: Any = weights.transforms()
    mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
    crop = getattr(transform, "crop_size", None)
    if mean is None or std is None or not crop:
        return None
    side = int(crop[0])
    return DataConfig(tuple(map(float, mean)), tuple(map(float, std)), (side, side), str(weights))
