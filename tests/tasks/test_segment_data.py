"""The ``segment`` plugin's data: the ``masks`` kind (COCO polygons and RLE, exact through augmentation) and
the ``yolo_seg`` format (``unified/tasks/segment.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from matplotlib.path import Path as Path2D
from PIL import Image
from pycocotools import mask as coco_mask

from tests.data.helpers import NAMES, write_coco, write_image
from unified.config import ConfigError
from unified.data import AugmentConfig, DataError, ImageRecord, MultiTaskDataset, load_dataset_yaml
from unified.data.kinds.boxes import Boxes
from unified.structures import DatasetInfo
from unified.tasks.segment import InstanceMask, Masks, fill_polygon, rle_runs

SQUARE = (16, 16, 80, 80)  # xyxy pixels of a 128 x 96 image, exclusive ends


def square_bitmap(width: int = 128, height: int = 96) -> np.ndarray:
    bitmap = np.zeros((height, width), np.uint8)
    x1, y1, x2, y2 = SQUARE
    bitmap[y1:y2, x1:x2] = 1
    return bitmap


def runs_of(bitmap: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts: column-major run lengths, starting with a run of zeros."""
    flat = bitmap.ravel(order="F")
    changes = np.nonzero(np.diff(flat))[0] + 1
    bounds = np.concatenate([[0], changes, [len(flat)]])
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0, *runs]


def coco_ann(i: int, segmentation, bbox=(16, 16, 64, 64), **extra) -> dict:
    return {
        "id": i,
        "image_id": 1,
        "bbox": list(bbox),
        "category_id": 1,
        "iscrowd": 0,
        "segmentation": segmentation,
        **extra,
    }


def coco_yaml(tmp_path: Path, annotations: list[dict], kinds: dict | None = None) -> Path:
    write_image(tmp_path / "imgs" / "a.png", 128, 96)
    images = [{"id": 1, "file_name": "a.png", "width": 128, "height": 96}]
    write_coco(tmp_path / "ann.json", images, annotations)
    part = {
        "name": "shapes",
        "format": "coco",
        "label_kinds": ["boxes", "masks"],
        "train": {"annotations": "ann.json", "images": "imgs"},
    }
    spec = {"names": NAMES, "parts": [part], **({"kinds": kinds} if kinds else {})}
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump(spec))
    return data


def same_square_three_ways() -> list[dict]:
    x1, y1, x2, y2 = SQUARE
    compressed = coco_mask.encode(np.asfortranarray(square_bitmap()))
    return [
        coco_ann(1, [[x1, y1, x2, y1, x2, y2, x1, y2]]),
        coco_ann(2, {"size": [96, 128], "counts": compressed["counts"].decode()}),
        coco_ann(3, {"size": [96, 128], "counts": runs_of(square_bitmap())}),
        coco_ann(4, {"size": [96, 128], "counts": "anything"}, iscrowd=1),  # a crowd region: left out
    ]


# ------------------------------------------------------------------------------------------- COCO


def test_polygon_compressed_and_uncompressed_rle_of_one_square_give_the_same_target(tmp_path):
    records, info = load_dataset_yaml(coco_yaml(tmp_path, same_square_three_ways()), "train")
    assert info.label_kinds == ("boxes", "masks") and len(records[0].labels["masks"]) == 3
    sample = MultiTaskDataset(records, 64, augment=False, info=info)[0]
    masks = sample["labels"]["masks"]
    # 128 x 96 -> 64 x 48, letterboxed 8 px down: the square is x 8..40, y 16..48, at stride 4
    expected = torch.zeros(16, 16, dtype=torch.uint8)
    expected[4:12, 2:10] = 1
    assert masks.shape == (3, 16, 16) and masks.dtype == torch.uint8
    for row in masks:
        torch.testing.assert_close(row, expected)
    # ... and through mosaic, rotation, shear and flips the three stay one mask
    hyp = AugmentConfig(degrees=15, shear=4, scale=0.4, mosaic=1.0, fliplr=0.5, flipud=0.5)
    dataset = MultiTaskDataset(records, 64, augment=True, hyp=hyp, info=info)
    torch.manual_seed(0)
    for _ in range(6):
        masks = dataset[0]["labels"]["masks"]
        assert len(masks) % 3 == 0 and masks.sum() > 0
        for group in masks.view(-1, 3, 16, 16):
            assert torch.equal(group[0], group[1]) and torch.equal(group[0], group[2])


def test_the_mask_stride_is_a_dataset_option(tmp_path):
    data = coco_yaml(tmp_path, same_square_three_ways()[:1], kinds={"masks": {"stride": 8}})
    records, info = load_dataset_yaml(data, "train")
    sample = MultiTaskDataset(records, 64, augment=False, info=info)[0]
    assert sample["labels"]["masks"].shape == (1, 8, 8) and sample["labels"]["masks"].sum() == 16
    with pytest.raises(ConfigError, match="kinds.masks.*stride must be a positive integer"):
        load_dataset_yaml(coco_yaml(tmp_path, [], kinds={"masks": {"stride": 0}}), "train")


@pytest.mark.parametrize(
    ("segmentation", "message"),
    [
        (None, "no 'segmentation'"),
        ([], "empty list"),
        ([[16, 16, 80, 16]], "has 2 point"),
        ([[16, 16, 80, 16, 80]], "odd number of coordinates"),
        ([[16, 16, 80, "a", 80, 80]], "not a list of numbers"),
        ([[16, 16, 80, 16, 80, 80], 5], "polygon 1 is not a list of numbers"),
        ([[16, 16, 200, 16, 80, 80]], "leaves the 128x96 image"),
        ({"size": [96, 64], "counts": [6144]}, r"RLE size \[96, 64\] \(height, width\) is not the image's"),
        ({"size": [96], "counts": [6144]}, "is not \\[height, width\\]"),
        ({"size": [96, 128], "counts": [100, 3]}, "add up to 103 pixels"),
        ({"size": [96, 128], "counts": [12288, -1, 1]}, "negative run length"),
        ({"size": [96, 128], "counts": "0é"}, "not a compressed RLE string"),
        ({"size": [96, 128], "counts": "P"}, "not a compressed RLE string"),  # a number cut off
        ({"size": [96, 128], "counts": 7}, "neither a compressed RLE string nor a list"),
    ],
)
def test_broken_segmentations_name_the_annotation(tmp_path, segmentation, message):
    anns = [coco_ann(1, [[16, 16, 80, 16, 80, 80]]), coco_ann(7, segmentation)]
    if segmentation is None:
        del anns[1]["segmentation"]
    with pytest.raises(DataError, match=rf"ann.json: annotation id 7: .*{message}.*\[bad_mask\]"):
        load_dataset_yaml(coco_yaml(tmp_path, anns), "train")
    records, _ = load_dataset_yaml(coco_yaml(tmp_path, anns), "train", skip_invalid=True)
    assert len(records[0].labels["masks"]) == len(records[0].labels["boxes"]) == 1


def test_compressed_rle_strings_read_as_pycocotools_writes_them():
    rng = np.random.default_rng(0)
    for _ in range(20):
        bitmap = (rng.random((13, 9)) < 0.4).astype(np.uint8)
        assert rle_runs(coco_mask.encode(np.asfortranarray(bitmap))["counts"]) == runs_of(bitmap)


# ----------------------------------------------------------------------------------- augmentation

PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]
BACKGROUND = [(0, 0, 0), (114, 114, 114)]  # the image's and the border fill's


def star(centre: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
    return centre + rng.uniform(0.55, 1.0, (9, 1)) * radius * np.stack([np.cos(angles), np.sin(angles)], 1)


def inside(polygon: np.ndarray, size: int) -> np.ndarray:
    """The pixels of a ``size`` square image whose centres lie in ``polygon`` (matplotlib's test, not ours;
    PIL's polygon fill also takes the pixels its outline touches)."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    return Path2D(polygon).contains_points(np.stack([xs.ravel(), ys.ravel()], 1)).reshape(size, size)


def polygon_records(tmp_path: Path, as_rle: bool, count: int = 4, size: int = 128) -> list[ImageRecord]:
    """Images with three coloured polygons each (colour = identity, shared by every other image), their
    masks as polygons or RLE."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        pixels = np.zeros((size, size, 3), np.uint8)
        polygons, ids = [], [3 * (i % 2) + k for k in range(3)]
        for k, centre in enumerate([(34, 34), (94, 40), (60, 94)]):
            polygon = star(np.array(centre, float) + rng.uniform(-4, 4, 2), 26, rng)
            pixels[inside(polygon, size)] = PALETTE[ids[k]]
            polygons.append(polygon)
        image = Image.fromarray(pixels)
        items = []
        for k, polygon in enumerate(polygons):
            if as_rle:  # exactly the drawn pixels
                drawn = (pixels == PALETTE[ids[k]]).all(-1).astype(np.uint8)
                items.append(InstanceMask(rle=coco_mask.encode(np.asfortranarray(drawn))))
            else:
                items.append(InstanceMask((polygon,)))
        xyxy = np.array([np.concatenate([p.min(0), p.max(0)]) for p in polygons], np.float32)
        path = tmp_path / f"img{i}.png"
        image.save(path)
        labels = {
            "boxes": Boxes(xyxy, [0, 1, 2]),
            "identities": np.array(ids, np.int64),
            "masks": Masks(items),
        }
        records.append(ImageRecord(str(path), size, size, labels, image_id=i))
    return records


def colour_map(image: np.ndarray) -> np.ndarray:
    """Each pixel's nearest colour: index into PALETTE, or -1 for the backgrounds (edge blends split evenly)."""
    colours = np.array(PALETTE + BACKGROUND, float)
    distance = ((image[..., None, :].astype(float) - colours) ** 2).sum(-1)
    nearest = distance.argmin(-1)
    return np.where(nearest < len(PALETTE), nearest, -1)


@pytest.mark.parametrize("as_rle", [False, True], ids=["polygons", "rle"])
@pytest.mark.parametrize(
    "geometry",
    [
        {"degrees": 0.0, "shear": 0.0, "perspective": 0.0, "mosaic": 1.0},
        {"degrees": 15.0, "shear": 4.0, "perspective": 0.0, "mosaic": 1.0},
        {"degrees": 5.0, "shear": 0.0, "perspective": 0.0005, "mosaic": 1.0},
        {"degrees": 10.0, "shear": 2.0, "perspective": 0.0, "mosaic": 0.0},
    ],
)
def test_masks_match_the_pixels_after_augmentation(tmp_path, geometry, as_rle):
    size = 128
    records = polygon_records(tmp_path, as_rle)
    info = DatasetInfo(
        ["a", "b", "c"],
        num_identities=6,
        label_kinds=("boxes", "identities", "masks"),
        kind_options={"masks": {"stride": 1}},  # full resolution: compared pixel by pixel
    )
    hyp = AugmentConfig(
        hsv_h=0, hsv_s=0, hsv_v=0, translate=0.2, scale=0.4, flipud=0.5, fliplr=0.5, **geometry
    )
    dataset = MultiTaskDataset(records, size, augment=True, hyp=hyp, info=info)
    torch.manual_seed(0)
    checked = 0
    for item in range(12):
        sample = dataset[item % len(records)]
        seen = colour_map(sample["image"].permute(1, 2, 0).numpy())
        masks = sample["labels"]["masks"].numpy().astype(bool)
        identities = sample["labels"]["identities"].numpy()
        for identity in set(identities.tolist()):
            # images share colours, and a mosaic may hold two images of one colour: their masks' union
            mask = masks[identities == identity].any(0)
            pixels = seen == identity
            if pixels.sum() < 150:
                continue  # a sliver cut by a mosaic region or the border
            iou = (mask & pixels).sum() / (mask | pixels).sum()
            assert iou > 0.9, f"item {item}, identity {identity}: IoU {iou:.3f}"
            checked += 1
    assert checked > 12


def test_a_cut_mask_is_the_part_inside_the_cut():
    square = InstanceMask((np.array([[8.0, 8.0], [40.0, 8.0], [40.0, 40.0], [8.0, 40.0]]),))
    cut = square.cropped(np.array([0.0, 0.0, 24.0, 64.0]))
    expected = np.zeros((16, 16), np.uint8)
    expected[2:10, 2:6] = 1
    np.testing.assert_array_equal(cut.rasterise((64, 64), 4), expected)
    # moved, the cut moves with the mask; cut again, only the overlap of both cuts is left
    moved = cut.transformed(np.array([[1.0, 0, 8.0], [0, 1.0, 0], [0, 0, 1.0]])).cropped(
        np.array([0.0, 0.0, 64.0, 24.0])
    )
    expected = np.zeros((16, 16), np.uint8)
    expected[2:6, 4:8] = 1
    np.testing.assert_array_equal(moved.rasterise((64, 64), 4), expected)


def test_polygon_fill_counts_a_pixel_by_its_centre():
    triangle = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    filled = fill_polygon(triangle, 0, 0, 10, 10)
    ys, xs = np.mgrid[0:10, 0:10] + 0.5
    np.testing.assert_array_equal(filled, xs + ys < 10)


# ---------------------------------------------------------------------------------------- yolo_seg


def yolo_seg_yaml(tmp_path: Path, rows: dict[str, str | None], kinds=("boxes", "masks")) -> Path:
    for name, text in rows.items():
        write_image(tmp_path / "images" / "train" / f"{name}.jpg", 64, 48)
        if text is not None:
            label = tmp_path / "labels" / "train" / f"{name}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(text)
    part = {"name": "seg", "format": "yolo_seg", "label_kinds": list(kinds), "train": "images/train"}
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"names": NAMES, "parts": [part]}))
    return data


def test_yolo_seg_reads_polygons_and_their_enclosing_boxes(tmp_path):
    rows = {"a": "1 0.25 0.25 0.75 0.25 0.5 0.75\n\n2 0 0 0.5 0 0.5 0.5 0 0.5\n", "b": None}
    records, info = load_dataset_yaml(yolo_seg_yaml(tmp_path, rows), "train")
    assert info.label_kinds == ("boxes", "masks") and len(records) == 2
    boxes, masks = records[0].labels["boxes"], records[0].labels["masks"]
    np.testing.assert_allclose(boxes.xyxy, [[16, 12, 48, 36], [0, 0, 32, 24]])
    assert boxes.classes.tolist() == [1, 2]
    np.testing.assert_allclose(masks.items[0].polygons[0], [[16, 12], [48, 12], [32, 36]])
    assert len(records[1].labels["masks"]) == 0  # no label file: no objects
    sample = MultiTaskDataset(records, 64, augment=False, info=info)[0]
    # 64 x 48 letterboxed 8 px down; the square of the second row covers x 0..32, y 8..32
    np.testing.assert_array_equal(sample["labels"]["masks"][1].numpy()[2:8, :8], 1)
    assert int(sample["labels"]["masks"][1].sum()) == 6 * 8
    boxes_only, _ = load_dataset_yaml(yolo_seg_yaml(tmp_path / "b", rows, kinds=("boxes",)), "train")
    assert set(boxes_only[0].labels) == {"boxes"}


@pytest.mark.parametrize(
    ("row", "kind", "message"),
    [
        ("1 0.5 0.5 0.2 0.4 0.3", "bad_row", "expected a class and x y pairs"),
        ("1 0.5 0.5 0.2 0.4", "bad_row", "needs at least 3 points"),
        ("1 0.5 x 0.2 0.4 0.1 0.1", "bad_row", "must be numbers"),
        ("3 0.1 0.1 0.2 0.1 0.2 0.2", "unknown_class", "class 3 is not in 0..2"),
        ("1 0.9 0.1 1.5 0.1 1.2 0.4", "box_outside", "leaves the 64x48 image"),
        ("1 0.2 0.2 0.4 0.2 0.6 0.2", "box_size", "non-positive size"),
        ("1 nan 0.2 0.4 0.2 0.6 0.5", "box_not_finite", "NaN"),
    ],
)
def test_yolo_seg_broken_rows_name_file_and_line(tmp_path, row, kind, message):
    data = yolo_seg_yaml(tmp_path, {"a": f"0 0.1 0.1 0.3 0.1 0.3 0.3\n{row}\n"})
    where = f"{tmp_path / 'labels' / 'train' / 'a.txt'}:2"
    with pytest.raises(DataError, match=rf"{where}: .*{message}.*\[{kind}\]"):
        load_dataset_yaml(data, "train")
    records, _ = load_dataset_yaml(data, "train", skip_invalid=True)
    assert len(records[0].labels["boxes"]) == len(records[0].labels["masks"]) == 1


def test_formats_without_masks_refuse_them(tmp_path):
    data = tmp_path / "data.yaml"
    part = {"name": "p", "format": "yolo", "label_kinds": ["boxes", "masks"], "train": "x"}
    data.write_text(yaml.safe_dump({"names": NAMES, "parts": [part]}))
    with pytest.raises(ConfigError, match="the yolo format has no 'masks' labels"):
        load_dataset_yaml(data, "train")
