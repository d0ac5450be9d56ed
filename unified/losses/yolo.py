"""The YOLOR detection loss: CIoU box regression, IoU-targeted objectness and BCE classification.

The value equals the official YOLOR ``compute_loss`` (``paper`` and ``main`` branches, with the
``hyp['cls'] *= nc / 80`` scaling its ``train.py`` applies) computed on the images that carry box labels.
Images without box labels are left out entirely: their cells would otherwise all be taught "no object".

The loss never asks the device how many positives there are: failed (box, anchor, cell) triples stay in
the fixed-size assignment and are weighted out, so a step does not wait on a host-device sync and a batch
without boxes still returns terms wired to every output (with value zero), which distributed training
needs to reduce gradients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unified.config import check
from unified.losses.assign import YoloAssigner, YoloAssignment
from unified.losses.iou import bbox_ciou

#: Per-level objectness weights of the official loss, by number of levels (finest first).
OFFICIAL_BALANCE: dict[int, tuple[float, ...]] = {
    1: (4.0,),
    2: (4.0, 1.0),
    3: (4.0, 1.0, 0.4),
    4: (4.0, 1.0, 0.4, 0.1),
    5: (4.0, 1.0, 0.5, 0.4, 0.1),
}

# Added to predicted sizes ((2 sigmoid)^2 x anchor, grid units): if a sigmoid underflows, a zero width and
# height would make CIoU's aspect term 0/0. Large enough to survive the float32 corner conversion at
# cell-relative coordinates (< 2, spacing 1.2e-7), small enough to leave the loss unchanged (and unlike a
# clamp it keeps the gradient).
_WH_EPS = 1e-6


@dataclass
class DetectionLossConfig:
    """Hyper-parameters of :class:`YoloDetectionLoss`; defaults are the official ``hyp.scratch.640.yaml``.

    A config dataclass like any other: :func:`unified.config.from_dict` fills it from YAML and its checks
    name keys relative to where it sits (``task_options.detect.anchor_t`` when a task config inherits
    it, ``...loss.anchor_t`` when a field holds it).

    Attributes:
        box: Box (CIoU) loss gain.
        cls: Class loss gain, tuned for 80 classes.
        obj: Objectness loss gain.
        cls_pw: Positive weight of the class BCE.
        obj_pw: Positive weight of the objectness BCE.
        anchor_t: Width/height ratio threshold of the anchor match.
        fl_gamma: Focal loss gamma; 0 turns focal loss off.
        fl_alpha: Focal loss alpha (used only when ``fl_gamma > 0``).
        label_smoothing: Class label smoothing epsilon (positives ``1 - eps/2``, negatives ``eps/2``).
        iou_ratio: Objectness target of a positive is ``(1 - iou_ratio) + iou_ratio * CIoU`` (official ``gr``).
        balance: Per-level objectness weights, finest level first; empty or ``None``: the official ones
            for the number of levels (the length is checked against the head's when the loss is built).
        scale_gains: Apply the official gain scaling: all gains × ``3 / levels``, ``cls`` × ``nc / 80``,
            ``obj`` × 1.4 with four or more levels.
    """

    box: float = 0.05
    cls: float = 0.3
    obj: float = 0.7
    cls_pw: float = 1.0
    obj_pw: float = 1.0
    anchor_t: float = 4.0
    fl_gamma: float = 0.0
    fl_alpha: float = 0.25
    label_smoothing: float = 0.0
    iou_ratio: float = 1.0
    balance: list[float] | None = None
    scale_gains: bool = True

    def __post_init__(self) -> None:
        # Keys relative to this dataclass: the config loader puts them under the section that holds it.
        for name in ("box", "cls", "obj"):
            value = getattr(self, name)
            check(0 <= value < math.inf, name, f"a loss gain must be >= 0 and finite, got {value}")
        for name in ("cls_pw", "obj_pw"):
            value = getattr(self, name)
            check(0 < value < math.inf, name, f"a BCE positive weight must be > 0 and finite, got {value}")
        # The assigner refuses anchor_t <= 1 too, but only once the head exists; here it names the key.
        check(1 < self.anchor_t < math.inf, "anchor_t", f"must be > 1 and finite, got {self.anchor_t}")
        check(
            0 <= self.fl_gamma < math.inf, "fl_gamma", f"must be >= 0 (0: no focal loss), got {self.fl_gamma}"
        )
        check(0 <= self.fl_alpha <= 1, "fl_alpha", f"must be in [0, 1], got {self.fl_alpha}")
        check(
            0 <= self.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}"
        )
        check(0 <= self.iou_ratio <= 1, "iou_ratio", f"must be in [0, 1], got {self.iou_ratio}")
        for i, weight in enumerate(self.balance or ()):
            check(0 <= weight < math.inf, f"balance.{i}", f"must be >= 0 and finite, got {weight}")

    @classmethod
    def scratch_640(cls) -> DetectionLossConfig:
        """Official ``hyp.scratch.640.yaml`` (the defaults)."""
        return cls()

    @classmethod
    def scratch_1280(cls) -> DetectionLossConfig:
        """Official ``hyp.scratch.1280.yaml``: heavier class and objectness gains."""
        return cls(cls=0.5, obj=1.0)


def _bce(
    logits: torch.Tensor, target: torch.Tensor, pos_weight: float, gamma: float, alpha: float
) -> torch.Tensor:
    """Elementwise BCE with logits, optionally with a positive weight and focal modulation."""
    weight = (
        None if pos_weight == 1.0 else torch.full((1,), pos_weight, dtype=logits.dtype, device=logits.device)
    )
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight, reduction="none")
    if gamma > 0:
        prob = logits.sigmoid()
        p_t = target * prob + (1 - target) * (1 - prob)
        alpha_t = target * alpha + (1 - target) * (1 - alpha)
        loss = loss * alpha_t * (1.0 - p_t) ** gamma
    return loss


class YoloDetectionLoss:
    """YOLOR detection loss over the raw outputs of every level.

    Args:
        anchors: ``(levels, na, 2)`` anchor sizes in input pixels (the head's ``anchors``).
        strides: ``(levels,)`` strides in pixels (the head's ``strides``).
        num_classes: Number of detection classes.
        cfg: Hyper-parameters; the official 640 scratch ones when ``None``.
    """

    def __init__(
        self,
        anchors: torch.Tensor,
        strides: torch.Tensor,
        num_classes: int,
        cfg: DetectionLossConfig | None = None,
    ) -> None:
        self.cfg = cfg = cfg if cfg is not None else DetectionLossConfig()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.assigner = YoloAssigner(anchors, strides, anchor_t=cfg.anchor_t)
        levels = self.assigner.num_levels
        if cfg.balance:
            if len(cfg.balance) != levels:
                raise ValueError(f"balance has {len(cfg.balance)} weights but the head has {levels} levels")
            self.balance = tuple(float(b) for b in cfg.balance)
        elif levels in OFFICIAL_BALANCE:
            self.balance = OFFICIAL_BALANCE[levels]
        else:
            raise ValueError(f"no official objectness balance for {levels} levels; set balance explicitly")

        box_gain, obj_gain, cls_gain = cfg.box, cfg.obj, cfg.cls
        if cfg.scale_gains:
            level_scale = 3.0 / levels
            box_gain *= level_scale
            obj_gain *= level_scale * (1.4 if levels >= 4 else 1.0)
            cls_gain *= level_scale * num_classes / 80.0
        self.box_gain, self.obj_gain, self.cls_gain = box_gain, obj_gain, cls_gain
        self.cls_pos = 1.0 - 0.5 * cfg.label_smoothing
        self.cls_neg = 0.5 * cfg.label_smoothing

    def __call__(
        self,
        raw: Sequence[torch.Tensor],
        targets: torch.Tensor,
        image_mask: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], YoloAssignment]:
        """Loss terms and the assignment they used.

        Args:
            raw: Per level ``(B, na, ny, nx, 5 + nc)`` logits, finest level first.
            targets: ``(M, 7)`` ``[image_index, class, cx, cy, w, h, identity]``, boxes normalised to the input.
            image_mask: ``(B,)`` bool, images that carry box labels; all when ``None``.

        Returns:
            ``({"box", "obj", "cls"}, assignment)``. Each term is a scalar already multiplied by its gain
            and by the number of labelled images, like the official loss, so their sum is the official
            total on the labelled images.
        """
        self._check_raw(raw)
        cfg = self.cfg
        batch = raw[0].shape[0]
        device = raw[0].device
        if image_mask is not None:
            image_mask = image_mask.to(device=device, dtype=torch.bool)
            if image_mask.shape != (batch,):
                raise ValueError(f"image_mask must be ({batch},), got shape {tuple(image_mask.shape)}")
            image_weight = image_mask.float()
            num_images: torch.Tensor | float = image_weight.sum()
        else:
            image_weight = None
            num_images = float(batch)  # a Python number: no host-to-device copy

        assignment = self.assigner(targets.to(device), [(p.shape[2], p.shape[3]) for p in raw], image_mask)

        box_loss = raw[0].new_zeros((), dtype=torch.float32)
        obj_loss = box_loss.clone()
        cls_loss = box_loss.clone()
        for pred, level, balance in zip(raw, assignment.levels, self.balance):
            _, na, ny, nx, _ = pred.shape
            valid = level.valid
            num_pos = valid.sum().clamp(min=1)
            picked = pred[level.image, level.anchor, level.grid_y, level.grid_x].float()

            pxy = picked[:, :2].sigmoid() * 2.0 - 0.5
            pwh = (picked[:, 2:4].sigmoid() * 2.0) ** 2 * level.anchor_wh + _WH_EPS
            # Failed triples may hold degenerate boxes (zero size); give them a harmless target so no NaN
            # can leak into the gradient through the weighted-out rows.
            harmless = torch.cat((torch.full_like(level.anchor_wh, 0.5), level.anchor_wh), dim=1)
            target_box = torch.where(valid[:, None], level.box, harmless)
            ciou = bbox_ciou(torch.cat((pxy, pwh), dim=1), target_box)
            box_loss = box_loss + torch.where(valid, 1.0 - ciou, 0.0).sum() / num_pos

            # Rows that are not positives write into one spare slot past the end.
            cells = batch * na * ny * nx
            slot = torch.where(valid, level.flat_index(na, ny, nx), cells)
            obj_value = (1.0 - cfg.iou_ratio) + cfg.iou_ratio * ciou.detach().clamp(min=0)
            obj_target = pred.new_zeros(cells + 1, dtype=torch.float32).index_put_((slot,), obj_value)
            obj_target = obj_target[:cells].view(batch, na, ny, nx)
            obj_elem = _bce(pred[..., 4].float(), obj_target, cfg.obj_pw, cfg.fl_gamma, cfg.fl_alpha)
            if image_weight is None:
                level_obj = obj_elem.mean()
            else:
                # Mean over the cells of labelled images only; clamped for a batch with none.
                labelled_cells = (num_images * (na * ny * nx)).clamp(min=1)
                level_obj = (obj_elem.flatten(1).sum(1) * image_weight).sum() / labelled_cells
            obj_loss = obj_loss + level_obj * balance

            cls_logits = picked[:, 5:]
            if self.num_classes > 1:
                cls_target = torch.full_like(cls_logits, self.cls_neg)
                cls_index = torch.where(valid, level.cls, 0).clamp(0, self.num_classes - 1)
                cls_target.scatter_(1, cls_index[:, None], self.cls_pos)
                cls_elem = _bce(cls_logits, cls_target, cfg.cls_pw, cfg.fl_gamma, cfg.fl_alpha)
                cls_loss = cls_loss + torch.where(valid[:, None], cls_elem, 0.0).sum() / (
                    num_pos * self.num_classes
                )
            else:
                # The official loss has no class term for one class; keep the graph wired anyway.
                cls_loss = cls_loss + cls_logits.sum() * 0.0

        terms = {
            "box": box_loss * self.box_gain * num_images,
            "obj": obj_loss * self.obj_gain * num_images,
            "cls": cls_loss * self.cls_gain * num_images,
        }
        return terms, assignment

    def _check_raw(self, raw: Sequence[torch.Tensor]) -> None:
        levels, na = self.assigner.num_levels, self.assigner.num_anchors
        if len(raw) != levels:
            raise ValueError(f"loss was built for {levels} levels but got {len(raw)} raw outputs")
        for i, pred in enumerate(raw):
            if pred.ndim != 5 or pred.shape[1] != na or pred.shape[4] != 5 + self.num_classes:
                raise ValueError(
                    f"raw output {i} must be (B, {na}, ny, nx, {5 + self.num_classes}), got {tuple(pred.shape)}"
                )


__all__ = ["DetectionLossConfig", "OFFICIAL_BALANCE", "YoloDetectionLoss"]
