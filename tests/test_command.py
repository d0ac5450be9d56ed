"""The installed ``unified`` command: its subcommands are the tools, and it needs no checkout."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.tools.helpers import load_tool
from unified.commands import COMMANDS, main

#: The console script ``pip install`` puts beside the interpreter.
SCRIPT = Path(sys.executable).parent / "unified"


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*args], cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )


def test_the_console_script_is_installed_and_declared() -> None:
    [entry] = importlib.metadata.entry_points(group="console_scripts", name="unified")
    assert entry.value == "unified.commands:main"
    assert SCRIPT.is_file() and os.access(SCRIPT, os.X_OK), f"{SCRIPT} missing: reinstall (make venv)"


def test_every_tool_is_a_thin_wrapper_of_its_subcommand() -> None:
    assert sorted(COMMANDS) == sorted(
        ["train", "val", "predict", "track", "export", "convert", "info", "benchmark", "make-synthetic"]
        + ["ablate"]
    )
    for name, command in COMMANDS.items():
        library = importlib.import_module(f"unified.commands.{command.module}")
        assert load_tool(command.tool).main is library.main, name
        assert len((REPO / "tools" / f"{command.tool}.py").read_text().splitlines()) < 20, command.tool


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_subcommand_answers_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: unified {name} ")


def test_the_overview_and_mistakes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    overview = capsys.readouterr().out
    assert all(f"\n  {name} " in overview for name in COMMANDS)
    assert main([]) == 2 and "usage: unified COMMAND" in capsys.readouterr().err
    assert main(["trian"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: unknown command 'trian' (did you mean 'train'?); commands: " + ", ".join(COMMANDS)
    ]


def test_the_script_runs_a_subcommand_from_outside_the_checkout(tmp_path: Path) -> None:
    """``--model yolor-tiny`` resolves to the packaged YAML from a folder that has no configs/."""
    done = _run(str(SCRIPT), "info", "--model", "yolor-tiny", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["model"] == "yolor-tiny" and info["params"] > 1_000_000
    missing = _run(sys.executable, "-m", "unified", "info", "--model", "yolor-p7", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "model 'yolor-p7': no such file and no packaged model of that name" in missing.stderr
    assert "packaged: yolor-csp" in missing.stderr


def test_a_positional_or_flag_model_for_info_but_not_both(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["info", "yolor-tiny", "--model", "yolor-tiny"])
    assert done.value.code == 2 and "give the model once" in capsys.readouterr().err


def _copy_sources(target: Path) -> Path:
    """The files a wheel is built from, copied: building in the checkout would leave build/ in it."""
    target.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, target / name)
    for folder in ("unified", "tasks", "configs"):
        shutil.copytree(REPO / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.mark.slow
def test_a_built_wheel_ships_the_configs_and_the_command(tmp_path: Path) -> None:
    """``pip install .``: the wheel holds configs/ as unified.configs, and names resolve from it alone."""
    source = _copy_sources(tmp_path / "src")
    pip = [sys.executable, "-m", "pip", "-q"]
    built = _run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", "dist", "./src", cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("unified-*.whl")
    site = tmp_path / "site"
    installed = _run(*pip, "install", "--no-deps", "--target", str(site), str(wheel), cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-2000:]
    shutil.rmtree(source)  # nothing may come from the sources any more
    env = {"PYTHONPATH": str(site)}  # ahead of the editable install's finder
    probe = (
        "import unified, unified.tasks.jde; from unified.packaged_configs import resolve_config, packaged_names; "
        "print(unified.__file__); print(unified.tasks.jde.__file__); print(resolve_config('yolor-p6', 'model')); "
        "print(resolve_config('synthetic', 'experiment')); print(','.join(packaged_names('model')))"
    )
    done = _run(sys.executable, "-c", probe, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    package, task, model, experiment, names = done.stdout.splitlines()
    assert (
        Path(package) == site / "unified" / "__init__.py"
        and Path(task) == site / "unified" / "tasks" / "jde.py"
    )
    assert Path(model) == site / "unified" / "configs" / "models" / "yolor-p6.yaml"
    assert Path(experiment) == site / "unified" / "configs" / "experiments" / "synthetic.yaml"
    assert names.split(",") == sorted(p.stem for p in (REPO / "configs" / "models").glob("*.yaml"))
    info = _run(
        str(site / "bin" / "unified"), "info", "--model", "yolor-tiny", "--json", cwd=tmp_path, env=env
    )
    assert info.returncode == 0 and json.loads(info.stdout)["params"] > 1_000_000, info.stderr[-2000:]
