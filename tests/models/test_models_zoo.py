"""The model zoo: official parameter counts and GFLOPs, output shapes, darknet correspondence, small runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from unified.config import read_yaml
from unified.model import UnifiedModel, build_model
from unified.models import conv_gflops, count_implicit_params, count_params
from unified.models.blocks import Conv

REPO = Path(__file__).resolve().parents[2]
ZOO = REPO / "configs" / "models"
REFERENCE = Path("/work/shared/reference/yolor-official/cfg")

# From /work/shared/reference/numbers.md (official code, nc=80): params, implicit params, GFLOPs, input size.
OFFICIAL = {
    "yolor-csp": (52_923_994, 2_557, 120.2397, 640),
    "yolor-csp-x": (99_754_058, 3_005, 221.8846, 640),
    "yolov4-csp": (52_921_437, 0, 120.2397, 640),
    "yolor-p6": (37_265_016, 2_812, 325.1170, 1280),
    "yolor-w6": (79_873_400, 3_580, 452.6473, 1280),
    "yolor-p6-paper": (37_270_264, 2_812, 325.1170, 1280),
    "yolor-w6-paper": (79_880_952, 3_580, 452.6473, 1280),
    "yolor-e6": (115_909_400, 4_220, 682.1192, 1280),
    "yolor-d6": (151_782_680, 4_220, 934.4328, 1280),
}
DARKNET = {
    "yolor-csp": "yolor_csp",
    "yolor-csp-x": "yolor_csp_x",
    "yolov4-csp": "yolov4_csp",
    "yolor-p6": "yolor_p6",
    "yolor-w6": "yolor_w6",
}
ALL_YAMLS = sorted(p.stem for p in ZOO.glob("*.yaml"))


def _meta_detector(name: str, nc: int = 80) -> UnifiedModel:
    with torch.device("meta"):  # shapes only: no weight initialisation, no memory
        return build_model(ZOO / f"{name}.yaml", nc=nc, tasks=["detect"])


def test_zoo_holds_every_official_model_and_a_tiny_one() -> None:
    assert set(OFFICIAL) | {"yolor-tiny"} <= set(ALL_YAMLS)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_parameter_counts_and_gflops(name: str) -> None:
    params, implicit, gflops, size = OFFICIAL[name]
    model = _meta_detector(name)
    assert count_params(model) == params
    assert count_implicit_params(model) == implicit
    # Conv FLOPs at a small size that every stride divides scale exactly with the area.
    small = 128
    measured = conv_gflops(model, small) * (size / small) ** 2
    assert abs(measured - gflops) / gflops < 0.01, measured


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_output_shapes(name: str) -> None:
    model = _meta_detector(name)
    strides = [s.stride for s in model.body.out_shapes]
    assert strides == ([8, 16, 32, 64] if "6" in name else [8, 16, 32])
    assert model.heads["detect"].na == 3 and model.heads["detect"].anchors.shape == (len(strides), 3, 2)
    assert [m.in_channels for m in model.heads["detect"].m] == [s.channels for s in model.body.out_shapes]
    assert all(m.out_channels == 3 * 85 for m in model.heads["detect"].m)


def test_class_count_only_changes_the_head() -> None:
    a, b = _meta_detector("yolor-p6", nc=80), _meta_detector("yolor-p6", nc=3)
    assert count_params(a.body) == count_params(b.body)
    per_level_80 = sum(m.weight.numel() + m.bias.numel() for m in a.heads["detect"].m)
    per_level_3 = sum(m.weight.numel() + m.bias.numel() for m in b.heads["detect"].m)
    assert count_params(a) - count_params(b) == per_level_80 - per_level_3 + 4 * 3 * 77  # + implicit multiply


def test_yolov4_csp_is_yolor_csp_without_implicit() -> None:
    v4, yolor = _meta_detector("yolov4-csp"), _meta_detector("yolor-csp")
    convs = [tuple(m.weight.shape) for m in v4.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [tuple(m.weight.shape) for m in yolor.modules() if isinstance(m, nn.Conv2d)]
    assert count_params(yolor) - count_params(v4) == count_implicit_params(yolor) == 2_557


def test_main_and_paper_p6_differ_where_the_official_ones_do() -> None:
    main, paper = _meta_detector("yolor-p6"), _meta_detector("yolor-p6-paper")
    assert count_params(paper) - count_params(main) == 5_248
    assert main.model_cfg.norm.eps == 1e-4 and paper.model_cfg.norm.eps == 1e-3
    assert all(m.eps == 1e-4 for m in main.modules() if isinstance(m, nn.BatchNorm2d))


def _darknet_sections(path: Path) -> list[dict[str, str]]:
    sections: list[dict[str, str]] = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("["):
            sections.append({"type": line[1:-1]})
        elif "=" in line:
            key, value = line.split("=", 1)
            sections[-1][key.strip()] = value.strip()
    return sections[1:]  # drop [net]


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="official cfg files not available")
@pytest.mark.parametrize("name", sorted(DARKNET))
def test_main_models_align_with_the_darknet_cfg(name: str) -> None:
    sections = _darknet_sections(REFERENCE / f"{DARKNET[name]}.cfg")
    model = _meta_detector(name)
    layout = model.body.darknet_layout()
    levels = len(model.body.outputs)
    body_part = len(layout) - 2 * levels  # the last rows are the head's route + 3×3 conv pairs
    for k in range(body_part):
        assert (layout[k] is not None) == (sections[k]["type"] == "convolutional"), (k, sections[k])
    modules = dict(model.body.named_modules())
    bn_convs = [s for s in sections if s["type"] == "convolutional" and s.get("batch_normalize") == "1"]
    ours = [modules[p] for p in layout if p is not None]
    assert len(ours) == len(bn_convs)
    for section, module in zip(bn_convs, ours):
        assert isinstance(module, Conv)
        conv = module.conv
        assert (conv.out_channels, conv.kernel_size[0], conv.stride[0]) == (
            int(section["filters"]),
            int(section["size"]),
            int(section["stride"]),
        )
    linear = [s for s in sections if s["type"] == "convolutional" and s.get("batch_normalize", "0") == "0"]
    assert len(linear) == levels
    adds = [int(s["filters"]) for s in sections if s["type"] == "implicit_add"]
    assert adds == ([s.channels for s in model.body.out_shapes] if model.model_cfg.head.implicit else [])


@pytest.mark.parametrize("name", ALL_YAMLS)
def test_every_yaml_runs_forward_and_backward_when_shrunk(name: str) -> None:
    data, _ = read_yaml(ZOO / f"{name}.yaml")
    if name != "yolor-tiny":
        data.update(width_multiple=data["width_multiple"] * 0.0625, depth_multiple=0.33)
    torch.manual_seed(0)
    model = build_model(data, nc=3, tasks=["detect"])
    out = model(torch.rand(2, 3, 64, 64))["detect"]
    strides = [s.stride for s in model.body.out_shapes]
    assert [tuple(r.shape) for r in out["raw"]] == [(2, 3, 64 // s, 64 // s, 8) for s in strides]
    sum(r.square().mean() for r in out["raw"]).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_tiny_model_is_small_and_cheap() -> None:
    model = _meta_detector("yolor-tiny")
    assert 300_000 <= count_params(model) <= 2_000_000
    assert count_implicit_params(model) > 0 and model.model_cfg.head.implicit
    assert [s.stride for s in model.body.out_shapes] == [8, 16, 32]
    assert conv_gflops(model, 320) < 2.0
