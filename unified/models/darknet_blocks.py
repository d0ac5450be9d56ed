"""Blocks of the official ``main`` branch (darknet cfg files): every branch conv has its own BatchNorm.

In the darknet cfgs of YOLOR ``main`` (``yolor_csp``, ``yolor_csp_x``, ``yolov4_csp``, ``yolor_p6``,
``yolor_w6``) a CSP stage is spelled out as ``convolutional`` / ``route`` / ``shortcut`` sections. Each block
below stands for one such run of sections; ``darknet_layout()`` lists them in cfg order, giving for every
``convolutional`` section the submodule that holds its weights (a ``Conv``: ``conv`` + ``bn``) and ``None``
for ``route``, ``shortcut`` and ``maxpool`` sections. Section by section:

``DarknetCSP`` (backbone of yolor_csp / yolov4_csp: with a "transition first" conv)::

    cv2 (1×1, split branch) | route -2 | cv1 (1×1) | n × [m.j.cv1 (1×1), m.j.cv2 (3×3), shortcut -3]
    | cv3 (1×1, transition first) | route -1,-(3n+4) | cv4 (1×1, transition last)

    out = cv4([cv3(m(cv1(x))), cv2(x)])

``DarknetCSPF`` (backbone of yolor_p6 / yolor_w6: no transition-first conv)::

    cv2 | route -2 | cv1 | n × [m.j.cv1, m.j.cv2, shortcut -3] | route -1,-(3n+3) | cv4

    out = cv4([m(cv1(x)), cv2(x)])

``DarknetCSP2`` (neck: plain bottlenecks, hidden = c2)::

    cv1 (1×1) | cv2 (1×1) | route -2 | n × [m.j.cv1 (1×1), m.j.cv2 (3×3)] | route -1,-(2n+2) | cv3 (1×1)

    x1 = cv1(x); out = cv3([m(x1), cv2(x1)])

``DarknetSPPCSP`` (hidden = c2; ``n`` pairs of 1×1/3×3 convs after the pools, 1 in yolor_csp, 2 in csp_x)::

    cv2 | route -2 | cv1 (1×1) | cv3 (3×3) | cv4 (1×1) | m.0 (pool 5) | route -2 | m.1 (pool 9) | route -4
    | m.2 (pool 13) | route -1,-3,-5,-6 | post.0 (1×1) | post.1 (3×3) | ... | route -1,-(2n+11) | cv7 (1×1)

    x1 = cv4(cv3(cv1(x))); y1 = post([pool13, pool9, pool5, x1]); out = cv7([y1, cv2(x)])

Note the pools are concatenated largest first, as the darknet ``route -1,-3,-5,-6`` reads them (the paper
``SPPCSP`` concatenates ``x1`` first).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from unified.models.blocks import (
    BLOCKS,
    DEFAULTS,
    Block,
    Bottleneck,
    Conv,
    DarknetLayout,
    LayerDefaults,
    _prefixed,
)


def _bottleneck_layout(m: nn.Sequential) -> DarknetLayout:
    layout: DarknetLayout = []
    for j, block in enumerate(m):
        layout += _prefixed(f"m.{j}", block.darknet_layout())
    return layout


@BLOCKS.register()
class DarknetCSP(Block):
    """Main-branch CSP stage with a transition-first conv (hidden = c2/2); see the module docstring."""

    row_args = ("c2", "shortcut")
    repeats_inside = True
    example_args = (8,)

    def __init__(
        self, c1: int, c2: int, n: int = 1, shortcut: bool = True, *, defaults: LayerDefaults = DEFAULTS
    ) -> None:
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, 1, 1, defaults=defaults)
        self.cv2 = Conv(c1, c_, 1, 1, defaults=defaults)
        self.cv3 = Conv(c_, c_, 1, 1, defaults=defaults)
        self.cv4 = Conv(2 * c_, c2, 1, 1, defaults=defaults)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, e=1.0, defaults=defaults) for _ in range(n)))
        self.out_channels = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv4(torch.cat((self.cv3(self.m(self.cv1(x))), self.cv2(x)), dim=1))

    def darknet_layout(self) -> DarknetLayout:
        return ["cv2", None, "cv1", *_bottleneck_layout(self.m), "cv3", None, "cv4"]


@BLOCKS.register()
class DarknetCSPF(Block):
    """Main-branch CSP stage without a transition-first conv (hidden = c2/2); see the module docstring."""

    row_args = ("c2", "shortcut")
    repeats_inside = True
    example_args = (8,)

    def __init__(
        self, c1: int, c2: int, n: int = 1, shortcut: bool = True, *, defaults: LayerDefaults = DEFAULTS
    ) -> None:
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, 1, 1, defaults=defaults)
        self.cv2 = Conv(c1, c_, 1, 1, defaults=defaults)
        self.cv4 = Conv(2 * c_, c2, 1, 1, defaults=defaults)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, e=1.0, defaults=defaults) for _ in range(n)))
        self.out_channels = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv4(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))

    def darknet_layout(self) -> DarknetLayout:
        return ["cv2", None, "cv1", *_bottleneck_layout(self.m), None, "cv4"]


@BLOCKS.register()
class DarknetCSP2(Block):
    """Main-branch neck CSP block with plain bottlenecks (hidden = c2); see the module docstring."""

    row_args = ("c2", "shortcut")
    repeats_inside = True
    example_args = (8,)

    def __init__(
        self, c1: int, c2: int, n: int = 1, shortcut: bool = False, *, defaults: LayerDefaults = DEFAULTS
    ) -> None:
        super().__init__()
        c_ = c2
        self.cv1 = Conv(c1, c_, 1, 1, defaults=defaults)
        self.cv2 = Conv(c_, c_, 1, 1, defaults=defaults)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, e=1.0, defaults=defaults) for _ in range(n)))
        self.cv3 = Conv(2 * c_, c2, 1, 1, defaults=defaults)
        self.out_channels = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv1(x)
        return self.cv3(torch.cat((self.m(x1), self.cv2(x1)), dim=1))

    def darknet_layout(self) -> DarknetLayout:
        return ["cv1", "cv2", None, *_bottleneck_layout(self.m), None, "cv3"]


@BLOCKS.register()
class DarknetSPPCSP(Block):
    """Main-branch CSP spatial pyramid pooling (hidden = c2, ``n`` conv pairs after the pools)."""

    row_args = ("c2", "k")
    repeats_inside = True
    example_args = (8,)

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        k: Sequence[int] = (5, 9, 13),
        *,
        defaults: LayerDefaults = DEFAULTS,
    ) -> None:
        super().__init__()
        c_ = c2
        self.cv1 = Conv(c1, c_, 1, 1, defaults=defaults)
        self.cv2 = Conv(c1, c_, 1, 1, defaults=defaults)
        self.cv3 = Conv(c_, c_, 3, 1, defaults=defaults)
        self.cv4 = Conv(c_, c_, 1, 1, defaults=defaults)
        self.m = nn.ModuleList(
            nn.MaxPool2d(kernel_size=size, stride=1, padding=(size - 1) // 2) for size in k
        )
        post: list[nn.Module] = []
        for j in range(n):
            post.append(Conv((len(k) + 1) * c_ if j == 0 else c_, c_, 1, 1, defaults=defaults))
            post.append(Conv(c_, c_, 3, 1, defaults=defaults))
        self.post = nn.Sequential(*post)
        self.cv7 = Conv(2 * c_, c2, 1, 1, defaults=defaults)
        self.out_channels = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        pooled = [pool(x1) for pool in self.m]
        y1 = self.post(torch.cat([*reversed(pooled), x1], dim=1))
        return self.cv7(torch.cat((y1, self.cv2(x)), dim=1))

    def darknet_layout(self) -> DarknetLayout:
        pools: DarknetLayout = []
        for j in range(len(self.m)):
            pools += [None, None] if j else [None]  # pool (after the first: preceded by a route back to x1)
        posts: DarknetLayout = [f"post.{j}" for j in range(len(self.post))]
        return ["cv2", None, "cv1", "cv3", "cv4", *pools, None, *posts, None, "cv7"]


__all__ = ["DarknetCSP", "DarknetCSP2", "DarknetCSPF", "DarknetSPPCSP"]
