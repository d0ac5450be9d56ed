"""A plain single-task detector (body + implicit bank + ``IDetectHead``), for tools and tests.

The multi-task ``unified.model.UnifiedModel`` is what training uses; this wrapper exists so the model zoo can
be built, counted and fused without the task machinery.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unified.implicit import ImplicitBank
from unified.models.body import Body
from unified.models.config import ModelConfig, load_model_config, with_nc
from unified.models.fuse import fuse_model
from unified.models.heads import IDetectHead


class Detector(nn.Module):
    """Body, implicit bank and detection head of one model config.

    Args:
        cfg: A ``ModelConfig``, a model YAML path or the same content as a mapping.
        nc: Number of classes (default: the config's ``nc``).
    """

    def __init__(self, cfg: ModelConfig | str | Path | Mapping[str, Any], nc: int | None = None) -> None:
        super().__init__()
        cfg = load_model_config(cfg)
        if nc is not None and nc != cfg.nc:
            cfg = with_nc(cfg, nc)
        self.cfg = cfg
        self.bank = ImplicitBank()
        self.body = Body(cfg, self.bank)
        self.head = IDetectHead(
            self.body.out_shapes,
            cfg.nc,
            cfg.anchors,
            self.bank,
            implicit=cfg.head.implicit,
            implicit_form=cfg.head.implicit_form,
        )

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        return self.head(self.body(images))

    def fuse(self) -> Detector:
        """Fold BatchNorm and implicit tensors into convolutions where exact; returns ``self``."""
        fuse_model(self)
        return self


__all__ = ["Detector"]
