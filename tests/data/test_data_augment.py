"""Augmentation: boxes stay exact (drawn, transformed, read back from the pixels), labels stay consistent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.data.helpers import coloured_rectangles
from unified.data import AugmentConfig, ImageRecord, MultiTaskDataset
from unified.data import augment as aug
from unified.data.kinds.boxes import Boxes
from unified.task import DatasetInfo

# Saturated colours far apart, so that bilinear blends at edges never pass for another colour.
PALETTE = [
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (255, 0, 255),
    (0, 255, 255),
    (255, 255, 255),
    (255, 128, 0),
    (128, 0, 255),
    (0, 128, 255),
    (255, 0, 128),
    (128, 255, 0),
]
INFO = DatasetInfo(class_names=["a", "b", "c"], image_label_names=["a", "b", "c", "night", "striped"])
NO_COLOUR = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}
SHIFT16 = np.array([[0.0, 0.0, 16.0], [0.0, 0.0, 16.0], [0.0, 0.0, 0.0]])


def rect_records(tmp_path: Path, size: int = 96, count: int = 4) -> list[ImageRecord]:
    """Images with three non-overlapping rectangles each, one palette colour (= identity) per rectangle."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        rects = []
        while len(rects) < 3:
            w, h = rng.integers(12, 36, 2)
            x1, y1 = rng.integers(4, size - 4 - w), rng.integers(4, size - 4 - h)
            cand = (int(x1), int(y1), int(x1 + w), int(y1 + h))
            if all(
                cand[2] + 3 < r[0] or r[2] + 3 < cand[0] or cand[3] + 3 < r[1] or r[3] + 3 < cand[1]
                for r in rects
            ):
                rects.append(cand)
        ids = [3 * i + k for k in range(3)]
        image = coloured_rectangles(size, rects, [PALETTE[j % len(PALETTE)] for j in ids])
        path = tmp_path / f"img{i}.png"
        Image.fromarray(image).save(path)
        records.append(
            ImageRecord(
                path=str(path),
                width=size,
                height=size,
                labels={
                    "boxes": Boxes(np.array(rects, np.float32), [j % 3 for j in ids]),
                    "identities": np.array(ids, dtype=np.int64),
                    "image_labels": np.array(
                        sorted({j % 3 for j in ids}) + ([3] if i == 0 else []), np.int64
                    ),
                },
                image_id=i,
            )
        )
    return records


def boxes_from_pixels(image: np.ndarray, colour: tuple[int, int, int], tol: int = 40) -> np.ndarray | None:
    """Enclosing xyxy box of the pixels of one colour (exclusive ends), or None."""
    close = (np.abs(image.astype(int) - np.array(colour)) <= tol).all(-1)
    if close.sum() < 3:
        return None
    ys, xs = np.nonzero(close)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)


def targets_to_xyxy(rows: torch.Tensor, size: int) -> np.ndarray:
    """A sample's ``boxes`` rows ``[class, cx, cy, w, h]`` as xyxy pixels."""
    t = rows.numpy().astype(float)
    cx, cy, w, h = t[:, 1] * size, t[:, 2] * size, t[:, 3] * size, t[:, 4] * size
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


@pytest.mark.parametrize(
    "geometry",
    [
        {"degrees": 0.0, "shear": 0.0, "perspective": 0.0, "mosaic": 1.0},
        {"degrees": 12.0, "shear": 4.0, "perspective": 0.0, "mosaic": 1.0},
        {"degrees": 5.0, "shear": 0.0, "perspective": 0.0005, "mosaic": 1.0},
        {"degrees": 8.0, "shear": 2.0, "perspective": 0.0, "mosaic": 0.0},
    ],
)
def test_boxes_match_the_pixels_after_augmentation(tmp_path, geometry):
    size = 96
    records = rect_records(tmp_path, size)
    hyp = AugmentConfig(**NO_COLOUR, translate=0.2, scale=0.4, flipud=0.5, fliplr=0.5, **geometry)
    dataset = MultiTaskDataset(records, size, augment=True, hyp=hyp, info=INFO)
    torch.manual_seed(0)
    checked = 0
    for item in range(24):
        sample = dataset[item % 4]
        image = sample["image"].permute(1, 2, 0).numpy()
        boxes = targets_to_xyxy(sample["labels"]["boxes"], size)
        for box, identity in zip(boxes, sample["labels"]["identities"].tolist()):
            if min(box[2] - box[0], box[3] - box[1]) < 6:
                continue  # a sliver cut by the border: its rotated tip is thinner than a pixel
            seen = boxes_from_pixels(image, PALETTE[identity])
            assert seen is not None, f"identity {identity} has a box but no pixels"
            np.testing.assert_allclose(box, seen, atol=2.0, err_msg=f"item {item}, identity {identity}")
            checked += 1
    assert checked > 30


def test_mosaic_keeps_identities_classes_and_image_labels_consistent(tmp_path):
    records = rect_records(tmp_path, count=8)
    class_of = {
        int(i): int(c) for r in records for i, c in zip(r.labels["identities"], r.labels["boxes"].classes)
    }
    hyp = AugmentConfig(translate=0.3, scale=0.5, degrees=5.0, mosaic=1.0, mixup=0.3)
    dataset = MultiTaskDataset(records, 96, augment=True, hyp=hyp, info=INFO)
    torch.manual_seed(1)
    for item in range(40):
        sample = dataset[item % 8]
        targets = sample["labels"]["boxes"]
        classes = targets[:, 0].long().tolist()
        identities = sample["labels"]["identities"].tolist()
        assert all(class_of[i] == c for i, c in zip(identities, classes))
        labels = set(torch.nonzero(sample["labels"]["image_labels"]).flatten().tolist())
        # mosaic (+ mixup) of 8 distinct images: an identity appears at most once
        assert len(set(identities)) == len(identities)
        # class labels are exactly the classes of the boxes that survived; scene labels come from image 0
        assert {lab for lab in labels if lab < 3} == set(classes)
        assert labels - {0, 1, 2} <= {3}
        assert ((targets[:, 1:5] >= 0) & (targets[:, 1:5] <= 1)).all()


def test_mosaic_partners_share_label_kinds(tmp_path):
    records = rect_records(tmp_path)
    for record in records[2:]:  # two images without identities nor image labels
        del record.labels["identities"], record.labels["image_labels"]
    dataset = MultiTaskDataset(records, 96, augment=True, hyp=AugmentConfig(mosaic=1.0), info=INFO)
    torch.manual_seed(2)
    for item in range(24):
        sample = dataset[item % 4]
        ids = sample["labels"]["identities"]
        if item % 4 < 2:
            assert (ids >= 0).all() and sample["label_mask"]["identities"]
        else:
            assert (ids == -1).all() and not sample["label_mask"]["identities"]
            assert sample["labels"]["image_labels"].sum() == 0 and not sample["label_mask"]["image_labels"]


def _piece(x1: int, y1: int, cls: int, labels: list[int], size: int = 32) -> aug.Piece:
    image = coloured_rectangles(size, [(x1, y1, x1 + 10, y1 + 10)], [(255, 0, 0)])
    box = Boxes(np.array([[x1, y1, x1 + 10, y1 + 10]], float), [cls])
    return aug.Piece(image, {"boxes": box, "image_labels": np.array(labels, np.int64)})


def test_labels_of_sources_that_leave_the_output_are_dropped():
    # A 64 canvas, output 32 without scaling or translation: only the centre 16..48 is visible.
    hidden = _piece(
        2, 2, 0, [0, 3]
    )  # lies at 0..32: its box (2..12) is cut away, it covers 1/4 of the output
    shown = _piece(10, 10, 1, [1, 4])
    canvas = np.zeros((64, 64, 3), np.uint8)
    canvas[:32, :32] = hidden.image
    canvas[16:48, 16:48] = shown.image
    placed = [
        hidden,
        aug.Piece(shown.image, aug.transform_labels(shown.labels, np.diag([1.0, 1.0, 1.0]) + SHIFT16)),
    ]
    cfg = AugmentConfig(translate=0.0, scale=0.0)
    rng = np.random.default_rng(0)
    regions = np.array([[0, 0, 16, 16], [16, 16, 48, 48]], float)  # what each source shows on the canvas
    out = aug.warp_pieces(canvas, placed, regions, cfg, rng, 32, INFO)
    np.testing.assert_allclose(out.labels["boxes"].xyxy, [[10, 10, 20, 20]])
    # hidden's region falls outside: neither its class nor its scene label
    assert out.labels["image_labels"].tolist() == [1, 4]
    regions[0] = [0, 0, 28, 28]  # now it covers 12x12 of the 32x32 output (> 10 %): its scene label holds
    out = aug.warp_pieces(canvas, placed, regions, cfg, rng, 32, INFO)
    assert out.labels["image_labels"].tolist() == [1, 3, 4]  # its box is still cut, so its class label is not


def test_validation_letterbox_maps_back_to_the_original(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (100, 50), (9, 9, 9)).save(path)
    box = [10.0, 20.0, 60.0, 45.0]
    record = ImageRecord(str(path), 100, 50, {"boxes": Boxes(np.array([box], np.float32), [2])}, image_id=7)
    sample = MultiTaskDataset([record], 64, augment=False, info=INFO)[0]
    meta = sample["meta"]
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.uint8
    assert meta["orig_shape"] == (50, 100) and meta["pad"] == (0, 16) and meta["ratio"] == pytest.approx(0.64)
    xyxy = targets_to_xyxy(sample["labels"]["boxes"], 64)[0]
    back = (xyxy - np.array(meta["pad"] * 2)) / meta["ratio"]
    np.testing.assert_allclose(back, box, atol=0.5)
    assert (sample["image"][:, :16] == aug.PAD_VALUE).all()


def test_hsv_matrix_properties():
    np.testing.assert_allclose(aug.hsv_matrix(0.0, 1.0, 1.0), np.eye(3), atol=1e-12)
    grey = np.array([100.0, 100.0, 100.0])
    for hue in (0.01, -0.2, 0.5):
        np.testing.assert_allclose(aug.hsv_matrix(hue, 1.3, 0.5) @ grey, grey * 0.5, atol=1e-9)
    red = aug.hsv_matrix(0.0, 0.0, 1.0) @ np.array([255.0, 0.0, 0.0])
    np.testing.assert_allclose(red, [255 * 0.299] * 3)  # saturation 0: luma grey
    third = aug.hsv_matrix(1 / 3, 1.0, 1.0) @ np.array([255.0, 0.0, 0.0])
    np.testing.assert_allclose(third, [0.0, 255.0, 0.0], atol=1e-9)  # a third of a turn: red to green


def test_augment_config_reads_official_hyp_files():
    hyp_file = Path("/work/shared/reference/yolor-official/data/hyp.finetune.1280.yaml")
    if not hyp_file.exists():
        pytest.skip("official reference files not present")
    cfg = AugmentConfig.from_hyp(yaml.safe_load(hyp_file.read_text()))
    assert (cfg.scale, cfg.translate, cfg.mixup, cfg.mosaic) == (0.8, 0.5, 0.2, 1.0)
    with pytest.raises(ValueError, match="'fliplr'"):
        AugmentConfig(fliplr=1.5)


def test_warp_identity_is_exact():
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = aug.warp_image(image, np.eye(3), (30, 20))
    assert torch.equal(out.round().to(torch.uint8), torch.from_numpy(image).permute(2, 0, 1))
    shift = np.eye(3)
    shift[0, 2] = 5  # five pixels right: the first five columns are border
    out = aug.warp_image(image, shift, (30, 20)).round().to(torch.uint8)
    assert (out[:, :, :5] == aug.PAD_VALUE).all()
    assert torch.equal(out[:, :, 5:], torch.from_numpy(image[:, :25]).permute(2, 0, 1))
