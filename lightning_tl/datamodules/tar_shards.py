"""WebDataset-style tar shards streamed as (image, caption) pairs, split across ranks and workers, resumable.

A shard is a tar file whose members are grouped by key (the file name up to its first dot, as in
WebDataset): ``0001.jpg`` + ``0001.txt`` (+ ``0001.cls``, an integer label) form one sample.
"""

from __future__ import annotations

import glob
import re
import tarfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.io import ImageReadMode, decode_image

from lightning_tl import distributed as dist
from lightning_tl.augment.counter_rng import mix_seed
from lightning_tl.datamodules.image_folder import find_truncation

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def expand_shards(spec: str | list[str]) -> list[str]:
    """Shard paths from a list, a glob (``data/*.tar``) or a brace range (``data/{000..009}.tar``)."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    paths: list[str] = []
    for item in specs:
        match = re.search(r"\{(\d+)\.\.(\d+)\}", item)
        if match:
            lo, hi, width = int(match[1]), int(match[2]), len(match[1])
            expanded = [
                item[: match.start()] + str(i).zfill(width) + item[match.end() :] for i in range(lo, hi + 1)
            ]
        elif any(c in item for c in "*?["):
            expanded = sorted(glob.glob(item))
        else:
            expanded = [item]
        paths += expanded
    missing = [p for p in paths if not Path(p).is_file()]
    if not paths or missing:
        raise ValueError(f"shards {spec!r}: no files found" + (f"; missing {missing[:5]}" if missing else ""))
    return paths


def _key(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def read_samples(path: str) -> Iterator[dict[str, bytes]]:
    """Stream the samples of one shard: ``{extension: bytes}`` per key, in file order."""
    with tarfile.open(path, "r|*") as tar:
        key: str = ""
        sample: dict[str, bytes] = {}
        for member in tar:
            if not member.isfile():
                continue
            k, ext = _key(member.name)
            if k != key and sample:
                yield {"__key__": key.encode(), **sample}
                sample = {}
            key = k
            f = tar.extractfile(member)
            sample[ext] = f.read() if f is not None else b""
        if sample:
            yield {"__key__": key.encode(), **sample}


def count_samples(path: str) -> int:
    """Number of samples (distinct keys) in a shard, from its member headers."""
    with tarfile.open(path, "r|*") as tar:
        return len({_key(m.name)[0] for m in tar if m.isfile()})


class TarShards(IterableDataset):
    """Pairs ``{"image", "text", "label"}`` streamed from tar shards.

    In epoch ``e`` the shard list is permuted with ``mix_seed(seed, e)`` (when ``shuffle``); rank
    ``r`` of ``W`` takes shards ``r::W`` of it and its worker ``w`` of ``K`` takes every K-th of
    those, so every shard is read by exactly one worker of one rank. Within a shard samples come in
    file order; the augmentation of sample ``j`` of shard ``s`` is seeded with
    ``mix_seed(seed, e, s, j)``, independent of workers and ranks. ``skip`` (set by
    :class:`ShardLoader` when resuming) drops samples at the start of each worker's stream.
    """

    def __init__(
        self,
        shards: list[str],
        transform: Callable[[Tensor], Tensor],
        tokenizer: Any,
        shuffle: bool,
        seed: int,
    ) -> None:
        self.shards, self.transform, self.tokenizer = shards, transform, tokenizer
        self.shuffle, self.seed = shuffle, seed
        self.epoch = 0
        self.skip: list[int] = []  # samples to drop per logical worker, this epoch
        self.worker_offset = 0  # DataLoader worker w reads the stream of logical worker (w + offset) % K
        self._sizes: list[int] | None = None

    def sizes(self) -> list[int]:
        """Samples per shard (read once from the tar headers)."""
        if self._sizes is None:
            self._sizes = [count_samples(p) for p in self.shards]
        return self._sizes

    def worker_shards(self, rank: int, world: int, worker: int, workers: int) -> list[int]:
        """Indices of the shards worker ``worker`` of rank ``rank`` reads in the current epoch."""
        order = list(range(len(self.shards)))
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(len(order), generator=g).tolist()
        return order[rank::world][worker::workers]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        worker = (worker + self.worker_offset) % workers
        skip = self.skip[worker] if self.skip else 0
        for s in self.worker_shards(dist.rank(), dist.world_size(), worker, workers):
            for j, sample in enumerate(read_samples(self.shards[s])):
                if skip:
                    skip -= 1
                    continue
                yield self._decode(sample, s, j)

    def _decode(self, sample: dict[str, bytes], shard: int, index: int) -> dict[str, Any]:
        where = f"sample {sample['__key__'].decode()!r} of shard {self.shards[shard]!r}"
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
        if image_ext is None or "txt" not in sample:
            raise ValueError(f"{where} needs an image ({'/'.join(IMAGE_EXTENSIONS)}) and a .txt caption")
        caption = sample["txt"].decode("utf-8").strip()
        if not caption:
            raise ValueError(f"{where} has an empty caption")
        truncated = find_truncation(sample[image_ext])  # decoders return partial images from some
        if truncated:
            raise RuntimeError(f"{where}: its .{image_ext} image is truncated: {truncated}; fix the shard")
        data = torch.frombuffer(bytearray(sample[image_ext]), dtype=torch.uint8)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(mix_seed(self.seed, self.epoch, shard, index))
            with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders for TorchCodec
                warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
                image = decode_image(data, mode=ImageReadMode.RGB)  # (3, H, W) uint8
            image = self.transform(image)
        label = int(sample["cls"].decode()) if "cls" in sample else -1
        return {"image": image, "text": self.tokenizer(caption)[0], "label": label}


def delivered_per_worker(batches: list[int], seen: int) -> tuple[list[int], int]:
    """How many of the first ``seen`` batches each worker produced, and whose turn is next.

    A DataLoader takes batches from its workers in turn (in order), skipping exhausted workers.
    ``batches`` holds each worker's batch count.
    """
    if not 0 <= seen <= sum(batches):
        raise ValueError(f"seen={seen} batches, but the workers produce {sum(batches)} in all")
    out, w = [0] * len(batches), 0
    for _ in range(seen):
        while out[w] >= batches[w]:
            w = (w + 1) % len(batches)
        out[w] += 1
        w = (w + 1) % len(batches)
    return out, w


class ShardLoader(DataLoader):
    """DataLoader over :class:`TarShards` that counts epochs and batches and resumes mid-epoch exactly.

    Each pass over the loader is the next epoch. ``state_dict`` holds the epoch and the batches
    handed out in it; after ``load_state_dict`` the next pass continues that epoch: every worker
    skips the samples of the batches it had delivered, and since the DataLoader takes batches from
    its workers in turn starting at worker 0, the streams are rotated so that the worker whose turn
    was next goes first: the stream goes on exactly where it stopped. With ``even`` (training) every rank must
    get the same number of batches, which DDP needs.
    """

    def __init__(self, dataset: TarShards, batch_size: int, even: bool = True, **kwargs: Any) -> None:
        if kwargs.get("persistent_workers"):
            raise ValueError(
                "tar shards need persistent_workers: false (workers re-read the epoch each time)"
            )
        workers, world = max(1, kwargs.get("num_workers", 0)), dist.world_size()
        if len(dataset.shards) < world * workers:
            raise ValueError(
                f"{len(dataset.shards)} shards cannot feed {world} process(es) x {workers} worker(s): every "
                "worker reads whole shards; write more (smaller) shards or lower num_workers"
            )
        kwargs.pop("generator", None)
        super().__init__(dataset, batch_size=batch_size, **kwargs)
        self._epoch, self._seen, self._started = 0, 0, False
        self.even = even

    def _worker_batches(self, rank: int | None = None) -> list[int]:
        """Batches each worker of ``rank`` (default: this one) yields in the current epoch."""
        ds: TarShards = self.dataset  # type: ignore[assignment]
        workers, sizes = max(1, self.num_workers), ds.sizes()
        rank = dist.rank() if rank is None else rank
        shards = [ds.worker_shards(rank, dist.world_size(), w, workers) for w in range(workers)]
        return [-(-sum(sizes[s] for s in mine) // self.batch_size) for mine in shards]  # type: ignore[operator]

    def _check_even(self) -> None:
        """Under DDP every rank must run the same number of steps, or the gradient all-reduce hangs."""
        counts = [sum(self._worker_batches(r)) for r in range(dist.world_size())]
        if len(set(counts)) > 1:
            raise ValueError(
                f"in epoch {self._epoch} the ranks would get {counts} batches from their shards; "
                "DDP needs the "
                "same count on every rank: write shards of equal size (a multiple of batch_size)"
            )

    def __len__(self) -> int:
        return sum(self._worker_batches())

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        ds: TarShards = self.dataset  # type: ignore[assignment]
        if self._started:  # a new pass: the next epoch
            self._epoch, self._seen = self._epoch + 1, 0
        self._started = True
        ds.epoch = self._epoch
        if self._seen and self._seen >= len(self):  # resumed from an end-of-epoch checkpoint
            self._epoch, self._seen = self._epoch + 1, 0
            ds.epoch = self._epoch
        if self.even:
            self._check_even()
        # A new DataLoader iterator starts its round-robin at worker 0: rotate the streams so that
        # worker 0 continues the logical worker whose turn was next.
        per_worker, ds.worker_offset = delivered_per_worker(self._worker_batches(), self._seen)
        ds.skip = [n * self.batch_size for n in per_worker]  # type: ignore[operator]
        for batch in super().__iter__():
            self._seen += 1
            yield batch
        ds.skip, ds.worker_offset = [], 0

    def state_dict(self) -> dict[str, Any]:
        ds: TarShards = self.dataset  # type: ignore[assignment]
        return {
            "epoch": self._epoch,
            "batches": self._seen,
            "seed": ds.seed,
            "shards": len(ds.shards),
            "world_size": dist.world_size(),
            "num_workers": self.num_workers,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        for key in ("seed", "shards", "world_size", "num_workers"):
            if state.get(key) != mine[key]:
                raise ValueError(
                    f"cannot resume the shard stream exactly: checkpoint has "
                    f"{key}={state.get(key)!r}, this run "
                    f"{mine[key]!r}; resume with the same seed, shards, processes and num_workers"
                )
        self._epoch, self._seen, self._started = int(state["epoch"]), int(state["batches"]), False
