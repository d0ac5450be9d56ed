"""Shared fixtures: a tiny model YAML, a tiny synthetic world, and hand-made batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unified.task import DatasetInfo

REPO = Path(__file__).resolve().parents[1]

TINY_MODEL = {
    "nc": 5,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]],
    "backbone": [
        [-1, 1, "Conv", [16, 3, 2]],
        [-1, 1, "Conv", [32, 3, 2]],
        [-1, 1, "Conv", [32, 3, 2]],
        [-1, 1, "Conv", [48, 3, 2]],
    ],
    "outputs": [2, 3],
}


@pytest.fixture(scope="session")
def tiny_model_cfg() -> dict:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in TINY_MODEL.items()}


@pytest.fixture(scope="session")
def tiny_info() -> DatasetInfo:
    return DatasetInfo(
        class_names=["a", "b", "c", "d", "e"],
        image_label_names=["a", "b", "c", "d", "e", "scene"],
        num_identities=12,
        label_kinds=("boxes", "image_labels", "identities"),
    )


def make_batch(info: DatasetInfo, batch: int = 4, size: int = 64, seed: int = 0, label_masks=None) -> dict:
    """A hand-made batch in the contract of docs/ARCHITECTURE.md (boxes normalised, identities, labels)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(batch):
        for k in range(3):
            cx, cy = torch.rand(2, generator=g) * 0.6 + 0.2
            w, h = torch.rand(2, generator=g) * 0.3 + 0.1
            rows.append([i, (i + k) % info.nc, cx, cy, w, h, (i * 3 + k) % info.num_identities])
    labels = torch.zeros(batch, len(info.image_label_names))
    for row in rows:
        labels[int(row[0]), int(row[1])] = 1
    labels[::2, -1] = 1
    masks = label_masks or {
        k: torch.ones(batch, dtype=torch.bool) for k in ("boxes", "image_labels", "identities")
    }
    meta = [
        {
            "image_id": i,
            "path": f"img{i}.png",
            "orig_shape": (size, size),
            "ratio": 1.0,
            "pad": (0.0, 0.0),
            "sequence": "seq" if i < batch // 2 else None,
            "frame": i + 1 if i < batch // 2 else None,
        }
        for i in range(batch)
    ]
    return {
        "images": torch.rand(batch, 3, size, size, generator=g),
        "targets": torch.tensor(rows, dtype=torch.float32),
        "image_labels": labels,
        "label_mask": masks,
        "meta": meta,
    }


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A tiny synthetic world (a few seconds to make), shared by the end-to-end tests."""
    from unified.data.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("world")
    return make_synthetic(
        out, images=16, val_images=6, sequences=2, val_sequences=1, frames=6, size=96, seed=3
    )


@pytest.fixture(autouse=True, scope="session")
def _one_thread_per_worker():
    """pytest-xdist runs one worker per core: more torch threads per worker only oversubscribe the cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
