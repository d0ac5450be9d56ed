"""A run records absolute paths, and packaged configs resolve by name, from any working directory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO
from unified.config import ConfigError
from unified.engine.experiment import load_experiment, with_absolute_paths
from unified.packaged_configs import configs_root, packaged_names, resolve_config


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_packaged_configs_are_the_checkouts_configs_folder() -> None:
    assert configs_root() == REPO / "configs"
    assert packaged_names("model") == sorted(p.stem for p in (REPO / "configs" / "models").glob("*.yaml"))
    assert {"synthetic", "synthetic-all"} <= set(packaged_names("experiment"))


def test_a_checkout_finds_its_configs_without_the_editable_finder() -> None:
    """As for unified.tasks: a second checkout or a moved venv must not read another tree's configs."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
        sys.path.insert(0, {str(REPO)!r})
        from unified.packaged_configs import resolve_config
        print(resolve_config("yolor-tiny", "model"))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == str(REPO / "configs" / "models" / "yolor-tiny.yaml")


def test_names_resolve_from_outside_and_an_existing_file_wins(outside: Path) -> None:
    packaged = REPO / "configs" / "models" / "yolor-p6.yaml"
    assert resolve_config("yolor-p6", "model") == resolve_config("yolor-p6.yaml", "model") == packaged
    (outside / "yolor-p6.yaml").write_text("nc: 1\n")
    assert resolve_config("yolor-p6.yaml", "model") == Path("yolor-p6.yaml")  # the user's own file
    with pytest.raises(ConfigError, match=r"model 'configs/models/yolor-p6.yaml': no such file"):
        resolve_config("configs/models/yolor-p6.yaml", "model")  # a path is never taken for a name
    with pytest.raises(ConfigError, match="experiment 'synthtic': .*did you mean 'synthetic'"):
        load_experiment("synthtic")


def test_a_packaged_experiment_loads_by_name_with_its_model_resolved(outside: Path) -> None:
    cfg = with_absolute_paths(load_experiment("synthetic", ["train.epochs=1"]))
    assert cfg.model == str(REPO / "configs" / "models" / "yolor-tiny.yaml") and cfg.train.epochs == 1
    assert cfg.synthetic is not None and cfg.synthetic.out == str(outside / "data" / "synthetic")


def test_relative_paths_become_absolute_and_missing_ones_stay_as_typed(outside: Path) -> None:
    (outside / "data.yaml").write_text("names: [a]\n")
    (outside / "w.pt").write_bytes(b"")
    cfg = load_experiment(None, ["model=yolor-tiny", "data=data.yaml", "train.weights=w.pt"])
    done = with_absolute_paths(cfg)
    assert done.data == str(outside / "data.yaml") and done.train.weights == str(outside / "w.pt")
    assert done.model == str(REPO / "configs" / "models" / "yolor-tiny.yaml")
    typo = with_absolute_paths(load_experiment(None, ["model=yolor-tnyi", "data=dta.yaml"]))
    assert (typo.model, typo.data) == ("yolor-tnyi", "dta.yaml")  # the error that follows names them
    assert with_absolute_paths(load_experiment(None, ["model={nc: 1}"])).model == {"nc": 1}
