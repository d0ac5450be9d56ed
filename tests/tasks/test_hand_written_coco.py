"""A COCO JSON written by hand, as a user would: polygons, compressed and uncompressed RLE, a crowd region and
keypoints with all three visibility values, read exactly and trained end to end by detect + segment + pose."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import REPO, TINY_MODEL
from unified.data import MultiTaskDataset, load_dataset_yaml

# Two 64x48 images. Image 1: a polygon square (class a) with keypoints of visibility 2, 1 and 0, an
# uncompressed-RLE rectangle (class b) without keypoints, and a crowd region; image 2: a compressed-RLE
# square (class a) with three visible keypoints. Uncompressed RLE: column-major runs starting with zeros;
# rows 4..11 of columns 40..49 are 40 columns of zeros and 4 more, then (8 ones, 40 zeros) per column.
RECT_RUNS = [40 * 48 + 4] + [8, 40] * 9 + [8, 36 + 48 * 14]
# The crowd region: rows 30..39 of columns 30..49.
CROWD_RUNS = [30 * 48 + 30] + [10, 38] * 19 + [10, 8 + 48 * 14]
HAND_WRITTEN = {
    "images": [
        {"id": 7, "file_name": "one.png", "width": 64, "height": 48},
        {"id": 9, "file_name": "two.png", "width": 64, "height": 48},
    ],
    "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
    "annotations": [
        {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": [8, 8, 16, 16], "area": 256,
         "segmentation": [[8, 8, 24, 8, 24, 24, 8, 24]],
         "keypoints": [8.5, 8.5, 2, 23.5, 8.5, 1, 0, 0, 0], "num_keypoints": 2},
        {"id": 2, "image_id": 7, "category_id": 3, "iscrowd": 0, "bbox": [40, 4, 10, 8], "area": 80,
         "segmentation": {"size": [48, 64], "counts": RECT_RUNS},
         "keypoints": [0, 0, 0, 0, 0, 0, 0, 0, 0], "num_keypoints": 0},
        {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 1, "bbox": [30, 30, 20, 10], "area": 200,
         "segmentation": {"size": [48, 64], "counts": CROWD_RUNS}},
        {"id": 4, "image_id": 9, "category_id": 1, "iscrowd": 0, "bbox": [16, 16, 16, 16], "area": 256,
         "segmentation": {"size": [48, 64], "counts": "`h0`0P100000000000000000000000000000`_1"},
         "keypoints": [16.5, 16.5, 2, 31.5, 16.5, 2, 31.5, 31.5, 2], "num_keypoints": 3},
    ],
}  # fmt: skip


def write_dataset(root: Path, extra_kinds: list[str] = ()) -> Path:
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("one.png", "two.png"):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / name)
    (root / "ann.json").write_text(json.dumps(HAND_WRITTEN))
    split = {"annotations": "ann.json", "images": "images"}
    spec = {
        "names": ["a", "b"],
        "parts": [
            {"name": "hand", "format": "coco", "label_kinds": ["boxes", "masks", "keypoints", *extra_kinds],
             "train": split, "val": split},
        ],
        "kinds": {"keypoints": {"kpt_shape": [3, 3], "flip_idx": [0, 1, 2]}},
    }  # fmt: skip
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_the_hand_written_file_reads_exactly(tmp_path):
    from pycocotools import mask as coco_mask

    records, info = load_dataset_yaml(write_dataset(tmp_path), "train")
    one, two = sorted(records, key=lambda r: r.image_id)
    assert one.labels["boxes"].classes.tolist() == [0, 1]  # category ids 1, 3 -> classes 0, 1; crowd left out
    np.testing.assert_array_equal(one.labels["keypoints"][0, :, 2], [2, 1, 0])
    np.testing.assert_array_equal(one.labels["keypoints"][1, :, 2], [0, 0, 0])
    for ann, (rows, cols) in zip(
        HAND_WRITTEN["annotations"][1:], ((slice(4, 12), slice(40, 50)), (slice(30, 40), slice(30, 50)))
    ):  # the hand-made runs are the rectangles they claim to be
        want = np.zeros((48, 64), np.uint8)
        want[rows, cols] = 1
        got = coco_mask.decode(coco_mask.frPyObjects(ann["segmentation"], 48, 64))
        np.testing.assert_array_equal(got, want)
    # The polygon square x, y 8..24 of image one, letterboxed to 64x64 (8 rows of padding on top), is
    # cells 2..5 x 4..7 of the stride-4 sample mask.
    sample = MultiTaskDataset(records, 64, augment=False, info=info)[records.index(one)]
    square = sample["labels"]["masks"][0].numpy()
    assert square[4:8, 2:6].all() and square.sum() == 16
    assert len(two.labels["boxes"].classes) == 1 and (two.labels["keypoints"][0, :, 2] == 2).all()
    assert set(info.label_kinds) == {"boxes", "masks", "keypoints"}


@pytest.mark.slow
def test_the_hand_written_file_trains_detect_segment_and_pose(tmp_path):
    data = write_dataset(tmp_path / "data", extra_kinds=["ignore"])  # the crowd region kept, as COCO does
    model = tmp_path / "model.yaml"
    model.write_text(yaml.safe_dump(TINY_MODEL))
    result = subprocess.run(
        [
            sys.executable, "tools/train_multitask.py", "--data", str(data), "--model", str(model),
            "--tasks", "detect,segment,pose", "--epochs", "2", "--batch-size", "2", "--img", "64",
            "--workers", "0", "--device", "cpu", "--project", str(tmp_path / "runs"), "--name", "hand",
            "--no-progress",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "hand" / "metrics.json").read_text())
    assert set(metrics) == {"detect", "segment", "pose"}
    assert set(metrics["segment"]) == {"AP", "AP50", "AP75"} and set(metrics["pose"]) == {"AP", "AP50"}
