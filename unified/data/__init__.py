"""Data: the synthetic world, format readers with validation, augmentation, datasets and collate.

Typical use::

    records, info = load_dataset_yaml("data/synthetic/dataset.yaml", "train")
    dataset = MultiTaskDataset(records, 256, augment=True, info=info)
    loader = build_dataloader(dataset, 16, shuffle=True, num_workers=2, seed=0)
"""

from unified.data.augment import AugmentConfig
from unified.data.dataset import MultiTaskDataset, build_dataloader, collate, seed_worker
from unified.data.dataset_yaml import load_dataset_yaml, read_dataset_spec
from unified.data.image_io import load_rgb, to_rgb8
from unified.data.readers import IdentityMap, read_coco, read_jde, read_mot, read_yolo
from unified.data.records import ImageRecord
from unified.data.synthetic import make_synthetic
from unified.data.validate import DataError, ProblemLog

__all__ = [
    "AugmentConfig",
    "DataError",
    "IdentityMap",
    "ImageRecord",
    "MultiTaskDataset",
    "ProblemLog",
    "build_dataloader",
    "collate",
    "load_dataset_yaml",
    "load_rgb",
    "make_synthetic",
    "read_coco",
    "read_dataset_spec",
    "read_jde",
    "read_mot",
    "read_yolo",
    "seed_worker",
    "to_rgb8",
]
