"""tools/detect.py writes every file it promises, with predictions that agree with the library."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unified
from tests.tools.helpers import INFO, load_tool, save_tiny_checkpoint, write_images
from unified.inference import (
    SourceError,
    iter_frames,
    predict_frames,
    prepare,
    resolve_source,
)

detect = load_tool("detect")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pt")


def test_detect_writes_images_txt_json_labels_and_embeddings(tmp_path: Path, checkpoint: Path) -> None:
    images = write_images(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["--weights", str(checkpoint), "--source", str(tmp_path / "in"), "--img", "64", "--conf", "0.3"]
    flags = ["--save-txt", "--save-json", "--save-labels", "--save-embeddings", "--out", str(out)]
    assert detect.main([*argv, *flags]) == 0

    records = json.loads((out / "predictions.json").read_text())
    assert json.loads((out / "categories.json").read_text()) == [
        {"id": i, "name": n} for i, n in enumerate(INFO.class_names)
    ]
    labels = json.loads((out / "image_labels.json").read_text())
    total = 0
    for image_id, path in enumerate(sorted(images)):
        with Image.open(path) as original:
            size = original.size
        with Image.open(out / path.name) as drawn:
            assert drawn.size == size  # annotated at the original resolution
        rows = [line.split() for line in (out / "labels" / f"{path.stem}.txt").read_text().splitlines()]
        assert rows, "the biased tiny model should find boxes in every image"
        assert all(len(r) == 6 and 0 <= float(r[1]) <= 1 and 0 <= float(r[2]) <= 1 for r in rows)
        assert all(float(r[5]) >= 0.3 for r in rows)
        mine = [r for r in records if r["image_id"] == image_id]
        assert len(mine) == len(rows) and all(r["file_name"] == path.name for r in mine)
        for record, row in zip(mine, rows):
            x, y, w, h = record["bbox"]
            assert 0 <= x and x + w <= size[0] + 1e-3 and 0 <= y and y + h <= size[1] + 1e-3
            assert int(row[0]) == record["category_id"]
            assert abs((x + w / 2) / size[0] - float(row[1])) < 1e-4
        vectors = np.load(out / "embeddings" / f"{path.stem}.npy")
        assert vectors.shape == (len(rows), 16)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        entry = labels[path.stem]
        assert set(entry["scores"]) == set(INFO.image_label_names)
        assert all(entry["scores"][name] >= 0.5 for name in entry["labels"])  # the jdc default threshold
        total += len(rows)
    assert len(records) == total


def test_detect_matches_the_library_predictions(tmp_path: Path, checkpoint: Path) -> None:
    write_images(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["--weights", str(checkpoint), "--source", str(tmp_path / "in" / "*.jpg"), "--img", "64"]
    assert detect.main([*argv, "--save-json", "--no-save-img", "--no-fuse", "--out", str(out)]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert not list(out.glob("*.jpg"))  # --no-save-img

    model = unified.load(checkpoint)
    task = model.tasks["detect"]
    task.cfg.conf_thres, task.cfg.iou_thres, task.cfg.multi_label = 0.25, 0.45, False
    [(frame, predictions)] = list(predict_frames(model, iter_frames(tmp_path / "in" / "*.jpg"), 64))
    boxes = predictions["detect"]["boxes"]
    assert len(records) == len(boxes)
    got = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in records)])
    assert torch.allclose(got, boxes, atol=2e-3)


def test_prepare_letterboxes_like_the_dataset() -> None:
    frame = next(iter_frames_of(np.full((30, 60, 3), 200, dtype=np.uint8)))
    image, meta = prepare(frame, 64)
    assert image.shape == (3, 64, 64) and meta["ratio"] == pytest.approx(64 / 60)
    assert meta["pad"] == (0, 16) and meta["orig_shape"] == (30, 60)
    assert image[:, 0, 0].tolist() == pytest.approx([114 / 255] * 3)  # YOLOR grey padding
    assert image[:, 32, 32].tolist() == pytest.approx([200 / 255] * 3)


def iter_frames_of(array: np.ndarray):
    from unified.inference import Frame

    yield Frame(array, "memory.png", "memory", 0)


def test_video_source_is_annotated_and_labelled_per_frame(tmp_path: Path, checkpoint: Path) -> None:
    av = pytest.importorskip("av")
    video = tmp_path / "clip.mp4"
    with av.open(str(video), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        rng = np.random.default_rng(1)
        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(
                rng.integers(0, 255, (64, 96, 3), dtype=np.uint8), format="rgb24"
            )
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "out"
    argv = [
        "--weights",
        str(checkpoint),
        "--source",
        str(video),
        "--img",
        "64",
        "--save-txt",
        "--out",
        str(out),
    ]
    assert detect.main(argv) == 0
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"clip_{i:06d}.txt" for i in (1, 2, 3)]
    with av.open(str(out / "clip.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (64, 96, 3)


def test_detect_errors_are_clear(tmp_path: Path, checkpoint: Path, capsys) -> None:
    detect_only = save_tiny_checkpoint(tmp_path / "detect_only.pt", tasks=("detect",))
    write_images(tmp_path / "in")
    base = ["--source", str(tmp_path / "in"), "--img", "64", "--out", str(tmp_path / "out")]
    assert detect.main(["--weights", str(detect_only), *base, "--save-embeddings"]) == 2
    assert (
        "--save-arrays needs a model with a task that gives them (registered: ['jde'])"
        in capsys.readouterr().err
    )
    missing = [
        "--weights",
        str(checkpoint),
        "--source",
        str(tmp_path / "nothing*.jpg"),
        "--out",
        str(tmp_path),
    ]
    assert detect.main(missing) == 2
    assert "holds no image" in capsys.readouterr().err
    with pytest.raises(SourceError, match="does not exist"):
        resolve_source(tmp_path / "absent.jpg")
    with pytest.raises(SystemExit):
        detect.parse_args(["--weights", "w.pt", "--source", "x", "--img", "100"])  # not a multiple of 32


def test_predictions_json_takes_the_sources_own_coco_ids(tmp_path: Path, checkpoint: Path, capsys) -> None:
    """COCO file names are numbers (their image ids); --coco-json gives the file's own image and category
    ids, so pycocotools can score predictions.json against it as it is."""
    folder = tmp_path / "val2017"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ("000000000139.jpg", "000000000785.jpg"):
        Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(folder / name)
    argv = ["--weights", str(checkpoint), "--source", str(folder), "--img", "64", "--conf", "0.3"]
    assert detect.main([*argv, "--save-json", "--no-save-img", "--out", str(tmp_path / "a")]) == 0
    records = json.loads((tmp_path / "a" / "predictions.json").read_text())
    assert records and {r["image_id"] for r in records} == {139, 785}  # the numbers of the file names
    assert {r["category_id"] for r in records} <= set(range(len(INFO.class_names)))

    coco = tmp_path / "instances_val2017.json"
    categories = [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]
    images = [{"id": 5001, "file_name": "000000000139.jpg"}, {"id": 5002, "file_name": "000000000785.jpg"}]
    coco.write_text(json.dumps({"images": images, "annotations": [], "categories": categories}))
    out = tmp_path / "b"
    flags = ["--save-json", "--save-txt", "--no-save-img", "--coco-json", str(coco), "--out", str(out)]
    assert detect.main([*argv, *flags]) == 0
    mine = json.loads((out / "predictions.json").read_text())
    assert {r["image_id"] for r in mine} == {5001, 5002}
    by_index = {0: 3, 1: 1, 2: 18}
    rows = [line.split() for line in (out / "labels" / "000000000139.txt").read_text().splitlines()]
    first = [r for r in mine if r["image_id"] == 5001]
    assert [r["category_id"] for r in first] == [by_index[int(row[0])] for row in rows]
    assert json.loads((out / "categories.json").read_text()) == [
        {"id": by_index[i], "name": n} for i, n in enumerate(INFO.class_names)
    ]

    categories.pop()  # the model's 'dog' is not a category of the file: one line, exit 2
    coco.write_text(json.dumps({"images": images, "annotations": [], "categories": categories}))
    capsys.readouterr()
    assert detect.main([*argv, "--save-json", "--coco-json", str(coco), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "['dog']" in err and str(coco) in err and err.count("\n") == 1
    images.pop()  # an image the file does not list
    categories.append({"id": 18, "name": "dog"})
    coco.write_text(json.dumps({"images": images, "annotations": [], "categories": categories}))
    assert detect.main([*argv, "--save-json", "--coco-json", str(coco), "--out", str(tmp_path / "d")]) == 2
    assert "000000000785.jpg is not in its 'images'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # ids for a file that is not written
        detect.parse_args([*argv, "--coco-json", str(coco)])
