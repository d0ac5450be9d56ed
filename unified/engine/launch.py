"""Start, resume and finish a training run from an experiment config (the body of tools/train_multitask.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unified.anchors import anchors_for_run
from unified.checkpoint import CheckpointError, load_safe, require_format
from unified.config import ConfigError, dump_yaml, from_dict
from unified.data import MultiTaskDataset, build_dataloader, load_dataset_yaml
from unified.data.records import ImageRecord
from unified.data.summary import SUMMARY_FILE, format_summary, summary_text
from unified.distributed import DistInfo, barrier, cleanup, init_distributed, select_device
from unified.engine.balancers import balancer_options, build_balancer
from unified.engine.default_hooks import (
    CheckpointHook,
    EvaluationHook,
    LoggerHook,
    RunPicturesHook,
    TimeBudgetHook,
    write_text_or_warn,
)
from unified.engine.ema import EMAHook
from unified.engine.experiment import ExperimentConfig, with_absolute_paths
from unified.engine.hooks import Hook
from unified.engine.progress import ProgressHook
from unified.engine.results import json_text as metrics_json
from unified.engine.resume import (
    apply_resume_changes,
    check_same_dataset,
    finished_note,
    load_resume_state,
    model_file_note,
    restore,
    resume_run_dir,
    stored_dataset_info,
)
from unified.engine.run_folder import claim_run_dir, elastic_restart, release_run_dir
from unified.engine.run_folder import increment_path as increment_path  # tools/detect.py imports it here
from unified.engine.trainer import Trainer, resolve_precision, seed_everything
from unified.model import build_model, model_meta
from unified.registry import import_plugins
from unified.structures import DatasetInfo
from unified.task import TASKS, resolve_tasks

#: ``--weights`` of which fewer of the model's weight tensors than this fraction fit are another
#: architecture: loading them would silently train from scratch (``train.partial_weights`` allows it).
MIN_PRETRAINED_FIT = 0.5


def check_task_labels(tasks: Sequence[str], kinds: Sequence[str], data: str) -> None:
    """Every enabled task must find its labels in the training data, or the run would learn nothing."""
    for name in tasks:
        missing = [k for k in TASKS.get(name).label_kinds if k not in kinds]
        if missing:
            raise ConfigError(
                f"task {name!r} needs {missing} labels, but no part of the training split of {data} provides them "
                f"(it provides {list(kinds)}); add such a part or drop {name!r} from `tasks`"
            )


def load_pretrained(model: nn.Module, path: str, partial: bool = False) -> list[str]:
    """Load matching tensors from a unified checkpoint; tensors whose shape differs are re-initialised.

    Args:
        model: The model to initialise.
        path: The checkpoint (its EMA weights when it has them).
        partial: Load what fits even when most of the model does not (another architecture).

    Returns:
        The names that were not loaded (e.g. class-count dependent head tensors), which are logged.

    Raises:
        ConfigError: when fewer than :data:`MIN_PRETRAINED_FIT` of the model's weight tensors fit and not
            ``partial``: the run would train from scratch while the user thinks it fine-tunes.
        CheckpointError: for a file that is not a unified checkpoint with weights.
    """
    ckpt = load_safe(path)
    require_format(ckpt, path, keys=("model",))
    source = _stored_weights(ckpt, path)
    own = model.state_dict()
    kept = {
        k: v
        for k, v in source.items()
        if k in own and isinstance(v, torch.Tensor) and own[k].shape == v.shape
    }
    # Integer buffers (BatchNorm's step counts) are scalars that fit any model: they say nothing.
    learnt = [k for k, v in own.items() if v.is_floating_point()]
    fitting = sum(k in kept for k in learnt)
    if not partial and fitting < MIN_PRETRAINED_FIT * len(learnt):
        raise ConfigError(
            f"key 'train.weights': only {fitting} of the model's {len(learnt)} weight tensors fit {path} (same "
            "name and shape): it holds another architecture, and the run would train from scratch. Leave out "
            "--model to train the checkpoint's own architecture, or set train.partial_weights=true to load "
            "the tensors that fit and initialise the rest"
        )
    model.load_state_dict(kept, strict=False)
    return sorted(k for k in own if k not in kept)


def _stored_weights(ckpt: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """The weights ``--weights`` takes: the EMA's when the checkpoint keeps one, else the model's."""
    ema = ckpt.get("ema")
    source = ema.get("model") if isinstance(ema, Mapping) and ema.get("model") else ckpt["model"]
    if not isinstance(source, Mapping):
        raise CheckpointError(f"{path}: its 'model' entry is not a mapping of tensors")
    return source


def print_metrics_table(metrics: dict[str, dict[str, Any]], width: int = 100) -> str:
    """Every task's own metrics: per task a row of names over a row of values, wrapped at ``width``.

    The names come from each task's evaluator, so a plugin task's metrics print as the built-in ones do.
    Per-class breakdowns (keys with a ``/``, such as ``AP/person``) are left to ``metrics.json``: with
    80 classes they would bury the summary.
    """
    label = max([len("task"), *map(len, metrics)])
    lines = []
    for task, values in metrics.items():
        cells = [(k, _metric_text(v)) for k, v in values.items() if "/" not in k]
        rows: list[list[tuple[str, str]]] = [[]]
        used = label
        for name, text in cells:
            size = max(len(name), len(text)) + 2
            if rows[-1] and used + size > width:
                rows.append([])
                used = label
            rows[-1].append((name, text))
            used += size
        for i, row in enumerate(rows):
            first = task if i == 0 else ""
            sizes = [max(len(n), len(t)) for n, t in row]
            lines.append(f"{first:<{label}}" + "".join(f"  {n:>{w}}" for (n, _), w in zip(row, sizes)))
            lines.append(f"{'':<{label}}" + "".join(f"  {t:>{w}}" for (_, t), w in zip(row, sizes)))
    return "\n".join(lines)


def _metric_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:d}" if isinstance(value, int) else f"{value:.4f}"


def prepare_synthetic(cfg: ExperimentConfig, dist_info: DistInfo) -> None:
    """Generate the built-in synthetic world (cached) on rank 0 when the config asks for it."""
    if cfg.synthetic is None:
        return
    if dist_info.is_main:
        from unified.data.synthetic import make_synthetic

        s = cfg.synthetic
        make_synthetic(
            s.out,
            images=s.images,
            val_images=s.val_images,
            sequences=s.sequences,
            val_sequences=s.val_sequences,
            frames=s.frames,
            size=s.size,
            seed=s.seed,
        )
    barrier()


def run_training(
    cfg: ExperimentConfig,
    resume_from: Path | None = None,
    progress: bool = True,
    extra_hooks: Sequence[Hook] = (),
) -> tuple[Path, dict[str, dict[str, float]]]:
    """Train and evaluate as ``cfg`` says; returns the run folder and the final per-task metrics.

    Args:
        cfg: The experiment (for a resume: the one stored in the checkpoint).
        resume_from: A checkpoint in a run folder's ``weights/`` to continue; the run is rebuilt from what
            it stores (model config, dataset info), and a dataset on disk that differs is an error.
        progress: Show tqdm bars.
        extra_hooks: Run before the built-in ones (time budget, evaluation, checkpoint, logger).

    Raises:
        ConfigError, DataError, CheckpointError: before any run folder is created or changed.
        NonFiniteLossError: when training diverged; no checkpoint holds non-finite weights.
    """
    _check_device(cfg.train.device)
    dist_info, device = init_distributed(cfg.train.device)
    try:
        return _run(cfg, dist_info, device, resume_from, progress, extra_hooks)
    finally:
        cleanup()


def _check_device(spec: str) -> None:
    """A device the machine lacks (``0`` without CUDA) is a config error, not a traceback."""
    try:
        select_device(spec, int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError as exc:
        raise ConfigError(f"key 'train.device': {exc}") from None


def _run(
    cfg: ExperimentConfig,
    dist_info: DistInfo,
    device: torch.device,
    resume_from: Path | None,
    progress: bool,
    extra_hooks: Sequence[Hook],
) -> tuple[Path, dict[str, dict[str, float]]]:
    run_dir, resume_from = _resume_point(cfg, dist_info, resume_from)
    state = load_resume_state(resume_from, device) if resume_from is not None else None
    note = finished_note(cfg, state, run_dir) if state is not None and run_dir is not None else None
    if note is not None and state is not None and run_dir is not None:  # nothing to train: say so
        if dist_info.is_main:
            print(note)
        return run_dir, dict(state.get("metrics") or {})
    cfg, tasks = _checked_experiment(cfg, resumed=state is not None)
    _check_precision(cfg.train.precision, device)
    seed_everything(cfg.train.seed + dist_info.rank, cfg.train.deterministic)
    prepare_synthetic(cfg, dist_info)

    train = load_dataset_yaml(cfg.data, "train", skip_invalid=cfg.train.skip_invalid)
    train_records, info = train.records, train.info
    check_task_labels(tasks, info.label_kinds, cfg.data)
    val = load_dataset_yaml(cfg.data, "val", skip_invalid=cfg.train.skip_invalid)
    val_records = val.records
    architecture: str | dict[str, Any] = cfg.model
    if state is not None and resume_from is not None:
        architecture, info = _resumed_architecture(cfg, state, info, resume_from, dist_info)
    log = print if dist_info.is_main else None
    architecture = anchors_for_run(cfg, architecture, train_records, fresh=state is None, log=log)  # type: ignore[assignment]
    model = _build_training_model(cfg, architecture, tasks, info, dist_info, pretrained=state is None)
    balancer = build_balancer(
        cfg.balancer.name, list(model.tasks), cfg.balancer.weights, cfg.balancer.options
    )
    weights = train.sample_weights()
    train_loader, val_loader = _loaders(cfg, train_records, val_records, info, dist_info, device, weights)

    # Everything a config error can come from is checked above: only now is a run folder claimed.
    fresh = run_dir is None
    run_dir = run_dir or claim_run_dir(cfg, dist_info)
    try:
        if dist_info.is_main:
            (run_dir / "weights").mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(dump_yaml(cfg))
            write_text_or_warn(run_dir / SUMMARY_FILE, summary_text(train.parts + val.parts))
            print(format_summary(train.parts + val.parts))
        meta = {**model_meta(model, cfg.task_options, cfg.implicit_share), "plugins": list(cfg.plugins)}
        hooks = default_hooks(cfg, run_dir, meta, val_loader, dist_info, progress, extra_hooks)
        trainer = Trainer(cfg, model, balancer, train_loader, device, dist_info, hooks)
        if state is not None and resume_from is not None:
            restore(trainer, state, resume_from)
    except BaseException:
        if fresh and dist_info.is_main:
            release_run_dir(run_dir)
        raise
    del state  # the trainer holds its own copies; the checkpoint's tensors need not live through training
    _announce(cfg, trainer, run_dir, resumed=resume_from is not None)
    final = trainer.state if trainer.state.epoch >= trainer.epochs else trainer.train()
    _report(final.metrics, run_dir, dist_info)
    return run_dir, final.metrics


def _resume_point(
    cfg: ExperimentConfig, dist_info: DistInfo, resume_from: Path | None
) -> tuple[Path | None, Path | None]:
    """The run folder and checkpoint of a resume (``--resume`` or an elastic restart); None for a new run."""
    if resume_from is not None:
        return resume_run_dir(resume_from), resume_from
    return elastic_restart(cfg, dist_info)


def _check_precision(precision: str, device: torch.device) -> None:
    """A precision the device cannot run (fp16 on CPU) is a config error, found before any run folder."""
    try:
        resolve_precision(precision, device)
    except ValueError as exc:
        raise ConfigError(f"key 'train.precision': {exc}") from None


def _announce(cfg: ExperimentConfig, trainer: Trainer, run_dir: Path, resumed: bool) -> None:
    if not trainer.dist.is_main:
        return
    if resumed:
        print(f"resuming {run_dir} from epoch {trainer.state.epoch + 1}")
    print(f"run folder: {run_dir}")
    n_params = sum(p.numel() for p in trainer.model.parameters())
    print(
        f"model {_model_name(cfg.model)}: {n_params:,} parameters; tasks {list(trainer.model.tasks)}; "
        f"balancer {cfg.balancer.name}"
    )


def _model_name(model: str | dict[str, Any]) -> str:
    return model if isinstance(model, str) else "(stored architecture)"


def _resumed_architecture(
    cfg: ExperimentConfig,
    state: Mapping[str, Any],
    found: DatasetInfo,
    checkpoint: Path,
    dist_info: DistInfo,
) -> tuple[dict[str, Any], DatasetInfo]:
    """The model config and dataset info a resumed run is rebuilt from: the checkpoint's, never the files'.

    Raises:
        ConfigError: when the dataset on disk no longer has the stored classes, image labels or identities.
    """
    stored = stored_dataset_info(state, checkpoint)
    check_same_dataset(stored, found, cfg.data, checkpoint)
    architecture = dict(state["model_config"])
    note = model_file_note(cfg.model, architecture)
    if note and dist_info.is_main:
        print(note)
    return architecture, stored


def _checked_experiment(cfg: ExperimentConfig, resumed: bool = False) -> tuple[ExperimentConfig, list[str]]:
    """Plugins imported and every option checked before any data is read; the data and model resolved.

    Args:
        cfg: The experiment.
        resumed: The run resumes (its architecture comes from its checkpoint, not from ``train.weights``).

    Returns:
        The config with ``data`` and ``model`` filled in, and the enabled tasks in dependency order.
    """
    import_plugins(cfg.plugins)
    tasks = resolve_tasks(cfg.tasks)
    for name, options in cfg.task_options.items():
        if name not in tasks:
            raise ConfigError(f"key 'task_options.{name}': task {name!r} is not enabled (enabled: {tasks})")
        # Checked here, before any data is read, under the key the user wrote (task_options.<task>.<key>).
        from_dict(TASKS.get(name).config_class, options, source="experiment", prefix=f"task_options.{name}")
    balancer_options(cfg.balancer.name, cfg.balancer.options, source="experiment")
    cfg = with_absolute_paths(cfg)  # recorded in RUN/config.yaml: --resume works from any folder
    if not cfg.data and cfg.synthetic is not None:
        cfg = dataclasses.replace(cfg, data=str(Path(cfg.synthetic.out) / "dataset.yaml"))
    if not cfg.data:
        raise ConfigError(
            "key 'data': no dataset YAML given (use --data DATASET.yaml or a `synthetic:` section)"
        )
    if not cfg.model and not resumed:
        if not cfg.train.weights:
            raise ConfigError(
                "key 'model': no model given (use --model MODEL.yaml, or --weights CKPT to take its architecture)"
            )
        stored = load_safe(cfg.train.weights)
        require_format(stored, cfg.train.weights, keys=("model_config",))
        cfg = dataclasses.replace(cfg, model=dict(stored["model_config"]))
    return cfg, tasks


def _build_training_model(
    cfg: ExperimentConfig,
    architecture: str | dict[str, Any],
    tasks: list[str],
    info: DatasetInfo,
    dist_info: DistInfo,
    pretrained: bool,
) -> nn.Module:
    """The model for the data, its implicit sharing checked, pretrained weights loaded (not on resume)."""
    model = build_model(
        architecture,
        tasks=tasks,
        info=info,
        task_options=cfg.task_options,
        implicit_share=cfg.implicit_share,
        implicit=cfg.implicit,
    )
    used = model.bank.consumers()
    for consumer in cfg.implicit_share:
        if consumer not in used:  # an alias nothing reads would be silently ignored
            raise ConfigError(
                f"key 'implicit_share.{consumer}': no layer or head of this model reads an implicit tensor named "
                f"{consumer!r}; the names in use are {sorted(used)}"
            )
    if cfg.train.weights and pretrained:
        skipped = load_pretrained(model, cfg.train.weights, partial=cfg.train.partial_weights)
        if dist_info.is_main:
            total = len(model.state_dict())
            print(
                f"loaded {cfg.train.weights}: {total - len(skipped)} of {total} tensors fit; re-initialised "
                f"{len(skipped)} tensors that do not fit: {skipped[:8]}"
            )
    if cfg.train.sync_bn and dist_info.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def _loaders(
    cfg: ExperimentConfig,
    train_records: list[ImageRecord],
    val_records: list[ImageRecord],
    info: DatasetInfo,
    dist_info: DistInfo,
    device: torch.device,
    sample_weights: list[float] | None = None,
) -> tuple[Any, Any]:
    """The training loader (every rank; drawing by the parts' weights when given) and the validation loader
    (rank 0; None elsewhere)."""
    world = dist_info.world_size
    if cfg.train.batch_size % world:
        raise ConfigError(
            f"key 'train.batch_size': {cfg.train.batch_size} does not divide over {world} ranks"
        )
    per_rank = cfg.train.batch_size // world
    # On CPU the workers share the cores with the compute threads: at the lowest priority they only fill
    # the gaps (demo epoch 24.6-25.0 s -> 19.9-20.1 s on 2 cores; niceness 10 did not help).
    niceness = 19 if device.type == "cpu" else 0
    train_set = MultiTaskDataset(
        train_records, cfg.train.img_size, True, cfg.augment, info=info, cache_images=cfg.train.cache_images
    )
    train_loader = build_dataloader(
        train_set,
        per_rank,
        shuffle=True,
        num_workers=cfg.train.workers,
        seed=cfg.train.seed,
        distributed=dist_info.enabled,
        drop_last=dist_info.enabled,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        worker_niceness=niceness,
        sample_weights=sample_weights,
    )
    if not dist_info.is_main:
        return train_loader, None
    val_set = MultiTaskDataset(val_records, cfg.train.img_size, False, info=info)
    val_loader = build_dataloader(
        val_set,
        cfg.eval.batch_size or 2 * per_rank,
        shuffle=False,
        num_workers=cfg.train.workers,
        # Persistent workers live as long as the loader: after an exception the traceback keeps the
        # loader, and so the workers, alive until a garbage collection.
        persistent_workers=False,
        worker_niceness=niceness,
    )
    return train_loader, val_loader


def default_hooks(
    cfg: ExperimentConfig,
    run_dir: Path,
    meta: dict[str, Any],
    val_loader: Any,
    dist_info: DistInfo,
    progress: bool,
    extra_hooks: Sequence[Hook] = (),
) -> list[Hook]:
    """The hooks of a training run, in order: the weights' average first (evaluation reads it), the
    caller's, the time budget (its stop makes this epoch's evaluation the final one), evaluation,
    checkpoints (they store the evaluation's fitness), logging, the run's pictures (at its end, after the
    last checkpoint), the per-epoch summary line (after the progress bar has closed)."""
    ema = [EMAHook(cfg.optim.ema_decay, cfg.optim.ema_ramp, dist_info.is_main)] if cfg.optim.ema else []
    return [
        *ema,
        *extra_hooks,
        TimeBudgetHook(cfg.train.time_budget_min),
        EvaluationHook(val_loader),
        CheckpointHook(run_dir, meta),
        LoggerHook(run_dir, progress=progress),
        RunPicturesHook(run_dir, val_loader),
        ProgressHook(run_dir),
    ]


def _report(metrics: dict[str, dict[str, Any]], run_dir: Path, dist_info: DistInfo) -> None:
    if not dist_info.is_main:
        return
    if metrics:
        # The one writer of metrics.json: here only a run that ended (finished, stopped by its time
        # budget or by a hook) writes it; a hook's after_train also runs after a crash or a Ctrl-C and
        # would leave an interval evaluation looking like the run's result.
        write_text_or_warn(run_dir / "metrics.json", metrics_json(metrics))
        print(print_metrics_table(metrics))
    print(f"results saved to {run_dir}")


def experiment_from_checkpoint(path: Path) -> ExperimentConfig:
    """The experiment config stored in a checkpoint (for --resume).

    Raises:
        CheckpointError: for a file that is not a unified checkpoint with an experiment.
        ConfigError: when the stored experiment is not a valid config.
    """
    ckpt = load_safe(path)
    require_format(ckpt, path, keys=("experiment",))
    if not isinstance(ckpt["experiment"], Mapping):
        raise CheckpointError(f"{path}: its 'experiment' entry is not a mapping")
    return from_dict(ExperimentConfig, ckpt["experiment"], source=f"{path} (stored experiment)")


_FLAG_TO_KEY = {
    "data": "data",
    "model": "model",
    "weights": "train.weights",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "img": "train.img_size",
    "device": "train.device",
    "workers": "train.workers",
    "seed": "train.seed",
    "project": "project",
    "name": "name",
}


def flags_to_overrides(args: Any) -> list[str]:
    """Turn the YOLOR-style command-line flags into ``key=value`` overrides."""
    overrides = []
    for flag, key in _FLAG_TO_KEY.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    if getattr(args, "tasks", None):
        names = [t.strip() for t in args.tasks.split(",") if t.strip()]
        if not names or any(not re.fullmatch(r"[A-Za-z_][\w.]*", n) for n in names):
            raise ConfigError(
                f"--tasks {args.tasks!r}: give comma-separated task names such as detect,jdc,jde"
            )
        overrides.append(f"tasks={json.dumps(names)}")
    if getattr(args, "sync_bn", False):
        overrides.append("train.sync_bn=true")
    if getattr(args, "noautoanchor", False):
        overrides.append("train.autoanchor=false")
    if getattr(args, "exist_ok", False):
        overrides.append("exist_ok=true")
    return overrides


def resume_experiment(checkpoint: Path, args: Any = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The experiment ``--resume`` continues: the checkpoint's, with the command line's changes that a
    resume can take (``unified.engine.resume.RESUMABLE_KEYS``: more epochs, another device or worker count).

    Args:
        checkpoint: The checkpoint resumed (in a run folder's ``weights/``).
        args: The parsed command-line flags (as :func:`flags_to_overrides` reads them); ``--project`` is
            refused too, unless it said where to find the newest run (``--resume`` without a run).
        overrides: The ``key.sub=value`` overrides given with ``--resume``.

    Raises:
        ConfigError: one line naming every flag and override a resume cannot apply; none is ignored.
    """
    changes: list[tuple[str, str | None]] = []
    if getattr(args, "config", None):
        changes.append(("--config", None))
    for flag, value in (vars(args) if args is not None else {}).items():
        if flag == "project" and getattr(args, "resume", None) == "":
            continue  # it said where to look for the newest run
        typed = f"--{flag.replace('_', '-')}" + ("" if isinstance(value, bool) else f" {value}")
        changes += [(typed, o) for o in flags_to_overrides(argparse.Namespace(**{flag: value}))]
    changes += [(override, override) for override in overrides]
    return apply_resume_changes(experiment_from_checkpoint(checkpoint), changes)
