"""Shared helpers of the tool tests: load a tool script as a module, write a small multi-task checkpoint."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from PIL import Image

from unified.checkpoint import FORMAT, VERSION, save_atomic
from unified.model import build_model, model_meta
from unified.task import DatasetInfo

REPO = Path(__file__).resolve().parents[2]

TINY = {
    "nc": 3,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]],
    "backbone": [
        [-1, 1, "Conv", [8, 3, 2]],
        [-1, 1, "Conv", [16, 3, 2]],
        [-1, 1, "Conv", [16, 3, 2]],
        [-1, 1, "Conv", [24, 3, 2]],
    ],
    "outputs": [2, 3],
}
INFO = DatasetInfo(
    class_names=["car", "person", "dog"],
    image_label_names=["car", "person", "dog", "night"],
    num_identities=7,
    label_kinds=("boxes", "image_labels", "identities"),
)


def load_tool(name: str) -> ModuleType:
    """A script of tools/ as a module (tools/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_tiny_checkpoint(
    path: Path, tasks: tuple[str, ...] = ("detect", "jdc", "jde"), seed: int = 0
) -> Path:
    """A freshly initialised tiny model in the training checkpoint layout (objectness and class logits biased
    up so that an untrained model still finds boxes)."""
    torch.manual_seed(seed)
    model = build_model(
        TINY, tasks=tasks, info=INFO, task_options={"jde": {"embedding_dim": 16}} if "jde" in tasks else None
    )
    with torch.no_grad():
        for conv in model.heads["detect"].m:
            conv.bias.view(3, -1)[:, 4:] += 6.0
    meta = model_meta(model, {"jde": {"embedding_dim": 16}} if "jde" in tasks else {}, {})
    return save_atomic(
        {"format": FORMAT, "version": VERSION, **meta, "model": model.state_dict(), "ema": None}, path
    )


def write_images(folder: Path) -> list[Path]:
    """Two noise images of different sizes and aspect ratios."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = [folder / "wide.jpg", folder / "tall.png"]
    Image.fromarray(rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)).save(paths[0])
    Image.fromarray(rng.integers(0, 255, (140, 70, 3), dtype=np.uint8)).save(paths[1])
    return paths
