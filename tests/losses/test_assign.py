import pytest
import torch

from unified.losses.assign import YoloAssigner

# One level, stride 8 on a 64 x 64 input: an 8 x 8 grid. Anchors in pixels.
STRIDE = 8.0
ANCHORS_PX = torch.tensor([[[16.0, 16.0], [64.0, 64.0], [200.0, 40.0]]])
GRID = [(8, 8)]


def _assigner() -> YoloAssigner:
    return YoloAssigner(ANCHORS_PX, torch.tensor([STRIDE]))


def _target(image: int, cls: int, gx: float, gy: float, w_px: float, h_px: float, identity: int = -1) -> list:
    """A target row with its centre given in grid cells of the 8 x 8 grid."""
    return [image, cls, gx / 8, gy / 8, w_px / 64, h_px / 64, identity]


def _positives(level) -> set[tuple[int, int, int, int]]:
    """(image, anchor, grid_y, grid_x) of every positive."""
    level = level.compact()
    return set(zip(level.image.tolist(), level.anchor.tolist(), level.grid_y.tolist(), level.grid_x.tolist()))


def test_box_matching_one_anchor_lands_in_its_cell_and_the_two_nearest_neighbours():
    # Centre (3.3, 4.7) leans left (x fraction < .5) and down (y fraction > .5).
    targets = torch.tensor([_target(0, 2, 3.3, 4.7, 16, 16, identity=7)])
    level = _assigner()(targets, GRID).levels[0]
    assert _positives(level) == {(0, 0, 4, 3), (0, 0, 4, 2), (0, 0, 5, 3)}

    pos = level.compact()
    by_cell = {(y, x): box for y, x, box in zip(pos.grid_y.tolist(), pos.grid_x.tolist(), pos.box.tolist())}
    assert by_cell[(4, 3)] == pytest.approx([0.3, 0.7, 2.0, 2.0], abs=1e-5)
    assert by_cell[(4, 2)] == pytest.approx([1.3, 0.7, 2.0, 2.0], abs=1e-5)
    assert by_cell[(5, 3)] == pytest.approx([0.3, -0.3, 2.0, 2.0], abs=1e-5)
    assert pos.cls.tolist() == [2, 2, 2]
    assert pos.identity.tolist() == [7, 7, 7]
    assert pos.target_index.tolist() == [0, 0, 0]
    assert pos.anchor_wh.tolist() == [[2.0, 2.0]] * 3


def test_other_side_neighbours():
    # Centre (5.8, 2.2): right and up.
    targets = torch.tensor([_target(0, 0, 5.8, 2.2, 16, 16)])
    assert _positives(_assigner()(targets, GRID).levels[0]) == {(0, 0, 2, 5), (0, 0, 2, 6), (0, 0, 1, 5)}


def test_ratio_threshold_is_strict_and_anchor_t_is_honoured():
    # 16 px against the 64 px anchor is a ratio of exactly 4: not below anchor_t = 4.
    targets = torch.tensor([_target(0, 0, 3.3, 4.7, 16, 16)])
    anchors = {a for _, a, _, _ in _positives(_assigner()(targets, GRID).levels[0])}
    assert anchors == {0}
    loose = YoloAssigner(ANCHORS_PX, torch.tensor([STRIDE]), anchor_t=4.01)
    assert {a for _, a, _, _ in _positives(loose(targets, GRID).levels[0])} == {0, 1}


def test_box_far_from_every_anchor_is_not_assigned():
    # Very thin box: the height ratio exceeds 4 for every anchor.
    targets = torch.tensor([_target(0, 0, 3.3, 4.7, 30, 2)])
    level = _assigner()(targets, GRID).levels[0]
    assert len(level) == 5 * 3 * 1
    assert not level.valid.any()


def test_zero_size_box_is_never_assigned():
    targets = torch.tensor([_target(0, 0, 3.3, 4.7, 0, 16), _target(0, 0, 3.3, 4.7, 16, 0)])
    assert not _assigner()(targets, GRID).levels[0].valid.any()


def test_boxes_at_the_border():
    assigner = _assigner()
    # Top-left corner: less than one cell from the left and top edges, so no left/up neighbour;
    # fractions .4/.6 lean left and down, so only the cell below is added.
    near_origin = torch.tensor([_target(0, 0, 0.4, 0.6, 16, 16)])
    assert _positives(assigner(near_origin, GRID).levels[0]) == {(0, 0, 0, 0), (0, 0, 1, 0)}
    # Right edge: x fraction .7 leans right, but the right neighbour would be outside the grid.
    # y = 4.5 exactly leans neither way.
    near_right = torch.tensor([_target(0, 0, 7.7, 4.5, 16, 16)])
    assert _positives(assigner(near_right, GRID).levels[0]) == {(0, 0, 4, 7)}
    # Centre exactly on the bottom-right corner: the cell index is clamped into the grid and the
    # regression target is taken relative to the clamped cell.
    corner = torch.tensor([[0, 0, 1.0, 1.0, 0.25, 0.25, -1]])
    pos = assigner(corner, GRID).levels[0].compact()
    assert set(zip(pos.grid_y.tolist(), pos.grid_x.tolist())) == {(7, 7)}
    assert pos.box[:, :2].tolist() == [[1.0, 1.0]] * len(pos)


def test_empty_targets_and_six_column_targets():
    assignment = _assigner()(torch.zeros((0, 7)), GRID)
    level = assignment.levels[0]
    assert len(level) == 0 and level.box.shape == (0, 4) and level.anchor_wh.shape == (0, 2)
    assert len(level.compact()) == 0

    six = torch.tensor([_target(0, 1, 3.3, 4.7, 16, 16)[:6]])
    pos = _assigner()(six, GRID).levels[0].compact()
    assert len(pos) == 3 and pos.identity.tolist() == [-1, -1, -1]


def test_masked_out_image_contributes_no_positive():
    targets = torch.tensor([_target(0, 0, 3.3, 4.7, 16, 16), _target(1, 0, 3.3, 4.7, 16, 16)])
    mask = torch.tensor([False, True])
    level = _assigner()(targets, GRID, image_mask=mask).levels[0]
    assert {b for b, _, _, _ in _positives(level)} == {1}
    assert set(level.compact().target_index.tolist()) == {1}
    with pytest.raises(ValueError, match="image_mask"):
        _assigner()(targets, GRID, image_mask=mask[None])


def test_invalid_rows_hold_in_range_indices():
    g = torch.Generator().manual_seed(3)
    targets = _random_targets(40, batch=3, num_classes=4, generator=g)
    targets[:5, 2:4] = torch.tensor([[-0.3, 1.4]])  # centres outside the image
    assignment = _assigner()(targets, GRID, image_mask=torch.tensor([True, False, True]))
    level = assignment.levels[0]
    assert level.grid_x.min() >= 0 and level.grid_x.max() <= 7
    assert level.grid_y.min() >= 0 and level.grid_y.max() <= 7
    assert level.image.max() <= 2


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"targets must be \(M, 7\)"):
        _assigner()(torch.zeros(3, 5), GRID)
    with pytest.raises(ValueError, match="strides"):
        YoloAssigner(ANCHORS_PX, torch.tensor([8.0, 16.0]))
    with pytest.raises(ValueError, match="anchors must be"):
        YoloAssigner(torch.zeros(3, 2), torch.tensor([8.0]))
    with pytest.raises(ValueError, match="grids"):
        _assigner()(torch.zeros(0, 7), [(8, 8), (4, 4)])


# --- comparison with a plain loop over boxes, anchors and cells -------------------------------------


def _random_targets(n: int, batch: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    t = torch.rand(n, 7, generator=generator)
    t[:, 0] = torch.randint(0, batch, (n,), generator=generator)
    t[:, 1] = torch.randint(0, num_classes, (n,), generator=generator)
    t[:, 4:6] = torch.rand(n, 2, generator=generator) ** 2 * 0.6 + 0.002
    t[:, 6] = torch.randint(-1, 50, (n,), generator=generator)
    return t


def _loop_reference(targets, anchors_grid, grid_shapes, image_mask, anchor_t=4.0, g=0.5):
    """build_targets written box by box, in the official row order (offset, anchor, box)."""
    shifts = [(0.0, 0.0), (g, 0.0), (0.0, g), (-g, 0.0), (0.0, -g)]
    levels = []
    for anchors, (ny, nx) in zip(anchors_grid, grid_shapes):
        rows = []
        for k, (sx, sy) in enumerate(shifts):
            for a, (aw, ah) in enumerate(anchors.tolist()):
                for m, t in enumerate(targets):
                    image = int(t[0])
                    if image_mask is not None and not image_mask[image]:
                        continue
                    gx, gy = (t[2] * nx).item(), (t[3] * ny).item()
                    gw, gh = (t[4] * nx).item(), (t[5] * ny).item()
                    if max(gw / aw, aw / gw, gh / ah, ah / gh) >= anchor_t:
                        continue
                    use = [
                        True,
                        gx % 1 < g and gx > 1,
                        gy % 1 < g and gy > 1,
                        (nx - gx) % 1 < g and nx - gx > 1,
                        (ny - gy) % 1 < g and ny - gy > 1,
                    ][k]
                    if not use:
                        continue
                    cx = min(max(int(gx - sx), 0), nx - 1)
                    cy = min(max(int(gy - sy), 0), ny - 1)
                    rows.append((image, a, cy, cx, gx - cx, gy - cy, gw, gh, aw, ah, int(t[1]), int(t[6]), m))
        levels.append(rows)
    return levels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_assignment_equals_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    strides = torch.tensor([8.0, 16.0, 32.0])
    anchors_px = torch.tensor(
        [
            [[12, 16], [19, 36], [40, 28]],
            [[36, 75], [76, 55], [72, 146]],
            [[142, 110], [192, 243], [459, 401]],
        ],
        dtype=torch.float32,
    )
    height, width = 128, 96  # not square: x and y use different grid sizes
    grids = [(height // int(s), width // int(s)) for s in strides]
    targets = _random_targets(60, batch=4, num_classes=5, generator=g)
    mask = torch.tensor([True, True, False, True]) if seed != 0 else None

    assignment = YoloAssigner(anchors_px, strides)(targets, grids, image_mask=mask)
    reference = _loop_reference(targets, anchors_px / strides[:, None, None], grids, mask)
    total = 0
    for level, expected in zip(assignment.levels, reference):
        pos = level.compact()
        got = list(
            zip(
                pos.image.tolist(),
                pos.anchor.tolist(),
                pos.grid_y.tolist(),
                pos.grid_x.tolist(),
                *pos.box.T.tolist(),
                *pos.anchor_wh.T.tolist(),
                pos.cls.tolist(),
                pos.identity.tolist(),
                pos.target_index.tolist(),
            )
        )
        assert len(got) == len(expected)
        for row, ref in zip(got, expected):
            assert row[:4] == ref[:4] and row[10:] == ref[10:]
            assert row[4:10] == pytest.approx(ref[4:10], abs=1e-5)
        total += len(got)
    assert total > 60  # the comparison covered a real number of positives
