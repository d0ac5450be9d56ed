"""The ONNX Runtime backend: an exported graph quacks like the eval-mode model, every task's post-processing
gives what PyTorch gives, and `unified val` / int8 export run through it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask

import unified
from tests.tools.helpers import INFO, TINY, load_tool
from unified.data import load_dataset_yaml
from unified.engine.evaluate import evaluate_dataset, predict
from unified.export.onnx import METADATA_FORMAT, export_onnx, read_metadata
from unified.model import build_model
from unified.task import Task

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from unified.inference.onnx_backend import OnnxModel, load_model  # noqa: E402

FIVE = ("detect", "jdc", "jde", "segment", "pose")
TOLERANCE = 1e-4


def tiny_model(tasks=FIVE, info=INFO, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised tiny model with objectness raised a little: scores spread over (0.3, 0.9), so
    NMS has boxes to keep and no exact ties to order differently."""
    torch.manual_seed(seed)
    model = build_model(TINY, tasks=tasks, info=info, task_options={"jde": {"embedding_dim": 16}})
    with torch.no_grad():
        for conv in model.heads["detect"].m:
            conv.bias.view(3, -1)[:, 4] += 2.0
    return model.eval().fuse()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    model = tiny_model()
    path, _ = export_onnx(model, tmp_path_factory.mktemp("onnx") / "five.onnx", (64, 96))
    return model, path


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.float() - ref.float()).abs().max() / max(1.0, ref.abs().max().item())).item()


def test_metadata_travels_in_the_onnx_file(exported) -> None:
    model, path = exported
    meta = read_metadata(path)
    assert meta["format"] == METADATA_FORMAT and meta["precision"] == "fp32"
    assert meta["class_names"] == INFO.class_names and meta["tasks"] == list(model.task_names)
    assert meta["strides"] == [8, 16] and meta["img_size"] == [64, 96]
    assert meta["dataset_info"]["num_identities"] == INFO.num_identities
    assert meta["task_options"]["jde"]["embedding_dim"] == 16
    assert meta["task_options"]["detect"]["conf_thres"] == model.tasks["detect"].cfg.conf_thres
    assert meta["model_config"]["anchors"] == TINY["anchors"]


def test_onnx_model_gives_the_eval_outputs_post_processing_reads(exported) -> None:
    model, path = exported
    backend = OnnxModel(path)
    assert backend.task_names == list(model.task_names) and backend.info == model.info
    assert backend.heads["detect"].stride_values == [8, 16] and backend.img_size == (64, 96)
    images = torch.rand(3, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(images)
    got = backend(images)
    assert relative_error(got["detect"]["decoded"], ref["detect"]["decoded"]) < TOLERANCE
    assert relative_error(got["jdc"]["scores"], ref["jdc"]["scores"]) < TOLERANCE
    for a, b in zip(got["jde"]["embeddings"], ref["jde"]["embeddings"], strict=True):
        assert a.shape == b.shape and relative_error(a, torch.nn.functional.normalize(b, dim=1)) < TOLERANCE
    assert relative_error(got["pose"]["decoded"], ref["pose"]["decoded"]) < TOLERANCE
    assert relative_error(got["segment"]["decoded"], ref["segment"]["decoded"]) < TOLERANCE
    assert relative_error(got["segment"]["protos"], ref["segment"]["protos"]) < TOLERANCE


def test_every_task_post_processes_onnx_outputs_as_pytorch_ones(exported) -> None:
    model, path = exported
    backend = OnnxModel(path)
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    meta = [
        {"image_id": 0, "orig_shape": (64, 96), "ratio": 1.0, "pad": (0, 0)},
        {"image_id": 1, "orig_shape": (128, 192), "ratio": 0.5, "pad": (0, 0)},
    ]
    with torch.no_grad():
        ref = predict(model, images, meta)
    got = predict(backend, images, meta)
    for i in range(2):
        a, b = got["detect"][i], ref["detect"][i]
        assert len(b["index"]) > 0 and torch.equal(a["index"], b["index"])
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-3) and torch.allclose(
            a["scores"], b["scores"], atol=1e-5
        )
        assert torch.allclose(got["jdc"][i]["scores"], ref["jdc"][i]["scores"], atol=1e-5)
        assert torch.allclose(got["jde"][i]["embeddings"], ref["jde"][i]["embeddings"], atol=1e-4)
        assert torch.allclose(got["pose"][i]["keypoints"], ref["pose"][i]["keypoints"], atol=1e-3)
        ours = coco_mask.decode(got["segment"][i]["rles"]).astype(bool)
        theirs = coco_mask.decode(ref["segment"][i]["rles"]).astype(bool)
        assert ours.shape == theirs.shape and (ours != theirs).mean() < 1e-3


def test_onnx_model_says_what_it_cannot_do(tmp_path: Path, exported) -> None:
    _, path = exported
    backend = OnnxModel(path)
    with pytest.raises(ValueError, match="takes 64x96 inputs"):
        backend(torch.zeros(1, 3, 64, 64))
    with pytest.raises(RuntimeError, match="inference only"):
        backend.train()
    assert backend.eval() is backend and backend.for_inference(fuse=True) is backend
    with pytest.raises(ValueError, match="cpu"):
        load_model(path, device="cuda")
    foreign = tmp_path / "foreign.onnx"
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(foreign))
    with pytest.raises(ValueError, match="not an ONNX graph written by unified export"):
        OnnxModel(foreign)


def test_default_read_export_outputs_inverts_the_default_export_names() -> None:
    class Fake:
        name = "thing"

    named = {"thing_maps_1": torch.ones(1), "thing_maps_0": torch.zeros(1), "thing_score": torch.ones(2)}
    outputs = {"thing": {"maps": [named["thing_maps_0"], named["thing_maps_1"]], "score": named["thing_score"]}}
    exported = Task.export_outputs(Fake(), outputs)  # type: ignore[arg-type]
    assert exported.keys() == named.keys() and all(exported[k] is named[k] for k in named)
    out = Task.read_export_outputs(Fake(), {**named, "other_x": torch.ones(1)}, (8, 8))  # type: ignore[arg-type]
    assert set(out) == {"maps", "score"} and [float(t) for t in out["maps"]] == [0.0, 1.0]


@pytest.fixture(scope="module")
def world_model(tiny_world: Path, tmp_path_factory) -> tuple[torch.nn.Module, Path, Path]:
    """A tiny detect + jdc + jde model sized for the tiny world, exported at 96² fp32."""
    info = load_dataset_yaml(tiny_world, "train").info
    model = tiny_model(("detect", "jdc", "jde"), info)
    path, _ = export_onnx(model, tmp_path_factory.mktemp("world_onnx") / "world.onnx", (96, 96))
    return model, path, tiny_world


def test_val_command_runs_the_onnx_graph_with_the_pytorch_metrics(
    tmp_path: Path, world_model, capsys
) -> None:
    model, path, world = world_model
    evaluate = load_tool("evaluate")
    out = tmp_path / "val"
    argv = ["--weights", str(path), "--data", str(world), "--workers", "0", "--out", str(out)]
    assert evaluate.main(argv) == 0  # the image size comes from the graph (96)
    from_onnx = json.loads((out / "metrics.json").read_text())
    reference = evaluate_dataset(model, world, "val", 96, 16, 0)
    for task in ("detect", "jdc"):
        for key in ("AP50", "mAP"):
            if key in reference[task]:
                assert from_onnx[task][key] == pytest.approx(reference[task][key], abs=1e-3)
    assert (out / "val_batch0_pred.jpg").exists()


def test_int8_export_quantises_every_head_and_reports_the_drop(tmp_path: Path, world_model, capsys) -> None:
    from unified.export.int8 import calibration_images, head_last_convs, quantize_int8, search_int8

    _, fp32, world = world_model
    images = calibration_images(world, 96, 4)
    assert len(images) == 4 and images[0].shape == (1, 3, 96, 96) and images[0].dtype == np.float32
    last = head_last_convs(fp32)
    assert set(last) == {"decoded", "jdc_scores", "jde_embeddings"}
    assert all(last.values()) and any("detect" in n for n in last["decoded"])

    int8 = quantize_int8(fp32, tmp_path / "q.onnx", images)
    proto = onnx.load(str(int8))
    ops = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    quantised = {n.input[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    # Every conv, the heads' last ones included, reads dequantised int8 weights (per channel: one scale
    # per output channel).
    assert all(
        c.input[1] in {d.output[0] for d in proto.graph.node if d.op_type == "DequantizeLinear"}
        for c in convs
    )
    assert quantised
    scales = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    weight_dq = [
        n
        for n in proto.graph.node
        if n.op_type == "DequantizeLinear"
        and scales.get(n.input[0]) is not None
        and scales[n.input[0]].dtype == np.int8
    ]
    assert weight_dq and all(scales[n.input[1]].size > 1 for n in weight_dq if scales[n.input[0]].ndim == 4)
    meta = read_metadata(int8)
    assert meta["precision"] == "int8" and meta["int8_fp32_nodes"] == []
    backend = OnnxModel(int8)
    assert (
        backend.precision == "int8" and backend(torch.rand(2, 3, 96, 96))["detect"]["decoded"].shape[0] == 2
    )

    lines: list[str] = []
    kept = search_int8(fp32, tmp_path / "heads.onnx", world, 96, images, exclude="heads", log=lines.append)
    every_head = sorted({n for names in last.values() for n in names})
    assert kept.excluded == every_head and "AP50" in lines[0] and "drop" in lines[0]
    assert set(kept.drops()) == {"detect", "jdc", "jde"}
    dq_outputs = {
        n.output[0]
        for n in onnx.load(str(tmp_path / "heads.onnx")).graph.node
        if n.op_type == "DequantizeLinear"
    }
    heads = [n for n in onnx.load(str(tmp_path / "heads.onnx")).graph.node if n.name in every_head]
    assert heads and all(n.input[1] not in dq_outputs for n in heads)  # fp32 weights


def test_export_command_int8_flags(tmp_path: Path, world_model, capsys) -> None:
    from tests.tools.helpers import save_tiny_checkpoint

    export = load_tool("export")
    with pytest.raises(SystemExit):
        export.parse_args(["--weights", "w.pt", "--int8"])
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    with pytest.raises(SystemExit):
        export.parse_args(["--weights", str(checkpoint), "--int8", "--data", "d.yaml", "--img", "64", "96"])
    assert unified.load(checkpoint) is not None


def test_a_copy_shares_the_session_and_owns_its_task_settings(exported) -> None:
    import copy

    from unified.config import ConfigError
    from unified.inference.onnx_backend import check_onnx_size

    _, path = exported
    backend = OnnxModel(path)
    clone = copy.deepcopy(backend)
    assert clone.session is backend.session and clone.tasks["detect"] is not backend.tasks["detect"]
    clone.tasks["detect"].cfg.conf_thres = 0.9
    assert backend.tasks["detect"].cfg.conf_thres != 0.9
    assert clone.tasks["jde"].detect is clone.tasks["detect"]  # requirements stay wired within the copy
    with pytest.raises(ConfigError, match="exported at 64x96"):
        check_onnx_size(backend, 64)
    check_onnx_size(object(), 64)  # a PyTorch model: any size its strides allow


def test_end2end_nms_in_the_graph_selects_what_pytorch_nms_selects(tmp_path: Path) -> None:
    from unified.export.end2end import End2EndNMS
    from unified.ops.nms import non_max_suppression

    model = tiny_model(("detect", "jdc", "jde"))
    nms = End2EndNMS(conf_thres=0.005, iou_thres=0.45, max_det=300)
    path, names = export_onnx(model, tmp_path / "e2e.onnx", (64, 96), end2end=nms)
    assert names[-2:] == ["detections", "detection_rows"]
    assert read_metadata(path)["end2end"] == {"conf_thres": 0.005, "iou_thres": 0.45, "max_det": 300}
    backend = OnnxModel(path)  # the backend still runs the graph (it reads decoded and the task outputs)
    images = torch.rand(3, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    named = backend.run(images)
    with torch.no_grad():
        decoded = model(images)["detect"]["decoded"]
    reference = non_max_suppression(decoded, conf_thres=0.005, iou_thres=0.45, max_det=300)
    rows, detections = named["detection_rows"], named["detections"]
    for i in range(3):
        mine = rows[rows[:, 0] == i]
        assert len(mine) > 0
        theirs = set(zip(reference[i]["classes"].tolist(), reference[i]["index"].tolist()))
        assert set(map(tuple, mine[:, 1:].tolist())) == theirs
        order = reference[i]["index"].argsort()
        got = detections[detections[:, 0] == i]
        got = got[mine[:, 2].argsort()]
        torch.testing.assert_close(got[:, 1:5], reference[i]["boxes"][order], atol=1e-3, rtol=1e-5)
        torch.testing.assert_close(got[:, 5], reference[i]["scores"][order], atol=1e-5, rtol=1e-5)


def test_export_command_end2end(tmp_path: Path, capsys) -> None:
    from tests.tools.helpers import save_tiny_checkpoint

    export = load_tool("export")
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "e2e.onnx"
    argv = ["--weights", str(checkpoint), "--img", "64", "--out", str(out), "--end2end", "--conf", "0.3"]
    assert export.main(argv) == 0
    printed = capsys.readouterr().out
    assert "detections, detection_rows" in printed and ": OK" in printed


def test_prediction_writers_and_tracker_take_the_onnx_model(tmp_path: Path, world_model) -> None:
    """What predict, track and Model.predict run: frames, every task's post-processing, the writers (JSON
    records, image fields, per-detection arrays, the drawing) and the tracker's appearance input."""
    from tests.tools.helpers import write_images
    from unified.inference import (
        detection_arrays,
        draw_predictions,
        image_fields,
        instance_records,
        iter_frames,
        predict_frames,
        track_source,
    )

    model, path, _ = world_model
    backend = OnnxModel(path)
    write_images(tmp_path / "in")
    for torch_model in (model, backend):
        torch_model.tasks["detect"].cfg.conf_thres = 0.005
    ours = list(predict_frames(backend, iter_frames(str(tmp_path / "in")), 96, 2))
    theirs = list(predict_frames(model, iter_frames(str(tmp_path / "in")), 96, 2))
    assert len(ours) == 2
    for (frame, got), (_, ref) in zip(ours, theirs, strict=True):
        assert torch.equal(got["detect"]["index"], ref["detect"]["index"]) and len(got["detect"]["index"])
        records = instance_records(backend, frame, got)
        assert len(records) == len(got["detect"]["index"]) and {"bbox", "score"} <= set(records[0])
        assert set(image_fields(backend, got)) == {"labels", "scores"}
        arrays = detection_arrays(backend, got)
        np.testing.assert_allclose(
            arrays["embeddings"], detection_arrays(model, ref)["embeddings"], atol=1e-4
        )
        assert draw_predictions(backend, frame.image, got).size == frame.image.shape[1::-1]
    tracked = list(track_source(backend, tmp_path / "in", img_size=96))
    assert len(tracked) == 2


def test_predict_track_and_the_api_take_an_exported_onnx(tmp_path: Path, capsys) -> None:
    from tests.tools.helpers import save_tiny_checkpoint, write_images
    from unified import Model
    from unified.commands import predict as predict_command
    from unified.commands import track as track_command

    checkpoint = save_tiny_checkpoint(tmp_path / "w.pt")
    onnx_path = tmp_path / "w.onnx"
    assert (
        load_tool("export").main(["--weights", str(checkpoint), "--img", "64", "--out", str(onnx_path)]) == 0
    )
    write_images(tmp_path / "in")
    runs = {}
    for name, weights in (("pt", checkpoint), ("onnx", onnx_path)):
        out = tmp_path / f"out_{name}"
        argv = ["--weights", str(weights), "--source", str(tmp_path / "in"), "--img", "64", "--out", str(out)]
        assert (
            predict_command.main([*argv, "--save-json", "--save-arrays", "--save-labels", "--conf", "0.3"])
            == 0
        )
        runs[name] = json.loads((out / "predictions.json").read_text())
    assert runs["onnx"] and len(runs["onnx"]) == len(runs["pt"])
    for a, b in zip(runs["onnx"], runs["pt"], strict=True):
        assert a["category_id"] == b["category_id"] and a["score"] == pytest.approx(b["score"], abs=1e-4)
    bad = [
        "--weights",
        str(onnx_path),
        "--source",
        str(tmp_path / "in"),
        "--img",
        "96",
        "--out",
        str(tmp_path / "x"),
    ]
    assert predict_command.main(bad) == 2 and "exported at 64x64" in capsys.readouterr().err

    track_out = tmp_path / "track.txt"
    argv = [
        "--weights",
        str(onnx_path),
        "--source",
        str(tmp_path / "in"),
        "--out",
        str(track_out),
        "--img",
        "64",
    ]
    assert track_command.main(argv) == 0 and track_out.exists()

    model = Model(onnx_path)
    results = model.predict(str(tmp_path / "in"), conf=0.3)
    assert len(results) == 2 and len(results[0]) == sum(r["image_id"] == 0 for r in runs["pt"])
    assert model.names == dict(enumerate(INFO.class_names))


def test_export_command_int8_writes_both_graphs_and_prints_the_drop(
    tmp_path: Path, tiny_world: Path, capsys
) -> None:
    from unified.checkpoint import FORMAT, VERSION, save_atomic
    from unified.model import model_meta

    info = load_dataset_yaml(tiny_world, "train").info
    torch.manual_seed(0)
    model = build_model(TINY, tasks=("detect", "jdc"), info=info)
    checkpoint = save_atomic(
        {
            "format": FORMAT,
            "version": VERSION,
            **model_meta(model, {}, {}),
            "model": model.state_dict(),
            "ema": None,
        },
        tmp_path / "w.pt",
    )
    out = tmp_path / "w.onnx"
    argv = [
        "--weights",
        str(checkpoint),
        "--img",
        "96",
        "--out",
        str(out),
        "--int8",
        "--data",
        str(tiny_world),
    ]
    assert load_tool("export").main([*argv, "--calib-images", "3", "--int8-exclude", "none"]) == 0
    printed = capsys.readouterr().out
    assert "calibrating on 3 training images" in printed and "kept in fp32: none" in printed
    assert (
        "detect   AP50" in printed and "jdc      mAP" in printed and "drop (fp32 - int8): detect" in printed
    )
    assert read_metadata(tmp_path / "w-int8.onnx")["precision"] == "int8" and out.exists()
