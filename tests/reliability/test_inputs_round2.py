"""Round 2 of hostile inputs to the tools and the data readers: an undecodable image among good ones,
impossible export arguments, EXIF-rotated photos, linked folders, repeated list entries, a split whose
label files are all empty, an evaluation of a task the model lacks."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.tools.helpers import load_tool, save_tiny_checkpoint, write_images
from unified.data import DataError, load_dataset_yaml, load_rgb
from unified.data.validate import ProblemLog, check_image

detect = load_tool("detect")
export = load_tool("export")
evaluate = load_tool("evaluate")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pt")


def test_detect_skips_an_undecodable_image_names_it_and_writes_everything_else(tmp_path, checkpoint, capsys):
    good = write_images(tmp_path / "in")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    argv = ["--weights", str(checkpoint), "--source", str(tmp_path / "in"), "--img", "64"]
    assert detect.main([*argv, "--save-json", "--save-txt", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 image(s)" in err and "broken.jpg" in err
    records = json.loads((out / "predictions.json").read_text())
    assert {r["file_name"] for r in records} == {p.name for p in good}
    assert sorted(p.stem for p in (out / "labels").iterdir()) == sorted(p.stem for p in good)


def test_detect_with_nothing_decodable_is_an_error(tmp_path, checkpoint, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    argv = ["--weights", str(checkpoint), "--source", str(tmp_path / "in"), "--out", str(tmp_path / "o")]
    assert detect.main(argv) == 2
    assert "none of its 1 image(s) could be decoded" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--img", "0"], "--img sizes must be positive"), (["--opset", "7"], "--opset must be in 11..20")],
)
def test_impossible_export_arguments_are_one_line_errors(tmp_path, checkpoint, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--weights", str(checkpoint), "--out", str(tmp_path / "m.onnx"), *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def exif_rotated(path: Path, width: int = 40, height: int = 20) -> np.ndarray:
    """A ``width x height`` image stored with EXIF orientation 6 (shown turned 90 degrees clockwise); its
    pixels as shown."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 4] = (255, 0, 0)  # a red band on the left of the stored image
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif.tobytes())
    return np.rot90(pixels, k=-1)  # what a viewer shows: turned clockwise, the band on top


def test_an_exif_rotated_photo_is_read_upright_with_its_shown_size(tmp_path):
    shown = exif_rotated(tmp_path / "photo.jpg")
    assert check_image(tmp_path / "photo.jpg", "here", ProblemLog()) == (20, 40)
    decoded = np.asarray(load_rgb(tmp_path / "photo.jpg"))
    assert decoded.shape == shown.shape == (40, 20, 3)
    assert decoded[:8, :, 0].mean() > 200 and decoded[-8:, :, 0].mean() < 60  # the red band is on top


def yolo_part(root: Path, images: str, rows: dict[str, str] | None = None, names=("a",)) -> Path:
    for stem, text in (rows or {}).items():
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{stem}.txt").write_text(text)
    data = root / "data.yaml"
    part = {"name": "p", "format": "yolo", "label_kinds": ["boxes"], "train": images}
    data.write_text(yaml.safe_dump({"names": list(names), "parts": [part]}))
    return data


def test_images_in_linked_folders_are_found_and_a_link_loop_is_walked_once(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write_images(elsewhere)
    images = tmp_path / "images"
    write_images(images / "own")
    os.symlink(elsewhere, images / "linked")
    os.symlink(images, images / "own" / "loop")  # back up the tree
    records, _ = load_dataset_yaml(yolo_part(tmp_path, "images", {"wide": "0 0.5 0.5 0.2 0.2\n"}), "train")
    assert sorted(Path(r.path).parent.name for r in records) == ["linked", "linked", "own", "own"]


def test_an_image_listed_twice_is_named_and_read_once_when_skipping(tmp_path):
    write_images(tmp_path / "images")
    (tmp_path / "train.txt").write_text("images/wide.jpg\nimages/tall.png\n./images/wide.jpg\n")
    data = yolo_part(tmp_path, "train.txt")
    with pytest.raises(DataError, match=r"train.txt, line 3: .*listed again \(first on line 1\)"):
        load_dataset_yaml(data, "train")
    records, _ = load_dataset_yaml(data, "train", skip_invalid=True)
    assert len(records) == 2


def test_a_split_whose_label_files_are_all_empty_is_reported(tmp_path, caplog):
    write_images(tmp_path / "images")
    data = yolo_part(tmp_path, "images", {"wide": "", "tall": "\n"})
    with caplog.at_level(logging.WARNING, logger="unified.data.dataset_yaml"):
        records, _ = load_dataset_yaml(data, "train")
    assert len(records) == 2
    assert "none of its 2 images has a box" in caplog.text


def test_evaluating_a_task_the_model_lacks_is_a_clear_error(tmp_path, checkpoint, capsys):
    write_images(tmp_path / "images")
    data = yolo_part(tmp_path, "images", {"wide": "0 0.5 0.5 0.2 0.2\n"}, names=("car", "person", "dog"))
    argv = ["--weights", str(checkpoint), "--data", str(data), "--split", "train", "--tasks", "segment"]
    assert evaluate.main([*argv, "--workers", "0", "--out", str(tmp_path / "e")]) == 2
    assert "--tasks ['segment']" in capsys.readouterr().err
