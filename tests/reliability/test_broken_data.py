"""Broken data through the real entry point (``tools/train_multitask.py``'s ``main``): each defect is
either converted, skipped and counted (``train.skip_invalid=true``), or exit code 2 with a message that
names the file and line; never a hang, a traceback or a DataLoader worker's traceback."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.reliability.helpers import train_overrides
from tests.tools.helpers import load_tool
from unified.data import load_dataset_yaml, load_rgb
from unified.engine import launch

NAMES = ["ellipse", "rectangle", "triangle"]
W, H = 64, 48
ROW = "0 0.5 0.5 0.25 0.25"


def image(path: Path, mode: str = "RGB", fmt: str | None = None, value: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        array = np.full((H, W), value * 257, dtype=np.uint16)
        Image.fromarray(array).save(path, fmt)
    else:
        colour = {"RGB": (value, 60, 30), "L": value, "RGBA": (value, 60, 30, 10), "CMYK": (0, 50, 100, 0)}
        Image.new(mode, (W, H), colour.get(mode, value)).save(path, fmt)
    return path


def sequence(root: Path, gt_rows: list[str], frames: int = 4) -> Path:
    for f in range(1, frames + 1):
        image(root / "img1" / f"{f:06d}.jpg", value=20 * f)
    (root / "gt").mkdir(parents=True, exist_ok=True)
    (root / "gt" / "gt.txt").write_text("".join(r + "\n" for r in gt_rows))
    (root / "seqinfo.ini").write_text(
        f"[Sequence]\nname={root.name}\nimDir=img1\nframeRate=10\nseqLength={frames}\n"
        f"imWidth={W}\nimHeight={H}\nimExt=.jpg\n"
    )
    return root


def build_dataset(root: Path) -> Path:
    """Four parts (yolo, jde, mot, coco), each with a valid train and val split."""
    for split, count in (("train", 4), ("val", 2)):
        for i in range(count):
            image(root / "yolo" / "images" / split / f"img{i}.jpg", value=30 * i)
            (root / "yolo" / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "yolo" / "labels" / split / f"img{i}.txt").write_text(ROW + "\n")
            image(root / "jde" / "images" / split / f"img{i}.jpg", value=30 * i + 5)
            (root / "jde" / "labels_with_ids" / split).mkdir(parents=True, exist_ok=True)
            (root / "jde" / "labels_with_ids" / split / f"img{i}.txt").write_text(
                f"0 {i} 0.5 0.5 0.25 0.25\n"
            )
            image(root / "coco" / split / f"img{i}.jpg", value=30 * i + 9)
        rows = [f"{f},{k},{8 * k},{4 + f},16,12,1,1,1" for f in range(1, 5) for k in (1, 2)]
        for name in ("SEQ-A", "SEQ-B") if split == "train" else ("SEQ-A",):
            sequence(root / "mot" / split / name, rows)
        coco = {
            "images": [{"id": i, "file_name": f"img{i}.jpg", "width": W, "height": H} for i in range(count)],
            "annotations": [
                {"id": i, "image_id": i, "bbox": [10, 10, 20, 12], "category_id": 1, "track_id": i}
                for i in range(count)
            ],
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(NAMES)],
        }
        (root / "coco" / f"{split}.json").write_text(json.dumps(coco))
    spec = {
        "names": NAMES,
        "parts": [
            {"name": "y", "format": "yolo", "train": "yolo/images/train", "val": "yolo/images/val"},
            {
                "name": "j",
                "format": "jde",
                "label_kinds": ["boxes", "identities"],
                "train": "jde/images/train",
                "val": "jde/images/val",
            },
            {
                "name": "m",
                "format": "mot",
                "label_kinds": ["boxes", "identities"],
                "train": "mot/train",
                "val": "mot/val",
            },
            {
                "name": "c",
                "format": "coco",
                "label_kinds": ["boxes", "identities"],
                "train": {"annotations": "coco/train.json", "images": "coco/train"},
                "val": {"annotations": "coco/val.json", "images": "coco/val"},
            },
        ],
    }
    (root / "dataset.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root / "dataset.yaml"


def add_label(root: Path, part: str, row: str) -> None:
    folder = "labels_with_ids" if part == "jde" else "labels"
    path = root / part / folder / "train" / "img0.txt"
    path.write_text(path.read_text() + row + "\n")  # line 2


def add_gt_row(root: Path, row: str) -> None:
    gt = root / "mot" / "train" / "SEQ-A" / "gt" / "gt.txt"
    gt.write_text(gt.read_text() + row + "\n")  # line 9


def edit_coco(root: Path, edit: Callable[[dict], None]) -> None:
    path = root / "coco" / "train.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def truncated(path: Path, fmt: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(buffer, fmt)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


TRAIN_IMAGES = "yolo/images/train"
# (defect id, how to make it, what the error names)
DEFECTS: list[tuple[str, Callable[[Path], None], str]] = [
    ("zero-byte", lambda r: (r / TRAIN_IMAGES / "empty.jpg").write_bytes(b""), "empty.jpg is an empty file"),
    ("truncated-jpeg", lambda r: truncated(r / TRAIN_IMAGES / "cut.jpg", "JPEG"), "cut.jpg cannot be read"),
    ("truncated-png", lambda r: truncated(r / TRAIN_IMAGES / "cut.png", "PNG"), "cut.png cannot be read"),
    (
        "not-an-image",
        lambda r: (r / TRAIN_IMAGES / "notes.png").write_text("hello"),
        "notes.png cannot be read",
    ),
    ("nan-box", lambda r: add_label(r, "yolo", "0 nan 0.5 0.2 0.2"), "img0.txt:2: box [nan"),
    (
        "negative-size",
        lambda r: add_label(r, "yolo", "0 0.5 0.5 -0.2 0.2"),
        "img0.txt:2: box has non-positive size",
    ),
    (
        "outside",
        lambda r: add_label(r, "yolo", "0 1.6 0.5 0.2 0.2"),
        "img0.txt:2: box [96, 19.2, 108.8, 28.8] (xyxy) leaves the 64x48 image",
    ),
    (
        "unknown-class",
        lambda r: add_label(r, "yolo", "7 0.5 0.5 0.2 0.2"),
        "img0.txt:2: class 7 is not in 0..2",
    ),
    ("missing-columns", lambda r: add_label(r, "yolo", "0 0.5 0.5"), "img0.txt:2: expected 5 values"),
    (
        "binary-labels",
        lambda r: (r / "yolo/labels/train/img1.txt").write_bytes(b"\xff\xfe\x00\x81"),
        "img1.txt",
    ),
    ("bad-identity", lambda r: add_label(r, "jde", "0 -5 0.5 0.5 0.2 0.2"), "img0.txt:2: identity -5 is not"),
    ("mot-columns", lambda r: add_gt_row(r, "2,3,10,10"), "gt.txt:9: 4 columns"),
    ("mot-identity", lambda r: add_gt_row(r, "2,-3,10,10,8,8,1,1,1"), "gt.txt:9: id -3 is not an integer"),
    ("mot-binary", lambda r: (r / "mot/train/SEQ-A/gt/gt.txt").write_bytes(b"1,1,\xff\xfe"), "gt.txt"),
    (
        "coco-unknown-category",
        lambda r: edit_coco(r, lambda d: d["annotations"][0].update(category_id=9)),
        "train.json: annotation id 0: category_id 9 is not in 'categories'",
    ),
    (
        "coco-bad-track",
        lambda r: edit_coco(r, lambda d: d["annotations"][1].update(track_id="x")),
        "train.json: annotation id 1: track_id 'x' is not an integer",
    ),
    (
        "coco-nan-box",
        lambda r: edit_coco(r, lambda d: d["annotations"][2].update(bbox=[float("nan"), 1, 2, 3])),
        "train.json: annotation id 2: box [nan",
    ),
]


def cli(capsys, *args: str) -> tuple[int, str]:
    code = load_tool("train_multitask").main(["--no-progress", *args])
    return code, capsys.readouterr().err


def base_args(tmp_path: Path, model_yaml: Path, data: Path, **extra) -> list[str]:
    extra = {"train.epochs": 1, "eval.interval": 0, "plugins": "[]", **extra}
    return train_overrides(model_yaml, data, tmp_path / "runs", "run", **extra)


@pytest.mark.parametrize(("defect", "make", "expected"), DEFECTS, ids=[d[0] for d in DEFECTS])
def test_each_defect_is_a_clear_error_naming_file_and_line(
    tmp_path, capsys, model_yaml, defect, make, expected
):
    data = build_dataset(tmp_path / "data")
    make(tmp_path / "data")
    code, err = cli(capsys, *base_args(tmp_path, model_yaml, data))
    assert code == 2, err
    assert err.startswith("error: ") and expected in err, err
    assert "train.skip_invalid=true" in err and "Traceback" not in err


def test_with_skip_invalid_every_defect_is_skipped_counted_and_training_runs(
    tmp_path, capsys, caplog, model_yaml
):
    data = build_dataset(tmp_path / "data")
    for _, make, _ in DEFECTS:
        make(tmp_path / "data")
    with caplog.at_level(logging.WARNING, logger="unified.data.validate"):
        code, err = cli(capsys, *base_args(tmp_path, model_yaml, data, **{"train.skip_invalid": "true"}))
    assert code == 0, err
    report = " ".join(r.getMessage() for r in caplog.records)
    for kind in ("image_corrupt", "box_not_finite", "box_size", "box_outside", "unknown_class", "bad_row"):
        assert kind in report, report
    assert "invalid_identity" in report and "bad_file" in report, report
    assert (tmp_path / "runs" / "run" / "weights" / "last.pt").is_file()


def test_grayscale_rgba_16bit_palette_and_cmyk_images_are_converted(tmp_path, capsys, model_yaml):
    data = build_dataset(tmp_path / "data")
    folder = tmp_path / "data" / TRAIN_IMAGES
    made = [
        image(folder / "gray.png", "L", value=100),
        image(folder / "rgba.png", "RGBA", value=100),
        image(folder / "deep.png", "I;16", value=100),
        image(folder / "palette.png", "P", value=3),
        image(folder / "cmyk.jpg", "CMYK"),
    ]
    for path in made:
        rgb = np.asarray(load_rgb(path))
        assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8, path
    assert np.asarray(load_rgb(made[0]))[0, 0].tolist() == [100, 100, 100]
    assert np.asarray(load_rgb(made[1]))[0, 0].tolist() == [100, 60, 30]  # alpha dropped, not blended
    assert np.asarray(load_rgb(made[2]))[0, 0].tolist() == [100, 100, 100]  # 16-bit rescaled, not clipped
    code, err = cli(capsys, *base_args(tmp_path, model_yaml, data))
    assert code == 0, err


def test_mot_rows_in_any_order_give_the_same_records(tmp_path):
    data = build_dataset(tmp_path / "data")
    ordered, _ = load_dataset_yaml(data, "train")
    gt = tmp_path / "data" / "mot" / "train" / "SEQ-A" / "gt" / "gt.txt"
    rows = gt.read_text().splitlines()
    order = np.random.default_rng(0).permutation(len(rows))
    assert sorted(order.tolist()) != order.tolist()
    gt.write_text("\n".join(rows[i] for i in order) + "\n")
    shuffled, _ = load_dataset_yaml(data, "train")
    assert [r.path for r in ordered] == [r.path for r in shuffled]
    for a, b in zip(ordered, shuffled):
        box_a, box_b = a.labels["boxes"].xyxy, b.labels["boxes"].xyxy
        np.testing.assert_array_equal(box_a[np.lexsort(box_a.T)], box_b[np.lexsort(box_b.T)])


@pytest.mark.parametrize("skip", [False, True])
def test_an_empty_split_is_an_error_even_when_skipping(tmp_path, capsys, model_yaml, skip):
    data = build_dataset(tmp_path / "data")
    spec = yaml.safe_load(data.read_text())
    spec["parts"] = spec["parts"][:1]
    for path in (tmp_path / "data" / "yolo" / "images" / "val").iterdir():
        path.write_bytes(b"")  # every val image broken: nothing valid is left
    data.write_text(yaml.safe_dump(spec))
    code, err = cli(
        capsys, *base_args(tmp_path, model_yaml, data, **{"train.skip_invalid": str(skip).lower()})
    )
    assert code == 2 and "split 'val' holds no valid image" in err and "Traceback" not in err, err


def damage_after_validation(monkeypatch: pytest.MonkeyPatch, victim: Path, how: str) -> None:
    """Damage an image right after the training split was validated, before any worker reads it."""
    real = launch.load_dataset_yaml

    def load_then_damage(*args, **kwargs):
        result = real(*args, **kwargs)
        if args[1] == "train":
            if how == "deleted":
                victim.unlink()
            elif how == "garbage":
                victim.write_bytes(b"this is not an image any more")
            elif how == "truncated":
                victim.write_bytes(victim.read_bytes()[:200])
            else:
                Image.new("RGB", (W + 16, H), (1, 2, 3)).save(victim)
        return result

    monkeypatch.setattr(launch, "load_dataset_yaml", load_then_damage)


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("how", ["deleted", "garbage", "truncated", "resized"])
def test_an_image_damaged_after_validation_is_a_clear_error_from_any_worker(
    tmp_path, capsys, monkeypatch, model_yaml, how, workers
):
    data = build_dataset(tmp_path / "data")
    victim = tmp_path / "data" / TRAIN_IMAGES / "img2.jpg"
    damage_after_validation(monkeypatch, victim, how)
    args = base_args(tmp_path, model_yaml, data, **{"train.workers": workers, "augment.mosaic": 0.0})
    code, err = cli(capsys, *args)
    assert code == 2, err
    assert err.startswith(f"error: {victim}") or err.startswith(f"error: image {victim}"), err
    assert "Traceback" not in err and err.count("\n") <= 2, err
    if workers:
        assert "(in DataLoader worker process 0)" in err, err
