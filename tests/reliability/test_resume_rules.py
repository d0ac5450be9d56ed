"""``--resume`` continues the run its checkpoint holds: rebuilt from the stored model config and dataset
info whatever the files on disk say now, refusing a dataset that changed, and refusing in one line a
checkpoint that does not fit; ``--weights`` of another architecture are refused unless asked for."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import TINY_MODEL
from tests.reliability.helpers import train_overrides
from tests.tools.helpers import load_tool, save_tiny_checkpoint
from unified.checkpoint import load_safe, save_atomic
from unified.engine.experiment import load_experiment
from unified.engine.hooks import Hook
from unified.engine.launch import run_training


class StopAfterFirstEpoch(Hook):
    def after_epoch(self, trainer) -> None:
        trainer.state.stop = True


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, small_world) -> Path:
    """A run of 2 epochs stopped after the first, trained from its own copies of the model YAML and data."""
    root = tmp_path_factory.mktemp("stopped")
    shutil.copytree(small_world.parent, root / "world")
    (root / "model.yaml").write_text(yaml.safe_dump(TINY_MODEL))
    overrides = train_overrides(
        root / "model.yaml",
        root / "world" / "dataset.yaml",
        root,
        "run",
        **{"train.epochs": 2, "plugins": "[]"},
    )
    run_dir, _ = run_training(
        load_experiment(None, overrides), progress=False, extra_hooks=[StopAfterFirstEpoch()]
    )
    assert load_safe(run_dir / "weights" / "last.pt")["epoch"] == 1
    return root


@pytest.fixture
def run(tmp_path, stopped_run) -> Path:
    """A copy of the stopped run, its model YAML and data, the checkpoint pointing at the copies."""
    root = tmp_path / "copy"
    shutil.copytree(stopped_run, root)
    last = root / "run" / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["experiment"].update(model=str(root / "model.yaml"), data=str(root / "world" / "dataset.yaml"))
    save_atomic(ckpt, last)
    return root / "run"


def resume(run: Path, capsys) -> tuple[int, str, str]:
    code = load_tool("train_multitask").main(["--no-progress", "--resume", str(run)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def edit_yaml(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def set_activation(model: dict) -> None:
    model["activation"] = "relu"


def widen(model: dict) -> None:
    model["backbone"][0][3][0] = 24


@pytest.mark.parametrize("edit", [set_activation, widen], ids=["activation", "width"])
def test_resume_rebuilds_the_stored_architecture_whatever_the_model_yaml_says_now(run, capsys, edit):
    """An edited activation resumed with exit 0 into another network; a changed width was a size-mismatch
    traceback."""
    stored = load_safe(run / "weights" / "last.pt")["model_config"]
    edit_yaml(run.parent / "model.yaml", edit)
    code, out, err = resume(run, capsys)
    assert code == 0, err
    assert "note: " in out and "continues with the architecture stored in its checkpoint" in out, out
    last = load_safe(run / "weights" / "last.pt")
    assert last["epoch"] == 2 and last["model_config"] == stored


def reorder_classes(data: dict) -> None:
    data["names"] = data["names"][::-1]


def reorder_scene_labels(data: dict) -> None:
    data["scene_labels"] = data["scene_labels"][::-1]


def drop_tracks(data: dict) -> None:
    data["parts"] = [part for part in data["parts"] if part["name"] != "tracks"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (reorder_classes, "classes: position 0 was 'ellipse', now 'cross'"),
        (reorder_scene_labels, "image labels: position 5 was 'striped', now 'noisy'"),
        (drop_tracks, "identities: "),
    ],
    ids=["classes", "image-labels", "identities"],
)
def test_resume_refuses_a_dataset_that_is_not_the_one_trained_on(run, capsys, edit, expected):
    """Reordered class names used to resume with exit 0, teaching every class the wrong name."""
    edit_yaml(run.parent / "world" / "dataset.yaml", edit)
    before = (run / "weights" / "last.pt").read_bytes()
    code, _, err = resume(run, capsys)
    assert code == 2 and "is not the dataset" in err and expected in err and "--weights" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert (run / "weights" / "last.pt").read_bytes() == before


def bad_shape(ckpt: dict) -> None:
    name = next(k for k, v in ckpt["model"].items() if v.ndim == 4)
    ckpt["model"][name] = torch.zeros(3, 3, 1, 1)


def no_optimizer(ckpt: dict) -> None:
    del ckpt["optimizer"]


def no_model_config(ckpt: dict) -> None:
    del ckpt["model_config"]


def version_x(ckpt: dict) -> None:
    ckpt["version"] = "x"


def no_model(ckpt: dict) -> None:
    del ckpt["model"]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (bad_shape, "cannot be resumed: Error(s) in loading state_dict"),
        (no_optimizer, "cannot be resumed"),
        (no_model_config, "'model_config'"),
        (version_x, "'version'"),
    ],
    ids=["shape", "no-optimizer", "no-model-config", "version-x"],
)
def test_a_checkpoint_that_cannot_be_resumed_is_one_line_and_exit_2(run, capsys, damage, expected):
    last = run / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    damage(ckpt)
    save_atomic(ckpt, last)
    code, _, err = resume(run, capsys)
    assert code == 2 and err.startswith("error: ") and expected in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.fixture(scope="module")
def other_architecture(tmp_path_factory) -> Path:
    """A checkpoint of the tools' tiny model: half the channels of the reliability tests' model."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("other") / "other.pt", tasks=("detect",))


def test_weights_of_another_architecture_are_refused_saying_how_many_fit(
    tmp_path, capsys, small_world, model_yaml, other_architecture
):
    """They used to "re-initialise" every tensor and train from scratch with exit 0."""
    args = train_overrides(
        model_yaml,
        small_world,
        tmp_path,
        "run",
        **{"train.epochs": 1, "plugins": "[]", "train.weights": other_architecture},
    )
    code = load_tool("train_multitask").main(["--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2 and "key 'train.weights': only " in err and " weight tensors fit " in err, err
    assert "train.partial_weights=true" in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_partial_weights_load_what_fits_when_asked(
    tmp_path, capsys, small_world, model_yaml, other_architecture
):
    args = train_overrides(
        model_yaml,
        small_world,
        tmp_path,
        "run",
        **{
            "train.epochs": 1,
            "plugins": "[]",
            "train.weights": other_architecture,
            "train.partial_weights": "true",
        },
    )
    code = load_tool("train_multitask").main(["--no-progress", *args])
    out = capsys.readouterr().out
    assert code == 0 and f"loaded {other_architecture}: " in out and "re-initialised" in out, out


@pytest.mark.parametrize(
    ("damage", "expected"), [(version_x, "'version'"), (no_model, "'model'")], ids=["version-x", "no-model"]
)
def test_broken_weights_are_one_line_and_exit_2(tmp_path, capsys, small_world, model_yaml, damage, expected):
    path = save_tiny_checkpoint(tmp_path / "w.pt", tasks=("detect",))
    ckpt = torch.load(path, weights_only=True)
    damage(ckpt)
    save_atomic(ckpt, path)
    args = train_overrides(
        model_yaml,
        small_world,
        tmp_path,
        "run",
        **{"train.epochs": 1, "plugins": "[]", "train.weights": path},
    )
    code = load_tool("train_multitask").main(["--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and expected in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
