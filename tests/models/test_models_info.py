"""Model info (parameters, implicit parameters, GFLOPs, layer table) and tools/model_info.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from unified.model import UnifiedModel, build_model
from unified.models import conv_gflops, count_implicit_params, count_params, model_info
from unified.models.info import format_table

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "models" / "yolor-tiny.yaml"


def test_conv_gflops_counts_convolutions_only() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(), nn.MaxPool2d(2), nn.Conv2d(8, 4, 1)
    )
    expected = 2 * (3 * 8 * 9 * 32 * 32 + 8 * 4 * 16 * 16) / 1e9
    assert abs(conv_gflops(model, 32) - expected) < 1e-12
    assert model.training  # the count runs in eval mode and restores the mode


def test_meta_and_real_counts_agree() -> None:
    torch.manual_seed(0)
    model = build_model(TINY, nc=3, tasks=["detect"])
    meta = conv_gflops(model, 64)
    assert conv_gflops(nn.Sequential(), 64) == 0.0
    # The head alone reads bank tensors it does not own: counted on the real device instead of meta.
    feats_model = _BodyAndHead(model)
    assert abs(conv_gflops(feats_model, 64) - meta) < 1e-12
    assert next(model.parameters()).device.type == "cpu"


class _BodyAndHead(nn.Module):
    def __init__(self, model: UnifiedModel) -> None:
        super().__init__()
        self.body, self.head = model.body, model.heads["detect"]  # the bank stays outside

    def forward(self, x: torch.Tensor) -> dict:
        return self.head(self.body(x))


def test_model_info_and_table() -> None:
    model = build_model(TINY, nc=3, tasks=["detect"])
    info = model_info(model, 320, body=model.body, heads=dict(model.heads))
    assert info.params == count_params(model) and info.implicit_params == count_implicit_params(model) > 0
    assert len(info.layers) == len(model.body.layers) + 1
    assert sum(row.params for row in info.layers) + info.implicit_params == info.params
    text = format_table(info.layers)
    assert "BottleneckCSPF" in text and "IDetectHead" in text


def _tool():
    spec = importlib.util.spec_from_file_location("model_info_tool", REPO / "tools" / "model_info.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = _tool().main([str(TINY), "--nc", "3", "--img", "256", "--json", "--fuse"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    model = build_model(TINY, nc=3, tasks=["detect"])
    assert data["fused"] and data["implicit_params"] == count_implicit_params(
        model
    )  # the bank keeps its tensors
    assert abs(data["gflops"] - conv_gflops(model, 256)) < 1e-9 and data["nc"] == 3
    assert data["params"] < count_params(model)  # BatchNorm folded away
    assert [s["stride"] for s in data["out_shapes"]] == [8, 16, 32]


def test_tool_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert _tool().main([str(TINY), "--img", "320"]) == 0
    out = capsys.readouterr().out
    assert "IDetectHead" in out and "implicit params  1,149" in out and "GFLOPs" in out


def test_tool_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("width_multiple", "width_multiplier"))
    assert _tool().main([str(bad)]) == 2
    assert "Did you mean 'width_multiple'" in capsys.readouterr().err
