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
    table = torch.tensor(rows, dtype=torch.float32).reshape(-1, 7)
    plugin_kinds = plugin_kind_entries(info, table[:, :6], batch, size)
    for name in plugin_kinds:
        masks.setdefault(name, torch.ones(batch, dtype=torch.bool))
    return {
        "images": torch.rand(batch, 3, size, size, generator=g),
        "boxes": table[:, :6],
        "identities": table[:, 6].long(),
        "image_labels": labels,
        **plugin_kinds,
        "label_mask": masks,
        "meta": meta,
    }


def plugin_kind_entries(info: DatasetInfo, boxes: torch.Tensor, batch: int, size: int) -> dict:
    """Batch entries of every registered kind beyond the built-in three, from each kind's own example
    values for these boxes, put through its ``to_sample`` and ``collate`` as the data pipeline does."""
    import numpy as np

    from unified.data.kinds import LABEL_KINDS, label_kind
    from unified.data.kinds.boxes import Boxes

    rng = np.random.default_rng(0)
    entries = {}
    for name in LABEL_KINDS.names():
        if name in ("boxes", "identities", "image_labels"):
            continue
        kind = label_kind(name)
        values = []
        for i in range(batch):
            rows = boxes[boxes[:, 0] == i].numpy().astype(np.float64)
            centre, wh = rows[:, 2:4] * size, rows[:, 4:6] * size
            labels = {"boxes": Boxes(np.concatenate([centre - wh / 2, centre + wh / 2], 1), rows[:, 1])}
            value = kind.example(labels, (size, size), info, rng)
            values.append(kind.to_sample(value, len(rows), (size, size), info))
        entries[name] = kind.collate(values)
    return entries


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


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``cuda`` are skipped on a machine without a GPU (``tools/gpu_check.sh`` runs them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run tools/gpu_check.sh on a GPU machine)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
