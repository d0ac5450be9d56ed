"""Building blocks of the body, registered in ``BLOCKS`` under the names the model YAMLs use.

Every block is built from a YAML row ``[from, repeats, block, args]`` by ``Block.from_row`` and reports its
``out_channels`` and ``stride_factor`` (output stride relative to its input), so shapes flow through the
builder and nothing is hard-coded.

Two families of CSP blocks exist because the two official YOLOR code bases differ:

* ``paper`` branch blocks (``BottleneckCSP``, ``BottleneckCSPF``, ``BottleneckCSP2``, ``SPPCSP``, ``DownC``):
  the side branch is a plain conv and one BatchNorm + activation follows the concat. Their submodules carry
  the official names (``cv1.conv``, ``cv1.bn``, ``cv2`` plain conv, ``bn`` over the concat, ``m.{j}.cv1``),
  so an official ``paper`` checkpoint maps key by key: ``model.{i}.<rest>`` -> ``layers.{i}.<rest>``.
* ``main`` branch (darknet cfg) blocks live in :mod:`unified.models.darknet_blocks`.

Shared primitives: ``Conv`` (conv + BN + activation), ``PlainConv`` (conv with bias, no BN, linear),
``Bottleneck``, ``ReOrg`` (space-to-depth), ``Concat`` (darknet ``route``), ``Shortcut`` (darknet
``shortcut``, an add), ``MaxPool``, ``Upsample`` and the implicit ops ``ImplicitAdd``, ``ImplicitMul``,
``ImplicitConcat`` (tensors from the model's implicit bank).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import torch
from torch import nn

from unified.config import ConfigError
from unified.implicit import ImplicitBank, ImplicitOp
from unified.models.fuse import Fusable, fuse_conv_bn
from unified.registry import Registry

#: Blocks usable in model YAML rows. Built-ins register on import of these modules.
BLOCKS: Registry[type[Block]] = Registry(
    "block", default_modules=("unified.models.blocks", "unified.models.darknet_blocks")
)

#: Activation factories by the name used in model YAMLs (``activation:`` and ``Conv`` args).
ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
ACTIVATIONS.add("silu", nn.SiLU)
ACTIVATIONS.add("relu", nn.ReLU)
ACTIVATIONS.add("leaky", lambda: nn.LeakyReLU(0.1))  # darknet's "leaky" slope
ACTIVATIONS.add("mish", nn.Mish)
ACTIVATIONS.add("hardswish", nn.Hardswish)
ACTIVATIONS.add("linear", nn.Identity)

#: A darknet layout entry: the path of a conv-carrying module, or None for a section without weights.
DarknetLayout = list[str | None]


@dataclass(frozen=True)
class LayerDefaults:
    """Norm and activation settings every block of one model shares."""

    eps: float = 1e-3
    momentum: float = 0.03
    activation: str = "silu"

    def norm(self, channels: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(channels, eps=self.eps, momentum=self.momentum)

    def act(self, act: bool | str = True) -> nn.Module:
        """``True``: the model's activation; ``False``: none; a name: that activation."""
        if act is True:
            return ACTIVATIONS.get(self.activation)()
        if act is False or act is None:
            return nn.Identity()
        return ACTIVATIONS.get(str(act))()


DEFAULTS = LayerDefaults()


def make_divisible(value: float, divisor: int) -> int:
    """``value`` rounded up to a multiple of ``divisor``."""
    return int(math.ceil(value / divisor) * divisor)


@dataclass
class BuildContext:
    """What a block needs from the model config while it is built from a row."""

    defaults: LayerDefaults = DEFAULTS
    width_multiple: float = 1.0
    depth_multiple: float = 1.0
    channel_divisor: int = 8
    bank: ImplicitBank | None = None
    layer_index: int = 0

    def channels(self, value: int) -> int:
        """A channel argument scaled by the width multiple."""
        if self.width_multiple == 1.0:
            return int(value)
        return make_divisible(value * self.width_multiple, self.channel_divisor)

    def repeats(self, n: int) -> int:
        """A repeat count scaled by the depth multiple (a single block stays single)."""
        return max(round(n * self.depth_multiple), 1) if n > 1 else n


def autopad(k: int, d: int = 1) -> int:
    """'Same' padding of an odd kernel."""
    return d * (k - 1) // 2


class Block(nn.Module):
    """Base class of body blocks.

    Class attributes describe the YAML row: ``row_args`` (argument names, in order, all but the first
    optional), ``channel_args`` (those scaled by the width multiple), ``repeats_inside`` (the block uses the
    repeat count itself, e.g. the number of bottlenecks of a CSP block; otherwise the builder chains
    ``repeats`` copies), ``multi_input`` (reads a list of layers). ``example_args`` and ``example_inputs``
    are a small valid configuration used by the generated tests.

    Attributes:
        out_channels: Channels of the output.
        stride_factor: Output stride divided by input stride (2 for a stride-2 conv, 1/2 for an upsample).
    """

    row_args: ClassVar[tuple[str, ...]] = ()
    channel_args: ClassVar[tuple[str, ...]] = ("c2",)
    repeats_inside: ClassVar[bool] = False
    multi_input: ClassVar[bool] = False
    example_args: ClassVar[tuple[Any, ...]] = ()
    example_inputs: ClassVar[tuple[int, ...]] = (8,)

    out_channels: int
    stride_factor: Fraction = Fraction(1)

    @classmethod
    def bind_args(cls, args: Sequence[Any], ctx: BuildContext) -> dict[str, Any]:
        """Map positional YAML args to keyword arguments, scaling channel arguments.

        Raises:
            ConfigError: if there are more args than the block takes.
        """
        if len(args) > len(cls.row_args):
            raise ConfigError(
                f"{cls.__name__} takes args [{', '.join(cls.row_args)}], got {len(args)} values {list(args)!r}"
            )
        kwargs = dict(zip(cls.row_args, args))
        for name in cls.channel_args:
            if name in kwargs:
                value = kwargs[name]
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ConfigError(
                        f"{cls.__name__} arg {name!r} must be a positive channel count, got {value!r}"
                    )
                kwargs[name] = ctx.channels(value)
        return kwargs

    @classmethod
    def from_row(
        cls, in_channels: Sequence[int], args: Sequence[Any], repeats: int, ctx: BuildContext
    ) -> Block:
        """Build the block of one YAML row (``repeats`` is already scaled by the depth multiple)."""
        kwargs = cls.bind_args(args, ctx)
        if cls.repeats_inside:
            kwargs["n"] = repeats
        elif repeats != 1:
            raise ConfigError(f"{cls.__name__} does not take repeats; got {repeats}")
        first: Any = list(in_channels) if cls.multi_input else _single(cls, in_channels)
        return cls(first, **kwargs, defaults=ctx.defaults)

    def darknet_layout(self) -> DarknetLayout:
        """Darknet cfg sections this block stands for, in cfg order (see ``Body.darknet_layout``).

        Raises:
            NotImplementedError: for blocks without a darknet equivalent (the ``paper`` CSP blocks).
        """
        raise NotImplementedError(f"{type(self).__name__} has no darknet (main-branch) equivalent")


def _single(cls: type, in_channels: Sequence[int]) -> int:
    if len(in_channels) != 1:
        raise ConfigError(f"{cls.__name__} reads one layer, got {len(in_channels)} inputs")
    return int(in_channels[0])


def _prefixed(prefix: str, layout: DarknetLayout) -> DarknetLayout:
    return [None if p is None else (f"{prefix}.{p}" if p else prefix) for p in layout]


class Repeat(nn.Sequential):
    """``repeats`` chained copies of a block that does not take the repeat count itself."""

    def __init__(self, blocks: Sequence[Block]) -> None:
        super().__init__(*blocks)
        self.out_channels = blocks[-1].out_channels
        factor = Fraction(1)
        for block in blocks:
            factor *= block.stride_factor
        self.stride_factor = factor

    def darknet_layout(self) -> DarknetLayout:
        layout: DarknetLayout = []
        for j, block in enumerate(self):
            layout += _prefixed(str(j), block.darknet_layout())
        return layout


# -- primitives ------------------------------------------------------------------------------------------
@BLOCKS.register()
class Conv(Block, Fusable):
    """Convolution (no bias) + BatchNorm + activation; ``act`` False gives a linear conv + BN.

    Args:
        c1: Input channels.
        c2: Output channels.
        k: Kernel size ('same' padding).
        s: Stride.
        g: Groups.
        act: ``True`` (the model's activation), ``False`` (none) or an activation name.
    """

    row_args = ("c2", "k", "s", "g", "act")
    example_args = (8, 3, 2)

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 1,
        s: int = 1,
        g: int = 1,
        act: bool | str = True,
        *,
        defaults: LayerDefaults = DEFAULTS,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k), groups=g, bias=False)
        self.bn: nn.Module = defaults.norm(c2)
        self.act = defaults.act(act)
        self.out_channels = c2
        self.stride_factor = Fraction(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> None:
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fuse_conv_bn(self.conv, self.bn)
            self.bn = nn.Identity()

    @property
    def is_linear(self) -> bool:
        """True when nothing nonlinear follows the convolution."""
        return isinstance(self.act, nn.Identity)

    def darknet_layout(self) -> DarknetLayout:
        return [""]


@BLOCKS.register()
class PlainConv(Block):
    """A linear convolution with bias and no BatchNorm (darknet ``batch_normalize=0, activation=linear``)."""

    row_args = ("c2", "k", "s", "g", "bias")
    example_args = (8, 1, 1)

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 1,
        s: int = 1,
        g: int = 1,
        bias: bool = True,
        *,
        defaults: LayerDefaults = DEFAULTS,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k), groups=g, bias=bias)
        self.out_channels = c2
        self.stride_factor = Fraction(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    is_linear = True

    def darknet_layout(self) -> DarknetLayout:
        return [""]


@BLOCKS.register()
class Bottleneck(Block):
    """``x + cv2(cv1(x))`` (1×1 to ``c2·e``, then 3×3 to ``c2``); no add without ``shortcut`` or when c1 ≠ c2."""

    row_args = ("c2", "shortcut", "g", "e")
    example_args = (8,)

    def __init__(
        self,
        c1: int,
        c2: int,
        shortcut: bool = True,
        g: int = 1,
        e: float = 0.5,
        *,
        defaults: LayerDefaults = DEFAULTS,
    ) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1, defaults=defaults)
        self.cv2 = Conv(hidden, c2, 3, 1, g, defaults=defaults)
        self.add = bool(shortcut) and c1 == c2
        self.out_channels = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y

    def darknet_layout(self) -> DarknetLayout:
        return ["cv1", "cv2", None] if self.add else ["cv1", "cv2"]


@BLOCKS.register()
class ReOrg(Block):
    """Space-to-depth: (C, H, W) -> (4C, H/2, W/2), quadrants in the official order (even/odd rows, cols)."""

    channel_args = ()
    example_args = ()

    def __init__(self, c1: int, *, defaults: LayerDefaults = DEFAULTS) -> None:
        super().__init__()
        self.out_channels = 4 * c1
        self.stride_factor = Fraction(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], dim=1)

    def darknet_layout(self) -> DarknetLayout:
        return [None]


@BLOCKS.register()
class Concat(Block):
    """Concatenate the inputs along channels, in ``from`` order (darknet ``route``)."""

    row_args = ("dim",)
    channel_args = ()
    multi_input = True
    example_inputs = (8, 4)

    def __init__(self, c_in: Sequence[int], dim: int = 1, *, defaults: LayerDefaults = DEFAULTS) -> None:
        super().__init__()
        if dim != 1:
            raise ConfigError(f"Concat joins channels (dim 1); dim {dim} is not supported")
        self.out_channels = int(sum(c_in))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return xs[0] if len(xs) == 1 else torch.cat(xs, dim=1)

    def darknet_layout(self) -> DarknetLayout:
        return [None]


@BLOCKS.register()
class Shortcut(Block):
    """Sum of the inputs, which must have equal shapes (darknet ``shortcut``, linear)."""

    channel_args = ()
    multi_input = True
    example_inputs = (8, 8)

    def __init__(self, c_in: Sequence[int], *, defaults: LayerDefaults = DEFAULTS) -> None:
        super().__init__()
        if len(c_in) < 2 or len(set(c_in)) != 1:
            raise ConfigError(f"Shortcut adds two or more inputs of equal channels, got {list(c_in)}")
        self.out_channels = int(c_in[0])

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out

    def darknet_layout(self) -> DarknetLayout:
        return [None]


@BLOCKS.register()
class MaxPool(Block):
    """Max pooling; padding defaults to ``(k - 1) // 2`` (darknet and SPP convention)."""

    row_args = ("k", "s", "p")
    channel_args = ()
    example_args = (3, 1)

    def __init__(
        self,
        c1: int,
        k: int = 2,
        s: int | None = None,
        p: int | None = None,
        *,
        defaults: LayerDefaults = DEFAULTS,
    ) -> None:
        super().__init__()
        s = k if s is None else s
        self.m = nn.MaxPool2d(k, s, (k - 1) // 2 if p is None else p)
        self.out_channels = c1
        self.stride_factor = Fraction(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)

    def darknet_layout(self) -> DarknetLayout:
        return [None]


@BLOCKS.register()
class Upsample(Block):
    """Upsampling by an integer factor (default nearest)."""

    row_args = ("scale", "mode")
    channel_args = ()
    example_args = (2,)

    def __init__(
        self, c1: int, scale: int = 2, mode: str = "nearest", *, defaults: LayerDefaults = DEFAULTS
    ) -> None:
        super().__init__()
        if not isinstance(scale, int) or scale < 1:
            raise ConfigError(f"Upsample scale must be a positive integer, got {scale!r}")
        self.m = nn.Upsample(scale_factor=scale, mode=mode)
        self.out_channels = c1
        self.stride_factor = Fraction(1, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)

    def darknet_layout(self) -> DarknetLayout:
        return [None]


class _ImplicitLayer(Block):
    """Applies one implicit op of the model's bank; the tensor name defaults to ``body.{layer index}``."""

    op: ClassVar[str]
    row_args = ("name", "form")
    channel_args = ()

    def __init__(self, c1: int, op: ImplicitOp) -> None:
        super().__init__()
        self.implicit = op
        self.out_channels = c1 + (op.channels if op.op == "concat" else 0)

    @classmethod
    def from_row(
        cls, in_channels: Sequence[int], args: Sequence[Any], repeats: int, ctx: BuildContext
    ) -> Block:
        if repeats != 1:
            raise ConfigError(f"{cls.__name__} does not take repeats; got {repeats}")
        kwargs = cls.bind_args(args, ctx)
        c1 = _single(cls, in_channels)
        if ctx.bank is None:
            raise ConfigError(f"{cls.__name__} needs an implicit bank; build the body with one")
        name = kwargs.get("name") or f"body.{ctx.layer_index}"
        channels = kwargs.get("channels", c1)
        op = ctx.bank.get(name, channels, cls.op, kwargs.get("form") or "vector")  # type: ignore[arg-type]
        return cls(c1, op)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit(x)

    def darknet_layout(self) -> DarknetLayout:
        return [""]


@BLOCKS.register()
class ImplicitAdd(_ImplicitLayer):
    """``x + g`` with a bank tensor (args: [name, form])."""

    op = "add"


@BLOCKS.register()
class ImplicitMul(_ImplicitLayer):
    """``x · g`` with a bank tensor (args: [name, form])."""

    op = "mul"


@BLOCKS.register()
class ImplicitConcat(_ImplicitLayer):
    """``[x, g]`` with a bank tensor of ``channels`` channels (args: [channels, name, form])."""

    op = "concat"
    row_args = ("channels", "name", "form")
    channel_args = ("channels",)
    example_args = (4,)


# -- paper-branch blocks ---------------------------------------------------------------------------------
@BLOCKS.register()
class DownC(Block):
    """Downsampling by ``k``: ``[cv2(cv1(x)), cv3(maxpool(x))]`` (official ``DownC``, yolor-e6/d6).

    Submodules: ``cv1`` 1×1 (c1 -> c1), ``cv2`` 3×3 stride k (c1 -> c2/2), ``cv3`` 1×1 (c1 -> c2/2), ``mp``.
    """

    row_args = ("c2", "k")
    example_args = (8,)

    def __init__(self, c1: int, c2: int, k: int = 2, *, defaults: LayerDefaults = DEFAULTS) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c1, 1, 1, defaults=defaults)
        self.cv2 = Conv(c1, c2 // 2, 3, k, defaults=defaults)
        self.cv3 = Conv(c1, c2 // 2, 1, 1, defaults=defaults)
        self.mp = nn.MaxPool2d(kernel_size=k, stride=k)
        self.out_channels = 2 * (c2 // 2)
        self.stride_factor = Fraction(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.cv2(self.cv1(x)), self.cv3(self.mp(x))), dim=1)


class _PaperCSP(Block):
    """Shared tail of the paper CSP blocks: BatchNorm + activation over the concat, then ``cv_out``."""

    bn: nn.BatchNorm2d
    act: nn.Module

    def _merge(self, y1: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(torch.cat((y1, y2), dim=1)))


@BLOCKS.register()
class BottleneckCSP(_PaperCSP):
    """CSP block of Scaled-YOLOv4 / YOLOR paper: ``cv4(act(bn([cv3(m(cv1(x))), cv2(x)])))``.

    ``cv2`` and ``cv3`` are plain convs (no BN); ``m`` holds ``n`` bottlenecks of ``c2·e`` channels.
    """

    row_args = ("c2", "shortcut", "g", "e")
    repeats_inside = True
    example_args = (8,)

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        shortcut: bool = True,
        g: int = 1,
        e: float = 0.5,
        *,
        defaults: LayerDefaults = DEFAULTS,
    ) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1, defaults=defaults)
        self.cv2 = nn.Conv2d(c1, c_, 1, 1, bias=False)
        self.cv3 = nn.Conv2d(c_, c_, 1, 1, bias=False)
        self.cv4 = Conv(2 * c_, c2, 1, 1, defaults=defaults)
        self.bn = defaults.norm(2 * c_)
        self.act = defaults.act(True)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0, defaults=defaults) for _ in range(n)))
        self.out_channels = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv4(self._merge(self.cv3(self.m(self.cv1(x))), self.cv2(x)))


@BLOCKS.register()
class BottleneckCSPF(_PaperCSP):
    """YOLOR paper backbone CSP block (no transition conv): ``cv4(act(bn([m(cv1(x)), cv2(x)])))``."""

    row_args = ("c2", "shortcut", "g", "e")
    repeats_inside = True
    example_args = (8,)

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        shortcut: bool = True,
        g: int = 1,
        e: float = 0.5,
        *,
        defaults: LayerDefaults = DEFAULTS,
    ) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1, defaults=defaults)
        self.cv2 = nn.Conv2d(c1, c_, 1, 1, bias=False)
        self.cv4 = Conv(2 * c_, c2, 1, 1, defaults=defaults)
        self.bn = defaults.norm(2 * c_)
        self.act = defaults.act(True)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0, defaults=defaults) for _ in range(n)))
        self.out_channels = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv4(self._merge(self.m(self.cv1(x)), self.cv2(x)))


@BLOCKS.register()
class BottleneckCSP2(_PaperCSP):
    """YOLOR paper neck CSP block: ``x1 = cv1(x)``; ``cv3(act(bn([m(x1), cv2(x1)])))``, hidden = c2."""

    row_args = ("c2", "shortcut", "g")
    repeats_inside = True
    example_args = (8,)

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        shortcut: bool = False,
        g: int = 1,
        *,
        defaults: LayerDefaults = DEFAULTS,
    ) -> None:
        super().__init__()
        c_ = int(c2)
        self.cv1 = Conv(c1, c_, 1, 1, defaults=defaults)
        self.cv2 = nn.Conv2d(c_, c_, 1, 1, bias=False)
        self.cv3 = Conv(2 * c_, c2, 1, 1, defaults=defaults)
        self.bn = defaults.norm(2 * c_)
        self.act = defaults.act(True)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0, defaults=defaults) for _ in range(n)))
        self.out_channels = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv1(x)
        return self.cv3(self._merge(self.m(x1), self.cv2(x1)))


@BLOCKS.register()
class SPPCSP(_PaperCSP):
    """YOLOR paper CSP spatial pyramid pooling (pools 5, 9, 13), hidden = ``2·c2·e`` channels.

    ``x1 = cv4(cv3(cv1(x)))``; ``y1 = cv6(cv5([x1, pool5, pool9, pool13]))``; ``y2 = cv2(x)`` (plain);
    output ``cv7(act(bn([y1, y2])))``.
    """

    row_args = ("c2", "e", "k")
    example_args = (8,)

    def __init__(
        self,
        c1: int,
        c2: int,
        e: float = 0.5,
        k: Sequence[int] = (5, 9, 13),
        *,
        defaults: LayerDefaults = DEFAULTS,
    ) -> None:
        super().__init__()
        c_ = int(2 * c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1, defaults=defaults)
        self.cv2 = nn.Conv2d(c1, c_, 1, 1, bias=False)
        self.cv3 = Conv(c_, c_, 3, 1, defaults=defaults)
        self.cv4 = Conv(c_, c_, 1, 1, defaults=defaults)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=size, stride=1, padding=size // 2) for size in k)
        self.cv5 = Conv((len(k) + 1) * c_, c_, 1, 1, defaults=defaults)
        self.cv6 = Conv(c_, c_, 3, 1, defaults=defaults)
        self.bn = defaults.norm(2 * c_)
        self.act = defaults.act(True)
        self.cv7 = Conv(2 * c_, c2, 1, 1, defaults=defaults)
        self.out_channels = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [pool(x1) for pool in self.m], dim=1)))
        return self.cv7(self._merge(y1, self.cv2(x)))


__all__ = [
    "ACTIVATIONS",
    "BLOCKS",
    "DEFAULTS",
    "Block",
    "BuildContext",
    "DarknetLayout",
    "LayerDefaults",
    "Repeat",
    "autopad",
    "make_divisible",
]
