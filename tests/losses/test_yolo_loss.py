import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from unified.losses import DetectionLossConfig, YoloDetectionLoss, assign_targets, bbox_ciou

STRIDES = torch.tensor([8.0, 16.0, 32.0])
ANCHORS = torch.tensor(
    [[[12, 16], [19, 36], [40, 28]], [[36, 75], [76, 55], [72, 146]], [[142, 110], [192, 243], [459, 401]]],
    dtype=torch.float32,
)


def _random_batch(batch, num_classes, num_targets, size, generator, levels=3):
    strides = STRIDES if levels == 3 else torch.tensor([8.0, 16.0, 32.0, 64.0])
    raw = [
        torch.randn(batch, 3, size // int(s), size // int(s), 5 + num_classes, generator=generator) * 2
        for s in strides
    ]
    t = torch.rand(num_targets, 7, generator=generator)
    t[:, 0] = torch.randint(0, batch, (num_targets,), generator=generator)
    t[:, 1] = torch.randint(0, num_classes, (num_targets,), generator=generator)
    t[:, 4:6] = torch.rand(num_targets, 2, generator=generator) * 0.5 + 0.01
    t[:, 6] = -1
    return raw, t


def _bce(logits, target, pos_weight, gamma, alpha=0.25):
    loss = F.binary_cross_entropy_with_logits(
        logits, target, pos_weight=torch.tensor([pos_weight]), reduction="none"
    )
    if gamma > 0:
        p = logits.sigmoid()
        p_t = target * p + (1 - target) * (1 - p)
        loss = loss * (target * alpha + (1 - target) * (1 - alpha)) * (1 - p_t) ** gamma
    return loss.mean()


def _reference_loss(raw, targets, anchors, strides, num_classes, hyp):
    """The YOLOR loss written plainly over the positives only (every image labelled)."""
    levels = len(raw)
    balance = {3: [4.0, 1.0, 0.4], 4: [4.0, 1.0, 0.4, 0.1]}[levels]
    grids = [(p.shape[2], p.shape[3]) for p in raw]
    assignment = assign_targets(
        targets, anchors / strides[:, None, None], grids, anchor_t=hyp.anchor_t
    ).compact()
    lbox = lobj = lcls = torch.zeros(())
    for pred, pos, bal in zip(raw, assignment.levels, balance):
        tobj = torch.zeros_like(pred[..., 0])
        if len(pos):
            ps = pred[pos.image, pos.anchor, pos.grid_y, pos.grid_x]
            pbox = torch.cat(
                (ps[:, :2].sigmoid() * 2 - 0.5, (ps[:, 2:4].sigmoid() * 2) ** 2 * pos.anchor_wh), 1
            )
            ciou = bbox_ciou(pbox, pos.box)
            lbox = lbox + (1 - ciou).mean()
            tobj[pos.image, pos.anchor, pos.grid_y, pos.grid_x] = ciou.detach().clamp(0)
            if num_classes > 1:
                onehot = F.one_hot(pos.cls, num_classes).float()
                onehot = onehot * (1 - hyp.label_smoothing) + 0.5 * hyp.label_smoothing
                lcls = lcls + _bce(ps[:, 5:], onehot, hyp.cls_pw, hyp.fl_gamma)
        lobj = lobj + _bce(pred[..., 4], tobj, hyp.obj_pw, hyp.fl_gamma) * bal
    s = 3 / levels
    batch = raw[0].shape[0]
    return {
        "box": lbox * hyp.box * s * batch,
        "obj": lobj * hyp.obj * s * (1.4 if levels >= 4 else 1.0) * batch,
        "cls": lcls * hyp.cls * num_classes / 80 * s * batch,
    }


@pytest.mark.parametrize(
    ("num_classes", "levels", "hyp"),
    [
        (80, 3, DetectionLossConfig()),
        (5, 3, DetectionLossConfig.scratch_1280()),
        (1, 3, DetectionLossConfig()),
        (3, 4, DetectionLossConfig(fl_gamma=1.5, cls_pw=2.0, obj_pw=0.7, label_smoothing=0.1)),
    ],
)
def test_loss_equals_plain_reference(num_classes, levels, hyp):
    g = torch.Generator().manual_seed(num_classes)
    raw, targets = _random_batch(3, num_classes, 40, 256, g, levels)
    strides = STRIDES if levels == 3 else torch.tensor([8.0, 16.0, 32.0, 64.0])
    anchors = ANCHORS if levels == 3 else torch.cat((ANCHORS, ANCHORS[-1:] * 2))
    terms, assignment = YoloDetectionLoss(anchors, strides, num_classes, hyp)(raw, targets)
    expected = _reference_loss(raw, targets, anchors, strides, num_classes, hyp)
    assert set(terms) == {"box", "obj", "cls"}
    for name in terms:
        assert terms[name].shape == ()
        assert torch.allclose(terms[name], expected[name], rtol=1e-5, atol=1e-7), name
    assert terms["box"] > 0 and terms["obj"] > 0
    assert (terms["cls"] > 0) == (num_classes > 1)
    assert len(assignment.levels) == levels


def test_gain_scaling_can_be_turned_off():
    g = torch.Generator().manual_seed(5)
    raw, targets = _random_batch(2, 40, 20, 128, g)
    scaled, _ = YoloDetectionLoss(ANCHORS, STRIDES, 40)(raw, targets)
    plain, _ = YoloDetectionLoss(ANCHORS, STRIDES, 40, DetectionLossConfig(scale_gains=False))(raw, targets)
    assert torch.allclose(scaled["cls"], plain["cls"] * 0.5)
    assert torch.allclose(scaled["box"], plain["box"]) and torch.allclose(scaled["obj"], plain["obj"])


def test_unlabelled_images_are_left_out_entirely():
    g = torch.Generator().manual_seed(6)
    raw, targets = _random_batch(4, 3, 30, 128, g)
    mask = torch.tensor([True, False, True, False])
    loss = YoloDetectionLoss(ANCHORS, STRIDES, 3)
    terms, assignment = loss(raw, targets, image_mask=mask)

    # Same as the loss of the labelled sub-batch alone, with image indices renumbered.
    keep = mask.nonzero().squeeze(1)
    renumber = torch.full((4,), -1, dtype=torch.long)
    renumber[keep] = torch.arange(len(keep))
    sub_targets = targets[mask[targets[:, 0].long()]].clone()
    sub_targets[:, 0] = renumber[sub_targets[:, 0].long()].float()
    sub_terms, _ = loss([p[keep] for p in raw], sub_targets)
    for name in terms:
        assert torch.allclose(terms[name], sub_terms[name], rtol=1e-5), name

    # Positives keep their row in the full targets, so other tasks can look the boxes up.
    for level in assignment.compact().levels:
        assert mask[level.image].all()
        assert torch.equal(targets[level.target_index, 0].long(), level.image)


def test_batch_without_labelled_boxes_is_zero_but_connected():
    g = torch.Generator().manual_seed(7)
    raw, _ = _random_batch(2, 4, 0, 64, g)
    raw = [p.requires_grad_() for p in raw]
    loss = YoloDetectionLoss(ANCHORS, STRIDES, 4)

    terms, _ = loss(raw, torch.zeros((0, 7)), image_mask=torch.tensor([False, False]))
    for name, value in terms.items():
        assert value.item() == 0.0, name
        assert value.requires_grad, name
    sum(terms.values()).backward()
    assert all(p.grad is not None and torch.count_nonzero(p.grad) == 0 for p in raw)

    # Labelled images without boxes still teach "no object": only the objectness term is non-zero.
    for p in raw:
        p.grad = None
    terms, _ = loss(raw, torch.zeros((0, 7)))
    assert terms["box"].item() == 0.0 and terms["cls"].item() == 0.0 and terms["obj"].item() > 0
    sum(terms.values()).backward()
    assert all(p.grad is not None and p.grad[..., 4].abs().sum() > 0 for p in raw)


def test_extreme_logits_give_finite_loss_and_gradients():
    g = torch.Generator().manual_seed(8)
    raw, targets = _random_batch(2, 3, 20, 128, g)
    raw = [(p.sign() * 200).requires_grad_() for p in raw]
    terms, _ = YoloDetectionLoss(ANCHORS, STRIDES, 3)(raw, targets)
    total = sum(terms.values())
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in raw)


def test_bad_inputs_raise_clear_errors():
    loss = YoloDetectionLoss(ANCHORS, STRIDES, 3)
    good = [torch.zeros(1, 3, 8 // 2**i, 8 // 2**i, 8) for i in range(3)]
    with pytest.raises(ValueError, match="3 levels"):
        loss(good[:2], torch.zeros(0, 7))
    with pytest.raises(ValueError, match=r"must be \(B, 3, ny, nx, 8\)"):
        loss([torch.zeros(1, 3, 8, 8, 9)] + good[1:], torch.zeros(0, 7))
    with pytest.raises(ValueError, match="image_mask"):
        loss(good, torch.zeros(0, 7), image_mask=torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="balance"):
        YoloDetectionLoss(ANCHORS, STRIDES, 3, DetectionLossConfig(balance=[1.0, 1.0]))
    with pytest.raises(ValueError, match="num_classes"):
        YoloDetectionLoss(ANCHORS, STRIDES, 0)


class _TinyDetector(nn.Module):
    """Three stride-2 convolutions and a 1x1 prediction conv: one level at stride 8."""

    def __init__(self, num_anchors: int, num_classes: int) -> None:
        super().__init__()
        self.na, self.no = num_anchors, 5 + num_classes
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1),
            nn.SiLU(),
            nn.Conv2d(16, 32, 3, 2, 1),
            nn.SiLU(),
            nn.Conv2d(32, 32, 3, 2, 1),
            nn.SiLU(),
        )
        self.pred = nn.Conv2d(32, num_anchors * self.no, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = self.pred(self.body(x))
        b, _, ny, nx = y.shape
        return [y.view(b, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()]


@pytest.fixture
def one_thread():
    # Small convolutions gain nothing from intra-op threads, and on a busy 2-core machine (pytest -n 2)
    # two threads per worker make this test 10x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tiny_detector_learns_one_box(one_thread):
    torch.manual_seed(0)
    batch, size = 4, 64
    images = torch.zeros(batch, 3, size, size)
    rows = []
    for i in range(batch):
        x0, y0, w, h = 6 + 10 * i, 30 - 5 * i, 16 + 2 * i, 20 - 2 * i
        cls = i % 2
        images[i, cls, y0 : y0 + h, x0 : x0 + w] = 1.0  # red or green square: the class is the colour
        rows.append([i, cls, (x0 + w / 2) / size, (y0 + h / 2) / size, w / size, h / size, -1])
    targets = torch.tensor(rows)
    anchors = torch.tensor([[[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]]])
    # Unscaled gains: with two classes the official nc / 80 scaling leaves the class term too weak to
    # show progress in a few steps.
    cfg = DetectionLossConfig(balance=[1.0], scale_gains=False)
    loss_fn = YoloDetectionLoss(anchors, torch.tensor([8.0]), 2, cfg)
    model = _TinyDetector(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(80):
        terms, _ = loss_fn(model(images), targets)
        total = sum(terms.values())
        assert torch.isfinite(total)
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append({k: v.item() for k, v in terms.items()})
    start, end = history[0], history[-1]
    assert sum(end.values()) < 0.3 * sum(start.values())
    assert end["box"] < 0.7 * start["box"]
    assert end["cls"] < 0.1 * start["cls"]


class _RecordOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


# Operators whose output size or value the host must wait for on an accelerator.
_SYNCING_OPS = {
    "_local_scalar_dense",
    "nonzero",
    "masked_select",
    "unique",
    "_unique2",
    "repeat_interleave",
    "item",
}


def test_loss_forward_and_backward_need_no_host_device_sync():
    g = torch.Generator().manual_seed(9)
    raw, targets = _random_batch(2, 3, 12, 128, g)
    raw = [p.requires_grad_() for p in raw]
    loss = YoloDetectionLoss(ANCHORS, STRIDES, 3, DetectionLossConfig(fl_gamma=1.5, cls_pw=2.0))
    mask = torch.tensor([True, False])
    loss(raw, targets, mask)  # first call moves the anchors once
    with _RecordOps() as recorder:
        terms, _ = loss(raw, targets, mask)
        sum(terms.values()).backward()
    assert "index_put_" in recorder.ops or "index_put" in recorder.ops  # the recorder saw the loss
    assert not recorder.ops & _SYNCING_OPS
