"""The Python API (``from unified import Model``), run from a folder outside the repository."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import REPO, TINY_MODEL
from tests.tools.helpers import INFO, save_tiny_checkpoint, write_images
from unified import Model, Result
from unified.checkpoint import load_safe
from unified.commands import predict as predict_command
from unified.commands import train as train_command
from unified.config import ConfigError
from unified.engine.hooks import Hook
from unified.inference import iter_frames, predict_frames
from unified.model import load

TASKS = ["detect", "jdc", "jde"]


class StopAfterFirstEpoch(Hook):
    """Stops a run after its first epoch, as a Ctrl-C between epochs would."""

    def after_epoch(self, trainer: Any) -> None:
        trainer.state.stop = True


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory outside the checkout: nothing may depend on the repository's relative paths."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny detect + jdc + jde checkpoint biased to find boxes in noise."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pt")


def test_model_and_result_are_exported_lazily_from_the_package() -> None:
    import unified.api

    assert unified.Model is unified.api.Model and unified.Result is unified.api.Result
    assert {"Model", "Result"} <= set(unified.__all__)


def test_a_packaged_model_resolves_by_name_from_outside_the_checkout(outside: Path) -> None:
    model = Model("yolor-tiny")
    assert model.config == REPO / "configs" / "models" / "yolor-tiny.yaml" and model.tasks == ["detect"]
    assert Model("yolor-tiny.yaml").config == model.config
    assert Model("yolor-tiny", tasks=["jdc"]).tasks == ["detect", "jdc"]  # requirements come along
    assert sum(p.numel() for p in model.model.parameters()) > 1_000_000


def test_a_model_yaml_path_wins_over_a_packaged_name(outside: Path) -> None:
    (outside / "yolor-tiny.yaml").write_text(yaml.safe_dump(TINY_MODEL))
    model = Model("yolor-tiny.yaml", nc=2)
    assert model.config == outside / "yolor-tiny.yaml" and model.names == {0: "0", 1: "1"}


def test_an_unknown_model_is_one_line_that_lists_the_packaged_names(outside: Path) -> None:
    with pytest.raises(ConfigError) as error:
        Model("yolor-tnyi")
    message = str(error.value)
    assert "\n" not in message and "'yolor-tnyi'" in message
    assert "did you mean 'yolor-tiny'?" in message and "yolor-p6-paper" in message


def test_predict_returns_every_tasks_output_as_the_predict_command_writes_it(
    outside: Path, checkpoint: Path
) -> None:
    images = write_images(outside / "in")
    model = Model(checkpoint)
    results = model.predict(outside / "in", conf=0.3, imgsz=64)
    assert [r.path for r in results] == [str(p) for p in sorted(images)]
    argv = ["--weights", str(checkpoint), "--source", str(outside / "in"), "--img", "64", "--conf", "0.3"]
    assert predict_command.main([*argv, "--save-json", "--save-labels", "--out", "cli", "--no-save-img"]) == 0
    written = json.loads((outside / "cli" / "predictions.json").read_text())
    labels = json.loads((outside / "cli" / "image_labels.json").read_text())
    assert [record for r in results for record in r.records] == written
    for result in results:
        assert isinstance(result, Result) and len(result) > 0, "the biased tiny model finds boxes"
        assert result.names == dict(enumerate(INFO.class_names))
        assert set(result.predictions) == set(TASKS)
        assert result.boxes.xyxy.shape == (len(result), 4) and result.boxes.cls.dtype == np.int64
        assert np.all(result.boxes.conf >= 0.3)
        h, w = result.orig_shape
        assert np.all(result.boxes.xyxy[:, 2] <= w + 1e-3) and np.all(result.boxes.xyxy[:, 3] <= h + 1e-3)
        np.testing.assert_allclose(
            result.boxes.xywh[:, 2:], result.boxes.xyxy[:, 2:] - result.boxes.xyxy[:, :2]
        )
        assert result.image_fields == labels[result.name]  # jdc's labels and scores
        assert result.arrays["embeddings"].shape == (len(result), 16)  # jde's, row for row
        assert [r["category_id"] for r in result.records] == result.boxes.cls.tolist()
        picture = result.plot()
        assert picture.shape == (h, w, 3) and picture.dtype == np.uint8
        assert not np.array_equal(picture, result.image)  # something was drawn
        with Image.open(result.save(outside / "drawn" / f"{result.name}.png")) as saved:
            assert saved.size == (w, h)


def test_predict_takes_arrays_and_leaves_the_models_thresholds_alone(
    tmp_path: Path, checkpoint: Path
) -> None:
    model = Model(checkpoint)
    before = model.model.tasks["detect"].cfg
    path = write_images(tmp_path)[0]
    [from_array] = model.predict(np.asarray(Image.open(path)), conf=0.3, imgsz=64)
    reference = load(checkpoint).for_inference()
    detect = reference.tasks["detect"]
    detect.cfg = dataclasses.replace(
        detect.cfg, conf_thres=0.3, iou_thres=0.45, max_det=300, multi_label=False
    )
    [(_, expected)] = list(predict_frames(reference, iter_frames(path), 64))
    assert from_array.path == "image0" and len(from_array) > 0
    np.testing.assert_allclose(from_array.boxes.xyxy, expected["detect"]["boxes"].numpy(), atol=1e-4)
    assert model.model.tasks["detect"].cfg == before  # predict's conf and iou did not stick
    with pytest.raises(ValueError, match=r"source image 0: expected an \(h, w, 3\) uint8"):
        model.predict(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="imgsz 40: must be a positive multiple"):
        model.predict(Image.open(path), imgsz=40)


def test_export_refuses_formats_other_than_onnx(checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="format 'tflite': only 'onnx' is supported"):
        Model(checkpoint).export(format="tflite")


@pytest.mark.slow
def test_train_val_predict_track_export_end_to_end(
    outside: Path, tiny_world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's example at a tiny size, with a relative data path; then the run resumes from elsewhere."""
    data = os.path.relpath(tiny_world, outside)
    model = Model("yolor-tiny", tasks=TASKS)
    run = model.train(
        data=data, epochs=2, imgsz=64, batch=4, device="cpu", workers=0, project="runs", name="exp",
        progress=False, hooks=[StopAfterFirstEpoch()],
        **{"task_options.jde.embedding_dim": 16, "optim.warmup_epochs": 0.0},
    )  # fmt: skip
    run_dir, metrics = run
    assert run_dir == outside / "runs" / "exp" and set(metrics) == set(TASKS)
    assert model.weights == run_dir / "weights" / "best.pt" and model.tasks == TASKS
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert recorded["model"] == str(REPO / "configs" / "models" / "yolor-tiny.yaml")
    assert recorded["data"] == str(tiny_world.resolve())
    assert recorded["task_options"]["jde"]["embedding_dim"] == 16

    (outside / "elsewhere").mkdir()
    monkeypatch.chdir(outside / "elsewhere")  # the run recorded absolute paths: --resume works from here
    assert train_command.main(["--resume", str(run_dir), "--no-progress"]) == 0
    assert load_safe(run_dir / "weights" / "last.pt")["epoch"] == 2

    scores = model.val(data=tiny_world, batch=4, workers=0)
    assert set(scores) == set(TASKS) and all(0 <= scores["detect"][k] <= 1 for k in ("AP", "AP50"))

    images = tiny_world.parent / "shapes" / "val"
    results = model.predict(images, conf=0.001, imgsz=64)
    assert len(results) == len(list(images.iterdir()))
    for result in results:
        assert result.arrays["embeddings"].shape == (len(result), 16)
        assert set(result.image_fields) == {"labels", "scores"}
        assert result.plot().shape == (*result.orig_shape, 3)
    again = Model(model.weights).predict(images, conf=0.001, imgsz=64)
    for mine, theirs in zip(results, again):
        np.testing.assert_allclose(mine.boxes.xyxy, theirs.boxes.xyxy, atol=1e-4)

    sequence = sorted((tiny_world.parent / "tracks" / "val").iterdir())[0]
    tracks = model.track(sequence)
    assert [number for number, _ in tracks] == list(range(1, len(tracks) + 1)) and len(tracks) == 6

    onnx = model.export(format="onnx", imgsz=64)
    assert onnx == run_dir / "weights" / "best.onnx" and onnx.is_file()


def test_train_with_fewer_tasks_than_the_experiment_sets_the_others_aside(
    outside: Path, tiny_world: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Model(tasks=[detect]) trained with the three-task demo experiment: jdc's and jde's options and
    weights step aside with a note, as `unified train --tasks detect` does."""
    import unified.api

    seen = {}

    def fake_run_training(cfg: Any, **_: Any) -> tuple[Path, dict]:
        seen["cfg"] = cfg
        return outside / "runs" / "exp", {}

    monkeypatch.setattr(unified.api, "run_training", fake_run_training)
    Model("yolor-tiny", tasks=["detect"]).train(data=tiny_world, config="synthetic", progress=False)
    cfg = seen["cfg"]
    assert cfg.tasks == ["detect"] and set(cfg.task_options) == {"detect"}
    assert set(cfg.balancer.weights) == {"detect"}
    out = capsys.readouterr().out
    assert "task_options of ['jde'] set aside" in out and "balancer.weights of ['jdc', 'jde']" in out
