"""The multi-task dataset, ``collate`` and DataLoader helpers.

A sample is a dict: ``image`` uint8 ``(3, H, W)``, ``targets`` float ``(n, 7)`` rows
``[0, class, cx, cy, w, h, identity]`` normalised to the output image, ``image_labels`` float multi-hot
``(L,)``, ``label_mask`` ``{kind: bool}``, ``meta`` dict. :func:`collate` turns samples into the batch
of ``docs/ARCHITECTURE.md`` (images float in ``[0, 1]``, the image index written into ``targets``).
"""

from __future__ import annotations

import functools
import os
import random
import signal
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from unified.data import augment as aug
from unified.data.augment import AugmentConfig, Augmented, Piece
from unified.data.image_io import load_rgb
from unified.data.records import ImageRecord
from unified.data.validate import DataError
from unified.task import LABEL_KINDS, DatasetInfo


class MultiTaskDataset(Dataset):
    """Images with boxes, identities and image-level labels, augmented for training or letterboxed.

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
        self.nc = len(info.class_names)
        self.num_labels = len(info.image_label_names)
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
        """The record's image resized so its longer side is ``img_size``, with boxes in its pixels.

        Returns:
            The piece and the resize gain.
        """
        record = self.records[index]
        image = self._cache[index] if self._cache is not None else self._decode(index)
        h, w = image.shape[:2]
        scale = np.array([w / record.width, h / record.height] * 2)
        piece = Piece(
            image=image,
            boxes=record.boxes.astype(np.float64) * scale,
            classes=record.classes,
            identities=record.identities,
            labels=record.image_labels,
            has_boxes="boxes" in record.label_kinds,
        )
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
        return aug.mosaic(pieces, self.hyp, rng, self.img_size, self.nc)

    def _train_sample(self, index: int, rng: np.random.Generator) -> Augmented:
        if rng.random() < self.hyp.mosaic:
            first = [index, *self._partners(index, 3, rng)]
            sample = self._mosaic(first, rng)
            if rng.random() < self.hyp.mixup:
                second = self._partners(index, 4, rng, exclude=first)
                sample = aug.mixup(sample, self._mosaic(second, rng), rng)
        else:
            sample = aug.single(self.load_piece(index)[0], self.hyp, rng, self.img_size, self.nc)
        return aug.photometric_and_flips(sample, self.hyp, rng)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        if self.augment:
            sample = self._train_sample(index, self._rng())
            ratio, pad = self.img_size / max(record.width, record.height), (0, 0)
        else:
            piece, ratio = self.load_piece(index)
            piece, pad = aug.letterbox(piece, self.img_size)
            sample = Augmented(
                aug.to_tensor(piece.image),
                piece.boxes,
                piece.classes,
                piece.identities,
                set(piece.labels.tolist()),
            )
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
        w, h = sample.size
        image = sample.to_uint8()
        boxes = sample.boxes.astype(np.float64).reshape(-1, 4)
        targets = np.zeros((len(boxes), 7), dtype=np.float32)
        if len(boxes):
            targets[:, 1] = sample.classes
            targets[:, 2] = (boxes[:, 0] + boxes[:, 2]) / 2 / w
            targets[:, 3] = (boxes[:, 1] + boxes[:, 3]) / 2 / h
            targets[:, 4] = (boxes[:, 2] - boxes[:, 0]) / w
            targets[:, 5] = (boxes[:, 3] - boxes[:, 1]) / h
            targets[:, 6] = sample.identities
        labels = torch.zeros(self.num_labels, dtype=torch.float32)
        if sample.labels:
            labels[sorted(sample.labels)] = 1.0
        mask = {kind: kind in record.label_kinds for kind in LABEL_KINDS}
        return {
            "image": image,
            "targets": torch.from_numpy(targets),
            "image_labels": labels,
            "label_mask": mask,
            "meta": meta,
        }


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch (see ``docs/ARCHITECTURE.md``, "Tensors and batches").

    Returns:
        ``images`` float32 ``(B, 3, H, W)`` in ``[0, 1]``; ``targets`` ``(M, 7)`` with the image index in
        column 0; ``image_labels`` ``(B, L)``; ``label_mask`` ``{kind: BoolTensor(B)}``; ``meta`` list.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    images = torch.stack([s["image"] for s in samples])
    images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    targets = []
    for i, s in enumerate(samples):
        t = s["targets"].clone()
        t[:, 0] = i
        targets.append(t)
    return {
        "images": images,
        "targets": torch.cat(targets) if targets else torch.zeros((0, 7)),
        "image_labels": torch.stack([s["image_labels"] for s in samples]),
        "label_mask": {
            kind: torch.tensor([bool(s["label_mask"][kind]) for s in samples], dtype=torch.bool)
            for kind in LABEL_KINDS
        },
        "meta": [s["meta"] for s in samples],
    }


def seed_worker(worker_id: int, niceness: int = 0) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from the seed torch gave it; ignore Ctrl-C; lower
    the worker's CPU priority by ``niceness``.

    A terminal's Ctrl-C signals the whole process group. A worker that died of it first would make the
    main process fail with "DataLoader worker exited unexpectedly" instead of stopping cleanly, so the
    workers leave SIGINT to the main process, which shuts them down.
    """
    if niceness and hasattr(os, "nice"):
        os.nice(niceness)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # discards a Ctrl-C held back by iterate_loader
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


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
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
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


__all__ = ["MultiTaskDataset", "build_dataloader", "collate", "iterate_loader", "seed_worker"]
