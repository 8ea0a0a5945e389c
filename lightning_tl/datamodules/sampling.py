"""Deterministic samplers: seeded shuffling with per-sample augmentation seeds, and unpadded eval sharding.

Both samplers subclass :class:`torch.utils.data.DistributedSampler`, so Lightning keeps them under
DDP instead of injecting its own, and both resolve ``num_replicas``/``rank`` from
:mod:`lightning_tl.distributed` (1 and 0 without a process group).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DistributedSampler

from lightning_tl import distributed
from lightning_tl.augment.counter_rng import mix_seed, mix_seeds


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of the random augmentation of dataset item ``index`` in ``epoch`` of a run seeded ``seed``."""
    return mix_seed(seed, epoch, index)


def _resolve(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    num_replicas = distributed.world_size() if num_replicas is None else num_replicas
    rank = distributed.rank() if rank is None else rank
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas=}, {rank=}")
    return num_replicas, rank


class SeededSampler(DistributedSampler):
    """Shuffling sampler that yields ``(index, sample_seed)`` and can resume mid-epoch.

    The permutation of epoch ``e`` comes from a generator seeded with ``mix_seed(seed, e)``; as in
    :class:`~torch.utils.data.DistributedSampler`, it is padded (``drop_last=False``) or cut
    (``drop_last=True``) to a multiple of ``num_replicas`` and rank ``r`` takes positions
    ``r::num_replicas``. Each index comes with ``sample_seed(seed, e, index)``, which the dataset uses
    to seed that item's augmentation, so a sample looks the same whatever the worker count, the
    worker order or the process's global RNG state.

    ``set_epoch`` is called by Lightning at the start of every epoch. :meth:`skip` drops the first
    samples of this rank's shard in the next iteration; :class:`ResumableDataLoader` uses it to
    restart in the middle of an epoch. A pending skip is cancelled when ``set_epoch`` moves to
    another epoch.

    Args:
        dataset_len: number of items in the dataset.
        shuffle: shuffle (True) or keep index order (False; the seeds are still per item).
        seed: run seed; the same seed gives the same order and the same augmentations.
        drop_last: drop the tail instead of padding so every rank gets the same count.
        num_replicas, rank: defaults from :mod:`lightning_tl.distributed`.

    Example::

        >>> list(SeededSampler(4, shuffle=False, num_replicas=2, rank=1))[0][0]
        1
    """

    def __init__(
        self,
        dataset_len: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if dataset_len < 0:
            raise ValueError(f"dataset_len must be >= 0, got {dataset_len}")
        num_replicas, rank = _resolve(num_replicas, rank)
        # DistributedSampler only needs len(dataset): a range stands in for the data.
        super().__init__(
            range(dataset_len),  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.dataset_len = dataset_len
        self._skip = 0

    def indices(self) -> list[int]:
        """This rank's dataset indices for the current epoch, in order (``num_samples`` of them)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.dataset_len, generator=g).tolist()
        else:
            order = list(range(self.dataset_len))
        if self.drop_last:
            order = order[: self.total_size]
        elif order:
            repeats = math.ceil(self.total_size / len(order))
            order = (order * repeats)[: self.total_size]
        return order[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        start, self._skip = self._skip, 0
        seed, epoch = self.seed, self.epoch
        indices = self.indices()[start:]
        seeds = mix_seeds(
            seed, epoch, torch.tensor(indices, dtype=torch.int64)
        ).tolist()  # sample_seed of each
        return iter(list(zip(indices, seeds, strict=True)))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and seeds the next iteration uses."""
        if epoch != self.epoch:
            self._skip = 0
        super().set_epoch(epoch)

    @property
    def pending_skip(self) -> int:
        """Samples the next iteration will leave out (0 unless :meth:`skip` was called)."""
        return self._skip

    def skip(self, num_samples: int) -> None:
        """Leave out the first ``num_samples`` of this rank's shard in the next iteration only."""
        if not 0 <= num_samples <= self.num_samples:
            raise ValueError(f"can skip 0 to {self.num_samples} samples of this shard, got {num_samples}")
        self._skip = num_samples

    def state_dict(self) -> dict[str, Any]:
        """Seed, epoch and shard geometry; checked by :meth:`load_state_dict`."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "dataset_len": self.dataset_len,
            "num_replicas": self.num_replicas,
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the epoch; refuse a state from another seed, data set size or world size."""
        mine = self.state_dict()
        for key in ("seed", "dataset_len", "num_replicas", "shuffle"):
            if key in state and state[key] != mine[key]:
                raise ValueError(
                    f"cannot resume the sampler exactly: checkpoint has {key}={state[key]!r}, this run has "
                    f"{key}={mine[key]!r}; resume with the same seed, data and number of processes"
                )
        self.set_epoch(int(state["epoch"]))


class UnpaddedDistributedSampler(DistributedSampler):
    """Evaluation sharding without padding: rank ``r`` takes indices ``r, r + W, r + 2W, ...``.

    Every index is visited exactly once over all ranks, so metrics gathered across ranks equal the
    single-process numbers (the stock DistributedSampler repeats samples to even out the ranks).
    Ranks may get one sample (and hence one batch) fewer than others: keep collectives out of
    per-batch eval code and gather at epoch end (e.g. with ``distributed.gather_uneven``).
    With one process this is a plain sequential sampler.
    """

    def __init__(self, dataset_len: int, num_replicas: int | None = None, rank: int | None = None) -> None:
        if dataset_len < 0:
            raise ValueError(f"dataset_len must be >= 0, got {dataset_len}")
        num_replicas, rank = _resolve(num_replicas, rank)
        super().__init__(range(dataset_len), num_replicas=num_replicas, rank=rank, shuffle=False)  # type: ignore[arg-type]
        self.dataset_len = dataset_len
        self.num_samples = len(range(rank, dataset_len, num_replicas))
        self.total_size = dataset_len

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.dataset_len, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples
