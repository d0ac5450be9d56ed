"""The graph builder: a ``Body`` (backbone + neck) from the rows of a model config.

Layer ``i`` of the body is row ``i`` of ``backbone + neck``; its module is ``layers.{i}``. Strides are
derived from each block's ``stride_factor`` (no dry run), channels from each block's ``out_channels``.

Correspondence with the official models:

* ``paper`` branch YAML models: row ``i`` of our YAML is row ``i`` of the official YAML (the ``IDetect`` row
  is the head), and the paper blocks keep the official submodule names, so a state_dict key
  ``model.{i}.<rest>`` maps to ``body.layers.{i}.<rest>``; the head keys ``model.{last}.m.{l}.*`` map to
  the detection head's ``m.{l}.*`` and ``model.{last}.ia.{l}.implicit`` / ``im.{l}.implicit`` to the bank
  tensors ``detect.ia.{l}`` / ``detect.im.{l}``.
* ``main`` branch darknet models: ``Body.darknet_layout()`` lists, in darknet section order, the module of
  every ``convolutional`` section (``None`` for sections without weights). For the zoo's ``main`` models
  the body layers before the head convolutions cover darknet sections ``0 .. K-1`` one to one; the last
  ``levels`` body rows are the 3×3 head convolutions, each standing for the ``route`` + ``convolutional``
  pair that opens a darknet ``yolo`` branch. Equivalently: the darknet ``convolutional`` sections with
  ``batch_normalize=1``, in file order, are the body's ``Conv`` modules in ``darknet_layout()`` order; the
  linear 1×1 convs (``batch_normalize=0``) are the head's ``m.{l}``; ``implicit_add`` sections in order are
  ``detect.ia.{l}`` and ``implicit_mul`` sections ``detect.im.{l}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unified.config import ConfigError
from unified.implicit import (
    ImplicitFoldError,
    fold_add_after,
    fold_add_before,
    fold_mul_after,
    fold_mul_before,
)
from unified.models.blocks import (
    BLOCKS,
    Block,
    BuildContext,
    Conv,
    DarknetLayout,
    LayerDefaults,
    PlainConv,
    Repeat,
    _ImplicitLayer,
    _prefixed,
)
from unified.models.config import ModelConfig, load_model_config
from unified.models.fuse import Fusable, fuse_model
from unified.registry import RegistryError
from unified.structures import FeatureShape


@dataclass(frozen=True)
class LayerSpec:
    """One built body layer, as shown by the model info table."""

    index: int
    inputs: tuple[int, ...]
    repeats: int
    block: str
    args: tuple[Any, ...]
    out_channels: int
    stride: Fraction


class Body(nn.Module, Fusable):
    """Backbone + neck built from a model config; returns the ``outputs`` feature maps in order.

    Args:
        cfg: A ``ModelConfig``, a model YAML path or the same content as a mapping.
        bank: The model's implicit bank, needed only when body rows use implicit ops; when omitted and such
            rows exist, the body creates and owns one (``body.bank``).

    Attributes:
        layers: The layer modules, ``layers.{i}`` = row ``i``.
        out_shapes: Channels and stride of each output, in ``outputs`` order.
        specs: Per-layer description (inputs, block, channels, stride).
    """

    def __init__(self, cfg: ModelConfig | str | Path | Mapping[str, Any], bank: Any | None = None) -> None:
        super().__init__()
        cfg = load_model_config(cfg)
        self.cfg = cfg
        rows = cfg.rows
        if bank is None and any(_uses_implicit(row[2]) for row in rows):
            from unified.implicit import ImplicitBank

            bank = ImplicitBank()
            self.bank = bank  # owned, so its tensors are saved with the body
        defaults = LayerDefaults(cfg.norm.eps, cfg.norm.momentum, cfg.activation)
        self.layers = nn.ModuleList()
        self.specs: list[LayerSpec] = []
        self.channels: list[int] = []
        self.strides: list[Fraction] = []
        self._inputs: list[tuple[int, ...]] = []
        self._multi: list[bool] = []
        for index, row in enumerate(rows):
            ctx = BuildContext(
                defaults=defaults,
                width_multiple=cfg.width_multiple,
                depth_multiple=cfg.depth_multiple,
                channel_divisor=cfg.channel_divisor,
                bank=bank,
                layer_index=index,
            )
            self._add_row(index, row, ctx)
        self.outputs = list(cfg.outputs)
        for k, out in enumerate(self.outputs):
            if self.strides[out].denominator != 1:
                raise ConfigError(
                    f"{cfg.where(f'outputs.{k}')}: layer {out} has a fractional stride {self.strides[out]}"
                )
        self.out_shapes = [FeatureShape(self.channels[o], int(self.strides[o])) for o in self.outputs]
        self._keep, self._release = _release_plan(self._inputs, self.outputs)

    def _add_row(self, index: int, row: list[Any], ctx: BuildContext) -> None:
        """Build row ``index`` of the config and append its layer, channels, stride and inputs.

        Raises:
            ConfigError: naming the row, for an unknown block, a ``from`` of the wrong shape, inputs of
                different strides, or args the block cannot be built with.
        """
        cfg = self.cfg
        src, repeats, name, args = row[0], row[1], row[2], (row[3] if len(row) > 3 else [])
        froms = src if isinstance(src, list) else [src]
        absolute = tuple(f if f >= 0 else index + f for f in froms)
        key = cfg.row_key(index)
        block_cls = _block_class(cfg, key, name, src)
        in_channels = [cfg.input_channels if j < 0 else self.channels[j] for j in absolute]
        in_strides = {Fraction(1) if j < 0 else self.strides[j] for j in absolute}
        if len(in_strides) > 1:
            shown = ", ".join(
                f"layer {j}: stride {Fraction(1) if j < 0 else self.strides[j]}" for j in absolute
            )
            raise ConfigError(f"{cfg.where(key)}: {name} reads feature maps of different strides ({shown})")
        n = ctx.repeats(repeats)
        try:
            module = self._build(block_cls, in_channels, args, n, ctx)
        except (ConfigError, TypeError, ValueError) as exc:
            raise ConfigError(f"{cfg.where(key)}: cannot build {name} with args {args!r}: {exc}") from None
        self.layers.append(module)
        self.channels.append(module.out_channels)
        self.strides.append(in_strides.pop() * module.stride_factor)
        self._inputs.append(absolute)
        self._multi.append(block_cls.multi_input)
        self.specs.append(
            LayerSpec(index, absolute, n, name, tuple(args), module.out_channels, self.strides[-1])
        )

    @staticmethod
    def _build(
        block_cls: type[Block], in_channels: list[int], args: list[Any], n: int, ctx: BuildContext
    ) -> nn.Module:
        if block_cls.repeats_inside or n == 1:
            return block_cls.from_row(in_channels, args, n, ctx)
        blocks = []
        for _ in range(n):
            block = block_cls.from_row(in_channels, args, 1, ctx)
            blocks.append(block)
            in_channels = [block.out_channels]
        return Repeat(blocks)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        kept: dict[int, torch.Tensor] = {}
        x = images
        for index, layer in enumerate(self.layers):
            srcs = self._inputs[index]
            if self._multi[index]:
                x = layer([x if j == index - 1 else kept[j] for j in srcs])
            elif srcs[0] != index - 1:
                x = layer(kept[srcs[0]])
            else:
                x = layer(x)
            if index in self._keep:
                kept[index] = x
            for j in self._release[index]:
                del kept[j]
        return [kept[o] for o in self.outputs]

    # -- fusion ------------------------------------------------------------------------------------------
    def fuse(self) -> None:
        """Fold BN into convs, then implicit add/mul rows into an adjacent conv where exact.

        An implicit row folds into the conv right after it (``mul`` always; ``add`` only into an unpadded
        conv) when that conv is its only reader, or into the linear conv right before it when it is that
        conv's only reader. Other implicit rows stay in place.
        """
        for layer in self.layers:
            fuse_model(layer)
        readers: dict[int, list[int]] = {}
        for index, srcs in enumerate(self._inputs):
            for j in srcs:
                readers.setdefault(j, []).append(index)
        outputs = set(self.outputs)
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, _ImplicitLayer) or layer.implicit.op == "concat":
                continue
            op = layer.implicit.op
            users = readers.get(index, [])
            after = self._fold_into_next(index, users, outputs, op, layer)
            if not after:
                self._fold_into_previous(index, readers, outputs, op, layer)

    def _replace_with_identity(self, index: int, layer: _ImplicitLayer) -> None:
        passthrough = _FoldedImplicit(layer.out_channels, layer.implicit.name)
        self.layers[index] = passthrough

    def _fold_into_next(
        self, index: int, users: list[int], outputs: set[int], op: str, layer: _ImplicitLayer
    ) -> bool:
        if index in outputs or len(users) != 1 or self._multi[users[0]]:
            return False
        target = self.layers[users[0]]
        if not isinstance(target, (Conv, PlainConv)):
            return False
        fold = fold_mul_before if op == "mul" else fold_add_before
        try:
            target.conv = fold(target.conv, layer.implicit)
        except ImplicitFoldError:
            return False  # zero-padded conv after an add: not exact, keep the op
        self._replace_with_identity(index, layer)
        return True

    def _fold_into_previous(
        self, index: int, readers: dict[int, list[int]], outputs: set[int], op: str, layer: _ImplicitLayer
    ) -> bool:
        src, reader = self._inputs[index][0], index
        # Look through rows already folded away (an add right after a folded multiply, for example).
        while src >= 0 and isinstance(self.layers[src], _FoldedImplicit):
            if src in outputs or readers.get(src, []) != [reader]:
                return False
            src, reader = self._inputs[src][0], src
        if src < 0 or src in outputs or readers.get(src, []) != [reader]:
            return False
        target = self.layers[src]
        if not isinstance(target, (Conv, PlainConv)) or not target.is_linear:
            return False
        if isinstance(target, Conv) and isinstance(target.bn, nn.BatchNorm2d):
            return False
        fold = fold_mul_after if op == "mul" else fold_add_after
        target.conv = fold(target.conv, layer.implicit)
        self._replace_with_identity(index, layer)
        return True

    # -- darknet correspondence -------------------------------------------------------------------------
    def darknet_layout(self) -> DarknetLayout:
        """Darknet sections of the body in cfg order: module paths of conv sections, ``None`` otherwise.

        A single-input row that does not read the previous row stands for a ``route`` section followed by
        its own sections. See the module docstring for how this aligns with an official cfg.

        Raises:
            NotImplementedError: if a block has no darknet equivalent.
        """
        layout: DarknetLayout = []
        for index, layer in enumerate(self.layers):
            if not self._multi[index] and index > 0 and self._inputs[index][0] != index - 1:
                layout.append(None)
            layout += _prefixed(f"layers.{index}", layer.darknet_layout())
        return layout


class _FoldedImplicit(nn.Identity):
    """Stands where an implicit row was folded into a neighbouring conv."""

    def __init__(self, out_channels: int, name: str) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.folded = name

    def extra_repr(self) -> str:
        return f"folded implicit {self.folded!r}"


def _block_class(cfg: ModelConfig, key: str, name: Any, src: Any) -> type[Block]:
    """The registered block of a row, which must read one layer or a list of them as the block expects.

    Raises:
        ConfigError: naming the row, for an unknown block or a ``from`` of the wrong shape.
    """
    try:
        block_cls = BLOCKS.get(name)
    except RegistryError as exc:
        raise ConfigError(f"{cfg.where(key)}: {exc}") from None
    froms = src if isinstance(src, list) else [src]
    if block_cls.multi_input != isinstance(src, list) and not (block_cls.multi_input and len(froms) == 1):
        wanted = "a list of layers" if block_cls.multi_input else "a single layer"
        raise ConfigError(f"{cfg.where(key)}: {name} reads {wanted}, got 'from' {src!r}")
    return block_cls


def _release_plan(
    inputs: list[tuple[int, ...]], outputs: list[int]
) -> tuple[frozenset[int], list[tuple[int, ...]]]:
    """The layers whose output ``forward`` keeps, and after each layer those it can drop.

    Only what a later layer (other than the next one) or the output list needs is kept, and each kept
    tensor is dropped after its last reader, so peak memory stays close to a plain feed-forward net.
    """
    last_use: dict[int, int] = {}
    for index, srcs in enumerate(inputs):
        for j in srcs:
            if j >= 0 and j != index - 1:
                last_use[j] = index
    for o in outputs:
        last_use[o] = len(inputs)
    release = [tuple(j for j, last in last_use.items() if last == index) for index in range(len(inputs))]
    return frozenset(last_use), release


def _uses_implicit(name: Any) -> bool:
    if not isinstance(name, str) or name not in BLOCKS:
        return False
    return issubclass(BLOCKS.get(name), _ImplicitLayer)


__all__ = ["Body", "LayerSpec"]
