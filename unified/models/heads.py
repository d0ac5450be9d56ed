"""YOLOR's detection head ``IDetect``: per level an implicit add, a 1×1 conv and an implicit multiply.

Level ``l`` computes ``raw_l = im_l · m_l(ia_l + x_l)`` with ``na·(5 + nc)`` output channels, viewed as
``(B, na, ny, nx, 5 + nc)`` logits. Decoding (eval mode) follows the official code:
``y = sigmoid(raw)``, ``xy = (2·y - 0.5 + grid)·stride``, ``wh = (2·y)²·anchor`` (pixels), objectness and
class scores stay sigmoids; rows are ordered level, anchor, grid row, grid column.

With ``implicit=False`` the head is a plain YOLO ``Detect`` (the ``yolov4-csp`` baseline); ``refine`` keeps only
the add (``ia``) or only the multiply (``im``), the paper's ablation rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from einops import rearrange
from torch import nn

from unified.implicit import ImplicitBank, ImplicitOp, fold_add_before, fold_mul_after
from unified.models.fuse import Fusable
from unified.structures import FeatureShape


def init_detect_biases(
    head: IDetectHead, image_size: int = 640, objects_per_image: float = 8.0, class_prior: float = 0.6
) -> None:
    """Initialise the output conv biases with the YOLOv5/YOLOR priors.

    Objectness starts at about ``objects_per_image`` objects per ``image_size``² image spread over each
    level's grid cells (``log(8 / (640 / stride)²)``); class scores at ``class_prior / (nc - 0.99)``.
    The priors are added to the convs' default random biases, as in the official code.
    """
    with torch.no_grad():
        for conv, stride in zip(head.m, head.stride_values):
            bias = conv.bias.view(head.na, head.no)
            bias[:, 4] += math.log(objects_per_image / (image_size / stride) ** 2)
            bias[:, 5:] += math.log(class_prior / max(head.nc - 0.99, 1e-6))


class IDetectHead(nn.Module, Fusable):
    """The YOLOR detection head over the body's output levels.

    Args:
        in_shapes: Channels and stride of each input level (``Body.out_shapes``).
        nc: Number of classes.
        anchors: Anchors in pixels, one list per level (``[w0, h0, w1, h1, ...]`` or ``[[w, h], ...]``).
        bank: The model's implicit bank; the head requests ``{name}.ia.{l}`` (add, input channels) and
            ``{name}.im.{l}`` (mul, output channels) from it, so a config can alias them. When omitted, the
            head owns a private bank (``head.bank``).
        implicit: Use the implicit add/multiply (``False``: plain ``Detect``).
        refine: Which of the two to use when ``implicit``: ``add`` (``ia``), ``mul`` (``im``); default both.
        implicit_form: Form of the implicit tensors (``vector``, ``nn``, ``mf``).
        name: Prefix of the bank names.
        image_size: Image size of the objectness prior (``init_detect_biases``).

    Attributes:
        anchors: ``(levels, na, 2)`` anchors in pixels (buffer, not saved: it comes from the config).
        strides: ``(levels,)`` strides (buffer, not saved).
        m: The 1×1 output convs.
        ia, im: Per level the implicit add / multiply ops (``nn.Identity`` when off or fused).
    """

    def __init__(
        self,
        in_shapes: Sequence[FeatureShape],
        nc: int,
        anchors: Sequence[Sequence[float]] | torch.Tensor,
        bank: ImplicitBank | None = None,
        *,
        implicit: bool = True,
        refine: Sequence[str] = ("add", "mul"),
        implicit_form: str = "vector",
        name: str = "detect",
        image_size: int = 640,
    ) -> None:
        super().__init__()
        levels = len(in_shapes)
        anchor_tensor = torch.as_tensor(anchors, dtype=torch.float32)
        if levels == 0 or anchor_tensor.shape[0] != levels or anchor_tensor[0].numel() % 2:
            raise ValueError(
                f"IDetectHead needs one anchor list (w, h pairs in pixels) per level: {levels} levels, "
                f"anchors {anchors!r}"
            )
        anchor_tensor = anchor_tensor.reshape(levels, -1, 2)
        if nc < 1:
            raise ValueError(f"IDetectHead needs at least one class, got nc={nc}")
        self.nc = nc
        self.no = nc + 5
        self.nl = levels
        self.na = anchor_tensor.shape[1]
        self.name = name
        self.stride_values = [int(s.stride) for s in in_shapes]
        self.register_buffer("anchors", anchor_tensor, persistent=False)
        self.register_buffer(
            "strides",
            torch.tensor([float(s.stride) for s in in_shapes], dtype=torch.float32),
            persistent=False,
        )
        self.m = nn.ModuleList(nn.Conv2d(s.channels, self.na * self.no, 1) for s in in_shapes)
        self.ia = nn.ModuleList()
        self.im = nn.ModuleList()
        ops = tuple(refine) if implicit else ()
        if ops and bank is None:
            bank = ImplicitBank()
            self.bank = bank
        for level, shape in enumerate(in_shapes):
            self.ia.append(
                bank.get(f"{name}.ia.{level}", shape.channels, "add", implicit_form)  # type: ignore[union-attr,arg-type]
                if "add" in ops
                else nn.Identity()
            )
            self.im.append(
                bank.get(f"{name}.im.{level}", self.na * self.no, "mul", implicit_form)  # type: ignore[union-attr,arg-type]
                if "mul" in ops
                else nn.Identity()
            )
        self._grids: dict[tuple[Any, ...], torch.Tensor] = {}
        init_detect_biases(self, image_size)

    @property
    def anchors_in_strides(self) -> torch.Tensor:
        """Anchors in grid units of their level, ``(levels, na, 2)`` (what YOLO target assignment compares)."""
        return self.anchors / self.strides.view(-1, 1, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, Any]:
        """Per-level raw logits; in eval mode also the decoded boxes and scores (see the module docstring)."""
        if len(features) != self.nl:
            raise ValueError(f"IDetectHead expects {self.nl} feature maps, got {len(features)}")
        raw = []
        for level, x in enumerate(features):
            y = self.im[level](self.m[level](self.ia[level](x)))
            raw.append(rearrange(y, "b (a o) h w -> b a h w o", a=self.na).contiguous())
        out: dict[str, Any] = {"raw": raw}
        if not self.training:
            out["decoded"] = self.decode(raw)
        return out

    def decode(self, raw: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(B, N, 5 + nc)`` boxes (xywh, input pixels) and sigmoid scores from per-level raw logits."""
        decoded = []
        for level, r in enumerate(raw):
            b, _, ny, nx, _ = r.shape
            grid = self._grid(ny, nx, r.device, r.dtype)
            anchor = self.anchors[level].to(r.dtype).view(1, self.na, 1, 1, 2)
            y = r.sigmoid()
            xy = (y[..., 0:2] * 2.0 - 0.5 + grid) * self.strides[level].to(r.dtype)
            wh = (y[..., 2:4] * 2.0) ** 2 * anchor
            decoded.append(torch.cat((xy, wh, y[..., 4:]), dim=-1).view(b, -1, self.no))
        return torch.cat(decoded, dim=1)

    def _grid(self, ny: int, nx: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (ny, nx, device, dtype)
        grid = self._grids.get(key)
        if grid is None:
            ys, xs = torch.meshgrid(
                torch.arange(ny, device=device, dtype=dtype),
                torch.arange(nx, device=device, dtype=dtype),
                indexing="ij",
            )
            grid = self._grids[key] = torch.stack((xs, ys), dim=-1).view(1, 1, ny, nx, 2)
        return grid

    def fuse(self) -> None:
        """Fold the implicit add (before the 1×1 conv: bias) and multiply (after: weight and bias)."""
        for level in range(self.nl):
            conv = self.m[level]
            ia, im = self.ia[level], self.im[level]
            if isinstance(ia, ImplicitOp):
                conv = fold_add_before(conv, ia)  # a 1×1 unpadded conv: exact
                self.ia[level] = nn.Identity()
            if isinstance(im, ImplicitOp):
                conv = fold_mul_after(conv, im)
                self.im[level] = nn.Identity()
            self.m[level] = conv

    def fold_feature_add(self, constants: Sequence[torch.Tensor]) -> None:
        """Fold a constant added to each input level (feature alignment) into the 1×1 convs: exact, they
        are unpadded. Call after :meth:`fuse`."""
        for level, g in enumerate(constants):
            self.m[level] = fold_add_before(self.m[level], g)

    def _apply(self, fn: Any, recurse: bool = True) -> IDetectHead:  # type: ignore[override]
        self._grids = {}  # cached grids follow the device/dtype of the next forward
        return super()._apply(fn, recurse)  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"nc={self.nc}, na={self.na}, levels={self.nl}, strides={self.stride_values}"


__all__ = ["IDetectHead", "init_detect_biases"]
