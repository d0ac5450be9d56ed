"""Masks and keypoints reach every tool through the task contract: drawn, written by tools/detect.py, exported
to ONNX and reassembled from onnxruntime's outputs as PyTorch assembles them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

import unified
from tests.tools.helpers import INFO, load_tool, save_tiny_checkpoint, write_images
from unified.drawing import color, draw_keypoints, overlay_masks
from unified.inference import iter_frames, predict_frames

FIVE = ("detect", "jdc", "jde", "segment", "pose")
detect_tool = load_tool("detect")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "five.pt", tasks=FIVE)


def test_overlay_tints_exactly_the_mask_pixels() -> None:
    canvas = Image.new("RGB", (6, 4), (100, 100, 100))
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    pixels = np.asarray(overlay_masks(canvas, [mask], [(200, 0, 100)], alpha=0.5))
    assert (pixels[mask] == [150, 50, 100]).all() and (pixels[~mask] == 100).all()


def test_keypoints_below_the_threshold_are_not_drawn() -> None:
    canvas = Image.new("RGB", (40, 20), (0, 0, 0))
    points = np.array([[[10.0, 10.0, 0.9], [30.0, 10.0, 0.1]]])
    pixels = np.asarray(draw_keypoints(canvas, points, threshold=0.5, skeleton=[[0, 1]]))
    assert tuple(pixels[10, 10]) == color(0)
    assert (pixels[:, 25:] == 0).all()  # the hidden point and the bone to it stay undrawn


def test_detect_tool_writes_and_draws_masks_and_keypoints(tmp_path: Path, checkpoint: Path) -> None:
    images = write_images(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["--weights", str(checkpoint), "--source", str(tmp_path / "in"), "--img", "64", "--conf", "0.3"]
    assert detect_tool.main([*argv, "--save-json", "--save-arrays", "--save-labels", "--out", str(out)]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert records, "the biased tiny model should find boxes"
    k = unified.load(checkpoint).tasks["pose"].options.num_keypoints
    for image_id, path in enumerate(sorted(images)):
        with Image.open(path) as original:
            width, height = original.size
        mine = [r for r in records if r["image_id"] == image_id]
        assert len(np.load(out / "embeddings" / f"{path.stem}.npy")) == len(mine)
        for record in mine:
            mask = coco_mask.decode(record["segmentation"])  # counts written as text, pycocotools reads it
            assert mask.shape == (height, width)
            x, y, w, h = record["bbox"]
            rows, cols = np.nonzero(mask)
            assert not len(rows) or (cols.min() >= x - 1 and cols.max() <= x + w and rows.max() <= y + h)
            points = np.array(record["keypoints"]).reshape(k, 3)
            assert (points[:, 0] <= width).all() and (points[:, 1] <= height).all()
            assert ((0 <= points[:, 2]) & (points[:, 2] <= 1)).all()


def test_masks_are_drawn_where_they_are(tmp_path: Path, checkpoint: Path) -> None:
    model = unified.load(checkpoint).for_inference(fuse=False)
    model.tasks["segment"].cfg.mask_threshold = 0.01  # untrained: make the masks cover their boxes
    write_images(tmp_path / "in")
    from unified.inference import draw_predictions

    [(frame, predictions), *_] = list(predict_frames(model, iter_frames(tmp_path / "in"), 64))
    drawn = np.asarray(draw_predictions(model, frame.image, predictions), dtype=np.int32)
    masks = [coco_mask.decode(rle).astype(bool) for rle in predictions["segment"]["rles"]]
    assert masks and any(m.any() for m in masks)
    covered = np.any(masks, axis=0)
    assert (drawn[covered] != frame.image[covered]).any(axis=-1).mean() > 0.5


def test_onnx_outputs_rebuild_the_pytorch_masks_and_keypoints(tmp_path: Path, checkpoint: Path) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from unified.export.onnx import check_onnx, export_onnx, postprocess_decoded
    from unified.inference import prepare

    model = unified.load(checkpoint).fuse().eval()
    detect = model.tasks["detect"]
    detect.cfg.conf_thres, detect.cfg.iou_thres, detect.cfg.multi_label = 0.25, 0.45, False  # as ORT's NMS
    path, names = export_onnx(model, tmp_path / "five.onnx", (64, 64))
    assert names == [
        "decoded", "jdc_scores", "jde_embeddings", "segment_coefficients", "segment_protos", "pose_keypoints",
    ]  # fmt: skip
    report = check_onnx(path, model, (64, 64))
    assert report.ok, report.summary()

    frame = next(iter(iter_frames(write_images(tmp_path / "in")[0])))
    image, meta = prepare(frame, 64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip(names, session.run(None, {"images": image[None].numpy()})))
    [det] = postprocess_decoded(got["decoded"], 0.25, 0.45)
    [(_, expected)] = list(predict_frames(model, [frame], 64))
    assert torch.equal(det["index"], expected["detect"]["index"])

    segment = model.tasks["segment"]
    masks = segment.assemble(
        torch.from_numpy(got["segment_coefficients"][0])[det["index"]],
        torch.from_numpy(got["segment_protos"][0]),
        det["boxes"],
        (64, 64),
        meta,
    )
    want = np.stack([coco_mask.decode(r) for r in expected["segment"]["rles"]]).astype(bool)
    agree = (masks.numpy() == want).mean()
    assert agree > 0.999  # pixels at the threshold may flip within the export tolerance
    keypoints = torch.from_numpy(got["pose_keypoints"][0])[det["index"]]
    pad, ratio = torch.tensor(meta["pad"]), meta["ratio"]
    xy = ((keypoints[..., :2] - pad) / ratio).clamp(min=0)
    xy[..., 0], xy[..., 1] = (
        xy[..., 0].clamp(max=frame.image.shape[1]),
        xy[..., 1].clamp(max=frame.image.shape[0]),
    )
    assert torch.allclose(xy, expected["pose"]["keypoints"][..., :2], atol=1e-2)
    assert INFO.class_names == model.info.class_names
