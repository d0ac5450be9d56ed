"""From a study to its jobs: every variant's experiment resolved and checked, one job per variant and seed.

Every variant is resolved and validated before anything runs, so a variant whose knob does not exist fails
the study at its start in one line naming the variant and the key (the config loaders reject unknown keys).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unified.ablation.studies import Study, Variant
from unified.config import ConfigError, apply_overrides, from_dict, parse_override, read_yaml
from unified.engine.experiment import ExperimentConfig, load_experiment, set_aside_tasks_left_out
from unified.packaged_configs import resolve_config

#: Overrides of this prefix patch the model YAML, not the experiment.
MODEL_PREFIX = "model."
#: The experiment YAML of a job, written into its run folder before it trains.
JOB_CONFIG = "ablation-experiment.yaml"


class StudyError(ConfigError):
    """A study that cannot run as asked: an invalid variant, a bad flag, a folder run with another budget."""


@dataclass(frozen=True)
class Budget:
    """What every run of a study gets: a fixed number of epochs (never a time budget) at one image size.

    Attributes:
        epochs: Training epochs of every run.
        img_size: Training and evaluation image size.
        seeds: Runs per variant; run ``k`` trains with ``train.seed=k``.
    """

    epochs: int
    img_size: int
    seeds: int

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise StudyError(f"--epochs {self.epochs}: must be >= 1")
        if self.img_size < 32 or self.img_size % 32:
            raise StudyError(f"--img {self.img_size}: must be a multiple of 32, >= 32")
        if self.seeds < 1:
            raise StudyError(f"--seeds {self.seeds}: must be >= 1")


@dataclass(frozen=True)
class Job:
    """One training run of a study: a variant with a seed, in its own run folder.

    Attributes:
        index: Position in the study's job list (``--shard i/n`` runs the jobs with ``index % n == i``).
        variant: The variant's name.
        seed: The run's ``train.seed``.
        run_dir: Its run folder (``OUT/runs/<variant>/seed<k>``).
        config: The experiment it trains (absolute paths, the model patched).
        overrides: The overrides of the base experiment that made ``config``, in order.
    """

    index: int
    variant: str
    seed: int
    run_dir: Path
    config: ExperimentConfig
    overrides: tuple[str, ...]


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(experiment overrides, model patches)``: ``model.head.refine=[add]`` becomes ``head.refine=[add]``
    of the model YAML; ``model=yolor-csp`` (the model itself) stays an experiment override."""
    experiment, model = [], []
    for text in overrides:
        (model if text.startswith(MODEL_PREFIX) else experiment).append(text)
    return experiment, [text[len(MODEL_PREFIX) :] for text in model]


def resolve_variant(
    study: Study, variant: Variant, extra: Sequence[str] = (), base: str | None = None
) -> ExperimentConfig:
    """The experiment ``variant`` trains: the base, the study's overrides, the variant's, then ``extra``.

    Args:
        study: The study.
        variant: One of its variants.
        extra: Overrides applied last (the budget, the seed, the run folder, the user's own).
        base: Another base experiment than the study's.

    Raises:
        StudyError: one line naming the study, the variant, the override and the key that failed.
    """
    overrides = (*study.overrides, *variant.overrides, *extra)
    try:
        return _resolve(base or study.base, overrides)
    except ConfigError as exc:
        culprit = _override_named_in(str(exc), overrides)
        where = f"override {culprit!r}: " if culprit else ""
        raise StudyError(f"study {study.name!r}, variant {variant.name!r}: {where}{exc}") from None
    except KeyError as exc:  # RegistryError: an unknown task or balancer (its message lists the names)
        raise StudyError(f"study {study.name!r}, variant {variant.name!r}: {exc}") from None


def _resolve(base: str, overrides: Sequence[str]) -> ExperimentConfig:
    experiment, patches = split_overrides(overrides)
    cfg = load_experiment(base, experiment)
    if any(parse_override(text)[0] == "tasks" for text in experiment):
        cfg, _ = set_aside_tasks_left_out(cfg)  # options and weights of the tasks a variant leaves out
    model = _patched_model(cfg.model, patches)
    check_experiment(dataclasses.replace(cfg, model=model))
    return dataclasses.replace(cfg, model=model)


def _patched_model(model: str | dict[str, Any], patches: Sequence[str]) -> str | dict[str, Any]:
    """The model YAML as a mapping with ``patches`` applied (the model itself when there are none)."""
    if not patches:
        return model
    if isinstance(model, dict):
        data = model
    elif model:
        data, _ = read_yaml(resolve_config(model, "model"))
    else:
        raise ConfigError("key 'model': the base experiment names no model YAML to patch")
    return apply_overrides(data, patches)


def check_experiment(cfg: ExperimentConfig) -> None:
    """What a run checks before it reads any data, done without data: the model YAML, the tasks and each
    task's options, the balancer's options.

    Raises:
        ConfigError, RegistryError: as the run would.
    """
    from unified.engine.balancers import balancer_options
    from unified.models.config import load_model_config
    from unified.registry import import_plugins
    from unified.task import TASKS, resolve_tasks

    if cfg.model:
        try:
            load_model_config(cfg.model)
        except ConfigError as exc:  # name the key as the variant writes it: model.head.refine
            text = str(exc).replace("<model dict>", "the patched model YAML", 1)
            raise ConfigError(text.replace("key '", f"key '{MODEL_PREFIX}", 1)) from None
    import_plugins(cfg.plugins)
    enabled = resolve_tasks(cfg.tasks)
    for name, options in cfg.task_options.items():
        if name not in enabled:
            raise ConfigError(f"key 'task_options.{name}': task {name!r} is not enabled (enabled: {enabled})")
        from_dict(TASKS.get(name).config_class, options, source="experiment", prefix=f"task_options.{name}")
    balancer_options(cfg.balancer.name, cfg.balancer.options, source="experiment")


def _override_named_in(message: str, overrides: Sequence[str]) -> str | None:
    """The last override whose key the error names (the last one of a key is the one that took effect)."""
    for text in reversed(overrides):
        key = text.partition("=")[0].strip()
        bare = key[len(MODEL_PREFIX) :] if key.startswith(MODEL_PREFIX) else key
        if any(f"'{k}'" in message or f"'{k}." in message for k in {key, bare}):
            return text
    return None


def job_overrides(budget: Budget, seed: int, run_dir: Path) -> list[str]:
    """What the tool sets on every run: the fixed budget (no time budget), the seed, the run folder."""
    return [
        f"train.epochs={budget.epochs}",
        f"train.img_size={budget.img_size}",
        "train.time_budget_min=0",
        f"train.seed={seed}",
        f"project={run_dir.parent}",
        f"name={run_dir.name}",
        "exist_ok=true",  # the folder holds the job's experiment file before the run starts
    ]


def plan_jobs(
    study: Study,
    out: Path,
    budget: Budget,
    only: Sequence[str] = (),
    extra: Sequence[str] = (),
    base: str | None = None,
) -> list[Job]:
    """Every job of the study, seed by seed (all variants of seed 0 first, so a study stopped early still
    compares every variant), each variant validated once before any job is made.

    Args:
        study: The study.
        out: The study folder; runs go to ``out/runs/<variant>/seed<k>``.
        budget: Epochs, image size and seeds.
        only: Run these variants only (the references they are compared with are not added).
        extra: The user's overrides of every variant (device, workers, ``key=value``), before the budget's.
        base: Another base experiment than the study's.

    Raises:
        StudyError: for an unknown ``only`` name or the first invalid variant.
    """
    from unified.engine.experiment import with_absolute_paths

    names = [v.name for v in study.variants]
    unknown = [name for name in only if name not in names]
    if unknown:
        raise StudyError(f"--only {' '.join(unknown)}: study {study.name!r} has the variants {names}")
    chosen = [v for v in study.variants if not only or v.name in only]
    runs_dir = out.resolve() / "runs"
    resolved = {}  # every variant checked before the first job is made; the seeds only change the folder
    for variant in chosen:
        first = runs_dir / variant.name / "seed0"
        resolved[variant.name] = resolve_variant(
            study, variant, [*extra, *job_overrides(budget, 0, first)], base
        )
    jobs = []
    for seed in range(budget.seeds):
        for variant in chosen:
            run_dir = runs_dir / variant.name / f"seed{seed}"
            cfg = resolved[variant.name]
            cfg = dataclasses.replace(
                cfg,
                train=dataclasses.replace(cfg.train, seed=seed),
                project=str(run_dir.parent),
                name=run_dir.name,
            )
            overrides = (*study.overrides, *variant.overrides, *extra, *job_overrides(budget, seed, run_dir))
            jobs.append(Job(len(jobs), variant.name, seed, run_dir, with_absolute_paths(cfg), overrides))
    return jobs


def parse_shard(text: str) -> tuple[int, int]:
    """``i/n`` as ``(i, n)``.

    Raises:
        StudyError: for anything but ``0 <= i < n``.
    """
    head, _, tail = text.partition("/")
    if not (head.isdigit() and tail.isdigit()) or not 0 <= int(head) < int(tail):
        raise StudyError(f"--shard {text!r}: give i/n with 0 <= i < n, e.g. --shard 0/2 and --shard 1/2")
    return int(head), int(tail)


def shard_jobs(jobs: Sequence[Job], shard: tuple[int, int] | None) -> list[Job]:
    """The jobs of shard ``(i, n)``: those whose index is ``i`` modulo ``n`` (all jobs for None)."""
    if shard is None:
        return list(jobs)
    i, n = shard
    return [job for job in jobs if job.index % n == i]


__all__ = [
    "JOB_CONFIG",
    "MODEL_PREFIX",
    "Budget",
    "Job",
    "StudyError",
    "check_experiment",
    "job_overrides",
    "parse_shard",
    "plan_jobs",
    "resolve_variant",
    "shard_jobs",
    "split_overrides",
]
