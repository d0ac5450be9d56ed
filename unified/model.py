"""The unified multi-task model: one body, one implicit bank, one head per task."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unified.checkpoint import CheckpointError, load_safe, require_format
from unified.config import ConfigError, from_dict, to_dict
from unified.implicit import ImplicitBank, ImplicitConfig, ImplicitOp, implicit_constant
from unified.models import Body, fuse_model, load_model_config
from unified.registry import import_plugins, plugin_module
from unified.task import TASKS, DatasetInfo, StepContext, Task, resolve_tasks, task_config_from


class UnifiedModel(nn.Module):
    """A shared body (backbone + neck) and implicit bank serving one head per task.

    ``forward(images)`` returns a dict keyed by task name. In eval mode the detection entry holds
    ``decoded`` (batch, N, 5 + nc) and ``raw`` (per-level logits); see ``docs/ARCHITECTURE.md``.

    Attributes:
        tasks: Task objects in dependency order (not modules: they hold no parameters of their own).
        info: The dataset info the heads were sized for.
        model_cfg: The model config the body was built from.
        implicit: How the implicit consumers share (its ``sharing`` decided), as checkpoints record it.
        align: With ``head.feature_alignment``, per output level the implicit add (``align.{level}``) on the
            neck's features before every head; else empty.
    """

    def __init__(
        self,
        model_cfg: Any,
        tasks: Mapping[str, Task],
        info: DatasetInfo,
        implicit_share: Mapping[str, str] | None = None,
        implicit: ImplicitConfig | None = None,
    ) -> None:
        super().__init__()
        self.model_cfg = model_cfg
        self.info = info
        self.implicit = (implicit or ImplicitConfig("none")).resolved(len(tasks))
        self.bank = ImplicitBank.from_config(self.implicit)
        for consumer, shared in (implicit_share or {}).items():
            self.bank.alias(consumer, shared)
        self.body = Body(model_cfg, bank=self.bank)
        self.align = nn.ModuleList()
        if model_cfg.head.feature_alignment:
            for level, shape in enumerate(self.body.out_shapes):
                self.align.append(
                    self.bank.get(f"align.{level}", shape.channels, "add", model_cfg.head.implicit_form)
                )
        self.heads = nn.ModuleDict()
        for name, task in tasks.items():
            self.heads[name] = task.build_head(self.body.out_shapes, self.bank, model_cfg)
        self.tasks: dict[str, Task] = dict(tasks)

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        features = self.body(images)
        if len(self.align):
            features = [align(x) for align, x in zip(self.align, features)]
        return {name: head(features) for name, head in self.heads.items()}

    def losses(self, batch: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
        """Every task's named, unweighted loss terms for a batch (``docs/ARCHITECTURE.md``): one forward
        pass of ``batch["images"]``, then each task takes its own labels out of the batch.

        Raises:
            RuntimeError: when a task returns no loss terms.
        """
        outputs = self(batch["images"])
        context = StepContext()
        terms: dict[str, dict[str, torch.Tensor]] = {}
        for name, task in self.tasks.items():
            task_terms = task.loss(outputs, batch, context)
            if not task_terms:
                raise RuntimeError(f"task {name!r} returned no loss terms")
            terms[name] = {k: v.float() for k, v in task_terms.items()}
        return terms

    def fuse(self) -> UnifiedModel:
        """Fold BatchNorm and implicit tensors into neighbouring convolutions where exact (inference only).

        The feature-alignment adds fold into the heads when every head can take them exactly (``detect``'s
        1×1 convs, ``jdc``'s pooled projection: ``fold_feature_add``); a head that starts with a padded
        conv (``jde``, ``segment``'s prototypes) cannot, and then they stay as a broadcast add per level.
        """
        fuse_model(self)
        if any(isinstance(a, ImplicitOp) for a in self.align) and all(
            hasattr(head, "fold_feature_add") for head in self.heads.values()
        ):
            constants = [implicit_constant(a) for a in self.align]
            for head in self.heads.values():
                head.fold_feature_add(constants)  # type: ignore[operator]
            self.align = nn.ModuleList(nn.Identity() for _ in self.align)
        return self

    def for_inference(self, fuse: bool = True, channels_last: bool = True) -> UnifiedModel:
        """Ready the model for prediction, in place: eval mode, BatchNorm and implicit tensors folded
        (``fuse``), weights in channels-last memory (``channels_last``).

        Channels-last makes every convolution run in NHWC, as training does: 1.1–1.2x at batch 1 on a
        2-core CPU (``docs/PERFORMANCE.md``), and the layout CUDA tensor cores read. The outputs are the
        same up to floating-point summation order.
        """
        self.eval()
        if fuse:
            self.fuse()
        if channels_last:
            self.to(memory_format=torch.channels_last)
        return self

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)


def _build_tasks(
    names: Sequence[str], info: DatasetInfo, task_options: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Task]:
    options = dict(task_options or {})
    ordered = resolve_tasks(names)
    unknown = sorted(set(options) - set(ordered))
    if unknown:
        raise ConfigError(
            f"key 'task_options': options given for tasks that are not enabled: {unknown}; enabled: {ordered}"
        )
    built: dict[str, Task] = {}
    for name in ordered:
        cls = TASKS.get(name)
        cfg = task_config_from(cls, dict(options.get(name) or {}))
        built[name] = cls(cfg, info, {req: built[req] for req in cls.requires})
    return built


def build_model(
    model: str | Path | Mapping[str, Any],
    nc: int | None = None,
    tasks: Sequence[str] = ("detect",),
    *,
    info: DatasetInfo | None = None,
    task_options: Mapping[str, Mapping[str, Any]] | None = None,
    implicit_share: Mapping[str, str] | None = None,
    plugins: Sequence[str] = (),
    implicit: ImplicitConfig | Mapping[str, Any] | None = None,
) -> UnifiedModel:
    """Build a model from a model YAML (path or dict) for the given tasks.

    Args:
        model: Model YAML path or the same content as a dict.
        nc: Number of detection classes (overrides the YAML's ``nc``; ignored when ``info`` is given).
        tasks: Task names; tasks they require are added (``jdc`` and ``jde`` bring ``detect``).
        info: Dataset info (class and label names, number of identities); default: ``nc`` numbered classes.
        task_options: Per-task option mappings, validated against each task's config dataclass.
        implicit_share: Map of implicit tensor names to shared bank names.
        plugins: Import paths of modules that register extra tasks.
        implicit: How the implicit consumers share (``ImplicitConfig`` or its mapping; an empty ``sharing``
            is ``latent`` for several tasks, ``none`` for one, as an experiment resolves it). None: ``none``,
            every consumer its own tensors (a model built without an experiment is as it always was).

    Returns:
        A ``UnifiedModel`` in training mode.
    """
    import_plugins(list(plugins))
    model_cfg = load_model_config(model)
    if info is None:
        n = nc if nc is not None else model_cfg.nc
        info = DatasetInfo(class_names=[str(i) for i in range(n)])
    if info.nc != model_cfg.nc:
        model_cfg = dataclasses.replace(model_cfg, nc=info.nc)
    if isinstance(implicit, Mapping):
        implicit = from_dict(ImplicitConfig, dict(implicit), source="implicit", prefix="implicit")
    return UnifiedModel(model_cfg, _build_tasks(tasks, info, task_options), info, implicit_share, implicit)


def model_meta(
    model: UnifiedModel, task_options: Mapping[str, Any], implicit_share: Mapping[str, str]
) -> dict[str, Any]:
    """The plain-data description a checkpoint stores to rebuild ``model``."""
    return {
        "model_config": to_dict(model.model_cfg),
        "tasks": model.task_names,
        "task_options": {k: to_dict(v) for k, v in task_options.items()},
        "implicit_share": dict(implicit_share),
        "implicit": to_dict(model.implicit),
        "dataset_info": to_dict(model.info),
    }


#: What ``load`` reads from every unified checkpoint (training, converted or hand-made).
_MODEL_KEYS = ("model_config", "tasks", "dataset_info", "model")


def load(
    path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True, plugins: Sequence[str] = ()
) -> UnifiedModel:
    """Load a unified checkpoint (never unpickling objects) and return the model in eval mode.

    Args:
        plugins: Plugin modules to import for tasks that are not built in. A checkpoint records the
            plugins it was trained with, but they are never imported on its say-so (importing runs code):
            pass the ones you trust.

    Raises:
        CheckpointError: one line naming the file: it is not a safe unified checkpoint, needs plugins not
            given, lacks a key or holds one of the wrong type, describes a model that cannot be built, or
            holds weights that do not fit that model.
    """
    ckpt = load_safe(path)
    require_format(ckpt, path, keys=_MODEL_KEYS)
    # An old path of a built-in task module (tasks.detect: now unified.tasks.detect) is no plugin to ask for.
    stored_plugins = _stored(ckpt, path, "plugins", list, required=False) or []
    if not all(isinstance(p, str) for p in stored_plugins):
        raise CheckpointError(f"{path}: 'plugins' must be a list of module names, got {stored_plugins!r}")
    needed = [p for p in stored_plugins if p not in plugins and plugin_module(p) == p]
    if needed:
        raise CheckpointError(
            f"{path} was trained with task plugins {needed}; a checkpoint cannot make us import code, so pass "
            f"them yourself if you trust them (unified.load(..., plugins={needed}))"
        )
    model = _stored_model(ckpt, path, plugins)
    _load_weights(model, *_stored_weights(ckpt, path, use_ema), path)
    return model.to(device).eval()


def _stored(ckpt: Mapping[str, Any], path: str | Path, key: str, kind: type, required: bool = True) -> Any:
    """``ckpt[key]`` if it is a ``kind``; ``None`` when it is absent or ``None`` and not ``required``.

    Raises:
        CheckpointError: one line naming the file and key.
    """
    value = ckpt.get(key)
    if isinstance(value, kind) or (value is None and not required):
        return value
    raise CheckpointError(
        f"{path}: {key!r} is a {type(value).__name__}, not a {kind.__name__}: the checkpoint is damaged or "
        f"was not written by unified"
    )


def _stored_model(ckpt: Mapping[str, Any], path: str | Path, plugins: Sequence[str]) -> UnifiedModel:
    """The model a checkpoint describes (its weights not loaded yet)."""
    tasks = _stored(ckpt, path, "tasks", list)
    if not tasks or not all(isinstance(t, str) for t in tasks):
        raise CheckpointError(f"{path}: 'tasks' must be a non-empty list of task names, got {tasks!r}")
    try:
        info = from_dict(
            DatasetInfo, _stored(ckpt, path, "dataset_info", dict), source=f"{path} (dataset_info)"
        )
        return build_model(
            _stored(ckpt, path, "model_config", dict),
            tasks=tasks,
            info=info,
            task_options=_stored(ckpt, path, "task_options", dict, required=False),
            implicit_share=_stored(ckpt, path, "implicit_share", dict, required=False),
            plugins=plugins,
            # A checkpoint from before sharing was recorded had every consumer's own tensors.
            implicit=_stored(ckpt, path, "implicit", dict, required=False) or {"sharing": "none"},
        )
    # Stored plain data of the wrong shape reaches dataclasses and constructors: say which file it came from
    # (ConfigError is a ValueError).
    except (ValueError, TypeError) as exc:
        reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise CheckpointError(f"{path}: the model it describes cannot be built: {reason}") from None


def _stored_weights(
    ckpt: Mapping[str, Any], path: str | Path, use_ema: bool
) -> tuple[Mapping[str, Any], str]:
    """The state_dict to load (the moving average's when asked and present) and where it sits."""
    ema = ckpt.get("ema")
    if use_ema and ema:
        if not isinstance(ema, Mapping) or not isinstance(ema.get("model"), Mapping):
            raise CheckpointError(f"{path}: 'ema' holds no 'model' state_dict")
        return ema["model"], "ema.model"
    return _stored(ckpt, path, "model", dict), "model"


def _load_weights(model: UnifiedModel, state: Mapping[str, Any], where: str, path: str | Path) -> None:
    """``load_state_dict`` (strict), with a one-line CheckpointError when the weights do not fit."""
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in state]
    unexpected = [str(k) for k in state if k not in own]
    wrong = [k for k in own if k in state and getattr(state[k], "shape", None) != own[k].shape]
    if missing:
        problems.append(f"{len(missing)} missing (first {missing[0]!r})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first {unexpected[0]!r})")
    if wrong:
        first = wrong[0]
        found = (
            tuple(state[first].shape)
            if isinstance(state[first], torch.Tensor)
            else type(state[first]).__name__
        )
        problems.append(
            f"{len(wrong)} of another shape (first {first!r}: {found}, the model's {tuple(own[first].shape)})"
        )
    if problems:
        raise CheckpointError(
            f"{path}: the weights under {where!r} do not fit the model it describes: {'; '.join(problems)}"
        )
    model.load_state_dict(state)
