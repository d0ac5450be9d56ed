"""IDetectHead: output layout, decoding, grid cache, bias priors, implicit names, fusion."""

from __future__ import annotations

import math

import pytest
import torch

from unified.implicit import ImplicitBank, ImplicitOp
from unified.models import IDetectHead, init_detect_biases
from unified.task import FeatureShape

SHAPES = [FeatureShape(8, 8), FeatureShape(16, 16)]
ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]]


def _features(batch: int = 2, size: int = 64) -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.randn(batch, s.channels, size // s.stride, size // s.stride) for s in SHAPES]


def _head(**kw: object) -> IDetectHead:
    torch.manual_seed(0)
    head = IDetectHead(SHAPES, 4, ANCHORS, ImplicitBank(), **kw)  # type: ignore[arg-type]
    for op in [*head.ia, *head.im]:
        if isinstance(op, ImplicitOp):
            with torch.no_grad():
                for p in op.tensor.parameters():
                    p.add_(torch.randn_like(p) * 0.2)
    return head


def test_training_output_is_raw_logits_per_level() -> None:
    head = _head().train()
    out = head(_features())
    assert set(out) == {"raw"}
    assert [tuple(r.shape) for r in out["raw"]] == [(2, 3, 8, 8, 9), (2, 3, 4, 4, 9)]


def test_raw_is_implicit_multiply_of_the_conv_of_implicit_add() -> None:
    head = _head().eval()
    feats = _features()
    raw = head(feats)["raw"]
    for level, x in enumerate(feats):
        y = head.m[level](x + head.ia[level].value()) * head.im[level].value()
        expected = y.view(2, 3, 9, *y.shape[2:]).permute(0, 1, 3, 4, 2)
        torch.testing.assert_close(raw[level], expected)


def test_decoding_follows_the_official_formula_and_order() -> None:
    head = _head().eval()
    out = head(_features())
    raw, decoded = out["raw"], out["decoded"]
    assert decoded.shape == (2, 3 * 64 + 3 * 16, 9)
    rows = []
    for level, r in enumerate(raw):
        stride = SHAPES[level].stride
        anchors = torch.tensor(ANCHORS[level], dtype=torch.float32).view(3, 2)
        for a in range(3):
            for gy in range(r.shape[2]):
                for gx in range(r.shape[3]):
                    y = r[1, a, gy, gx].sigmoid()
                    cx = (2 * y[0] - 0.5 + gx) * stride
                    cy = (2 * y[1] - 0.5 + gy) * stride
                    w, h = (2 * y[2]) ** 2 * anchors[a, 0], (2 * y[3]) ** 2 * anchors[a, 1]
                    rows.append(torch.cat([torch.stack([cx, cy, w, h]), y[4:]]))
    torch.testing.assert_close(decoded[1], torch.stack(rows))


def test_grids_are_cached_per_size() -> None:
    head = _head().eval()
    head(_features())
    first = dict(head._grids)
    head(_features())
    assert head._grids.keys() == first.keys() and all(head._grids[k] is first[k] for k in first)
    head(_features(size=32))
    assert len(head._grids) == 3  # 8×8, 4×4 (shared by both sizes), 2×2


def test_bank_names_and_aliases() -> None:
    bank = ImplicitBank()
    bank.alias("detect.ia.1", "shared.feature")
    IDetectHead(SHAPES, 4, ANCHORS, bank)
    assert bank.names() == ["detect.ia.0", "detect.im.0", "shared.feature", "detect.im.1"]
    assert sum(p.numel() for p in bank.parameters()) == 8 + 27 + 16 + 27


def test_plain_detect_has_no_implicit_tensors() -> None:
    bank = ImplicitBank()
    head = IDetectHead(SHAPES, 4, ANCHORS, bank, implicit=False)
    assert bank.names() == [] and not any(isinstance(m, ImplicitOp) for m in head.modules())


def test_anchor_and_stride_buffers() -> None:
    head = _head()
    assert head.anchors.shape == (2, 3, 2) and head.strides.tolist() == [8.0, 16.0]
    torch.testing.assert_close(head.anchors_in_strides[1, 0], torch.tensor([30 / 16, 61 / 16]))
    assert "anchors" not in head.state_dict()


def test_bias_priors() -> None:
    torch.manual_seed(0)
    head = IDetectHead(SHAPES, 4, ANCHORS, ImplicitBank())
    with torch.no_grad():
        for conv in head.m:
            conv.bias.zero_()
    init_detect_biases(head, image_size=640)
    bias = head.m[0].bias.view(3, 9)
    torch.testing.assert_close(bias[:, 4], torch.full((3,), math.log(8 / (640 / 8) ** 2)))
    torch.testing.assert_close(bias[:, 5:], torch.full((3, 4), math.log(0.6 / (4 - 0.99))))
    torch.testing.assert_close(bias[:, :4], torch.zeros(3, 4))


@pytest.mark.parametrize("form", ["vector", "nn", "mf"])
def test_fused_head_matches_and_has_no_implicit_ops(form: str) -> None:
    head = _head(implicit_form=form).eval()
    feats = _features()
    before = head(feats)
    head.fuse()
    assert not any(isinstance(m, ImplicitOp) for m in head.modules())
    after = head(feats)
    for a, b in zip(after["raw"], before["raw"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(after["decoded"], before["decoded"], atol=1e-4, rtol=1e-4)


def test_bad_construction_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="one anchor list"):
        IDetectHead(SHAPES, 4, ANCHORS[:1])
    with pytest.raises(ValueError, match="at least one class"):
        IDetectHead(SHAPES, 0, ANCHORS)


@pytest.mark.parametrize(
    ("refine", "adds", "muls"), [(("add", "mul"), 2, 2), (("add",), 2, 0), (("mul",), 0, 2), ((), 0, 0)]
)
def test_refine_picks_the_implicit_add_and_multiply(refine: tuple[str, ...], adds: int, muls: int) -> None:
    head = _head(refine=refine)
    assert sum(isinstance(m, ImplicitOp) for m in head.ia) == adds
    assert sum(isinstance(m, ImplicitOp) for m in head.im) == muls
    assert not any(isinstance(m, ImplicitOp) for m in [*_head(implicit=False, refine=refine).ia])


def test_a_feature_add_folds_exactly_into_the_fused_head() -> None:
    torch.manual_seed(0)
    head = _head().eval()
    features = _features()
    constants = [torch.randn(f.shape[1]) for f in features]
    with torch.no_grad():
        before = head([f + g.view(1, -1, 1, 1) for f, g in zip(features, constants)])["decoded"]
        head.fuse()
        head.fold_feature_add(constants)
        after = head(features)["decoded"]
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-3)
