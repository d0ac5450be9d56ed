"""Impossible MOT scores: a repeated (frame, id) pair or a frame number that is 0, negative or fractional, in a
result file or in gt.txt, is an error naming the file and line (exit 2 from ``tools/evaluate.py``) instead
of IDF1/IDP/IDR above 100 %."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.tools.helpers import load_tool
from unified.evaluation.mot import MotEvaluator, evaluate_mot_files
from unified.tracking.mot_io import read_mot_detections


def mot_rows(frames: int = 10) -> list[str]:
    """Two objects walking right, one row per (frame, id), MOTChallenge ``frame,id,x,y,w,h,conf,...``."""
    return [f"{f},{i},{10 + 5 * f + 100 * i},20,30,60,1,1,1" for f in range(1, frames + 1) for i in (1, 2)]


def layout(root: Path, gt: list[str], results: list[str]) -> tuple[Path, Path]:
    (root / "gt" / "S1" / "gt").mkdir(parents=True)
    (root / "gt" / "S1" / "gt" / "gt.txt").write_text("\n".join(gt) + "\n")
    (root / "res").mkdir()
    (root / "res" / "S1.txt").write_text("\n".join(results) + "\n")
    return root / "gt", root / "res"


def test_valid_files_score_within_bounds(tmp_path):
    gt, res = layout(tmp_path, mot_rows(), mot_rows())
    rows = evaluate_mot_files(gt, res)
    assert rows["S1"]["idf1"] == 1.0 and rows["S1"]["mota"] == 1.0


BROKEN = {
    # name: (which file, row index to change, new row, text of the error)
    "result (frame, id) twice": ("results", 6, "3,2,20,20,30,60,1,1,1", "frame 3, id 2 again (first on line"),
    "gt (frame, id) twice": ("gt", 7, "2,1,16,20,30,60,1,1,1", "frame 2, id 1 again (first on line"),
    "result frame 0": ("results", 0, "0,1,15,20,30,60,1,1,1", "frame must be a whole number from 1"),
    "gt frame negative": ("gt", 0, "-3,1,15,20,30,60,1,1,1", "got -3"),
    "result frame fractional": ("results", 2, "2.5,1,20,20,30,60,1,1,1", "got 2.5"),
    "gt frame fractional": ("gt", 2, "1.5,1,20,20,30,60,1,1,1", "got 1.5"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_impossible_rows_are_errors_naming_file_and_line(tmp_path, capsys, case):
    which, index, row, expected = BROKEN[case]
    gt, results = mot_rows(), mot_rows()
    (gt if which == "gt" else results)[index] = row
    gt_root, res_root = layout(tmp_path, gt, results)
    bad_file = gt_root / "S1" / "gt" / "gt.txt" if which == "gt" else res_root / "S1.txt"
    with pytest.raises(ValueError) as info:
        evaluate_mot_files(gt_root, res_root)
    message = str(info.value)
    assert f"{bad_file}, line {index + 1}: " in message and expected in message, message
    code = load_tool("evaluate").main(["--mot-gt", str(gt_root), "--mot-results", str(res_root)])
    err = capsys.readouterr().err
    assert code == 2 and f"{bad_file}, line {index + 1}" in err and "Traceback" not in err, err


def test_repeated_pairs_among_ignored_ground_truth_rows_are_not_scored_and_allowed(tmp_path):
    """gt rows whose 7th column is 0 are dropped before scoring (the MOTChallenge "ignore" flag)."""
    gt = mot_rows() + ["3,2,500,20,30,60,0,1,1"]
    gt_root, res_root = layout(tmp_path, gt, mot_rows())
    assert evaluate_mot_files(gt_root, res_root)["S1"]["idf1"] == 1.0


def test_the_in_memory_evaluator_refuses_an_id_twice_in_a_frame():
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=float)
    evaluator = MotEvaluator()
    with pytest.raises(ValueError, match="hypothesis id 4 given twice"):
        evaluator.update("S", 1, boxes, [1, 2], boxes, [4, 4])
    with pytest.raises(ValueError, match="ground-truth id 1 given twice"):
        evaluator.update("S", 1, boxes, [1, 1], boxes, [4, 5])
    evaluator.update("S", 1, boxes, [1, 2], boxes, [4, 5])
    assert evaluator.compute()["S"]["idf1"] == 1.0


@pytest.mark.parametrize("frame", ["0", "-1", "2.5", "3000000000", "1e300"])
def test_detection_files_refuse_frames_that_are_no_frame_index(tmp_path, frame):
    det = tmp_path / "det.txt"
    det.write_text(f"1,-1,10,10,20,40,0.9\n{frame},-1,10,10,20,40,0.9\n")
    with pytest.raises(
        ValueError,
        match=rf"det\.txt, line 2: frame must be a whole number from 1 to 2,147,483,647, got {frame}",
    ):
        read_mot_detections(det)
