"""Config checks of the second reliability round: one finite-number rule for every float key, scientific
notation read as a number, the options that drove a run into NaN or a ZeroDivisionError refused, the
override that was typed blamed, and no run folder left by a config error."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from tests.reliability.helpers import train_overrides
from tests.tools.helpers import load_tool
from unified.config import ConfigError, dump_yaml, load_config
from unified.engine.experiment import ExperimentConfig, load_experiment


def float_keys(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the experiment schema whose type is ``float``."""
    keys = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if tp is float:
            keys.append(prefix + f.name)
        elif dataclasses.is_dataclass(tp):
            keys += float_keys(tp, f"{prefix}{f.name}.")
    return keys


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    return path


def nested(dotted: str, value: str) -> str:
    """``a.b: value`` as block YAML; the value's line is the last."""
    parts = dotted.split(".")
    lines = [f"{'  ' * i}{part}:" for i, part in enumerate(parts[:-1])]
    return "\n".join([*lines, f"{'  ' * (len(parts) - 1)}{parts[-1]}: {value}"]) + "\n"


def test_the_schema_has_float_keys_to_check():
    assert {"optim.lr0", "optim.ema_ramp", "optim.momentum", "train.time_budget_min"} <= set(float_keys())


@pytest.mark.parametrize("text", [".inf", "-.inf", "1.0e+999"])
def test_a_non_finite_number_is_refused_at_every_float_key_with_file_line_and_key(tmp_path, text):
    """``optim.lr0: .inf`` (or ``1.0e+999``, which overflows to it) used to train into NaN weights."""
    for key in float_keys():
        path = write(tmp_path, nested(key, text))
        with pytest.raises(ConfigError) as info:
            load_experiment(path)
        line = key.count(".") + 1
        assert str(info.value).startswith(f"{path}, line {line}: key '{key}': expected a finite number"), (
            key,
            str(info.value),
        )


def test_a_non_finite_override_names_the_override():
    with pytest.raises(
        ConfigError, match=r"'optim.lr0': expected a finite number.*override 'optim.lr0=.inf'"
    ):
        load_experiment(None, ["optim.lr0=.inf"])


def test_scientific_notation_is_a_number_in_files_and_overrides(tmp_path):
    path = write(tmp_path, "optim:\n  lr0: 1e-3\n  weight_decay: 5E-4\n  momentum: 9.0e-1\n")
    cfg = load_experiment(path, ["train.time_budget_min=1.5e1", "optim.lrf=2e-1"])
    assert (cfg.optim.lr0, cfg.optim.weight_decay, cfg.optim.momentum) == (1e-3, 5e-4, 0.9)
    assert (cfg.train.time_budget_min, cfg.optim.lrf) == (15.0, 0.2)
    assert load_experiment(None, ["optim.lr0=1e-3"]).optim.lr0 == 1e-3


def test_a_quoted_scientific_string_stays_text_and_dumps_back_quoted(tmp_path):
    cfg = load_experiment(write(tmp_path, "name: '1e3'\n"))
    assert cfg.name == "1e3"
    again = load_config(ExperimentConfig, write(tmp_path, dump_yaml(cfg)))
    assert again == cfg


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "optim.ema_ramp=0",
            "key 'optim.ema_ramp': must be > 0",
        ),  # ZeroDivisionError in the first EMA update
        ("optim.ema_ramp=-1", "key 'optim.ema_ramp': must be > 0"),  # the average grew to infinity
        ("optim.weight_decay=-1", "key 'optim.weight_decay': must be >= 0"),
        ("optim.momentum=.inf", "key 'optim.momentum': expected a finite number"),
        ("optim.momentum=1.5", "key 'optim.momentum': must be in (0, 1)"),
        ("train.time_budget_min=-1", "key 'train.time_budget_min': must be >= 0"),
        ("train.device=banana", "key 'train.device': must be cpu, a GPU index"),
        ("name=../escaped", "key 'name': must name a folder inside `project`"),
        ("name=/tmp/elsewhere", "key 'name': must name a folder inside `project`"),
    ],
)
def test_values_that_used_to_be_accepted_are_refused_naming_key_and_override(override, expected):
    with pytest.raises(ConfigError) as info:
        load_experiment(None, [override])
    assert expected in str(info.value) and f"override {override!r}" in str(info.value), str(info.value)


def test_devices_and_names_that_work_are_kept():
    cfg = load_experiment(None, ['train.device="0,1"', "name=ablation/run1"])
    assert (cfg.train.device, cfg.name) == ("0,1", "ablation/run1")
    assert load_experiment(None, ["train.device=cuda:1"]).train.device == "cuda:1"


def test_a_wrong_value_is_blamed_on_the_override_that_set_it():
    """The flags come first (``--device cpu`` is ``train.device=cpu``): the message used to blame that one
    for the user's ``train.device=0``."""
    with pytest.raises(ConfigError) as info:
        load_experiment(None, ["train.device=cpu", "train.epochs=2", "train.device=0"])
    message = str(info.value)
    assert "override 'train.device=0'" in message and "train.device=cpu" not in message, message
    assert "expected a string, got 0" in message and "\"train.device='0'\"" in message, message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.device=banana", "key 'train.device'"),  # was a ValueError traceback
        ("optim.ema_ramp=0", "key 'optim.ema_ramp'"),  # was a ZeroDivisionError and an empty run folder
        ("train.precision=fp16", "key 'train.precision': train.precision=fp16 needs CUDA"),  # a traceback
    ],
)
def test_config_errors_exit_2_in_one_line_and_leave_no_run_folder(
    tmp_path, capsys, small_world, model_yaml, override, expected
):
    project = tmp_path / "runs"
    args = train_overrides(model_yaml, small_world, project, "run", **{"train.epochs": 1, "plugins": "[]"})
    code = load_tool("train_multitask").main(["--no-progress", *args, override])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and expected in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not project.exists() or not any(project.iterdir()), list(project.rglob("*"))
