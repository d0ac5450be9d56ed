import pytest
import torch

from unified.ops import clip_boxes, letterbox_to_original, original_to_letterbox, xywh_to_xyxy, xyxy_to_xywh


def test_xywh_xyxy_round_trip_and_values():
    xywh = torch.tensor([[10.0, 20.0, 4.0, 6.0]])
    xyxy = xywh_to_xyxy(xywh)
    assert xyxy.tolist() == [[8.0, 17.0, 12.0, 23.0]]
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(100, 4, generator=g, dtype=torch.float64) * 50
    assert torch.allclose(xyxy_to_xywh(xywh_to_xyxy(boxes)), boxes)


def test_letterbox_round_trip():
    g = torch.Generator().manual_seed(1)
    orig_h, orig_w = 480, 640
    ratio, pad = 0.5, (0.0, 80.0)  # 640 x 480 letterboxed into 320 x 320
    xy = torch.rand(200, 2, generator=g, dtype=torch.float64) * torch.tensor([orig_w, orig_h])
    wh = torch.rand(200, 2, generator=g, dtype=torch.float64) * 100
    boxes = torch.cat((xy, xy + wh), 1).clamp(max=torch.tensor([orig_w, orig_h] * 2))
    there = original_to_letterbox(boxes, ratio, pad)
    assert there[:, 1].min() >= 80.0 and there[:, 3].max() <= 80.0 + 240.0
    back = letterbox_to_original(there, ratio, pad, orig_shape=(orig_h, orig_w))
    assert torch.allclose(back, boxes)


def test_letterbox_to_original_clips_and_takes_per_axis_ratio():
    boxes = torch.tensor([[-10.0, 5.0, 330.0, 100.0]])
    out = letterbox_to_original(boxes, (0.5, 0.25), (10.0, 5.0), orig_shape=(300, 400))
    assert out.tolist() == [[0.0, 0.0, 400.0, 300.0]]
    unclipped = letterbox_to_original(boxes, (0.5, 0.25), (10.0, 5.0))
    assert unclipped.tolist() == [[-40.0, 0.0, 640.0, 380.0]]


def test_clip_boxes_returns_a_new_tensor():
    boxes = torch.tensor([[-5.0, -5.0, 50.0, 50.0]])
    clipped = clip_boxes(boxes, (20, 30))
    assert clipped.tolist() == [[0.0, 0.0, 30.0, 20.0]]
    assert boxes.tolist() == [[-5.0, -5.0, 50.0, 50.0]]


def test_bad_ratio_or_pad_raise():
    with pytest.raises(ValueError, match="ratio"):
        letterbox_to_original(torch.zeros(1, 4), (1.0, 2.0, 3.0), (0, 0))
    with pytest.raises(ValueError, match="pad"):
        letterbox_to_original(torch.zeros(1, 4), 1.0, (0,))
