"""tools/export.py: fused ONNX graphs with the decode inside, dynamic batch, per-task outputs, checked in ORT."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import unified
from tests.tools.helpers import INFO, load_tool, save_tiny_checkpoint
from unified.export.onnx import ExportModule, check_onnx, export_onnx, postprocess_decoded
from unified.inference import MissingDependencyError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
export_tool = load_tool("export")

FIXTURES = Path("/work/shared/reference/fixtures")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pt")


def test_export_tool_writes_a_checked_graph_with_task_outputs(
    tmp_path: Path, checkpoint: Path, capsys
) -> None:
    out = tmp_path / "tiny.onnx"
    assert export_tool.main(["--weights", str(checkpoint), "--img", "64", "96", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "outputs: decoded, jdc_scores, jde_embeddings" in printed and ": OK" in printed

    proto = onnx.load(str(out))
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["class_names"] == INFO.class_names and meta["img_size"] == [64, 96]
    assert meta["strides"] == [8, 16] and meta["tasks"] == ["detect", "jdc", "jde"]
    # Fused: no BatchNorm left, and no separate implicit add/mul on the detection head.
    assert not any(node.op_type == "BatchNormalization" for node in proto.graph.node)

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.shape[0] for i in session.get_inputs()] == ["batch"]
    images = torch.rand(3, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    decoded, scores, embeddings = session.run(None, {"images": images.numpy()})  # batch 3: dynamic
    n = 3 * (8 * 12 + 4 * 6)
    assert decoded.shape == (3, n, 8) and scores.shape == (3, 4) and embeddings.shape == (3, n, 16)

    model = unified.load(checkpoint).fuse()
    with torch.no_grad():
        outputs = model(images)
    assert np.abs(decoded - outputs["detect"]["decoded"].numpy()).max() < 1e-4 * max(1.0, decoded.max())
    assert np.abs(scores - outputs["jdc"]["scores"].numpy()).max() < 1e-4
    # NMS outside the graph (as the library's detect post-processing), then the ONNX embeddings gathered by
    # detection row equal the library's jde post-processing.
    cfg = model.tasks["detect"].cfg
    cfg.conf_thres, cfg.multi_label = 0.25, False
    from unified.engine.evaluate import predict

    meta_rows = [{"orig_shape": (64, 96), "ratio": 1.0, "pad": (0, 0), "image_id": i} for i in range(3)]
    with torch.no_grad():
        library = predict(model, images, meta_rows)
    outside = postprocess_decoded(outputs["detect"]["decoded"], conf_thres=0.25, iou_thres=cfg.iou_thres)
    for i in range(3):
        index = library["detect"][i]["index"]
        assert len(index) and torch.equal(outside[i]["index"], index)
        gathered = torch.from_numpy(embeddings[i])[index]
        assert torch.allclose(gathered, library["jde"][i]["embeddings"], atol=1e-4)


def test_export_module_output_order_and_raw(checkpoint: Path) -> None:
    model = unified.load(checkpoint)
    wrapper = ExportModule(model, raw=True)
    with torch.no_grad():
        outputs = wrapper(torch.zeros(2, 3, 64, 64))
    assert wrapper.output_names == ["decoded", "jdc_scores", "jde_embeddings", "raw_0", "raw_1"]
    assert outputs[3].shape == (2, 3, 8, 8, 8)


def test_image_size_must_divide_by_the_stride(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="multiple of the largest stride 16"):
        export_onnx(unified.load(checkpoint), tmp_path / "x.onnx", (72, 64))


def test_missing_onnx_gives_a_clear_message(tmp_path: Path, checkpoint: Path, monkeypatch, capsys) -> None:
    real = importlib.import_module

    def without_onnx(name, *args, **kwargs):
        if name in ("onnx", "onnxruntime"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", without_onnx)
    with pytest.raises(MissingDependencyError, match=r"pip install 'unified\[export\]'"):
        export_onnx(unified.load(checkpoint), tmp_path / "x.onnx", (64, 64))
    assert (
        export_tool.main(["--weights", str(checkpoint), "--img", "64", "--out", str(tmp_path / "y.onnx")])
        == 2
    )
    assert "'export' extra" in capsys.readouterr().err


def test_check_reports_a_graph_that_disagrees(tmp_path: Path, checkpoint: Path) -> None:
    model = unified.load(checkpoint).fuse()
    path, _ = export_onnx(model, tmp_path / "tiny.onnx", (64, 64))
    assert check_onnx(path, model, (64, 64)).ok
    with torch.no_grad():
        model.heads["detect"].m[0].bias += 0.5  # PyTorch now differs from the exported graph
    report = check_onnx(path, model, (64, 64))
    assert not report.ok and report.errors["decoded"] > 1e-3 and "FAILED" in report.summary()


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="official fixtures not available")
@pytest.mark.parametrize("name", ["darknet_small", "paper_small"])
def test_converted_fused_exported_fixture_still_matches_the_official_outputs(
    tmp_path: Path, name: str
) -> None:
    from unified.interop import build_converted, convert_official

    folder = FIXTURES / name
    cfg = folder / "model.cfg" if name == "darknet_small" else None
    model = build_converted(convert_official(folder / "ckpt.pt", cfg)).fuse()
    path, names = export_onnx(model, tmp_path / f"{name}.onnx", (256, 256), raw=True)
    images = torch.load(folder / "input.pt", weights_only=True)
    expected = torch.load(folder / "expected.pt", weights_only=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    decoded, *raw = session.run(None, {"images": images.numpy()})
    assert names == ["decoded"] + [f"raw_{level}" for level in range(len(expected["raw"]))]
    assert max(np.abs(r - e.numpy()).max() for r, e in zip(raw, expected["raw"])) < 1e-4
    # Boxes are pixels (up to ~4000 here): compare them at 2e-2 px, scores at 1e-4.
    assert np.abs(decoded[..., :4] - expected["decoded"][..., :4].numpy()).max() < 2e-2
    assert np.abs(decoded[..., 4:] - expected["decoded"][..., 4:].numpy()).max() < 1e-4
