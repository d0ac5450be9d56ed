"""Anchor fitting (autoanchor): best possible recall, k-means + genetic fit, and its place in a run."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from tests.conftest import TINY_MODEL
from unified.anchors import BPR_GOAL, anchor_metrics, autoanchor, box_sizes, fit_anchors
from unified.checkpoint import load_safe
from unified.config import ConfigError, to_dict
from unified.data.kinds.boxes import Boxes
from unified.data.records import ImageRecord
from unified.engine.experiment import load_experiment
from unified.engine.launch import run_training
from unified.models import load_model_config

COCO = load_model_config("yolor-tiny").anchors  # the COCO anchors for 640²


def test_best_possible_recall_known_answers() -> None:
    anchors = np.array([[10.0, 10.0], [40.0, 20.0]])
    wh = np.array(
        [
            [10, 10],  # exact match: ratio 1 for the first anchor
            [39, 39],  # 3.9x the first: inside anchor_t 4
            [41, 41],  # 4.1x the first, but 41/40 and 41/20 = 2.05 for the second: matched
            [200, 10],  # 20x too wide for the first, 5x for the second: no anchor
        ],
        dtype=float,
    )
    m = anchor_metrics(wh, anchors, anchor_t=4.0)
    assert m.bpr == pytest.approx(0.75)
    # anchors matching each box: 1 + 2 (39x39: 1/3.9 and min(40/39, 20/39)) + 1 + 0
    assert m.anchors_above == pytest.approx((1 + 2 + 1 + 0) / 4)
    best = [1.0, max(10 / 39, 20 / 39), 20 / 41]
    assert m.fitness == pytest.approx(sum(best) / 4)
    assert anchor_metrics(wh, anchors, anchor_t=25.0).bpr == 1.0
    assert np.isnan(anchor_metrics(np.zeros((0, 2)), anchors).bpr)


def test_fitting_raises_the_recall_on_boxes_the_coco_anchors_miss() -> None:
    rng = np.random.default_rng(0)
    # long thin boxes (2-3 px by 250-400 px): no COCO anchor is within 4x on both sides
    wh = np.stack([rng.uniform(2, 3, 400), rng.uniform(250, 400, 400)], axis=1)
    before = anchor_metrics(wh, COCO)
    assert before.bpr == 0.0
    fitted = fit_anchors(wh, 9, generations=300, seed=0)
    assert fitted.shape == (9, 2) and np.all(np.diff(fitted.prod(1)) >= 0)  # sorted by area
    after = anchor_metrics(wh, fitted)
    assert after.bpr > BPR_GOAL and after.fitness > before.fitness
    assert np.array_equal(fitted, fit_anchors(wh, 9, generations=300, seed=0))  # seeded: same on every rank


def test_autoanchor_keeps_anchors_that_fit_and_replaces_those_that_do_not() -> None:
    rng = np.random.default_rng(1)
    fitting = rng.uniform(20, 60, (300, 2))
    kept, line = autoanchor("yolor-tiny", fitting)
    assert kept is None and "kept" in line and "1.0000" in line
    tiny = np.stack([rng.uniform(2, 4, 300), rng.uniform(2, 4, 300)], axis=1)
    new, line = autoanchor("yolor-tiny", tiny)
    assert new is not None and len(new.anchors) == 3 and all(len(level) == 6 for level in new.anchors)
    assert line.startswith("autoanchor: best possible recall") and "->" in line and str(new.anchors) in line
    assert anchor_metrics(tiny, new.anchors).bpr > anchor_metrics(tiny, COCO).bpr
    assert autoanchor("yolor-tiny", np.zeros((0, 2)))[0] is None


def test_always_fits_anchors_whose_recall_is_fine_but_whose_fit_is_poor() -> None:
    """COCO's anchors reach a BPR of 1.0 on boxes of 20-60 px (YOLOv5's rule keeps them); ``always`` fits
    anchors that match those boxes closer, and keeps the model's when the fit is no better."""
    rng = np.random.default_rng(1)
    boxes = rng.uniform(20, 60, (300, 2))
    new, line = autoanchor("yolor-tiny", boxes, always=True)
    assert new is not None and "fitness" in line and str(new.anchors) in line
    before, after = anchor_metrics(boxes, COCO), anchor_metrics(boxes, new.anchors)
    assert after.bpr >= before.bpr == 1.0 and after.fitness > before.fitness
    again, line = autoanchor(to_dict(new), boxes, always=True)
    assert again is None and "no better: the model's kept" in line
    assert load_experiment(None, ["train.autoanchor=always"]).train.autoanchor == "always"
    with pytest.raises(ConfigError, match="train.autoanchor"):
        load_experiment(None, ["train.autoanchor=sometimes"])


def test_box_sizes_are_at_the_training_size_without_ignore_regions() -> None:
    boxes = Boxes(np.array([[0, 0, 100, 50], [10, 10, 30, 20], [0, 0, 40, 40]]), np.array([0, 0, 0]))
    record = ImageRecord("a.jpg", 400, 200, labels={"boxes": boxes, "ignore": np.array([False, False, True])})
    wh = box_sizes([record, ImageRecord("b.jpg", 10, 10)], img_size=200)  # gain 0.5
    np.testing.assert_allclose(wh, [[50, 25], [10, 5]])


def _experiment(tmp_path, world, anchors, *overrides: str):
    model = copy.deepcopy(TINY_MODEL)
    model["anchors"] = anchors
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(model))
    return load_experiment(
        None,
        [
            f"model={path}",
            f"data={world}",
            "tasks=[detect]",
            "train.epochs=1",
            "train.batch_size=4",
            "train.img_size=64",
            "train.workers=0",
            "train.device=cpu",
            "train.precision=fp32",
            "eval.interval=0",
            f"project={tmp_path / 'runs'}",
            *overrides,
        ],
    )


#: Anchors for 640² images that no box of the 64² tiny world comes within 4x of.
HUGE = [[300, 300, 400, 400, 500, 500], [600, 600, 700, 700, 800, 800]]


@pytest.mark.slow
def test_a_new_run_fits_its_anchors_and_the_checkpoint_keeps_them(tmp_path, tiny_world, capsys) -> None:
    run_dir, _ = run_training(_experiment(tmp_path, tiny_world, HUGE, "name=fit"), progress=False)
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("autoanchor:"))
    ckpt = load_safe(run_dir / "weights" / "last.pt")
    stored = ckpt["model_config"]["anchors"]
    assert stored != HUGE and "0.0000 ->" in line and str(stored) in line
    from unified.model import load

    loaded = load(run_dir / "weights" / "last.pt").heads["detect"].anchors.flatten().tolist()
    assert loaded == pytest.approx([v for level in stored for v in level])
    off, _ = run_training(
        _experiment(tmp_path, tiny_world, HUGE, "name=plain", "train.autoanchor=false"), progress=False
    )
    assert load_safe(off / "weights" / "last.pt")["model_config"]["anchors"] == HUGE
    assert "autoanchor:" not in capsys.readouterr().out


def test_only_a_new_run_from_scratch_fits(tmp_path) -> None:
    from unified.anchors import anchors_for_run

    sizes = np.arange(2.0, 11.0)
    xyxy = np.stack([np.zeros(9), np.zeros(9), sizes, sizes[::-1]], axis=1)
    record = ImageRecord("a.jpg", 64, 64, labels={"boxes": Boxes(xyxy, np.zeros(9))})
    model = {**copy.deepcopy(TINY_MODEL), "anchors": HUGE}
    lines: list[str] = []
    cfg = load_experiment(None, ["train.img_size=64"])
    fitted = anchors_for_run(cfg, model, [record] * 4, fresh=True, log=lines.append)
    assert fitted["anchors"] != HUGE and len(lines) == 1
    assert anchors_for_run(cfg, model, [record], fresh=False, log=lines.append) is model  # a resume
    weights = load_experiment(None, ["train.img_size=64", "train.weights=w.pt"])
    assert anchors_for_run(weights, model, [record], fresh=True, log=lines.append) is model
    off = load_experiment(None, ["train.img_size=64", "train.autoanchor=false"])
    assert anchors_for_run(off, model, [record], fresh=True, log=lines.append) is model
    assert len(lines) == 1


def test_the_noautoanchor_flag() -> None:
    from unified.commands.train import parse_args
    from unified.engine.launch import flags_to_overrides

    assert "train.autoanchor=false" in flags_to_overrides(parse_args(["--noautoanchor"]))
    assert "train.autoanchor=false" not in flags_to_overrides(parse_args([]))
