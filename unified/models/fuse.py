"""Inference-time fusion: BatchNorm into the preceding conv, implicit constants into neighbouring convs.

Modules that can fold themselves derive from :class:`Fusable`; :func:`fuse_model` calls ``fuse()`` on every
one of them. Fusion is for inference: it uses the BatchNorm running statistics, so fuse a model in eval mode
(or after training) and do not train it afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

from unified.implicit import conv_with_params


class Fusable:
    """Mixin of modules that can fold their parts for inference; ``fuse()`` must be idempotent."""

    def fuse(self) -> None:
        """Fold this module's parts in place."""
        raise NotImplementedError


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv (with bias) equal to ``bn(conv(x))`` in eval mode."""
    with torch.no_grad():
        assert bn.running_var is not None and bn.running_mean is not None
        scale = (bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)) / torch.sqrt(
            bn.running_var + bn.eps
        )
        shift = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        return conv_with_params(
            conv, conv.weight * scale.view(-1, 1, 1, 1), (bias - bn.running_mean) * scale + shift
        )


def fuse_model(model: nn.Module) -> nn.Module:
    """Fold every foldable part of ``model`` in place (Conv + BN, implicit add/mul next to convs).

    Returns:
        ``model`` itself, for chaining.
    """
    for module in list(model.modules()):
        if isinstance(module, Fusable):
            module.fuse()
    return model


__all__ = ["Fusable", "fuse_conv_bn", "fuse_model"]
