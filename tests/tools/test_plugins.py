"""The checkpoint tools with a plugin task: --plugins imports it, nothing imports it on the checkpoint's say-so,
and the end-of-run table shows the plugin's own metrics."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.tools.helpers import TINY, load_tool, write_images
from unified.checkpoint import FORMAT, VERSION, save_atomic
from unified.data import load_dataset_yaml
from unified.engine.launch import metrics_json, print_metrics_table
from unified.model import build_model, model_meta
from unified.task import DatasetInfo

PLUGIN = "tests.plugins.counting_task"


def save_plugin_checkpoint(path: Path, info: DatasetInfo) -> Path:
    """A tiny detect + count model, recorded (as training does) with the plugin it needs."""
    torch.manual_seed(0)
    model = build_model(TINY, tasks=("detect", "count"), info=info, plugins=[PLUGIN])
    with torch.no_grad():
        for conv in model.heads["detect"].m:
            conv.bias.view(3, -1)[:, 4:] += 6.0  # an untrained model that still finds boxes
    meta = {**model_meta(model, {}, {}), "plugins": [PLUGIN]}
    return save_atomic(
        {"format": FORMAT, "version": VERSION, **meta, "model": model.state_dict(), "ema": None}, path
    )


@pytest.fixture(scope="module")
def world_info(tiny_world: Path) -> DatasetInfo:
    return load_dataset_yaml(tiny_world, "train")[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, world_info: DatasetInfo) -> Path:
    return save_plugin_checkpoint(tmp_path_factory.mktemp("weights") / "count.pt", world_info)


def _sequence(folder: Path) -> Path:
    (folder / "img1").mkdir(parents=True)
    still = torch.randint(0, 255, (64, 96, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    for number in (1, 2):
        Image.fromarray(still.numpy()).save(folder / "img1" / f"{number:06d}.png")
    return folder


def _calls(tmp_path: Path, checkpoint: Path, tiny_world: Path) -> dict[str, list[str]]:
    weights = ["--weights", str(checkpoint)]
    return {
        "detect": [*weights, "--source", str(write_images(tmp_path / "in")[0]), "--img", "64", "--out", str(tmp_path / "d")],
        "export": [*weights, "--img", "64", "--out", str(tmp_path / "m.onnx"), "--simplify-off", "--no-check"],
        "track": [*weights, "--source", str(_sequence(tmp_path / "SEQ")), "--img", "64", "--out", str(tmp_path / "t.txt")],
        "evaluate": [*weights, "--data", str(tiny_world), "--img", "96", "--workers", "0", "--out", str(tmp_path / "e")],
    }  # fmt: skip


def test_without_plugins_every_tool_refuses_in_one_line(tmp_path, checkpoint, tiny_world, capsys):
    for tool, argv in _calls(tmp_path, checkpoint, tiny_world).items():
        # The plugin is imported in this process already (the fixture built the model): refused all the same.
        assert load_tool(tool).main(argv) == 2, tool
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1, f"{tool}: {err}"
        assert PLUGIN in err and "cannot make us import code" in err, f"{tool}: {err}"


def test_no_tool_imports_a_plugin_on_the_checkpoint_s_say_so(
    tmp_path, tiny_world, world_info, monkeypatch, capsys
):
    marker = tmp_path / "imported"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "marker_plugin.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    monkeypatch.delitem(sys.modules, "marker_plugin", raising=False)
    path = tmp_path / "marked.pt"
    model = build_model(TINY, tasks=("detect",), info=world_info)
    meta = {**model_meta(model, {}, {}), "plugins": ["marker_plugin"]}
    save_atomic(
        {"format": FORMAT, "version": VERSION, **meta, "model": model.state_dict(), "ema": None}, path
    )
    for tool, argv in _calls(tmp_path, path, tiny_world).items():
        assert load_tool(tool).main(argv) == 2, tool
        assert "marker_plugin" in capsys.readouterr().err
        assert not marker.exists(), f"{tool} imported the checkpoint's plugin on its own"


def test_a_plugin_that_does_not_import_is_one_line_and_exit_2(tmp_path, checkpoint, tiny_world, capsys):
    for tool, argv in _calls(tmp_path, checkpoint, tiny_world).items():
        assert load_tool(tool).main([*argv, "--plugins", PLUGIN, "no_such_plugin_module"]) == 2, tool
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot import plugin module 'no_such_plugin_module'" in err, err


@pytest.mark.parametrize("tool", ["detect", "export", "track"])
def test_with_plugins_the_inference_tools_run(tool, tmp_path, checkpoint, tiny_world, capsys):
    argv = _calls(tmp_path, checkpoint, tiny_world)[tool]
    assert load_tool(tool).main([*argv, "--plugins", PLUGIN]) == 0, capsys.readouterr().err
    if tool == "export":
        assert "count_log_count" in capsys.readouterr().out  # the plugin's head is in the graph


def test_evaluate_with_plugins_prints_and_writes_the_plugin_metrics(tmp_path, checkpoint, tiny_world, capsys):
    argv = _calls(tmp_path, checkpoint, tiny_world)["evaluate"]
    assert load_tool("evaluate").main([*argv, "--plugins", PLUGIN]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert set(metrics) == {"detect", "count"}
    row = next(line for line in printed.splitlines() if line.startswith("count"))
    values = printed.splitlines()[printed.splitlines().index(row) + 1]
    assert row.split() == ["count", "MAE"] and float(values) == pytest.approx(
        metrics["count"]["MAE"], abs=1e-4
    )


def test_track_tells_settings_after_plugins_apart(tmp_path, capsys):
    argv = ["--weights", "w.pt", "--source", "s", "--out", "o.txt", "--plugins", PLUGIN, "high_thresh=0.4"]
    with pytest.raises(SystemExit) as info:
        load_tool("track").parse_args(argv)
    assert info.value.code == 2 and "put key=value before --plugins" in capsys.readouterr().err


def test_the_metrics_table_shows_every_task_s_own_metrics():
    metrics = {
        "detect": {"AP": 0.25, "AP50": 0.5, "APs": math.nan},
        "count": {"MAE": 1.5, "within_one": 0.75, "images": 6},
        "jdc": {"mAP": 0.125, "AP/car": 0.3},
    }
    lines = print_metrics_table(metrics).splitlines()
    assert lines[2].split() == ["count", "MAE", "within_one", "images"]
    assert lines[3].split() == ["1.5000", "0.7500", "6"]
    assert lines[1].split() == ["0.2500", "0.5000", "nan"]
    assert lines[4].split() == ["jdc", "mAP"]  # per-class entries stay in metrics.json
    assert "-" not in "".join(lines[1::2])


def test_the_metrics_table_wraps_a_long_row():
    metrics = {"count": {f"metric_{i}": float(i) for i in range(12)}}
    lines = print_metrics_table(metrics, width=60).splitlines()
    assert len(lines) > 2 and all(len(line) <= 60 for line in lines)
    names = [word for line in lines[0::2] for word in line.split() if word != "count"]
    assert names == [f"metric_{i}" for i in range(12)]


def test_metrics_json_writes_undefined_metrics_as_null():
    assert json.loads(metrics_json({"count": {"MAE": math.nan, "images": 3}})) == {
        "count": {"MAE": None, "images": 3}
    }
