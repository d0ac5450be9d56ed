"""Running a study's jobs, each an independent ``unified train`` run in its own folder, and resuming them.

A job is done when its folder holds :data:`RESULT` (the run's final metrics, and those on the unseen
world). A killed study resumes where it stopped: finished jobs are skipped, a run with a checkpoint
continues with ``unified train --resume``, a run killed before its first checkpoint starts again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unified.ablation.plan import JOB_CONFIG, Budget, Job, StudyError
from unified.ablation.studies import Study
from unified.config import dump_yaml, to_dict
from unified.engine.results import json_text, write_json

#: A job's final results, written by the tool once its training and evaluations have ended.
RESULT = "ablation-result.json"
#: What the study folder records of the runs it holds, so that a resume with another budget is refused.
STUDY_RECORD = "study.json"
#: Where a job's evaluation on the unseen world goes (plots and ``metrics.json``), inside its run folder.
UNSEEN_DIR = "unseen"
#: Exit code of a run stopped by Ctrl-C (``unified train`` returns it).
INTERRUPTED = 130

#: Runs one ``unified`` subcommand with its arguments; returns its exit code.
Launcher = Callable[[str, Sequence[str]], int]


def subprocess_launcher(command: str, argv: Sequence[str]) -> int:
    """``python -m unified COMMAND ARGV`` in a child process: every run starts with fresh state (memory, CUDA,
    threads), as a job on another machine would. Its output goes to this process's terminal.

    A Ctrl-C reaches the child (the terminal signals the whole process group); this process ignores it while
    the child runs, so the child ends as ``unified train`` does on a Ctrl-C (exit 130, its checkpoint intact)
    instead of being killed a quarter of a second later by ``subprocess.run``.
    """
    process = subprocess.Popen([sys.executable, "-m", "unified", command, *argv])
    # Set after the child has started: a child started with SIGINT ignored would keep ignoring it.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        return process.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def in_process_launcher(command: str, argv: Sequence[str]) -> int:
    """The subcommand in this process (no interpreter start-up per run: for tests and quick studies)."""
    from unified.commands import main

    return main([command, *argv])


@dataclass(frozen=True)
class UnseenWorld:
    """The world the runs are evaluated on: the training world's generator with a seed it was not made with.

    Attributes:
        seed: Its seed.
        data: Its dataset YAML (made by :func:`prepare_unseen_world`).
    """

    seed: int
    data: Path


def unseen_world(job: Job, out: Path, seed: int) -> UnseenWorld | None:
    """Where the validation split of the base world made with ``seed`` goes (None: the base has no
    ``synthetic:`` world)."""
    if job.config.synthetic is None:
        return None
    return UnseenWorld(seed, out.resolve() / f"unseen-world-seed{seed}" / "dataset.yaml")


def prepare_unseen_world(job: Job, world: UnseenWorld) -> Path:
    """Make the unseen world's validation split (cached; its training split is empty, as only the validation
    split is evaluated, and each image is drawn from a stream of its own, so the split is the same as that
    of a whole world made with this seed)."""
    from unified.data.synthetic import make_synthetic

    s = job.config.synthetic
    if s is None:
        raise StudyError(f"variant {job.variant!r}: its experiment has no synthetic world to make another of")
    return make_synthetic(
        world.data.parent,
        images=0,
        val_images=s.val_images,
        sequences=0,
        val_sequences=s.val_sequences,
        frames=s.frames,
        size=s.size,
        seed=world.seed,
    )


def check_study_folder(
    out: Path,
    study: Study,
    budget: Budget,
    unseen_seed: int | None,
    variants: Sequence[str],
    user_overrides: Sequence[str] = (),
    configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Record the study's budget and variants in ``out/study.json``, or check them against a record there.

    Args:
        out: The study folder.
        study: The study.
        budget: Its runs' budget (the number of seeds may grow between starts).
        unseen_seed: The seed of the world the runs are evaluated on (None: none).
        variants: The variants run now.
        user_overrides: The ``key=value`` overrides of every variant given on the command line.
        configs: Each variant's resolved experiment (:func:`comparable_config`): a base experiment or model
            YAML edited since the runs were made changes them while the overrides stay the same.

    Raises:
        StudyError: when the folder holds runs of another study or budget, or of a variant since changed:
            their results would be mixed with the new ones.
    """
    path = out / STUDY_RECORD
    resolved = json.loads(json_text(dict(configs or {})))  # as the record holds them: JSON values
    defined = {name: [*study.overrides, *study.variant(name).overrides, *user_overrides] for name in variants}
    record: dict[str, Any] = {
        "study": study.name,
        "epochs": budget.epochs,
        "img_size": budget.img_size,
        "unseen_seed": unseen_seed,
        "variants": {},
    }
    if path.is_file():
        old = json.loads(path.read_text())
        for key in ("study", "epochs", "img_size", "unseen_seed"):
            if old.get(key) != record[key]:
                raise StudyError(
                    f"{out} holds runs of study {old.get('study')!r} with epochs {old.get('epochs')}, img "
                    f"{old.get('img_size')}, unseen seed {old.get('unseen_seed')}; this is {study.name!r} with "
                    f"epochs {budget.epochs}, img {budget.img_size}, unseen seed {unseen_seed}: resume with the "
                    f"same flags, or give another --out"
                )
        for name, overrides in defined.items():
            if name in old.get("variants", {}) and old["variants"][name] != overrides:
                raise StudyError(
                    f"variant {name!r} changed since its runs in {out / 'runs' / name} were made (its overrides "
                    f"were {old['variants'][name]}); remove that folder to run it again, or give another --out"
                )
        for name, config in resolved.items():
            before = old.get("configs", {}).get(name)
            if before is not None and before != config:
                raise StudyError(
                    f"variant {name!r} resolves to another experiment than its runs in {out / 'runs' / name} "
                    f"were made with ({_differences(before, config)}): the base experiment or model YAML "
                    "changed; restore it, or give another --out"
                )
        record["variants"] = dict(old.get("variants", {}))
        record["configs"] = dict(old.get("configs", {}))
    record["variants"].update(defined)
    if resolved:
        record.setdefault("configs", {}).update(resolved)
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json_text(record))
    os.replace(tmp, path)  # shards on a shared folder write it too: never a half-written file


def comparable_config(job: Job) -> dict[str, Any]:
    """What a variant's runs are made from, as :func:`check_study_folder` records it: the job's resolved
    experiment less what may differ between its seeds and the processes that run them (seed, run folder,
    device, workers, where the checkout and the data lie), with a model named by file as its content's
    digest."""
    config = to_dict(job.config)
    for key in ("seed", "device", "workers"):
        config["train"].pop(key, None)
    for key in ("project", "name", "data"):
        config.pop(key, None)
    if isinstance(config.get("synthetic"), dict):
        config["synthetic"].pop("out", None)
    model = config.get("model")
    if isinstance(model, str) and Path(model).is_file():
        config["model"] = "sha256:" + hashlib.sha256(Path(model).read_bytes()).hexdigest()
    return config


def _differences(old: Any, new: Any, limit: int = 3) -> str:
    """The first ``limit`` dotted keys whose values differ, as ``key: old -> new``."""
    found: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{key}.{k}" if key else k)
        elif a != b and len(found) < limit:
            found.append(f"{key}: {json.dumps(a)} -> {json.dumps(b)}")

    walk(old, new, "")
    return "; ".join(found) or "values differ"


@dataclass(frozen=True)
class JobOutcome:
    """What became of a job: ``done`` (skipped: finished before), ``ran``, ``failed`` or ``interrupted``."""

    job: Job
    status: str
    message: str = ""


def run_job(job: Job, launcher: Launcher, world: UnseenWorld | None, device: str = "") -> JobOutcome:
    """Train ``job`` (or resume it), evaluate it on the unseen world, and write its :data:`RESULT`."""
    run_dir = job.run_dir
    if (run_dir / RESULT).is_file():
        return JobOutcome(job, "done")
    metrics_file = run_dir / "metrics.json"
    last = run_dir / "weights" / "last.pt"
    if not metrics_file.is_file():
        if last.is_file():
            code = launcher("train", ["--resume", str(run_dir), "--no-progress"])
        else:
            if run_dir.exists():  # killed before its first checkpoint: nothing to keep
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            (run_dir / JOB_CONFIG).write_text(dump_yaml(job.config))
            code = launcher("train", ["--config", str(run_dir / JOB_CONFIG), "--no-progress"])
        if code:
            return _failed(job, code, "training")
    metrics = {"val": _final_metrics(run_dir)}
    if world is not None:
        unseen = run_dir / UNSEEN_DIR / "metrics.json"
        if not unseen.is_file():
            code = launcher(
                "val",
                [
                    "--weights", str(last), "--data", str(world.data), "--out", str(run_dir / UNSEEN_DIR),
                    "--device", device, "--workers", str(job.config.train.workers),
                ],
            )  # fmt: skip
            if code:
                return _failed(job, code, "evaluation on the unseen world")
        metrics["unseen"] = json.loads(unseen.read_text())
    write_json(
        run_dir / RESULT,
        {
            "variant": job.variant,
            "seed": job.seed,
            "epochs": job.config.train.epochs,
            "img_size": job.config.train.img_size,
            "unseen_seed": world.seed if world is not None else None,
            "metrics": metrics,
        },
    )
    return JobOutcome(job, "ran")


def _failed(job: Job, code: int, what: str) -> JobOutcome:
    status = "interrupted" if code == INTERRUPTED else "failed"
    return JobOutcome(job, status, f"{what} exited with {code}")


def _final_metrics(run_dir: Path) -> Mapping[str, Any]:
    """The run's final metrics: its ``metrics.json``, or, for a run killed after its last checkpoint and
    before that file (its resume then trains nothing), the metrics its last checkpoint stores."""
    path = run_dir / "metrics.json"
    if path.is_file():
        return json.loads(path.read_text())
    from unified.checkpoint import load_safe

    stored = load_safe(run_dir / "weights" / "last.pt").get("metrics") or {}
    return json.loads(json_text(stored))


def run_jobs(
    jobs: Sequence[Job],
    launcher: Launcher,
    world: UnseenWorld | None,
    device: str = "",
    log: Callable[[str], None] = print,
) -> list[JobOutcome]:
    """Run the jobs one after another; a failed run is reported and the others still run, a Ctrl-C stops."""
    if world is not None and jobs and any(not (j.run_dir / RESULT).is_file() for j in jobs):
        prepare_unseen_world(jobs[0], world)
    outcomes = []
    for number, job in enumerate(jobs, 1):
        head = f"[{number}/{len(jobs)}] {job.variant} seed {job.seed} ({job.run_dir})"
        start = time.monotonic()
        try:
            outcome = run_job(job, launcher, world, device)
        except KeyboardInterrupt:
            outcome = JobOutcome(job, "interrupted", "Ctrl-C")
        outcomes.append(outcome)
        took = f"{time.monotonic() - start:.0f} s"
        if outcome.status == "done":
            log(f"{head}: finished before, skipped")
        elif outcome.status == "ran":
            log(f"{head}: done in {took}")
        else:
            log(f"{head}: {outcome.status} ({outcome.message})")
        if outcome.status == "interrupted":
            break
    return outcomes


__all__ = [
    "INTERRUPTED",
    "RESULT",
    "STUDY_RECORD",
    "UNSEEN_DIR",
    "JobOutcome",
    "Launcher",
    "UnseenWorld",
    "check_study_folder",
    "comparable_config",
    "in_process_launcher",
    "prepare_unseen_world",
    "run_job",
    "run_jobs",
    "subprocess_launcher",
    "unseen_world",
]
