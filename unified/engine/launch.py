"""Start, resume and finish a training run from an experiment config (the body of tools/train_multitask.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unified.checkpoint import CheckpointError, load_safe, require_format
from unified.config import ConfigError, dump_yaml, from_dict
from unified.data import MultiTaskDataset, build_dataloader, load_dataset_yaml
from unified.data.records import ImageRecord
from unified.distributed import DistInfo, barrier, broadcast_object, cleanup, init_distributed
from unified.engine.balancers import balancer_options, build_balancer
from unified.engine.default_hooks import (
    CheckpointHook,
    EvaluationHook,
    LoggerHook,
    TimeBudgetHook,
    write_text_or_warn,
)
from unified.engine.ema import EMAHook
from unified.engine.experiment import ExperimentConfig
from unified.engine.hooks import Hook
from unified.engine.trainer import Trainer, seed_everything
from unified.model import build_model, model_meta
from unified.registry import import_plugins
from unified.structures import DatasetInfo
from unified.task import TASKS, resolve_tasks


def increment_path(path: Path, exist_ok: bool) -> Path:
    """``runs/train/exp`` → ``exp2``, ``exp3``… unless ``exist_ok`` or the folder is new."""
    if exist_ok or not path.exists():
        return path
    for n in range(2, 10_000):
        candidate = path.with_name(f"{path.name}{n}")
        if not candidate.exists():
            return candidate
    raise RuntimeError(f"too many runs named {path}")


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


def choose_run_dir(cfg: ExperimentConfig, dist_info: DistInfo) -> tuple[Path, Path | None]:
    """The run folder of a new run, and the checkpoint to resume from after an elastic restart.

    A group that ``torchrun --max-restarts N`` restarts (``TORCHELASTIC_RESTART_COUNT`` > 0) reuses the
    folder its first attempt created and resumes from its ``weights/last.pt`` (from scratch when none was
    written yet), with no manual step. Otherwise a new folder (``exp``, ``exp2``, ...) is made.
    """
    record = elastic_record(cfg)
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    chosen: tuple[str, str | None] | None = None
    if dist_info.is_main:
        run_dir: Path | None = None
        if record is not None and restarted and record.is_file():
            run_dir = Path(json.loads(record.read_text())["run_dir"])
        if run_dir is None:
            run_dir = increment_path(Path(cfg.project) / cfg.name, cfg.exist_ok)
            if record is not None:
                record.parent.mkdir(parents=True, exist_ok=True)
                record.write_text(json.dumps({"run_dir": str(run_dir)}))
        last = run_dir / "weights" / "last.pt"
        chosen = (str(run_dir), str(last) if restarted and last.is_file() else None)
        if chosen[1] is not None:
            print(f"elastic restart {os.environ['TORCHELASTIC_RESTART_COUNT']}: resuming {last}")
    run_dir_text, resume_text = broadcast_object(chosen)  # type: ignore[misc]
    return Path(run_dir_text), (Path(resume_text) if resume_text else None)


def find_resume_checkpoint(resume: str, project: str) -> Path:
    """A run folder, a checkpoint file, or ``""`` (the most recent ``last.pt`` under ``project``)."""
    if resume:
        path = Path(resume)
        if path.is_dir():
            path = path / "weights" / "last.pt"
        if not path.is_file():
            raise FileNotFoundError(f"--resume {resume}: no checkpoint at {path}")
        return path
    candidates = sorted(Path(project).glob("**/weights/last.pt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(f"--resume: no run with weights/last.pt under {project}")
    return candidates[-1]


def check_task_labels(tasks: Sequence[str], kinds: Sequence[str], data: str) -> None:
    """Every enabled task must find its labels in the training data, or the run would learn nothing."""
    for name in tasks:
        missing = [k for k in TASKS.get(name).label_kinds if k not in kinds]
        if missing:
            raise ConfigError(
                f"task {name!r} needs {missing} labels, but no part of the training split of {data} provides them "
                f"(it provides {list(kinds)}); add such a part or drop {name!r} from `tasks`"
            )


def load_pretrained(model: nn.Module, path: str) -> list[str]:
    """Load matching tensors from a unified checkpoint; tensors whose shape differs are re-initialised.

    Returns the names that were not loaded (e.g. class-count dependent head tensors), which are logged.
    """
    ckpt = load_safe(path)
    require_format(ckpt, path)
    source = ckpt["ema"]["model"] if ckpt.get("ema") else ckpt["model"]
    own = model.state_dict()
    kept = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(k for k in own if k not in kept)
    model.load_state_dict(kept, strict=False)
    return skipped


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


def metrics_json(metrics: dict[str, dict[str, Any]]) -> str:
    """``metrics`` as JSON text, an undefined metric (``nan``) written as ``null`` (docs/ARCHITECTURE.md)."""
    clean = json.loads(json.dumps(metrics), parse_constant=lambda _: None)
    return json.dumps(clean, indent=2, allow_nan=False) + "\n"


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

    ``extra_hooks`` run before the built-in ones (time budget, evaluation, checkpoint, logger).
    """
    dist_info, device = init_distributed(cfg.train.device)
    try:
        return _run(cfg, dist_info, device, resume_from, progress, extra_hooks)
    finally:
        cleanup()


def _run(
    cfg: ExperimentConfig,
    dist_info: DistInfo,
    device: torch.device,
    resume_from: Path | None,
    progress: bool,
    extra_hooks: Sequence[Hook],
) -> tuple[Path, dict[str, dict[str, float]]]:
    cfg, tasks = _checked_experiment(cfg)
    seed_everything(cfg.train.seed + dist_info.rank, cfg.train.deterministic)
    prepare_synthetic(cfg, dist_info)

    train_records, info = load_dataset_yaml(cfg.data, "train", skip_invalid=cfg.train.skip_invalid)
    check_task_labels(tasks, info.label_kinds, cfg.data)
    val_records, _ = load_dataset_yaml(cfg.data, "val", skip_invalid=cfg.train.skip_invalid)
    model = _build_training_model(cfg, tasks, info, dist_info, pretrained=resume_from is None)
    balancer = build_balancer(
        cfg.balancer.name, list(model.tasks), cfg.balancer.weights, cfg.balancer.options
    )
    train_loader, val_loader = _loaders(cfg, train_records, val_records, info, dist_info, device)

    if resume_from is not None:
        run_dir = resume_from.parent.parent
    else:
        run_dir, resume_from = choose_run_dir(cfg, dist_info)
    if dist_info.is_main:
        (run_dir / "weights").mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    meta = model_meta(model, cfg.task_options, cfg.implicit_share)
    meta["plugins"] = list(cfg.plugins)
    hooks = default_hooks(cfg, run_dir, meta, val_loader, dist_info, progress, extra_hooks)
    trainer = Trainer(cfg, model, balancer, train_loader, device, dist_info, hooks)
    if resume_from is not None:
        state = load_safe(resume_from, map_location=device)
        require_format(state, resume_from)
        trainer.load_state_dict(state)
        if dist_info.is_main:
            print(f"resuming {run_dir} from epoch {trainer.state.epoch + 1}")
    if dist_info.is_main:
        print(f"run folder: {run_dir}")
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"model {cfg.model}: {n_params:,} parameters; tasks {list(model.tasks)}; balancer {cfg.balancer.name}"
        )
    state = trainer.state if trainer.state.epoch >= trainer.epochs else trainer.train()
    _report(state.metrics, run_dir, dist_info)
    return run_dir, state.metrics


def _checked_experiment(cfg: ExperimentConfig) -> tuple[ExperimentConfig, list[str]]:
    """Plugins imported and every option checked before any data is read; the data and model resolved.

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
    if not cfg.data and cfg.synthetic is not None:
        cfg = dataclasses.replace(cfg, data=str(Path(cfg.synthetic.out) / "dataset.yaml"))
    if not cfg.data:
        raise ConfigError(
            "key 'data': no dataset YAML given (use --data DATASET.yaml or a `synthetic:` section)"
        )
    if not cfg.model:
        if not cfg.train.weights:
            raise ConfigError(
                "key 'model': no model given (use --model MODEL.yaml, or --weights CKPT to take its architecture)"
            )
        stored = load_safe(cfg.train.weights)
        require_format(stored, cfg.train.weights)
        cfg = dataclasses.replace(cfg, model=dict(stored["model_config"]))
    return cfg, tasks


def _build_training_model(
    cfg: ExperimentConfig, tasks: list[str], info: DatasetInfo, dist_info: DistInfo, pretrained: bool
) -> nn.Module:
    """The model for the data, its implicit sharing checked, pretrained weights loaded (not on resume)."""
    model = build_model(
        cfg.model, tasks=tasks, info=info, task_options=cfg.task_options, implicit_share=cfg.implicit_share
    )
    used = model.bank.consumers()
    for consumer in cfg.implicit_share:
        if consumer not in used:  # an alias nothing reads would be silently ignored
            raise ConfigError(
                f"key 'implicit_share.{consumer}': no layer or head of this model reads an implicit tensor named "
                f"{consumer!r}; the names in use are {sorted(used)}"
            )
    if cfg.train.weights and pretrained:
        skipped = load_pretrained(model, cfg.train.weights)
        if dist_info.is_main:
            print(
                f"loaded {cfg.train.weights}; re-initialised {len(skipped)} tensors that do not fit: {skipped[:8]}"
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
) -> tuple[Any, Any]:
    """The training loader (every rank) and the validation loader (rank 0; None elsewhere)."""
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
    checkpoints (they store the evaluation's fitness), logging."""
    ema = [EMAHook(cfg.optim.ema_decay, cfg.optim.ema_ramp, dist_info.is_main)] if cfg.optim.ema else []
    return [
        *ema,
        *extra_hooks,
        TimeBudgetHook(cfg.train.time_budget_min),
        EvaluationHook(val_loader),
        CheckpointHook(run_dir, meta),
        LoggerHook(run_dir, progress=progress),
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
    """The experiment config stored in a checkpoint (for --resume)."""
    try:
        ckpt = load_safe(path)
    except CheckpointError:
        raise
    require_format(ckpt, path)
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
    if getattr(args, "exist_ok", False):
        overrides.append("exist_ok=true")
    return overrides
