"""The data part of ``pose`` (``unified.tasks.pose``): the ``keypoints`` kind (COCO reading, geometry, flips
through ``flip_idx``, dataset options) and the ``yolo_pose`` format, on small hand-made cases."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.data.helpers import NAMES, write_coco, write_image
from unified.config import ConfigError
from unified.data import augment as aug
from unified.data import load_dataset_yaml
from unified.data.dataset import MultiTaskDataset, collate
from unified.data.kinds import label_kind
from unified.data.kinds.boxes import Boxes
from unified.data.readers import read_coco
from unified.data.records import ImageRecord
from unified.data.validate import DataError, ProblemLog
from unified.registry import import_plugins
from unified.structures import DatasetInfo

PLUGIN = "unified.tasks.pose"
#: Five keypoints: a middle one (0), two left/right pairs (1 <-> 2, 3 <-> 4).
FLIP_IDX = [0, 2, 1, 4, 3]
OPTIONS = {"kpt_shape": [5, 3], "flip_idx": FLIP_IDX}
INFO = DatasetInfo(list(NAMES), kind_options={"keypoints": OPTIONS})


@pytest.fixture(autouse=True)
def plugin():
    import_plugins([PLUGIN])


def kind():
    return label_kind("keypoints")


def asymmetric() -> np.ndarray:
    """One object's five keypoints, every one at its own place, one of them not labelled."""
    return np.array(
        [[[30.0, 10.0, 2], [20.0, 12.0, 2], [41.0, 13.0, 1], [0.0, 0.0, 0], [44.0, 30.0, 2]]],
        dtype=np.float64,
    )


# -------------------------------------------------------------------------------------------- flips


def test_a_horizontal_flip_mirrors_x_and_maps_keypoints_through_flip_idx():
    flipped = kind().flip(asymmetric(), (64, 48), True, INFO)
    # Keypoint i of the flipped image is keypoint flip_idx[i] of the original, mirrored: x -> 64 - x.
    expected = [[[34.0, 10.0, 2], [23.0, 13.0, 1], [44.0, 12.0, 2], [20.0, 30.0, 2], [0.0, 0.0, 0]]]
    np.testing.assert_array_equal(flipped, expected)
    np.testing.assert_array_equal(kind().flip(flipped, (64, 48), True, INFO), asymmetric())


def test_a_vertical_flip_mirrors_y_and_keeps_the_order():
    flipped = kind().flip(asymmetric(), (64, 48), False, INFO)
    expected = [[[30.0, 38.0, 2], [20.0, 36.0, 2], [41.0, 35.0, 1], [0.0, 0.0, 0], [44.0, 18.0, 2]]]
    np.testing.assert_array_equal(flipped, expected)


def test_the_augmentation_flip_uses_the_datasets_flip_idx():
    labels = {"boxes": Boxes([[15, 5, 50, 35]], [0]), "keypoints": asymmetric()}
    sample = aug.Augmented(torch.zeros(3, 48, 64), labels)
    swapped = aug.flip(sample, True, INFO).labels["keypoints"]
    unswapped = aug.flip(
        sample,
        True,
        DatasetInfo(list(NAMES), kind_options={"keypoints": {**OPTIONS, "flip_idx": [0, 1, 2, 3, 4]}}),
    )
    np.testing.assert_array_equal(swapped[0, 1], [23.0, 13.0, 1])
    np.testing.assert_array_equal(unswapped.labels["keypoints"][0, 1], [44.0, 12.0, 2])


# --------------------------------------------------------------------------------------------- COCO


def _coco(tmp_path: Path, annotations: list[dict]) -> tuple[list, ProblemLog]:
    write_image(tmp_path / "imgs" / "a.png", 64, 48)
    images = [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}]
    path = write_coco(tmp_path / "ann.json", images, annotations)
    log = ProblemLog(skip_invalid=True)
    return read_coco(path, tmp_path / "imgs", NAMES, NAMES, ["boxes", "keypoints"], log), log


def _ann(i: int, keypoints: list | None, **extra) -> dict:
    ann = {"id": i, "image_id": 1, "bbox": [10, 5, 30, 30], "category_id": 1, "iscrowd": 0, **extra}
    if keypoints is not None:
        ann["keypoints"] = keypoints
    return ann


def test_coco_keypoints_with_every_visibility_and_objects_without_keypoints(tmp_path):
    # v = 0 with stray coordinates: not labelled, so the coordinates are dropped.
    points = [12, 8, 2, 20, 30, 1, 5, 5, 0]
    records, log = _coco(tmp_path, [_ann(1, points, num_keypoints=2), _ann(2, None)])
    assert not log.problems
    value = records[0].labels["keypoints"]
    np.testing.assert_array_equal(value, [[[12, 8, 2], [20, 30, 1], [0, 0, 0]], np.zeros((3, 3))])
    assert len(records[0].labels["boxes"]) == 2


@pytest.mark.parametrize(
    ("keypoints", "extra", "problem", "message"),
    [
        ([12, 8, 2, 20], {}, "bad_row", "list of 3K numbers"),
        ([12, 8, 2, 20, 30, "x"], {}, "bad_row", "list of 3K numbers"),
        ([12, 8, 3, 20, 30, 1], {}, "bad_row", "keypoint 0 has visibility 3"),
        ([12, 8, 2, 20, 30, 1], {"num_keypoints": 1}, "bad_row", "num_keypoints is 1 but 2 keypoints"),
        ([12, 8, 2, 70, 30, 2], {}, "keypoint_outside", r"keypoint 1 at \(70, 30\) is labelled but leaves"),
    ],
)
def test_coco_keypoint_problems_leave_the_annotation_out(tmp_path, keypoints, extra, problem, message):
    records, log = _coco(tmp_path, [_ann(1, [12, 8, 2, 20, 30, 2]), _ann(7, keypoints, **extra)])
    assert [p.kind for p in log.problems] == [problem]
    assert "annotation id 7" in log.problems[0].where
    assert re.search(message, log.problems[0].message)
    assert len(records[0].labels["boxes"]) == 1 and records[0].labels["keypoints"].shape == (1, 2, 3)


def test_coco_keypoints_of_one_image_have_one_k(tmp_path):
    records, log = _coco(tmp_path, [_ann(1, [12, 8, 2]), _ann(2, [12, 8, 2, 20, 30, 2])])
    assert [p.message for p in log.problems] == ["2 keypoints where the image's other annotations have 1"]
    assert records[0].labels["keypoints"].shape == (1, 1, 3)


def test_an_unlabelled_keypoint_outside_the_image_is_no_problem_and_an_overshoot_is_clipped(tmp_path):
    records, log = _coco(tmp_path, [_ann(1, [64.5, -0.5, 2, 200, 200, 0])])
    assert not log.problems
    np.testing.assert_array_equal(records[0].labels["keypoints"], [[[64, 0, 2], [0, 0, 0]]])


# ---------------------------------------------------------------------------------------- geometry


def _by_hand(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    out = points.copy()
    for i, j in np.ndindex(points.shape[:2]):
        if points[i, j, 2] > 0:
            x, y, w = matrix @ np.array([points[i, j, 0], points[i, j, 1], 1.0])
            out[i, j, :2] = x / w, y / w
    return out


def test_transforms_move_labelled_points_through_the_matrix():
    rng = np.random.default_rng(0)
    cfg = aug.AugmentConfig(degrees=30.0, shear=8.0, scale=0.4, translate=0.2, perspective=0.001)
    points = asymmetric()
    for _ in range(5):
        matrix = aug.random_matrix(cfg, rng, (64, 48), (64, 48))
        moved = kind().transform(points, matrix)
        np.testing.assert_allclose(moved, _by_hand(points, matrix), rtol=0, atol=1e-9)
        assert moved[0, 3].tolist() == [0, 0, 0]


def test_a_crop_or_the_warp_border_unlabels_the_points_it_cuts_away():
    cropped = kind().crop(asymmetric(), np.array([15.0, 0.0, 42.0, 20.0]))
    expected = [[[30.0, 10.0, 2], [20.0, 12.0, 2], [41.0, 13.0, 1], [0.0, 0.0, 0], [0.0, 0.0, 0]]]
    np.testing.assert_array_equal(cropped, expected)
    shift = np.array([[1.0, 0.0, -25.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    warped = kind().warp(asymmetric(), shift, (64, 48))
    expected = [[[5.0, 10.0, 2], [0.0, 0.0, 0], [16.0, 13.0, 1], [0.0, 0.0, 0], [19.0, 30.0, 2]]]
    np.testing.assert_array_equal(warped, expected)


def test_samples_are_normalised_and_images_without_keypoints_get_unlabelled_zeros():
    sample = kind().to_sample(asymmetric(), 1, (64, 48), INFO)
    assert sample.dtype == torch.float32 and sample.shape == (1, 5, 3)
    torch.testing.assert_close(sample[0, 0], torch.tensor([30 / 64, 10 / 48, 2.0]))
    assert torch.equal(kind().to_sample(None, 2, (64, 48), INFO), torch.zeros(2, 5, 3))
    # Objects that nobody gave keypoints (K = 0) fit any K; another K names the option to set.
    assert torch.equal(kind().to_sample(np.zeros((2, 0, 3)), 2, (64, 48), INFO), torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match=r"K = 3 where 5 are expected.*kinds.keypoints.kpt_shape"):
        kind().to_sample(np.zeros((1, 3, 3)), 1, (64, 48), INFO)


def test_joining_images_with_and_without_keypoints():
    joined = kind().concat([asymmetric(), np.zeros((2, 0, 3)), kind().empty()])
    assert joined.shape == (3, 5, 3) and not joined[1:].any()


# ---------------------------------------------------------------------------------- dataset options


def _yaml(tmp_path: Path, options: dict | None, part: dict | None = None) -> Path:
    write_image(tmp_path / "imgs" / "a.png", 64, 48)
    points = [30, 10, 2, 20, 12, 2, 41, 13, 1, 0, 0, 0, 44, 30, 2]
    images = [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}]
    write_coco(tmp_path / "ann.json", images, [_ann(1, points, num_keypoints=4)])
    part = part or {
        "name": "people",
        "format": "coco",
        "label_kinds": ["boxes", "keypoints"],
        "train": {"annotations": "ann.json", "images": "imgs"},
    }
    spec: dict = {"names": NAMES, "parts": [part]}
    if options is not None:
        spec["kinds"] = {"keypoints": options}
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_dataset_options_reach_the_kind_through_the_dataset_info(tmp_path):
    records, info = load_dataset_yaml(_yaml(tmp_path, OPTIONS), "train")
    options = kind().options(info)
    assert options.kpt_shape == [5, 3] and options.flip_idx == FLIP_IDX
    assert options.sigmas == [0.2] * 5  # not COCO persons: uniform 1/K, as Ultralytics
    assert info.label_kinds == ("boxes", "keypoints") and records[0].labels["keypoints"].shape == (1, 5, 3)
    sample = MultiTaskDataset(records, 64, augment=False, info=info)[0]
    assert sample["labels"]["keypoints"].shape == (1, 5, 3)


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        (
            {"kpt_shape": [5, 3], "flip_idx": [0, 2, 1, 4, 4]},
            "kinds.keypoints.flip_idx",
            "permutation of 0..4",
        ),
        ({"kpt_shape": [5, 3], "flip_idx": [0, 2, 1, 4]}, "kinds.keypoints.flip_idx", "permutation of 0..4"),
        ({"kpt_shape": [5, 3], "flip_idx": [1, 2, 0, 4, 3]}, "kinds.keypoints.flip_idx", "its own inverse"),
        ({"kpt_shape": [5, 4], "flip_idx": FLIP_IDX}, "kinds.keypoints.kpt_shape", r"\[K, 3\] or \[K, 2\]"),
        ({**OPTIONS, "sigmas": [0.1, 0.1]}, "kinds.keypoints.sigmas", "5 positive numbers"),
        ({"kpt_shape": [5, 3]}, "kinds.keypoints.flip_idx", "missing"),
        ({**OPTIONS, "flip": [0]}, "kinds.keypoints.flip", "Did you mean 'flip_idx'"),
    ],
)
def test_bad_dataset_options_are_config_errors_naming_the_key(tmp_path, options, key, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_dataset_yaml(_yaml(tmp_path, options), "train")
    assert key in str(error.value)


def test_coco_persons_get_cocos_sigmas_and_a_dataset_without_options_the_documented_default():
    persons = {"kpt_shape": [17, 3], "flip_idx": [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]}
    sigmas = kind().options(DatasetInfo(["person"], kind_options={"keypoints": persons})).sigmas
    assert sigmas[0] == pytest.approx(0.026) and sigmas[-1] == pytest.approx(0.089) and len(sigmas) == 17
    default = kind().options(DatasetInfo(["x"]))
    assert default.kpt_shape == [3, 3] and default.flip_idx == [0, 1, 2]


# --------------------------------------------------------------------------------------- yolo_pose


def _pose_world(tmp_path: Path, rows: list[str], options: dict | None) -> Path:
    write_image(tmp_path / "images" / "train" / "a.png", 64, 48)
    write_image(tmp_path / "images" / "train" / "b.png", 64, 48)  # no label file: no objects
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("".join(r + "\n" for r in rows))
    part = {
        "name": "pose",
        "format": "yolo_pose",
        "label_kinds": ["boxes", "keypoints"],
        "train": "images/train",
    }
    return _yaml(tmp_path, options, part)


def test_yolo_pose_reads_boxes_and_keypoints(tmp_path):
    options = {"kpt_shape": [2, 3], "flip_idx": [1, 0]}
    data = _pose_world(
        tmp_path, ["1 0.5 0.5 0.5 0.5 0.25 0.5 2 0.75 0.25 1", "0 0.5 0.5 0.2 0.2 0 0 0 0.5 0.5 2"], options
    )
    records, info = load_dataset_yaml(data, "train")
    a, b = records
    np.testing.assert_allclose(
        a.labels["boxes"].xyxy, [[16, 12, 48, 36], [25.6, 19.2, 38.4, 28.8]], rtol=1e-6
    )
    np.testing.assert_array_equal(a.labels["boxes"].classes, [1, 0])
    np.testing.assert_allclose(a.labels["keypoints"], [[[16, 24, 2], [48, 12, 1]], [[0, 0, 0], [32, 24, 2]]])
    assert b.labels["keypoints"].shape == (0, 2, 3) and info.label_kinds == ("boxes", "keypoints")


def test_yolo_pose_without_visibility_column(tmp_path):
    data = _pose_world(
        tmp_path, ["1 0.5 0.5 0.5 0.5 0.25 0.5 0 0"], {"kpt_shape": [2, 2], "flip_idx": [1, 0]}
    )
    records, _ = load_dataset_yaml(data, "train")
    np.testing.assert_allclose(records[0].labels["keypoints"], [[[16, 24, 2], [0, 0, 0]]])


def test_yolo_pose_names_bad_rows_with_file_and_line(tmp_path):
    rows = [
        "1 0.5 0.5 0.5 0.5 0.25 0.5 2 0.75 0.25 1",
        "1 0.5 0.5 0.5 0.5 0.25 0.5 2",
        "1 0.5 0.5 0.5 0.5 0.25 0.5 3 0.75 0.25 1",
        "1 0.5 0.5 0.5 0.5 1.5 0.5 2 0.75 0.25 1",
        "7 0.5 0.5 0.5 0.5 0.25 0.5 2 0.75 0.25 1",
        "1 0.5 0.5 0.5 0.5 0.25 0.5 2 0.75 0.25 x",
    ]
    data = _pose_world(tmp_path, rows, {"kpt_shape": [2, 3], "flip_idx": [1, 0]})
    with pytest.raises(DataError) as error:
        load_dataset_yaml(data, "train")
    text = str(error.value)
    label = tmp_path / "labels" / "train" / "a.txt"
    assert (
        f"{label}:2: expected 11 values (class xc yc w h, then x y v for each of 2 keypoints), found 8"
        in text
    )
    assert f"{label}:3: keypoint 0 has visibility 3" in text
    assert (
        f"{label}:4: keypoint 0 at (96, 24) is labelled but leaves the 64x48 image [keypoint_outside]" in text
    )
    assert f"{label}:5: class 7 is not in 0..2" in text and f"{label}:6: values must be numbers" in text
    assert f"{label}:1:" not in text
    records, _ = load_dataset_yaml(data, "train", skip_invalid=True)
    assert records[0].labels["keypoints"].shape == (1, 2, 3)


def test_yolo_pose_needs_the_keypoint_options(tmp_path):
    data = _pose_world(tmp_path, [], None)
    # A part that declares keypoints needs the dataset's keypoint options, whatever its format.
    with pytest.raises(ConfigError, match=r"key 'kinds.keypoints': parts declare 'keypoints' labels"):
        load_dataset_yaml(data, "train")


def test_keypoints_of_the_datasets_k_survive_mosaic_mixup_and_flips_and_collate_with_their_boxes(tmp_path):
    rng = np.random.default_rng(5)
    records = []
    for i in range(6):
        path = write_image(tmp_path / f"{i}.png", 80, 60)
        labels: dict = {"boxes": label_kind("boxes").example({}, (80, 60), INFO, rng)}
        labels["keypoints"] = kind().example(labels, (80, 60), INFO, rng)
        records.append(ImageRecord(str(path), 80, 60, labels, image_id=i))
    info = DatasetInfo(list(NAMES), label_kinds=("boxes", "keypoints"), kind_options={"keypoints": OPTIONS})
    hyp = aug.AugmentConfig(degrees=10, mosaic=1.0, mixup=0.5, flipud=0.5, fliplr=0.5)
    torch.manual_seed(0)
    batch = collate([MultiTaskDataset(records, 64, augment=True, hyp=hyp, info=info)[i] for i in range(6)])
    points = batch["keypoints"]
    assert points.shape == (len(batch["boxes"]), 5, 3) and len(points) > 0
    labelled = points[..., 2] > 0
    assert set(points[..., 2].unique().tolist()) <= {0.0, 1.0, 2.0} and labelled.any()
    assert ((points[..., :2] >= 0) & (points[..., :2] <= 1)).all(-1)[labelled].all()
    assert not points[..., :2][~labelled].any()
