"""YOLO target assignment (the ``build_targets`` step of YOLOv4-CSP, YOLOv5 and YOLOR), vectorised.

For each output level every labelled box is tried against every anchor of that level and against the
cell that holds its centre plus the two neighbouring cells its centre leans towards. A (box, anchor,
cell) triple is a positive when the box and the anchor differ by less than ``anchor_t`` in width and
height ratio, and the neighbour lies inside the grid.

The result keeps all ``5 × na × M`` triples of a level in a fixed order (offset, anchor, box: the order
of the official code) with a ``valid`` flag, instead of dropping the failed ones. Keeping the size fixed
means the loss never waits for the device to report how many positives there are; a consumer that wants
only positives (an embedding loss, a classifier over identities) calls :meth:`LevelAssignment.compact`,
which costs one device synchronisation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LevelAssignment:
    """The (box, anchor, cell) triples of one output level.

    Every field has one row per triple. Rows with ``valid`` false are not positives; their other fields
    still hold in-range indices so that gathering with them is safe.

    Attributes:
        image: Image index in the batch (long).
        anchor: Anchor index within the level (long).
        grid_y: Row of the cell (long), in ``[0, ny)``.
        grid_x: Column of the cell (long), in ``[0, nx)``.
        box: ``(n, 4)`` target: centre relative to the cell's top-left corner (in ``(-0.5, 1.5)`` for
            positives), then width and height, all in grid units.
        anchor_wh: ``(n, 2)`` anchor width and height in grid units.
        cls: Class id (long).
        identity: Identity (long), ``-1`` when the box has none.
        target_index: Row of the source box in the ``targets`` given to the assigner (long).
        valid: Whether the triple is a positive (bool).
    """

    image: torch.Tensor
    anchor: torch.Tensor
    grid_y: torch.Tensor
    grid_x: torch.Tensor
    box: torch.Tensor
    anchor_wh: torch.Tensor
    cls: torch.Tensor
    identity: torch.Tensor
    target_index: torch.Tensor
    valid: torch.Tensor

    def __len__(self) -> int:
        return self.valid.shape[0]

    def compact(self) -> LevelAssignment:
        """Only the positive rows (synchronises with the device once)."""
        keep = self.valid.nonzero(as_tuple=True)[0]
        return LevelAssignment(**{f.name: getattr(self, f.name)[keep] for f in dataclasses.fields(self)})

    def flat_index(self, num_anchors: int, ny: int, nx: int) -> torch.Tensor:
        """Index of each row's cell in a flattened ``(B, num_anchors, ny, nx)`` tensor."""
        return ((self.image * num_anchors + self.anchor) * ny + self.grid_y) * nx + self.grid_x


@dataclass(frozen=True)
class YoloAssignment:
    """Assignment of a batch's boxes to the cells and anchors of every output level.

    Attributes:
        levels: One :class:`LevelAssignment` per level, finest first.
        image_mask: ``(B,)`` bool, the images whose boxes took part (``None``: all images).
    """

    levels: list[LevelAssignment]
    image_mask: torch.Tensor | None = None

    def compact(self) -> YoloAssignment:
        """Only the positive rows of every level."""
        return YoloAssignment([level.compact() for level in self.levels], self.image_mask)


def _check_targets(targets: torch.Tensor) -> None:
    if targets.ndim != 2 or targets.shape[1] < 6:
        raise ValueError(
            "targets must be (M, 7) rows of [image_index, class, cx, cy, w, h, identity] "
            f"(identity optional), got shape {tuple(targets.shape)}"
        )


def _neighbour_offsets(offset: float, like: torch.Tensor) -> torch.Tensor:
    """``(5, 2)`` shifts of the centre, in the official order: none, left, up, right, down.

    Built on the device from ``eye`` rather than from a Python list, which would be a blocking copy.
    """
    eye = torch.eye(2, dtype=like.dtype, device=like.device)
    return torch.cat((torch.zeros_like(eye[:1]), eye, -eye)) * offset


def assign_targets(
    targets: torch.Tensor,
    anchors: torch.Tensor | Sequence[torch.Tensor],
    grid_shapes: Sequence[tuple[int, int]],
    image_mask: torch.Tensor | None = None,
    anchor_t: float = 4.0,
    offset: float = 0.5,
) -> YoloAssignment:
    """Assign boxes to anchors and cells of every level, YOLOR/YOLOv5 style, without a loop over boxes.

    Args:
        targets: ``(M, 7)`` rows of ``[image_index, class, cx, cy, w, h, identity]``, boxes normalised to
            ``[0, 1]`` of the input image; the identity column may be left out (``(M, 6)``).
        anchors: Per level ``(na, 2)`` anchor width and height in grid units of that level (pixels
            divided by the level's stride), e.g. one ``(levels, na, 2)`` tensor.
        grid_shapes: Per level ``(ny, nx)``.
        image_mask: ``(B,)`` bool; boxes of images where it is false are never positives.
        anchor_t: A box matches an anchor when ``max(r, 1 / r) < anchor_t`` for both its width ratio and
            its height ratio ``r`` to the anchor.
        offset: A neighbour cell is added when the centre lies closer than this to the shared cell edge
            (and the centre is more than one cell from the image border); the official value is 0.5.

    Returns:
        A :class:`YoloAssignment` with ``5 × na × M`` rows per level.
    """
    _check_targets(targets)
    if len(anchors) != len(grid_shapes):
        raise ValueError(f"got anchors for {len(anchors)} levels but {len(grid_shapes)} grid shapes")
    device = targets.device
    targets = targets.float()
    num_targets = targets.shape[0]

    image = targets[:, 0].long()
    cls = targets[:, 1].long()
    if targets.shape[1] >= 7:
        identity = targets[:, 6].long()
    else:
        identity = torch.full_like(image, -1)
    target_index = torch.arange(num_targets, device=device)
    if image_mask is None:
        labelled = torch.ones(num_targets, dtype=torch.bool, device=device)
    else:
        if image_mask.ndim != 1:
            raise ValueError(f"image_mask must be (B,), got shape {tuple(image_mask.shape)}")
        labelled = image_mask.to(device=device, dtype=torch.bool)[image]
    shifts = _neighbour_offsets(offset, targets)

    levels = []
    for level_anchors, (ny, nx) in zip(anchors, grid_shapes):
        level_anchors = level_anchors.to(device=device, dtype=targets.dtype)
        if level_anchors.ndim != 2 or level_anchors.shape[1] != 2:
            raise ValueError(f"anchors of a level must be (na, 2), got shape {tuple(level_anchors.shape)}")
        na = level_anchors.shape[0]

        # Python scalars instead of a gain tensor: no host-to-device copy per step.
        gxy = torch.stack((targets[:, 2] * nx, targets[:, 3] * ny), dim=1)
        gwh = torch.stack((targets[:, 4] * nx, targets[:, 5] * ny), dim=1)
        ratio = gwh[None] / level_anchors[:, None]  # (na, M, 2)
        matched = torch.maximum(ratio, 1.0 / ratio).amax(dim=2) < anchor_t
        matched &= (gwh > 0).all(dim=1)[None]  # (na, M)

        far_edge = torch.stack((nx - gxy[:, 0], ny - gxy[:, 1]), dim=1)
        near_low = (gxy % 1.0 < offset) & (gxy > 1.0)  # left, up neighbours
        near_high = (far_edge % 1.0 < offset) & (far_edge > 1.0)  # right, down neighbours
        use = torch.stack(
            (torch.ones_like(near_low[:, 0]), *near_low.unbind(1), *near_high.unbind(1))
        )  # (5, M)
        valid = use[:, None] & matched[None] & labelled[None, None]  # (5, na, M)

        # Truncation equals flooring here: a shifted centre is only negative for boxes outside the image,
        # and those cells are clamped anyway.
        cell = (gxy[None] - shifts[:, None]).long()  # (5, M, 2)
        cell_x = cell[..., 0].clamp(0, nx - 1)
        cell_y = cell[..., 1].clamp(0, ny - 1)
        # Relative to the clamped cell, so the regression target matches the cell that predicts it.
        rel_xy = gxy[None] - torch.stack((cell_x, cell_y), dim=-1).to(gxy.dtype)  # (5, M, 2)

        shape = (5, na, num_targets)

        def per_box(values: torch.Tensor, shape: tuple[int, int, int] = shape) -> torch.Tensor:
            """(M,) -> one row per (offset, anchor, box)."""
            return values[None, None].expand(shape).reshape(-1)

        def per_cell(values: torch.Tensor, shape: tuple[int, int, int] = shape) -> torch.Tensor:
            """(5, M, ...) -> one row per (offset, anchor, box)."""
            tail = values.shape[2:]
            return values[:, None].expand(*shape, *tail).reshape(-1, *tail)

        box = torch.cat((rel_xy, gwh[None].expand(5, -1, -1)), dim=-1)  # (5, M, 4)
        levels.append(
            LevelAssignment(
                image=per_box(image),
                anchor=torch.arange(na, device=device)[None, :, None].expand(shape).reshape(-1),
                grid_y=per_cell(cell_y),
                grid_x=per_cell(cell_x),
                box=per_cell(box),
                anchor_wh=level_anchors[None, :, None].expand(*shape, 2).reshape(-1, 2),
                cls=per_box(cls),
                identity=per_box(identity),
                target_index=per_box(target_index),
                valid=valid.reshape(-1),
            )
        )
    return YoloAssignment(levels, image_mask)


class YoloAssigner:
    """:func:`assign_targets` bound to a head's anchors and strides.

    Args:
        anchors: ``(levels, na, 2)`` anchor sizes in input pixels.
        strides: ``(levels,)`` stride of each level in pixels.
        anchor_t: See :func:`assign_targets`.
        offset: See :func:`assign_targets`.
    """

    def __init__(
        self, anchors: torch.Tensor, strides: torch.Tensor, anchor_t: float = 4.0, offset: float = 0.5
    ) -> None:
        anchors = torch.as_tensor(anchors, dtype=torch.float32).detach()
        strides = torch.as_tensor(strides, dtype=torch.float32).detach()
        if anchors.ndim != 3 or anchors.shape[2] != 2:
            raise ValueError(f"anchors must be (levels, na, 2) in pixels, got shape {tuple(anchors.shape)}")
        if strides.shape != (anchors.shape[0],):
            raise ValueError(
                f"strides must be ({anchors.shape[0]},) to match {anchors.shape[0]} anchor levels, "
                f"got shape {tuple(strides.shape)}"
            )
        if anchor_t <= 1.0:
            raise ValueError(f"anchor_t must be > 1, got {anchor_t}")
        self.anchor_t = float(anchor_t)
        self.offset = float(offset)
        self.strides = strides
        self.anchors_grid = anchors / strides[:, None, None]

    @property
    def num_levels(self) -> int:
        return self.anchors_grid.shape[0]

    @property
    def num_anchors(self) -> int:
        return self.anchors_grid.shape[1]

    def anchors_on(self, device: torch.device) -> torch.Tensor:
        """Grid-unit anchors on ``device``; moved once and kept, not copied every step."""
        if self.anchors_grid.device != device:
            self.anchors_grid = self.anchors_grid.to(device)
        return self.anchors_grid

    def __call__(
        self,
        targets: torch.Tensor,
        grid_shapes: Sequence[tuple[int, int]],
        image_mask: torch.Tensor | None = None,
    ) -> YoloAssignment:
        """Assign ``targets`` to the levels whose grids have ``grid_shapes`` ``(ny, nx)``."""
        if len(grid_shapes) != self.num_levels:
            raise ValueError(f"assigner has {self.num_levels} anchor levels but got {len(grid_shapes)} grids")
        return assign_targets(
            targets, self.anchors_on(targets.device), grid_shapes, image_mask, self.anchor_t, self.offset
        )


__all__ = ["LevelAssignment", "YoloAssigner", "YoloAssignment", "assign_targets"]
