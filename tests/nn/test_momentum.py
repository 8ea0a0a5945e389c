"""update_momentum, cosine_momentum and MemoryQueue (single process; DDP in tests/ddp/test_moco_ddp.py)."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from lightning_tl.nn import MemoryQueue, cosine_momentum, update_momentum


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 3))


@pytest.mark.parametrize("m", [0.0, 0.3, 0.99, 1.0])
def test_update_momentum_is_exact_for_every_parameter_and_buffer(m: float) -> None:
    torch.manual_seed(0)
    online, target = _net().double(), _net().double()
    online.train()(torch.randn(5, 1, 8, 8, dtype=torch.float64))  # non-trivial BN running stats
    online.train()(torch.randn(5, 1, 8, 8, dtype=torch.float64))
    before = copy.deepcopy(target.state_dict())
    update_momentum(online, target, m)
    after, source = target.state_dict(), online.state_dict()
    assert before.keys() == after.keys() == source.keys()
    checked = 0
    for name, value in after.items():
        if value.is_floating_point():  # weights, biases, running_mean, running_var
            expected = m * before[name] + (1 - m) * source[name]
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-15, msg=name)
        else:  # num_batches_tracked is copied
            assert torch.equal(value, source[name]), name
        checked += 1
    assert checked == 9  # conv w/b; bn w/b, running mean/var, num_batches_tracked; linear w/b
    assert "1.num_batches_tracked" in after and int(after["1.num_batches_tracked"]) == 2


def test_update_momentum_leaves_online_alone_and_checks_inputs() -> None:
    online, target = _net(), _net()
    kept = copy.deepcopy(online.state_dict())
    update_momentum(online, target, 0.5)
    assert all(torch.equal(kept[k], v) for k, v in online.state_dict().items())
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 1.5"):
        update_momentum(online, target, 1.5)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got -0.1"):
        update_momentum(online, target, -0.1)
    with pytest.raises(ValueError, match="differ in structure"):
        update_momentum(online, nn.Linear(2, 2), 0.5)


def test_cosine_momentum() -> None:
    assert cosine_momentum(0, 100) == pytest.approx(0.99)
    assert cosine_momentum(100, 100) == pytest.approx(1.0)
    assert cosine_momentum(250, 100) == pytest.approx(1.0)
    assert cosine_momentum(50, 100, base=0.9, final=1.0) == pytest.approx(0.95)
    values = [cosine_momentum(s, 40, 0.996) for s in range(41)]
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert cosine_momentum(10, 40, 0.996) == pytest.approx(1 - 0.004 * (1 + math.cos(math.pi / 4)) / 2)
    with pytest.raises(ValueError, match="total_steps must be >= 1"):
        cosine_momentum(0, 0)
    with pytest.raises(ValueError, match=r"base must be in \[0, 1\], got 2"):
        cosine_momentum(0, 10, base=2)


def test_queue_ring_buffer_matches_reference_list() -> None:
    # 10 slots, batches of 4, 3 (a smaller batch) and 4: writes wrap past the end in the middle of a batch
    size, dim = 10, 3
    queue = MemoryQueue(size, dim).double()
    reference = [row.clone() for row in queue.keys]  # the random initial keys
    pointer = 0
    gen = torch.Generator().manual_seed(0)
    for step, n in enumerate([4, 3, 4, 4, 1, 10, 2]):
        keys = torch.randn(n, dim, dtype=torch.float64, generator=gen)
        queue.enqueue(keys)
        for row in keys:  # FIFO: overwrite the oldest slot
            reference[pointer] = row
            pointer = (pointer + 1) % size
        assert int(queue.pointer) == pointer, step
        assert torch.equal(queue.keys, torch.stack(reference)), step
    assert int(queue.count) == size
    # the queue's copy does not change when more keys arrive
    snapshot = queue()
    queue.enqueue(torch.randn(2, dim, dtype=torch.float64))
    assert pointer == 8  # 28 keys written into 10 slots
    assert not torch.equal(snapshot[8:], queue.keys[8:]) and torch.equal(snapshot[:8], queue.keys[:8])


def test_queue_state_is_in_the_state_dict() -> None:
    queue = MemoryQueue(6, 2)
    queue.enqueue(torch.ones(4, 2))
    state = queue.state_dict()
    assert set(state) == {"keys", "pointer", "count"} and int(state["pointer"]) == 4
    fresh = MemoryQueue(6, 2)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.keys, queue.keys) and int(fresh.pointer) == 4 and int(fresh.count) == 4
    initial = MemoryQueue(5, 4).keys
    torch.testing.assert_close(initial.norm(dim=1), torch.ones(5))  # starts with random unit keys


def test_queue_bad_inputs() -> None:
    with pytest.raises(ValueError, match="queue size must be >= 1, got 0"):
        MemoryQueue(0, 4)
    queue = MemoryQueue(4, 2)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        queue.enqueue(torch.randn(3, 5))
    with pytest.raises(ValueError, match="queue size to at least the global batch"):
        queue.enqueue(torch.randn(5, 2))
