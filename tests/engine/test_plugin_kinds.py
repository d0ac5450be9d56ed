"""A plugin that brings its own kind of label, file format and task (``tests/plugins/landmark_task.py``)
reads, augments and trains through the CLI with ``detect``, with no edit to ``unified/`` or ``tasks/``."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.conftest import REPO, TINY_MODEL
from unified.config import ConfigError
from unified.data import augment as aug
from unified.data.dataset import MultiTaskDataset
from unified.data.dataset_yaml import load_dataset_yaml
from unified.data.kinds.boxes import Boxes
from unified.data.records import ImageRecord
from unified.data.validate import DataError
from unified.registry import import_plugins
from unified.structures import DatasetInfo

PLUGIN = "tests.plugins.landmark_task"
#: Where each landmark sits inside its box, as fractions of the box's width and height.
AT = np.array([0.3, 0.7])


@pytest.fixture(autouse=True)
def plugin():
    import_plugins([PLUGIN])


def landmark_world(root: Path, world: Path) -> Path:
    """The synthetic world's stills as a ``landmark_txt`` part, a landmark inside each box at ``AT``."""
    out = root / "landmarks"
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for split in ("train", "val"):
        coco = json.loads((world.parent / "shapes" / f"{split}.json").read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        spec = yaml.safe_load(world.read_text())
        classes = spec["names"]
        lines = []
        by_image = {img["id"]: img for img in coco["images"]}
        for img in coco["images"]:
            lines.append(str(world.parent / "shapes" / split / img["file_name"]))
        for ann in coco["annotations"]:
            img = by_image[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            px, py = x + AT[0] * w, y + AT[1] * h
            cls = classes.index(names[ann["category_id"]])
            path = world.parent / "shapes" / split / img["file_name"]
            lines.append(f"{path} {cls} {x} {y} {x + w} {y + h} {px:.4f} {py:.4f}")
        (out / f"{split}.txt").write_text("# image class x1 y1 x2 y2 px py\n" + "\n".join(lines) + "\n")
    parts.append(
        {
            "name": "landmarks",
            "format": "landmark_txt",
            "label_kinds": ["boxes", "landmarks"],
            "train": "landmarks/train.txt",
            "val": "landmarks/val.txt",
        }
    )
    data = root / "landmarks.yaml"
    data.write_text(yaml.safe_dump({"names": spec["names"], "parts": parts}, sort_keys=False))
    return data


def test_the_plugin_format_reads_its_kind_and_names_bad_rows(tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    listing = tmp_path / "split.txt"
    listing.write_text("a.png 1 2 3 20 25 10 10\na.png 0 1 1 5 5 9 9\na.png 7 1 1 5 5 2 2\n")
    data = tmp_path / "data.yaml"
    part = {
        "name": "p",
        "format": "landmark_txt",
        "label_kinds": ["boxes", "landmarks"],
        "train": "split.txt",
    }
    data.write_text(yaml.safe_dump({"names": ["x", "y"], "parts": [part]}))
    with pytest.raises(DataError, match=r"split.txt:2: landmark \[9.0, 9.0\] is outside its box") as error:
        load_dataset_yaml(data, "train")
    assert "split.txt:3: class 7 is not in 0..1" in str(error.value)
    records, info = load_dataset_yaml(data, "train", skip_invalid=True)
    assert info.label_kinds == ("boxes", "landmarks")
    np.testing.assert_allclose(records[0].labels["landmarks"], [[10, 10]])
    np.testing.assert_allclose(records[0].labels["boxes"].xyxy, [[2, 3, 20, 25]])


def test_a_part_declares_only_kinds_its_format_has(tmp_path):
    data = tmp_path / "data.yaml"
    part = {"name": "p", "format": "yolo", "label_kinds": ["boxes", "landmarks"], "train": "x"}
    data.write_text(yaml.safe_dump({"names": ["x"], "parts": [part]}))
    with pytest.raises(ConfigError, match=r"parts.0.label_kinds.*the yolo format has no 'landmarks' labels"):
        load_dataset_yaml(data, "train")
    part.update(format="landmark_txt", label_kinds=["landmarks"])
    data.write_text(yaml.safe_dump({"names": ["x"], "parts": [part]}))
    with pytest.raises(ConfigError, match=r"label kind 'landmarks' needs \['boxes'\]"):
        load_dataset_yaml(data, "train")
    part.update(label_kinds=["boxes", "colour"])
    data.write_text(yaml.safe_dump({"names": ["x"], "parts": [part]}))
    with pytest.raises(ConfigError, match=r"label kind 'colour' is not one of .*'landmarks'"):
        load_dataset_yaml(data, "train")


@pytest.mark.parametrize("flip", ["fliplr", "flipud"])
def test_landmarks_keep_their_place_in_their_boxes_through_mosaic_scale_and_flips(tmp_path, flip):
    rng = np.random.default_rng(0)
    records = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (90, 70)).save(path)
        corner = rng.uniform(5, 30, (3, 2))
        xyxy = np.concatenate([corner, corner + rng.uniform(15, 35, (3, 2))], 1)
        points = xyxy[:, :2] + AT * (xyxy[:, 2:] - xyxy[:, :2])
        labels = {
            "boxes": Boxes(xyxy.astype(np.float32), [0, 1, 0]),
            "identities": np.arange(3 * i, 3 * i + 3, dtype=np.int64),
            "landmarks": points,
        }
        records.append(ImageRecord(str(path), 90, 70, labels, image_id=i))
    info = DatasetInfo(["a", "b"], num_identities=18, label_kinds=("boxes", "identities", "landmarks"))
    flips = {"fliplr": float(flip == "fliplr"), "flipud": float(flip == "flipud")}
    hyp = aug.AugmentConfig(scale=0.4, translate=0.2, mosaic=1.0, mixup=0.3, **flips)
    dataset = MultiTaskDataset(records, 64, augment=True, hyp=hyp, info=info)
    expected = AT.copy()
    expected[0 if flip == "fliplr" else 1] = 1 - expected[0 if flip == "fliplr" else 1]
    torch.manual_seed(0)
    checked = 0
    for item in range(30):
        labels = dataset[item % 6]["labels"]
        boxes, points = labels["boxes"][:, 1:].double(), labels["landmarks"].double()
        for i in range(len(boxes)):
            original = (
                records[int(labels["identities"][i]) // 3]
                .labels["boxes"]
                .xyxy[int(labels["identities"][i]) % 3]
            )
            # loading resizes 90 x 70 to 64 x 50; mosaic, scale and translation keep the aspect after that
            aspect = (original[2] - original[0]) / (original[3] - original[1]) * (64 / 90) / (50 / 70)
            if (
                not torch.isfinite(points[i]).all()
                or abs(float(boxes[i, 2] / boxes[i, 3]) / aspect - 1) > 1e-3
            ):
                continue  # cut by a mosaic region or the border: its landmark may be anywhere in it
            top_left = boxes[i, :2] - boxes[i, 2:] / 2
            where = ((points[i] - top_left) / boxes[i, 2:]).numpy()
            np.testing.assert_allclose(where, expected, atol=1e-4)
            checked += 1
    assert checked > 20


@pytest.mark.slow
def test_the_plugin_task_trains_with_detect_through_the_cli(tmp_path, tiny_world):
    data = landmark_world(tmp_path, tiny_world)
    model_path = tmp_path / "model.yaml"
    model_path.write_text(yaml.safe_dump(TINY_MODEL))
    result = subprocess.run(
        [
            sys.executable, "tools/train_multitask.py", "--data", str(data), "--model", str(model_path),
            "--tasks", "detect,landmark", "--epochs", "2", "--batch-size", "4", "--img", "96",
            "--workers", "0", "--device", "cpu", "--project", str(tmp_path / "runs"), "--name", "kinds",
            "--no-progress", f"plugins=[{PLUGIN}]",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "kinds" / "metrics.json").read_text())
    assert set(metrics) == {"detect", "landmark"} and metrics["landmark"]["images"] == 6
    table = result.stdout + result.stderr
    assert "landmark" in table and "error" in table and "images" in table
    assert (tmp_path / "runs" / "kinds" / "weights" / "best.pt").is_file()


@dataclasses.dataclass
class PairOptions:
    """Options of a kind whose two points per object swap under horizontal flips when ``swap`` is true."""

    swap: bool = True


def _pair_kind(monkeypatch):
    """A kind registered for one test only (the registry-generated tests never see it)."""
    from unified.data.kinds import LABEL_KINDS, base
    from unified.data.kinds.base import LabelKind

    class PairsKind(LabelKind):
        name = "pairs"
        per_instance = True
        requires = ("boxes",)
        options_class = PairOptions

        def flip(self, value, size, horizontal, info):
            out = value.copy()
            out[:, :, 0] = size[0] - value[:, :, 0] if horizontal else value[:, :, 0]
            return out[:, ::-1] if horizontal and self.options(info).swap else out

    LABEL_KINDS.names()  # the built-in kinds first
    monkeypatch.setitem(LABEL_KINDS._entries, "pairs", PairsKind)
    monkeypatch.setitem(LABEL_KINDS._origins, "pairs", __name__)
    monkeypatch.setattr(base, "_INSTANCES", dict(base._INSTANCES))
    return base.label_kind("pairs")


def test_a_kind_takes_dataset_options_from_the_yaml_and_reads_them_when_it_flips(tmp_path, monkeypatch):
    kind = _pair_kind(monkeypatch)
    data = tmp_path / "data.yaml"
    part = {"name": "p", "format": "landmark_txt", "label_kinds": ["boxes", "landmarks"], "train": "x.txt"}
    (tmp_path / "x.txt").write_text("")
    spec = {"names": ["x"], "kinds": {"pairs": {"swap": False}}, "parts": [part]}
    data.write_text(yaml.safe_dump(spec))
    with pytest.raises(DataError, match="holds no valid image"):  # the options themselves are fine
        load_dataset_yaml(data, "train")
    spec["kinds"] = {"pairs": {"swp": False}}
    data.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"kinds.pairs.swp.*Did you mean 'swap'"):
        load_dataset_yaml(data, "train")
    spec["kinds"] = {"landmarks": {}}
    data.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="label kind 'landmarks' takes no options"):
        load_dataset_yaml(data, "train")
    points = np.array([[[1.0, 2.0], [5.0, 2.0]]])
    keep = DatasetInfo(["x"], kind_options={"pairs": {"swap": False}})
    swap = DatasetInfo(["x"], kind_options={"pairs": {"swap": True}})
    np.testing.assert_array_equal(kind.flip(points, (10, 10), True, keep), [[[9.0, 2.0], [5.0, 2.0]]])
    np.testing.assert_array_equal(kind.flip(points, (10, 10), True, swap), [[[5.0, 2.0], [9.0, 2.0]]])
