"""Helpers for the reliability tests: tiny run overrides, CLI subprocesses, /proc process checks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.conftest import REPO

FAULTS_PLUGIN = "tests.reliability.faults"


def train_overrides(model: Path, data: Path, project: Path, name: str, **extra: object) -> list[str]:
    """``key=value`` overrides of a tiny, deterministic, CPU, fp32 run (3 epochs of 3 steps at 64 px)."""
    values: dict[str, object] = {
        "model": model,
        "data": data,
        "tasks": "[detect]",
        "train.epochs": 3,
        "train.batch_size": 4,
        "train.img_size": 64,
        "train.workers": 0,
        "train.device": "cpu",
        "train.deterministic": "true",
        "train.precision": "fp32",
        "optim.warmup_epochs": 1,
        "optim.nominal_batch_size": 4,
        "eval.interval": 1,
        "project": project,
        "name": name,
        "plugins": f"[{FAULTS_PLUGIN}]",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: one torch thread (as the in-process tests use), no faults."""
    env = {k: v for k, v in os.environ.items() if k != "UNIFIED_TEST_FAULT"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def start_cli(args: Sequence[str], log: Path, **env: str) -> subprocess.Popen:
    """Start ``tools/train_multitask.py`` in its own process group, output to ``log``."""
    handle = log.open("w")
    return subprocess.Popen(
        [sys.executable, "tools/train_multitask.py", "--no-progress", *args],
        cwd=REPO,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=cli_env(**env),
        start_new_session=True,
    )


def run_cli(args: Sequence[str], log: Path, timeout: float = 300, **env: str) -> int:
    process = start_cli(args, log, **env)
    try:
        return process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from /proc; psutil is not installed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def log_text(path: Path) -> str:
    """The output a CLI subprocess wrote so far ("" before it wrote anything)."""
    return path.read_text() if path.exists() else ""
