"""A real (tiny) five-task run leaves its pictures in the run folder and in TensorBoard, and
``tools/evaluate.py`` draws the evaluation's pictures for a checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.conftest import REPO, TINY_MODEL
from tests.tools.helpers import load_tool

TASKS = ("detect", "jdc", "jde", "segment", "pose")
#: Every evaluator's pictures (detect's, jdc's, jde's, segment's, pose's) and the validation batch drawn.
EVALUATION_PICTURES = {
    "PR_curve.png": (500, 400), "F1_curve.png": (500, 400), "confusion_matrix.png": (500, 400),
    "AP_per_class.png": (500, 300), "jdc_AP_per_label.png": (500, 300), "jde_TPR_FAR_curve.png": (500, 400),
    "segment_PR_curve.png": (500, 400), "pose_PR_curve.png": (500, 400),
    "val_batch0_labels.jpg": (640, 640), "val_batch0_pred.jpg": (640, 640),
}  # fmt: skip
RUN_PICTURES = {**EVALUATION_PICTURES, "results.png": (1500, 500), "labels.jpg": (800, 800)}


def _check_pictures(folder: Path, expected: dict[str, tuple[int, int]]) -> None:
    for name, (width, height) in expected.items():
        path = folder / name
        assert path.is_file(), f"{name} missing from {sorted(p.name for p in folder.iterdir())}"
        with Image.open(path) as image:
            image.verify()  # a whole, decodable file
        with Image.open(path) as image:
            assert image.format == ("JPEG" if name.endswith(".jpg") else "PNG"), name
            assert image.width >= width and image.height >= height, f"{name} is only {image.size}"
    with (
        Image.open(folder / "val_batch0_labels.jpg") as labels,
        Image.open(folder / "val_batch0_pred.jpg") as pred,
    ):
        assert labels.size == pred.size  # side by side, tile for tile


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_world) -> Path:
    root = tmp_path_factory.mktemp("pictures")
    model = root / "model.yaml"
    model.write_text(yaml.safe_dump(TINY_MODEL))
    result = subprocess.run(
        [
            sys.executable, "tools/train_multitask.py", "--data", str(tiny_world.parent / "dataset-all.yaml"),
            "--model", str(model), "--tasks", ",".join(TASKS), "--epochs", "1", "--batch-size", "8",
            "--img", "64", "--workers", "0", "--device", "cpu", "--project", str(root / "runs"), "--name", "pics",
            "--no-progress",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "runs" / "pics"


def test_a_finished_run_holds_its_pictures_and_shows_them_in_tensorboard(run):
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    _check_pictures(run, RUN_PICTURES)
    events = EventAccumulator(str(run), size_guidance={IMAGES: 0})
    events.Reload()
    shown = set(events.Tags()[IMAGES])
    assert {f"pictures/{Path(name).stem}" for name in RUN_PICTURES} <= shown, shown


def test_evaluate_draws_the_evaluation_pictures_of_a_checkpoint(run, tiny_world, tmp_path):
    out = tmp_path / "eval"
    evaluate = load_tool("evaluate")
    data = tiny_world.parent / "dataset-all.yaml"
    argv = ["--weights", str(run / "weights" / "best.pt"), "--data", str(data), "--workers", "0"]
    assert evaluate.main([*argv, "--batch-size", "8", "--out", str(out)]) == 0
    _check_pictures(out, EVALUATION_PICTURES)
