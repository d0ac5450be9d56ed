"""Every registered block, generated from the registry: build, forward, backward, shapes, fusion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unified.config import ConfigError
from unified.implicit import ImplicitBank
from unified.models import BLOCKS, BuildContext, LayerDefaults, fuse_model
from unified.models.blocks import Block
from unified.registry import RegistryError

SIZE = 16


def _build(name: str) -> tuple[Block, list[torch.Tensor] | torch.Tensor]:
    cls = BLOCKS.get(name)
    ctx = BuildContext(defaults=LayerDefaults(eps=1e-3), bank=ImplicitBank(), layer_index=3)
    repeats = 2 if cls.repeats_inside else 1
    block = cls.from_row(list(cls.example_inputs), list(cls.example_args), repeats, ctx)
    xs = [torch.randn(2, c, SIZE, SIZE, requires_grad=True) for c in cls.example_inputs]
    return block, (xs if cls.multi_input else xs[0])


def _randomise_norms(module: nn.Module) -> None:
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("name", BLOCKS.names())
def test_block_forward_backward_and_shapes(name: str) -> None:
    torch.manual_seed(0)
    block, x = _build(name)
    y = block(x)
    assert y.shape[1] == block.out_channels
    expected = SIZE / float(block.stride_factor)
    assert y.shape[2] == y.shape[3] == int(expected)
    y.float().square().mean().backward()
    grads = [p.grad for p in block.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    inputs = x if isinstance(x, list) else [x]
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in inputs)


@pytest.mark.parametrize("name", BLOCKS.names())
def test_block_fuses_to_the_same_function(name: str) -> None:
    block, x = _build(name)
    _randomise_norms(block)
    block.eval()
    x = [t.detach() for t in x] if isinstance(x, list) else x.detach()
    with torch.no_grad():
        before = block(x)
        fuse_model(block)
        after = block(x)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_conv_fusion_removes_batchnorm() -> None:
    block, x = _build("Conv")
    fuse_model(block.eval())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.modules())
    assert block.conv.bias is not None


@pytest.mark.parametrize(
    "name", ["DarknetCSP", "DarknetCSPF", "DarknetCSP2", "DarknetSPPCSP", "Bottleneck", "Conv"]
)
def test_darknet_layout_names_every_conv_once(name: str) -> None:
    block, _ = _build(name)
    layout = block.darknet_layout()
    convs = {n for n, m in block.named_modules() if isinstance(m, nn.Conv2d)}
    named = {f"{p}.conv" if p else "conv" for p in layout if p is not None}
    assert named == convs


def test_darknet_layout_section_counts() -> None:
    # Section counts of the darknet cfgs: CSP 6 + 3n, CSPF 5 + 3n, CSP2 5 + 2n, SPPCSP 13 + 2n.
    ctx = BuildContext()
    for name, base, per in [
        ("DarknetCSP", 6, 3),
        ("DarknetCSPF", 5, 3),
        ("DarknetCSP2", 5, 2),
        ("DarknetSPPCSP", 13, 2),
    ]:
        for n in (1, 3):
            block = BLOCKS.get(name).from_row([16], [16], n, ctx)
            assert len(block.darknet_layout()) == base + per * n, (name, n)


def test_paper_blocks_keep_the_official_submodule_names() -> None:
    ctx = BuildContext()
    csp = BLOCKS.get("BottleneckCSPF").from_row([16], [16], 1, ctx)
    keys = set(csp.state_dict())
    assert {
        "cv1.conv.weight",
        "cv1.bn.running_var",
        "cv2.weight",
        "cv4.conv.weight",
        "bn.weight",
        "m.0.cv2.conv.weight",
    } <= keys
    spp = BLOCKS.get("SPPCSP").from_row([16], [8], 1, ctx)
    assert {f"cv{i}.conv.weight" for i in (1, 3, 4, 5, 6, 7)} | {"cv2.weight", "bn.bias"} <= set(
        spp.state_dict()
    )
    down = BLOCKS.get("DownC").from_row([8], [16], 1, ctx)
    assert [tuple(down.state_dict()[f"cv{i}.conv.weight"].shape) for i in (1, 2, 3)] == [
        (8, 8, 1, 1),
        (8, 8, 3, 3),
        (8, 8, 1, 1),
    ]


def test_row_argument_errors_are_clear() -> None:
    ctx = BuildContext()
    with pytest.raises(ConfigError, match=r"Conv takes args \[c2, k, s, g, act\]"):
        BLOCKS.get("Conv").from_row([8], [8, 3, 1, 1, True, "extra"], 1, ctx)
    with pytest.raises(ConfigError, match="does not take repeats"):
        BLOCKS.get("Conv").from_row([8], [8], 3, ctx)
    with pytest.raises(ConfigError, match="positive channel count"):
        BLOCKS.get("Conv").from_row([8], ["wide"], 1, ctx)
    with pytest.raises(ConfigError, match="equal channels"):
        BLOCKS.get("Shortcut").from_row([8, 4], [], 1, ctx)
    with pytest.raises(RegistryError, match="Did you mean 'Conv'"):
        BLOCKS.get("Comv")


def test_width_multiple_rounds_channels_up_to_the_divisor() -> None:
    ctx = BuildContext(width_multiple=0.125, depth_multiple=0.33)
    assert ctx.channels(64) == 8 and ctx.channels(100) == 16 and ctx.channels(640) == 80
    assert ctx.repeats(3) == 1 and ctx.repeats(7) == 2 and ctx.repeats(1) == 1
