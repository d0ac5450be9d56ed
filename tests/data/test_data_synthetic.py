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
