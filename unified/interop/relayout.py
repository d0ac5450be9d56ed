"""Move converted weights into another config of the same network, e.g. a ``main`` cfg into the zoo YAML.

A darknet cfg translates to one body row per section (:mod:`unified.interop.darknet`). The zoo's ``main``
models (``configs/models/yolor-csp.yaml`` ...) describe the same networks with compact blocks
(``DarknetCSP`` ...), whose ``Body.darknet_layout()`` lists their convolutions in darknet section order.
:func:`relayout` pairs the convolutions of both bodies in that order (for ``paper`` conversions, whose rows
already are the zoo's, the names simply agree), copies the weights, and then proves the two models are the
same function by running both on a random input: a target that is not the same network is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unified.interop.common import ConvertedModel, InteropError
from unified.models.blocks import Conv, PlainConv


def _target_config(target: str | Path | Mapping[str, Any], converted: ConvertedModel) -> dict[str, Any]:
    from unified.config import read_yaml
    from unified.packaged_configs import resolve_config

    data = dict(target) if isinstance(target, Mapping) else read_yaml(resolve_config(target, "model"))[0]
    # Class count and anchors belong to the checkpoint; everything else must come from the target.
    data["nc"] = converted.model_config["nc"]
    data["anchors"] = [list(level) for level in converted.model_config["anchors"]]
    return data


def _body_convs(model: nn.Module) -> list[str]:
    """Paths (under ``body``) of the conv modules of a one-row-per-section body, in row order."""
    return [
        f"layers.{i}" for i, layer in enumerate(model.body.layers) if isinstance(layer, (Conv, PlainConv))
    ]


def relayout(
    converted: ConvertedModel,
    target: str | Path | Mapping[str, Any],
    check_size: int | None = None,
    tolerance: float = 1e-4,
) -> ConvertedModel:
    """The converted weights under the parameter names of ``target`` (a model YAML of the same network).

    Args:
        converted: A conversion (``main`` or ``paper``).
        target: Model YAML path, packaged name (``yolor-csp``) or dict. Its ``nc`` and anchors are
            replaced by the checkpoint's.
        check_size: Square size of the random input of the equivalence check (default: 8 × the largest
            stride, so that the deepest maps are wider than the usual SPP pools and a swapped pool shows).
        tolerance: Largest difference of raw logits (relative to their scale) the check accepts.

    Raises:
        InteropError: if the convolutions do not pair up (count, kind or shape, naming the first mismatch) or
            the two models compute different outputs.
    """
    from unified.model import build_model
    from unified.task import DatasetInfo

    info = DatasetInfo(class_names=list(converted.class_names))
    source = build_model(converted.model_config, info=info, implicit_share=converted.implicit_share)
    source.load_state_dict(converted.state_dict)
    config = _target_config(target, converted)
    levels = len(converted.model_config["outputs"])
    if len(config.get("outputs") or []) != levels:
        raise InteropError(
            f"{target} has {len(config.get('outputs') or [])} output levels, the converted model {levels}: "
            f"not the same network"
        )
    implicit = bool(converted.model_config.get("head", {}).get("implicit", True))
    if bool((config.get("head") or {}).get("implicit", True)) != implicit:
        raise InteropError(
            f"{target} {'lacks' if implicit else 'has'} the implicit head of YOLOR, the converted model "
            f"{'has' if implicit else 'lacks'} it: not the same network"
        )
    model = build_model(config, info=info, implicit_share=converted.implicit_share)
    own = model.state_dict()
    if set(own) == set(converted.state_dict) and all(
        own[k].shape == v.shape for k, v in converted.state_dict.items()
    ):
        state = dict(converted.state_dict)
    else:
        state = _pair_by_darknet_order(source, model, converted.state_dict, target)
    model.load_state_dict(state)
    _check_equivalent(source, model, target, check_size, tolerance)
    return dataclasses.replace(
        converted,
        model_config=config,
        state_dict=model.state_dict(),
        notes=[
            *converted.notes,
            f"weights laid out as {target if not isinstance(target, Mapping) else 'the given config'}",
        ],
    )


def _pair_by_darknet_order(
    source: nn.Module, model: nn.Module, weights: dict[str, torch.Tensor], target: Any
) -> dict[str, torch.Tensor]:
    try:
        layout = [p for p in model.body.darknet_layout() if p is not None]
    except NotImplementedError as exc:
        raise InteropError(f"{target}: {exc}; it cannot take darknet weights") from None
    ours = _body_convs(source)
    if len(ours) != len(layout):
        raise InteropError(
            f"{target} has {len(layout)} convolutions in darknet order, the converted cfg has {len(ours)}: "
            f"not the same network"
        )
    theirs = dict(model.body.named_modules())
    mine = dict(source.body.named_modules())
    state: dict[str, torch.Tensor] = {}
    for k, (a, b) in enumerate(zip(ours, layout)):
        src, dst = mine[a], theirs[b]
        src_state, dst_state = src.state_dict(), dst.state_dict()
        if type(src) is not type(dst) or {n: t.shape for n, t in src_state.items()} != {
            n: t.shape for n, t in dst_state.items()
        }:
            shapes = tuple(src.conv.weight.shape), tuple(dst.conv.weight.shape)
            raise InteropError(
                f"convolution {k} in darknet order: converted body.{a} ({type(src).__name__} {shapes[0]}) does "
                f"not fit {target}'s body.{b} ({type(dst).__name__} {shapes[1]}): not the same network"
            )
        state.update({f"body.{b}.{n}": weights[f"body.{a}.{n}"] for n in src_state})
    for key, value in weights.items():
        if not key.startswith("body."):
            state[key] = value  # head and implicit bank: the same names in both
    missing = sorted(set(model.state_dict()) - set(state))
    if missing:
        raise InteropError(f"{target}: no converted weights for {missing[:5]}")
    return state


@torch.no_grad()
def _check_equivalent(
    source: nn.Module, model: nn.Module, target: Any, check_size: int | None, tolerance: float
) -> None:
    size = check_size or 8 * max(model.heads["detect"].stride_values)
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    expected = source.eval()(images)["detect"]["raw"]
    got = model.eval()(images)["detect"]["raw"]
    if len(got) != len(expected) or any(a.shape != b.shape for a, b in zip(got, expected)):
        raise InteropError(
            f"{target} gives outputs of other shapes than the converted model: not the same network"
        )
    scale = max(1.0, max(e.abs().max().item() for e in expected))
    error = max((a - b).abs().max().item() for a, b in zip(got, expected)) / scale
    if error > tolerance:
        raise InteropError(
            f"{target} computes something else than the converted model (largest raw difference {error:.3g} on a "
            f"random {size}x{size} input): not the same network"
        )


__all__ = ["relayout"]
