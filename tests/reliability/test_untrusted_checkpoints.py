"""Untrusted checkpoints: no entry point unpickles arbitrary objects. A crafted checkpoint that would run a
command is refused everywhere (library, training, inference, export, evaluation, conversion) and the
command never runs; official checkpoints go only through the restricted unpickler."""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tests.reliability.helpers import train_overrides
from tests.tools.helpers import load_tool, save_tiny_checkpoint, write_images
from unified.checkpoint import FORMAT, VERSION, CheckpointError, load_safe, require_format, save_atomic
from unified.interop import convert_official, read_official_checkpoint
from unified.interop.unpickler import UnsafeCheckpointError


class RunsCommand:
    """Unpickling this object runs a shell command (``os.system``) that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class RunsPython:
    """Unpickling this object runs Python code through ``subprocess.call``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


def craft(path: Path, marker: Path, how: str) -> Path:
    """A file that runs a command when a careless loader reads it."""
    evil = RunsCommand(marker) if how != "subprocess" else RunsPython(marker)
    ours = {
        "format": FORMAT,
        "version": VERSION,
        "epoch": 1,
        "model": {"w": torch.zeros(2)},
        "experiment": evil,
    }
    if how == "raw-pickle":
        path.write_bytes(pickle.dumps(ours, protocol=2))
    elif how == "legacy-torch":
        torch.save(ours, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(ours, path)  # a zip archive whose data.pkl names os.system / subprocess.call
    return path


HOWS = ["zip", "raw-pickle", "legacy-torch", "subprocess"]


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "command-ran"
    yield path
    assert not path.exists(), "the crafted checkpoint ran its command"


def test_the_crafted_files_do_run_a_command_when_unpickled_naively(tmp_path):
    """Proof that the fixtures are dangerous: a plain torch.load(weights_only=False) runs the command."""
    for how in HOWS:
        marker = tmp_path / f"ran-{how}"
        path = craft(tmp_path / f"{how}.pt", marker, how)
        if how == "raw-pickle":
            pickle.loads(path.read_bytes())  # noqa: S301 - deliberately unsafe, to prove the danger
        else:
            torch.load(path, weights_only=False)  # deliberately unsafe, to prove the danger
        assert marker.exists(), how


@pytest.mark.parametrize("how", HOWS)
def test_library_loaders_refuse_crafted_checkpoints(tmp_path, marker, how):
    path = craft(tmp_path / "evil.pt", marker, how)
    with pytest.raises(CheckpointError, match="refused"):
        load_safe(path)
    import unified

    with pytest.raises(CheckpointError, match="refused"):
        unified.load(path)
    from unified.engine.launch import experiment_from_checkpoint

    with pytest.raises(CheckpointError, match="refused"):
        experiment_from_checkpoint(path)


@pytest.mark.parametrize("how", ["zip", "legacy-torch", "subprocess"])
def test_the_official_reader_refuses_code_and_names_the_global(tmp_path, marker, how):
    path = craft(tmp_path / "official.pt", marker, how)
    with pytest.raises(UnsafeCheckpointError, match="system|call|legacy"):
        read_official_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        convert_official(path)


def test_every_command_line_entry_point_refuses(tmp_path, capsys, marker, small_world, model_yaml):
    evil = craft(tmp_path / "evil.pt", marker, "zip")
    images = write_images(tmp_path / "images")[0].parent
    calls = {
        "train_multitask --resume": ("train_multitask", ["--resume", str(evil)]),
        "train_multitask --weights": (
            "train_multitask",
            ["--no-progress", *train_overrides(model_yaml, small_world, tmp_path / "runs", "r")]
            + [f"train.weights={evil}", "train.epochs=1"],
        ),
        "detect": ("detect", ["--weights", str(evil), "--source", str(images), "--out", str(tmp_path / "d")]),
        "export": ("export", ["--weights", str(evil), "--out", str(tmp_path / "m.onnx")]),
        "evaluate": ("evaluate", ["--weights", str(evil), "--data", str(small_world)]),
        "convert_official": ("convert_official", ["--weights", str(evil), "--out", str(tmp_path / "c.pt")]),
    }
    for name, (tool, argv) in calls.items():
        code = load_tool(tool).main(argv)
        err = capsys.readouterr().err
        assert code == 2, f"{name}: exit {code}\n{err}"
        assert "error:" in err and ("refused" in err or "not allowed" in err or "system" in err), (
            f"{name}: {err}"
        )
        assert "Traceback" not in err, name
        assert not marker.exists(), f"{name} ran the command"


def test_our_own_checkpoints_still_load(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "ok.pt")
    require_format(load_safe(path), path)
    import unified

    assert unified.load(path).tasks


def test_no_code_path_unpickles_without_the_guards():
    """Every torch.load in the package passes weights_only=True; pickle is used only by the restricted
    official reader; nothing loads TorchScript or torch.package archives (which can run code)."""
    offenders = []
    for path in [*REPO.glob("unified/**/*.py"), *REPO.glob("tasks/**/*.py"), *REPO.glob("tools/*.py")]:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if name.endswith("torch.load"):
                safe = any(k.arg == "weights_only" and ast.unparse(k.value) == "True" for k in node.keywords)
                if not safe:
                    offenders.append(f"{where}: {name} without weights_only=True")
            elif name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "torch.jit.load", "dill.load"):
                offenders.append(f"{where}: {name}")
            elif name.endswith(
                ("PackageImporter", "numpy.load", "np.load")
            ) and "allow_pickle" not in ast.unparse(node):
                offenders.append(f"{where}: {name}")
    assert not offenders, offenders


def test_a_checkpoint_cannot_make_unified_load_import_a_module(tmp_path, monkeypatch):
    """A checkpoint lists the plugin modules that registered its tasks; loading it must not import a module
    the caller did not ask for (importing runs the module's code)."""
    marker = tmp_path / "module-ran"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "innocent_looking_plugin.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    path = save_tiny_checkpoint(tmp_path / "ok.pt")
    ckpt = load_safe(path)
    ckpt["plugins"] = ["innocent_looking_plugin"]
    save_atomic(ckpt, path)
    import unified

    with pytest.raises((CheckpointError, ImportError)):
        unified.load(path)
    assert not marker.exists(), "loading the checkpoint imported (ran) a module it named"
