"""SeededSampler, UnpaddedDistributedSampler, ResumableDataLoader and the stratified split."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset, DistributedSampler

from lightning_tl.datamodules import ResumableDataLoader, SeededSampler, UnpaddedDistributedSampler
from lightning_tl.datamodules.sampling import sample_seed
from lightning_tl.datamodules.splits import stratified_split


def test_seeded_sampler_is_a_distributed_sampler_with_deterministic_order_and_seeds() -> None:
    a = SeededSampler(50, seed=3)
    assert isinstance(a, DistributedSampler) and a.num_replicas == 1 and a.rank == 0
    first = list(a)
    assert first == list(SeededSampler(50, seed=3))
    assert sorted(i for i, _ in first) == list(range(50))
    assert all(s == sample_seed(3, 0, i) for i, s in first)
    assert [i for i, _ in first] != list(range(50))  # shuffled
    a.set_epoch(1)
    second = list(a)
    assert [i for i, _ in second] != [i for i, _ in first]
    assert {s for _, s in second}.isdisjoint({s for _, s in first})  # new augmentations every epoch
    assert [i for i, _ in SeededSampler(50, seed=4)] != [i for i, _ in first]
    assert [i for i, _ in SeededSampler(5, shuffle=False)] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("drop_last", [False, True])
def test_seeded_sampler_ranks_share_one_permutation(drop_last: bool) -> None:
    n = 11
    ranks = [SeededSampler(n, seed=0, drop_last=drop_last, num_replicas=2, rank=r) for r in range(2)]
    for s in ranks:
        s.set_epoch(2)
    shards = [[i for i, _ in s] for s in ranks]
    assert len(shards[0]) == len(shards[1]) == len(ranks[0])
    merged = [i for pair in zip(*shards, strict=True) for i in pair]  # undo the r::2 interleave
    if drop_last:
        assert len(merged) == 10 and len(set(merged)) == 10
    else:
        assert set(merged) == set(range(n)) and len(merged) == 12  # one index repeated as padding
    # same (seed, epoch, index) -> same sample seed on every rank
    seeds = {i: s for r in ranks for i, s in r}
    assert all(seeds[i] == sample_seed(0, 2, i) for i in seeds)


def test_seeded_sampler_skip_and_state() -> None:
    s = SeededSampler(20, seed=1)
    s.set_epoch(4)
    full = list(s)
    s.skip(6)
    assert list(s) == full[6:]
    assert list(s) == full  # the skip applies to one iteration only
    s.skip(6)
    s.set_epoch(5)  # a new epoch cancels a pending skip
    assert len(list(s)) == 20
    restored = SeededSampler(20, seed=1)
    restored.load_state_dict({**s.state_dict(), "epoch": 4})
    assert list(restored) == full
    with pytest.raises(ValueError, match="seed=1"):
        SeededSampler(20, seed=2).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="can skip 0 to 20"):
        s.skip(21)
    with pytest.raises(ValueError, match="rank"):
        SeededSampler(10, num_replicas=2, rank=2)


@pytest.mark.parametrize(("n", "world"), [(10, 1), (10, 3), (7, 4), (2, 3), (0, 2)])
def test_unpadded_sharding_covers_every_index_exactly_once(n: int, world: int) -> None:
    shards = [list(UnpaddedDistributedSampler(n, num_replicas=world, rank=r)) for r in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(n))
    assert [len(UnpaddedDistributedSampler(n, num_replicas=world, rank=r)) for r in range(world)] == [
        len(s) for s in shards
    ]
    assert isinstance(UnpaddedDistributedSampler(n, num_replicas=world, rank=0), DistributedSampler)
    assert list(UnpaddedDistributedSampler(5)) == [0, 1, 2, 3, 4]


class _Keys(Dataset):
    """Returns the (index, seed) key and a random number drawn under it (like AugmentedDataset)."""

    def __len__(self) -> int:
        return 23

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, float]:
        index, seed = key
        return index, float(torch.rand(1, generator=torch.Generator().manual_seed(seed)))


def _loader(num_workers: int = 0) -> ResumableDataLoader:
    return ResumableDataLoader(
        _Keys(), batch_size=4, sampler=SeededSampler(23, seed=7), num_workers=num_workers
    )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumable_loader_restarts_at_the_next_unseen_batch(num_workers: int) -> None:
    loader = _loader()
    loader.sampler.set_epoch(1)
    full = [b[0].tolist() for b in loader]
    it = iter(loader)
    seen = [next(it)[0].tolist() for _ in range(3)]
    state = loader.state_dict()
    assert state["batches"] == 3 and state["epoch"] == 1
    resumed = _loader(num_workers)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)  # what Lightning does after loading, same epoch: skip kept
    rest = [b[0].tolist() for b in resumed]
    assert seen + rest == full
    assert resumed.state_dict()["batches"] == len(full)
    # a state saved at the end of the epoch resumes with the whole next epoch
    nxt = _loader(num_workers)
    nxt.load_state_dict(resumed.state_dict())
    nxt.sampler.set_epoch(2)
    assert len(list(nxt)) == len(full)


def test_resumable_loader_refuses_another_batch_size() -> None:
    state = _loader().state_dict()
    other = ResumableDataLoader(_Keys(), batch_size=5, sampler=SeededSampler(23, seed=7))
    with pytest.raises(ValueError, match="batch_size=4"):
        other.load_state_dict(state)


def test_stratified_split_is_disjoint_deterministic_and_stratified() -> None:
    labels = torch.arange(10).repeat_interleave(torch.tensor([30, 30, 30, 30, 30, 20, 20, 20, 10, 10]))
    train, val, test = stratified_split(labels, [46, 23], seed=0)
    assert (len(val), len(test), len(train)) == (46, 23, labels.numel() - 69)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(labels.numel()))
    again = stratified_split(labels, [46, 23], seed=0)
    assert all(torch.equal(a, b) for a, b in zip(again, (train, val, test), strict=True))
    other = stratified_split(labels, [46, 23], seed=1)
    assert not torch.equal(other[1], val)
    expected = torch.bincount(labels).double() * 46 / labels.numel()  # per-class share of val
    assert (torch.bincount(labels[val], minlength=10) - expected).abs().max() < 1
    with pytest.raises(ValueError, match="sum to at most"):
        stratified_split(labels, [200, 200], seed=0)
