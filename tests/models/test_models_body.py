"""Model config loading and errors, the Body builder, body implicit rows, whole-model fusion."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from unified.config import ConfigError
from unified.implicit import ImplicitBank, ImplicitOp
from unified.model import UnifiedModel, build_model
from unified.models import Body, load_model_config, model_config_from_text
from unified.models.blocks import Conv

REPO = Path(__file__).resolve().parents[2]

SMALL = """\
nc: 3
anchors:
  - [10, 13, 16, 30]
  - [30, 61, 62, 45]
backbone:
  - [-1, 1, Conv, [8, 3, 2]]       # 0 /2
  - [-1, 1, Conv, [16, 3, 2]]      # 1 /4
  - [-1, 1, Conv, [16, 3, 2]]      # 2 /8
  - [-1, 1, Conv, [32, 3, 2]]      # 3 /16
neck:
  - [-1, 1, Upsample, [2]]         # 4 /8
  - [[-1, 2], 1, Concat, []]       # 5
  - [-1, 1, Conv, [16, 1, 1]]      # 6
outputs: [6, 3]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(text)
    return path


def test_small_body_shapes_and_kept_tensors() -> None:
    body = Body(model_config_from_text(SMALL))
    assert [(s.channels, s.stride) for s in body.out_shapes] == [(16, 8), (32, 16)]
    assert body._keep == {2, 3, 6}  # read out of order (2), or an output (3, 6)
    out = body(torch.rand(1, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [(1, 16, 8, 8), (1, 32, 4, 4)]
    layers = body.layers
    x = torch.rand(1, 3, 64, 64)
    y2 = layers[2](layers[1](layers[0](x)))
    y3 = layers[3](y2)
    y6 = layers[6](layers[5]([layers[4](y3), y2]))
    got = body(x)
    torch.testing.assert_close(got[0], y6)
    torch.testing.assert_close(got[1], y3)


def test_unknown_key_names_file_line_and_closest_key(tmp_path: Path) -> None:
    path = _write(tmp_path, SMALL.replace("nc: 3", "nc: 3\nwidht_multiple: 0.5"))
    with pytest.raises(ConfigError) as err:
        load_model_config(path)
    message = str(err.value)
    assert str(path) in message and "line 2" in message and "'widht_multiple'" in message
    assert "Did you mean 'width_multiple'" in message


def test_unknown_nested_key(tmp_path: Path) -> None:
    path = _write(tmp_path, SMALL + "norm: {eps: 0.001, momentun: 0.03}\n")
    with pytest.raises(ConfigError, match=r"line 15: key 'norm.momentun'.*Did you mean 'momentum'"):
        load_model_config(path)


@pytest.mark.parametrize(
    ("old", "new", "pattern"),
    [
        (
            "[-1, 1, Conv, [16, 1, 1]]      # 6",
            "[-1, 1, Comv, [16, 1, 1]]",
            r"line 13: key 'neck.2'.*Did you mean 'Conv'",
        ),
        (
            "[-1, 1, Conv, [16, 1, 1]]      # 6",
            "[-1, 1, Conv, [nc, 1, 1]]",
            r"line 13: key 'neck.2'.*only heads may depend on 'nc'",
        ),
        ("[-1, 1, Conv, [16, 1, 1]]      # 6", "[7, 1, Conv, [16, 1, 1]]", r"line 13.*not an earlier layer"),
        (
            "[-1, 1, Conv, [16, 1, 1]]      # 6",
            "[-1, 0, Conv, [16, 1, 1]]",
            r"line 13.*repeats must be a positive",
        ),
        ("[-1, 1, Conv, [16, 1, 1]]      # 6", "[-1, Conv]", r"line 13.*\[from, repeats, block, args\]"),
        ("[[-1, 2], 1, Concat, []]       # 5", "[[-1, 1], 1, Concat, []]", r"line 12.*different strides"),
        (
            "[-1, 1, Conv, [16, 1, 1]]      # 6",
            "[-1, 1, Conv, [16, 1, 1, 1, true, 9]]",
            r"line 13.*Conv takes args",
        ),
        (
            "[-1, 1, Upsample, [2]]         # 4 /8",
            "[[-1, 2], 1, Upsample, [2]]",
            r"line 11.*reads a single layer",
        ),
        ("outputs: [6, 3]", "outputs: [6, 9]", r"line 14: key 'outputs.1'.*does not exist"),
        ("  - [30, 61, 62, 45]\n", "", r"line 2: key 'anchors'.*1 anchor levels for 2 outputs"),
        ("nc: 3", "nc: 3\nactivation: swish", r"line 2: key 'activation'.*unknown activation 'swish'"),
    ],
)
def test_bad_rows_name_file_line_and_key(tmp_path: Path, old: str, new: str, pattern: str) -> None:
    assert old in SMALL
    path = _write(tmp_path, SMALL.replace(old, new))
    with pytest.raises(ConfigError, match=pattern) as err:
        Body(path)
    assert str(path) in str(err.value)


def test_config_from_a_mapping_and_dump_round_trip() -> None:
    from unified.config import dump_yaml

    cfg = model_config_from_text(SMALL)
    again = load_model_config(__import__("yaml").safe_load(dump_yaml(cfg)))
    assert again == cfg


def test_paper_blocks_have_no_darknet_layout() -> None:
    body = Body(load_model_config(REPO / "configs" / "models" / "yolor-tiny.yaml"))
    with pytest.raises(NotImplementedError, match="BottleneckCSPF has no darknet"):
        body.darknet_layout()


IMPLICIT_BODY = """\
nc: 2
anchors: [[10, 13], [30, 61], [50, 50]]
backbone:
  - [-1, 1, Conv, [8, 3, 2]]               # 0
  - [-1, 1, ImplicitAdd, []]               # 1 -> folds into the 1×1 conv 2 (bias)
  - [-1, 1, Conv, [8, 1, 1]]               # 2
  - [-1, 1, ImplicitMul, [shared.scale]]   # 3 -> folds into the padded 3×3 conv 4 (weights)
  - [-1, 1, Conv, [8, 3, 1]]               # 4
  - [-1, 1, ImplicitAdd, []]               # 5 -> stays: before a zero-padded 3×3 conv
  - [-1, 1, Conv, [8, 3, 1]]               # 6
  - [-1, 1, Conv, [8, 1, 1, 1, false]]     # 7 linear conv + BN
  - [-1, 1, ImplicitMul, []]               # 8 -> folds into conv 7 (after)
  - [-1, 1, ImplicitAdd, []]               # 9 -> folds into conv 7 too (after, bias)
  - [-1, 1, Conv, [8, 3, 2]]               # 10
  - [-1, 1, ImplicitConcat, [4]]           # 11 -> stays
  - [-1, 1, Conv, [8, 3, 2]]               # 12
outputs: [6, 10, 12]
"""


def _randomise(module: nn.Module) -> None:
    torch.manual_seed(3)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    for p in module.parameters():
        if p.dim() == 4 and p.shape[2:] == (1, 1) and p.shape[0] == 1:  # implicit vectors
            p.data.add_(torch.randn_like(p) * 0.3)


def test_body_implicit_rows_fold_where_exact() -> None:
    body = Body(model_config_from_text(IMPLICIT_BODY))
    assert isinstance(body.bank, ImplicitBank)
    assert body.bank.names() == ["body.1", "shared.scale", "body.5", "body.8", "body.9", "body.11"]
    _randomise(body)
    body.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = body(x)
        body.fuse()
        after = body(x)
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    remaining = sorted(
        i for i, layer in enumerate(body.layers) if any(isinstance(m, ImplicitOp) for m in layer.modules())
    )
    assert remaining == [5, 11]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())


def _fusion_check(model: UnifiedModel, size: int = 64) -> None:
    _randomise(model)
    model.eval()
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        before = model(x)["detect"]
        fused = copy.deepcopy(model).fuse()
        after = fused(x)["detect"]
    for a, b in zip(after["raw"], before["raw"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(after["decoded"], before["decoded"], atol=1e-2, rtol=1e-4)
    assert not any(isinstance(m, ImplicitOp) for m in fused.heads["detect"].modules())
    assert all(not isinstance(m.bn, nn.BatchNorm2d) for m in fused.modules() if isinstance(m, Conv))


def test_whole_tiny_model_fuses_to_the_same_function() -> None:
    torch.manual_seed(0)
    _fusion_check(build_model(REPO / "configs" / "models" / "yolor-tiny.yaml", nc=3, tasks=["detect"]))


def test_whole_shrunk_main_model_fuses_to_the_same_function() -> None:
    from unified.config import read_yaml

    data, _ = read_yaml(REPO / "configs" / "models" / "yolor-p6.yaml")
    data.update(width_multiple=0.125, depth_multiple=0.33)
    torch.manual_seed(0)
    _fusion_check(build_model(data, nc=3, tasks=["detect"]))
