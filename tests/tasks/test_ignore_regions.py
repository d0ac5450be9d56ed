"""COCO crowd regions as COCO handles them (the ``ignore`` kind): no target in training, and in evaluation a
detection on one is neither a true nor a false positive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import TINY_MODEL, make_batch
from tests.tasks.test_hand_written_coco import HAND_WRITTEN, write_dataset
from unified.data import load_dataset_yaml
from unified.evaluation.coco import CocoDetectionEvaluator
from unified.model import build_model
from unified.structures import DatasetInfo
from unified.task import StepContext

OBJECT, CROWD = [10.0, 10.0, 30.0, 30.0], [40.0, 40.0, 60.0, 60.0]


def _ap50(crowd: list[bool] | None, boxes: list[list[float]]) -> float:
    coco = CocoDetectionEvaluator(["a"])
    coco.add_ground_truth(1, np.array(boxes), [0] * len(boxes), height=64, width=64, crowd=crowd)
    # The object found at 0.9, and a more confident detection on the crowd region.
    coco.add_predictions(1, np.array([OBJECT, CROWD]), np.array([0.9, 0.95]), np.array([0, 0]))
    return coco.compute().metrics["AP50"]


def test_a_detection_on_a_crowd_region_is_no_false_positive():
    assert _ap50([False, True], [OBJECT, CROWD]) == pytest.approx(1.0)
    # Left out of the ground truth (what the YOLO converters do), the same detection is a false positive
    # ranked first, and AP50 drops to what pycocotools gives for precision 1/2 at recall 1.
    assert _ap50(None, [OBJECT]) == pytest.approx(0.5, abs=0.01)


def test_an_ignore_region_is_no_training_target_and_rows_keep_their_batch_index():
    info = DatasetInfo(["a", "b", "c"], ["a", "b", "c", "night"], 8, ("boxes", "ignore"))
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, tasks=["detect"], info=info)
    batch = make_batch(info, batch=2, size=64)
    flags = torch.zeros(len(batch["boxes"]), dtype=torch.bool)
    flags[::2] = True
    batch["ignore"], batch["label_mask"]["ignore"] = flags, torch.ones(2, dtype=torch.bool)
    task = model.tasks["detect"]
    step = task.step(model(batch["images"]), batch, StepContext())
    targets = torch.cat([level.target_index for level in step.assignment.compact().levels])
    assert len(targets) and not flags[targets].any()  # every positive comes from a kept row
    assert set(targets.tolist()) == set(torch.nonzero(~flags).flatten().tolist())  # of the whole batch


@pytest.mark.parametrize("with_ignore", [False, True])
def test_the_coco_reader_keeps_crowd_regions_only_for_a_part_with_the_ignore_kind(tmp_path, with_ignore):
    extra = ["ignore"] if with_ignore else []
    records, info = load_dataset_yaml(write_dataset(tmp_path, extra_kinds=extra), "train")
    one = min(records, key=lambda r: r.image_id)
    crowds = sum(a["iscrowd"] for a in HAND_WRITTEN["annotations"] if a["image_id"] == 7)
    assert len(one.labels["boxes"]) == 2 + crowds * with_ignore
    if with_ignore:
        assert one.labels["ignore"].tolist() == [False, False, True]
        assert len(one.labels["masks"]) == 3  # the crowd's own mask, for segm evaluation
