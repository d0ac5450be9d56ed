"""Run folders: two runs started together never share one, a run never writes outside its project, never
appends to a finished run, and ``--resume`` writes only into a run folder."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from tests.reliability.helpers import train_overrides
from tests.tools.helpers import load_tool
from unified.engine.experiment import load_experiment
from unified.engine.launch import increment_path, run_training


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, small_world, model_yaml) -> Path:
    """A finished one-epoch run."""
    project = tmp_path_factory.mktemp("finished")
    overrides = train_overrides(
        model_yaml, small_world, project, "run", **{"train.epochs": 1, "plugins": "[]"}
    )
    run_dir, _ = run_training(load_experiment(None, overrides), progress=False)
    return run_dir


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_each_claim_takes_a_new_folder(tmp_path):
    """The free name used to be found first and created later by the caller: two calls in between got
    the same ``exp``."""
    first, second = increment_path(tmp_path / "exp", False), increment_path(tmp_path / "exp", False)
    assert (first.name, second.name) == ("exp", "exp2") and first.is_dir() and second.is_dir()


def test_runs_started_together_never_share_a_folder(tmp_path):
    start = threading.Barrier(8)
    claimed: list[Path] = []

    def claim() -> None:
        start.wait()
        claimed.append(increment_path(tmp_path / "exp", False))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(claimed)) == 8 and all(p.is_dir() for p in claimed), claimed


def test_a_name_that_leaves_the_project_is_refused(tmp_path, capsys, small_world, model_yaml):
    project = tmp_path / "runs"
    args = train_overrides(
        model_yaml, small_world, project, "../escaped", **{"train.epochs": 1, "plugins": "[]"}
    )
    code = load_tool("train_multitask").main(["--no-progress", *args])
    err = capsys.readouterr().err
    assert (
        code == 2 and "key 'name': must name a folder inside `project`" in err and "Traceback" not in err
    ), err
    assert not (tmp_path / "escaped").exists()


def test_exist_ok_does_not_append_to_a_finished_run(tmp_path, capsys, finished_run, small_world, model_yaml):
    project = tmp_path / "runs"
    shutil.copytree(finished_run, project / "run")
    before = snapshot(project / "run")
    args = train_overrides(model_yaml, small_world, project, "run", **{"train.epochs": 1, "plugins": "[]"})
    code = load_tool("train_multitask").main(["--no-progress", *args, "exist_ok=true"])
    err = capsys.readouterr().err
    assert code == 2 and "key 'exist_ok'" in err and "holds a run already" in err and "--resume" in err, err
    assert snapshot(project / "run") == before


def test_exist_ok_still_reuses_a_folder_without_a_run(tmp_path, small_world, model_yaml):
    project = tmp_path / "runs"
    (project / "run").mkdir(parents=True)
    (project / "run" / "notes.txt").write_text("mine")
    overrides = train_overrides(
        model_yaml, small_world, project, "run", **{"train.epochs": 1, "plugins": "[]"}
    )
    run_dir, _ = run_training(load_experiment(None, [*overrides, "exist_ok=true"]), progress=False)
    assert run_dir == project / "run" and (run_dir / "weights" / "last.pt").is_file()
    assert (run_dir / "notes.txt").read_text() == "mine"


def test_resume_from_a_loose_checkpoint_is_refused_and_its_folder_untouched(tmp_path, capsys, finished_run):
    """``--resume ck.pt`` used to take the file's grandparent as the run folder: the user's own folder got
    its config.yaml overwritten and weights/, results.csv and event files beside it."""
    own = tmp_path / "mine"
    (own / "models").mkdir(parents=True)
    shutil.copy(finished_run / "weights" / "last.pt", own / "models" / "ck.pt")
    (own / "config.yaml").write_text("my own notes\n")
    before = snapshot(own)
    code = load_tool("train_multitask").main(["--no-progress", "--resume", str(own / "models" / "ck.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "not a checkpoint of a run folder" in err and "--weights" in err, err
    assert "Traceback" not in err and snapshot(own) == before


def test_resume_from_any_checkpoint_inside_a_run_folder_works(tmp_path, capsys, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    code = load_tool("train_multitask").main(["--no-progress", "--resume", str(run / "weights" / "best.pt")])
    out = capsys.readouterr().out
    assert code == 0 and f"{run} has finished" in out, out  # the run it holds has done all its epochs
