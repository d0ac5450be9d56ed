"""Readers and validation: every format on small hand-written files, every kind of broken annotation."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.data.helpers import NAMES, SCENES, write_coco, write_image, write_sequence
from unified.config import ConfigError
from unified.data import (
    DataError,
    ProblemLog,
    load_dataset_yaml,
    load_rgb,
    read_coco,
    read_jde,
    read_mot,
    read_yolo,
)
from unified.data.summary import PartTally

LABELS = NAMES + SCENES


def coco_world(tmp_path: Path, annotations: list[dict], images: list[dict] | None = None, **kw) -> Path:
    write_image(tmp_path / "imgs" / "a.png", 64, 48)
    write_image(tmp_path / "imgs" / "b.png", 64, 48)
    write_image(tmp_path / "imgs" / "c.png", 64, 48)
    if images is None:
        images = [
            {"id": 1, "file_name": "a.png", "width": 64, "height": 48, "labels": ["ellipse", "night"]},
            {"id": 2, "file_name": "b.png", "width": 64, "height": 48, "labels": []},
        ]
    return write_coco(tmp_path / "ann.json", images, annotations, **kw)


def read(ann: Path, kinds=("boxes", "image_labels", "identities"), skip=False):
    log = ProblemLog(skip)
    records = read_coco(ann, ann.parent / "imgs", NAMES, LABELS, list(kinds), log)
    return records, log


def ann(i, image_id=1, bbox=(10, 5, 20, 10), cat=1, **extra):
    return {"id": i, "image_id": image_id, "bbox": list(bbox), "category_id": cat, "iscrowd": 0, **extra}


# --------------------------------------------------------------------------------------------- COCO


def test_coco_reads_boxes_classes_identities_and_labels(tmp_path):
    path = coco_world(
        tmp_path,
        [
            ann(1, bbox=(10, 5, 20, 10), cat=2, track_id=7),
            ann(2, bbox=(0, 0, 64, 48), cat=1, track_id=3),
            ann(3, image_id=2, cat=3, track_id=7),  # same track in another image: same identity
            ann(4, image_id=2, cat=3, iscrowd=1),  # crowd regions are not objects
        ],
    )
    records, log = read(path)
    assert len(log) == 0
    a, b = records
    np.testing.assert_allclose(a.labels["boxes"].xyxy, [[10, 5, 30, 15], [0, 0, 64, 48]])
    assert a.labels["boxes"].classes.tolist() == [1, 0]
    assert a.labels["identities"].tolist() == [0, 1]
    assert b.labels["identities"].tolist() == [0] and b.labels["boxes"].classes.tolist() == [2]
    assert a.labels["image_labels"].tolist() == [0, 3] and b.labels["image_labels"].tolist() == []
    assert (a.width, a.height, a.source_id) == (64, 48, 1)


def test_coco_matches_categories_by_name(tmp_path):
    cats = [{"id": 10, "name": "triangle"}, {"id": 20, "name": "ellipse"}]
    path = coco_world(tmp_path, [ann(1, cat=10), ann(2, cat=20)], categories=cats)
    records, _ = read(path)
    assert records[0].labels["boxes"].classes.tolist() == [2, 0]


def test_coco_track_id_ignored_without_identities_kind(tmp_path):
    path = coco_world(tmp_path, [ann(1, track_id=5)])
    records, _ = read(path, kinds=("boxes", "image_labels"))
    assert "identities" not in records[0].labels  # the part does not declare them


def test_coco_small_overshoot_is_clipped(tmp_path):
    path = coco_world(tmp_path, [ann(1, bbox=(-0.8, 40, 20, 8.9))])
    records, log = read(path)
    assert len(log) == 0
    np.testing.assert_allclose(records[0].labels["boxes"].xyxy, [[0, 40, 19.2, 48]], atol=1e-5)


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        ({"bbox": [60, 5, 10, 10]}, "box_outside"),
        ({"bbox": [-5, 5, 10, 10]}, "box_outside"),
        ({"bbox": [10, 5, 0, 10]}, "box_size"),
        ({"bbox": [10, 5, 5, -1]}, "box_size"),
        ({"bbox": [10, float("nan"), 5, 5]}, "box_not_finite"),
        ({"bbox": [10, 5, float("inf"), 5]}, "box_not_finite"),
        ({"bbox": [10, 5, 5]}, "bad_row"),
        ({"category_id": 9}, "unknown_class"),
        ({"track_id": 2.5}, "invalid_identity"),
        ({"track_id": -3}, "invalid_identity"),
        ({"track_id": "x"}, "invalid_identity"),
        ({"image_id": 99}, "bad_row"),
    ],
)
def test_coco_broken_annotation_is_reported_with_file_and_id(tmp_path, bad, kind):
    path = coco_world(tmp_path, [ann(1), {**ann(42), **bad}])
    with pytest.raises(DataError) as info:
        log = ProblemLog(False)
        read_coco(path, tmp_path / "imgs", NAMES, LABELS, ["boxes", "image_labels", "identities"], log)
        log.finish("test")
    message = str(info.value)
    assert f"{path}: annotation id 42" in message and f"[{kind}]" in message
    # skipped and counted instead
    records, log = read(path, skip=True)
    assert log.counts() == {kind: 1}
    assert len(records[0].labels["boxes"].xyxy) == 1


def test_a_category_the_dataset_does_not_name_is_left_out_and_counted_not_an_error(tmp_path):
    cats = [{"id": 1, "name": "ellipse"}, {"id": 2, "name": "dog"}]
    path = coco_world(tmp_path, [ann(1, cat=2), ann(2, cat=1)], categories=cats)
    tally = PartTally()
    log = ProblemLog()
    records = read_coco(path, tmp_path / "imgs", NAMES, LABELS, ["boxes"], log, tally=tally)
    assert len(log) == 0 and len(records[0].labels["boxes"]) == 1
    assert tally.dropped == {"other_category": 1} and tally.details["other_category"] == {"dog": 1}


def test_coco_duplicate_track_in_one_image(tmp_path):
    path = coco_world(tmp_path, [ann(1, track_id=4), ann(2, track_id=4)])
    records, log = read(path, skip=True)
    assert log.counts() == {"invalid_identity": 1} and len(records[0].labels["boxes"].xyxy) == 1


def test_coco_image_labels_unknown_malformed_and_derived(tmp_path):
    images = [
        {"id": 1, "file_name": "a.png", "width": 64, "height": 48, "labels": ["ellipse", "sunny"]},
        {"id": 2, "file_name": "b.png", "width": 64, "height": 48, "labels": "ellipse"},
        {"id": 3, "file_name": "c.png", "width": 64, "height": 48},
    ]
    path = coco_world(tmp_path, [ann(1, image_id=3, cat=2), ann(2, image_id=3, cat=2)], images=images)
    records, log = read(path, skip=True)
    assert log.counts() == {"unknown_label": 1, "missing_labels": 1}
    assert records[0].labels["image_labels"].tolist() == [0]
    assert "image_labels" not in records[1].label_kinds  # unknown, not "no labels"
    # Without a 'labels' entry an image's labels are the classes of its boxes.
    assert "image_labels" in records[2].label_kinds and records[2].labels["image_labels"].tolist() == [1]


@pytest.mark.parametrize(
    "damage", ["missing", "empty", "truncated_png", "truncated_jpg", "garbage", "wrong_size"]
)
def test_bad_images_are_reported(tmp_path, damage):
    name = "b.jpg" if damage == "truncated_jpg" else "b.png"
    images = [
        {"id": 1, "file_name": "a.png", "width": 64, "height": 48, "labels": []},
        {"id": 2, "file_name": name, "width": 64, "height": 48, "labels": []},
    ]
    path = coco_world(tmp_path, [ann(1), ann(2, image_id=2)], images=images)
    target = tmp_path / "imgs" / name
    if damage == "truncated_jpg":
        write_image(target, 64, 48)
    data = target.read_bytes()
    if damage == "missing":
        target.unlink()
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage.startswith("truncated"):
        target.write_bytes(data[: len(data) * 2 // 3])
    elif damage == "garbage":
        target.write_bytes(b"not an image at all" * 10)
    else:
        write_image(target, 32, 32)
    kind = "image_missing" if damage == "missing" else "image_corrupt"
    with pytest.raises(DataError, match=rf"images\[1\] \(id 2, {name}\).*\[{kind}\]"):
        log = ProblemLog(False)
        read_coco(path, tmp_path / "imgs", NAMES, LABELS, ["boxes"], log)
        log.finish("test")
    records, log = read(path, kinds=("boxes",), skip=True)
    assert [r.source_id for r in records] == [1]
    assert log.counts() == {kind: 1}


def test_coco_bad_json(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text("{not json")
    records, log = read(path, skip=True)
    assert records == [] and log.counts() == {"bad_file": 1}


def test_error_lists_first_twenty_and_counts_the_rest(tmp_path):
    path = coco_world(tmp_path, [ann(i, bbox=(100, 0, 5, 5)) for i in range(1, 31)])
    log = ProblemLog(False)
    read_coco(path, tmp_path / "imgs", NAMES, LABELS, ["boxes"], log)
    with pytest.raises(DataError) as info:
        log.finish("ctx")
    text = str(info.value)
    assert text.startswith("ctx: 30 problem(s)") and "... and 10 more" in text
    assert text.count("[box_outside]") == 20 and "skip_invalid=True" in text


def test_skip_invalid_logs_counts_per_kind(tmp_path, caplog):
    path = coco_world(
        tmp_path, [ann(1, bbox=(100, 0, 5, 5)), ann(2, bbox=(1, 1, 0, 5)), ann(3, bbox=(1, 1, 0, 5))]
    )
    log = ProblemLog(True)
    read_coco(path, tmp_path / "imgs", NAMES, LABELS, ["boxes"], log)
    with caplog.at_level(logging.WARNING, logger="unified.data.validate"):
        log.finish("ctx")
    assert "1 annotation(s) for box_outside" in caplog.text and "2 annotation(s) for box_size" in caplog.text


# --------------------------------------------------------------------------------------- YOLO / JDE


def yolo_tree(tmp_path: Path, rows: dict[str, str], label_dir: str = "labels") -> Path:
    for name, text in rows.items():
        write_image(tmp_path / "images" / "train" / f"{name}.jpg", 100, 50)
        if text is not None:
            label = tmp_path / label_dir / "train" / f"{name}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(text)
    return tmp_path / "images" / "train"


def test_yolo_reads_normalised_boxes_and_background_images(tmp_path):
    root = yolo_tree(tmp_path, {"a": "1 0.5 0.5 0.2 0.4\n\n2 0.1 0.1 0.2 0.2\n", "b": None})
    log = ProblemLog()
    records = read_yolo([root], NAMES, ["boxes"], log)
    assert len(log) == 0 and len(records) == 2
    np.testing.assert_allclose(records[0].labels["boxes"].xyxy, [[40, 15, 60, 35], [0, 0, 20, 10]], atol=1e-4)
    assert records[0].labels["boxes"].classes.tolist() == [1, 2] and "identities" not in records[0].labels
    assert len(records[1].labels["boxes"].xyxy) == 0 and records[1].label_kinds == {"boxes"}


@pytest.mark.parametrize(
    ("row", "kind"),
    [
        ("1 0.5 0.5 0.2", "bad_row"),
        ("1 0.5 0.5 0.2 0.4 7", "bad_row"),
        ("1 0.5 x 0.2 0.4", "bad_row"),
        ("3 0.5 0.5 0.2 0.4", "unknown_class"),
        ("-1 0.5 0.5 0.2 0.4", "unknown_class"),
        ("1.5 0.5 0.5 0.2 0.4", "unknown_class"),
        ("1 0.95 0.5 0.2 0.4", "box_outside"),
        ("1 0.5 0.5 0 0.4", "box_size"),
        ("1 nan 0.5 0.2 0.4", "box_not_finite"),
    ],
)
def test_yolo_broken_rows_name_file_and_line(tmp_path, row, kind):
    root = yolo_tree(tmp_path, {"a": f"0 0.5 0.5 0.2 0.2\n{row}\n"})
    log = ProblemLog()
    records = read_yolo([root], NAMES, ["boxes"], log)
    assert log.counts() == {kind: 1}
    assert log.problems[0].where == f"{tmp_path / 'labels' / 'train' / 'a.txt'}:2"
    assert len(records[0].labels["boxes"].xyxy) == 1


def test_official_yolo_data_yaml_is_accepted(tmp_path):
    root = yolo_tree(tmp_path, {"a": "0 0.5 0.5 0.2 0.4\n", "b": "2 0.5 0.5 0.2 0.4\n"})
    (tmp_path / "train.txt").write_text("./images/train/a.jpg\nimages/train/b.jpg\n")
    data = tmp_path / "coco.yaml"
    data.write_text(yaml.safe_dump({"train": "train.txt", "val": str(root), "nc": 3, "names": NAMES}))
    records, info = load_dataset_yaml(data, "train")
    assert [Path(r.path).name for r in records] == ["a.jpg", "b.jpg"]
    assert info.class_names == NAMES and info.label_kinds == ("boxes",) and info.num_identities == 0
    assert len(load_dataset_yaml(data, "val")[0]) == 2
    data.write_text(yaml.safe_dump({"train": "train.txt", "nc": 4, "names": NAMES}))
    with pytest.raises(ConfigError, match="'nc' is 4"):
        load_dataset_yaml(data, "train")


def test_the_official_coco_yaml_parses():
    official = Path("/work/shared/reference/yolor-official/data/coco.yaml")
    if not official.exists():
        pytest.skip("official reference files not present")
    from unified.data import read_dataset_spec

    spec = read_dataset_spec(official)
    assert len(spec.names) == 80 and spec.parts[0].format == "yolo" and spec.parts[0].test


def test_jde_reads_identities_and_rejects_bad_ones(tmp_path):
    root = yolo_tree(
        tmp_path,
        {
            "a": "0 5 0.5 0.5 0.2 0.4\n0 -1 0.2 0.2 0.1 0.1\n0 5 0.7 0.7 0.1 0.1\n0 -2 0.5 0.5 0.1 0.1\n0 1.5 0.5 0.5 0.1 0.1\n"
        },
        label_dir="labels_with_ids",
    )
    log = ProblemLog(True)
    records = read_jde([root], NAMES, ["boxes", "identities"], log)
    assert records[0].labels["identities"].tolist() == [0, -1]
    assert log.counts() == {"invalid_identity": 3}
    assert {p.where.rsplit(":", 1)[1] for p in log.problems} == {"3", "4", "5"}


# ---------------------------------------------------------------------------------------------- MOT


def test_mot_groups_rows_by_frame_and_offsets_identities(tmp_path):
    # rows sorted by identity, as MOTChallenge ships them; the same raw ids in both sequences
    rows = [
        "1,1,10,10,10,10,1,1,1",
        "2,1,12,10,10,10,1,1,0.8",
        "1,2,30,5,10,20,1,2,1",
        "3,2,-5,5,10,20,1,2,0.5",
    ]
    write_sequence(tmp_path / "mot", "seq-a", rows)
    write_sequence(tmp_path / "mot", "seq-b", ["1,1,0,0,5,5,1,3,1", "2,1,60,40,10,10,0,1,1"])
    log = ProblemLog()
    records = read_mot(tmp_path / "mot", NAMES, ["boxes", "identities"], log)
    assert len(log) == 0
    assert [(r.sequence, r.frame) for r in records] == [("seq-a", 1), ("seq-a", 2), ("seq-a", 3)] + [
        ("seq-b", f) for f in (1, 2, 3)
    ]
    a1, a2, a3, b1, b2, _ = records
    assert a1.labels["identities"].tolist() == [0, 1] and a1.labels["boxes"].classes.tolist() == [0, 1]
    assert a2.labels["identities"].tolist() == [0] and a3.labels["identities"].tolist() == [1]
    np.testing.assert_allclose(a3.labels["boxes"].xyxy, [[0, 5, 5, 25]])  # amodal box clipped at the border
    assert b1.labels["identities"].tolist() == [2] and b1.labels["boxes"].classes.tolist() == [2]
    assert len(b2.labels["boxes"].xyxy) == 0  # conf 0: not considered


@pytest.mark.parametrize(
    ("row", "kind"),
    [
        ("2,1,10,10,10", "bad_row"),  # missing columns
        ("2,1,10,10,10,10,1,1", "bad_row"),  # fewer columns than the first row
        ("2,a,10,10,10,10,1,1,1", "bad_row"),
        ("9,1,10,10,10,10,1,1,1", "frame_out_of_range"),
        ("0,1,10,10,10,10,1,1,1", "frame_out_of_range"),
        ("2,-1,10,10,10,10,1,1,1", "invalid_identity"),
        ("1,1,20,20,10,10,1,1,1", "invalid_identity"),  # id 1 twice in frame 1
        ("2,1,10,10,10,10,1,4,1", "unknown_class"),
        ("2,1,100,10,10,10,1,1,1", "box_outside"),
        ("2,1,10,10,0,10,1,1,1", "box_size"),
        ("2,1,nan,10,10,10,1,1,1", "box_not_finite"),
    ],
)
def test_mot_broken_rows_name_file_and_line(tmp_path, row, kind):
    seq = write_sequence(tmp_path, "s", ["1,1,10,10,10,10,1,1,1", row])
    log = ProblemLog()
    records = read_mot(seq, NAMES, ["boxes", "identities"], log)
    assert log.counts() == {kind: 1}
    assert log.problems[0].where == f"{seq / 'gt' / 'gt.txt'}:2"
    assert sum(len(r.labels["boxes"].xyxy) for r in records) == 1


def test_mot_missing_frame_image_and_bad_seqinfo(tmp_path):
    seq = write_sequence(tmp_path / "m", "s", ["1,1,10,10,10,10,1,1,1", "2,1,10,10,10,10,1,1,1"])
    (seq / "img1" / "000002.jpg").unlink()
    bad = write_sequence(tmp_path / "m", "t", [])
    (bad / "seqinfo.ini").write_text("[Sequence]\nimDir=img1\n")
    log = ProblemLog(True)
    records = read_mot(tmp_path / "m", NAMES, ["boxes"], log)
    assert log.counts() == {"image_missing": 1, "bad_file": 1}
    assert [r.frame for r in records] == [1, 3]


def test_mot_without_gt_is_reported(tmp_path):
    seq = write_sequence(tmp_path, "s", [])
    (seq / "gt" / "gt.txt").unlink()
    log = ProblemLog(True)
    assert read_mot(seq, NAMES, ["boxes"], log) == [] and log.counts() == {"bad_file": 1}


# ------------------------------------------------------------------------------------ dataset YAML


def combined_yaml(tmp_path: Path) -> Path:
    coco_world(tmp_path / "stills", [ann(1, cat=2)])
    write_sequence(tmp_path / "mot" / "train", "s1", ["1,3,10,10,10,10,1,1,1", "2,3,11,10,10,10,1,1,1"])
    write_sequence(tmp_path / "mot" / "train", "s2", ["1,3,10,10,10,10,1,2,1"])
    jde = yolo_tree(tmp_path / "jde", {"a": "0 3 0.5 0.5 0.2 0.4\n"}, label_dir="labels_with_ids")
    spec = {
        "names": NAMES,
        "scene_labels": SCENES,
        "parts": [
            {
                "name": "stills",
                "format": "coco",
                "label_kinds": ["boxes", "image_labels"],
                "train": {"annotations": "stills/ann.json", "images": "stills/imgs"},
            },
            {"name": "videos", "format": "mot", "label_kinds": ["boxes", "identities"], "train": "mot/train"},
            {"name": "people", "format": "jde", "label_kinds": ["boxes", "identities"], "train": [str(jde)]},
        ],
    }
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_dataset_yaml_combines_parts_with_global_identities(tmp_path):
    records, info = load_dataset_yaml(combined_yaml(tmp_path), "train")
    assert [r.image_id for r in records] == list(range(len(records)))
    assert [r.part for r in records] == ["stills"] * 2 + ["videos"] * 6 + ["people"]
    assert info.image_label_names == NAMES + SCENES
    assert info.label_kinds == ("boxes", "identities", "image_labels")
    # raw id 3 in s1, in s2 and in the JDE part are three different identities
    ids = sorted({int(i) for r in records for i in r.labels.get("identities", []) if i >= 0})
    assert ids == [0, 1, 2] and info.num_identities == 3
    assert records[0].label_kinds == {"boxes", "image_labels"}
    assert records[2].label_kinds == {"boxes", "identities"}


def test_empty_split_raises_even_when_skipping(tmp_path):
    path = combined_yaml(tmp_path)
    with pytest.raises(DataError, match="no part has a 'val' split"):
        load_dataset_yaml(path, "val", skip_invalid=True)
    data = yaml.safe_load(path.read_text())
    data["parts"][0]["val"] = {"annotations": "stills/empty.json", "images": "stills/imgs"}
    path.write_text(yaml.safe_dump(data))
    write_coco(tmp_path / "stills" / "empty.json", [], [])
    with pytest.raises(DataError, match=r"part 'stills'.*holds no valid image.*\[empty_split\]"):
        load_dataset_yaml(path, "val", skip_invalid=True)


def test_dataset_yaml_errors_name_file_and_key(tmp_path):
    path = combined_yaml(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["parts"][1]["format"] = "mots"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=r"data.yaml, line \d+: key 'parts.1.format'.*Did you mean 'mot'"):
        load_dataset_yaml(path, "train")
    data["parts"][1]["format"] = "mot"
    data["parts"][1]["label_kinds"] = ["boxes", "tracks"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match="label kind 'tracks'"):
        load_dataset_yaml(path, "train")


def test_dataset_yaml_reports_problems_across_parts(tmp_path):
    path = combined_yaml(tmp_path)
    gt = tmp_path / "mot" / "train" / "s2" / "gt" / "gt.txt"
    gt.write_text(gt.read_text() + "1,4,10,10,10,10,1,9,1\n")
    with pytest.raises(DataError, match=r"gt\.txt:2: class 9 is not in 1\.\.3"):
        load_dataset_yaml(path, "train")
    records, info = load_dataset_yaml(path, "train", skip_invalid=True)
    assert len(records) == 9 and info.num_identities == 3


# -------------------------------------------------------------------------------- image conversion


def _png16_rgb(path: Path, array: np.ndarray) -> None:
    """Write a 16-bit RGB PNG by hand (PIL cannot write one)."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_images_become_rgb_8bit(tmp_path):
    gray = tmp_path / "gray.png"
    Image.new("L", (4, 3), 77).save(gray)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (4, 3), (10, 20, 30, 0)).save(rgba)
    g16 = tmp_path / "g16.png"
    Image.fromarray(np.full((3, 4), 40000, dtype=np.uint16)).save(g16)
    c16 = tmp_path / "c16.png"
    _png16_rgb(c16, np.stack([np.full((3, 4), v, np.uint16) for v in (65535, 32768, 256)], -1))
    pal = tmp_path / "pal.png"
    Image.new("RGB", (4, 3), (204, 102, 0)).convert("P").save(pal)  # a web-palette colour
    expected = {
        gray: (77, 77, 77),
        rgba: (10, 20, 30),  # alpha dropped, as OpenCV's imread
        g16: (156, 156, 156),  # 40000 / 256
        c16: (255, 128, 1),
        pal: (204, 102, 0),
    }
    for path, colour in expected.items():
        image = load_rgb(path)
        array = np.asarray(image)
        assert image.mode == "RGB" and array.dtype == np.uint8 and array.shape == (3, 4, 3), path
        assert tuple(array[1, 1]) == colour, path


def test_problem_kinds_are_documented():
    from unified.data import validate

    for kind in ("box_not_finite", "box_outside", "box_size", "unknown_class", "invalid_identity", "bad_row"):
        assert f"``{kind}``" in validate.__doc__
