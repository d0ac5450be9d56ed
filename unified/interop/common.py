"""What both official formats convert into, and the checked key mapping they share."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from unified.config import ConfigError


class InteropError(ConfigError):
    """An official model or checkpoint cannot be converted; the message names the layer, key or line."""


@dataclass
class ConvertedModel:
    """An official model translated into our model config and state_dict.

    Attributes:
        model_config: Our model YAML as a dict (``unified.models.ModelConfig`` fields).
        state_dict: Tensors under our parameter names (FP32 for floating point).
        class_names: Detection class names (from the checkpoint, else numbered).
        implicit_share: Implicit bank aliases the model needs (darknet ``shift_channels`` sharing a tensor).
        branch: ``"main"`` (darknet cfg) or ``"paper"`` (pickled ``Model``).
        notes: Human-readable remarks about the conversion (where anchors came from, ignored keys).
        official_params: Number of parameters of the official model (its ``state_dict`` without buffers).
    """

    model_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    class_names: list[str]
    implicit_share: dict[str, str] = field(default_factory=dict)
    branch: str = ""
    notes: list[str] = field(default_factory=list)
    official_params: int | None = None


def to_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Floating tensors as FP32 (official ``paper`` checkpoints are FP16); integer ones unchanged."""
    return tensor.float() if tensor.is_floating_point() else tensor


def map_state_dict(
    official: Mapping[str, torch.Tensor],
    mapping: Mapping[str, str],
    own: Mapping[str, torch.Tensor],
    describe_official: Callable[[str], str],
    describe_own: Callable[[str], str],
    checked: Mapping[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Rename official tensors to ours and check the mapping is total and shape-preserving.

    Args:
        official: The official tensors by official key.
        mapping: Official key -> our key.
        own: Our model's ``state_dict`` (for the names and shapes to fill).
        describe_official: Says where an official key comes from (``darknet section 12 (convolutional)``).
        describe_own: Says where one of our keys lives (``body row 7 (Conv)``).
        checked: Official keys that are not weights of ours but were verified another way (e.g. anchors),
            with the reason; they count as used.

    Returns:
        Our state_dict, every key of ``own`` filled exactly once.

    Raises:
        InteropError: naming every official tensor left unused, every one of ours left empty or filled twice,
            and every shape mismatch (with both layers).
    """
    checked = dict(checked or {})
    problems: list[str] = []
    out: dict[str, torch.Tensor] = {}
    source_of: dict[str, str] = {}
    for key, tensor in official.items():
        if key in checked:
            continue
        target = mapping.get(key)
        if target is None:
            problems.append(
                f"official tensor {key!r} ({describe_official(key)}) has no counterpart in our model"
            )
            continue
        if target not in own:
            problems.append(
                f"official tensor {key!r} ({describe_official(key)}) maps to {target!r}, which our model lacks"
            )
            continue
        if target in out:
            problems.append(
                f"our tensor {target!r} ({describe_own(target)}) would be filled twice: from {source_of[target]!r} "
                f"and {key!r}"
            )
            continue
        if tuple(tensor.shape) != tuple(own[target].shape):
            problems.append(
                f"shape mismatch: official {key!r} ({describe_official(key)}) is {tuple(tensor.shape)}, our "
                f"{target!r} ({describe_own(target)}) is {tuple(own[target].shape)}"
            )
            continue
        out[target] = to_float32(tensor).to(own[target].dtype).clone()
        source_of[target] = key
    attempted = {mapping.get(k) for k in official}
    for key in own:
        if key not in out and key not in attempted:
            problems.append(f"our tensor {key!r} ({describe_own(key)}) gets no official tensor")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise InteropError(f"the official weights do not fit the translated model:\n  {shown}{more}")
    return out


def numbered_names(nc: int) -> list[str]:
    """Class names ``"0" .. "nc-1"`` for checkpoints that carry none."""
    return [str(i) for i in range(nc)]


__all__ = ["ConvertedModel", "InteropError", "map_state_dict", "numbered_names", "to_float32"]
