"""The experiment config: one YAML file, validated into dataclasses, written into every run folder."""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from unified.config import ConfigError, check, load_config, read_yaml
from unified.data.augment import AugmentConfig
from unified.data.synthetic import SyntheticConfig
from unified.implicit import ImplicitConfig
from unified.packaged_configs import packaged_config, resolve_config

#: What ``unified.distributed.select_device`` understands: cpu, "" (automatic), 0 / 0,1, cuda / cuda:N.
_DEVICE = re.compile(r"|cpu|cuda(:\d+(\s*,\s*\d+)*)?|\d+(\s*,\s*\d+)*")


@dataclass
class OptimConfig:
    """Optimiser and schedule; defaults follow the official YOLOR ``hyp.scratch`` files."""

    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr0: float = 0.01
    lrf: float = 0.2
    momentum: float = 0.937
    weight_decay: float = 0.0005
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    nominal_batch_size: int = 64
    # Off by default, as in the official YOLOR trainer: losses are per-image sums, so gradient norms of
    # 10–200 are normal and a small clip silently shrinks the learning rate.
    grad_clip: float = 0.0
    ema: bool = True
    ema_decay: float = 0.9999
    ema_ramp: float = 2000.0

    def __post_init__(self) -> None:
        check(self.lr0 > 0, "optim.lr0", f"must be > 0, got {self.lr0}")
        check(0 < self.lrf <= 1, "optim.lrf", f"must be in (0, 1], got {self.lrf}")
        # SGD's Nesterov momentum needs a momentum > 0; Adam's beta1 (the same value) must stay below 1.
        check(0 < self.momentum < 1, "optim.momentum", f"must be in (0, 1), got {self.momentum}")
        check(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.warmup_epochs >= 0, "optim.warmup_epochs", "must be >= 0")
        check(
            0 <= self.warmup_momentum < 1,
            "optim.warmup_momentum",
            f"must be in [0, 1), got {self.warmup_momentum}",
        )
        check(self.warmup_bias_lr >= 0, "optim.warmup_bias_lr", f"must be >= 0, got {self.warmup_bias_lr}")
        check(self.nominal_batch_size >= 1, "optim.nominal_batch_size", "must be >= 1")
        check(self.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 disables clipping)")
        check(0 < self.ema_decay < 1, "optim.ema_decay", "must be in (0, 1)")
        # The decay ramps as 1 - exp(-updates / ema_ramp): 0 divides by zero, < 0 grows without bound.
        check(self.ema_ramp > 0, "optim.ema_ramp", f"must be > 0 (optimiser steps), got {self.ema_ramp}")


@dataclass
class BalancerConfig:
    """How task losses are combined: a registered balancer, fixed starting weights and its options.

    ``options`` is kept as written and validated into the balancer's ``options_class`` by
    ``unified.engine.balancers.build_balancer`` when the run starts: the balancer may come from a plugin
    that is imported only then. Unknown keys are errors there, named ``balancer.options.<key>``.
    """

    name: str = "fixed"
    weights: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    """When to evaluate during training (thresholds belong to each task's options)."""

    interval: int = 1  # epochs between evaluations; 0: only after the last epoch
    batch_size: int = 0  # 0: twice the training batch per rank

    def __post_init__(self) -> None:
        check(self.interval >= 0, "eval.interval", "must be >= 0 (0: only after the last epoch)")
        check(self.batch_size >= 0, "eval.batch_size", "must be >= 0")


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 16
    img_size: int = 640
    workers: int = 2
    seed: int = 0
    deterministic: bool = False
    device: str = ""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True  # NHWC: 1.10-1.17x faster yolor-p6 steps on CPU, equal on the demo
    sync_bn: bool = False
    # 0: no budget; otherwise the schedule shrinks to the epochs that fit and the run stops after the epoch
    # that would overrun it (TimeBudgetHook)
    time_budget_min: float = 0.0
    max_nonfinite_steps: int = 10
    skip_invalid: bool = False
    cache_images: bool = (
        False  # decode and resize every training image once, keep it in RAM (~3·img_size² B each)
    )
    weights: str = ""
    # --weights whose tensors mostly do not fit the model (another architecture) are refused: set this to
    # load the few that fit anyway and train the rest from scratch
    partial_weights: bool = False
    # Fit the anchors to the training boxes before a new run from scratch when the model's anchors reach a
    # best possible recall below 0.98 (k-means + genetic refinement, as YOLOv5/YOLOv7's check_anchors);
    # never on --resume or with --weights (their anchors are trained). The fitted anchors go into the model
    # config every checkpoint stores. --noautoanchor sets it false. "always" fits them even when the BPR is
    # fine, and keeps them when they match the boxes better (a higher fitness, no lower BPR): COCO's
    # anchors reach a BPR of 1.0 on most data yet fit small-object data poorly.
    autoanchor: bool | Literal["always"] = True

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "train.epochs", f"must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, "train.batch_size", f"must be >= 1, got {self.batch_size}")
        check(
            self.img_size >= 32 and self.img_size % 32 == 0,
            "train.img_size",
            "must be a multiple of 32, >= 32",
        )
        check(self.workers >= 0, "train.workers", "must be >= 0")
        check(self.max_nonfinite_steps >= 1, "train.max_nonfinite_steps", "must be >= 1")
        check(
            self.time_budget_min >= 0,
            "train.time_budget_min",
            f"must be >= 0 (0: no budget), got {self.time_budget_min}",
        )
        check(
            _DEVICE.fullmatch(self.device.strip().lower()) is not None,
            "train.device",
            f"must be cpu, a GPU index such as 0, a list such as 0,1, cuda or cuda:N, or empty (automatic); "
            f"got {self.device!r}",
        )


@dataclass
class ExperimentConfig:
    """Everything a run needs; the resolved copy is written to ``RUN/config.yaml``."""

    # A model YAML path or its content; empty: the architecture stored in `train.weights`.
    model: str | dict[str, Any] = ""
    data: str = ""
    tasks: list[str] = field(default_factory=lambda: ["detect"])
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    plugins: list[str] = field(default_factory=list)
    implicit_share: dict[str, str] = field(default_factory=dict)
    implicit: ImplicitConfig = field(default_factory=ImplicitConfig)
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    synthetic: SyntheticConfig | None = None  # generate the built-in world into `synthetic.out` first
    project: str = "runs/train"
    name: str = "exp"
    exist_ok: bool = False

    def __post_init__(self) -> None:
        check(len(self.tasks) > 0, "tasks", "at least one task must be enabled")
        check(len(set(self.tasks)) == len(self.tasks), "tasks", f"duplicate task names in {self.tasks}")
        check(
            _inside_project(self.name),
            "name",
            f"must name a folder inside `project` (no '..', not absolute, not empty), got {self.name!r}",
        )


def _inside_project(name: str) -> bool:
    """Whether ``project/name`` stays inside ``project`` (``../x`` or ``/tmp/x`` would write elsewhere)."""
    if not name.strip() or PurePosixPath(name).is_absolute():
        return False
    normal = posixpath.normpath(name)
    return normal not in (".", "..") and not normal.startswith("../")


def load_experiment(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Load an experiment YAML or a packaged one by name (``synthetic``), or the defaults when ``path`` is
    None, with ``key=value`` overrides.

    Relative ``model``/``data`` paths in the file are taken as relative to the working directory; ``model``
    may name a packaged model (``yolor-tiny``).

    Raises:
        ConfigError: naming the file, line and key.
    """
    if path is None:
        return load_config(ExperimentConfig, data={}, overrides=overrides)
    found = resolve_config(path, "experiment")
    _refuse_dataset_yaml(path, found)
    return load_config(ExperimentConfig, found, overrides=overrides)


#: Top-level keys of a dataset YAML (ours or the official YOLO data file) that no experiment has.
_DATASET_KEYS = {"names", "nc", "train", "val", "test", "path", "parts", "format"}


def _refuse_dataset_yaml(typed: str | Path, path: Path) -> None:
    """A dataset YAML given as ``--config`` is said to be one, not reported as a list of unknown keys."""
    try:
        top, _ = read_yaml(path)  # the guarded reader: no alias bombs, no unbounded nesting
    except ConfigError:
        return  # load_config names the problem with its line
    if not isinstance(top, dict) or not top:
        return
    keys = set(map(str, top))
    # `train` is a section in an experiment and a path (or list of paths) in a dataset YAML
    experiment = {f.name for f in dataclasses.fields(ExperimentConfig)} - {"data", "train"}
    if isinstance(top.get("train"), dict):
        experiment.add("train")
    if keys & _DATASET_KEYS and not keys & experiment:
        raise ConfigError(
            f"--config {typed}: this looks like a dataset YAML (keys {sorted(keys & _DATASET_KEYS)}); "
            f"give it as --data {typed} (--config takes an experiment YAML)"
        )


#: Where each key of the official YOLOR hyper-parameter files (``data/hyp.*.yaml``) goes in an experiment.
HYP_KEYS: dict[str, str] = {
    **{k: f"optim.{k}" for k in ("lr0", "lrf", "momentum", "weight_decay")},
    **{k: f"optim.{k}" for k in ("warmup_epochs", "warmup_momentum", "warmup_bias_lr")},
    **{
        k: f"task_options.detect.{k}"
        for k in ("box", "cls", "cls_pw", "obj", "obj_pw", "anchor_t", "fl_gamma")
    },
    **{k: f"augment.{k}" for k in ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear")},
    **{k: f"augment.{k}" for k in ("perspective", "flipud", "fliplr", "mosaic", "mixup")},
}
#: Keys of those files that the official trainer reads but its YOLOR loss does not use.
HYP_UNUSED = ("iou_t",)


def hyp_overrides(path: str | Path) -> tuple[list[str], list[str]]:
    """The ``key=value`` overrides an official ``--hyp hyp.scratch.640.yaml`` stands for, and notes.

    Raises:
        ConfigError: for an unreadable file or a key that is not one of :data:`HYP_KEYS`, naming it.
    """
    data, _ = read_yaml(path)
    overrides, notes = [], []
    for key, value in data.items():
        if key in HYP_UNUSED:
            notes.append(f"note: --hyp {path}: {key} is not used by the YOLOR loss; set aside")
        elif key in HYP_KEYS:
            overrides.append(f"{HYP_KEYS[key]}={json.dumps(value)}")
        else:
            raise ConfigError(
                f"--hyp {path}: unknown key {key!r}; an official hyper-parameter file has {', '.join(HYP_KEYS)}"
            )
    return overrides, notes


def set_aside_tasks_left_out(cfg: ExperimentConfig) -> tuple[ExperimentConfig, list[str]]:
    """Drop the ``task_options`` and ``balancer.weights`` entries of tasks that
    ``cfg.tasks`` leaves out, so that ``--tasks detect`` trains a subset of an experiment written for more.

    The tasks that the enabled ones require (``jde`` needs ``detect``) keep theirs. Returns the config and
    one note per kind of entry set aside (empty when nothing was).
    """
    from unified.registry import import_plugins
    from unified.task import resolve_tasks

    try:
        import_plugins(list(cfg.plugins))
        kept = set(resolve_tasks(cfg.tasks))
    except Exception:  # an unknown task or plugin: the run names it when it checks the experiment
        kept = set(cfg.tasks)
    notes = []
    options = {name: value for name, value in cfg.task_options.items() if name in kept}
    weights = {name: value for name, value in cfg.balancer.weights.items() if name in kept}
    for key, before, after in (
        ("task_options", cfg.task_options, options),
        ("balancer.weights", cfg.balancer.weights, weights),
    ):
        left = sorted(set(before) - set(after))
        if left:
            notes.append(f"note: --tasks {','.join(cfg.tasks)}: {key} of {left} set aside (tasks left out)")
    balancer = dataclasses.replace(cfg.balancer, weights=weights)
    return dataclasses.replace(cfg, task_options=options, balancer=balancer), notes


def with_absolute_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """``model`` (a packaged name resolved to its YAML), ``data``, ``train.weights`` and ``synthetic.out`` as
    absolute paths, so that the run's ``config.yaml`` and the experiment its checkpoints store read the same
    from any folder (``--resume RUN`` from elsewhere).

    A path that does not exist is kept as written: the error that follows then names what the user typed.
    """
    synthetic = cfg.synthetic
    if synthetic is not None:
        synthetic = dataclasses.replace(synthetic, out=str(Path(synthetic.out).resolve()))
    return dataclasses.replace(
        cfg,
        model=_resolved_model(cfg.model),
        data=_absolute_if_found(cfg.data),
        train=dataclasses.replace(cfg.train, weights=_absolute_if_found(cfg.train.weights)),
        synthetic=synthetic,
    )


def _resolved_model(model: str | dict[str, Any]) -> str | dict[str, Any]:
    if not isinstance(model, str) or not model:
        return model
    found = Path(model) if Path(model).exists() else packaged_config("model", model)
    return str(found.resolve()) if found is not None else model


def _absolute_if_found(path: str) -> str:
    return str(Path(path).resolve()) if path and Path(path).exists() else path


__all__ = [
    "AugmentConfig",
    "BalancerConfig",
    "ConfigError",
    "EvalConfig",
    "ExperimentConfig",
    "ImplicitConfig",
    "OptimConfig",
    "SyntheticConfig",
    "TrainConfig",
    "HYP_KEYS",
    "hyp_overrides",
    "load_experiment",
    "set_aside_tasks_left_out",
    "with_absolute_paths",
]
