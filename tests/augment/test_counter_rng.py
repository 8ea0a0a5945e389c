"""Counter-based random numbers: SplitMix64 on tensors, uniform draws, and the one seed mixer.

Checked against a plain-integer transcription of SplitMix64 (Steele, Lea, Flood, OOPSLA 2014) and of
the seed fold ``h = splitmix64(h ^ v)`` that seeded every sample before augmentation became a package.
"""

from __future__ import annotations

import pytest
import torch

from lightning_tl.augment import mix_seed
from lightning_tl.augment.counter_rng import derive_seeds, mix_seeds, splitmix64, uniform
from lightning_tl.datamodules.sampling import sample_seed

MASK64 = (1 << 64) - 1


def reference_splitmix64(x: int) -> int:
    """SplitMix64's output for state ``x`` (uint64): ``mix(x + gamma)``."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def reference_mix_seed(*values: int) -> int:
    h = 0
    for v in values:
        h = reference_splitmix64(h ^ (v & MASK64))
    return h >> 1


def _seeds(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-(2**63), 2**63 - 1, (n,), generator=g, dtype=torch.int64)  # (n,)


def test_splitmix64_on_tensors_equals_the_integer_reference() -> None:
    seeds = _seeds(500)
    mixed = splitmix64(seeds).tolist()
    assert all(
        m & MASK64 == reference_splitmix64(s & MASK64) for m, s in zip(mixed, seeds.tolist(), strict=True)
    )
    assert reference_splitmix64(0) == 0xE220A8397B1DCDAF  # the first output of the generator seeded 0


def test_uniform_draws_are_uniform_per_stream_and_split_by_offset() -> None:
    seeds = _seeds(500)
    u = uniform(seeds, 40)  # (500, 40)
    assert u.dtype == torch.float64 and float(u.min()) >= 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005
    torch.testing.assert_close(uniform(seeds, 10, offset=30), u[:, 30:])  # streams split by offset
    assert torch.equal(uniform(seeds[:7], 40), u[:7])  # a row depends on its own seed only
    with pytest.raises(ValueError, match="int64"):
        uniform(seeds.int(), 3)
    with pytest.raises(ValueError, match=r"\(N,\) int64"):
        uniform(seeds.view(20, 25), 3)


@pytest.mark.parametrize(
    "values", [(), (0,), (3, 0, 7), (2**64 - 1, -1), (-5, 2**63, 12345678901234567890), (1, 2, 3, 4, 5)]
)
def test_mix_seed_is_the_integer_fold_modulo_2_to_the_64(values: tuple[int, ...]) -> None:
    seed = mix_seed(*values)
    assert seed == reference_mix_seed(*values)
    assert 0 <= seed < 2**63  # fits torch.manual_seed everywhere
    torch.manual_seed(seed)


def test_mix_seeds_folds_many_samples_at_once() -> None:
    indices = torch.arange(-3, 300, dtype=torch.int64)  # (303,)
    many = mix_seeds(11, 2, indices)  # (303,)
    assert many.shape == (303,) and many.dtype == torch.int64
    assert many.tolist() == [mix_seed(11, 2, i) for i in indices.tolist()]
    assert many.tolist() == [sample_seed(11, 2, i) for i in indices.tolist()]  # the sampler's seeds
    assert len(set(many.tolist())) == 303


def test_derived_seeds_are_the_first_draws_of_the_stream() -> None:
    seeds = derive_seeds(42, 6)
    expected = [reference_splitmix64((42 + k * 0x9E3779B97F4A7C15) & MASK64) for k in range(6)]
    assert [s & MASK64 for s in seeds.tolist()] == expected
