"""MOT metrics reproduce motmetrics' own expected numbers on its bundled TUD sequences."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from unified.evaluation import mot
from unified.evaluation.mot import OVERALL, MotEvaluator, evaluate_mot_files, format_mot_table

SEQUENCES = ("TUD-Campus", "TUD-Stadtmitte")

# Expected values from motmetrics 1.4.0's own test suite, motmetrics/tests/test_metrics.py,
# test_motchallenge_files (rows TUD-Campus, TUD-Stadtmitte, OVERALL; columns are the first 15
# entries of mm.metrics.motchallenge_metrics). Compared with atol 1e-3 there too.
EXPECTED_COLUMNS = (
    "idf1", "idp", "idr", "recall", "precision", "num_unique_objects", "mostly_tracked",
    "partially_tracked", "mostly_lost", "num_false_positives", "num_misses", "num_switches",
    "num_fragmentations", "mota", "motp",
)  # fmt: skip
EXPECTED = {
    "TUD-Campus": (0.557659, 0.729730, 0.451253, 0.582173, 0.941441, 8, 1, 6, 1, 13, 150, 7, 7, 0.526462, 0.277201),
    "TUD-Stadtmitte": (0.644619, 0.819760, 0.531142, 0.608997, 0.939920, 10, 5, 4, 1, 45, 452, 7, 6, 0.564014, 0.345904),
    OVERALL: (0.624296, 0.799176, 0.512211, 0.602640, 0.940268, 18, 6, 10, 2, 58, 602, 14, 13, 0.555116, 0.330177),
}  # fmt: skip


def motmetrics_data() -> Path:
    import motmetrics

    return Path(motmetrics.__file__).parent / "data"


@pytest.fixture()
def mot_layout(tmp_path):
    """motmetrics' sample data laid out as MOTChallenge: GT/<seq>/gt/gt.txt and RESULTS/<seq>.txt."""
    for seq in SEQUENCES:
        (tmp_path / "gt" / seq / "gt").mkdir(parents=True)
        shutil.copy(motmetrics_data() / seq / "gt.txt", tmp_path / "gt" / seq / "gt" / "gt.txt")
        (tmp_path / "results").mkdir(exist_ok=True)
        shutil.copy(motmetrics_data() / seq / "test.txt", tmp_path / "results" / f"{seq}.txt")
    return tmp_path / "gt", tmp_path / "results"


def check_expected(rows):
    assert list(rows) == [*SEQUENCES, OVERALL]
    for name, values in EXPECTED.items():
        for column, value in zip(EXPECTED_COLUMNS, values):
            got = rows[name][column]
            if isinstance(value, int):
                assert got == value and isinstance(got, int), (name, column, got)
            else:
                assert got == pytest.approx(value, abs=1e-3), (name, column)


def test_files_reproduce_motmetrics_expected_numbers(mot_layout):
    rows = evaluate_mot_files(*mot_layout)
    check_expected(rows)
    assert rows["TUD-Campus"]["num_frames"] == 71
    assert rows[OVERALL]["num_frames"] == 71 + 179


def test_in_memory_evaluator_equals_the_file_path():
    evaluator = MotEvaluator(box_format="xywh")
    for seq in SEQUENCES:
        gt = np.loadtxt(motmetrics_data() / seq / "gt.txt", delimiter=",")
        hyp = np.loadtxt(motmetrics_data() / seq / "test.txt", delimiter=",")
        for frame in np.union1d(gt[:, 0], hyp[:, 0]).astype(int):
            g, h = gt[gt[:, 0] == frame], hyp[hyp[:, 0] == frame]
            evaluator.update(seq, frame, g[:, 2:6], g[:, 1].astype(int), h[:, 2:6], h[:, 1].astype(int))
    check_expected(evaluator.compute())


def test_xyxy_boxes_give_the_same_rows():
    gt = np.array([[0, 0, 10, 20], [30, 0, 10, 20.0]])
    hyp = gt + np.array([1, 0, 0, 0])
    by_xywh, by_xyxy = MotEvaluator(box_format="xywh"), MotEvaluator()
    for frame in (1, 2):
        by_xywh.update("s", frame, gt, [1, 2], hyp, [5, 6])
        corners = lambda b: np.c_[b[:, :2], b[:, :2] + b[:, 2:]]  # noqa: E731
        by_xyxy.update("s", frame, corners(gt), [1, 2], corners(hyp), [5, 6])
    assert by_xywh.compute() == by_xyxy.compute()
    assert by_xyxy.compute()["s"]["mota"] == 1.0


def test_asfarray_shim_restores_numpy2_removal(monkeypatch):
    # NumPy 2 removed np.asfarray, which motmetrics 1.4.0 calls in its IoU matrix.
    monkeypatch.delattr(np, "asfarray")
    mot._ensure_numpy_asfarray()
    assert np.asfarray([1, 2]).dtype == np.float64
    assert np.asfarray([1, 2], dtype=np.int32).dtype == np.float64  # like NumPy 1: never an integer type
    assert np.asfarray([1, 2], dtype=np.float32).dtype == np.float32
    evaluator = MotEvaluator()
    evaluator.update("s", 1, np.array([[0, 0, 10, 10]]), [1], np.array([[0, 0, 10, 10]]), [1])
    assert evaluator.compute()["s"]["mota"] == 1.0


def test_shim_leaves_an_existing_asfarray_alone(monkeypatch):
    sentinel = object()
    monkeypatch.setattr(np, "asfarray", sentinel, raising=False)
    mot._ensure_numpy_asfarray()
    assert np.asfarray is sentinel


def test_missing_result_file_names_the_sequence(mot_layout):
    gt_root, results = mot_layout
    (results / "TUD-Stadtmitte.txt").unlink()
    with pytest.raises(FileNotFoundError, match="sequence 'TUD-Stadtmitte': result file missing"):
        evaluate_mot_files(gt_root, results)
    rows = evaluate_mot_files(gt_root, results, sequences=["TUD-Campus"])
    assert list(rows) == ["TUD-Campus", OVERALL]


def test_empty_result_file_counts_every_object_missed(mot_layout):
    gt_root, results = mot_layout
    (results / "TUD-Campus.txt").write_text("")
    row = evaluate_mot_files(gt_root, results, sequences=["TUD-Campus"])["TUD-Campus"]
    assert row["num_misses"] == row["num_objects"] == 359
    assert row["mota"] == 0.0 and row["num_false_positives"] == 0


def test_malformed_file_is_named(mot_layout):
    gt_root, results = mot_layout
    (results / "TUD-Campus.txt").write_text("1,2,abc\n")
    with pytest.raises(ValueError, match="TUD-Campus.txt"):
        evaluate_mot_files(gt_root, results, sequences=["TUD-Campus"])


def test_evaluator_errors():
    evaluator = MotEvaluator()
    evaluator.update("s", 1, np.zeros((0, 4)), [], np.zeros((0, 4)), [])
    with pytest.raises(ValueError, match="frame 1 given twice"):
        evaluator.update("s", 1, np.zeros((0, 4)), [], np.zeros((0, 4)), [])
    with pytest.raises(ValueError, match="1 gt boxes / 2 ids"):
        evaluator.update("s", 2, np.zeros((1, 4)), [1, 2], np.zeros((0, 4)), [])
    with pytest.raises(ValueError, match="no sequence"):
        MotEvaluator().compute()
    named = MotEvaluator()
    named.update(OVERALL, 1, np.zeros((0, 4)), [], np.zeros((0, 4)), [])
    with pytest.raises(ValueError, match="cannot be named 'OVERALL'"):
        named.compute()


def test_table_has_a_row_per_sequence(mot_layout):
    table = format_mot_table(evaluate_mot_files(*mot_layout))
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["sequence", "MOTA", "MOTP", "IDF1"]
    assert lines[1].split()[:2] == ["TUD-Campus", "0.526"]  # fractions, as in every other table
    assert lines[3].split()[0] == OVERALL


def test_hypotheses_on_ignore_regions_are_neither_matches_nor_false_positives():
    """MOTChallenge's distractor rule: a hypothesis paired with an ignore region is left out."""
    person = np.array([[0.0, 0.0, 10.0, 20.0]])
    distractor = np.array([[50.0, 0.0, 60.0, 20.0]])
    hyps = np.array([[0.0, 0.0, 10.0, 20.0], [51.0, 0.0, 61.0, 20.0], [100.0, 0.0, 110.0, 20.0]])
    rows = {}
    for name, ignore in (("with", distractor), ("without", None)):
        evaluator = MotEvaluator()
        for frame in (1, 2):
            evaluator.update("S", frame, person, [1], hyps, [1, 2, 3], ignore_boxes=ignore)
        rows[name] = evaluator.compute()["S"]
    assert rows["with"]["num_false_positives"] == 2  # the far box, twice; the one on the distractor: never
    assert rows["without"]["num_false_positives"] == 4
    assert rows["with"]["num_misses"] == rows["without"]["num_misses"] == 0
    # A person's own box goes to the person, even where an ignore region covers it too.
    evaluator = MotEvaluator()
    evaluator.update("S", 1, person, [1], hyps[:1], [1], ignore_boxes=person + 1.0)
    row = evaluator.compute()["S"]
    assert row["num_misses"] == 0 and row["num_false_positives"] == 0
