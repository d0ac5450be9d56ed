"""The weight average: the published update rule, integer buffers copied, shared tensors averaged once,
and a model whose tensors are replaced (``.to()``, a new buffer) followed."""
from __future__ import annotations

import math

import torch
from torch import nn

from unified.engine.ema import ModelEMA


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def _decay(ema: ModelEMA, update: int) -> float:
    return ema.decay * (1 - math.exp(-update / ema.ramp))


def test_update_follows_the_rule_and_copies_integer_buffers() -> None:
    model = _model()
    ema = ModelEMA(model, decay=0.9, ramp=2.0)
    expected = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    for update in (1, 2, 3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(2, 3, 8, 8))  # training mode: running stats and num_batches_tracked move
        ema.update(model)
        d = _decay(ema, update)
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                expected[name] = expected[name] * d + value * (1 - d)
            else:
                expected[name] = value.clone()
    for name, value in ema.ema.state_dict().items():
        torch.testing.assert_close(value, expected[name], msg=name)
    assert int(ema.ema[1].num_batches_tracked) == 3


def test_a_tensor_shared_by_two_modules_is_averaged_once() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[1].weight = model[0].weight  # one tensor, two state_dict entries
    ema = ModelEMA(model, decay=0.5, ramp=1e-9)  # d = 0.5 from the first update
    before = ema.ema[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.ema[0].weight, 0.5 * before + 0.5 * model[0].weight.detach())
    assert ema.ema[1].weight is ema.ema[0].weight


def test_replaced_tensors_are_still_followed() -> None:
    model = _model()
    ema = ModelEMA(model, decay=0.5, ramp=1e-9)  # d = 0.5 from the first update
    start = model[0].weight.detach().clone()
    ema.update(model)
    model.to(memory_format=torch.channels_last)  # new parameter data
    model[1].running_mean = torch.full((4,), 3.0)  # a new buffer object: followed after refresh
    ema.refresh(model)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    ema.update(model)
    torch.testing.assert_close(ema.ema[0].weight, start + 0.75)
    torch.testing.assert_close(ema.ema[1].running_mean, torch.full((4,), 2.25))
