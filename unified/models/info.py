"""Model size and compute: parameters, implicit parameters, GFLOPs and a layer table.

GFLOPs follow the convention of ``/work/shared/reference/numbers.md``: ``torch.utils.flop_counter``'s count of
convolutions only (2 × multiply-accumulates), batch 1, eval mode, one forward of zeros. The forward runs on
the ``meta`` device (shapes only, no arithmetic), so even the largest models are counted instantly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from unified.implicit import ImplicitOp, ImplicitTensor, LatentCode

_CONV_OPS = (torch.ops.aten.convolution, torch.ops.aten._convolution)


@dataclass
class LayerRow:
    """One row of the layer table."""

    index: str
    inputs: str
    repeats: int
    block: str
    params: int
    channels: int | None
    stride: str
    args: str


@dataclass
class ModelInfo:
    """What ``model_info`` measures."""

    params: int
    implicit_params: int
    gflops: float
    img_size: int
    layers: list[LayerRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params(module: nn.Module) -> int:
    """Number of distinct parameter elements (shared tensors counted once)."""
    return sum(p.numel() for p in module.parameters())


def count_implicit_params(module: nn.Module) -> int:
    """Parameter elements of the implicit tensors reachable from ``module`` (its bank or its ops' tensors),
    with the shared latent they read (``bank.latent``) counted once."""
    tensors: dict[int, nn.Module] = {}
    for m in module.modules():
        found = m.tensor if isinstance(m, ImplicitOp) else m
        if isinstance(found, (ImplicitTensor, LatentCode)):
            tensors[id(found)] = found
        latent = getattr(found, "latent", None)
        if isinstance(found, ImplicitTensor) and isinstance(latent, LatentCode):
            tensors[id(latent)] = latent
    seen: set[int] = set()
    total = 0
    for tensor in tensors.values():
        for p in tensor.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def _implicit_tensors_outside(module: nn.Module) -> bool:
    owned = {id(m) for m in module.modules()}
    return any(isinstance(m, ImplicitOp) and id(m.tensor) not in owned for m in module.modules())


def conv_gflops(module: nn.Module, img_size: int | tuple[int, int], in_channels: int = 3) -> float:
    """GFLOPs of the convolutions in one eval-mode forward of a zero image (batch 1).

    The forward runs on the ``meta`` device with the module's parameters swapped for shape-only copies;
    a module whose implicit ops read tensors it does not own is run on its own device instead.
    """
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    was_training = {m: m.training for m in module.modules()}
    module.eval()
    try:
        if _implicit_tensors_outside(module):
            device = next((p.device for p in module.parameters()), torch.device("cpu"))
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                module(torch.zeros(1, in_channels, h, w, device=device))
        else:
            state = {k: torch.empty_like(v, device="meta") for k, v in module.named_parameters()}
            state.update({k: torch.empty_like(v, device="meta") for k, v in module.named_buffers()})
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                torch.func.functional_call(module, state, (torch.zeros(1, in_channels, h, w, device="meta"),))
    finally:
        for m, mode in was_training.items():
            m.training = mode
    counts = counter.get_flop_counts().get("Global", {})
    return sum(v for op, v in counts.items() if op in _CONV_OPS) / 1e9


def layer_table(body: nn.Module, heads: dict[str, nn.Module] | None = None) -> list[LayerRow]:
    """Rows describing each body layer (from ``Body.specs``) and each head."""
    rows: list[LayerRow] = []
    for spec, layer in zip(body.specs, body.layers):  # type: ignore[attr-defined]
        inputs = ",".join(str(j) for j in spec.inputs)
        rows.append(
            LayerRow(
                str(spec.index),
                inputs,
                spec.repeats,
                spec.block,
                count_params(layer),
                spec.out_channels,
                str(spec.stride),
                str(list(spec.args)),
            )
        )
    for name, head in (heads or {}).items():
        rows.append(LayerRow(name, "outputs", 1, type(head).__name__, count_params(head), None, "-", ""))
    return rows


def format_table(rows: list[LayerRow]) -> str:
    """The layer table as aligned text."""
    header = ("layer", "from", "n", "block", "params", "channels", "stride", "args")
    cells = [header] + [
        (
            r.index,
            r.inputs,
            str(r.repeats),
            r.block,
            f"{r.params:,}",
            "-" if r.channels is None else str(r.channels),
            r.stride,
            r.args,
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(len(header))).rstrip() for c in cells)


def model_info(
    model: nn.Module,
    img_size: int = 640,
    body: nn.Module | None = None,
    heads: dict[str, nn.Module] | None = None,
) -> ModelInfo:
    """Parameters, implicit parameters, GFLOPs at ``img_size`` and (given the body) the layer table.

    Args:
        model: A module whose ``forward(images)`` runs the whole network (and which owns the implicit bank).
        img_size: Square input size for the GFLOPs count.
        body: The model's ``Body``, for the layer table.
        heads: Named heads, listed after the body layers.
    """
    in_channels = getattr(getattr(body, "cfg", None), "input_channels", 3)
    return ModelInfo(
        params=count_params(model),
        implicit_params=count_implicit_params(model),
        gflops=conv_gflops(model, img_size, in_channels),
        img_size=img_size,
        layers=layer_table(body, heads) if body is not None else [],
    )


__all__ = [
    "LayerRow",
    "ModelInfo",
    "conv_gflops",
    "count_implicit_params",
    "count_params",
    "format_table",
    "layer_table",
    "model_info",
]
