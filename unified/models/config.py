"""The model YAML schema (``configs/models/*.yaml``) and its loader.

A model YAML holds::

    nc: 80                      # detection classes (heads only; the body never sees it)
    depth_multiple: 1.0         # scales the repeats of each row (n > 1)
    width_multiple: 1.0         # scales channel arguments, rounded up to channel_divisor
    norm: {eps: 0.001, momentum: 0.03}
    activation: silu
    anchors:                    # pixels, one list per output level: [w0, h0, w1, h1, ...]
      - [12, 16, 19, 36, 40, 28]
    backbone:                   # rows [from, repeats, block, args]; indices count across backbone then neck
      - [-1, 1, Conv, [32, 3, 1]]
    neck:
      - [[-1, 6], 1, Concat, []]
    outputs: [28, 29, 30]       # layers feeding the heads, in level order
    head: {implicit: true, implicit_form: vector, refine: [add, mul], feature_alignment: false}

``from`` is a row index (absolute) or an offset (negative, ``-1`` = the previous row; the first row's ``-1``
is the image), or a list of them for multi-input blocks. Channel counts that depend on ``nc`` are never
written: heads size themselves.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from unified.config import ConfigError, from_dict, read_yaml, yaml_key_lines
from unified.packaged_configs import resolve_config

#: Row arguments only heads may reference.
HEAD_ONLY_NAMES = ("nc", "anchors")


@dataclass
class NormConfig:
    """BatchNorm settings of every norm layer in the body (PyTorch momentum convention)."""

    eps: float = 1e-3
    momentum: float = 0.03


#: The prediction-refinement ops a head may use (``head.refine``).
REFINE_OPS = ("add", "mul")


@dataclass
class HeadConfig:
    """Options of the task heads built from this model's outputs (YOLOR's implicit knowledge in them).

    Attributes:
        implicit: YOLOR's implicit refinement in the heads (add before, multiply after the 1×1 output
            conv); ``false`` gives a plain YOLO ``Detect`` head (e.g. the ``yolov4-csp`` baseline) and heads
            without implicit knowledge (the same as ``refine: []``). A task's own ``implicit`` option wins.
        implicit_form: Form of ``g(z)`` of the heads' implicit tensors: ``vector``, ``nn`` or ``mf``.
        refine: Which prediction-refinement ops the heads use: ``add`` (the implicit add before each head's
            output conv: ``detect.ia.*``, ``jdc.align.*`` and ``jdc.ia``, ``jde.ia.*`` ...) and ``mul`` (the
            implicit multiply after it: ``detect.im.*``, ``jdc.im`` ...); the paper's ablation rows.
        feature_alignment: An implicit add on every output feature of the neck, before all task heads
            (bank names ``align.{level}``); folded into the heads at inference when every head can take it
            exactly (``detect`` and ``jdc``), else kept as a cheap broadcast add.
    """

    implicit: bool = True
    implicit_form: Literal["vector", "nn", "mf"] = "vector"
    refine: list[Literal["add", "mul"]] = field(default_factory=lambda: ["add", "mul"])
    feature_alignment: bool = False

    def refine_ops(self, implicit: bool | None = None) -> tuple[str, ...]:
        """The refinement ops of a head whose task says ``implicit`` (None: as ``head.implicit`` says)."""
        on = self.implicit if implicit is None else implicit
        return tuple(op for op in REFINE_OPS if op in self.refine) if on else ()


@dataclass
class ModelConfig:
    """A model definition: body rows, output levels, anchors and head options (see the module docstring)."""

    backbone: list[list[Any]]
    outputs: list[int]
    anchors: list[list[float]]
    neck: list[list[Any]] = field(default_factory=list)
    nc: int = 80
    depth_multiple: float = 1.0
    width_multiple: float = 1.0
    channel_divisor: int = 8
    input_channels: int = 3
    norm: NormConfig = field(default_factory=NormConfig)
    activation: str = "silu"
    head: HeadConfig = field(default_factory=HeadConfig)
    description: str = ""
    #: Where the config came from and the line of each dotted key (for error messages; not serialised).
    source: str | None = field(default=None, init=False, repr=False, compare=False)
    lines: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def rows(self) -> list[list[Any]]:
        """Backbone rows followed by neck rows (the body's layer order)."""
        return list(self.backbone) + list(self.neck)

    @property
    def num_levels(self) -> int:
        return len(self.outputs)

    @property
    def anchors_per_level(self) -> int:
        return len(self.anchors[0]) // 2 if self.anchors else 0

    def row_key(self, index: int) -> str:
        """The dotted YAML key of body layer ``index`` (``backbone.3`` or ``neck.0``)."""
        if index < len(self.backbone):
            return f"backbone.{index}"
        return f"neck.{index - len(self.backbone)}"

    def where(self, key: str) -> str:
        """``file, line N: key 'k'`` for messages about ``key``."""
        place = self.source or "<model config>"
        line = self.lines.get(key)
        if line is not None:
            place += f", line {line}"
        return f"{place}: key {key!r}"


def load_model_config(source: str | Path | Mapping[str, Any] | ModelConfig) -> ModelConfig:
    """Load and validate a model YAML (a path, a packaged model's name such as ``yolor-tiny``, the same content
    as a mapping, or a ``ModelConfig``).

    Raises:
        ConfigError: naming the file, line and key of an unknown key (with the closest valid one), a
            malformed row, a head-only name in a body row, bad anchors or bad output indices.
    """
    if isinstance(source, ModelConfig):
        cfg = source
    else:
        if isinstance(source, Mapping):
            data, lines, name = dict(source), {}, "<model dict>"
        else:
            path = resolve_config(source, "model")
            data, lines = read_yaml(path)
            name = str(path)
        cfg = from_dict(ModelConfig, data, source=name, lines=lines)
        cfg.source, cfg.lines = name, dict(lines)
    validate_model_config(cfg)
    return cfg


def model_config_from_text(text: str, source: str = "<model yaml>") -> ModelConfig:
    """Load a model config from YAML text (used by tests and tools that embed a config)."""
    import yaml

    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a model config must be a YAML mapping")
    cfg = from_dict(ModelConfig, data, source=source, lines=yaml_key_lines(text))
    cfg.source, cfg.lines = source, yaml_key_lines(text)
    validate_model_config(cfg)
    return cfg


def validate_model_config(cfg: ModelConfig) -> None:
    """Check rows, outputs, anchors and the activation name; errors name the file, line and key."""
    from unified.models.blocks import ACTIVATIONS

    if cfg.activation not in ACTIVATIONS:
        close = difflib.get_close_matches(cfg.activation, ACTIVATIONS.names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{cfg.where('activation')}: unknown activation {cfg.activation!r}.{hint} "
            f"Known: {', '.join(ACTIVATIONS.names())}"
        )
    if cfg.depth_multiple <= 0 or cfg.width_multiple <= 0:
        raise ConfigError(f"{cfg.where('width_multiple')}: depth and width multiples must be positive")
    if cfg.channel_divisor < 1:
        raise ConfigError(f"{cfg.where('channel_divisor')}: must be at least 1")
    if cfg.input_channels < 1:
        raise ConfigError(f"{cfg.where('input_channels')}: must be at least 1")
    if cfg.nc < 1:
        raise ConfigError(f"{cfg.where('nc')}: the number of classes must be at least 1")
    if len(set(cfg.head.refine)) != len(cfg.head.refine):
        raise ConfigError(f"{cfg.where('head.refine')}: list each of {list(REFINE_OPS)} at most once")
    if not (0 < cfg.norm.momentum < 1) or cfg.norm.eps <= 0:
        raise ConfigError(f"{cfg.where('norm')}: need 0 < momentum < 1 and eps > 0")
    rows = cfg.rows
    if not rows:
        raise ConfigError(f"{cfg.where('backbone')}: the body has no rows")
    for index, row in enumerate(rows):
        _validate_row(cfg, index, row)
    if not cfg.outputs:
        raise ConfigError(f"{cfg.where('outputs')}: list at least one layer feeding the heads")
    for k, out in enumerate(cfg.outputs):
        if not (0 <= out < len(rows)):
            raise ConfigError(
                f"{cfg.where(f'outputs.{k}')}: layer {out} does not exist (the body has layers 0..{len(rows) - 1})"
            )
    _validate_anchors(cfg)


def _validate_row(cfg: ModelConfig, index: int, row: Any) -> None:
    key = cfg.row_key(index)
    if not isinstance(row, list) or len(row) not in (3, 4):
        raise ConfigError(f"{cfg.where(key)}: a row is [from, repeats, block, args], got {row!r}")
    if len(row) == 3:
        row.append([])
    src, repeats, block, args = row
    froms = src if isinstance(src, list) else [src]
    if not froms or not all(isinstance(f, int) and not isinstance(f, bool) for f in froms):
        raise ConfigError(f"{cfg.where(key)}: 'from' must be a layer index or a list of them, got {src!r}")
    for f in froms:
        absolute = f if f >= 0 else index + f
        if absolute >= index or (absolute < 0 and not (index == 0 and f == -1)):
            raise ConfigError(
                f"{cfg.where(key)}: layer {index} reads 'from' {f}, which is not an earlier layer "
                f"(only the first row may read the image, with -1)"
            )
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ConfigError(f"{cfg.where(key)}: repeats must be a positive integer, got {repeats!r}")
    if not isinstance(block, str):
        raise ConfigError(f"{cfg.where(key)}: the block name must be a string, got {block!r}")
    if not isinstance(args, list):
        raise ConfigError(f"{cfg.where(key)}: args must be a list, got {args!r}")
    for name in HEAD_ONLY_NAMES:
        if _mentions(args, name):
            raise ConfigError(
                f"{cfg.where(key)}: {block} args reference {name!r}; only heads may depend on {name!r} "
                f"(heads size themselves from the body's output shapes)"
            )


def _mentions(value: Any, name: str) -> bool:
    if isinstance(value, str):
        return value == name
    if isinstance(value, (list, tuple)):
        return any(_mentions(v, name) for v in value)
    if isinstance(value, dict):
        return any(_mentions(v, name) for v in value.values())
    return False


def _validate_anchors(cfg: ModelConfig) -> None:
    if len(cfg.anchors) != len(cfg.outputs):
        raise ConfigError(
            f"{cfg.where('anchors')}: {len(cfg.anchors)} anchor levels for {len(cfg.outputs)} outputs; "
            f"give one list of anchors per output level"
        )
    sizes = set()
    for k, level in enumerate(cfg.anchors):
        if not level or len(level) % 2:
            raise ConfigError(f"{cfg.where(f'anchors.{k}')}: anchors are w, h pairs in pixels, got {level!r}")
        if any(v <= 0 for v in level):
            raise ConfigError(f"{cfg.where(f'anchors.{k}')}: anchor sizes must be positive pixels")
        sizes.add(len(level))
    if len(sizes) != 1:
        raise ConfigError(f"{cfg.where('anchors')}: every level needs the same number of anchors")


def with_nc(cfg: ModelConfig, nc: int) -> ModelConfig:
    """A copy of ``cfg`` with another class count (keeps the source and line map for messages)."""
    new = dataclasses.replace(cfg, nc=nc)
    new.source, new.lines = cfg.source, dict(cfg.lines)
    return new


__all__ = [
    "REFINE_OPS",
    "HeadConfig",
    "ModelConfig",
    "NormConfig",
    "load_model_config",
    "model_config_from_text",
    "validate_model_config",
    "with_nc",
]
