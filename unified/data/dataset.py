"""The multi-task dataset, ``collate`` and DataLoader helpers.

A sample is a dict: ``image`` uint8 ``(3, H, W)``, ``labels`` ``{kind: tensor}`` (each kind's
``to_sample``, for every kind of the dataset), ``label_mask`` ``{kind: bool}`` (whether the image really
carries that kind), ``meta`` dict. :func:`collate` turns samples into the batch of
``docs/ARCHITECTURE.md``: ``images`` float in ``[0, 1]``, one entry per kind (each kind's ``collate``),
``label_mask`` and ``meta``. Neither names a kind of label: the kinds say how they are carried.
"""

from __future__ import annotations

import ctypes
import functools
import os
import random
import signal
import sys
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from unified.data import augment as aug
from unified.data.augment import AugmentConfig, Augmented, Piece
from unified.data.image_io import load_rgb
from unified.data.kinds import LABEL_KINDS, RESERVED_NAMES, count_instances, kind_order, label_kind, move_to
from unified.data.records import ImageRecord
from unified.data.sampling import WeightedSampler
from unified.data.validate import DataError
from unified.structures import DatasetInfo


class MultiTaskDataset(Dataset):
    """Images with their labels of every kind, augmented for training or letterboxed.

    Args:
        records: The images (from :func:`unified.data.load_dataset_yaml`).
        img_size: Side of the square output images.
        augment: Training augmentation (mosaic, affine, mixup, HSV, flips) when true; letterbox only
            when false.
        hyp: Augmentation hyper-parameters (an :class:`AugmentConfig`, or a mapping such as an official
            hyp file; default ``AugmentConfig()``).
        info: The dataset info (class and image label names).
        cache_images: Decode and resize every image once, here, and keep it in memory (shared with
            forked workers); about ``3 * img_size**2`` bytes per image.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        img_size: int,
        augment: bool,
        hyp: AugmentConfig | Mapping[str, Any] | None = None,
        *,
        info: DatasetInfo,
        cache_images: bool = False,
    ) -> None:
        if not records:
            raise ValueError("MultiTaskDataset needs at least one record")
        if img_size <= 0:
            raise ValueError(f"img_size must be positive, got {img_size}")
        self.records = list(records)
        self.img_size = int(img_size)
        self.augment = augment
        if hyp is None:
            hyp = AugmentConfig()
        self.hyp = hyp if isinstance(hyp, AugmentConfig) else AugmentConfig.from_hyp(hyp)
        self.info = info
        #: Every kind a sample holds: those of the dataset info and of any record.
        self.kinds = kind_order(set(info.label_kinds).union(*(r.label_kinds for r in self.records)))
        # Mosaic and mixup partners come from images with the same label kinds (see augment module).
        groups: dict[frozenset[str], list[int]] = defaultdict(list)
        for index, record in enumerate(self.records):
            groups[record.label_kinds].append(index)
        self._group_of = [groups[r.label_kinds] for r in self.records]
        self._cache: list[np.ndarray] | None = None
        if cache_images:
            self._cache = [self._decode(i) for i in range(len(self.records))]

    def __len__(self) -> int:
        return len(self.records)

    # -------------------------------------------------------------------------------------- loading

    def _decode(self, index: int) -> np.ndarray:
        """The record's image, resized so that its longer side is ``img_size``: ``(h, w, 3)`` uint8."""
        record = self.records[index]
        image = load_rgb(record.path)
        if image.size != (record.width, record.height):
            raise DataError(
                f"{record.path}: decoded size {image.size} differs from the recorded {record.width}x{record.height}"
            )
        w, h = image.size
        if max(w, h) != self.img_size:
            gain = self.img_size / max(w, h)
            image = image.resize((max(1, round(w * gain)), max(1, round(h * gain))), Image.BILINEAR)
        return np.array(image)  # a writable copy, not a view of PIL's buffer

    def load_piece(self, index: int) -> tuple[Piece, float]:
        """The record's image resized so its longer side is ``img_size``, with its labels in its pixels.

        Returns:
            The piece and the resize gain.
        """
        record = self.records[index]
        image = self._cache[index] if self._cache is not None else self._decode(index)
        h, w = image.shape[:2]
        scale = np.diag([w / record.width, h / record.height, 1.0])
        piece = Piece(image=image, labels=aug.transform_labels(record.labels, scale))
        return piece, self.img_size / max(record.width, record.height)

    # ------------------------------------------------------------------------------------- sampling

    def _rng(self) -> np.random.Generator:
        # Drawn from torch's generator: seeded per worker by the DataLoader, different every epoch.
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))

    def _partners(
        self, index: int, count: int, rng: np.random.Generator, exclude: Sequence[int] = ()
    ) -> list[int]:
        """``count`` images of ``index``'s label-kind group, distinct from each other, from ``index`` and from
        ``exclude`` while the group is large enough (so an identity never appears twice in one image)."""
        group = self._group_of[index]
        taken = {index, *exclude}
        if len(group) < count + len(taken):
            return [group[int(i)] for i in rng.integers(0, len(group), count)]
        chosen: list[int] = []
        while len(chosen) < count:
            candidate = group[int(rng.integers(0, len(group)))]
            if candidate not in taken:
                taken.add(candidate)
                chosen.append(candidate)
        return chosen

    def _mosaic(self, indices: Sequence[int], rng: np.random.Generator) -> Augmented:
        order = rng.permutation(4)  # the main image lands in any quadrant
        pieces = [self.load_piece(indices[i])[0] for i in order]
        return aug.mosaic(pieces, self.hyp, rng, self.img_size, self.info)

    def _train_sample(self, index: int, rng: np.random.Generator) -> Augmented:
        if rng.random() < self.hyp.mosaic:
            first = [index, *self._partners(index, 3, rng)]
            sample = self._mosaic(first, rng)
            if rng.random() < self.hyp.mixup:
                second = self._partners(index, 4, rng, exclude=first)
                sample = aug.mixup(sample, self._mosaic(second, rng), rng)
        else:
            sample = aug.single(self.load_piece(index)[0], self.hyp, rng, self.img_size, self.info)
        return aug.photometric_and_flips(sample, self.hyp, rng, self.info)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        if self.augment:
            sample = self._train_sample(index, self._rng())
            ratio, pad = self.img_size / max(record.width, record.height), (0, 0)
        else:
            piece, ratio = self.load_piece(index)
            piece, pad = aug.letterbox(piece, self.img_size)
            sample = Augmented(aug.to_tensor(piece.image), piece.labels)
        meta = {
            "image_id": record.image_id,
            "path": record.path,
            "orig_shape": (record.height, record.width),
            "ratio": float(ratio),
            "pad": (int(pad[0]), int(pad[1])),
            "augmented": self.augment,
        }
        if record.sequence is not None:
            meta["sequence"] = record.sequence
            meta["frame"] = record.frame
        return self._to_sample(sample, record, meta)

    def _to_sample(self, sample: Augmented, record: ImageRecord, meta: dict[str, Any]) -> dict[str, Any]:
        num_instances = count_instances(sample.labels)
        labels = {
            name: label_kind(name).to_sample(sample.labels.get(name), num_instances, sample.size, self.info)
            for name in self.kinds
        }
        return {
            "image": sample.to_uint8(),
            "labels": labels,
            "label_mask": {name: name in record.label_kinds for name in self.kinds},
            "meta": meta,
        }


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch (see ``docs/ARCHITECTURE.md``, "Tensors and batches").

    Returns:
        ``images`` float32 ``(B, 3, H, W)`` in ``[0, 1]``; one entry per kind of label, as that kind
        collates it; ``label_mask`` ``{kind: BoolTensor(B)}``; ``meta`` list.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    images = torch.stack([s["image"] for s in samples])
    images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    batch: dict[str, Any] = {"images": images}
    for name in samples[0]["labels"]:
        batch[name] = label_kind(name).collate([s["labels"][name] for s in samples])
    batch["label_mask"] = {
        name: torch.tensor([bool(s["label_mask"][name]) for s in samples], dtype=torch.bool)
        for name in samples[0]["label_mask"]
    }
    batch["meta"] = [s["meta"] for s in samples]
    return batch


def batch_to_device(
    batch: dict[str, Any], device: torch.device, memory_format: torch.memory_format | None = None
) -> dict[str, Any]:
    """A batch on ``device``: each kind's entry moved as its kind says, everything else generically
    (``memory_format`` applies to 4-D float tensors, i.e. the images)."""
    moved = {}
    for key, value in batch.items():
        if key in LABEL_KINDS and key not in RESERVED_NAMES:
            moved[key] = label_kind(key).to_device(value, device)
        else:
            moved[key] = move_to(value, device, memory_format)
    return moved


def seed_worker(worker_id: int, niceness: int = 0) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from the seed torch gave it; ignore Ctrl-C; lower
    the worker's CPU priority by ``niceness``.

    A terminal's Ctrl-C signals the whole process group. A worker that died of it first would make the
    main process fail with "DataLoader worker exited unexpectedly" instead of stopping cleanly, so the
    workers leave SIGINT to the main process, which shuts them down.

    On Linux a worker is also killed as soon as the process that forked it dies (SIGKILL, an OOM kill, an
    uncaught SIGTERM): torch's own watchdog only notices between samples, and a worker at the lowest
    priority on busy cores may not get the CPU to reach that check for a minute.
    """
    _die_with_parent()
    if niceness and hasattr(os, "nice"):
        os.nice(niceness)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # discards a Ctrl-C held back by iterate_loader
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent thread dies (``PR_SET_PDEATHSIG``); elsewhere
    nothing. The loaders are iterated from the thread that made them, so that thread's end is the parent's."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def iterate_loader(loader: Iterable[Any]) -> Iterator[Any]:
    """``iter(loader)``, with Ctrl-C held back while the loader forks its workers.

    Workers forked with SIGINT blocked start with it blocked; :func:`seed_worker` ignores it and
    unblocks it, so a Ctrl-C that lands while they start never reaches them. This process's own handler
    is swapped for one that only records the signal meanwhile: blocking covers just this thread, another
    thread may take the signal, and a KeyboardInterrupt raised inside fork's callbacks would be swallowed
    ("Exception ignored in _releaseLock") and the run would go on. A recorded Ctrl-C is raised again as
    soon as the workers exist.
    """
    if (
        not hasattr(signal, "pthread_sigmask")  # Windows: spawned workers
        or threading.current_thread() is not threading.main_thread()  # handlers belong to the main thread
        or signal.getsignal(signal.SIGINT) is None  # a handler installed outside Python: leave it alone
    ):
        return iter(loader)
    held: list[int] = []
    handler = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, handler)
        if held:
            signal.raise_signal(signal.SIGINT)


def build_dataloader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: int = 0,
    seed: int = 0,
    distributed: bool = False,
    sampler: Sampler | None = None,
    drop_last: bool = False,
    pin_memory: bool = False,
    persistent_workers: bool = True,
    worker_niceness: int = 0,
    sample_weights: Sequence[float] | None = None,
) -> DataLoader:
    """A DataLoader with seeded shuffling and workers, :func:`collate`, and optional distribution.

    Args:
        dataset: Usually a :class:`MultiTaskDataset`.
        batch_size: Images per batch (per process when distributed).
        shuffle: Shuffle every epoch.
        num_workers: Worker processes; they persist across epochs.
        seed: Seeds the shuffling and the workers' random generators.
        distributed: Use a :class:`DistributedSampler` (the process group must be initialised); call
            ``loader.sampler.set_epoch(epoch)`` every epoch so the shuffling changes.
        sampler: A sampler of your own (overrides ``shuffle`` and ``distributed``).
        drop_last: Drop the last incomplete batch.
        pin_memory: Pin batches in page-locked memory (for GPU training).
        persistent_workers: Keep workers across epochs. The trainer turns it off: fresh workers each
            epoch take their seeds from the loader's generator, which it re-seeds per epoch, so every
            epoch's augmentation is a function of (seed, epoch) and a resumed run repeats it exactly.
        worker_niceness: Lower the workers' CPU priority by this much (``os.nice``). When the model
            computes on the same few CPU cores, a worker that takes a core from one of the compute threads
            stalls every parallel op (its share of the work runs at half speed while the other threads
            wait); at the lowest priority the workers fill the gaps instead.
        sample_weights: One weight per image (``DatasetSplit.sample_weights``: the parts' ``weight``):
            with ``shuffle``, an epoch draws ``len(dataset)`` images with replacement by weight, seeded by
            ``seed`` and the epoch, split over the ranks when ``distributed`` (see
            :class:`unified.data.sampling.WeightedSampler`).
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    if sampler is None and shuffle and sample_weights is not None:
        sampler = _weighted_sampler(dataset, sample_weights, seed, distributed, drop_last)
    if sampler is None and distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        worker_init_fn=functools.partial(seed_worker, niceness=worker_niceness),
        generator=generator,
        persistent_workers=persistent_workers and num_workers > 0,
        drop_last=drop_last,
        pin_memory=pin_memory,
    )


def _weighted_sampler(
    dataset: Dataset, weights: Sequence[float], seed: int, distributed: bool, drop_last: bool
) -> WeightedSampler:
    """The weighted sampler of this process (its rank's share of every epoch's draws)."""
    if len(weights) != len(dataset):  # type: ignore[arg-type]
        raise ValueError(f"{len(weights)} sampling weights for {len(dataset)} images")  # type: ignore[arg-type]
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    return WeightedSampler(weights, len(weights), seed=seed, rank=rank, world_size=world, drop_last=drop_last)


__all__ = [
    "MultiTaskDataset",
    "batch_to_device",
    "build_dataloader",
    "collate",
    "iterate_loader",
    "seed_worker",
]
