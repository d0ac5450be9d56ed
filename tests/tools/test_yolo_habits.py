"""The habits of YOLO users (issue 13, item 5): their flag names, bare override keys, task subsets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from unified.commands import predict, train, val
from unified.config import ConfigError
from unified.engine.experiment import load_experiment


def test_cfg_is_another_name_for_model() -> None:
    assert train.parse_args(["--cfg", "yolor-p6"]).model == "yolor-p6"


@pytest.mark.parametrize("command", [train, predict, val])
def test_img_size_and_img_h_w(command) -> None:
    required = {predict: ["--weights", "w.pt", "--source", "x"], val: ["--weights", "w.pt", "--data", "d"]}
    base = required.get(command, [])
    assert command.parse_args([*base, "--img-size", "320"]).img == 320
    assert command.parse_args([*base, "--img", "320", "320"]).img == 320


def test_img_h_w_that_differ_is_one_clear_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--img", "320", "256"])
    assert exit_info.value.code == 2
    assert "--img 320 256: one square size is used" in capsys.readouterr().err


def test_img_followed_by_overrides_keeps_them() -> None:
    args = train.parse_args(["--img", "320", "train.epochs=3"])
    assert args.img == 320 and args.overrides == ["train.epochs=3"]


@pytest.mark.parametrize(("typed", "hint"), [("epochs=3", "train.epochs"), ("lr0=0.1", "optim.lr0")])
def test_bare_key_override_hints_at_its_section(typed, hint) -> None:
    with pytest.raises(ConfigError, match=f"Did you mean '{hint}'"):
        load_experiment("synthetic", [typed])


@pytest.mark.parametrize(("tasks", "left"), [("detect", ["jdc", "jde"]), ("detect,jde", ["jdc"])])
def test_tasks_subset_sets_options_of_the_others_aside(tasks, left, tmp_path, monkeypatch, capsys) -> None:
    # Stopped right after the experiment is checked: --sync-bn on a machine without CUDA.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert (
        train.main(["--config", "synthetic", "--tasks", tasks, "--sync-bn", "--project", str(tmp_path)]) == 2
    )
    captured = capsys.readouterr()
    assert "not enabled" not in captured.err and "--sync-bn" in captured.err
    assert f"balancer.weights of {left} set aside" in captured.out
    if "jde" in left:
        assert "task_options of ['jde'] set aside" in captured.out


def test_tasks_subset_passes_the_checks_of_the_run() -> None:
    from unified.engine.balancers import build_balancer
    from unified.engine.experiment import set_aside_tasks_left_out
    from unified.engine.launch import _checked_experiment

    cfg, notes = set_aside_tasks_left_out(load_experiment("synthetic", ['tasks=["detect","jde"]']))
    checked, tasks = _checked_experiment(cfg)
    assert tasks == ["detect", "jde"] and len(notes) == 1
    build_balancer(checked.balancer.name, tasks, checked.balancer.weights, checked.balancer.options)


HYP = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "yolor-official" / "data"


def write_hyp(path: Path, **extra: float) -> Path:
    """An official-layout hyper-parameter file (the keys of data/hyp.scratch.640.yaml)."""
    from unified.engine.experiment import HYP_KEYS

    values = {key: 0.5 for key in HYP_KEYS} | {"iou_t": 0.2, "lr0": 0.02, "box": 0.07, "mosaic": 0.0} | extra
    path.write_text(yaml.safe_dump(values))
    return path


def test_hyp_file_maps_every_official_key(tmp_path) -> None:
    from unified.engine.experiment import hyp_overrides

    hyp = write_hyp(tmp_path / "hyp.yaml")
    overrides, notes = hyp_overrides(hyp)
    cfg = load_experiment("synthetic", overrides)
    assert cfg.optim.lr0 == 0.02 and cfg.task_options["detect"]["box"] == 0.07 and cfg.augment.mosaic == 0.0
    assert cfg.task_options["jde"] == load_experiment("synthetic").task_options["jde"]  # the experiment's own kept
    assert notes == [f"note: --hyp {hyp}: iou_t is not used by the YOLOR loss; set aside"]


@pytest.mark.skipif(not HYP.is_dir(), reason="needs the official reference files")
def test_official_hyp_files_load() -> None:
    from unified.engine.experiment import hyp_overrides

    for path in sorted(HYP.glob("hyp*.yaml")):
        load_experiment("synthetic", hyp_overrides(path)[0])


def test_hyp_unknown_key_named(tmp_path, capsys) -> None:
    hyp = write_hyp(tmp_path / "hyp.yaml", lr_typo=0.1)
    assert train.main(["--config", "synthetic", "--hyp", str(hyp), "--project", str(tmp_path / "runs")]) == 2
    assert f"--hyp {hyp}: unknown key 'lr_typo'" in capsys.readouterr().err
