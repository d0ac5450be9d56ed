"""Sampling the parts of a training split by weight (JDE's weighted mixture of datasets).

Without any ``weight`` nothing changes: the loader shuffles and every image is drawn once an epoch, so each
part's share of the samples is its share of the images. When the parts give weights (every part with a
training split then gives one, checked when the YAML is read), each part's share of the samples drawn in
an epoch is its weight over the sum of the weights, however many images it has; within a part, every image
is equally likely.

:class:`WeightedSampler` draws an epoch of indices with replacement from one generator seeded by the seed and
the epoch (``set_epoch``), identical on every rank; under ``torchrun`` each rank takes every ``world``-th
draw from its rank on, as ``DistributedSampler`` does, so the ranks see distinct draws and together one
epoch's worth.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch.utils.data import Sampler

from unified.data.records import ImageRecord


def part_shares(images: Mapping[str, int], weights: Mapping[str, float | None]) -> dict[str, float]:
    """Each part's share of the samples (summing to 1): its weight over the weights' sum, or, when no part
    has a weight, its share of the images.

    Raises:
        ValueError: when some parts with images have a weight and others do not.
    """
    total = sum(images.values())
    if total == 0:
        return {part: 0.0 for part in images}
    given = {part: weights.get(part) for part in images}
    if all(w is None for w in given.values()):
        return {part: n / total for part, n in images.items()}
    missing = sorted(part for part, w in given.items() if w is None)
    if missing:
        raise ValueError(f"parts {missing} give no sampling weight while others do")
    scale = sum(w for w in given.values() if w is not None)
    return {part: float(w) / scale for part, w in given.items() if w is not None}


def sample_weights(records: Sequence[ImageRecord], weights: Mapping[str, float | None]) -> list[float] | None:
    """One sampling weight per record (its part's share over the part's images); None when no part has a
    weight, so the loader keeps its plain shuffle."""
    if all(w is None for w in weights.values()):
        return None
    images = Counter(record.part for record in records)
    shares = part_shares(images, weights)
    return [shares[record.part] / images[record.part] for record in records]


class WeightedSampler(Sampler[int]):
    """Indices drawn with replacement by weight, seeded by ``(seed, epoch)``, split over the ranks.

    Args:
        weights: One non-negative weight per dataset index.
        num_samples: Draws per epoch over all ranks (usually the dataset's length).
        seed: The run's seed.
        rank: This process's rank.
        world_size: The number of ranks.
        drop_last: Each rank takes ``num_samples // world_size`` draws (else rounded up, drawing a few more).
    """

    def __init__(
        self,
        weights: Sequence[float],
        num_samples: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if not weights or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("sampling weights must be non-negative with a positive sum")
        self.weights = torch.as_tensor(list(weights), dtype=torch.double)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.per_rank = num_samples // world_size if drop_last else -(-num_samples // world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw another epoch's indices (the trainer calls it before every epoch)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1000003 + self.epoch)
        drawn = torch.multinomial(self.weights, self.per_rank * self.world_size, True, generator=generator)
        return iter(drawn[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank


__all__ = ["WeightedSampler", "part_shares", "sample_weights"]
