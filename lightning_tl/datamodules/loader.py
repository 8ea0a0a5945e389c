"""A DataLoader whose position in the epoch travels in Lightning checkpoints (mid-epoch exact resume).

Lightning (2.x) saves ``state_dict()`` of every train dataloader that implements the ``_Stateful``
protocol (``state_dict``/``load_state_dict``) under ``loops.fit_loop.state_dict.combined_loader``
and, on resume, calls ``load_state_dict`` *before* it creates the epoch's iterator. It then calls
``sampler.set_epoch(epoch)`` *after* creating that iterator, so the iterator here starts the real
DataLoader iterator lazily, on the first ``next``: the epoch is final by then, also when worker
processes prefetch indices as soon as their iterator exists.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader

from lightning_tl.datamodules.sampling import SeededSampler


class ResumableDataLoader(DataLoader):
    """DataLoader over a :class:`SeededSampler` that can restart at the next unseen batch.

    ``state_dict()`` holds the sampler's seed and epoch and the number of batches this loader has
    handed out in the current epoch; ``load_state_dict`` makes the next iteration of that epoch skip
    those batches. When the loop moves on to another epoch (``set_epoch``), the skip is cancelled,
    so a checkpoint saved at the end of an epoch resumes at the start of the next one. Batches are
    formed from consecutive sampler items, so skipping ``k * batch_size`` items skips ``k`` batches.
    Takes the same arguments as :class:`~torch.utils.data.DataLoader` (so Lightning can re-create it).
    """

    _batches_seen: int = 0

    def __iter__(self) -> _LazyCountingIterator:  # type: ignore[override]
        return _LazyCountingIterator(self)

    def _seeded_sampler(self) -> SeededSampler | None:
        return self.sampler if isinstance(self.sampler, SeededSampler) else None

    def state_dict(self) -> dict[str, Any]:
        """Sampler state plus ``batches``: batches handed out so far in the current epoch."""
        sampler = self._seeded_sampler()
        if sampler is None:  # e.g. Lightning swapped in a SequentialSampler for overfit_batches
            return {}
        return {**sampler.state_dict(), "batches": self._batches_seen, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the saved epoch at its next unseen batch."""
        if not state:
            return
        sampler = self._seeded_sampler()
        if sampler is None:
            raise TypeError(
                f"{type(self).__name__} can only resume with a SeededSampler, this loader has "
                f"{type(self.sampler).__name__}"
            )
        if state["batch_size"] != self.batch_size:
            raise ValueError(
                f"cannot resume mid-epoch exactly: the checkpoint used batch_size={state['batch_size']}, "
                f"this run uses batch_size={self.batch_size}; resume with the same batch size"
            )
        sampler.load_state_dict(state)
        assert self.batch_size is not None
        batches = int(state["batches"])
        sampler.skip(min(batches * self.batch_size, sampler.num_samples))
        self._batches_seen = batches


class _LazyCountingIterator:
    """Creates the DataLoader iterator on the first ``next`` and counts the batches it returns."""

    def __init__(self, loader: ResumableDataLoader) -> None:
        self._loader = loader
        self._iterator: Any = None

    def __iter__(self) -> _LazyCountingIterator:
        return self

    def __len__(self) -> int:
        return len(self._loader)

    def __next__(self) -> Any:
        loader = self._loader
        if self._iterator is None:
            sampler = loader._seeded_sampler()
            skipped = sampler.pending_skip if sampler is not None else 0
            loader._batches_seen = skipped // (loader.batch_size or 1)
            self._iterator = DataLoader.__iter__(loader)
        batch = next(self._iterator)
        loader._batches_seen += 1
        return batch
