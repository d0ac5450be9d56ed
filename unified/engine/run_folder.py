"""Run folders: claimed atomically, never shared by two runs, never outside the project.

A new run takes ``PROJECT/NAME`` or the first free ``NAME2``, ``NAME3``, ... by creating it: ``mkdir``
fails when another process made the folder first, so two runs started together never share one (a
check for a free name followed by a later ``mkdir(exist_ok=True)`` let both take ``exp2``). Under
``torchrun --max-restarts`` a restarted group finds its first attempt's folder again through a record
in ``PROJECT/.elastic``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from unified.config import ConfigError
from unified.distributed import DistInfo, broadcast_object
from unified.engine.experiment import ExperimentConfig

#: What a run writes into its folder (the TensorBoard event files aside): a folder with one of them
#: holds a run that another start must not append to.
RUN_FILES = ("config.yaml", "results.csv", "metrics.json", "weights/last.pt", "weights/best.pt")
_MAX_RUNS = 10_000


def increment_path(path: Path, exist_ok: bool) -> Path:
    """Claim ``path`` (``runs/train/exp``), or the first free ``exp2``, ``exp3``...: the folder is created.

    Args:
        path: The wanted folder; its parents are created.
        exist_ok: Use ``path`` itself even when it exists (it is created when it does not).

    Raises:
        FileExistsError: when every name up to ``NAME9999`` is taken.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if exist_ok:
        path.mkdir(exist_ok=True)
        return path
    for n in range(1, _MAX_RUNS):
        candidate = path if n == 1 else path.with_name(f"{path.name}{n}")
        try:
            candidate.mkdir()  # atomic: exactly one of two racing processes succeeds
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{path}: {_MAX_RUNS - 1} folders of that name exist already; choose another name")


def run_files(run_dir: Path) -> list[str]:
    """The files of :data:`RUN_FILES` and TensorBoard event files that ``run_dir`` holds."""
    found = [name for name in RUN_FILES if (run_dir / name).is_file()]
    return found + sorted(p.name for p in run_dir.glob("events.out.tfevents.*"))


def claim_run_dir(cfg: ExperimentConfig, dist_info: DistInfo) -> Path:
    """Rank 0 claims the folder of a new run (see :func:`increment_path`) and tells the other ranks.

    Under torchrun it notes the folder for an elastic restart (:func:`elastic_restart`).

    Raises:
        ConfigError: for ``exist_ok`` and a folder that holds a run already: the new run would append to
            its ``results.csv`` and mix its event files (resume it instead).
    """
    chosen: str | None = None
    if dist_info.is_main:
        wanted = Path(cfg.project) / cfg.name
        held = run_files(wanted) if cfg.exist_ok and wanted.is_dir() else []
        if held:
            raise ConfigError(
                f"key 'exist_ok': {wanted} holds a run already ({', '.join(held[:4])}); exist_ok reuses a folder "
                f"only when it holds none. Continue that run with --resume {wanted}, or choose another name"
            )
        run_dir = increment_path(wanted, cfg.exist_ok)
        record = elastic_record(cfg)
        if record is not None:
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps({"run_dir": str(run_dir)}))
        chosen = str(run_dir)
    return Path(broadcast_object(chosen))  # type: ignore[arg-type]


def release_run_dir(run_dir: Path) -> None:
    """Remove a folder that :func:`claim_run_dir` made for a run that failed before training began.

    Only what the start wrote (``config.yaml``, an empty ``weights/``) is removed, and the folder only when
    nothing else is in it: no run folder is left behind by a config error.
    """
    (run_dir / "config.yaml").unlink(missing_ok=True)
    for folder in (run_dir / "weights", run_dir):
        try:
            folder.rmdir()
        except OSError:  # not empty (someone's file), or already gone
            return


def elastic_record(cfg: ExperimentConfig) -> Path | None:
    """Where rank 0 notes its run folder under ``torchrun``, so an elastic restart finds it again.

    Keyed by the rendezvous id; torchrun's default id is ``none`` for every launch, so then the agent's
    process id (the workers' parent, the same across restarts) tells launches apart. None outside torchrun.
    """
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is None:
        return None
    if run_id in ("", "none"):
        run_id = f"none-{os.getppid()}"
    safe = re.sub(r"[^\w.-]", "_", f"{cfg.name}-{run_id}")
    return Path(cfg.project) / ".elastic" / f"{safe}.json"


def elastic_restart(cfg: ExperimentConfig, dist_info: DistInfo) -> tuple[Path | None, Path | None]:
    """The first attempt's run folder and the checkpoint to resume from, for a restarted torchrun group.

    A group that ``torchrun --max-restarts N`` restarts (``TORCHELASTIC_RESTART_COUNT`` > 0) reuses the
    folder its first attempt created and resumes from its ``weights/last.pt`` (None when none was written
    yet: it starts again from scratch there), with no manual step. ``(None, None)`` for any other start.
    """
    record = elastic_record(cfg)
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    chosen: tuple[str | None, str | None] = (None, None)
    if dist_info.is_main and record is not None and restarted and record.is_file():
        run_dir = Path(json.loads(record.read_text())["run_dir"])
        last = run_dir / "weights" / "last.pt"
        chosen = (str(run_dir), str(last) if last.is_file() else None)
        if chosen[1] is not None:
            print(f"elastic restart {os.environ['TORCHELASTIC_RESTART_COUNT']}: resuming {last}")
    run_dir_text, resume_text = broadcast_object(chosen)  # type: ignore[misc]
    return (Path(run_dir_text) if run_dir_text else None), (Path(resume_text) if resume_text else None)


__all__ = [
    "RUN_FILES",
    "claim_run_dir",
    "elastic_record",
    "elastic_restart",
    "increment_path",
    "release_run_dir",
    "run_files",
]
