"""The built-in task plugins live in the repository's ``tasks/`` folder and import as ``unified.tasks``; the
old top-level spelling ``tasks.detect`` in a ``plugins:`` list or a checkpoint still works."""

from __future__ import annotations

import configparser
import subprocess
import sys
import textwrap

import pytest
import setuptools
import torch

import unified.tasks
from tests.conftest import REPO
from unified.checkpoint import FORMAT, VERSION, save_atomic
from unified.model import build_model, load, model_meta
from unified.registry import import_plugins, plugin_module
from unified.task import TASKS

BUILT_IN = ("detect", "jdc", "jde", "pose")
#: Built-in plugin modules: the tasks' and those that so far register only kinds of label and formats.
BUILT_IN_MODULES = (*BUILT_IN, "segment")


def test_unified_tasks_is_the_tasks_folder_of_the_same_checkout():
    assert [str(p) for p in unified.tasks.__path__] == [str(REPO / "tasks")]
    assert {TASKS.origin(name) for name in BUILT_IN} == {f"unified.tasks.{name}" for name in BUILT_IN}
    assert "tasks" not in sys.modules and "tasks.detect" not in sys.modules


def test_a_checkout_imports_unified_tasks_without_the_editable_finder():
    """What a second checkout, a moved venv, or the tools run from a plain checkout see: the editable
    finder (which names the checkout it was installed from) is gone, only the repository is on sys.path."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
        sys.path.insert(0, {str(REPO)!r})
        import unified.tasks.jde
        print(unified.tasks.jde.__file__)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == str(REPO / "tasks" / "jde.py")


def test_setup_cfg_installs_tasks_as_unified_tasks_and_declares_its_modules():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["options"]["package_dir"].split() == "unified.tasks = tasks unified.configs = configs".split()
    assert cfg["options.packages.find"]["include"].split() == ["unified", "unified.*"]
    declared = dict(
        line.replace(" ", "").split("=")
        for line in cfg["options.entry_points"]["unified.tasks"].split("\n")
        if line
    )
    assert declared == {name: f"unified.tasks.{name}" for name in BUILT_IN_MODULES}
    assert TASKS._default_modules == tuple(declared.values())


def test_find_discovers_every_folder_of_modules_a_wheel_needs():
    """``packages = find:`` skips a folder without ``__init__.py``: its modules would be missing from a wheel
    while a checkout still imports them (as a namespace package)."""
    found = set(setuptools.find_packages(where=str(REPO), include=["unified", "unified.*"]))
    folders = {
        ".".join(path.parent.relative_to(REPO).parts)
        for path in (REPO / "unified").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert folders <= found, sorted(folders - found)
    assert "unified.tasks" in found


def test_the_old_path_of_a_built_in_imports_the_new_module_with_a_warning(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # the repository's tasks/ is importable as a top-level `tasks`
    assert plugin_module("tasks.jde") == "unified.tasks.jde"
    assert plugin_module("tasks.other") == "tasks.other" and plugin_module("mypkg.tasks") == "mypkg.tasks"
    with pytest.warns(FutureWarning, match="'tasks.detect' is now 'unified.tasks.detect'"):
        import_plugins(["tasks.detect"])
    assert "tasks.detect" not in sys.modules  # not imported a second time under its old name


def test_a_users_own_tasks_package_keeps_its_modules(tmp_path, monkeypatch):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "__init__.py").write_text("")
    (tmp_path / "tasks" / "detect.py").write_text("MINE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("tasks", "tasks.detect"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        assert plugin_module("tasks.detect") == "tasks.detect"
        import_plugins(["tasks.detect"])
        assert sys.modules["tasks.detect"].MINE
    finally:
        for name in ("tasks", "tasks.detect"):
            sys.modules.pop(name, None)


def test_a_checkpoint_listing_an_old_built_in_path_loads_without_plugins(tmp_path, tiny_model_cfg):
    model = build_model(tiny_model_cfg, tasks=("detect",))
    meta = {**model_meta(model, {}, {}), "plugins": ["tasks.detect"]}
    path = save_atomic(
        {"format": FORMAT, "version": VERSION, **meta, "model": model.state_dict(), "ema": None},
        tmp_path / "old.pt",
    )
    loaded = load(path)
    assert loaded.task_names == ["detect"]
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
