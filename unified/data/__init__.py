"""Data: the synthetic world, format readers with validation, augmentation, datasets and collate.

Typical use::

    records, info = load_dataset_yaml("data/synthetic/dataset.yaml", "train")
    dataset = MultiTaskDataset(records, 256, augment=True, info=info)
    loader = build_dataloader(dataset, 16, shuffle=True, num_workers=2, seed=0)

Names are imported on first use, so that ``unified.data.synthetic`` (numpy and PIL only) does not pull
in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AugmentConfig": "unified.data.augment",
    "MultiTaskDataset": "unified.data.dataset",
    "build_dataloader": "unified.data.dataset",
    "collate": "unified.data.dataset",
    "seed_worker": "unified.data.dataset",
    "DatasetSplit": "unified.data.dataset_yaml",
    "load_dataset_yaml": "unified.data.dataset_yaml",
    "read_dataset_spec": "unified.data.dataset_yaml",
    "load_rgb": "unified.data.image_io",
    "to_rgb8": "unified.data.image_io",
    "IdentityMap": "unified.data.readers",
    "read_coco": "unified.data.readers",
    "read_jde": "unified.data.readers",
    "read_mot": "unified.data.mot",
    "read_yolo": "unified.data.readers",
    "ImageRecord": "unified.data.records",
    "make_synthetic": "unified.data.synthetic",
    "DataError": "unified.data.validate",
    "ProblemLog": "unified.data.validate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'unified.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
