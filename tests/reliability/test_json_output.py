"""Result files are valid JSON: one writer (``unified.engine.results``) for the training run's
``metrics.json`` and ``tools/evaluate.py --json``, an undefined metric written as ``null``, never ``NaN``."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from tests.reliability.helpers import train_overrides
from tests.tools.helpers import load_tool
from unified.engine.experiment import load_experiment
from unified.engine.launch import run_training
from unified.engine.results import json_text

PAYLOAD = {
    "detect": {
        "AP": math.nan,
        "APl": -math.inf,
        "AR": np.float32(0.5),
        "AP50": np.float64("nan"),
        "images": np.int64(3),
        "found": np.bool_(True),
        "loss": torch.tensor(0.25),
        "fars": (1e-3, 1e-2),
    }
}
EXPECTED = {
    "detect": {
        "AP": None,
        "APl": None,
        "AR": 0.5,
        "AP50": None,
        "images": 3,
        "found": True,
        "loss": 0.25,
        "fars": [1e-3, 1e-2],
    }
}


def strict_json(text: str) -> object:
    """Parse as a strict reader does: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in JSON output")

    return json.loads(text, parse_constant=refuse)


def test_evaluate_writes_what_the_training_run_writes(tmp_path):
    """tools/evaluate.py had its own copy of the conversion, and neither took NumPy float32 or tensors."""
    path = tmp_path / "out" / "metrics.json"
    load_tool("evaluate").write_json(path, PAYLOAD)
    assert path.read_text() == json_text(PAYLOAD)
    assert strict_json(path.read_text()) == EXPECTED


def test_a_training_run_writes_undefined_metrics_as_null(tmp_path, small_world, model_yaml):
    overrides = train_overrides(
        model_yaml, small_world, tmp_path, "run", **{"train.epochs": 1, "plugins": "[]"}
    )
    run_dir, metrics = run_training(load_experiment(None, overrides), progress=False)
    written = strict_json((run_dir / "metrics.json").read_text())
    assert any(math.isnan(v) for v in metrics["detect"].values()), (
        metrics
    )  # the tiny run leaves some undefined
    assert written == {t: {k: None if math.isnan(v) else v for k, v in m.items()} for t, m in metrics.items()}
