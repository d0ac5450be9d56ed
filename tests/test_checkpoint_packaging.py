"""Packaging: checkpoints created with the user's umask and stripped for deployment; dependencies used."""

from __future__ import annotations

import configparser
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from tests.tools.helpers import INFO, TINY
from unified.checkpoint import FORMAT, VERSION, CheckpointError, load_safe, save_atomic, strip_checkpoint
from unified.commands import export as export_command
from unified.model import build_model, load, model_meta

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test and restore it after."""
    before = os.umask(0o022)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(before)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_save_atomic_applies_the_umask(tmp_path: Path, umask, mask: int, mode: int) -> None:
    umask(mask)
    path = save_atomic({"x": torch.zeros(2)}, tmp_path / "w.pt")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    save_atomic({"x": torch.ones(2)}, path)  # replacing a file gives the new one the same mode
    assert stat.S_IMODE(path.stat().st_mode) == mode


def _training_checkpoint(path: Path) -> tuple[Path, torch.nn.Module]:
    """A checkpoint in the trainer's layout: weights, EMA, optimiser state with momentum, plain metadata."""
    torch.manual_seed(0)
    options = {"jde": {"embedding_dim": 16}}
    model = build_model(TINY, tasks=("detect", "jdc", "jde"), info=INFO, task_options=options)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sum(p.sum() for p in model.parameters()).backward()
    optimizer.step()
    ema = build_model(TINY, tasks=("detect", "jdc", "jde"), info=INFO, task_options=options)
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        **model_meta(model, options, {}),
        "model": model.state_dict(),
        "ema": {"model": ema.state_dict(), "updates": 7},
        "optimizer": optimizer.state_dict(),
        "epoch": 3,
        "experiment": {"tasks": ["detect", "jdc", "jde"]},
        "metrics": {"detect": {"AP50": 0.5}},
    }
    return save_atomic(ckpt, path), ema


def test_strip_keeps_the_ema_weights_and_metadata_only(tmp_path: Path) -> None:
    src, ema = _training_checkpoint(tmp_path / "last.pt")
    dst = strip_checkpoint(src, tmp_path / "deploy.pt")
    stripped = load_safe(dst)
    assert "optimizer" not in stripped and "ema" not in stripped
    assert stripped["stripped"] is True
    assert stripped["epoch"] == 3 and stripped["metrics"] == {"detect": {"AP50": 0.5}}
    assert dst.stat().st_size < src.stat().st_size
    model = load(dst)
    for key, value in ema.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # The same model as loading the original with its EMA weights.
    original = load(src)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(images)["detect"]["decoded"], original(images)["detect"]["decoded"])


def test_strip_without_ema_keeps_the_raw_weights(tmp_path: Path) -> None:
    src, _ = _training_checkpoint(tmp_path / "last.pt")
    raw = load_safe(src)["model"]
    stripped = load_safe(strip_checkpoint(src, tmp_path / "deploy.pt", use_ema=False))
    assert all(torch.equal(stripped["model"][k], v) for k, v in raw.items())


def test_strip_refuses_what_is_no_checkpoint(tmp_path: Path) -> None:
    bad = save_atomic({"x": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="not a unified checkpoint"):
        strip_checkpoint(bad, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_export_strip_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, _ = _training_checkpoint(tmp_path / "last.pt")
    assert export_command.main(["--weights", str(src), "--strip"]) == 0
    out = tmp_path / "last-stripped.pt"
    assert "stripped" in capsys.readouterr().out
    assert load_safe(out)["stripped"] is True
    with pytest.raises(SystemExit):
        export_command.parse_args(["--weights", str(src), "--strip", "--out", "x.onnx"])
    assert export_command.main(["--weights", str(tmp_path / "missing.pt"), "--strip"]) == 2


#: Import names of the distributions whose name differs.
_IMPORT_NAMES = {"pyyaml": "yaml", "pillow": "PIL", "tensorboard": "torch.utils.tensorboard"}


def _requirements(section: str, key: str) -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg[section][key].strip().splitlines()
    return [re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0].lower() for line in lines if line.strip()]


def _importers(module: str) -> set[Path]:
    pattern = re.compile(rf"^\s*(import|from) {re.escape(module)}\b", re.M)
    files = [*(ROOT / "unified").rglob("*.py"), *(ROOT / "tasks").rglob("*.py")]
    return {path for path in files if pattern.search(path.read_text(encoding="utf-8"))}


def test_every_required_dependency_is_used() -> None:
    for name in _requirements("options", "install_requires"):
        assert _importers(_IMPORT_NAMES.get(name, name)), f"{name} is required but nothing imports it"


def test_supervision_is_the_benchmarks_extra() -> None:
    """Only the benchmark compares our tracker with supervision's ByteTrack; tracking needs none of it."""
    assert "supervision" in _requirements("options.extras_require", "benchmark")
    users = _importers("supervision") | {
        p for p in (ROOT / "unified").rglob("*.py") if '"supervision"' in p.read_text(encoding="utf-8")
    }
    assert users and all("benchmark" in p.parts for p in users), users


def test_resuming_a_stripped_checkpoint_says_what_it_lacks(tmp_path: Path, capsys) -> None:
    """A stripped checkpoint put back into a run folder has no optimiser: --resume says so and points at
    --weights, instead of failing on a missing key."""
    from unified.commands import train as train_command

    run = tmp_path / "runs" / "exp"
    (run / "weights").mkdir(parents=True)
    (run / "config.yaml").write_text("tasks: [detect, jdc, jde]\n")
    src, _ = _training_checkpoint(tmp_path / "last.pt")
    strip_checkpoint(src, run / "weights" / "last.pt")
    assert train_command.main(["--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "stripped checkpoint" in err and f"--weights {run / 'weights' / 'last.pt'}" in err
    assert err.count("\n") == 1
