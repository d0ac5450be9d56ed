"""The synthetic world: deterministic bytes, cached, atomic, and loadable without a single problem."""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unified.data import load_dataset_yaml, synthetic
from unified.data.synthetic import CLASS_NAMES, SCENE_LABELS, make_synthetic

TINY = {"images": 5, "val_images": 2, "sequences": 1, "val_sequences": 1, "frames": 4, "size": 64}


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_world(tmp_path):
    a = make_synthetic(tmp_path / "a", seed=5, **TINY).parent
    b = make_synthetic(tmp_path / "b", seed=5, **TINY).parent
    c = make_synthetic(tmp_path / "c", seed=6, **TINY).parent
    da, db, dc = digest(a), digest(b), digest(c)
    assert da == db
    assert da.keys() == dc.keys()
    images = [k for k in da if k.endswith(".jpg")]
    assert len(images) == 5 + 2 + 4 + 4
    assert all(da[k] != dc[k] for k in images)
    assert da["shapes/train.json"] != dc["shapes/train.json"]


def test_cached_world_is_reused_and_other_parameters_replace_it(tmp_path, monkeypatch):
    out = tmp_path / "w"
    make_synthetic(out, seed=1, **TINY)
    before = digest(out)

    def fail(*args, **kwargs):
        raise AssertionError("a cached world must not be regenerated")

    monkeypatch.setattr(synthetic, "_write_stills", fail)
    assert make_synthetic(out, seed=1, **TINY) == out / "dataset.yaml"
    monkeypatch.undo()
    make_synthetic(out, seed=1, **{**TINY, "images": 3})
    after = digest(out)
    assert after != before and len([k for k in after if k.startswith("shapes/train/")]) == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["images"] == 3 and manifest["format_version"] == synthetic.FORMAT_VERSION


def test_interrupted_generation_never_looks_complete(tmp_path, monkeypatch):
    out = tmp_path / "w"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_write_sequences", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic(out, seed=1, **TINY)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone too
    monkeypatch.undo()
    make_synthetic(out, seed=1, **TINY)
    assert synthetic.is_complete(out, synthetic.SyntheticConfig(seed=1, **TINY))


def test_a_moved_world_is_still_complete(tmp_path):
    """``out`` says where a world goes, not what it is: the manifest holds the generator parameters only."""
    make_synthetic(tmp_path / "a", seed=1, **TINY)
    (tmp_path / "a").rename(tmp_path / "b")
    assert synthetic.is_complete(tmp_path / "b", synthetic.SyntheticConfig(out="elsewhere", seed=1, **TINY))
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert "out" not in manifest["params"]


def test_the_experiment_section_is_this_config_and_its_checks_name_keys():
    from unified.config import ConfigError
    from unified.engine import experiment

    assert experiment.SyntheticConfig is synthetic.SyntheticConfig
    cfg = experiment.load_experiment(None, ["synthetic.out=w", "synthetic.images=3"])
    assert cfg.synthetic == synthetic.SyntheticConfig(out="w", images=3)
    for override, problem in [
        ("synthetic.size=32", "key 'synthetic.size': must be at least 64 pixels"),
        ("synthetic.val_images=-1", "key 'synthetic.val_images': must be >= 0"),
        ("synthetic.frames=0", "key 'synthetic.frames': must be >= 1 when sequences are requested"),
        ("synthetic.out=''", "key 'synthetic.out': must name a folder"),
        ("synthetic.imgs=3", "key 'synthetic.imgs': unknown key. Did you mean 'images'?"),
    ]:
        with pytest.raises(ConfigError) as info:
            experiment.load_experiment(None, [override])
        assert problem in str(info.value), str(info.value)
    with pytest.raises(ConfigError, match="key 'size': must be at least 64"):
        make_synthetic("unused", size=32)


def test_refuses_a_folder_that_is_not_a_world(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a synthetic world"):
        make_synthetic(tmp_path, **TINY)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_world_loads_cleanly_with_every_label_kind(tmp_path):
    path = make_synthetic(tmp_path / "w", seed=2, **{**TINY, "images": 12, "frames": 8})
    records, info = load_dataset_yaml(path, "train")
    assert info.class_names == list(CLASS_NAMES)
    assert info.image_label_names == list(CLASS_NAMES) + list(SCENE_LABELS)
    assert info.label_kinds == ("boxes", "identities", "image_labels") and info.num_identities >= 3
    stills = [r for r in records if r.part == "shapes"]
    frames = [r for r in records if r.part == "tracks"]
    assert len(stills) == 12 and len(frames) == 8
    for r in stills:
        classes = set(r.labels["boxes"].classes.tolist())
        assert classes and {int(i) for i in r.labels["image_labels"] if i < len(CLASS_NAMES)} == classes
        sides = np.minimum(
            r.labels["boxes"].xyxy[:, 2] - r.labels["boxes"].xyxy[:, 0],
            r.labels["boxes"].xyxy[:, 3] - r.labels["boxes"].xyxy[:, 1],
        )
        assert sides.min() >= 4  # 64 px images: objects from about 5 px up
    for r in frames:
        assert (r.labels["identities"] >= 0).all() and r.sequence == "synth-train-01"
    # identities persist over frames and keep their class
    ids = {}
    for r in frames:
        for i, c in zip(r.labels["identities"].tolist(), r.labels["boxes"].classes.tolist()):
            assert ids.setdefault(i, c) == c
    assert max(sum(i in r.labels["identities"] for r in frames) for i in ids) >= 4
    val, _ = load_dataset_yaml(path, "val")
    assert len(val) == 2 + 8


def test_scene_labels_show_in_the_pixels():
    stats = {name: [] for name in SCENE_LABELS}
    plain, plain_noise = [], []
    for index in range(40):
        data, objects, labels = synthetic.render_still(0, "train", index, 96)
        image = np.asarray(Image.open(io.BytesIO(data)), dtype=float)
        brightness = image.mean()
        noise = np.abs(np.diff(image, axis=1)).mean()
        if "night" in labels:
            stats["night"].append(brightness)
        elif "noisy" not in labels:
            plain.append(brightness)
            plain_noise.append(noise)
        if "noisy" in labels and "night" not in labels:
            stats["noisy"].append(noise)
        assert all(o["bbox"][2] > 0 and o["bbox"][3] > 0 for o in objects)
    assert stats["night"] and np.mean(stats["night"]) < 0.75 * np.mean(plain)
    assert stats["noisy"] and np.mean(stats["noisy"]) > 1.5 * np.mean(plain_noise)


def test_command_line_tool(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    try:
        import make_synthetic as tool
    finally:
        sys.path.pop(0)
    args = [
        "--out",
        str(tmp_path / "cli"),
        "--images",
        "3",
        "--sequences",
        "1",
        "--frames",
        "2",
        "--size",
        "64",
    ]
    assert tool.main(args) == 0
    assert "ready in" in capsys.readouterr().out
    assert "flip_idx = [0, 3, 2, 1]" in tool.EPILOG and "dataset-all.yaml" in tool.EPILOG
    assert (tmp_path / "cli" / synthetic.ALL_YAML).is_file()
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert manifest["params"] == {
        "images": 3,
        "val_images": 1,
        "sequences": 1,
        "val_sequences": 1,
        "frames": 2,
        "size": 64,
        "seed": 0,
    }


STILLS = {"images": 10, "val_images": 1, "sequences": 0, "val_sequences": 0, "size": 80}


def decode(segmentation: dict) -> np.ndarray:
    from pycocotools import mask as mask_util

    return mask_util.decode({**segmentation, "counts": segmentation["counts"].encode("ascii")}).astype(bool)


def test_masks_and_keypoints_agree_with_boxes_and_occlusion(tmp_path):
    out = make_synthetic(tmp_path / "w", seed=3, **STILLS).parent
    coco = json.loads((out / "shapes" / "train.json").read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    occluded = 0
    for anns in by_image.values():
        masks = [decode(a["segmentation"]) for a in anns]  # annotations in drawing order
        assert all(m.shape == (80, 80) for m in masks)
        assert (np.sum(masks, 0) <= 1).all()  # visible parts never overlap
        for k, (ann, mask) in enumerate(zip(anns, masks)):
            x, y, w, h = ann["bbox"]
            assert ann["area"] == mask.sum() >= 0.6 * 40
            ys, xs = np.nonzero(mask)  # the visible part lies in the box of the whole shape
            assert xs.min() >= x and ys.min() >= y and xs.max() < x + w and ys.max() < y + h
            assert ann["num_keypoints"] == len(synthetic.KEYPOINT_NAMES) == 4
            points = np.array(ann["keypoints"]).reshape(4, 3)
            px, py = (points[:, 0] - 0.5).astype(int), (points[:, 1] - 0.5).astype(int)
            assert np.allclose(points[:, :2] - 0.5, np.stack([px, py], 1))  # pixel centres
            # top, right, bottom, left: on the box's edges (the box is the whole shape's)
            assert py[0] == y and px[1] == x + w - 1 and py[2] == y + h - 1 and px[3] == x
            for v, cx, cy in zip(points[:, 2], px, py):
                if v == 2:
                    assert mask[cy, cx]
                else:  # covered by a shape drawn later
                    assert v == 1 and not mask[cy, cx]
                    assert any(later[cy, cx] for later in masks[k + 1 :])
                    occluded += 1
    assert occluded  # the world has occluded keypoints to learn from


def test_keypoint_visibility_and_extreme_points():
    """v = 2 exactly where the visible mask is; extreme points of a hand-made mask, and their flip."""
    for index in range(8):
        _, objects, _ = synthetic.render_still(4, "train", index, 96)
        for obj in objects:
            mask = decode(obj["segmentation"])
            points = np.array(obj["keypoints"]).reshape(4, 3)
            assert mask[(points[:, 1] - 0.5).astype(int), (points[:, 0] - 0.5).astype(int)].tolist() == [
                v == 2 for v in points[:, 2]
            ]
    mask = np.zeros((6, 7), bool)
    mask[1, 2:5] = mask[2, 1:6] = mask[3, 3] = True
    assert synthetic._extreme_points(mask) == [(3, 1), (5, 2), (3, 3), (1, 2)]
    flipped = synthetic._extreme_points(mask[:, ::-1])  # flip_idx maps the flipped points back
    assert [(6 - flipped[j][0], flipped[j][1]) for j in synthetic.FLIP_IDX] == synthetic._extreme_points(mask)


def test_dataset_all_yaml_loads_masks_and_keypoints(tmp_path):
    import yaml

    import unified.tasks.pose  # noqa: F401  (registers the kinds; built-ins load on their own too)
    import unified.tasks.segment  # noqa: F401
    from unified.config import ConfigError

    path = make_synthetic(tmp_path / "w", seed=3, **{**STILLS, "sequences": 1, "frames": 3})
    all_path = path.parent / synthetic.ALL_YAML
    records, info = load_dataset_yaml(all_path, "train")
    assert set(info.label_kinds) == {"boxes", "identities", "image_labels", "masks", "keypoints"}
    assert info.kind_options["keypoints"] == {
        "kpt_shape": [4, 3],
        "flip_idx": [0, 3, 2, 1],
        "skeleton": [[0, 1], [1, 2], [2, 3], [3, 0]],
    }
    coco = json.loads((path.parent / "shapes" / "train.json").read_text())
    stills = [r for r in records if r.part == "shapes"]
    assert len(stills) == 10 and sum(len(r.labels["boxes"].classes) for r in stills) == len(
        coco["annotations"]
    )
    for r in stills:
        n = len(r.labels["boxes"].classes)
        assert len(r.labels["masks"]) == n and r.labels["keypoints"].shape == (n, 4, 3)
        assert set(r.labels["keypoints"][..., 2].ravel().tolist()) <= {1.0, 2.0}
    # dataset.yaml: the demo's kinds, unchanged, with the keypoint options it does not use
    records, info = load_dataset_yaml(path, "train")
    assert info.label_kinds == ("boxes", "identities", "image_labels")
    assert all("masks" not in r.labels and "keypoints" not in r.labels for r in records)
    # a YAML that declares keypoints must give their options
    body = yaml.safe_load(all_path.read_text())
    del body["kinds"]
    bad = path.parent / "no-options.yaml"
    bad.write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError, match="kinds.keypoints"):
        load_dataset_yaml(bad, "train")


#: sha256 of render_still(7, "train", 0..5, 64)'s JPEG bytes and their boxes, made by format 1: masks and
#: keypoints draw no random numbers, so the pixels stay those of format 1.
FORMAT_1_STILLS = "7d0a1a4c01d3fe7362378bb7521a78f0fd1c624c383369fc57f6c407fd004781"
FORMAT_1_BOXES = [
    [[13, 29, 18, 15], [29, 13, 14, 11], [14, 45, 12, 14], [16, 48, 13, 10]],
    [[26, 11, 12, 12], [4, 3, 15, 12], [29, 26, 19, 12], [4, 45, 13, 17], [5, 10, 14, 13], [40, 8, 15, 16]],
    [[31, 11, 9, 13]],
    [[36, 42, 8, 7], [28, 5, 14, 12]],
    [[18, 38, 16, 16], [5, 47, 18, 14], [14, 3, 14, 11], [25, 52, 10, 9]],
    [[51, 52, 11, 11], [7, 11, 9, 13], [37, 54, 10, 9]],
]


def test_images_and_boxes_are_those_of_format_1():
    h, boxes = hashlib.sha256(), []
    for index in range(6):
        data, objects, _ = synthetic.render_still(7, "train", index, 64)
        h.update(data)
        boxes.append([o["bbox"] for o in objects])
    assert boxes == FORMAT_1_BOXES
    assert h.hexdigest() == FORMAT_1_STILLS
