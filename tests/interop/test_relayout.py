"""Converted darknet weights move into compact configs of the same network, proven by equal outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unified.interop import ConvertedModel, InteropError, build_converted, convert_official, translate_darknet
from unified.interop.relayout import relayout
from unified.model import build_model

FIXTURES = Path("/work/shared/reference/fixtures")
CFG = Path("/work/shared/reference/yolor-official/cfg")
ZOO = Path(__file__).resolve().parents[2] / "configs" / "models"

#: darknet_small/model.cfg written with compact blocks (darknet sections in the comments).
COMPACT = {
    "norm": {"eps": 1e-4, "momentum": 0.03},
    "backbone": [
        [-1, 1, "ReOrg", []],  # 0: s0
        [-1, 1, "Conv", [16, 3, 1]],  # 1: s1
        [-1, 1, "Conv", [32, 3, 2]],  # 2: s2
        [-1, 1, "DarknetCSPF", [32]],  # 3: s3-10
        [-1, 1, "Conv", [48, 3, 2]],  # 4: s11
        [-1, 1, "Conv", [24, 1, 1]],  # 5: s12
        [-1, 1, "Conv", [24, 3, 1]],  # 6: s13
        [[-1, 5], 1, "Shortcut", []],  # 7: s14
        [[-1, 4], 1, "Concat", []],  # 8: s15
        [-1, 1, "Conv", [48, 1, 1]],  # 9: s16
        [-1, 1, "Conv", [64, 3, 2]],  # 10: s17
        [-1, 1, "Conv", [64, 1, 1]],  # 11: s18
        [-1, 1, "Conv", [96, 3, 2]],  # 12: s19
        [-1, 1, "Conv", [48, 1, 1]],  # 13: s20
        [-1, 1, "MaxPool", [5, 1]],  # 14: s21
        [13, 1, "MaxPool", [9, 1]],  # 15: s22-23
        [13, 1, "MaxPool", [13, 1]],  # 16: s24-25
        [[16, 15, 14, 13], 1, "Concat", []],  # 17: s26
    ],
    "neck": [
        [-1, 1, "Conv", [64, 1, 1]],  # 18: s27
        [-1, 1, "Conv", [32, 1, 1]],  # 19: s28
        [-1, 1, "Upsample", [2]],  # 20: s29
        [11, 1, "Conv", [32, 1, 1]],  # 21: s30-31
        [[-1, 20], 1, "Concat", []],  # 22: s32
        [-1, 1, "Conv", [48, 3, 1]],  # 23: s33
        [-1, 1, "Conv", [24, 1, 1]],  # 24: s34
        [-1, 1, "Upsample", [2]],  # 25: s35
        [9, 1, "Conv", [24, 1, 1]],  # 26: s36-37
        [[-1, 25], 1, "Concat", []],  # 27: s38
        [-1, 1, "Conv", [32, 3, 1]],  # 28: s39
        [-1, 1, "Conv", [48, 3, 2]],  # 29: s40
        [[-1, 23], 1, "Concat", []],  # 30: s41
        [-1, 1, "Conv", [48, 1, 1]],  # 31: s42
        [-1, 1, "Conv", [64, 3, 2]],  # 32: s43
        [[-1, 18], 1, "Concat", []],  # 33: s44
        [-1, 1, "Conv", [64, 1, 1]],  # 34: s45
        [28, 1, "Conv", [48, 3, 1]],  # 35: s52-53, head level 0
        [31, 1, "Conv", [64, 3, 1]],  # 36: s58-59
        [34, 1, "Conv", [96, 3, 1]],  # 37: s64-65
    ],
    "outputs": [35, 36, 37],
    "anchors": [[1, 1, 1, 1, 1, 1]] * 3,  # replaced by the checkpoint's
}

needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="official fixtures not available")


@needs_fixtures
def test_darknet_fixture_moves_into_compact_blocks_and_still_matches() -> None:
    folder = FIXTURES / "darknet_small"
    converted = convert_official(folder / "ckpt.pt", folder / "model.cfg")
    compact = relayout(converted, COMPACT)
    assert len(compact.model_config["backbone"]) + len(compact.model_config["neck"]) == 38
    model = build_converted(compact)
    assert "body.layers.3.m.0.cv2.conv.weight" in model.state_dict()
    images = torch.load(folder / "input.pt", weights_only=True)
    expected = torch.load(folder / "expected.pt", weights_only=True)
    with torch.no_grad():
        raw = model(images)["detect"]["raw"]
    assert max((a - b).abs().max().item() for a, b in zip(raw, expected["raw"])) < 1e-4


@needs_fixtures
def test_a_config_of_another_network_is_refused() -> None:
    folder = FIXTURES / "darknet_small"
    converted = convert_official(folder / "ckpt.pt", folder / "model.cfg")
    swapped = {**COMPACT, "backbone": [list(r) for r in COMPACT["backbone"]]}
    swapped["backbone"][15][3], swapped["backbone"][16][3] = [13, 1], [9, 1]  # same shapes, other pools
    with pytest.raises(InteropError, match="computes something else"):
        relayout(converted, swapped)
    fewer = {**COMPACT, "neck": COMPACT["neck"][:-3] + [[28, 1, "Conv", [48, 3, 1]]], "outputs": [35]}
    with pytest.raises(InteropError, match="output levels"):
        relayout(converted, fewer)
    with pytest.raises(InteropError, match="4 output levels, the converted model 3"):
        relayout(converted, ZOO / "yolor-p6-paper.yaml")
    paper_block = {**COMPACT, "backbone": [list(r) for r in COMPACT["backbone"]]}
    paper_block["backbone"][3][2] = "BottleneckCSPF"
    with pytest.raises(InteropError, match="BottleneckCSPF has no darknet .* equivalent"):
        relayout(converted, paper_block)


def _randomised(cfg: str) -> ConvertedModel:
    translation = translate_darknet(CFG / cfg)
    torch.manual_seed(0)
    model = build_model(translation.model_config, implicit_share=translation.implicit_share)
    for module in model.modules():  # non-trivial BN statistics, so that a wrong pairing shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return ConvertedModel(
        translation.model_config,
        model.state_dict(),
        [str(i) for i in range(80)],
        translation.implicit_share,
        "main",
    )


@pytest.mark.slow
@pytest.mark.skipif(not CFG.is_dir(), reason="official cfg files not available")
@pytest.mark.parametrize(
    "cfg, zoo",
    [
        ("yolor_csp.cfg", "yolor-csp"),
        ("yolor_csp_x.cfg", "yolor-csp-x"),
        ("yolov4_csp.cfg", "yolov4-csp"),
        ("yolor_p6.cfg", "yolor-p6"),
        ("yolor_w6.cfg", "yolor-w6"),
    ],
)
def test_official_cfg_weights_fit_the_zoo_yaml(cfg: str, zoo: str) -> None:
    relayout(_randomised(cfg), ZOO / f"{zoo}.yaml")  # raises unless both compute the same function


@needs_fixtures
def test_convert_tool_lays_weights_out_as_a_given_yaml(tmp_path: Path) -> None:
    import yaml

    from tests.tools.helpers import load_tool

    target = tmp_path / "compact.yaml"
    target.write_text(yaml.safe_dump(COMPACT))
    folder = FIXTURES / "darknet_small"
    out = tmp_path / "dark.pt"
    argv = ["--weights", str(folder / "ckpt.pt"), "--cfg", str(folder / "model.cfg"), "--out", str(out)]
    assert load_tool("convert_official").main([*argv, "--model", str(target)]) == 0
    state = torch.load(out, weights_only=True)["model"]
    model = build_model(target, nc=3)
    model.load_state_dict(state)  # the compact YAML fine-tunes from these weights key for key
